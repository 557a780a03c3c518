"""The blocked torch engine (CUDA on the driver; tested here on CPU) matches the reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlsafety.selection import greedy_select, reference_greedy_select
from vlsafety.selection._greedy import _prepare

from .pools import assert_same_picks, cases, make_pool, run_case

torch = pytest.importorskip("torch")

from vlsafety.selection import _torch  # noqa: E402  (needs torch)


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
    assert fast.engine == "blocked-torch:cpu"
    assert_same_picks(reference_greedy_select(*args, **kwargs), fast)


@given(case=cases, block=st.integers(1, 9), top=st.integers(1, 12))
@settings(max_examples=40, deadline=None)
def test_block_and_top_set_sizes_never_change_the_picks(case: dict, block: int, top: int) -> None:
    pool, kwargs = run_case(case)
    args = (pool.sep, pool.harm, pool.category, pool.embedding)
    result = _torch.torch_engine(_prepare(*args, **kwargs), "cpu", block=block, top=top)
    assert_same_picks(reference_greedy_select(*args, **kwargs), result)


def test_blocks_certify_many_picks_and_refresh_few_rows() -> None:
    # The blocked design's point: far fewer distances than the dense loop's n per pick.
    pool = make_pool(8, 3000, n_categories=5, dim=16, clusters=6)
    args = (pool.sep, pool.harm, pool.category, pool.embedding)
    kwargs = dict(n_categories=5, n_max=300, weights=(0.5, 0.3, 0.2))
    result = _torch.torch_engine(_prepare(*args, **kwargs, initial=None), "cpu", block=32, top=256)
    assert_same_picks(reference_greedy_select(*args, **kwargs), result)
    assert result.n_distance_evaluations < 3000 * 299 / 4


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
    assert r.engine == "blocked-torch:cpu"


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
