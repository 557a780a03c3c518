"""Judge agreement (Fleiss' κ, Cohen's κ, split share) and calibration (reliability bins)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from vlsafety.metrics import (
    auc_roc,
    cohen_kappa,
    fleiss_kappa,
    majority_vote,
    pairwise_cohen_kappa,
    reliability_bins,
    split_share,
)


def _fleiss_loop(d: list[list[int]]) -> float:
    """Fleiss (1971), written out item by item and category by category."""
    n_items, m = len(d), len(d[0])
    counts = [[row.count(0), row.count(1)] for row in d]
    p_items = []
    for c in counts:
        p_items.append((sum(x * x for x in c) - m) / (m * (m - 1)))
    p_bar = sum(p_items) / n_items
    p_cat = [sum(c[k] for c in counts) / (n_items * m) for k in (0, 1)]
    p_e = sum(p * p for p in p_cat)
    if p_e == 1.0:
        return math.nan
    return (p_bar - p_e) / (1 - p_e)


def _cohen_loop(a: list[int], b: list[int]) -> float:
    n = len(a)
    p_o = sum(1 for x, y in zip(a, b, strict=True) if x == y) / n
    pa, pb = sum(a) / n, sum(b) / n
    p_e = pa * pb + (1 - pa) * (1 - pb)
    return math.nan if p_e == 1.0 else (p_o - p_e) / (1 - p_e)


decision_matrices = st.integers(2, 5).flatmap(
    lambda m: arrays(
        np.int64, st.tuples(st.integers(1, 40), st.just(m)), elements=st.integers(0, 1)
    )
)


@given(decision_matrices)
def test_fleiss_equals_the_plain_loop(d: np.ndarray) -> None:
    want = _fleiss_loop(d.tolist())
    got = fleiss_kappa(d)
    if math.isnan(want):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(want, abs=1e-12)
        assert got <= 1.0 + 1e-12


@given(decision_matrices)
def test_pairwise_cohen_equals_the_plain_loop(d: np.ndarray) -> None:
    k = pairwise_cohen_kappa(d)
    assert k.shape == (d.shape[1], d.shape[1])
    np.testing.assert_allclose(k, k.T, equal_nan=True)
    for a in range(d.shape[1]):
        for b in range(a + 1, d.shape[1]):
            want = _cohen_loop(d[:, a].tolist(), d[:, b].tolist())
            assert k[a, b] == pytest.approx(want, abs=1e-12, nan_ok=True)
            assert cohen_kappa(d[:, a], d[:, b]) == pytest.approx(k[a, b], nan_ok=True)


@given(decision_matrices, st.data())
def test_weights_are_row_multiplicities(d: np.ndarray, data: st.DataObject) -> None:
    """Distinct patterns with counts (what Spark aggregates to) = the expanded rows."""
    w = np.array(data.draw(st.lists(st.integers(0, 4), min_size=len(d), max_size=len(d))))
    if w.sum() == 0:
        with pytest.raises(ValueError, match="total weight"):
            fleiss_kappa(d, w)
        return
    expanded = np.repeat(d, w, axis=0)
    assert fleiss_kappa(d, w) == pytest.approx(fleiss_kappa(expanded), abs=1e-12, nan_ok=True)
    np.testing.assert_allclose(
        pairwise_cohen_kappa(d, w), pairwise_cohen_kappa(expanded), atol=1e-12, equal_nan=True
    )
    assert split_share(d, w) == pytest.approx(split_share(expanded))


@given(st.integers(2, 6), st.integers(0, 2**32 - 1))
def test_identical_judges_agree_perfectly(m: int, seed: int) -> None:
    truth = np.random.default_rng(seed).integers(0, 2, size=200)
    truth[:2] = [0, 1]  # both classes present: κ is defined
    d = np.repeat(truth[:, None], m, axis=1)
    assert fleiss_kappa(d) == pytest.approx(1.0)
    np.testing.assert_allclose(pairwise_cohen_kappa(d), 1.0)
    assert split_share(d) == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_independent_judges_are_near_zero(seed: int) -> None:
    # n = 20 000 items: the standard error of κ is ~ 1/sqrt(n·m(m-1)/2) ≈ 0.005
    rng = np.random.default_rng(seed)
    d = (rng.random((20_000, 3)) < np.array([0.3, 0.5, 0.6])).astype(int)
    assert abs(fleiss_kappa(d)) < 0.05
    off = pairwise_cohen_kappa(d)[np.triu_indices(3, 1)]
    assert np.all(np.abs(off) < 0.05)
    # split share of independent judges: 1 - P(all 1) - P(all 0)
    want = 1 - 0.3 * 0.5 * 0.6 - 0.7 * 0.5 * 0.4
    assert split_share(d) == pytest.approx(want, abs=0.02)


@given(st.integers(0, 2**32 - 1), st.floats(0.0, 0.2))
def test_an_inverted_judge_disagrees_with_the_rest(seed: int, noise: float) -> None:
    rng = np.random.default_rng(seed)
    truth = (rng.random(500) < 0.5).astype(int)
    flip = rng.random((500, 2)) < noise
    good = np.where(flip, 1 - truth[:, None], truth[:, None])
    d = np.column_stack([good, 1 - truth])
    k = pairwise_cohen_kappa(d)
    assert k[0, 2] < 0 and k[1, 2] < 0
    assert k[0, 1] > 0
    assert cohen_kappa(truth, 1 - truth) == pytest.approx(-1.0, abs=0.05)
    assert fleiss_kappa(d) < fleiss_kappa(good)


def test_hand_case() -> None:
    # 4 items, 3 raters: unanimous 1, unanimous 0, 2-vs-1, 2-vs-1
    d = [[1, 1, 1], [0, 0, 0], [1, 1, 0], [0, 1, 0]]
    # P_i = 1, 1, 1/3, 1/3 → P̄ = 2/3; p1 = 6/12 → P_e = 1/2; κ = (2/3 - 1/2)/(1/2) = 1/3
    assert fleiss_kappa(d) == pytest.approx(1 / 3)
    assert split_share(d) == pytest.approx(0.5)
    np.testing.assert_array_equal(majority_vote(d), [1, 0, 1, 0])
    np.testing.assert_array_equal(majority_vote([[1, 0], [0, 0]]), [1, 0])  # a tie is harmful


def test_undefined_kappa_is_nan_and_bad_input_raises() -> None:
    assert math.isnan(fleiss_kappa([[1, 1], [1, 1]]))
    assert math.isnan(cohen_kappa([0, 0, 0], [0, 0, 0]))
    with pytest.raises(ValueError, match="at least 2 raters"):
        fleiss_kappa([[1], [0]])
    with pytest.raises(ValueError, match="0/1"):
        fleiss_kappa([[0.5, 1.0]])
    with pytest.raises(ValueError, match="empty"):
        fleiss_kappa(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="non-negative"):
        split_share([[1, 0]], [-1])


def test_labels_with_a_known_auc_reproduce_it() -> None:
    """Scores whose positives outrank their negatives in exactly k of P·N pairs."""
    rng = np.random.default_rng(7)
    n_pos, n_neg = 300, 200
    neg = rng.random(n_neg) * 0.5
    # positives: the share q of them above every negative, the rest below every negative
    for q in (0.0, 0.25, 0.8, 1.0):
        above = int(q * n_pos)
        pos = np.r_[0.5 + rng.random(above) * 0.5, rng.random(n_pos - above) * -1.0]
        labels = np.r_[np.ones(n_pos), np.zeros(n_neg)]
        scores = np.r_[pos, neg]
        assert auc_roc(labels, scores) == pytest.approx(above / n_pos)


def test_reliability_bins_of_a_calibrated_judge() -> None:
    rng = np.random.default_rng(1)
    p = rng.random(50_000)
    y = (rng.random(50_000) < p).astype(int)  # calibrated by construction
    r = reliability_bins(y, p, n_bins=10)
    assert r["n"].sum() == 50_000
    np.testing.assert_allclose(r["rate"], r["mean_p"], atol=0.03)
    assert r["ece"][0] < 0.02
    over = reliability_bins(y, np.sqrt(p), n_bins=10)  # over-confident about harm
    assert over["ece"][0] > 0.1
    assert np.all(over["mean_p"][1:] > over["rate"][1:])


def test_reliability_bins_edges_and_empty_bins() -> None:
    r = reliability_bins([1, 0, 1], [1.0, 0.0, 0.95], n_bins=4)
    np.testing.assert_array_equal(r["n"], [1, 0, 0, 2])  # 1.0 falls in the last bin
    assert math.isnan(r["rate"][1]) and r["rate"][3] == 1.0
    assert r["brier"][0] == pytest.approx((0.05**2) / 3)
    with pytest.raises(ValueError, match="probs"):
        reliability_bins([1], [1.5])
