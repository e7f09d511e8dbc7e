"""lpselect.analysis.report: the one-file HTML report on synthetic runs (clusters or not, NaN rows, 0/1/3
epochs, 52k rows), its numbers against independent numpy, and the page as headless Chromium renders it."""

from __future__ import annotations

import base64
import json
import math
import os
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
from lpselect.steps.select import select_subset

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NAN_ROWS = (3, 50, 77)  # no perplexity at all
CATEGORIES = ("open_qa", "brainstorming", "classification", "summarization")


# ---- a synthetic run folder --------------------------------------------------------------------------------


def make_run(root: Path, *, n: int = 240, epochs: int = 3, clusters: int | None = 6, data: bool = True,
             subsets: bool = True, seed: int = 0) -> Path:
    """manifest.json + scores.parquet (NaN rows, one row NaN in the last epoch only), optionally
    clusters.parquet, a Dolly-style data file with categories, and a subset written by select_subset."""
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
        rows = [{"instruction": f"Question <{i}> & answer" + " long" * (i % 90), "context": "",
                 "response": f"answer {i}", "category": CATEGORIES[i % len(CATEGORIES)]} for i in range(n)]
        data_path.write_text(json.dumps(rows))
        manifest["steps"]["score"]["inputs"] = {"data": {"path": str(data_path), "sha256": "x"}}
    (run / "manifest.json").write_text(json.dumps(manifest))
    if clusters:
        pq.write_table(pa.table({"id": np.arange(n), "cluster": rng.integers(0, clusters, n)}),
                       run / "clusters.parquet")
    if subsets and data and epochs:
        metric = "lp" if epochs >= 2 else "lp_app"
        select_subset(data_path, run / "scores.parquet", run / "subsets" / f"10_low_{metric}1-tiny.json",
                      clusters=run / "clusters.parquet" if clusters else None, metric=metric, percent=10,
                      strategy="cluster" if clusters else "global")
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
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.append(str(a["id"]))
        if tag == "section":
            self.current = self.sections.setdefault(str(a["id"]), {"text": [], "tables": [], "images": []})
        if tag in ("script", "link", "iframe", "object", "embed"):
            self.external.append(tag)
        for key in ("src", "href"):
            if a.get(key) and not (a[key].startswith("data:image/png;base64,") or a[key].startswith("#")):
                self.external.append(str(a[key]))
        if self.current is None:
            return
        if tag == "img":
            self.current["images"].append(a["src"])
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
    for sid in ("perplexity", "learning-percentage", "agreement", "data-map", "subsets"):
        images = page.sections[sid]["images"]
        assert images, sid
        for src in images:
            png = base64.b64decode(src.split(",", 1)[1])
            assert png.startswith(PNG_MAGIC) and len(png) > 5000, sid
    assert "LP(1)" in page.text("extremes") and "Question <3> & answer" not in page.text("extremes")


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
    assert header[-2:] == ["category", "instruction"]
    first = page.rows("extremes", 0)[1]
    assert first[-1].startswith(f"Question <{hardest[0]}> & answer")  # escaped on the page, read back intact
    assert first[-2] == CATEGORIES[hardest[0] % len(CATEGORIES)]
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
    header, row = page.rows("subsets")[:2]
    assert header[6:8] == ["rows (report)", "rows (recomputed)"]
    assert row[6] == row[7] == str(report["n_selected"])
    labels = pq.read_table(run / "clusters.parquet").column("cluster").to_numpy()
    assert row[8] == f"{len(np.unique(labels))} / {len(np.unique(labels))}"
    assert len(page.sections["subsets"]["images"]) == 1


def test_no_clusters_no_data_no_subsets(tmp_path: Path):
    page = render(make_run(tmp_path, clusters=None, data=False, subsets=False))
    assert list(page.sections) == list(SECTION_IDS)
    assert "no clusters.parquet" in page.text("subsets")
    assert "no category" in page.text("subsets")
    assert "computed for this report" in page.text("subsets")  # the default 10 % low selection
    assert "global 10 % bands" in page.text("data-map")
    assert "No instruction text" in page.text("extremes")
    assert page.rows("extremes", 0)[0][-1] == "scored tokens"


def test_one_epoch_uses_lp_app(tmp_path: Path):
    run = make_run(tmp_path, epochs=1)
    page = render(run)
    ppl = read_ppl(run)
    assert "LP needs n >= 2" in page.text("learning-percentage")
    assert "Needs at least 2 trained epochs" in page.text("agreement")
    assert page.sections["agreement"]["images"] == []
    assert page.sections["data-map"]["images"]
    lpa = (ppl[:, 0] - ppl[:, 1]) / ppl[:, 0]
    assert [int(r[0]) for r in page.rows("extremes", 0)[1:]] == hardest_easiest(lpa)[0]
    assert page.rows("extremes", 0)[0][1] == "LP_app(1)"
    assert [r[0] for r in page.rows("learning-percentage", 0)[1:]] == ["LP_app(1)"]
    assert page.rows("subsets")[1][1] == "lp_app"


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
    import typer
    from typer.testing import CliRunner

    from lpselect.cli.analysis import register

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass

    register(app)
    run = make_run(tmp_path, subsets=False)
    r = CliRunner().invoke(app, ["report", str(run), "--out", str(tmp_path / "x.html")])
    assert r.exit_code == 0, r.output
    assert "x.html" in r.output and (tmp_path / "x.html").exists()
    r = CliRunner().invoke(app, ["report", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "error" in r.output


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
    for p in (3, 10):  # the reports select_subset would write (the report recomputes the ids)
        (run / "subsets" / f"{p}_low_lp1-tiny.json.report.json").write_text(json.dumps(
            {"metric": "lp", "epoch": 1, "percent": p, "band": "low", "strategy": "cluster",
             "clusters": str(run / "clusters.parquet"), "order": "reference", "seed": 42}))
    t0 = time.perf_counter()
    page = render(run)
    elapsed = time.perf_counter() - t0
    assert elapsed < 60, f"report took {elapsed:.1f} s"  # about 3 s on one free core
    assert (run / "report.html").stat().st_size < 5_000_000
    assert len(page.sections["subsets"]["images"]) == 2
    assert "5,000 of" in page.text("data-map")


def test_report_on_the_reference_opt350m(tmp_path: Path):
    from lpselect.interop.reference import import_reference

    folder = shared_data("reference-pplx", "alpaca-opt-350m")
    import_reference([folder / f"epoch-{e}.pkl" for e in ("pre", "1", "2", "3")], tmp_path / "run")
    page = render(tmp_path / "run")
    quality = {r[0]: r[1] for r in page.rows("quality")}
    assert quality["reference rows 1.0 at every epoch (no response token)"] == "1"
    assert float(page.rows("agreement")[1][0]) == pytest.approx(0.81, abs=0.01)  # SPEC §6
    assert "no n_scored_tokens column" in page.text("subsets")


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
