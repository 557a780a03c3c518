"""Pool generators for the selection tests (random, clustered and tie-heavy pools)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st

from vlsafety.selection import SelectionResult


@dataclass(frozen=True)
class Pool:
    sep: np.ndarray
    harm: np.ndarray
    category: np.ndarray
    embedding: np.ndarray
    n_categories: int


def make_pool(
    seed: int,
    n: int,
    *,
    n_categories: int = 4,
    dim: int = 8,
    ties: bool = False,
    clusters: int = 0,
) -> Pool:
    """A pool; ``ties`` draws few distinct criteria values and duplicated embeddings."""
    rng = np.random.default_rng(seed)
    category = rng.integers(0, n_categories, size=n)
    if ties:
        # p_h from 3 models (4 values) and judge means on a coarse grid; embeddings
        # copied from a handful of prototypes, so exact score ties are everywhere.
        sep = rng.choice([0.0, 0.9182958340544896, 1.0], size=n)
        harm = rng.choice([0.25, 0.5, 0.75], size=n)
        protos = rng.normal(size=(max(2, n // 8), dim))
        embedding = protos[rng.integers(0, protos.shape[0], size=n)]
    else:
        sep = rng.random(n)
        harm = rng.random(n)
        if clusters:
            centers = rng.normal(size=(clusters, dim)) * 2.0
            embedding = centers[rng.integers(0, clusters, size=n)] + rng.normal(size=(n, dim))
        else:
            embedding = rng.normal(size=(n, dim))
    return Pool(sep, harm, category, embedding.astype(np.float32), n_categories)


FIELDS = ("indices", "score", "c_sep", "c_harm", "c_div", "delta_h", "min_distance", "category")
WEIGHTS = [(0.5, 0.3, 0.2), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (0.2, 0.2, 0.6)]


def assert_same_picks(a: SelectionResult, b: SelectionResult) -> None:
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert np.array_equal(x, y), f"{name} differs: {x} vs {y}"


cases = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**31),
        "n": st.integers(1, 90),
        "k": st.integers(2, 6),
        "dim": st.integers(1, 6),
        "ties": st.booleans(),
        "clusters": st.integers(0, 4),
        "weights": st.sampled_from(WEIGHTS),
        "fill": st.floats(0.0, 1.0),
        "initial_share": st.sampled_from([0.0, 0.0, 0.3]),
    }
)


def run_case(case: dict[str, Any]) -> tuple[Pool, dict[str, Any]]:
    pool = make_pool(
        case["seed"],
        case["n"],
        n_categories=case["k"],
        dim=case["dim"],
        ties=case["ties"],
        clusters=case["clusters"],
    )
    n = case["n"]
    rng = np.random.default_rng(case["seed"])
    initial = rng.choice(n, size=int(case["initial_share"] * n), replace=False)
    n_max = int(round(case["fill"] * (n - initial.size)))
    kwargs = dict(
        n_categories=pool.n_categories,
        n_max=n_max,
        weights=case["weights"],
        initial=initial,
    )
    return pool, kwargs
