"""A Hugging Face dataset card beside every subset, so a subset shared alone still says how it was chosen.

The card is the folder's ``README.md``: YAML front matter with one ``configs`` entry per subset file (so
``datasets.load_dataset(folder, name=STEM)`` reads one subset) and each subset's provenance under the
``lpselect`` key, then a human-readable section per subset. It is rebuilt from every ``*.report.json`` in the
folder, so several subsets can share one folder. A ``README.md`` lpselect did not write (no :data:`MARKER`)
is never overwritten: the card then goes to ``<stem>.card.md`` and describes that subset only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lpselect.runs.io import atomic_path
from lpselect.runs.layout import CARD, REPORT_SUFFIX

MARKER = "<!-- lpselect dataset card: written by `lpselect select` from the *.report.json files in this folder -->"
README = CARD
_FILE_SUFFIXES = (".json", ".jsonl", ".ndjson", ".parquet", ".csv")
# report fields copied into the card's provenance, in this order
PROVENANCE = ("subset_file", "scorer", "metric", "epoch", "percent", "band", "strategy", "trajectory_k", "order",
              "seed", "n_rows", "n_selected", "n_nan_left_out", "lpselect_version", "data", "data_sha256", "scores",
              "clusters")


@dataclass
class CardTarget:
    """Where a subset's card goes; ``note`` says why it is not the folder's README.md, when it is not."""

    path: Path
    shared: bool
    note: str | None = None


def subset_stem(name: str) -> str:
    """Config name of a subset: its file name without the format suffix (``12.5_low.json`` -> ``12.5_low``)."""
    for suffix in _FILE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name  # a dataset folder written with save_to_disk


def card_target(subset: str | Path) -> CardTarget:
    """The folder's README.md unless another tool wrote it; then ``<stem>.card.md`` beside the subset."""
    subset = Path(subset)
    readme = subset.parent / README
    if not readme.exists() or MARKER in readme.read_text(encoding="utf-8", errors="replace"):
        return CardTarget(readme, shared=True)
    return CardTarget(subset.parent / f"{subset_stem(subset.name)}.card.md", shared=False,
                      note=f"{readme} was not written by lpselect and is left as is; the card is in this file")


def scorer_of(scores: str | Path) -> str:
    """The scorer model named by the run manifest beside scores.parquet, else ``unknown`` (e.g. imported)."""
    path = Path(scores).parent / "manifest.json"
    try:
        step = (json.loads(path.read_text(encoding="utf-8")).get("steps") or {}).get("score")
    except (OSError, ValueError, AttributeError):
        return "unknown"
    if not isinstance(step, dict) or not isinstance(step.get("config"), dict):
        return "unknown"
    model, gguf = step["config"].get("model"), step["config"].get("gguf_file")
    if not model:
        from lpselect.engine.models import DEFAULT_SCORER

        model = DEFAULT_SCORER
    return f"{model}/{gguf}" if gguf else str(model)


def write_card(subset: str | Path, target: CardTarget | None = None) -> Path:
    """(Re)write the card of ``subset``'s folder (or its own ``.card.md``), atomically; returns its path."""
    subset = Path(subset)
    target = target or card_target(subset)
    if target.shared:
        entries = _folder_entries(subset.parent)
    else:
        entries = [(subset, _read_report(Path(str(subset) + REPORT_SUFFIX)) or {})]
    with atomic_path(target.path) as tmp:
        tmp.write_text(render_card(entries), encoding="utf-8")
    return target.path


def render_card(entries: list[tuple[Path, dict[str, Any]]]) -> str:
    """Card text for (subset path, report) pairs: YAML front matter, the marker, one section per subset."""
    configs, provenance = [], {}
    for subset, report in entries:
        stem = subset_stem(subset.name)
        files = f"{subset.name}/*.arrow" if subset.is_dir() else subset.name
        configs.append({"config_name": stem, "data_files": [{"split": "train", "path": files}]})
        provenance[stem] = {k: report.get(k) for k in PROVENANCE if k in report}
    front = {"pretty_name": "lpselect subsets", "tags": ["lpselect", "data-selection", "instruction-tuning"],
             "configs": configs, "lpselect": provenance}
    lines = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(), "---", MARKER, "",
             "# lpselect subsets", "",
             "Instruction-tuning subsets chosen by lpselect from a small scorer model's per-sample losses "
             "(learning percentage, Mekala et al. 2024, and the rival rules of its docs/metrics.md). One config "
             "per subset file in this folder; each one's provenance is below and under `lpselect:` in the "
             "metadata above. This file is rebuilt on every `lpselect select` into this folder.", "",
             "```python", "from datasets import load_dataset", "",
             f'subset = load_dataset("path/to/this/folder", name="{configs[0]["config_name"] if configs else "STEM"}",'
             ' split="train")', "```", ""]
    kinds = {_kind(s) for s, _ in entries}
    if len(kinds) > 1:
        lines += ["Note: the subsets here are in different file formats; `datasets` reads every config of a folder "
                  "with the builder of the first one, so load the others by file, e.g. "
                  '`load_dataset("csv", data_files=FILE)`.', ""]
    for subset, _ in entries:
        stem = subset_stem(subset.name)
        lines += [f"## {stem}", "", "| field | value |", "|---|---|"]
        lines += [f"| {k} | {_cell(v)} |" for k, v in provenance[stem].items()]
        lines.append("")
    return "\n".join(lines)


def _folder_entries(folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(subset, report) of every report in ``folder`` whose subset still exists, sorted by subset name."""
    out = []
    for report_path in sorted(folder.glob("*" + REPORT_SUFFIX)):
        subset = folder / report_path.name[: -len(REPORT_SUFFIX)]
        report = _read_report(report_path)
        if report is not None and subset.exists():
            out.append((subset, report))
    return out


def _read_report(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _kind(subset: Path) -> str:
    if subset.is_dir():
        return "arrow"
    suffix = subset.suffix.lower()
    return "json" if suffix in (".json", ".jsonl", ".ndjson") else suffix.lstrip(".")


def _cell(v: Any) -> str:
    text = "" if v is None else (f"{v:g}" if isinstance(v, float) else str(v))
    return text.replace("|", "\\|")
