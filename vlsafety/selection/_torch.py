"""Blocked lazy Algorithm 1 in torch: one code path for CPU and CUDA tensors.

The picks equal :func:`reference_greedy_select`'s bit for bit. Every sample ``i`` keeps
``mind[i]``, its exact minimum cosine distance to the first ``version[i]`` picks
(:data:`MAX_COSINE_DISTANCE` while ``version[i] == 0``); more picks only lower a minimum,
so ``key[i] = grid(α·C_sep + β·C_harm + γ/2·mind[i])`` bounds ``i``'s first score term
from above, and ``key[i] + grid(γ/2·ΔH(c_i))`` its score ``C`` (Eq. 6). Work goes in
blocks of up to ``block`` picks, with one host synchronisation per block:

1. **Refresh.** ``U`` = available samples whose bound reaches a threshold ``τ`` a little
   below the last pick's score. Their ``mind`` is brought up to date against all picks so
   far by float64 products of the quantised rows — exact integers on any device, in any
   summation order (see :mod:`._criteria`) — grouped by staleness in powers of two.
2. **Top set.** ``S`` = the members of ``U`` whose exact bound at block start is among the
   ``top`` largest (all ties at the edge included), in ascending pool order; their rows
   are copied once, in float64. Every sample outside ``S`` keeps its bound, and
   ``r[c]`` = the largest first-term bound outside ``S`` in category ``c``.
3. **Picks on the device.** Each step updates ``S``'s distances with the previous pick
   (one matrix-vector product), scores ``S`` exactly, takes the argmax (first maximal
   position: the lowest pool index on ties) and marks it *certified* when its score beats
   strictly ``max_c r[c] + grid(γ/2·ΔH(c))`` — no sample outside ``S`` can then reach it,
   as a bound only falls within the block. ``ΔH`` is computed on the device from the
   category counts, with ``n·log n`` from a host table.
4. **Check on the host**, once per block: the picks up to the first uncertified step are
   kept, and only up to the first step whose device ``grid(γ/2·ΔH)`` differs from the
   host's :func:`delta_entropy` (the device sums ``n·log n`` in its own order, so an ulp
   can move a value across a grid edge; the next block restarts there with the host's
   exact values). A block that certifies nothing lowers ``τ``; with ``τ = -∞`` every
   bound is exact and the best sample is always certified, so every block progresses.

The threshold, block size and top-set size only move work, never the picks. On CUDA
the refresh products are float64 GEMMs (an H100's FP64 tensor cores run them at tens of
TFLOP/s) and a step is a handful of small kernels with no host round trip; on the CPU
the same code runs with smaller defaults and is slower than the numpy engine
(bench/selection.py prints both).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlsafety.selection._criteria import EMBEDDING_BITS, MAX_COSINE_DISTANCE, SCORE_GRID_BITS
from vlsafety.selection._greedy import (
    SelectionResult,
    _first_term,
    _half_gamma_dh_grid,
    _picks_to_result,
    _Prepared,
)

__all__ = ["torch_engine"]

_DOT_UNSCALE = 2.0 ** (-2 * EMBEDDING_BITS)
_GRID_SCALE = 2.0**SCORE_GRID_BITS
_GRID_UNSCALE = 2.0**-SCORE_GRID_BITS
_PRODUCT_ELEMENTS = 1 << 22  # float64 entries per refresh product (memory bound)
_CHUNK_ROWS = 4096  # rows per refresh product (their float64 copy stays small)
_MIN_MARGIN = 2.0**-30  # smallest threshold margin below the last score
#: (picks per block, top-set size) per device type: speed only, never the picks.
DEFAULTS: dict[str, tuple[int, int]] = {"cpu": (64, 1024), "cuda": (128, 4096)}


def _resolve_device(device: Any) -> Any:
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device: expected None, 'auto', 'numpy', 'cpu', 'cuda', 'cuda:N' or a "
            f"torch.device, got {device!r}"
        ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} requested but CUDA is not available")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device: only cpu and cuda are supported, got {dev.type!r}")
    return dev


def _grid(x: Any) -> Any:
    """``to_score_grid`` on a tensor: round half to even at ``2**-40`` (exact scalings)."""
    import torch

    return torch.round(x * _GRID_SCALE) * _GRID_UNSCALE


@dataclass(frozen=True)
class _DevicePool:
    """The pool's device tensors and constants that every block reads."""

    q: Any  # quantised rows, float32 (exact)
    static: Any  # α·C_sep + β·C_harm, float64
    cat: Any  # category ids, int64
    xlx_table: Any  # k·log k, float64
    half_gamma: float
    norm: float  # log K


def _device_half_gamma_dh_grid(
    counts: Any, xlx_table: Any, total: int, half_gamma: float, norm: float
) -> Any:
    """``grid(γ/2·ΔH(c))`` per category (Eq. 3) on the device, from int64 ``counts``.

    The formula of :func:`delta_entropy`, one IEEE operation per kernel: ``n·log n`` is
    read from ``xlx_table`` (``xlx_table[k] = k·math.log(k)``, 0 for 0, as the host
    computes it) and the logarithms of the total (``total``, known on the host: one pick
    per step) are host floats. Only the sum of ``n·log n`` may differ from the host's
    correctly rounded ``math.fsum`` by an ulp, which the host check catches.
    """
    xlx = xlx_table.index_select(0, counts)
    s = xlx.sum()
    h_now = math.log(total) - s / total  # total >= 1 after the first pick
    inner = ((s - xlx) + xlx_table.index_select(0, counts + 1)) / (total + 1.0)
    gains = ((math.log(total + 1.0) - inner) - h_now) / norm
    return _grid(gains * half_gamma)


def torch_engine(
    prep: _Prepared, device: Any, *, block: int | None = None, top: int | None = None
) -> SelectionResult:
    """Blocked lazy Algorithm 1 on ``device`` (a torch device spec); see the module doc.

    ``block`` (picks per block) and ``top`` (size of the exactly tracked top set) default
    to :data:`DEFAULTS` for the device type.
    """
    import torch

    dev = _resolve_device(device)
    block_default, top_default = DEFAULTS[dev.type]
    block = block_default if block is None else max(1, int(block))
    top = top_default if top is None else max(1, int(top))
    t0 = time.perf_counter()
    n, dim = prep.q.shape
    k = prep.n_categories
    hg = prep.half_gamma
    f64 = torch.float64
    neg_inf = -math.inf

    q = torch.from_numpy(prep.q).to(dev)  # float32 storage; rows go to float64 when used
    static = torch.from_numpy(prep.static).to(dev)
    cat_np = prep.category
    cat = torch.from_numpy(cat_np).to(dev)
    # k·log k for every count a category can reach (and one more), as delta_entropy has it.
    xlx_np = np.zeros(prep.initial.shape[0] + prep.n_max + 2)
    xlx_np[1:] = [x * math.log(x) for x in map(float, range(1, xlx_np.shape[0]))]
    xlx_table = torch.from_numpy(xlx_np).to(dev)
    norm = math.log(k)
    dpool = _DevicePool(q, static, cat, xlx_table, hg, norm)

    n_init = int(prep.initial.shape[0])
    picked = torch.empty((n_init + prep.n_max, dim), dtype=torch.float32, device=dev)
    if n_init:
        picked[:n_init] = q[torch.from_numpy(prep.initial).to(dev)]
    n_picked = n_init
    counts = np.bincount(cat_np[prep.initial], minlength=k)
    available_np = np.ones(n, dtype=bool)
    available_np[prep.initial] = False
    available = torch.from_numpy(available_np.copy()).to(dev)
    mind = torch.full((n,), MAX_COSINE_DISTANCE, dtype=f64, device=dev)
    version = np.zeros(n, dtype=np.int64)
    picks: list[int] = []
    scores: list[float] = []
    dhs: list[float] = []
    mds: list[float] = []
    work = [0, 0]  # distances, refreshed rows

    def record(i: int, score: float, dh: np.ndarray, distance: float) -> None:
        nonlocal n_picked
        picks.append(i)
        scores.append(score)
        dhs.append(float(dh[cat_np[i]]))
        mds.append(distance)
        available_np[i] = False
        counts[cat_np[i]] += 1
        n_picked += 1

    if prep.n_max and n_picked == 0:
        # D_S empty: the distance term is 1 for everyone, one dense step as the reference.
        dh, h_grid = _half_gamma_dh_grid(prep, counts)
        first = _first_term(prep, prep.static, np.ones(n)) + h_grid[cat_np]
        best = int(np.argmax(first))
        record(best, float(first[best]), dh, 1.0)
        picked[0] = q[best]
        available[best] = False

    key = _grid(static + mind * hg)
    margin = _MIN_MARGIN
    last_drop = 0.0
    while len(picks) < prep.n_max:
        dh0, h0_np = _half_gamma_dh_grid(prep, counts)
        h0 = torch.from_numpy(h0_np).to(dev)
        h_max = float(h0_np.max())
        # Update mode before its first pick: no score yet, everything is a candidate.
        tau = scores[-1] - max(margin, 2.0 * last_drop) if scores else neg_inf
        # 1. Refresh the candidates whose bound reaches tau.
        cand = torch.nonzero(available & (key + h_max >= tau)).flatten()
        cand_np = cand.cpu().numpy()
        stale_np = cand_np[version[cand_np] < n_picked]
        if stale_np.size:
            _refresh(q, picked, n_picked, stale_np, version, mind, work)
            stale = torch.from_numpy(stale_np).to(dev)
            key[stale] = _grid(static[stale] + mind[stale] * hg)
        if not cand.numel():  # nothing reaches tau: lower it
            margin = _widen(margin, last_drop)
            last_drop = 0.0
            continue
        # 2. Top set: the largest exact bounds at block start, ties at the edge included.
        bound = key[cand] + h0[cat[cand]]
        if cand.numel() > top:
            edge = torch.topk(bound, top).values.min()
            cand = cand[bound >= edge]
        s_idx = torch.sort(cand).values
        steps = min(block, prep.n_max - len(picks))
        outside = available.clone()
        outside[s_idx] = False
        r = torch.full((k,), neg_inf, dtype=f64, device=dev)
        r = r.scatter_reduce(0, cat, key.masked_fill(~outside, neg_inf), "amax")
        found = _block_picks(dpool, s_idx, steps, mind, r, h0, counts, picked[n_picked - 1])
        # 3. Host check: certified prefix, and device ΔH terms equal to the host's.
        got_idx, got_score, got_mind, got_ok, got_h = (t.cpu().numpy() for t in found[:5])
        accepted = int(np.argmin(got_ok)) if not got_ok.all() else steps
        start = len(picks)
        for j in range(accepted):
            dh, h_grid = (dh0, h0_np) if j == 0 else _half_gamma_dh_grid(prep, counts)
            if not np.array_equal(h_grid, got_h[j]):
                accepted = j
                break
            i = int(got_idx[j])
            record(i, float(got_score[j]), dh, float(got_mind[j]))
        if accepted:
            new_rows = torch.from_numpy(np.asarray(picks[start:], dtype=np.int64)).to(dev)
            picked[start + n_init : n_picked] = q[new_rows]
            available[new_rows] = False
        if accepted == steps:
            # The top set's distances include every pick of the block but the last.
            s_np = s_idx.cpu().numpy()
            mind[s_idx] = found[5]
            version[s_np] = n_picked - 1
            key[s_idx] = _grid(static[s_idx] + found[5] * hg)
        if accepted == 0:  # tau was too high: lower it
            margin = _widen(margin, last_drop)
            last_drop = 0.0
            continue
        last_drop = max(0.0, scores[start - 1] - scores[-1]) if start else 0.0
        margin = max(_MIN_MARGIN, margin / 2.0) if math.isfinite(margin) else 1.0

    return _picks_to_result(
        prep,
        picks,
        scores,
        dhs,
        mds,
        engine=f"blocked-torch:{dev}",
        seconds=time.perf_counter() - t0,
        n_distance_evaluations=work[0],
        n_refreshes=work[1],
    )


def _widen(margin: float, last_drop: float) -> float:
    """The next, larger threshold margin; infinite (every sample refreshed) past 4, as
    every bound lies below 3."""
    wider = 4.0 * max(margin, 2.0 * last_drop)
    return wider if wider <= 4.0 else math.inf


def _refresh(
    q: Any,
    picked: Any,
    n_picked: int,
    rows: np.ndarray,
    version: np.ndarray,
    mind: Any,
    work: list[int],
) -> None:
    """Bring ``mind[rows]`` up to date with the first ``n_picked`` picks, exactly.

    Rows are grouped by staleness in powers of two; a group is compared with the picks
    its stalest row has not seen (at most twice the distances it needs), in float64: the
    dot products of quantised rows are exact integers whatever the device or kernel.
    """
    import torch

    dev = q.device
    stale_by = n_picked - version[rows]
    group = np.frexp(stale_by.astype(np.float64))[1]
    for g in np.unique(group).tolist():
        sel = rows[group == g]
        since = n_picked - int(stale_by[group == g].max())
        p = picked[since:n_picked].to(torch.float64)
        chunk = max(1, min(_CHUNK_ROWS, _PRODUCT_ELEMENTS // p.shape[0]))
        for s in range(0, sel.size, chunk):
            idx = torch.from_numpy(sel[s : s + chunk]).to(dev)
            dots = q[idx].to(torch.float64) @ p.T
            dist = (1.0 - dots * _DOT_UNSCALE).clamp_(0.0, MAX_COSINE_DISTANCE)
            mind[idx] = torch.minimum(mind[idx], dist.amin(dim=1))
        work[0] += sel.size * p.shape[0]
        work[1] += sel.size
    version[rows] = n_picked


def _block_picks(
    pool: _DevicePool,
    s_idx: Any,
    steps: int,
    mind: Any,
    r: Any,
    h0: Any,
    counts_np: np.ndarray,
    last_row: Any,
) -> tuple[Any, Any, Any, Any, Any, Any]:
    """Up to ``steps`` picks from the top set ``s_idx``, all on the device (no host sync).

    Returns per step: pool index, score, distance term, certified flag and the
    ``grid(γ/2·ΔH)`` vector used; and the top set's distances after the last update.
    ``last_row`` is the newest pick's row: the top set has seen it already, and a repeated
    distance changes no minimum, so the first step needs no special case.
    """
    import torch

    dev = s_idx.device
    f64 = torch.float64
    half_gamma = pool.half_gamma
    rows = pool.q[s_idx].to(f64)
    s_static = pool.static[s_idx]
    s_cat = pool.cat[s_idx]
    s_mind = mind[s_idx].clone()
    taken = torch.zeros(s_idx.shape[0], dtype=torch.bool, device=dev)
    counts = torch.from_numpy(counts_np.astype(np.int64)).to(dev)
    total = int(counts_np.sum())
    one = torch.ones(1, dtype=torch.long, device=dev)
    out_pos = torch.empty(steps, dtype=torch.long, device=dev)
    out_score = torch.empty(steps, dtype=f64, device=dev)
    out_mind = torch.empty(steps, dtype=f64, device=dev)
    out_ok = torch.empty(steps, dtype=torch.bool, device=dev)
    out_h = torch.empty((steps, h0.shape[0]), dtype=f64, device=dev)
    h = h0
    prev = last_row.to(f64)
    for j in range(steps):
        if j:
            h = _device_half_gamma_dh_grid(counts, pool.xlx_table, total + j, half_gamma, pool.norm)
        # Separate kernels, one rounding each, in the numpy engines' order (no fused ops).
        dist = (1.0 - (rows @ prev) * _DOT_UNSCALE).clamp_(0.0, MAX_COSINE_DISTANCE)
        s_mind = torch.minimum(s_mind, dist)
        score = _grid(s_static + s_mind * half_gamma) + h[s_cat]
        score = score.masked_fill(taken, -math.inf)
        # Index with 1-element tensors (index_select & co.), never with Python numbers
        # read from the device: nothing here waits for the device.
        pos = torch.argmax(score).reshape(1)  # first maximal: lowest pool index on ties
        best = score.index_select(0, pos)
        out_pos[j : j + 1] = pos
        out_score[j : j + 1] = best
        out_mind[j : j + 1] = s_mind.index_select(0, pos)
        out_ok[j : j + 1] = best > (r + h).max()
        out_h[j] = h
        taken.index_fill_(0, pos, True)
        counts.index_add_(0, s_cat.index_select(0, pos), one)
        prev = rows.index_select(0, pos)[0]
    return s_idx.index_select(0, out_pos), out_score, out_mind, out_ok, out_h, s_mind
