"""The ``lpselect`` command: one Typer app (:mod:`lpselect.cli.app`) and one module per group of commands.

Every command is declared one way: ``@app.command(NAME, epilog=EXAMPLES)`` and ``@friendly`` on a function of
its module, so importing the module adds its commands. They are imported here in the order ``lpselect --help``
lists them.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

from lpselect.cli.app import INTERRUPTED_EXIT, app

COMMAND_MODULES = ("pipeline", "target", "evaluate", "analysis", "show")
for _module in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_module}")
__all__ = ["COMMAND_MODULES", "app", "main"]


def main() -> None:
    """The ``lpselect`` process. After Ctrl-C (exit 130, the resume hint already printed) it ends at once with
    that status: the interpreter otherwise sometimes re-raises the handled SIGINT on its way out and the
    process dies of the signal (status -2), losing the 130 a caller checks."""
    try:
        app()
    except SystemExit as e:
        if e.code != INTERRUPTED_EXIT:
            raise
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(INTERRUPTED_EXIT)
