"""Input checks shared by the metrics: every bad input is a ValueError naming the argument."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


def as_finite(
    name: str, values: ArrayLike, *, ndim: int | tuple[int, ...] | None = None
) -> NDArray[np.float64]:
    """``values`` as float64, checked to be numeric, finite and (optionally) of given rank."""
    arr = np.asarray(values)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise ValueError(f"{name}: expected numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if arr.ndim not in allowed:
            raise ValueError(
                f"{name}: expected a {' or '.join(f'{d}-d' for d in allowed)} array, "
                f"got shape {arr.shape}"
            )
    if not np.all(np.isfinite(arr)):
        i = int(np.flatnonzero(~np.isfinite(arr.ravel()))[0])
        raise ValueError(f"{name}: value at flat index {i} is NaN or infinite")
    return arr


def check_range(name: str, arr: NDArray[np.float64], lo: float, hi: float) -> None:
    """Raise unless every value of ``arr`` lies in ``[lo, hi]``."""
    if arr.size and (arr.min() < lo or arr.max() > hi):
        flat = arr.ravel()
        i = int(np.flatnonzero((flat < lo) | (flat > hi))[0])
        raise ValueError(
            f"{name}: values must lie in [{lo:g}, {hi:g}]; flat index {i} holds {flat[i]!r}"
        )


def as_binary(
    name: str, values: ArrayLike, *, ndim: int | tuple[int, ...] | None = None
) -> NDArray[np.float64]:
    """Flags as float64 0/1, accepting bool or numbers that are exactly 0 or 1."""
    arr = as_finite(name, values, ndim=ndim)
    if arr.size and not np.all((arr == 0.0) | (arr == 1.0)):
        flat = arr.ravel()
        i = int(np.flatnonzero((flat != 0.0) & (flat != 1.0))[0])
        raise ValueError(f"{name}: expected 0/1 or bool flags; flat index {i} holds {flat[i]!r}")
    return arr


def non_empty(name: str, arr: NDArray[np.float64]) -> None:
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: is empty")
