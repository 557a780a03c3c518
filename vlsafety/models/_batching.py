"""Batch helpers shared by backends: grouping, chunking, and isolating a failing request."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

__all__ = ["chunked", "error_text", "group_indices", "run_isolated"]

T = TypeVar("T")
R = TypeVar("R")
K = TypeVar("K", bound=Hashable)


def chunked(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """Consecutive slices of at most ``size`` items."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    return [items[i : i + size] for i in range(0, len(items), size)]


def group_indices(keys: Sequence[K]) -> dict[K, list[int]]:
    """Indices grouped by key, in first-seen order (requests that can share one call)."""
    groups: dict[K, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return groups


def error_text(exc: BaseException, limit: int = 500) -> str:
    """``Type: message`` on one line, truncated: what an ``error`` column stores."""
    msg = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_isolated(
    fn: Callable[[Sequence[T]], list[R]],
    items: Sequence[T],
    on_error: Callable[[BaseException], R],
) -> list[R]:
    """``fn(items)``; if the batch call raises, retry each item alone so one bad request
    (a corrupt image, an over-long prompt) fails only itself, recorded via ``on_error``."""
    try:
        out = fn(items)
        if len(out) != len(items):
            raise RuntimeError(f"backend returned {len(out)} results for {len(items)} requests")
        return out
    except Exception as batch_exc:
        if len(items) == 1:
            return [on_error(batch_exc)]
    results: list[R] = []
    for item in items:
        try:
            (one,) = fn([item])
        except Exception as exc:
            one = on_error(exc)
        results.append(one)
    return results
