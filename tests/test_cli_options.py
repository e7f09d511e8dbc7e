"""The options of score, plan, cluster, select, train, generate, judge and eval are generated from their pydantic
configs: every field is a flag with the field's default and help, a flag's value reaches the config, and a refused
value is one line naming the flag."""

from __future__ import annotations

import pytest
import typer.main
from typer.testing import CliRunner

from lpselect.cli import app
from lpselect.cli.evaluate import EVAL_GENERATION
from lpselect.config import ClusterConfig, GenerateConfig, JudgeConfig, ScoreConfig, SubsetSpec, TrainConfig

runner = CliRunner()
# what a plan has no use for
PLAN_IGNORES = {"save_steps", "save_minutes", "keep_checkpoint", "pass_chunk_rows", "fsdp"}
COMMANDS = {  # command -> the configs whose fields are its flags
    "score": [(ScoreConfig, set(ScoreConfig.model_fields))],
    "plan": [(ScoreConfig, set(ScoreConfig.model_fields) - PLAN_IGNORES),
             (ClusterConfig, {"embedder", "max_seq_length", "embed_chunk_rows"})],
    "cluster": [(ClusterConfig, set(ClusterConfig.model_fields))],
    "select": [(SubsetSpec, set(SubsetSpec.model_fields))],
    "train": [(TrainConfig, set(TrainConfig.model_fields))],
    "generate": [(GenerateConfig, set(GenerateConfig.model_fields))],
    "judge": [(JudgeConfig, set(JudgeConfig.model_fields))],
    "eval": [(GenerateConfig, set(EVAL_GENERATION)), (JudgeConfig, set(JudgeConfig.model_fields) - {"device"})],
}


def click_options(command: str) -> dict[str, object]:
    cmd = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    return {p.name: p for p in cmd.params}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_config_field_is_a_flag_with_its_default_and_help(command):
    options = click_options(command)
    for model, names in COMMANDS[command]:
        for name in names:
            info = model.model_fields[name]
            assert info.description, f"{model.__name__}.{name} has no description: its flag would have no help"
            opt = options[name]
            flag = "--" + name.replace("_", "-")
            assert flag in opt.opts, (command, name, opt.opts)
            assert opt.default == info.default, (command, name)
            assert opt.help.rstrip(".") == info.description.rstrip("."), (command, name, opt.help)
    if command == "plan":
        assert not PLAN_IGNORES & set(options)


def test_flags_the_hand_written_options_lacked():
    """The drift that generation ends: score and train had no --max-grad-norm, cluster no --batch-size."""
    assert "--max-grad-norm" in click_options("score")["max_grad_norm"].opts
    assert "--max-grad-norm" in click_options("train")["max_grad_norm"].opts
    assert "--batch-size" in click_options("cluster")["batch_size"].opts
    assert "--max-seq-length" in click_options("cluster")["max_seq_length"].opts


def test_values_reach_the_config(monkeypatch, tmp_path):
    seen = {}

    def fake_score(data, out, config, **kw):
        seen["config"] = config
        raise SystemExit(0)

    monkeypatch.setattr("lpselect.steps.score.score", fake_score)
    data = tmp_path / "d.json"
    data.write_text("[]")
    r = runner.invoke(app, ["score", "--data", str(data), "--out", str(tmp_path / "r"), "--max-grad-norm", "0.25",
                            "--lr", "0.001", "--truncation", "right", "--ifd", "--max-tokens-per-micro-batch", "0",
                            "--lora", "--lora-r", "4", "--precision", "fp32"])
    assert r.exit_code == 0, r.output
    cfg = seen["config"]
    assert isinstance(cfg, ScoreConfig)
    assert (cfg.max_grad_norm, cfg.lr, cfg.truncation, cfg.ifd, cfg.max_tokens_per_micro_batch, cfg.lora,
            cfg.lora_r, cfg.precision) == (0.25, 0.001, "right", True, 0, True, 4, "fp32")
    untouched = {k: v for k, v in cfg.model_dump().items()
                 if k not in {"max_grad_norm", "lr", "truncation", "ifd", "max_tokens_per_micro_batch", "lora",
                              "lora_r", "precision"}}
    assert untouched == {k: v for k, v in ScoreConfig().model_dump().items() if k in untouched}


@pytest.mark.parametrize(("args", "message"), [
    (["--lr", "-1"], "--lr: Input should be greater than 0"),
    (["--batch-size", "0"], "--batch-size: Input should be greater than or equal to 1"),
    (["--fsdp", "--lora"], "--fsdp with --lora is not supported yet"),
])
def test_a_refused_value_is_one_line_naming_the_flag(tmp_path, args, message):
    data = tmp_path / "d.json"
    data.write_text("[]")
    r = runner.invoke(app, ["score", "--data", str(data), "--out", str(tmp_path / "r"), *args])
    assert r.exit_code == 2
    assert message in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output


def test_a_choice_outside_the_literal_is_refused_by_the_parser(tmp_path):
    r = runner.invoke(app, ["cluster", "--data", str(tmp_path / "d.json"), "--out", str(tmp_path), "--kmeans", "x"])
    assert r.exit_code == 2 and "'x' is not one of" in r.output and "'minibatch'" in r.output


def test_eval_passes_both_configs_on_and_the_local_judge_runs_on_the_generation_device(monkeypatch, tmp_path):
    """eval stacks two generated configs: the generation settings reach evaluate_models, the judge settings
    the judge (with --device, which the two share), and --parse-retries the judging."""
    seen = {}

    def fake_backend(cfg, judge_model):
        seen["judge"] = (judge_model, cfg)
        return object()

    def fake_evaluate(a, b, chat, out, generation, **kw):
        seen["generation"], seen["kw"] = generation, kw
        raise SystemExit(0)

    monkeypatch.setattr("lpselect.evaluate.judge.build_judge", fake_backend)
    monkeypatch.setattr("lpselect.evaluate.pipeline.evaluate_models", fake_evaluate)
    r = runner.invoke(app, ["eval", "--a", "ma", "--b", "mb", "--judge-model", "j", "--out", str(tmp_path / "e"),
                            "--backend", "local", "--device", "cpu", "--limit", "3", "--batch-size", "2",
                            "--max-tokens", "64", "--parse-retries", "0", "--concurrency", "7",
                            "--testsets", "vicuna"])
    assert r.exit_code == 0, r.output
    name, judging = seen["judge"]
    assert name == "j" and isinstance(judging, JudgeConfig)
    assert (judging.backend, judging.device, judging.max_tokens) == ("local", "cpu", 64)
    g = seen["generation"]
    assert isinstance(g, GenerateConfig)
    assert (g.device, g.limit, g.batch_size, g.testsets, g.temperature) == ("cpu", 3, 2, "vicuna", 0.0)
    assert seen["kw"]["concurrency"] == 7 and seen["kw"]["parse_retries"] == 0


@pytest.mark.parametrize(("command", "args", "message"), [
    ("generate", ["--model", "m", "--out", "a.jsonl", "--limit", "0"], "--limit: Input should be greater than or"),
    ("generate", ["--model", "m", "--out", "a.jsonl", "--temperature", "-1"], "--temperature: Input should be"),
    ("judge", ["--a", "a", "--b", "b", "--judge-model", "j", "--out", "r.jsonl", "--concurrency", "0"],
     "--concurrency: Input should be greater than or equal to 1"),
])
def test_generate_and_judge_refuse_a_bad_value_in_one_line(command, args, message):
    r = runner.invoke(app, [command, *args])
    assert r.exit_code == 2 and message in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1, r.output
