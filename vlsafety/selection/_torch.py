"""Blocked lazy Algorithm 1 with torch: one code path for CPU and CUDA tensors.

The picks equal :func:`reference_greedy_select`'s bit for bit; the design is the numpy
engine's (:mod:`._blocked`) with the pool on the device. Every sample ``i`` keeps
``mind[i]``, an *upper bound* on its minimum cosine distance to the first ``version[i]``
picks, and ``mind_ex[i]``, its *exact* minimum over the first ``version_ex[i]`` picks
(both :data:`MAX_COSINE_DISTANCE` while nothing was seen). More picks only lower a
minimum, so ``key[i] = grid(α·C_sep + β·C_harm + γ/2·mind[i])`` bounds ``i``'s first score
term from above, and ``key[i] + grid(γ/2·ΔH(c_i))`` its score ``C`` (Eq. 6). Work goes in
blocks of up to ``block`` picks, with a few host synchronisations per block and none per
pick:

1. **Bounds, on the device, in low precision.** ``U`` = available samples whose bound
   reaches a threshold ``τ`` a little below the last pick's score. Their bounds are
   lowered with the picks they have not seen by one reduced-precision GEMM per staleness
   group (powers of two): float16 on CUDA (tensor cores, float32 accumulation), float32
   on the CPU. The products' error is rigorously bounded
   (:func:`._criteria.screen_error`), so a bound stays a bound; where no new pick can be
   nearer than the exact minimum, that minimum stays exact too. Most rows just fall
   below ``τ``.
2. **Top set, on the device, exact.** ``S`` = the members of ``U`` whose bound is among the
   ``top`` largest (all ties at the edge included), in ascending pool order. Members whose
   exact minimum is stale are brought up to date by float64 GEMMs of the quantised rows —
   exact integers on any device, in any summation order (see :mod:`._criteria`) — and
   ``S`` is chosen again until all its members are exact. ``r[c]`` = the largest
   first-term bound among the other available samples of category ``c`` (one
   ``scatter_reduce``).
3. **Picks, on the host.** ``S``'s rows (float64), exact distances and ``r`` come over
   once; :func:`._blocked._top_set_picks` — the numpy engine's own loop — makes the picks
   with exact float64 matrix-vector products and the host's exact ``ΔH``, keeping each
   while it beats strictly every bound outside ``S`` (bounds only fall within a block).
   ``S``'s updated distances go back. A block that certifies nothing lowers ``τ``; with
   ``τ = -∞`` the top set holds the best exact score and is always certified.

The threshold, block size, top-set size and bound precision only move work, never the
picks. Reduced precision is used for bounds only, under settings the engine fixes for its
duration (no TF32, float32 matmul precision "highest", no reduced-precision float16
reductions), so a user's global matmul settings cannot loosen the bound.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from vlsafety.selection._blocked import _MIN_MARGIN, BLOCK, TOP, _top_set_picks, _widen
from vlsafety.selection._criteria import (
    EMBEDDING_BITS,
    MAX_COSINE_DISTANCE,
    SCORE_GRID_BITS,
    screen_error,
)
from vlsafety.selection._greedy import (
    SelectionResult,
    _first_term,
    _half_gamma_dh_grid,
    _picks_to_result,
    _Prepared,
    _single_threaded_blas,
)

__all__ = ["BOUND_PRECISIONS", "torch_engine"]

#: Precisions of the bound GEMMs; ``None`` picks float16 on CUDA and float32 on the CPU.
BOUND_PRECISIONS = ("float16", "float32")
_DOT_UNSCALE = 2.0 ** (-2 * EMBEDDING_BITS)
_EMB_UNSCALE = 2.0**-EMBEDDING_BITS
_GRID_SCALE = 2.0**SCORE_GRID_BITS
_GRID_UNSCALE = 2.0**-SCORE_GRID_BITS
_PRODUCT_ELEMENTS = 1 << 24  # entries of one refresh product (memory bound)
# Rows per refresh product: on the CPU the gathered rows stay in cache (4096 measured
# fastest at 300K x 768 on 2 cores, 1.5 s vs 1.8 s at 16384); a GPU wants big products.
_CHUNK_ROWS = {"cpu": 4096, "cuda": 1 << 16}


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


def _distance(dots: Any) -> Any:
    """``distance_from_dots`` on a float64 tensor of dots in units ``2**-48`` (same ops)."""
    return (1.0 - dots * _DOT_UNSCALE).clamp_(0.0, MAX_COSINE_DISTANCE)


def _largest_dots(a: Any, p: Any) -> Any:
    """Each row of ``a``'s largest dot with a row of ``p``, in float64, computed in the
    rows' precision: float32 GEMMs, or float16 GEMMs accumulating in float32. On CUDA
    float16 runs on the tensor cores; the CPU has no such guarantee for its float16
    kernels (some accumulate in float16), so there the float16 rows are multiplied in
    float32 and the result rounded to float16, inside the same error bound
    (:func:`._criteria.screen_error`) on every CPU."""
    import torch

    if a.dtype == torch.float16 and a.device.type == "cpu":
        dots = (a.float() @ p.float().T).half()
    else:
        dots = a @ p.T
    return dots.amax(dim=1).to(torch.float64)


@contextlib.contextmanager
def _exact_matmul_settings() -> Iterator[None]:
    """IEEE float32 matmuls (no TF32, no bfloat16) and float32 accumulation of float16
    products while the engine runs; the user's settings are restored afterwards."""
    import torch

    # mkldnn's matmul flags are set at import time (not in its type stubs).
    flags: list[Any] = [torch.backends.cuda.matmul, torch.backends.mkldnn.matmul]  # type: ignore[attr-defined]
    saved = [f.fp32_precision for f in flags]
    saved_fp16 = torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction
    try:
        for f in flags:
            f.fp32_precision = "ieee"
        torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
        yield
    finally:
        for f, value in zip(flags, saved, strict=True):
            f.fp32_precision = value
        torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = saved_fp16


def torch_engine(
    prep: _Prepared,
    device: Any,
    *,
    block: int | None = None,
    top: int | None = None,
    bounds: str | None = None,
) -> SelectionResult:
    """Blocked lazy Algorithm 1 on ``device`` (a torch device spec); see the module doc.

    ``block`` (picks per block at most) and ``top`` (size of the exactly tracked top set)
    default to the numpy engine's (:data:`._blocked.BLOCK`, :data:`._blocked.TOP`): the
    per-pick work is the same host loop. ``bounds`` is the precision of the bound GEMMs
    (:data:`BOUND_PRECISIONS`; default float16 on CUDA, float32 on the CPU).
    """
    dev = _resolve_device(device)
    if bounds is None:
        bounds = "float16" if dev.type == "cuda" else "float32"
    if bounds not in BOUND_PRECISIONS:
        raise ValueError(f"bounds: expected one of {BOUND_PRECISIONS}, got {bounds!r}")
    # numpy's BLAS on one thread: its idle threads would spin on the cores torch's use.
    with _exact_matmul_settings(), _single_threaded_blas():
        return _Engine(prep, dev, bounds).run(
            BLOCK if block is None else max(1, int(block)), TOP if top is None else max(1, int(top))
        )


class _Engine:
    """The engine's state on the device; :meth:`run` is the block loop."""

    def __init__(self, prep: _Prepared, dev: Any, bounds: str) -> None:
        import torch

        self.torch = torch
        self.prep, self.dev = prep, dev
        n, dim = prep.q.shape
        self.q = torch.from_numpy(prep.q).to(dev)  # float32 integers; float64 when exact
        if bounds == "float16":
            # Unit-norm rows in float16 (the scaling by 2**-24 is exact), in chunks.
            self.low = torch.empty((n, dim), dtype=torch.float16, device=dev)
            for s in range(0, n, 1 << 16):
                self.low[s : s + (1 << 16)] = (self.q[s : s + (1 << 16)] * _EMB_UNSCALE).half()
            self.low_scale = 2.0 ** (2 * EMBEDDING_BITS)  # back to units of 2**-48
        else:
            self.low, self.low_scale = self.q, 1.0
        self.err = screen_error(dim, bounds)
        self.static = torch.from_numpy(prep.static).to(dev)
        self.cat = torch.from_numpy(prep.category).to(dev)
        n_init = int(prep.initial.shape[0])
        self.order = torch.empty(n_init + prep.n_max, dtype=torch.int64, device=dev)
        if n_init:
            self.order[:n_init] = torch.from_numpy(prep.initial).to(dev)
        self.n_picked = n_init
        self.counts = np.bincount(prep.category[prep.initial], minlength=prep.n_categories)
        self.available = torch.ones(n, dtype=torch.bool, device=dev)
        self.available[self.order[:n_init]] = False
        f64 = torch.float64
        # mind: bound on the min distance to the first version[i] picks (low precision);
        # mind_ex: the exact min distance to the first version_ex[i] picks.
        self.mind = torch.full((n,), MAX_COSINE_DISTANCE, dtype=f64, device=dev)
        self.mind_ex = self.mind.clone()
        self.version = torch.zeros(n, dtype=torch.int64, device=dev)
        self.version_ex = self.version.clone()
        self.key = _grid(self.static + self.mind * prep.half_gamma)
        self.picks: list[int] = []
        self.scores: list[float] = []
        self.dhs: list[float] = []
        self.mds: list[float] = []
        self.work = [0, 0]  # distances, refreshed rows

    def record(self, i: int, score: float, dh: np.ndarray, distance: float) -> None:
        self.picks.append(i)
        self.scores.append(score)
        self.dhs.append(float(dh[self.prep.category[i]]))
        self.mds.append(distance)
        self.counts[self.prep.category[i]] += 1
        self.n_picked += 1

    def commit(self, start: int) -> None:
        """Mark the picks from ``start`` on as taken on the device."""
        torch = self.torch
        new = torch.from_numpy(np.asarray(self.picks[start:], dtype=np.int64)).to(self.dev)
        n_init = self.order.shape[0] - self.prep.n_max
        self.order[n_init + start : self.n_picked] = new
        self.available[new] = False

    def set_key(self, rows: Any) -> None:
        self.key[rows] = _grid(self.static[rows] + self.mind[rows] * self.prep.half_gamma)

    def run(self, block: int, top: int) -> SelectionResult:
        torch, prep = self.torch, self.prep
        t0 = time.perf_counter()
        n = prep.q.shape[0]
        k = prep.n_categories
        neg_inf = -math.inf
        if prep.n_max and self.n_picked == 0:
            # D_S empty: the distance term is 1 for everyone, one dense step as the reference.
            dh, h_grid = _half_gamma_dh_grid(prep, self.counts)
            first = _first_term(prep, prep.static, np.ones(n)) + h_grid[prep.category]
            best = int(np.argmax(first))
            self.record(best, float(first[best]), dh, 1.0)
            self.commit(0)

        margin = _MIN_MARGIN
        last_drop = 0.0
        while len(self.picks) < prep.n_max:
            h0_np = _half_gamma_dh_grid(prep, self.counts)[1]
            h0 = torch.from_numpy(h0_np).to(self.dev)
            h_max = float(h0_np.max())
            # Update mode before its first pick: no score yet, everything is a candidate.
            tau = self.scores[-1] - max(margin, last_drop) if self.scores else neg_inf
            # 1. Lower the bounds of the candidates whose bound reaches tau.
            cand = torch.nonzero(self.available & (self.key + h_max >= tau)).flatten()
            if not cand.numel():  # nothing reaches tau: lower it
                margin, last_drop = _widen(margin, last_drop), 0.0
                continue
            stale = cand[self.version[cand] < self.n_picked]
            if stale.numel():
                self.bound_refresh(stale)
                self.set_key(stale)
            # 2. Top set: the largest bounds, ties at the edge included, made exact; chosen
            # again while exact values let other rows into it.
            while True:
                s_idx = cand
                if cand.numel() > top:
                    bound = self.key[cand] + h0[self.cat[cand]]
                    s_idx = cand[bound >= torch.topk(bound, top).values.min()]
                need = s_idx[self.version_ex[s_idx] < self.n_picked]
                if not need.numel():
                    break
                self.exact_refresh(need)
                self.set_key(need)
            outside = self.available.clone()
            outside[s_idx] = False
            r = torch.full((k,), neg_inf, dtype=torch.float64, device=self.dev)
            r = r.scatter_reduce(0, self.cat, self.key.masked_fill(~outside, neg_inf), "amax")
            # 3. Picks on the host, from the top set's rows and exact distances.
            s_np = s_idx.cpu().numpy()
            s_mind = self.mind_ex[s_idx].cpu().numpy()
            start, n_start = len(self.picks), self.n_picked
            seen = _top_set_picks(
                prep,
                s_np,
                self.q[s_idx].to(torch.float64).cpu().numpy(),
                s_mind,
                (r.cpu().numpy(), neg_inf),
                min(block, prep.n_max - start),
                self.counts,
                self.record,
            )
            s_mind_dev = torch.from_numpy(s_mind).to(self.dev)
            self.mind[s_idx] = s_mind_dev
            self.mind_ex[s_idx] = s_mind_dev
            self.version[s_idx] = n_start + seen
            self.version_ex[s_idx] = n_start + seen
            self.set_key(s_idx)
            self.work[0] += seen * s_np.size
            if len(self.picks) == start:  # tau was too high: lower it
                margin, last_drop = _widen(margin, last_drop), 0.0
                continue
            self.commit(start)
            last_drop = max(0.0, self.scores[start - 1] - self.scores[-1]) if start else 0.0
            margin = max(_MIN_MARGIN, margin / 2.0) if math.isfinite(margin) else 1.0

        return _picks_to_result(
            prep,
            self.picks,
            self.scores,
            self.dhs,
            self.mds,
            engine=f"blocked-torch:{self.dev}",
            seconds=time.perf_counter() - t0,
            n_distance_evaluations=self.work[0],
            n_refreshes=self.work[1],
        )

    def _groups(self, rows: Any, version: Any) -> Iterator[tuple[Any, Any]]:
        """``rows`` grouped by staleness in powers of two, each with the picks it has not
        seen (at most twice the distances its rows need): one host sync per call."""
        torch = self.torch
        stale_by = self.n_picked - version[rows]
        group = torch.frexp(stale_by.to(torch.float64))[1].to(torch.int64)
        most = torch.zeros(int(group.max()) + 1, dtype=torch.int64, device=self.dev)
        most = most.scatter_reduce(0, group, stale_by, "amax")
        for g, m in enumerate(most.tolist()):
            if m:
                sel = rows[group == g]
                self.work[0] += sel.numel() * m
                self.work[1] += sel.numel()
                yield sel, self.order[self.n_picked - m : self.n_picked]

    def _chunks(self, sel: Any, n_picks: int) -> Iterator[Any]:
        step = max(1, min(_CHUNK_ROWS[self.dev.type], _PRODUCT_ELEMENTS // max(1, n_picks)))
        for s in range(0, sel.numel(), step):
            yield sel[s : s + step]

    def bound_refresh(self, rows: Any) -> None:
        """Lower ``mind[rows]`` with every pick by low-precision products (module doc, 1).

        For the approximate largest dot ``top`` over the new picks, the exact nearest new
        distance lies within ``[dist(top + err), dist(top - err)]``; the upper end lowers
        the bound, and where the lower end is no below an up-to-date exact minimum, that
        minimum stays exact (its version moves on without float64 work).
        """
        torch = self.torch
        for sel, picks in self._groups(rows, self.version):
            p = self.low[picks]
            for idx in self._chunks(sel, picks.numel()):
                top = _largest_dots(self.low[idx], p) * self.low_scale
                near = _distance(top + self.err)  # <= every new exact distance
                far = _distance(top - self.err)  # >= the nearest new exact distance
                still = (self.version_ex[idx] == self.version[idx]) & (near >= self.mind_ex[idx])
                self.version_ex[idx] = torch.where(still, self.n_picked, self.version_ex[idx])
                self.mind[idx] = torch.minimum(self.mind[idx], far)
        self.version[rows] = self.n_picked

    def exact_refresh(self, rows: Any) -> None:
        """Bring ``mind_ex[rows]`` up to date with every pick by float64 products (exact
        integers, see :mod:`._criteria`); the bound becomes the exact value."""
        torch = self.torch
        for sel, picks in self._groups(rows, self.version_ex):
            p = self.q[picks].to(torch.float64)
            for idx in self._chunks(sel, picks.numel()):
                dist = _distance(self.q[idx].to(torch.float64) @ p.T)
                self.mind_ex[idx] = torch.minimum(self.mind_ex[idx], dist.amin(dim=1))
        self.mind[rows] = self.mind_ex[rows]
        self.version[rows] = self.n_picked
        self.version_ex[rows] = self.n_picked
