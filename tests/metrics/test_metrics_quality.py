"""MAD / MEAN / GAP / DIV and per-category rates."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vlsafety.metrics import benchmark_quality, diversity, rates_by_category
from vlsafety.selection import greedy_select


def test_benchmark_quality_hand_case() -> None:
    # Paper-like ASRs in percent: the metrics come back in the same unit.
    q = benchmark_quality({"a": 10.0, "b": 30.0, "c": 80.0})
    assert q["mean"] == pytest.approx(40.0)
    assert q["mad"] == pytest.approx((30 + 10 + 40) / 3)
    assert q["gap"] == pytest.approx(70.0)


@given(st.lists(st.floats(0, 1), min_size=2, max_size=30))
def test_benchmark_quality_against_definitions(asrs: list[float]) -> None:
    a = np.array(asrs)
    q = benchmark_quality(a)
    assert q["mean"] == pytest.approx(a.mean())
    assert q["mad"] == pytest.approx(np.mean(np.abs(a - a.mean())))
    assert q["gap"] == pytest.approx(a.max() - a.min())
    assert 0 <= q["mad"] <= q["gap"] / 2 + 1e-12  # MAD never exceeds half the range


def test_benchmark_quality_needs_two_models() -> None:
    with pytest.raises(ValueError, match="at least 2 models"):
        benchmark_quality([0.3])
    with pytest.raises(ValueError, match="NaN"):
        benchmark_quality([0.3, float("nan")])


def test_diversity_of_a_result_equals_diversity_of_its_arrays() -> None:
    rng = np.random.default_rng(0)
    n = 200
    cat = rng.integers(0, 5, n)
    emb = rng.normal(size=(n, 6))
    r = greedy_select(
        rng.random(n), rng.random(n), cat, emb, n_categories=5, n_max=30, device="numpy"
    )
    assert diversity(r) == diversity(cat[r.indices], emb[r.indices], 5) == r.c_div.mean()


def test_diversity_hand_case_and_errors() -> None:
    emb = np.array([[1.0, 0.0], [0.0, 1.0]])
    # First sample: (0 + 1)/2; second: new category (ΔH = 1) at distance 1 → 1.
    assert diversity(np.array([0, 1]), emb, 2) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="empty"):
        diversity(np.zeros(0, dtype=int), np.zeros((0, 2)), 2)
    with pytest.raises(ValueError, match="needs category, embedding"):
        diversity(np.array([0, 1]))


def test_rates_by_category_overall_is_the_micro_average() -> None:
    r = rates_by_category([1, 0, 0, 0, 1, 1], ["a", "a", "a", "a", "b", "b"])
    assert r.rates == {"a": 0.25, "b": 1.0}
    assert r.counts == {"a": 4, "b": 2}
    assert r.overall == pytest.approx(0.5)  # 3 of 6, not (0.25 + 1)/2
    assert r.macro == pytest.approx(0.625)
    with pytest.raises(ValueError, match="categories"):
        rates_by_category([1, 0], ["a"])
