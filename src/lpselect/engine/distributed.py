"""Several processes (``torchrun`` / ``accelerate launch``): who does what, and how results are combined.

Passes: each rank scores a disjoint shard of the rows and the per-row sums are added across ranks, so every
id is scored exactly once. Training: each rank takes a shard of every optimizer step's samples; the loss is
normalised by the scored tokens of the whole step, and the gradients are summed across ranks by PyTorch's
``DistributedDataParallel`` (bucketed, overlapped with the backward pass, ``no_sync`` inside accumulation;
FSDP2 under ``--fsdp``), so every rank applies the single-process update and the weights stay identical.
Only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Workers:
    rank: int = 0
    world: int = 1
    fsdp: bool = False  # weights sharded by FSDP: gradients arrive reduced, forward/backward calls are collective
    ddp: Any = field(default=None, compare=False, repr=False)  # the DDP-wrapped training forward (ScoredLoss)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, rows: np.ndarray, lengths: np.ndarray, rank: int | None = None) -> np.ndarray:
        """This rank's rows (or ``rank``'s): longest first, dealt round-robin so ranks get similar token counts."""
        if self.world == 1:
            return rows
        ordered = rows[np.argsort(-lengths[rows], kind="stable")]
        return ordered[(self.rank if rank is None else rank) :: self.world]

    def sum(self, array: np.ndarray) -> np.ndarray:
        if self.world == 1:
            return array
        t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.cpu().numpy()

    def smallest(self, value: int) -> int:
        """The smallest ``value`` over all ranks (a setting every rank must share, e.g. a memory-based budget)."""
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.int64)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return int(t.item())

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


class ScoredLoss(torch.nn.Module):
    """The training forward (per-token NLL of the scored labels) as one module: what DDP wraps, so that its
    forward, and with it the gradient hooks, covers exactly the computation the loop backpropagates."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        from lpselect.engine.forward import scored_token_nll

        return scored_token_nll(self.model, batch)


def data_parallel(model: torch.nn.Module, workers: Workers, device: torch.device) -> Workers:
    """``workers`` with the model's training forward wrapped in DistributedDataParallel (several processes,
    no FSDP); unchanged otherwise. Gradients are the buckets' views (``gradient_as_bucket_view``): no second
    copy of them exists. Buffers are identical on every rank by construction, so they are not broadcast."""
    if workers.world == 1 or workers.fsdp:
        return workers
    from dataclasses import replace

    from torch.nn.parallel import DistributedDataParallel

    ddp = DistributedDataParallel(ScoredLoss(model), device_ids=[device.index] if device.type == "cuda" else None,
                                  broadcast_buffers=False, gradient_as_bucket_view=True)
    return replace(workers, ddp=ddp)


def init_workers(device: torch.device) -> tuple[Workers, torch.device]:
    """Join the process group when launched with several processes; pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Workers(), device
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    return Workers(rank=dist.get_rank(), world=dist.get_world_size()), device
