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


@pytest.mark.parametrize("bounds", ["float32", "float16"])
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
    seed: int, n: int, ties: bool, weights: tuple, initial_share: float, bounds: str
) -> None:
    pool = make_pool(seed, n, ties=ties, clusters=0 if ties else 3)
    initial = np.random.default_rng(seed).choice(n, size=int(initial_share * n), replace=False)
    kwargs = dict(n_categories=4, n_max=n - initial.size, weights=weights, initial=initial)
    args = (pool.sep, pool.harm, pool.category, pool.embedding)
    fast = _torch.torch_engine(_prepare(*args, **kwargs), "cpu", block=4, top=8, bounds=bounds)
    assert fast.engine == "blocked-torch:cpu"
    assert_same_picks(reference_greedy_select(*args, **kwargs), fast)
    assert_same_picks(greedy_select(*args, device="cpu", **kwargs), fast)


@given(
    case=cases,
    block=st.integers(1, 9),
    top=st.integers(1, 12),
    bounds=st.sampled_from(["float32", "float16"]),
)
@settings(max_examples=40, deadline=None)
def test_block_top_set_and_bound_precision_never_change_the_picks(
    case: dict, block: int, top: int, bounds: str
) -> None:
    pool, kwargs = run_case(case)
    args = (pool.sep, pool.harm, pool.category, pool.embedding)
    result = _torch.torch_engine(
        _prepare(*args, **kwargs), "cpu", block=block, top=top, bounds=bounds
    )
    assert_same_picks(reference_greedy_select(*args, **kwargs), result)


@pytest.mark.parametrize("bounds", ["float32", "float16"])
def test_blocks_certify_many_picks_and_refresh_few_rows(bounds: str) -> None:
    # The blocked design's point: far fewer distances (low-precision bounds and exact
    # top-set values together) than the dense loop's n per pick.
    pool = make_pool(8, 3000, n_categories=5, dim=16, clusters=6)
    args = (pool.sep, pool.harm, pool.category, pool.embedding)
    kwargs = dict(n_categories=5, n_max=300, weights=(0.5, 0.3, 0.2))
    prep = _prepare(*args, **kwargs, initial=None)
    result = _torch.torch_engine(prep, "cpu", block=32, top=256, bounds=bounds)
    assert_same_picks(reference_greedy_select(*args, **kwargs), result)
    assert result.n_distance_evaluations < 3000 * 299 / 2


def test_unknown_bound_precision_is_rejected() -> None:
    pool = make_pool(9, 10)
    args = (pool.sep, pool.harm, pool.category, pool.embedding)
    prep = _prepare(*args, n_categories=4, n_max=2, weights=(0.5, 0.3, 0.2), initial=None)
    with pytest.raises(ValueError, match="bounds"):
        _torch.torch_engine(prep, "cpu", bounds="bfloat16")


def test_a_users_loose_matmul_settings_are_fixed_for_the_run_and_restored() -> None:
    # TF32 / "medium" precision would loosen the float32 products the bounds rest on.
    before = torch.get_float32_matmul_precision()
    seen: list[tuple[str, str, bool]] = []
    real = _torch._Engine.bound_refresh

    def spy(self, rows):  # type: ignore[no-untyped-def]
        seen.append(
            (
                torch.backends.cuda.matmul.fp32_precision,
                torch.backends.mkldnn.matmul.fp32_precision,
                torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction,
            )
        )
        return real(self, rows)

    pool = make_pool(10, 400, clusters=3)
    args = (pool.sep, pool.harm, pool.category, pool.embedding)
    kwargs = dict(n_categories=4, n_max=60, weights=(0.5, 0.3, 0.2))
    try:
        torch.set_float32_matmul_precision("medium")
        _torch._Engine.bound_refresh = spy  # type: ignore[method-assign]
        result = _torch.torch_engine(_prepare(*args, **kwargs, initial=None), "cpu", block=4)
        assert torch.get_float32_matmul_precision() == "medium"
        assert torch.backends.mkldnn.matmul.fp32_precision == "bf16"
    finally:
        _torch._Engine.bound_refresh = real  # type: ignore[method-assign]
        torch.set_float32_matmul_precision(before)
    assert seen and set(seen) == {("ieee", "ieee", False)}
    assert_same_picks(reference_greedy_select(*args, **kwargs), result)


@given(
    seed=st.integers(0, 2**31),
    dim=st.sampled_from([1, 7, 64, 768]),
    spread=st.sampled_from(["uniform", "cone", "spiky"]),
)
@settings(max_examples=30, deadline=None)
def test_low_precision_dots_stay_within_the_screen_error(seed: int, dim: int, spread: str) -> None:
    # The bound the engines' screens rest on, against exact float64 dots of quantized rows,
    # with the products the engine runs: float32 GEMMs and float16 GEMMs of unit rows.
    from vlsafety.selection._criteria import quantize_embeddings, screen_error

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(64, dim))
    if spread == "cone":  # nearly parallel rows: dots near 1, the largest magnitudes
        x = 1.0 + 0.01 * x
    elif spread == "spiky":  # tiny coordinates next to large ones (float16 subnormals)
        x[:, 0] += 50.0
    q = quantize_embeddings(x)
    exact = q.astype(np.float64) @ q.astype(np.float64).T
    t = torch.from_numpy(q)
    h = (t * 2.0**-24).half()
    for j in range(0, q.shape[0], 7):  # each row's largest dot with a few others
        others = slice(j, j + 7)
        best = exact[:, others].max(axis=1)
        f32 = _torch._largest_dots(t, t[others]).numpy()
        f16 = _torch._largest_dots(h, h[others]).numpy() * 2.0**48
        # The 2x margin is for threshold arithmetic; the products alone stay within half.
        assert np.abs(f32 - best).max() <= screen_error(dim, "float32") / 2
        assert np.abs(f16 - best).max() <= screen_error(dim, "float16") / 2


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
