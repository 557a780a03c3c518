"""Update mode (VLSafetyBencher §5.2): replace the worst x% of a benchmark.

Each benchmark sample is scored by the selection criterion of Problem 6 with its
diversity taken against the rest of the benchmark,
``C(s, B∖{s}) = α·C_sep + β·C_harm + γ·(ΔH(s, B∖{s}) + cos(s, B∖{s}))/2``; the lowest
``round(x·|B|)`` are removed and the benchmark is filled back to its size by Algorithm 1
over the pool, starting from the kept samples (``initial=``), so new samples are chosen
for what they add to what stays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from vlsafety.selection._criteria import (
    cosine_distance,
    delta_entropy,
    quantize_embeddings,
    to_score_grid,
)
from vlsafety.selection._greedy import (
    DEFAULT_WEIGHTS,
    SelectionResult,
    _prepare,
    _run,
    _validate_criterion,
)

__all__ = ["UpdateResult", "benchmark_scores", "update_benchmark"]

_BLOCK = 2048


@dataclass(frozen=True)
class UpdateResult:
    """Outcome of :func:`update_benchmark`.

    Attributes:
        bench_scores: ``C(s, B∖{s})`` of every benchmark sample (the ranking key).
        removed: benchmark indices removed, worst first.
        kept: benchmark indices kept, ascending.
        added: pool indices added, in pick order.
        added_scores: ``C`` of each added sample when it was picked.
        selection: the fill-back selection; its indices address the concatenation
            ``[kept benchmark samples, pool]`` and its ``initial`` is the kept part.
    """

    bench_scores: NDArray[np.float64]
    removed: NDArray[np.int64]
    kept: NDArray[np.int64]
    added: NDArray[np.int64]
    added_scores: NDArray[np.float64]
    selection: SelectionResult

    @property
    def removed_scores(self) -> NDArray[np.float64]:
        return self.bench_scores[self.removed]


def benchmark_scores(
    sep: ArrayLike,
    harm: ArrayLike,
    category: ArrayLike,
    embedding: ArrayLike,
    *,
    n_categories: int,
    weights: Sequence[float] = DEFAULT_WEIGHTS,
) -> NDArray[np.float64]:
    """``C(s, B∖{s})`` for every sample of a benchmark ``B`` (Problem 6 criterion).

    ΔH is the normalized entropy gain of adding ``s`` back to ``B∖{s}`` (Eq. 3) and the
    distance term the cosine distance to the nearest *other* sample (Eq. 4; 1 when ``B``
    has a single sample). Same arithmetic and score grid as the selection engines.
    """
    prep = _prepare(
        sep,
        harm,
        category,
        embedding,
        n_categories=n_categories,
        n_max=0,
        weights=weights,
        initial=None,
    )
    n = prep.static.shape[0]
    counts = np.bincount(prep.category, minlength=prep.n_categories)
    dh = np.empty(n)
    for c in np.unique(prep.category).tolist():
        without = counts.copy()
        without[c] -= 1
        dh[prep.category == c] = delta_entropy(without, prep.n_categories)[c]
    mind = np.ones(n)
    if n > 1:
        for start in range(0, n, _BLOCK):
            stop = min(n, start + _BLOCK)
            dist = cosine_distance(prep.q[start:stop], prep.q)
            dist[np.arange(stop - start), np.arange(start, stop)] = np.inf  # not itself
            mind[start:stop] = dist.min(axis=1)
    hg = prep.half_gamma
    return np.asarray(to_score_grid(prep.static + hg * mind) + to_score_grid(hg * dh))


def update_benchmark(
    bench_sep: ArrayLike,
    bench_harm: ArrayLike,
    bench_cat: ArrayLike,
    bench_emb: ArrayLike,
    pool_sep: ArrayLike,
    pool_harm: ArrayLike,
    pool_cat: ArrayLike,
    pool_emb: ArrayLike,
    *,
    n_categories: int,
    replace_fraction: float,
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    device: Any = None,
) -> UpdateResult:
    """Drop the worst ``replace_fraction`` of a benchmark and refill it from a pool.

    The pool must not contain the benchmark's own samples (filter them out by id first:
    a duplicate would be re-selected at distance 0 only if nothing better exists).

    Args:
        bench_*: the current benchmark's ``C_sep``, ``C_harm``, category ids, embeddings.
        pool_*: the candidate pool's, same meaning.
        n_categories: ``K``.
        replace_fraction: share of the benchmark to replace, in [0, 1]; the number removed
            is ``floor(x·|B| + 0.5)``. Ties in the ranking remove the higher index.
        weights: ``(α, β, γ)``.
        device: as :func:`greedy_select`.

    Raises:
        ValueError: invalid inputs (as :func:`greedy_select`), a fraction outside [0, 1],
            or embeddings of different widths.
    """
    if not isinstance(replace_fraction, int | float) or not 0.0 <= float(replace_fraction) <= 1.0:
        raise ValueError(f"replace_fraction: expected a number in [0, 1], got {replace_fraction!r}")
    scores = benchmark_scores(
        bench_sep, bench_harm, bench_cat, bench_emb, n_categories=n_categories, weights=weights
    )
    n_bench = scores.shape[0]
    n_remove = int(math.floor(float(replace_fraction) * n_bench + 0.5))
    idx = np.arange(n_bench)
    worst_first = np.lexsort((-idx, scores))  # lowest score first; ties: higher index first
    removed = worst_first[:n_remove].astype(np.int64)
    kept = np.sort(worst_first[n_remove:]).astype(np.int64)

    b_emb = np.asarray(bench_emb)
    p_emb = np.asarray(pool_emb)
    if p_emb.ndim != 2 or p_emb.shape[1] != b_emb.shape[1]:
        raise ValueError(
            f"pool_emb: expected shape (n_pool, {b_emb.shape[1]}) like bench_emb, got {p_emb.shape}"
        )
    p_sep = _validate_criterion("pool_sep", pool_sep)
    p_harm = _validate_criterion("pool_harm", pool_harm)
    p_cat = np.asarray(pool_cat)
    if p_cat.ndim != 1 or not np.issubdtype(p_cat.dtype, np.integer):
        raise ValueError(f"pool_cat: expected a 1-d integer array, got {p_cat.dtype} {p_cat.shape}")
    if not p_sep.shape[0] == p_harm.shape[0] == p_cat.shape[0] == p_emb.shape[0]:
        raise ValueError(
            f"pool arrays differ in length: pool_sep {p_sep.shape[0]}, pool_harm "
            f"{p_harm.shape[0]}, pool_cat {p_cat.shape[0]}, pool_emb {p_emb.shape[0]}"
        )
    try:
        p_q = quantize_embeddings(p_emb)
    except ValueError as exc:
        raise ValueError(f"pool_{exc}") from exc
    prep = _prepare(
        np.concatenate([np.asarray(bench_sep, dtype=np.float64)[kept], p_sep]),
        np.concatenate([np.asarray(bench_harm, dtype=np.float64)[kept], p_harm]),
        np.concatenate([np.asarray(bench_cat)[kept].astype(np.int64), p_cat.astype(np.int64)]),
        None,
        n_categories=n_categories,
        n_max=n_remove,
        weights=weights,
        initial=np.arange(kept.size),
        quantized=np.concatenate([quantize_embeddings(b_emb[kept]), p_q]),
    )
    selection = _run(prep, device)
    return UpdateResult(
        bench_scores=scores,
        removed=removed,
        kept=kept,
        added=selection.indices - kept.size,
        added_scores=selection.score,
        selection=selection,
    )
