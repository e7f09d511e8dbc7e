"""The run-folder lock (issue 12): a second job on a folder in use is refused at once, naming the folder and the
holder's pid; a SIGKILLed holder never blocks the re-run (the kernel drops the flock); one process may take the
lock again (a pipeline's steps); ranks other than 0 and read-only commands never take it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from lpselect.cli import app
from lpselect.errors import RunFolderError
from lpselect.runs.folder import RunFolder, folder_lock_held
from lpselect.runs.layout import LOCK, LOCK_OWNER

HOLD = """
import sys, time
from lpselect.runs.folder import RunFolder
run = RunFolder(sys.argv[1]).lock()
print("locked", flush=True)
time.sleep(300)
"""
TRY = """
import sys
from lpselect.errors import RunFolderError
from lpselect.runs.folder import RunFolder
try:
    RunFolder(sys.argv[1]).lock()
except RunFolderError as e:
    print("refused:", e)
else:
    print("locked")
"""


def _python(code: str, *args: object, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            **kwargs)


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen]]:
    """Another process that holds ``tmp_path/run`` through lpselect's API (and sleeps), killed at the end."""
    folder = tmp_path / "run"
    proc = _python(HOLD, folder)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked", proc.stderr.read() if proc.stderr else ""
        yield folder, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)


def _other_process_gets(folder: Path) -> str:
    done = _python(TRY, folder)
    out, err = done.communicate(timeout=120)
    assert done.returncode == 0, err[-2000:]
    return out.strip()


def test_a_sigkilled_holder_does_not_block_the_rerun(holder: tuple[Path, subprocess.Popen]) -> None:
    folder, proc = holder
    t0 = time.perf_counter()
    with pytest.raises(RunFolderError) as e:
        RunFolder(folder).lock()
    assert time.perf_counter() - t0 < 1.0  # refused at once (timeout 0), not after waiting
    message = str(e.value)
    assert message.startswith(f"{folder}: run folder in use by another lpselect job (pid {proc.pid} on ")
    assert "use another folder" in message
    with pytest.raises(RunFolderError, match="in use"):  # begin_step takes the lock too (cluster, import ...)
        RunFolder(folder).begin_step("cluster", inputs={}, config={}, outputs=[])
    assert not (folder / "manifest.json").exists()

    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert json.loads((folder / LOCK_OWNER).read_text())["pid"] == proc.pid  # left behind by the killed job
    run = RunFolder(folder).lock()  # the kernel released the flock with the process
    assert folder_lock_held(folder)
    assert json.loads((folder / LOCK_OWNER).read_text())["pid"] == os.getpid()
    run.release()
    assert not folder_lock_held(folder)
    assert (folder / LOCK).exists() and not (folder / LOCK_OWNER).exists()  # the flock file stays in place


def _data(tmp_path: Path, n: int = 12) -> Path:
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"instruction": f"Add {i} and {i + 3}.", "input": "",
                                 "output": f"The answer is {2 * i + 3}."} for i in range(n)]))
    return path


def test_a_second_score_on_a_folder_in_use_is_refused_at_once(holder: tuple[Path, subprocess.Popen],
                                                              tiny_model_dir: Path, tmp_path: Path) -> None:
    import lpselect.steps.score  # noqa: F401  (imported before the clock starts: only the refusal is timed)

    folder, proc = holder
    args = ["score", "--data", str(_data(tmp_path)), "--out", str(folder), "--model", str(tiny_model_dir),
            "--epochs", "0", "--precision", "fp32", "--device", "cpu", "--quiet"]
    t0 = time.perf_counter()
    r = CliRunner().invoke(app, args)
    elapsed = time.perf_counter() - t0
    assert r.exit_code == 2, r.output
    assert elapsed < 1.0, elapsed
    assert "Traceback" not in r.output
    assert f"error: {folder}: run folder in use by another lpselect job (pid {proc.pid} on " in r.stderr
    assert not (folder / "manifest.json").exists() and not (folder / "score").exists()  # nothing was done

    proc.kill()
    proc.wait(timeout=60)
    r = CliRunner().invoke(app, args)  # the re-run after the holder's SIGKILL does the whole job
    assert r.exit_code == 0, r.output
    assert (folder / "scores.parquet").exists()
    assert not folder_lock_held(folder)  # score released it on return
    assert _other_process_gets(folder) == "locked"


def test_the_lock_is_reentrant_within_one_process(tmp_path: Path) -> None:
    """A pipeline holds the folder and its steps take it again; the folder is free only when all let go."""
    folder = tmp_path / "run"
    with RunFolder(folder) as job:
        step = RunFolder(folder)
        step.begin_step("score", inputs={}, config={}, outputs=[])
        step.begin_step("score", inputs={}, config={}, outputs=[])  # idempotent per object
        step.release()
        assert folder_lock_held(folder)
        assert _other_process_gets(folder).startswith(f"refused: {folder}: run folder in use")
        assert job.lock() is job
    assert not folder_lock_held(folder)
    RunFolder(folder).lock()  # not kept: released as soon as the object is gone (what cluster() relies on)
    assert not folder_lock_held(folder)
    assert _other_process_gets(folder) == "locked"


def test_other_ranks_never_take_the_lock(holder: tuple[Path, subprocess.Popen]) -> None:
    folder, _ = holder
    (folder / "manifest.json").write_text(json.dumps({"steps": {"score": {"inputs": {}, "config": {}}}}))
    rank1 = RunFolder(folder, writer=False)
    assert rank1.lock() is rank1
    assert rank1.begin_step("score", inputs={}, config={}, outputs=[]) is True
    assert not folder_lock_held(folder)


def test_read_only_commands_need_no_lock(holder: tuple[Path, subprocess.Popen], tmp_path: Path) -> None:
    """select (reading scores), compare and report run while another job holds the folder."""
    folder, _ = holder
    n = 40
    rng = np.random.default_rng(3)
    p0 = np.exp(rng.normal(2.0, 0.5, n))
    ppl = np.stack([p0, p0 * rng.uniform(0.5, 0.9, n), p0 * rng.uniform(0.3, 0.5, n)], axis=1)
    pq.write_table(pa.table({"id": np.arange(n)} | {f"ppl_{e}": ppl[:, e] for e in range(3)}),
                   folder / "scores.parquet")
    data = _data(tmp_path, n)
    runner = CliRunner()
    r = runner.invoke(app, ["select", "--data", str(data), "--scores", str(folder / "scores.parquet"),
                            "--strategy", "global", "--out", str(folder / "subsets" / "s.json")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["compare", str(folder), str(folder), "--json", str(tmp_path / "c.json")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["report", str(folder), "--out", str(tmp_path / "report.html")])
    assert r.exit_code == 0, r.output
    assert not folder_lock_held(folder)
