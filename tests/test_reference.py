"""docs/method.md §11: the reference's pickles — restricted unpickling, round trip, and the real 52,002-row files.

The real files under ../shared/data are trusted, so the test itself reads them with the standard pickle
module to build its own expected values; lpselect reads them through its restricted unpickler.
"""

from __future__ import annotations

import json
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import shared_data

from lpselect.config import SubsetSpec
from lpselect.errors import InputError
from lpselect.interop.reference import (
    NO_TOKEN_FLAG,
    export_reference,
    import_reference,
    load_clustering_pickle,
    load_plain_pickle,
    load_ppl_pickle,
)
from lpselect.steps.select import select_subset

EPOCHS = ("pre", "1", "2", "3")
N_REAL = 52_002
NAN = float("nan")


def _write(path: Path, obj, protocol: int = 5) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


# --------------------------------------------------------------------------------------------------
# the restricted unpickler
# --------------------------------------------------------------------------------------------------


class _Touch:
    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


class _Eval:
    def __reduce__(self):
        return (eval, ("__import__('os').system('echo pwned')",))


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
@pytest.mark.parametrize("loader", [load_plain_pickle, load_ppl_pickle, load_clustering_pickle])
def test_code_carrying_pickle_is_refused_and_never_runs(tmp_path: Path, protocol: int, loader) -> None:
    target = tmp_path / "SOMEFILE"
    evil = _write(tmp_path / "evil.pkl", _Touch(target), protocol)
    with pytest.raises(InputError) as err:
        loader(evil)
    assert str(evil) in str(err.value)
    assert not target.exists()


def test_the_evil_pickle_is_live(tmp_path: Path) -> None:
    """Control: under the plain pickle module the payload does create the file, so the tests above mean it."""
    control = tmp_path / "CONTROL"
    pickle.loads(pickle.dumps(_Touch(control), protocol=5))
    assert control.exists()


@pytest.mark.parametrize("where", ["list", "dict"])
def test_code_inside_data_is_refused(tmp_path: Path, where: str) -> None:
    target = tmp_path / "SOMEFILE"
    payload: list = [1.0, _Touch(target), 3.0]
    if where != "list":
        payload = [{"embed_sentence": "", "cluster_num": _Eval()}]
    path = _write(tmp_path / "inner.pkl", payload)
    for loader in (load_plain_pickle, load_ppl_pickle, load_clustering_pickle):
        with pytest.raises(InputError):
            loader(path)
    assert not target.exists()


def test_code_carrying_pickle_refused_by_import_reference(tmp_path: Path) -> None:
    target = tmp_path / "SOMEFILE"
    good = _write(tmp_path / "epoch-pre.pkl", [2.0, 3.0])
    evil = _write(tmp_path / "epoch-1.pkl", _Touch(target))
    with pytest.raises(InputError):
        import_reference([good, evil], tmp_path / "run")
    clustering = _write(tmp_path / "clustering.pkl", [_Touch(target), _Touch(target)])
    with pytest.raises(InputError):
        import_reference([good, good], tmp_path / "run2", clustering=clustering)
    assert not target.exists()
    assert not (tmp_path / "run" / "scores.parquet").exists()


def test_any_global_is_refused_even_harmless_ones(tmp_path: Path) -> None:
    import collections
    import decimal

    for obj in ([decimal.Decimal("1.5")], collections.OrderedDict(a=1), [complex(1, 2)]):
        with pytest.raises(InputError):
            load_plain_pickle(_write(tmp_path / "g.pkl", obj))


@pytest.mark.parametrize("obj", [
    {"a": 1.0},
    ["1.0", "2.0"],
    [True, False],
    [1.0, True],
    (1.0, 2.0),
    [[1.0], [2.0]],
    [1.0, None],
    None,
    3.5,
    [{"embed_sentence": "x", "cluster_num": 1}],
])
def test_wrong_shapes_refused_as_perplexities(tmp_path: Path, obj) -> None:
    path = _write(tmp_path / "bad.pkl", obj)
    with pytest.raises(InputError):
        load_ppl_pickle(path)
    with pytest.raises(InputError):
        import_reference([path], tmp_path / "run")


@pytest.mark.parametrize("obj", [
    {"embed_sentence": "x", "cluster_num": 1},
    [1, 2, 3],
    ["a"],
    [{"embed_sentence": "x"}],
    [{"embed_sentence": "x", "cluster_num": 1.0}],
    [{"embed_sentence": "x", "cluster_num": True}],
    [{"embed_sentence": "x", "cluster_num": "3"}],
    [{"embed_sentence": "x", "cluster_num": 1}, None],
])
def test_wrong_shapes_refused_as_clustering(tmp_path: Path, obj) -> None:
    path = _write(tmp_path / "bad.pkl", obj)
    with pytest.raises(InputError):
        load_clustering_pickle(path)


def test_good_shapes_accepted(tmp_path: Path) -> None:
    got = load_ppl_pickle(_write(tmp_path / "p.pkl", [1.5, 2, 3.25]))
    assert got.dtype == np.float64
    assert got.tolist() == [1.5, 2.0, 3.25]
    labels, sentences = load_clustering_pickle(_write(tmp_path / "c.pkl", [
        {"embed_sentence": "a", "cluster_num": 3}, {"embed_sentence": "b", "cluster_num": 0}]))
    assert labels.tolist() == [3, 0]
    assert sentences == ["a", "b"]


@pytest.mark.parametrize("raw", [
    b"",
    b"not a pickle at all",
    pickle.dumps([1.0, 2.0, 3.0], protocol=4)[:-5],  # truncated
    b"\x80\x05]\x94(G?\xf0\x00\x00\x00\x00\x00\x00e",  # no STOP
])
def test_malformed_bytes_refused(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "m.pkl"
    path.write_bytes(raw)
    with pytest.raises(InputError):
        load_ppl_pickle(path)


@pytest.mark.parametrize("raw", [
    # FRAME opcode announcing 2**63 bytes -> OverflowError from the C unpickler
    b"\x80\x04\x95" + (2**63).to_bytes(8, "little") + b"]\x94.",
    # BINBYTES8 announcing 2**62 bytes -> MemoryError
    b"\x80\x04\x8e" + (2**62).to_bytes(8, "little") + b"x.",
], ids=["frame-2**63", "binbytes8-2**62"])
def test_malformed_length_fields_refused(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "m.pkl"
    path.write_bytes(raw)
    with pytest.raises(InputError):
        load_ppl_pickle(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_ppl_pickle(tmp_path / "nope.pkl")


def test_row_count_mismatch(tmp_path: Path) -> None:
    a = _write(tmp_path / "epoch-pre.pkl", [1.5, 2.5, 3.5])
    b = _write(tmp_path / "epoch-1.pkl", [1.5, 2.5])
    with pytest.raises(InputError):
        import_reference([a, b], tmp_path / "run")
    c = _write(tmp_path / "clustering.pkl", [{"embed_sentence": "", "cluster_num": 0}] * 2)
    with pytest.raises(InputError):
        import_reference([a, a], tmp_path / "run2", clustering=c)


# --------------------------------------------------------------------------------------------------
# round trip on a small synthetic set
# --------------------------------------------------------------------------------------------------

SYNTH = {
    "pre": [12.5, 1.0, 7.25, 3.0, 1.0, 100.125],
    "1": [8.0, 1.0, 7.5, 2.0, 1.0, 50.0],
    "2": [6.5, 1.0, 5.0, 1.0, 2.0, 40.0],
    "3": [6.0, 1.0, 4.0, 1.5, 1.0, 30.0],
}
# row 1 is 1.0 at every epoch (the reference's no-token mark); row 4 is 1.0 at three epochs only


def _synth_files(folder: Path, protocol: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [_write(folder / f"epoch-{e}.pkl", SYNTH[e], protocol) for e in EPOCHS]


@pytest.mark.parametrize("keep", [False, True])
@pytest.mark.parametrize("protocol", [4, 5])
def test_synthetic_round_trip_is_byte_identical(tmp_path: Path, keep: bool, protocol: int) -> None:
    src = _synth_files(tmp_path / "src", protocol)
    res = import_reference(src, tmp_path / "run", keep_reference_ones=keep)
    assert res.n_rows == 6
    assert res.n_no_token_rows == 1
    table = pq.read_table(res.scores_path)
    assert table.column("id").to_pylist() == list(range(6))
    assert table.column(NO_TOKEN_FLAG).to_pylist() == [False, True, False, False, False, False]
    p0 = table.column("ppl_0").to_pylist()
    assert (p0[1] == 1.0) if keep else math.isnan(p0[1])
    assert p0[4] == 1.0  # not all-1.0: never flagged
    out = export_reference(res.scores_path, tmp_path / "back")
    assert [p.name for p in out] == ["epoch-pre.pkl", "epoch-1.pkl", "epoch-2.pkl", "epoch-3.pkl"]
    for a, b in zip(src, out, strict=True):
        original, exported = a.read_bytes(), b.read_bytes()
        assert pickle.loads(exported) == pickle.loads(original)
        assert all(type(x) is float for x in pickle.loads(exported))
        # identical after the 2-byte PROTO opcode (export writes protocol 5, as the reference's files)
        assert exported[2:] == original[2:]
        if protocol == 5:
            assert exported == original


def test_clustering_round_trip(tmp_path: Path) -> None:
    rows = [
        {"instruction": "  Add two numbers. ", "input": "2 and 3", "output": " 5 "},
        {"instruction": "Name a colour.", "input": "", "output": "Blue."},
        {"instruction": "Say hi", "input": "  ", "output": "hi"},
    ]
    data = tmp_path / "data.json"
    data.write_text(json.dumps(rows))
    # docs/method.md §7 text, written out by hand
    sentences = [
        "Instruction: Add two numbers. 2 and 3 Response: 5",
        "Instruction: Name a colour. Response: Blue.",
        "Instruction: Say hi Response: hi",
    ]
    clustering = [{"embed_sentence": s, "cluster_num": c} for s, c in zip(sentences, [7, 0, 7], strict=True)]
    cpath = _write(tmp_path / "clustering.pkl", clustering, 4)
    ppl = [_write(tmp_path / f"epoch-{e}.pkl", [3.0, 2.0, 4.0], 4) for e in ("pre", "1")]
    res = import_reference(ppl, tmp_path / "run", clustering=cpath)
    assert res.clusters_path is not None
    ct = pq.read_table(res.clusters_path)
    assert ct.column("id").to_pylist() == [0, 1, 2]
    assert ct.column("cluster").to_pylist() == [7, 0, 7]
    out = export_reference(res.scores_path, tmp_path / "back", clusters=res.clusters_path, data=data)
    assert out[-1].name == "clustering.pkl"
    assert pickle.loads(out[-1].read_bytes()) == clustering
    assert out[-1].read_bytes()[2:] == cpath.read_bytes()[2:]


# --------------------------------------------------------------------------------------------------
# the real reference files (52,002 Alpaca rows, OPT-350M)
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_dir() -> Path:
    return shared_data("reference-pplx", "alpaca-opt-350m")


@pytest.fixture(scope="module")
def real_ppl(real_dir: Path) -> list[list[float]]:
    """The four raw columns, read by the test with the standard (trusted-file) pickle module."""
    cols = []
    for e in EPOCHS:
        with open(real_dir / f"epoch-{e}.pkl", "rb") as f:
            cols.append(pickle.load(f))
    return cols


@pytest.fixture(scope="module")
def real_import(real_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    out = {}
    for keep in (False, True):
        run = tmp_path_factory.mktemp(f"real-keep-{keep}")
        files = [real_dir / f"epoch-{e}.pkl" for e in EPOCHS]
        out[keep] = import_reference(files, run, keep_reference_ones=keep)
    return out


def _plain_lp1(cols: list[list[float]], keep: bool) -> list[float]:
    """LP(1) row by row in plain Python floats; all-1.0 rows NaN unless ``keep``."""
    out = []
    for p0, p1, p2, p3 in zip(*cols, strict=True):
        if not keep and p0 == p1 == p2 == p3 == 1.0:
            out.append(NAN)
        elif p0 == p3:
            out.append(0.0)
        else:
            out.append((p0 - p1) / (p0 - p3))
    return out


def _plain_lp_app1(cols: list[list[float]], keep: bool) -> list[float]:
    out = []
    for p0, p1, p2, p3 in zip(*cols, strict=True):
        if not keep and p0 == p1 == p2 == p3 == 1.0:
            out.append(NAN)
        else:
            out.append((p0 - p1) / p0)
    return out


def test_real_files_are_what_the_tests_assume(real_ppl) -> None:
    assert [len(c) for c in real_ppl] == [N_REAL] * 4
    assert all(type(x) is float for c in real_ppl for x in c[:100])


def test_real_import_counts_and_flags(real_ppl, real_import) -> None:
    ones = [i for i, row in enumerate(zip(*real_ppl, strict=True)) if all(x == 1.0 for x in row)]
    assert len(ones) == 1  # docs/method.md §8: one such row in this file
    for keep, res in real_import.items():
        assert res.n_rows == N_REAL
        assert res.n_no_token_rows == len(ones)
        t = pq.read_table(res.scores_path)
        assert t.num_rows == N_REAL
        assert t.column("id").to_pylist() == list(range(N_REAL))
        assert np.flatnonzero(t.column(NO_TOKEN_FLAG).to_numpy()).tolist() == ones
        manifest = json.loads((res.scores_path.parent / "manifest.json").read_text())
        assert manifest["steps"]["import_reference"]["counts"]["no_token_rows"] == len(ones)
        for e in range(4):
            col = t.column(f"ppl_{e}").to_numpy()
            raw = np.array(real_ppl[e])
            if keep:
                np.testing.assert_array_equal(col, raw)
            else:
                assert np.isnan(col[ones]).all()
                rest = np.ones(N_REAL, dtype=bool)
                rest[ones] = False
                np.testing.assert_array_equal(col[rest], raw[rest])
                assert not np.isnan(col[rest]).any()


@pytest.mark.parametrize("keep", [False, True])
def test_real_lp1_from_scores_matches_numpy_on_raw_pickles(real_ppl, real_import, keep: bool) -> None:
    from lpselect.core.metrics import learning_percentage, learning_percentage_approx

    t = pq.read_table(real_import[keep].scores_path)
    table = np.stack([t.column(f"ppl_{e}").to_numpy() for e in range(4)], axis=1)
    raw = np.array(real_ppl, dtype=np.float64).T  # rows x epochs
    total = raw[:, 0] - raw[:, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        lp1 = np.where(total == 0, 0.0, (raw[:, 0] - raw[:, 1]) / total)
        lp_app1 = (raw[:, 0] - raw[:, 1]) / raw[:, 0]
    ones = np.all(raw == 1.0, axis=1)
    assert ones.sum() == 1
    if not keep:
        lp1[ones] = np.nan
        lp_app1[ones] = np.nan
    np.testing.assert_array_equal(learning_percentage(table, 1), lp1)
    np.testing.assert_array_equal(learning_percentage_approx(table, 1), lp_app1)
    if keep:
        assert (learning_percentage(table, 1)[ones] == 0.0).all()
    else:
        assert np.isnan(learning_percentage(table, 1)[ones]).all()
    # and the plain-Python per-row statement agrees with the numpy one
    np.testing.assert_array_equal(np.array(_plain_lp1(real_ppl, keep)), lp1)


def test_real_export_round_trip(real_dir: Path, real_import, tmp_path: Path) -> None:
    for keep in (False, True):
        out = export_reference(real_import[keep].scores_path, tmp_path / f"back-{keep}")
        for e, path in zip(EPOCHS, out, strict=True):
            original = (real_dir / f"epoch-{e}.pkl").read_bytes()
            exported = path.read_bytes()
            assert exported[2:] == original[2:]


def test_real_export_round_trip_full_bytes(real_dir: Path, real_import, tmp_path: Path) -> None:
    out = export_reference(real_import[False].scores_path, tmp_path / "back")
    assert out[0].read_bytes() == (real_dir / "epoch-pre.pkl").read_bytes()


# --- selection on the real scores with a synthetic clustering ---------------------------------------


def _part_sizes(n: int, parts: int) -> list[int]:
    q, r = n // parts, n % parts
    return [q + 1 if k < r else q for k in range(parts)]


def _plain_low(metric: list[float], labels: list[int], parts: int) -> list[int]:
    groups: dict[int, list[int]] = {}
    for i, (m, c) in enumerate(zip(metric, labels, strict=True)):
        if not math.isnan(m):
            groups.setdefault(c, []).append(i)
    out: list[int] = []
    for c in sorted(groups):
        members = sorted(groups[c], key=lambda i: (metric[i], i))
        out.extend(members[:_part_sizes(len(members), parts)[0]])
    return out


@pytest.fixture(scope="module")
def synthetic_alpaca(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[int]]:
    folder = tmp_path_factory.mktemp("alpaca52k")
    data = folder / "alpaca.jsonl"
    with open(data, "w") as f:
        for i in range(N_REAL):
            f.write(json.dumps({"instruction": f"q{i}", "input": "", "output": f"a{i}"}) + "\n")
    labels = np.random.default_rng(0).integers(0, 1000, N_REAL)
    clusters = folder / "clusters.parquet"
    pq.write_table(pa.table({"id": np.arange(N_REAL, dtype=np.int64), "cluster": labels}), clusters)
    return data, clusters, labels.tolist()


@pytest.mark.parametrize(("metric", "percent", "parts", "keep"), [
    ("lp", 10, 10, False),
    ("lp", 10, 10, True),
    ("lp", 3, 33, False),
    ("lp_app", 10, 10, False),
    ("lp_app", 33, 3, True),
])
def test_real_low_selection_matches_plain_python(real_ppl, real_import, synthetic_alpaca, tmp_path: Path,
                                                 metric: str, percent: int, parts: int, keep: bool) -> None:
    data, clusters, labels = synthetic_alpaca
    values = _plain_lp1(real_ppl, keep) if metric == "lp" else _plain_lp_app1(real_ppl, keep)
    expected = _plain_low(values, labels, parts)
    assert len(expected) > N_REAL * percent / 100 * 0.9

    out = tmp_path / "subset.jsonl"
    res = select_subset(data, real_import[keep].scores_path, out,
                        SubsetSpec(metric=metric, epoch=1, percent=percent, band="low", order="reference"),
                        clusters=clusters)
    assert res.ids.tolist() == expected
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["instruction"] for r in written] == [f"q{i}" for i in expected]
    assert written[0] == {"instruction": f"q{expected[0]}", "input": "", "output": f"a{expected[0]}"}
    assert res.report["n_selected"] == len(expected)
    assert res.report["n_nan_left_out"] == (0 if keep else 1)
    assert res.report["n_parts"] == parts
    ones = [i for i, row in enumerate(zip(*real_ppl, strict=True)) if all(x == 1.0 for x in row)]
    if not keep:
        assert not set(ones) & set(res.ids.tolist())

    res2 = select_subset(data, real_import[keep].scores_path, tmp_path / "orig.jsonl",
                         SubsetSpec(metric=metric, epoch=1, percent=percent, band="low", order="original"),
                         clusters=clusters)
    assert res2.ids.tolist() == sorted(expected)
