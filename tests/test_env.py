"""``lpselect env``: what a bug report pastes."""

from __future__ import annotations

import json
from importlib.metadata import version

import torch
from typer.testing import CliRunner

from lpselect.cli import app
from lpselect.engine.precision import choose_precision

runner = CliRunner()


def test_env_names_versions_device_features_threads_precision_and_models():
    r = runner.invoke(app, ["env", "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    for pkg in ("lpselect", "torch", "transformers", "sentence-transformers"):
        assert info[pkg] == version(pkg)
    assert info["device"].startswith("cuda" if torch.cuda.is_available() else "cpu")
    assert info["torch threads"].startswith(str(torch.get_num_threads()))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert info["precision auto picks"].startswith(choose_precision("auto", device).reason)
    assert "cpu matrix features" in info
    assert any(k.startswith("scorer") for k in info) and any(k.startswith("embedder") for k in info)


def test_env_text_is_one_line_per_item():
    r = runner.invoke(app, ["env"])
    assert r.exit_code == 0, r.output
    items = [line for line in r.output.splitlines() if line.startswith("- ")]
    assert any(line.startswith("- torch: ") for line in items)
    assert any(line.startswith("- precision auto picks: ") for line in items)
