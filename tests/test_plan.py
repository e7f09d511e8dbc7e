"""lpselect plan: exact token counts, the job's phases with nominal FLOPs, and a probe that writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lpselect.cli import app
from lpselect.config import ScoreConfig
from lpselect.steps.plan import plan
from lpselect.steps.score import score


def _cfg(model: Path, **kw) -> ScoreConfig:
    return ScoreConfig(model=str(model), epochs=2, batch_size=2, grad_accum=2, precision="fp32", device="cpu", **kw)


def test_plan_counts_what_the_job_does(tiny_model_dir: Path, alpaca_file: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    before = sorted((p.name, p.stat().st_mtime_ns) for p in tiny_model_dir.iterdir())
    p = plan(alpaca_file, _cfg(tiny_model_dir), probe_seconds=0.5, embed=False, peak_tflops=100, utilisation=0.5)
    assert sorted((f.name, f.stat().st_mtime_ns) for f in tiny_model_dir.iterdir()) == before
    assert sorted(f.name for f in alpaca_file.parent.iterdir()) == [alpaca_file.name]  # nothing written

    counts = json.loads((Path(score(alpaca_file, tmp_path / "run", _cfg(tiny_model_dir), progress=False)
                              .scores_path).parent / "manifest.json").read_text())["steps"]["score"]["counts"]
    assert (p.rows, p.tokens, p.scored_tokens) == (counts["rows"], counts["tokens"], counts["scored_tokens"])

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    unique = {id(t): t.numel() for t in model.parameters()}
    assert p.parameters == sum(unique.values())
    names = [ph.name for ph in p.phases]
    assert names == ["read the data", "tokenise", "load the scorer", "pass P0", "train epoch 1", "pass P1",
                     "train epoch 2", "pass P2"]
    by_name = {ph.name: ph for ph in p.phases}
    assert by_name["pass P1"].flops == 2 * p.parameters * p.tokens
    assert by_name["train epoch 2"].flops == 6 * p.parameters * p.tokens
    assert by_name["train epoch 1"].gpu_seconds == pytest.approx(6 * p.parameters * p.tokens / (100e12 * 0.5))
    assert [ph.measured for ph in p.phases[:3]] == [True] * 3
    for ph in p.phases[3:]:
        assert ph.seconds > 0 and 1 <= ph.units_timed <= ph.units and not ph.measured
    assert p.total_seconds == pytest.approx(sum(ph.seconds for ph in p.phases))


def test_plan_ifd_adds_response_passes(tiny_model_dir: Path, alpaca_file: Path) -> None:
    p = plan(alpaca_file, _cfg(tiny_model_dir, ifd=True).model_copy(update={"epochs": 0}), probe_seconds=0.2,
             embed=False)
    assert [ph.kind for ph in p.phases] == ["read", "tokenize", "load", "pass", "pass_response"]
    assert p.phases[4].tokens < p.tokens  # the responses alone


def test_cli_plan_json(tiny_model_dir: Path, alpaca_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    res = CliRunner().invoke(app, ["plan", "--data", str(alpaca_file), "--model", str(tiny_model_dir), "--epochs",
                                   "1", "--no-embed", "--probe-seconds", "0.3", "--device", "cpu", "--precision",
                                   "fp32", "--peak-tflops", "989", "--gpu", "H200", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "train epoch 1" in res.output and "H200 40%" in res.output
    saved = json.loads(out.read_text())
    assert saved["rows"] == 12 and saved["gpu"] == {"name": "H200", "peak_tflops": 989.0, "utilisation": 0.4}
    assert saved["total_seconds"] == pytest.approx(sum(ph["seconds"] for ph in saved["phases"]))


@pytest.mark.parametrize("args, message", [(["--mfu", "0", "--peak-tflops", "100"], "utilisation"),
                                           (["--probe-seconds", "0"], "probe_seconds")])
def test_cli_plan_bad_options_are_one_line(tiny_model_dir: Path, alpaca_file: Path, args: list[str],
                                           message: str) -> None:
    res = CliRunner().invoke(app, ["plan", "--data", str(alpaca_file), "--model", str(tiny_model_dir), *args])
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output


def test_probe_warms_up_on_the_largest_unit_and_one_more_then_times_others() -> None:
    from lpselect.core.costs import probe_order
    from lpselect.steps.plan import _timed_units

    calls: list[int] = []
    work = np.array([5.0, 9.0, 1.0, 3.0, 7.0, 2.0])
    picked, times = _timed_units(len(work), calls.append, budget_s=0.0, sync=lambda: None, work=work)
    first_other = next(i for i in probe_order(len(work)) if i != 1)
    assert calls[:2] == [1, first_other]  # untimed: the largest (work 9) and the first of the spread
    assert len(picked) == len(times) == 2 and calls[2:] == picked  # budget spent: the minimum of two timed
    assert not set(picked) & {1, first_other}
    # without sizes (optimizer updates): the first two of the spread warm up; prepare runs before every unit
    calls.clear()
    prepared: list[int] = []
    picked, _ = _timed_units(5, calls.append, budget_s=0.0, sync=lambda: None,
                             prepare=lambda: prepared.append(len(calls)))
    assert calls[:2] == probe_order(5)[:2] and picked == calls[2:] and len(picked) == 2
    assert prepared == list(range(len(calls)))  # once before each of the four calls, with nothing run yet


@pytest.mark.parametrize(("n_units", "timed"), [(1, [0]), (2, None), (3, None)])
def test_a_short_phase_still_times_two_units(n_units, timed) -> None:
    """Fewer units than warm-ups plus two: the warm units are timed again (the second warm-up first)."""
    from lpselect.core.costs import probe_order
    from lpselect.steps.plan import _timed_units

    calls: list[int] = []
    picked, times = _timed_units(n_units, calls.append, budget_s=0.0, sync=lambda: None)
    order = probe_order(n_units)
    warm = order[:2]
    expected = timed if timed is not None else (order[2:] + warm[::-1])[:2]
    assert calls[: len(warm)] == warm and picked == expected and len(times) == len(expected)
