"""How close is ``lpselect plan`` to the run it plans? Plan, then run, at two sizes, on this machine.

    python benchmarks/plan_accuracy.py [--sizes 160 500] [--epochs 1] [--threads 0] [--out FILE]

For each size, ``--sizes`` rows of real Dolly drawn at random (seed 0) are planned with ``lpselect plan``
(the default scorer SmolLM2-135M-Instruct, the default embedder), then scored with ``lpselect score`` and
clustered with ``lpselect cluster`` using the same settings. Printed per phase: the plan's estimate, the run's
wall time from its manifest, and their ratio (the target: within 30 %, a ratio of 0.77 to 1.3).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from _common import (  # benchmarks/ is on sys.path when a script here is run
    DOLLY,
    cpu_flag_grep,
    cpu_model,
    git_commit,
    log,
    log_tail,
    lpselect_cmd,
    manifest_step,
    markdown_table,
    measure,
    sample_file,
)


def manifest_key(kind: str, epoch: int | None) -> str:
    """The score (or cluster) manifest's wall_time_s key of a plan phase."""
    return {"pass": f"pass_ppl_{epoch}", "train": f"train_{epoch}", "pass_response": f"pass_ppl_resp_{epoch}",
            "embed": "embed", "read": "read", "tokenize": "tokenize_tokens", "load": "load_model"}[kind]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[160, 500])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--probe-seconds", type=float, default=20.0)
    ap.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS of the children (0 = inherit)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="lpselect-plan-accuracy-"))
    rows = []
    for n in args.sizes:
        folder = work / f"n{n}"
        folder.mkdir()
        data = sample_file(DOLLY, n, folder)
        plan_json = folder / "plan.json"
        log(f"{n} rows: plan")
        _, plan_wall, rc = measure(lpselect_cmd("plan", "--data", str(data), "--epochs", str(args.epochs),
                                                "--probe-seconds", str(args.probe_seconds), "--json",
                                                str(plan_json)), folder / "plan.log", args.threads)
        if rc:
            raise SystemExit(f"lpselect plan failed at {n} rows:\n{log_tail(folder / 'plan.log', 2000)}")
        log(f"{n} rows: score, cluster")
        for cmd in (("score", "--data", str(data), "--out", str(folder / "run"), "--epochs", str(args.epochs),
                     "--quiet"), ("cluster", "--data", str(data), "--out", str(folder / "run"), "--quiet")):
            _, _, rc = measure(lpselect_cmd(*cmd), folder / f"{cmd[0]}.log", args.threads)
            if rc:
                raise SystemExit(f"lpselect {cmd[0]} failed at {n} rows:\n{log_tail(folder / f'{cmd[0]}.log', 2000)}")
        actual = {**manifest_step(folder / "run", "cluster").get("wall_time_s", {}),
                  **manifest_step(folder / "run", "score")["wall_time_s"]}
        plan = json.loads(plan_json.read_text())
        total_est = total_act = 0.0
        for ph in plan["phases"]:
            got = actual.get(manifest_key(ph["kind"], ph["epoch"]))
            if got is None:
                continue
            if not ph["measured"]:
                total_est += ph["seconds"]
                total_act += got
            rows.append([n, ph["name"], f"{ph['seconds']:.1f}", f"{got:.1f}",
                         "measured" if ph["measured"] else f"{ph['seconds'] / got:.2f}"])
        rows.append([n, "**estimated phases, sum**", f"{total_est:.1f}", f"{total_act:.1f}",
                     f"**{total_est / total_act:.2f}**"])
        rows.append([n, "(the plan command itself)", f"{plan_wall:.1f}", "", ""])
    text = (f"# lpselect plan against the run it plans (score --epochs {args.epochs}, cluster)\n\n"
            f"- lpselect {git_commit()}; CPU: {cpu_model()} ({cpu_flag_grep()}); "
            f"OMP_NUM_THREADS={args.threads or 'inherited'}; data: random rows of {DOLLY.name}\n\n"
            + markdown_table(["rows", "phase", "plan s", "run s", "plan / run"], rows) + "\n")
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
