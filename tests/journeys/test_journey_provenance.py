"""Journey: scores are only used with the data they were computed from (issue 21, item 3).

Score a 12-row file with the tiny model; then the shuffled rows are refused in one line naming both files
(select, compare, report), the same rows in another file (JSONL, re-indented JSON) are accepted, and scores
imported from the reference's pickles say that they cannot be checked.
"""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import pytest
from _journey import run_cli, tiny_score_args, write_json, write_jsonl
from conftest import alpaca_rows

from lpselect.data.formats import read_dataset
from lpselect.data.provenance import verify_data
from lpselect.errors import RunFolderError

ROWS = alpaca_rows(12)


def shuffled_rows() -> list[dict]:
    rows = list(ROWS)
    random.Random(3).shuffle(rows)
    assert rows != ROWS
    return rows


@pytest.fixture(scope="module")
def scored(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data.json, the run folder scored on it)."""
    root = tmp_path_factory.mktemp("provenance")
    data = write_json(root / "data.json", ROWS)
    run = root / "run"
    r = run_cli("score", "--data", data, "--out", run, *tiny_score_args(tiny_model_dir))
    assert r.code == 0, r.err
    return data, run


def test_select_refuses_shuffled_rows_and_accepts_them_as_jsonl(scored: tuple[Path, Path], tmp_path: Path) -> None:
    data, run = scored
    scores = run / "scores.parquet"
    shuffled = write_json(tmp_path / "shuffled.json", shuffled_rows())
    with pytest.raises(RunFolderError) as e:
        verify_data(read_dataset(shuffled), scores)
    assert str(shuffled) in str(e.value) and str(scores) in str(e.value)
    assert verify_data(read_dataset(write_jsonl(tmp_path / "same.jsonl", ROWS)), scores) is None
    assert verify_data(read_dataset(data), scores) is None


def test_select_command_refuses_shuffled_rows(scored: tuple[Path, Path], tmp_path: Path) -> None:
    _, run = scored
    shuffled = write_json(tmp_path / "shuffled.json", shuffled_rows())
    line = run_cli("select", "--data", shuffled, "--scores", run / "scores.parquet", "--out", tmp_path / "s.json",
                   "--strategy", "global", "--metric", "lp_app").one_line_error()
    assert "shuffled.json" in line and "scores.parquet" in line
    assert not (tmp_path / "s.json").exists()
    same = write_jsonl(tmp_path / "same.jsonl", ROWS)
    r = run_cli("select", "--data", same, "--scores", run / "scores.parquet", "--out", tmp_path / "s.jsonl",
                "--strategy", "global", "--metric", "lp_app")
    assert r.code == 0, r.err


def test_compare_refuses_a_run_of_the_shuffled_rows(scored: tuple[Path, Path], tiny_model_dir: Path,
                                                     tmp_path: Path) -> None:
    _, run = scored
    shuffled = write_json(tmp_path / "shuffled.json", shuffled_rows())
    other = tmp_path / "shuffled-run"
    assert run_cli("score", "--data", shuffled, "--out", other, *tiny_score_args(tiny_model_dir)).code == 0
    line = run_cli("compare", run, other, "--metric", "lp_app").one_line_error()
    assert str(run / "scores.parquet") in line and str(other / "scores.parquet") in line
    assert "different data" in line


def test_report_refuses_the_data_file_shuffled_in_place(scored: tuple[Path, Path]) -> None:
    data, run = scored
    original = data.read_bytes()
    try:
        write_json(data, shuffled_rows())
        line = run_cli("report", run).one_line_error()
        assert str(data) in line and str(run / "scores.parquet") in line
        data.write_text(json.dumps(ROWS))  # the same rows, written without indentation: other bytes, same rows
        assert data.read_bytes() != original
        r = run_cli("report", run)
        assert r.code == 0, r.err
        assert "reference's pickles" not in (run / "report.html").read_text()
    finally:
        data.write_bytes(original)


def test_imported_reference_scores_carry_a_note(tmp_path: Path) -> None:
    pkls = []
    for e, shift in (("pre", 2.0), ("1", 1.5)):
        path = tmp_path / f"epoch-{e}.pkl"
        path.write_bytes(pickle.dumps([float(i) + shift for i in range(12)]))
        pkls += ["--pplx", path]
    ref = tmp_path / "ref"
    r = run_cli("import-reference", *pkls, "--out", ref)
    assert r.code == 0, r.err
    data = write_json(tmp_path / "data.json", ROWS)
    note = verify_data(read_dataset(data), ref / "scores.parquet")  # what select records and prints
    assert note is not None and "reference's pickles" in note and "no data hash" in note
    r = run_cli("report", ref)
    assert r.code == 0, r.err
    assert "reference&#x27;s pickles" in (ref / "report.html").read_text() or \
        "reference's pickles" in (ref / "report.html").read_text()
