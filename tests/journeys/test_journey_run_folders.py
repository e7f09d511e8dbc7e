"""Journey: a run folder forgives a failed attempt, extends a run to more epochs, and names what it refuses."""

from __future__ import annotations

from pathlib import Path

from _journey import run_cli, tiny_score_args, write_json
from conftest import alpaca_rows


def test_a_fixed_file_reruns_and_more_epochs_extend(tiny_model_dir: Path, tmp_path: Path) -> None:
    rows = alpaca_rows(12)
    rows[3]["output"] = None
    data = write_json(tmp_path / "d.json", rows)
    out = tmp_path / "run"
    args = ["score", "--data", data, "--out", out]

    failed = run_cli(*args, *tiny_score_args(tiny_model_dir, epochs=1))
    assert failed.one_line_error() == f"error: {data}, row 3, field 'output': is null"

    rows[3]["output"] = "Fixed."
    write_json(data, rows)
    fixed = run_cli(*args, *tiny_score_args(tiny_model_dir, epochs=1), "--keep-checkpoint")  # no --force needed
    assert fixed.code == 0, fixed.err
    assert (out / "scores.parquet").exists()

    longer = run_cli(*args, *tiny_score_args(tiny_model_dir, epochs=2))
    assert longer.code == 0, longer.err
    assert f"extending {out} from 1 to 2 epochs: reused tokens, P0..P1, checkpoint at epoch 1 end" in longer.err
    events = (out / "score" / "events.log").read_text().splitlines()
    assert events.count("trained epoch 1 rank 0") == 1 and events.count("trained epoch 2 rank 0") == 1

    other_lr = [a if a != "1e-3" else "2e-3" for a in tiny_score_args(tiny_model_dir, epochs=2)]
    refused = run_cli(*args, *other_lr)
    assert refused.one_line_error() == (f"error: {out}: step 'score' was run with other config (lr: 0.001 → "
                                        "0.002); use another folder, or --force to discard its results")
