"""Run by tests/test_ddp.py under ``torchrun --nproc-per-node 2`` (gloo): one optimizer step's gradients through
lpselect's DDP path, against the single-process gradients of the same step computed in the same process."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from transformers import AutoModelForCausalLM, AutoTokenizer

from lpselect.config import FineTuneSettings
from lpselect.data.formats import Sample
from lpselect.data.tokenize import tokenize_samples
from lpselect.engine.distributed import data_parallel, init_workers
from lpselect.engine.train import accumulate_gradients


def grads(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


def main(model_dir: str, out: str) -> None:
    workers, device = init_workers(torch.device("cpu"))
    tok = AutoTokenizer.from_pretrained(model_dir)
    samples = [Sample(i, f"Say {i} things" + " more" * i, "", f"Fine, {i}." + " yes" * (3 * i)) for i in range(6)]
    data = tokenize_samples(samples, tok, max_length=64)
    s = FineTuneSettings(batch_size=1, grad_accum=3, max_tokens_per_micro_batch=0)  # micro-batches of one row
    result: dict[str, object] = {}
    # a step of 3 rows: rank 0 gets 2 micro-batches, rank 1 one; a step of 1 row: rank 1 gets none
    for name, step in (("uneven", np.array([0, 3, 5])), ("empty_rank", np.array([4]))):
        torch.manual_seed(0)
        single = AutoModelForCausalLM.from_pretrained(model_dir)
        denom = int(data.n_scored[step].sum())
        loss_single = accumulate_gradients(single, data, step, s, denom=denom, pad_id=tok.pad_token_id)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        parallel = data_parallel(model, workers, device)
        assert isinstance(parallel.ddp, DistributedDataParallel)
        loss_mine = accumulate_gradients(model, data, step, s, denom=denom, pad_id=tok.pad_token_id,
                                         workers=parallel)
        diff = max(float((a - b).abs().max()) for a, b in zip(grads(model), grads(single), strict=True))
        params = [p for p in model.parameters() if p.requires_grad]
        storages = {p.grad.untyped_storage().data_ptr() for p in params}
        result[name] = {"max_grad_diff": diff, "loss_single": loss_single, "loss_mine": loss_mine,
                        "n_params": len(params), "grad_storages": len(storages),
                        "n_micro": len(workers.shard(step, data.lengths))}
    Path(out, f"rank{workers.rank}.json").write_text(json.dumps(result))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
