"""Which process of a ``torchrun`` / ``accelerate launch`` job this is, from the launcher's environment alone:
light enough for the command line (no torch), and the one place that asks."""

from __future__ import annotations

import os


def is_main_process() -> bool:
    """True for rank 0 (and for a job of one process): the process that prints results and writes files."""
    return os.environ.get("RANK", "0") == "0"
