"""The one training checkpoint of the scorer (``score``) and the target (``train``).

A checkpoint folder holds ``model/`` (or the LoRA adapter), ``optimizer.pt``, ``scheduler.pt``, ``rng.pt``,
any per-row arrays of the epoch in progress (``*.npy``, e.g. the online losses recorded so far) and
``state.json`` (the position), written last. It is written aside and swapped in by one rename, so a reader
sees the previous checkpoint or the new one, never half of one. Row order within an epoch is a function of
(seed, epoch), so a run resumed at ``done_in_epoch`` skips exactly the steps that were finished.

Inside an epoch a checkpoint is written on a cadence (:class:`SaveCadence`): every ``save_steps`` optimizer
steps when set, else every ``save_minutes`` of training (default 30). A checkpoint holds fp32 weights and AdamW's
two moments, 12 bytes a parameter; docs hold what writing one costs.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lpselect.engine.distributed import Workers
from lpselect.engine.sharding import gather_for_saving, save_model
from lpselect.faults import crash_point
from lpselect.runs.io import recover_dir, replace_dir
from lpselect.runs.layout import (
    CHECKPOINT_ARRAY,
    CHECKPOINT_MODEL,
    CHECKPOINT_OPTIMIZER,
    CHECKPOINT_RNG,
    CHECKPOINT_SCHEDULER,
    CHECKPOINT_STATE,
)

STATE = CHECKPOINT_STATE


@dataclass
class Position:
    """Where training stands: ``done_in_epoch`` optimizer-step slots of ``epoch`` are finished."""

    epoch: int = 1
    done_in_epoch: int = 0
    global_step: int = 0
    loss_sum: float = 0.0  # of the current epoch so far
    token_sum: int = 0


def save_checkpoint(folder: Path, model, optimizer, scheduler, pos: Position, workers: Workers, architecture: str,
                    *, arrays: dict[str, np.ndarray] | None = None, extra: dict[str, Any] | None = None) -> None:
    """Write the checkpoint (rank 0; the states are the same on every rank or, under FSDP, gathered from all of
    them: every rank must call this)."""
    model_state, optim_state = gather_for_saving(model, optimizer, workers.fsdp)
    if not workers.is_main:
        return
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        save_model(model, tmp / CHECKPOINT_MODEL, model_state, architecture)
        torch.save(optim_state if optim_state is not None else optimizer.state_dict(), tmp / CHECKPOINT_OPTIMIZER)
        torch.save(scheduler.state_dict(), tmp / CHECKPOINT_SCHEDULER)
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(rng, tmp / CHECKPOINT_RNG)
        for name, array in (arrays or {}).items():
            np.save(tmp / CHECKPOINT_ARRAY.format(name=name), array)
        crash_point(f"checkpoint:{pos.epoch}:{pos.done_in_epoch}")
        (tmp / STATE).write_text(json.dumps({**asdict(pos), **(extra or {})}, indent=2) + "\n")  # marks it complete
        replace_dir(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class SaveCadence:
    """When to checkpoint inside an epoch: every ``save_steps`` optimizer steps when that is set (it wins), else
    once ``save_minutes`` of wall time have passed since the last checkpoint (or the start); 0 and 0 = never.

    Under several processes the ranks must agree (saving is collective), so a time-based decision is rank 0's,
    shared by a sum over the ranks."""

    def __init__(self, save_steps: int, save_minutes: float, workers: Workers | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.save_steps, self.seconds = save_steps, save_minutes * 60
        self.workers = workers or Workers()
        self.clock = clock
        self.last = clock()

    def due(self, step: int) -> bool:
        """Whether to checkpoint after optimizer step ``step`` (counted as the caller counts its cadence)."""
        if self.save_steps:
            return step % self.save_steps == 0
        if not self.seconds:
            return False
        late = self.workers.is_main and self.clock() - self.last >= self.seconds
        if self.workers.world > 1:
            late = bool(self.workers.sum(np.array([float(late)]))[0] > 0)
        return late

    def saved(self) -> None:
        """A checkpoint was just written (at the cadence or an epoch's end): the time counts from now."""
        self.last = self.clock()


def read_checkpoint(folder: Path) -> tuple[Position | None, dict[str, Any] | None]:
    """The checkpoint's position and RNG state, or (None, None) when there is no complete checkpoint."""
    if not (folder / STATE).exists():
        recover_dir(folder)  # a crash between the two renames of replace_dir
        if not (folder / STATE).exists():
            return None, None
    state = json.loads((folder / STATE).read_text())
    pos = Position(**{k: state[k] for k in Position.__dataclass_fields__})
    return pos, torch.load(folder / CHECKPOINT_RNG, weights_only=True)


def checkpoint_array(folder: Path, name: str) -> np.ndarray | None:
    """A per-row array saved with the checkpoint, or None."""
    path = folder / CHECKPOINT_ARRAY.format(name=name)
    return np.load(path) if path.exists() else None


def restore_rng(rng: dict[str, Any]) -> None:
    """Put back the random state saved with a checkpoint (dropout of the steps still to come)."""
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def clear_stale(parent: Path, folder: Path) -> None:
    """Remove checkpoints that were being written when a process was killed (rank 0, before resuming)."""
    recover_dir(folder)
    for stale in parent.glob(f".{folder.name}.*"):
        shutil.rmtree(stale, ignore_errors=True)
