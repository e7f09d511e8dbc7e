"""The ``lpselect`` command: one Typer app (:mod:`lpselect.cli.app`) and one module per group of commands."""

from __future__ import annotations

from lpselect.cli import analysis, evaluate, pipeline, show, target
from lpselect.cli.app import app

target.register(app)
evaluate.register(app)
analysis.register(app)
show.register(app)
__all__ = ["app", "main", "pipeline"]


def main() -> None:
    app()
