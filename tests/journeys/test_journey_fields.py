"""Journey: a file with its own column names (question/answer) through score -> cluster -> select -> show with
``--fields`` (issue 22 item 1): the mapping is recorded in the run, so select and show read the file alike
without it; the subset keeps the file's own columns; a mapping to a column the file lacks is one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow.parquet as pq
from _journey import run_cli, tiny_score_args, write_jsonl

N = 20
FIELDS = "instruction=question,output=answer"


def rows() -> list[dict[str, str]]:
    return [{"id_str": f"q{i}", "question": f"What is {i} times three?" + " Show your work." * (i % 3),
             "answer": f"{3 * i}." + " Because three times it." * (i % 4)} for i in range(N)]


def test_fields_reach_every_reader_and_the_subset_keeps_the_columns(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = write_jsonl(tmp_path / "qa.jsonl", rows())
    out = tmp_path / "run"
    r = run_cli("score", "--data", data, "--out", out, "--fields", FIELDS, *tiny_score_args(tiny_model_dir, 1))
    assert r.code == 0, r.err
    r = run_cli("cluster", "--data", data, "--out", out, "--fields", FIELDS, "--k", "2", "--min-cluster-size", "1",
                "--quiet")
    assert r.code == 0, r.err
    manifest = json.loads((out / "manifest.json").read_text())
    for step in ("score", "cluster"):
        assert manifest["steps"][step]["inputs"]["data"]["fields"] == {"instruction": "question", "output": "answer"}

    subset = tmp_path / "hard.jsonl"  # no --fields: the mapping the scores' run recorded is used
    r = run_cli("select", "--data", data, "--scores", out / "scores.parquet", "--clusters", out / "clusters.parquet",
                "--out", subset, "--metric", "lp_app", "--percent", "25", "--strategy", "global")
    assert r.code == 0, r.err
    t = pq.read_table(out / "scores.parquet").to_pydict()
    lp = [(a - b) / a for a, b in zip(t["ppl_0"], t["ppl_1"], strict=True)]
    expected = sorted((i for i in range(N) if not math.isnan(lp[i])), key=lambda i: (lp[i], i))[:5]  # 100/25 parts
    written = [json.loads(line) for line in subset.read_text().splitlines()]
    assert written == [rows()[i] for i in expected]  # the file's own columns, untouched
    report = json.loads(Path(str(subset) + ".report.json").read_text())
    assert report["fields"] == {"instruction": "question", "output": "answer"}

    r = run_cli("show", out, "--k", "2")  # reads the data with the recorded mapping
    assert r.code == 0, r.err
    assert f"What is {expected[0]} times three?" in r.out

    # a changed mapping on the same file is a changed input, not a silent resume
    changed = run_cli("cluster", "--data", data, "--out", out, "--fields", "instruction=answer,output=question",
                      "--k", "2", "--min-cluster-size", "1", "--quiet").one_line_error()
    assert "--fields instruction=answer" in changed


def test_a_wrong_mapping_or_no_mapping_is_one_line(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "qa.jsonl", rows())
    line = run_cli("cluster", "--data", data, "--out", tmp_path / "run", "--fields", "instruction=question,"
                   "output=reply").one_line_error()
    assert str(data) in line and "row 0" in line and "'reply'" in line
    line = run_cli("cluster", "--data", data, "--out", tmp_path / "run2").one_line_error()
    assert "--fields output=answer,instruction=question" in line and "ShareGPT" in line
    line = run_cli("cluster", "--data", data, "--out", tmp_path / "run3", "--fields", "answer=output").one_line_error()
    assert "answer is not a field name" in line


def test_run_takes_fields_as_a_yaml_key(tmp_path: Path, tiny_model_dir: Path) -> None:
    write_jsonl(tmp_path / "qa.jsonl", rows())
    config = tmp_path / "run.yaml"
    config.write_text(f"data: qa.jsonl\nout: run\nfields: {{instruction: question, output: answer}}\n"
                      f"score: {{model: {tiny_model_dir}, epochs: 1, batch_size: 2, grad_accum: 2, lr: 0.001, "
                      "precision: fp32, device: cpu}\ncluster: {k: 2, min_cluster_size: 1}\n"
                      "select: [{metrics: [lp_app], percents: [25], strategy: global}]\n")
    r = run_cli("run", config, "--quiet")
    assert r.code == 0, r.err
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["steps"]["score"]["inputs"]["data"]["fields"] == {"instruction": "question", "output": "answer"}
    (subset,) = [p for p in (tmp_path / "run" / "subsets").glob("*.jsonl")
                 if not p.name.endswith((".random.jsonl", ".clust_rand.jsonl"))]  # not the baselines beside it
    assert set(json.loads(subset.read_text().splitlines()[0])) == {"id_str", "question", "answer"}
    assert "What is" in (tmp_path / "run" / "report.html").read_text()  # the report read the rows' text
    config.write_text("data: qa.jsonl\nout: run2\nfields: {answer: output}\n")
    assert "answer is not a field name" in run_cli("run", config).one_line_error()
