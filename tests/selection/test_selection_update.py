"""Update mode: rank a benchmark by the criterion, drop the worst, refill greedily."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vlsafety.selection import (
    benchmark_scores,
    cosine_distance,
    greedy_select,
    quantize_embeddings,
    reference_greedy_select,
    update_benchmark,
)

from .pools import make_pool


def _direct_entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def test_benchmark_scores_match_a_direct_computation() -> None:
    b = make_pool(0, 60, n_categories=3, clusters=4)
    w = (0.4, 0.3, 0.3)
    scores = benchmark_scores(b.sep, b.harm, b.category, b.embedding, n_categories=3, weights=w)
    q = quantize_embeddings(b.embedding)
    dist = cosine_distance(q, q)
    np.fill_diagonal(dist, np.inf)
    counts = np.bincount(b.category, minlength=3)
    for s in range(60):
        without = counts.copy()
        without[b.category[s]] -= 1
        dh = (_direct_entropy(counts) - _direct_entropy(without)) / math.log(3)
        expected = w[0] * b.sep[s] + w[1] * b.harm[s] + w[2] * (dh + dist[s].min()) / 2
        assert scores[s] == pytest.approx(expected, abs=1e-11)


def test_update_replaces_the_worst_and_refills_like_greedy_with_initial() -> None:
    b = make_pool(1, 80, clusters=4)
    p = make_pool(2, 300, clusters=4)
    r = update_benchmark(
        b.sep,
        b.harm,
        b.category,
        b.embedding,
        p.sep,
        p.harm,
        p.category,
        p.embedding,
        n_categories=4,
        replace_fraction=0.25,
        device="numpy",
    )
    assert r.removed.size == 20 and r.added.size == 20 and r.kept.size == 60
    assert sorted(r.removed.tolist() + r.kept.tolist()) == list(range(80))
    assert r.removed_scores.max() <= r.bench_scores[r.kept].min()
    # The refill is Algorithm 1 over [kept, pool] starting from the kept samples.
    sep = np.concatenate([b.sep[r.kept], p.sep])
    harm = np.concatenate([b.harm[r.kept], p.harm])
    cat = np.concatenate([b.category[r.kept], p.category])
    emb = np.concatenate([b.embedding[r.kept], p.embedding])
    kwargs = dict(n_categories=4, n_max=20, initial=np.arange(60))
    ref = reference_greedy_select(sep, harm, cat, emb, **kwargs)
    assert np.array_equal(ref.indices - 60, r.added)
    assert np.array_equal(ref.score, r.added_scores)
    assert np.array_equal(
        greedy_select(sep, harm, cat, emb, device="numpy", **kwargs).indices, r.selection.indices
    )


@pytest.mark.parametrize(
    ("fraction", "removed"), [(0.0, 0), (0.5, 5), (0.25, 3), (0.24, 2), (1.0, 10)]
)
def test_number_removed_rounds_half_up(fraction: float, removed: int) -> None:
    b = make_pool(3, 10)
    p = make_pool(4, 30)
    r = update_benchmark(
        b.sep,
        b.harm,
        b.category,
        b.embedding,
        p.sep,
        p.harm,
        p.category,
        p.embedding,
        n_categories=4,
        replace_fraction=fraction,
        device="numpy",
    )
    assert r.removed.size == removed == r.added.size


def test_ties_remove_the_higher_index_first() -> None:
    emb = np.eye(4, dtype=np.float32)
    same = np.full(4, 0.5)
    r = update_benchmark(
        same,
        same,
        np.array([0, 1, 0, 1]),
        emb,
        same[:2],
        same[:2],
        np.array([0, 1]),
        emb[:2] + 1,
        n_categories=2,
        replace_fraction=0.5,
        device="numpy",
    )
    assert r.removed.tolist() == [3, 2]


def test_small_pool_warns_and_refills_what_it_can() -> None:
    b = make_pool(5, 20)
    p = make_pool(6, 3)
    with pytest.warns(UserWarning, match="exceeds"):
        r = update_benchmark(
            b.sep,
            b.harm,
            b.category,
            b.embedding,
            p.sep,
            p.harm,
            p.category,
            p.embedding,
            n_categories=4,
            replace_fraction=0.5,
            device="numpy",
        )
    assert r.removed.size == 10 and r.added.size == 3


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"replace_fraction": 1.5}, "replace_fraction"),
        ({"pool_emb": np.ones((3, 5))}, "pool_emb"),
        ({"pool_sep": np.array([0.1, 2.0, 0.1])}, "pool_sep"),
        ({"pool_cat": np.array([0, 1])}, "differ in length"),
        ({"pool_emb": np.zeros((3, 4))}, "pool_embedding: 3 zero vector"),
    ],
)
def test_bad_inputs(change: dict, match: str) -> None:
    b = make_pool(7, 6, dim=4)
    args = dict(
        bench_sep=b.sep,
        bench_harm=b.harm,
        bench_cat=b.category,
        bench_emb=b.embedding,
        pool_sep=np.full(3, 0.5),
        pool_harm=np.full(3, 0.5),
        pool_cat=np.array([0, 1, 2]),
        pool_emb=np.ones((3, 4)),
        n_categories=4,
        replace_fraction=0.5,
    )
    args.update(change)
    with pytest.raises(ValueError, match=match):
        update_benchmark(**args)  # type: ignore[arg-type]
