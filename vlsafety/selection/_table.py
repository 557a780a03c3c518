"""Arrow table adapter for the ``vlsafety select`` command.

Reads a scored table (one row per candidate sample), runs Algorithm 1 (``greedy``) or the
ELITE filter (``elite-filter``), and returns the selected rows plus a JSON-friendly
summary. Rows that cannot take part (a null embedding, a probability outside [0, 1], an
unknown category, a duplicate id, ...) are not dropped silently: each becomes a reject
record ``{"sample_id", "reason", "detail"}`` in ``summary["rejects"]``, and in
``elite-filter`` mode so does every pair the filter drops. ``n_input = n_selected +
n_not_selected + n_rejected`` always holds.

Input columns:

* ``sample_id`` (string or int), ``category`` (string) — always;
* ``greedy``: ``embedding`` (list<float>), separability from ``p_h`` (double) or from
  ``harmful`` (list<bool|double>, one entry per panel model: ``p_h`` is their mean), and
  harmfulness from ``harm`` (double) or ``judge_probs`` (list<double>, the flattened
  ``n_judges × n_models`` judge probabilities: ``C_harm`` is their mean, Eq. 2). When both
  forms are present the scalar column wins, and the summary says which was used;
* ``elite-filter``: ``elite_scores`` (list<double>, one ELITE score per panel model);
  ``source`` (string, the benchmark a pair comes from) when ``max_source_share`` is set.

``elite-filter`` mode keeps what the ELITE filter keeps (ELITE §3.4 has no N_max); only
an explicit ``n_max`` cuts the kept pairs to the highest combined ELITE scores.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from vlsafety.metrics import ELITE_THRESHOLD, benchmark_quality
from vlsafety.selection._criteria import quantize_embeddings, separability
from vlsafety.selection._elite import elite_filter
from vlsafety.selection._greedy import DEFAULT_WEIGHTS, _prepare, _run

__all__ = ["OUTPUT_COLUMNS", "ColumnSource", "DatasetColumn", "RowSubset", "select_table"]

#: Rows moved per step when compacting the quantized matrix in place.
_COMPACT_BLOCK = 4096

#: Columns ``select_table`` adds to the selected rows.
OUTPUT_COLUMNS = ("rank", "score", "c_sep", "c_harm", "c_div")


@dataclass
class _Rejects:
    """Row-level problems found while reading the table (first problem per row wins)."""

    n: int
    reason: list[str | None] = field(default_factory=list)
    detail: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.reason = [None] * self.n
        self.detail = [None] * self.n

    def flag(self, rows: NDArray[np.bool_], reason: str, detail: str | Sequence[str]) -> None:
        for k, i in enumerate(np.flatnonzero(rows).tolist()):
            if self.reason[i] is None:
                self.reason[i] = reason
                self.detail[i] = detail if isinstance(detail, str) else detail[k]

    @property
    def ok(self) -> NDArray[np.bool_]:
        return np.array([r is None for r in self.reason], dtype=bool)


def _column(table: pa.Table, name: str) -> pa.Array:
    col = table.column(name)
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _require(table: pa.Table, names: Sequence[str], why: str) -> None:
    missing = [n for n in names if n not in table.column_names]
    if missing:
        raise ValueError(
            f"input table: missing column(s) {missing} ({why}); it has {table.column_names}"
        )


def _scalar_column(table: pa.Table, name: str) -> NDArray[np.float64]:
    arr = _column(table, name)
    if not (
        pa.types.is_floating(arr.type)
        or pa.types.is_integer(arr.type)
        or pa.types.is_boolean(arr.type)
    ):
        raise ValueError(f"column {name!r}: expected a numeric column, got {arr.type}")
    return np.asarray(pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def _check_list_type(name: str, t: pa.DataType) -> None:
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
        raise ValueError(f"column {name!r}: expected a list column, got {t}")
    value_type = t.value_type
    if not (
        pa.types.is_floating(value_type)
        or pa.types.is_integer(value_type)
        or pa.types.is_boolean(value_type)
    ):
        raise ValueError(f"column {name!r}: expected a list of numbers, got {t}")


def _list_lengths(arr: pa.Array) -> NDArray[np.int64]:
    """Row lengths of a list array; -1 for a null row."""
    raw = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
    return np.where(np.isnan(raw.astype(np.float64)), -1, raw).astype(np.int64)


@dataclass
class _Embeddings:
    """The embedding column, quantized row by row (:func:`quantize_embeddings`)."""

    q: NDArray[np.float32]  # (n, width); zero rows where a row is unusable
    lengths: NDArray[np.int64]  # -1 for null
    finite: NDArray[np.bool_]  # rows of the common width with only finite entries
    nonzero: NDArray[np.bool_]  # ... and not all zero

    @property
    def width(self) -> int:
        return int(self.q.shape[1])


class ColumnSource(Protocol):
    """A list column kept out of the input table (the embeddings of a large pool).

    ``batches()`` yields the column in the table's row order, a chunk at a time, and may be
    called again; ``take(rows)`` returns the given rows, in the given order.
    """

    def batches(self) -> Iterator[pa.Array]: ...

    def take(self, rows: NDArray[np.int64]) -> pa.Array: ...


@dataclass(frozen=True)
class DatasetColumn:
    """One column of a pyarrow dataset as a :class:`ColumnSource` (a Delta version's files,
    a parquet file): read batch by batch, never whole."""

    dataset: Any  # pyarrow.dataset.Dataset
    column: str
    batch_size: int = 8192

    def batches(self) -> Iterator[pa.Array]:
        # no read-ahead: one decoded row group at a time, whatever the pool's size
        for batch in self.dataset.to_batches(
            columns=[self.column],
            batch_size=self.batch_size,
            batch_readahead=1,
            fragment_readahead=1,
        ):
            yield batch.column(0)

    def take(self, rows: NDArray[np.int64]) -> pa.Array:
        """The rows in the given order, picked from one pass over :meth:`batches`
        (``Dataset.take`` decodes every fragment it touches at once)."""
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        wanted = rows[order]
        parts: list[pa.Array] = []
        pos = done = 0
        for chunk in self.batches():
            if done == wanted.size:
                break
            upto = int(np.searchsorted(wanted, pos + len(chunk), side="left"))
            if upto > done:
                parts.append(chunk.take(pa.array(wanted[done:upto] - pos, type=pa.int64())))
                done = upto
            pos += len(chunk)
        if done != wanted.size:
            raise IndexError(f"{self.column}: row {int(wanted[done])} is past the end ({pos})")
        kind = self.dataset.schema.field(self.column).type
        picked = pa.concat_arrays(parts) if parts else pa.array([], type=kind)
        back = np.empty(order.size, dtype=np.int64)
        back[order] = np.arange(order.size)
        return picked.take(pa.array(back, type=pa.int64()))


@dataclass(frozen=True)
class RowSubset:
    """A :class:`ColumnSource` restricted to the rows ``keep`` (ascending positions):
    the column of a table after rows were filtered out of it."""

    source: ColumnSource
    keep: NDArray[np.int64]

    def batches(self) -> Iterator[pa.Array]:
        pos = done = 0
        for chunk in self.source.batches():
            upto = int(np.searchsorted(self.keep, pos + len(chunk), side="left"))
            if upto > done:
                yield chunk.take(pa.array(self.keep[done:upto] - pos, type=pa.int64()))
                done = upto
            pos += len(chunk)

    def take(self, rows: NDArray[np.int64]) -> pa.Array:
        return self.source.take(self.keep[np.asarray(rows, dtype=np.int64)])


def _embeddings(chunks: Callable[[], Iterable[pa.Array]], n: int, name: str) -> _Embeddings:
    """Read ``name`` (list of numbers) chunk by chunk straight into one quantized float32
    matrix: the chunks are never combined and no raw (n, d) copy is made, so the driver
    holds one chunk and the selector's matrix (300K x 768: 0.9 GB). The common width is
    the most frequent row length; it is guessed from the first chunk and, in the rare case
    the whole column disagrees, the column is read a second time. Rows of another length,
    null, non-finite or all-zero stay zero and are flagged for the caller to reject;
    quantization is row-wise, so the usable rows equal ``quantize_embeddings`` of the raw
    matrix."""
    lengths = np.full(n, -1, dtype=np.int64)
    finite = np.zeros(n, dtype=bool)
    nonzero = np.zeros(n, dtype=bool)
    width: int | None = None
    q = np.zeros((n, 0), dtype=np.float32)
    for attempt in range(2):
        pos = 0
        for chunk in chunks():
            _check_list_type(name, chunk.type)
            m = len(chunk)
            if pos + m > n:
                raise ValueError(f"column {name!r}: more rows than the table's {n}")
            lens = _list_lengths(chunk)
            lengths[pos : pos + m] = lens
            if width is None:
                positive = lens[lens > 0]
                width = int(np.bincount(positive).argmax()) if positive.size else 0
                q = np.zeros((n, width), dtype=np.float32)
            good = lens == width if width else np.zeros(m, dtype=bool)
            if good.any():
                flat = chunk.flatten()  # the values this chunk covers, zero-copy
                if flat.type != pa.float32():
                    flat = pc.cast(flat, pa.float32())
                vals = np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float32)
                block = (
                    vals.reshape(m, width)
                    if good.all()
                    else vals[np.repeat(good, np.maximum(lens, 0))].reshape(-1, width)
                )
                rows = pos + np.flatnonzero(good)
                fin = np.all(np.isfinite(block), axis=1)
                nz = fin & np.any(block != 0, axis=1)
                finite[rows] = fin
                nonzero[rows] = nz
                if nz.all():
                    q[rows] = quantize_embeddings(block)
                elif nz.any():
                    q[rows[nz]] = quantize_embeddings(block[nz])
            pos += m
        if pos != n:
            raise ValueError(f"column {name!r}: {pos} rows, the table has {n}")
        positive = lengths[lengths > 0]
        mode = int(np.bincount(positive).argmax()) if positive.size else 0
        if attempt == 0 and mode != (width or 0):
            width = mode  # the first chunk was not typical: read again at the right width
            q = np.zeros((n, width), dtype=np.float32)
            finite[:] = False
            nonzero[:] = False
            continue
        break
    return _Embeddings(q, lengths, finite, nonzero)


def _compact_rows(q: NDArray[np.float32], keep: NDArray[np.int64]) -> NDArray[np.float32]:
    """``q[keep]`` for sorted ``keep``, moved to the front of ``q`` in place (a view): no
    second (n, d) matrix. Safe block by block because ``keep[i] >= i``."""
    for start in range(0, keep.size, _COMPACT_BLOCK):
        end = min(start + _COMPACT_BLOCK, keep.size)
        q[start:end] = q[keep[start:end]]
    return q[: keep.size]


def _take_rows(table: pa.Table, order: NDArray[np.int64]) -> pa.Table:
    """``table.take(order)`` batch by batch: Table.take concatenates a chunked column
    first, a full copy of a 300K x 768 embedding column to keep a few thousand rows."""
    batches = table.to_batches()
    if order.size == 0 or not batches:
        return table.schema.empty_table() if order.size == 0 else table.take(order)
    starts = np.cumsum([0] + [b.num_rows for b in batches])
    which = np.searchsorted(starts, order, side="right") - 1
    parts: list[pa.RecordBatch] = []
    where: list[NDArray[np.int64]] = []
    for c in np.unique(which).tolist():
        sel = np.flatnonzero(which == c)
        parts.append(batches[c].take(pa.array(order[sel] - starts[c], type=pa.int64())))
        where.append(sel)
    picked = pa.Table.from_batches(parts, schema=table.schema).combine_chunks()
    back = np.empty(order.size, dtype=np.int64)
    back[np.concatenate(where)] = np.arange(order.size)
    return picked.take(pa.array(back, type=pa.int64()))


def _list_column(
    table: pa.Table, name: str, dtype: type[np.floating[Any]] = np.float64
) -> tuple[NDArray[np.floating[Any]], NDArray[np.int64]]:
    """A list column as an ``(n, width)`` matrix (NaN rows where unusable) and row lengths.

    ``width`` is the most common non-zero length; rows of another length (or null) get
    NaN rows and their length is returned for the caller to reject them.
    """
    arr = _column(table, name)
    _check_list_type(name, arr.type)
    n = len(arr)
    lengths = _list_lengths(arr)
    positive = lengths[lengths > 0]
    if positive.size == 0:
        return np.full((n, 0), np.nan, dtype=dtype), lengths
    width = int(np.bincount(positive).argmax())
    flat = pc.list_flatten(arr)
    target = pa.float32() if dtype is np.float32 else pa.float64()
    values = np.asarray(pc.cast(flat, target).to_numpy(zero_copy_only=False), dtype=dtype)
    good = lengths == width
    if good.all():
        return values.reshape(n, width), lengths
    # Keep the values of well-formed rows (no n × width index array: 300K × 768 is big).
    out = np.full((n, width), np.nan, dtype=dtype)
    out[good] = values[np.repeat(good, np.maximum(lengths, 0))].reshape(-1, width)
    return out, lengths


def _check_list(
    rejects: _Rejects,
    name: str,
    matrix: NDArray[np.floating[Any]],
    lengths: NDArray[np.int64],
    lo: float,
    hi: float,
) -> None:
    rejects.flag(lengths <= 0, f"missing_{name}", f"{name} is null or empty")
    width = matrix.shape[1]
    rejects.flag(
        (lengths > 0) & (lengths != width),
        f"bad_{name}_size",
        [
            f"{name} has {k} entries, the table's other rows {width}"
            for k in lengths[(lengths > 0) & (lengths != width)].tolist()
        ],
    )
    usable = lengths == width
    with np.errstate(invalid="ignore"):
        bad = usable & ~np.all(np.isfinite(matrix), axis=1)
        rejects.flag(bad, f"invalid_{name}", f"{name} holds null, NaN or infinite entries")
        out = usable & ~bad & ((matrix < lo) | (matrix > hi)).any(axis=1)
    rejects.flag(out, f"invalid_{name}", f"{name} entries must lie in [{lo:g}, {hi:g}]")


def _check_scalar(
    rejects: _Rejects, name: str, values: NDArray[np.float64], lo: float, hi: float
) -> None:
    rejects.flag(np.isnan(values), f"missing_{name}", f"{name} is null or NaN")
    with np.errstate(invalid="ignore"):
        bad = ~np.isnan(values) & ((values < lo) | (values > hi) | ~np.isfinite(values))
    rejects.flag(
        bad,
        f"invalid_{name}",
        [f"{name} = {v!r} is outside [{lo:g}, {hi:g}]" for v in values[bad].tolist()],
    )


def select_table(
    table: pa.Table,
    *,
    n_max: int | None,
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    mode: Literal["greedy", "elite-filter"] = "greedy",
    n_categories: int | None = None,
    category_names: Sequence[str] | None = None,
    threshold: float = ELITE_THRESHOLD,
    min_votes: int | float = 2,
    single_model_exception: float | None = None,
    per_category_cap: int | None = None,
    max_source_share: float | None = None,
    device: Any = None,
    embeddings: ColumnSource | None = None,
) -> tuple[pa.Table, dict[str, Any]]:
    """Select a benchmark from a scored table.

    Args:
        table: the scored pool (columns: see the module docstring).
        n_max: benchmark size. ``greedy``: N_max of Algorithm 1 (required).
            ``elite-filter``: None keeps every pair the filter keeps; a number takes the
            kept pairs with the highest combined ELITE score up to ``n_max`` and reports
            the rest with reason ``n_max``.
        weights: ``(α, β, γ)`` for ``greedy``.
        mode: ``"greedy"`` (VLSafetyBencher Algorithm 1) or ``"elite-filter"`` (ELITE §3.4).
        n_categories: taxonomy size K, when it is larger than the categories present.
        category_names: the taxonomy's category names, in id order; K is their count and a
            row with another category is rejected (``unknown_category``). Without it, ids
            follow the sorted distinct names present.
        threshold, min_votes, single_model_exception, per_category_cap,
            max_source_share: ELITE filter settings (see :func:`elite_filter`); the
            source balancing reads the ``source`` column.
        device: selection engine (see :func:`greedy_select`).
        embeddings: the ``embedding`` column kept out of ``table`` (a large pool: see
            :class:`DatasetColumn`), in ``table``'s row order. It is read chunk by chunk
            into the selector's matrix, and only the selected rows are read back into the
            output (placed after the input's columns). ``table`` must not also have one.

    Returns:
        ``(selected, summary)``: the selected rows in rank order with the input's columns
        plus ``rank`` (1-based), ``score``, ``c_sep``, ``c_harm``, ``c_div`` (in
        ``elite-filter`` mode ``score`` is the combined ELITE score and the criteria
        columns are filled only where the table has them, ``c_div`` is null); and a
        JSON-friendly summary: mode, counts, K and names, weights, metrics, per-category
        counts, timing, reject counts and the reject records.

    Raises:
        ValueError: a missing or mistyped column, an invalid setting, or a category
            count that contradicts the names.
    """
    t0 = time.perf_counter()
    if not isinstance(table, pa.Table):
        raise ValueError(f"table: expected a pyarrow.Table, got {type(table).__name__}")
    if mode not in ("greedy", "elite-filter"):
        raise ValueError(f"mode: expected 'greedy' or 'elite-filter', got {mode!r}")
    if n_max is None and mode == "greedy":
        raise ValueError("n_max: greedy mode needs a benchmark size (a positive int)")
    if n_max is not None and (isinstance(n_max, bool) or not isinstance(n_max, int) or n_max < 1):
        raise ValueError(f"n_max: expected a positive int, got {n_max!r}")
    clash = [c for c in OUTPUT_COLUMNS if c in table.column_names]
    if clash:
        raise ValueError(f"input table: already has output column(s) {clash}; drop or rename them")
    _require(table, ["sample_id", "category"], "needed in every mode")
    if embeddings is not None and "embedding" in table.column_names:
        raise ValueError("input table: has an 'embedding' column and embeddings were given")
    n = table.num_rows
    rejects = _Rejects(n)

    ids = _column(table, "sample_id")
    id_null = np.asarray(ids.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    rejects.flag(id_null, "missing_sample_id", "sample_id is null")
    id_values = ids.to_pylist()
    seen: set[Any] = set()
    dup = np.zeros(n, dtype=bool)
    for i, v in enumerate(id_values):
        if v is None:
            continue
        if v in seen:
            dup[i] = True
        seen.add(v)
    rejects.flag(dup, "duplicate_sample_id", "sample_id already seen in an earlier row")

    cat_arr = _column(table, "category")
    if not (pa.types.is_string(cat_arr.type) or pa.types.is_large_string(cat_arr.type)):
        raise ValueError(f"column 'category': expected strings, got {cat_arr.type}")
    cat_values = cat_arr.to_pylist()
    rejects.flag(
        np.array([c is None for c in cat_values], dtype=bool),
        "missing_category",
        "category is null",
    )
    if category_names is not None:
        names = [str(x) for x in category_names]
        if len(set(names)) != len(names) or len(names) < 2:
            raise ValueError("category_names: expected at least 2 distinct names")
        if n_categories is not None and n_categories != len(names):
            raise ValueError(f"n_categories={n_categories} contradicts {len(names)} category_names")
        known = set(names)
        unknown = np.array([c is not None and c not in known for c in cat_values], dtype=bool)
        rejects.flag(
            unknown,
            "unknown_category",
            [
                f"category {c!r} is not in the taxonomy"
                for c, u in zip(cat_values, unknown, strict=True)
                if u
            ],
        )
    else:
        names = sorted({c for c in cat_values if c is not None})

    sources: dict[str, str] = {}
    if mode == "greedy":
        if embeddings is not None:
            emb = _embeddings(embeddings.batches, n, "embedding")
        else:
            _require(table, ["embedding"], "greedy mode needs embeddings")
            col = table.column("embedding")
            emb = _embeddings(lambda: col.chunks, n, "embedding")
        emb_len = emb.lengths
        rejects.flag(emb_len <= 0, "missing_embedding", "embedding is null or empty")
        mismatch = (emb_len > 0) & (emb_len != emb.width)
        rejects.flag(
            mismatch,
            "bad_embedding_dim",
            [
                f"embedding has {k} dims, the table's other rows {emb.width}"
                for k in emb_len[mismatch].tolist()
            ],
        )
        usable = (emb_len == emb.width) & (emb_len > 0)
        finite = emb.finite
        rejects.flag(
            usable & ~finite, "nonfinite_embedding", "embedding holds null, NaN or infinite entries"
        )
        zero = usable & finite & ~emb.nonzero
        rejects.flag(zero, "zero_embedding", "embedding is the zero vector (no direction)")

        if "p_h" in table.column_names:
            p_h = _scalar_column(table, "p_h")
            _check_scalar(rejects, "p_h", p_h, 0.0, 1.0)
            sources["p_h"] = "p_h"
        elif "harmful" in table.column_names:
            flags, lengths = _list_column(table, "harmful")
            _check_list(rejects, "harmful", flags, lengths, 0.0, 1.0)
            with np.errstate(invalid="ignore"):
                p_h = flags.mean(axis=1) if flags.shape[1] else np.full(n, np.nan)
            sources["p_h"] = f"harmful (mean over {flags.shape[1]} panel models)"
        else:
            raise ValueError(
                "input table: greedy mode needs a 'p_h' column or a 'harmful' list column "
                f"(separability, Eq. 1); it has {table.column_names}"
            )
        if "harm" in table.column_names:
            harm = _scalar_column(table, "harm")
            _check_scalar(rejects, "harm", harm, 0.0, 1.0)
            sources["harm"] = "harm"
        elif "judge_probs" in table.column_names:
            probs, lengths = _list_column(table, "judge_probs")
            _check_list(rejects, "judge_probs", probs, lengths, 0.0, 1.0)
            with np.errstate(invalid="ignore"):
                harm = probs.mean(axis=1) if probs.shape[1] else np.full(n, np.nan)
            sources["harm"] = f"judge_probs (mean over {probs.shape[1]} judge x model entries)"
        else:
            raise ValueError(
                "input table: greedy mode needs a 'harm' column or a 'judge_probs' list column "
                f"(harmfulness, Eq. 2); it has {table.column_names}"
            )
    else:
        _require(table, ["elite_scores"], "elite-filter mode needs per-panel ELITE scores")
        elite, lengths = _list_column(table, "elite_scores")
        _check_list(rejects, "elite_scores", elite, lengths, 0.0, 25.0)
        source_values: list[Any] = []
        if max_source_share is not None:
            _require(table, ["source"], "elite-filter source balancing (max_source_share)")
            source_values = _column(table, "source").to_pylist()
            rejects.flag(
                np.array([v is None for v in source_values], dtype=bool),
                "missing_source",
                "source is null (needed by the source balancing)",
            )

    ok = rejects.ok
    valid = np.flatnonzero(ok)
    k = len(names) if n_categories is None else int(n_categories)
    present = sorted({cat_values[i] for i in valid.tolist()})
    if category_names is None and n_categories is not None and n_categories < len(present):
        raise ValueError(
            f"n_categories={n_categories} but the table has {len(present)} categories: {present}"
        )
    name_to_id = {name: i for i, name in enumerate(names)}
    cat_ids = np.array([name_to_id[cat_values[i]] for i in valid.tolist()], dtype=np.int64)

    summary: dict[str, Any] = {
        "mode": mode,
        "n_input": n,
        "n_valid": int(valid.size),
        "n_max": n_max,
        "n_categories": k,
        "category_names": names,
        "inputs": sources,
    }
    extra: dict[str, NDArray[Any]] = {}
    not_selected_rejects: list[tuple[int, str, str]] = []
    if mode == "greedy":
        if valid.size == 0:
            order = np.zeros(0, dtype=np.int64)
            result = None
        else:
            c_sep_all = separability(p_h[valid])
            # greedy_select on the matrix quantized while reading (no second copy)
            assert n_max is not None  # checked above for greedy mode
            prep = _prepare(
                c_sep_all,
                harm[valid],
                cat_ids,
                None,
                n_categories=k,
                n_max=min(n_max, int(valid.size)),
                weights=weights,
                initial=None,
                quantized=emb.q if valid.size == n else _compact_rows(emb.q, valid),
            )
            del emb
            result = _run(prep, device)
            order = valid[result.indices]
        summary["weights"] = [float(w) for w in weights]
        if result is not None and len(result):
            extra = {
                "score": result.score,
                "c_sep": result.c_sep,
                "c_harm": result.c_harm,
                "c_div": result.c_div,
            }
            metrics: dict[str, Any] = {
                "div": float(result.c_div.mean()),
                "mean_score": float(result.score.mean()),
                "mean_c_sep": float(result.c_sep.mean()),
                "mean_c_harm": float(result.c_harm.mean()),
            }
            if "harmful" in table.column_names and sources["p_h"] != "p_h":
                panel = flags[order]
                if panel.shape[1] >= 2:
                    metrics["panel"] = benchmark_quality(panel.mean(axis=0))
            summary["metrics"] = metrics
            summary["timing"] = {"engine": result.engine, "select_seconds": result.seconds}
        else:
            summary["metrics"] = {}
            summary["timing"] = {}
    else:
        filtered = elite_filter(
            elite[valid],
            cat_ids,
            threshold=threshold,
            min_votes=min_votes,
            single_model_exception=single_model_exception,
            per_category_cap=per_category_cap,
            source=[str(source_values[i]) for i in valid.tolist()] if source_values else None,
            max_source_share=max_source_share,
        )
        for j, reason, detail in zip(
            filtered.dropped.tolist(), filtered.reasons, filtered.details, strict=True
        ):
            not_selected_rejects.append((int(valid[j]), reason, detail))
        kept = filtered.kept
        ranked = kept[np.lexsort((kept, -filtered.combined[kept]))]
        if n_max is not None:
            for j in ranked[n_max:].tolist():
                not_selected_rejects.append(
                    (
                        int(valid[j]),
                        "n_max",
                        f"combined ELITE score {filtered.combined[j]:g} below the {n_max} best",
                    )
                )
            ranked = ranked[:n_max]
        order = valid[ranked]
        score = filtered.combined[ranked]
        extra = {"score": score}
        # Criteria where the table carries them; otherwise null.
        extra["c_sep"] = np.full(order.size, np.nan)
        extra["c_harm"] = np.full(order.size, np.nan)
        if "p_h" in table.column_names:
            p = _scalar_column(table, "p_h")[order]
            with np.errstate(invalid="ignore"):
                good = (p >= 0) & (p <= 1)
            extra["c_sep"][good] = separability(p[good])
        if "harm" in table.column_names:
            extra["c_harm"] = _scalar_column(table, "harm")[order]
        extra["c_div"] = np.full(order.size, np.nan)
        summary["elite"] = {
            "threshold": float(threshold),
            "min_votes": min_votes,
            "votes_needed": filtered.votes_needed,
            "single_model_exception": single_model_exception,
            "per_category_cap": per_category_cap,
            "max_source_share": max_source_share,
            "n_max": n_max,
            "n_kept_by_filter": int(kept.size),
            "n_single_model_exception": int(filtered.by_exception[kept].sum()),
            "filter_reasons": filtered.reason_counts(),
        }
        summary["metrics"] = {
            "mean_combined_elite": float(score.mean()) if score.size else float("nan")
        }
        summary["timing"] = {}

    selected = _take_rows(table, order)
    if embeddings is not None:
        taken = embeddings.take(order)
        if len(taken) != order.size:
            raise ValueError(f"embeddings.take: {len(taken)} rows for {order.size} asked")
        selected = selected.append_column("embedding", taken)
    selected = selected.append_column(
        "rank", pa.array(np.arange(1, order.size + 1, dtype=np.int64))
    )
    for name in ("score", "c_sep", "c_harm", "c_div"):
        values = extra.get(name, np.full(order.size, np.nan))
        selected = selected.append_column(
            name, pa.array(values.astype(np.float64), type=pa.float64(), from_pandas=True)
        )

    reject_records = [
        {"sample_id": id_values[i], "reason": rejects.reason[i], "detail": rejects.detail[i]}
        for i in np.flatnonzero(~ok).tolist()
    ]
    reject_records += [
        {"sample_id": id_values[i], "reason": reason, "detail": detail}
        for i, reason, detail in not_selected_rejects
    ]
    selected_cats = [cat_values[i] for i in order.tolist()]
    summary.update(
        {
            "n_selected": int(order.size),
            "n_rejected": len(reject_records),
            "n_not_selected": n - int(order.size) - len(reject_records),
            "per_category": dict(sorted(Counter(selected_cats).items())),
            "reject_counts": dict(sorted(Counter(r["reason"] for r in reject_records).items())),
            "rejects": reject_records,
        }
    )
    summary.setdefault("timing", {})["total_seconds"] = time.perf_counter() - t0
    return selected, summary
