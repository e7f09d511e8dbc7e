"""Chat data (OpenAI ``messages`` rows) through score -> cluster -> select -> report -> train, and ``run``.

Every ``messages`` file used to crash ``score`` (``unhashable type: 'dict'`` while counting duplicate rows).
The subset must hold the original rows, every field kept, and exactly the ids an independent statement of the
selection rule names.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from _journey import run_cli, tiny_score_args, write_jsonl


def chat_rows(n: int = 12) -> list[dict]:
    """Single-turn rows, and two-turn rows with and without a system turn; an extra field on every row."""
    rows = []
    for i in range(n):
        if i % 3 == 0:
            turns = [("system", "Be brief."), ("user", f"Add {i} and 3."), ("assistant", f"It is {i + 3}."),
                     ("user", "And doubled?"), ("assistant", f"It is {2 * (i + 3)}." + " Yes." * (i % 4))]
        elif i % 3 == 1:
            turns = [("user", f"Name fox number {i}."), ("assistant", "The quick brown fox " * (1 + i % 4))]
        else:
            turns = [("user", f"Count to {i}."), ("assistant", " ".join(str(k) for k in range(i))),
                     ("user", "Backwards?"), ("assistant", " ".join(str(k) for k in range(i, 0, -1)))]
        rows.append({"messages": [{"role": r, "content": c} for r, c in turns], "source": f"row-{i}"})
    return rows


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_chat_file_walks_score_cluster_select_report_train(tiny_model_dir: Path, tmp_path: Path) -> None:
    rows = chat_rows()
    data = write_jsonl(tmp_path / "chat.jsonl", rows)
    run = tmp_path / "run"

    scored = run_cli("score", "--data", data, "--out", run, *tiny_score_args(tiny_model_dir))
    assert scored.code == 0, scored.err
    assert "0 without a score" in " ".join(scored.out.split())
    clustered = run_cli("cluster", "--data", data, "--out", run, "--k", 2, "--min-cluster-size", 1, "--quiet")
    assert clustered.code == 0, clustered.err

    # global strategy, lowest half by LP_app(1): restated here from P0 and P1 alone
    subset = run / "subsets" / "half.jsonl"
    selected = run_cli("select", "--data", data, "--scores", run / "scores.parquet", "--out", subset,
                       "--metric", "lp_app", "--epoch", 1, "--band", "low", "--strategy", "global",
                       "--percent", 50)
    assert selected.code == 0, selected.err
    table = pq.read_table(run / "scores.parquet").to_pydict()
    p0, p1 = np.array(table["ppl_0"]), np.array(table["ppl_1"])
    assert np.array(table["id"]).tolist() == list(range(12))
    expected_ids = sorted(np.argsort((p0 - p1) / p0, kind="stable")[:6].tolist())
    got = read_jsonl(subset)  # rows.index: each line must equal an original row, every field kept
    assert sorted(rows.index(r) for r in got) == expected_ids

    # the default clustered selection writes original rows too
    per_cluster = run_cli("select", "--data", data, "--scores", run / "scores.parquet", "--clusters",
                          run / "clusters.parquet", "--out", run / "subsets" / "clustered.jsonl", "--percent", 50)
    assert per_cluster.code == 0, per_cluster.err
    clustered_rows = read_jsonl(run / "subsets" / "clustered.jsonl")
    assert clustered_rows and all(r in rows for r in clustered_rows)
    assert len({r["source"] for r in clustered_rows}) == len(clustered_rows)

    reported = run_cli("report", run)
    assert reported.code == 0, reported.err
    page = (run / "report.html").read_text()
    for r in rows:  # 12 rows: the 10 hardest and 10 easiest show every one, by its first question
        assert html.escape(next(m["content"] for m in r["messages"] if m["role"] == "user")) in page

    trained = run_cli("train", "--data", subset, "--out", tmp_path / "model", "--model", tiny_model_dir,
                      "--max-steps", 2, "--batch-size", 2, "--grad-accum", 1, "--precision", "fp32",
                      "--device", "cpu", "--quiet")
    assert trained.code == 0, trained.err
    assert (tmp_path / "model" / "model.safetensors").exists()


def test_chat_file_through_run_config(tiny_model_dir: Path, tmp_path: Path) -> None:
    rows = chat_rows()
    write_jsonl(tmp_path / "chat.jsonl", rows)
    config = tmp_path / "run.yaml"
    config.write_text(
        "data: chat.jsonl\nout: run\n"
        f"score: {{model: {json.dumps(str(tiny_model_dir))}, epochs: 2, batch_size: 2, grad_accum: 2, lr: 1.0e-3,"
        " precision: fp32, device: cpu}\n"
        "cluster: {k: 2, min_cluster_size: 1}\n"
        "select:\n  - {metrics: [lp], epochs: [1], percents: [50], bands: [low]}\n")
    ran = run_cli("run", config, "--quiet", cwd=tmp_path)  # a new ``out`` is resolved against the working dir
    assert ran.code == 0, ran.err
    written = sorted((tmp_path / "run" / "subsets").glob("*.jsonl"))
    subsets = [p for p in written if not json.loads(Path(f"{p}.report.json").read_text())["baseline_of"]]
    assert len(subsets) == 1 and len(written) == 3  # and its random and clust_rand baselines
    got = read_jsonl(subsets[0])
    assert len(got) == 6 and all(r in rows for r in got)
    assert (tmp_path / "run" / "report.html").exists()
