"""The one ``lpselect`` Typer app, its consoles, its one error handler and the options every command shares.

Command modules (pipeline, target, evaluate, analysis) add their commands to :data:`app`; they import this
module and :mod:`lpselect.cli.options`, never each other or the package, so the CLI has no import cycle.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from lpselect.cli.options import results_console
from lpselect.errors import LPSelectError

app = typer.Typer(
    help="Let a small language model pick the instruction-tuning data for a larger one (learning percentage).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)
out = results_console()
_state = {"debug": False}


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Errors a user can fix are one red line (exit 2); ``--debug`` shows the traceback instead."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (LPSelectError, ValidationError, ValueError, FileNotFoundError) as e:
            ctx = kwargs.get("ctx")  # a command that takes its context: --debug of whichever app it is on
            if _state["debug"] or (ctx is not None and ctx.find_root().params.get("debug")):
                raise
            typer.echo(typer.style("error: ", fg="red", bold=True) + " ".join(str(e).split()), err=True)
            raise typer.Exit(2) from None

    return wrapper


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")] = False) -> None:
    _state["debug"] = debug
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("transformers", "sentence_transformers", "datasets", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.ERROR)
    logging.getLogger("lpselect").setLevel(logging.DEBUG if debug else logging.INFO)  # e.g. the precision chosen


DataOpt = Annotated[Path, typer.Option("--data", help="Instruction data: .json/.jsonl/.parquet/.csv or a "
                                                         "dataset folder.")]
OutRun = Annotated[Path, typer.Option("--out", help="Run folder (created; re-running resumes).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Discard earlier results in the run folder made "
                                                         "from other inputs or settings.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]


