"""Blocked lazy greedy on the CPU: Algorithm 1's picks, bit for bit, with few large products.

The numpy twin of :mod:`._torch`'s engine and the one ``device="numpy"`` runs. Every
sample ``i`` keeps two values: ``mind[i]``, an *upper bound* on its minimum cosine
distance to the first ``version[i]`` picks, and ``mind_ex[i]``, its *exact* minimum over
the first ``version_ex[i] <= version[i]`` picks (both :data:`MAX_COSINE_DISTANCE` while
nothing was seen). More picks only lower a minimum, so
``key[i] = grid(α·C_sep + β·C_harm + γ/2·mind[i])`` bounds ``i``'s first score term from
above, and ``key[i] + grid(γ/2·ΔH(c_i))`` its score ``C`` (Eq. 6). Work goes in blocks of
up to ``block`` picks:

1. **Bounds.** ``U`` = available samples whose bound reaches a threshold ``τ`` (on the
   score grid) just below the last pick's score, lowered by the previous block's score
   drop. Their bounds are lowered with the picks they have not seen by float32 products
   only (:func:`_bound_refresh`: the products' error is rigorously bounded, so the bound
   stays a bound; where no new pick can be nearer than the exact minimum, that minimum
   stays exact too). No float64 work: most rows just fall below ``τ``.
2. **Top set.** ``S`` = the members of ``U`` whose bound is among the ``top`` largest
   (ties at the edge included), in ascending pool order; its members are made exact
   (:func:`._greedy._refresh`: float32 screen, exact float64 on the pairs that may
   matter) and ``S`` is chosen again until all its members are exact. ``r[c]`` = the
   largest first-term bound in ``U \\ S`` per category; every sample outside ``U`` has
   ``key + max_c grid(γ/2·ΔH_0(c)) < τ``.
3. **Picks.** Each step brings ``S`` up to date with the previous pick (one exact float64
   matrix-vector product over its rows), scores ``S`` exactly and takes the argmax
   (lowest index on ties). The pick stands if its score beats strictly
   ``max_c r[c] + grid(γ/2·ΔH(c))`` and ``τ - max_c ΔH_0-term + max_c ΔH-term`` — no
   sample outside ``S`` can reach it, as bounds only fall — else the block ends there. A
   block that certifies nothing lowers ``τ``; with ``τ = -∞`` the top set holds the best
   exact score and is always certified, so every block progresses.

Every comparison is between exact values on the score grid, so the picks are those of
:func:`reference_greedy_select`; the threshold, block and top-set sizes only move work.
At 300K × 768 → 4000 picks (bench/selection.py) it computes ~25M distances, 60% of the
lazy engine's, nearly all in float32 products over rows gathered once per block, and
about 2x less CPU. Known weak spot: the threshold follows the previous block's score drop,
which scores driven by diversity alone over many duplicated rows make large; on such a
pool (1500 samples, γ = 1) it computes as many distances as the dense loop, twice the lazy
engine's (tests/selection/test_selection_greedy.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numpy.typing import NDArray

from vlsafety.selection._criteria import (
    MAX_COSINE_DISTANCE,
    distance_from_dots,
    screen_error,
    to_score_grid,
)
from vlsafety.selection._greedy import (
    _PARALLEL_MIN_WORK,
    SelectionResult,
    _first_term,
    _half_gamma_dh_grid,
    _picks_to_result,
    _Prepared,
    _refresh,
    _row_chunks,
    _single_threaded_blas,
    _workers,
)

__all__ = ["blocked_engine"]

BLOCK = 256  # picks per block at most (speed only, not results)
TOP = 256  # top-set size (speed only, not results)
_SMALL_REFRESH = 4096  # rows refreshed exactly in float64 when also stale by <= 8 picks
_MIN_MARGIN = 2.0**-30  # smallest threshold margin below the last score
_GRAM_MAX_ROWS = 1024  # top sets up to this size get a Gram matrix (8 MB at most)


def blocked_engine(prep: _Prepared, *, block: int = BLOCK, top: int = TOP) -> SelectionResult:
    """Run :func:`_blocked_loop` with single-threaded BLAS and a pool for the big screens."""
    with _single_threaded_blas(), ThreadPoolExecutor(_workers()) as executor:
        return _blocked_loop(prep, executor, block=block, top=top)


def _widen(margin: float, last_drop: float) -> float:
    """The next, larger threshold margin; infinite (every sample refreshed) past 4, as
    every bound lies below 3."""
    wider = 4.0 * max(margin, 2.0 * last_drop)
    return wider if wider <= 4.0 else math.inf


def _blocked_loop(
    prep: _Prepared,
    executor: ThreadPoolExecutor | None,
    *,
    block: int = BLOCK,
    top: int = TOP,
) -> SelectionResult:
    t0 = time.perf_counter()
    block, top = max(1, int(block)), max(1, int(top))
    n, dim = prep.q.shape
    q = prep.q
    static = prep.static
    cat = prep.category
    n_init = int(prep.initial.shape[0])
    picked = np.empty((n_init + prep.n_max, dim), dtype=np.float32)
    picked[:n_init] = q[prep.initial]
    n_picked = n_init
    counts = np.bincount(cat[prep.initial], minlength=prep.n_categories)
    available = np.ones(n, dtype=bool)
    available[prep.initial] = False
    # mind: an upper bound on the min distance to the first version[i] picks (float32
    # screens); mind_ex: the exact min distance to the first version_ex[i] picks.
    mind = np.full(n, MAX_COSINE_DISTANCE)
    version = np.zeros(n, dtype=np.int64)
    mind_ex = mind.copy()
    version_ex = version.copy()
    picks: list[int] = []
    scores: list[float] = []
    dhs: list[float] = []
    mds: list[float] = []
    work = [0, 0]

    def record(i: int, score: float, dh: NDArray[np.float64], distance: float) -> None:
        nonlocal n_picked
        picks.append(i)
        scores.append(score)
        dhs.append(float(dh[cat[i]]))
        mds.append(distance)
        available[i] = False
        counts[cat[i]] += 1
        picked[n_picked] = q[i]
        n_picked += 1

    if prep.n_max and n_picked == 0:
        # D_S empty: the distance term is 1 for everyone, one dense step as the reference.
        dh, h_grid = _half_gamma_dh_grid(prep, counts)
        first = _first_term(prep, static, np.ones(n)) + h_grid[cat]
        best = int(np.argmax(first))
        record(best, float(first[best]), dh, 1.0)

    key = _first_term(prep, static, mind)
    margin = _MIN_MARGIN
    last_drop = 0.0
    while len(picks) < prep.n_max:
        h0 = _half_gamma_dh_grid(prep, counts)[1]
        h_max0 = float(h0.max())
        # Update mode before its first pick: no score yet, everything is a candidate.
        last = scores[-1] if scores else -math.inf
        tau = float(to_score_grid(last - max(margin, last_drop)))
        # 1. Refresh the candidates whose bound reaches tau.
        cand = np.flatnonzero(available & (key >= tau - h_max0))
        if not cand.size:
            margin, last_drop = _widen(margin, last_drop), 0.0
            continue
        stale = cand[version[cand] < n_picked]
        if stale.size:
            # Upper bounds only (float32 products, no exact pairs): most rows just fall.
            new_bound = _bound_refresh(
                q, picked, n_picked, stale, (version, mind, version_ex, mind_ex), executor, work
            )
            work[1] += stale.size
            key[stale] = _first_term(prep, static[stale], new_bound)
        # 2. Top set: the largest bounds, ties at the edge included (ascending index),
        # made exact; repeat while exact values let other rows into it.
        while True:
            bound = key[cand] + h0[cat[cand]]
            if cand.size > top:
                in_s = bound >= np.partition(bound, cand.size - top)[cand.size - top]
                s_idx, rest = cand[in_s], cand[~in_s]
            else:
                s_idx, rest = cand, cand[:0]
            need = s_idx[version_ex[s_idx] < n_picked]
            if not need.size:
                break
            exact_upto = 8 if need.size <= _SMALL_REFRESH else 0
            new_mind, distances = _refresh(
                q, picked, n_picked, need, version_ex, mind_ex, executor, exact_upto
            )
            work[0] += distances
            mind[need] = new_mind
            version[need] = n_picked
            key[need] = _first_term(prep, static[need], new_mind)
        r = np.full(prep.n_categories, -math.inf)
        np.maximum.at(r, cat[rest], key[rest])
        # 3. Picks. Outside U: key + h_max0 < tau exactly (score grid values, exact sums).
        start, n_start = len(picks), n_picked
        s_mind = mind_ex[s_idx].copy()
        seen = _top_set_picks(
            prep,
            s_idx,
            q[s_idx].astype(np.float64),
            s_mind,
            (r, tau - h_max0),
            min(block, prep.n_max - start),
            counts,
            record,
        )
        work[0] += seen * s_idx.size
        mind[s_idx] = mind_ex[s_idx] = s_mind
        version[s_idx] = version_ex[s_idx] = n_start + seen
        key[s_idx] = _first_term(prep, static[s_idx], s_mind)
        if len(picks) == start:  # tau was too high: lower it
            margin, last_drop = _widen(margin, last_drop), 0.0
            continue
        last_drop = max(0.0, scores[start - 1] - scores[-1]) if start else 0.0
        margin = max(_MIN_MARGIN, margin / 2.0) if math.isfinite(margin) else 1.0

    return _picks_to_result(
        prep,
        picks,
        scores,
        dhs,
        mds,
        engine="blocked-numpy",
        seconds=time.perf_counter() - t0,
        n_distance_evaluations=work[0],
        n_refreshes=work[1],
    )


def _top_set_picks(
    prep: _Prepared,
    s_idx: NDArray[np.int64],
    rows: NDArray[np.float64],
    s_mind: NDArray[np.float64],
    outside: tuple[NDArray[np.float64], float],
    steps: int,
    counts: NDArray[np.int64],
    record: Callable[[int, float, NDArray[np.float64], float], None],
) -> int:
    """Up to ``steps`` certified picks from the top set; returns how many ``s_mind`` saw.

    ``s_idx`` (ascending), its float64 quantised ``rows`` and exact distances ``s_mind``
    (updated in place) form the top set. ``outside = (r, below)``: every available sample
    outside it has a first-term bound ``<= r[c]`` for its category ``c``, or one below
    ``below`` whatever its category (so its score is below ``below + max_c ΔH-term``).
    A pick stands when its exact score beats every such bound strictly; ``record`` stores
    it and updates ``counts`` (for the next step's ΔH, Eq. 3). Every comparison is between
    values on the score grid; ties in the top set go to the lowest index (Algorithm 1).
    """
    r, below = outside
    s_static = prep.static[s_idx]  # a copy (fancy indexing): picked rows become -inf
    s_cat = prep.category[s_idx]
    dh, h = _half_gamma_dh_grid(prep, counts)
    seen = 0
    pos = 0  # the previous pick's position in the top set, from step 1 on
    # A small top set's Gram matrix, once: one product instead of a matrix-vector product
    # per pick (0.16 s instead of 0.30 s over 4000 picks at 300K x 768). Exact either way:
    # float64 products of quantised rows are integers (_criteria).
    gram = rows @ rows.T if steps > 1 and rows.shape[0] <= _GRAM_MAX_ROWS else None
    dist = np.empty(rows.shape[0])
    for j in range(steps):
        if j:
            dh, h = _half_gamma_dh_grid(prep, counts)
            if gram is not None:
                dist[:] = gram[pos]
            else:
                np.matmul(rows, rows[pos], out=dist)
            np.minimum(s_mind, distance_from_dots(dist), out=s_mind)
            seen += 1
        score = _first_term(prep, s_static, s_mind) + h[s_cat]
        pos = int(np.argmax(score))  # first maximal position: lowest index on ties
        best = float(score[pos])
        if not (best > float((r + h).max()) and best > below + float(h.max())):
            break
        record(int(s_idx[pos]), best, dh, float(s_mind[pos]))
        s_static[pos] = -math.inf  # taken: never the argmax again
    return seen


def _bound_refresh(
    q: NDArray[np.float32],
    picked: NDArray[np.float32],
    n_picked: int,
    rows: NDArray[np.int64],
    state: tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.int64], NDArray[np.float64]],
    executor: ThreadPoolExecutor | None,
    work: list[int],
) -> NDArray[np.float64]:
    """Lower the bounds ``mind[rows]`` with all ``n_picked`` picks; returns them.

    ``state`` is ``(version, mind, version_ex, mind_ex)``. Rows are grouped by staleness in
    powers of two and compared with the picks they have not seen by float32 products,
    whose error is at most ``err`` (:func:`._greedy._refresh`): the exact minimum over those
    picks lies within ``[dist(top + err), dist(top - err)]`` for the approximate largest dot
    ``top``. The upper end lowers the bound; where the lower end is no below a row's exact
    minimum, that minimum is still exact and its ``version_ex`` moves too (no float64 work).
    """
    version, mind, version_ex, mind_ex = state
    dim = q.shape[1]
    err = screen_error(dim)  # float32 products (see _criteria.screen_error)
    stale_by = n_picked - version[rows]
    group = np.frexp(stale_by.astype(np.float64))[1]
    out = np.empty(rows.size)
    for g in np.unique(group).tolist():
        sel = np.flatnonzero(group == g)
        p = picked[n_picked - int(stale_by[sel].max()) : n_picked]
        work[0] += sel.size * p.shape[0]
        work[1] += sel.size
        chunks = _row_chunks(sel, p.shape[0], dim)

        def top_dots(c: NDArray[np.int64], p: NDArray[np.float32] = p) -> NDArray[np.float64]:
            return np.asarray((q[rows[c]] @ p.T).max(axis=1), dtype=np.float64)

        if (
            executor is not None
            and len(chunks) > 1
            and sel.size * p.shape[0] * dim >= (_PARALLEL_MIN_WORK)
        ):
            tops = list(executor.map(top_dots, chunks))
        else:
            tops = [top_dots(c) for c in chunks]
        for c, top in zip(chunks, tops, strict=True):
            r = rows[c]
            near = distance_from_dots(top + err)  # <= every new exact distance
            far = distance_from_dots(top - err)  # >= the nearest new exact distance
            still = (version_ex[r] == version[r]) & (near >= mind_ex[r])
            version_ex[r[still]] = n_picked
            out[c] = np.minimum(mind[r], far)
    mind[rows] = out
    version[rows] = n_picked
    return out
