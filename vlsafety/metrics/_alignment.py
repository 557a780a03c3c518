"""Agreement of an automated evaluator with human labels (ELITE §5) and rank statistics.

AUC-ROC is the rank (Mann–Whitney) form with average ranks for ties, which equals the
area under the empirical ROC curve with ties counted half. Threshold metrics predict
"harmful" when ``score >= threshold``, as E-ASR does.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from vlsafety.metrics._validate import as_binary, as_finite, non_empty

__all__ = ["auc_roc", "classification_metrics", "kendall_tau", "pearson"]


def _paired(
    x_name: str, x: ArrayLike, y_name: str, y: ArrayLike, *, binary_x: bool = False
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    xa = as_binary(x_name, x, ndim=1) if binary_x else as_finite(x_name, x, ndim=1)
    ya = as_finite(y_name, y, ndim=1)
    if xa.shape != ya.shape:
        raise ValueError(f"{x_name} has {xa.shape[0]} entries but {y_name} has {ya.shape[0]}")
    non_empty(x_name, xa)
    return xa, ya


def average_ranks(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """1-based ranks of ``x`` with tied values sharing the mean of their ranks."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], xs.size]  # exclusive
    mean_rank = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def auc_roc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve of ``scores`` against binary human ``labels``.

    ``AUC = (Σ rank(positives) - P(P+1)/2) / (P·N)`` with average ranks for ties: the
    probability that a random positive scores above a random negative, ties counting ½.

    Raises:
        ValueError: labels not 0/1, lengths differ, NaN/inf, or only one class present.
    """
    y, s = _paired("labels", labels, "scores", scores, binary_x=True)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"labels: AUC-ROC needs both classes, got {n_pos} positive and {n_neg} negative"
        )
    ranks = average_ranks(s)
    return float((ranks[y == 1.0].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def classification_metrics(
    labels: ArrayLike,
    scores: ArrayLike,
    threshold: float,
    *,
    zero_division: Literal["raise"] | float = "raise",
) -> dict[str, float]:
    """Accuracy, precision, recall and F1 of ``score >= threshold`` against ``labels``.

    Args:
        labels: human labels, 1 = harmful.
        scores: evaluator scores (e.g. ELITE 0–25) or 0/1 predictions with threshold 0.5.
        threshold: predicted harmful when ``score >= threshold``.
        zero_division: what precision/recall/F1 are when their denominator is 0 (no
            predicted or no actual positives): ``"raise"`` (default) raises ValueError;
            a number is used as the value.

    Returns:
        ``accuracy``, ``precision``, ``recall``, ``f1`` and the counts ``tp``, ``fp``,
        ``tn``, ``fn`` (as floats, for uniform logging).
    """
    y, s = _paired("labels", labels, "scores", scores, binary_x=True)
    thr = float(threshold)
    if not math.isfinite(thr):
        raise ValueError(f"threshold: must be finite, got {threshold!r}")
    if zero_division != "raise" and not isinstance(zero_division, int | float):
        raise ValueError(f"zero_division: 'raise' or a number, got {zero_division!r}")
    pred = s >= thr
    pos = y == 1.0
    tp = int(np.sum(pred & pos))
    fp = int(np.sum(pred & ~pos))
    fn = int(np.sum(~pred & pos))
    tn = int(np.sum(~pred & ~pos))

    def ratio(num: int, den: int, what: str) -> float:
        if den:
            return num / den
        if zero_division == "raise":
            raise ValueError(f"{what} is undefined at threshold {thr:g} (0/0); pass zero_division")
        return float(zero_division)

    precision = ratio(tp, tp + fp, "precision (no predicted positives)")
    recall = ratio(tp, tp + fn, "recall (no actual positives)")
    f1 = ratio(2 * tp, 2 * tp + fp + fn, "F1 (no positives at all)")
    return {
        "accuracy": (tp + tn) / y.size,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "tp": float(tp),
        "fp": float(fp),
        "tn": float(tn),
        "fn": float(fn),
    }


def pearson(x: ArrayLike, y: ArrayLike) -> float:
    """Pearson correlation of two paired samples.

    Raises:
        ValueError: fewer than 2 pairs, lengths differ, NaN/inf, or a constant input
            (the correlation is undefined).
    """
    xa, ya = _paired("x", x, "y", y)
    if xa.size < 2:
        raise ValueError("pearson: needs at least 2 pairs")
    dx = xa - xa.mean()
    dy = ya - ya.mean()
    sx = float(np.sqrt(np.dot(dx, dx)))
    sy = float(np.sqrt(np.dot(dy, dy)))
    if sx == 0.0 or sy == 0.0:
        raise ValueError(
            f"pearson: undefined for a constant input ({'x' if sx == 0.0 else 'y'} is constant)"
        )
    return float(np.clip(np.dot(dx, dy) / (sx * sy), -1.0, 1.0))


def kendall_tau_rows(x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
    """Kendall τ-b of each row of ``x`` (b, m) against ``y`` (m,); NaN where undefined."""
    iu, ju = np.triu_indices(y.size, 1)
    sx = np.sign(x[:, iu] - x[:, ju])
    sy = np.sign(y[iu] - y[ju])
    pairs = iu.size
    untied_x = pairs - (sx == 0).sum(axis=1)
    untied_y = pairs - int((sy == 0).sum())
    den = np.sqrt(untied_x.astype(np.float64) * untied_y)
    num = (sx * sy).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return np.asarray(tau, dtype=np.float64)


def kendall_tau(x: ArrayLike, y: ArrayLike) -> float:
    """Kendall rank correlation τ-b (ties handled) of two paired samples.

    Raises:
        ValueError: fewer than 2 pairs, lengths differ, NaN/inf, or all values of one
            input tied (τ-b is undefined).
    """
    xa, ya = _paired("x", x, "y", y)
    if xa.size < 2:
        raise ValueError("kendall_tau: needs at least 2 pairs")
    tau = float(kendall_tau_rows(xa[None, :], ya)[0])
    if math.isnan(tau):
        raise ValueError("kendall_tau: undefined when all values of x or of y are tied")
    return tau
