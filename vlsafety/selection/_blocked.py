"""Blocked lazy greedy on the CPU: Algorithm 1's picks, bit for bit, with few large products.

The state of every sample ``i`` is ``mind[i]``, its exact minimum cosine distance to the
first ``version[i]`` picks (:data:`MAX_COSINE_DISTANCE` while ``version[i] == 0``). More
picks only lower a minimum, so ``key[i] = grid(α·C_sep + β·C_harm + γ/2·mind[i])`` bounds
``i``'s first score term from above, and ``key[i] + grid(γ/2·ΔH(c))`` its score ``C``
(Eq. 6). Work goes in blocks of picks:

1. **Active set.** ``A`` = the samples whose bound ``key + max_c grid(γ/2·ΔH(c))`` reaches a
   threshold ``τ`` a little below the last pick's score (on the score grid). Its stale
   members are brought up to date against all picks so far in a few large products
   (:func:`._greedy._refresh`: float32 screen with a rigorous error bound, exact float64 on
   the pairs that may matter), and ``A`` is sorted by key.
2. **Picks within the block.** Each pick examines a window at the top of ``A``'s order:
   the window's members are brought up to date exactly against the block's picks (small
   float64 products of the quantised rows, exact integers), and the best exact score
   wins if it beats strictly every bound below the window and every sample outside ``A``
   (their bounds lie below ``τ - max ΔH-term at block start + max ΔH-term now``). Ties
   among the exact scores go to the lowest index, as in Algorithm 1. Otherwise the window
   doubles; when ``A`` itself cannot certify the pick the block ends and the next block
   lowers ``τ``.

Every comparison is between exact values on the score grid, so the picks are those of
:func:`reference_greedy_select`; the threshold, block size and window only move work.

Status (issue 13): exact and tested (tests/selection/test_selection_algorithm1.py), but
not dispatched. At 300K × 768 → 4000 picks it computes half the lazy engine's distances
(21M vs 42M) yet spent more CPU (3.7 s vs 3.0 s, shared 2-core machine): the per-pick
windows convert rows to float64 and grow when the block-start bounds are loose. To do:
keep float64 copies of the top of ``A`` per block, and per-category windows.
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
    to_score_grid,
)
from vlsafety.selection._greedy import (
    SelectionResult,
    _first_term,
    _half_gamma_dh_grid,
    _picks_to_result,
    _Prepared,
    _refresh,
    _single_threaded_blas,
    _workers,
)

__all__ = ["blocked_engine"]

BLOCK = 64  # picks per block (speed only, not results)
_WINDOW = 16  # first window of each pick
_SMALL_REFRESH = 4096  # rows refreshed exactly in float64 when also stale by <= 8 picks
_MIN_MARGIN = 2.0**-30  # smallest threshold margin below the last score


def blocked_engine(prep: _Prepared, *, block: int = BLOCK) -> SelectionResult:
    """Run :func:`_blocked_loop` with single-threaded BLAS and a pool for the big screens."""
    with _single_threaded_blas(), ThreadPoolExecutor(_workers()) as executor:
        return _blocked_loop(prep, executor, block=block)


def _blocked_loop(
    prep: _Prepared, executor: ThreadPoolExecutor | None, *, block: int = BLOCK
) -> SelectionResult:
    t0 = time.perf_counter()
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
    mind = np.full(n, MAX_COSINE_DISTANCE)
    version = np.zeros(n, dtype=np.int64)
    picks: list[int] = []
    scores: list[float] = []
    dhs: list[float] = []
    mds: list[float] = []
    work = [0, 0]

    def pick(i: int, score: float, dh: NDArray[np.float64], distance: float) -> None:
        nonlocal n_picked
        picks.append(i)
        scores.append(score)
        dhs.append(float(dh[cat[i]]))
        mds.append(distance)
        available[i] = False
        counts[cat[i]] += 1
        picked[n_picked] = q[i]
        n_picked += 1

    steps = prep.n_max
    if steps and n_picked == 0:
        # D_S empty: the distance term is 1 for everyone, one dense step as the reference.
        dh, h_grid = _half_gamma_dh_grid(prep, counts)
        first = _first_term(prep, static, np.ones(n)) + h_grid[cat]
        best = int(np.argmax(first))
        pick(best, float(first[best]), dh, 1.0)
        steps -= 1

    key = _first_term(prep, static, mind)
    margin = _MIN_MARGIN
    last_drop = 0.0
    while len(picks) < prep.n_max:
        dh, h_grid = _half_gamma_dh_grid(prep, counts)
        last = scores[-1] if scores else float((key + h_grid[cat]).max())
        tau = float(to_score_grid(last - max(margin, 2.0 * last_drop)))
        # 1. Active set: bring its stale members up to date, keep those still above tau.
        active = np.flatnonzero((key + h_grid[cat] >= tau) & available)
        stale = active[version[active] < n_picked]
        if stale.size:
            # Many rows: the float32 screen (no float64 copy of the rows) even when barely stale.
            exact_upto = 8 if stale.size <= _SMALL_REFRESH else 0
            new_mind, distances = _refresh(
                q, picked, n_picked, stale, version, mind, executor, exact_upto
            )
            work[0] += distances
            work[1] += stale.size
            key[stale] = _first_term(prep, static[stale], new_mind)
            active = active[key[active] + h_grid[cat[active]] >= tau]
        bound0 = key[active] + h_grid[cat[active]]
        order = np.lexsort((active, -bound0))  # bound desc, then index asc
        # 2. Picks within the block, certified against everything below the window.
        start_count = len(picks)
        certified = _picks_in_block(
            prep,
            active[order],
            bound0[order],
            tau,
            h_grid,
            mind,
            counts,
            min(block, prep.n_max - len(picks)),
            pick,
            work,
        )
        if certified == 0:
            margin = 4.0 * max(margin, 2.0 * last_drop)  # tau was too high: widen A
            last_drop = 0.0
            continue
        end = len(picks)
        if end > start_count:
            drop = (scores[start_count - 1] if start_count else scores[0]) - scores[end - 1]
            last_drop = max(drop, 0.0)
        margin = max(_MIN_MARGIN, margin / 2.0)

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


def _picks_in_block(
    prep: _Prepared,
    order: NDArray[np.int64],
    sorted_bound: NDArray[np.float64],
    tau: float,
    h0: NDArray[np.float64],
    mind: NDArray[np.float64],
    counts: NDArray[np.int64],
    max_picks: int,
    pick: Callable[[int, float, NDArray[np.float64], float], None],
    work: list[int],
) -> int:
    """Make up to ``max_picks`` certified picks from ``order``; returns how many.

    ``order`` holds the active set by bound ``key + h0[category]`` descending (``h0``: the
    ΔH terms at block start; ``sorted_bound`` in that order), then index ascending, with
    ``mind`` exact for its members at block start. Every sample outside it has
    ``key + h0[category] < tau``. A step's ΔH terms ``h`` differ from ``h0`` by at most
    ``max(h - h0)``, which every bound of the step adds. ``pick`` records a pick and
    updates ``counts``.
    """
    q = prep.q
    static = prep.static
    cat = prep.category
    m = order.size
    bmind = np.full(m, -1.0)  # exact distance within the block, filled when first seen
    bver = np.zeros(m, dtype=np.int64)  # block picks each position has seen
    taken = np.zeros(m, dtype=bool)
    block_rows = np.empty((max_picks, q.shape[1]), dtype=np.float64)
    pos = 0
    t = _WINDOW
    for j in range(max_picks):
        dh, h_grid = _half_gamma_dh_grid(prep, counts)
        shift = float((h_grid - h0).max())  # exact: both on the score grid
        outside = tau + shift
        while pos < m and taken[pos]:
            pos += 1
        t = max(_WINDOW, t // 2)
        while True:
            stop = min(m, pos + t)
            win = np.arange(pos, stop)
            win = win[~taken[win]]
            if not win.size:
                return j
            rows = order[win]
            first_seen = bmind[win] < 0.0
            if first_seen.any():
                bmind[win[first_seen]] = mind[rows[first_seen]]
            behind = bver[win] < j
            if behind.any():
                w = win[behind]
                lo = int(bver[w].min())
                # Exact: float64 products of the quantised rows are integers (_criteria).
                dots = q[order[w]].astype(np.float64) @ block_rows[lo:j].T
                work[0] += dots.size
                d = distance_from_dots(dots).min(axis=1)
                np.minimum(bmind[w], d, out=d)
                bmind[w] = d
                bver[w] = j
            sc = _first_term(prep, static[rows], bmind[win]) + h_grid[cat[rows]]
            best = float(sc.max())
            below = float(sorted_bound[stop]) + shift if stop < m else -math.inf
            if best > below and best >= outside:
                i = int(rows[sc == best].min())
                k = int(win[rows == i][0])
                taken[k] = True
                block_rows[j] = q[i]
                pick(i, best, dh, float(bmind[k]))
                break
            if stop < m and below >= best:
                t *= 2
                continue
            return j
    return max_picks
