"""`lpselect eval`: generate both models' answers, judge them against a local chat-completions server, tally."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_judge import completion, server  # noqa: F401  (the fixture)
from typer.testing import CliRunner

from lpselect.cli import app
from lpselect.config import GenerateConfig


def _testsets(folder: Path) -> Path:
    folder.mkdir()
    (folder / "vicuna_test_set.jsonl").write_text(
        "".join(json.dumps({"question_id": i, "text": f"Question {i}?"}) + "\n" for i in range(1, 4)))
    (folder / "koala_test_set.jsonl").write_text(
        "".join(json.dumps({"id": f"k{i}", "prompt": f"Prompt {i}."}) + "\n" for i in range(2)))
    return folder


def _negate_lm_head(folder: Path) -> None:
    """Identical models give identical answers, so both orders of a question would be one prompt and the judge
    cache could answer the second (or not, depending on timing)."""
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    state = load_file(path)
    state["lm_head.weight"] = -state["lm_head.weight"]
    save_file(state, path, metadata={"format": "pt"})


def test_eval_end_to_end(server, tiny_model_dir: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: F811
    fake, url = server
    # grade answer 1 higher than answer 2 in every request: each order favours a different model -> all ties
    fake.respond = lambda body, n: (200, {}, completion("8 6\nfirst is better"), 0.0)
    monkeypatch.setenv("TEST_JUDGE_KEY", "k-123")
    a, b = tmp_path / "model-a", tmp_path / "model-b"
    shutil.copytree(tiny_model_dir, a)
    shutil.copytree(tiny_model_dir, b)
    _negate_lm_head(b)  # B's first answer token is A's least likely one: the two orders are different prompts
    out = tmp_path / "eval"
    args = ["eval", "--a", str(a), "--b", str(b), "--judge-model", "judge-x", "--base-url", url,
            "--api-key-env", "TEST_JUDGE_KEY", "--out", str(out), "--testsets", "vicuna,koala",
            "--testset-dir", str(_testsets(tmp_path / "ts")), "--max-new-tokens", "3", "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    tally = json.loads((out / "winrate.json").read_text())
    assert tally["overall"]["n"] == 5 and tally["overall"]["ties"] == 5 and tally["overall"]["wr"] == 1.0
    assert tally["per_testset"]["vicuna"]["n"] == 3 and tally["per_testset"]["koala"]["n"] == 2
    assert len(fake.requests) == 10  # 5 questions x 2 orders
    assert len({json.dumps(r["body"], sort_keys=True) for r in fake.requests}) == 10  # ten different prompts
    assert (out / "winrate.png").stat().st_size > 1000
    # a second run reuses the answers and the judge cache: no new request
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert len(fake.requests) == 10


class _PrefersB:
    """A judge backend in-process: grades the answer that came from model B (negated head) 9, the other 3."""

    deterministic = True

    def __init__(self, b_answers: set[str]) -> None:
        self.b_answers = b_answers
        self.calls = 0

    def identity(self) -> dict[str, str]:
        return {"kind": "test", "model": "prefers-b"}

    def complete(self, messages: list[dict[str, str]]) -> str:
        self.calls += 1
        user = messages[-1]["content"]
        first = user.split("Candidate answer 1:")[1].split("Candidate answer 2:")[0]
        return "9 3" if any(ans and ans in first for ans in self.b_answers) else "3 9"


def test_evaluate_models_python_api(tiny_model_dir: Path, tmp_path: Path) -> None:
    from lpselect.evaluate.pipeline import evaluate_models
    from lpselect.runs.io import jsonl_objects

    a, b = tmp_path / "model-a", tmp_path / "model-b"
    shutil.copytree(tiny_model_dir, a)
    shutil.copytree(tiny_model_dir, b)
    _negate_lm_head(b)
    ts = _testsets(tmp_path / "ts")
    out = tmp_path / "eval"
    from lpselect.evaluate.generate import generate_answers, load_testsets

    b_answers = {row["answer"] for _, row in jsonl_objects(generate_answers(
        b, tmp_path / "probe.jsonl", GenerateConfig(max_new_tokens=3), questions=load_testsets("vicuna", ts),
        progress=False).out_path)}
    judge = _PrefersB(b_answers)
    r = evaluate_models(a, b, judge, out, GenerateConfig(testsets="vicuna", testset_dir=ts, max_new_tokens=3),
                        progress=False)
    assert r.answers_a == out / "answers_a.jsonl" and r.answers_b.exists()
    assert judge.calls == 6  # 3 questions x 2 orders
    overall = json.loads(r.winrate_json.read_text())["overall"]
    assert (overall["wins"], overall["ties"], overall["losses"], overall["n"]) == (0, 0, 3, 3)  # B wins each
    assert overall["wr"] == 0.0 and r.winrate_png.stat().st_size > 1000


def test_load_testsets_finds_its_folder_or_says_where_to_point_it(tmp_path: Path, monkeypatch) -> None:
    from lpselect.errors import LPSelectError
    from lpselect.evaluate.generate import load_testsets

    ts = _testsets(tmp_path / "ts")
    monkeypatch.chdir(tmp_path)  # no ../shared/data/testsets from here
    monkeypatch.delenv("LPSELECT_TESTSET_DIR", raising=False)
    with pytest.raises(LPSelectError, match="no test-set folder: pass --testset-dir"):
        load_testsets("vicuna")
    monkeypatch.setenv("LPSELECT_TESTSET_DIR", str(ts))
    assert [str(q.id) for q in load_testsets("vicuna", limit=2)] == ["1", "2"]  # the folder from the environment
    with pytest.raises(LPSelectError, match="limit must be at least 1"):
        load_testsets("vicuna", ts, limit=0)


def test_answers_are_keyed_on_the_model_not_its_folder_name(tiny_model_dir: Path, tmp_path: Path) -> None:
    """runs/x/final and runs/y/final share the label 'final': the answers of one are never taken for the
    other's (it said '0 written, 6 already there'), nor those of a model trained again into the same folder."""
    from lpselect.errors import LPSelectError
    from lpselect.evaluate.generate import generate_answers, load_testsets

    x, y = tmp_path / "runs" / "x" / "final", tmp_path / "runs" / "y" / "final"
    shutil.copytree(tiny_model_dir, x)
    shutil.copytree(tiny_model_dir, y)
    _negate_lm_head(y)
    qs = load_testsets(["vicuna", "koala"], _testsets(tmp_path / "ts"))
    out = tmp_path / "answers.jsonl"
    first = generate_answers(x, out, GenerateConfig(max_new_tokens=2), questions=qs, progress=False)
    assert first.n_written == 5
    text = out.read_text()
    with pytest.raises(LPSelectError, match=f"other settings.*model_path.*{x.resolve()}.*{y.resolve()}"):
        generate_answers(y, out, GenerateConfig(max_new_tokens=2), questions=qs, progress=False)
    assert out.read_text() == text
    again = generate_answers(x, out, GenerateConfig(max_new_tokens=2), questions=qs, progress=False)
    assert again.n_skipped == 5  # x itself resumes

    _negate_lm_head(x)  # trained again into the same folder: other weights
    with pytest.raises(LPSelectError, match=r"other settings \(weights"):
        generate_answers(x, out, GenerateConfig(max_new_tokens=2), questions=qs, progress=False)


def test_a_copied_model_folder_has_the_same_weights_fingerprint(tiny_model_dir, tmp_path):
    """The fingerprint reads the weight files' bytes, not their dates: a copy (rsync, cp) is the same model."""
    import os

    from lpselect.evaluate.generate import _weights_fingerprint

    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    for f in copy.iterdir():
        os.utime(f, (1, 1))  # other modification times
    assert _weights_fingerprint(copy) == _weights_fingerprint(tiny_model_dir) is not None
    _negate_lm_head(copy)
    assert _weights_fingerprint(copy) != _weights_fingerprint(tiny_model_dir)
