"""Arrow columns as numpy arrays, straight from the buffers.

The driver may receive the selector's inputs (DESIGN "Scale-out rules"), but as
contiguous numpy arrays, never as Python lists: a 768-d vector is 3 KB as float32 and
about 25 KB as a list of Python floats.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

__all__ = ["vectors"]


def vectors(
    data: pa.Table | pa.Array | pa.ChunkedArray, column: str | None = None, dtype: Any = np.float32
) -> np.ndarray:
    """A list<float> column as a contiguous (n, d) array read from the Arrow buffers.

    Every row must hold the same number d of values (no nulls); anything else is a
    ``ValueError`` naming the column.
    """
    name = column or "vectors"
    col = data.column(column) if isinstance(data, pa.Table) else data
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(arr)
    if n == 0:
        return np.zeros((0, 0), dtype=dtype)
    if arr.null_count:
        raise ValueError(f"{name}: {arr.null_count} null vector(s)")
    lengths = np.diff(arr.offsets.to_numpy())
    d = int(lengths[0])
    if not (lengths == d).all():
        raise ValueError(
            f"{name}: vectors of different lengths ({sorted(set(lengths.tolist()))[:5]})"
        )
    flat = arr.flatten().to_numpy(zero_copy_only=False)  # the values this slice covers
    return np.ascontiguousarray(flat.reshape(n, d), dtype=dtype)
