"""The three selection criteria of VLSafetyBencher §3.5 and the arithmetic they share.

* separability ``C_sep`` — binary entropy of the harmful-response rate (Eq. 1);
* harmfulness ``C_harm`` — mean judge probability over judges × models (Eq. 2);
* diversity ``C_div`` — category-entropy gain (Eq. 3) plus the cosine distance to the
  closest selected sample (Eq. 4), averaged (Eq. 5).

Two representation choices make every selection engine (the reference loop, the lazy
numpy engine, the torch engine on CPU or CUDA) agree *bit for bit*, which is what lets the
fast engines be tested pick-for-pick against the straightforward algorithm:

1. **Embeddings** are L2-normalized and then rounded to multiples of ``2**-24``
   (:func:`quantize_embeddings`). Every coordinate is then an integer below ``2**24`` in
   units of ``2**-24`` — exact in float32, so the matrix is stored in float32 — and every
   dot product of two such vectors is an integer below ``2**49``, so float64 arithmetic
   computes it *exactly* whatever the summation order, blocking, BLAS kernel or device.
   The rounding moves a cosine by about ``1e-7`` at most, below the precision of CLIP
   embeddings themselves.
2. **Scores** are evaluated on a fixed grid of ``2**-40`` (:func:`to_score_grid`):
   ``C = grid(α·C_sep + β·C_harm + γ/2·cos) + grid(γ/2·ΔH)``. Both terms lie on the grid,
   so the sum is exact; comparisons between candidates are therefore exact, and within a
   category the order of candidates by ``C`` is exactly their order by the first term,
   which is what the per-category heaps of the lazy engine rely on. Two candidates whose
   real-valued scores differ by less than about ``1e-12`` count as tied and the lowest
   index wins, as Algorithm 1's argmax does for exact ties.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "EMBEDDING_BITS",
    "MAX_COSINE_DISTANCE",
    "SCORE_GRID_BITS",
    "c_div_in_order",
    "category_entropy",
    "cosine_distance",
    "delta_entropy",
    "distance_from_dots",
    "harmfulness",
    "quantize_embeddings",
    "quantized_norm_bound",
    "screen_error",
    "separability",
    "to_score_grid",
]

#: Embedding coordinates are rounded to multiples of 2**-EMBEDDING_BITS after normalization.
EMBEDDING_BITS = 24
#: Scores are rounded to multiples of 2**-SCORE_GRID_BITS (see the module docstring).
SCORE_GRID_BITS = 40
#: Cosine distance lies in [0, 2]; an unknown minimum distance is bounded by this.
MAX_COSINE_DISTANCE = 2.0

_EMB_SCALE = float(2**EMBEDDING_BITS)
_DOT_UNSCALE = float(2.0 ** (-2 * EMBEDDING_BITS))
_GRID_SCALE = float(2**SCORE_GRID_BITS)
_GRID_UNSCALE = float(2.0**-SCORE_GRID_BITS)
_NORMALIZE_CHUNK = 2048


def _as_float_array(name: str, values: ArrayLike) -> NDArray[np.float64]:
    arr = np.asarray(values)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise ValueError(f"{name}: expected numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        bad = np.flatnonzero(~np.isfinite(arr.ravel()))
        raise ValueError(
            f"{name}: {bad.size} value(s) are NaN or infinite (first at flat index {bad[0]})"
        )
    return arr


def _check_unit_interval(name: str, arr: NDArray[np.float64]) -> None:
    if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
        bad = np.flatnonzero((arr.ravel() < 0.0) | (arr.ravel() > 1.0))
        raise ValueError(
            f"{name}: {bad.size} value(s) outside [0, 1] "
            f"(first at flat index {bad[0]}: {arr.ravel()[bad[0]]!r})"
        )


def separability(p_h: ArrayLike) -> NDArray[np.float64]:
    """Separability ``C_sep = -p_h log2 p_h - (1 - p_h) log2(1 - p_h)`` (Eq. 1), elementwise.

    ``p_h`` is the share of panel models whose response to the sample is judged harmful.
    The entropy is in bits, so it lies in [0, 1]: 0 when every model agrees
    (``p_h`` ∈ {0, 1}), 1 when the panel is evenly split (``p_h = 0.5``).

    Raises:
        ValueError: ``p_h`` holds NaN/inf or values outside [0, 1].
    """
    p = _as_float_array("p_h", p_h)
    _check_unit_interval("p_h", p)
    q = 1.0 - p
    # 0·log 0 = 0: take the log only where the argument is positive.
    h = np.zeros_like(p)
    pos = p > 0.0
    h[pos] -= p[pos] * np.log2(p[pos])
    pos = q > 0.0
    h[pos] -= q[pos] * np.log2(q[pos])
    return h


def harmfulness(p: ArrayLike) -> NDArray[np.float64]:
    """Harmfulness ``C_harm`` (Eq. 2): mean judge probability per sample.

    Args:
        p: array shaped ``(n_samples, n_judges, n_models)``; ``p[s, i, j]`` is the
            probability that judge ``i`` calls model ``j``'s response to sample ``s``
            harmful.

    Returns:
        ``(n_samples,)`` float64 in [0, 1].

    Raises:
        ValueError: wrong shape, empty judge/model axes, NaN/inf, values outside [0, 1].
    """
    arr = _as_float_array("p", p)
    if arr.ndim != 3:
        raise ValueError(
            f"p: expected shape (n_samples, n_judges, n_models), got {arr.ndim}-d shape {arr.shape}"
        )
    if arr.shape[1] == 0 or arr.shape[2] == 0:
        raise ValueError(f"p: need at least one judge and one model, got shape {arr.shape}")
    _check_unit_interval("p", arr)
    return np.asarray(arr.mean(axis=(1, 2)), dtype=np.float64)


def _xlogx(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """``x ln x`` with ``0 ln 0 = 0`` (counts are >= 0: ln max(x, 1) is 0 where x is 0)."""
    return np.asarray(x * np.log(np.maximum(x, 1.0)), dtype=np.float64)


def category_entropy(counts: ArrayLike) -> float:
    """Category entropy ``H(D_S) = -Σ_c p_c ln p_c`` of a set given its category counts.

    Natural log, consistent with the ``1/log K`` normalization of Eq. 3. An empty set has
    entropy 0.
    """
    n = np.asarray(counts, dtype=np.float64)
    total = float(n.sum())
    if total <= 0.0:
        return 0.0
    return math.log(total) - float(_xlogx(n).sum()) / total


def delta_entropy(counts: ArrayLike, n_categories: int) -> NDArray[np.float64]:
    """Normalized entropy gain ``ΔH(s, D_S)`` (Eq. 3) for a sample of each category.

    ``ΔH = (H({s} ∪ D_S) - H(D_S)) / log K`` depends on the sample only through its
    category, so this returns one value per category: entry ``c`` is the gain of adding
    one sample of category ``c`` to a set with the given category ``counts``. The gain is
    at most 1 and can be negative (adding to an over-represented category lowers the
    entropy).

    Uses ``H = ln M - (Σ n_c ln n_c) / M`` so that all K gains cost O(K).
    """
    if n_categories < 2:
        raise ValueError(
            f"n_categories: must be >= 2 (ΔH is normalized by log K, Eq. 3), got {n_categories}"
        )
    n = np.asarray(counts, dtype=np.float64)
    if n.shape != (n_categories,):
        raise ValueError(f"counts: expected shape ({n_categories},), got {n.shape}")
    # Plain floats: K is small and this runs once per greedy step in every engine.
    values = n.tolist()
    total = math.fsum(values)
    xlx = [x * math.log(x) if x > 0 else 0.0 for x in values]
    s = math.fsum(xlx)
    h_now = math.log(total) - s / total if total > 0 else 0.0
    log_next = math.log(total + 1.0)
    norm = math.log(n_categories)
    gains = [
        ((log_next - (s - v + (x + 1.0) * math.log(x + 1.0)) / (total + 1.0)) - h_now) / norm
        for x, v in zip(values, xlx, strict=True)
    ]
    return np.asarray(gains, dtype=np.float64)


def quantize_embeddings(embedding: ArrayLike) -> NDArray[np.float32]:
    """L2-normalize embeddings and round them to multiples of ``2**-24`` (see module doc).

    Returns the rounded coordinates in units of ``2**-24`` (integers stored exactly in
    float32), shape ``(n, d)``. Float32 input is normalized in float32 (its own
    precision), anything else in float64; work is chunked so a 300K × 768 input never needs
    a full-size temporary.

    Raises:
        ValueError: not 2-d, NaN/inf, or an all-zero row (its direction is undefined).
    """
    arr = np.asarray(embedding)
    if arr.ndim != 2:
        raise ValueError(f"embedding: expected shape (n_samples, dim), got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise ValueError("embedding: dimension is 0")
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise ValueError(f"embedding: expected numbers, got dtype {arr.dtype}")
    work = np.float32 if arr.dtype == np.float32 else np.float64
    out = np.empty(arr.shape, dtype=np.float32)
    for start in range(0, arr.shape[0], _NORMALIZE_CHUNK):
        block: NDArray[np.floating[Any]] = np.asarray(
            arr[start : start + _NORMALIZE_CHUNK], dtype=work
        )
        sq = np.einsum("ij,ij->i", block, block).astype(np.float64)
        if not np.all(np.isfinite(sq)):
            bad = ~np.all(np.isfinite(block), axis=1)
            if bad.any():
                row = start + int(np.flatnonzero(bad)[0])
                raise ValueError(f"embedding: row {row} holds NaN or infinite values")
            # Finite but the float32 sum of squares overflowed: redo those rows in float64.
            over = ~np.isfinite(sq)
            b64 = block[over].astype(np.float64)
            sq[over] = np.einsum("ij,ij->i", b64, b64)
        if np.any(sq == 0.0):
            zero = start + np.flatnonzero(sq == 0.0)
            raise ValueError(
                f"embedding: {zero.size} zero vector(s) in rows {zero[:5].tolist()}"
                f"{'...' if zero.size > 5 else ''}: cosine distance is undefined for them"
            )
        scale = _EMB_SCALE / np.sqrt(sq)
        target = out[start : start + block.shape[0]]
        if work is np.float32:
            np.multiply(block, scale.astype(np.float32)[:, None], out=target)
            np.rint(target, out=target)
        else:
            target[...] = np.rint(block * scale[:, None])
    return out


def quantized_norm_bound(dim: int) -> float:
    """An upper bound on the norm of any row of :func:`quantize_embeddings` (units 2**-24).

    The normalized row has norm at most ``1 + (d+2)·2**-24`` (float32 normalization: the
    sum of squares is within ``d·2**-24`` relative, its square root within half that, the
    scaling within ``2**-24``), and rounding each coordinate moves the row by at most
    ``sqrt(d)/2``.
    """
    return _EMB_SCALE * (1.0 + (dim + 2) * 2.0**-24) + math.sqrt(dim) / 2.0 + 1.0


def screen_error(dim: int, precision: str = "float32") -> float:
    """A bound on the error of one dot product of quantized rows computed in ``precision``.

    In the exact dots' unit (``2**-48``), twice the analysis below so that it also covers
    the float64 threshold arithmetic that uses it. Rows have norm at most ``B``
    (:func:`quantized_norm_bound`).

    * ``"float32"``: the integer rows are exact in float32 and so is every product; the sum
      of ``d`` of them, in any order, is within ``γ·B²`` with ``γ = n·u/(1 - n·u)``,
      ``u = 2**-24`` (``n = d + 2`` also covers the float32 result's own rounding).
    * ``"float16"``: the rows scaled to unit norm (``·2**-24``, exact) are rounded to float16
      (``u = 2**-11``; below the normal range an absolute ``2**-25``), which moves a row by
      ``e ≤ u·B + √d·2**-25`` and a dot by ``e·B + (B + e)·e``; float16 products are exact in
      float32 and their sum is within ``γ·(B + e)²``, with ``γ`` taken at ``u = 2**-23``
      (tensor cores may truncate instead of rounding while they accumulate); a float16 result
      adds ``u·|dot| + 2**-25``. Callers must keep the accumulation in float32 (no
      reduced-precision reductions, see :mod:`._torch`).
    """
    nb = quantized_norm_bound(dim)
    if precision == "float32":
        n = dim + 2
        return 2.0 * n * 2.0**-24 / (1.0 - n * 2.0**-24) * nb**2
    if precision == "float16":
        b = nb / _EMB_SCALE
        u, tiny = 2.0**-11, 2.0**-25
        e = u * b + math.sqrt(dim) * tiny
        bt = b + e
        gamma = dim * 2.0**-23 / (1.0 - dim * 2.0**-23)
        total = e * b + bt * e + gamma * bt * bt + u * bt * bt * (1.0 + gamma) + tiny
        return 2.0 * total * 2.0**48
    raise ValueError(f"precision: expected 'float32' or 'float16', got {precision!r}")


def distance_from_dots(dots: NDArray[np.float64]) -> NDArray[np.float64]:
    """Cosine distance from exact dot products of quantized embeddings (in place).

    ``1 - dots·2**-48``, clamped to [0, 2] (rounding of the unit vectors can push a
    distance a hair outside). The single place where a distance is formed from a dot
    product, so every engine rounds it identically.
    """
    dots *= _DOT_UNSCALE
    np.subtract(1.0, dots, out=dots)
    np.clip(dots, 0.0, MAX_COSINE_DISTANCE, out=dots)
    return dots


def cosine_distance(a: NDArray[np.floating], b: NDArray[np.floating]) -> NDArray[np.float64]:
    """Cosine distance ``1 - E(s)·E(t)`` (Eq. 4) between rows of two quantized matrices.

    ``a`` (m, d) and ``b`` (k, d) come from :func:`quantize_embeddings`. The dot products
    are exact integers in float64 (see module doc), so the result does not depend on how
    the rows are batched — the property the engines' pick-for-pick equality rests on.
    """
    a64 = np.asarray(a, dtype=np.float64)
    b64 = np.asarray(b, dtype=np.float64)
    return distance_from_dots(a64 @ b64.T)


def to_score_grid(x: ArrayLike) -> NDArray[np.float64]:
    """Round scores to the nearest multiple of ``2**-40`` (half to even; see module doc)."""
    return np.rint(np.asarray(x, dtype=np.float64) * _GRID_SCALE) * _GRID_UNSCALE


def c_div_in_order(
    category: ArrayLike,
    embedding: ArrayLike,
    n_categories: int,
) -> NDArray[np.float64]:
    """``C_div`` (Eq. 5) of each sample of an ordered set against the samples before it.

    Entry ``t`` is ``(ΔH(s_t, {s_1..s_{t-1}}) + cos(s_t, {s_1..s_{t-1}})) / 2``; for the
    first sample the set before it is empty, so its ΔH is 0 and its distance term is 1.
    This is the value each sample had when Algorithm 1 picked it, if the order is the
    greedy pick order.
    """
    cat = np.asarray(category)
    if cat.ndim != 1 or not np.issubdtype(cat.dtype, np.integer):
        raise ValueError(f"category: expected a 1-d integer array, got {cat.dtype} {cat.shape}")
    q = quantize_embeddings(embedding)
    if q.shape[0] != cat.shape[0]:
        raise ValueError(f"embedding has {q.shape[0]} rows but category has {cat.shape[0]} entries")
    if cat.size and (cat.min() < 0 or cat.max() >= n_categories):
        raise ValueError(f"category: ids must lie in [0, {n_categories})")
    n = cat.shape[0]
    out = np.empty(n, dtype=np.float64)
    counts = np.zeros(n_categories, dtype=np.int64)
    mind = np.full(n, MAX_COSINE_DISTANCE)
    # Distances block by block over the lower triangle: memory O(block · n), never n × n.
    block = 1024
    for start in range(0, n, block):
        stop = min(n, start + block)
        if start > 0:
            mind[start:stop] = cosine_distance(q[start:stop], q[:start]).min(axis=1)
        d_in = cosine_distance(q[start:stop], q[start:stop])
        for t in range(start, stop):
            if t > start:
                mind[t] = min(mind[t], float(d_in[t - start, : t - start].min()))
            dist = 1.0 if t == 0 else float(mind[t])  # D_S empty: distance term is 1
            dh = float(delta_entropy(counts, n_categories)[cat[t]])
            out[t] = (dh + dist) * 0.5
            counts[cat[t]] += 1
    return out
