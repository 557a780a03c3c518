"""Blocked lazy Algorithm 1 with torch: one code path for CPU and CUDA tensors.

The picks equal :func:`reference_greedy_select`'s bit for bit. The pool lives on the
device; every sample ``i`` keeps ``mind[i]``, its exact minimum cosine distance to the
first ``version[i]`` picks (:data:`MAX_COSINE_DISTANCE` while ``version[i] == 0``). More
picks only lower a minimum, so ``key[i] = grid(α·C_sep + β·C_harm + γ/2·mind[i])`` bounds
``i``'s first score term from above, and ``key[i] + grid(γ/2·ΔH(c_i))`` its score ``C``
(Eq. 6). Work goes in blocks of up to ``block`` picks, with a fixed number of host
synchronisations per block and none per pick:

1. **Refresh, on the device.** ``U`` = available samples whose bound reaches a threshold
   ``τ`` a little below the last pick's score. Their ``mind`` is brought up to date
   against all picks so far by float64 GEMMs of the quantised rows — exact integers on
   any device, in any summation order, unaffected by TF32 or reduced-precision settings
   (see :mod:`._criteria`) — grouped by staleness in powers of two.
2. **Top set, on the device.** ``S`` = the members of ``U`` whose exact bound is among the
   ``top`` largest (all ties at the edge included), in ascending pool order, and
   ``r[c]`` = the largest first-term bound among the other available samples of
   category ``c`` (one ``scatter_reduce``).
3. **Picks, on the host.** ``S``'s rows (float64), distances and ``r`` come over once;
   :func:`._blocked._top_set_picks` — the numpy engine's own loop — makes the picks with
   exact float64 matrix-vector products and the host's exact ``ΔH``, keeping each while
   it beats strictly every bound outside ``S`` (bounds only fall within a block). ``S``'s
   updated distances go back. A block that certifies nothing lowers ``τ``; with
   ``τ = -∞`` every bound is exact and the best sample is always certified.

The threshold, block size and top-set size only move work, never the picks. On CUDA the
GEMMs of step 1 are the bulk of the arithmetic (FP64 tensor cores); a pick costs a few
small host operations on a ``top × d`` matrix, like the numpy engine's. On the CPU the
same code runs its float64 GEMMs with torch and is slower than the numpy engine, which
screens in float32 (bench/selection.py prints both).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from vlsafety.selection._blocked import _MIN_MARGIN, BLOCK, TOP, _top_set_picks, _widen
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


def torch_engine(
    prep: _Prepared, device: Any, *, block: int | None = None, top: int | None = None
) -> SelectionResult:
    """Blocked lazy Algorithm 1 on ``device`` (a torch device spec); see the module doc.

    ``block`` (picks per block at most) and ``top`` (size of the exactly tracked top set)
    default to the numpy engine's (:data:`._blocked.BLOCK`, :data:`._blocked.TOP`): the
    per-pick work is the same host loop.
    """
    import torch

    dev = _resolve_device(device)
    block = BLOCK if block is None else max(1, int(block))
    top = TOP if top is None else max(1, int(top))
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
    n_init = int(prep.initial.shape[0])
    picked = torch.empty((n_init + prep.n_max, dim), dtype=torch.float32, device=dev)
    if n_init:
        picked[:n_init] = q[torch.from_numpy(prep.initial).to(dev)]
    n_picked = n_init
    counts = np.bincount(cat_np[prep.initial], minlength=k)
    available = torch.ones(n, dtype=torch.bool, device=dev)
    if n_init:
        available[torch.from_numpy(prep.initial).to(dev)] = False
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
        counts[cat_np[i]] += 1
        n_picked += 1

    def commit(start: int) -> None:
        """Mark the picks from ``start`` on as taken on the device."""
        new = torch.from_numpy(np.asarray(picks[start:], dtype=np.int64)).to(dev)
        picked[n_init + start : n_picked] = q[new]
        available[new] = False

    if prep.n_max and n_picked == 0:
        # D_S empty: the distance term is 1 for everyone, one dense step as the reference.
        dh, h_grid = _half_gamma_dh_grid(prep, counts)
        first = _first_term(prep, prep.static, np.ones(n)) + h_grid[cat_np]
        best = int(np.argmax(first))
        record(best, float(first[best]), dh, 1.0)
        commit(0)

    key = _grid(static + mind * hg)
    margin = _MIN_MARGIN
    last_drop = 0.0
    while len(picks) < prep.n_max:
        h0_np = _half_gamma_dh_grid(prep, counts)[1]
        h_max = float(h0_np.max())
        # Update mode before its first pick: no score yet, everything is a candidate.
        tau = scores[-1] - max(margin, last_drop) if scores else neg_inf
        # 1. Refresh the candidates whose bound reaches tau.
        cand = torch.nonzero(available & (key + h_max >= tau)).flatten()
        if not cand.numel():  # nothing reaches tau: lower it
            margin, last_drop = _widen(margin, last_drop), 0.0
            continue
        cand_np = cand.cpu().numpy()
        stale_np = cand_np[version[cand_np] < n_picked]
        if stale_np.size:
            _refresh(q, picked, n_picked, stale_np, version, mind, work)
            stale = torch.from_numpy(stale_np).to(dev)
            key[stale] = _grid(static[stale] + mind[stale] * hg)
        # 2. Top set: the largest exact bounds, ties at the edge included; r: the largest
        # first-term bound outside it per category.
        bound = key[cand] + torch.from_numpy(h0_np).to(dev)[cat[cand]]
        if cand.numel() > top:
            cand = cand[bound >= torch.topk(bound, top).values.min()]
        s_idx = torch.sort(cand).values
        outside = available.clone()
        outside[s_idx] = False
        r = torch.full((k,), neg_inf, dtype=f64, device=dev)
        r = r.scatter_reduce(0, cat, key.masked_fill(~outside, neg_inf), "amax")
        # 3. Picks on the host, from the top set's rows and exact distances.
        s_np = s_idx.cpu().numpy()
        s_mind = mind[s_idx].cpu().numpy()
        start, n_start = len(picks), n_picked
        seen = _top_set_picks(
            prep,
            s_np,
            q[s_idx].to(f64).cpu().numpy(),
            s_mind,
            (r.cpu().numpy(), neg_inf),
            min(block, prep.n_max - start),
            counts,
            record,
        )
        s_mind_dev = torch.from_numpy(s_mind).to(dev)
        mind[s_idx] = s_mind_dev
        key[s_idx] = _grid(static[s_idx] + s_mind_dev * hg)
        version[s_np] = n_start + seen
        work[0] += seen * s_np.size
        if len(picks) == start:  # tau was too high: lower it
            margin, last_drop = _widen(margin, last_drop), 0.0
            continue
        commit(start)
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
