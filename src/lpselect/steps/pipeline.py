"""``lpselect run``: score -> cluster -> every requested subset, in one run folder, reusing finished steps."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import ValidationError

from lpselect.config import RunConfig
from lpselect.data.formats import read_dataset, subset_suffix
from lpselect.engine.models import DEFAULT_SCORER
from lpselect.errors import InputError
from lpselect.runs.folder import RunFolder
from lpselect.runs.layout import SUBSETS
from lpselect.steps.cluster import cluster
from lpselect.steps.score import score
from lpselect.steps.select import SubsetResult, select_subset


@dataclass
class RunResult:
    run_dir: Path
    scores_path: Path
    clusters_path: Path | None
    subsets: list[SubsetResult] = field(default_factory=list)
    report_path: Path | None = None


def load_run_config(path: str | Path, **overrides: object) -> RunConfig:
    """Parse a YAML run config; unknown or mistyped keys are refused with their name."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise InputError(path, f"cannot read YAML: {e}") from None
    if not isinstance(raw, dict):
        raise InputError(path, "expected a mapping at the top level")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    base = Path(path).parent
    for key in ("data", "out"):
        if isinstance(raw.get(key), str) and not Path(raw[key]).is_absolute() and (base / raw[key]).exists():
            raw[key] = str(base / raw[key])
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors())
        raise InputError(path, problems) from None


def scorer_tag(model: str | None) -> str:
    """Short scorer name for file names: the last path part of the model, e.g. 'opt-350m'."""
    name = (model or DEFAULT_SCORER).rstrip("/")
    return Path(name).name.replace(".gguf", "") or "scorer"


def subset_name(percent: float, band: str, metric: str, epoch: int, scorer: str) -> str:
    """``{percent}_{band}_{metric}{epoch}-{scorer}`` (the reference's naming, with the epoch spelled out)."""
    p = f"{percent:g}"
    return f"{p}_{band}_{metric}{epoch}-{scorer}"


def run_pipeline(cfg: RunConfig, *, force: bool = False, progress: bool = True) -> RunResult:
    out = Path(cfg.out)
    for spec in cfg.select:  # a grid the score step cannot serve fails now, not after hours of scoring
        for sub in spec.subsets():
            if sub.epoch > cfg.score.epochs or (sub.metric == "ifd" and not cfg.score.ifd):
                raise InputError(cfg.out, f"select asks for {sub.metric} at epoch {sub.epoch}, but the score step "
                                          f"records epochs 0..{cfg.score.epochs}"
                                          + ("" if cfg.score.ifd else " without ifd"))
    # one job: the folder stays locked from score to the report (the steps' own locks are re-entrant), so no
    # other job gets in between them; under torchrun only rank 0 holds it, as in score
    with RunFolder(out, writer=os.environ.get("RANK", "0") == "0"):
        scored = score(cfg.data, out, cfg.score, force=force, progress=progress)
        clustered = cluster(cfg.data, out, cfg.cluster, force=force, progress=progress) if cfg.cluster else None
        dataset = read_dataset(cfg.data)
        result = RunResult(out, scored.scores_path, clustered.clusters_path if clustered else None)
        tag = scorer_tag(cfg.score.model)
        for spec in cfg.select:
            for sub in spec.subsets():
                name = subset_name(sub.percent, sub.band, sub.metric, sub.epoch, tag)
                if sub.strategy != "cluster":
                    name += f"-{sub.strategy}"
                target = out / SUBSETS / (name + subset_suffix(dataset))
                if not clustered and sub.strategy not in ("global", "random", "trajectory"):
                    sub = sub.model_copy(update={"strategy": "global"})
                result.subsets.append(select_subset(
                    dataset, scored.scores_path, target,
                    clusters=clustered.clusters_path if clustered else None, **sub.model_dump()))
        from lpselect.analysis.report import write_report

        result.report_path = write_report(out)
    return result
