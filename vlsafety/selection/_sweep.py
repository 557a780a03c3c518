"""Selection analyses: the weight sweep (§6.2, Fig. 6) and quality on a held-out panel.

A benchmark selected with the panel's own harmful flags (through ``p_h`` and
``C_harm``) flatters that panel; its MAD/MEAN/GAP measured on models that took no part in
selection (:func:`split_panel`, :func:`holdout_quality`) is the honest figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from vlsafety.metrics import benchmark_quality
from vlsafety.metrics._validate import as_binary
from vlsafety.selection._greedy import _prepare, _run, _with_weights

__all__ = ["holdout_quality", "split_panel", "weight_sweep"]

_WEIGHT_NAMES = ("alpha", "beta", "gamma")


def weight_sweep(
    sep: ArrayLike,
    harm: ArrayLike,
    category: ArrayLike,
    embedding: ArrayLike,
    harmful: ArrayLike,
    *,
    n_categories: int,
    n_max: int,
    grid: Sequence[float] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
    device: Any = None,
) -> list[dict[str, Any]]:
    """MAD/MEAN/GAP/DIV of the selected benchmark as each weight varies (§6.2).

    Following the paper, one weight at a time takes each value of ``grid`` and the other
    two share the rest equally (``(1 - w)/2`` each). Each setting runs the fast selector on
    the same prepared pool.

    Args:
        sep, harm, category, embedding, n_categories, n_max: as :func:`greedy_select`.
        harmful: ``(n_samples, n_models)`` 0/1 flags used to compute each model's ASR on
            the selected set (ideally held-out models, see :func:`split_panel`).
        grid: values for the varied weight, each in [0, 1].

    Returns:
        One record per (varied weight, value): ``varied``, ``value``, ``alpha``, ``beta``,
        ``gamma``, ``mad``, ``mean``, ``gap``, ``div``, ``n_selected``, ``seconds``.
    """
    flags = as_binary("harmful", harmful, ndim=2)
    values = [float(v) for v in grid]
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise ValueError(f"grid: expected values in [0, 1], got {list(grid)!r}")
    base = _prepare(
        sep,
        harm,
        category,
        embedding,
        n_categories=n_categories,
        n_max=n_max,
        weights=(1.0, 0.0, 0.0),
        initial=None,
    )
    if flags.shape[0] != base.static.shape[0]:
        raise ValueError(
            f"harmful has {flags.shape[0]} rows but the pool has {base.static.shape[0]} samples"
        )
    records = []
    for varied, name in enumerate(_WEIGHT_NAMES):
        for v in values:
            rest = (1.0 - v) / 2.0
            w = [rest, rest, rest]
            w[varied] = v
            result = _run(_with_weights(base, w), device)
            quality = benchmark_quality(flags[result.indices].mean(axis=0))
            records.append(
                {
                    "varied": name,
                    "value": v,
                    "alpha": w[0],
                    "beta": w[1],
                    "gamma": w[2],
                    **quality,
                    "div": float(result.c_div.mean()) if len(result) else float("nan"),
                    "n_selected": len(result),
                    "seconds": result.seconds,
                }
            )
    return records


def split_panel(
    model_ids: Sequence[Any], n_holdout: int, seed: int | None = None
) -> tuple[list[Any], list[Any]]:
    """Split a model panel into selection models and held-out models, at random.

    Returns ``(selection_models, holdout_models)``, each in the input order.

    Raises:
        ValueError: duplicate ids, or ``n_holdout`` not in ``[1, len(model_ids) - 1]``.
    """
    ids = list(model_ids)
    if len(set(map(repr, ids))) != len(ids):
        raise ValueError("model_ids: must be unique")
    if (
        isinstance(n_holdout, bool)
        or not isinstance(n_holdout, int)
        or not 1 <= n_holdout < len(ids)
    ):
        raise ValueError(
            f"n_holdout: expected an int in [1, {len(ids) - 1}] for {len(ids)} models, got {n_holdout!r}"
        )
    chosen = set(np.random.default_rng(seed).permutation(len(ids))[:n_holdout].tolist())
    selection = [m for i, m in enumerate(ids) if i not in chosen]
    holdout = [m for i, m in enumerate(ids) if i in chosen]
    return selection, holdout


def holdout_quality(harmful_holdout: ArrayLike, selected: ArrayLike) -> dict[str, float]:
    """MAD/MEAN/GAP of held-out models' ASR on the selected samples.

    Args:
        harmful_holdout: ``(n_samples, n_holdout)`` 0/1 flags of models that took no part
            in selection, over the whole pool.
        selected: pool indices of the benchmark (e.g. ``SelectionResult.indices``).

    Raises:
        ValueError: bad flags, fewer than 2 held-out models, empty or out-of-range indices.
    """
    flags = as_binary("harmful_holdout", harmful_holdout, ndim=2)
    idx = np.asarray(selected)
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError("selected: expected a non-empty 1-d array of indices")
    if idx.min() < 0 or idx.max() >= flags.shape[0]:
        raise ValueError(f"selected: indices must lie in [0, {flags.shape[0]})")
    return benchmark_quality(flags[idx].mean(axis=0))
