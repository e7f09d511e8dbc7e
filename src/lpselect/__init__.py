"""lpselect: a small language model picks the instruction-tuning data for a larger one.

The Python API mirrors the CLI: :func:`score`, :func:`cluster`, :func:`select_subset`, :func:`run_pipeline`.
Pure math lives in :mod:`lpselect.core.metrics` and :mod:`lpselect.core.selection`. Names load lazily, so
``import lpselect`` (and ``lpselect --help``) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"  # the one place the version is stated (pyproject.toml reads it)

_API = {
    "score": "lpselect.steps.score",
    "cluster": "lpselect.steps.cluster",
    "select_subset": "lpselect.steps.select",
    "run_pipeline": "lpselect.steps.pipeline",
    "load_run_config": "lpselect.steps.pipeline",
    "select": "lpselect.core.selection",
    "learning_percentage": "lpselect.core.metrics",
    "learning_percentage_approx": "lpselect.core.metrics",
    "read_dataset": "lpselect.data.formats",
    "write_subset": "lpselect.data.formats",
    "ScoreConfig": "lpselect.config",
    "ClusterConfig": "lpselect.config",
    "SelectSpec": "lpselect.config",
    "SubsetSpec": "lpselect.config",
    "TrainConfig": "lpselect.config",
    "train_target": "lpselect.steps.train",
    "RunConfig": "lpselect.config",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'lpselect' has no attribute {name!r}")
