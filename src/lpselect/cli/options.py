"""The console commands print their results on."""

from __future__ import annotations

import os

from rich.console import Console


def results_console() -> Console:
    """Where commands print their result lines: under torchrun/accelerate only rank 0 prints them."""
    return Console(quiet=os.environ.get("RANK", "0") != "0")
