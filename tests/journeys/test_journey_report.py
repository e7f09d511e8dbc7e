"""Journey: score -> cluster -> select (into a folder outside the run) -> ``lpselect report RUN --subsets ...`` on a
tiny model, as a user runs it. The page answers first: the subsets, the data map and the hardest / easiest rows
with their responses, checked against a plain-Python statement of LP(1) (docs/method.md §6) over the scores file."""

from __future__ import annotations

import json
import math
import re
from html import unescape
from pathlib import Path

import pyarrow.parquet as pq
from _journey import run_cli, score_and_cluster, write_json

N = 24


def rows() -> list[dict[str, str]]:
    return [{"instruction": f"<script>alert({i})</script> Name fruit number {i}." + " Please." * (i % 4),
             "input": "", "output": f"Fruit {i} is a pear." + " Really." * (i % 3)} for i in range(N)]


def lp1(scores: Path) -> list[float]:
    """docs/method.md §6: LP(1) = (P0 - P1) / (P0 - Pn), 0 when P0 == Pn."""
    t = pq.read_table(scores).to_pydict()
    last = max(int(c[4:]) for c in t if re.fullmatch(r"ppl_\d+", c))  # not ppl_online_*
    out = []
    for p0, p1, pn in zip(t["ppl_0"], t["ppl_1"], t[f"ppl_{last}"], strict=True):
        if any(v is None or math.isnan(v) for v in (p0, p1, pn)):
            out.append(math.nan)
        else:
            out.append(0.0 if p0 == pn else (p0 - p1) / (p0 - pn))
    return out


def section(html: str, sid: str) -> str:
    start = html.index(f'<section id="{sid}">')
    return html[start:html.index("</section>", start)]


def cells(table_html: str) -> list[list[str]]:
    """Rows of a table as unescaped cell text (markup inside cells removed)."""
    return [[unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", tr, re.S)]
            for tr in re.findall(r"<tr>(.*?)</tr>", table_html, re.S)]


def test_report_answers_first_with_subsets_written_elsewhere(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = write_json(tmp_path / "fruit.json", rows())
    run = score_and_cluster(data, tmp_path / "run", tiny_model_dir, epochs=2)
    picked = tmp_path / "picked" / "hard25.json"  # not under RUN/subsets: found only through --subsets
    r = run_cli("select", "--data", data, "--scores", run / "scores.parquet", "--clusters", run / "clusters.parquet",
                "--out", picked, "--metric", "lp", "--percent", "25")
    assert r.code == 0, r.err

    r = run_cli("report", run, "--subsets", picked.parent)
    assert r.code == 0, r.err
    assert r.out.strip() == f"report: {run / 'report.html'}"  # one line, not wrapped
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "<script>alert" not in html  # the data's markup is text on the page

    # the first thing on the page: the subset's rows, share and clusters hit, from its report's ids
    assert html.index('<section id="subsets">') < html.index('<section id="data-map">') < html.index(
        '<section id="perplexity">')
    ids = json.loads(Path(str(picked) + ".report.json").read_text())["ids"]
    labels = pq.read_table(run / "clusters.parquet").column("cluster").to_pylist()
    table = cells(section(html, "subsets"))
    assert table[1] == ["hard25.json", "hardest 25 % by lp(1)", str(len(ids)), f"{100 * len(ids) / N:.1f} %",
                        f"{len({labels[i] for i in ids})} / {len(set(labels))}"]

    # the hardest rows by LP(1), with their instruction and response
    lp = lp1(run / "scores.parquet")
    hardest = sorted((i for i in range(N) if not math.isnan(lp[i])), key=lambda i: (lp[i], i))[:10]
    shown = cells(section(html, "extremes").split("</table>")[0])
    assert shown[0] == ["id", "LP(1)", "cluster", "instruction", "response"]
    source = rows()
    assert [int(c[0]) for c in shown[1:]] == hardest
    for c in shown[1:]:
        i = int(c[0])
        assert (c[3], c[4]) == (source[i]["instruction"], source[i]["output"]) and c[2] == str(labels[i])

    # every row is a point of the map (fewer than 5,000), with its text for the tooltip
    block = re.search(r'<script type="application/json" id="map-data">(.*?)</script>', html, re.S)
    assert block is not None
    points = json.loads(block.group(1))
    assert sorted(points["id"]) == [i for i in range(N) if not math.isnan(lp[i])]
    k = points["id"].index(hardest[0])
    assert points["text"][k] == [source[hardest[0]]["instruction"], source[hardest[0]]["output"]]

    bad = run_cli("report", run, "--subsets", tmp_path / "nowhere")
    assert "nowhere" in bad.one_line_error() and "not found" in bad.one_line_error()
