"""One score job per scorer seed, for a consensus ranking (``score --seeds 42,43,44``).

The seed changes only the order in which the scorer sees the samples (and dropout, LoRA's init of A), never
the model before training: P0 is the same for every seed. So it is computed once, in the first seed's folder,
and the later seeds start from a copy of its token table and P0 files, which their own score job then finds
and resumes from, as after a crash. Each seed's folder is a normal run folder (``SEED_FOLDER``) that
``select --scores`` takes once per seed.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from lpselect.config import ScoreConfig
from lpselect.runs.folder import RunFolder
from lpselect.runs.io import atomic_path
from lpselect.runs.layout import MANIFEST, PASS_FILE, PASSES, SEED_FOLDER, TOKENS, TOKENS_DONE, TOKENS_RESPONSE
from lpselect.runs.ranks import is_main_process
from lpselect.steps.score import WORK, ScoreResult, score

_SHARED_TABLES = (TOKENS, TOKENS_RESPONSE)  # the token tables: the same text, the same tokenizer
_P0_FILES = tuple(PASS_FILE.format(kind=k, epoch=0) for k in ("prob", "ppl_resp", "ppl"))  # ppl_0 last: P0's mark


def parse_seeds(text: str) -> list[int]:
    """``"42,43,44"`` -> [42, 43, 44]; at least two distinct integers."""
    try:
        seeds = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers, e.g. 42,43,44; got {text!r}") from None
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds needs at least two distinct seeds, got {text!r}")
    return seeds


def seed_folder(out: str | Path, seed: int) -> Path:
    return Path(out) / SEED_FOLDER.format(seed=seed)


def score_seeds(data: str | Path, out: str | Path, config: ScoreConfig, seeds: Sequence[int], *,
                force: bool = False, progress: bool = True, fields: dict[str, str] | None = None,
                ) -> list[ScoreResult]:
    """Score ``data`` once per seed into ``out/seed-<s>/``; P0 is computed once and shared."""
    is_main = is_main_process()  # under torchrun rank 0 copies; the job's barriers order it
    results: list[ScoreResult] = []
    first: Path | None = None
    for seed in seeds:
        folder = seed_folder(out, seed)
        seeded = first is not None and not (folder / MANIFEST).exists()
        if seeded and is_main:
            _seed_from(first / WORK, folder / WORK)
        results.append(score(data, folder, config.model_copy(update={"seed": seed}), force=force,
                             progress=progress, fields=fields))
        if seeded and is_main:
            with RunFolder(folder) as run:
                run.update_step("score", p0_shared_from=str(first))
        first = first or folder
    return results


def _seed_from(done: Path, fresh: Path) -> None:
    """Copy the finished job's token tables and P0 files into a new seed's work folder, each file atomically
    (a copy cut short by a crash is never taken for a finished one; a re-run copies again)."""
    names = [f"{table}/{f.name}" for table in _SHARED_TABLES for f in sorted((done / table).glob("*.npy"))
             if f.name != TOKENS_DONE] + [f"{table}/{TOKENS_DONE}" for table in _SHARED_TABLES
                                          if (done / table / TOKENS_DONE).exists()]
    names += [f"{PASSES}/{name}" for name in _P0_FILES if (done / PASSES / name).exists()]
    for name in names:  # offsets.npy (a table's done mark) and ppl_0.npy (P0's) come after their siblings
        with atomic_path(fresh / name) as tmp:
            shutil.copyfile(done / name, tmp)
