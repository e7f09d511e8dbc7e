"""The embedded default job: the whole pipeline offline on the project's own small instruction set.

``instructions.jsonl`` (159 samples of twelve kinds, written for this project) is scored by
SmolLM2-135M-Instruct for one epoch (the LP_app(1) fast path, at the precision ``auto`` picks for the
hardware), clustered with all-MiniLM-L6-v2, and the hardest 10 % of every cluster is kept.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import numpy as np

from lpselect.config import ClusterConfig, RunConfig, ScoreConfig, SelectSpec
from lpselect.core.metrics import learning_percentage_approx
from lpselect.data.formats import read_dataset
from lpselect.runs.tables import read_ppl_table
from lpselect.steps.pipeline import RunResult, run_pipeline

DEMO_DATA = files("lpselect.demo") / "instructions.jsonl"


def demo_config(out: str | Path) -> RunConfig:
    return RunConfig(
        data=str(DEMO_DATA),
        out=str(out),
        score=ScoreConfig(epochs=1),
        cluster=ClusterConfig(k=1000, min_cluster_size=20),
        select=[SelectSpec(metrics=["lp_app"], epochs=[1], percents=[10], bands=["low"])],
    )


def run_demo(out: str | Path, *, progress: bool = True) -> tuple[RunResult, list[tuple[str, ...]]]:
    """Run the demo; return the run and a preview (first 10 selected rows) for the terminal."""
    cfg = demo_config(out)
    result = run_pipeline(cfg, progress=progress)
    dataset = read_dataset(cfg.data)
    ppl = read_ppl_table(result.scores_path, len(dataset))
    lp_app = learning_percentage_approx(ppl, 1)
    ids = result.subsets[0].ids
    ids = ids[np.argsort(lp_app[ids], kind="stable")][:10]
    preview = []
    for i in ids:
        s = dataset.samples[int(i)]
        preview.append((str(i), s.category or "", f"{lp_app[i]:.3f}", f"{ppl[i, 0]:.2f}", f"{ppl[i, 1]:.2f}",
                        s.instruction[:70]))
    return result, preview
