"""Shared pieces of the benchmark scripts that only benchmarks need: the header table, a measured matmul peak,
the data subsets, the timing loops, the child-process launcher, and the plain Hugging Face-style baseline
(evaluation loop and Trainer epoch) that lpselect is compared against.

The rest comes from lpselect itself, so a benchmark sees the machine, the device and the data as the package
does: the device choice and the CPU's matrix units (``lpselect.engine.precision``), the CPU's name
(``lpselect.environment``), library versions (``lpselect.runs.folder``), reading instruction data
(``lpselect.data.formats``), atomic writes (``lpselect.runs.io``), manifests (``lpselect.analysis.runio``) and
logging (progress notes and the package's own notes go to stderr through ``logging``).

Nothing heavy happens at import time: torch, transformers and lpselect are imported inside the functions,
so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch

    from lpselect.data.tokenize import TokenizedData

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "instructions"
DOLLY = SHARED_DATA / "dolly.json"
ALPACA = SHARED_DATA / "alpaca_partial.json"
_LOG = logging.getLogger("lpselect.benchmarks")


# ------------------------------------------------------------ reporting
@functools.cache
def _configure_logging() -> None:
    """stderr, one time-stamped line per note; lpselect's own notes (e.g. the precision chosen) at INFO too."""
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="[%(asctime)s] %(message)s",
                        datefmt="%H:%M:%S")
    logging.getLogger("lpselect").setLevel(logging.INFO)


def log(msg: str) -> None:
    """Progress notes go to stderr, so stdout is only the markdown."""
    _configure_logging()
    _LOG.info(msg)


def cpu_units() -> list[str]:
    """The matrix units that /proc/cpuinfo lists, in lpselect's order: what the CPU has, even when
    ``LPSELECT_CPU_FEATURES`` makes lpselect's ``auto`` resolve as on another CPU."""
    from lpselect.engine.precision import MATRIX_FEATURES, cpuinfo_features

    try:
        found = cpuinfo_features(Path("/proc/cpuinfo").read_text())
    except OSError:
        return []
    return [f for f in MATRIX_FEATURES if found[f]]


def cpu_flag_grep() -> str:
    """What ``grep -o -w 'avx2\\|avx512f\\|avx512_bf16\\|amx_bf16' /proc/cpuinfo | sort -u`` prints, on one line."""
    return " ".join(sorted(cpu_units())) or "(none)"


def cpu_model() -> str:
    from lpselect.environment import cpu_model_name

    return cpu_model_name()


def git_commit() -> str:
    """``git rev-parse --short HEAD``, marked when tracked files under src/ have uncommitted changes."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, check=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "src"], cwd=REPO,
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
        return out.stdout.strip() + (" + uncommitted changes in src/" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


_START: dict[str, str] = {}


def _load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "-"


def note_start() -> None:
    """Record the start time and load average (call first thing in main)."""
    _configure_logging()
    _START["date"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M")
    _START["load"] = _load_average()
    _START["t0"] = str(time.perf_counter())
    _START["commit"] = git_commit()


def machine_rows() -> list[tuple[str, str]]:
    """(key, value) rows describing the machine and the software, for the header table of every script."""
    import torch

    from lpselect.runs.folder import library_versions

    if not _START:
        note_start()
    minutes = (time.perf_counter() - float(_START["t0"])) / 60
    commit = git_commit()
    versions = library_versions()
    return [
        ("date (UTC) at start", _START["date"]),
        ("git commit", commit if commit == _START["commit"] else f"{_START['commit']} at start, {commit} at end"),
        ("CPU", cpu_model()),
        ("cores (os) / torch threads", f"{os.cpu_count()} / {torch.get_num_threads()}"),
        ("ISA", ", ".join(cpu_units()) or "-"),
        ("GPU", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"),
        ("load average (1, 5, 15 min) at start / at end", f"{_START['load']} / {_load_average()}"),
        ("script wall time", f"{minutes:.1f} min"),
        ("python / torch / transformers", " / ".join(versions.get(k, "-") for k in ("python", "torch",
                                                                                    "transformers"))),
    ]


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def print_header(title: str, extra: Sequence[tuple[str, Any]] = ()) -> None:
    print(f"## {title}\n")
    print(markdown_table(["", ""], [*machine_rows(), *extra]))
    print()


def fmt(x: float, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.{digits - 1}e}"
    return f"{x:,.{digits}f}" if abs(x) < 100 else f"{x:,.0f}"


# ------------------------------------------------------------ peak
@dataclass
class Peak:
    dtype: str
    flops: float  # best FLOP/s seen
    size: int  # the matmul size that gave it


def matmul_peak(dtype_name: str, sizes: Sequence[int] = (2048, 4096), repeats: int = 5,
                device: str = "cpu") -> Peak:
    """Best FLOP/s of square matmuls (2 n^3 FLOPs each) in ``dtype_name``, on this process's threads or on
    ``device`` (CUDA: larger sizes, timed between synchronisations)."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    cuda = torch.device(device).type == "cuda"
    if cuda:
        sizes = (4096, 8192)
    best = Peak(dtype_name, 0.0, 0)
    g = torch.Generator().manual_seed(0)
    for n in sizes:
        a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
        b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
        out = torch.empty(n, n, dtype=dtype, device=device)
        torch.matmul(a, b, out=out)  # warm-up (oneDNN/BLAS/cuBLAS kernel selection)
        for _ in range(repeats if n <= 2048 or cuda else max(2, repeats // 2)):
            sync(device)
            t0 = time.perf_counter()
            for _ in range(10 if cuda else 1):  # a GPU matmul is too short to time alone
                torch.matmul(a, b, out=out)
            sync(device)
            dt = (time.perf_counter() - t0) / (10 if cuda else 1)
            if 2 * n**3 / dt > best.flops:
                best = Peak(dtype_name, 2 * n**3 / dt, n)
    return best


def sync(device: Any = None) -> None:
    """Wait for queued GPU work, so a wall-clock reading includes it (no-op on CPU)."""
    import torch

    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.synchronize()


def peak_rows(peaks: dict[str, Peak]) -> list[tuple[str, str]]:
    return [(f"measured {p.dtype} matmul peak", f"{p.flops / 1e9:,.0f} GFLOP/s (best of n={p.size})")
            for p in peaks.values()]


# ------------------------------------------------------------ arguments and set-up shared by the timing scripts
def parse_bench_args(doc: str, default_n: int, add: Callable[[argparse.ArgumentParser], None]
                     ) -> Callable[[list[str] | None], argparse.Namespace]:
    """An argument parser with the options every timing script has (--data, --n, --model, --max-length,
    --threads, --device) plus the script's own (``add``)."""

    def parse(argv: list[str] | None = None) -> argparse.Namespace:
        ap = argparse.ArgumentParser(description=doc.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=doc)
        ap.add_argument("--data", type=Path, default=DOLLY, help="JSON array of samples (default: shared Dolly)")
        ap.add_argument("--n", type=int, default=default_n, help=f"use the first N samples (default {default_n})")
        ap.add_argument("--model", default=None, help="hub id or folder (default: SmolLM2-135M-Instruct, offline)")
        ap.add_argument("--max-length", type=int, default=512)
        ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
        ap.add_argument("--device", default="auto", help="cpu, cuda, cuda:N (default: cuda when there is a GPU)")
        add(ap)
        return ap.parse_args(argv)

    return parse


def device_name(name: str) -> str:
    """lpselect's device choice ('auto': CUDA when there is a GPU, else CPU), as the name the scripts print."""
    from lpselect.engine.precision import pick_device

    return str(pick_device(name))


@dataclass
class BenchSetup:
    source: str
    tokenizer: Any
    data: TokenizedData
    peaks: dict[str, Peak]
    device: str

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    def data_row(self, name: str) -> tuple[str, str]:
        d = self.data
        return ("data", f"first {len(d)} rows of {name}: {int(d.lengths.sum()):,} tokens "
                        f"({int(d.n_scored.sum()):,} scored), longest {int(d.lengths.max())}")


def bench_setup(args: argparse.Namespace) -> BenchSetup:
    """Threads, the matmul peaks of this moment, the model source, its tokenizer and the tokenised rows."""
    import torch

    from lpselect.engine.models import load_tokenizer, model_source

    if args.threads:
        torch.set_num_threads(args.threads)
    device = device_name(args.device)
    log(f"measuring matmul peaks on {device}")
    peaks = {d: matmul_peak(d, device=device) for d in ("fp32", "bf16")}
    source = model_source(args.model)
    tokenizer = load_tokenizer(source)
    with tempfile.TemporaryDirectory(prefix="lpselect-bench-") as tmp:
        data = tokenize_file(subset_file(args.data, args.n, Path(tmp)), tokenizer, args.max_length)
    return BenchSetup(source, tokenizer, data, peaks, device)


# ------------------------------------------------------------ data
def read_rows(source: Path) -> list[dict[str, Any]]:
    """The rows of an instruction-data file as lpselect reads them (a malformed row is one clear error)."""
    from lpselect.data.formats import read_dataset
    from lpselect.errors import LPSelectError

    try:
        return read_dataset(source).records
    except LPSelectError as e:
        raise SystemExit(str(e)) from None


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    """A compact JSON array, byte for byte as the earlier figures' files: run folders record their data's
    sha256, so a re-run on the same rows reuses its runs."""
    from lpselect.runs.io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(rows), encoding="utf-8")
    return path


def subset_file(source: Path, n: int, folder: Path, *, skip_empty_output: bool = False) -> Path:
    """The first ``n`` rows of a dataset, written to ``folder`` (never into the repository) as a JSON array.

    ``skip_empty_output`` leaves out rows whose response is empty (the shared Alpaca file has 26; lpselect
    keeps and counts them, but earlier figures were measured without them), so the file still has ``n`` rows."""
    rows = read_rows(source)
    if skip_empty_output:
        rows = [r for r in rows if str(r.get("output", r.get("response", "")) or "").strip()]
    if n > len(rows):
        raise SystemExit(f"{source} has {len(rows)} usable rows, asked for {n}")
    return _write_rows(Path(folder) / f"{Path(source).stem}-first{n}.json", rows[:n])


def sample_file(source: Path, n: int, folder: Path) -> Path:
    """``n`` rows drawn at random (Python's ``random.Random(0)``), written byte-for-byte reproducibly."""
    rows = read_rows(source)
    random.Random(0).shuffle(rows)
    return _write_rows(Path(folder) / f"{Path(source).stem}{n}.json", rows[:n])


def tokenize_file(path: Path, tokenizer, max_length: int = 512) -> TokenizedData:
    """lpselect's own tokenisation (template, loss mask, prompt truncation): both arms see the same tokens."""
    from lpselect.data.formats import read_dataset
    from lpselect.data.tokenize import tokenize_samples

    return tokenize_samples(read_dataset(path).samples, tokenizer, max_length=max_length)


def fresh_model(source: str, device: str = "cpu"):
    """The model loaded again from disk onto ``device``: every training arm starts from the same weights."""
    import torch

    from lpselect.engine.models import load_causal_lm

    torch.manual_seed(0)
    return load_causal_lm(source).to(device)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())  # tied embeddings counted once


def hf_features(data: TokenizedData) -> list[dict[str, list[int]]]:
    """One dict per row in file order: input_ids, and labels = input_ids on scored tokens, -100 elsewhere."""
    feats = []
    for i in range(len(data)):
        tok, sc = data.row(i)
        ids = [int(t) for t in tok]
        feats.append({"input_ids": ids, "labels": [t if s else -100 for t, s in zip(ids, sc, strict=True)]})
    return feats


def pad_collate(features: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """The reference's collator: right-pad to the longest row of the batch; labels of padding are -100."""
    import torch

    width = max(len(f["input_ids"]) for f in features)
    ids = torch.full((len(features), width), pad_id, dtype=torch.long)
    labels = torch.full((len(features), width), -100, dtype=torch.long)
    attn = torch.zeros((len(features), width), dtype=torch.long)
    for j, f in enumerate(features):
        n = len(f["input_ids"])
        ids[j, :n] = torch.tensor(f["input_ids"])
        labels[j, :n] = torch.tensor(f["labels"])
        attn[j, :n] = 1
    return {"input_ids": ids, "attention_mask": attn, "labels": labels}


# ------------------------------------------------------------ baseline: eval
def reference_eval(model, data: TokenizedData, pad_id: int, *, batch_size: int = 4, bf16: bool = False,
                   rows: Sequence[int] | None = None) -> np.ndarray:
    """Trainer-evaluate-style perplexities: batches of ``batch_size`` in file order, padded to the longest,
    ``model(input_ids, attention_mask, labels)`` with full-vocabulary fp32 logits at every position, and each
    row's loss from those logits (mean NLL of its labelled tokens); exp of it. No gradients."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from lpselect.engine.precision import autocast

    feats = hf_features(data)
    rows = list(range(len(data))) if rows is None else list(rows)
    ppl = np.full(len(data), np.nan)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with torch.no_grad(), autocast(device, "bf16" if bf16 else "fp32"):
            for s in range(0, len(rows), batch_size):
                idx = rows[s : s + batch_size]
                batch = {k: v.to(device) for k, v in pad_collate([feats[i] for i in idx], pad_id).items()}
                out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            labels=batch["labels"])
                logits = out.logits.float()[:, :-1]  # (B, L-1, V): the full logit tensor
                labels = batch["labels"][:, 1:]
                # flattened like the Trainer's own loss: a log-softmax over a strided (transposed) vocabulary
                # dimension is ~1e-4 less exact on CPU
                nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                      ignore_index=-100, reduction="none").view(labels.shape)
                mask = labels != -100
                count = mask.sum(dim=1)
                loss = (nll * mask).sum(dim=1).double() / count.clamp(min=1)
                loss[count == 0] = float("nan")
                ppl[idx] = torch.exp(loss).cpu().numpy()
    finally:
        model.train(was_training)
    return ppl


# ------------------------------------------------------------ baseline: Trainer
@dataclass
class TrainOutcome:
    seconds: float
    step_losses: list[float] = field(default_factory=list)  # one mean loss per optimizer step
    note: str = ""
    final_loss: float = float("nan")  # the trained model's loss on all rows (data_loss)

    def mean_loss(self) -> float:
        return statistics.fmean(self.step_losses) if self.step_losses else float("nan")

    def last_loss(self, k: int) -> float:
        return statistics.fmean(self.step_losses[-k:]) if self.step_losses else float("nan")


def _training_args(out_dir: Path, *, bf16: bool, schedule_epochs: int, seed: int, optim: str | None):
    import dataclasses

    import torch
    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    kw: dict[str, Any] = dict(
        output_dir=str(out_dir), per_device_train_batch_size=4, gradient_accumulation_steps=8,
        learning_rate=2e-5, weight_decay=0.0, lr_scheduler_type="cosine", num_train_epochs=schedule_epochs,
        max_grad_norm=1.0, logging_steps=1, report_to=[], save_strategy="no", bf16=bf16, seed=seed,
        dataloader_num_workers=0, disable_tqdm=True, remove_unused_columns=False,
    )
    # transformers 5 folded warmup_ratio into warmup_steps (a float < 1 is a ratio) and group_by_length into
    # train_sampling_strategy; 4.x has the old names
    if "warmup_ratio" in names:
        kw["warmup_ratio"] = 0.03
    else:
        kw["warmup_steps"] = 0.03
    if "group_by_length" in names:
        kw["group_by_length"] = False
    if "train_sampling_strategy" in names:
        kw["train_sampling_strategy"] = "random"
    if "use_cpu" in names and not torch.cuda.is_available():
        kw["use_cpu"] = True
    if optim:
        kw["optim"] = optim
    return TrainingArguments(**kw)


def trainer_epoch(model, data: TokenizedData, pad_id: int, *, bf16: bool, schedule_epochs: int = 3,
                  seed: int = 42, optim: str | None = None) -> TrainOutcome:
    """One epoch of ``transformers.Trainer`` with the reference's settings; the LR schedule spans
    ``schedule_epochs`` epochs and training stops after the first (as ``lpselect score --epochs 1``).
    Only ``trainer.train()`` is timed."""
    from transformers import PrinterCallback, Trainer, TrainerCallback

    class StopAfterFirstEpoch(TrainerCallback):
        def on_epoch_end(self, args, state, control, **kwargs):
            control.should_training_stop = True
            return control

    feats = hf_features(data)
    with tempfile.TemporaryDirectory(prefix="lpselect-bench-trainer-") as tmp:
        args = _training_args(Path(tmp), bf16=bf16, schedule_epochs=schedule_epochs, seed=seed, optim=optim)
        trainer = Trainer(model=model, args=args, train_dataset=feats,
                          data_collator=lambda f: pad_collate(f, pad_id), callbacks=[StopAfterFirstEpoch()])
        trainer.remove_callback(PrinterCallback)  # it prints every log dict to stdout (disable_tqdm=True)
        sync()
        t0 = time.perf_counter()
        trainer.train()
        sync()
        seconds = time.perf_counter() - t0
        losses = [float(h["loss"]) for h in trainer.state.log_history if "loss" in h]
        note = f"optim={getattr(args.optim, 'value', args.optim)}"
    return TrainOutcome(seconds, losses, note)


# ------------------------------------------------------------ timing
def manifest_step(run: Path, step: str) -> dict[str, Any]:
    """One step's record in a run folder's manifest (its settings, counts and ``wall_time_s``)."""
    from lpselect.analysis.runio import read_manifest

    steps = read_manifest(run).get("steps") or {}
    if step not in steps:
        raise SystemExit(f"{run}: its manifest records no {step!r} step")
    return steps[step]


def phase(times: dict[str, float], name: str) -> float:
    """A phase's wall time from a score manifest's ``wall_time_s``; a pass is ``pass_{e}``, or
    ``pass_ppl_{e}`` since the chunked passes."""
    if name in times:
        return times[name]
    kind, _, epoch = name.partition("_")
    if kind == "pass" and f"pass_ppl_{epoch}" in times:
        return times[f"pass_ppl_{epoch}"]
    raise KeyError(f"no phase {name!r} in the manifest's wall_time_s {sorted(times)}")


def interleaved(arms: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[tuple[float, Any]]]:
    """Run every arm ``repeats`` times, rotating the order each round (noise on a shared machine hits all arms
    alike); each arm returns (seconds, result). Returns arm -> [(seconds, result) per round]."""
    names = list(arms)
    out: dict[str, list[tuple[float, Any]]] = {n: [] for n in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            log(f"round {r + 1}/{repeats}: {name}")
            out[name].append(arms[name]())
            log(f"  {name}: {out[name][-1][0]:.2f} s")
    return out


def ratio_stats(num: list[float], den: list[float]) -> str:
    """Median of the per-round ratios num/den, with their range when there is more than one round."""
    ratios = [a / b for a, b in zip(num, den, strict=True)]
    med = statistics.median(ratios)
    if len(ratios) == 1:
        return f"{med:.2f}x"
    return f"{med:.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


# ------------------------------------------------------------ child processes
LPSELECT_CLI = "from lpselect.cli import main; main()"


def lpselect_cmd(*args: str) -> list[str]:
    """``lpselect ARGS`` run by this interpreter (the venv's lpselect, whatever is on PATH)."""
    return [sys.executable, "-c", LPSELECT_CLI, *args]


def _child_env(threads: int) -> dict[str, str] | None:
    """The children's environment: this one, with OMP_NUM_THREADS when ``threads`` is set (0 = inherit)."""
    return {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None


def run_lpselect(*args: str, threads: int = 0) -> None:
    """``lpselect ARGS`` in a child whose output goes to this terminal; a failure stops the script."""
    log("lpselect " + " ".join(args))
    subprocess.run(lpselect_cmd(*args), check=True, env=_child_env(threads))


# A child's ru_maxrss counts the peak RSS of the process that forked it (Linux copies the memory map's
# high-water mark on fork and keeps it across exec): a child of a parent that imported torch or read a big JSON
# would report at least the parent's peak. So every measured command is started by this small launcher, a fresh
# interpreter of ~10 MiB, which runs the command, waits for it with os.wait4 and writes its rusage to a file.
_LAUNCHER = """
import json, os, subprocess, sys, time
t0 = time.perf_counter()
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
wall = time.perf_counter() - t0
with open(sys.argv[1], "w") as f:
    json.dump({"maxrss_kib": usage.ru_maxrss, "wall_s": wall, "rc": os.waitstatus_to_exitcode(status)}, f)
"""


def measure(cmd: list[str], log_file: Path, threads: int = 0) -> tuple[int, float, int]:
    """Run ``cmd`` (stdout and stderr to ``log_file``); return (its own peak RSS in KiB, wall seconds, exit code).

    The peak is the command's ``ru_maxrss`` from ``os.wait4`` in a small launcher process (see ``_LAUNCHER``),
    one command per measurement, so neither this process's memory nor another command's mixes in."""
    usage_file = log_file.with_name(log_file.name + ".rusage.json")
    usage_file.unlink(missing_ok=True)
    with log_file.open("wb") as out:
        t0 = time.perf_counter()
        rc = subprocess.run([sys.executable, "-c", _LAUNCHER, str(usage_file), *cmd], stdout=out,
                            stderr=subprocess.STDOUT, env=_child_env(threads), check=False).returncode
        wall = time.perf_counter() - t0
    if not usage_file.exists():  # the launcher itself died
        return 0, wall, rc or 1
    usage = json.loads(usage_file.read_text())
    return int(usage["maxrss_kib"]), float(usage["wall_s"]), int(usage["rc"])  # ru_maxrss is KiB on Linux


def log_tail(log_file: Path, chars: int = 3000) -> str:
    """The end of a child's log, for the message of a failed run."""
    try:
        return log_file.read_text(errors="replace")[-chars:]
    except OSError as e:
        return f"(no log: {e})"
