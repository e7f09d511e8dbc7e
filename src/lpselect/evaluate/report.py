"""The tally as people and programs read it: the JSON document and the terminal table."""

from __future__ import annotations

from typing import Any, get_args

from rich.table import Table

from lpselect.config import TestSet
from lpselect.core.tally import Tally, TallyReport

# The test sets of this line of work, in the order papers show them; others follow in order of appearance.
PAPER_ORDER: tuple[str, ...] = get_args(TestSet)
DISPLAY_NAMES = {"vicuna": "Vicuna", "koala": "Koala", "wizardlm": "WizardLM", "sinstruct": "SInstruct",
                 "lima": "LIMA"}


def display_name(testset: str) -> str:
    return DISPLAY_NAMES.get(testset.lower(), testset)


def ordered_testsets(names: list[str]) -> list[str]:
    rank = {n: i for i, n in enumerate(PAPER_ORDER)}
    first_seen = {n: i for i, n in enumerate(names)}
    return sorted(names, key=lambda n: (rank.get(n.lower(), len(rank)), first_seen[n]))


def tally_json(t: Tally) -> dict[str, Any]:
    return {"wins": t.wins, "ties": t.ties, "losses": t.losses, "n": t.n, "wr": t.wr, "unparsed": t.unparsed}


def report_json(report: TallyReport, label_a: str | None = None,
                label_b: str | None = None) -> dict[str, Any]:
    """``{"per_testset": {name: {...}}, "overall": {...}}``; wins are A's, losses are B's wins."""
    names = ordered_testsets(list(report.per_testset))
    doc: dict[str, Any] = {
        "per_testset": {n: tally_json(report.per_testset[n]) for n in names},
        "overall": tally_json(report.overall),
    }
    if label_a or label_b:
        doc["models"] = {"a": label_a, "b": label_b}
    return doc


def _cells(t: Tally) -> list[str]:
    wr = "-" if t.wr is None else f"{t.wr:.3f}"
    return [str(t.wins), str(t.ties), str(t.losses), str(t.n), wr, str(t.unparsed)]


def report_table(report: TallyReport, label_a: str = "A", label_b: str = "B") -> Table:
    table = Table(title=f"{label_a} (A) vs {label_b} (B)")
    for col in ("test set", "A wins", "ties", "B wins", "n", "WR", "not judged"):  # unparsed or failed
        table.add_column(col, justify="left" if col == "test set" else "right")
    for name in ordered_testsets(list(report.per_testset)):
        table.add_row(display_name(name), *_cells(report.per_testset[name]))
    table.add_row("overall", *_cells(report.overall), style="bold")
    return table
