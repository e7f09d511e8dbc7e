"""A Llama-architecture causal LM with random weights at a real scorer's size, saved as a Hugging Face folder.

    python benchmarks/random_llama.py --size 360m --out /tmp/llama-360m [--tokenizer FOLDER]

Random weights cost exactly what trained ones cost, so throughput benchmarks of 360M- and 1.3B-parameter
scorers need no download (the GPU machine has no network). The shapes are SmolLM2-360M's (hidden 960, 32
layers, 15 heads, 5 KV heads, MLP 2560) and a 1.3B Llama (hidden 2048, 24 layers, 32 heads, 8 KV heads,
MLP 5632); the tokenizer (default: SmolLM2-135M-Instruct's, vocabulary 49,152) comes from --tokenizer.
"""

from __future__ import annotations

import argparse
from pathlib import Path

SHAPES = {
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "intermediate_size": 128},
    "360m": {"hidden_size": 960, "num_hidden_layers": 32, "num_attention_heads": 15, "num_key_value_heads": 5,
             "intermediate_size": 2560},
    "1.3b": {"hidden_size": 2048, "num_hidden_layers": 24, "num_attention_heads": 32, "num_key_value_heads": 8,
             "intermediate_size": 5632},
}


def build(size: str, out: Path, tokenizer: str | None = None, seed: int = 0) -> tuple[Path, int]:
    """Save the model and tokenizer in ``out``; returns (out, parameter count, tied embeddings once)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from lpselect.engine.models import model_source

    tok = AutoTokenizer.from_pretrained(tokenizer or model_source(None))
    cfg = LlamaConfig(vocab_size=len(tok), max_position_embeddings=2048, tie_word_embeddings=True,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, **SHAPES[size])
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out, sum(p.numel() for p in model.parameters())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SHAPES), required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tokenizer", default=None, help="tokenizer folder (default: SmolLM2-135M-Instruct's)")
    args = ap.parse_args()
    out, n = build(args.size, args.out, args.tokenizer)
    print(f"{out}: random Llama {args.size}, {n / 1e6:,.1f}M parameters")


if __name__ == "__main__":
    main()
