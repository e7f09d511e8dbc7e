"""The CLI's one error handler (``friendly``): a mistake is one line and exit 2, a bug keeps its traceback and
asks for a bug report (exit 1), Ctrl-C says how to resume (exit 130)."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from pydantic import BaseModel, ValidationError
from typer.testing import CliRunner

from lpselect.cli.app import friendly
from lpselect.errors import InputError, LPSelectError


class _Settings(BaseModel):
    lr: float


def _app(error: BaseException) -> typer.Typer:
    """An app of two commands (typer needs two to keep the name) whose ``boom`` raises ``error``."""
    app = typer.Typer()

    @app.command("boom")
    @friendly
    def boom() -> None:
        raise error

    @app.command("other")
    def other() -> None:
        pass

    return app


def _run(error: BaseException):
    return CliRunner().invoke(_app(error), ["boom"])


@pytest.mark.parametrize("error", [
    LPSelectError("give at least one scores file"),
    InputError("d.json", "no 'output'", row=3, field="output"),
])
def test_a_mistake_is_one_line_exit_2(error: BaseException) -> None:
    r = _run(error)
    assert r.exit_code == 2
    assert r.stderr == f"error: {error}\n"
    assert "Traceback" not in r.output


def test_settings_pydantic_refuses_are_one_line() -> None:
    try:
        _Settings(lr="fast")  # type: ignore[arg-type]
    except ValidationError as e:  # as a config loader lets it through
        error = e
    r = _run(error)
    assert r.exit_code == 2
    lines = r.stderr.splitlines()
    assert lines == ["error: _Settings: lr: Input should be a valid number, unable to parse string as a number"]


def test_a_missing_file_says_not_found_and_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    try:
        missing.open()
    except FileNotFoundError as e:
        error = e
    r = _run(error)
    assert r.exit_code == 2
    assert r.stderr == f"error: {missing}: not found\n"


@pytest.mark.parametrize("error", [ValueError("percent must be in (0, 100], got 0"), KeyError("ppl_3"),
                                   TypeError("unhashable type: 'dict'")])
def test_a_bug_shows_its_traceback_and_asks_for_a_report(error: BaseException) -> None:
    r = _run(error)
    assert r.exit_code == 1
    assert "Traceback (most recent call last)" in r.stderr
    assert f"{type(error).__name__}: " in r.stderr  # the exception itself, under its traceback
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: this is a bug in lpselect") and "`lpselect env`" in last


def test_ctrl_c_says_how_to_resume_exit_130() -> None:
    r = _run(KeyboardInterrupt())
    assert r.exit_code == 130
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert lines[0].startswith("interrupted: run the same command again to resume from the last saved point")


def test_exits_pass_through() -> None:
    assert _run(typer.Exit(0)).exit_code == 0
    assert _run(typer.Exit(3)).exit_code == 3


class OutOfMemoryError(RuntimeError):
    """Stands for torch.cuda.OutOfMemoryError (matched by name: no CUDA build here)."""


@pytest.mark.parametrize(("error", "words"), [
    (MemoryError(), "out of memory"),
    (OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "out of GPU memory"),
    (OSError(28, "No space left on device", "/runs/a/score/passes/ppl_1.npy"), "no space left on the disk writing"),
])
def test_running_out_of_a_resource_is_one_line_not_a_bug(error: BaseException, words: str) -> None:
    r = _run(error)
    assert r.exit_code == 1 and "Traceback" not in r.stderr and "bug" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and words in lines[0] and "resume" in lines[0]
