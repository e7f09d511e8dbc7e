"""score --seeds: one run folder per seed, P0 computed once and shared, every seed's scores as its own run's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from lpselect.cli import app
from lpselect.config import ScoreConfig
from lpselect.steps.score import score
from lpselect.steps.seeds import parse_seeds, score_seeds


def _config(model: Path) -> ScoreConfig:
    # one row per optimizer step, so the seed's shuffle changes the trained model
    return ScoreConfig(model=str(model), epochs=1, batch_size=1, grad_accum=1, lr=1e-3, precision="fp32",
                       device="cpu")


def _scores(path: Path) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in pq.read_table(path).to_pydict().items()}


def test_seeds_share_p0_and_equal_separate_runs(tiny_model_dir: Path, alpaca_file: Path, tmp_path: Path) -> None:
    cfg = _config(tiny_model_dir)
    results = score_seeds(alpaca_file, tmp_path / "seeds", cfg, [42, 43], progress=False)
    alone = score(alpaca_file, tmp_path / "alone-43", cfg.model_copy(update={"seed": 43}), progress=False)

    first, second = (_scores(r.scores_path) for r in results)
    independent = _scores(alone.scores_path)
    assert results[1].scores_path == tmp_path / "seeds" / "seed-43" / "scores.parquet"
    for col in ("ppl_0", "ppl_1", "prob_0", "prob_1"):
        np.testing.assert_allclose(second[col], independent[col], rtol=1e-6, atol=0)
    np.testing.assert_array_equal(first["ppl_0"], second["ppl_0"])
    assert not np.allclose(first["ppl_1"], second["ppl_1"], rtol=1e-6, atol=0), "the seed must change P1"

    # P0 ran in the first seed's folder only; the second trained and ran P1 itself
    events = [(tmp_path / "seeds" / f"seed-{s}" / "score" / "events.log").read_text() for s in (42, 43)]
    assert "pass ppl:0 chunk" in events[0] and "pass ppl:0 chunk" not in events[1]
    assert "trained epoch 1" in events[1] and "pass ppl:1 chunk" in events[1]
    manifest = json.loads((tmp_path / "seeds" / "seed-43" / "manifest.json").read_text())["steps"]["score"]
    assert manifest["config"]["seed"] == 43 and manifest["status"] == "complete"
    assert manifest["p0_shared_from"] == str(tmp_path / "seeds" / "seed-42")
    assert "pass_ppl_0" not in manifest["wall_time_s"]


def test_seed_copy_is_redone_after_a_crash_before_the_job(tiny_model_dir: Path, alpaca_file: Path,
                                                          tmp_path: Path) -> None:
    """A later seed's folder with copied files but no manifest (killed during the copy) is copied again."""
    cfg = _config(tiny_model_dir)
    score(alpaca_file, tmp_path / "seeds" / "seed-42", cfg, progress=False)
    partial = tmp_path / "seeds" / "seed-7" / "score" / "passes"
    partial.mkdir(parents=True)
    for name in ("prob_0.npy", "ppl_0.npy"):
        (partial / name).write_bytes(b"cut short")
    results = score_seeds(alpaca_file, tmp_path / "seeds", cfg, [42, 7], progress=False)
    alone = score(alpaca_file, tmp_path / "alone-7", cfg.model_copy(update={"seed": 7}), progress=False)
    np.testing.assert_allclose(_scores(results[1].scores_path)["prob_1"], _scores(alone.scores_path)["prob_1"],
                               rtol=1e-6, atol=0)


@pytest.mark.parametrize("text", ["42", "42,42", "42,x", ""])
def test_parse_seeds_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="--seeds"):
        parse_seeds(text)


def test_parse_seeds() -> None:
    assert parse_seeds("42, 43,44") == [42, 43, 44]


def test_cli_bad_seeds_is_one_line(alpaca_file: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["score", "--data", str(alpaca_file), "--out", str(tmp_path / "r"),
                                   "--seeds", "42"])
    assert res.exit_code == 2
    assert "--seeds needs at least two distinct seeds" in res.output
    assert "Traceback" not in res.output
