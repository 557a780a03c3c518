"""Benchmark samples × public records on executors: the four kinds of match.

The same machinery as preprocess's dedup (:mod:`vlsafety.preprocess`), joined across
two sides instead of within one pool — the query side (the benchmark, small) and the
indexed side (the ingested public records, large):

- ``exact_image`` — a join on the image's sha256.
- ``near_image`` — a join on multi-index pHash band keys (the query side also looks up
  every key within two bits: wide bands keep the indexed side's key groups small), each
  candidate pair verified in a task by the preprocess rule: 64-bit pHash within
  ``near_radius`` and 256-bit within ``near_radius_fine``. Pairs of one image are
  ``exact_image``, not near.
- ``near_text`` — a join on MinHash band keys of the text, verified by the estimated
  Jaccard (share of equal signature slots) >= ``text_jaccard``.
- ``semantic`` — k-means centroids trained on a sample, cluster assignment on executors
  (:func:`vlsafety.preprocess.assign_clusters`), then each query point's primary
  cluster compared with the indexed points of that cluster: cosine >= 1 − ``semantic_eps``.

No step compares all pairs; every function returns a DataFrame of matches
``q_uid, r_uid, kind, similarity`` that stays on the executors.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from vlsafety.preprocess import (
    SemanticPlan,
    assign_clusters,
    band_keys,
    fixed_binary,
    minhash_signatures,
    phash_multi_bands,
    semantic_plan,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from vlsafety.preprocess import PreprocessOptions

__all__ = [
    "KINDS",
    "LEVELS",
    "ContaminationOptions",
    "exact_matches",
    "key_units",
    "near_matches",
    "semantic_matches",
]

#: Kinds of match, strongest first, and the level (exact / near / semantic) of each.
KINDS = ("exact_image", "near_image", "near_text", "semantic")
LEVELS = {"exact_image": "exact", "near_image": "near", "near_text": "near", "semantic": "semantic"}

#: Band ids of the image keys (text MinHash bands use 0..near_bands-1).
_IMAGE_BAND_BASE = 1000
#: Bits the query side flips inside a pHash band (see ``phash_multi_bands``).
_FLIPS = 2


@dataclass(frozen=True)
class ContaminationOptions:
    """Thresholds of a contamination check; by default preprocess's dedup thresholds
    (:meth:`from_preprocess`), so "a near-copy" means what dedup means by it.

    Args:
        near_radius / near_radius_fine: Hamming radius on the 64-bit / 256-bit pHash.
        text_jaccard: estimated MinHash Jaccard (character shingles) of a near text.
        near_bands, shingle_size, minhash_perms: MinHash banding, shingles, permutations.
        semantic_eps: a semantic match has cosine >= 1 − eps.
        semantic_cluster_size, semantic_max_assign: k-means cluster size and the clusters
            a point may join (exact for pairs within ``max_assign`` clusters of the margin).
        trust_untrained: compare embeddings of an untrained (random-weight) embedder.
        partitions: shuffle partitions of the candidate joins (None: Spark's default).
        seed: centroid training.
    """

    near_radius: int = 10
    near_radius_fine: int = 48
    text_jaccard: float = 0.85
    near_bands: int = 16
    shingle_size: int = 5
    minhash_perms: int = 128
    semantic_eps: float = 0.05
    semantic_cluster_size: int = 400
    semantic_max_assign: int = 2
    trust_untrained: bool = False
    partitions: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.near_radius <= 64 or not 0 <= self.near_radius_fine <= 256:
            raise ValueError("ContaminationOptions: pHash radii must lie in [0, 64] and [0, 256]")
        if not 0.0 < self.text_jaccard <= 1.0:
            raise ValueError(
                f"ContaminationOptions.text_jaccard: must be in (0, 1], got {self.text_jaccard}"
            )
        if not 0.0 <= self.semantic_eps < 1.0:
            raise ValueError(
                f"ContaminationOptions.semantic_eps: must be in [0, 1), got {self.semantic_eps}"
            )
        if self.minhash_perms < self.near_bands:
            raise ValueError("ContaminationOptions: minhash_perms must be >= near_bands")

    @classmethod
    def from_preprocess(cls, p: PreprocessOptions, **overrides: Any) -> ContaminationOptions:
        """The thresholds of preprocess's dedup (``preprocess.*`` in the config)."""
        values: dict[str, Any] = {
            "near_radius": p.near_radius,
            "near_radius_fine": p.near_radius_fine,
            "text_jaccard": p.prompt_jaccard,
            "near_bands": p.near_bands,
            "shingle_size": p.shingle_size,
            "minhash_perms": p.minhash_perms,
            "semantic_eps": p.semantic_eps,
            "semantic_cluster_size": p.semantic_cluster_size,
            "semantic_max_assign": p.semantic_max_assign,
            "trust_untrained": p.trust_untrained,
            "partitions": p.partitions,
            "seed": p.seed,
        }
        values.update(overrides)
        return cls(**values)


# ------------------------------------------------------------------------ keys


_BAND = pa.struct([("band", pa.int32()), ("key", pa.int64())])
_KEYED = pa.schema(
    [
        ("uid", pa.int64()),
        ("image_id", pa.string()),
        ("phash", pa.int64()),
        ("phash_fine", pa.binary()),
        ("minhash", pa.binary()),
        ("bands", pa.list_(_BAND)),
    ]
)
_KEYED_DDL = (
    "uid bigint, image_id string, phash bigint, phash_fine binary, minhash binary, "
    "bands array<struct<band:int,key:bigint>>"
)


def _keys_batch(batch: pa.RecordBatch, opts: ContaminationOptions, query: bool) -> pa.RecordBatch:
    """MinHash signature and band keys (text bands, then pHash bands) of each row."""
    t = pa.Table.from_batches([batch])
    n = t.num_rows
    texts = t.column("text").to_pylist()
    with_text = [i for i, x in enumerate(texts) if x is not None and x.strip()]
    sigs = np.zeros((n, opts.minhash_perms), dtype=np.uint64)
    if with_text:
        sigs[with_text] = minhash_signatures(
            [texts[i] for i in with_text],
            num_perm=opts.minhash_perms,
            shingle_size=opts.shingle_size,
        )
    text_keys = band_keys(sigs, opts.near_bands)
    has_image = t.column("phash").is_valid().to_numpy(zero_copy_only=False)
    phash = t.column("phash").fill_null(0).to_numpy().view(np.uint64)
    img_band, img_keys = phash_multi_bands(phash, opts.near_radius, _FLIPS, query=query)
    has_text = np.zeros(n, dtype=bool)
    has_text[with_text] = True
    per_row = has_text * opts.near_bands + has_image * len(img_band)
    offsets = np.zeros(n + 1, dtype=np.int32)
    offsets[1:] = np.cumsum(per_row)
    text_idx = np.arange(opts.near_bands, dtype=np.int32)
    band_parts: list[np.ndarray] = []
    key_parts: list[np.ndarray] = []
    for i in np.flatnonzero(per_row).tolist():
        if has_text[i]:
            band_parts.append(text_idx)
            key_parts.append(text_keys[i])
        if has_image[i]:
            band_parts.append(_IMAGE_BAND_BASE + img_band)
            key_parts.append(img_keys[i])
    flat_band = np.concatenate(band_parts) if band_parts else np.zeros(0, np.int32)
    flat_key = np.concatenate(key_parts) if key_parts else np.zeros(0, np.int64)
    bands = pa.ListArray.from_arrays(
        pa.array(offsets),
        pa.StructArray.from_arrays(
            [pa.array(flat_band, pa.int32()), pa.array(flat_key, pa.int64())],
            fields=list(_BAND),
        ),
    )
    sig_bytes = [sigs[i].tobytes() if has_text[i] else None for i in range(n)]
    return pa.RecordBatch.from_arrays(
        [
            t.column("uid").combine_chunks(),
            t.column("image_id").combine_chunks(),
            t.column("phash").combine_chunks(),
            t.column("phash_fine").combine_chunks(),
            pa.array(sig_bytes, pa.binary()),
            bands,
        ],
        schema=_KEYED,
    )


def key_units(units: DataFrame, opts: ContaminationOptions, *, query: bool) -> DataFrame:
    """``units`` (uid, image_id, phash, phash_fine, text) with their MinHash signature and
    band keys, computed in tasks: ``uid, image_id, phash, phash_fine, minhash, bands``."""

    def fn(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for b in batches:
            if b.num_rows:
                yield _keys_batch(b, opts, query)

    cols = units.select("uid", "image_id", "phash", "phash_fine", "text")
    return cols.mapInArrow(fn, _KEYED_DDL)


# ----------------------------------------------------------------------- matches

_MATCH_DDL = "q_uid bigint, r_uid bigint, kind string, similarity double"
_MATCH = pa.schema(
    [
        ("q_uid", pa.int64()),
        ("r_uid", pa.int64()),
        ("kind", pa.string()),
        ("similarity", pa.float64()),
    ]
)


def exact_matches(q: DataFrame, r: DataFrame) -> DataFrame:
    """Pairs of one image (sha256): a plain join."""
    from pyspark.sql import functions as F

    qi = q.where(F.col("image_id").isNotNull()).select(F.col("uid").alias("q_uid"), "image_id")
    ri = r.where(F.col("image_id").isNotNull()).select(F.col("uid").alias("r_uid"), "image_id")
    return qi.join(ri, "image_id").select(
        "q_uid", "r_uid", F.lit("exact_image").alias("kind"), F.lit(1.0).alias("similarity")
    )


def _verify_batch(batch: pa.RecordBatch, opts: ContaminationOptions) -> pa.RecordBatch:
    """Candidate pairs (both sides' hashes on one row) that pass their rule."""
    t = pa.Table.from_batches([batch])
    image = t.column("image").to_numpy(zero_copy_only=False).astype(bool)
    n = t.num_rows
    sim = np.zeros(n)
    ok = np.zeros(n, dtype=bool)
    if image.any():
        qh = t.column("q_phash").fill_null(0).to_numpy().view(np.uint64)
        rh = t.column("r_phash").fill_null(0).to_numpy().view(np.uint64)
        dist = np.bitwise_count(qh ^ rh).astype(np.int64)
        fine = np.bitwise_count(
            fixed_binary(t.column("q_fine"), 32) ^ fixed_binary(t.column("r_fine"), 32)
        ).sum(axis=1)
        # a missing 256-bit hash (an older images table) leaves the 64-bit rule alone
        has_fine = t.column("q_fine").is_valid().to_numpy(zero_copy_only=False) & t.column(
            "r_fine"
        ).is_valid().to_numpy(zero_copy_only=False)
        img_ok = (dist <= opts.near_radius) & (~has_fine | (fine <= opts.near_radius_fine))
        ok |= image & img_ok
        sim = np.where(image, 1.0 - dist / 64.0, sim)
    text = ~image
    if text.any():
        width = opts.minhash_perms * 8
        qs = fixed_binary(t.column("q_minhash"), width).view(np.uint64)
        rs = fixed_binary(t.column("r_minhash"), width).view(np.uint64)
        jac = np.mean(qs == rs, axis=1)
        ok |= text & (jac >= opts.text_jaccard)
        sim = np.where(text, jac, sim)
    kind = np.where(image, "near_image", "near_text")
    return pa.RecordBatch.from_arrays(
        [
            t.column("q_uid").combine_chunks().filter(pa.array(ok)),
            t.column("r_uid").combine_chunks().filter(pa.array(ok)),
            pa.array(kind[ok].tolist(), pa.string()),
            pa.array(sim[ok], pa.float64()),
        ],
        schema=_MATCH,
    )


def near_matches(
    q_keyed: DataFrame, r_keyed: DataFrame, opts: ContaminationOptions, partitions: int
) -> DataFrame:
    """Near-image and near-text matches: rows that share a band key are candidates (a
    join, a shuffle), verified in tasks; only verified pairs come out."""
    from pyspark.sql import functions as F

    def exploded(df: DataFrame, side: str) -> DataFrame:
        return df.select(F.col("uid").alias(f"{side}_uid"), F.explode("bands").alias("b")).select(
            f"{side}_uid", F.col("b.band").alias("band"), F.col("b.key").alias("key")
        )

    cand = (
        exploded(q_keyed, "q")
        .join(exploded(r_keyed, "r"), ["band", "key"])
        .select("q_uid", "r_uid", (F.col("band") >= _IMAGE_BAND_BASE).alias("image"))
        .dropDuplicates(["q_uid", "r_uid", "image"])
    )

    def heavy(df: DataFrame, side: str) -> DataFrame:
        return df.select(
            F.col("uid").alias(f"{side}_uid"),
            F.col("image_id").alias(f"{side}_image"),
            F.col("phash").alias(f"{side}_phash"),
            F.col("phash_fine").alias(f"{side}_fine"),
            F.col("minhash").alias(f"{side}_minhash"),
        )

    pairs = (
        cand.join(heavy(q_keyed, "q"), "q_uid")
        .join(heavy(r_keyed, "r"), "r_uid")
        # one image on both sides is an exact match, not a near one
        .where(~F.col("image") | (F.col("q_image") != F.col("r_image")))
        .repartition(partitions)
    )

    def fn(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for b in batches:
            if b.num_rows:
                yield _verify_batch(b, opts)

    return pairs.mapInArrow(fn, _MATCH_DDL)


# ---------------------------------------------------------------------- semantic

# Float32 rounding of |x|² + |y|² − 2x·y; candidates are verified on the full vectors.
_DIST_TOL = 1e-4


def _cross_partition(
    batches: Iterator[pa.RecordBatch], plan: SemanticPlan, block: int = 2048
) -> Iterator[pa.RecordBatch]:
    """Rows sorted by cluster: in each cluster, the query points whose primary cluster
    it is against every indexed point assigned to it. A query point q and an indexed
    point r within the radius share q's primary cluster: r lies within
    d(q, c_q) + radius <= d(r, c_r) + 2·radius of it, the assignment margin."""
    from vlsafety.arrays import vectors

    tables = [pa.Table.from_batches([b]) for b in batches if b.num_rows]
    if not tables:
        return
    t = pa.concat_tables(tables)
    cluster = t.column("cluster").to_numpy()
    bounds = np.concatenate([[0], np.flatnonzero(cluster[1:] != cluster[:-1]) + 1, [len(cluster)]])
    thr = float(np.float32(1.0 - plan.eps))
    limit = 2.0 * plan.eps + _DIST_TOL
    for s, e in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        part = t.slice(s, e - s)
        uid = part.column("uid").to_numpy()
        prim = part.column("primary").to_numpy(zero_copy_only=False).astype(bool)
        indexed = (uid & 1) == 1
        qi, ri = np.flatnonzero(prim & ~indexed), np.flatnonzero(indexed)
        if not len(qi) or not len(ri):
            continue
        vec = vectors(part, "vec")
        z = vec @ plan.projection.T if plan.projection is not None else vec
        zr = z[ri]
        r_sq = np.einsum("ij,ij->i", zr, zr)
        for b in range(0, len(qi), block):
            qb = qi[b : b + block]
            zq = z[qb]
            d2 = np.einsum("ij,ij->i", zq, zq)[:, None] + r_sq[None, :] - 2.0 * (zq @ zr.T)
            ii, jj = np.nonzero(d2 <= limit)
            if not len(ii):
                continue
            a, c = qb[ii], ri[jj]
            cos = np.einsum("ij,ij->i", vec[a], vec[c]).astype(np.float64)
            ok = cos >= thr
            if ok.any():
                yield pa.RecordBatch.from_arrays(
                    [
                        pa.array(uid[a[ok]]),
                        pa.array(uid[c[ok]]),
                        pa.array(["semantic"] * int(ok.sum()), pa.string()),
                        pa.array(np.minimum(cos[ok], 1.0)),
                    ],
                    schema=_MATCH,
                )


def semantic_matches(
    vectors: DataFrame, n: int, opts: ContaminationOptions, partitions: int
) -> tuple[DataFrame | None, dict[str, float]]:
    """Semantic matches among ``vectors`` (``n`` rows of uid, vec; an even uid is a query
    point, an odd one an indexed point). None when there is nothing to compare."""
    from pyspark.sql import functions as F

    stats: dict[str, float] = {"semantic_vectors": float(n)}
    if n < 2:
        return None, stats
    plan, plan_stats = semantic_plan(
        vectors,
        n,
        eps=opts.semantic_eps,
        cluster_size=opts.semantic_cluster_size,
        max_assign=opts.semantic_max_assign,
        seed=opts.seed,
    )
    stats.update(plan_stats)

    def fn(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        return _cross_partition(batches, plan)

    matches = (
        assign_clusters(vectors, plan)
        .repartition(partitions, "cluster")
        .sortWithinPartitions("cluster", F.col("primary").desc(), "uid")
        .mapInArrow(fn, _MATCH_DDL)
    )
    return matches, stats
