"""Run folders that forgive (issue 21 item 7): a step that saved nothing claims nothing, a refusal names each
change in one line, how a job saves its work is no setting of its results, a step may accept a change that only
extends its work, and checkpoints inside an epoch come on a time cadence (``SaveCadence``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from lpselect.config import TrainConfig
from lpselect.engine.checkpoint import SaveCadence
from lpselect.errors import RunFolderError
from lpselect.runs.folder import RunFolder, describe_input


def _file(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _claim(folder: Path, data: Path, force: bool = False, extends=None, **config) -> bool:
    cfg = {"epochs": 1, "lr": 0.001, "save_steps": 0, **config}
    run = RunFolder(folder)
    try:
        return run.begin_step("score", inputs={"data": describe_input(data)}, config=cfg, outputs=["out.npy"],
                              force=force, extends=extends)
    finally:
        run.release()


def test_a_refusal_names_each_changed_setting_and_input_in_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    old = _file(tmp_path / "old.json", "[1]")
    new = _file(tmp_path / "new.json", "[2]")
    _claim(folder, old)
    _file(folder / "out.npy", "work")  # the step saved something: the folder is claimed
    with pytest.raises(RunFolderError) as e:
        _claim(folder, new, epochs=2, lr=0.002)
    sha = {p: hashlib.sha256(p.read_bytes()).hexdigest()[:12] for p in (old, new)}
    assert str(e.value) == (
        f"{folder}: step 'score' was run with other inputs and config (data: {sha[old]} {old.resolve()} → "
        f"{sha[new]} {new.resolve()}, epochs: 1 → 2, lr: 0.001 → 0.002); use another folder, or --force to "
        "discard its results")
    assert "\n" not in str(e.value)
    missing = tmp_path / "gone.json"
    with pytest.raises(RunFolderError, match=rf"\(data: {sha[old]} {old.resolve()} → missing {missing}\)"):
        _claim(folder, missing)
    assert (folder / "out.npy").exists()  # refused: nothing deleted

    _claim(folder, new, force=True, epochs=2)  # --force still discards the old work
    assert not (folder / "out.npy").exists()
    assert RunFolder(folder).step("score")["config"]["epochs"] == 2


def test_a_step_that_saved_nothing_claims_nothing(tmp_path: Path) -> None:
    """A first attempt that failed before writing any output (a bad input file, a missing model) left only its
    record: the corrected re-run, with other inputs and settings, starts without --force."""
    folder = tmp_path / "run"
    bad = _file(tmp_path / "bad.json", "[null]")
    _claim(folder, bad)
    good = _file(tmp_path / "good.json", "[1]")
    assert _claim(folder, good, epochs=3) is False  # nothing to reuse
    step = RunFolder(folder).step("score")
    assert step["inputs"]["data"]["sha256"] == hashlib.sha256(b"[1]").hexdigest()
    assert step["config"]["epochs"] == 3
    (folder / "out.npy").mkdir()  # an empty folder is no saved work either
    assert _claim(folder, bad) is False
    (folder / "out.npy" / "chunk0.npy").write_text("x")  # a file inside it is
    with pytest.raises(RunFolderError, match="other inputs"):
        _claim(folder, good)


def test_how_a_job_saves_its_work_is_not_compared(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    data = _file(tmp_path / "d.json", "[1]")
    _claim(folder, data)
    _file(folder / "out.npy", "work")
    assert _claim(folder, data, save_steps=10, save_minutes=5.0, keep_checkpoint=True) is True
    assert RunFolder(folder).step("score")["config"]["save_steps"] == 10  # recorded as this run's


def test_a_change_that_only_extends_the_work_is_accepted_when_the_step_says_so(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    data = _file(tmp_path / "d.json", "[1]")
    _claim(folder, data)
    _file(folder / "out.npy", "work")
    seen = []

    def longer(old: dict, new: dict) -> bool:
        seen.append((old["epochs"], new["epochs"]))
        return new["epochs"] > old["epochs"] and old["lr"] == new["lr"]

    assert _claim(folder, data, extends=longer, epochs=2) is True
    step = RunFolder(folder).step("score")
    assert seen == [(1, 2)] and step["config"]["epochs"] == 2
    assert step["status"] == "running" and step["extended"] == [{"epochs": [1, 2]}]
    assert (folder / "out.npy").exists()
    with pytest.raises(RunFolderError, match=r"\(epochs: 2 → 3, lr: 0.001 → 0.01\)"):
        _claim(folder, data, extends=longer, epochs=3, lr=0.01)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_save_cadence_by_time_and_by_steps() -> None:
    clock = FakeClock()
    every_30_min = SaveCadence(save_steps=0, save_minutes=30, clock=clock)
    clock.now += 30 * 60 - 1
    assert not every_30_min.due(1)
    clock.now += 1
    assert every_30_min.due(2) and every_30_min.due(3)  # due until a checkpoint is written
    every_30_min.saved()
    clock.now += 29 * 60
    assert not every_30_min.due(4)
    clock.now += 60
    assert every_30_min.due(5)

    steps_win = SaveCadence(save_steps=4, save_minutes=30, clock=clock)
    clock.now += 3600
    assert [s for s in range(1, 13) if steps_win.due(s)] == [4, 8, 12]
    never = SaveCadence(save_steps=0, save_minutes=0, clock=clock)
    clock.now += 10**6
    assert not never.due(1)


def test_the_default_is_a_30_minute_cadence_for_score_and_train() -> None:
    from lpselect.config import ScoreConfig

    assert ScoreConfig().save_minutes == TrainConfig().save_minutes == 30
    assert ScoreConfig().save_steps == TrainConfig().save_steps == 0


def test_train_checkpoints_inside_an_epoch_on_the_time_cadence(tiny_model_dir: Path, alpaca_file: Path,
                                                               tmp_path: Path) -> None:
    """save_minutes tiny: every optimizer step is past the cadence, so each step leaves a checkpoint at it
    (12 rows, 4 a step: 3 steps, the last one the epoch's end)."""
    from lpselect.steps.train import train_target

    out = tmp_path / "m"
    seen: list[tuple[int, int]] = []

    def at_step(step: int) -> None:
        state = json.loads((out / "checkpoint" / "state.json").read_text())
        seen.append((step, state["global_step"]))

    cfg = TrainConfig(model=str(tiny_model_dir), epochs=1, batch_size=2, grad_accum=2, lr=1e-3, precision="fp32",
                      device="cpu", save_minutes=1e-9)
    train_target(alpaca_file, out, cfg, progress=False, on_step=at_step)
    assert seen == [(1, 1), (2, 2), (3, 3)]


def test_train_that_failed_before_its_first_checkpoint_does_not_claim_the_folder(
        tiny_model_dir: Path, alpaca_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lpselect.steps import train as train_step

    out = tmp_path / "m"
    cfg = TrainConfig(model=str(tiny_model_dir), epochs=1, batch_size=4, grad_accum=3, precision="fp32",
                      device="cpu")
    real = train_step.prepare_trainable

    def out_of_memory(*a, **k):
        raise MemoryError("simulated: the model does not fit")

    monkeypatch.setattr(train_step, "prepare_trainable", out_of_memory)
    with pytest.raises(MemoryError):
        train_step.train_target(alpaca_file, out, cfg, progress=False)
    assert RunFolder(out).step("train") is not None
    monkeypatch.setattr(train_step, "prepare_trainable", real)
    smaller = cfg.model_copy(update={"batch_size": 2, "grad_accum": 6})  # what the user tries next
    result = train_step.train_target(alpaca_file, out, smaller, progress=False)
    assert result.steps == 1 and (out / "config.json").exists()
    assert RunFolder(out).step("train")["config"]["batch_size"] == 2
    with pytest.raises(RunFolderError, match=r"other config \(batch_size: 2 → 4, grad_accum: 6 → 3\)"):
        train_step.train_target(alpaca_file, out, cfg, progress=False)  # now it has work to protect
