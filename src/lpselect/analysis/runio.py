"""Reading what a run folder holds, for the analysis commands. Never writes, never creates folders."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lpselect.core.metrics import compute_metric, stacked
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
    """LP(i) / LP_app(i) of a scores table; a bad metric or epoch is the user's error, naming the file."""
    try:
        return compute_metric(metric, scores.table, epoch)
    except ValueError as e:
        raise InputError(scores.path, str(e)) from None


def load_metric(path: str | Path, metric: str = "lp", epoch: int = 1) -> np.ndarray:
    return metric_values(read_scores(path), metric, epoch)


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


def subset_reports(run_dir: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """(subset name, report) of every ``subsets/*.report.json``, sorted by name; unreadable ones skipped."""
    folder = Path(run_dir) / SUBSETS
    out = []
    for path in sorted(folder.glob("*" + REPORT_SUFFIX)) if folder.is_dir() else []:
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(report, dict):
            out.append((path.name[: -len(REPORT_SUFFIX)], report))
    return out


def try_read_dataset(path: Path | None, n_rows: int) -> tuple[Dataset | None, str]:
    """The run's data when it is still readable and has the run's row count; else None and why not."""
    if path is None:
        return None, "the manifest names no data file (e.g. an imported reference run)"
    if not path.exists():
        return None, f"the data file {path} is not readable here"
    try:
        dataset = read_dataset(path)
    except (LPSelectError, OSError, ValueError) as e:
        return None, f"cannot read {path}: {e}"
    if len(dataset) != n_rows:
        return None, f"{path} has {len(dataset)} rows but the scores have {n_rows}: not the run's data"
    return dataset, ""
