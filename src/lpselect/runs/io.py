"""Atomic file writes and content hashes: a reader never sees a half-written file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def _default_file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _default_file_mode()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.is_file():
            os.chmod(tmp_path, _FILE_MODE)  # mkstemp makes 0600; a result file should read like any other
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def replace_dir(tmp: Path, final: Path) -> None:
    """Swap a fully written folder ``tmp`` in as ``final`` (the old one is kept aside until the new one is in)."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def recover_dir(final: Path) -> None:
    """After a crash between the two renames of :func:`replace_dir`, put the kept-aside folder back."""
    old = final.with_name(f".{final.name}.old")
    if old.exists() and not final.exists():
        os.replace(old, final)


def jsonl_objects(path: str | Path, *, objects_only: bool = True) -> Iterator[tuple[int, Any]]:
    """(row, value) of each non-blank line of a JSONL file: the one JSONL reader of lpselect. ``row`` counts the
    values (for instruction data it is the sample's id). Lines are split on "\\n" only (``str.splitlines``
    would also split inside strings at U+2028, U+0085, ...); a UTF-8 BOM is accepted. Errors name the file, the
    row and the line; ``objects_only`` refuses a value that is not a JSON object."""
    from lpselect.errors import InputError

    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise InputError(path, f"not valid UTF-8 (byte {e.start}, line {line})") from None
    row = 0
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(path, f"line {lineno} is not valid JSON (column {e.colno}: {e.msg})", row=row) from None
        except RecursionError:
            raise InputError(path, f"line {lineno}: JSON nested too deeply", row=row) from None
        if objects_only and not isinstance(obj, dict):
            raise InputError(path, f"line {lineno}: expected a JSON object per line", row=row)
        yield row, obj
        row += 1


def write_json(path: str | Path, obj: Any, indent: int = 2) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, ensure_ascii=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_parquet(path: str | Path, table: pa.Table) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def save_npy(path: str | Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def sha256_of(path: str | Path) -> str:
    """sha256 of a file, or of every file in a folder (sorted by relative path)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
