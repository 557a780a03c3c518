"""The torch engine (CUDA on the driver; tested here on CPU) matches the reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

from vlsafety.selection import greedy_select, reference_greedy_select

from .pools import assert_same_picks, cases, make_pool, run_case

torch = pytest.importorskip("torch")


@pytest.mark.parametrize(
    ("seed", "n", "ties", "weights", "initial_share"),
    [
        (0, 120, False, (0.5, 0.3, 0.2), 0.0),
        (1, 90, True, (0.5, 0.3, 0.2), 0.0),
        (2, 100, True, (0.0, 0.0, 1.0), 0.3),
        (3, 60, False, (1.0, 0.0, 0.0), 0.5),
        (4, 1, False, (0.5, 0.3, 0.2), 0.0),
    ],
)
def test_torch_cpu_engine_equals_reference(
    seed: int, n: int, ties: bool, weights: tuple, initial_share: float
) -> None:
    pool = make_pool(seed, n, ties=ties, clusters=0 if ties else 3)
    initial = np.random.default_rng(seed).choice(n, size=int(initial_share * n), replace=False)
    kwargs = dict(n_categories=4, n_max=n - initial.size, weights=weights, initial=initial)
    args = (pool.sep, pool.harm, pool.category, pool.embedding)
    fast = greedy_select(*args, device="cpu", **kwargs)
    assert fast.engine == "dense-torch:cpu"
    assert_same_picks(reference_greedy_select(*args, **kwargs), fast)


def test_torch_engine_accepts_a_torch_device() -> None:
    pool = make_pool(5, 30)
    r = greedy_select(
        pool.sep,
        pool.harm,
        pool.category,
        pool.embedding,
        n_categories=4,
        n_max=5,
        device=torch.device("cpu"),
    )
    assert r.engine == "dense-torch:cpu"


@pytest.mark.parametrize(("device", "match"), [("tpu", "device"), ("not a device", "device")])
def test_unknown_devices_are_rejected(device: str, match: str) -> None:
    pool = make_pool(6, 10)
    with pytest.raises(ValueError, match=match):
        greedy_select(
            pool.sep,
            pool.harm,
            pool.category,
            pool.embedding,
            n_categories=4,
            n_max=2,
            device=device,
        )


def test_cuda_requested_without_cuda_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    pool = make_pool(7, 10)
    with pytest.raises(ValueError, match="CUDA is not available"):
        greedy_select(
            pool.sep,
            pool.harm,
            pool.category,
            pool.embedding,
            n_categories=4,
            n_max=2,
            device="cuda",
        )


@given(cases)
@settings(max_examples=25, deadline=None)
def test_torch_engine_equals_reference_on_random_pools(case: dict) -> None:
    pool, kwargs = run_case(case)
    args = (pool.sep, pool.harm, pool.category, pool.embedding)
    assert_same_picks(
        reference_greedy_select(*args, **kwargs), greedy_select(*args, device="cpu", **kwargs)
    )
