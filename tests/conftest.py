"""Shared fixtures: the shared real data (skip or fail), and a tiny random causal LM with its own tokenizer."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_data(*parts: str) -> Path:
    """Path under ../shared/data; skips when absent, fails when LPSELECT_REQUIRE_SHARED=1 (CI)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        if os.environ.get("LPSELECT_REQUIRE_SHARED") == "1":
            pytest.fail(f"LPSELECT_REQUIRE_SHARED=1 but {path} is missing")
        pytest.skip(f"shared data not found at {path} (a user's clone): these tests read ../shared/data")
    return path


def require_package_dir(module: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        if os.environ.get("LPSELECT_REQUIRE_SHARED") == "1":
            pytest.fail(f"package providing {module} is not installed")
        pytest.skip(f"package providing {module} is not installed")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer Llama and a small byte-level BPE tokenizer, saved as an HF folder."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-llama")
    corpus = [
        "Below is an instruction that describes a task. Write a response that appropriately completes the request.",
        "### Instruction: ### Input: ### Response: paired with an input that provides further context.",
        "The quick brown fox jumps over the lazy dog. 0123456789 + - * / = ( ) , . ? !",
    ] * 20
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=["<eos>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>")
    fast.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<eos>{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      eos_token_id=fast.eos_token_id, pad_token_id=fast.eos_token_id, bos_token_id=None,
                      tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    return folder


@pytest.fixture
def alpaca_file(tmp_path: Path) -> Path:
    """Twelve small Alpaca samples of varied length, some with an input."""
    rows = []
    for i in range(12):
        rows.append({
            "instruction": f"Add {i} and {i + 3}." if i % 3 else "Describe the fox " + "quickly " * i,
            "input": "" if i % 2 else "The quick brown fox " * (1 + i % 4),
            "output": f"The answer is {2 * i + 3}." + " The lazy dog." * (i % 5),
        })
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps(rows, indent=2))
    return path
