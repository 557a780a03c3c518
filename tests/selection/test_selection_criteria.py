"""The selection criteria (Eq. 1–5) and the exact-arithmetic helpers they rest on."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from vlsafety.selection import (
    c_div_in_order,
    category_entropy,
    cosine_distance,
    delta_entropy,
    greedy_select,
    harmfulness,
    quantize_embeddings,
    separability,
)
from vlsafety.selection._criteria import quantized_norm_bound, to_score_grid

from .pools import make_pool

unit = st.floats(0.0, 1.0, allow_nan=False)


def test_separability_known_values() -> None:
    assert separability([0.0, 1.0, 0.5]).tolist() == [0.0, 0.0, 1.0]
    # 1 of 3 panel models harmful: H2(1/3) = log2(3) - 2/3.
    assert separability(1 / 3) == pytest.approx(math.log2(3) - 2 / 3, abs=1e-15)


@given(arrays(np.float64, st.integers(1, 50), elements=unit))
def test_separability_range_symmetry_and_formula(p: np.ndarray) -> None:
    h = separability(p)
    assert np.all((h >= 0.0) & (h <= 1.0))
    np.testing.assert_allclose(h, separability(1.0 - p), atol=1e-12)
    inner = (p > 0) & (p < 1)
    direct = -p[inner] * np.log2(p[inner]) - (1 - p[inner]) * np.log2(1 - p[inner])
    np.testing.assert_allclose(h[inner], direct, atol=1e-12)


@pytest.mark.parametrize("bad", [[-0.1], [1.5], [np.nan], [np.inf], ["x"]])
def test_separability_rejects_bad_input(bad: list[object]) -> None:
    with pytest.raises(ValueError, match="p_h"):
        separability(bad)


def test_harmfulness_is_the_mean_over_judges_and_models() -> None:
    p = np.zeros((2, 3, 2))
    p[0] = [[1.0, 0.0], [0.5, 0.5], [1.0, 1.0]]
    p[1, 0, 0] = 0.6
    np.testing.assert_allclose(harmfulness(p), [4.0 / 6.0, 0.1])


@pytest.mark.parametrize(
    ("p", "match"),
    [
        (np.zeros((3, 2)), "shape"),
        (np.zeros((2, 0, 3)), "at least one"),
        (np.full((1, 1, 1), 1.2), r"\[0, 1\]"),
    ],
)
def test_harmfulness_rejects_bad_input(p: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        harmfulness(p)


def _direct_entropy(labels: list[int]) -> float:
    if not labels:
        return 0.0
    _, counts = np.unique(labels, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


@given(
    st.integers(2, 8).flatmap(
        lambda k: st.tuples(st.just(k), st.lists(st.integers(0, k - 1), max_size=40))
    )
)
def test_delta_entropy_matches_direct_entropy(case: tuple[int, list[int]]) -> None:
    k, labels = case
    counts = np.bincount(labels, minlength=k)
    dh = delta_entropy(counts, k)
    assert category_entropy(counts) == pytest.approx(_direct_entropy(labels), abs=1e-12)
    for c in range(k):
        expected = (_direct_entropy([*labels, c]) - _direct_entropy(labels)) / math.log(k)
        assert dh[c] == pytest.approx(expected, abs=1e-12)
    assert np.all(dh <= 1.0 + 1e-12) and np.all(dh > -1.0)


def test_delta_entropy_of_empty_set_is_zero_and_rewards_new_categories() -> None:
    assert delta_entropy(np.zeros(3), 3).tolist() == [0.0, 0.0, 0.0]
    dh = delta_entropy(np.array([5, 0, 0]), 3)
    assert dh[1] == dh[2] > 0 > dh[0]


def test_delta_entropy_needs_two_categories() -> None:
    with pytest.raises(ValueError, match="n_categories"):
        delta_entropy(np.zeros(1), 1)


@given(
    arrays(
        np.float32,
        st.tuples(st.integers(1, 12), st.integers(1, 16)),
        elements=st.floats(-100, 100, width=32),
    ),
    st.integers(0, 2**31),
)
@settings(max_examples=60)
def test_cosine_distance_is_exact_whatever_the_batching(emb: np.ndarray, seed: int) -> None:
    emb = emb + np.float32(1e-3)  # keep rows away from zero
    q = quantize_embeddings(emb)
    full = cosine_distance(q, q)
    # One pair at a time, transposed, and in a shuffled batch: bit-identical.
    rng = np.random.default_rng(seed)
    perm = rng.permutation(q.shape[0])
    assert np.array_equal(cosine_distance(q[perm], q)[np.argsort(perm)], full)
    assert np.array_equal(full, full.T)
    i, j = int(rng.integers(q.shape[0])), int(rng.integers(q.shape[0]))
    assert cosine_distance(q[i : i + 1], q[j : j + 1])[0, 0] == full[i, j]
    assert np.all((full >= 0.0) & (full <= 2.0))
    assert np.all(np.diag(full) <= 1e-6)
    # And it is the cosine distance of the (unrounded) normalized vectors.
    e = emb.astype(np.float64) / np.linalg.norm(emb.astype(np.float64), axis=1, keepdims=True)
    np.testing.assert_allclose(full, np.clip(1.0 - e @ e.T, 0.0, 2.0), atol=1e-6)


def test_quantize_embeddings_normalizes_and_rejects_bad_rows() -> None:
    emb = np.array([[3.0, 4.0], [0.0, -2.0]], dtype=np.float32)
    q = quantize_embeddings(emb)
    assert q.dtype == np.float32 and np.array_equal(q, np.rint(q))
    np.testing.assert_allclose(q / 2.0**24, [[0.6, 0.8], [0.0, -1.0]], atol=1e-7)
    with pytest.raises(ValueError, match=r"zero vector.*rows \[1\]"):
        quantize_embeddings(np.array([[1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="row 0 holds NaN"):
        quantize_embeddings(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="shape"):
        quantize_embeddings(np.zeros(3))


@given(
    arrays(
        np.float32,
        st.tuples(st.integers(1, 20), st.integers(1, 64)),
        elements=st.floats(-1e6, 1e6, width=32),
    ),
)
def test_quantized_rows_respect_the_norm_bound(emb: np.ndarray) -> None:
    emb[:, 0] = np.abs(emb[:, 0]) + np.float32(1.0)  # no zero rows
    q = quantize_embeddings(emb).astype(np.float64)
    assert np.sqrt((q * q).sum(axis=1)).max() <= quantized_norm_bound(emb.shape[1])


def test_quantize_embeddings_survives_float32_overflow_of_the_norm() -> None:
    big = np.full((1, 4), 3e19, dtype=np.float32)  # squares overflow float32
    np.testing.assert_allclose(quantize_embeddings(big) / 2.0**24, [[0.5] * 4], atol=1e-7)


@given(
    st.floats(0.0, 1.0),
    st.floats(0.0, 2.0),
    st.floats(0.0, 2.0),
    st.floats(0.0, 0.5),
)
def test_first_term_is_monotone_in_the_distance(
    static: float, d1: float, d2: float, hg: float
) -> None:
    # The lazy engine's stale bounds are valid because grid(static + γ/2·d) never
    # decreases when d grows (rounding is monotone).
    lo, hi = sorted((d1, d2))
    a = to_score_grid(np.array([static + hg * lo]))
    b = to_score_grid(np.array([static + hg * hi]))
    assert a[0] <= b[0]


def test_c_div_in_order_is_what_greedy_saw_at_each_pick() -> None:
    pool = make_pool(3, 400, clusters=6)
    result = greedy_select(
        pool.sep,
        pool.harm,
        pool.category,
        pool.embedding,
        n_categories=pool.n_categories,
        n_max=60,
        device="numpy",
    )
    again = c_div_in_order(
        pool.category[result.indices], pool.embedding[result.indices], pool.n_categories
    )
    assert np.array_equal(again, result.c_div)
    assert again[0] == 0.5  # ΔH of the first sample 0, distance term 1


def test_c_div_in_order_blocks_agree_with_a_direct_computation() -> None:
    pool = make_pool(4, 2100, dim=5)  # more than one 1024-row block
    c_div = c_div_in_order(pool.category, pool.embedding, pool.n_categories)
    q = quantize_embeddings(pool.embedding)
    for t in (1, 1023, 1024, 1025, 2099):
        counts = np.bincount(pool.category[:t], minlength=pool.n_categories)
        dh = delta_entropy(counts, pool.n_categories)[pool.category[t]]
        dist = cosine_distance(q[t : t + 1], q[:t]).min()
        assert c_div[t] == (dh + dist) * 0.5
