"""Training under several processes uses torch's DistributedDataParallel: the step's gradients equal one
process's (sum semantics), ranks with unequal or no micro-batches take part, and the gradients are views of
DDP's buckets (no second copy of them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_ddp_step_equals_one_process(tiny_model_dir: Path, tmp_path: Path) -> None:
    worker = Path(__file__).with_name("_ddp_worker.py")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(worker), str(tiny_model_dir), str(tmp_path)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["uneven"]["n_micro"] for r in ranks] == [2, 1]
    assert [r["empty_rank"]["n_micro"] for r in ranks] == [1, 0]
    for r in ranks:
        for case in ("uneven", "empty_rank"):
            got = r[case]
            assert got["max_grad_diff"] < 1e-6, (case, got)  # every rank holds the whole step's gradient
            assert got["grad_storages"] < got["n_params"]  # gradients live in DDP's buckets, not beside them
    # each rank's loss is its own rows' share; together they are the single-process step's
    for case in ("uneven", "empty_rank"):
        assert sum(r[case]["loss_mine"] for r in ranks) == pytest.approx(ranks[0][case]["loss_single"], rel=1e-6)
    assert ranks[1]["empty_rank"]["loss_mine"] == 0.0
