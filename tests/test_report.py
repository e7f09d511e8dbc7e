"""lpselect.analysis.report: the one-file HTML report on synthetic runs (clusters or not, NaN rows, 0/1/3
epochs, 52k rows), its numbers against independent numpy, and the page as headless Chromium renders it."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import shared_data
from scipy import stats

from lpselect.analysis import summary
from lpselect.analysis.report import SECTION_IDS, write_report
from lpselect.config import SubsetSpec
from lpselect.core.selection import select
from lpselect.steps.select import select_subset

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NAN_ROWS = (3, 50, 77)  # no perplexity at all
CATEGORIES = ("open_qa", "brainstorming", "classification", "summarization")


# ---- a synthetic run folder --------------------------------------------------------------------------------


def make_run(root: Path, *, n: int = 240, epochs: int = 3, clusters: int | None = 6, data: bool = True,
             subsets: bool = True, seed: int = 0, payload: str = "") -> Path:
    """manifest.json + scores.parquet (NaN rows, one row NaN in the last epoch only), optionally
    clusters.parquet, a Dolly-style data file with categories, and a subset written by select_subset.
    ``payload`` starts every instruction and response (markup a page must not run)."""
    rng = np.random.default_rng(seed)
    run = root / "run"
    run.mkdir(parents=True)
    cols = [np.exp(rng.normal(2.0, 0.6, n))]
    for _ in range(epochs):
        cols.append(cols[-1] * rng.uniform(0.4, 0.98, n))
    ppl = np.stack(cols, axis=1)
    ppl[list(NAN_ROWS)] = np.nan
    if epochs:
        ppl[5, -1] = np.nan
    table = {"id": np.arange(n)} | {f"ppl_{e}": ppl[:, e] for e in range(epochs + 1)}
    table["n_scored_tokens"] = rng.integers(1, 400, n)
    table["truncated"] = np.where(rng.uniform(size=n) < 0.1, rng.integers(1, 50, n), 0)
    table["prompt_shortened"] = rng.uniform(size=n) < 0.05
    pq.write_table(pa.table(table), run / "scores.parquet")
    manifest: dict = {"steps": {"score": {"status": "complete", "config": {"model": "tiny", "epochs": epochs},
                                          "counts": {"rows": n, "nan_rows": len(NAN_ROWS) + (epochs > 0)}}}}
    data_path = root / "dolly.json"
    if data:
        rows = [{"instruction": f"{payload}Question <{i}> & answer" + " long" * (i % 90), "context": "",
                 "response": f"{payload}answer {i}", "category": CATEGORIES[i % len(CATEGORIES)]}
                for i in range(n)]
        data_path.write_text(json.dumps(rows))
        manifest["steps"]["score"]["inputs"] = {"data": {"path": str(data_path),
                                                         "sha256": hashlib.sha256(data_path.read_bytes()).hexdigest()}}
    (run / "manifest.json").write_text(json.dumps(manifest))
    if clusters:
        pq.write_table(pa.table({"id": np.arange(n), "cluster": rng.integers(0, clusters, n)}),
                       run / "clusters.parquet")
    if subsets and data and epochs:
        metric = "lp" if epochs >= 2 else "lp_app"
        select_subset(data_path, run / "scores.parquet", run / "subsets" / f"10_low_{metric}1-tiny.json",
                      SubsetSpec(metric=metric, percent=10, strategy="cluster" if clusters else "global"),
                      clusters=run / "clusters.parquet" if clusters else None)
    return run


def read_ppl(run: Path) -> np.ndarray:
    t = pq.read_table(run / "scores.parquet")
    return np.stack([t.column(c).to_numpy() for c in t.column_names if c.startswith("ppl_")], axis=1)


class Page(HTMLParser):
    """Sections by id: their text, tables (rows of cell text) and image sources; every id on the page."""

    def __init__(self, text: str):
        super().__init__()
        self.ids: list[str] = []
        self.sections: dict[str, dict] = {}
        self.current: dict | None = None
        self.cell: list[str] | None = None
        self.external: list[str] = []
        self.json: dict[str, str] = {}  # inert JSON blocks by id
        self.json_id: str | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.append(str(a["id"]))
        if tag == "section":
            self.current = self.sections.setdefault(str(a["id"]), {"text": [], "tables": [], "images": [],
                                                                            "circles": []})
        if tag in ("link", "iframe", "object", "embed") or (tag == "script" and a.get("src")):
            self.external.append(tag)
        if tag == "script" and a.get("type") == "application/json":
            self.json_id = str(a.get("id"))
        for key in ("src", "href"):
            if a.get(key) and not (a[key].startswith("data:image/png;base64,") or a[key].startswith("#")):
                self.external.append(str(a[key]))
        if self.current is None:
            return
        if tag == "img":
            self.current["images"].append(a["src"])
        elif tag == "circle":
            self.current["circles"].append(a)
        elif tag == "table":
            self.current["tables"].append([])
        elif tag == "tr":
            self.current["tables"][-1].append([])
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self.cell is not None and self.current is not None:
            self.current["tables"][-1][-1].append("".join(self.cell))
            self.cell = None
        elif tag == "section":
            self.current = None

    def handle_data(self, data: str) -> None:
        if self.json_id is not None:
            self.json[self.json_id] = data
            self.json_id = None
            return
        if self.cell is not None:
            self.cell.append(data)
        if self.current is not None:
            self.current["text"].append(data)

    def text(self, section: str) -> str:
        return " ".join(self.sections[section]["text"])

    def rows(self, section: str, table: int = 0) -> list[list[str]]:
        return self.sections[section]["tables"][table]


def render(run: Path) -> Page:
    path = write_report(run)
    assert path == run / "report.html"
    return Page(path.read_text(encoding="utf-8"))


def lp1(ppl: np.ndarray) -> np.ndarray:
    total = ppl[:, 0] - ppl[:, -1]
    return np.where(total == 0, 0.0, (ppl[:, 0] - ppl[:, 1]) / np.where(total == 0, 1.0, total))


def hardest_easiest(metric: np.ndarray, k: int = 10) -> tuple[list[int], list[int]]:
    finite = [i for i in range(len(metric)) if math.isfinite(metric[i])]
    hardest = sorted(finite, key=lambda i: (metric[i], i))[:k]
    return hardest, sorted(finite, key=lambda i: (-metric[i], i))[:k]


# ---- the page ----------------------------------------------------------------------------------------------


def test_full_run_has_every_section_and_nothing_external(tmp_path: Path):
    page = render(make_run(tmp_path))
    assert list(page.sections) == list(SECTION_IDS)
    assert page.external == []
    for sid in ("perplexity", "learning-percentage", "agreement", "subset-details"):
        images = page.sections[sid]["images"]
        assert images, sid
        for src in images:
            png = base64.b64decode(src.split(",", 1)[1])
            assert png.startswith(PNG_MAGIC) and len(png) > 5000, sid
    assert "LP(1)" in page.text("extremes") and "Question <3> & answer" not in page.text("extremes")
    assert page.sections["data-map"]["images"] == [] and len(page.sections["data-map"]["circles"]) > 200


def test_numbers_on_the_page_match_numpy(tmp_path: Path):
    run = make_run(tmp_path)
    page = render(run)
    ppl = read_ppl(run)
    t = pq.read_table(run / "scores.parquet")
    quality = {r[0]: r[1] for r in page.rows("quality")}
    assert quality["rows with a NaN perplexity (any epoch)"] == str(len(NAN_ROWS) + 1)
    assert quality["NaN in ppl_0"] == str(len(NAN_ROWS))
    assert quality["NaN in ppl_3"] == str(len(NAN_ROWS) + 1)
    n_truncated = int((t.column("truncated").to_numpy() > 0).sum())
    assert quality["rows truncated (tokens cut > 0)"] == f"{n_truncated:,}"
    assert quality["rows with a shortened prompt"] == str(int(t.column("prompt_shortened").to_numpy().sum()))
    # agreement: Spearman of LP(1) vs LP_app(1) by scipy on the rows where both exist
    lp, lpa = lp1(ppl), (ppl[:, 0] - ppl[:, 1]) / ppl[:, 0]
    keep = np.isfinite(lp) & np.isfinite(lpa)
    spearman, kendall, n, dropped = page.rows("agreement")[1]
    assert float(spearman) == pytest.approx(stats.spearmanr(lp[keep], lpa[keep])[0], abs=5e-4)
    assert float(kendall) == pytest.approx(stats.kendalltau(lp[keep], lpa[keep])[0], abs=5e-4)
    assert (n, dropped) == (str(keep.sum()), str((~keep).sum()))
    # hardest / easiest 10 by LP(1), ties by id, NaN rows never listed
    hardest, easiest = hardest_easiest(lp)
    assert [int(r[0]) for r in page.rows("extremes", 0)[1:]] == hardest
    assert [int(r[0]) for r in page.rows("extremes", 1)[1:]] == easiest
    header = page.rows("extremes", 0)[0]
    assert header == ["id", "LP(1)", "cluster", "instruction", "response"]
    first = page.rows("extremes", 0)[1]
    assert first[-2].startswith(f"Question <{hardest[0]}> & answer")  # escaped on the page, read back intact
    assert first[-1] == f"answer {hardest[0]}"  # the response that made it hard
    labels = pq.read_table(run / "clusters.parquet").column("cluster").to_numpy()
    assert first[2] == str(labels[hardest[0]])
    assert [int(r[0]) for r in page.rows("extreme-numbers", 1)[1:]] == easiest
    numbers = page.rows("extreme-numbers", 0)
    assert numbers[0][-1] == "category" and numbers[1][-1] == CATEGORIES[hardest[0] % len(CATEGORIES)]
    assert float(numbers[1][3]) == pytest.approx(ppl[hardest[0], 0], rel=1e-3)  # id, LP(1), LP_app(1), P0
    # per-epoch perplexity table: mean of every finite value
    p_rows = page.rows("perplexity")
    for e in range(4):
        v = ppl[:, e][np.isfinite(ppl[:, e])]
        assert p_rows[e + 1][1] == str(len(v))
        assert float(p_rows[e + 1][2]) == pytest.approx(v.mean(), rel=1e-3)


def test_subset_section_recomputes_the_written_subset(tmp_path: Path):
    run = make_run(tmp_path)
    report = json.loads(next((run / "subsets").glob("*.report.json")).read_text())
    page = render(run)
    header, row = page.rows("subset-details")[:2]
    assert header[6:10] == ["rows (report)", "rows (shown)", "clusters hit", "rows from"]
    assert row[6] == row[7] == str(report["n_selected"])
    labels = pq.read_table(run / "clusters.parquet").column("cluster").to_numpy()
    assert row[8] == f"{len(np.unique(labels))} / {len(np.unique(labels))}"
    assert row[9] == "ids in its report"
    assert len(page.sections["subset-details"]["images"]) == 1
    # the first-screen table: rows, share of the data, clusters hit
    assert page.rows("subsets")[0] == ["subset", "rule", "rows", "share", "clusters hit"]
    top = page.rows("subsets")[1]
    n = pq.read_table(run / "scores.parquet").num_rows
    assert top[2:] == [str(report["n_selected"]), f"{100 * report['n_selected'] / n:.1f} %", row[8]]


def _subset_with_other_clusters(tmp_path: Path, *, with_ids: bool) -> tuple[Path, list[int], np.ndarray]:
    """A run whose subset was selected with a clusters file other than the run's own: (run, its true ids,
    the run's cluster labels)."""
    run = make_run(tmp_path, subsets=False)
    labels = pq.read_table(run / "clusters.parquet").column("cluster").to_numpy()
    other = tmp_path / "other-clusters.parquet"
    other_labels = np.random.default_rng(7).integers(0, 3, len(labels))
    pq.write_table(pa.table({"id": np.arange(len(labels)), "cluster": other_labels}), other)
    out = run / "subsets" / "10_low_lp1-other.json"
    result = select_subset(tmp_path / "dolly.json", run / "scores.parquet", out, SubsetSpec(metric="lp", percent=10),
                           clusters=other)
    # the true rows, independently of any report: each subset row's id by its text in the data
    data = json.loads((tmp_path / "dolly.json").read_text())
    index = {r["instruction"]: i for i, r in enumerate(data)}
    true_ids = [index[r["instruction"]] for r in json.loads(out.read_text())]
    report_path = Path(str(out) + ".report.json")
    report = json.loads(report_path.read_text())
    if with_ids:
        report.setdefault("ids", result.ids.tolist())  # what select records (a list of ints, in output order)
    else:
        report.pop("ids", None)  # a report written before select recorded them
    report_path.write_text(json.dumps(report))
    return run, true_ids, labels


def test_subset_of_other_clusters_shows_its_true_rows(tmp_path: Path):
    run, true_ids, labels = _subset_with_other_clusters(tmp_path, with_ids=True)
    # the run's own clusters pick other rows: what the report used to show
    ppl = read_ppl(run)
    own = select((ppl[:, 0] - ppl[:, 1]) / (ppl[:, 0] - ppl[:, -1]), labels, 10, "low")
    assert sorted(own.ids.tolist()) != sorted(true_ids)
    row = page_row(render(run), "10_low_lp1-other.json")
    assert row[7] == str(len(true_ids)) and row[9] == "ids in its report"
    hit = len(np.unique(labels[true_ids]))  # clusters of the run that the true rows fall in
    assert row[8] == f"{hit} / {len(np.unique(labels))}"


def test_old_subset_without_ids_is_refused_in_one_line(tmp_path: Path):
    """A report written before select recorded the ids: selecting it again could show other rows than the file
    holds (another clusters file, another version), so the report says to select it again."""
    from lpselect.errors import InputError

    run, _, _ = _subset_with_other_clusters(tmp_path, with_ids=False)
    report_path = run / "subsets" / "10_low_lp1-other.json.report.json"
    with pytest.raises(InputError) as e:
        write_report(run)
    assert str(report_path) in str(e.value) and "lpselect select" in str(e.value) and "\n" not in str(e.value)


def page_row(page: Page, name: str) -> list[str]:
    return next(r for r in page.rows("subset-details") if r[0] == name)


def test_report_refuses_data_that_is_not_the_runs(tmp_path: Path):
    from lpselect.errors import RunFolderError

    run = make_run(tmp_path, subsets=False)
    data = tmp_path / "dolly.json"
    rows = json.loads(data.read_text())
    data.write_text(json.dumps(rows[1:] + rows[:1]))  # shuffled in place: the manifest's sha256 no longer holds
    with pytest.raises(RunFolderError) as e:
        write_report(run)
    assert str(data) in str(e.value) and str(run / "scores.parquet") in str(e.value) and "\n" not in str(e.value)
    data.write_text("\n".join(json.dumps(r) for r in rows))  # the same rows re-serialised: accepted
    data.rename(tmp_path / "moved.json")
    # a clusters.parquet made from other rows than the scores
    run2 = make_run(tmp_path / "two", subsets=False)
    manifest = json.loads((run2 / "manifest.json").read_text())
    manifest["steps"]["cluster"] = {"inputs": {"data": {"path": str(tmp_path / "moved.json"), "sha256": "y"}}}
    (run2 / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RunFolderError, match="different data"):
        write_report(run2)


def test_imported_reference_scores_say_they_are_not_checked(tmp_path: Path):
    run = make_run(tmp_path, data=False, subsets=False)
    (run / "manifest.json").write_text(json.dumps({"steps": {"import_reference": {"status": "complete"}}}))
    page = render(run)
    facts = {r[0]: r[1] for r in page.rows("summary")}
    assert "reference's pickles" in facts["data check"] and "no data hash" in facts["data check"]


def test_no_clusters_no_data_no_subsets(tmp_path: Path):
    page = render(make_run(tmp_path, clusters=None, data=False, subsets=False))
    assert list(page.sections) == list(SECTION_IDS)
    assert "no clusters.parquet" in page.text("subset-details")
    assert "no category" in page.text("subset-details")
    assert "computed for this report" in page.text("subsets")  # the default 10 % low selection
    assert "global 10 % bands" in page.text("data-map")
    assert "No instruction text" in page.text("extremes")
    assert page.rows("extremes", 0)[0] == ["id", "LP(1)"]
    assert page.rows("extreme-numbers", 0)[0][-1] == "scored tokens"


def test_one_epoch_uses_lp_app(tmp_path: Path):
    run = make_run(tmp_path, epochs=1)
    page = render(run)
    ppl = read_ppl(run)
    assert "LP needs n >= 2" in page.text("learning-percentage")
    assert "Needs at least 2 trained epochs" in page.text("agreement")
    assert page.sections["agreement"]["images"] == []
    assert page.sections["data-map"]["circles"]
    lpa = (ppl[:, 0] - ppl[:, 1]) / ppl[:, 0]
    assert [int(r[0]) for r in page.rows("extremes", 0)[1:]] == hardest_easiest(lpa)[0]
    assert page.rows("extremes", 0)[0][1] == "LP_app(1)"
    assert [r[0] for r in page.rows("learning-percentage", 0)[1:]] == ["LP_app(1)"]
    assert page.rows("subset-details")[1][1] == "lp_app"


def test_zero_epochs_still_reports(tmp_path: Path):
    page = render(make_run(tmp_path, epochs=0))
    assert list(page.sections) == list(SECTION_IDS)
    assert page.sections["perplexity"]["images"]
    for sid in ("learning-percentage", "agreement", "data-map", "extremes"):
        assert page.sections[sid]["images"] == [] and "epoch" in page.text(sid), sid


@pytest.mark.parametrize("value", [np.nan, 2.0])
def test_degenerate_scores_still_report(tmp_path: Path, value: float):
    """Every row NaN, or every perplexity equal (LP 0 everywhere, LP_app 0, correlations undefined)."""
    n = 30
    table = {"id": np.arange(n)} | {f"ppl_{e}": np.full(n, value) for e in range(4)}
    pq.write_table(pa.table(table), tmp_path / "scores.parquet")
    pq.write_table(pa.table({"id": np.arange(n), "cluster": np.arange(n) % 3}), tmp_path / "clusters.parquet")
    page = Page(write_report(tmp_path).read_text())
    assert list(page.sections) == list(SECTION_IDS)
    quality = {r[0]: r[1] for r in page.rows("quality")}
    assert quality["rows with a NaN perplexity (any epoch)"] == ("30" if math.isnan(value) else "0")
    if not math.isnan(value):
        assert quality["LP set to 0 because P0 == P3"] == "30"
        assert page.rows("agreement")[1][0] == "NaN"  # a constant ranking has no rank correlation


def test_out_option_and_missing_run(tmp_path: Path):
    run = make_run(tmp_path, subsets=False)
    target = tmp_path / "elsewhere" / "r.html"
    assert write_report(run, target) == target and target.read_text().startswith("<!DOCTYPE html>")
    from lpselect.errors import InputError

    with pytest.raises(InputError):
        write_report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="scores"):
        write_report(tmp_path / "empty")


def test_report_command(tmp_path: Path):
    from typer.testing import CliRunner

    from lpselect.cli import app

    run = make_run(tmp_path, subsets=False)
    r = CliRunner().invoke(app, ["report", str(run), "--out", str(tmp_path / "x.html")])
    assert r.exit_code == 0, r.output
    assert "x.html" in r.output and (tmp_path / "x.html").exists()
    r = CliRunner().invoke(app, ["report", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "error" in r.output
    # --subsets, repeated: a folder of subsets and one subset file, both written outside the run
    a = select_subset(tmp_path / "dolly.json", run / "scores.parquet", tmp_path / "picked" / "a.json",
                      SubsetSpec(metric="lp", percent=10), clusters=run / "clusters.parquet")
    b = select_subset(tmp_path / "dolly.json", run / "scores.parquet", tmp_path / "b.json",
                      SubsetSpec(metric="lp", percent=5, band="high", strategy="global"))
    r = CliRunner().invoke(app, ["report", str(run), "--subsets", str(tmp_path / "picked"),
                                 "--subsets", str(tmp_path / "b.json")])
    assert r.exit_code == 0, r.output
    rows = Page((run / "report.html").read_text()).rows("subsets")
    assert [row[0] for row in rows[1:]] == ["a.json", "b.json"]
    assert [row[2] for row in rows[1:]] == [str(len(a.ids)), str(len(b.ids))]
    r = CliRunner().invoke(app, ["report", str(run), "--subsets", str(tmp_path / "nothing.json")])
    assert r.exit_code == 2 and "nothing.json" in r.output and "not found" in r.output


# ---- the first screen and the interactive data map --------------------------------------------------------


def test_answer_first_and_configuration_collapsed_at_the_end(tmp_path: Path):
    text = write_report(make_run(tmp_path)).read_text()
    page = Page(text)
    assert list(page.sections)[:3] == ["subsets", "data-map", "extremes"]
    assert list(page.sections)[-1] == "summary"
    top = text[text.index('<div class="top">'):text.index('<section id="subset-details"')]
    for sid in ("subsets", "data-map", "extremes"):
        assert f'<section id="{sid}">' in top
    # each step's configuration and versions are in a closed <details>, after every chart
    step = text.index("<details><summary>step: score (config, counts")
    assert step > text.index('<section id="quality">')
    assert "config.model" in text[step:text.index("</details>", step)]


def _band(metric: np.ndarray, percent: float = 10) -> np.ndarray:
    """docs/method.md §8 global bands restated: finite rows by (metric, id) in round(100/p) parts, first r of q + 1."""
    order = sorted((i for i in range(len(metric)) if math.isfinite(metric[i])), key=lambda i: (metric[i], i))
    q, r = divmod(len(order), round(100 / percent))
    low, high = q + (r > 0), q  # part k holds q + 1 rows when k < r: the first when r > 0, the last (k = 9) never
    codes = np.full(len(metric), -1)
    codes[order] = 1
    codes[order[:low]] = 0
    codes[order[len(order) - high:]] = 2
    return codes


def test_data_map_points_carry_their_row(tmp_path: Path):
    run = make_run(tmp_path, n=300)
    page = render(run)
    data = json.loads(page.json["map-data"])
    circles = page.sections["data-map"]["circles"]
    ppl = read_ppl(run)
    lp = lp1(ppl)
    finite = np.isfinite(lp) & np.isfinite(ppl[:, -1])
    assert len(circles) == int(finite.sum()) == len(data["id"])  # under 5,000 rows: every row with a value
    labels = pq.read_table(run / "clusters.parquet").column("cluster").to_numpy()
    report = json.loads(next((run / "subsets").glob("*.report.json")).read_text())
    bands = _band(lp)
    rows = json.loads((tmp_path / "dolly.json").read_text())
    for c in circles:
        k = int(c["data-k"])
        i = data["id"][k]
        assert data["metric"][k] == pytest.approx(lp[i], rel=1e-3)
        assert data["ppl"][k] == pytest.approx(ppl[i, -1], rel=1e-3)
        assert data["cluster"][k] == labels[i] and data["band"][k] == bands[i]
        assert data["subsets"][k] == (i in report["ids"])
        assert data["text"][k] == [rows[i]["instruction"][:200] + ("…" if len(rows[i]["instruction"]) > 200
                                                                   else ""), rows[i]["response"]]
    assert data["metric_name"] == "LP(1)" and data["ppl_name"] == "final perplexity P3"
    assert f"all {300 - len(NAN_ROWS) - 1} rows with a value drawn" in page.text("data-map")  # row 5: no P3


def test_text_from_the_data_cannot_inject_markup(tmp_path: Path):
    payload = "</script><script>alert(1)</script><img src=x onerror=alert(2)>"
    run = make_run(tmp_path, n=100, payload=payload)
    text = write_report(run).read_text()
    assert "<script>alert" not in text and "<img src=x" not in text and "</script><script>alert" not in text
    page = Page(text)
    assert page.external == []
    first = page.rows("extremes", 0)[1]  # read back as text, intact
    assert first[-2].startswith(payload + "Question <") and first[-1].startswith(payload + "answer ")
    data = json.loads(page.json["map-data"])
    assert all(t[0].startswith(payload) and t[1].startswith(payload) for t in data["text"])


def test_subsets_written_elsewhere(tmp_path: Path):
    run = make_run(tmp_path, subsets=False)
    chosen = select_subset(tmp_path / "dolly.json", run / "scores.parquet", tmp_path / "out" / "pick.json",
                           SubsetSpec(metric="lp", percent=20), clusters=run / "clusters.parquet")
    for given in (tmp_path / "out", tmp_path / "out" / "pick.json", tmp_path / "out" / "pick.json.report.json"):
        page = Page(write_report(run, subsets=[given, tmp_path / "out"]).read_text())  # the same one, once
        labels = pq.read_table(run / "clusters.parquet").column("cluster").to_numpy()
        expected = ["pick.json", "hardest 20 % by lp(1)", str(len(chosen.ids)),
                    f"{100 * len(chosen.ids) / len(labels):.1f} %",
                    f"{len(np.unique(labels[chosen.ids]))} / {len(np.unique(labels))}"]
        assert page.rows("subsets")[1:] == [expected]
    from lpselect.errors import InputError

    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=re.escape("no *.report.json")):
        write_report(run, subsets=[tmp_path / "empty"])
    (tmp_path / "lonely.json").write_text("[]")
    with pytest.raises(InputError, match=re.escape("no lonely.json.report.json beside")):
        write_report(run, subsets=[tmp_path / "lonely.json"])
    (tmp_path / "bad.json.report.json").write_text("{")
    with pytest.raises(InputError, match="not a readable subset report"):
        write_report(run, subsets=[tmp_path / "bad.json.report.json"])


# ---- the numbers behind the figures ------------------------------------------------------------------------


def test_histograms_never_drop_data():
    rng = np.random.default_rng(1)
    v = np.concatenate([rng.normal(size=1000), [1e6, -1e6, np.nan, np.inf]])
    h = summary.clipped_histogram(v)
    assert h.total == 1002  # the two outliers sit in the edge bins, NaN and inf are not values
    assert h.n_below >= 1 and h.n_above >= 1
    assert h.counts[0] >= h.n_below and h.counts[-1] >= h.n_above
    p = np.concatenate([np.exp(rng.normal(2, 1, 500)), [np.nan, 1.0, 3e5]])
    assert summary.log_histogram(p).total == 502
    edges = np.logspace(0.5, 1.5, 11)  # narrower than the data: everything still counted
    assert summary.log_histogram(p, edges=edges).total == 502
    flat = summary.clipped_histogram(np.full(10, 0.25))
    assert flat.total == 10


def test_scatter_sample_is_fixed_and_bounded():
    ids = np.arange(52_002)
    a, b = summary.sample_rows(ids, 5000), summary.sample_rows(ids, 5000)
    np.testing.assert_array_equal(a, b)
    assert len(a) == 5000 == len(np.unique(a))
    np.testing.assert_array_equal(summary.sample_rows(ids[:10], 5000), ids[:10])


def test_band_codes_and_coverage_by_hand():
    m = np.array([0.5, 0.1, np.nan, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6, 0.05])
    codes = summary.band_codes(m, percent=20)  # 10 scored rows, 5 parts of 2
    assert codes[2] == -1
    assert set(np.flatnonzero(codes == 0)) == {10, 1} and set(np.flatnonzero(codes == 2)) == {7, 3}
    cov = summary.cluster_coverage(np.array([0, 1, 4]), np.array([0, 0, 1, 1, 1, 2]))
    assert (cov.n_clusters, cov.n_clusters_hit) == (3, 2)
    np.testing.assert_allclose(cov.share_selected, [1.0, 1 / 3, 0.0])
    shares = summary.category_shares(["a", "b", "a", None, "a"], np.array([1, 3]))
    assert shares[0] == ("a", 3, 0.6, 0, 0.0)
    assert {s[0]: s[3] for s in shares} == {"a": 0, "(none)": 1, "b": 1}


# ---- scale and real data -----------------------------------------------------------------------------------


def test_52k_rows_with_1000_clusters_in_seconds(tmp_path: Path):
    run = make_run(tmp_path, n=52_002, clusters=1000, data=False, subsets=False, seed=4)
    (run / "subsets").mkdir()
    ppl = read_ppl(run)
    labels = pq.read_table(run / "clusters.parquet").column("cluster").to_numpy()
    for p in (3, 10):  # the reports select_subset would write, with the ids the report shows
        ids = select((ppl[:, 0] - ppl[:, 1]) / (ppl[:, 0] - ppl[:, -1]), labels, p, "low").ids
        (run / "subsets" / f"{p}_low_lp1-tiny.json.report.json").write_text(json.dumps(
            {"metric": "lp", "epoch": 1, "percent": p, "band": "low", "strategy": "cluster",
             "scores": str(run / "scores.parquet"), "clusters": str(run / "clusters.parquet"),
             "order": "reference", "seed": 42, "n_selected": len(ids), "ids": ids.tolist()}))
    t0 = time.perf_counter()
    page = render(run)
    elapsed = time.perf_counter() - t0
    assert elapsed < 60, f"report took {elapsed:.1f} s"  # about 3 s on one free core
    assert (run / "report.html").stat().st_size < 5_000_000
    assert len(page.sections["subset-details"]["images"]) == 2
    assert "5,000 of 51,998 rows drawn (a fixed-seed sample" in page.text("data-map")  # 4 rows NaN
    assert len(page.sections["data-map"]["circles"]) == 5000


def test_report_on_the_reference_opt350m(tmp_path: Path):
    from lpselect.interop.reference import import_reference

    folder = shared_data("reference-pplx", "alpaca-opt-350m")
    import_reference([folder / f"epoch-{e}.pkl" for e in ("pre", "1", "2", "3")], tmp_path / "run")
    page = render(tmp_path / "run")
    quality = {r[0]: r[1] for r in page.rows("quality")}
    assert quality["reference rows 1.0 at every epoch (no response token)"] == "1"
    assert float(page.rows("agreement")[1][0]) == pytest.approx(0.81, abs=0.01)  # docs/method.md §6
    assert "no n_scored_tokens column" in page.text("subset-details")


# ---- headless Chromium -------------------------------------------------------------------------------------


def _chromium() -> str:
    for name in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if os.path.exists(name):
            return name
    found = shutil.which("chromium")
    if found:
        return found
    if os.environ.get("LPSELECT_REQUIRE_SHARED") == "1":
        pytest.fail("LPSELECT_REQUIRE_SHARED=1 but chromium is not installed (apt-get install chromium)")
    pytest.skip("chromium not installed (apt-get install chromium): the rendered page is not checked")


def _run_chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--no-first-run", "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
           *args]
    env = {**os.environ, "HOME": str(profile)}
    return subprocess.run(cmd, capture_output=True, timeout=180, env=env, check=False)


def test_chromium_renders_every_section(tmp_path: Path):
    binary = _chromium()
    from matplotlib.image import imread

    run = make_run(tmp_path)
    report = write_report(run)
    url = report.resolve().as_uri()
    dom = _run_chromium(binary, tmp_path / "profile-dom", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr.decode(errors="replace")[-2000:]
    ids = Page(dom.stdout.decode("utf-8")).ids
    for sid in SECTION_IDS:
        assert sid in ids, f"section {sid} missing from the rendered DOM"
    shot = tmp_path / "shot.png"
    r = _run_chromium(binary, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1280,4000",
                      url)
    assert r.returncode == 0 and shot.exists(), r.stderr.decode(errors="replace")[-2000:]
    assert shot.read_bytes().startswith(PNG_MAGIC) and shot.stat().st_size > 50_000
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (4000, 1280)
    assert pixels.std() > 0.05  # not a blank page
    colours = np.unique((pixels[::7, ::7] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 100  # figures drawn, not only text


# ---- a real browser: Chromium through selenium and Debian's chromium-driver -------------------------------


def _chromedriver() -> tuple[str, str]:
    """(chromium, chromedriver); a missing one skips, or fails under LPSELECT_REQUIRE_SHARED=1 (CI)."""
    binary = _chromium()
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver")
                                              else None)
    why = "" if driver else "chromedriver not installed (apt-get install chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        why = why or "selenium not installed (pip install -e '.[dev]')"
    if why and os.environ.get("LPSELECT_REQUIRE_SHARED") == "1":
        pytest.fail(f"LPSELECT_REQUIRE_SHARED=1 but {why}")
    if why:
        pytest.skip(f"{why}: the page is not checked in a browser")
    return binary, str(driver)


def test_browser_first_screen_tooltip_and_filters(tmp_path: Path):
    """In a 1400 x 900 window (a viewport of about 1400 x 760 in headless Chromium, stricter than 900 px) the
    subsets, the map and both sample tables (with responses) are on the first screen; hovering the topmost point
    shows its row; a band filter and a click on a point change what is shown."""
    binary, driver_path = _chromedriver()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    run = make_run(tmp_path, n=400)
    url = write_report(run).resolve().as_uri()
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,900", "--no-first-run",
                "--disable-background-networking", f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        driver.set_window_size(1400, 900)
        driver.get(url)
        height = driver.execute_script("return window.innerHeight")
        assert 700 <= height <= 900

        def box(css: str) -> dict:
            return driver.execute_script("return arguments[0].getBoundingClientRect().toJSON()",
                                         driver.find_element(By.CSS_SELECTOR, css))

        for css in ("#subsets table", "#map-svg", "#extremes .scroll:nth-of-type(1) tr:nth-child(2)"):
            assert box(css)["bottom"] <= height, css
        sample_tables = driver.find_elements(By.CSS_SELECTOR, "#extremes table")
        assert len(sample_tables) == 2
        for table in sample_tables:  # the header and the first sample, with its response, are on screen
            first = table.find_elements(By.CSS_SELECTOR, "tbody tr")[0]
            assert driver.execute_script("return arguments[0].getBoundingClientRect().bottom", first) <= height
            assert [th.text for th in table.find_elements(By.TAG_NAME, "th")][-2:] == ["instruction", "response"]
            assert first.find_elements(By.TAG_NAME, "td")[-1].text.startswith("answer ")

        # the tooltip of the topmost (last drawn) point, against the files
        circles = driver.find_elements(By.CSS_SELECTOR, "#map-svg circle")
        data = json.loads(driver.find_element(By.ID, "map-data").get_attribute("textContent"))
        target = circles[-1]
        row = data["id"][int(target.get_attribute("data-k"))]
        ActionChains(driver).move_to_element(target).perform()
        tip = driver.find_element(By.ID, "map-tip")
        assert tip.is_displayed()
        lp = lp1(read_ppl(run))
        labels = pq.read_table(run / "clusters.parquet").column("cluster").to_numpy()
        source = json.loads((tmp_path / "dolly.json").read_text())[row]
        text = tip.text
        assert f"row {row} " in text and f"cluster {labels[row]} " in text and f"LP(1) {lp[row]:.4g}" in text
        assert source["instruction"][:100] in text and f"response{source['response']}" in text.replace("\n", "")

        def visible() -> int:
            return driver.execute_script(
                "return Array.from(document.querySelectorAll('#map-svg circle'))"
                ".filter(c => getComputedStyle(c).display !== 'none').length")

        drawn = [data["id"][int(c.get_attribute("data-k"))] for c in circles]
        assert visible() == len(drawn)
        driver.find_element(By.CSS_SELECTOR, '.filters button[data-filter="band"][data-value="0"]').click()
        bands = _band(lp)
        assert visible() == sum(bands[i] == 0 for i in drawn) < len(drawn)
        driver.find_element(By.CSS_SELECTOR, '.filters button[data-filter="band"][data-value=""]').click()
        assert visible() == len(drawn)
        ActionChains(driver).move_to_element(target).click().perform()  # a point: its cluster only
        assert visible() == sum(labels[i] == labels[row] for i in drawn) < len(drawn)
        assert driver.find_element(By.ID, "map-count").text.startswith(f"{visible():,} of {len(drawn):,}")
    finally:
        driver.quit()
