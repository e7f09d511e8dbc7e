"""The fine-tuning recipe, in the manner of torchtune's recipes: a job is a class whose methods are its phases,
each doing one thing, called top to bottom (``setup``, the epochs, ``save_checkpoint``, ``finish``).

:class:`FineTuneRecipe` is what every job that fine-tunes with lpselect's loop sets up alike: where it runs
(device and processes), the model's source and tokenizer, the numeric precision, and the model with its optimizer
and schedule. The jobs subclass it: ``steps.score.ScoreRecipe`` (the scorer: tokens, P0, epochs of training and
perplexity passes, ``scores.parquet``) and ``steps.train.TargetRecipe`` (the target: epochs, the model folder);
``steps.plan`` uses it to load the scorer exactly as the score job does.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from tqdm.auto import tqdm

from lpselect.config import FineTuneSettings
from lpselect.engine.distributed import Workers, init_workers
from lpselect.engine.models import load_tokenizer, model_source
from lpselect.engine.precision import announce, choose_precision, pick_device
from lpselect.engine.trainable import Trainable
from lpselect.runs.folder import RunFolder


class FineTuneRecipe:
    """The setup every fine-tuning job shares. A subclass's ``setup`` calls these in the order its job needs
    (``score`` claims its folder before reading data; ``train`` reads data before claiming its folder)."""

    step = ""  # the manifest step the job records into

    def __init__(self, cfg: FineTuneSettings, *, progress: bool = True, distributed: bool = True) -> None:
        self.cfg = cfg
        self.workers, self.device = place(cfg, distributed)
        self.progress = progress and self.workers.is_main
        self.source = ""
        self.tokenizer: Any = None
        self.precision = "fp32"
        self.trainable: Trainable | None = None

    def find_model(self) -> str:
        """The model's local folder or hub id (a typo in ``--model`` fails here, before any work)."""
        self.source = model_source(self.cfg.model, self.cfg.gguf_file)
        return self.source

    def load_tokenizer(self) -> Any:
        self.tokenizer = load_tokenizer(self.source)
        return self.tokenizer

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    def choose_precision(self, run: RunFolder | None = None) -> str:
        """fp32 or bf16 for this device, said in the log and, with ``run``, recorded in the job's step."""
        choice = choose_precision(self.cfg.precision, self.device)
        announce(choice)
        if run is not None:
            run.update_step(self.step, device=str(self.device), precision=choice.precision,
                            precision_reason=choice.reason)
        self.precision = choice.precision
        return self.precision

    def placement(self) -> dict[str, Any]:
        """Where and how the model runs: the keywords of :func:`lpselect.engine.trainable.prepare_trainable`."""
        return {"device": self.device, "precision": self.precision, "workers": self.workers}

    def use(self, trainable: Trainable) -> None:
        """Train this model from now on; its workers carry the DDP-wrapped forward when several processes train."""
        self.trainable, self.workers = trainable, trainable.workers

    def bar(self, total: int, desc: str, unit: str, **kwargs: Any) -> tqdm:
        """A progress bar, shown by rank 0 when the job shows progress."""
        return tqdm(total=total, desc=desc, unit=unit, disable=not self.progress, dynamic_ncols=True, **kwargs)


def place(cfg: FineTuneSettings, distributed: bool = True) -> tuple[Workers, torch.device]:
    """This process's device and place among the job's processes (joining the process group under torchrun);
    ``distributed=False``: one process on the configured device."""
    device = pick_device(cfg.device)
    if not distributed:
        return Workers(), device
    workers, device = init_workers(device)
    return replace(workers, fsdp=cfg.fsdp and workers.world > 1), device
