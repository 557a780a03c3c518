"""Benchmark: lazy exact greedy selection vs. the straightforward Algorithm 1 loop.

Prints, for each size, the time of the reference (every step rescores every remaining
sample) and of the fast engine (`greedy_select`, lazy per-category queues), their ratio,
and checks that both picked the same samples in the same order. Embeddings are float32
(as CLIP writes them); the engines quantize them (see vlsafety.selection._criteria).

    python bench/selection.py            # 100K x 768 (1000 picks), 300K x 768 (4000 picks)
    python bench/selection.py --quick    # 20K x 256 (300 picks)
    python bench/selection.py --sizes 50000:512:2000

When the full reference would take too long, it runs only the first
``--reference-picks`` picks and its time is extrapolated linearly to all picks (each
reference step costs the same O(n·d)); the printout says so. The fast engine always runs
fully, and its first picks are compared with the reference's.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from vlsafety.selection import greedy_select, reference_greedy_select, separability


@dataclass(frozen=True)
class Pool:
    sep: np.ndarray
    harm: np.ndarray
    category: np.ndarray
    embedding: np.ndarray  # float32
    harmful: np.ndarray  # (n, n_models) bool


def synthetic_pool(
    n: int,
    dim: int,
    *,
    n_categories: int = 6,
    subclusters: int = 20,
    n_models: int = 5,
    n_judges: int = 3,
    seed: int = 0,
) -> Pool:
    """A scored pool with the structure of real data, generated in float32 blocks.

    Embeddings: a shared direction (CLIP embeddings sit in a narrow cone), plus a category
    centroid, a subcategory centroid and per-sample noise. p_h comes from ``n_models``
    panel models of different safety levels, so it takes only ``n_models + 1`` values;
    harmfulness is the mean of ``n_judges × n_models`` judge probabilities around the
    harmful flags.
    """
    rng = np.random.default_rng(seed)
    common = rng.normal(size=dim).astype(np.float32)
    common /= np.linalg.norm(common)
    cat_centroids = rng.normal(size=(n_categories, dim)).astype(np.float32)
    cat_centroids /= np.linalg.norm(cat_centroids, axis=1, keepdims=True)
    sub_centroids = rng.normal(size=(n_categories, subclusters, dim)).astype(np.float32)
    sub_centroids /= np.linalg.norm(sub_centroids, axis=2, keepdims=True)
    category = rng.integers(0, n_categories, size=n)
    sub = rng.integers(0, subclusters, size=n)
    emb = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 32768):
        sl = slice(start, min(n, start + 32768))
        m = sl.stop - sl.start
        noise = rng.standard_normal(size=(m, dim), dtype=np.float32)
        noise /= np.float32(np.sqrt(dim))
        emb[sl] = (
            1.2 * common
            + 0.8 * cat_centroids[category[sl]]
            + 0.6 * sub_centroids[category[sl], sub[sl]]
            + 0.7 * noise
        )
    # Panel: model j flags a sample harmful when its difficulty beats the model's safety.
    difficulty = rng.normal(size=n) + 0.3 * rng.normal(size=n_categories)[category]
    safety = np.linspace(-1.0, 1.0, n_models)
    harmful = (difficulty[:, None] + 0.6 * rng.normal(size=(n, n_models))) > safety[None, :]
    p_h = harmful.mean(axis=1)
    logits = np.where(harmful[:, None, :], 2.0, -2.0) + rng.normal(size=(n, n_judges, n_models))
    judge_p = 1.0 / (1.0 + np.exp(-logits))
    harm = judge_p.mean(axis=(1, 2))
    return Pool(separability(p_h), harm, category, emb, harmful)


def _timed(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def run_size(
    n: int, dim: int, n_max: int, reference_picks: int, seed: int, torch_device: str | None
) -> bool:
    t = time.perf_counter()
    pool = synthetic_pool(n, dim, seed=seed)
    print(f"\n== pool {n} x {dim} float32, N_max={n_max} (data {time.perf_counter() - t:.1f}s)")
    args = (pool.sep, pool.harm, pool.category, pool.embedding)
    k = 6
    fast, fast_wall, fast_cpu = _timed(
        greedy_select, *args, n_categories=k, n_max=n_max, device="numpy"
    )
    ref_picks = n_max if reference_picks <= 0 else min(n_max, reference_picks)
    ref, ref_wall, _ = _timed(reference_greedy_select, *args, n_categories=k, n_max=ref_picks)
    same = np.array_equal(ref.indices, fast.indices[:ref_picks]) and np.array_equal(
        ref.score, fast.score[:ref_picks]
    )
    # Every reference step costs the same O(n·d): extrapolate its loop linearly.
    ref_loop = ref.seconds * n_max / ref_picks
    ref_full = (ref_wall - ref.seconds) + ref_loop
    note = "" if ref_picks == n_max else f"  (ran {ref_picks} picks, loop extrapolated linearly)"
    print(f"reference: {ref_full:9.2f} s{note}")
    print(
        f"fast:      {fast_wall:9.2f} s  (cpu {fast_cpu:.2f} s; loop {fast.seconds:.2f} s, "
        f"{fast.n_refreshes} refreshes, {fast.n_distance_evaluations / 1e6:.1f}M distances vs "
        f"{n * (n_max - 1) / 1e6:.0f}M for the reference)"
    )
    print(f"speed-up:  {ref_full / fast_wall:9.1f}x  (loops only: {ref_loop / fast.seconds:.1f}x)")
    print(f"identical picks and scores on the {ref_picks} compared: {same}")
    ok = bool(same)
    if torch_device:
        dense, dense_wall, _ = _timed(
            greedy_select, *args, n_categories=k, n_max=n_max, device=torch_device
        )
        same_t = np.array_equal(dense.indices, fast.indices) and np.array_equal(
            dense.score, fast.score
        )
        print(
            f"torch {torch_device}: {dense_wall:7.2f} s  (loop {dense.seconds:.2f} s); "
            f"identical to the fast engine on all {n_max} picks: {same_t}"
        )
        ok = ok and bool(same_t)
    return ok


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="one small size (20K x 256, 300 picks)")
    ap.add_argument(
        "--sizes",
        nargs="+",
        default=None,
        help="sizes as N:DIM:NMAX (default 100000:768:1000 300000:768:4000)",
    )
    ap.add_argument(
        "--reference-picks",
        type=int,
        default=100,
        help="picks the reference runs before extrapolating (0 = all; --quick runs all)",
    )
    ap.add_argument(
        "--torch-device", default=None, help="also time the dense torch engine (e.g. cuda)"
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    sizes = args.sizes or (
        ["20000:256:300"] if args.quick else ["100000:768:1000", "300000:768:4000"]
    )
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    print(f"BLAS threads: {threads}; cpus visible: {len(os.sched_getaffinity(0))}")
    # Warm up BLAS thread pools and lazy imports so neither engine pays for them.
    warm = synthetic_pool(2000, 64, seed=1)
    wargs = (warm.sep, warm.harm, warm.category, warm.embedding)
    greedy_select(*wargs, n_categories=6, n_max=20, device="numpy")
    reference_greedy_select(*wargs, n_categories=6, n_max=20)
    if args.torch_device:
        greedy_select(*wargs, n_categories=6, n_max=20, device=args.torch_device)
    ok = True
    for spec in sizes:
        n, dim, n_max = (int(x) for x in spec.split(":"))
        picks = 0 if args.quick else args.reference_picks
        ok = run_size(n, dim, n_max, picks, args.seed, args.torch_device) and ok
    if not ok:
        sys.exit("engines disagree")


if __name__ == "__main__":
    main()
