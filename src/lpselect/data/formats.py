"""Read every supported instruction-data format into samples, and write a subset back in the same format.

docs/method.md §2: a sample's ``id`` is its 0-based row position in the input file; the original record is kept
untouched so a subset is written with every field it had.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from lpselect.errors import InputError, LPSelectError
from lpselect.runs.io import atomic_path, jsonl_objects

if TYPE_CHECKING:
    import datasets

CHAT_ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"system": "system", "human": "user", "gpt": "assistant"}  # as LLaMA-Factory and axolotl read it
ACCEPTED_SHAPES = ("instruction/input/output (Alpaca), instruction/context/response (Dolly), messages (chat), "
                   "conversations with from/value (ShareGPT) or prompt/completion (TRL)")
# the names a field mapping (--fields output=answer,...) may give a file's columns: every field a shape reads
CANONICAL_FIELDS = ("instruction", "input", "output", "context", "response", "messages", "conversations", "prompt",
                    "completion", "category")
FIELDS_HINT = "or name your columns with --fields (e.g. --fields output=answer,instruction=question)"


@dataclass(frozen=True)
class Sample:
    """One instruction sample in the canonical shape; ``messages`` is set for chat data only."""

    id: int
    instruction: str
    input: str
    output: str
    messages: tuple[dict[str, str], ...] | None = None
    category: str | None = None
    first_scored_turn: int = 0  # chat: assistant turns before this index are context (a conversational prompt)


@dataclass
class Dataset:
    """The samples of one input file, with what is needed to write a subset in the same format."""

    path: Path
    file_format: str  # json | jsonl | parquet | csv | hf
    schema: str  # alpaca | dolly | chat | sharegpt | prompt_completion
    records: list[dict[str, Any]]  # the rows as in the file (a subset is written back with their own columns)
    samples: list[Sample]
    fields: dict[str, str] = field(default_factory=dict)  # canonical name -> the file's column (--fields)
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
            turns = tuple((m["role"], m["content"]) for m in s.messages) if s.messages is not None else None
            key = (s.instruction, s.input, s.output, turns)  # a turn is a dict (unhashable): key on its text
            n += key in seen
            seen.add(key)
        return n


def read_dataset(path: str | Path | Dataset | datasets.Dataset, fields: Mapping[str, str] | None = None) -> Dataset:
    """Read ``path`` (JSON array, JSONL, Parquet, CSV, a ``save_to_disk`` folder, or a hub id when online), or
    the rows of a ``datasets.Dataset`` in memory, exactly as from a file of the same rows (errors then name
    "the Dataset"). An lpselect :class:`Dataset` is returned as it is (read again through ``fields`` when they
    differ from its own).

    ``fields`` maps canonical names (:data:`CANONICAL_FIELDS`) to the file's own columns, e.g. ``{"instruction":
    "question", "output": "answer"}``: the shape is told and the samples read through it, while ``records``
    keep the file's rows as they are, so a subset is written back with the file's column names."""
    mapping = check_fields(fields)
    if isinstance(path, Dataset):
        if mapping == path.fields or (fields is None and path.fields):
            return path
        return _from_records(path.path, path.path, path.records, path.file_format, dict(path._extra), mapping)
    if not isinstance(path, str | Path):
        records, extra = _in_memory_rows(path)
        return _from_records(Path(in_memory_label(path)), IN_MEMORY_WHERE, records, "hf", extra, mapping)
    return _read_dataset(Path(path), path, mapping)


IN_MEMORY_WHERE = "the Dataset"  # what an error about in-memory rows names instead of a file


def in_memory_label(data: Any) -> str:
    """How provenance names in-memory rows: the ``datasets`` fingerprint, when the Dataset has one."""
    fingerprint = getattr(data, "_fingerprint", None)
    return f"<datasets.Dataset {fingerprint}>" if fingerprint else "<datasets.Dataset>"


def is_in_memory(dataset: Dataset) -> bool:
    """Whether the rows came from a ``datasets.Dataset`` object rather than a file, folder or hub id."""
    return bool(dataset._extra.get("in_memory"))


def _in_memory_rows(data: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows of a ``datasets.Dataset`` (a DatasetDict's train split), as a file's rows are read."""
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a dependency
        datasets = None
    if datasets is not None and isinstance(data, datasets.DatasetDict):
        if "train" not in data:
            raise InputError(IN_MEMORY_WHERE, f"the DatasetDict has splits {list(data)}; expected a 'train' split")
        data = data["train"]
    if datasets is None or not isinstance(data, datasets.Dataset):
        raise LPSelectError(f"expected a data file path, a datasets.Dataset or an lpselect Dataset, got "
                            f"{type(data).__name__}")
    return data.to_list(), {"hf": data, "in_memory": True}


def parse_fields(text: str | None) -> dict[str, str]:
    """``--fields output=answer,instruction=question`` as {canonical name: column}; '' or None is no mapping."""
    if text is None or not text.strip():
        return {}
    mapping: dict[str, str] = {}
    for part in text.split(","):
        name, sep, column = (x.strip() for x in part.partition("="))
        if not sep or not name or not column:
            raise LPSelectError(f"--fields {text}: expected NAME=COLUMN pairs separated by commas, e.g. "
                                f"output=answer,instruction=question (got {part.strip()!r})")
        if name in mapping:
            raise LPSelectError(f"--fields {text}: {name} is mapped twice")
        mapping[name] = column
    return check_fields(mapping, flag=f"--fields {text}")


def check_fields(fields: Mapping[str, Any] | None, flag: str = "fields") -> dict[str, str]:
    """A field mapping as a plain dict, each name canonical and each column a non-empty text."""
    if not fields:
        return {}
    if not isinstance(fields, Mapping):
        raise LPSelectError(f"{flag}: expected a mapping of field names to columns, e.g. {{output: answer}}")
    unknown = [n for n in fields if n not in CANONICAL_FIELDS]
    if unknown:
        raise LPSelectError(f"{flag}: {', '.join(map(str, unknown))} is not a field name; the names are "
                            f"{', '.join(CANONICAL_FIELDS)}")
    bad = [n for n, c in fields.items() if not isinstance(c, str) or not c]
    if bad:
        raise LPSelectError(f"{flag}: the column of {bad[0]} must be a non-empty text")
    return {str(n): str(c) for n, c in fields.items()}


def _mapped(path: Path, row: int, rec: Any, fields: dict[str, str]) -> Any:
    """The row as the shapes read it: each mapped column under its canonical name (the column itself then left
    out, so it cannot make the row look like another shape). A column the row lacks is refused, by name."""
    if not fields or not isinstance(rec, dict):
        return rec
    missing = [c for c in fields.values() if c not in rec]
    if missing:
        name = next(n for n, c in fields.items() if c == missing[0])
        raise InputError(path, f"no column '{missing[0]}' (mapped by --fields {name}={missing[0]}); the row has "
                         f"{sorted(rec)[:8]}", row=row, field=missing[0])
    view = {k: v for k, v in rec.items() if k not in fields.values()}
    view.update({name: rec[column] for name, column in fields.items()})
    return view


def _read_dataset(p: Path, path: str | Path, fields: dict[str, str]) -> Dataset:
    extra: dict[str, Any] = {}
    if p.is_dir():
        records, extra["hf"] = _read_hf_folder(p)
        file_format = "hf"
    elif not p.exists():
        if looks_like_hub_id(str(path)):
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
    return _from_records(p, p, records, file_format, extra, fields)


def _from_records(p: Path, where: str | Path, records: list[Any], file_format: str, extra: dict[str, Any],
                  fields: dict[str, str]) -> Dataset:
    """The dataset of rows read from ``p`` (``where`` names it in errors): shape detected on row 0, every row
    checked and read through ``fields``."""
    if not records:
        raise InputError(where, "the dataset is empty")
    try:
        return _checked_dataset(p, where, records, file_format, extra, fields)
    except InputError as e:
        if where == p:
            raise
        raise InputError(where, str(e)[len(_where_text(e)) + 2:], row=e.row, field=e.field) from None


def _where_text(e: InputError) -> str:
    return e.path + (f", row {e.row}" if e.row is not None else "") + \
        (f", field '{e.field}'" if e.field is not None else "")


def _checked_dataset(p: Path, where: str | Path, records: list[Any], file_format: str, extra: dict[str, Any],
                     fields: dict[str, str]) -> Dataset:
    schema = _detect_schema(p, _mapped(p, 0, records[0], fields), 0)
    if fields and (unread := sorted(set(fields) - SHAPE_FIELDS[schema])):
        # another shape's own columns decided the shape: the mapping would be ignored and another column read
        raise InputError(p, f"the rows read as {schema} (from their fields {sorted(records[0])[:8]}), which does "
                            f"not read {', '.join(unread)}: --fields {','.join(f'{k}={fields[k]}' for k in unread)} "
                            f"would be ignored; map the names {schema} reads "
                            f"({', '.join(sorted(SHAPE_FIELDS[schema] - {'category'}))})", row=0)
    try:
        samples = [_to_sample(p, i, _mapped(p, i, rec, fields), schema) for i, rec in enumerate(records)]
    except InputError as e:
        raise _named_by_file(e, fields) from None
    return Dataset(path=p, file_format=file_format, schema=schema, records=records, samples=samples,
                   fields=fields, _extra=extra)


def _named_by_file(e: InputError, fields: dict[str, str]) -> InputError:
    """An error about a mapped field names the file's column (what the user sees in the file) and the mapping."""
    if not fields or e.field is None:
        return e
    name = e.field.split("[", 1)[0].split(".", 1)[0]  # 'conversations[2].value' -> 'conversations'
    if name not in fields:
        return e
    where = e.path + (f", row {e.row}" if e.row is not None else "") + f", field '{e.field}'"
    message = str(e)[len(where) + 2:]
    column = fields[name] + e.field[len(name):]
    return InputError(e.path, f"{message} (--fields {name}={fields[name]})", row=e.row, field=column)


def write_subset(dataset: Dataset, ids: list[int], out: str | Path) -> Path:
    """Write the rows ``ids`` (in that order) in the dataset's own format, every original field kept. Rows of a
    ``datasets.Dataset`` in memory have no file format: ``out``'s suffix picks one (.json, .jsonl, .parquet,
    .csv), and without one they are saved as a dataset folder."""
    out = Path(out)
    fmt = _in_memory_format(out) if is_in_memory(dataset) else dataset.file_format
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
            schema = dataset._extra.get("schema") or dataset._extra["hf"].features.arrow_schema
            pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)
        elif fmt == "csv":
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                fieldnames = dataset._extra.get("fieldnames") or dataset._extra["hf"].column_names
                writer = csv.DictWriter(f, fieldnames=fieldnames)
                writer.writeheader()
                writer.writerows(rows)
        else:  # pragma: no cover - guarded by read_dataset
            raise ValueError(fmt)
    return out


_SUFFIXES = {"json": (".json",), "jsonl": (".jsonl", ".ndjson"), "parquet": (".parquet",), "csv": (".csv",)}


def _in_memory_format(out: Path) -> str:
    """The format a subset of in-memory rows is written in: the one ``out``'s suffix names, else a folder."""
    suffix = out.suffix.lower()
    return next((fmt for fmt, group in _SUFFIXES.items() if suffix in group), "hf")


def _check_subset_suffix(out: Path, fmt: str) -> None:
    """A subset keeps the input's format (docs/method.md §2); an --out named for another format would mislead."""
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


def looks_like_hub_id(s: str) -> bool:
    parts = s.split("/")
    return len(parts) == 2 and all(parts) and not s.startswith((".", "/")) and "." not in parts[1][-6:]


# ---------------------------------------------------------------- schemas


# the canonical names each shape reads: a --fields mapping must name only these (else it would be ignored)
SHAPE_FIELDS: dict[str, set[str]] = {
    "alpaca": {"instruction", "input", "output", "category"},
    "dolly": {"instruction", "context", "response", "category"},
    "chat": {"messages", "category"},
    "sharegpt": {"conversations", "category"},
    "prompt_completion": {"prompt", "completion", "category"},
}


def _detect_schema(path: Path, rec: Any, row: int) -> str:
    if not isinstance(rec, dict):
        raise InputError(path, f"expected an object, found {type(rec).__name__}", row=row)
    if "messages" in rec:
        return "chat"
    if "conversations" in rec:
        return "sharegpt"
    if "prompt" in rec and "completion" in rec:
        return "prompt_completion"
    if "instruction" in rec and ("response" in rec or "context" in rec):
        return "dolly"
    if "instruction" in rec or "output" in rec:
        return "alpaca"
    raise InputError(path, f"cannot tell the format from fields {sorted(rec)[:8]}; expected {ACCEPTED_SHAPES}, "
                     f"{FIELDS_HINT}", row=row)


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
    if schema == "sharegpt":
        return _chat_sample(path, row, rec, field="conversations")
    if schema == "prompt_completion":
        return _prompt_completion_sample(path, row, rec)
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


def _turns(path: Path, row: int, turns: Any, field: str) -> list[dict[str, str]]:
    """``{role, content}`` turns of a chat list (``messages``, a conversational prompt or completion), or of a
    ShareGPT ``conversations`` list (``{from, value}``, from system/human/gpt), as ``{role, content}``."""
    sharegpt = field == "conversations"
    role_key, text_key = ("from", "value") if sharegpt else ("role", "content")
    roles = tuple(SHAREGPT_ROLES) if sharegpt else CHAT_ROLES
    if not isinstance(turns, list) or not turns:
        raise InputError(path, f"expected a non-empty list of {{{role_key}, {text_key}}}", row=row, field=field)
    clean = []
    for j, m in enumerate(turns):
        where = f"{field}[{j}]"
        if not isinstance(m, dict):
            raise InputError(path, f"expected an object, found {type(m).__name__}", row=row, field=where)
        if m.get(role_key) not in roles:
            raise InputError(path, f"{role_key} {m.get(role_key)!r} is not one of {roles}", row=row, field=where)
        if not isinstance(m.get(text_key), str):
            raise InputError(path, f"{text_key} must be text", row=row, field=f"{where}.{text_key}")
        _check_encodable(path, m[text_key], row, f"{where}.{text_key}")
        role = SHAREGPT_ROLES[m[role_key]] if sharegpt else m[role_key]
        clean.append({"role": role, "content": m[text_key]})
    return clean


def _chat_sample(path: Path, row: int, rec: dict[str, Any], field: str = "messages", *,
                 turns: list[dict[str, str]] | None = None, first_scored_turn: int = 0) -> Sample:
    clean = _turns(path, row, rec[field], field) if turns is None else turns
    answers = [m["content"] for m in clean[first_scored_turn:] if m["role"] == "assistant"]
    if not any(a.strip() for a in answers):
        raise InputError(path, "no assistant turn with content: nothing to score", row=row, field=field)
    questions = [m["content"] for m in clean if m["role"] == "user"]
    return Sample(
        id=row,
        instruction="\n".join(questions),
        input="",
        output="\n".join(answers),
        messages=tuple(clean),
        category=rec.get("category") if isinstance(rec.get("category"), str) else None,
        first_scored_turn=first_scored_turn,
    )


def _prompt_completion_sample(path: Path, row: int, rec: dict[str, Any]) -> Sample:
    """TRL's prompt/completion: plain strings (the prompt is the instruction, under docs/method.md §3's template), or
    lists of messages (the chat template; only the completion's assistant turns are scored, as TRL trains)."""
    prompt, completion = rec["prompt"], rec["completion"]
    if isinstance(prompt, list) or isinstance(completion, list):
        if not (isinstance(prompt, list) and isinstance(completion, list)):
            raise InputError(path, "prompt and completion must both be text or both be lists of messages",
                             row=row, field="completion" if isinstance(prompt, list) else "prompt")
        head = _turns(path, row, prompt, "prompt")
        tail = _turns(path, row, completion, "completion")
        return _chat_sample(path, row, rec, "completion", turns=head + tail, first_scored_turn=len(head))
    return Sample(
        id=row,
        instruction=_text(path, rec, row, "prompt", required=True),
        input="",
        output=_text(path, rec, row, "completion", required=True),
        category=rec.get("category") if isinstance(rec.get("category"), str) else None,
    )
