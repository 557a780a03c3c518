"""Agreement among the judges of a panel, and calibration against human labels.

Inputs are 0/1 decision matrices ``d`` shaped ``(n_items, n_raters)``: ``d[i, r] = 1`` when
rater (judge) ``r`` calls the response ``i`` harmful. Every item is rated by every rater
(the caller keeps only complete rows). An optional ``weights`` vector gives each row a
multiplicity, so a table of distinct decision patterns with their counts (what a Spark
``groupBy(...).count()`` returns) gives exactly the figures of the expanded rows.

A κ is undefined when chance agreement is 1 (every rater gives the same single class to
every item): the functions then return NaN rather than a number that means nothing.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from vlsafety.metrics._validate import as_binary, as_finite, check_range, non_empty

__all__ = [
    "cohen_kappa",
    "fleiss_kappa",
    "majority_vote",
    "pairwise_cohen_kappa",
    "reliability_bins",
    "split_share",
]


def _decisions(
    decisions: ArrayLike, weights: ArrayLike | None, *, min_raters: int = 1
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    d = as_binary("decisions", decisions, ndim=2)
    non_empty("decisions", d)
    if d.shape[1] < min_raters:
        raise ValueError(f"decisions: need at least {min_raters} raters, got {d.shape[1]}")
    if weights is None:
        w = np.ones(d.shape[0], dtype=np.float64)
    else:
        w = as_finite("weights", weights, ndim=1)
        if w.shape[0] != d.shape[0]:
            raise ValueError(f"weights has {w.shape[0]} entries but decisions {d.shape[0]} rows")
        if (w < 0).any():
            raise ValueError("weights: must be non-negative counts")
    if w.sum() <= 0:
        raise ValueError("weights: total weight is 0 (no items)")
    return d, w


def _kappa(p_o: float, p_e: float) -> float:
    if np.isclose(p_e, 1.0, rtol=0.0, atol=1e-12):
        return float("nan")
    return float((p_o - p_e) / (1.0 - p_e))


def fleiss_kappa(decisions: ArrayLike, weights: ArrayLike | None = None) -> float:
    """Fleiss' κ of ``m >= 2`` raters on the binary harmful / not-harmful decision.

    With ``n_i1`` raters saying harmful on item ``i`` (``n_i0 = m - n_i1``) and item
    weights ``w_i`` (``W = Σ w_i``)::

        P_i  = (n_i0² + n_i1² - m) / (m (m - 1))        agreement on item i
        P̄    = Σ w_i P_i / W
        p_1  = Σ w_i n_i1 / (W m),   p_0 = 1 - p_1      share of each class
        P_e  = p_0² + p_1²
        κ    = (P̄ - P_e) / (1 - P_e)                   (NaN when P_e = 1)

    κ = 1 for unanimous raters, ≈ 0 for raters independent of each other, negative
    below chance.

    Raises:
        ValueError: not a 2-d 0/1 matrix, fewer than 2 raters, no items, bad weights.
    """
    d, w = _decisions(decisions, weights, min_raters=2)
    m = d.shape[1]
    n1 = d.sum(axis=1)
    n0 = m - n1
    total = w.sum()
    p_i = (n0 * n0 + n1 * n1 - m) / (m * (m - 1))
    p_bar = float(np.dot(w, p_i) / total)
    p1 = float(np.dot(w, n1) / (total * m))
    return _kappa(p_bar, p1 * p1 + (1.0 - p1) * (1.0 - p1))


def cohen_kappa(a: ArrayLike, b: ArrayLike, weights: ArrayLike | None = None) -> float:
    """Cohen's κ of two raters' 0/1 decisions on the same items.

    ``p_o`` = (weighted) share of items where they agree; ``p_e = p_a p_b +
    (1 - p_a)(1 - p_b)`` with ``p_a``, ``p_b`` each rater's share of harmful;
    ``κ = (p_o - p_e) / (1 - p_e)`` (NaN when ``p_e = 1``). An inverted rater gives a
    negative κ (−1 when the classes are balanced).
    """
    x = as_binary("a", a, ndim=1)
    y = as_binary("b", b, ndim=1)
    if x.shape != y.shape:
        raise ValueError(f"a has {x.shape[0]} entries but b has {y.shape[0]}")
    return float(pairwise_cohen_kappa(np.stack([x, y], axis=1), weights)[0, 1])


def pairwise_cohen_kappa(
    decisions: ArrayLike, weights: ArrayLike | None = None
) -> NDArray[np.float64]:
    """Cohen's κ of every pair of raters: a symmetric ``(m, m)`` matrix (see
    :func:`cohen_kappa`); the diagonal is each rater with itself (1, or NaN for a rater
    that gives one class only)."""
    d, w = _decisions(decisions, weights)
    total = w.sum()
    p = (w @ d) / total  # (m,) share of harmful per rater
    both1 = (d * w[:, None]).T @ d / total  # P(a=1, b=1)
    # P(a=b) = P(1,1) + P(0,0) = 1 - p_a - p_b + 2 P(1,1)
    p_o = 1.0 - p[:, None] - p[None, :] + 2.0 * both1
    p_e = np.outer(p, p) + np.outer(1.0 - p, 1.0 - p)
    undefined = np.isclose(p_e, 1.0, rtol=0.0, atol=1e-12)
    with np.errstate(invalid="ignore", divide="ignore"):
        kappa = np.where(undefined, np.nan, (p_o - p_e) / np.where(undefined, 1.0, 1.0 - p_e))
    return np.asarray(kappa, dtype=np.float64)


def split_share(decisions: ArrayLike, weights: ArrayLike | None = None) -> float:
    """Share of items on which the raters split (not unanimous), weighted by ``weights``."""
    d, w = _decisions(decisions, weights)
    n1 = d.sum(axis=1)
    split = (n1 > 0) & (n1 < d.shape[1])
    return float(np.dot(w, split) / w.sum())


def majority_vote(decisions: ArrayLike) -> NDArray[np.float64]:
    """The panel's majority decision per item: 1 when at least half the raters say
    harmful (``Σ_r d_ir / m >= 0.5``, the ``>=`` of every threshold here: a tie of an
    even panel counts harmful)."""
    d = as_binary("decisions", decisions, ndim=2)
    if d.shape[1] == 0:
        raise ValueError("decisions: need at least 1 rater")
    return (2.0 * d.sum(axis=1) >= d.shape[1]).astype(np.float64)


def reliability_bins(
    labels: ArrayLike, probs: ArrayLike, n_bins: int = 10
) -> dict[str, NDArray[np.float64]]:
    """The reliability diagram of ``probs`` (P(unsafe)) against binary human ``labels``.

    ``n_bins`` equal-width bins over [0, 1] (bin ``b`` holds ``b/B <= p < (b+1)/B``; 1.0
    falls in the last). Per bin: ``n`` items, ``mean_p`` (the judge's mean probability)
    and ``rate`` (the share labelled harmful); NaN for an empty bin. Also the summary
    figures ``ece = Σ_b (n_b / N) |mean_p_b - rate_b|`` (expected calibration error) and
    ``brier = mean((p - y)²)`` as 1-element arrays.

    Raises:
        ValueError: labels not 0/1, probabilities outside [0, 1], lengths differ, empty.
    """
    y = as_binary("labels", labels, ndim=1)
    p = as_finite("probs", probs, ndim=1)
    if y.shape != p.shape:
        raise ValueError(f"labels has {y.shape[0]} entries but probs has {p.shape[0]}")
    non_empty("labels", y)
    check_range("probs", p, 0.0, 1.0)
    if n_bins < 1:
        raise ValueError(f"n_bins: must be >= 1, got {n_bins}")
    idx = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    n = np.bincount(idx, minlength=n_bins).astype(np.float64)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.where(n > 0, sum_p / np.where(n > 0, n, 1.0), np.nan)
        rate = np.where(n > 0, sum_y / np.where(n > 0, n, 1.0), np.nan)
    gap = np.where(n > 0, np.abs(np.nan_to_num(mean_p) - np.nan_to_num(rate)), 0.0)
    return {
        "lo": np.arange(n_bins, dtype=np.float64) / n_bins,
        "hi": np.arange(1, n_bins + 1, dtype=np.float64) / n_bins,
        "n": n,
        "mean_p": mean_p,
        "rate": rate,
        "ece": np.array([float(np.dot(n, gap) / y.size)]),
        "brier": np.array([float(np.mean((p - y) ** 2))]),
    }
