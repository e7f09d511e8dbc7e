"""Journey: ``lpselect show RUN`` (issue 22 item 5) on a tiny scored and clustered run: the hardest and easiest
rows overall and per cluster, each one line with id, metric, instruction and response, never wider than 120
columns when piped. The ids are checked against a plain-Python statement of the ranking."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from _journey import run_cli, score_and_cluster, write_json

N = 24
LINE = re.compile(r"^\s*(\d+)\s+(-?\d+\.\d{4}|nan)\s+(.*)$")


def rows() -> list[dict[str, str]]:
    return [{"instruction": f"Question number {i}: what is {i} plus {i}?" + " Think hard." * (i % 4),
             "input": "", "output": f"It is {2 * i}." + " Indeed, quite sure of it." * (i % 6)} for i in range(N)]


def lp_app1(scores: Path) -> list[float]:
    """docs/method.md §6: LP_app(1) = (P0 - P1) / P0."""
    t = pq.read_table(scores).to_pydict()
    return [(a - b) / a for a, b in zip(t["ppl_0"], t["ppl_1"], strict=True)]


def ends(values: list[float], k: int, members: list[int]) -> tuple[list[int], list[int]]:
    """LP_app's hard end is low: sort by (value, id); hardest = first k, easiest = last k reversed."""
    order = sorted((i for i in members if not math.isnan(values[i])), key=lambda i: (values[i], i))
    return order[:k], order[::-1][:k]


def blocks(out: str) -> dict[str, list[tuple[int, float, str]]]:
    """The printed rows under each title line ('hardest 3', 'cluster 0 (...): hardest 3', ...)."""
    found: dict[str, list[tuple[int, float, str]]] = {}
    title = None
    for line in out.splitlines():
        m = LINE.match(line)
        if m and title is not None:
            found[title].append((int(m.group(1)), float(m.group(2)), m.group(3)))
        elif "hardest" in line or "easiest" in line:
            title = line.split(" (")[0] + (":" + line.rsplit(":", 1)[-1] if " (" in line else "")
            title = " ".join(title.split())
            found[title] = []
    return found


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("show-journey")
    data = write_json(tmp / "qa.json", rows())
    out = score_and_cluster(data, tmp / "run", tiny_model_dir, k=2)
    return {"data": data, "run": out, "tmp": tmp}


def test_show_prints_the_hardest_and_easiest_rows_with_their_text(run: dict[str, Path]) -> None:
    r = run_cli("show", run["run"], "--k", "3", "--per-cluster")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert all(len(line) <= 120 for line in lines), max(lines, key=len)
    assert lines[0].startswith("lp_app(1) (hardest = lowest), 24 rows of ")  # one epoch: lp_app by default
    values = lp_app1(run["run"] / "scores.parquet")
    labels = pq.read_table(run["run"] / "clusters.parquet").column("cluster").to_pylist()
    got = blocks(r.out)
    hard, easy = ends(values, 3, list(range(N)))
    assert [i for i, _, _ in got["hardest 3"]] == hard
    assert [i for i, _, _ in got["easiest 3"]] == easy
    data = rows()
    for i, value, text in got["hardest 3"] + got["easiest 3"]:
        assert value == pytest.approx(values[i], abs=5e-5)
        question, _, answer = text.partition("  →  ")
        assert data[i]["instruction"].startswith(question.rstrip("…"))
        assert answer and " ".join(data[i]["output"].split()).startswith(answer.rstrip("…"))
    for c in sorted(set(labels)):
        members = [i for i in range(N) if labels[i] == c]
        c_hard, c_easy = ends(values, 3, members)
        assert [i for i, _, _ in got[f"cluster {c}: hardest 3"]] == c_hard
        assert [i for i, _, _ in got[f"cluster {c}: easiest 3"]] == c_easy
    assert lines[-1] == "0 rows without a lp_app(1) value (NaN) left out" or "note:" in lines[-1]


def test_show_one_cluster_another_metric_and_mistakes(run: dict[str, Path]) -> None:
    r = run_cli("show", run["run"], "--cluster", "1", "--metric", "ppl", "--epoch", "1", "--k", "2")
    assert r.code == 0, r.err
    ppl1 = pq.read_table(run["run"] / "scores.parquet").column("ppl_1").to_pylist()
    labels = pq.read_table(run["run"] / "clusters.parquet").column("cluster").to_pylist()
    members = sorted((i for i in range(N) if labels[i] == 1), key=lambda i: (ppl1[i], i))
    got = blocks(r.out)
    assert "hardest 2" not in got  # --cluster: only that cluster
    assert [i for i, _, _ in got["cluster 1: hardest 2"]] == members[::-1][:2]  # ppl: the hard end is high
    assert [i for i, _, _ in got["cluster 1: easiest 2"]] == members[:2]
    assert "cluster 0" not in r.out
    assert "--cluster 9" in run_cli("show", run["run"], "--cluster", "9").one_line_error()
    moved = run["tmp"] / "elsewhere.json"
    write_json(moved, list(reversed(rows())))
    line = run_cli("show", run["run"], "--data", moved).one_line_error()
    assert "is not the data" in line and "elsewhere.json" in line
