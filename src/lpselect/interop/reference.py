"""Import and export the reference implementation's files (docs/method.md §11).

Unpickling runs code, so a pickle is first scanned opcode by opcode (only those that build lists, dicts,
numbers and strings pass), then read by an unpickler that resolves no global at all, and the result is
checked to be exactly the documented shape: a list of numbers, or a list of {embed_sentence, cluster_num} dicts.
"""

from __future__ import annotations

import io
import pickle
import pickletools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from lpselect.data.formats import read_dataset
from lpselect.data.provenance import recorded_fields
from lpselect.data.template import embedding_text
from lpselect.errors import InputError
from lpselect.runs.folder import RunFolder, describe_input
from lpselect.runs.io import atomic_path, write_parquet
from lpselect.runs.layout import CLUSTERS, SCORES
from lpselect.runs.tables import read_cluster_labels, read_ppl_table

NO_TOKEN_FLAG = "reference_no_tokens"


# Opcodes that build lists, dicts, numbers and strings, and nothing else. Checked before unpickling, so a
# pickle that names a global, builds an object, or asks for a huge memo is refused without running.
_PLAIN_OPCODES = frozenset({
    "PROTO", "FRAME", "STOP", "MARK", "EMPTY_LIST", "EMPTY_DICT", "LIST", "DICT", "APPEND", "APPENDS",
    "SETITEM", "SETITEMS", "BINFLOAT", "FLOAT", "BININT", "BININT1", "BININT2", "INT", "LONG", "LONG1",
    "NEWTRUE", "NEWFALSE", "NONE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "UNICODE",
    "MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET",
})
_MEMO_OPCODES = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"})


def _check_opcodes(raw: bytes) -> None:
    for n_ops, (op, arg, _) in enumerate(pickletools.genops(raw), start=1):
        if op.name not in _PLAIN_OPCODES:
            raise pickle.UnpicklingError(f"refused: opcode {op.name} (only plain lists/dicts/numbers accepted)")
        if op.name in _MEMO_OPCODES and int(arg) > n_ops:
            raise pickle.UnpicklingError(f"refused: memo index {arg} out of range")
        if op.name == "FRAME" and int(arg) > len(raw):
            raise pickle.UnpicklingError("refused: frame longer than the file")


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refused: the pickle asks for {module}.{name} (only plain data is accepted)")


def load_plain_pickle(path: str | Path) -> Any:
    try:
        with open(path, "rb") as f:
            raw = f.read()
        _check_opcodes(raw)
        return _PlainUnpickler(io.BytesIO(raw)).load()
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            OverflowError, MemoryError) as e:
        raise InputError(path, f"not a plain-data pickle: {e}") from None


def load_ppl_pickle(path: str | Path) -> np.ndarray:
    data = load_plain_pickle(path)
    if not isinstance(data, list):
        raise InputError(path, f"expected a list of perplexities, found {type(data).__name__}")
    for i, x in enumerate(data):
        if isinstance(x, bool) or not isinstance(x, int | float):
            raise InputError(path, f"expected a number, found {type(x).__name__}", row=i)
    return np.asarray(data, dtype=np.float64)


def load_clustering_pickle(path: str | Path) -> tuple[np.ndarray, list[str]]:
    data = load_plain_pickle(path)
    if not isinstance(data, list):
        raise InputError(path, f"expected a list of dicts, found {type(data).__name__}")
    labels, sentences = [], []
    for i, d in enumerate(data):
        if not isinstance(d, dict) or "cluster_num" not in d:
            raise InputError(path, "expected {embed_sentence, cluster_num}", row=i)
        c = d["cluster_num"]
        if isinstance(c, bool) or not isinstance(c, int):
            raise InputError(path, f"expected an integer, found {type(c).__name__}", row=i, field="cluster_num")
        labels.append(c)
        sentences.append(d.get("embed_sentence", "") if isinstance(d.get("embed_sentence"), str) else "")
    return np.asarray(labels, dtype=np.int64), sentences


@dataclass
class ImportResult:
    scores_path: Path
    clusters_path: Path | None
    n_rows: int
    n_no_token_rows: int


def no_token_rows(ppl: np.ndarray) -> np.ndarray:
    """The reference's mark of a sample left without response tokens: perplexity exactly 1.0 at every epoch."""
    return np.all(ppl == 1.0, axis=1)


def import_reference(pplx: list[str | Path], out: str | Path, *, clustering: str | Path | None = None,
                     keep_reference_ones: bool = False) -> ImportResult:
    """``epoch-pre.pkl, epoch-1.pkl, ...`` (in that order) -> ``scores.parquet`` (+ ``clusters.parquet``)."""
    if len(pplx) < 1:
        raise InputError("--pplx", "give at least the epoch-pre pickle")
    columns = [load_ppl_pickle(p) for p in pplx]
    n = len(columns[0])
    for p, c in zip(pplx, columns, strict=True):
        if len(c) != n:
            raise InputError(p, f"{len(c)} rows, but {pplx[0]} has {n}")
    ppl = np.stack(columns, axis=1)
    flagged = no_token_rows(ppl) if ppl.shape[1] > 1 else np.zeros(n, dtype=bool)
    if not keep_reference_ones:
        ppl[flagged] = np.nan
    table = {"id": np.arange(n, dtype=np.int64)}
    table.update({f"ppl_{e}": ppl[:, e] for e in range(ppl.shape[1])})
    table[NO_TOKEN_FLAG] = flagged
    run = RunFolder(out).lock()  # it writes scores.parquet: not into a folder another job is writing
    scores_path = run.path / SCORES
    write_parquet(scores_path, pa.table(table))
    clusters_path = None
    if clustering is not None:
        labels, _ = load_clustering_pickle(clustering)
        if len(labels) != n:
            raise InputError(clustering, f"{len(labels)} rows, but the perplexity files have {n}")
        clusters_path = run.path / CLUSTERS
        write_parquet(clusters_path, pa.table({"id": np.arange(n, dtype=np.int64), "cluster": labels}))
    run.update_step("import_reference", status="complete",
                    inputs={"pplx": [describe_input(p) for p in pplx],
                            "clustering": describe_input(clustering) if clustering else None},
                    config={"keep_reference_ones": keep_reference_ones},
                    counts={"rows": n, "no_token_rows": int(flagged.sum())})
    run.release()
    return ImportResult(scores_path, clusters_path, n, int(flagged.sum()))


def export_reference(scores: str | Path, out_dir: str | Path, *, clusters: str | Path | None = None,
                     data: str | Path | None = None) -> list[Path]:
    """``scores.parquet`` -> ``epoch-pre.pkl, epoch-1.pkl, ...``; rows without a score become 1.0 as in the
    reference. With ``clusters``, also ``clustering.pkl`` (embed_sentence from ``data`` when given)."""
    ppl = read_ppl_table(scores)
    ppl = np.where(np.isnan(ppl), 1.0, ppl)
    out_dir = Path(out_dir)
    written = []
    for e in range(ppl.shape[1]):
        path = out_dir / ("epoch-pre.pkl" if e == 0 else f"epoch-{e}.pkl")
        _dump(path, [float(x) for x in ppl[:, e]])
        written.append(path)
    if clusters is not None:
        labels = read_cluster_labels(clusters, len(ppl))
        texts = [embedding_text(s) for s in read_dataset(data, recorded_fields(clusters)).samples] if data \
            else [""] * len(labels)  # read with the run's own --fields mapping
        if len(texts) != len(labels):
            raise InputError(data or "", f"{len(texts)} samples, but {clusters} has {len(labels)} rows")
        path = out_dir / "clustering.pkl"
        _dump(path, [{"embed_sentence": t, "cluster_num": int(c)} for t, c in zip(texts, labels, strict=True)])
        written.append(path)
    return written


def _dump(path: Path, obj: Any) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        pickle.dump(obj, f, protocol=5)  # the reference's files are protocol 5


