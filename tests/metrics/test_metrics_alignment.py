"""Agreement with human labels: AUC-ROC, threshold metrics, Pearson, Kendall τ."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vlsafety.metrics import auc_roc, classification_metrics, kendall_tau, pearson


def _auc_all_pairs(labels: np.ndarray, scores: np.ndarray) -> float:
    pos = scores[labels == 1]
    neg = scores[labels == 0]
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg)
    return wins / (pos.size * neg.size)


@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 6)), min_size=2, max_size=40))
def test_auc_equals_the_all_pairs_definition_with_ties(pairs: list[tuple[int, int]]) -> None:
    labels = np.array([p[0] for p in pairs])
    scores = np.array([p[1] for p in pairs], dtype=float)
    if labels.min() == labels.max():
        with pytest.raises(ValueError, match="both classes"):
            auc_roc(labels, scores)
        return
    assert auc_roc(labels, scores) == pytest.approx(_auc_all_pairs(labels, scores))


def test_auc_hand_cases() -> None:
    assert auc_roc([0, 0, 1, 1], [1, 2, 3, 4]) == 1.0
    assert auc_roc([1, 1, 0, 0], [1, 2, 3, 4]) == 0.0
    assert auc_roc([0, 1], [5, 5]) == 0.5


def test_classification_metrics_hand_case() -> None:
    labels = [1, 1, 0, 0, 1]
    scores = [12.0, 9.0, 10.0, 2.0, 25.0]  # predicted harmful: 12, 10, 25
    m = classification_metrics(labels, scores, threshold=10.0)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2.0, 1.0, 1.0, 1.0)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)


def test_classification_metrics_zero_division_is_explicit() -> None:
    with pytest.raises(ValueError, match="precision"):
        classification_metrics([1, 0], [1.0, 2.0], threshold=20.0)
    m = classification_metrics([1, 0], [1.0, 2.0], threshold=20.0, zero_division=0.0)
    assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["accuracy"] == 0.5


def test_pearson() -> None:
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    x = np.random.default_rng(0).normal(size=50)
    y = x + np.random.default_rng(1).normal(size=50)
    assert pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])
    with pytest.raises(ValueError, match="constant"):
        pearson([1, 1, 1], [1, 2, 3])
    with pytest.raises(ValueError, match="at least 2"):
        pearson([1], [2])
    with pytest.raises(ValueError, match="entries"):
        pearson([1, 2], [1, 2, 3])


def _tau_b_direct(x: list[float], y: list[float]) -> float:
    conc = disc = tx = ty = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        a, b = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        if a == 0 and b == 0:
            continue
        if a == 0:
            tx += 1
        elif b == 0:
            ty += 1
        elif a == b:
            conc += 1
        else:
            disc += 1
    return (conc - disc) / np.sqrt((conc + disc + tx) * (conc + disc + ty))


@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=2, max_size=12))
def test_kendall_tau_b_against_pair_counting(pairs: list[tuple[int, int]]) -> None:
    x = [float(p[0]) for p in pairs]
    y = [float(p[1]) for p in pairs]
    if len(set(x)) == 1 or len(set(y)) == 1:
        with pytest.raises(ValueError, match="tied"):
            kendall_tau(x, y)
        return
    assert kendall_tau(x, y) == pytest.approx(_tau_b_direct(x, y))
