"""Numeric precision of the scorer: decided here, once, for passes, training and generation.

``auto`` picks bf16 only where the hardware computes it natively (a CUDA GPU with bf16, or a CPU with AMX-BF16
or AVX512-BF16): on a CPU without those units torch emulates bf16, several times slower than fp32.

``LPSELECT_CPU_FEATURES`` (e.g. ``avx2`` or ``avx2,avx512f,avx512_bf16``) replaces the CPU's detected units, so
``auto`` resolves as on another kind of CPU: the test suite runs both ways on one machine.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import get_args

import torch

from lpselect.config import Precision
from lpselect.errors import LPSelectError

PRECISIONS = get_args(Precision)
MATRIX_FEATURES = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
_CPUINFO = Path("/proc/cpuinfo")
CPU_FEATURES_ENV = "LPSELECT_CPU_FEATURES"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrecisionChoice:
    """What was chosen (``fp32`` or ``bf16``) and why, in words for the log and the manifest."""

    precision: str
    reason: str


@lru_cache(maxsize=1)
def cpu_matrix_features() -> dict[str, bool]:
    """The CPU's vector/matrix units that decide bf16 speed: ``$LPSELECT_CPU_FEATURES`` when set, else torch's
    own run-time detection (cpuinfo), else the flags of /proc/cpuinfo."""
    forced = os.environ.get(CPU_FEATURES_ENV)
    if forced is not None:
        return forced_features(forced)
    caps = getattr(torch.cpu, "get_capabilities", None)
    if caps is not None:
        with contextlib.suppress(Exception):
            c = caps()
            return {"avx2": bool(c.get("avx2")), "avx512f": bool(c.get("avx512_f")),
                    "avx512_bf16": bool(c.get("avx512_bf16")), "amx_bf16": bool(c.get("amx_bf16"))}
    return cpuinfo_features(_CPUINFO.read_text() if _CPUINFO.exists() else "")


def forced_features(spec: str) -> dict[str, bool]:
    """The features named in a comma-separated ``spec`` (the value of ``$LPSELECT_CPU_FEATURES``)."""
    named = {f.strip().lower() for f in spec.split(",") if f.strip()}
    unknown = sorted(named - set(MATRIX_FEATURES))
    if unknown:
        raise LPSelectError(f"{CPU_FEATURES_ENV}={spec!r}: unknown feature(s) {unknown}; name some of "
                         f"{', '.join(MATRIX_FEATURES)}")
    return {f: f in named for f in MATRIX_FEATURES}


def cpuinfo_features(cpuinfo: str) -> dict[str, bool]:
    """The matrix features named in the ``flags`` lines of a /proc/cpuinfo text."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return {f: f in flags for f in MATRIX_FEATURES}


def cpu_native_bf16(features: dict[str, bool] | None = None) -> str | None:
    """The CPU unit that computes bf16 natively ("AMX-BF16", "AVX512-BF16"), or None."""
    f = cpu_matrix_features() if features is None else features
    if f.get("amx_bf16"):
        return "AMX-BF16"
    if f.get("avx512_bf16"):
        return "AVX512-BF16"
    return None


def choose_precision(precision: str, device: torch.device, *, cpu_features: dict[str, bool] | None = None
                     ) -> PrecisionChoice:
    """Resolve ``auto`` for this device; an explicit choice is kept, with a note when it will be slow."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        native = torch.cuda.is_bf16_supported()
        hw = f"the GPU {name} {'computes' if native else 'has no native'} bf16"
    elif device.type == "cpu":
        unit = cpu_native_bf16(cpu_features)
        native = unit is not None
        hw = f"this CPU has {unit}" if native else "this CPU has no native bf16 (no AMX-BF16, no AVX512-BF16)"
    else:
        native = False
        hw = f"auto picks bf16 only on CUDA or a CPU with bf16 units, not on {device.type}"
    if precision == "auto":
        return PrecisionChoice("bf16" if native else "fp32", f"{'bf16' if native else 'fp32'}: {hw}")
    if precision == "bf16" and not native:
        return PrecisionChoice("bf16", f"bf16: asked for, but {hw}: emulated, several times slower than fp32")
    return PrecisionChoice(precision, f"{precision}: asked for")


def announce(choice: PrecisionChoice) -> None:
    """Say in the log what was chosen and why (a warning when the choice is slow on this hardware)."""
    (log.warning if "emulated" in choice.reason else log.info)("precision %s", choice.reason)


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def pick_device(name: str = "auto") -> torch.device:
    if name != "auto":
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
