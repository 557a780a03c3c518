"""The three dedup levels on executors (vlsafetybencher.txt §3.2; DESIGN "Scale-out rules").

Same rules as the reference :func:`vlsafety.preprocess.deduplicate` (numpy, one
process), laid out for Spark so that no row-level data reaches the driver:

1. **exact** — a window over the exact key (normalized image id, normalized prompt):
   the first row by (existing first, sample id) represents the group. Pure Spark.
2. **near** — band keys computed in executors: 16 MinHash bands of the prompt key for
   samples with a prompt (a near pair must have near prompts), the pigeonhole split of
   the 64-bit pHash into ``radius + 1`` exact bands for samples without one. Rows that
   share a band key form a candidate group (a Spark shuffle); each group is verified in
   an executor task with the full rule (64-bit pHash radius, 256-bit fine radius,
   estimated MinHash Jaccard). Only verified pairs reach the driver.
3. **semantic** — k-means centroids trained on a sample on the driver (faiss), cluster
   assignment (a point joins every cluster within the exactness margin, at most
   ``max_assign``) in executors, blocked pairwise cosine inside each cluster in executor
   tasks. Only pairs reach the driver.

The driver then joins each level's pairs into groups (:func:`resolve_groups`, union-find
over the pairs only) and picks the representative by the reference's ranks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vlsafety.arrays import vectors
from vlsafety.preprocess._dedup import (
    UnionFind,
    _balanced_centroids,
    _pairs_in,
    _projection,
    _single_threaded_blas,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

__all__ = [
    "NEAR_PHASH_BAND_BASE",
    "SemanticPlan",
    "assign_clusters",
    "band_keys",
    "exact_level",
    "fixed_binary",
    "near_pairs",
    "phash_bands",
    "phash_multi_bands",
    "resolve_groups",
    "semantic_pairs_spark",
    "semantic_plan",
    "vectors_numpy",
]

#: Band index offset of the pHash bands (MinHash bands use 0..bands-1).
NEAR_PHASH_BAND_BASE = 1000

_FNV = np.uint64(0x100000001B3)


def band_keys(signatures: np.ndarray, bands: int) -> np.ndarray:
    """(n, bands) int64 keys: band b hashes signature slots ``b*r .. b*r + r - 1``
    (r = num_perm // bands). Two signatures share band b's key iff those r slots are
    equal (up to 64-bit hash collisions, which only add candidates: every candidate is
    verified)."""
    sig = np.asarray(signatures, dtype=np.uint64)
    n, perms = sig.shape
    r = perms // bands
    if r < 1:
        raise ValueError(f"{bands} bands need at least {bands} MinHash permutations")
    out = np.empty((n, bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for b in range(bands):
            h = np.full(n, np.uint64(0xCBF29CE484222325), dtype=np.uint64)
            for s in range(b * r, (b + 1) * r):
                h = (h ^ sig[:, s]) * _FNV
            out[:, b] = h
    return out.view(np.int64)


def phash_bands(phash: np.ndarray, radius: int) -> np.ndarray:
    """(n, radius + 1) int64: the 64-bit pHash split into ``radius + 1`` contiguous bands.
    Two hashes within ``radius`` bits agree exactly on at least one band (pigeonhole)."""
    from vlsafety.preprocess._dedup import _band_layout

    h = np.asarray(phash, dtype=np.uint64)
    out = np.empty((len(h), radius + 1), dtype=np.int64)
    for b, (shift, width) in enumerate(_band_layout(radius + 1)):
        out[:, b] = ((h >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int64)
    return out


def phash_multi_bands(
    phash: np.ndarray, radius: int, flips: int, *, query: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Keys of a multi-index search within ``radius`` bits of the 64-bit pHash, for a
    join of a small query side against a large indexed side.

    The hash is split into ``m = ceil((radius + 1) / (flips + 1))`` contiguous bands, so
    two hashes within ``radius`` bits differ in at most ``flips`` bits of some band
    (pigeonhole: ``m * (flips + 1) > radius``). The indexed side (``query=False``) keys
    each band by its value; the query side by every value within ``flips`` bits of its
    own. Wider bands mean far smaller key groups on the indexed side (``flips=0`` is
    :func:`phash_bands`). Returns (band index per column, (n, columns) int64 keys)."""
    from vlsafety.preprocess._dedup import _band_layout, _flip_masks

    h = np.asarray(phash, dtype=np.uint64)
    bands, keys = [], []
    for b, (shift, width) in enumerate(_band_layout(-(-(radius + 1) // (flips + 1)))):
        value = (h >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        masks = _flip_masks(width, flips) if query else np.zeros(1, dtype=np.uint64)
        keys.append((value[:, None] ^ masks[None, :]).astype(np.int64))
        bands.append(np.full(len(masks), b, dtype=np.int32))
    return np.concatenate(bands), np.concatenate(keys, axis=1)


# ---------------------------------------------------------------------------- exact


def exact_level(units: DataFrame) -> tuple[DataFrame, DataFrame]:
    """``units``: sample_id, existing, exact_key (+ anything). Returns (the rows that
    represent their exact group, duplicate rows ``sample_id, duplicate_of``) — the
    latter for new samples only (existing pool rows are never dropped)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    w = Window.partitionBy("exact_key").orderBy(F.col("existing").desc(), F.col("sample_id"))
    ranked = units.withColumn("_rn", F.row_number().over(w)).withColumn(
        "_rep", F.first("sample_id").over(w)
    )
    keep = ranked.filter(F.col("_rn") == 1).drop("_rn", "_rep")
    dups = ranked.filter((F.col("_rn") > 1) & ~F.col("existing")).select(
        "sample_id", F.col("_rep").alias("duplicate_of")
    )
    return keep, dups


# ----------------------------------------------------------------------------- near


@dataclass(frozen=True)
class NearRule:
    radius: int
    radius_fine: int
    jaccard: float
    block: int = 2048


def fixed_binary(col: pa.Array | pa.ChunkedArray, width: int) -> np.ndarray:
    """A binary column of ``width``-byte values as an (n, width) uint8 array read from the
    Arrow buffers; null or wrong-length values are zero rows."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    arr = arr.cast(pa.binary())
    n = len(arr)
    out = np.zeros((n, width), dtype=np.uint8)
    if n == 0:
        return out
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int32)[arr.offset : arr.offset + n + 1]
    data = (
        np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    )
    lengths = np.diff(offsets)
    valid = lengths == width
    if arr.null_count:
        valid &= arr.is_valid().to_numpy(zero_copy_only=False)
    if valid.all():
        return data[offsets[0] : offsets[-1]].reshape(n, width).copy()
    for i in np.flatnonzero(valid).tolist():
        out[i] = data[offsets[i] : offsets[i] + width]
    return out


_PAIR_BUDGET = 4_000_000  # candidate pairs compared at once


@dataclass(frozen=True)
class _Units:
    """The verification columns of a run of rows, read once from the Arrow buffers."""

    uid: np.ndarray
    has_image: np.ndarray
    has_text: np.ndarray
    phash: np.ndarray  # uint64
    fine: np.ndarray  # (n, 32) uint8
    sigs: np.ndarray  # (n, perms) uint64

    @classmethod
    def of(cls, t: pa.Table) -> _Units:
        sig_bytes = t.column("minhash").combine_chunks()
        lengths = pc.binary_length(sig_bytes).drop_null()
        width = int(pc.max(lengths).as_py() or 8) if len(lengths) else 8
        return cls(
            uid=t.column("uid").to_numpy(),
            has_image=t.column("has_image").to_numpy(zero_copy_only=False).astype(bool),
            has_text=t.column("has_text").to_numpy(zero_copy_only=False).astype(bool),
            phash=t.column("phash").fill_null(0).to_numpy().view(np.uint64),
            fine=fixed_binary(t.column("phash_fine"), 32),
            sigs=fixed_binary(sig_bytes, width).view(np.uint64),
        )


def _verify_pairs(
    u: _Units, ii: np.ndarray, jj: np.ndarray, rule: NearRule
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The candidate pairs (row indices ``ii``, ``jj``) that satisfy the near rule: image
    near (64-bit pHash within ``radius`` and 256-bit within ``radius_fine``) or both
    absent, and prompt near (estimated Jaccard >= ``jaccard``) or both absent. Returns
    their uids and the 64-bit distance (−1 for text-only pairs)."""
    has_image, has_text = u.has_image, u.has_text
    same_kind = has_image[ii] == has_image[jj]
    dist = np.bitwise_count(u.phash[ii] ^ u.phash[jj]).astype(np.int64)
    ok = same_kind & (~has_image[ii] | (dist <= rule.radius))
    ii, jj, dist = ii[ok], jj[ok], dist[ok]
    img = has_image[ii]
    if img.any():
        fine_d = np.zeros(len(ii), dtype=np.int64)
        fine_d[img] = np.bitwise_count(u.fine[ii[img]] ^ u.fine[jj[img]]).sum(axis=1)
        ok = ~img | (fine_d <= rule.radius_fine)
    else:
        ok = np.ones(len(ii), dtype=bool)
    both = has_text[ii] & has_text[jj]
    neither = ~has_text[ii] & ~has_text[jj]
    jac = np.zeros(len(ii))
    if both.any():
        jac[both] = np.mean(u.sigs[ii[both]] == u.sigs[jj[both]], axis=1)
    ok &= np.where(both, jac >= rule.jaccard, neither)
    return u.uid[ii[ok]], u.uid[jj[ok]], np.where(img[ok], dist[ok], -1)


def _group_pairs(ends: np.ndarray, s: int, e: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, j), s <= i < e, i < j < ends[i]: each row with the later rows of its group
    (``ends[i]`` = one past the last row of row i's group)."""
    counts = ends[s:e] - np.arange(s, e) - 1
    ii = np.repeat(np.arange(s, e, dtype=np.int64), counts)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    jj = ii + 1 + (np.arange(len(ii), dtype=np.int64) - starts)
    return ii, jj


_NEAR_PAIRS = pa.schema([("a", pa.int64()), ("b", pa.int64()), ("dist", pa.int64())])


def _near_partition(batches: Iterator[pa.RecordBatch], rule: NearRule) -> Iterator[pa.RecordBatch]:
    """Rows of whole candidate groups, sorted by group: every pair inside each group is
    verified, all groups of the partition at once (vectorized: a partition holds tens of
    thousands of small groups; a Python step per group cost more than the comparisons)."""
    tables = [pa.Table.from_batches([b]) for b in batches if b.num_rows]
    if not tables:
        return
    t = pa.concat_tables(tables)
    keys = np.stack(
        [
            t.column("has_image").to_numpy(zero_copy_only=False).astype(np.int64),
            t.column("band").to_numpy(),
            t.column("key").to_numpy(),
        ],
        axis=1,
    )
    n = len(keys)
    change = np.flatnonzero((keys[1:] != keys[:-1]).any(axis=1)) + 1
    bounds = np.concatenate([[0], change, [n]]).astype(np.int64)
    ends = np.repeat(bounds[1:], np.diff(bounds))
    later = np.cumsum(ends - np.arange(n) - 1)  # pairs of rows 0..i, inclusive
    u = _Units.of(t)
    s = 0
    while s < n:
        done = int(later[s - 1]) if s else 0
        # rows s..e-1 make at most _PAIR_BUDGET pairs (at least one row)
        e = max(s + 1, int(np.searchsorted(later, done + _PAIR_BUDGET, side="right")))
        ii, jj = _group_pairs(ends, s, e)
        s = e
        if not len(ii):
            continue
        a, b, d = _verify_pairs(u, ii, jj, rule)
        if len(a):
            lo, hi = np.minimum(a, b), np.maximum(a, b)
            yield pa.RecordBatch.from_arrays(
                [pa.array(lo), pa.array(hi), pa.array(d)], schema=_NEAR_PAIRS
            )


def near_pairs(units: DataFrame, rule: NearRule, partitions: int) -> pa.Table:
    """Verified near-duplicate pairs among ``units`` (uid, has_image, has_text, phash,
    phash_fine, minhash, near_bands: array<struct<band, key>>): an Arrow table
    ``a, b, dist`` of uids (a < b; dist −1 for text-only pairs)."""
    from pyspark.sql import functions as F

    band_rows = units.select("uid", "has_image", F.explode("near_bands").alias("nb")).select(
        "uid", "has_image", F.col("nb.band").alias("band"), F.col("nb.key").alias("key")
    )
    groups = (
        band_rows.groupBy("has_image", "band", "key")
        .agg(F.collect_list("uid").alias("members"))
        .filter(F.size("members") > 1)
        .select("has_image", "band", "key", F.explode("members").alias("uid"))
    )
    heavy = units.select("uid", "has_text", "phash", "phash_fine", "minhash")
    cand = (
        groups.join(heavy, "uid")
        .repartition(partitions, "has_image", "band", "key")
        .sortWithinPartitions("has_image", "band", "key", "uid")
    )

    def fn(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        return _near_partition(batches, rule)

    pairs = cand.mapInArrow(fn, "a bigint, b bigint, dist bigint").dropDuplicates(["a", "b"])
    return pairs.toArrow()


# ------------------------------------------------------------------------- semantic


def vectors_numpy(table: pa.Table, column: str) -> np.ndarray:
    """A list<float> column as a contiguous (n, d) float32 array (:func:`vlsafety.arrays.vectors`)."""
    return vectors(table, column)


@dataclass(frozen=True)
class SemanticPlan:
    eps: float
    centroids: np.ndarray  # (k, p) in the projected space
    projection: np.ndarray | None  # (p, d) or None
    max_assign: int
    block: int = 4096


_ASSIGN = "uid bigint, cluster int, primary boolean, centroid_distance float, vec array<float>"


def _assign_partition(
    batches: Iterator[pa.RecordBatch], plan: SemanticPlan
) -> Iterator[pa.RecordBatch]:
    radius = math.sqrt(2.0 * plan.eps)
    margin = 2.0 * radius
    k = len(plan.centroids)
    want = min(k, plan.max_assign)
    c = plan.centroids.astype(np.float32)
    c_sq = np.einsum("ij,ij->i", c, c)
    for batch in batches:
        if not batch.num_rows:
            continue
        t = pa.Table.from_batches([batch])
        e = vectors_numpy(t, "vec")
        e = e / np.linalg.norm(e, axis=1, keepdims=True)
        z = e @ plan.projection.T if plan.projection is not None else e
        d2 = np.einsum("ij,ij->i", z, z)[:, None] + c_sq[None, :] - 2.0 * (z @ c.T)
        dist = np.sqrt(np.maximum(d2, 0.0))
        order = np.argsort(dist, axis=1, kind="stable")[:, :want]
        near = np.take_along_axis(dist, order, axis=1)
        within = near <= near[:, :1] + margin + 1e-6
        rows, cols = np.nonzero(within)
        uid = t.column("uid").to_numpy()
        flat = pa.array(e[rows].ravel(), type=pa.float32())
        offsets = pa.array(np.arange(len(rows) + 1, dtype=np.int32) * e.shape[1])
        yield pa.RecordBatch.from_arrays(
            [
                pa.array(uid[rows]),
                pa.array(order[rows, cols].astype(np.int32)),
                pa.array(cols == 0),
                pa.array(near[rows, 0].astype(np.float32)),
                pa.ListArray.from_arrays(offsets, flat),
            ],
            names=["uid", "cluster", "primary", "centroid_distance", "vec"],
        )


_SEM_PAIRS = pa.schema([("a", pa.int64()), ("b", pa.int64()), ("cos", pa.float64())])


def _cluster_partition(
    batches: Iterator[pa.RecordBatch], plan: SemanticPlan
) -> Iterator[pa.RecordBatch]:
    tables = [pa.Table.from_batches([b]) for b in batches if b.num_rows]
    if not tables:
        return
    t = pa.concat_tables(tables)
    cluster = t.column("cluster").to_numpy()
    change = np.flatnonzero(cluster[1:] != cluster[:-1]) + 1
    bounds = np.concatenate([[0], change, [len(cluster)]])
    thr = float(np.float32(1.0 - plan.eps))
    radius2 = 2.0 * plan.eps
    with _single_threaded_blas():
        for s, e in zip(bounds[:-1], bounds[1:], strict=True):
            part = t.slice(int(s), int(e - s))
            prim = part.column("primary").to_numpy(zero_copy_only=False)
            if not prim.any() or part.num_rows < 2:
                continue
            order = np.concatenate([np.flatnonzero(prim), np.flatnonzero(~prim)])
            vec = vectors_numpy(part, "vec")[order]
            uid = part.column("uid").to_numpy()[order]
            z = vec @ plan.projection.T if plan.projection is not None else vec
            p = int(prim.sum())
            keys, sims = _pairs_in(
                np.arange(p), np.arange(p, len(order)), z, vec, radius2, thr, plan.block
            )
            if not keys:
                continue
            kk = np.concatenate(keys)
            a, b = uid[kk // len(vec)], uid[kk % len(vec)]
            yield pa.RecordBatch.from_arrays(
                [
                    pa.array(np.minimum(a, b)),
                    pa.array(np.maximum(a, b)),
                    pa.array(np.concatenate(sims).astype(np.float64)),
                ],
                schema=_SEM_PAIRS,
            )


def semantic_plan(
    vectors: DataFrame,
    n: int,
    *,
    eps: float,
    cluster_size: int,
    max_assign: int,
    seed: int,
    sample_size: int = 50_000,
    project_dim: int | None = 256,
) -> tuple[SemanticPlan, dict[str, float]]:
    """The driver's part of the semantic level over ``vectors`` (uid, vec; ``n`` rows):
    k-means centroids (and a PCA projection) trained on a sample of at most
    ``sample_size`` vectors. Returns the plan the executors use, and stats."""
    frac = min(1.0, 1.2 * sample_size / n)
    sample_tbl = (
        vectors.sample(fraction=frac, seed=seed)
        .select("uid", "vec")
        .orderBy("uid")
        .limit(sample_size)
        if frac < 1.0
        else vectors.select("uid", "vec").orderBy("uid")
    ).toArrow()
    sample = vectors_numpy(sample_tbl, "vec")
    sample = sample / np.linalg.norm(sample, axis=1, keepdims=True)
    d = sample.shape[1]
    projection = None
    if project_dim is not None and project_dim < d and n > 2 * cluster_size:
        projection = _projection(sample, project_dim, seed)
    zs = sample @ projection.T if projection is not None else sample
    k = max(1, int(round(n / cluster_size)))
    if k == 1 or n < 2 * cluster_size:
        centroids = zs.mean(axis=0, keepdims=True).astype(np.float32)
    else:
        with _single_threaded_blas():
            centroids = _balanced_centroids(
                zs,
                min(k, len(zs)),
                cluster_size * len(zs) // n or 1,
                seed=seed,
                niter=8,
                points_per_centroid=32,
            )
    return SemanticPlan(eps, centroids, projection, max_assign), {
        "semantic_clusters": float(len(centroids))
    }


def assign_clusters(vectors: DataFrame, plan: SemanticPlan) -> DataFrame:
    """``vectors`` (uid, vec) → ``uid, cluster, primary, centroid_distance, vec`` on
    executors: a point joins its nearest cluster (``primary``) and every cluster within
    the exactness margin, at most ``plan.max_assign``."""

    def assign(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        return _assign_partition(batches, plan)

    return vectors.select("uid", "vec").mapInArrow(assign, _ASSIGN)


def semantic_pairs_spark(
    vectors: DataFrame,
    *,
    eps: float,
    cluster_size: int,
    max_assign: int,
    seed: int,
    partitions: int,
    sample_size: int = 50_000,
    project_dim: int | None = 256,
) -> tuple[pa.Table, pa.Table, dict[str, float]]:
    """Semantic pairs among ``vectors`` (uid, vec: array<float>, all of one dimension).

    Returns (pairs ``a, b, cos``; ``uid, centroid_distance`` of the points in a pair;
    stats). The driver holds the training sample (at most ``sample_size`` vectors) and
    the centroids, nothing per row. Exact for every point within ``max_assign`` clusters
    of the margin (see :func:`vlsafety.preprocess.semantic_pairs`).
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    n = vectors.count()
    stats: dict[str, float] = {"semantic_vectors": float(n)}
    empty_pairs = _SEM_PAIRS.empty_table()
    empty_nodes = pa.table(
        {"uid": pa.array([], pa.int64()), "centroid_distance": pa.array([], pa.float32())}
    )
    if n < 2:
        return empty_pairs, empty_nodes, stats
    plan, plan_stats = semantic_plan(
        vectors,
        n,
        eps=eps,
        cluster_size=cluster_size,
        max_assign=max_assign,
        seed=seed,
        sample_size=sample_size,
        project_dim=project_dim,
    )
    stats.update(plan_stats)

    def pairs_of(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        return _cluster_partition(batches, plan)

    assigned = assign_clusters(vectors, plan).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        pairs = (
            assigned.repartition(partitions, "cluster")
            .sortWithinPartitions("cluster", F.col("primary").desc(), "uid")
            .mapInArrow(pairs_of, "a bigint, b bigint, cos double")
            .dropDuplicates(["a", "b"])
            .toArrow()
        )
        involved = (
            pa.concat_arrays(
                [pairs.column("a").combine_chunks(), pairs.column("b").combine_chunks()]
            )
            if pairs.num_rows
            else pa.array([], pa.int64())
        )
        nodes = empty_nodes
        if len(involved):
            ids = vectors.sparkSession.createDataFrame(
                pa.table({"uid": pa.compute.unique(involved)})
            )
            nodes = (
                assigned.filter(F.col("primary"))
                .select("uid", "centroid_distance")
                .join(ids, "uid", "left_semi")
                .toArrow()
            )
    finally:
        assigned.unpersist()
    return pairs, nodes, stats


# ------------------------------------------------------------------- pairs → groups


def resolve_groups(
    a: np.ndarray,
    b: np.ndarray,
    node_uid: np.ndarray,
    node_rank: np.ndarray,
    node_new: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Union the pairs (a_k, b_k) of uids; in each group keep the member of smallest
    ``node_rank`` (ranks unique) and return (dropped uids, their representative's uid) —
    new samples only (``node_new``). Nodes are the pairs' endpoints only."""
    if len(a) == 0:
        z = np.zeros(0, dtype=np.int64)
        return z, z
    order = np.argsort(node_uid)
    sorted_uid = node_uid[order]
    ia = order[np.searchsorted(sorted_uid, a)]
    ib = order[np.searchsorted(sorted_uid, b)]
    uf = UnionFind(len(node_uid))
    for x, y in zip(ia.tolist(), ib.tolist(), strict=True):
        uf.union(x, y)
    dropped, reps = [], []
    for group in uf.groups():
        g = np.asarray(group)
        rep = int(g[np.argmin(node_rank[g])])
        for i in g.tolist():
            if i != rep and node_new[i]:
                dropped.append(node_uid[i])
                reps.append(node_uid[rep])
    return np.asarray(dropped, dtype=np.int64), np.asarray(reps, dtype=np.int64)
