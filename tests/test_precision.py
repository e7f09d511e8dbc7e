"""``auto`` precision follows the hardware: bf16 only where it is computed natively."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lpselect.config import ScoreConfig
from lpselect.engine.precision import choose_precision, cpu_matrix_features, cpuinfo_features
from lpselect.errors import LPSelectError
from lpselect.steps.score import score

CPU = torch.device("cpu")
AVX2_ONLY = {"avx2": True, "avx512f": False, "avx512_bf16": False, "amx_bf16": False}
SAPPHIRE_RAPIDS = {"avx2": True, "avx512f": True, "avx512_bf16": True, "amx_bf16": True}
COOPER_LAKE = {"avx2": True, "avx512f": True, "avx512_bf16": True, "amx_bf16": False}
SKYLAKE_X = {"avx2": True, "avx512f": True, "avx512_bf16": False, "amx_bf16": False}


def test_cpuinfo_flags_are_read_from_the_flags_lines():
    text = ("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f amx_tile\nbugs\t\t: avx512_bf16\n"
            "processor\t: 1\nflags\t\t: fpu sse avx2 avx512f amx_bf16\n")
    # avx512_bf16 appears only on a 'bugs' line: not a feature
    assert cpuinfo_features(text) == {"avx2": True, "avx512f": True, "avx512_bf16": False, "amx_bf16": True}
    assert cpuinfo_features("") == {"avx2": False, "avx512f": False, "avx512_bf16": False, "amx_bf16": False}


@pytest.mark.parametrize(("features", "expected", "unit"), [
    (AVX2_ONLY, "fp32", None), (SKYLAKE_X, "fp32", None),
    (COOPER_LAKE, "bf16", "AVX512-BF16"), (SAPPHIRE_RAPIDS, "bf16", "AMX-BF16"),
])
def test_auto_picks_bf16_only_on_a_cpu_with_bf16_units(features, expected, unit):
    choice = choose_precision("auto", CPU, cpu_features=features)
    assert choice.precision == expected
    assert choice.reason.startswith(f"{expected}: ")
    if unit:
        assert unit in choice.reason
    else:
        assert "no native bf16" in choice.reason


def test_an_explicit_choice_is_kept_and_a_slow_one_says_so():
    slow = choose_precision("bf16", CPU, cpu_features=AVX2_ONLY)
    assert slow.precision == "bf16" and "emulated" in slow.reason
    fast = choose_precision("bf16", CPU, cpu_features=SAPPHIRE_RAPIDS)
    assert fast.precision == "bf16" and "emulated" not in fast.reason
    assert choose_precision("fp32", CPU, cpu_features=SAPPHIRE_RAPIDS).precision == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        choose_precision("fp16", CPU)


def test_other_devices_get_fp32():
    assert choose_precision("auto", torch.device("meta")).precision == "fp32"


def test_this_cpu_is_detected_as_proc_cpuinfo_says(monkeypatch):
    monkeypatch.delenv("LPSELECT_CPU_FEATURES", raising=False)
    cpu_matrix_features.cache_clear()
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo on this system")
    flags = set()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    detected = cpu_matrix_features()
    assert detected["avx512_bf16"] == ("avx512_bf16" in flags)
    assert detected["amx_bf16"] == ("amx_bf16" in flags)
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    assert choose_precision("auto", CPU).precision == ("bf16" if native else "fp32")
    cpu_matrix_features.cache_clear()  # the suite's other tests see $LPSELECT_CPU_FEATURES again


@pytest.mark.parametrize(("spec", "expected"), [
    ("avx2", "fp32"), ("avx2,avx512f", "fp32"), ("avx2, avx512f, AVX512_BF16", "bf16"), ("amx_bf16", "bf16"),
    ("", "fp32"),
])
def test_the_cpu_kind_can_be_forced_so_the_suite_runs_both_ways(monkeypatch, spec, expected):
    monkeypatch.setenv("LPSELECT_CPU_FEATURES", spec)
    cpu_matrix_features.cache_clear()
    try:
        assert choose_precision("auto", CPU).precision == expected
        named = {f.strip().lower() for f in spec.split(",") if f.strip()}
        assert {f for f, on in cpu_matrix_features().items() if on} == named
    finally:
        monkeypatch.undo()
        cpu_matrix_features.cache_clear()


def test_a_misspelt_forced_feature_is_refused(monkeypatch):
    monkeypatch.setenv("LPSELECT_CPU_FEATURES", "avx2,amx")
    cpu_matrix_features.cache_clear()
    try:
        with pytest.raises(LPSelectError, match=r"unknown feature\(s\) \['amx'\]"):
            cpu_matrix_features()
    finally:
        monkeypatch.undo()
        cpu_matrix_features.cache_clear()


def test_the_score_manifest_records_the_choice_and_why(tiny_model_dir, alpaca_file, tmp_path, caplog):
    cfg = ScoreConfig(model=str(tiny_model_dir), epochs=0, device="cpu")  # precision: auto
    with caplog.at_level("INFO", logger="lpselect"):
        score(alpaca_file, tmp_path / "run", cfg, progress=False)
    step = json.loads((tmp_path / "run" / "manifest.json").read_text())["steps"]["score"]
    expected = choose_precision("auto", CPU)
    assert step["precision"] == expected.precision
    assert step["precision_reason"] == expected.reason
    assert any(expected.reason in r.getMessage() for r in caplog.records)
