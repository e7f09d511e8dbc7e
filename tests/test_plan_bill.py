"""lpselect plan's bill: the target's parameters read without its weights, and the selection's FLOPs set against
the target training each subset saves (--target-model / --target-params, --target-epochs, --percent, --json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lpselect.cli import app
from lpselect.steps.bill import target_parameters

runner = CliRunner()

# SmolLM2-360M: vocab 49,152 x hidden 960 (tied, counted once); per layer q, o 960 x 960, k, v 960 x 320 (5 of 15
# heads), the MLP 3 x 960 x 2,560 and two norms of 960; 32 layers and a final norm
SMOLLM2_360M = dict(hidden_size=960, intermediate_size=2560, num_attention_heads=15, num_hidden_layers=32,
                    num_key_value_heads=5, vocab_size=49152, tie_word_embeddings=True)
SMOLLM2_360M_PARAMS = 49152 * 960 + 32 * (2 * 960 * 960 + 2 * 960 * 320 + 3 * 960 * 2560 + 2 * 960) + 960
# Llama-2-7B: vocab 32,000 x 4,096 twice (untied); per layer 4 x 4,096^2 attention, 3 x 4,096 x 11,008 MLP, two norms
LLAMA2_7B = dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_hidden_layers=32,
                 num_key_value_heads=32, vocab_size=32000, tie_word_embeddings=False)
LLAMA2_7B_PARAMS = 2 * 32000 * 4096 + 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008 + 2 * 4096) + 4096


# a tiny Mixtral, 8 experts of which 2 a token: vocab 1,000 x hidden 256 twice (untied); per layer q, o 256 x 256,
# k, v 256 x 128 (2 of 4 heads of 64), a router 8 x 256, each expert's MLP 3 x 256 x 512, two norms; a final norm
MIXTRAL = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, vocab_size=1000, num_local_experts=8, num_experts_per_tok=2,
               tie_word_embeddings=False)
MIXTRAL_TOTAL = 2 * 1000 * 256 + 2 * (2 * 256 * 256 + 2 * 256 * 128 + 8 * 256 + 8 * 3 * 256 * 512 + 2 * 256) + 256
MIXTRAL_ACTIVE = 2 * 1000 * 256 + 2 * (2 * 256 * 256 + 2 * 256 * 128 + 8 * 256 + 2 * 3 * 256 * 512 + 2 * 256) + 256


def _config_folder(folder: Path, config) -> Path:
    config.save_pretrained(folder)
    assert [f.name for f in folder.iterdir()] == ["config.json"]  # no weights to read
    return folder


def test_hand_counts_are_the_published_ones() -> None:
    assert SMOLLM2_360M_PARAMS == 361_821_120 and LLAMA2_7B_PARAMS == 6_738_415_616


@pytest.mark.parametrize(("kind", "tied"), [("llama", False), ("llama", True), ("opt", True)])
def test_parameters_from_a_config_folder_equal_the_models(tmp_path: Path, kind: str, tied: bool) -> None:
    from transformers import AutoModelForCausalLM, LlamaConfig, OPTConfig

    if kind == "llama":
        config = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied)
    else:
        config = OPTConfig(vocab_size=300, hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
                           word_embed_proj_dim=32, max_position_embeddings=64)
    real = AutoModelForCausalLM.from_config(config)  # real weights, to count them the ordinary way
    assert target_parameters(str(_config_folder(tmp_path / kind, config))) == real.num_parameters()


@pytest.mark.parametrize(("shape", "expected"), [(SMOLLM2_360M, SMOLLM2_360M_PARAMS), (LLAMA2_7B, LLAMA2_7B_PARAMS)])
def test_parameters_of_real_sizes_by_hand(tmp_path: Path, shape: dict, expected: int) -> None:
    """Built on the meta device: a 7B config is counted without 27 GB of weights."""
    from transformers import LlamaConfig

    assert target_parameters(str(_config_folder(tmp_path / "m", LlamaConfig(**shape)))) == expected


def test_parameters_of_a_gguf_file(tmp_path: Path) -> None:
    import numpy as np
    from gguf import GGUFWriter

    path = tmp_path / "tiny.gguf"
    writer = GGUFWriter(str(path), "llama")
    writer.add_tensor("token_embd.weight", np.zeros((4, 3), dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.zeros(5, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert target_parameters(str(path)) == 4 * 3 + 5


def test_active_parameters_of_a_gguf_mixture_of_experts(tmp_path: Path) -> None:
    """4 experts, 2 a token: the routed experts' tensors (4 x 6 x 3 and 4 x 3 x 6) count half; the shared expert
    (*_shexp), the router and the embedding count in full."""
    import numpy as np
    from gguf import GGUFWriter

    from lpselect.steps.bill import target_size

    path = tmp_path / "moe.gguf"
    writer = GGUFWriter(str(path), "qwen2moe")
    writer.add_expert_count(4)
    writer.add_expert_used_count(2)
    writer.add_tensor("token_embd.weight", np.zeros((10, 3), dtype=np.float32))
    writer.add_tensor("blk.0.ffn_gate_inp.weight", np.zeros((4, 3), dtype=np.float32))
    writer.add_tensor("blk.0.ffn_up_exps.weight", np.zeros((4, 6, 3), dtype=np.float32))
    writer.add_tensor("blk.0.ffn_down_exps.weight", np.zeros((4, 3, 6), dtype=np.float32))
    writer.add_tensor("blk.0.ffn_up_shexp.weight", np.zeros((5, 3), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    size = target_size(str(path))
    assert size.total == 30 + 12 + 72 + 72 + 15
    assert size.active == 30 + 12 + 2 * 18 + 2 * 18 + 15 and (size.experts, size.active_experts) == (4, 2)


def _plan(data: Path, model: Path, *extra: str) -> list[str]:
    return ["plan", "--data", str(data), "--model", str(model), "--epochs", "1", "--no-embed", "--probe-seconds",
            "0.2", "--device", "cpu", "--precision", "fp32", *extra]


def test_cli_bill_json_has_every_figure(tiny_model_dir: Path, alpaca_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    res = runner.invoke(app, _plan(alpaca_file, tiny_model_dir, "--target-params", "7B", "--percent", "5",
                                   "--percent", "50", "--target-epochs", "2", "--peak-tflops", "1000", "--mfu",
                                   "0.5", "--json", str(out)))
    assert res.exit_code == 0, res.output
    assert "the bill" in res.output and "warning" not in res.output
    saved = json.loads(out.read_text())
    b = saved["bill"]
    assert set(b) == {"target", "target_parameters", "target_active_parameters", "scorer_parameters", "ratio",
                      "target_epochs", "target_lora", "rows", "tokens", "mean_tokens_per_row", "selection_flops",
                      "full_flops", "subsets", "warning", "selection_gpu_seconds", "full_gpu_seconds"}
    assert set(b["subsets"][0]) == {"percent", "rows", "tokens", "target_flops", "saved_flops", "net_flops", "pays",
                                    "target_gpu_seconds", "saved_gpu_seconds", "net_gpu_seconds"}
    rows, tokens = saved["rows"], saved["tokens"]  # 12 rows
    assert (b["target"], b["target_parameters"], b["target_epochs"], b["rows"], b["tokens"]) == ("7B", 7e9, 2, rows,
                                                                                                 tokens)
    # the selection: score --epochs 1 is passes P0, P1 (2 N a token each) and one epoch (6 N): 10 N x tokens
    assert b["selection_flops"] == pytest.approx(10 * saved["parameters"] * tokens)
    assert b["full_flops"] == pytest.approx(6 * 7e9 * tokens * 2)
    five, half = b["subsets"]
    assert (five["percent"], five["rows"], half["rows"]) == (5, 1, 6)  # round(0.6), round(6)
    assert half["tokens"] == pytest.approx(tokens / 2)
    assert half["saved_flops"] == pytest.approx(6 * 7e9 * tokens * 2 / 2)
    assert half["net_flops"] == pytest.approx(half["saved_flops"] - b["selection_flops"]) and half["pays"]
    assert b["full_gpu_seconds"] == pytest.approx(6 * 7e9 * tokens * 2 / 5e14)


def test_cli_warns_for_a_target_under_five_times_the_scorer(tiny_model_dir: Path, alpaca_file: Path,
                                                            tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    res = runner.invoke(app, _plan(alpaca_file, tiny_model_dir, "--target-model", str(tiny_model_dir), "--json",
                                   str(out)))
    assert res.exit_code == 0, res.output
    flat = " ".join(res.output.split())
    assert "warning: the target has 1.0x the scorer's parameters" in flat and "Yin & Rush (ICLR 2025)" in flat
    b = json.loads(out.read_text())["bill"]
    assert b["ratio"] == 1 and b["warning"].startswith("the target has 1.0x")
    assert [s["percent"] for s in b["subsets"]] == [10]  # the default


def test_cli_plan_without_a_target_has_no_bill(tiny_model_dir: Path, alpaca_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    res = runner.invoke(app, _plan(alpaca_file, tiny_model_dir, "--json", str(out)))
    assert res.exit_code == 0, res.output
    assert "the bill" not in res.output and json.loads(out.read_text())["bill"] is None


@pytest.mark.parametrize(("args", "message"), [
    (["--target-params", "7X"], "--target-params: '7X' is not a parameter count"),
    (["--target-params", "0"], "--target-params: '0' is not a parameter count"),
    (["--target-params", "7B", "--percent", "0"], "--percent: percent 0 is not in (0, 100]"),
    (["--target-params", "7B", "--target-model", "x"], "--target-model and --target-params both given"),
    (["--percent", "5"], "--percent needs --target-model or --target-params"),
    (["--percent", "10"], "--percent needs --target-model or --target-params"),  # the default, but asked for
    (["--target-epochs", "3"], "--target-epochs needs --target-model or --target-params"),
    (["--target-epochs", "3", "--percent", "10"], "--percent and --target-epochs need --target-model or"),
    (["--target-model", "/no/such/model"], "model '/no/such/model' not found: the local path"),
    (["--target-model", "nobody-here/no-such-model-xyz"], "not found: no local folder"),
])
def test_cli_bill_mistakes_are_one_line(tiny_model_dir: Path, alpaca_file: Path, monkeypatch: pytest.MonkeyPatch,
                                        args: list[str], message: str) -> None:
    """Refused before the probe; a hub id in offline mode as the scorer's would be."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read at import: patched too
    res = runner.invoke(app, _plan(alpaca_file, tiny_model_dir, *args))
    flat = " ".join(res.output.split())
    assert res.exit_code == 2 and message in flat and "Traceback" not in res.output, res.output
    assert "score --epochs" not in res.output  # no plan was printed


def test_a_target_that_is_not_a_causal_lm_is_one_line(tmp_path: Path) -> None:
    from transformers import ViTConfig

    from lpselect.errors import LPSelectError

    folder = _config_folder(tmp_path / "vit", ViTConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                                        intermediate_size=16))
    with pytest.raises(LPSelectError, match="not a causal LM"):
        target_parameters(str(folder))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{}")
    with pytest.raises(LPSelectError, match="target model"):
        target_parameters(str(bad))


def test_the_target_flags_are_the_bill_configs_fields() -> None:
    import typer.main

    from lpselect.config import BillConfig

    options = {p.name: p for p in typer.main.get_command(app).commands["plan"].params}  # type: ignore[attr-defined]
    for name, info in BillConfig.model_fields.items():
        assert "--" + name.replace("_", "-") in options[name].opts
        assert options[name].default == info.default and options[name].help.rstrip(".") == info.description
    assert options["percent"].multiple and options["target_epochs"].default == 3


def test_a_mixture_of_experts_counts_its_active_parameters_by_hand(tmp_path: Path) -> None:
    from transformers import MixtralConfig

    from lpselect.steps.bill import target_size

    size = target_size(str(_config_folder(tmp_path / "mixtral", MixtralConfig(**MIXTRAL))))
    assert (size.total, size.active, size.experts, size.active_experts) == (MIXTRAL_TOTAL, MIXTRAL_ACTIVE, 8, 2)
    assert (MIXTRAL_TOTAL, MIXTRAL_ACTIVE) == (7_202_048, 2_483_456)
    assert target_parameters(str(tmp_path / "mixtral")) == MIXTRAL_TOTAL  # the plain count stays every expert


def test_a_shared_expert_is_always_active(tmp_path: Path) -> None:
    """Qwen2-MoE: 4 routed experts (2 a token) of 3 x 64 x 32 and a shared expert of 3 x 64 x 48 with its gate
    1 x 64; attention q, k, v with biases (k, v 32 wide), o without; vocab 100 x 64 twice; two layers."""
    from transformers import Qwen2MoeConfig

    from lpselect.steps.bill import target_size

    config = Qwen2MoeConfig(hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
                            shared_expert_intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, vocab_size=100, num_experts=4, num_experts_per_tok=2,
                            tie_word_embeddings=False)
    attention = (64 * 64 + 64) + 2 * (32 * 64 + 32) + 64 * 64
    layer_but_routed = attention + 4 * 64 + 3 * 64 * 48 + 64 + 2 * 64  # router, shared expert and its gate, norms
    outside = 2 * 100 * 64 + 64
    size = target_size(str(_config_folder(tmp_path / "qwen", config)))
    assert size.total == outside + 2 * (layer_but_routed + 4 * 3 * 64 * 32)
    assert size.active == outside + 2 * (layer_but_routed + 2 * 3 * 64 * 32)


def test_cli_bill_of_a_mixture_of_experts(tiny_model_dir: Path, alpaca_file: Path, tmp_path: Path) -> None:
    from transformers import MixtralConfig

    folder = _config_folder(tmp_path / "mixtral", MixtralConfig(**MIXTRAL))
    out = tmp_path / "plan.json"
    res = runner.invoke(app, _plan(alpaca_file, tiny_model_dir, "--target-model", str(folder), "--max-length", "64",
                                   "--peak-tflops", "1000", "--gpu", "H200", "--json", str(out)))
    assert res.exit_code == 0, res.output
    flat = " ".join(res.output.split())
    assert "(7.2M total, 2.48M active per token; " in flat and "N the target's active parameters per token" in flat
    assert "tokens counted with the scorer's tokenizer, each row cut at --max-length 64" in flat
    assert "with score --seeds s1,s2,... the selection costs that many times" in flat
    # two GPU columns, "GPU time" and "GPU time saved" (its header may wrap), and the footnote's "GPU time: at"
    assert "pays GPU time" in flat and flat.count("GPU time") == 3 and "GPU time: at H200 40%" in flat
    saved = json.loads(out.read_text())
    b = saved["bill"]
    assert (b["target_parameters"], b["target_active_parameters"]) == (MIXTRAL_TOTAL, MIXTRAL_ACTIVE)
    assert b["full_flops"] == pytest.approx(6 * MIXTRAL_ACTIVE * saved["tokens"] * 3)  # 3 epochs, the default
    assert b["ratio"] == pytest.approx(MIXTRAL_ACTIVE / saved["parameters"])
