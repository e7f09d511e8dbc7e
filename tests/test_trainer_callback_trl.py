"""LPCallback inside TRL's ``SFTTrainer``: prompt/completion rows (the prompt masked by ``completion_only_loss``)
are scored on their completion only, and a train set that is not the data file's rows is refused at train begin."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from conftest import alpaca_rows

from lpselect.data.template import render_prompt
from lpselect.errors import InputError
from lpselect.integrations import LPCallback

pytest.importorskip("trl")


def _sft(model_dir: Path, rows: list[dict[str, str]], out: Path, hf_dir: Path, data_file: Path, **config):
    """The user's side: prompt/completion rows, SFTTrainer with the callback and a step counter."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    class Steps(TrainerCallback):
        n = 0

        def on_step_begin(self, *args, **kwargs) -> None:
            Steps.n += 1

    train = Dataset.from_list([{"prompt": render_prompt(r["instruction"], r["input"]), "completion": r["output"]}
                               for r in rows])
    args = SFTConfig(output_dir=str(hf_dir), num_train_epochs=1, per_device_train_batch_size=4, report_to=[],
                     save_strategy="no", use_cpu=True, disable_tqdm=True, max_length=512, learning_rate=1e-3,
                     completion_only_loss=True, bf16=False, **config)  # SFTConfig's default is bf16
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    trainer = SFTTrainer(model=model, args=args, train_dataset=train,
                         processing_class=AutoTokenizer.from_pretrained(model_dir),
                         callbacks=[LPCallback(out, data=data_file), Steps()])
    return trainer, model, Steps


def test_sft_trainer_scores_completions(tiny_model_dir: Path, tmp_path: Path) -> None:
    """ids match the data file; P0 and the scored-token counts equal HF's loss over the completion tokens,
    computed here from a plain tokenisation of prompt and prompt + completion + EOS (what SFT trains on)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rows = alpaca_rows(8)
    data_file = tmp_path / "alpaca.json"
    data_file.write_text(json.dumps(rows))
    trainer, _, steps = _sft(tiny_model_dir, rows, tmp_path / "run", tmp_path / "hf", data_file)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    assert not [w for w in caught if "LPCallback" in str(w.message)]  # the prompt is masked: no warning
    assert steps.n == 2

    table = pq.read_table(tmp_path / "run" / "scores.parquet")
    np.testing.assert_array_equal(table.column("id").to_numpy(), np.arange(8))
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    # the untrained weights, loaded afresh (a deepcopy taken before SFTTrainer.train() moves with training)
    untrained = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    direct, n_scored = [], []
    for r in rows:
        prompt = render_prompt(r["instruction"], r["input"])
        n_prompt = len(tok(prompt).input_ids)
        ids = tok(prompt + r["output"] + tok.eos_token).input_ids
        labels = [-100] * n_prompt + ids[n_prompt:]
        n_scored.append(len(ids) - n_prompt)
        with torch.no_grad():
            loss = untrained(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss
        direct.append(float(torch.exp(loss.double())))
    np.testing.assert_array_equal(table.column("n_scored_tokens").to_numpy(), n_scored)
    np.testing.assert_allclose(table.column("ppl_0").to_numpy(), direct, rtol=1e-5)
    assert np.all(np.isfinite(table.column("ppl_1").to_numpy()))
    step = json.loads((tmp_path / "run" / "manifest.json").read_text())["steps"]["score"]
    assert step["status"] == "complete" and step["counts"]["rows"] == 8


def test_sft_trainer_refuses_other_rows(tiny_model_dir: Path, tmp_path: Path) -> None:
    """7 rows for an 8-row file, and SFT's own shuffle (shuffle_dataset=True) of the 8 rows: refused before the
    first step, in one line naming the data file, and the run folder is not claimed."""
    rows = alpaca_rows(8)
    data_file = tmp_path / "alpaca.json"
    data_file.write_text(json.dumps(rows))
    for i, (given, config, message) in enumerate([
        (rows[:7], {}, r"the data file has 8 rows but the train set has 7"),
        (rows, {"shuffle_dataset": True}, r"row \d+: train set row \d+ does not hold this row's"),
    ]):
        out = tmp_path / f"run{i}"
        trainer, _, steps = _sft(tiny_model_dir, given, out, tmp_path / "hf", data_file, **config)
        with pytest.raises(InputError, match=message) as refused:
            trainer.train()
        assert str(refused.value).startswith(str(data_file)) and "\n" not in str(refused.value)
        assert steps.n == 0 and trainer.state.global_step == 0
        assert not (out / "manifest.json").exists()
