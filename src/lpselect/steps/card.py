"""A Hugging Face dataset card beside every subset, so a subset shared alone still says how it was chosen.

The card is the folder's ``README.md``: YAML front matter with one ``configs`` entry per subset file (so
``datasets.load_dataset(folder, name=STEM)`` reads one subset) and each subset's provenance under the
``lpselect`` key, then a human-readable section per subset. It is rebuilt from every ``*.report.json`` in the
folder, so several subsets can share one folder. A ``README.md`` lpselect did not write (no :data:`MARKER`)
is never overwritten: the card then goes to ``<stem>.card.md`` and describes that subset only.

The card is written to be shared: inputs are named by file name and sha256 (or row fingerprint), never by the
path they had on the machine that selected. Each subset's section shows how TRL, axolotl and LLaMA-Factory
train it, and the folder's LLaMA-Factory ``dataset_info.json`` is rebuilt with it (lpselect.steps.trainer_configs).
Baseline subsets (a report with ``baseline_of``) are listed under the subset they are a baseline of.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lpselect.runs.io import atomic_path
from lpselect.runs.layout import CARD, CARD_BESIDE, MANIFEST, REPORT_SUFFIX
from lpselect.steps.trainer_configs import (
    PLACEHOLDER_DIR,
    SubsetView,
    llamafactory_entry,
    subset_view,
    training_section,
    write_dataset_info,
)

PLACEHOLDER = PLACEHOLDER_DIR
MARKER = "<!-- lpselect dataset card: written by `lpselect select` from the *.report.json files in this folder -->"
README = CARD
_FILE_SUFFIXES = (".json", ".jsonl", ".ndjson", ".parquet", ".csv")
# report fields copied into the card's provenance, in this order
PROVENANCE = ("subset_file", "baseline_of", "scorer", "metric", "epoch", "percent", "band", "strategy",
              "trajectory_k", "order", "seed", "budget", "n_requested", "max_value", "dedup", "n_rows", "n_selected",
              "n_nan_left_out", "n_above_max_left_out", "lpselect_version", "data", "data_sha256", "fields",
              "rows_sha256", "scores", "scores_sha256", "clusters", "clusters_sha256")
# what the card keeps of the report's ``dedup`` (its examples are row texts, its search settings local detail)
DEDUP_SHOWN = ("mode", "threshold", "removed", "kept")
# report fields holding a local path: the card names the file only (with its run folder for a run's table)
LOCAL_PATHS = {"data": 1, "scores": 2, "clusters": 2, "consensus_of": 2}
BASELINE_ADVICE = ("Train this subset and its baselines with the same recipe and compare: the baselines take as "
                   "many rows without the metric (random) or at random within the same clusters (clust_rand), "
                   "so they show whether the selection helped.")


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
    return CardTarget(subset.parent / CARD_BESIDE.format(stem=subset_stem(subset.name)), shared=False,
                      note=f"{readme} was not written by lpselect and is left as is; the card is in this file")


def scorer_of(scores: str | Path) -> str:
    """The scorer model named by the run manifest beside scores.parquet, else ``unknown`` (e.g. imported)."""
    path = Path(scores).parent / MANIFEST
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
    """(Re)write the card of ``subset``'s folder (or its own ``.card.md``) and the folder's LLaMA-Factory
    ``dataset_info.json``, atomically; returns the card's path."""
    subset = Path(subset)
    target = target or card_target(subset)
    folder_entries = _folder_entries(subset.parent)
    views = {s.name: subset_view(s, subset_stem(s.name), r) for s, r in folder_entries}
    info = {subset_stem(s.name): e for s, r in folder_entries
            if (v := views[s.name]) is not None and (e := llamafactory_entry(v, s.name + REPORT_SUFFIX))}
    in_info = write_dataset_info(subset.parent, info)
    if target.shared:
        entries = folder_entries
    else:
        entries = [(subset, _read_report(Path(str(subset) + REPORT_SUFFIX)) or {})]
        if subset.name not in views:
            views[subset.name] = subset_view(subset, subset_stem(subset.name), entries[0][1])
    with atomic_path(target.path) as tmp:
        tmp.write_text(render_card(entries, views, in_info), encoding="utf-8")
    return target.path


def shareable(report: dict[str, Any]) -> dict[str, Any]:
    """The report's provenance fields as the card shows them: a local path becomes its file name (a run's table
    keeps its run folder's name: ``run/scores.parquet``); sha256 and row fingerprints say which file it was."""
    out = {}
    for key in PROVENANCE:
        if key not in report:
            continue
        value = report[key]
        if key in LOCAL_PATHS and value is not None:
            value = [_short(v, LOCAL_PATHS[key]) for v in value] if isinstance(value, list) \
                else _short(value, LOCAL_PATHS[key])
        elif key == "scorer" and isinstance(value, str):
            value = shareable_scorer(value)
        elif key == "dedup" and isinstance(value, dict):
            value = {k: value[k] for k in DEDUP_SHOWN if k in value}
        out[key] = value
    return out


def shareable_scorer(scorer: str) -> str:
    """The scorer as the card names it: a hub id as it is, a local model (an absolute or ``./`` path) by its
    folder's name (with its file for a GGUF), each scorer of a consensus alike."""
    head, sep, names = scorer.partition(": ")
    if sep and head.startswith("consensus of "):
        return f"{head}: " + ", ".join(shareable_scorer(n) for n in names.split(", "))
    if not _is_local_path(scorer):
        return scorer
    parts = [p for p in scorer.replace("\\", "/").split("/") if p]
    keep = 2 if parts and parts[-1].lower().endswith(".gguf") else 1
    return "/".join(parts[-keep:]) or scorer


def _is_local_path(name: str) -> bool:
    """A path on the machine that selected, not a hub id (``org/name``)."""
    return (name.startswith(("/", "~", "./", "../", "\\")) or (len(name) > 2 and name[1] == ":"
            and name[2] in "/\\"))


def _short(value: Any, parts: int) -> str:
    """The last ``parts`` components of a path; a description such as ``<datasets.Dataset ...>`` as it is."""
    text = str(value)
    if text.startswith("<"):
        return text
    return "/".join(Path(text).parts[-parts:])


def render_card(entries: list[tuple[Path, dict[str, Any]]], views: dict[str, SubsetView | None] | None = None,
                in_dataset_info: set[str] | None = None) -> str:
    """Card text for (subset path, report) pairs: YAML front matter, the marker, one section per subset (its
    provenance, how to train it, its baselines). ``views`` and ``in_dataset_info`` come from write_card."""
    views, in_dataset_info = views or {}, in_dataset_info or set()
    configs, provenance = [], {}
    for subset, report in entries:
        stem = subset_stem(subset.name)
        files = f"{subset.name}/*.arrow" if subset.is_dir() else subset.name
        configs.append({"config_name": stem, "data_files": [{"split": "train", "path": files}]})
        provenance[stem] = shareable(report)
    front = {"pretty_name": "lpselect subsets", "tags": ["lpselect", "data-selection", "instruction-tuning"],
             "configs": configs, "lpselect": provenance}
    lines = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(), "---", MARKER, "",
             "# lpselect subsets", "",
             "Instruction-tuning subsets chosen by lpselect from a small scorer model's per-sample losses "
             "(learning percentage, Mekala et al. 2024, and the rival rules of its docs/metrics.md). One config "
             "per subset file in this folder; each one's provenance is below and under `lpselect:` in the "
             "metadata above (inputs by file name and sha256). This file and `dataset_info.json` (LLaMA-Factory) "
             "are rebuilt on every `lpselect select` into this folder.", "",
             "```python", "from datasets import load_dataset", "",
             f'subset = load_dataset("{PLACEHOLDER}", name="{configs[0]["config_name"] if configs else "STEM"}",'
             ' split="train")', "```", ""]
    kinds = {_kind(s) for s, _ in entries}
    if len(kinds) > 1:
        lines += ["Note: the subsets here are in different file formats; `datasets` reads every config of a folder "
                  "with the builder of the first one, so load the others by file, e.g. "
                  '`load_dataset("csv", data_files=FILE)`.', ""]
    baselines = _baselines_by_subset(entries)
    names = {s.name for s, _ in entries}
    for subset, report in entries:
        if report.get("baseline_of") in names:
            continue  # listed under the subset it is a baseline of
        lines += _section(subset, report, provenance, views, in_dataset_info)
        for base, base_report in baselines.get(subset.name, []):
            lines += _section(base, base_report, provenance, views, in_dataset_info, level="###")
        if baselines.get(subset.name):
            lines += [BASELINE_ADVICE, ""]
    return "\n".join(lines)


def _baselines_by_subset(entries: list[tuple[Path, dict[str, Any]]]) -> dict[str, list[tuple[Path, dict]]]:
    """Baseline subsets (reports with ``baseline_of``) by the file name of the subset they are a baseline of."""
    out: dict[str, list[tuple[Path, dict]]] = {}
    for subset, report in entries:
        of = report.get("baseline_of")
        if isinstance(of, str) and of:
            out.setdefault(of, []).append((subset, report))
    return out


def _section(subset: Path, report: dict[str, Any], provenance: dict[str, dict[str, Any]],
             views: dict[str, SubsetView | None], in_dataset_info: set[str], level: str = "##") -> list[str]:
    """One subset's heading, provenance table and training snippets."""
    stem = subset_stem(subset.name)
    of = report.get("baseline_of")
    title = f"{level} {stem}" + (f" — baseline ({report.get('strategy', '?')}) of `{of}`" if of else "")
    lines = [title, "", "| field | value |", "|---|---|"]
    lines += [f"| {k} | {_cell(v)} |" for k, v in provenance[stem].items() if v is not None]
    lines.append("")
    view = views.get(subset.name)
    if view is not None:
        lines += training_section(view, stem in in_dataset_info)
    elif views:
        lines += ["(Not described for trainers: lpselect could not read this subset back.)", ""]
    return lines


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
    if isinstance(v, dict):
        v = ", ".join(f"{k}={x}" for k, x in v.items())
    elif isinstance(v, list):
        v = ", ".join(map(str, v))
    text = "" if v is None else (f"{v:g}" if isinstance(v, float) else str(v))
    return text.replace("|", "\\|")
