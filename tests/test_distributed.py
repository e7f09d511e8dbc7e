"""Two CPU processes (torchrun, gloo) give the same scores as one: disjoint shards, nothing missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest


def _rows(n: int) -> list[dict[str, str]]:
    return [{"instruction": f"Add {i} and {i + 3}." + " Think." * (i % 7), "input": "The fox" if i % 2 else "",
             "output": f"The answer is {2 * i + 3}." + " The lazy dog." * (i % 5)} for i in range(n)]


def _score(data: Path, out: Path, model: Path, nproc: int) -> dict[str, np.ndarray]:
    args = ["score", "--data", str(data), "--out", str(out), "--model", str(model), "--epochs", "2",
            "--batch-size", "2", "--grad-accum", "4", "--lr", "1e-3", "--precision", "fp32", "--quiet"]
    if nproc == 1:
        cmd = [sys.executable, "-m", "lpselect.cli", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "lpselect.cli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    t = pq.read_table(out / "scores.parquet")
    return {c: t.column(c).to_numpy() for c in t.column_names}


@pytest.mark.slow
def test_two_processes_equal_one(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "d.json"
    data.write_text(json.dumps(_rows(37)))  # odd: shards of unequal size, and a last step of 5 rows
    one = _score(data, tmp_path / "one", tiny_model_dir, 1)
    two = _score(data, tmp_path / "two", tiny_model_dir, 2)
    assert two["id"].tolist() == list(range(37))
    for col in ("ppl_0", "ppl_1", "ppl_2", "prob_1", "ppl_online_1", "ppl_online_2"):
        assert np.all(np.isfinite(two[col])), col
        np.testing.assert_allclose(two[col], one[col], rtol=1e-4, err_msg=col)
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert manifest["steps"]["score"]["status"] == "complete"
