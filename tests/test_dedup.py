"""``select --dedup`` (lpselect.core.dedup, lpselect.steps.dedup) against a plain statement of the rule.

The statement (:func:`brute_force`): visit the rows in ascending id; a row is removed when its cosine similarity
(float64 dot product of the two vectors divided by their norms, rounded to 12 decimals) to an earlier kept row
of the same cluster is >= the threshold. Its partner is the most similar such kept row, the earliest on a tie.
Every search path (numpy products in blocks of any size, faiss) must give the same rows and partners.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lpselect.core.dedup import greedy_keep
from lpselect.data.formats import read_dataset
from lpselect.errors import InputError, LPSelectError
from lpselect.steps import dedup as dedup_step
from lpselect.steps.dedup import dedup_rows, parse_dedup, row_text


def brute_force(ids, labels, emb, threshold):
    """(keep, partner id or -1) by the rule, one pair at a time."""
    n = len(ids)
    vectors = [np.asarray(v, dtype=np.float64) for v in emb]
    norms = [float(np.linalg.norm(v)) for v in vectors]
    keep, partner = [False] * n, [-1] * n
    kept_rows: dict[int, list[int]] = {}
    for row in sorted(range(n), key=lambda r: ids[r]):
        cluster = 0 if labels is None else int(labels[row])
        best, best_sim = -1, -math.inf
        for k in kept_rows.get(cluster, []):  # in id order, so a strict > keeps the earliest on a tie
            na, nb = norms[row], norms[k]
            sim = round(float(np.dot(vectors[row], vectors[k]) / (na * nb)), 12) if na and nb else 0.0
            if sim >= threshold and sim > best_sim:
                best, best_sim = k, sim
        if best < 0:
            keep[row] = True
            kept_rows.setdefault(cluster, []).append(row)
        else:
            partner[row] = int(ids[best])
    return np.array(keep), np.array(partner)


def clustered(seed: int, n: int = 600, dim: int = 24, k: int = 5):
    """Random clusters with planted near-duplicates at several distances (some above, some below 0.95)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, dim))
    labels = rng.integers(0, k, n)
    x = centers[labels] + 0.6 * rng.normal(size=(n, dim))
    for row in rng.choice(n, n // 3, replace=False):  # a copy of another row of its cluster, a little moved
        same = np.flatnonzero(labels == labels[row])
        x[row] = x[rng.choice(same)] + rng.choice([0.0, 0.05, 0.15, 0.3]) * rng.normal(size=dim)
    ids = rng.permutation(n) + 1000  # ids are not row positions, and not in row order
    return ids, labels, x.astype(np.float32)


def tied(seed: int, n: int = 300, dim: int = 8):
    """Vectors with four entries of +-1 times a power of two: every cosine is a multiple of 1/4, exact in
    float32 and float64 whatever the order of the sum, so thresholds 0.5, 0.75 and 1 fall exactly on ties."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, dim), dtype=np.float32)
    for row in range(n):
        support = rng.choice(dim, 4, replace=False)
        x[row, support] = rng.choice([-1.0, 1.0], 4) * 2.0 ** rng.integers(-3, 4)
    return rng.permutation(n), rng.integers(0, 3, n), x


def texts_for(n):
    return [f"row {i}" for i in range(n)]


def all_paths(ids, labels, x, threshold):
    """The results of every search path: numpy in default and odd-sized blocks, faiss forced on."""
    common = {"ids": ids, "labels": labels, "embeddings": x, "texts": texts_for(len(ids))}
    return {
        "numpy": dedup_rows(threshold, **common),
        "numpy-blocks-7": dedup_rows(threshold, **common, block_rows=7),
        "faiss-blocks-7": dedup_rows(threshold, **common, block_rows=7, large_cluster_rows=0),
        "faiss": dedup_rows(threshold, **common, large_cluster_rows=0),
    }


def check_against_brute_force(ids, labels, x, threshold):
    keep, partner = brute_force(ids, labels, x, threshold)
    for name, result in all_paths(ids, labels, x, threshold).items():
        assert np.array_equal(result.keep, keep), name
        assert np.array_equal(result.removed_by, partner), name
        assert result.n_removed == int((~keep).sum()) and result.n_rows == len(ids)
    return keep


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("threshold", [0.95, 0.8])
def test_random_clusters_match_the_rule(seed, threshold):
    ids, labels, x = clustered(seed)
    unit = x.astype(np.float64) / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    same = labels[:, None] == labels[None, :]
    gaps = np.abs(unit @ unit.T - threshold)[same & ~np.eye(len(x), dtype=bool)]
    assert gaps.min() > 1e-6  # no pair is within rounding of the threshold: the statement's float64 is exact here
    keep = check_against_brute_force(ids, labels, x, threshold)
    assert 20 < (~keep).sum() < len(x) - 20  # the data exercises both outcomes


@pytest.mark.parametrize("threshold", [0.5, 0.75, 1.0])
def test_exact_ties_at_the_threshold_are_removed(threshold):
    ids, labels, x = tied(3)
    keep = check_against_brute_force(ids, labels, x, threshold)
    result = dedup_rows(threshold, ids=ids, labels=labels, embeddings=x, texts=texts_for(len(ids)))
    assert (result.similarity[~keep] == threshold).any()  # some rows go on an exact tie


def test_one_cluster_and_shuffled_ids():
    ids, _, x = clustered(5, n=400)
    check_against_brute_force(ids, None, x, 0.9)
    check_against_brute_force(np.arange(400), None, x, 0.9)


def test_identical_and_parallel_embeddings_are_at_similarity_one():
    rng = np.random.default_rng(9)
    v = rng.normal(size=384).astype(np.float32)
    x = np.stack([v, v, 3 * v, rng.normal(size=384).astype(np.float32)])
    result = dedup_rows(1.0, ids=np.arange(4), labels=None, embeddings=x, texts=list("abcd"))
    assert result.keep.tolist() == [True, False, False, True]
    assert result.similarity[1] == 1.0 and result.similarity[2] == 1.0


def test_a_removed_row_removes_nothing():
    # angles 0, 20 and 40 degrees, threshold cos 30 degrees: B goes (20 degrees from A); C is 20 degrees from
    # B but B is gone, and 40 degrees from A, so C stays
    angles = np.radians([0.0, 20.0, 40.0])
    x = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    result = dedup_rows(math.cos(math.radians(30)), ids=np.arange(3), labels=None, embeddings=x, texts=["A", "B", "C"])
    assert result.keep.tolist() == [True, False, True]
    assert result.removed_by.tolist() == [-1, 0, -1]
    assert result.similarity[1] == pytest.approx(math.cos(math.radians(20)))


def test_visiting_order_is_the_id_order_not_the_row_order():
    x = np.array([[1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    result = dedup_rows(0.95, ids=np.array([7, 3]), labels=None, embeddings=x, texts=["a", "b"])
    assert result.keep.tolist() == [False, True]  # id 3 (row 1) comes first and stays
    assert result.examples[0]["removed_id"] == 7 and result.examples[0]["kept_id"] == 3


def test_clusters_are_separate_and_zero_vectors_stay():
    x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    result = dedup_rows(0.5, ids=np.arange(5), labels=np.array([0, 1, 0, 0, 0]), embeddings=x, texts=list("abcde"))
    assert result.keep.tolist() == [True, True, True, True, False]
    assert result.per_cluster == {0: (4, 1), 1: (1, 0)}


def test_faiss_missing_falls_back_to_numpy(monkeypatch):
    ids, labels, x = clustered(2, n=300)
    with_faiss = dedup_rows(0.9, ids=ids, labels=labels, embeddings=x, texts=texts_for(300), large_cluster_rows=0)
    monkeypatch.setattr(dedup_step, "_faiss_or_none", lambda: None)
    without = dedup_rows(0.9, ids=ids, labels=labels, embeddings=x, texts=texts_for(300), large_cluster_rows=0)
    assert with_faiss.search == {"numpy": 0, "faiss": 5} and without.search == {"numpy": 5, "faiss": 0}
    assert np.array_equal(with_faiss.keep, without.keep)


def test_core_rule_refuses_bad_thresholds_and_nan():
    with pytest.raises(ValueError):
        greedy_keep(np.ones((2, 2)), 0.0)
    with pytest.raises(ValueError, match="NaN"):
        greedy_keep(np.array([[1.0, np.nan]]), 0.9)


def test_report_is_json_with_examples():
    ids, labels, x = clustered(4)
    texts = [f"text of row {i} " + "word " * 30 for i in range(len(ids))]
    result = dedup_rows(0.95, ids=ids, labels=labels, embeddings=x, texts=texts)
    report = json.loads(json.dumps(result.report()))
    assert report["mode"] == "cosine" and report["threshold"] == 0.95
    assert report["removed"] == result.n_removed and report["kept"] == len(ids) - result.n_removed
    assert 1 <= len(report["examples"]) <= 5
    sims = [e["similarity"] for e in report["examples"]]
    assert sims == sorted(sims) and sims[0] == pytest.approx(report["removed_similarity"]["min"], abs=1e-6)
    by_id = dict(zip(ids.tolist(), range(len(ids)), strict=True))
    for e in report["examples"]:
        assert e["similarity"] >= 0.95 and len(e["removed_text"]) <= 80
        assert labels[by_id[e["removed_id"]]] == labels[by_id[e["kept_id"]]]
        assert e["kept_id"] < e["removed_id"]


def test_embeddings_are_needed_for_cosine():
    with pytest.raises(LPSelectError, match="embeddings"):
        dedup_rows(0.9, ids=np.arange(2), labels=None, embeddings=None, texts=["a", "b"])
    with pytest.raises(LPSelectError, match="3 rows, the data 2"):
        dedup_rows(0.9, ids=np.arange(2), labels=None, embeddings=np.ones((3, 4)), texts=["a", "b"])


# ------------------------------------------------------------------ exact mode
def test_exact_keeps_the_first_in_id_order():
    texts = ["a", "b", "a", "c", "b", "a"]
    ids = np.array([5, 1, 0, 2, 4, 3])  # 'a' has ids 5, 0, 3: id 0 (row 2) stays
    result = dedup_rows("exact", ids=ids, labels=np.array([0, 1, 2, 0, 1, 2]), embeddings=None, texts=texts)
    assert result.keep.tolist() == [False, True, True, True, False, False]
    assert result.removed_by.tolist() == [0, -1, -1, -1, 1, 0]
    assert result.report()["mode"] == "exact" and result.report()["removed"] == 3


def test_exact_counts_what_duplicate_rows_counts(tmp_path):
    rows = [
        {"instruction": "a|", "input": "b", "output": "c"},
        {"instruction": "a", "input": "|b", "output": "c"},  # differs from row 0 only in where '|' sits
        {"instruction": "a\\", "input": "|b", "output": "c"},
        {"instruction": "a", "input": "\\|b", "output": "c"},
        {"instruction": "a|", "input": "b", "output": "c"},  # duplicate of row 0
        {"instruction": "x", "input": "", "output": "y"},
        {"instruction": "x", "input": "", "output": "y "},  # not equal: one trailing space
        {"instruction": "x", "input": "", "output": "y"},  # duplicate of row 5
    ]
    path = tmp_path / "data.json"
    path.write_text(json.dumps(rows))
    dataset = read_dataset(path)
    texts = [row_text(s) for s in dataset.samples]
    result = dedup_rows("exact", ids=np.arange(len(rows)), labels=None, embeddings=None, texts=texts)
    assert dataset.duplicate_rows() == 2
    assert result.n_removed == 2 and result.removed_by.tolist() == [-1, -1, -1, -1, 0, -1, -1, 5]


# ------------------------------------------------------------------ parsing
@pytest.mark.parametrize(("value", "expected"), [("exact", "exact"), (" EXACT ", "exact"), ("0.95", 0.95),
                                                 ("1", 1.0), ("1e-3", 0.001)])
def test_parse_dedup(value, expected):
    assert parse_dedup(value) == expected


@pytest.mark.parametrize("value", ["", "abc", "0", "-0.5", "1.01", "nan", "inf", "95%"])
def test_parse_dedup_refuses(value):
    with pytest.raises(InputError) as err:
        parse_dedup(value)
    message = str(err.value)
    assert "\n" not in message and message.startswith("--dedup: expected 'exact' or a cosine similarity in (0, 1]")
