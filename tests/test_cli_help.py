"""``--help`` a person can read at 80 columns: every command's flags are whole (rich cuts a name that does not fit
its column to ``--schedule-epoc…``), grouped in panels, and the help ends with examples."""

from __future__ import annotations

import re
from typing import get_args

import click
import pytest
import typer.main
from typer.testing import CliRunner

from lpselect.cli import app
from lpselect.cli.config_options import FINE_TUNE_PANELS, PANEL_ORDER, choices_metavar
from lpselect.config import (
    ClusterConfig,
    FineTuneSettings,
    GenerateConfig,
    JudgeConfig,
    ScoreConfig,
    SubsetSpec,
    TrainConfig,
)

runner = CliRunner()


def walk(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    """Every command under ``group``, nested groups included, with the words that call it."""
    found = []
    for name, cmd in group.commands.items():
        found.append(((*path, name), cmd))
        if isinstance(cmd, click.Group):
            found += walk(cmd, (*path, name))
    return found


COMMANDS = walk(typer.main.get_command(app))  # type: ignore[arg-type]


def help_at_80(words: tuple[str, ...]) -> str:
    r = runner.invoke(app, [*words, "--help"], env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"}, terminal_width=80)
    assert r.exit_code == 0, r.output
    return r.output


def test_the_walk_finds_the_commands():
    names = {" ".join(w) for w, _ in COMMANDS}
    assert {"score", "plan", "cluster", "select", "run", "train", "generate", "judge", "eval", "winrate", "compare",
            "report", "env"} <= names


@pytest.mark.parametrize("words", [w for w, _ in COMMANDS], ids=" ".join)
def test_no_flag_is_cut_at_80_columns(words):
    cmd = dict(COMMANDS)[words]
    text = help_at_80(words)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, "\n".join(line for line in lines if len(line) > 80)
    cut = re.findall(r"--[\w-]*…", text)
    assert not cut, cut
    tokens = set(re.findall(r"--[\w-]+", text))
    for p in cmd.params:
        if isinstance(p, click.Option) and not p.hidden:
            for flag in [*p.opts, *p.secondary_opts]:
                if flag.startswith("--"):
                    assert flag in tokens, f"{' '.join(words)}: {flag} is not whole in\n{text}"


@pytest.mark.parametrize("words", [w for w, _ in COMMANDS], ids=" ".join)
def test_help_ends_with_examples(words):
    """Two or three example lines, each on its own line, after every option panel."""
    text = help_at_80(words)
    last_panel = text.rindex("╰")
    tail = text[last_panel:].splitlines()[1:]
    assert any(line.strip() == "Examples:" for line in tail), f"{' '.join(words)} has no examples at the end:\n{text}"
    examples = [line.strip() for line in tail if line.strip().startswith("lpselect ")]
    assert 2 <= len(examples) <= 3, tail
    assert all(e.startswith("lpselect " + " ".join(words)) for e in examples), examples


def test_score_help_is_in_panels_in_order():
    text = help_at_80(("score",))
    titles = re.findall(r"╭─ (\w+) ─", text)
    assert titles == ["Options", "Data", "Model", "Training", "Scoring", "LoRA", "Parallelism", "Output"]
    panel_of = {}
    for block in text.split("╭─ ")[1:]:
        title = block.split(" ", 1)[0]
        for flag in re.findall(r"^│ {1,4}(?:\* +)?(--[\w-]+)", block, re.M):
            panel_of[flag] = title
    assert panel_of["--data"] == panel_of["--max-length"] == panel_of["--fields"] == "Data"
    assert panel_of["--lr"] == panel_of["--epochs"] == panel_of["--seeds"] == "Training"
    assert panel_of["--ifd"] == panel_of["--max-tokens-per-batch"] == "Scoring"
    assert panel_of["--out"] == panel_of["--save-steps"] == panel_of["--quiet"] == "Output"
    assert panel_of["--fsdp"] == panel_of["--device"] == "Parallelism"
    assert panel_of["--model"] == panel_of["--precision"] == "Model"
    assert panel_of["--lora-r"] == "LoRA"


def test_every_fine_tuning_setting_has_a_panel():
    """A new setting must say where its flag goes, or it would land in the catch-all 'Options' panel."""
    named = {n for names in FINE_TUNE_PANELS.values() for n in names}
    fields = set(FineTuneSettings.model_fields) | set(ScoreConfig.model_fields) | set(TrainConfig.model_fields)
    assert fields == named
    assert set(FINE_TUNE_PANELS) <= set(PANEL_ORDER)


def test_long_choices_show_a_short_metavar_and_list_the_choices():
    """``<lp|lp_app|ppl|...>`` would take a column of its own; the short metavar needs the help to name them."""
    for model in (ScoreConfig, TrainConfig, ClusterConfig, GenerateConfig, JudgeConfig, SubsetSpec):
        for name, info in model.model_fields.items():
            if choices_metavar(name, info) is not None:
                missing = [c for c in get_args(info.annotation) if not re.search(rf"\b{c}\b", info.description)]
                assert not missing, f"{model.__name__}.{name}: the description does not name {missing}"
    text = help_at_80(("select",))
    assert "<lp|lp_app" not in text
    flat = " ".join(text.replace("│", " ").split())
    assert "--metric <metric>" in flat
    for choice in ("lp", "lp_app", "ppl", "ifd", "confidence", "variability", "lp_online"):
        assert re.search(rf"\b{choice}\b", flat), choice
    assert "--kmeans <kmeans>" in " ".join(help_at_80(("cluster",)).replace("│", " ").split())
    assert set(ClusterConfig.model_fields["kmeans"].annotation.__args__) == {"sklearn", "faiss", "minibatch"}


def test_a_switch_shows_one_flag_and_still_takes_its_negation(monkeypatch, tmp_path):
    """``--lora`` alone in the help; ``--no-lora`` is still accepted (hidden) and turns it off."""
    text = help_at_80(("score",))
    assert "--lora " in text and "--no-lora" not in text
    seen = []

    def fake_score(data, out, config, **kw):
        seen.append(config)

    monkeypatch.setattr("lpselect.steps.score.score", fake_score)
    monkeypatch.setattr("lpselect.cli.pipeline._print_score", lambda r: None)
    data = tmp_path / "d.json"
    data.write_text("[]")
    base = ["score", "--data", str(data), "--out", str(tmp_path / "r")]
    for extra, expected in (([], False), (["--lora"], True), (["--no-lora"], False)):
        r = runner.invoke(app, base + extra)
        assert r.exit_code == 0, r.output
        assert seen[-1].lora is expected, extra
    for both in (["--lora", "--no-lora"], ["--no-lora", "--lora"]):  # which one was meant is not guessed
        r = runner.invoke(app, base + both)
        assert r.exit_code == 2 and "--lora and --no-lora both given" in r.output, r.output
