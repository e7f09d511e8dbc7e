"""LPCallback inside a real ``transformers.Trainer``: its P0 is the HF loss's perplexity, and select reads its file."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from conftest import alpaca_rows
from typer.testing import CliRunner

from lpselect.data.template import render_prompt
from lpselect.errors import InputError, LPSelectError
from lpselect.integrations import LPCallback, tokenized_from_dataset


def _encode(tokenizer, rows: list[dict[str, str]]) -> list[dict[str, list[int]]]:
    """Alpaca rows as a user's SFT script would tokenise them: prompt labels -100, response + eos labelled."""
    out = []
    for r in rows:
        prompt = render_prompt(r["instruction"], r["input"])
        n_prompt = len(tokenizer(prompt).input_ids)
        ids = tokenizer(prompt + r["output"] + tokenizer.eos_token).input_ids
        out.append({"input_ids": ids, "labels": [-100] * n_prompt + ids[n_prompt:]})
    return out


def _collate(pad_id: int):
    def collate(rows: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), pad_id)
        labels = torch.full((len(rows), width), -100)
        attn = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n], labels[i, :n], attn[i, :n] = torch.tensor(r["input_ids"]), torch.tensor(r["labels"]), 1
        return {"input_ids": ids, "labels": labels, "attention_mask": attn}

    return collate


def test_callback_in_trainer(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    from lpselect.cli import app
    from lpselect.config import SubsetSpec
    from lpselect.steps.select import select_subset

    rows = alpaca_rows(12)
    data_file = tmp_path / "alpaca.json"
    data_file.write_text(json.dumps(rows, indent=2))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    train = _encode(tokenizer, rows)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    untrained = copy.deepcopy(model).eval()  # the original weights, for a computation independent of lpselect

    out = tmp_path / "runs" / "mine"
    args = TrainingArguments(output_dir=str(tmp_path / "hf"), num_train_epochs=2, per_device_train_batch_size=4,
                             report_to=[], save_strategy="no", use_cpu=True, learning_rate=1e-3,
                             disable_tqdm=True, logging_steps=1)
    trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=_collate(tokenizer.pad_token_id),
                      processing_class=tokenizer, callbacks=[LPCallback(out, data=data_file)])
    with warnings.catch_warnings(record=True) as caught:  # the rows mask their prompts: no mask warning
        warnings.simplefilter("always")
        trainer.train()
    assert not [w for w in caught if "LPCallback" in str(w.message)]

    table = pq.read_table(out / "scores.parquet")
    cols = {c: table.column(c).to_numpy() for c in table.column_names}
    assert {"id", "ppl_0", "ppl_1", "ppl_2", "prob_0", "prob_2", "n_scored_tokens", "truncated",
            "prompt_shortened"} <= cols.keys()
    assert "ppl_3" not in cols
    np.testing.assert_array_equal(cols["id"], np.arange(12))

    # (1) P0 = exp(HF's mean label loss) on the untrained weights, row by row: the same tokens, the same shift
    with torch.no_grad():
        direct = np.array([float(torch.exp(untrained(input_ids=torch.tensor([r["input_ids"]]),
                                              labels=torch.tensor([r["labels"]])).loss.double())) for r in train])
    np.testing.assert_allclose(cols["ppl_0"], direct, rtol=1e-5)
    expected_scored = [sum(x != -100 for x in r["labels"][1:]) for r in train]
    np.testing.assert_array_equal(cols["n_scored_tokens"], expected_scored)

    # (2) training moved the perplexities; the callback left the model in train mode
    assert np.all(np.isfinite(cols["ppl_2"]))
    assert not np.allclose(cols["ppl_2"], cols["ppl_0"], rtol=1e-3)
    assert model.training

    manifest = json.loads((out / "manifest.json").read_text())
    step = manifest["steps"]["score"]
    assert step["status"] == "complete" and step["source"] == "trainer callback"
    assert step["epochs_done"] == 2 and step["config"]["epochs"] == 2
    assert step["counts"]["rows"] == 12 and step["counts"]["nan_rows"] == 0
    assert step["inputs"]["data"]["path"] == str(data_file.resolve())

    # (3) select reads the file unchanged: 25 % of 12 rows, through the API and the CLI
    result = select_subset(data_file, out / "scores.parquet", tmp_path / "subset.json",
                           SubsetSpec(metric="lp_app", epoch=1, percent=25, strategy="global"))
    assert result.report["n_selected"] == 3
    picked = json.loads((tmp_path / "subset.json").read_text())
    assert picked == [rows[i] for i in result.ids]
    done = CliRunner().invoke(app, ["select", "--data", str(data_file), "--scores", str(out / "scores.parquet"),
                                    "--out", str(tmp_path / "cli.json"), "--strategy", "global", "--percent", "25",
                                    "--metric", "lp", "--epoch", "1"])
    assert done.exit_code == 0, done.output
    assert len(json.loads((tmp_path / "cli.json").read_text())) == 3


def _train(model_dir: Path, data_file: Path, out: Path, hf_dir: Path, batch_size: int):
    """The user's side: a Trainer with the callback, 2 epochs; returns the trained model and its rows."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    train = _encode(tokenizer, json.loads(data_file.read_text()))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    args = TrainingArguments(output_dir=str(hf_dir), num_train_epochs=2, per_device_train_batch_size=batch_size,
                             report_to=[], save_strategy="no", use_cpu=True, learning_rate=1e-3, disable_tqdm=True)
    Trainer(model=model, args=args, train_dataset=train, data_collator=_collate(tokenizer.pad_token_id),
            callbacks=[LPCallback(out, data=data_file)]).train()
    return model, train, tokenizer


def _ddp_main(model_dir: str, data_file: str, out: str) -> None:
    """One rank of the torchrun job below; rank 0 then scores the trained weights alone, as a reference."""
    import torch.distributed as dist

    from lpselect.engine.passes import scoring_pass

    model, train, tokenizer = _train(Path(model_dir), Path(data_file), Path(out), Path(out + "-hf"), batch_size=2)
    if dist.get_rank() == 0:
        alone = scoring_pass(model, tokenized_from_dataset(train), pad_id=tokenizer.pad_token_id).ppl
        Path(out + "-alone.json").write_text(json.dumps({"world": dist.get_world_size(), "ppl": alone.tolist()}))


@pytest.mark.slow
def test_callback_under_ddp(tiny_model_dir: Path, tmp_path: Path) -> None:
    """torchrun, 2 CPU processes (gloo): each rank scores its shard, the sums are all-reduced, rank 0 writes.
    P0 equals a single process's, and P2 equals one process scoring the trained (identical) weights alone."""
    data_file = tmp_path / "alpaca.json"
    data_file.write_text(json.dumps(alpaca_rows(12)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", __file__,
           str(tiny_model_dir), str(data_file), str(tmp_path / "ddp")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    _train(tiny_model_dir, data_file, tmp_path / "one", tmp_path / "one-hf", batch_size=4)
    ddp, one = pq.read_table(tmp_path / "ddp" / "scores.parquet"), pq.read_table(tmp_path / "one" / "scores.parquet")
    alone = json.loads((tmp_path / "ddp-alone.json").read_text())
    assert alone["world"] == 2
    np.testing.assert_allclose(ddp.column("ppl_0").to_numpy(), one.column("ppl_0").to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(ddp.column("ppl_2").to_numpy(), alone["ppl"], rtol=1e-6)
    step = json.loads((tmp_path / "ddp" / "manifest.json").read_text())["steps"]["score"]
    assert step["processes"] == 2 and step["status"] == "complete" and step["counts"]["rows"] == 12


def test_rows_to_token_table() -> None:
    """HF labels (-100 = unscored), TRL's completion mask, no mask (causal LM default), padding dropped."""
    data = tokenized_from_dataset([
        {"input_ids": [5, 6, 7, 8], "labels": [-100, -100, 7, 8]},
        {"input_ids": [5, 6, 7], "labels": [5, 6, 7]},  # position 0 is never a label
        {"input_ids": [5, 6, 7], "completion_mask": [0, 1, 1]},
        {"input_ids": [5, 6, 7]},
        {"input_ids": [5, 6, 9, 9], "labels": [-100, 6, -100, -100], "attention_mask": [1, 1, 0, 0]},
    ])
    assert data.lengths.tolist() == [4, 3, 3, 3, 2]
    assert data.n_scored.tolist() == [2, 2, 2, 2, 1]
    assert data.row(0)[1].tolist() == [False, False, True, True]
    assert data.truncated.tolist() == [0] * 5 and not data.prompt_shortened.any()
    # a datasets.Dataset (read in column slices, here in torch format) gives the same table as a list
    from datasets import Dataset

    hf_rows = [{"input_ids": [5, 6, 7, 8], "labels": [-100, -100, 7, 8]}, {"input_ids": [5, 6], "labels": [5, 6]}]
    table = tokenized_from_dataset(Dataset.from_list(hf_rows).with_format("torch"))
    assert table.tokens.tolist() == [5, 6, 7, 8, 5, 6] and table.n_scored.tolist() == [2, 1]
    with pytest.raises(LPSelectError, match="labels differ"):
        tokenized_from_dataset([{"input_ids": [1, 2, 3], "labels": [1, 2, 4]}])
    with pytest.raises(LPSelectError, match="no 'input_ids'"):
        tokenized_from_dataset([{"text": "raw"}])


class _Steps:
    """A callback that counts training steps: a refused train set must be refused before the first."""

    def __init__(self) -> None:
        from transformers import TrainerCallback

        outer = self
        self.steps = 0

        class Count(TrainerCallback):
            def on_step_begin(self, *args, **kwargs) -> None:
                outer.steps += 1

        self.callback = Count()


def _trainer(model_dir: Path, train: list[dict], out: Path, hf_dir: Path, data_file: Path, steps: _Steps, **kwargs):
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    args = TrainingArguments(output_dir=str(hf_dir), num_train_epochs=1, per_device_train_batch_size=4,
                             report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True)
    return Trainer(model=model, args=args, train_dataset=train, processing_class=tokenizer,
                   data_collator=kwargs.pop("collator", _collate(tokenizer.pad_token_id)),
                   callbacks=[LPCallback(out, data=data_file, **kwargs), steps.callback])


def test_refuses_other_rows_before_first_step(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A train set of 7 rows for an 8-row data file, or the 8 rows reversed, is refused at train begin: one line
    that names the file, no training step, no run folder claimed."""
    from transformers import AutoTokenizer

    rows = alpaca_rows(8)
    data_file = tmp_path / "alpaca.json"
    data_file.write_text(json.dumps(rows))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    train = _encode(tokenizer, rows)
    cases = [(train[:7], r"has 8 rows but the train set has 7"), (train[::-1], r"row 0: train set row 0 does not hold")]
    for i, (rows_given, message) in enumerate(cases):
        steps, out = _Steps(), tmp_path / f"run{i}"
        trainer = _trainer(tiny_model_dir, rows_given, out, tmp_path / "hf", data_file, steps)
        with pytest.raises(InputError, match=message) as refused:
            trainer.train()
        text = str(refused.value)
        assert text.startswith(str(data_file)) and "\n" not in text
        assert steps.steps == 0 and trainer.state.global_step == 0
        assert not (out / "manifest.json").exists()
    # check_rows=False keeps the count check but trusts the text: the reversed rows train (a user's rewritten rows)
    steps = _Steps()
    _trainer(tiny_model_dir, train[::-1], tmp_path / "trusted", tmp_path / "hf", data_file, steps,
             check_rows=False).train()
    assert steps.steps == 2 and (tmp_path / "trusted" / "scores.parquet").exists()


def test_row_text_check(tiny_model_dir: Path, tmp_path: Path) -> None:
    """What the text check accepts: rows cut inside the response (max_length), chat rows by their first user and
    assistant turns; and what it refuses: a row whose response is another row's."""
    from transformers import AutoTokenizer

    from lpselect.integrations.transformers import check_rows_match

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = alpaca_rows(3)
    data_file = tmp_path / "alpaca.json"
    data_file.write_text(json.dumps(rows))
    train = _encode(tokenizer, rows)
    check_rows_match(tokenized_from_dataset(train), data_file, tokenizer)
    n_prompt = [r["labels"].count(-100) for r in train]
    cut = [{k: v[: n + 3] for k, v in r.items()} for r, n in zip(train, n_prompt, strict=True)]  # 3 response tokens
    check_rows_match(tokenized_from_dataset(cut), data_file, tokenizer)
    swapped = [dict(train[0]), train[1], train[2]]
    other = tokenizer(render_prompt(rows[0]["instruction"], rows[0]["input"]) + rows[1]["output"]).input_ids
    swapped[0] = {"input_ids": other, "labels": [-100] * n_prompt[0] + other[n_prompt[0]:]}
    with pytest.raises(InputError, match=r"row 0: train set row 0 does not hold this row's response"):
        check_rows_match(tokenized_from_dataset(swapped), data_file, tokenizer)
    check_rows_match(tokenized_from_dataset(swapped), data_file, tokenizer, text=False)  # count only

    long = [dict(r) for r in rows]
    long[0]["instruction"] = "Describe the quick brown fox in detail " + "and the lazy dog " * 30
    long_file = tmp_path / "long.json"
    long_file.write_text(json.dumps(long))
    capped = [{k: v[:80] for k, v in r.items()} for r in _encode(tokenizer, long)]  # max_length cuts the prompt
    assert capped[0]["labels"].count(-100) == 80  # row 0 holds no response token
    check_rows_match(tokenized_from_dataset(capped), long_file, tokenizer)
    with pytest.raises(InputError, match="row 0"):  # another row's long prompt at position 0 is still refused
        check_rows_match(tokenized_from_dataset([capped[1], capped[0], capped[2]]), long_file, tokenizer)

    chat = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Sum {i}?"},
                          {"role": "assistant", "content": f"It is {i}."}, {"role": "user", "content": "Sure?"},
                          {"role": "assistant", "content": "Yes."}]} for i in (11, 12)]
    chat_file = tmp_path / "chat.jsonl"
    chat_file.write_text("".join(json.dumps(r) + "\n" for r in chat))
    chat_rows = [{"input_ids": tokenizer.apply_chat_template(r["messages"], tokenize=True, return_dict=True)
                  ["input_ids"]} for r in chat]
    check_rows_match(tokenized_from_dataset(chat_rows), chat_file, tokenizer)
    with pytest.raises(InputError, match=r"chat.jsonl, row 0: .* user"):
        check_rows_match(tokenized_from_dataset(chat_rows[::-1]), chat_file, tokenizer)


def test_warns_when_nothing_is_masked(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Rows without labels under DataCollatorForLanguageModeling (the usual LM set-up): LP scores prompt and
    response, and the callback says so once, before the first step; rows with labels = input_ids likewise."""
    from transformers import AutoTokenizer, DataCollatorForLanguageModeling

    rows = alpaca_rows(4)
    data_file = tmp_path / "alpaca.json"
    data_file.write_text(json.dumps(rows))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    plain = [{"input_ids": r["input_ids"]} for r in _encode(tokenizer, rows)]
    steps = _Steps()
    trainer = _trainer(tiny_model_dir, plain, tmp_path / "run", tmp_path / "hf", data_file, steps,
                       collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    mine = [str(w.message) for w in caught if "LPCallback" in str(w.message)]
    assert len(mine) == 1 and "scores the prompt and the response alike" in mine[0] and "-100" in mine[0]
    with warnings.catch_warnings(record=True) as again:  # once per callback: a second train() stays quiet
        warnings.simplefilter("always")
        trainer.train()
    assert not [w for w in again if "LPCallback" in str(w.message)] and steps.steps == 2
    # every token after the first is scored: n_scored = length - 1, counted here from the rows themselves
    scored = pq.read_table(tmp_path / "run" / "scores.parquet").column("n_scored_tokens").to_numpy()
    np.testing.assert_array_equal(scored, [len(r["input_ids"]) - 1 for r in plain])

    from lpselect.integrations.transformers import _masks_nothing

    same = [{"input_ids": r["input_ids"], "labels": r["input_ids"]} for r in plain]
    assert _masks_nothing(tokenized_from_dataset(same))
    assert not _masks_nothing(tokenized_from_dataset(_encode(tokenizer, rows)))


if __name__ == "__main__":  # a rank of test_callback_under_ddp's torchrun job
    _ddp_main(*sys.argv[1:4])
