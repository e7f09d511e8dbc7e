"""The training micro-batch budget: the memory arithmetic (numbers worked by hand) and where it applies."""

from __future__ import annotations

import json

import pytest
import torch
from test_scoring import tiny_config

from lpselect.config import ScoreConfig
from lpselect.engine.budget import auto_micro_budget, micro_budget_from_memory
from lpselect.steps.score import score
from lpselect.steps.train import TrainConfig

SMOLLM2 = dict(layers=30, hidden=576, vocab=49152)
GIB = 2**30


def test_budget_from_memory_worked_by_hand():
    # 8 GiB free, 135M trainable parameters: 12 bytes each for gradient and AdamW moments = 1.62e9 bytes;
    # 0.6 x (8,589,934,592 - 1,620,000,000) = 4,181,960,755 bytes for activations.
    # bf16, no checkpointing, per token: 30 layers x 34 B x 576 = 587,520; logits 8 x 49,152 = 393,216;
    # total 980,736 -> 4,264.1 tokens -> 4,096 (multiple of 256)
    assert micro_budget_from_memory(8 * GIB, 135_000_000, bf16=True, checkpointing=False, **SMOLLM2) == 4096
    # fp32: 30 x 68 x 576 = 1,175,040 + 393,216 = 1,568,256 per token -> 2,666.6 -> 2,560
    assert micro_budget_from_memory(8 * GIB, 135_000_000, bf16=False, checkpointing=False, **SMOLLM2) == 2560
    # checkpointing, bf16: 30 layers x 2 B x 576 = 34,560 + one layer 19,584 + 393,216 = 447,360 -> 9,348 -> 9,216
    assert micro_budget_from_memory(8 * GIB, 135_000_000, bf16=True, checkpointing=True, **SMOLLM2) == 9216


def test_budget_is_capped_and_floored():
    assert micro_budget_from_memory(1000 * GIB, 0, bf16=True, checkpointing=False, **SMOLLM2) == 16384
    # 2 GiB free barely holds the optimizer state: the floor, not zero or a negative budget
    assert micro_budget_from_memory(2 * GIB, 135_000_000, bf16=True, checkpointing=False, **SMOLLM2) == 512
    assert micro_budget_from_memory(1 * GIB, 135_000_000, bf16=True, checkpointing=False, **SMOLLM2) == 512


def test_cpu_budget_is_the_cache_sized_one(tiny_model_dir):
    from lpselect.engine.models import load_causal_lm

    model = load_causal_lm(str(tiny_model_dir))
    assert auto_micro_budget(model, torch.device("cpu"), precision="fp32", checkpointing=False) == 2048


def test_configs_default_to_the_automatic_budget():
    assert ScoreConfig().max_tokens_per_micro_batch is None
    assert TrainConfig().max_tokens_per_micro_batch is None


@pytest.mark.parametrize("asked, used", [(None, 2048), (0, 0), (96, 96)])
def test_score_job_records_the_budget_it_used(alpaca_file, tiny_model_dir, tmp_path, asked, used):
    folder = tmp_path / "run"
    score(alpaca_file, folder, tiny_config(tiny_model_dir, epochs=1, max_tokens_per_micro_batch=asked),
          progress=False)
    step = json.loads((folder / "manifest.json").read_text())["steps"]["score"]
    assert step["micro_batch_budget"] == used
    assert step["config"]["max_tokens_per_micro_batch"] == asked


def _smallest_on_rank(rank: int, init_file: str, values: list[int], out: str) -> None:
    import torch.distributed as dist

    from lpselect.engine.distributed import Workers

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=len(values))
    try:
        got = Workers(rank=rank, world=len(values)).smallest(values[rank])
        with open(f"{out}.{rank}", "w") as f:
            f.write(str(got))
    finally:
        dist.destroy_process_group()


def test_every_rank_gets_the_smallest_budget(tmp_path):
    """Ranks with different free memory must still cut steps alike (FSDP's calls are collective)."""
    import torch.multiprocessing as mp

    values = [16384, 3072]
    mp.spawn(_smallest_on_rank, args=(str(tmp_path / "init"), values, str(tmp_path / "got")), nprocs=2)
    assert [int((tmp_path / f"got.{r}").read_text()) for r in range(2)] == [3072, 3072]

