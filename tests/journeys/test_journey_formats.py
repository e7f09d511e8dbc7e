"""Each input shape and file type (docs/method.md §2) walks score -> cluster -> select (chat: test_journey_chat.py), and
the subset is written back in the input's own shape and file type; a shape that cannot be told is refused in one
line."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _journey import run_cli, tiny_score_args, write_json, write_jsonl
from conftest import alpaca_rows


def dolly_rows(n: int) -> list[dict]:
    return [{"instruction": f"Who wrote book {i}?", "context": "" if i % 2 else f"Book {i} is old.",
             "response": f"Author {i}." + " Really." * (i % 3), "category": "open_qa" if i % 2 else "closed_qa"}
            for i in range(n)]


def sharegpt_rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        turns = [{"from": "human", "value": f"Add {i} and 3."}, {"from": "gpt", "value": f"It is {i + 3}."}]
        if i % 2:
            turns = [{"from": "system", "value": "Be brief."}, *turns, {"from": "human", "value": "Doubled?"},
                     {"from": "gpt", "value": f"It is {2 * (i + 3)}." + " Yes." * (i % 3)}]
        rows.append({"conversations": turns, "id": f"conv-{i}"})
    return rows


def prompt_completion_rows(n: int) -> list[dict]:
    return [{"prompt": f"Name fox number {i}.", "completion": "The quick brown fox " * (1 + i % 4), "tag": i}
            for i in range(n)]


def conversational_prompt_completion_rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        prompt = [{"role": "user", "content": f"Count to {i}."}]
        if i % 2:
            prompt += [{"role": "assistant", "content": " ".join(map(str, range(i)))},
                       {"role": "user", "content": "Backwards?"}]
        rows.append({"prompt": prompt, "completion": [{"role": "assistant",
                                                        "content": " ".join(map(str, range(i, -1, -1)))}]})
    return rows


FORMATS = {
    "alpaca.jsonl": alpaca_rows,
    "alpaca.parquet": alpaca_rows,
    "dolly.csv": dolly_rows,
    "sharegpt.json": sharegpt_rows,
    "prompt_completion.jsonl": prompt_completion_rows,
    "prompt_completion_messages.jsonl": conversational_prompt_completion_rows,
}


def write_rows(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".csv":
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        return path
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
        return path
    return (write_json if path.suffix == ".json" else write_jsonl)(path, rows)


def read_rows(path: Path) -> list[dict]:
    if path.suffix == ".csv":
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    text = path.read_text()
    return json.loads(text) if path.suffix == ".json" else [json.loads(line) for line in text.splitlines()]


@pytest.mark.parametrize("name", list(FORMATS))
def test_format_walks_score_cluster_select(name: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    rows = FORMATS[name](8)
    data = write_rows(tmp_path / name, rows)
    run = tmp_path / "run"
    scored = run_cli("score", "--data", data, "--out", run, *tiny_score_args(tiny_model_dir, epochs=1))
    assert scored.code == 0, scored.err
    assert "0 without a score" in " ".join(scored.out.split())
    clustered = run_cli("cluster", "--data", data, "--out", run, "--k", 2, "--min-cluster-size", 1, "--quiet")
    assert clustered.code == 0, clustered.err

    subset = tmp_path / ("subset" + data.suffix)
    selected = run_cli("select", "--data", data, "--scores", run / "scores.parquet", "--clusters",
                       run / "clusters.parquet", "--out", subset, "--percent", 50)
    assert selected.code == 0, selected.err
    got = read_rows(subset)  # in the input's own file type and shape, every field kept
    n_said = int(re.search(r"\((\d+) of 8 rows", " ".join(selected.out.split())).group(1))
    assert len(got) == n_said > 0
    ids = [rows.index(r) for r in got]
    assert len(set(ids)) == len(ids)

    # and the global lowest half by LP_app(1), restated from P0 and P1
    half = tmp_path / ("half" + data.suffix)
    assert run_cli("select", "--data", data, "--scores", run / "scores.parquet", "--out", half, "--metric",
                   "lp_app", "--epoch", 1, "--band", "low", "--strategy", "global", "--percent", 50).code == 0
    table = pq.read_table(run / "scores.parquet").to_pydict()
    p0, p1 = np.array(table["ppl_0"]), np.array(table["ppl_1"])
    expected = sorted(np.argsort((p0 - p1) / p0, kind="stable")[:4].tolist())
    assert sorted(rows.index(r) for r in read_rows(half)) == expected


def test_a_shape_that_cannot_be_told_gets_one_line(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "qa.jsonl", [{"question": "Hi", "answer": "Yo"}])
    line = run_cli("cluster", "--data", data, "--out", tmp_path / "run").one_line_error()
    for shape in ("qa.jsonl", "Alpaca", "Dolly", "messages", "ShareGPT", "prompt/completion", "--fields"):
        assert shape in line, shape
