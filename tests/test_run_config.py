"""``lpselect run CONFIG``: paths resolved against the file, --set overrides, --dry-run, and a failed run that
leaves no folder behind (issue 22 item 4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lpselect.errors import InputError
from lpselect.steps.pipeline import dry_run, load_run_config, run_pipeline


def _config(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "run.yaml"
    path.write_text(text)
    return path


def test_data_and_out_resolve_against_the_file(tmp_path: Path, monkeypatch) -> None:
    conf = tmp_path / "configs"
    (conf / "data").mkdir(parents=True)
    (conf / "data" / "a.json").write_text("[]")
    monkeypatch.chdir(tmp_path)  # the working directory is not the config's folder
    cfg = load_run_config(_config(conf, "data: data/a.json\nout: runs/x\n"))
    assert (cfg.data, cfg.out) == (str(conf / "data" / "a.json"), str(conf / "runs" / "x"))
    # a new data path resolves against the file too (its error then names that path); a hub id stays
    assert load_run_config(_config(conf, "data: missing.json\nout: o\n")).data == str(conf / "missing.json")
    assert load_run_config(_config(conf, "data: tatsu-lab/alpaca\nout: o\n")).data == "tatsu-lab/alpaca"


def test_set_overrides_keys_with_yaml_values(tmp_path: Path) -> None:
    path = _config(tmp_path, "data: /d.json\nout: /o\nselect:\n  - percents: [10]\n")
    cfg = load_run_config(path, sets=["score.epochs=2", "select.0.percents=[3, 5]", "cluster.k=7",
                                      "data=/other.json"])
    assert cfg.score.epochs == 2 and cfg.cluster is not None and cfg.cluster.k == 7
    assert cfg.select[0].percents == [3, 5] and cfg.data == "/other.json"
    assert load_run_config(path, sets=["cluster=null"]).cluster is None
    for bad, words in (("score.epochs", "expected KEY=VALUE"), ("score.epoch=2", "score.epoch"),
                       ("select.4.percents=[1]", "select.4"), ("score.epochs=two", "epochs")):
        with pytest.raises(InputError, match=words.replace(".", r"\.")):
            load_run_config(path, sets=[bad])


def test_dry_run_lists_the_steps_and_writes_nothing(tmp_path: Path) -> None:
    path = _config(tmp_path, f"data: /d.json\nout: {tmp_path / 'run'}\nscore:\n  model: m/opt-350m\n"
                             "select:\n  - percents: [10, 3]\n  - strategy: clust_rand\n")
    lines = dry_run(load_run_config(path))
    assert lines[0] == "config (resolved):" and "  data: /d.json" in lines
    assert f"score: run ({tmp_path / 'run'})" in lines and f"cluster: run ({tmp_path / 'run'})" in lines
    subsets = [line for line in lines if line.startswith("select: ")]
    baselines = " (baseline: {0}, the same size and seed)"
    assert [Path(s.split(" ", 1)[1]).name for s in subsets] == [
        "10_low_lp_app1-opt-350m.*", "10_low_lp_app1-opt-350m.random.*" + baselines.format("random"),
        "10_low_lp_app1-opt-350m.clust_rand.*" + baselines.format("clust_rand"),
        "3_low_lp_app1-opt-350m.*", "3_low_lp_app1-opt-350m.random.*" + baselines.format("random"),
        "3_low_lp_app1-opt-350m.clust_rand.*" + baselines.format("clust_rand"),
        "10_low_lp_app1-opt-350m-clust_rand.*"]  # a baseline itself gets none
    assert not (tmp_path / "run").exists()
    cfg = load_run_config(path)
    (tmp_path / "run").mkdir()

    def manifest(**config: object) -> None:
        record = {"status": "complete", "config": {**cfg.score.model_dump(), **config}}
        (tmp_path / "run" / "manifest.json").write_text(json.dumps({"steps": {"score": record}}))

    manifest()
    assert f"score: reuse the finished step ({tmp_path / 'run'})" in dry_run(cfg)
    manifest(lr=0.01)  # what the folder would refuse, the dry run says it would refuse, naming the change
    assert f"score: refused without --force: lr: 0.01 → 2e-05 ({tmp_path / 'run'})" in dry_run(cfg)
    manifest(epochs=1)
    assert any(line.startswith("score: extend (epochs: 1 → 3") for line in dry_run(cfg))


def test_a_run_that_fails_before_any_work_leaves_no_folder(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = tmp_path / "bad.json"
    data.write_text(json.dumps([{"instruction": "a", "output": None}]))
    out = tmp_path / "new" / "deeper" / "run"
    cfg = load_run_config(_config(tmp_path, f"data: {data}\nout: {out}\nscore:\n  model: {tiny_model_dir}\n"
                                            "  device: cpu\n  precision: fp32\n"))
    with pytest.raises(InputError, match="row 0, field 'output'"):
        run_pipeline(cfg, progress=False)
    assert not (tmp_path / "new").exists()  # nor the folders made above it


def test_an_earlier_run_in_the_working_directory_is_not_silently_restarted(tmp_path: Path, monkeypatch) -> None:
    conf = tmp_path / "configs"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "x").mkdir(parents=True)
    (tmp_path / "runs" / "x" / "manifest.json").write_text("{}")  # where an older lpselect wrote `out: runs/x`
    with pytest.raises(InputError, match=r"earlier run of it is at .*runs/x: give out as that absolute path"):
        load_run_config(_config(conf, "data: /d.json\nout: runs/x\n"))
    # the way out the message gives works without editing the file
    assert load_run_config(conf / "run.yaml", sets=[f"out={tmp_path / 'runs' / 'x'}"]).out == str(
        tmp_path / "runs" / "x")
