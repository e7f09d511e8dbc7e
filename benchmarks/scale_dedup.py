"""Speed of ``select --dedup COSINE`` at scale, on synthetic embeddings shaped like lpselect cluster's output.

    python benchmarks/scale_dedup.py [--rows 1000000] [--dim 384] [--clusters 1000] [--large 60000]
                                     [--threshold 0.95] [--baseline-rows 20000] [--seed 0]

Data: ``--rows`` float32 vectors of ``--dim`` dimensions in ``--clusters`` clusters of uneven sizes (one of
``--large`` rows, the others log-normal), rows of a cluster scattered through the file as k-means leaves them.
A row is its cluster's random unit centre plus Gaussian noise of the same norm (two rows of a cluster have
cosine about 0.5); 10 % of the rows are planted copies of an earlier row of their cluster plus a little noise:
half of them at cosine about 0.98 (to be removed at 0.95), half at about 0.91 (to be kept).

Measured, in wall and CPU seconds (on a shared machine the CPU time is the cost): the whole ``dedup_rows``
(rows/s, rows removed against the planted count, clusters per search path) and the large cluster alone; then,
on one cluster of ``--baseline-rows`` rows, the plain greedy loop (one matrix-vector product of each row against
the kept rows so far; timed on the first ``--plain-rows`` rows, as it is slow) against the blocked numpy path,
and the blocked numpy path against faiss on the whole cluster, each pair checked to keep the same rows.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def cluster_sizes(rows: int, clusters: int, large: int, rng: np.random.Generator) -> np.ndarray:
    """One cluster of ``large`` rows, the rest log-normal (sigma 0.8), summing to ``rows``, each at least 2."""
    weights = rng.lognormal(0.0, 0.8, clusters - 1)
    rest = rows - large
    sizes = np.maximum(2, np.floor(weights / weights.sum() * rest)).astype(np.int64)
    sizes[np.argmax(sizes)] += rest - sizes.sum()
    return np.r_[large, sizes]


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def cluster_rows(size: int, dim: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """One cluster's float32 unit vectors with planted near-duplicates; returns (vectors, planted at 0.98)."""
    centre = unit(rng.standard_normal(dim, dtype=np.float32))
    x = centre + rng.standard_normal((size, dim), dtype=np.float32) / np.sqrt(dim)
    n_copies = size // 10
    copies = rng.choice(np.arange(1, size), min(n_copies, size - 1), replace=False)
    originals = np.setdiff1d(np.arange(size), copies)  # row 0 is always one
    earlier = np.searchsorted(originals, copies)  # originals before each copy
    sources = originals[(rng.random(len(copies)) * earlier).astype(np.int64)]  # an earlier row, not a copy
    close = rng.random(len(copies)) < 0.5
    noise = np.where(close, 0.2, 0.45).astype(np.float32)[:, None]
    x[copies] = unit(x[sources]) + noise * rng.standard_normal((len(copies), dim), dtype=np.float32) / np.sqrt(dim)
    return unit(x).astype(np.float32), int(close.sum())


def synthetic(rows: int, dim: int, clusters: int, large: int, seed: int):
    rng = np.random.default_rng(seed)
    sizes = cluster_sizes(rows, clusters, large, rng)
    position = rng.permutation(rows)  # where each generated row lands in the file
    embeddings = np.empty((rows, dim), dtype=np.float32)
    labels = np.empty(rows, dtype=np.int64)
    planted, start = 0, 0
    for c, size in enumerate(sizes):
        vectors, close = cluster_rows(int(size), dim, rng)
        # rows of a cluster keep their generated order in id order (copies come after their source)
        where = np.sort(position[start:start + size])
        embeddings[where] = vectors
        labels[where] = c
        planted += close
        start += size
    return embeddings, labels, sizes, planted


def plain_greedy(x: np.ndarray, threshold: float) -> np.ndarray:
    """The baseline: each row in turn against the kept rows so far (one float32 matrix-vector product)."""
    kept = np.empty_like(x)
    keep = np.zeros(len(x), dtype=bool)
    n = 0
    for row, v in enumerate(x):
        if n == 0 or (kept[:n] @ v).max() < threshold:
            kept[n] = v
            n += 1
            keep[row] = True
    return keep


def timed(run):
    """(result, wall seconds, CPU seconds of this process, all threads): on a shared machine the CPU time is
    the cost, the wall time also counts the waits for a core."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def compare_paths(one: np.ndarray, threshold: float, plain_rows: int) -> None:
    """The plain loop against the blocked numpy path on the first ``plain_rows`` rows of one cluster; then the
    blocked numpy path against faiss on all of it; each pair must keep the same rows."""
    from lpselect.steps.dedup import dedup_rows

    def blocked(x, **kw):
        return lambda: dedup_rows(threshold, ids=np.arange(len(x)), labels=None, embeddings=x, texts=[""] * len(x),
                                  **kw).keep

    head = one[:plain_rows]
    for label, (a_name, a_run), (b_name, b_run), x in [
        ("first", ("plain greedy loop", lambda: plain_greedy(head, threshold)), ("blocked numpy", blocked(head)), head),
        ("all", ("blocked numpy", blocked(one, large_cluster_rows=10**12)),
         ("faiss", blocked(one, large_cluster_rows=0)), one),
    ]:
        keep_a, wall_a, cpu_a = timed(a_run)
        keep_b, wall_b, cpu_b = timed(b_run)
        print(f"{label} {len(x)} rows of one cluster: {a_name} {wall_a:.2f} s wall / {cpu_a:.2f} s CPU, "
              f"{b_name} {wall_b:.2f} s / {cpu_b:.2f} s: {b_name} is {cpu_a / cpu_b:.1f}x faster in CPU time "
              f"({wall_a / wall_b:.1f}x in wall time); same rows kept: {np.array_equal(keep_a, keep_b)} "
              f"({int((~keep_b).sum())} removed)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--clusters", type=int, default=1000)
    p.add_argument("--large", type=int, default=60_000)
    p.add_argument("--threshold", type=float, default=0.95)
    p.add_argument("--baseline-rows", type=int, default=20_000)
    p.add_argument("--plain-rows", type=int, default=5000, help="rows the plain loop is timed on (it is slow)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    from lpselect.steps.dedup import LARGE_CLUSTER_ROWS, dedup_rows

    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    t0 = time.perf_counter()
    x, labels, sizes, planted = synthetic(args.rows, args.dim, args.clusters, args.large, args.seed)
    print(f"data: {args.rows} rows x {args.dim} float32 ({x.nbytes / 2**30:.2f} GiB), {len(sizes)} clusters "
          f"(largest {sizes.max()}, median {int(np.median(sizes))}, smallest {sizes.min()}), "
          f"{planted} planted at cosine ~0.98; generated in {time.perf_counter() - t0:.1f} s")

    ids = np.arange(args.rows)
    texts = [""] * args.rows
    result, wall, cpu = timed(lambda: dedup_rows(args.threshold, ids=ids, labels=labels, embeddings=x, texts=texts))
    print(f"dedup {args.threshold}: {wall:.1f} s wall ({args.rows / wall:,.0f} rows/s), {cpu:.1f} s CPU "
          f"({args.rows / cpu:,.0f} rows per CPU second); removed {result.n_removed} (planted at ~0.98: {planted}); "
          f"clusters per path {result.search} (faiss above {LARGE_CLUSTER_ROWS} rows)")
    large = labels == 0
    alone, wall, cpu = timed(lambda: dedup_rows(args.threshold, ids=ids[large], labels=None, embeddings=x[large],
                                                texts=texts[:int(large.sum())]))
    path = "faiss" if alone.search.get("faiss") else "numpy"
    print(f"  the large cluster alone ({int(large.sum())} rows, {path}): {wall:.1f} s wall, {cpu:.1f} s CPU")

    rng = np.random.default_rng(args.seed + 1)
    one, _ = cluster_rows(args.baseline_rows, args.dim, rng)
    compare_paths(one, args.threshold, args.plain_rows)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
