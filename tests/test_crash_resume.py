"""SIGKILL `lpselect score` at ten points; after re-running, the scores equal an uninterrupted run's and no
finished unit of work (pass chunk, training epoch) was done twice (score/events.log proves it)."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

CRASH_POINTS = [
    "pass:ppl:0:0",  # after the first chunk of P0
    "pass:ppl:0:2",
    "passed:0",  # P0 written, before training
    "train:1:step:1",  # inside epoch 1
    "checkpoint:1:8",  # while writing the epoch-1 checkpoint (30 rows, 4 a step: 8 steps)
    "trained:1",  # checkpoint written, before P1
    "pass:ppl:1:1",
    "train:2:step:0",
    "passed:2",
    "write_scores",  # while writing scores.parquet
]


def _rows(n: int) -> list[dict[str, str]]:
    return [{"instruction": f"Add {i} and {i + 3}." + " Think." * (i % 7), "input": "The fox" if i % 2 else "",
             "output": f"The answer is {2 * i + 3}." + " The lazy dog." * (i % 5)} for i in range(n)]


def _score(data: Path, out: Path, model: Path, crash_at: str | None = None, extra: tuple[str, ...] = ()
           ) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "lpselect.cli", "score", "--data", str(data), "--out", str(out), "--model",
           str(model), "--epochs", "2", "--batch-size", "2", "--grad-accum", "2", "--lr", "1e-3",
           "--precision", "fp32", "--quiet", "--pass-chunk-rows", "8", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("LPSELECT_CRASH_AT", None)
    if crash_at:
        env["LPSELECT_CRASH_AT"] = crash_at
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def _table(out: Path) -> dict[str, np.ndarray]:
    t = pq.read_table(out / "scores.parquet")
    return {c: t.column(c).to_numpy() for c in t.column_names}


@pytest.mark.slow
def test_sigkill_at_ten_points_then_resume(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "d.json"
    data.write_text(json.dumps(_rows(30)))
    clean = _score(data, tmp_path / "clean", tiny_model_dir)
    assert clean.returncode == 0, clean.stderr[-2000:]
    expected = _table(tmp_path / "clean")
    expected_units = (tmp_path / "clean" / "score" / "events.log").read_text().splitlines()
    assert len(expected_units) == 3 * 4 + 2  # 3 passes x 4 chunks of 8 rows, 2 epochs

    for point in CRASH_POINTS:
        out = tmp_path / point.replace(":", "_")
        crashed = _score(data, out, tiny_model_dir, crash_at=point)
        assert crashed.returncode == -9, (point, crashed.returncode, crashed.stderr[-1000:])
        assert not (out / "scores.parquet").exists(), point  # never a half-written result
        resumed = _score(data, out, tiny_model_dir)
        assert resumed.returncode == 0, (point, resumed.stderr[-2000:])
        got = _table(out)
        assert list(got) == list(expected), point
        for col, values in expected.items():
            np.testing.assert_allclose(got[col], values, rtol=1e-6, err_msg=f"{point}: {col}")
        units = (out / "score" / "events.log").read_text().splitlines()
        repeated = [u for u, n in collections.Counter(units).items() if n > 1]
        assert not repeated, f"{point}: done twice: {repeated}"
        assert sorted(units) == sorted(expected_units), point
        assert not list(out.glob(".*.tmp")), point


MID_EPOCH_POINTS = [
    "train:1:step:5",  # epoch 1, after step slot 5 and its checkpoint
    "checkpoint:2:3",  # while writing the checkpoint after 3 steps of epoch 2
    "train:2:step:6",  # epoch 2, one step before its end
]


@pytest.mark.slow
def test_sigkill_mid_epoch_resumes_from_the_step(tiny_model_dir: Path, tmp_path: Path) -> None:
    """With --save-steps 1 a killed score job resumes inside the epoch: no finished (checkpointed) optimizer step
    is trained again, and the scores equal an uninterrupted run's (which checkpoints only at epoch ends)."""
    data = tmp_path / "d.json"
    data.write_text(json.dumps(_rows(30)))  # 4 rows a step: 8 step slots an epoch
    clean = _score(data, tmp_path / "clean", tiny_model_dir)
    assert clean.returncode == 0, clean.stderr[-2000:]
    expected = _table(tmp_path / "clean")
    every_step = [f"step {e}:{k} rank 0" for e in (1, 2) for k in range(7)]  # the last slot is the epoch end

    for point in MID_EPOCH_POINTS:
        out = tmp_path / point.replace(":", "_")
        crashed = _score(data, out, tiny_model_dir, crash_at=point, extra=("--save-steps", "1"))
        assert crashed.returncode == -9, (point, crashed.stderr[-1000:])
        before = [u for u in (out / "score" / "events.log").read_text().splitlines() if u.startswith("step ")]
        resumed = _score(data, out, tiny_model_dir, extra=("--save-steps", "1"))
        assert resumed.returncode == 0, (point, resumed.stderr[-2000:])
        units = (out / "score" / "events.log").read_text().splitlines()
        steps = [u for u in units if u.startswith("step ")]
        assert sorted(steps) == sorted(every_step), point  # each step slot logged (= trained and saved) once
        assert steps[: len(before)] == before and before, point  # the resumed run went on after them
        assert units.count("trained epoch 1 rank 0") == units.count("trained epoch 2 rank 0") == 1, point
        got = _table(out)
        for col, values in expected.items():
            np.testing.assert_allclose(got[col], values, rtol=1e-6, atol=0, err_msg=f"{point}: {col}")


@pytest.mark.slow
def test_without_save_steps_the_time_cadence_checkpoints_inside_the_epoch(tiny_model_dir: Path,
                                                                           tmp_path: Path) -> None:
    """No --save-steps: --save-minutes (default 30; here so small that every step is past it) checkpoints inside
    the epoch, so a job killed at 75 % of epoch 1 resumes at its last step, not at the epoch's start, says so,
    and ends with the uninterrupted run's scores."""
    data = tmp_path / "d.json"
    data.write_text(json.dumps(_rows(30)))  # 8 step slots an epoch
    clean = _score(data, tmp_path / "clean", tiny_model_dir)
    assert clean.returncode == 0, clean.stderr[-2000:]
    expected = _table(tmp_path / "clean")
    out = tmp_path / "run"
    cadence = ("--save-minutes", "1e-9")
    crashed = _score(data, out, tiny_model_dir, crash_at="train:1:step:5", extra=cadence)
    assert crashed.returncode == -9, crashed.stderr[-1000:]
    state = json.loads((out / "score" / "checkpoint" / "state.json").read_text())
    assert (state["epoch"], state["done_in_epoch"]) == (1, 6)  # slots 0..5 finished and saved
    resumed = _score(data, out, tiny_model_dir, extra=cadence)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming {out}: reused tokens, P0, checkpoint at epoch 1 step 6/8" in resumed.stderr
    steps = [u for u in (out / "score" / "events.log").read_text().splitlines() if u.startswith("step 1:")]
    assert steps == [f"step 1:{k} rank 0" for k in range(7)]  # slots 0-5 before the kill, 6 after: none twice
    got = _table(out)
    for col, values in expected.items():
        np.testing.assert_allclose(got[col], values, rtol=1e-6, atol=0, err_msg=col)
