"""Input formats (docs/method.md §2): the hostile-input corpus in tests/data/bad, the CLI's errors, and round trips.

tests/data/bad/CASES.json maps each corpus file to what reading it must give: ``expect`` "error" (an
``InputError`` with that ``row``, ``field`` and a message containing ``message_contains``) or "ok" (optionally
``n_samples``, ``outputs``, ``inputs``).
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from lpselect.cli import app
from lpselect.data.formats import read_dataset, write_subset
from lpselect.errors import InputError

BAD = Path(__file__).parent / "data" / "bad"
CASES: dict[str, dict[str, Any]] = json.loads((BAD / "CASES.json").read_text(encoding="utf-8"))

def _param(name: str) -> Any:
    return pytest.param(name, id=name)


DATA_CASES = {n: c for n, c in CASES.items() if c.get("reader", "dataset") == "dataset"}
ALL_CASES = [_param(n) for n in DATA_CASES]
ERROR_CASES = [_param(n) for n, c in DATA_CASES.items() if c["expect"] == "error"]
RUN_CASES = [_param(n) for n, c in CASES.items() if c.get("reader", "dataset") != "dataset"]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Corpus cases too big to keep in git (``"generated"`` in CASES.json), written from their recipe once."""
    folder = tmp_path_factory.mktemp("bad-generated")
    for name, case in CASES.items():
        if "generated" in case:
            g = case["generated"]
            output = (g["repeat"] * (g["output_chars"] // len(g["repeat"]) + 1))[: g["output_chars"]]
            row = {"instruction": g["instruction"], "input": "", "output": output}
            (folder / name).write_text(json.dumps(row) + "\n", encoding="utf-8")
    return folder


def corpus(name: str, generated: Path) -> Path:
    return generated / name if "generated" in CASES[name] else BAD / name


def _squash(text: str) -> str:
    """Drop all whitespace: rich may wrap a long message (even inside a path) at the console width."""
    return re.sub(r"\s+", "", text)


# ---------------------------------------------------------------- the corpus itself


def test_corpus_is_complete_and_small(generated: Path) -> None:
    on_disk = {p.name for p in BAD.iterdir() if p.name != "CASES.json"}
    assert on_disk == {n for n, c in CASES.items() if "generated" not in c}, \
        "every corpus file has a CASES.json entry and vice versa"
    assert (generated / "one_mb_output.jsonl").stat().st_size > 1_048_576
    assert len(CASES) >= 25
    for name, case in CASES.items():
        assert case["expect"] in ("error", "ok"), name
        assert {"row", "field", "message_contains"} <= set(case), name
        path = BAD / name
        if path.is_file():
            assert path.stat().st_size <= (512 if name in DATA_CASES else 2048), f"{name} should stay tiny"
    raw = (BAD / "invalid_utf8.json").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    assert (BAD / "utf8_bom.json").read_bytes().startswith(b"\xef\xbb\xbf")
    assert b"\r\n" in (BAD / "crlf.jsonl").read_bytes()


# ---------------------------------------------------------------- (a) read_dataset on every case


@pytest.mark.parametrize("name", ALL_CASES)
def test_read_dataset_on_corpus(name: str, generated: Path) -> None:
    case = CASES[name]
    path = corpus(name, generated)
    if case["expect"] == "error":
        with pytest.raises(InputError) as info:
            read_dataset(path)
        err = info.value
        assert err.path == str(path)
        assert err.row == case["row"], str(err)
        assert err.field == case["field"], str(err)
        assert case["message_contains"] in str(err)
        assert str(path) in str(err), "the message names the file"
        if case["row"] is not None:
            assert f"row {case['row']}" in str(err)
        if case["field"] is not None:
            assert f"field '{case['field']}'" in str(err)
        return
    ds = read_dataset(path)
    assert [s.id for s in ds.samples] == list(range(len(ds)))
    assert len(ds.records) == len(ds.samples)
    if "n_samples" in case:
        assert len(ds) == case["n_samples"]
    if "outputs" in case:
        assert [s.output for s in ds.samples] == case["outputs"]
    if "inputs" in case:
        assert [s.input for s in ds.samples] == case["inputs"]
    assert ds.duplicate_rows() == case.get("duplicates", 0)
    assert ds.empty_output_rows() == case.get("empty_outputs", 0)
    for rec in ds.records:  # a BOM must not end up glued to the first key
        assert not any(str(k).startswith("\ufeff") for k in rec)


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.jsonl"
    with pytest.raises(InputError, match="file not found") as info:
        read_dataset(path)
    assert info.value.path == str(path)


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_deeply_nested_json_is_an_input_error(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"deep{suffix}"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(InputError) as info:
        read_dataset(path)
    assert info.value.path == str(path)


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_lone_surrogate_is_refused_on_read_or_written(tmp_path: Path, suffix: str) -> None:
    rec = '{"instruction": "Say hi", "input": "", "output": "hi \\ud800"}'
    path = tmp_path / f"surrogate{suffix}"
    path.write_text(f"[{rec}]\n" if suffix == ".json" else rec + "\n")
    try:
        ds = read_dataset(path)
    except InputError as e:
        assert e.row == 0 and e.field == "output"
        return
    write_subset(ds, [0], tmp_path / f"out{suffix}")


def test_csv_duplicate_column_is_refused_or_kept(tmp_path: Path) -> None:
    path = tmp_path / "dup.csv"
    path.write_text("instruction,output,output\nSay hi,hi,hello\n")
    try:
        ds = read_dataset(path)
    except InputError:
        return
    out = write_subset(ds, [0], tmp_path / "out.csv")
    assert out.read_text().splitlines()[1] == "Say hi,hi,hello"


# ---------------------------------------------------------------- (b) the CLI on every error case


@pytest.mark.parametrize("name", ERROR_CASES)
def test_cli_select_reports_bad_data_in_one_message(name: str, tmp_path: Path) -> None:
    """`select` reads the data before the scores, so a bad data file is what it reports (exit 2, no trace)."""
    case = CASES[name]
    path = BAD / name
    result = CliRunner().invoke(app, ["select", "--data", str(path),
                                      "--scores", str(tmp_path / "scores.parquet"),
                                      "--out", str(tmp_path / "subset.json")])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, InputError)
    text = _squash(result.output)
    assert text.startswith("error:")
    assert _squash(str(path)) in text, "the error names the data file"
    assert "scores.parquet" not in text, "the data is read (and refused) before the scores"
    assert _squash(case["message_contains"]) in text
    if case["row"] is not None:
        assert f"row{case['row']}" in text
    if case["field"] is not None:
        assert _squash(f"field '{case['field']}'") in text
    assert not (tmp_path / "subset.json").exists()


def _run_case_args(name: str, tmp_path: Path) -> list[str]:
    """The command that reads corpus file ``name`` (a scores, clusters, reference pickle or config file)."""
    case = CASES[name]
    out = ["--out", str(tmp_path / "subset.jsonl")]
    if case["reader"] == "scores":
        return ["select", "--data", str(BAD / case["data"]), "--scores", str(BAD / name), *out,
                "--strategy", "global", "--percent", "50"]
    if case["reader"] == "clusters":
        return ["select", "--data", str(BAD / case["data"]), "--scores", str(BAD / case["scores"]),
                "--clusters", str(BAD / name), *out, "--percent", "50"]
    if case["reader"] == "reference":
        return ["import-reference", "--pplx", str(BAD / name), "--out", str(tmp_path / "scores.parquet")]
    assert case["reader"] == "config", name
    return ["run", str(BAD / name)]


@pytest.mark.parametrize("name", RUN_CASES)
def test_cli_on_scores_clusters_pickles_and_configs(name: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Files other than the data: one clear line naming file, row and field, or a counted skip."""
    case = CASES[name]
    monkeypatch.chdir(tmp_path)  # the code-carrying pickle would create a file here if it ever ran
    result = CliRunner().invoke(app, _run_case_args(name, tmp_path))
    assert "Traceback" not in result.output
    assert not (tmp_path / "lpselect-pickle-ran").exists(), "the pickle's code was executed"
    if case["expect"] == "ok":
        assert result.exit_code == 0, result.output
        report = json.loads((tmp_path / "subset.jsonl.report.json").read_text())
        assert report["n_nan_left_out"] == case["left_out"]
        assert report["n_selected"] + report["n_nan_left_out"] <= report["n_rows"]
        return
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    text = _squash(result.output)
    assert text.startswith("error:") and _squash(str(BAD / name)) in text
    assert _squash(case["message_contains"]) in text
    if case["row"] is not None:
        assert f"row{case['row']}," in text
    if case["field"] is not None:
        assert _squash(f"field '{case['field']}'") in text
    assert not any(tmp_path.glob("subset.jsonl*")) and not (tmp_path / "scores.parquet").exists()


def test_inf_perplexity_is_left_out_not_ranked_hardest(tmp_path: Path) -> None:
    """Row 1 has P1 = inf, so LP_app(1) = -inf: it must be counted as without a score, never picked as hardest."""
    result = CliRunner().invoke(app, _run_case_args("scores_nan_inf.parquet", tmp_path))
    assert result.exit_code == 0, result.output
    subset = read_dataset(tmp_path / "subset.jsonl")
    assert [(s.instruction, s.output) for s in subset.samples] == [("Say hi.", "hi")], \
        "only row 0 (P0=5, P1=4) has a finite LP_app(1); row 1 (blue) has -inf"


def test_cli_debug_raises_the_input_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["--debug", "select", "--data", str(BAD / "null_output.json"),
                                      "--scores", str(tmp_path / "s.parquet"),
                                      "--out", str(tmp_path / "o.json")])
    assert result.exit_code != 2
    assert isinstance(result.exception, InputError)
    assert result.exception.row == 1 and result.exception.field == "output"


@pytest.mark.parametrize("debug", [False, True])
def test_cli_subprocess_traceback_only_with_debug(debug: bool, tmp_path: Path) -> None:
    args = [sys.executable, "-m", "lpselect.cli", *(["--debug"] if debug else []), "select",
            "--data", str(BAD / "missing_output.jsonl"), "--scores", str(tmp_path / "s.parquet"),
            "--out", str(tmp_path / "o.jsonl")]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
    if debug:
        assert proc.returncode == 1
        assert "Traceback" in proc.stderr and "InputError" in proc.stderr
    else:
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr + proc.stdout
        assert "missing_output.jsonl" in _squash(proc.stderr)
        assert "row2,field'output':missing" in _squash(proc.stderr)


def test_cli_error_is_one_line_even_for_a_long_path(tmp_path: Path) -> None:
    folder = tmp_path / ("d" * 200) / ("e" * 150)
    folder.mkdir(parents=True)
    path = folder / "cannot_tell_format.json"
    path.write_bytes((BAD / "cannot_tell_format.json").read_bytes())
    result = CliRunner().invoke(app, ["select", "--data", str(path), "--scores", str(tmp_path / "s.parquet"),
                                      "--out", str(tmp_path / "o.json")])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1, result.output
    assert str(path) in result.output


# ---------------------------------------------------------------- (c) round trips in every format

IDS = [3, 0, 2]


def _records(nested: bool) -> list[dict[str, Any]]:
    rows = []
    for i in range(5):
        rec: dict[str, Any] = {
            "instruction": f"Add {i} and {i + 1}.",
            "input": "" if i % 2 else f"Numbers: {i}, {i + 1} — naïve café",
            "output": f"The sum is {2 * i + 1}.",
            "category": ["math", "open_qa"][i % 2],
            "source": f"unit-test-{i}",
        }
        if nested:
            rec["meta"] = {"votes": i, "tags": ["t", str(i)], "flag": i == 2}
        rows.append(rec)
    return rows


def _check_read(ds: Any, records: list[dict[str, Any]], file_format: str) -> None:
    assert ds.file_format == file_format
    assert ds.schema == "alpaca"
    assert len(ds) == len(records)
    assert [s.id for s in ds.samples] == list(range(len(records)))
    assert [s.output for s in ds.samples] == [r["output"] for r in records]
    assert [s.category for s in ds.samples] == [r["category"] for r in records]


def test_round_trip_json(tmp_path: Path) -> None:
    records = _records(nested=True)
    src = tmp_path / "data.json"
    src.write_text(json.dumps(records, indent=2, ensure_ascii=False), encoding="utf-8")
    ds = read_dataset(src)
    _check_read(ds, records, "json")
    out = write_subset(ds, IDS, tmp_path / "subset.json")
    text = out.read_text(encoding="utf-8")
    assert json.loads(text) == [records[i] for i in IDS]
    assert isinstance(json.loads(text), list)
    assert text.startswith('[\n    {\n        "instruction": '), "docs/method.md §11: a JSON array with indent 4"
    assert not list(tmp_path.glob(".subset.json.*")), "no temporary file left behind"


def test_round_trip_jsonl(tmp_path: Path) -> None:
    records = _records(nested=True)
    src = tmp_path / "data.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    ds = read_dataset(src)
    _check_read(ds, records, "jsonl")
    out = write_subset(ds, IDS, tmp_path / "subset.jsonl")
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(IDS)
    assert [json.loads(line) for line in lines] == [records[i] for i in IDS]


def test_round_trip_parquet(tmp_path: Path) -> None:
    records = _records(nested=True)
    for i, r in enumerate(records):
        r["n_tokens"] = 10 * i
    table = pa.Table.from_pylist(records)
    src = tmp_path / "data.parquet"
    pq.write_table(table, src)
    ds = read_dataset(src)
    _check_read(ds, records, "parquet")
    out = write_subset(ds, IDS, tmp_path / "subset.parquet")
    back = pq.read_table(out)
    assert back.to_pylist() == [records[i] for i in IDS]
    assert back.schema.remove_metadata() == table.schema.remove_metadata(), "column types kept"


def test_round_trip_csv(tmp_path: Path) -> None:
    records = _records(nested=False)
    fieldnames = ["source", "instruction", "input", "output", "category"]  # not the canonical order
    src = tmp_path / "data.csv"
    with open(src, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(records)
    ds = read_dataset(src)
    _check_read(ds, records, "csv")
    out = write_subset(ds, IDS, tmp_path / "subset.csv")
    with open(out, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        back = list(reader)
        assert reader.fieldnames == fieldnames, "column order kept"
    assert back == [records[i] for i in IDS]


def test_round_trip_hf_folder(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    records = _records(nested=True)
    src = tmp_path / "hf_data"
    datasets.Dataset.from_list(records).save_to_disk(str(src))
    ds = read_dataset(src)
    _check_read(ds, records, "hf")
    out = write_subset(ds, IDS, tmp_path / "hf_subset")
    back = datasets.load_from_disk(str(out))
    assert back.to_list() == [records[i] for i in IDS]
    assert back.features == datasets.load_from_disk(str(src)).features


def test_hf_folder_with_train_split(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    records = _records(nested=False)
    src = tmp_path / "hf_dict"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(records),
                          "test": datasets.Dataset.from_list(records[:1])}).save_to_disk(str(src))
    ds = read_dataset(src)
    assert len(ds) == len(records)
    assert ds.records == records


# ---------------------------------------------------------------- (d) ids, Dolly, chat


def test_ids_are_zero_based_row_positions(tmp_path: Path) -> None:
    records = [{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(7)]
    src = tmp_path / "rows.json"
    src.write_text(json.dumps(records))
    ds = read_dataset(src)
    assert [(s.id, s.instruction, s.output) for s in ds.samples] == [(i, f"q{i}", f"a{i}") for i in range(7)]
    out = write_subset(ds, [6, 0], tmp_path / "sub.json")
    assert json.loads(out.read_text()) == [records[6], records[0]]


def test_dolly_maps_context_and_response_and_keeps_category(tmp_path: Path) -> None:
    records = [
        {"instruction": "Name a fruit", "context": "", "response": "Apple", "category": "open_qa"},
        {"instruction": "Summarise", "context": "Cats sleep a lot.", "response": "Cats nap.",
         "category": "summarization"},
        {"instruction": "Say no", "response": "No", "category": "brainstorming"},
    ]
    src = tmp_path / "dolly.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    ds = read_dataset(src)
    assert ds.schema == "dolly"
    assert [(s.id, s.instruction, s.input, s.output, s.category) for s in ds.samples] == [
        (0, "Name a fruit", "", "Apple", "open_qa"),
        (1, "Summarise", "Cats sleep a lot.", "Cats nap.", "summarization"),
        (2, "Say no", "", "No", "brainstorming"),
    ]
    out = write_subset(ds, [1], tmp_path / "sub.jsonl")
    assert json.loads(out.read_text()) == records[1], "written back with Dolly's own field names"


def test_chat_multi_turn(tmp_path: Path) -> None:
    records = [
        {"messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "And 3+3?"},
            {"role": "assistant", "content": "6"},
        ], "category": "math", "source": "unit"},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]},
    ]
    src = tmp_path / "chat.json"
    src.write_text(json.dumps(records))
    ds = read_dataset(src)
    assert ds.schema == "chat"
    first = ds.samples[0]
    assert first.id == 0
    assert first.messages == tuple(records[0]["messages"])
    assert [m["role"] for m in first.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert "What is 2+2?" in first.instruction and "And 3+3?" in first.instruction
    assert "4" in first.output and "6" in first.output
    assert first.category == "math"
    assert ds.samples[1].id == 1 and ds.samples[1].output == "Hello"
    out = write_subset(ds, [1, 0], tmp_path / "sub.json")
    assert json.loads(out.read_text()) == [records[1], records[0]]


def _turns(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": r, "content": c} for r, c in pairs]


def test_chat_duplicate_rows_are_counted(tmp_path: Path) -> None:
    """Conversations are compared turn by turn (a turn is a dict, which a set cannot hold: this crashed).
    By hand: row 2 repeats row 0; row 3 differs from row 0 in its last answer, row 4 in its system turn."""
    convo = [("system", "Be brief."), ("user", "Add 2 and 3."), ("assistant", "5"), ("user", "Doubled?"),
             ("assistant", "10")]
    rows = [{"messages": _turns(*convo)},
            {"messages": _turns(("user", "Hi"), ("assistant", "Hello"))},
            {"messages": _turns(*convo), "source": "copy"},
            {"messages": _turns(*convo[:4], ("assistant", "ten"))},
            {"messages": _turns(("system", "Be long."), *convo[1:])}]
    src = tmp_path / "chat.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = read_dataset(src)
    assert ds.duplicate_rows() == 1
    assert ds.kept_but_counted() == {"empty_output_rows": 0, "duplicate_rows": 1}


def test_chat_embedding_text_reads_the_turns_in_order(tmp_path: Path) -> None:
    """One turn gives docs/method.md §7's text exactly; more turns alternate question and answer; no system turn."""
    from lpselect.data.template import embedding_text

    rows = [{"messages": _turns(("user", " Name a fox. "), ("assistant", "Quick brown fox. "))},
            {"messages": _turns(("system", "Be brief."), ("user", "Add 2 and 3."), ("assistant", "5"),
                                ("user", "Doubled?"), ("assistant", "10"))}]
    src = tmp_path / "chat.json"
    src.write_text(json.dumps(rows))
    single, multi = read_dataset(src).samples
    assert embedding_text(single) == "Instruction: Name a fox. Response: Quick brown fox."
    assert embedding_text(multi) == "Instruction: Add 2 and 3. Response: 5 Instruction: Doubled? Response: 10"


# ---------------------------------------------------------------- ShareGPT and TRL's prompt/completion


SHAREGPT = [
    {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Add 2 and 3."},
                       {"from": "gpt", "value": "5"}, {"from": "human", "value": "Doubled?"},
                       {"from": "gpt", "value": "10"}], "id": "a1"},
    {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}], "id": "a2"},
]


def test_sharegpt_reads_as_chat_and_writes_back_its_own_shape(tmp_path: Path) -> None:
    src = tmp_path / "sharegpt.json"
    src.write_text(json.dumps(SHAREGPT))
    ds = read_dataset(src)
    assert ds.schema == "sharegpt"
    assert ds.samples[0].messages == (
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Add 2 and 3."},
        {"role": "assistant", "content": "5"}, {"role": "user", "content": "Doubled?"},
        {"role": "assistant", "content": "10"})
    assert (ds.samples[1].instruction, ds.samples[1].output) == ("Hi", "Hello")
    out = write_subset(ds, [1, 0], tmp_path / "sub.json")
    assert json.loads(out.read_text()) == [SHAREGPT[1], SHAREGPT[0]]


@pytest.mark.parametrize(("turn", "field", "message"), [
    ({"from": "user", "value": "Hi"}, "conversations[1]", "from 'user' is not one of"),
    ({"from": "gpt", "value": None}, "conversations[1].value", "value must be text"),
])
def test_sharegpt_bad_turn_names_row_and_field(tmp_path: Path, turn: dict, field: str, message: str) -> None:
    src = tmp_path / "sharegpt.jsonl"
    bad = {"conversations": [{"from": "human", "value": "Hi"}, turn]}
    src.write_text(json.dumps(SHAREGPT[1]) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(InputError, match=message) as e:
        read_dataset(src)
    assert (e.value.row, e.value.field) == (1, field)


def test_prompt_completion_text_is_an_instruction_and_its_response(tmp_path: Path) -> None:
    rows = [{"prompt": "Add 2 and 3.", "completion": "5", "source": "x"},
            {"prompt": "Name a fox.", "completion": "Quick brown fox."}]
    src = tmp_path / "pc.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = read_dataset(src)
    assert ds.schema == "prompt_completion"
    assert [(s.instruction, s.input, s.output, s.messages) for s in ds.samples] == [
        ("Add 2 and 3.", "", "5", None), ("Name a fox.", "", "Quick brown fox.", None)]
    out = write_subset(ds, [1, 0], tmp_path / "sub.jsonl")
    assert [json.loads(line) for line in out.read_text().splitlines()] == [rows[1], rows[0]]


def test_prompt_completion_messages_score_the_completion_only(tmp_path: Path) -> None:
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Add 2 and 3."},
              {"role": "assistant", "content": "5"}, {"role": "user", "content": "Doubled?"}]
    rows = [{"prompt": prompt, "completion": [{"role": "assistant", "content": "10"}]}]
    src = tmp_path / "pc.json"
    src.write_text(json.dumps(rows))
    ds = read_dataset(src)
    s = ds.samples[0]
    assert s.messages == (*prompt, {"role": "assistant", "content": "10"})
    assert s.first_scored_turn == 4 and s.output == "10"
    assert json.loads(write_subset(ds, [0], tmp_path / "sub.json").read_text()) == rows


@pytest.mark.parametrize(("row", "field", "message"), [
    ({"prompt": "Hi", "completion": [{"role": "assistant", "content": "Yo"}]}, "prompt", "both be text or both"),
    ({"prompt": [{"role": "user", "content": "Hi"}], "completion": [{"role": "user", "content": "Yo"}]},
     "completion", "no assistant turn"),
    ({"prompt": "Hi", "completion": None}, "completion", "is null"),
])
def test_prompt_completion_bad_rows(tmp_path: Path, row: dict, field: str, message: str) -> None:
    src = tmp_path / "pc.jsonl"
    src.write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(InputError, match=message) as e:
        read_dataset(src)
    assert (e.value.row, e.value.field) == (1, field)


def test_unknown_shape_lists_every_accepted_shape_and_the_field_mapping(tmp_path: Path) -> None:
    src = tmp_path / "qa.jsonl"
    src.write_text(json.dumps({"question": "Hi", "answer": "Yo"}) + "\n")
    with pytest.raises(InputError) as e:
        read_dataset(src)
    line = str(e.value)
    assert "\n" not in line and "question" in line
    for shape in ("instruction/input/output", "instruction/context/response", "messages", "conversations",
                  "from/value", "prompt/completion", "--fields output=answer"):
        assert shape in line, shape


def test_score_counts_a_1mb_sample_as_truncated_and_reports_duplicates(tiny_model_dir: Path, tmp_path: Path,
                                                                       generated: Path) -> None:
    """The 1 MB sample is scored on its first max_length tokens and counted; duplicate rows and an empty output
    are kept (the empty response is its EOS alone, as in the reference) and counted."""
    data = tmp_path / "data.jsonl"
    empty = json.dumps({"instruction": "Say nothing.", "input": "", "output": ""}) + "\n"
    data.write_bytes((generated / "one_mb_output.jsonl").read_bytes() + (BAD / "duplicate_rows.jsonl").read_bytes()
                     + empty.encode())
    result = CliRunner().invoke(app, ["score", "--data", str(data), "--out", str(tmp_path / "run"),
                                      "--model", str(tiny_model_dir), "--epochs", "0", "--max-length", "64",
                                      "--device", "cpu", "--precision", "fp32", "--quiet"])
    assert result.exit_code == 0, result.output
    counts = json.loads((tmp_path / "run" / "manifest.json").read_text())["steps"]["score"]["counts"]
    assert counts["rows"] == 6 and counts["truncated_rows"] == 1 and counts["duplicate_rows"] == 2
    assert counts["empty_output_rows"] == 1
    scores = pq.read_table(tmp_path / "run" / "scores.parquet").to_pydict()
    assert scores["truncated"][0] > 100_000, "the 1 MB response lost most of its tokens, and the count says so"
    assert 32 <= scores["n_scored_tokens"][0] <= 64, "prompt truncation keeps >= max_length // 2 response tokens"
    assert all(np.isfinite(scores["ppl_0"]))
    assert scores["n_scored_tokens"][5] == 1, "an empty output scores its EOS token only"
    assert "1withanemptyoutput,2duplicatesofanearlierrow" in _squash(result.output)


def test_subset_named_for_another_format_is_refused(tmp_path: Path) -> None:
    """The subset keeps the input's format; `--out x.json` for JSONL data is refused before anything is written."""
    result = CliRunner().invoke(app, ["select", "--data", str(BAD / "duplicate_rows.jsonl"),
                                      "--scores", str(BAD / "scores_nan_inf.parquet"), "--strategy", "global",
                                      "--out", str(tmp_path / "subset.json")])
    assert result.exit_code == 2, result.output
    assert "nameitwith.jsonl" in _squash(result.output)
    assert not (tmp_path / "subset.json").exists()


# ---- a field mapping (--fields): other column names (issue 22 item 1) -------------------------------------------

QA = [{"question": "What is 2+2?", "answer": "4", "source": "a"},
      {"question": "Name a colour.", "answer": "Blue.", "source": "b"},
      {"question": "Say hi.", "answer": "hi", "source": "c"}]


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv", ".parquet"])
def test_fields_map_other_columns_and_the_subset_keeps_them(tmp_path: Path, suffix: str) -> None:
    from lpselect.data.formats import parse_fields

    path = tmp_path / f"qa{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(QA))
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in QA))
    elif suffix == ".csv":
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["question", "answer", "source"])
            w.writeheader()
            w.writerows(QA)
    else:
        pq.write_table(pa.Table.from_pylist(QA), path)
    fields = parse_fields("instruction=question, output=answer")
    assert fields == {"instruction": "question", "output": "answer"}
    ds = read_dataset(path, fields=fields)
    assert ds.schema == "alpaca" and ds.fields == fields
    assert [(s.id, s.instruction, s.input, s.output) for s in ds.samples] == [
        (0, "What is 2+2?", "", "4"), (1, "Name a colour.", "", "Blue."), (2, "Say hi.", "", "hi")]
    assert ds.records == [dict(r) for r in QA]  # the rows as in the file
    out = write_subset(ds, [2, 0], tmp_path / f"sub{suffix}")
    back = read_dataset(out, fields=fields)
    assert [r["question"] for r in back.records] == ["Say hi.", "What is 2+2?"]
    assert set(back.records[0]) == {"question", "answer", "source"}


def test_without_the_mapping_the_shape_is_one_line_naming_fields(tmp_path: Path) -> None:
    path = tmp_path / "qa.json"
    path.write_text(json.dumps(QA))
    with pytest.raises(InputError) as e:
        read_dataset(path)
    assert e.value.row == 0 and "--fields output=answer,instruction=question" in str(e.value)
    assert "ShareGPT" in str(e.value) and "prompt/completion" in str(e.value)


def test_a_mapping_to_a_missing_column_names_file_row_and_column(tmp_path: Path) -> None:
    path = tmp_path / "qa.json"
    path.write_text(json.dumps(QA))
    with pytest.raises(InputError) as e:
        read_dataset(path, fields={"instruction": "question", "output": "reply"})
    assert (e.value.path, e.value.row, e.value.field) == (str(path), 0, "reply")
    assert "no column 'reply'" in str(e.value) and "\n" not in str(e.value)
    rows = [*QA, {"question": "q"}]  # a later row without the column: that row is named
    path.write_text(json.dumps(rows))
    with pytest.raises(InputError) as e:
        read_dataset(path, fields={"instruction": "question", "output": "answer"})
    assert (e.value.row, e.value.field) == (3, "answer")


def test_an_error_in_a_mapped_column_names_the_files_column(tmp_path: Path) -> None:
    path = tmp_path / "qa.json"
    path.write_text(json.dumps([{"question": "q", "answer": 3}]))
    with pytest.raises(InputError) as e:
        read_dataset(path, fields={"instruction": "question", "output": "answer"})
    assert e.value.field == "answer" and "--fields output=answer" in str(e.value) and "found int" in str(e.value)


def test_a_mapped_column_does_not_make_the_row_look_like_another_shape(tmp_path: Path) -> None:
    """prompt/completion columns mapped to instruction/output: read as Alpaca, not as TRL's shape."""
    path = tmp_path / "pc.json"
    path.write_text(json.dumps([{"prompt": "p", "completion": "c", "extra": "x"}]))
    ds = read_dataset(path, fields={"instruction": "prompt", "output": "completion", "input": "extra"})
    assert ds.schema == "alpaca" and (ds.samples[0].instruction, ds.samples[0].input, ds.samples[0].output) == \
        ("p", "x", "c")


def test_sharegpt_and_chat_columns_can_be_mapped(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"dialog": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}) + "\n")
    ds = read_dataset(path, fields={"conversations": "dialog"})
    assert ds.schema == "sharegpt" and ds.samples[0].messages == (
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"})


@pytest.mark.parametrize(("text", "message"), [
    ("output", "NAME=COLUMN"), ("answer=output", "answer is not a field name"),
    ("output=a,output=b", "output is mapped twice"), ("output=", "NAME=COLUMN")])
def test_a_bad_fields_option_is_one_clear_error(text: str, message: str) -> None:
    from lpselect.data.formats import parse_fields
    from lpselect.errors import LPSelectError

    with pytest.raises(LPSelectError, match=message):
        parse_fields(text)
    assert parse_fields("") == {} and parse_fields(None) == {}


def test_a_mapping_the_detected_shape_would_ignore_is_refused(tmp_path: Path) -> None:
    """A Dolly file with an extra 'answer' column and --fields output=answer reads as Dolly (its 'response'
    decides), which reads no 'output': scoring 'response' instead of 'answer' would be silent."""
    from lpselect.data.formats import read_dataset

    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"instruction": "i", "context": "c", "response": "r", "answer": "a"}]))
    with pytest.raises(InputError, match=r"row 0: the rows read as dolly .* --fields output=answer would be "
                                         r"ignored; map the names dolly reads \(context, instruction, response\)"):
        read_dataset(path, {"output": "answer"})
    assert read_dataset(path, {"response": "answer"}).samples[0].output == "a"
