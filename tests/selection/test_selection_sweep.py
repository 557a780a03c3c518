"""Weight sweep (§6.2) and quality on a held-out panel."""

from __future__ import annotations

import numpy as np
import pytest

from vlsafety.metrics import benchmark_quality
from vlsafety.selection import greedy_select, holdout_quality, split_panel, weight_sweep

from .pools import make_pool


def test_weight_sweep_follows_the_papers_protocol() -> None:
    pool = make_pool(0, 400, clusters=5)
    harmful = np.random.default_rng(0).random((400, 4)) < [0.2, 0.4, 0.6, 0.8]
    records = weight_sweep(
        pool.sep,
        pool.harm,
        pool.category,
        pool.embedding,
        harmful,
        n_categories=4,
        n_max=40,
        device="numpy",
    )
    assert len(records) == 18
    assert [r["varied"] for r in records] == ["alpha"] * 6 + ["beta"] * 6 + ["gamma"] * 6
    for r in records:
        assert r["alpha"] + r["beta"] + r["gamma"] == pytest.approx(1.0)
        assert r[r["varied"]] == r["value"]
        others = [r[k] for k in ("alpha", "beta", "gamma") if k != r["varied"]]
        assert others[0] == others[1] == pytest.approx((1 - r["value"]) / 2)
        assert r["n_selected"] == 40
    # One setting recomputed by hand.
    r = records[8]  # beta = 0.4
    sel = greedy_select(
        pool.sep,
        pool.harm,
        pool.category,
        pool.embedding,
        n_categories=4,
        n_max=40,
        weights=(r["alpha"], r["beta"], r["gamma"]),
        device="numpy",
    )
    q = benchmark_quality(harmful[sel.indices].mean(axis=0))
    assert (r["mad"], r["mean"], r["gap"]) == (q["mad"], q["mean"], q["gap"])
    assert r["div"] == sel.c_div.mean()


def test_weight_sweep_validates_its_inputs() -> None:
    pool = make_pool(1, 20)
    with pytest.raises(ValueError, match="harmful has 10 rows"):
        weight_sweep(
            pool.sep,
            pool.harm,
            pool.category,
            pool.embedding,
            np.zeros((10, 2)),
            n_categories=4,
            n_max=5,
        )
    with pytest.raises(ValueError, match="grid"):
        weight_sweep(
            pool.sep,
            pool.harm,
            pool.category,
            pool.embedding,
            np.zeros((20, 2)),
            n_categories=4,
            n_max=5,
            grid=(1.5,),
        )


def test_split_panel_is_a_seeded_partition() -> None:
    models = [f"m{i}" for i in range(7)]
    sel, hold = split_panel(models, 3, seed=4)
    assert len(hold) == 3 and len(sel) == 4
    assert sorted(sel + hold) == sorted(models)
    assert sel == [m for m in models if m in sel]  # input order kept
    assert split_panel(models, 3, seed=4) == (sel, hold)
    with pytest.raises(ValueError, match="n_holdout"):
        split_panel(models, 7)
    with pytest.raises(ValueError, match="unique"):
        split_panel(["a", "a", "b"], 1)


def test_holdout_quality_uses_only_the_selected_rows() -> None:
    flags = np.array([[1, 0], [1, 1], [0, 0], [1, 0]])
    assert holdout_quality(flags, np.array([0, 3])) == {"mad": 0.5, "mean": 0.5, "gap": 1.0}
    with pytest.raises(ValueError, match="selected"):
        holdout_quality(flags, np.array([4]))
    with pytest.raises(ValueError, match="at least 2 models"):
        holdout_quality(flags[:, :1], np.array([0]))
