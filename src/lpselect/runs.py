"""Run folders: the manifest of each step (inputs with sha256, settings, versions, timings, counts).

A step re-run on the same folder with the same inputs and settings reuses what is finished; with other
inputs or settings it is refused unless ``force``, so results of different jobs never mix.
"""

from __future__ import annotations

import json
import platform
import shutil
import time
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lpselect.errors import RunFolderError
from lpselect.io import sha256_of, write_json

MANIFEST = "manifest.json"


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("lpselect", "torch", "transformers", "accelerate", "datasets", "sentence-transformers",
                "scikit-learn", "numpy", "pyarrow"):
        with suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


def describe_input(path: str | Path) -> dict[str, str]:
    p = Path(path)
    return {"path": str(p.resolve()) if p.exists() else str(path), "sha256": sha256_of(p) if p.exists() else ""}


def same_content(old: Any, new: dict[str, Any]) -> bool:
    """Inputs are the same when their bytes are: a file that moved (same sha256) is still the same input."""
    if not isinstance(old, dict) or old.keys() != new.keys():
        return False
    for key, n in new.items():
        o = old[key]
        if isinstance(o, dict) and isinstance(n, dict) and o.get("sha256") and n.get("sha256"):
            if o["sha256"] != n["sha256"]:
                return False
        elif o != n:
            return False
    return True


def same_settings(old: Any, new: dict[str, Any], defaults: dict[str, Any] | None = None) -> bool:
    """Settings are the same when equal; a setting the old run did not record (added by a later lpselect)
    counts as its default, so upgrading does not invalidate finished work."""
    if not isinstance(old, dict):
        return False
    return {**(defaults or {}), **old} == new


class RunFolder:
    """One run folder and its ``manifest.json`` ({"steps": {name: record}})."""

    def __init__(self, path: str | Path, *, writer: bool = True):
        """``writer=False`` (ranks other than 0 of a multi-process job) reads the manifest but never writes it."""
        self.path = Path(path)
        self.writer = writer
        if writer:
            self.path.mkdir(parents=True, exist_ok=True)

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {"steps": {}}
        try:
            return json.loads(self.manifest_path.read_text())
        except json.JSONDecodeError as e:
            raise RunFolderError(f"{self.manifest_path}: not valid JSON ({e})") from None

    def step(self, name: str) -> dict[str, Any] | None:
        return self.manifest()["steps"].get(name)

    def update_step(self, name: str, **fields: Any) -> None:
        if not self.writer:
            return
        m = self.manifest()
        m.setdefault("steps", {}).setdefault(name, {}).update(fields)
        m["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        write_json(self.manifest_path, m)

    def begin_step(self, name: str, *, inputs: dict[str, Any], config: dict[str, Any], outputs: list[str],
                   force: bool = False, defaults: dict[str, Any] | None = None) -> bool:
        """Claim the step for these inputs/settings. Returns True when earlier work may be reused."""
        if not self.writer:
            return self.step(name) is not None
        for stale in self.path.glob(".*.tmp"):  # left by a process killed while writing
            stale.unlink()
        old = self.step(name)
        same_inputs = old is not None and same_content(old.get("inputs"), inputs)
        same_config = old is not None and same_settings(old.get("config"), config, defaults)
        if old is not None and (not same_inputs or not same_config):
            if not force:
                changed = [k for k, same in (("inputs", same_inputs), ("config", same_config))
                           if not same]
                raise RunFolderError(
                    f"{self.path}: step '{name}' was run with other {' and '.join(changed)}; "
                    "use another folder, or --force to discard its results"
                )
            for rel in outputs:
                target = self.path / rel
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
            m = self.manifest()
            m["steps"].pop(name, None)
            write_json(self.manifest_path, m)
            old = None
        started = old.get("started") if old else datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.update_step(name, inputs=inputs, config=config, versions=library_versions(), started=started)
        return old is not None

    @contextmanager
    def timed(self, name: str, phase: str):
        """Record the wall time of a phase under steps[name].wall_time_s[phase]."""
        t0 = time.perf_counter()
        yield
        if not self.writer:
            return
        record = self.step(name) or {}
        times = record.get("wall_time_s", {})
        times[phase] = round(time.perf_counter() - t0, 3)
        self.update_step(name, wall_time_s=times)
