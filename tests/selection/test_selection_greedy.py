"""Algorithm 1: the fast engines pick exactly what the straightforward loop picks."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vlsafety.selection import (
    delta_entropy,
    greedy_select,
    reference_greedy_select,
)
from vlsafety.selection._blocked import blocked_engine
from vlsafety.selection._criteria import cosine_distance, quantize_embeddings
from vlsafety.selection._greedy import _lazy_engine, _prepare, _refresh

from .pools import WEIGHTS, assert_same_picks, cases, make_pool, run_case


@given(cases)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_numpy_and_lazy_engines_equal_reference_pick_for_pick(case: dict) -> None:
    pool, kwargs = run_case(case)
    args = (pool.sep, pool.harm, pool.category, pool.embedding)
    ref = reference_greedy_select(*args, **kwargs)
    fast = greedy_select(*args, device="numpy", **kwargs)
    assert fast.engine == "blocked-numpy"
    assert_same_picks(ref, fast)
    assert len(fast) == kwargs["n_max"]
    lazy = _lazy_engine(_prepare(*args, **kwargs))
    assert lazy.engine == "lazy-numpy"
    assert_same_picks(ref, lazy)


@given(cases, st.sampled_from([0, 2, 6, 13, 40]))
@settings(max_examples=60, deadline=None)
def test_any_bucket_width_gives_the_same_picks(case: dict, bits: int) -> None:
    pool, kwargs = run_case(case)
    prep = _prepare(pool.sep, pool.harm, pool.category, pool.embedding, **kwargs)
    ref = reference_greedy_select(pool.sep, pool.harm, pool.category, pool.embedding, **kwargs)
    assert_same_picks(ref, _lazy_engine(prep, bucket_bits=bits))


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("weights", WEIGHTS)
def test_medium_clustered_pool_exercises_the_float32_screen(ties: bool, weights: tuple) -> None:
    # Enough picks that candidates go stale by more than 8 picks (the screened path).
    pool = make_pool(11, 1500, n_categories=5, dim=12, ties=ties, clusters=0 if ties else 9)
    args = (pool.sep, pool.harm, pool.category, pool.embedding)
    kwargs = dict(n_categories=5, n_max=150, weights=weights)
    ref = reference_greedy_select(*args, **kwargs)
    assert_same_picks(ref, greedy_select(*args, device="numpy", **kwargs))
    prep = _prepare(*args, **kwargs, initial=None)
    # Less work than the dense loop: the lazy engine, and the blocked one with a top set
    # sized for the pool (its default, 256 rows updated per pick, is 17% of this pool) —
    # except with diversity alone on duplicated rows (γ = 1, ties), where its threshold
    # heuristic refreshes about as many distances as the dense loop (known, see _blocked).
    assert_same_picks(ref, lazy := _lazy_engine(prep))
    assert lazy.n_distance_evaluations < 1500 * 149
    blocked = blocked_engine(prep, top=32)
    assert_same_picks(ref, blocked)
    assert blocked.n_distance_evaluations < 1500 * 149 * (1.1 if ties and weights[2] == 1 else 1)


def test_every_sample_selected_when_n_max_is_the_pool_size() -> None:
    pool = make_pool(5, 40, ties=True)
    args = (pool.sep, pool.harm, pool.category, pool.embedding)
    fast = greedy_select(*args, n_categories=4, n_max=40, device="numpy")
    assert_same_picks(reference_greedy_select(*args, n_categories=4, n_max=40), fast)
    assert sorted(fast.indices.tolist()) == list(range(40))


def test_identical_samples_are_picked_in_index_order() -> None:
    n = 30
    emb = np.ones((n, 3), dtype=np.float32)
    result = greedy_select(
        np.full(n, 0.5),
        np.full(n, 0.5),
        np.zeros(n, dtype=int),
        emb,
        n_categories=2,
        n_max=n,
        device="numpy",
    )
    assert result.indices.tolist() == list(range(n))


def test_refresh_screen_finds_the_exact_minimum() -> None:
    # Many picks, near-duplicates among them: the float32 screen must keep every pick
    # that could be nearest, and the exact recomputation must pick the right one.
    rng = np.random.default_rng(0)
    base = rng.normal(size=(40, 24))
    emb = np.concatenate([base + 1e-7 * rng.normal(size=base.shape) for _ in range(5)])
    q = quantize_embeddings(emb.astype(np.float32))
    picked = q[:120].copy()
    rows = np.arange(120, 200)
    version = np.zeros(q.shape[0], dtype=np.int64)
    version[rows[::2]] = 37  # mixed staleness: two screening groups
    mind = np.full(q.shape[0], 2.0)
    mind[rows[::2]] = cosine_distance(q[rows[::2]], picked[:37]).min(axis=1)
    new, work = _refresh(q, picked, 120, rows, version, mind)
    expected = cosine_distance(q[rows], picked).min(axis=1)
    assert np.array_equal(new, expected)
    assert np.array_equal(mind[rows], expected) and np.all(version[rows] == 120)
    assert work >= 80 * 83


def test_hand_computed_three_samples() -> None:
    # A and B are duplicates in category 0, C is orthogonal in category 1 (K = 2).
    emb = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    sep, harm, cat = np.array([0.5, 0.5, 0.4]), np.array([0.5, 0.5, 0.4]), np.array([0, 0, 1])
    result = greedy_select(sep, harm, cat, emb, n_categories=2, n_max=3, device="numpy")
    assert result.indices.tolist() == [0, 2, 1]
    # Pick 1: A and B tie on 0.4 + 0.2·(0 + 1)/2; the lower index wins.
    # Pick 2: C gains a new category (ΔH = 1) at distance 1: 0.32 + 0.2·1 beats B's 0.4.
    # Pick 3: B duplicates A (distance 0) and unbalances the categories.
    dh_b = math.log(3) - (2 / 3) * math.log(2)
    dh_b = (dh_b - math.log(2)) / math.log(2)
    np.testing.assert_allclose(result.score, [0.5, 0.52, 0.4 + 0.1 * dh_b], atol=1e-11)
    np.testing.assert_allclose(result.c_div, [0.5, 1.0, dh_b / 2], atol=1e-12)
    np.testing.assert_allclose(result.min_distance, [1.0, 1.0, 0.0], atol=1e-7)
    assert dh_b == pytest.approx(delta_entropy(np.array([1, 1]), 2)[0])


def test_score_is_the_weighted_sum_of_the_criteria() -> None:
    pool = make_pool(8, 300, clusters=5)
    w = (0.3, 0.3, 0.4)
    r = greedy_select(
        pool.sep,
        pool.harm,
        pool.category,
        pool.embedding,
        n_categories=4,
        n_max=50,
        weights=w,
        device="numpy",
    )
    np.testing.assert_allclose(
        r.score, w[0] * r.c_sep + w[1] * r.c_harm + w[2] * r.c_div, atol=1e-11
    )
    np.testing.assert_allclose(r.c_sep, pool.sep[r.indices])
    assert len(set(r.indices.tolist())) == 50


def test_initial_set_counts_and_is_never_picked() -> None:
    pool = make_pool(9, 200, clusters=4)
    initial = np.arange(0, 200, 3)
    r = greedy_select(
        pool.sep,
        pool.harm,
        pool.category,
        pool.embedding,
        n_categories=4,
        n_max=40,
        initial=initial,
        device="numpy",
    )
    assert not set(r.indices.tolist()) & set(initial.tolist())
    assert np.array_equal(r.initial, initial)
    first = r.indices[0]
    q = quantize_embeddings(pool.embedding)
    assert r.min_distance[0] == cosine_distance(q[first : first + 1], q[initial]).min()
    counts = np.bincount(pool.category[initial], minlength=4)
    assert r.delta_h[0] == delta_entropy(counts, 4)[pool.category[first]]


def test_n_max_larger_than_the_pool_is_clipped_with_a_warning() -> None:
    pool = make_pool(1, 10)
    with pytest.warns(UserWarning, match="n_max=15 exceeds the 7 selectable"):
        r = greedy_select(
            pool.sep,
            pool.harm,
            pool.category,
            pool.embedding,
            n_categories=4,
            n_max=15,
            initial=[0, 1, 2],
            device="numpy",
        )
    assert len(r) == 7


@pytest.mark.parametrize("device", [None, "auto"])
def test_default_device_on_a_cpu_machine_is_the_blocked_numpy_engine(
    monkeypatch: pytest.MonkeyPatch, device: str | None
) -> None:
    import vlsafety.selection._greedy as greedy

    monkeypatch.setattr(greedy, "_cuda_available", lambda: False)
    pool = make_pool(2, 30)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = greedy_select(
            pool.sep,
            pool.harm,
            pool.category,
            pool.embedding,
            n_categories=4,
            n_max=5,
            device=device,
        )
    assert r.engine == "blocked-numpy" and r.seconds >= 0.0
    assert r.summary()["n_selected"] == 5


def test_auto_uses_cuda_only_for_large_pools_when_present(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import vlsafety.selection._greedy as greedy

    cut = greedy.AUTO_CUDA_MIN_ELEMENTS
    monkeypatch.setattr(greedy, "_cuda_available", lambda: True)
    assert greedy.auto_device(cut // 768, 768) == "numpy"  # a few rows short of the cut
    assert greedy.auto_device(cut // 768 + 1, 768) == "cuda"
    assert greedy.auto_device(300_000, 768) == "cuda"
    monkeypatch.setattr(greedy, "_cuda_available", lambda: False)
    assert greedy.auto_device(300_000, 768) == "numpy"


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"sep": [0.1, np.nan, 0.2]}, "sep: value at index 1 is NaN"),
        ({"harm": [0.1, 1.2, 0.2]}, r"harm: values must lie in \[0, 1\]"),
        ({"harm": [0.1, 0.2]}, "harm has 2 entries but sep has 3"),
        ({"category": [0, 1, 2]}, r"category: ids must lie in \[0, n_categories=2\)"),
        ({"category": [0.0, 1.0, 1.0]}, "category: expected a 1-d integer array"),
        ({"embedding": np.ones((3, 2, 1))}, r"embedding: expected shape \(3, dim\)"),
        ({"embedding": [[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]]}, "zero vector"),
        ({"embedding": [[1.0, np.inf], [0.0, 1.0], [1.0, 1.0]]}, "NaN or infinite"),
        ({"weights": (0.5, 0.5)}, "three numbers"),
        ({"weights": (0.6, 0.5, -0.1)}, ">= 0"),
        ({"weights": (0.5, 0.3, 0.2000001)}, "sum to 1"),
        ({"weights": (0.5, np.nan, 0.5)}, "finite"),
        ({"n_categories": 1}, "n_categories: must be >= 2"),
        ({"n_max": -1}, "n_max: must be >= 0"),
        ({"n_max": 2.0}, "n_max: expected an int"),
        ({"initial": [0, 0]}, "initial: indices must be unique"),
        ({"initial": [5]}, r"initial: indices must lie in \[0, 3\)"),
    ],
)
def test_bad_inputs_raise_clear_errors(change: dict, match: str) -> None:
    kwargs = {
        "sep": [0.1, 0.5, 0.2],
        "harm": [0.1, 0.2, 0.3],
        "category": [0, 1, 1],
        "embedding": [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]],
        "n_categories": 2,
        "n_max": 2,
        "weights": (0.5, 0.3, 0.2),
        "initial": None,
    }
    kwargs.update(change)
    for fn in (greedy_select, reference_greedy_select):
        with pytest.raises(ValueError, match=match):
            fn(**kwargs)  # type: ignore[arg-type]


def test_empty_selection() -> None:
    pool = make_pool(1, 5)
    r = greedy_select(
        pool.sep, pool.harm, pool.category, pool.embedding, n_categories=4, n_max=0, device="numpy"
    )
    assert len(r) == 0 and r.indices.dtype == np.int64
    assert math.isnan(r.summary()["mean_score"])


def test_refresh_split_over_threads_finds_the_exact_minimum() -> None:
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(1)
    centers = rng.normal(size=(6, 256))
    emb = centers[rng.integers(0, 6, size=700)] + 0.3 * rng.normal(size=(700, 256))
    q = quantize_embeddings(emb.astype(np.float32))
    picked = q[:300].copy()
    rows = np.arange(300, 700)  # 400 rows x 300 picks x 256 dims: above the split threshold
    version = np.zeros(700, dtype=np.int64)
    mind = np.full(700, 2.0)
    with ThreadPoolExecutor(3) as pool:
        new, _ = _refresh(q, picked, 300, rows, version, mind, pool)
    assert np.array_equal(new, cosine_distance(q[rows], picked).min(axis=1))


@given(cases, st.integers(1, 9))
@settings(max_examples=40, deadline=None)
def test_top_sets_too_large_for_a_gram_matrix_give_the_same_picks(case: dict, top: int) -> None:
    # Top sets above _GRAM_MAX_ROWS (tie-heavy pools) take a matrix-vector product per pick.
    from unittest import mock

    from vlsafety.selection import _blocked

    pool, kwargs = run_case(case)
    args = (pool.sep, pool.harm, pool.category, pool.embedding)
    with mock.patch.object(_blocked, "_GRAM_MAX_ROWS", 0):
        result = blocked_engine(_prepare(*args, **kwargs), top=top)
    assert_same_picks(reference_greedy_select(*args, **kwargs), result)
