"""Ways to get lpselect's scores out of training code you already have (rather than ``lpselect score``).

Names load lazily, so importing this package does not import torch or transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_API = {
    "LPCallback": "lpselect.integrations.transformers",
    "tokenized_from_dataset": "lpselect.integrations.transformers",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'lpselect.integrations' has no attribute {name!r}")
