"""The journey harness itself: a command that works, a mistake that gets one line."""

from __future__ import annotations

from pathlib import Path

from _journey import run_cli


def test_help_and_missing_file(tmp_path: Path) -> None:
    assert run_cli("--help").code == 0
    line = run_cli("cluster", "--data", tmp_path / "nope.json", "--out", tmp_path / "run").one_line_error()
    assert "nope.json" in line
