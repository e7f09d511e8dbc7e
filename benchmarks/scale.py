"""Wall time and peak memory of the whole lpselect pipeline at the sizes users bring, one child per command.

    python benchmarks/scale.py [--sizes 10000 100000 1000000] [--kmeans faiss] [--threads 1] [--out FILE]
    python benchmarks/scale.py --real [--datasets dolly alpaca] [--max-rows N] [--threads 1] [--out FILE]

Every command runs through the CLI as its own child process (``lpselect score``, ``cluster``, ``select``,
``report``), so a phase's peak resident set size is that child's own ``ru_maxrss`` (``os.wait4``) and sizes
never mix. The phases inside score and cluster are the wall times their manifests record
(``steps.score.wall_time_s``, ``steps.cluster.wall_time_s``); "rest of the child" is the child's wall time
minus those (start-up, imports, input hashing, writing the outputs). select and report are timed from the
parent, less the start-up of a child that only runs ``lpselect --help``.

Synthetic growth (default): for each N, N Alpaca-style JSONL rows whose instruction/input/output lengths in
words are drawn with replacement from the real rows of the shared ``alpaca_partial.json``, filled with seeded
random words from a fixed list. The scorer is a randomly initialised 2-layer Llama with a 400-token BPE
tokenizer (``lpselect.testing.build_tiny_llama``), trained one epoch, so the data path (reading, tokenising,
the token table, batching, the per-row bookkeeping) dominates rather than the model's arithmetic. The embedder
is a stand-in sentence-transformers model (a 1-layer, hidden-32 random BERT with a WordPiece tokenizer trained
on the word list, mean pooling, a random projection to 384 dimensions like all-MiniLM-L6-v2), so the real
``lpselect cluster`` code path runs and k-means sees MiniLM-sized vectors, but embedding is cheap:
MiniLM itself would hide every other phase at 1M rows. The table gives per size the wall seconds, the
microseconds per row and the per-row ratio to the previous size (issue 12's target: at most 1.3x from 100k to
1M in every phase), and the peak RSS of every command with its ratio next to the ratio of rows (target:
sublinear growth).

Real data (``--real``): the whole of the shared ``dolly.json`` (15k rows) and ``alpaca_partial.json`` (43.6k),
scored one epoch with the same tiny Llama, clustered with the real default embedder (all-MiniLM-L6-v2, offline
package) and the default k-means backend, six subsets (lp_app and ppl x 5, 10, 20 %, band low), and the
HTML report.

Everything is written to a temporary work folder under ``--tmp`` (default /tmp), deleted at the end unless
``--keep``; a size's folder is deleted as soon as it is measured (1M rows of data and run folders take several
GB), after its disk use is recorded. On a child failure its log tail is printed and the script exits non-zero.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import (  # benchmarks/ is on sys.path when a script here is run
    ALPACA,
    DOLLY,
    cpu_flag_grep,
    log,
    log_tail,
    lpselect_cmd,
    manifest_step,
    markdown_table,
    measure,
    note_start,
    print_header,
    read_rows,
    subset_file,
)

REAL = {"dolly": DOLLY, "alpaca": ALPACA}
TARGET_PER_ROW = 1.3  # issue 12: per-row cost at 1M at most 1.3x that at 100k, in every phase
EMBED_DIM = 384  # all-MiniLM-L6-v2's: k-means and embeddings.npy see vectors of the real size
REAL_GRID = [(metric, percent) for metric in ("lp_app", "ppl") for percent in (5, 10, 20)]
SYNTHETIC_GRID = [("lp_app", 10)]
# the tiny scorer's matrices are so small that per-batch overhead dominates: large batches keep 1M rows in
# minutes (the update and the scores do not depend on the budget)
SYNTHETIC_SCORE_FLAGS = ("--max-tokens-per-batch", "16384", "--max-tokens-per-micro-batch", "16384")
REAL_VOCAB = 4096  # the tiny scorer's BPE vocabulary in --real

# a fixed list of plain English words: the synthetic text (seeded draws from it) and the stand-in's vocabulary
_WORD_TEXT = """
the of and to in is that for it as was with be by on not he this are or his from at which but have an they
you were her she all there would their we him been has when who will more no if out so said what up its about
into than them can only other new some could time these two may then do first any my now such like our over
man me even most made after also did many before must through back years where much your way well down should
because each just those people how too little state good very make world still own see men work long get here
between both life being under never day same another know while last might us great old year off come since
against go came right used take three write explain describe list give name find create generate summarize
answer question story poem word sentence number example reason idea water food city country music color house
school light animal tree river book language computer data model table letter friend family health money
"""
WORDS = list(dict.fromkeys(_WORD_TEXT.split()))


# ------------------------------------------------------------ arguments
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000],
                    help="synthetic rows per run (default 10000 100000 1000000)")
    ap.add_argument("--real", action="store_true", help="the real shared datasets instead of synthetic rows")
    ap.add_argument("--datasets", nargs="+", choices=sorted(REAL), default=["dolly", "alpaca"],
                    help="with --real: which datasets (default dolly alpaca)")
    ap.add_argument("--max-rows", type=int, default=0, help="with --real: only the first N rows (quick test)")
    ap.add_argument("--kmeans", default="faiss",
                    help="k-means backend of the synthetic runs, lpselect cluster --kmeans (default faiss); "
                         "'default' leaves the option out. --real always uses lpselect's default")
    ap.add_argument("--embedder", default=None,
                    help="synthetic runs: a sentence-transformers model instead of the cheap stand-in")
    ap.add_argument("--k", type=int, default=1000, help="k-means clusters (capped at N // 20 by lpselect)")
    ap.add_argument("--threads", type=int, default=0,
                    help="OMP_NUM_THREADS for the children (0 = inherit); 1 is far faster on a loaded machine")
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic rows")
    ap.add_argument("--train-max-rows", type=int, default=0,
                    help="synthetic sizes above this run score --epochs 0 (tokenise + P0, select by ppl_0), for a "
                         "2-core CPU where the tiny scorer's 1M-row epoch alone takes hours (0 = train all)")
    ap.add_argument("--tmp", type=Path, default=Path("/tmp"), help="where the work folder goes (default /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (its path is printed)")
    ap.add_argument("--out", type=Path, default=None, help="also write the markdown to this file")
    args = ap.parse_args(argv)
    if len(set(args.sizes)) != len(args.sizes) or min(args.sizes) < 1:
        ap.error("--sizes must be distinct positive numbers")
    args.sizes = sorted(args.sizes)
    return args


# ------------------------------------------------------------ synthetic data and stand-in models
def alpaca_lengths(path: Path = ALPACA) -> Any:
    """(rows, 3) word counts of instruction, input, output of every real row: the joint length distribution."""
    import numpy as np

    rows = read_rows(path)
    return np.array([[len(str(r.get(k) or "").split()) for k in ("instruction", "input", "output")]
                     for r in rows], dtype=np.int64)


def write_synthetic(path: Path, n: int, lengths: Any, seed: int, chunk: int = 20_000) -> None:
    """``n`` JSONL rows, written a chunk at a time (the parent never holds more than ``chunk`` rows)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    with path.open("w", encoding="utf-8") as f:
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            picks = lengths[rng.integers(0, len(lengths), m)]
            words = rng.integers(0, len(WORDS), int(picks.sum())).tolist()
            pos, lines = 0, []
            for ni, nin, nout in picks.tolist():
                fields = []
                for k in (ni, nin, nout):
                    fields.append(" ".join(WORDS[w] for w in words[pos:pos + k]))
                    pos += k
                lines.append(json.dumps({"instruction": fields[0], "input": fields[1], "output": fields[2]}))
            f.write("\n".join(lines) + "\n")


def build_standin_embedder(folder: Path, dim: int = EMBED_DIM) -> Path:
    """A random 1-layer hidden-32 BERT (WordPiece vocabulary of the word list), mean pooling and a random
    linear map to ``dim``, saved as a sentence-transformers folder: cheap to run, the real cluster code path."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Pooling, Transformer
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator([" ".join(WORDS), "Instruction: Response: . , ? !"] * 10,
                            trainers.WordPieceTrainer(vocab_size=1000, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    hf = folder / "bert"
    fast.save_pretrained(hf)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(fast), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=512)).save_pretrained(hf)
    st = SentenceTransformer(modules=[Transformer(str(hf), max_seq_length=256), Pooling(32, "mean"),
                                      Dense(32, dim, activation_function=torch.nn.Identity())], device="cpu")
    out = folder / "sentence-transformer"
    st.save(str(out))
    return out


# ------------------------------------------------------------ running the pipeline
@dataclass
class Result:
    """One pipeline run: phase -> seconds (in table order), command -> peak RSS KiB, facts for the info table."""

    label: str
    n: int
    phases: dict[str, float] = field(default_factory=dict)
    rss: dict[str, int] = field(default_factory=dict)
    info: dict[str, str] = field(default_factory=dict)


@dataclass
class Floor:
    """A child that only runs ``lpselect --help``: the start-up every command pays."""

    wall: float
    kib: int


def child(name: str, cmd: list[str], log_file: Path, threads: int) -> tuple[int, float]:
    """Run one command; on failure print its log tail and exit non-zero."""
    kib, wall, rc = measure(cmd, log_file, threads)
    if rc:
        print(f"{name} failed (exit {rc}); the end of {log_file}:\n{log_tail(log_file)}", file=sys.stderr)
        raise SystemExit(1)
    log(f"  {name}: {wall:.1f} s, peak RSS {kib / 1024:,.0f} MiB")
    return kib, wall


def score_label(key: str) -> str:
    """A readable row name for a key of the score manifest's wall_time_s."""
    kind, _, rest = key.partition("_")
    if key == "tokenize_tokens":
        return "tokenise"
    if key.startswith("pass_ppl_"):
        return f"pass P{key.removeprefix('pass_ppl_')}"
    if kind == "train":
        return f"epoch {rest}"
    return key.replace("_", " ")


SCORE_ORDER = ["read", "tokenize_tokens", "pass_ppl_0", "train_1", "pass_ppl_1"]
CLUSTER_LABELS = {"embed": "embed", "kmeans": "k-means"}


def ordered(times: dict[str, float], first: Sequence[str]) -> list[str]:
    """``first`` (those recorded), then every other recorded phase in the manifest's order."""
    return [k for k in first if k in times] + [k for k in times if k not in first]


def run_pipeline(label: str, data: Path, n: int, run: Path, *, model: str, embedder: str | None,
                 kmeans: str | None, k: int, grid: Sequence[tuple[str, int]], floor: Floor,
                 threads: int, score_extra: Sequence[str] = (), epochs: int = 1) -> Result:
    """score, cluster, one select per (metric, percent), report: each a child; the phases and peaks."""
    res = Result(label, n)
    res.info["load average (1 min) at start"] = f"{os.getloadavg()[0]:.2f}"
    logs = run.parent / f"{run.name}-logs"
    logs.mkdir(parents=True, exist_ok=True)

    log(f"{label}: lpselect score")
    kib, wall = child("score", lpselect_cmd("score", "--data", str(data), "--out", str(run), "--model", model,
                                            "--epochs", str(epochs), "--quiet", *score_extra), logs / "score.log",
                       threads)
    step = manifest_step(run, "score")
    times = step["wall_time_s"]
    for key in ordered(times, SCORE_ORDER):
        res.phases[f"score: {score_label(key)}"] = times[key]
    res.phases["score: rest of the child"] = wall - sum(times.values())
    res.phases["score: child wall"] = wall
    res.rss["score"] = kib
    counts = step.get("counts", {})
    res.info["tokens"] = f"{counts.get('tokens', 0):,}"
    res.info["truncated rows"] = f"{counts.get('truncated_rows', 0):,}"

    log(f"{label}: lpselect cluster")
    cmd = lpselect_cmd("cluster", "--data", str(data), "--out", str(run), "--k", str(k), "--quiet")
    if embedder:
        cmd += ["--embedder", embedder]
    if kmeans:
        cmd += ["--kmeans", kmeans]
    kib, wall = child("cluster", cmd, logs / "cluster.log", threads)
    step = manifest_step(run, "cluster")
    times = step.get("wall_time_s", {})
    for key in ordered(times, list(CLUSTER_LABELS)):
        res.phases[f"cluster: {CLUSTER_LABELS.get(key, key.replace('_', ' '))}"] = times[key]
    res.phases["cluster: rest of the child"] = wall - sum(times.values())
    res.phases["cluster: child wall"] = wall
    res.rss["cluster"] = kib
    res.info["k used"] = str(step.get("k_used", "?"))
    res.info["k-means backend"] = str(step.get("kmeans_backend", step.get("config", {}).get("kmeans", "sklearn")))

    subsets = run / "subsets"
    subsets.mkdir(exist_ok=True)
    walls, peaks = [], []
    for metric, percent in grid:
        if epochs == 0:  # P0 only: rank by the perplexity before training
            metric = "ppl"
        out = subsets / f"{percent}_low_{metric}{min(epochs, 1)}{data.suffix}"
        log(f"{label}: lpselect select {metric} {percent} %")
        kib, wall = child(f"select {metric} {percent}", lpselect_cmd(
            "select", "--data", str(data), "--scores", str(run / "scores.parquet"),
            "--clusters", str(run / "clusters.parquet"), "--metric", metric, "--epoch", str(min(epochs, 1)),
            "--percent", str(percent), "--band", "low", "--out", str(out)), logs / f"select-{out.stem}.log", threads)
        walls.append(wall - floor.wall)
        peaks.append(kib)
    name = "select" if len(grid) == 1 else f"select x{len(grid)} (sum)"
    res.phases[name] = sum(walls)
    if len(grid) > 1:
        res.phases["select, per command (mean)"] = sum(walls) / len(walls)
    res.rss["select"] = max(peaks)

    log(f"{label}: lpselect report")
    kib, wall = child("report", lpselect_cmd("report", str(run)), logs / "report.log", threads)
    res.phases["report"] = wall - floor.wall
    res.rss["report"] = kib
    html = run / "report.html"
    res.info["report.html MB"] = f"{html.stat().st_size / 2**20:.1f}" if html.exists() else "missing"
    res.phases["pipeline total (all children)"] = (res.phases["score: child wall"] + res.phases["cluster: child wall"]
                                                   + sum(walls) + res.phases["report"]
                                                   + (len(grid) + 1) * floor.wall)
    return res


# ------------------------------------------------------------ tables
def rows_in_order(results: Sequence[Result]) -> list[str]:
    names: list[str] = []
    for r in results:
        names += [p for p in r.phases if p not in names]
    return names


def cell(x: float | None, digits: int = 1) -> str:
    return "" if x is None else f"{x:,.{digits}f}"


def per_row_us(r: Result, phase: str) -> float | None:
    t = r.phases.get(phase)
    return None if t is None else t / r.n * 1e6


def growth_table(results: Sequence[Result]) -> str:
    """Rows = phases and peaks; per size: seconds (MiB), microseconds per row, ratio to the previous size."""
    headers = ["phase"]
    for i, r in enumerate(results):
        headers += [f"{r.n:,}: s / MiB", "µs per row"]
        if i:
            headers.append(f"ratio vs {results[i - 1].n:,} (rows x{r.n / results[i - 1].n:g})")
    rows = []
    for phase in rows_in_order(results):
        row = [phase]
        for i, r in enumerate(results):
            row += [cell(r.phases.get(phase), 2), cell(per_row_us(r, phase))]
            if i:
                a, b = per_row_us(results[i - 1], phase), per_row_us(r, phase)
                row.append(f"{b / a:.2f}x" if a and b is not None and a > 0 else "")
        rows.append(row)
    for cmd in results[0].rss:
        row = [f"**peak RSS {cmd}** (MiB)"]
        for i, r in enumerate(results):
            row += [f"{r.rss[cmd] / 1024:,.0f}", ""]
            if i:
                row.append(f"{r.rss[cmd] / results[i - 1].rss[cmd]:.2f}x")
        rows.append(row)
    return markdown_table(headers, rows)


def verdicts(results: Sequence[Result], floor: Floor) -> list[str]:
    """The issue's two targets, judged between the two largest sizes."""
    if len(results) < 2:
        return ["(one size only: no growth to judge)"]
    a, b = results[-2], results[-1]
    size = b.n / a.n
    over = []
    for phase in rows_in_order([a, b]):
        pa, pb = per_row_us(a, phase), per_row_us(b, phase)
        if pa and pb is not None and pa > 0 and pb / pa > TARGET_PER_ROW:
            over.append(f"{phase} {pb / pa:.2f}x")
    missing = [phase for phase in rows_in_order([a]) if phase not in b.phases]
    lines = [f"- per-row time at {b.n:,} rows at most {TARGET_PER_ROW}x that at {a.n:,} in every phase measured at "
             f"both: " + ("**met**" if not over else f"**not met** ({'; '.join(over)})")
             + (f"; not run at {b.n:,} rows (--train-max-rows): {', '.join(missing)}" if missing else "")]
    if a.info.get("k used") != b.info.get("k used"):
        lines.append(f"  (k used differs, {a.info.get('k used')} vs {b.info.get('k used')}: a k-means iteration "
                     "costs rows x k, so its per-row time grows with k; lpselect caps k at rows // 20)")
    parts, bad = [], []
    for cmd in a.rss:
        ratio = b.rss[cmd] / a.rss[cmd]
        above = (b.rss[cmd] - floor.kib) / max(a.rss[cmd] - floor.kib, 1)
        parts.append(f"{cmd} {ratio:.2f}x (above the start-up floor {above:.2f}x)")
        if ratio >= size:
            bad.append(cmd)
    lines.append(f"- peak RSS sublinear in rows (ratio below the rows' x{size:g}) for every command: "
                 + ("**met**" if not bad else f"**not met** ({', '.join(bad)})") + "; " + "; ".join(parts))
    return lines


def real_table(results: Sequence[Result]) -> str:
    headers = ["phase"]
    for r in results:
        headers += [f"{r.label} ({r.n:,} rows): s / MiB", "µs per row"]
    rows = []
    for phase in rows_in_order(results):
        row = [phase]
        for r in results:
            row += [cell(r.phases.get(phase), 2), cell(per_row_us(r, phase))]
        rows.append(row)
    for cmd in results[0].rss:
        row = [f"**peak RSS {cmd}** (MiB)"]
        for r in results:
            row += [f"{r.rss[cmd] / 1024:,.0f}", ""]
        rows.append(row)
    return markdown_table(headers, rows)


def info_table(results: Sequence[Result]) -> str:
    keys: list[str] = []
    for r in results:
        keys += [k for k in r.info if k not in keys]
    return markdown_table(["", *(f"{r.label}" for r in results)],
                          [[k, *(r.info.get(k, "") for r in results)] for k in keys])


# ------------------------------------------------------------ main
@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send file descriptor 1 to stderr: the tokenizers trainers print progress there, not via sys.stdout, and
    stdout is only the markdown."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    note_start()
    args.tmp.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="lpselect-scale-", dir=args.tmp))
    log(f"work folder {work}")
    try:
        with stdout_to_stderr():
            results, floor, extra = measure_all(args, work)
    finally:
        if args.keep:
            log(f"kept {work} ({dir_size(work) / 2**20:,.0f} MiB)")
        else:
            shutil.rmtree(work, ignore_errors=True)
            log(f"deleted {work} (--keep keeps it, with the children's logs)")

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        title = "lpselect on the real datasets" if args.real else "lpselect from 10k to 1M rows: growth per phase"
        print_header(title, extra)
        print(real_table(results) if args.real else growth_table(results))
        print()
        print("select and report: the child's wall time less the start-up of `lpselect --help` "
              f"({floor.wall:.2f} s); \"rest of the child\": its wall time less the phases its manifest records. "
              + ("" if args.real else "Ratios: per-row time for the phases, peak RSS for the peaks."))
        print()
        print(info_table(results))
        if not args.real:
            print()
            print("\n".join(verdicts(results, floor)))
    text = buf.getvalue()
    print(text, end="")
    if args.out:
        args.out.write_text(text)
        log(f"wrote {args.out}")


def measure_all(args: argparse.Namespace, work: Path) -> tuple[list[Result], Floor, list[tuple[str, str]]]:
    """Build the tiny models, then run the pipeline once per size (or dataset); the header's extra rows."""
    from lpselect.testing import build_tiny_llama

    kib, wall = child("floor (lpselect --help)", lpselect_cmd("--help"), work / "floor.log", args.threads)
    floor = Floor(wall, kib)
    results: list[Result] = []
    if args.real:
        # its BPE learns a sample of the real texts: about as many tokens per row as a real tokenizer gives
        texts = [" ".join(str(r.get(k) or "") for k in ("instruction", "input", "output"))
                 for name in args.datasets for r in read_rows(REAL[name])[:5000]]
        model = str(build_tiny_llama(work / "tiny-llama", extra_corpus=texts, vocab_size=REAL_VOCAB))
        scorer_label = f"tiny random Llama (2 layers, hidden 32, {REAL_VOCAB}-token BPE trained on 5k rows of each)"
        grid, kmeans, embedder = REAL_GRID, None, None
        embedder_label = "all-MiniLM-L6-v2 (lpselect's offline default)"
        for name in args.datasets:
            source = REAL[name]
            folder = work / name
            folder.mkdir()
            n_all = len(read_rows(source))
            n = min(args.max_rows, n_all) if args.max_rows else n_all
            data = subset_file(source, n, folder) if n < n_all else source
            res = run_pipeline(name, data, n, folder / "run", model=model, embedder=None, kmeans=None, k=args.k,
                               grid=grid, floor=floor, threads=args.threads)
            finish(res, data, folder, args.keep)
            results.append(res)
    else:
        grid = SYNTHETIC_GRID
        # its BPE learns the word list: one token per synthetic word, as a real tokenizer gives for real words
        model = str(build_tiny_llama(work / "tiny-llama", extra_corpus=[" ".join(WORDS)] * 20, vocab_size=1024))
        scorer_label = "tiny random Llama (2 layers, hidden 32, 1024-token BPE that knows the word list)"
        kmeans = None if args.kmeans == "default" else args.kmeans
        if args.embedder:
            embedder, embedder_label = args.embedder, args.embedder
        else:
            embedder = str(build_standin_embedder(work / "standin-embedder"))
            embedder_label = (f"stand-in: random BERT (1 layer, hidden 32, 2 heads, WordPiece on the word list), "
                              f"mean pooling, random linear map to {EMBED_DIM}")
        lengths = alpaca_lengths()
        for n in args.sizes:
            folder = work / f"n{n}"
            folder.mkdir()
            data = folder / f"synthetic-{n}.jsonl"
            log(f"{n:,} rows: writing {data.name}")
            t0 = time.perf_counter()
            write_synthetic(data, n, lengths, args.seed)
            gen = time.perf_counter() - t0
            res = run_pipeline(f"{n:,} rows", data, n, folder / "run", model=model, embedder=embedder,
                               score_extra=SYNTHETIC_SCORE_FLAGS,
                               epochs=0 if args.train_max_rows and n > args.train_max_rows else 1,
                               kmeans=kmeans, k=args.k, grid=grid, floor=floor, threads=args.threads)
            res.info["writing the data (parent) s"] = f"{gen:.1f}"
            finish(res, data, folder, args.keep)
            results.append(res)
    selects = ", ".join(f"{m} {p} %" for m, p in grid)
    extra = [
        ("CPU flags (grep avx2/avx512f/avx512_bf16/amx_bf16)", cpu_flag_grep()),
        ("packages", package_versions(["lpselect", "sentence-transformers", "faiss-cpu", "scikit-learn",
                                       "tokenizers", "numpy", "pyarrow"])),
        ("data", ", ".join(f"{r.label}: {r.n:,} rows" for r in results) if args.real else
                 f"synthetic JSONL, lengths drawn from {ALPACA.name}, words from a fixed list of {len(WORDS)}"),
        ("scorer", f"{scorer_label}, score --epochs 1"
                   + ("" if args.real else " " + " ".join(SYNTHETIC_SCORE_FLAGS))),
        ("embedder", embedder_label),
        ("k-means", f"k {args.k} (capped at N // 20), backend "
                    + (f"--kmeans {kmeans}" if kmeans else "lpselect's default")),
        ("select", f"{selects}, band low, epoch 1"),
        ("peak RSS", "each command's own ru_maxrss (os.wait4), one fresh child per command"),
        ("threads", f"OMP_NUM_THREADS={args.threads}" if args.threads else "inherited"),
        ("start-up floor", f"`lpselect --help` child: {floor.wall:.2f} s, {floor.kib / 1024:,.0f} MiB"),
    ]
    return results, floor, extra


def package_versions(names: Sequence[str]) -> str:
    """``name version`` of each installed distribution, comma-separated (missing ones left out)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in names:
        with contextlib.suppress(PackageNotFoundError):
            out.append(f"{name} {version(name)}")
    return ", ".join(out)


def dir_size(path: Path) -> int:
    """Bytes on disk under ``path`` (allocated blocks, so sparse files count what they use)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


def finish(res: Result, data: Path, folder: Path, keep: bool) -> None:
    """Record the input's and the folder's size; free the disk unless --keep."""
    res.info["rows"] = f"{res.n:,}"
    res.info["input MB"] = f"{data.stat().st_size / 1e6:,.1f}"
    res.info["disk used (data + run folder) MB"] = f"{dir_size(folder) / 1e6:,.0f}"
    if not keep:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
