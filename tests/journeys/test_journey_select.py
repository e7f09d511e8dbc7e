"""Journey: score -> cluster -> select (every strategy and band) -> report on a tiny model, as a user runs it,
and the mistakes of issue 21 items 4-6 and 11, each one line. The rows are checked against a plain-Python
statement of docs/method.md §6 and §8 written here."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from _journey import run_cli, score_and_cluster, write_json

N = 40


def rows(n: int = N) -> list[dict[str, str]]:
    topics = ["Add {a} and {b}.", "Describe the fox number {a}.", "Write a haiku about the sea {a}.",
              "Translate 'dog' to French, case {a}."]
    return [{"instruction": topics[i % 4].format(a=i, b=i + 3), "input": "" if i % 3 else f"Context {i}.",
             "output": f"The answer is {2 * i + 3}." + " The lazy dog." * (i % 5)} for i in range(n)]


def lp_app1(scores: Path) -> list[float]:
    """docs/method.md §6: LP_app(1) = (P0 - P1) / P0, NaN stays NaN."""
    t = pq.read_table(scores).to_pydict()
    return [(a - b) / a if not (math.isnan(a) or math.isnan(b)) else math.nan
            for a, b in zip(t["ppl_0"], t["ppl_1"], strict=True)]


def statement(metric: list[float], clusters: list[int], percent: float, band: str) -> list[int]:
    """docs/method.md §8's parts rule: clusters ascending, members by (metric, id), round(100/p) parts, the first r of
    q + 1 rows; low = first part, high = last, mid = part parts // 2."""
    parts = max(1, round(100 / percent))
    out: list[int] = []
    for c in sorted(set(clusters)):
        members = sorted((i for i in range(len(metric)) if clusters[i] == c and not math.isnan(metric[i])),
                         key=lambda i: (metric[i], i))
        q, r = divmod(len(members), parts)
        sizes = [q + 1 if k < r else q for k in range(parts)]
        k = {"low": 0, "high": parts - 1, "mid": parts // 2}[band]
        start = sum(sizes[:k])
        out += members[start:start + sizes[k]]
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Path]:
    """One scored and clustered run of 40 Alpaca rows (one epoch, fp32), shared by the journeys below."""
    tmp = tmp_path_factory.mktemp("select-journey")
    data = write_json(tmp / "alpaca.json", rows())
    out = score_and_cluster(data, tmp / "run", tiny_model_dir)
    return {"data": data, "run": out, "scores": out / "scores.parquet", "clusters": out / "clusters.parquet",
            "tmp": tmp}


def _select(run: dict[str, Path], name: str, *args: object):
    target = run["tmp"] / f"{name}.json"
    r = run_cli("select", "--data", run["data"], "--scores", run["scores"], "--clusters", run["clusters"],
                "--out", target, *args)
    return r, target


@pytest.mark.parametrize(("band", "literal"), [("hardest", "low"), ("easiest", "high"), ("middle", "mid"),
                                               ("low", "low"), ("mid", "mid"), ("high", "high")])
def test_every_band_selects_the_rows_the_rule_says(run: dict[str, Path], band: str, literal: str) -> None:
    r, target = _select(run, f"band-{band}", "--metric", "lp_app", "--epoch", "1", "--percent", "25",
                        "--band", band)
    assert r.code == 0, r.err
    labels = pq.read_table(run["clusters"]).column("cluster").to_pylist()
    expected = statement(lp_app1(run["scores"]), labels, 25, literal)
    original = json.loads(run["data"].read_text())
    assert json.loads(target.read_text()) == [original[i] for i in expected]
    report = json.loads(Path(str(target) + ".report.json").read_text())
    assert report["ids"] == expected and report["band_literal"] == literal
    share = 100 * len(expected) / N
    assert f"{len(expected)} of {N} rows = {share:.1f} %" in " ".join(r.out.split())


@pytest.mark.parametrize("strategy", ["global", "clust_rand", "random", "trajectory"])
def test_every_strategy_writes_a_subset_of_original_rows(run: dict[str, Path], strategy: str) -> None:
    r, target = _select(run, f"strategy-{strategy}", "--strategy", strategy, "--percent", "25",
                        *(["--trajectory-k", "3"] if strategy == "trajectory" else []))
    assert r.code == 0, r.err
    original = json.loads(run["data"].read_text())
    subset = json.loads(target.read_text())
    report = json.loads(Path(str(target) + ".report.json").read_text())
    assert subset == [original[i] for i in report["ids"]] and len(set(report["ids"])) == len(subset) > 0
    if strategy == "global":
        assert report["ids"] == statement(lp_app1(run["scores"]), [0] * N, 25, "low")


def test_exact_budgets_take_the_rows_asked(run: dict[str, Path]) -> None:
    r, target = _select(run, "exact", "--percent", "25", "--exact")
    assert r.code == 0, r.err
    assert len(json.loads(target.read_text())) == 10  # round(40 * 25 / 100)
    r, target = _select(run, "n7", "--n", "7")
    assert r.code == 0, r.err
    assert len(json.loads(target.read_text())) == 7


def test_a_far_share_is_said(run: dict[str, Path]) -> None:
    r, _ = _select(run, "p40", "--percent", "40")
    assert r.code == 0
    assert "of the rows for --percent 40" in r.err and "--exact" in r.err


def test_the_report_shows_the_run_and_its_subsets(run: dict[str, Path]) -> None:
    r = run_cli("report", run["run"])
    assert r.code == 0, r.err
    assert (run["run"] / "report.html").exists()


@pytest.mark.parametrize(("args", "words"), [
    (["--metric", "lp", "--epoch", "1"], ["lp(1) is 1 for every row", "lp_app"]),
    (["--percent", "0"], ["percent"]),
    (["--percent", "150"], ["percent"]),
    (["--n", "41"], ["--n 41", "40 with a value"]),
    (["--metric", "ifd", "--epoch", "1"], ["ifd", "--ifd"]),
    (["--epoch", "2"], ["epoch"]),
])
def test_select_mistakes_get_one_line(run: dict[str, Path], args: list[str], words: list[str]) -> None:
    r, target = _select(run, "mistake", *args)
    line = r.one_line_error()
    assert all(w in line for w in words), line
    assert not target.exists()


def test_run_refuses_a_grid_that_would_overwrite_a_subset(run: dict[str, Path], tiny_model_dir: Path) -> None:
    config = run["tmp"] / "grid.yaml"
    config.write_text(f"data: {run['data']}\nout: {run['tmp'] / 'never'}\nscore:\n  model: {tiny_model_dir}\n"
                      "  epochs: 1\nselect:\n  - percents: [10]\n  - percents: [10]\n    seed: 7\n")
    line = run_cli("run", config).one_line_error()
    assert "the same subset 10_low_lp_app1" in line
    assert not (run["tmp"] / "never").exists()
