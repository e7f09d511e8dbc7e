"""Journeys: what a person reads. A result line piped into grep is one line, however long (rich used to break it
at 80 columns, ``left \\nout``), and ``--help`` at 80 columns shows whole flag names and examples."""

from __future__ import annotations

import re

from _journey import run_cli, tiny_score_args, write_jsonl
from conftest import alpaca_rows


def test_piped_result_lines_are_not_wrapped(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "data.jsonl", alpaca_rows(12))
    deep = tmp_path / "a-rather-long-folder-name-for-runs" / "another-level-of-nesting" / "scorer-run-one"
    narrow = {"COLUMNS": "80"}  # what a narrow terminal exports; the output itself is a pipe
    r = run_cli("score", "--data", data, "--out", deep, *tiny_score_args(tiny_model_dir, epochs=1), env=narrow)
    assert r.code == 0, r.err
    scores = deep / "scores.parquet"
    line = next(x for x in r.out.splitlines() if x.startswith("scores: "))
    assert line == (f"scores: {scores}  (12 rows, 0 without a score, 0 truncated, 0 with a shortened prompt, "
                    "0 with an empty output, 0 duplicates of an earlier row)"), r.out
    assert len(line) > 80

    subset = deep / "subsets" / "hardest-ten-percent-by-learning-percentage-global.jsonl"
    r = run_cli("select", "--data", data, "--scores", scores, "--strategy", "global", "--out", subset, env=narrow)
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert any(x.startswith(f"subset: {subset}  (") and x.endswith(" without a score left out)") for x in lines), r.out
    assert f"report: {subset}.report.json" in lines, r.out


def test_help_in_a_pipe_at_80_columns():
    r = run_cli("score", "--help", env={"COLUMNS": "80"})
    assert r.code == 0, r.err
    assert max(len(x) for x in r.out.splitlines()) <= 80
    assert not re.search(r"--[\w-]*…", r.out)
    for flag in ("--schedule-epochs", "--gradient-checkpointing", "--max-tokens-per-micro-batch",
                 "--lora-target-modules"):
        assert flag in r.out
    tail = r.out[r.out.rindex("╰"):].splitlines()
    assert "Examples:" in [x.strip() for x in tail]
    assert [x.strip() for x in tail if x.strip().startswith("lpselect score")]
