"""``lpselect run``: score -> cluster -> every requested subset, in one run folder, reusing finished steps."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lpselect.config import ClusterConfig, RunConfig, ScoreConfig, SubsetSpec
from lpselect.core.metrics import HARD_END
from lpselect.core.selection import literal_band
from lpselect.data.formats import Dataset, looks_like_hub_id, read_dataset, subset_suffix
from lpselect.engine.models import DEFAULT_SCORER
from lpselect.errors import InputError
from lpselect.runs.folder import RunFolder, describe_data, input_changes, setting_changes
from lpselect.runs.layout import LOCK_FILES, MANIFEST, REPORT, SUBSETS
from lpselect.runs.ranks import is_main_process
from lpselect.steps.cluster import cluster
from lpselect.steps.score import score
from lpselect.steps.select import BASELINE_STRATEGIES, SubsetResult, select_baseline, select_subset

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    run_dir: Path
    scores_path: Path
    clusters_path: Path | None
    subsets: list[SubsetResult] = field(default_factory=list)
    report_path: Path | None = None


def load_run_config(path: str | Path, *, sets: Sequence[str] = (), **overrides: object) -> RunConfig:
    """Parse a YAML run config; unknown or mistyped keys are refused with their name.

    Relative ``data`` and ``out`` in the file are resolved against the file's folder (a ``data`` that is no
    file there but looks like a hub id stays a hub id). ``sets`` (``score.epochs=2``, the value read as YAML)
    and ``overrides`` then replace keys as given on the command line, relative to the working directory."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise InputError(path, "not found") from None
    except (OSError, yaml.YAMLError) as e:
        raise InputError(path, f"cannot read YAML: {e}") from None
    if not isinstance(raw, dict):
        raise InputError(path, "expected a mapping at the top level")
    base = Path(path).parent
    data = raw.get("data")
    if isinstance(data, str) and not Path(data).is_absolute() and ((base / data).exists()
                                                                   or not looks_like_hub_id(data)):
        raw["data"] = str((base / data).resolve())
    out_in_file = raw.get("out")
    if isinstance(out_in_file, str) and not Path(out_in_file).is_absolute():
        raw["out"] = str((base / out_in_file).resolve())
    for item in sets:
        _set_key(raw, item, path)
    raw.update({k: v for k, v in overrides.items() if v is not None})
    if isinstance(out_in_file, str) and not Path(out_in_file).is_absolute() and raw.get("out") == str(
            (base / out_in_file).resolve()):  # the file's own out, not one given on the command line
        before = Path(out_in_file).resolve()  # where earlier versions put it: the working directory
        if before != Path(raw["out"]) and (before / MANIFEST).exists() and not Path(raw["out"]).exists():
            raise InputError(path, f"out: {out_in_file} is resolved against the config's folder ({raw['out']}), but "
                                   f"an earlier run of it is at {before}: give out as that absolute path (or "
                                   f"--set out={before}) to continue it")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors())
        raise InputError(path, problems) from None


def _set_key(raw: dict[str, Any], item: str, path: str | Path) -> None:
    """Apply one ``KEY=VALUE`` override: a dotted key (``score.epochs``, ``select.0.percents``), a YAML value."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise InputError(path, f"--set {item!r}: expected KEY=VALUE, e.g. score.epochs=2")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InputError(path, f"--set {item!r}: the value is not YAML ({e})") from None
    parts = key.strip().split(".")
    node: Any = raw
    for depth, part in enumerate(parts[:-1]):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict):
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
        else:
            raise InputError(path, f"--set {item!r}: {'.'.join(parts[:depth + 1])} is not a mapping or an index "
                                   "of a list in the config")
    last = parts[-1]
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise InputError(path, f"--set {item!r}: {'.'.join(parts[:-1])} is not a mapping in the config")


def _step_plan(record: dict[str, Any] | None, data: dict[str, Any], step_cfg: Any, defaults: Any) -> str:
    """What run would do with one step, as the run folder decides it: run, resume, reuse, extend or refuse."""
    if not record:
        return "run"
    inputs = (record.get("inputs") or {}).get("data")
    changed_inputs = [f"data: {c}" for c in input_changes({"data": inputs}, {"data": data})] if inputs else []
    changed = setting_changes(record.get("config"), step_cfg.model_dump(), defaults.model_dump())
    finished = record.get("status") == "complete"
    if not changed_inputs and finished and [k for k, _, _ in changed] == ["epochs"] and changed[0][2] > changed[0][1]:
        return f"extend (epochs: {changed[0][1]} → {changed[0][2]}; refused if the LR schedule differs)"
    if changed_inputs or changed:
        return "refused without --force: " + "; ".join(changed_inputs + [f"{k}: {o} → {n}" for k, o, n in changed])
    return "reuse the finished step" if finished else "resume"


def dry_run(cfg: RunConfig) -> list[str]:
    """What ``run`` would do, without doing it: the resolved config, then each step (run or reuse) and each
    subset file. Reads the run folder's manifest only; creates nothing."""
    out = Path(cfg.out)
    steps = {}
    with contextlib.suppress(OSError, ValueError):
        steps = json.loads((out / MANIFEST).read_text()).get("steps", {})
    lines = ["config (resolved):", *("  " + line for line in yaml.safe_dump(
        cfg.model_dump(mode="json"), sort_keys=False).splitlines())]
    subsets = grid(cfg)
    data = describe_data(cfg.data, cfg.fields)
    for name, step_cfg, defaults in (("score", cfg.score, ScoreConfig()), ("cluster", cfg.cluster, ClusterConfig())):
        if step_cfg is not None:
            lines.append(f"{name}: {_step_plan(steps.get(name), data, step_cfg, defaults)} ({out})")
    tag = scorer_tag(cfg.score.model)
    for sub in subsets:
        lines.append(f"select: {out / SUBSETS / spec_name(sub, tag)}.*")
        lines += [f"select: {out / SUBSETS / spec_name(sub, tag)}.{b}.* (baseline: {b}, the same size and seed)"
                  for b in baseline_strategies(cfg, sub)]
    lines.append(f"report: {out / REPORT}")
    return lines


def scorer_tag(model: str | None) -> str:
    """Short scorer name for file names: the last path part of the model, e.g. 'opt-350m'."""
    name = (model or DEFAULT_SCORER).rstrip("/")
    return Path(name).name.replace(".gguf", "") or "scorer"


def spec_name(sub: SubsetSpec, scorer: str) -> str:
    """A subset's file name (no suffix): the reference's name (with the literal band, so the paper's ``low``
    subsets keep their names), then every setting that changes the rows and is not its default."""
    literal = literal_band(sub.band, HARD_END[sub.metric]) if sub.strategy != "trajectory" else "low"
    budget = f"n{sub.n}" if sub.n is not None else f"{sub.percent:g}" + ("exact" if sub.exact else "")
    name = f"{budget}_{literal}_{sub.metric}{sub.epoch}-{scorer}"
    if sub.strategy != "cluster":
        name += f"-{sub.strategy}"
    default = SubsetSpec()
    if sub.strategy in ("clust_rand", "random", "trajectory") and sub.seed != default.seed:
        name += f"-seed{sub.seed}"
    if sub.strategy == "trajectory" and sub.trajectory_k != default.trajectory_k:
        name += f"-k{sub.trajectory_k}"
    if sub.max_value is not None:
        name += f"-max{sub.max_value:g}"
    if sub.order != default.order:
        name += f"-{sub.order}"
    if sub.dedup is not None:  # 0.95 and 0.950 are one setting, so one name
        from lpselect.steps.dedup import parse_dedup

        mode = parse_dedup(sub.dedup)
        name += f"-dedup{mode if mode == 'exact' else format(mode, 'g')}"
    return name


def baseline_strategies(cfg: RunConfig, sub: SubsetSpec) -> list[str]:
    """The random baselines run writes beside ``sub``: random, and clust_rand when there are clusters
    (without them it would be random again); none for a subset that is itself random, or with baselines off."""
    if not cfg.baselines or sub.strategy in BASELINE_STRATEGIES:
        return []
    return ["random", *(["clust_rand"] if cfg.cluster is not None else [])]


def grid(cfg: RunConfig) -> list[SubsetSpec]:
    """Every subset the config asks for, as run will select it: without clusters, ``cluster`` ranks globally
    and ``clust_rand`` draws at random overall (logged), never a ranking under a baseline's name. A subset the
    score step cannot serve, and two entries that would write the same file, are refused before any work."""
    subs: list[SubsetSpec] = []
    for spec in cfg.select:
        for sub in spec.subsets():
            if cfg.cluster is None and sub.strategy in ("cluster", "clust_rand"):
                instead = "global" if sub.strategy == "cluster" else "random"
                log.warning("no clustering in %s: strategy %s becomes %s", cfg.out, sub.strategy, instead)
                sub = sub.model_copy(update={"strategy": instead})
            subs.append(sub)
    for sub in subs:  # a grid the score step cannot serve fails now, not after hours of scoring
        if sub.epoch > cfg.score.epochs or (sub.metric == "ifd" and not cfg.score.ifd):
            raise InputError(cfg.out, f"select asks for {sub.metric} at epoch {sub.epoch}, but the score step "
                                      f"records epochs 0..{cfg.score.epochs}"
                                      + ("" if cfg.score.ifd else " without ifd"))
        if sub.metric == "lp" and cfg.score.epochs == 1 and sub.strategy in ("cluster", "global"):
            raise InputError(cfg.out, f"select asks for lp({sub.epoch}) of a score step of one epoch, where LP(1) "
                                      "is 1 for every row and ranks nothing: use lp_app, or score.epochs >= 2")
        if sub.dedup is not None:
            _check_dedup(cfg, sub)
    names: dict[str, SubsetSpec] = {}
    tag = scorer_tag(cfg.score.model)
    for sub in subs:
        name = spec_name(sub, tag)
        if name in names:
            raise InputError(cfg.out, f"two select entries give the same subset {name} "
                                      f"({_spec_text(names[name])} and {_spec_text(sub)}): remove one")
        names[name] = sub
    return subs


def _check_dedup(cfg: RunConfig, sub: SubsetSpec) -> None:
    """A dedup setting the select step would refuse, refused before any scoring."""
    from lpselect.steps.dedup import parse_dedup

    if sub.strategy == "trajectory":
        raise InputError(cfg.out, "select asks for dedup with strategy trajectory, which samples the loss "
                                  "trajectories, not a ranking: leave dedup out of that entry")
    if parse_dedup(str(sub.dedup)) != "exact" and cfg.cluster is None:
        raise InputError(cfg.out, f"select asks for dedup {sub.dedup}, which compares the cluster step's "
                                  "embeddings, but cluster is off: give a cluster section, or dedup: exact")


def _spec_text(sub: SubsetSpec) -> str:
    return ", ".join(f"{k}={v}" for k, v in sub.model_dump().items() if v is not None)


def run_pipeline(cfg: RunConfig, *, force: bool = False, progress: bool = True) -> RunResult:
    """score -> cluster -> every subset of the grid -> the report, in one locked run folder. A run that fails
    before writing anything leaves no folder behind."""
    out = Path(cfg.out).absolute()
    created = next((p for p in reversed([out, *out.parents]) if not p.exists()), None)  # topmost new folder
    try:
        return _run(cfg, out, force=force, progress=progress)
    except BaseException:
        if created is not None and out.is_dir() and all(_no_work(p) for p in out.iterdir()):
            shutil.rmtree(out, ignore_errors=True)
            for parent in out.parents:  # the empty folders this run made above it
                if not parent.is_relative_to(created) or any(parent.iterdir()):
                    break
                parent.rmdir()
        raise


def _no_work(path: Path) -> bool:
    """A lock, the manifest of steps that claimed nothing yet, or an empty folder: nothing a re-run would reuse."""
    if path.is_dir():
        return not any(path.iterdir())
    return path.name in (*LOCK_FILES, MANIFEST)


def _run(cfg: RunConfig, out: Path, *, force: bool, progress: bool) -> RunResult:
    subsets = grid(cfg)
    # one job: the folder stays locked from score to the report (the steps' own locks are re-entrant), so no
    # other job gets in between them; under torchrun only rank 0 holds it, as in score
    with RunFolder(out, writer=is_main_process()):
        scored = score(cfg.data, out, cfg.score, force=force, progress=progress, fields=cfg.fields)
        clustered = cluster(cfg.data, out, cfg.cluster, force=force, progress=progress,
                            fields=cfg.fields) if cfg.cluster else None
        dataset = read_dataset(cfg.data, cfg.fields)
        result = RunResult(out, scored.scores_path, clustered.clusters_path if clustered else None)
        tag = scorer_tag(cfg.score.model)
        for sub in subsets:
            result.subsets += _select_with_baselines(cfg, sub, dataset, scored.scores_path, result.clusters_path,
                                                     out / SUBSETS / spec_name(sub, tag))
        from lpselect.analysis.report import write_report

        result.report_path = write_report(out)
    return result


def _select_with_baselines(cfg: RunConfig, sub: SubsetSpec, dataset: Dataset, scores: Path, clusters: Path | None,
                           stem: Path) -> list[SubsetResult]:
    """One subset of the grid, then its baselines: the same number of rows and seed, drawn at random."""
    suffix = subset_suffix(dataset)
    subset = select_subset(dataset, scores, Path(str(stem) + suffix), sub, clusters=clusters)
    baselines = [select_baseline(dataset, scores, Path(f"{stem}.{strategy}{suffix}"), subset.report_path,
                                 sub.model_copy(update={"strategy": strategy}), clusters=clusters,
                                 dedup=subset.dedup)  # the same pool: its dedup is reused, not searched again
                 for strategy in baseline_strategies(cfg, sub)]
    return [subset, *baselines]
