"""The cost plan's arithmetic (lpselect.core.costs): phases of a job, nominal FLOPs, GPU seconds, probe sampling,
and the bill of a selection against the target training it saves."""

from __future__ import annotations

import itertools

import pytest

from lpselect.core.costs import (
    MIN_TARGET_RATIO,
    bill,
    extrapolate,
    extrapolate_by_work,
    format_count,
    format_seconds,
    gpu_seconds,
    job_phases,
    parse_count,
    phase_flops,
    probe_order,
    ratio_warning,
    subset_rows,
    training_flops,
)


def test_job_phases_in_run_order() -> None:
    assert [(p.name, p.kind, p.epoch) for p in job_phases(2)] == [
        ("pass P0", "pass", 0), ("train epoch 1", "train", 1), ("pass P1", "pass", 1),
        ("train epoch 2", "train", 2), ("pass P2", "pass", 2)]
    assert [p.kind for p in job_phases(0)] == ["pass"]
    assert [p.kind for p in job_phases(1, ifd=True)] == ["pass", "pass_response", "train", "pass",
                                                         "pass_response"]
    with pytest.raises(ValueError, match="epochs"):
        job_phases(-1)


def test_phase_flops_by_hand() -> None:
    # 135M parameters, 1,000 tokens: a pass 2.7e11, an epoch 8.1e11, a LoRA epoch 5.4e11
    assert phase_flops("pass", 135_000_000, 1000) == 2.7e11
    assert phase_flops("pass_response", 135_000_000, 1000) == 2.7e11
    assert phase_flops("train", 135_000_000, 1000) == 8.1e11
    assert phase_flops("train", 135_000_000, 1000, lora=True) == 5.4e11
    with pytest.raises(ValueError, match="kind"):
        phase_flops("embed", 1, 1)


def test_gpu_seconds() -> None:
    assert gpu_seconds(1e15, 1000, 0.5) == pytest.approx(2.0)
    assert gpu_seconds(7.89e14, 789, 1.0) == pytest.approx(1.0)
    for peak, util in ((0, 0.5), (100, 0), (100, 1.5)):
        with pytest.raises(ValueError):
            gpu_seconds(1.0, peak, util)


def test_probe_order_spreads_over_all_units() -> None:
    order = probe_order(1000)
    assert len(order) == 64 == len(set(order))
    assert min(order) == 0 and max(order) == 999  # the longest and the shortest batches are both candidates
    gaps = sorted(order)
    assert max(b - a for a, b in itertools.pairwise(gaps)) <= 17  # evenly spaced: 999 / 63 = 15.9
    assert order == probe_order(1000) and order != sorted(order)  # seeded shuffle
    assert sorted(probe_order(3)) == [0, 1, 2]
    assert probe_order(1) == [0] and probe_order(0) == []


def test_extrapolate_by_work_is_a_ratio_of_seconds_to_work() -> None:
    # timed: 2 s for 100 padded tokens and 4 s for 300; the phase has 1000: 1000 x 6 / 400 = 15 s
    assert extrapolate_by_work([2.0, 4.0], [100, 300], 1000) == pytest.approx(15.0)
    # batches whose time is proportional to their size: timing only the two largest of five still gives the
    # phase's true total (a mean per batch would give 5 x 0.9 = 4.5 s instead of 0.01 x 300 = 3 s)
    work = [100, 80, 60, 40, 20]
    seconds = [0.01 * w for w in work]
    assert extrapolate_by_work(seconds[:2], work[:2], sum(work)) == pytest.approx(sum(seconds))
    assert extrapolate(seconds[:2], len(work)) == pytest.approx(4.5)
    for bad in (([], [], 10), ([1.0], [1, 2], 10), ([1.0], [0], 10)):
        with pytest.raises(ValueError):
            extrapolate_by_work(*bad)


def test_extrapolate_and_format() -> None:
    assert extrapolate([1.0, 2.0, 3.0], 10) == 20.0
    with pytest.raises(ValueError):
        extrapolate([], 10)
    assert [format_seconds(s) for s in (0.012, 3.24, 270, 8280, 129600)] == ["12 ms", "3.2 s", "4.5 min",
                                                                             "2.3 h", "1.5 d"]


@pytest.mark.parametrize(("text", "count"), [("7000000000", 7_000_000_000), ("7e9", 7_000_000_000),
                                             ("7B", 7_000_000_000), ("7b", 7_000_000_000), ("360M", 360_000_000),
                                             ("1.5k", 1500), ("6.74B", 6_740_000_000), ("7,000,000", 7_000_000),
                                             (" 135m ", 135_000_000), ("1T", 10**12), ("3.6e8", 360_000_000)])
def test_parse_count(text: str, count: int) -> None:
    assert parse_count(text) == count


@pytest.mark.parametrize("text", ["7X", "", "B", "seven", "0", "-5", "0.2", "inf", "nan"])
def test_parse_count_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a parameter count"):
        parse_count(text)


def test_training_flops_and_subset_rows_by_hand() -> None:
    # 7e9 parameters, 200,000 tokens, 3 epochs: 6 x 7e9 x 2e5 x 3 = 2.52e16; LoRA 4 x ... = 1.68e16
    assert training_flops(7_000_000_000, 200_000, 3) == pytest.approx(2.52e16)
    assert training_flops(7_000_000_000, 200_000, 3, lora=True) == pytest.approx(1.68e16)
    assert training_flops(7_000_000_000, 200_000, 0) == 0
    assert [subset_rows(1000, p) for p in (5, 10, 15, 100)] == [50, 100, 150, 1000]
    assert subset_rows(14_989, 10) == 1499  # 1,498.9
    for bad in (0, -1, 101):
        with pytest.raises(ValueError):
            subset_rows(1000, bad)


def test_bill_by_hand() -> None:
    """1,000 rows x 200 tokens, a 7e9 target trained 3 epochs, a selection of 1e16 FLOPs by a 135M scorer."""
    b = bill(selection_flops=1e16, scorer_parameters=135_000_000, target_parameters=7_000_000_000, rows=1000,
             tokens=200_000, epochs=3, percents=[5, 10, 95], target="7B", peak_tflops=1000, utilisation=0.5)
    assert b.full_flops == pytest.approx(2.52e16)  # 6 x 7e9 x 200,000 x 3
    assert b.mean_tokens_per_row == 200 and b.ratio == pytest.approx(7e9 / 135e6) and b.warning is None
    five, ten, most = b.subsets
    # 5 %: 50 rows x 200 = 10,000 tokens: 6 x 7e9 x 1e4 x 3 = 1.26e15; saved 2.394e16; net 1.394e16
    assert (five.rows, five.tokens) == (50, 10_000)
    assert five.target_flops == pytest.approx(1.26e15)
    assert five.saved_flops == pytest.approx(2.394e16) and five.net_flops == pytest.approx(1.394e16) and five.pays
    # 10 %: 100 rows, 20,000 tokens: 2.52e15; saved 2.268e16
    assert ten.target_flops == pytest.approx(2.52e15) and ten.saved_flops == pytest.approx(2.268e16) and ten.pays
    # 95 %: saves 5 % of 2.52e16 = 1.26e15, less than the selection's 1e16
    assert most.saved_flops == pytest.approx(1.26e15) and most.net_flops == pytest.approx(-8.74e15)
    assert not most.pays
    # at 50 % of 1,000 TFLOP/s = 5e14 FLOP/s: all rows 2.52e16 / 5e14 = 50.4 s, the selection 20 s
    assert b.full_gpu_seconds == pytest.approx(50.4) and b.selection_gpu_seconds == pytest.approx(20.0)
    assert ten.target_gpu_seconds == pytest.approx(5.04) and ten.saved_gpu_seconds == pytest.approx(45.36)
    assert most.net_gpu_seconds == pytest.approx(-17.48)
    no_gpu = bill(selection_flops=1e16, scorer_parameters=135_000_000, target_parameters=7_000_000_000, rows=1000,
                  tokens=200_000, epochs=3, percents=[10])
    assert no_gpu.full_gpu_seconds is None and no_gpu.subsets[0].saved_gpu_seconds is None


def test_bill_of_a_mixture_of_experts_by_hand() -> None:
    """47B total, 13B active a token (Mixtral-8x7B's round figures), 1,000 rows x 200 tokens, 2 epochs, a 1B
    scorer: the target's FLOPs are 6 x 13e9 a token, the ratio 13x."""
    b = bill(selection_flops=1e16, scorer_parameters=1_000_000_000, target_parameters=47_000_000_000,
             active_parameters=13_000_000_000, rows=1000, tokens=200_000, epochs=2, percents=[10])
    assert (b.target_parameters, b.target_active_parameters) == (47e9, 13e9)
    assert b.full_flops == pytest.approx(3.12e16)  # 6 x 13e9 x 200,000 x 2
    assert b.subsets[0].saved_flops == pytest.approx(2.808e16)  # 90 % of it
    assert b.ratio == pytest.approx(13) and b.warning is None
    small = bill(selection_flops=1.0, scorer_parameters=1_000_000_000, target_parameters=47_000_000_000,
                 active_parameters=4_000_000_000, rows=10, tokens=100, epochs=1, percents=[10])
    assert small.warning is not None and "4.0x the scorer's active parameters per token" in small.warning
    dense = bill(selection_flops=1.0, scorer_parameters=10, target_parameters=100, rows=10, tokens=100, epochs=1,
                 percents=[10])
    assert dense.target_active_parameters == 100
    with pytest.raises(ValueError):
        bill(selection_flops=1.0, scorer_parameters=10, target_parameters=100, active_parameters=101, rows=10,
             tokens=100, epochs=1, percents=[10])


def test_the_ratio_warning_cites_the_finding() -> None:
    """SmolLM2-360M (361,821,120) over SmolLM2-135M (134,515,008) is 2.7x, under 5x; Llama-2-7B is 50x."""
    scorer = 134_515_008
    warning = ratio_warning(361_821_120, scorer)
    assert warning is not None and "2.7x" in warning and "Yin & Rush (ICLR 2025)" in warning and "5x" in warning
    assert ratio_warning(6_738_415_616, scorer) is None
    assert MIN_TARGET_RATIO == 5
    assert ratio_warning(5 * scorer, scorer) is None and ratio_warning(5 * scorer - 1, scorer) is not None
    b = bill(selection_flops=1.0, scorer_parameters=scorer, target_parameters=361_821_120, rows=10, tokens=100,
             epochs=3, percents=[10])
    assert b.warning == warning


def test_format_count() -> None:
    assert [format_count(n) for n in (134_515_008, 361_821_120, 6_738_415_616, 7e9, 1.2e12, 44_192, 12)] == [
        "135M", "362M", "6.74B", "7B", "1.2T", "44.2k", "12"]
