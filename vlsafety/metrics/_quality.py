"""Benchmark quality (VLSafetyBencher §5.1.1) and per-category rates.

Over the per-model ASRs ``a_1..a_M`` of a benchmark:

* MEAN = ``(1/M) Σ a_m`` — aggregate harmfulness;
* MAD  = ``(1/M) Σ |a_m - MEAN|`` — discriminative power (mean absolute deviation);
* GAP  = ``max a_m - min a_m`` — breadth of the assessable safety range;
* DIV  = mean ``C_div`` (Eq. 5) of the benchmark's samples, each taken against the samples
  before it in selection order (see :func:`diversity`).

All in the unit of the input (fractions in, fractions out; the paper prints percent).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from vlsafety.metrics._validate import as_binary, as_finite

__all__ = ["CategoryRates", "benchmark_quality", "diversity", "rates_by_category"]


def benchmark_quality(asr_by_model: ArrayLike | Mapping[Any, float]) -> dict[str, float]:
    """MAD, MEAN and GAP of per-model ASRs (VLSafetyBencher §5.1.1).

    Args:
        asr_by_model: one ASR per model, as a sequence/array or a mapping model → ASR.

    Returns:
        ``{"mad": ..., "mean": ..., "gap": ...}`` in the input's unit.

    Raises:
        ValueError: fewer than 2 models (MAD and GAP need a spread), NaN/inf.
    """
    values = list(asr_by_model.values()) if isinstance(asr_by_model, Mapping) else asr_by_model
    arr = as_finite("asr_by_model", values, ndim=1)
    if arr.size < 2:
        raise ValueError(f"asr_by_model: need at least 2 models, got {arr.size}")
    mean = float(arr.mean())
    return {
        "mad": float(np.abs(arr - mean).mean()),
        "mean": mean,
        "gap": float(arr.max() - arr.min()),
    }


def diversity(
    category: Any,
    embedding: ArrayLike | None = None,
    n_categories: int | None = None,
) -> float:
    """DIV (§5.1.1): the mean ``C_div`` (Eq. 5) of a selected set, in selection order.

    ``DIV = (1/N) Σ_t C_div(s_t, {s_1..s_{t-1}})``: each sample's diversity against the
    samples selected before it — exactly the ``C_div`` Algorithm 1 saw when it picked the
    sample (the first sample's is ``(0 + 1)/2``). Call either with a selection result
    (anything with a ``c_div`` array, e.g. :class:`vlsafety.selection.SelectionResult`,
    whose values also count an ``initial`` set), or with the set's ``category`` ids and
    ``embedding`` rows in selection order plus the taxonomy size ``n_categories``.

    Raises:
        ValueError: an empty set, or arrays that do not fit (see ``c_div_in_order``).
    """
    if hasattr(category, "c_div"):
        if embedding is not None or n_categories is not None:
            raise ValueError("diversity: pass a selection result alone, or arrays, not both")
        c_div = as_finite("c_div", category.c_div, ndim=1)
    else:
        if embedding is None or n_categories is None:
            raise ValueError("diversity: needs category, embedding and n_categories")
        # Imported here: the selection package depends on metrics, not the other way round.
        from vlsafety.selection import c_div_in_order

        c_div = c_div_in_order(category, embedding, n_categories)
    if c_div.size == 0:
        raise ValueError("diversity: the selected set is empty")
    return float(c_div.mean())


@dataclass(frozen=True)
class CategoryRates:
    """Per-category rates with the count-weighted (micro) overall rate.

    Attributes:
        rates: category → share of flagged samples in it.
        counts: category → number of samples in it.
        overall: micro average, ``Σ flagged / Σ samples`` (each sample counts once).
        macro: unweighted mean of the per-category rates, for comparison.
    """

    rates: dict[Hashable, float]
    counts: dict[Hashable, int]
    overall: float
    macro: float


def rates_by_category(flags: ArrayLike, categories: ArrayLike) -> CategoryRates:
    """Rate of ``flags`` (e.g. harmful responses: ASR) per category and overall.

    Args:
        flags: ``(n,)`` bool or 0/1.
        categories: ``(n,)`` category labels (strings or ints).

    Raises:
        ValueError: empty input, lengths differ, or flags not 0/1.
    """
    f = as_binary("flags", flags, ndim=1)
    cats = np.asarray(categories)
    if cats.ndim != 1 or cats.shape[0] != f.shape[0]:
        raise ValueError(
            f"categories: expected shape ({f.shape[0]},) to match flags, got {cats.shape}"
        )
    if f.size == 0:
        raise ValueError("flags: is empty")
    labels, inverse, counts = np.unique(cats, return_inverse=True, return_counts=True)
    flagged = np.bincount(inverse, weights=f, minlength=labels.size)
    rates = flagged / counts
    keys = [label.item() if hasattr(label, "item") else label for label in labels]
    return CategoryRates(
        rates={k: float(r) for k, r in zip(keys, rates, strict=True)},
        counts={k: int(c) for k, c in zip(keys, counts, strict=True)},
        overall=float(f.sum() / f.size),
        macro=float(rates.mean()),
    )
