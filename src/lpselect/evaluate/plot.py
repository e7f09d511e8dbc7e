"""The win/tie/loss chart: one horizontal stacked bar per test set, counts written on the segments."""

from __future__ import annotations

from pathlib import Path

from lpselect.core.tally import TallyReport
from lpselect.errors import LPSelectError
from lpselect.evaluate.report import display_name, ordered_testsets
from lpselect.runs.io import atomic_path

COLORS = {"wins": "#f46d43", "ties": "#ffffbf", "losses": "#74add1"}


def plot_tally(report: TallyReport, path: str | Path, label_a: str = "A", label_b: str = "B") -> Path:
    """Write the chart as a PNG (atomically). Needs matplotlib."""
    try:
        from matplotlib.figure import Figure  # no pyplot: no global state, no display needed
    except ImportError:
        raise LPSelectError("--plot needs matplotlib: pip install matplotlib") from None
    names = ordered_testsets(list(report.per_testset))
    fig = Figure(figsize=(8, 1.0 + 0.8 * max(len(names), 1)), dpi=150)
    ax = fig.add_subplot()
    rows = list(range(len(names)))[::-1]  # first test set on top
    left = [0] * len(names)
    for part, label, text_color in (("wins", f"{label_a} wins", "white"), ("ties", "Tie", "black"),
                                    ("losses", f"{label_b} wins", "white")):
        values = [getattr(report.per_testset[n], part) for n in names]
        bars = ax.barh(rows, values, left=left, height=0.6, color=COLORS[part], label=label)
        ax.bar_label(bars, labels=[str(v) if v else "" for v in values], label_type="center",
                     color=text_color)
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.set_yticks(rows, [display_name(n) for n in names])
    ax.set_xticks([])
    o = report.overall
    if o.wr is not None:
        ax.set_title(f"{label_a} vs {label_b}: overall {o.wins} / {o.ties} / {o.losses}, WR {o.wr:.3f}")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=3, frameon=False)  # below: covers no bar
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return path
