"""Is this the data a scores/clusters table was computed from? Checked before any command uses them together.

A table's run folder records its data in ``manifest.json`` (``steps.<step>.inputs.data``: path, sha256 and,
since this module, ``rows_sha256``, the :func:`data_fingerprint` of its rows). Scores index rows by position,
so scores of other rows (another file, or the same rows shuffled) would select a wrong subset without any
error. The data is accepted when its bytes are the recorded ones (sha256), or when its rows are (the same rows
moved, re-serialised, JSON -> JSONL); anything else is refused in one line naming both files. Where nothing
can be checked (imported reference scores, a user's own table with no manifest) a note says so instead.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lpselect.errors import LPSelectError, RunFolderError
from lpselect.runs import folder as run_folder
from lpselect.runs.io import sha256_of
from lpselect.runs.layout import CLUSTERS, MANIFEST, REPORT_SUFFIX, SCORES

if TYPE_CHECKING:
    from lpselect.data.formats import Dataset, Sample
    from lpselect.runs.folder import RunFolder

TABLE_STEPS = {SCORES: "score", CLUSTERS: "cluster"}  # which step of a run folder wrote which table
COMMANDS = {"score": "lpselect score", "cluster": "lpselect cluster"}


def _row_key(s: Sample) -> list[Any]:
    """A row's content as a JSON-ready list: the fields scoring and clustering read, nothing of the file."""
    turns = [[m["role"], m["content"]] for m in s.messages] if s.messages is not None else None
    key: list[Any] = [s.instruction, s.input, s.output, turns]
    if s.first_scored_turn:  # which turns are scored (a conversational prompt/completion) changes the scores
        key.append(s.first_scored_turn)
    return key


def data_fingerprint(dataset: Dataset, ids: Sequence[int] | None = None) -> str:
    """sha256 of the rows' canonical content in row order (of ``ids``, in that order, when given): equal for
    the same rows in any file or format, different when a row is edited, added, dropped or moved."""
    h = hashlib.sha256()
    samples = dataset.samples if ids is None else [dataset.samples[int(i)] for i in ids]
    for s in samples:  # one JSON line per row: a newline inside a text is escaped, so rows never run together
        h.update(json.dumps(_row_key(s), ensure_ascii=False).encode("utf-8", "surrogatepass") + b"\n")
    return h.hexdigest()


def describe_data(data: Any, fields: dict[str, str] | None = None) -> dict[str, Any]:
    """The data input a step records: a file's path and sha256 (:func:`lpselect.runs.folder.describe_data`), or
    for rows in memory (a ``datasets.Dataset``, an lpselect Dataset), which have no file to hash, a description
    (with the ``datasets`` fingerprint when there is one) and the rows' count and :func:`data_fingerprint`: the
    same rows are then the same input, whatever object or file holds them. A file's record carries its rows'
    fingerprint too, so a re-run on the file of a run made on the same rows in memory is the same input."""
    from lpselect.data.formats import read_dataset

    if isinstance(data, str | Path):
        record = run_folder.describe_data(data, fields)
        if record.get("sha256"):  # a file (not a hub id, whose record is compared field by field)
            try:
                dataset = read_dataset(data, fields)
            except (LPSelectError, OSError, ValueError):
                return record  # the step reading it says what is wrong, in its own words
            record.update(rows=len(dataset), rows_sha256=data_fingerprint(dataset))
        return record

    dataset = read_dataset(data, fields)
    return {"path": str(dataset.path), "sha256": "", "rows": len(dataset), "rows_sha256": data_fingerprint(dataset),
            **({"fields": dict(dataset.fields)} if dataset.fields else {})}


def record_fingerprint(run: RunFolder, step: str, dataset: Dataset) -> None:
    """Add ``rows_sha256`` (and ``rows``) to ``steps.<step>.inputs.data`` of the run's manifest.

    Called after :meth:`RunFolder.begin_step`, which compares inputs by sha256 only, so a re-run still matches
    a record with or without the fingerprint. Skipped for data without a file hash (a hub id): there the
    record is compared field by field, and an extra field would refuse the identical re-run."""
    if not run.writer:
        return
    record = run.step(step) or {}
    inputs = dict(record.get("inputs") or {})
    data = dict(inputs.get("data") or {})
    if not data.get("sha256"):
        return
    data.update(rows=len(dataset), rows_sha256=data_fingerprint(dataset))
    inputs["data"] = data
    run.update_step(step, inputs=inputs)


# ---- the origin of a table -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Origin:
    """What a table's run folder says about its data: ``data`` is the manifest's record (None with a ``note``)."""

    table: Path
    manifest: Path
    step: str
    data: dict[str, Any] | None
    note: str | None = None


def table_origin(table_path: str | Path) -> Origin:
    """The data record of the run folder holding ``table_path`` (a scores.parquet or clusters.parquet, or a run
    folder for its scores.parquet); a note instead of a record when the folder cannot say."""
    table = Path(table_path)
    if table.is_dir():
        table = table / SCORES
    manifest_path = table.parent / MANIFEST
    step = TABLE_STEPS.get(table.name)
    if step is None:
        return Origin(table, manifest_path, "", None,
                      f"{table}: not a {SCORES} or {CLUSTERS} of a run folder, so its data is not checked")
    if not manifest_path.exists():
        return Origin(table, manifest_path, step, None,
                      f"{table}: no {MANIFEST} beside it, so it cannot be checked against the data")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        steps = manifest.get("steps") or {}
    except (OSError, ValueError, AttributeError) as e:
        raise RunFolderError(f"{manifest_path}: not a readable manifest ({e})") from None
    record = steps.get(step)
    if not isinstance(record, dict):
        if "import_reference" in steps:
            return Origin(table, manifest_path, step, None,
                          f"{table}: imported from the reference's pickles, which carry no data hash: "
                          "it is not checked that these rows are the data's")
        return Origin(table, manifest_path, step, None,
                      f"{table}: {manifest_path} has no '{step}' step, so the data is not checked")
    data = (record.get("inputs") or {}).get("data")
    if not isinstance(data, dict) or not (data.get("sha256") or data.get("rows_sha256")):
        return Origin(table, manifest_path, step, None,
                      f"{table}: its '{step}' step recorded no data file hash, so the data is not checked")
    return Origin(table, manifest_path, step, data)


def recorded_fields(table_path: str | Path) -> dict[str, str] | None:
    """The field mapping (--fields) the run holding ``table_path`` read its data with, if it recorded one."""
    if not Path(table_path).exists():
        return None
    try:
        data = table_origin(table_path).data or {}
    except RunFolderError:
        return None  # an unreadable manifest is refused, with its own message, by verify_data
    fields = data.get("fields")
    return dict(fields) if isinstance(fields, dict) else None


def _recorded_fingerprint(data: dict[str, Any]) -> str | None:
    """The record's row fingerprint; for an older record without one, that of the recorded file if it is
    still there unchanged."""
    if data.get("rows_sha256"):
        return str(data["rows_sha256"])
    path = Path(str(data.get("path") or ""))
    if data.get("sha256") and path.exists() and sha256_of(path) == data["sha256"]:
        from lpselect.data.formats import read_dataset

        try:
            return data_fingerprint(read_dataset(path, data.get("fields")))
        except (LPSelectError, OSError, ValueError):
            return None
    return None


def same_rows(a: dict[str, Any], b: dict[str, Any]) -> bool | None:
    """Whether two data records ({path, sha256, rows_sha256}) hold the same rows: by sha256, else by row
    fingerprint; None when neither can tell."""
    if a.get("sha256") and a.get("sha256") == b.get("sha256"):
        return True
    fa, fb = _recorded_fingerprint(a), _recorded_fingerprint(b)
    if fa is None or fb is None:
        return None
    return fa == fb


def verify_data(dataset: Dataset, table_path: str | Path) -> str | None:
    """Accept ``dataset`` for the table when its file's sha256 is the one recorded, else when its rows'
    fingerprint is; refuse otherwise (one line naming both files and what to do). Returns a note when the
    table's origin cannot be checked, None when it was."""
    origin = table_origin(table_path)
    if origin.data is None:
        return origin.note
    data = origin.data
    path = Path(dataset.path)
    name = _data_name(dataset)
    if (data.get("fields") or None) != (getattr(dataset, "fields", None) or None):
        raise RunFolderError(
            f"{name} is read with --fields {_fields_text(getattr(dataset, 'fields', None))}, but {origin.table} was "
            f"made from it read with --fields {_fields_text(data.get('fields'))} ({origin.manifest}): give the same "
            "mapping, or leave --fields out to use the run's")
    if data.get("sha256") and path.exists() and sha256_of(path) == data["sha256"]:
        return None
    recorded = _recorded_fingerprint(data)
    if recorded is not None and data_fingerprint(dataset) == recorded:
        return None
    how = "the rows differ in content or order" if recorded is not None else \
        "the bytes differ and the run recorded no row fingerprint to compare the rows"
    raise RunFolderError(
        f"{name} is not the data {origin.table} was made from: {origin.manifest} records "
        f"{data.get('path', '?')}, and {how}; give that file, or run {COMMANDS[origin.step]} on "
        f"{'it' if name != str(path) else path.name} into a new folder")


def _data_name(dataset: Dataset) -> str:
    """How a refusal names the data: its file, or "the Dataset (<datasets.Dataset ...>)" for rows in memory."""
    from lpselect.data.formats import IN_MEMORY_WHERE, is_in_memory

    return f"{IN_MEMORY_WHERE} ({dataset.path})" if is_in_memory(dataset) else str(dataset.path)


def _fields_text(fields: dict[str, str] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(fields.items())) if fields else "(none)"


def verify_same_data(table_a: str | Path, table_b: str | Path) -> str | None:
    """Refuse two tables (two runs' scores, or scores and clusters) made from different data; a note when
    either side's origin is unknown, None when both match (by file sha256, else by row fingerprint)."""
    return "; ".join(verify_tables([table_a, table_b])) or None


def verify_tables(tables: Sequence[str | Path]) -> list[str]:
    """Refuse tables made from different data: each one whose origin is recorded is checked against the first
    such one. Returns the notes of the tables whose origin is unknown (each once)."""
    notes: list[str] = []
    first: Origin | None = None
    for table in tables:
        origin = table_origin(table)
        if origin.data is None:
            if origin.note and origin.note not in notes:
                notes.append(origin.note)
        elif first is None:
            first = origin
        else:
            _check_same(first, origin)
    return notes


def _check_same(a: Origin, b: Origin) -> None:
    """Refuse origins of different rows (or of different files whose rows cannot be compared)."""
    assert a.data is not None and b.data is not None
    same = same_rows(a.data, b.data)
    if same:
        return
    how = "the rows differ in content or order" if same is False else \
        "the files differ and no row fingerprint is recorded to compare the rows"
    raise RunFolderError(
        f"{a.table} and {b.table} were made from different data: {a.data.get('path', '?')} and "
        f"{b.data.get('path', '?')}, and {how}; use tables made from one data file")


# ---- a subset file (train) ----------------------------------------------------------------------------------


def verify_subset(dataset: Dataset) -> str | None:
    """A subset written by ``select`` has its report beside it (``<subset>.report.json``): refuse the subset
    when its rows are not the ones that report describes (row count; then the report's ``rows_sha256``, or the
    rows ``ids`` of the report's data when that file is still there unchanged). None for a file without a
    report (not a subset); a note when the rows cannot be checked."""
    path = Path(dataset.path)
    report_path = Path(str(path) + REPORT_SUFFIX)
    if not report_path.is_file():
        return None
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RunFolderError(f"{report_path}: not a readable subset report ({e})") from None
    if not isinstance(report, dict):
        raise RunFolderError(f"{report_path}: not a readable subset report (expected a JSON object)")
    fix = f"select it again, or move {report_path.name} away if {path.name} is not that subset"
    n = report.get("n_selected")
    if isinstance(n, int) and n != len(dataset):
        raise RunFolderError(f"{path} has {len(dataset)} rows but its report {report_path} says {n} were "
                             f"selected: {fix}")
    expected = report.get("rows_sha256") or _subset_fingerprint(report)
    if expected is None:
        return f"{path}: its report {report_path.name} has no row fingerprint or ids, so its rows are not checked"
    if data_fingerprint(dataset) != expected:
        raise RunFolderError(f"{path} does not hold the rows its report {report_path} describes (selected from "
                             f"{report.get('data', '?')}): {fix}")
    return None


def subset_fields(subset: str | Path) -> dict[str, str] | None:
    """The field mapping a subset was selected with (its report's ``fields``): the subset keeps the file's own
    columns, so train reads it with that mapping unless told another."""
    if not isinstance(subset, str | Path):
        return None  # rows in memory have no report beside them
    report_path = Path(str(subset) + REPORT_SUFFIX)
    try:
        report = json.loads(report_path.read_text(encoding="utf-8")) if report_path.is_file() else {}
    except (OSError, ValueError):
        return None  # refused, with its own message, by verify_subset
    fields = report.get("fields") if isinstance(report, dict) else None
    return dict(fields) if isinstance(fields, dict) else None


def _subset_fingerprint(report: dict[str, Any]) -> str | None:
    """The fingerprint of rows ``ids`` of the report's data, if that file is still there as it was."""
    ids, data_path, sha = report.get("ids"), Path(str(report.get("data") or "")), report.get("data_sha256")
    if not isinstance(ids, list) or not sha or not data_path.exists() or sha256_of(data_path) != sha:
        return None
    from lpselect.data.formats import read_dataset

    try:
        source = read_dataset(data_path, report.get("fields"))
        if any(not isinstance(i, int) or not 0 <= i < len(source) for i in ids):
            return None
        return data_fingerprint(source, ids)
    except (LPSelectError, OSError, ValueError):
        return None
