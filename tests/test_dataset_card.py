"""The Hugging Face dataset card that select writes beside its subsets (lpselect.steps.card).

Two subsets share one folder: ``datasets.load_dataset(folder, name=STEM)`` must read each one, and the card's
YAML metadata must hold the provenance, checked against values computed here (sha256 with hashlib, counts
from the fixture: 20 rows, 2 without LP_app(1)).
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import alpaca_rows
from typer.testing import CliRunner

import lpselect
from lpselect.cli import app
from lpselect.config import SubsetSpec
from lpselect.steps.card import MARKER
from lpselect.steps.select import select_subset

N_ROWS, NAN_ROWS = 20, (4, 11)  # rows 4 and 11 have no P1, so no LP_app(1)
SUFFIX = {"json": ".json", "jsonl": ".jsonl", "parquet": ".parquet", "csv": ".csv", "hf": ""}


def write_data(folder: Path, fmt: str) -> Path:
    rows = alpaca_rows(N_ROWS)
    path = folder / ("data" + SUFFIX[fmt])
    if fmt == "json":
        path.write_text(json.dumps(rows, indent=2))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif fmt == "csv":
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    else:
        import datasets

        datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return path


def write_scores(run: Path, model: str | None = "facebook/opt-350m", manifest: bool = True) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    p0 = rng.uniform(5, 50, N_ROWS)
    p1 = p0 * rng.uniform(0.3, 0.9, N_ROWS)
    p1[list(NAN_ROWS)] = np.nan
    pq.write_table(pa.table({"id": np.arange(N_ROWS), "ppl_0": p0, "ppl_1": p1}), run / "scores.parquet")
    if manifest:
        (run / "manifest.json").write_text(json.dumps(
            {"steps": {"score": {"config": {"model": model, "gguf_file": None, "epochs": 1}, "status": "complete"}}}))
    return run / "scores.parquet"


def sha256_independent(path: Path) -> str:
    """sha256 of a file; of a folder: every file's relative path then bytes, sorted by path."""
    h = hashlib.sha256()
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(str(f.relative_to(path)).encode())
            h.update(f.read_bytes())
    else:
        h.update(path.read_bytes())
    return h.hexdigest()


def front_matter(card: Path) -> dict:
    text = card.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    end = text.index("\n---\n", 4)
    return yaml.safe_load(text[4:end])


def load_by_name(folder: Path, name: str, cache: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    return datasets.load_dataset(str(folder), name=name, split="train", cache_dir=str(cache))


# the sizes, by hand: 18 rows with a value; 10 % -> 10 parts of array_split(18): 2,2,...,2,1,1 -> low = 2;
# 50 % -> 2 parts of 9 -> high = 9
SUBSETS = [("10_low", dict(percent=10, band="low", seed=5), 2), ("50_high", dict(percent=50, band="high", seed=42), 9)]


@pytest.mark.parametrize("fmt", ["json", "jsonl", "parquet", "csv", "hf"])
def test_two_subsets_in_one_folder_load_by_name(tmp_path, monkeypatch, fmt) -> None:
    data = write_data(tmp_path, fmt)
    scores = write_scores(tmp_path / "run")
    folder = tmp_path / "subsets"
    for stem, kw, _ in SUBSETS:
        r = select_subset(data, scores, folder / (stem + SUFFIX[fmt]),
                          SubsetSpec(metric="lp_app", epoch=1, strategy="global", **kw))
        assert r.report["card"] == str(folder / "README.md") and r.report["card_note"] is None
    card = folder / "README.md"
    assert MARKER in card.read_text()
    meta = front_matter(card)
    assert [c["config_name"] for c in meta["configs"]] == ["10_low", "50_high"]
    for stem, kw, n_expected in SUBSETS:
        ds = load_by_name(folder, stem, tmp_path / "hf-cache", monkeypatch)
        assert len(ds) == n_expected
        assert ds.column_names == ["instruction", "input", "output"]
        if fmt not in ("csv", "hf"):  # CSV reads empty strings back as None
            written = [json.loads(x) for x in (folder / (stem + SUFFIX[fmt])).read_text().splitlines()] \
                if fmt == "jsonl" else (json.loads((folder / (stem + ".json")).read_text()) if fmt == "json"
                                        else pq.read_table(folder / (stem + ".parquet")).to_pylist())
            assert ds.to_list() == written
            assert all(row in alpaca_rows(N_ROWS) for row in written)
        prov = meta["lpselect"][stem]
        assert prov["subset_file"] == stem + SUFFIX[fmt]
        assert prov["scorer"] == "facebook/opt-350m"
        assert (prov["metric"], prov["epoch"], prov["strategy"]) == ("lp_app", 1, "global")
        assert (prov["percent"], prov["band"], prov["seed"]) == (kw["percent"], kw["band"], kw["seed"])
        assert (prov["n_rows"], prov["n_selected"], prov["n_nan_left_out"]) == (N_ROWS, n_expected, len(NAN_ROWS))
        assert prov["lpselect_version"] == lpselect.__version__
        assert prov["data_sha256"] == sha256_independent(data)
        report = json.loads((folder / (stem + SUFFIX[fmt] + ".report.json")).read_text())
        shared = {"data": Path(report["data"]).name, "scores": "run/scores.parquet"}  # no local path in a card
        assert {k: shared.get(k, report[k]) for k in prov} == prov  # the card is rebuilt from the reports
        assert prov["data"] == data.name and str(tmp_path) not in card.read_text()
        assert f"## {stem}" in card.read_text()


def test_subset_still_loads_as_a_plain_json_file(tmp_path, monkeypatch) -> None:
    data = write_data(tmp_path, "json")
    r = select_subset(data, write_scores(tmp_path / "run"), tmp_path / "s" / "10_low.json",
                      SubsetSpec(strategy="global"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets

    ds = datasets.load_dataset("json", data_files=str(r.path), split="train", cache_dir=str(tmp_path / "c"))
    assert len(ds) == 2


def test_the_card_follows_the_folder(tmp_path) -> None:
    data = write_data(tmp_path, "json")
    scores = write_scores(tmp_path / "run")
    folder = tmp_path / "subsets"
    for p in (10, 25, 50):
        select_subset(data, scores, folder / f"{p}_low.json", SubsetSpec(percent=p, strategy="global"))
    assert [c["config_name"] for c in front_matter(folder / "README.md")["configs"]] == ["10_low", "25_low", "50_low"]
    (folder / "25_low.json").unlink()  # a subset removed by hand drops out at the next rebuild
    r = select_subset(data, scores, folder / "10_low.json", SubsetSpec(percent=10, strategy="global", seed=9))
    meta = front_matter(folder / "README.md")
    assert [c["config_name"] for c in meta["configs"]] == ["10_low", "50_low"]
    assert meta["lpselect"]["10_low"]["seed"] == 9 == r.report["seed"]


def test_a_readme_lpselect_did_not_write_is_left_alone(tmp_path) -> None:
    data = write_data(tmp_path, "json")
    scores = write_scores(tmp_path / "run")
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "README.md").write_text("# my own notes\n")
    out = folder / "10_low.json"
    args = ["select", "--data", data, "--scores", scores, "--out", out, "--strategy", "global"]
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    assert (folder / "README.md").read_text() == "# my own notes\n"
    card = folder / "10_low.card.md"
    assert "not written by lpselect" in " ".join(res.output.split()) and str(card) in res.output.replace("\n", "")
    report = json.loads(Path(str(out) + ".report.json").read_text())
    assert report["card"] == str(card) and "not written by lpselect" in report["card_note"]
    meta = front_matter(card)
    assert [c["config_name"] for c in meta["configs"]] == ["10_low"]
    assert meta["lpselect"]["10_low"]["data_sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()


@pytest.mark.parametrize(("model", "manifest", "expected"), [
    (None, True, "smollm2-135m-instruct"),  # the default scorer is recorded as model None
    ("facebook/opt-350m", False, "unknown"),
])
def test_scorer_name(tmp_path, model, manifest, expected) -> None:
    data = write_data(tmp_path, "json")
    scores = write_scores(tmp_path / "run", model=model, manifest=manifest)
    r = select_subset(data, scores, tmp_path / "s" / "x.json", SubsetSpec(strategy="global"))
    assert r.report["scorer"] == expected == front_matter(tmp_path / "s" / "README.md")["lpselect"]["x"]["scorer"]


def test_local_scorer_paths_never_reach_the_shared_files(tmp_path) -> None:
    """A scorer loaded from a local folder is named by that folder's name (a hub id stays as it is), also inside
    a consensus; no absolute path is left anywhere in README.md or dataset_info.json."""
    data = write_data(tmp_path, "json")
    local_a, local_b = str(tmp_path / "models" / "opt-350m"), "/home/alice/models/opt-1b"
    a = write_scores(tmp_path / "run_a", model=local_a)
    b = write_scores(tmp_path / "run_b", model=local_b)
    hub = write_scores(tmp_path / "run_hub", model="facebook/opt-350m")
    out = tmp_path / "s"
    single = select_subset(data, a, out / "single.json", SubsetSpec(strategy="global"))
    both = select_subset(data, [a, b, hub], out / "both.json", SubsetSpec(strategy="global"))
    assert single.report["scorer"] == local_a  # the report keeps the path, for the person who selected
    prov = front_matter(out / "README.md")["lpselect"]
    assert prov["single"]["scorer"] == "opt-350m"
    assert prov["both"]["scorer"] == "consensus of 3 score files: opt-350m, opt-1b, facebook/opt-350m"
    assert both.report["scorer"].startswith("consensus of 3 score files: /")
    for name in ("README.md", "dataset_info.json"):
        text = (out / name).read_text(encoding="utf-8")
        assert str(tmp_path) not in text and "/home/" not in text and "alice" not in text
        assert not re.search(r"(?<![\w.\-/])/(home|tmp|Users|root|work)\b", text), name


def test_the_card_says_how_the_rows_were_counted_and_deduplicated(tmp_path) -> None:
    """budget, n_requested, max_value and dedup are in the card, as the report has them."""
    rows = alpaca_rows(N_ROWS)
    rows[1] = dict(rows[0])  # row 1 repeats row 0: --dedup exact removes it
    data = tmp_path / "data.json"
    data.write_text(json.dumps(rows))
    scores = write_scores(tmp_path / "run")
    spec = SubsetSpec(strategy="global", n=5, max_value=1e9, dedup="exact")
    r = select_subset(data, scores, tmp_path / "s" / "x.json", spec)
    prov = front_matter(tmp_path / "s" / "README.md")["lpselect"]["x"]
    assert prov["budget"] == "n" and prov["n_requested"] == 5 and prov["max_value"] == 1e9
    assert prov["dedup"]["mode"] == "exact" and prov["dedup"]["removed"] == 1
    assert set(prov["dedup"]) <= {"mode", "threshold", "removed", "kept"}  # no row texts (examples)
    assert prov["n_selected"] == len(r.ids) == 5
    card = (tmp_path / "s" / "README.md").read_text(encoding="utf-8")
    assert "| budget | n |" in card and "| n_requested | 5 |" in card and "| dedup | mode=exact" in card
