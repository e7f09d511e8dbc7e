"""Reading what a run folder holds, for the analysis commands. Never writes, never creates folders."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lpselect.core.metrics import compute_metric, recorded_epochs, spread_problem, stacked
from lpselect.data.formats import Dataset, read_dataset
from lpselect.errors import InputError, LPSelectError
from lpselect.runs.layout import CLUSTERS, MANIFEST, REPORT_SUFFIX, SCORES, SUBSETS
from lpselect.runs.tables import read_cluster_labels, read_score_table

# per-row columns besides id and ppl_* that score / import-reference write
ROW_COLUMNS = ("n_scored_tokens", "truncated", "prompt_shortened", "reference_no_tokens")


@dataclass
class ScoresTable:
    """One run's scores: every column (``table``, what compute_metric reads), the perplexity table
    P0..Pn (rows x epochs+1) and the per-row bookkeeping columns present."""

    path: Path
    table: dict[str, np.ndarray]
    ppl: np.ndarray
    columns: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        return int(self.ppl.shape[0])

    @property
    def n_epochs(self) -> int:
        """Trained epochs n (0 when only P0 was recorded)."""
        return int(self.ppl.shape[1] - 1)


def resolve_scores(path: str | Path) -> Path:
    """A run folder means its scores.parquet; a file is taken as a scores file."""
    p = Path(path)
    if p.is_dir():
        p = p / SCORES
        if not p.exists():
            raise InputError(path, f"no {SCORES} in this folder (is it a run folder?)")
    elif not p.exists():
        raise InputError(path, "not found (give a run folder or a scores.parquet)")
    return p


def run_label(path: str | Path) -> str:
    """A short name for a run in tables: the folder's name (the parent's, for a scores file)."""
    p = Path(path)
    return (p.parent if p.is_file() else p).resolve().name or str(p)


def read_scores(path: str | Path) -> ScoresTable:
    scores = resolve_scores(path)
    table = read_score_table(scores)
    return ScoresTable(path=scores, table=table, ppl=stacked(table, "ppl"),
                       columns={c: table[c] for c in ROW_COLUMNS if c in table})


def metric_values(scores: ScoresTable, metric: str, epoch: int) -> np.ndarray:
    """A metric of a scores table, to rank by; a bad metric or epoch, or one that ranks nothing (the same value
    on every row), is the user's error, naming the file."""
    try:
        values = compute_metric(metric, scores.table, epoch)
    except ValueError as e:
        raise InputError(scores.path, str(e)) from None
    if problem := spread_problem(values, metric, epoch, recorded_epochs(scores.table)):
        raise InputError(scores.path, problem)
    return values


def resolve_clusters(path: str | Path) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / CLUSTERS
    if not p.exists():
        raise InputError(path, f"not found (give a {CLUSTERS} or a run folder holding one)")
    return p


def read_clusters(path: str | Path, n_rows: int) -> np.ndarray:
    return read_cluster_labels(resolve_clusters(path), n_rows)


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    """The run's manifest, or {} when there is none; a damaged one is an error the user must see."""
    path = Path(run_dir) / MANIFEST
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(path, f"not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise InputError(path, "expected a JSON object")
    return data


def data_path_of(manifest: dict[str, Any]) -> Path | None:
    """The instruction data the run was made from (score's input, else cluster's), if the manifest says."""
    steps = manifest.get("steps") or {}
    for step in ("score", "cluster"):
        record = steps.get(step) or {}
        path = ((record.get("inputs") or {}).get("data") or {}).get("path")
        if isinstance(path, str) and path:
            return Path(path)
    return None


def subset_reports(run_dir: str | Path, extra: Sequence[str | Path] = ()) -> list[tuple[str, dict[str, Any]]]:
    """(subset name, report) of every ``subsets/*.report.json`` (sorted by name; unreadable ones skipped), then
    of each of ``extra``: a subset file (its ``.report.json`` beside it), a report itself, or a folder of them.
    A report found twice is shown once; an ``extra`` that is not one, and a report without the selected ids
    (an older lpselect's), are the user's error."""
    folder = Path(run_dir) / SUBSETS
    found = sorted(folder.glob("*" + REPORT_SUFFIX)) if folder.is_dir() else []
    paths = [p for p in found if p.is_file()]
    for item in extra:
        paths += _report_paths(Path(item))
    out, seen, names = [], set(), set()
    for path in paths:
        if path.resolve() in seen:
            continue
        seen.add(path.resolve())
        explicit = path not in found
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            if explicit:
                raise InputError(path, f"not a readable subset report ({e})") from None
            continue
        if not isinstance(report, dict):
            if explicit:
                raise InputError(path, "not a subset report (expected a JSON object)")
            continue
        if "ids" not in report:  # selecting it again could pick other rows than the subset file holds
            raise InputError(path, "lists no selected ids (written by an older lpselect): run lpselect select "
                                   "for this subset again")
        name = path.name[: -len(REPORT_SUFFIX)]
        if name in names:  # the same file name in two folders: the path tells them apart
            name = str(path)[: -len(REPORT_SUFFIX)]
        names.add(name)
        out.append((name, report))
    return out


def _report_paths(path: Path) -> list[Path]:
    """The subset reports ``--subsets PATH`` names: a folder's ``*.report.json``, a report, or a subset's."""
    if path.is_dir():
        reports = sorted(p for p in path.glob("*" + REPORT_SUFFIX) if p.is_file())
        if not reports:
            raise InputError(path, f"no *{REPORT_SUFFIX} in this folder (lpselect select writes one per subset)")
        return reports
    if path.name.endswith(REPORT_SUFFIX) and path.is_file():
        return [path]
    beside = Path(str(path) + REPORT_SUFFIX)
    if beside.is_file():
        return [beside]
    if not path.exists():
        raise InputError(path, "not found (give a subset file, its .report.json, or a folder of them)")
    raise InputError(path, f"no {beside.name} beside this subset (lpselect select writes it)")


def fields_of(manifest: dict[str, Any]) -> dict[str, str] | None:
    """The field mapping (--fields) the run read its data with (score's record, else cluster's), if any."""
    steps = manifest.get("steps") or {}
    for step in ("score", "cluster"):
        data = ((steps.get(step) or {}).get("inputs") or {}).get("data") or {}
        if isinstance(data, dict) and isinstance(data.get("fields"), dict):
            return data["fields"]
    return None


def try_read_dataset(path: Path | None, n_rows: int,
                     fields: dict[str, str] | None = None) -> tuple[Dataset | None, str]:
    """The run's data (read with the run's field mapping) when it is still readable and has the run's row count;
    else None and why not."""
    if path is None:
        return None, "the manifest names no data file (e.g. an imported reference run)"
    if not path.exists():
        return None, f"the data file {path} is not readable here"
    try:
        dataset = read_dataset(path, fields)
    except (LPSelectError, OSError, ValueError) as e:
        return None, f"cannot read {path}: {e}"
    if len(dataset) != n_rows:
        return None, f"{path} has {len(dataset)} rows but the scores have {n_rows}: not the run's data"
    return dataset, ""


def score_data_record(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The score step's data record ({path, sha256, rows_sha256}) of a run's manifest, if any."""
    record = ((manifest.get("steps") or {}).get("score") or {})
    data = (record.get("inputs") or {}).get("data") if isinstance(record, dict) else None
    return data if isinstance(data, dict) and data.get("sha256") else None


def subset_rows(report: dict[str, Any], n_rows: int, manifest: dict[str, Any]) -> tuple[np.ndarray | None, str]:
    """The rows a subset holds, as ids of this run's data, from its report's ``ids`` (select writes them, in the
    subset's order; :func:`subset_reports` refuses a report without them); (None, why) when they are not this
    run's rows."""
    from lpselect.data.provenance import same_rows

    run_data = score_data_record(manifest)
    if run_data is not None and report.get("data_sha256"):
        same = same_rows({"path": report.get("data"), "sha256": report["data_sha256"],
                          **({"fields": report["fields"]} if report.get("fields") else {})}, run_data)
        if same is False or (same is None and report["data_sha256"] != run_data.get("sha256")):
            return None, f"unknown: selected from other data ({report.get('data')}), not this run's"
    ids = report["ids"]
    if not isinstance(ids, list) or any(not isinstance(i, int) or not 0 <= i < n_rows for i in ids):
        return None, f"unknown: its report's ids are not row ids 0..{n_rows - 1} of this run's data"
    if len(set(ids)) != len(ids):
        return None, "unknown: its report's ids repeat a row"
    return np.asarray(ids, dtype=np.int64), "ids in its report"
