"""Options that commands without a config of their own share (generate, judge), taken from the config fields
that state the same setting, and the console results are printed on."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.console import Console

from lpselect.cli.config_options import field_help
from lpselect.config import FineTuneSettings, Precision

_fields = FineTuneSettings.model_fields
PrecisionOpt = Annotated[Precision, typer.Option(help=field_help(_fields["precision"]))]
DeviceOpt = Annotated[str, typer.Option(help=field_help(_fields["device"]))]


def results_console() -> Console:
    """Where commands print their result lines: under torchrun/accelerate only rank 0 prints them."""
    return Console(quiet=os.environ.get("RANK", "0") != "0")
