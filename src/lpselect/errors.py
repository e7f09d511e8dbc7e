"""Errors a user can act on. The CLI prints them without a traceback (``--debug`` shows it)."""

from __future__ import annotations

from pathlib import Path


class LPSelectError(Exception):
    """Base class of every error the CLI reports as a one-line message."""


class InputError(LPSelectError):
    """Bad input data: always says which file, which row (0-based id) and which field."""

    def __init__(self, path: str | Path, message: str, *, row: int | None = None, field: str | None = None):
        self.path, self.row, self.field = str(path), row, field
        where = self.path
        if row is not None:
            where += f", row {row}"
        if field is not None:
            where += f", field '{field}'"
        super().__init__(f"{where}: {message}")


class RunFolderError(LPSelectError):
    """A run folder that cannot be used as asked (inputs changed, missing step, ...)."""
