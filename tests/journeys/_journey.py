"""Journeys: the ``lpselect`` command run as a user runs it, in a subprocess, on tiny models.

Import it as ``from _journey import run_cli`` (the suite's fixtures, e.g. ``tiny_model_dir``, come from
tests/conftest.py as everywhere). Each journey checks what a person sees: the exit code, a one-line error on
stderr (no traceback) for a mistake, and the rows a subset holds against an independent statement of the rule.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from conftest import write_json, write_jsonl  # noqa: F401  (re-exported for the journeys)


@dataclass
class Ran:
    """One finished ``lpselect`` command."""

    args: list[str]
    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("error:")]

    def one_line_error(self) -> str:
        """The single ``error: ...`` line of a refused command; fails on a traceback or several lines."""
        assert self.code == 2, f"exit {self.code}, expected 2\nstdout:\n{self.out}\nstderr:\n{self.err}"
        assert "Traceback" not in self.err, self.err
        assert len(self.error_lines) == 1, self.err
        return self.error_lines[0]


def run_cli(*args: object, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 600) -> Ran:
    """``lpselect ARGS`` in a fresh process, offline, output not a terminal (as when piped)."""
    argv = [str(a) for a in args]
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    p = subprocess.run([sys.executable, "-m", "lpselect", *argv], capture_output=True, text=True, cwd=cwd,
                       env=full_env, timeout=timeout, stdin=subprocess.DEVNULL)
    return Ran(argv, p.returncode, p.stdout, p.stderr)


def tiny_score_args(model_dir: Path, epochs: int = 2) -> list[str]:
    """A scorer run on the tiny random Llama that takes seconds, exact (fp32) on any CPU."""
    return ["--model", str(model_dir), "--epochs", str(epochs), "--batch-size", "2", "--grad-accum", "2",
            "--lr", "1e-3", "--precision", "fp32", "--device", "cpu", "--quiet"]




def score_and_cluster(data: Path, out: Path, model_dir: Path, *, epochs: int = 1, k: int = 3) -> Path:
    """``lpselect score`` (tiny model, fp32) then ``lpselect cluster`` (k clusters at most) into ``out``; both
    must succeed. Returns ``out``."""
    r = run_cli("score", "--data", data, "--out", out, *tiny_score_args(model_dir, epochs=epochs))
    assert r.code == 0, r.err
    r = run_cli("cluster", "--data", data, "--out", out, "--k", str(k), "--min-cluster-size", "1", "--quiet")
    assert r.code == 0, r.err
    return out
