"""Read every supported instruction-data format into samples, and write a subset back in the same format.

SPEC §2: a sample's ``id`` is its 0-based row position in the input file; the original record is kept
untouched so a subset is written with every field it had.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import io
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from lpselect.errors import InputError, LPSelectError
from lpselect.runs.io import atomic_path, jsonl_objects

CHAT_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Sample:
    """One instruction sample in the canonical shape; ``messages`` is set for chat data only."""

    id: int
    instruction: str
    input: str
    output: str
    messages: tuple[dict[str, str], ...] | None = None
    category: str | None = None


@dataclass
class Dataset:
    """The samples of one input file, with what is needed to write a subset in the same format."""

    path: Path
    file_format: str  # json | jsonl | parquet | csv | hf
    schema: str  # alpaca | dolly | chat
    records: list[dict[str, Any]]
    samples: list[Sample]
    _extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.samples)

    def empty_output_rows(self) -> int:
        """Rows whose response is empty or blank. Kept, as the reference keeps them (the response is then just
        EOS, one scored token; real Alpaca has such rows, and keeping them keeps ids aligned with its scores),
        but counted and reported."""
        return sum(s.messages is None and not s.output.strip() for s in self.samples)

    def kept_but_counted(self) -> dict[str, int]:
        """The rows that are scored like any other but that a user should know about."""
        return {"empty_output_rows": self.empty_output_rows(), "duplicate_rows": self.duplicate_rows()}

    def duplicate_rows(self) -> int:
        """Rows equal to an earlier row (same text in every field). They are kept, like the reference keeps
        them, but counted and reported: a user may want to deduplicate first."""
        seen: set[tuple[Any, ...]] = set()
        n = 0
        for s in self.samples:
            key = (s.instruction, s.input, s.output, s.messages)
            n += key in seen
            seen.add(key)
        return n


def read_dataset(path: str | Path) -> Dataset:
    """Read ``path`` (JSON array, JSONL, Parquet, CSV, a ``save_to_disk`` folder, or a hub id when online)."""
    with _gc_paused():
        return _read_dataset(Path(path), path)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Parsing allocates millions of objects and frees none; the cyclic collector would traverse the growing
    heap again and again for nothing. The parsed rows then move to the collector's permanent generation
    (``gc.freeze``): they live as long as the command and need no traversal; reference counting still frees
    them."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


def _read_dataset(p: Path, path: str | Path) -> Dataset:
    extra: dict[str, Any] = {}
    if p.is_dir():
        records, extra["hf"] = _read_hf_folder(p)
        file_format = "hf"
    elif not p.exists():
        if _looks_like_hub_id(str(path)):
            records, extra["hf"] = _read_hf_hub(str(path))
            file_format = "hf"
        else:
            raise InputError(p, "file not found")
    else:
        suffix = p.suffix.lower()
        if suffix == ".json":
            records, file_format = _read_json(p), "json"
        elif suffix in (".jsonl", ".ndjson"):
            records, file_format = _read_jsonl(p), "jsonl"
        elif suffix == ".parquet":
            table = _read_parquet(p)
            records, file_format, extra["schema"] = table.to_pylist(), "parquet", table.schema
        elif suffix == ".csv":
            records, extra["fieldnames"] = _read_csv(p)
            file_format = "csv"
        elif suffix == ".pkl" or suffix == ".pickle":
            raise InputError(p, "pickle files are not read as data (unpickling runs code); use JSON/JSONL/Parquet/CSV")
        else:
            raise InputError(p, f"unknown file type '{suffix}'; expected .json, .jsonl, .parquet, .csv or a folder")
    if not records:
        raise InputError(p, "the dataset is empty")
    schema = _detect_schema(p, records[0], 0)
    samples = [_to_sample(p, i, rec, schema) for i, rec in enumerate(records)]
    return Dataset(path=p, file_format=file_format, schema=schema, records=records, samples=samples, _extra=extra)


def write_subset(dataset: Dataset, ids: list[int], out: str | Path) -> Path:
    """Write the rows ``ids`` (in that order) in the dataset's own format, every original field kept."""
    out = Path(out)
    fmt = dataset.file_format
    _check_subset_suffix(out, fmt)
    rows = [dataset.records[i] for i in ids]
    if fmt == "hf":
        subset = dataset._extra["hf"].select(list(ids))
        out.mkdir(parents=True, exist_ok=True)
        subset.save_to_disk(str(out))
        return out
    with atomic_path(out) as tmp:
        if fmt == "json":
            tmp.write_text(json.dumps(rows, indent=4, ensure_ascii=False) + "\n", encoding="utf-8")
        elif fmt == "jsonl":
            with open(tmp, "w", encoding="utf-8") as f:
                for r in rows:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
        elif fmt == "parquet":
            pq.write_table(pa.Table.from_pylist(rows, schema=dataset._extra["schema"]), tmp)
        elif fmt == "csv":
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=dataset._extra["fieldnames"])
                writer.writeheader()
                writer.writerows(rows)
        else:  # pragma: no cover - guarded by read_dataset
            raise ValueError(fmt)
    return out


_SUFFIXES = {"json": (".json",), "jsonl": (".jsonl", ".ndjson"), "parquet": (".parquet",), "csv": (".csv",)}


def _check_subset_suffix(out: Path, fmt: str) -> None:
    """A subset keeps the input's format (SPEC §2); an --out named for another format would mislead readers."""
    suffix = out.suffix.lower()
    known = {s for group in _SUFFIXES.values() for s in group}
    if fmt != "hf" and suffix in known and suffix not in _SUFFIXES[fmt]:
        raise LPSelectError(f"--out {out}: the subset is written in the input's format ({fmt}); "
                            f"name it with {_SUFFIXES[fmt][0]}")


def subset_suffix(dataset: Dataset) -> str:
    """File suffix of a subset written in the dataset's format ('' for a dataset folder)."""
    return {"json": ".json", "jsonl": ".jsonl", "parquet": ".parquet", "csv": ".csv", "hf": ""}[dataset.file_format]


# ---------------------------------------------------------------- readers


def _decode(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise InputError(path, f"not valid UTF-8 (byte {e.start}, line {line})") from None


def _read_json(path: Path) -> list[dict[str, Any]]:
    text = _decode(path)
    if not text.strip():
        raise InputError(path, "the file is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(path, f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    except RecursionError:
        raise InputError(path, "JSON nested too deeply") from None
    if not isinstance(data, list):
        raise InputError(path, f"expected a JSON array of samples, found a JSON {type(data).__name__}")
    return data


def _read_jsonl(path: Path) -> list[Any]:
    return [obj for _, obj in jsonl_objects(path, objects_only=False)]  # a non-object is refused by its row


def _read_parquet(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(path, f"cannot read Parquet: {e}") from None


def _read_csv(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    reader = csv.DictReader(io.StringIO(_decode(path), newline=""), strict=True)
    try:
        fieldnames = list(reader.fieldnames or [])
        duplicated = sorted({f for f in fieldnames if fieldnames.count(f) > 1})
        if duplicated:
            raise InputError(path, f"header repeats column(s) {duplicated}")
        records = []
        for i, row in enumerate(reader):
            if None in row:
                raise InputError(path, "more values than header columns", row=i)
            records.append(dict(row))
    except csv.Error as e:
        raise InputError(path, f"malformed CSV near line {reader.line_num}: {e}") from None
    return records, fieldnames


def _read_hf_folder(path: Path) -> tuple[list[dict[str, Any]], Any]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as e:
        raise InputError(path, f"not a Hugging Face dataset folder ({e})") from None
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise InputError(path, f"dataset has splits {list(ds)}; expected a 'train' split")
        ds = ds["train"]
    return ds.to_list(), ds


def _read_hf_hub(name: str) -> tuple[list[dict[str, Any]], Any]:
    import datasets

    try:
        ds = datasets.load_dataset(name, split="train")
    except Exception as e:
        raise InputError(name, f"not a file, folder, or loadable hub dataset ({type(e).__name__}: {e})") from None
    return ds.to_list(), ds


def _looks_like_hub_id(s: str) -> bool:
    parts = s.split("/")
    return len(parts) == 2 and all(parts) and not s.startswith((".", "/")) and "." not in parts[1][-6:]


# ---------------------------------------------------------------- schemas


def _detect_schema(path: Path, rec: Any, row: int) -> str:
    if not isinstance(rec, dict):
        raise InputError(path, f"expected an object, found {type(rec).__name__}", row=row)
    if "messages" in rec:
        return "chat"
    if "instruction" in rec and ("response" in rec or "context" in rec):
        return "dolly"
    if "instruction" in rec or "output" in rec:
        return "alpaca"
    raise InputError(
        path,
        f"cannot tell the format from fields {sorted(rec)[:8]}; expected instruction/input/output (Alpaca), "
        "instruction/context/response (Dolly) or messages (chat)",
        row=row,
    )


def _text(path: Path, rec: dict[str, Any], row: int, name: str, *, required: bool) -> str:
    if name not in rec or rec[name] is None or (isinstance(rec[name], float) and math.isnan(rec[name])):
        if required:
            raise InputError(path, "missing" if name not in rec else "is null", row=row, field=name)
        return ""
    value = rec[name]
    if not isinstance(value, str):
        raise InputError(path, f"expected text, found {type(value).__name__} {value!r:.40}", row=row, field=name)
    _check_encodable(path, value, row, name)
    return value


def _check_encodable(path: Path, value: str, row: int, name: str) -> None:
    """A lone surrogate (JSON "\\ud800") reads fine but cannot be written or tokenised: refuse it here."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError(path, f"invalid character at position {e.start} (lone surrogate)", row=row,
                         field=name) from None


def _to_sample(path: Path, row: int, rec: Any, schema: str) -> Sample:
    if _detect_schema(path, rec, row) != schema:
        raise InputError(
            path, f"mixed formats: this row is {_detect_schema(path, rec, row)} but row 0 is {schema}", row=row
        )
    if schema == "chat":
        return _chat_sample(path, row, rec)
    category = rec.get("category") if isinstance(rec.get("category"), str) else None
    if schema == "dolly":
        return Sample(
            id=row,
            instruction=_text(path, rec, row, "instruction", required=True),
            input=_text(path, rec, row, "context", required=False),
            output=_text(path, rec, row, "response", required=True),
            category=category,
        )
    return Sample(
        id=row,
        instruction=_text(path, rec, row, "instruction", required=True),
        input=_text(path, rec, row, "input", required=False),
        output=_text(path, rec, row, "output", required=True),
        category=category,
    )


def _chat_sample(path: Path, row: int, rec: dict[str, Any]) -> Sample:
    messages = rec["messages"]
    if not isinstance(messages, list) or not messages:
        raise InputError(path, "expected a non-empty list of {role, content}", row=row, field="messages")
    clean = []
    for j, m in enumerate(messages):
        where = f"messages[{j}]"
        if not isinstance(m, dict):
            raise InputError(path, f"expected an object, found {type(m).__name__}", row=row, field=where)
        if m.get("role") not in CHAT_ROLES:
            raise InputError(path, f"role {m.get('role')!r} is not one of {CHAT_ROLES}", row=row, field=where)
        if not isinstance(m.get("content"), str):
            raise InputError(path, "content must be text", row=row, field=where + ".content")
        _check_encodable(path, m["content"], row, where + ".content")
        clean.append({"role": m["role"], "content": m["content"]})
    answers = [m["content"] for m in clean if m["role"] == "assistant"]
    if not any(a.strip() for a in answers):
        raise InputError(path, "no assistant turn with content: nothing to score", row=row, field="messages")
    questions = [m["content"] for m in clean if m["role"] == "user"]
    return Sample(
        id=row,
        instruction="\n".join(questions),
        input="",
        output="\n".join(answers),
        messages=tuple(clean),
        category=rec.get("category") if isinstance(rec.get("category"), str) else None,
    )
