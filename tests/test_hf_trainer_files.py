"""The trainers' view of a subset folder (lpselect.steps.trainer_configs, written by select with the card).

Each input shape is selected into its own folder; every ``dataset_info.json`` entry (LLaMA-Factory's format) is
then read back with ``datasets`` and the columns it names are looked up in the rows. The expected entries are
written out by hand here. The card's TRL snippet is run (without the training lines) and must give the prompt the
scorer saw (docs/method.md §3's Alpaca template, restated here) and the response as the completion.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import alpaca_rows, write_json, write_jsonl

from lpselect.config import SubsetSpec
from lpselect.steps.card import write_card
from lpselect.steps.select import select_subset
from lpselect.steps.trainer_configs import llamafactory_entry, subset_view, training_section

N = 12
SPEC = SubsetSpec(strategy="global", percent=50, band="low", metric="lp_app", epoch=1)


def chat_rows(n: int) -> list[dict]:
    return [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"What is {i}+1?"},
                          {"role": "assistant", "content": f"{i + 1}" + " indeed" * (i % 3)}], "topic": "math"}
            for i in range(n)]


def shapes() -> dict[str, tuple[list[dict], str, dict[str, str] | None]]:
    """name -> (rows, file suffix, --fields mapping)."""
    plain = alpaca_rows(N)
    return {
        "alpaca": (plain, ".json", None),
        "chat": (chat_rows(N), ".jsonl", None),
        "prompt_completion": ([{"prompt": r["instruction"], "completion": r["output"]} for r in plain], ".json",
                              None),
        "mapped": ([{"question": r["instruction"], "answer": r["output"], "id": i} for i, r in enumerate(plain)],
                   ".json", {"instruction": "question", "output": "answer"}),
    }


# the entries, by hand: the subset's own columns under LLaMA-Factory's names
EXPECTED = {
    "alpaca": {"formatting": "alpaca", "columns": {"prompt": "instruction", "response": "output", "query": "input"}},
    "chat": {"formatting": "sharegpt", "columns": {"messages": "messages"},
             "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                      "system_tag": "system"}},
    "prompt_completion": {"formatting": "alpaca", "columns": {"prompt": "prompt", "response": "completion"}},
    "mapped": {"formatting": "alpaca", "columns": {"prompt": "question", "response": "answer"}},
}


def write_scores(run: Path) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    p0 = np.linspace(10, 40, N)
    p1 = p0 * np.linspace(0.9, 0.3, N)
    pq.write_table(pa.table({"id": np.arange(N), "ppl_0": p0, "ppl_1": p1}), run / "scores.parquet")
    return run / "scores.parquet"


def selected(tmp_path: Path, shape: str) -> tuple[Path, Path]:
    """(subset, data file) of ``shape`` selected into tmp_path/shape/."""
    rows, suffix, fields = shapes()[shape]
    data = (write_jsonl if suffix == ".jsonl" else write_json)(tmp_path / f"{shape}-data{suffix}", rows)
    r = select_subset(data, write_scores(tmp_path / f"{shape}-run"), tmp_path / shape / f"50_low{suffix}", SPEC,
                      fields=fields)
    return r.path, data


@pytest.fixture
def offline_datasets(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    return datasets


@pytest.mark.parametrize("shape", list(EXPECTED))
def test_every_dataset_info_entry_reads_back(tmp_path, offline_datasets, shape) -> None:
    subset, data = selected(tmp_path, shape)
    folder = subset.parent
    info = json.loads((folder / "dataset_info.json").read_text())
    assert list(info) == ["50_low"]
    entry = info["50_low"]
    assert {k: v for k, v in entry.items() if k not in ("file_name", "lpselect")} == EXPECTED[shape]
    assert entry["file_name"] == subset.name
    ds = offline_datasets.load_dataset("json", data_files=str(folder / entry["file_name"]), split="train")
    assert len(ds) == len(json.loads(Path(str(subset) + ".report.json").read_text())["ids"]) > 0
    assert set(entry["columns"].values()) <= set(ds.column_names)
    if entry["formatting"] == "sharegpt":
        tags = entry["tags"]
        turns = [t for row in ds[entry["columns"]["messages"]] for t in row]
        assert all(tags["role_tag"] in t and tags["content_tag"] in t for t in turns)
        assert {t[tags["role_tag"]] for t in turns} == {tags["user_tag"], tags["assistant_tag"], tags["system_tag"]}
    card = (folder / "README.md").read_text()
    assert str(tmp_path) not in card and "/tmp" not in card  # shared: no local path
    assert f"| data | {data.name} |" in card and "| scores | " + f"{shape}-run/scores.parquet |" in card
    assert "dataset: 50_low" in card and "dataset_dir: path/to/this/folder" in card
    axolotl = "type: chat_template" if shape == "chat" else "field_output:"
    assert axolotl in card and "type: alpaca" not in card


def alpaca_prompt(instruction: str, input_: str) -> str:
    """docs/method.md §3's template, restated."""
    head = "Below is an instruction that describes a task"
    if input_:
        return (f"{head}, paired with an input that provides further context. Write a response that appropriately "
                f"completes the request.\n\n### Instruction:\n{instruction}\n\n### Input:\n{input_}\n\n### Response:")
    return (f"{head}. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}"
            "\n\n### Response:")


@pytest.mark.parametrize("shape", ["alpaca", "mapped", "prompt_completion", "chat"])
def test_the_cards_trl_snippet_gives_what_was_scored(tmp_path, offline_datasets, monkeypatch, shape) -> None:
    subset, _ = selected(tmp_path, shape)
    card = (subset.parent / "README.md").read_text()
    code = re.search(r"TRL:\n\n```python\n(.*?)```", card, re.S).group(1)
    code = "\n".join(line for line in code.splitlines() if "SFT" not in line and "trainer" not in line)
    monkeypatch.chdir(subset.parent)
    scope: dict = {}
    exec(code, scope)
    rows = offline_datasets.load_dataset("json", data_files=str(subset), split="train").to_list()
    ds = scope["ds"]
    if shape == "chat":
        assert ds.column_names == ["messages"] and ds["messages"] == [r["messages"] for r in rows]
        return
    instruction, input_, output = {"alpaca": ("instruction", "input", "output"), "mapped": ("question", None, "answer"),
                                   "prompt_completion": ("prompt", None, "completion")}[shape]
    assert ds.column_names == ["prompt", "completion"]
    assert ds["prompt"] == [alpaca_prompt(r[instruction], r[input_] if input_ else "") for r in rows]
    assert ds["completion"] == [r[output] for r in rows]


def test_baselines_are_listed_under_their_subset(tmp_path) -> None:
    subset, _ = selected(tmp_path, "alpaca")
    folder = subset.parent
    report = json.loads(Path(str(subset) + ".report.json").read_text())
    for strategy in ("random", "clust_rand"):  # as `lpselect run` writes them: the same rows count, baseline_of
        base = folder / f"50_low.{strategy}.json"
        shutil.copy(subset, base)
        write_json(Path(str(base) + ".report.json"),
                   {**report, "subset_file": base.name, "strategy": strategy, "baseline_of": subset.name})
    write_card(subset)
    card = (folder / "README.md").read_text()
    sections = re.findall(r"^(#+ .*)$", card, re.M)
    assert sections == ["# lpselect subsets", "## 50_low",
                        "### 50_low.clust_rand — baseline (clust_rand) of `50_low.json`",
                        "### 50_low.random — baseline (random) of `50_low.json`"]
    assert "Train this subset and its baselines" in card
    info = json.loads((folder / "dataset_info.json").read_text())
    assert sorted(info) == ["50_low", "50_low.clust_rand", "50_low.random"]
    assert info["50_low.random"]["file_name"] == "50_low.random.json"


def test_dataset_info_keeps_other_entries_and_drops_removed_subsets(tmp_path) -> None:
    subset, _ = selected(tmp_path, "alpaca")
    folder = subset.parent
    theirs = {"my_data": {"file_name": "mine.json"}, "50_low.old": {"file_name": "x.json", "formatting": "alpaca"}}
    info = json.loads((folder / "dataset_info.json").read_text())
    write_json(folder / "dataset_info.json", {**theirs, **info})
    other = folder / "other.json"
    shutil.copy(subset, other)
    shutil.copy(str(subset) + ".report.json", str(other) + ".report.json")
    write_card(subset)
    assert sorted(json.loads((folder / "dataset_info.json").read_text())) == ["50_low", "50_low.old", "my_data",
                                                                              "other"]
    other.unlink()  # a subset removed by hand drops out at the next rebuild; the others' entries stay
    write_card(subset)
    after = json.loads((folder / "dataset_info.json").read_text())
    assert sorted(after) == ["50_low", "50_low.old", "my_data"]
    assert {k: after[k] for k in theirs} == theirs


@pytest.mark.parametrize("shape", ["alpaca", "mapped"])
def test_the_cards_axolotl_format_is_the_scorers_prompt(tmp_path, shape) -> None:
    """axolotl's built-in ``alpaca`` ends its prompt with a newline the scorer did not see: the card spells out
    the exact prompt as a user-defined format, for the Alpaca columns too."""
    import yaml

    subset, _ = selected(tmp_path, shape)
    card = (subset.parent / "README.md").read_text()
    block = yaml.safe_load(re.search(r"axolotl:\n\n```yaml\n(.*?)```", card, re.S).group(1))
    fmt = block["datasets"][0]["type"]
    assert fmt["format"].format(instruction="Do X", input="on Y") == alpaca_prompt("Do X", "on Y")
    assert fmt["no_input_format"].format(instruction="Do X") == alpaca_prompt("Do X", "")
    assert fmt["field_instruction"] == ("instruction" if shape == "alpaca" else "question")
    assert ("field_input" in fmt) == (shape == "alpaca")
    assert "LLaMA-Factory joins instruction and input" in card


def test_a_column_missing_from_the_first_row_is_still_given_to_trainers(tmp_path, offline_datasets,
                                                                        monkeypatch) -> None:
    """JSONL rows may leave a key out: row 0 has no "input", row 1 has one. LLaMA-Factory must be told the input
    column (else it ignores every input) and the TRL snippet must give row 1 its with-input prompt."""
    subset = write_jsonl(tmp_path / "s.jsonl", [{"instruction": "Say hi", "output": "hi"},
                                                {"instruction": "Translate", "input": "Bonjour", "output": "Hello"}])
    view = subset_view(subset, "s", {})
    assert view is not None
    entry = llamafactory_entry(view, "s.jsonl.report.json")
    assert entry["columns"] == {"prompt": "instruction", "response": "output", "query": "input"}
    card = "\n".join(training_section(view, True))
    code = re.search(r"TRL:\n\n```python\n(.*?)```", card, re.S).group(1)
    code = "\n".join(line for line in code.splitlines() if "SFT" not in line and "trainer" not in line)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(code, scope)
    assert scope["ds"]["prompt"] == [alpaca_prompt("Say hi", ""), alpaca_prompt("Translate", "Bonjour")]
    assert scope["ds"]["completion"] == ["hi", "Hello"]
    assert "field_input: input" in card
