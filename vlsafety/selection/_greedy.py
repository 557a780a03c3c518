"""Algorithm 1 of VLSafetyBencher (§3.5.4): iterative criterion-based sample selection.

Each step scores every remaining sample with
``C(s, D_S) = α·C_sep(s) + β·C_harm(s) + γ·C_div(s, D_S)`` (Eq. 6) and moves the argmax
(lowest index on ties) into ``D_S``. Four engines compute the same picks bit for bit
(the arithmetic that makes this possible is described in :mod:`._criteria`):

* :func:`reference_greedy_select` — the straightforward algorithm: rescore every
  remaining sample at every step (it keeps the min-distance array incrementally);
* the blocked numpy engine behind :func:`greedy_select` (:mod:`._blocked`), and the
  blocked torch engine (:mod:`._torch`) for CUDA, also runnable on CPU: bounds refreshed
  per block of picks by large products, exact float64 on a top set;
* the lazy numpy engine (:func:`_lazy_engine`, kept as a second exact engine for the
  tests and the benchmark) — ``C_div``'s distance term only
  shrinks as ``D_S`` grows and ``ΔH`` depends only on the category, so within a category a
  stale score is an upper bound. Candidates sit in per-category max-queues of such bounds
  (bucketed by value: a heap of bucket ids over arrays of candidates); only the top bucket
  of each category that could still hold the winner is refreshed — in one matrix product,
  against the picks made since each candidate's last refresh — and the per-category
  winners are compared with ``γ/2·ΔH(c)/log K`` added. At 300K × 768 and 4000 picks it
  computes ~3% of the reference's distances.
"""

from __future__ import annotations

import contextlib
import heapq
import math
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from vlsafety.selection._criteria import (
    MAX_COSINE_DISTANCE,
    SCORE_GRID_BITS,
    cosine_distance,
    delta_entropy,
    distance_from_dots,
    quantize_embeddings,
    screen_error,
    to_score_grid,
)

__all__ = [
    "DEFAULT_WEIGHTS",
    "SelectionResult",
    "greedy_select",
    "reference_greedy_select",
]

#: α, β, γ of the paper's experiments (§4): separability, harmfulness, diversity.
DEFAULT_WEIGHTS: tuple[float, float, float] = (0.5, 0.3, 0.2)

_DIST_CHUNK = 8192  # rows per block when distances to all samples are needed
_EXACT_MAX_STALENESS = 8  # refreshes against at most this many picks skip the float32 screen
_BUCKET_TARGET = 512  # candidates per bucket near the frontier (speed only, not results)
_PARALLEL_MIN_WORK = 1 << 24  # multiply-adds above which a screen is split over threads
_ROW_CHUNK = 4096  # rows per float32 screen product
_EXACT_PAIRS_CHUNK = 2048  # pairs recomputed exactly per product after a float32 screen
_GONE = np.iinfo(np.int64).min  # bucket id of picked samples: matches no bucket
#: ``device=None``/``"auto"`` uses CUDA from this many embedding entries (n × d) on.
AUTO_CUDA_MIN_ELEMENTS = 1 << 26


@dataclass(frozen=True)
class SelectionResult:
    """The picks of one greedy selection, in pick order, with each pick's criteria.

    Attributes:
        indices: int64 pool indices in pick order (an ``initial`` set is not included).
        score: ``C(s, D_S)`` of each pick when it was picked (on the score grid).
        c_sep, c_harm: the pick's separability and harmfulness (Eq. 1, 2).
        c_div: the pick's ``C_div`` against the samples selected before it (Eq. 5).
        delta_h: the normalized category-entropy gain ``ΔH`` part of ``c_div`` (Eq. 3).
        min_distance: the cosine-distance part of ``c_div`` (Eq. 4; 1 for a first pick).
        category: the pick's category id.
        weights: ``(α, β, γ)``.
        n_categories: ``K``.
        initial: pool indices that formed ``D_S`` before the first pick.
        engine: which engine ran (``"blocked-numpy"``, ``"blocked-torch:<device>"``,
            ``"lazy-numpy"``, ``"reference-numpy"``).
        seconds: wall time of the selection loop (input validation excluded).
        n_distance_evaluations: cosine distances computed (the engines' work measure).
        n_refreshes: candidate refreshes (lazy and blocked engines; the reference reports 0).
    """

    indices: NDArray[np.int64]
    score: NDArray[np.float64]
    c_sep: NDArray[np.float64]
    c_harm: NDArray[np.float64]
    c_div: NDArray[np.float64]
    delta_h: NDArray[np.float64]
    min_distance: NDArray[np.float64]
    category: NDArray[np.int64]
    weights: tuple[float, float, float]
    n_categories: int
    initial: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    engine: str = ""
    seconds: float = 0.0
    n_distance_evaluations: int = 0
    n_refreshes: int = 0

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def summary(self) -> dict[str, Any]:
        """JSON-friendly figures for logs and MLflow (no per-pick arrays)."""
        n = len(self)
        return {
            "n_selected": n,
            "n_initial": int(self.initial.shape[0]),
            "weights": list(self.weights),
            "n_categories": self.n_categories,
            "engine": self.engine,
            "seconds": self.seconds,
            "n_distance_evaluations": self.n_distance_evaluations,
            "n_refreshes": self.n_refreshes,
            "mean_score": float(self.score.mean()) if n else float("nan"),
            "mean_c_sep": float(self.c_sep.mean()) if n else float("nan"),
            "mean_c_harm": float(self.c_harm.mean()) if n else float("nan"),
            "mean_c_div": float(self.c_div.mean()) if n else float("nan"),
        }


@dataclass(frozen=True)
class _Prepared:
    """Validated, engine-independent inputs (shared so every engine sees identical values)."""

    sep: NDArray[np.float64]
    harm: NDArray[np.float64]
    static: NDArray[np.float64]  # α·C_sep + β·C_harm
    category: NDArray[np.int64]
    q: NDArray[np.float32]  # quantized unit embeddings, see _criteria
    n_categories: int
    weights: tuple[float, float, float]
    initial: NDArray[np.int64]
    n_max: int

    @property
    def half_gamma(self) -> float:
        return 0.5 * self.weights[2]


def _validate_criterion(name: str, values: ArrayLike) -> NDArray[np.float64]:
    arr = np.asarray(values)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise ValueError(f"{name}: expected numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-d array (n_samples,), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        i = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"{name}: value at index {i} is NaN or infinite")
    if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
        i = int(np.flatnonzero((arr < 0.0) | (arr > 1.0))[0])
        raise ValueError(f"{name}: values must lie in [0, 1]; index {i} holds {arr[i]!r}")
    return arr


def _validate_weights(weights: Sequence[float]) -> tuple[float, float, float]:
    try:
        w = tuple(float(x) for x in weights)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"weights: expected three numbers (alpha, beta, gamma): {exc}") from exc
    if len(w) != 3:
        raise ValueError(f"weights: expected three numbers (alpha, beta, gamma), got {len(w)}")
    if not all(math.isfinite(x) for x in w):
        raise ValueError(f"weights: must be finite, got {w}")
    if any(x < 0.0 for x in w):
        raise ValueError(f"weights: must be >= 0 (Eq. 6), got {w}")
    if abs(sum(w) - 1.0) > 1e-9:
        raise ValueError(f"weights: must sum to 1 within 1e-9 (Eq. 6), got sum {sum(w)!r}")
    return (w[0], w[1], w[2])


def _validate_index_array(name: str, values: ArrayLike, n: int) -> NDArray[np.int64]:
    arr = np.asarray(values)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name}: expected a 1-d integer array, got {arr.dtype} {arr.shape}")
    arr = arr.astype(np.int64)
    if arr.min() < 0 or arr.max() >= n:
        raise ValueError(f"{name}: indices must lie in [0, {n}), got [{arr.min()}, {arr.max()}]")
    if np.unique(arr).size != arr.size:
        raise ValueError(f"{name}: indices must be unique")
    return arr


def _prepare(
    sep: ArrayLike,
    harm: ArrayLike,
    category: ArrayLike,
    embedding: ArrayLike | None,
    *,
    n_categories: int,
    n_max: int,
    weights: Sequence[float],
    initial: ArrayLike | None,
    quantized: NDArray[np.float32] | None = None,
) -> _Prepared:
    """Validate every input with a clear ValueError and build the shared representation.

    ``quantized`` passes embeddings already through :func:`quantize_embeddings` (callers
    that assemble a pool from validated parts); ``embedding`` is then ignored.
    """
    sep_a = _validate_criterion("sep", sep)
    harm_a = _validate_criterion("harm", harm)
    n = sep_a.shape[0]
    if harm_a.shape[0] != n:
        raise ValueError(f"harm has {harm_a.shape[0]} entries but sep has {n}")
    if isinstance(n_categories, bool) or not isinstance(n_categories, int | np.integer):
        raise ValueError(f"n_categories: expected an int, got {n_categories!r}")
    n_categories = int(n_categories)
    if n_categories < 2:
        raise ValueError(
            f"n_categories: must be >= 2 (ΔH is normalized by log K, Eq. 3), got {n_categories}"
        )
    cat = np.asarray(category)
    if cat.ndim != 1 or not np.issubdtype(cat.dtype, np.integer):
        raise ValueError(f"category: expected a 1-d integer array, got {cat.dtype} {cat.shape}")
    if cat.shape[0] != n:
        raise ValueError(f"category has {cat.shape[0]} entries but sep has {n}")
    cat = cat.astype(np.int64)
    if n and (cat.min() < 0 or cat.max() >= n_categories):
        i = int(np.flatnonzero((cat < 0) | (cat >= n_categories))[0])
        raise ValueError(
            f"category: ids must lie in [0, n_categories={n_categories}); index {i} holds {cat[i]}"
        )
    emb = np.asarray(embedding) if quantized is None else quantized
    if emb.ndim != 2 or emb.shape[0] != n:
        raise ValueError(f"embedding: expected shape ({n}, dim), got shape {emb.shape}")
    w = _validate_weights(weights)
    if isinstance(n_max, bool) or not isinstance(n_max, int | np.integer):
        raise ValueError(f"n_max: expected an int, got {n_max!r}")
    if n_max < 0:
        raise ValueError(f"n_max: must be >= 0, got {n_max}")
    init = _validate_index_array("initial", np.zeros(0) if initial is None else initial, n)
    available = n - init.shape[0]
    if n_max > available:
        warnings.warn(
            f"n_max={n_max} exceeds the {available} selectable samples; selecting {available}",
            stacklevel=3,
        )
        n_max = available
    q = quantize_embeddings(emb) if quantized is None else quantized
    static = w[0] * sep_a + w[1] * harm_a
    return _Prepared(
        sep=sep_a,
        harm=harm_a,
        static=static,
        category=cat,
        q=q,
        n_categories=n_categories,
        weights=w,
        initial=init,
        n_max=int(n_max),
    )


def _picks_to_result(
    prep: _Prepared,
    picks: list[int],
    scores: list[float],
    delta_h: list[float],
    min_distance: list[float],
    *,
    engine: str,
    seconds: float,
    n_distance_evaluations: int,
    n_refreshes: int = 0,
) -> SelectionResult:
    idx = np.asarray(picks, dtype=np.int64)
    dh = np.asarray(delta_h, dtype=np.float64)
    md = np.asarray(min_distance, dtype=np.float64)
    return SelectionResult(
        indices=idx,
        score=np.asarray(scores, dtype=np.float64),
        c_sep=prep.sep[idx],
        c_harm=prep.harm[idx],
        c_div=(dh + md) * 0.5,
        delta_h=dh,
        min_distance=md,
        category=prep.category[idx],
        weights=prep.weights,
        n_categories=prep.n_categories,
        initial=prep.initial,
        engine=engine,
        seconds=seconds,
        n_distance_evaluations=n_distance_evaluations,
        n_refreshes=n_refreshes,
    )


def _min_distance_to(
    q: NDArray[np.floating], rows: NDArray[np.floating], out: NDArray[np.float64]
) -> None:
    """``out = min(out, min_j cos_dist(q_i, rows_j))`` for every row of ``q``, in blocks."""
    for start in range(0, q.shape[0], _DIST_CHUNK):
        block = cosine_distance(q[start : start + _DIST_CHUNK], rows)
        seg = out[start : start + block.shape[0]]
        np.minimum(seg, block.min(axis=1), out=seg)


def _half_gamma_dh_grid(
    prep: _Prepared, counts: NDArray[np.int64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per category: ``ΔH`` (Eq. 3) and its score term ``grid(γ/2·ΔH)``."""
    dh = delta_entropy(counts, prep.n_categories)
    return dh, to_score_grid(prep.half_gamma * dh)


def _first_term(
    prep: _Prepared, static: NDArray[np.float64], mind: NDArray[np.float64]
) -> NDArray[np.float64]:
    """``grid(α·C_sep + β·C_harm + γ/2·cos)``: the category-independent part of ``C``."""
    return to_score_grid(static + prep.half_gamma * mind)


def reference_greedy_select(
    sep: ArrayLike,
    harm: ArrayLike,
    category: ArrayLike,
    embedding: ArrayLike,
    *,
    n_categories: int,
    n_max: int,
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    device: Any = None,
    initial: ArrayLike | None = None,
) -> SelectionResult:
    """Algorithm 1 exactly as written: rescore every remaining sample at every step.

    The reference that the fast engines are tested against. It keeps the min-distance
    array incrementally (one distance per sample to the newest pick per step), which is
    still O(n) work and an O(n·d) product per step. ``device`` is accepted for signature
    parity with :func:`greedy_select` and ignored (this is the numpy reference).

    Args and returns: as :func:`greedy_select`.
    """
    del device
    prep = _prepare(
        sep,
        harm,
        category,
        embedding,
        n_categories=n_categories,
        n_max=n_max,
        weights=weights,
        initial=initial,
    )
    t0 = time.perf_counter()
    n = prep.static.shape[0]
    q64 = prep.q.astype(np.float64)
    counts = np.bincount(prep.category[prep.initial], minlength=prep.n_categories)
    available = np.ones(n, dtype=bool)
    available[prep.initial] = False
    n_dist = 0
    if prep.initial.size:
        mind = np.full(n, MAX_COSINE_DISTANCE)
        for start in range(0, prep.initial.size, 1024):
            _min_distance_to(q64, q64[prep.initial[start : start + 1024]], mind)
        n_dist += n * int(prep.initial.size)
    else:
        mind = np.ones(n)  # D_S empty: the distance term is 1 for every sample
    picks: list[int] = []
    scores: list[float] = []
    dhs: list[float] = []
    mds: list[float] = []
    for _ in range(prep.n_max):
        dh, h_grid = _half_gamma_dh_grid(prep, counts)
        score = _first_term(prep, prep.static, mind) + h_grid[prep.category]
        score[~available] = -np.inf
        best = int(np.argmax(score))  # first maximal index: lowest index wins ties
        c = int(prep.category[best])
        picks.append(best)
        scores.append(float(score[best]))
        dhs.append(float(dh[c]))
        mds.append(float(mind[best]))
        available[best] = False
        counts[c] += 1
        dist = cosine_distance(q64, q64[best : best + 1])[:, 0]
        n_dist += n
        if len(picks) == 1 and not prep.initial.size:
            mind = dist  # the first pick replaces the empty-set convention
        else:
            np.minimum(mind, dist, out=mind)
    return _picks_to_result(
        prep,
        picks,
        scores,
        dhs,
        mds,
        engine="reference-numpy",
        seconds=time.perf_counter() - t0,
        n_distance_evaluations=n_dist,
    )


def _row_chunks(sel: NDArray[np.int64], n_picks: int, dim: int) -> list[NDArray[np.int64]]:
    """``sel`` in chunks of at most :data:`_ROW_CHUNK` rows for the screens; a large screen
    over few rows (a top set against thousands of picks) is split in one chunk per worker
    so it runs on every core."""
    step = _ROW_CHUNK
    if sel.size * n_picks * dim >= _PARALLEL_MIN_WORK:
        step = min(step, max(1, -(-sel.size // _workers())))
    return [sel[s : s + step] for s in range(0, sel.size, step)]


def _workers() -> int:
    try:
        return max(1, min(8, len(os.sched_getaffinity(0))))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, min(8, os.cpu_count() or 1))


def _screened_min(
    a: NDArray[np.float32],
    err: float,
    p: NDArray[np.float32],
    current: NDArray[np.float64],
) -> NDArray[np.float64]:
    """``min(current, min_j dist(a_i, p_j))`` exactly, screening with a float32 product.

    ``err`` bounds the float32 error of every dot product (see :func:`_refresh`). Only pairs that may be a row's nearest and nearer than ``current``
    are recomputed exactly.
    """
    dots = a @ p.T  # float32, approximate
    top = dots.max(axis=1).astype(np.float64)
    # A pick matters only if it may be the nearest (dot within 2·err of the best
    # approximate dot) and nearer than the current minimum (dot > (1 - current)·2**48).
    floor = np.maximum(top - 2.0 * err, (1.0 - current) * 2.0**48 - 2.0 * err)
    # Compare in float32 (no float64 copy of the product); round the floor down so the
    # screen keeps a superset of the pairs it must keep.
    floor32 = floor.astype(np.float32)
    up = floor32 > floor
    floor32[up] = np.nextafter(floor32[up], np.float32(-np.inf))
    ii, jj = np.nonzero(dots >= floor32[:, None])
    out = current.copy()
    # In chunks: one float64 copy of all kept pairs' rows costs more in page faults
    # than the products (a row's first refresh keeps at least one pair per row).
    for s in range(0, ii.size, _EXACT_PAIRS_CHUNK):
        i, j = ii[s : s + _EXACT_PAIRS_CHUNK], jj[s : s + _EXACT_PAIRS_CHUNK]
        exact = np.einsum("ij,ij->i", a[i].astype(np.float64), p[j].astype(np.float64))
        np.minimum.at(out, i, distance_from_dots(exact))
    return out


def _refresh(
    q: NDArray[np.float32],
    picked: NDArray[np.float32],
    n_picked: int,
    rows: NDArray[np.int64],
    version: NDArray[np.int64],
    mind: NDArray[np.float64],
    executor: ThreadPoolExecutor | None = None,
    exact_max_staleness: int = _EXACT_MAX_STALENESS,
) -> tuple[NDArray[np.float64], int]:
    """Bring ``mind[rows]`` up to date with all ``n_picked`` picks; returns it and the work.

    Rows stale by a few picks are compared with them exactly (float64 products of the
    quantized embeddings are exact integers, see :mod:`._criteria`). Otherwise rows are
    grouped by staleness in powers of two, each group is compared with the picks it has
    not seen (at most twice the distances it needs) by a float32 product used only to
    *screen*: its error is rigorously bounded by ``γ_d·‖a‖·‖b‖`` (``γ_d = d·u/(1-d·u)``,
    ``u = 2**-24``, any summation order), so every pick that could be a row's nearest — and
    nearer than its current minimum — survives, and those few pairs are recomputed exactly.
    Either way the new minimum is exactly the reference's. Large screens are split by rows
    over ``executor``'s threads (numpy releases the GIL in the products).
    """
    stale_by = n_picked - version[rows]
    most = int(stale_by.max())
    new = mind[rows]
    work = 0
    if most <= exact_max_staleness:
        # Rows that saw some of these picks already get the same distances again: harmless.
        dist = cosine_distance(q[rows], picked[n_picked - most : n_picked])
        np.minimum(new, dist.min(axis=1), out=new)
        work = dist.size
    else:
        dim = q.shape[1]
        err = screen_error(dim)  # float32 products (see _criteria.screen_error)
        group = np.frexp(stale_by.astype(np.float64))[1]
        lo, hi = int(group.min()), int(group.max())
        for g in range(lo, hi + 1):
            sel = np.flatnonzero(group == g) if lo != hi else np.arange(rows.size)
            if not sel.size:
                continue
            since = n_picked - int(stale_by[sel].max())
            p = picked[since:n_picked]
            work += sel.size * p.shape[0]
            # Rows in chunks: small copies of q's rows (a copy of 100K rows costs more in
            # page faults than its product), split over the executor's threads when big.
            chunks = _row_chunks(sel, p.shape[0], dim)

            def screen(c: NDArray[np.int64], p: NDArray[np.float32] = p) -> NDArray[np.float64]:
                return _screened_min(q[rows[c]], err, p, new[c])

            if (
                executor is not None
                and len(chunks) > 1
                and (sel.size * p.shape[0] * dim >= _PARALLEL_MIN_WORK)
            ):
                results = list(executor.map(screen, chunks))
            else:
                results = [screen(c) for c in chunks]
            for c, res in zip(chunks, results, strict=True):
                new[c] = res
    mind[rows] = new
    version[rows] = n_picked
    return new, work


class _BucketQueue:
    """One category's candidates bucketed by upper bound: a bucketed max-queue.

    Bucket ``b`` holds candidates whose bound lies in ``[b·w, (b+1)·w)`` with ``w`` a power
    of two; a heap of bucket ids yields the top bucket. Buckets are append-only lists of
    index arrays: a candidate belongs to bucket ``bid[i]`` only, and entries of candidates
    that moved to a lower bucket or were picked are dropped when a bucket is read.
    """

    __slots__ = ("_buckets", "_heap", "_top")

    def __init__(self) -> None:
        self._buckets: dict[int, list[NDArray[np.int64]]] = {}
        self._heap: list[int] = []
        self._top: tuple[int, NDArray[np.int64]] | None = None  # cache, see invalidate()

    def add(self, b: int, members: NDArray[np.int64]) -> None:
        self._top = None
        chunks = self._buckets.get(b)
        if chunks is None:
            self._buckets[b] = [members]
            heapq.heappush(self._heap, -b)
        else:
            chunks.append(members)

    def invalidate(self) -> None:
        """Forget the cached top: call when a member's bucket id changed (moved, picked)."""
        self._top = None

    def top(self, bid: NDArray[np.int64]) -> tuple[int, NDArray[np.int64]] | None:
        """The highest non-empty bucket and its current members, or None if empty."""
        if self._top is not None:
            return self._top
        heap = self._heap
        while heap:
            b = -heap[0]
            chunks = self._buckets[b]
            members = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
            members = members[bid[members] == b]
            if members.size:
                self._buckets[b] = [members]
                self._top = (b, members)
                return self._top
            heapq.heappop(heap)
            del self._buckets[b]
        return None


def _add_to_buckets(
    queues: list[_BucketQueue],
    category: NDArray[np.int64],
    bid: NDArray[np.int64],
    rows: NDArray[np.int64],
) -> None:
    # One sort on (category, bucket): bucket ids stay below 2**42 (bounds <= 2, width >= 2**-40).
    packed = category[rows] * (1 << 42) + bid[rows]
    order = np.argsort(packed, kind="stable")
    packed = packed[order]
    rows = rows[order]
    cuts = (np.flatnonzero(packed[1:] != packed[:-1]) + 1).tolist()
    for start, stop in zip([0, *cuts], [*cuts, rows.size], strict=True):
        queues[int(category[rows[start]])].add(int(bid[rows[start]]), rows[start:stop])


def _bucket_bits(keys: NDArray[np.float64], steps: int, target: int) -> int:
    """``j`` for bucket width ``2**-j``: about ``target`` candidates per bucket at the top.

    Any width gives the same picks; it only trades per-step bookkeeping against
    speculative refreshes. The density is estimated over the ``8·steps`` best bounds.
    """
    if keys.size < 2:
        return 0
    r = min(keys.size, max(64, 8 * steps))
    best = np.partition(keys, keys.size - r)[keys.size - r :]
    span = float(best.max() - best.min())
    if span <= 0.0:
        return 16
    width = span * target / r
    return int(np.clip(-math.floor(math.log2(width)), 0, SCORE_GRID_BITS))


@contextlib.contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """BLAS on one thread for the duration (no-op without threadpoolctl).

    The lazy engine's products are mostly small, where BLAS threads cost more than they
    bring (5x slower measured with 2 OpenBLAS threads on 2 cores); its large screens are
    split over its own threads instead (:func:`_refresh`).
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn/mlflow
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _lazy_engine(
    prep: _Prepared, *, bucket_target: int = _BUCKET_TARGET, bucket_bits: int | None = None
) -> SelectionResult:
    """Run :func:`_lazy_loop` with single-threaded BLAS and a thread pool for big screens."""
    with _single_threaded_blas(), ThreadPoolExecutor(_workers()) as executor:
        return _lazy_loop(prep, executor, bucket_target=bucket_target, bucket_bits=bucket_bits)


def _lazy_loop(
    prep: _Prepared,
    executor: ThreadPoolExecutor | None,
    *,
    bucket_target: int = _BUCKET_TARGET,
    bucket_bits: int | None = None,
) -> SelectionResult:
    """Exact lazy greedy: the same picks as :func:`reference_greedy_select`, far less work.

    Invariants: ``mind[i]`` is the min distance from ``i`` to the first ``version[i]``
    picks (``MAX_COSINE_DISTANCE``, a valid upper bound, while ``version[i] == 0``), so
    ``key[i] = grid(static + γ/2·mind[i])`` bounds ``i``'s current first term from above:
    more picks only lower the minimum, and the grid rounding is monotone. A candidate with
    ``version[i] == L`` (the number of picks) is exact. Within a category, scores differ
    only by the first term, so the category's best is the top of the highest bucket once
    that bucket is exact; across categories, buckets whose upper edge plus ``grid(γ/2·ΔH)``
    cannot reach the best exact score so far are never touched.
    """
    t0 = time.perf_counter()
    n, dim = prep.q.shape
    k = prep.n_categories
    static = prep.static
    cat = prep.category
    q = prep.q
    n_init = int(prep.initial.shape[0])
    picked = np.empty((n_init + prep.n_max, dim), dtype=np.float32)
    picked[:n_init] = q[prep.initial]
    n_picked = n_init  # L: rows of `picked` that are in D_S
    counts = np.bincount(cat[prep.initial], minlength=k)
    available = np.ones(n, dtype=bool)
    available[prep.initial] = False
    mind = np.full(n, MAX_COSINE_DISTANCE)
    version = np.zeros(n, dtype=np.int64)
    picks: list[int] = []
    scores: list[float] = []
    dhs: list[float] = []
    mds: list[float] = []
    work = [0, 0]  # distances computed, candidate refreshes

    steps = prep.n_max
    if steps and n_picked == 0:
        # With D_S empty the distance term is 1 for everyone: one dense step, as the reference.
        dh, h_grid = _half_gamma_dh_grid(prep, counts)
        score = _first_term(prep, static, np.ones(n)) + h_grid[cat]
        best = int(np.argmax(score))
        picks.append(best)
        scores.append(float(score[best]))
        dhs.append(float(dh[cat[best]]))
        mds.append(1.0)
        available[best] = False
        counts[cat[best]] += 1
        picked[0] = q[best]
        n_picked = 1
        steps -= 1

    key = _first_term(prep, static, mind)
    candidates = np.flatnonzero(available)
    bits = (
        bucket_bits
        if bucket_bits is not None
        else _bucket_bits(key[candidates], steps, bucket_target)
    )
    scale = float(2**bits)  # bucket of a bound: floor(bound · 2**bits), exact scaling
    width = 1.0 / scale
    bid = np.full(n, _GONE, dtype=np.int64)
    bid[candidates] = np.floor(key[candidates] * scale).astype(np.int64)
    queues = [_BucketQueue() for _ in range(k)]
    if candidates.size:
        _add_to_buckets(queues, cat, bid, candidates)

    def settle(rows: NDArray[np.int64]) -> None:
        """Refresh ``rows``, recompute their bounds and move them to their new buckets."""
        new_mind, distances = _refresh(q, picked, n_picked, rows, version, mind, executor)
        work[0] += distances
        work[1] += rows.size
        new_key = _first_term(prep, static[rows], new_mind)
        key[rows] = new_key
        new_bid = np.floor(new_key * scale).astype(np.int64)
        moved = new_bid != bid[rows]
        if moved.any():
            bid[rows[moved]] = new_bid[moved]
            _add_to_buckets(queues, cat, bid, rows[moved])
            for c in np.unique(cat[rows[moved]]).tolist():
                queues[c].invalidate()

    for _ in range(steps):
        dh, h_grid = _half_gamma_dh_grid(prep, counts)
        h = h_grid.tolist()
        # Rounds over the top bucket of every category at once. The best exact score
        # among their fresh members is a real candidate; a category can hold something
        # better only if its top bucket is not wholly fresh and its upper edge plus
        # grid(γ/2·ΔH) exceeds that score (edges are strict bounds, so no tie either).
        # Refresh those buckets and repeat; at step start every top is stale by the last
        # pick, so the first round refreshes them all with one product.
        while True:
            tops = [(c, top) for c, top in ((c, qu.top(bid)) for c, qu in enumerate(queues)) if top]
            members = np.concatenate([top[1] for _, top in tops])
            fresh = version[members] == n_picked
            best_f = -math.inf
            best_i = -1
            if fresh.any():
                cand = members[fresh]
                f = key[cand] + h_grid[cat[cand]]
                best_f = float(f.max())
                best_i = int(cand[f == best_f].min())
            starts = np.cumsum([0] + [top[1].size for _, top in tops[:-1]])
            whole = np.logical_and.reduceat(fresh, starts).tolist()
            stale_parts = [
                top[1][~fresh[start : start + top[1].size]]
                for (c, top), start, done in zip(tops, starts.tolist(), whole, strict=True)
                if not done and (top[0] + 1) * width + h[c] > best_f
            ]
            if not stale_parts:
                break
            settle(np.concatenate(stale_parts))
        best_c = int(cat[best_i])
        picks.append(best_i)
        scores.append(best_f)
        dhs.append(float(dh[best_c]))
        mds.append(float(mind[best_i]))
        bid[best_i] = _GONE
        queues[best_c].invalidate()
        counts[best_c] += 1
        picked[n_picked] = q[best_i]
        n_picked += 1

    return _picks_to_result(
        prep,
        picks,
        scores,
        dhs,
        mds,
        engine="lazy-numpy",
        seconds=time.perf_counter() - t0,
        n_distance_evaluations=work[0],
        n_refreshes=work[1],
    )


def _cuda_available() -> bool:
    """``torch.cuda.is_available()``, without importing torch (seconds) on a machine with
    no NVIDIA driver at all."""
    if "torch" not in sys.modules and not (
        os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidiactl")
    ):
        return False
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency; keep numpy usable without it
        return False
    return bool(torch.cuda.is_available())


def greedy_select(
    sep: ArrayLike,
    harm: ArrayLike,
    category: ArrayLike,
    embedding: ArrayLike,
    *,
    n_categories: int,
    n_max: int,
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    device: Any = None,
    initial: ArrayLike | None = None,
) -> SelectionResult:
    """Select ``n_max`` samples by Algorithm 1 (VLSafetyBencher §3.5.4), exactly and fast.

    Every step picks the remaining sample with the largest
    ``C = α·C_sep + β·C_harm + γ·C_div(s, D_S)`` (Eq. 6), where
    ``C_div = (ΔH/log K + min cosine distance to D_S) / 2`` (Eq. 3–5) and the distance term
    is 1 while ``D_S`` is empty; ties go to the lowest index. The picks are identical to
    :func:`reference_greedy_select`'s.

    Args:
        sep: ``C_sep`` per sample, in [0, 1] (see :func:`separability`).
        harm: ``C_harm`` per sample, in [0, 1] (see :func:`harmfulness`).
        category: category id per sample, in ``[0, n_categories)``.
        embedding: ``(n_samples, dim)`` joint image-text embeddings; need not be
            normalized (they are), but no row may be zero.
        n_categories: ``K``, the taxonomy's category count (>= 2), not only the ones present.
        n_max: number of samples to pick; clipped, with a warning, to what is selectable.
        weights: ``(α, β, γ)``, each >= 0, summing to 1 within 1e-9.
        device: ``None`` or ``"auto"`` — the fastest engine for the size
            (:func:`auto_device`); ``"numpy"`` — the blocked numpy engine (:mod:`._blocked`);
            ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a ``torch.device`` — the blocked torch
            engine on that device (:mod:`._torch`).
        initial: pool indices already in ``D_S`` before the first pick (update mode); they
            count for ΔH and for the distance term and are never picked.

    Returns:
        A :class:`SelectionResult` in pick order.

    Raises:
        ValueError: a shape, value or weight is invalid (the message names it).
    """
    prep = _prepare(
        sep,
        harm,
        category,
        embedding,
        n_categories=n_categories,
        n_max=n_max,
        weights=weights,
        initial=initial,
    )
    return _run(prep, device)


def auto_device(n_samples: int, dim: int) -> str:
    """The engine ``device=None``/``"auto"`` runs: ``"cuda"`` for pools of at least
    :data:`AUTO_CUDA_MIN_ELEMENTS` embedding entries when CUDA is available, else ``"numpy"``.

    On the CPU the blocked numpy engine is the fastest at every size measured
    (bench/selection.py: torch on the CPU runs the same blocks, float32 bounds and exact
    float64 top sets, 1.2-1.7x slower: its exact refresh has no float32 screen). On CUDA
    the per-pick work is the same host loop and the refresh GEMMs run on the GPU, so it
    wins once they dominate; below the cut the numpy engine needs at most ~0.3 s of CPU (100K × 768 → 1000 picks), about CUDA's start-up plus the upload of the
    embeddings. The cut is reasoned from CPU measurements only (no GPU was available when
    it was set); bench/selection.py prints the CUDA figure where there is one.
    """
    if n_samples * dim >= AUTO_CUDA_MIN_ELEMENTS and _cuda_available():
        return "cuda"
    return "numpy"


def _run(prep: _Prepared, device: Any) -> SelectionResult:
    """Dispatch prepared inputs to the engine ``device`` names (see :func:`greedy_select`)."""
    if device is None or (isinstance(device, str) and device == "auto"):
        device = auto_device(*prep.q.shape)
    if isinstance(device, str) and device == "numpy":
        from vlsafety.selection._blocked import blocked_engine

        return blocked_engine(prep)
    from vlsafety.selection._torch import torch_engine

    return torch_engine(prep, device)


def _with_weights(prep: _Prepared, weights: Sequence[float]) -> _Prepared:
    """The same prepared pool under other weights (skips re-validating the embeddings)."""
    w = _validate_weights(weights)
    return replace(prep, weights=w, static=w[0] * prep.sep + w[1] * prep.harm)
