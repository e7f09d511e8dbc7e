"""The console commands print their results on."""

from __future__ import annotations

from rich.console import Console

from lpselect.runs.ranks import is_main_process


def results_console() -> Console:
    """Where commands print their result lines: under torchrun/accelerate only rank 0 prints them. On a terminal
    long lines wrap at its width; piped or redirected, a line stays one line (rich would otherwise break it at 80
    columns, and ``grep`` would see half a path). Tables keep their layout either way."""
    console = Console(quiet=not is_main_process())
    console.soft_wrap = not console.is_terminal
    return console
