"""Bootstrap stability of ASR and model rankings against benchmark size (§6.3)."""

from __future__ import annotations

import numpy as np
import pytest

from vlsafety.metrics import stability


def _flags(n: int = 2000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 4)) < np.array([0.1, 0.3, 0.5, 0.7])


def test_larger_benchmarks_give_tighter_asr_and_steadier_rankings() -> None:
    flags = _flags()
    r = stability(flags, [20, 200, 2000], n_boot=200, seed=1, model_ids=["a", "b", "c", "d"])
    width = r.asr_ci_high - r.asr_ci_low
    assert np.all(width[0] > width[1]) and np.all(width[1] > width[2])
    assert r.tau_mean[0] < r.tau_mean[2] <= 1.0
    assert r.tau_ci_low[2] == 1.0  # 2000 samples always rank these models right
    np.testing.assert_allclose(r.asr_mean[2], flags.mean(axis=0), atol=0.02)
    assert np.all(r.asr_ci_low <= r.asr_mean) and np.all(r.asr_mean <= r.asr_ci_high)
    assert len(r.to_records()) == 12 and r.to_records()[0]["model"] == "a"


def test_seeded_and_reproducible() -> None:
    a = stability(_flags(300), [10, 50], n_boot=50, seed=3)
    b = stability(_flags(300), [10, 50], n_boot=50, seed=3)
    np.testing.assert_array_equal(a.asr_mean, b.asr_mean)
    np.testing.assert_array_equal(a.tau_mean, b.tau_mean)


def test_undefined_taus_are_counted_not_averaged() -> None:
    # Size 1: every resample gives each model ASR 0 or 1; all-tied resamples have no τ.
    flags = np.array([[0, 0, 0], [1, 1, 1], [1, 0, 0]])
    r = stability(flags, [1], n_boot=100, seed=0)
    assert 0 < r.tau_undefined[0] < 100
    assert np.isfinite(r.tau_mean[0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"harmful": np.zeros((5, 1))}, "at least 2 models"),
        ({"harmful": np.ones((5, 3))}, "same full-set ASR"),
        ({"sizes": []}, "sizes"),
        ({"sizes": [0]}, ">= 1"),
        ({"n_boot": 1}, "n_boot"),
        ({"ci": 1.0}, "ci"),
        ({"model_ids": ["a"]}, "model_ids"),
        ({"harmful": np.full((4, 2), 0.5)}, "0/1"),
    ],
)
def test_bad_inputs(kwargs: dict, match: str) -> None:
    args = {"harmful": _flags(50)[:, :2], "sizes": [10]}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        stability(args.pop("harmful"), args.pop("sizes"), **args)
