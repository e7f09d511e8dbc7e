"""A tiny randomly initialised model for tests and benchmarks (no hub, no download): not for real use.

A 2-layer Llama (hidden size 32) and a 400-token byte-level BPE tokenizer with a chat template, saved as an
ordinary Hugging Face folder, so every ``from_pretrained`` path of lpselect runs on it in seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def build_tiny_llama(folder: str | Path, *, extra_corpus: Sequence[str] = (), vocab_size: int = 400) -> Path:
    """``extra_corpus``: more text for the BPE to learn (benchmarks/scale.py passes its word list, so each
    synthetic word is one token and a row has about as many tokens as words, as with a real tokenizer)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = Path(folder)
    corpus = [
        "Below is an instruction that describes a task. Write a response that appropriately completes the request.",
        "### Instruction: ### Input: ### Response: paired with an input that provides further context.",
        "The quick brown fox jumps over the lazy dog. 0123456789 + - * / = ( ) , . ? !",
    ] * 20 + list(extra_corpus)
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<eos>"],
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
