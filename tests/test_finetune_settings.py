"""The settings that score and train share (config.FineTuneSettings): combinations refused when made."""

from __future__ import annotations

import pytest

from lpselect.config import ScoreConfig
from lpselect.steps.train import TrainConfig


@pytest.mark.parametrize("config", [ScoreConfig, TrainConfig])
def test_fsdp_with_lora_is_refused_when_the_settings_are_made(config):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="--fsdp with --lora"):
        config(fsdp=True, lora=True)
    assert config(fsdp=True).fsdp and config(lora=True).lora  # each alone is fine


@pytest.mark.parametrize("command", ["score", "train"])
def test_cli_refuses_fsdp_with_lora_in_one_line(command, alpaca_file, tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from lpselect.cli import app

    result = CliRunner().invoke(app, [command, "--data", str(alpaca_file), "--out", str(tmp_path / "o"),
                                      "--model", str(tiny_model_dir), "--fsdp", "--lora"])
    assert result.exit_code == 2
    assert "--fsdp with --lora" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()
