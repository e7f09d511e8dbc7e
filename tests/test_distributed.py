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


def _score(data: Path, out: Path, model: Path, nproc: int, extra: list[str] = (), crash_at: str = ""
           ) -> dict[str, np.ndarray]:
    args = ["score", "--data", str(data), "--out", str(out), "--model", str(model), "--epochs", "2",
            "--batch-size", "2", "--grad-accum", "4", "--lr", "1e-3", "--precision", "fp32", "--quiet", *extra]
    if nproc == 1:
        cmd = [sys.executable, "-m", "lpselect.cli", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "lpselect.cli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LPSELECT_CRASH_AT": crash_at}
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


@pytest.mark.slow
def test_fsdp_scoring_equals_one_process_and_resumes(tiny_model_dir: Path, tmp_path: Path) -> None:
    """`score --fsdp` with 2 processes: the passes (padded to equal forward counts, chunks of unequal shards)
    and the training epochs give the 1-process scores; killed inside epoch 2 and rerun, it ends the same."""
    data = tmp_path / "d.json"
    data.write_text(json.dumps(_rows(37)))
    one = _score(data, tmp_path / "one", tiny_model_dir, 1)
    args = ["--fsdp", "--pass-chunk-rows", "6", "--max-tokens-per-batch", "64"]
    with pytest.raises(AssertionError):
        _score(data, tmp_path / "fsdp", tiny_model_dir, 2, args, crash_at="train:2:step:2")
    assert json.loads((tmp_path / "fsdp" / "score" / "checkpoint" / "state.json").read_text())["epoch"] == 1
    two = _score(data, tmp_path / "fsdp", tiny_model_dir, 2, args)
    assert two["id"].tolist() == list(range(37))
    for col in ("ppl_0", "ppl_1", "ppl_2", "prob_1", "ppl_online_1", "ppl_online_2"):
        assert np.all(np.isfinite(two[col])), col
        np.testing.assert_allclose(two[col], one[col], rtol=1e-4, err_msg=col)
    events = (tmp_path / "fsdp" / "score" / "events.log").read_text().splitlines()
    for rank in (0, 1):  # epoch 1 was trained once by each rank, not again after the crash
        assert events.count(f"trained epoch 1 rank {rank}") == 1, events
    chunks = [e for e in events if e.startswith("pass ")]
    assert len(chunks) == len(set(chunks)), "no pass chunk was computed twice"
    assert {e for e in events if e.startswith("pass ppl:0 chunk 3")} == {
        "pass ppl:0 chunk 3 rank 0", "pass ppl:0 chunk 3 rank 1"}, \
        "shards of 19 and 18 rows in chunks of 6: rank 1 joins chunk 3 with no rows of its own"


def _train(data: Path, out: Path, model: Path, nproc: int, extra: list[str] = (), crash_at: str = ""
           ) -> dict[str, np.ndarray]:
    args = ["train", "--data", str(data), "--out", str(out), "--model", str(model), "--epochs", "2",
            "--batch-size", "2", "--grad-accum", "4", "--lr", "1e-3", "--precision", "fp32", "--device", "cpu",
            "--quiet", *extra]
    launcher = [] if nproc == 1 else ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd = [sys.executable, *launcher, "-m", "lpselect.cli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LPSELECT_CRASH_AT": crash_at}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    from safetensors.numpy import load_file

    return load_file(out / "model.safetensors")


@pytest.mark.slow
def test_two_process_target_training_equals_one(tiny_model_dir: Path, tmp_path: Path) -> None:
    """`train` under torchrun: shards of every step, summed gradients, one writer; same weights and losses."""
    data = tmp_path / "d.json"
    data.write_text(json.dumps(_rows(37)))
    one = _train(data, tmp_path / "one", tiny_model_dir, 1)
    two = _train(data, tmp_path / "two", tiny_model_dir, 2)
    assert one.keys() == two.keys()
    start = _train_state(tiny_model_dir)
    moved = max(float(np.abs(one[k] - start[k]).max()) for k in one if k in start)
    assert moved > 1e-3, "training changed the weights"
    for k in one:
        np.testing.assert_allclose(two[k], one[k], rtol=1e-4, atol=1e-6, err_msg=k)
    losses = [json.loads((tmp_path / d / "manifest.json").read_text())["steps"]["train"]["train_loss"]
              for d in ("one", "two")]
    assert losses[0].keys() == {"1", "2"} == losses[1].keys()
    for e in ("1", "2"):
        assert abs(losses[0][e] - losses[1][e]) <= 1e-4 * abs(losses[0][e])
    steps = [json.loads((tmp_path / d / "manifest.json").read_text())["steps"]["train"] for d in ("one", "two")]
    assert steps[0]["processes"] == 1 and steps[1]["processes"] == 2
    total = steps[0]["tokens_per_process"][0]
    assert total == 2 * steps[0]["counts"]["tokens"], "two epochs over every token"
    halves = steps[1]["tokens_per_process"]
    assert sum(halves) == total, "each row of each step trained on exactly one rank"
    assert min(halves) > 0.4 * total, "the shards are balanced"
    files = sorted(p.name for p in (tmp_path / "two").iterdir())
    assert "checkpoint" not in files and "config.json" in files and "manifest.json" in files


@pytest.mark.slow
def test_fsdp_target_training_equals_one_process(tiny_model_dir: Path, tmp_path: Path) -> None:
    """`train --fsdp` with 2 processes: sharded weights, summed reduce-scatter, padded micro-batch counts; the
    saved model equals the single-process one and loads as an ordinary HF folder; a resumed run agrees."""
    data = tmp_path / "d.json"
    data.write_text(json.dumps(_rows(37)))
    one = _train(data, tmp_path / "one", tiny_model_dir, 1)
    two = _train(data, tmp_path / "fsdp", tiny_model_dir, 2, ["--fsdp", "--save-steps", "1", "--keep-checkpoint"])
    assert one.keys() == two.keys()
    for k in one:
        np.testing.assert_allclose(two[k], one[k], rtol=1e-4, atol=1e-6, err_msg=k)
    config = json.loads((tmp_path / "fsdp" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    from lpselect.engine.models import load_causal_lm

    assert load_causal_lm(str(tmp_path / "fsdp")).num_parameters() > 0

    # killed (SIGKILL, rank 0) after step 7 of 10, then the same command again: resumes from the gathered
    # checkpoint of step 7 (weights and the full optimizer state, re-sharded) and ends where the others did
    args = ["--fsdp", "--save-steps", "1"]
    with pytest.raises(AssertionError):
        _train(data, tmp_path / "resumed", tiny_model_dir, 2, args, crash_at="train:step:7")
    assert json.loads((tmp_path / "resumed" / "checkpoint" / "state.json").read_text())["global_step"] == 7
    resumed = _train(data, tmp_path / "resumed", tiny_model_dir, 2, args)
    for k in one:
        np.testing.assert_allclose(resumed[k], one[k], rtol=1e-4, atol=1e-6, err_msg=k)


def _train_state(model_dir: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(next(model_dir.glob("*.safetensors")))
