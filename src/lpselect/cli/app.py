"""The one ``lpselect`` Typer app, its consoles, its one error handler and the options every command shares.

Command modules (pipeline, target, evaluate, analysis, show) declare their commands on :data:`app` with
``@app.command(NAME, epilog=EXAMPLES)`` and ``@friendly``; they import this module, :mod:`lpselect.cli.options`
and :mod:`lpselect.cli.config_options`, never each other or the package, so the CLI has no import cycle.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import click
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


BUG_REPORT = ("this is a bug in lpselect, not a mistake of yours: please report it with the traceback above and "
              "the output of `lpselect env`")
INTERRUPTED_EXIT = 130  # the shell's status for a process ended by Ctrl-C (128 + SIGINT)
INTERRUPTED = ("run the same command again to resume from the last saved point (finished work in "
               "the run folder is kept)")
_PATH_ERRORS = (PermissionError, IsADirectoryError, NotADirectoryError)


def _one_line(message: str, code: int = 2) -> typer.Exit:
    typer.echo(typer.style("error: ", fg="red", bold=True) + " ".join(message.split()), err=True)
    return typer.Exit(code)


def _path_message(e: OSError) -> str:
    """'PATH: not found' (or the OS's reason) for a file error, naming the path when the error carries one."""
    if e.filename is None:
        return str(e)
    reason = "not found" if isinstance(e, FileNotFoundError) else (e.strerror or type(e).__name__).lower()
    return f"{e.filename}: {reason}"


def _message(e: Exception) -> str:
    """The one line of a mistake: a file error names its path, refused settings name each field (pydantic's own
    text runs over several lines and links its docs)."""
    if isinstance(e, OSError):
        return _path_message(e)
    if isinstance(e, ValidationError):
        fields = [(".".join(str(p) for p in err["loc"]) + ": " if err["loc"] else "")
                  + err["msg"].removeprefix("Value error, ") for err in e.errors()]
        return f"{e.title}: " + "; ".join(fields)
    return str(e)


def _out_of_resource(e: BaseException) -> str | None:
    """What ran out (memory, GPU memory, disk), with what to do; None for any other error."""
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
        where = "GPU memory" if type(e).__name__ == "OutOfMemoryError" else "memory"
        return (f"out of {where} ({' '.join(str(e).split())[:200]}): lower --batch-size or "
                "--max-tokens-per-micro-batch / --max-tokens-per-batch, or use --gradient-checkpointing")
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return f"no space left on the disk{f' writing {e.filename}' if e.filename else ''}: free some space"
    return None


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A mistake the user can fix (an :class:`LPSelectError`, settings pydantic refuses, a missing file) is one
    red line, exit 2; Ctrl-C one line on how to resume, exit 130; anything else is a bug: its traceback and a
    request for a bug report, exit 1, because a one-line ValueError from deep inside hides where it came from.
    ``--debug`` shows the traceback of a mistake too."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, click.exceptions.ClickException):
            raise
        except (LPSelectError, ValidationError, FileNotFoundError, *_PATH_ERRORS) as e:
            ctx = kwargs.get("ctx")  # a command that takes its context: --debug of whichever app it is on
            if _state["debug"] or (ctx is not None and ctx.find_root().params.get("debug")):
                raise
            raise _one_line(_message(e)) from None
        except KeyboardInterrupt:
            typer.echo("\n" + typer.style("interrupted: ", fg="yellow", bold=True) + INTERRUPTED, err=True)
            raise typer.Exit(INTERRUPTED_EXIT) from None
        except Exception as e:
            if (resource := _out_of_resource(e)) is not None:  # the machine's limit, not a bug: one line
                raise _one_line(f"{resource}; {INTERRUPTED}", 1) from None
            traceback.print_exc()
            raise _one_line(BUG_REPORT, 1) from None

    return wrapper


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")] = False) -> None:
    _state["debug"] = debug
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("transformers", "sentence_transformers", "datasets", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.ERROR)
    logging.getLogger("lpselect").setLevel(logging.DEBUG if debug else logging.INFO)  # e.g. the precision chosen


DataOpt = Annotated[Path, typer.Option("--data", rich_help_panel="Data", help="Instruction data: "
                                       ".json/.jsonl/.parquet/.csv or a dataset folder.")]
FieldsOpt = Annotated[str | None, typer.Option("--fields", rich_help_panel="Data", metavar="NAME=COLUMN,...",
                                               help="The data's own column names, e.g. "
                                               "output=answer,instruction=question (names: instruction, "
                                               "input, output, context, response, messages, conversations, prompt, "
                                               "completion, category); recorded in the run, so later commands "
                                               "read the file alike.")]
OutRun = Annotated[Path, typer.Option("--out", rich_help_panel="Output", help="Run folder (created; re-running "
                                                                               "resumes).")]
ForceOpt = Annotated[bool, typer.Option("--force", rich_help_panel="Output", help="Discard earlier results in the "
                                                                                   "run folder made from other "
                                                                                   "inputs or settings.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", rich_help_panel="Output", help="No progress bars.")]


