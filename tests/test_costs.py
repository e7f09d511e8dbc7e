"""The cost plan's arithmetic (lpselect.core.costs): phases of a job, nominal FLOPs, GPU seconds, probe sampling."""

from __future__ import annotations

import itertools

import pytest

from lpselect.core.costs import (
    extrapolate,
    extrapolate_by_work,
    format_seconds,
    gpu_seconds,
    job_phases,
    phase_flops,
    probe_order,
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
