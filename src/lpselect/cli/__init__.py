"""The ``lpselect`` command: one Typer app (:mod:`lpselect.cli.app`) and one module per group of commands.

Every command is declared one way: ``@app.command(NAME, epilog=EXAMPLES)`` and ``@friendly`` on a function of
its module, so importing the module adds its commands. They are imported here in the order ``lpselect --help``
lists them.
"""

from __future__ import annotations

import importlib

from lpselect.cli.app import app

COMMAND_MODULES = ("pipeline", "target", "evaluate", "analysis", "show")
for _module in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_module}")
__all__ = ["COMMAND_MODULES", "app", "main"]


def main() -> None:
    app()
