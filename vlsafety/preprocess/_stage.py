"""The preprocessing agent on Spark: ``raw_pool`` + ``images`` → ``pool`` (+ ``rejects``,
``duplicates``, normalized ``images``). vlsafetybencher.txt §3.2.

Plan of one run (only raw samples not yet in ``pool`` nor rejected by this stage):

1. **Image checks** in Spark tasks (``mapInArrow``), once per distinct image: full
   decode, pixel cap, resolution, mode/EXIF/animation normalization, 64- and 256-bit
   pHash (:func:`check_image`).
2. On the driver, over compact columns only (ids, prompts, labels, hashes): **prompt
   filters**, then **exact** and **near** dedup against the new samples and the
   existing pool.
3. **Embeddings** of the survivors (image, text, joint) — on executors through
   ``vlsafety.inference.run_inference`` when the embedder is a ``ModelSpec``, on the
   driver when it is a loaded model. Stored in ``pool`` for selection's diversity term.
4. **Semantic** dedup and **categorization** votes — only with trusted models: an
   untrained (random-weight) embedder or verifier falls back (no semantic dedup, source
   labels and keyword rules) with a warning, so a meaningless model never drops data.
5. One merge into each table. Counts: ``pending = kept + rejected`` (checked).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from vlsafety.ingest import (
    IMAGE_TEXT_LABEL,
    Reject,
    phash_from_int64,
    phash_to_int64,
    rejects_to_arrow,
)
from vlsafety.preprocess._categorize import (
    VerifierRequest,
    class_embeddings,
    combine_votes,
    is_untrained,
    verifier_prompt,
    verifier_votes,
    zero_shot_probs,
)
from vlsafety.preprocess._dedup import DedupInput, deduplicate, deduplicate_semantic
from vlsafety.preprocess._filters import check_image, check_text
from vlsafety.preprocess._models import (
    Embeddings,
    class_vectors,
    embed_inprocess,
    embed_spark,
    is_spec,
    verifier_callable,
)
from vlsafety.preprocess._options import PreprocessOptions
from vlsafety.taxonomy import Taxonomy, keyword_category, load_taxonomy, map_label

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from vlsafety.lake import Lake

__all__ = ["CHECK_COLUMNS", "POOL_SCHEMA", "check_batch", "run_preprocess"]

STAGE = "preprocess"

_CHECK_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("norm_image_id", pa.string()),
        ("changed", pa.bool_()),
        ("data", pa.binary()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("mode", pa.string()),
        ("n_frames", pa.int32()),
        ("normalization", pa.string()),
        ("phash", pa.int64()),
        ("phash_fine", pa.binary()),
    ]
)
_CHECK_DDL = (
    "image_id string, reason string, detail string, norm_image_id string, changed boolean, "
    "data binary, width int, height int, mode string, n_frames int, normalization string, "
    "phash bigint, phash_fine binary"
)
#: Columns of the per-image check result collected to the driver (no bytes).
CHECK_COLUMNS: tuple[str, ...] = tuple(f.name for f in _CHECK_SCHEMA if f.name != "data")

_F32 = pa.list_(pa.float32())
_MAP = pa.map_(pa.string(), pa.string())

#: Schema of the ``pool`` table (key: sample_id).
POOL_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("image_id", pa.string()),
        ("source_image_id", pa.string()),
        ("text", pa.string()),
        ("source", pa.string()),
        ("source_ref", pa.string()),
        ("labels", _MAP),
        ("category", pa.string()),
        ("subcategory", pa.string()),
        ("category_votes", _MAP),
        ("category_agreement", pa.float64()),
        ("verifier_raw", pa.string()),
        ("taxonomy", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("n_frames", pa.int32()),
        ("normalization", pa.string()),
        ("phash", pa.int64()),
        ("phash_fine", pa.binary()),
        ("image_embedding", _F32),
        ("text_embedding", _F32),
        ("joint_embedding", _F32),
        ("embedder", pa.string()),
        ("embedder_untrained", pa.bool_()),
    ]
)

_DUPLICATES_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("duplicate_of", pa.string()),
        ("dedup_level", pa.string()),
        ("score", pa.float64()),
        ("source", pa.string()),
        ("source_ref", pa.string()),
    ]
)


# ------------------------------------------------------------------- Spark task


def check_batch(batch: pa.RecordBatch, options: PreprocessOptions) -> pa.RecordBatch:
    """:func:`check_image` over a batch of (image_id, bytes) rows."""
    out: dict[str, list[Any]] = {f.name: [] for f in _CHECK_SCHEMA}
    ids = batch.column("image_id").to_pylist()
    datas = batch.column("bytes").to_pylist()
    for image_id, data in zip(ids, datas, strict=True):
        c = check_image(data, options)
        row = {
            "image_id": image_id,
            "reason": c.reason,
            "detail": c.detail,
            "norm_image_id": c.image_id,
            "changed": c.changed,
            "data": c.data,
            "width": c.width,
            "height": c.height,
            "mode": c.mode,
            "n_frames": c.n_frames,
            "normalization": c.normalization,
            "phash": None if c.phash is None else phash_to_int64(c.phash),
            "phash_fine": c.phash_fine,
        }
        for k, v in row.items():
            out[k].append(v)
    return pa.RecordBatch.from_pydict(
        {f.name: pa.array(out[f.name], type=f.type) for f in _CHECK_SCHEMA}
    )


def _check_partition(
    batches: Iterator[pa.RecordBatch], options: PreprocessOptions
) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        if batch.num_rows:
            yield check_batch(batch, options)


# ------------------------------------------------------------------ driver side


@dataclass
class _Sample:
    """One pending sample on the driver, with its image's check result."""

    sample_id: str
    image_id: str | None
    text: str | None
    text_error: str | None
    source: str
    source_ref: str
    labels: dict[str, str]
    check: dict[str, Any] | None = None

    @property
    def norm_image_id(self) -> str | None:
        return self.check["norm_image_id"] if self.check else None

    @property
    def image_text(self) -> str | None:
        return self.labels.get(IMAGE_TEXT_LABEL)

    def reject(self, reason: str, detail: str) -> Reject:
        return Reject(STAGE, reason, detail, self.source, self.source_ref, self.sample_id)


@dataclass(frozen=True)
class _Decision:
    category: str
    subcategory: str | None
    votes: dict[str, str | None]
    agreement: float
    verifier_raw: str | None


def _labels_dict(value: Any) -> dict[str, str]:
    """A map column as read through Arrow: a list of (key, value) pairs (or a dict)."""
    if value is None:
        return {}
    items = value.items() if isinstance(value, dict) else value
    return {str(k): str(v) for k, v in items if v is not None}


def _vec(row: np.ndarray | None) -> list[float] | None:
    if row is None or not np.isfinite(row).all():
        return None
    return [float(x) for x in row]


_EXISTING_COLUMNS = (
    "sample_id",
    "image_id",
    "text",
    "labels",
    "phash",
    "phash_fine",
    "width",
    "height",
    "joint_embedding",
    "image_embedding",
    "text_embedding",
)


class _Run:
    """One preprocessing run; each method is one step of the module docstring's plan."""

    def __init__(
        self,
        spark: SparkSession,
        lake: Lake,
        options: PreprocessOptions,
        embedder: Any,
        verifier: Any,
    ) -> None:
        self.spark = spark
        self.lake = lake
        self.options = options
        self.embedder = embedder
        self.verifier = verifier
        self.taxonomy = load_taxonomy(options.taxonomy)
        self.rejects: list[Reject] = []
        self.counts: dict[str, Any] = {"pending": 0, "kept": 0, "rejected": 0}
        self.checked: DataFrame | None = None
        self.pending_df: DataFrame | None = None

    # 0. what to do
    def load_pending(self) -> list[_Sample]:
        from pyspark import StorageLevel
        from pyspark.sql import functions as F

        raw = self.lake.read("raw_pool")
        if self.lake.exists("pool"):
            raw = raw.join(self.lake.read("pool").select("sample_id"), "sample_id", "left_anti")
        if self.lake.exists("rejects"):
            done = (
                self.lake.read("rejects")
                .filter((F.col("stage") == STAGE) & F.col("sample_id").isNotNull())
                .select("sample_id")
                .distinct()
            )
            raw = raw.join(done, "sample_id", "left_anti")
        self.pending_df = raw.persist(StorageLevel.MEMORY_AND_DISK)
        cols = ("sample_id", "image_id", "text", "text_error", "source", "source_ref", "labels")
        rows = self.pending_df.select(*cols).toArrow().to_pylist()
        rows.sort(key=lambda r: r["sample_id"])  # input order must not matter
        return [
            _Sample(**{**{c: r[c] for c in cols[:-1]}, "labels": _labels_dict(r["labels"])})
            for r in rows
        ]

    # 1. image checks on executors, once per distinct image
    def check_images(self, samples: list[_Sample]) -> None:
        from pyspark import StorageLevel
        from pyspark.sql import functions as F

        assert self.pending_df is not None
        need = self.pending_df.select("image_id").where(F.col("image_id").isNotNull()).distinct()
        images = self.lake.read("images").select("image_id", "bytes")
        parts = self.options.partitions or max(1, self.spark.sparkContext.defaultParallelism)
        self.checked = (
            need.join(images, "image_id", "left")
            .repartition(parts)
            .mapInArrow(functools.partial(_check_partition, options=self.options), _CHECK_DDL)
            .persist(StorageLevel.MEMORY_AND_DISK)
        )
        found = {
            r["image_id"]: r for r in self.checked.select(*CHECK_COLUMNS).toArrow().to_pylist()
        }
        for s in samples:
            if s.image_id is not None:
                s.check = found.get(s.image_id)

    # 2. filters: prompt first (cheaper to explain), then the image's verdict
    def filter(self, samples: list[_Sample]) -> list[_Sample]:
        kept = []
        for s in samples:
            bad = check_text(s.text, s.text_error, self.options)
            if bad is None and s.image_id is not None:
                if s.check is None:
                    bad = ("missing_image", f"image {s.image_id} is not in the images table")
                elif s.check["reason"] is not None:
                    bad = (s.check["reason"], s.check["detail"])
            if bad is None:
                kept.append(s)
            else:
                self.rejects.append(s.reject(*bad))
        return kept

    # 3. exact + near dedup, new samples against each other and the existing pool
    def dedup(self, samples: list[_Sample], existing: pa.Table | None) -> DedupInput:
        old = existing.to_pylist() if existing is not None else []
        n_new = len(samples)
        fine = np.zeros((n_new + len(old), 32), dtype=np.uint8)
        phash = np.zeros(n_new + len(old), dtype=np.uint64)
        for k, row in enumerate([s.check for s in samples] + old):
            if row and row["phash"] is not None:
                phash[k] = phash_from_int64(row["phash"])
                fine[k] = np.frombuffer(row["phash_fine"], dtype=np.uint8)
        sizes = [s.check if s.check else {} for s in samples] + old
        old_labels = [_labels_dict(r["labels"]) for r in old]
        return DedupInput(
            sample_id=[s.sample_id for s in samples] + [r["sample_id"] for r in old],
            image_id=[s.norm_image_id for s in samples] + [r["image_id"] for r in old],
            text=[s.text for s in samples] + [r["text"] for r in old],
            image_text=[s.image_text for s in samples]
            + [lb.get(IMAGE_TEXT_LABEL) for lb in old_labels],
            phash=phash,
            phash_fine=fine,
            pixels=np.array(
                [(r.get("width") or 0) * (r.get("height") or 0) for r in sizes], dtype=np.int64
            ),
            existing=np.array([False] * n_new + [True] * len(old)),
        )

    # 4. embeddings of the survivors
    def embed(self, samples: list[_Sample]) -> Embeddings | None:
        if self.embedder is None:
            warnings.warn(
                "preprocess: no embedder given; pool rows get no embeddings, and semantic "
                "dedup and CLIP votes are skipped",
                stacklevel=3,
            )
            return None
        if not samples:
            return None
        if is_spec(self.embedder):
            from pyspark.sql import functions as F

            assert self.checked is not None
            sel = self.spark.createDataFrame(
                pa.table(
                    {
                        "request_id": [s.sample_id for s in samples],
                        "norm_image_id": pa.array(
                            [s.norm_image_id for s in samples], type=pa.string()
                        ),
                        "text": pa.array([s.text for s in samples], type=pa.string()),
                    }
                )
            )
            img = self.checked.select("norm_image_id", F.col("data").alias("image"))
            req = sel.join(img.dropDuplicates(["norm_image_id"]), "norm_image_id", "left")
            index = {s.sample_id: i for i, s in enumerate(samples)}
            emb = embed_spark(self.embedder, req.drop("norm_image_id"), index)
        else:
            data = self.image_bytes([s.norm_image_id for s in samples])
            emb = embed_inprocess(
                self.embedder,
                [data.get(s.norm_image_id) if s.norm_image_id else None for s in samples],
                [s.text for s in samples],
                self.options.embed_batch_size,
            )
        self.counts["embedding_errors"] = emb.errors
        return emb

    def trusted(self, model: Any) -> bool:
        return not is_untrained(model) or self.options.trust_untrained

    def image_bytes(self, ids: Sequence[str | None]) -> dict[str, bytes]:
        """Normalized bytes of ``ids`` on the driver (a join, not a literal IN list)."""
        wanted = sorted({i for i in ids if i})
        if not wanted:
            return {}
        assert self.checked is not None
        keys = self.spark.createDataFrame(pa.table({"norm_image_id": wanted}))
        got = (
            self.checked.select("norm_image_id", "data")
            .join(keys, "norm_image_id", "inner")
            .dropDuplicates(["norm_image_id"])
            .toArrow()
        )
        return dict(
            zip(
                got.column("norm_image_id").to_pylist(), got.column("data").to_pylist(), strict=True
            )
        )

    # 6. categorization
    def categorize(
        self, samples: list[_Sample], rows: list[int], emb: Embeddings | None
    ) -> dict[int, _Decision]:
        """Votes for ``samples`` (``rows``: their rows in ``emb``); returns decisions by
        position and rejects the samples nothing can place."""
        tax = self.taxonomy
        n = len(samples)
        source = [map_label(s.source, s.labels) for s in samples]
        clip: list[str | None] = [None] * n
        subcats: list[str | None] = [None] * n
        if emb is not None and self.trusted(self.embedder) and n:
            groups = class_vectors(self.embedder, self.spark, tax)
            probs = zero_shot_probs(
                class_embeddings(groups),
                image=emb.image[rows],
                text=emb.text[rows],
                joint=emb.joint[rows],
                logit_scale=self.options.clip_logit_scale,
            )
            vectors = emb.sample_vectors()[rows]
            for j in range(n):
                if np.isfinite(probs[j]).all():
                    cat = tax.names[int(np.argmax(probs[j]))]
                    clip[j] = cat
                    subcats[j] = _closest_subcategory(tax, groups, cat, vectors[j])
        verifier: list[str | None] = [None] * n
        raws: list[str | None] = [None] * n
        if self.verifier is not None and n:
            if not self.trusted(self.verifier):
                warnings.warn(
                    "preprocess: the verifier is untrained (random weights); its answers are "
                    "not used (fallback: source labels and keyword rules)",
                    stacklevel=3,
                )
            else:
                data = self.image_bytes([s.norm_image_id for s in samples])
                reqs = [
                    VerifierRequest(
                        data.get(s.norm_image_id) if s.norm_image_id else None,
                        verifier_prompt(s.text, tax, clip[j] or source[j]),
                    )
                    for j, s in enumerate(samples)
                ]
                ask = verifier_callable(self.verifier, self.spark)
                verifier, raws = verifier_votes(ask, reqs, tax)
        out: dict[int, _Decision] = {}
        for j, s in enumerate(samples):
            keyword = None
            if source[j] is None and clip[j] is None and verifier[j] is None:
                probe = " ".join(t for t in (s.text, s.image_text) if t)
                keyword = keyword_category(probe, tax)
            v = combine_votes(
                {"source": source[j], "verifier": verifier[j], "clip": clip[j], "keywords": keyword}
            )
            for voter, vote in v.votes.items():
                if vote is not None:
                    key = f"votes.{voter}"
                    self.counts[key] = self.counts.get(key, 0) + 1
            if v.category is None:
                self.rejects.append(
                    s.reject("uncategorized", "no source label, model vote or keyword placed it")
                )
                continue
            sub = subcats[j] if clip[j] == v.category else None
            out[j] = _Decision(v.category, sub, dict(v.votes), v.agreement, raws[j])
        return out

    # 7. writes
    def pool_rows(
        self,
        samples: list[_Sample],
        decisions: dict[int, _Decision],
        rows: list[int],
        emb: Embeddings | None,
    ) -> list[dict[str, Any]]:
        out = []
        for j, d in sorted(decisions.items()):
            s, c, r = samples[j], samples[j].check or {}, rows[j]
            out.append(
                {
                    "sample_id": s.sample_id,
                    "image_id": s.norm_image_id,
                    "source_image_id": s.image_id,
                    "text": s.text,
                    "source": s.source,
                    "source_ref": s.source_ref,
                    "labels": list(s.labels.items()),
                    "category": d.category,
                    "subcategory": d.subcategory,
                    "category_votes": [(k, v) for k, v in d.votes.items() if v is not None],
                    "category_agreement": d.agreement,
                    "verifier_raw": d.verifier_raw,
                    "taxonomy": self.taxonomy.name,
                    "width": c.get("width"),
                    "height": c.get("height"),
                    "n_frames": c.get("n_frames"),
                    "normalization": c.get("normalization"),
                    "phash": c.get("phash"),
                    "phash_fine": c.get("phash_fine"),
                    "image_embedding": _vec(emb.image[r]) if emb else None,
                    "text_embedding": _vec(emb.text[r]) if emb else None,
                    "joint_embedding": _vec(emb.joint[r]) if emb else None,
                    "embedder": emb.model_id if emb else None,
                    "embedder_untrained": emb.untrained if emb else None,
                }
            )
        return out

    def write(self, pool_rows: list[dict[str, Any]], dup_rows: list[dict[str, Any]]) -> None:
        from pyspark.sql import functions as F

        assert self.checked is not None
        kept_images = sorted({r["source_image_id"] for r in pool_rows if r["source_image_id"]})
        if kept_images:
            keys = self.spark.createDataFrame(pa.table({"image_id": kept_images}))
            normalized = (
                self.checked.filter(F.col("changed"))
                .join(keys, "image_id", "inner")
                .select(
                    F.col("norm_image_id").alias("image_id"),
                    F.col("data").alias("bytes"),
                    F.length("data").cast("bigint").alias("size_bytes"),
                    "width",
                    "height",
                    F.lit("PNG").alias("format"),
                    "mode",
                    F.lit(1).cast("int").alias("n_frames"),
                    F.lit(None).cast("int").alias("exif_orientation"),
                    "phash",
                    F.lower(F.lpad(F.hex(F.col("phash")), 16, "0")).alias("phash_hex"),
                    F.lit(None).cast("string").alias("decode_error"),
                )
                .dropDuplicates(["image_id"])
            )
            if normalized.limit(1).count():
                self.counts["images_version"] = self.lake.write(
                    normalized, "images", "merge", keys=["image_id"]
                )
        if pool_rows:
            table = pa.Table.from_pylist(pool_rows, schema=POOL_SCHEMA)
            self.counts["pool_version"] = self.lake.write(
                table, "pool", "merge", keys=["sample_id"]
            )
        if dup_rows:
            table = pa.Table.from_pylist(dup_rows, schema=_DUPLICATES_SCHEMA)
            self.counts["duplicates_version"] = self.lake.write(
                table, "duplicates", "merge", keys=["sample_id"]
            )
        if self.rejects:
            self.counts["rejects_version"] = self.lake.write(
                rejects_to_arrow(self.rejects), "rejects", "merge", keys=["reject_id"]
            )

    def close(self) -> None:
        for df in (self.checked, self.pending_df):
            if df is not None:
                df.unpersist()


def _closest_subcategory(
    taxonomy: Taxonomy, groups: list[np.ndarray], category: str, vector: np.ndarray
) -> str | None:
    """The subcategory of ``category`` whose description embedding is closest to
    ``vector`` (``groups[k]`` rows: the category text, then each subcategory's)."""
    ci = taxonomy.index(category)
    subs = taxonomy.categories[ci].subcategories
    if not subs or not np.isfinite(vector).all():
        return None
    sub_vecs = groups[ci][1:]
    sims = sub_vecs @ vector / (np.linalg.norm(sub_vecs, axis=1) * np.linalg.norm(vector))
    return subs[int(np.argmax(sims))].name


def _existing_vectors(existing: pa.Table | None) -> np.ndarray | None:
    """Sample vectors of the existing pool rows (joint, else image, else text); None when
    the pool has no embeddings of one common dimension."""
    if existing is None or existing.num_rows == 0:
        return None
    cols = [
        existing.column(c).to_pylist()
        for c in ("joint_embedding", "image_embedding", "text_embedding")
    ]
    dims = {len(v) for c in cols for v in c if v}
    if len(dims) != 1:
        return None
    out = np.full((existing.num_rows, dims.pop()), np.nan, dtype=np.float32)
    for i in range(existing.num_rows):
        vec = next((c[i] for c in cols if c[i]), None)
        if vec is not None:
            out[i] = vec
    return out


def run_preprocess(
    spark: SparkSession,
    lake: Lake,
    options: PreprocessOptions | None = None,
    embedder: Any = None,
    verifier: Any = None,
) -> dict[str, Any]:
    """Run the preprocessing agent over the ``raw_pool`` samples not processed yet.

    Args:
        embedder: None (no embeddings: semantic dedup and CLIP votes are skipped), a
            ``ModelSpec`` (embeddings on executors) or a loaded Embedder (on the driver).
            An untrained one still provides the stored embeddings but no decisions.
        verifier: None, a ``ModelSpec`` (chat, on executors), a ChatModel, or a callable
            ``list[VerifierRequest] -> list[str | None]``.

    Returns counts: ``pending`` = ``kept`` + ``rejected`` (checked), ``rejected.<reason>``,
    ``dedup.<level>``, ``votes.<voter>``, ``semantic_dedup`` (whether it ran), and the
    versions of the tables written.
    """
    options = options or PreprocessOptions()
    for table in ("raw_pool", "images"):
        if not lake.exists(table):
            raise ValueError(f"run_preprocess: the lake has no {table} table; run ingest first")
    run = _Run(spark, lake, options, embedder, verifier)
    try:
        return _run(run)
    finally:
        run.close()


def _run(run: _Run) -> dict[str, Any]:
    options, counts = run.options, run.counts
    samples = run.load_pending()
    counts["pending"] = len(samples)
    if not samples:
        return counts
    run.check_images(samples)
    survivors = run.filter(samples)

    existing = (
        run.lake.read_arrow("pool", columns=_EXISTING_COLUMNS) if run.lake.exists("pool") else None
    )
    data = run.dedup(survivors, existing)
    result = deduplicate(
        data,
        radius=options.near_radius,
        radius_fine=options.near_radius_fine,
        jaccard=options.prompt_jaccard,
        bands=options.mih_bands,
        shingle_size=options.shingle_size,
        num_perm=options.minhash_perms,
    )
    live = [k for k in range(len(survivors)) if result.duplicate_of[k] < 0]
    emb = run.embed([survivors[k] for k in live])
    semantic = emb is not None and run.trusted(run.embedder)
    if emb is not None and not semantic:
        warnings.warn(
            f"preprocess: embedder {emb.model_id!r} is untrained (random weights); its "
            "embeddings are stored for selection, but semantic dedup and CLIP votes are "
            "skipped (fallback: source labels, keyword rules, exact and perceptual dedup)",
            stacklevel=3,
        )
    if semantic and emb is not None:
        vectors = emb.sample_vectors()
        idx = np.array(live, dtype=np.int64)
        old = _existing_vectors(existing)
        if old is not None and old.shape[1] == vectors.shape[1]:
            idx = np.concatenate([idx, len(survivors) + np.arange(len(old))])
            vectors = np.concatenate([vectors, old])
        ok = np.isfinite(vectors).all(axis=1)
        deduplicate_semantic(
            result,
            idx[ok],
            vectors[ok],
            data.existing,
            data.sample_id,
            eps=options.semantic_eps,
            cluster_size=options.semantic_cluster_size,
            max_assign=options.semantic_max_assign,
            seed=options.seed,
        )
    counts["semantic_dedup"] = bool(semantic)

    row_of = {k: j for j, k in enumerate(live)}
    final = [k for k in live if result.duplicate_of[k] < 0]
    final_rows = [row_of[k] for k in final]
    decisions = run.categorize([survivors[k] for k in final], final_rows, emb)

    dup_rows = []
    for k, s in enumerate(survivors):
        rep = int(result.duplicate_of[k])
        if rep < 0:
            continue
        level, of = result.level[k], data.sample_id[rep]
        run.rejects.append(
            s.reject(
                f"duplicate_{level}",
                f"duplicate of {of} (level {level}, score {result.score[k]:.4g})",
            )
        )
        dup_rows.append(
            {
                "sample_id": s.sample_id,
                "duplicate_of": of,
                "dedup_level": level,
                "score": float(result.score[k]),
                "source": s.source,
                "source_ref": s.source_ref,
            }
        )
    pool_rows = run.pool_rows([survivors[k] for k in final], decisions, final_rows, emb)

    counts["kept"] = len(pool_rows)
    counts["rejected"] = len(run.rejects)
    reasons: dict[str, int] = {}
    for r in run.rejects:
        reasons[r.reason] = reasons.get(r.reason, 0) + 1
    for reason, c in sorted(reasons.items()):
        counts[f"rejected.{reason}"] = c
    for level in ("exact", "near", "semantic"):
        counts[f"dedup.{level}"] = reasons.get(f"duplicate_{level}", 0)
    if counts["pending"] != counts["kept"] + counts["rejected"]:
        raise RuntimeError(
            f"preprocess counts do not balance: pending {counts['pending']} != kept "
            f"{counts['kept']} + rejected {counts['rejected']}"
        )
    run.write(pool_rows, dup_rows)
    return counts
