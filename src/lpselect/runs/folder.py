"""Run folders: the manifest of each step (inputs with sha256, settings, versions, timings, counts).

A step re-run on the same folder with the same inputs and settings reuses what is finished; with other
inputs or settings it is refused unless ``force`` (naming each change), so results of different jobs never mix.
A step that saved nothing (it failed on a bad input file, a missing model ...) claims nothing: the corrected
re-run just starts. A step may also accept a change that only extends its finished work (``score --epochs``).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import socket
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lpselect.errors import RunFolderError
from lpselect.runs.io import sha256_of, write_json
from lpselect.runs.layout import LOCK, LOCK_OWNER, MANIFEST

log = logging.getLogger(__name__)

# Settings that change how a job saves its work, never its results: a re-run may change them (resuming with
# checkpoints every 10 steps instead of 30 minutes gives the same scores), so they are recorded, not compared.
BOOKKEEPING_SETTINGS = frozenset({"save_steps", "save_minutes", "keep_checkpoint"})
_ABSENT = "(not set)"


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


def describe_data(path: str | Path, fields: dict[str, str] | None = None) -> dict[str, Any]:
    """The data input of a step: :func:`describe_input`, and the field mapping (--fields) it is read with, so
    later readers (select, report, show, provenance) read the file the same way."""
    return {**describe_input(path), **({"fields": dict(fields)} if fields else {})}


def _show_input(value: Any) -> str:
    """An input as a refusal shows it: the start of its sha256 and its path (``missing`` when it was not there);
    rows in memory by the start of their row fingerprint."""
    if isinstance(value, dict) and "sha256" in value:
        digest = str(value["sha256"])[:12] or (f"rows {str(value['rows_sha256'])[:12]}"
                                               if value.get("rows_sha256") else "missing")
        mapping = ",".join(f"{k}={v}" for k, v in (value.get("fields") or {}).items())
        return f"{digest} {value.get('path', '')}".strip() + (f" (--fields {mapping})" if mapping else "")
    return _show(value)


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_show(v)}" for k, v in value.items())
    return str(value)


def input_changes(old: Any, new: dict[str, Any]) -> list[str]:
    """``name: old → new`` of each input that differs. Inputs are the same when their bytes are: a file that
    moved (same sha256) is still the same input. Where either side is rows in memory (no sha256), they are the
    same when their rows are (``rows_sha256``, lpselect.data.provenance.describe_data): a file and a
    ``datasets.Dataset`` of the same rows, read alike, are the same input."""
    old = old if isinstance(old, dict) else {}
    changes = []
    for key in [*new, *(k for k in old if k not in new)]:
        o, n = old.get(key, _ABSENT), new.get(key, _ABSENT)
        if isinstance(o, dict) and isinstance(n, dict) and o.get("sha256") and n.get("sha256"):
            if o["sha256"] == n["sha256"] and o.get("fields") == n.get("fields"):  # same bytes, read alike
                continue
        elif isinstance(o, dict) and isinstance(n, dict) and (o.get("rows_sha256") or n.get("rows_sha256")):
            if o.get("rows_sha256") == n.get("rows_sha256") and o.get("fields") == n.get("fields"):
                continue  # the same rows, whatever object or file holds them
            changes.append(f"{key}: {_show_input(o)} → {_show_input(n)} ({_rows_difference(o, n)})")
            continue
        elif o == n:
            continue
        changes.append(f"{key}: {_show_input(o)} → {_show_input(n)}")
    return changes


def _rows_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    """Why two data records of which one is rows in memory are not the same input, in words."""
    if old.get("rows_sha256") and new.get("rows_sha256") and old["rows_sha256"] == new["rows_sha256"]:
        return "the same rows read with other --fields"
    if not (old.get("rows_sha256") and new.get("rows_sha256")):
        return "one side has no row fingerprint, so its rows cannot be compared"
    rows = f"{old.get('rows', '?')} rows before, {new.get('rows', '?')} now"
    return f"other rows, or the same rows in another order ({rows})"


def setting_changes(old: Any, new: dict[str, Any], defaults: dict[str, Any] | None = None,
                    ignore: Iterable[str] = BOOKKEEPING_SETTINGS) -> list[tuple[str, Any, Any]]:
    """(name, old, new) of each setting that differs. A setting the old run did not record (added by a later
    lpselect) counts as its default, so upgrading does not invalidate finished work; ``ignore``d settings never
    count."""
    merged = {**(defaults or {}), **(old if isinstance(old, dict) else {})}
    skip = set(ignore)
    keys = [*new, *(k for k in merged if k not in new)]
    return [(k, merged.get(k, _ABSENT), new.get(k, _ABSENT)) for k in keys
            if k not in skip and merged.get(k, _ABSENT) != new.get(k, _ABSENT)]


def same_content(old: Any, new: dict[str, Any]) -> bool:
    """Whether the inputs are the same (see :func:`input_changes`)."""
    return isinstance(old, dict) and not input_changes(old, new)


def same_settings(old: Any, new: dict[str, Any], defaults: dict[str, Any] | None = None) -> bool:
    """Whether the settings are the same (see :func:`setting_changes`)."""
    return isinstance(old, dict) and not setting_changes(old, new, defaults)


def has_work(folder: Path, outputs: Iterable[str]) -> bool:
    """Whether any of a step's ``outputs`` holds something: a file, or a folder with a file in it."""
    for rel in outputs:
        target = folder / rel
        if target.is_file() or (target.is_dir() and any(p.is_file() for p in target.rglob("*"))):
            return True
    return False


# One flock per run folder and process, shared by every RunFolder of that folder in the process (a pipeline's
# score, cluster and select steps): lock path -> [FileLock, number of RunFolder objects holding it].
_held: dict[str, list[Any]] = {}
_held_guard = threading.RLock()  # re-entrant: a finalizer may run (GC) while this thread holds it


def _acquire_lock(folder: Path) -> str:
    """Take ``folder``'s lock for this process without waiting (re-entrant); refuse if another process has it."""
    from filelock import FileLock, Timeout

    key = str((folder / LOCK).resolve())
    with _held_guard:
        entry = _held.get(key)
        if entry is not None:
            entry[1] += 1
            return key
        # thread_local=False: the hold belongs to the process, so a release from another thread (a finalizer) works
        lock = FileLock(key, thread_local=False)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise RunFolderError(f"{folder}: run folder in use by another lpselect job{_holder(folder)}; "
                                 "wait for it to end, or use another folder") from None
        _held[key] = [lock, 1]
    with suppress(OSError):  # only for the message a refused job prints
        write_json(folder / LOCK_OWNER, {"pid": os.getpid(), "host": socket.gethostname(),
                                         "command": " ".join(sys.argv),
                                         "since": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return key


def _release_lock(key: str) -> None:
    """Drop one hold; the last one unlocks (the lock file stays: deleting it could let two jobs in)."""
    with _held_guard:
        entry = _held.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        del _held[key]
        with suppress(OSError):
            Path(key).with_name(LOCK_OWNER).unlink()
        entry[0].release(force=True)


def _holder(folder: Path) -> str:
    """' (pid N on HOST since T: COMMAND)' from the owner file, or '' when unknown or stale."""
    try:
        owner = json.loads((folder / LOCK_OWNER).read_text())
        pid, host = int(owner["pid"]), str(owner.get("host", ""))
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    if host == socket.gethostname():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return ""  # written by an earlier holder that died; the new one has not written its own yet
        except OSError:
            pass
    command = f": {owner['command']}" if owner.get("command") else ""
    return f" (pid {pid} on {host} since {owner.get('since', '?')}{command})"


def folder_lock_held(path: str | Path) -> bool:
    """Whether this process holds ``path``'s run-folder lock."""
    return str((Path(path) / LOCK).resolve()) in _held


class RunFolder:
    """One run folder and its ``manifest.json`` ({"steps": {name: record}}).

    A writer holds the folder's lock from :meth:`lock` (called by :meth:`begin_step`) until :meth:`release`,
    the end of a ``with`` block, the object's garbage collection, or the process's end (the kernel drops a flock
    even after SIGKILL, so a killed job never blocks its re-run). A second job on the folder is refused at once;
    within one process the lock is re-entrant, so a pipeline's steps share it.
    """

    def __init__(self, path: str | Path, *, writer: bool = True):
        """``writer=False`` (ranks other than 0 of a multi-process job) reads the manifest but never writes it,
        and never takes the lock (rank 0 holds it for the whole job)."""
        self.path = Path(path)
        self.writer = writer
        self._unlock: weakref.finalize | None = None
        if writer:
            self.path.mkdir(parents=True, exist_ok=True)

    def lock(self) -> RunFolder:
        """Claim the folder for this job (idempotent; a no-op for a non-writer). Raises RunFolderError at once,
        without waiting, when another process holds it."""
        if self.writer and self._unlock is None:
            key = _acquire_lock(self.path)
            self._unlock = weakref.finalize(self, _release_lock, key)  # also runs if the owner forgets release()
        return self

    def release(self) -> None:
        """Give this object's hold back (the folder unlocks when no RunFolder of this process holds it)."""
        if self._unlock is not None:
            self._unlock()
            self._unlock = None

    def __enter__(self) -> RunFolder:
        return self.lock()

    def __exit__(self, *exc: object) -> None:
        self.release()

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
                   force: bool = False, defaults: dict[str, Any] | None = None,
                   extends: Callable[[dict[str, Any], dict[str, Any]], bool] | None = None) -> bool:
        """Claim the step for these inputs/settings (and the folder's lock, kept until :meth:`release`).
        Returns True when earlier work may be reused.

        An earlier record of the step whose ``outputs`` hold nothing (the step failed before saving anything)
        is dropped: nothing is lost, so the re-run needs no ``--force``. Otherwise other inputs or settings are
        refused in one line naming each change, unless ``force`` (which deletes ``outputs``) or, with the same
        inputs, ``extends(old config, new config)`` says the new settings only continue the finished work."""
        if not self.writer:
            return self.step(name) is not None
        self.lock()
        for stale in self.path.glob(".*.tmp"):  # left by a process killed while writing
            stale.unlink()
        old = self.step(name)
        if old is not None and not has_work(self.path, outputs):
            log.debug("%s: step '%s' left no results; starting afresh", self.path, name)
            self._drop(name)
            old = None
        new_inputs = input_changes(old.get("inputs"), inputs) if old is not None else []
        new_config = setting_changes(old.get("config"), config, defaults) if old is not None else []
        extended = False
        if old is not None and not new_inputs and new_config and extends is not None and not force:
            extended = extends({**(defaults or {}), **(old.get("config") or {})}, config)
        if old is not None and (new_inputs or new_config) and not extended:
            if not force:
                kinds = " and ".join(k for k, c in (("inputs", new_inputs), ("config", new_config)) if c)
                changes = new_inputs + [f"{k}: {_show(o)} → {_show(n)}" for k, o, n in new_config]
                raise RunFolderError(
                    f"{self.path}: step '{name}' was run with other {kinds} ({', '.join(changes)}); "
                    "use another folder, or --force to discard its results"
                )
            for rel in outputs:
                target = self.path / rel
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
            self._drop(name)
            old = None
        started = old.get("started") if old else datetime.now(timezone.utc).isoformat(timespec="seconds")
        fields: dict[str, Any] = {}
        if extended:
            assert old is not None
            fields = {"status": "running", "extended": [*old.get("extended", []),
                                                        {k: [o, n] for k, o, n in new_config}]}
        self.update_step(name, inputs=inputs, config=config, versions=library_versions(), started=started, **fields)
        return old is not None

    def _drop(self, name: str) -> None:
        m = self.manifest()
        m.setdefault("steps", {}).pop(name, None)
        write_json(self.manifest_path, m)

    @contextmanager
    def timed(self, name: str, phase: str):
        """Record the wall time of a phase under steps[name].wall_time_s[phase]."""
        t0 = time.perf_counter()
        yield
        self.record_time(name, phase, time.perf_counter() - t0)

    def record_time(self, name: str, phase: str, seconds: float) -> None:
        """Set steps[name].wall_time_s[phase]: for a phase timed before :meth:`begin_step` created the record."""
        if not self.writer:
            return
        record = self.step(name) or {}
        times = record.get("wall_time_s", {})
        times[phase] = round(seconds, 3)
        self.update_step(name, wall_time_s=times)
