"""The preprocessing agent on Spark: ``raw_pool`` + ``images`` → ``pool`` (+ ``rejects``,
``duplicates``, normalized ``images``). vlsafetybencher.txt §3.2.

Plan of one run (only raw samples not yet in ``pool`` nor rejected by this stage). Every
step is a Spark job over DataFrames; the driver receives counts, aggregates, pair lists
of duplicates and, for semantic dedup, a bounded training sample of vectors — never the
rows, embeddings or image bytes (DESIGN "Scale-out rules").

1. **Image checks** in Spark tasks (``mapInArrow``), once per distinct image: full
   decode, pixel cap, resolution, mode/EXIF/animation normalization, 64- and 256-bit
   pHash (:func:`check_image`).
2. **Screen** (``mapInArrow``): prompt filters and the image's verdict, then the dedup
   keys of each survivor — exact key, MinHash signature, near band keys.
3. **Exact** and **near** dedup against the new samples and the existing pool
   (:mod:`vlsafety.preprocess._spark_dedup`: a window, band-key groups verified in tasks).
4. **Embeddings** of the survivors (image, text, joint) on executors: a ``ModelSpec``
   through ``vlsafety.inference.run_inference`` (one model per worker), a loaded model
   or callable shipped to the tasks (small pools, tests, notebooks).
5. **Semantic** dedup and **categorization** votes — only with trusted models: an
   untrained (random-weight) embedder or verifier falls back (no semantic dedup, source
   labels and keyword rules) with a warning, so a meaningless model never drops data.
6. One merge into each table. Counts: ``pending = kept + rejected`` (checked).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from vlsafety.ingest import IMAGE_TEXT_LABEL, phash_to_int64, reject_id_of
from vlsafety.ingest._stage import fit_images_schema
from vlsafety.lake import Scratch
from vlsafety.preprocess._categorize import (
    VerifierRequest,
    class_embeddings,
    combine_votes,
    is_untrained,
    parse_verifier_answer,
    verifier_prompt,
    verifier_votes,
    zero_shot_probs,
)
from vlsafety.preprocess._dedup import minhash_signatures
from vlsafety.preprocess._filters import check_image, check_text, normalize_text
from vlsafety.preprocess._models import (
    class_vectors,
    embed_inprocess,
    is_spec,
    verifier_callable,
)
from vlsafety.preprocess._options import PreprocessOptions
from vlsafety.preprocess._spark_dedup import (
    NEAR_PHASH_BAND_BASE,
    NearRule,
    band_keys,
    exact_level,
    near_pairs,
    phash_bands,
    resolve_groups,
    semantic_pairs_spark,
)
from vlsafety.taxonomy import Taxonomy, keyword_category, load_taxonomy, map_label

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from vlsafety.lake import Lake

__all__ = ["CHECK_COLUMNS", "POOL_SCHEMA", "check_batch", "run_preprocess", "validate_samples"]

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
        ("intent", pa.string()),
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


#: The columns of a screened sample that a pool row keeps (image facts from ingest).
_SCREENED_COLUMNS = (
    "sample_id",
    "image_id",
    "text",
    "source",
    "source_ref",
    "labels",
    "intent",
    "width",
    "height",
    "n_frames",
    "normalization",
    "phash",
    "phash_fine",
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
            "data": c.data if c.changed else None,  # unchanged: the stored bytes
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


# ------------------------------------------------------------------ screen (tasks)

_NEAR_BAND = pa.struct([("band", pa.int32()), ("key", pa.int64())])

#: Columns the screen adds to each pending row (and the key columns of existing rows).
_SCREEN_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("exact_key", pa.string()),
        ("has_image", pa.bool_()),
        ("has_text", pa.bool_()),
        ("minhash", pa.binary()),
        ("near_bands", pa.list_(_NEAR_BAND)),
    ]
)


def _labels_dict(value: Any) -> dict[str, str]:
    """A map column as read through Arrow: a list of (key, value) pairs (or a dict)."""
    if value is None:
        return {}
    items = value.items() if isinstance(value, dict) else value
    return {str(k): str(v) for k, v in items if v is not None}


def _exact_key(image_id: str | None, text: str | None) -> str:
    payload = json.dumps([image_id or "", normalize_text(text)], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _keys(
    image_ids: list[str | None],
    texts: list[str | None],
    image_texts: list[str | None],
    phash: np.ndarray,
    alive: np.ndarray,
    options: PreprocessOptions,
) -> dict[str, pa.Array]:
    """Dedup keys of a batch (rows not ``alive`` get null keys): the exact key, and for
    the near level the MinHash signature of the prompt key (prompt + text rendered in
    the image, as the reference) and the band keys that make candidate groups."""
    n = len(texts)
    near_keys = [
        None if t is None and it is None else f"{t or ''} || {it or ''}"
        for t, it in zip(texts, image_texts, strict=True)
    ]
    has_image = np.array([i is not None for i in image_ids], dtype=bool)
    has_text = np.array([k is not None for k in near_keys], dtype=bool)
    with_text = np.flatnonzero(alive & has_text)
    sigs = np.zeros((n, options.minhash_perms), dtype=np.uint64)
    if len(with_text):
        sigs[with_text] = minhash_signatures(
            [near_keys[i] for i in with_text.tolist()],  # type: ignore[misc]
            num_perm=options.minhash_perms,
            shingle_size=options.shingle_size,
        )
    text_bands = band_keys(sigs, options.near_bands)
    img_bands = phash_bands(phash, options.near_radius)
    # a row with a prompt key is grouped by its MinHash bands (a near pair needs near
    # prompts); an image without one by the pigeonhole pHash bands; others not at all
    by_text = alive & has_text
    by_image = alive & ~has_text & has_image
    per_row = np.where(by_text, options.near_bands, np.where(by_image, img_bands.shape[1], 0))
    offsets = np.zeros(n + 1, dtype=np.int32)
    offsets[1:] = np.cumsum(per_row)
    band_idx: list[np.ndarray] = []
    band_key: list[np.ndarray] = []
    for i in np.flatnonzero(per_row).tolist():
        if by_text[i]:
            band_idx.append(np.arange(options.near_bands, dtype=np.int32))
            band_key.append(text_bands[i])
        else:
            band_idx.append(NEAR_PHASH_BAND_BASE + np.arange(img_bands.shape[1], dtype=np.int32))
            band_key.append(img_bands[i])
    flat_idx = np.concatenate(band_idx) if band_idx else np.zeros(0, np.int32)
    flat_key = np.concatenate(band_key) if band_key else np.zeros(0, np.int64)
    bands = pa.ListArray.from_arrays(
        pa.array(offsets),
        pa.StructArray.from_arrays(
            [pa.array(flat_idx, pa.int32()), pa.array(flat_key, pa.int64())],
            fields=list(_NEAR_BAND),
        ),
    )
    sig_bytes = [sigs[i].tobytes() if alive[i] and has_text[i] else None for i in range(n)]
    return {
        "exact_key": pa.array(
            [_exact_key(image_ids[i], texts[i]) if alive[i] else None for i in range(n)],
            pa.string(),
        ),
        "has_image": pa.array(has_image),
        "has_text": pa.array(has_text),
        "minhash": pa.array(sig_bytes, pa.binary()),
        "near_bands": bands,
    }


def _screen_batch(batch: pa.RecordBatch, options: PreprocessOptions) -> pa.RecordBatch:
    """Filters (prompt first, then the image's verdict) and dedup keys of pending rows
    joined with their image check (``checked`` is null when the image is missing)."""
    t = pa.Table.from_batches([batch])
    col = {
        c: t.column(c).to_pylist()
        for c in ("sample_id", "image_id", "text", "text_error", "intent")
    }
    checked = t.column("checked").to_pylist()
    creason = t.column("check_reason").to_pylist()
    cdetail = t.column("check_detail").to_pylist()
    norm = t.column("norm_image_id").to_pylist()
    labels = [_labels_dict(v) for v in t.column("labels").to_pylist()]
    n = t.num_rows
    reasons: list[str | None] = []
    details: list[str | None] = []
    for i in range(n):
        intent = col["intent"][i] or "unknown"
        bad: tuple[str, str] | None = None
        if intent not in options.keep_intents:
            bad = (
                "intent_filtered",
                f"intent {intent} is not in preprocess.keep_intents "
                f"({', '.join(options.keep_intents)})",
            )
        if bad is None:
            bad = check_text(col["text"][i], col["text_error"][i], options)
        if bad is None and col["image_id"][i] is not None:
            if not checked[i]:
                bad = ("missing_image", f"image {col['image_id'][i]} is not in the images table")
            elif creason[i] is not None:
                bad = (creason[i], cdetail[i])
        reasons.append(bad[0] if bad else None)
        details.append(bad[1] if bad else None)
    alive = np.array([r is None for r in reasons], dtype=bool)
    phash = t.column("phash").fill_null(0).to_numpy().view(np.uint64)
    keys = _keys(
        [norm[i] if col["image_id"][i] is not None else None for i in range(n)],
        col["text"],
        [lb.get(IMAGE_TEXT_LABEL) for lb in labels],
        phash,
        alive,
        options,
    )
    return pa.RecordBatch.from_arrays(
        [
            t.column("sample_id").combine_chunks(),
            pa.array(reasons, pa.string()),
            pa.array(details, pa.string()),
            *[keys[f.name] for f in list(_SCREEN_SCHEMA)[3:]],
        ],
        schema=_SCREEN_SCHEMA,
    )


def _existing_keys_batch(batch: pa.RecordBatch, options: PreprocessOptions) -> pa.RecordBatch:
    """Dedup keys of rows already in the pool (always alive)."""
    t = pa.Table.from_batches([batch])
    labels = [_labels_dict(v) for v in t.column("labels").to_pylist()]
    keys = _keys(
        t.column("image_id").to_pylist(),
        t.column("text").to_pylist(),
        [lb.get(IMAGE_TEXT_LABEL) for lb in labels],
        t.column("phash").fill_null(0).to_numpy().view(np.uint64),
        np.ones(t.num_rows, dtype=bool),
        options,
    )
    n = t.num_rows
    return pa.RecordBatch.from_arrays(
        [
            t.column("sample_id").combine_chunks(),
            pa.nulls(n, pa.string()),
            pa.nulls(n, pa.string()),
            *[keys[f.name] for f in list(_SCREEN_SCHEMA)[3:]],
        ],
        schema=_SCREEN_SCHEMA,
    )


def _map_batches(
    fn: Callable[[pa.RecordBatch], pa.RecordBatch],
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for b in batches:
            if b.num_rows:
                yield fn(b)

    return run


def _spark_schema(schema: pa.Schema) -> Any:
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


# ------------------------------------------------------------ embeddings (tasks)

_EMB_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("image_embedding", _F32),
        ("text_embedding", _F32),
        ("joint_embedding", _F32),
        ("embedding_error", pa.bool_()),
    ]
)


def _vec_array(x: np.ndarray) -> pa.Array:
    """(n, d) float32 with NaN rows → list<float> with nulls, built from the buffer."""
    n = len(x)
    ok = np.isfinite(x).all(axis=1) if x.size else np.zeros(n, dtype=bool)
    d = x.shape[1] if x.ndim == 2 else 0
    offsets = np.zeros(n + 1, dtype=np.int32)
    offsets[1:] = np.cumsum(np.where(ok, d, 0))
    values = pa.array(np.ascontiguousarray(x[ok], dtype=np.float32).ravel(), pa.float32())
    return pa.ListArray.from_arrays(pa.array(offsets), values, mask=pa.array(~ok))


def _embed_object_partition(
    batches: Iterator[pa.RecordBatch], embedder: Any, batch_size: int
) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        if not batch.num_rows:
            continue
        t = pa.Table.from_batches([batch])
        images = t.column("image").to_pylist()
        texts = t.column("text").to_pylist()
        emb = embed_inprocess(embedder, images, texts, batch_size)
        failed = [
            (images[i] is not None and not np.isfinite(emb.image[i]).all())
            or (texts[i] is not None and not np.isfinite(emb.text[i]).all())
            for i in range(t.num_rows)
        ]
        yield pa.RecordBatch.from_arrays(
            [
                t.column("sample_id").combine_chunks(),
                _vec_array(emb.image),
                _vec_array(emb.text),
                _vec_array(emb.joint),
                pa.array(failed),
            ],
            schema=_EMB_SCHEMA,
        )


# -------------------------------------------------------- categorization (tasks)


@dataclass(frozen=True)
class _VotePlan:
    taxonomy: Taxonomy
    classes: np.ndarray | None  # (K, d) class embeddings, when CLIP may vote
    groups: list[np.ndarray] | None
    logit_scale: float
    ask_verifier: bool


_VOTES_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("vote_source", pa.string()),
        ("vote_clip", pa.string()),
        ("clip_subcategory", pa.string()),
        ("verifier_question", pa.string()),
    ]
)


def _list_matrix(col: pa.ChunkedArray, d: int) -> np.ndarray:
    """list<float> column → (n, d) float32 with NaN rows for nulls / other lengths."""
    arr = col.combine_chunks()
    n = len(arr)
    out = np.full((n, d), np.nan, dtype=np.float32)
    if n == 0 or d == 0:
        return out
    offsets = arr.offsets.to_numpy()
    lengths = np.diff(offsets)
    valid = lengths == d
    if arr.null_count:
        valid &= arr.is_valid().to_numpy(zero_copy_only=False)
    values = arr.values.to_numpy(zero_copy_only=False)
    for i in np.flatnonzero(valid).tolist():
        out[i] = values[offsets[i] : offsets[i] + d]
    return out


def _votes_batch(batch: pa.RecordBatch, plan: _VotePlan) -> pa.RecordBatch:
    t = pa.Table.from_batches([batch])
    n = t.num_rows
    tax = plan.taxonomy
    sources = t.column("source").to_pylist()
    labels = [_labels_dict(v) for v in t.column("labels").to_pylist()]
    texts = t.column("text").to_pylist()
    source_vote = [map_label(s, lb) for s, lb in zip(sources, labels, strict=True)]
    clip: list[str | None] = [None] * n
    subcats: list[str | None] = [None] * n
    if plan.classes is not None and plan.groups is not None:
        d = plan.classes.shape[1]
        img = _list_matrix(t.column("image_embedding"), d)
        txt = _list_matrix(t.column("text_embedding"), d)
        joint = _list_matrix(t.column("joint_embedding"), d)
        probs = zero_shot_probs(
            plan.classes, image=img, text=txt, joint=joint, logit_scale=plan.logit_scale
        )
        vectors = joint.copy()
        for alt in (img, txt):
            missing = ~np.isfinite(vectors).all(axis=1)
            vectors[missing] = alt[missing]
        for j in range(n):
            if np.isfinite(probs[j]).all():
                cat = tax.names[int(np.argmax(probs[j]))]
                clip[j] = cat
                subcats[j] = _closest_subcategory(tax, plan.groups, cat, vectors[j])
    questions = [
        verifier_prompt(texts[j], tax, clip[j] or source_vote[j]) if plan.ask_verifier else None
        for j in range(n)
    ]
    return pa.RecordBatch.from_arrays(
        [
            t.column("sample_id").combine_chunks(),
            pa.array(source_vote, pa.string()),
            pa.array(clip, pa.string()),
            pa.array(subcats, pa.string()),
            pa.array(questions, pa.string()),
        ],
        schema=_VOTES_SCHEMA,
    )


_ANSWER_SCHEMA = pa.schema([("sample_id", pa.string()), ("verifier_raw", pa.string())])


def _ask_object_partition(
    batches: Iterator[pa.RecordBatch], verifier: Any, taxonomy: Taxonomy
) -> Iterator[pa.RecordBatch]:
    ask = verifier_callable(verifier)
    for batch in batches:
        if not batch.num_rows:
            continue
        t = pa.Table.from_batches([batch])
        reqs = [
            VerifierRequest(img, q)
            for img, q in zip(
                t.column("image").to_pylist(),
                t.column("verifier_question").to_pylist(),
                strict=True,
            )
        ]
        _, raws = verifier_votes(ask, reqs, taxonomy)
        yield pa.RecordBatch.from_arrays(
            [t.column("sample_id").combine_chunks(), pa.array(raws, pa.string())],
            schema=_ANSWER_SCHEMA,
        )


_DECIDED_SCHEMA = pa.schema([*POOL_SCHEMA, ("uncategorized", pa.bool_())])


def _decide_batch(batch: pa.RecordBatch, taxonomy: Taxonomy) -> pa.RecordBatch:
    """Final pool rows: verifier vote parsed, keyword fallback, plurality (combine_votes)."""
    t = pa.Table.from_batches([batch])
    n = t.num_rows
    get = {
        c: t.column(c).to_pylist()
        for c in ("text", "labels", "vote_source", "vote_clip", "clip_subcategory", "verifier_raw")
    }
    category: list[str | None] = []
    subcategory: list[str | None] = []
    votes_out: list[list[tuple[str, str]]] = []
    agreement: list[float] = []
    raws: list[str | None] = []
    for j in range(n):
        raw = get["verifier_raw"][j]
        verifier = parse_verifier_answer(raw, taxonomy) if raw is not None else None
        source, clip = get["vote_source"][j], get["vote_clip"][j]
        keyword = None
        if source is None and clip is None and verifier is None:
            labels = _labels_dict(get["labels"][j])
            probe = " ".join(x for x in (get["text"][j], labels.get(IMAGE_TEXT_LABEL)) if x)
            keyword = keyword_category(probe, taxonomy)
        v = combine_votes(
            {"source": source, "verifier": verifier, "clip": clip, "keywords": keyword}
        )
        category.append(v.category)
        subcategory.append(
            get["clip_subcategory"][j] if clip is not None and clip == v.category else None
        )
        votes_out.append([(k, c) for k, c in v.votes.items() if c is not None])
        agreement.append(v.agreement)
        raws.append(raw)
    computed = {
        "category": pa.array(category, pa.string()),
        "subcategory": pa.array(subcategory, pa.string()),
        "category_votes": pa.array(votes_out, _MAP),
        "category_agreement": pa.array(agreement, pa.float64()),
        "verifier_raw": pa.array(raws, pa.string()),
        "taxonomy": pa.array([taxonomy.name] * n, pa.string()),
        "uncategorized": pa.array([c is None for c in category]),
    }
    cols = [
        computed[f.name] if f.name in computed else t.column(f.name).combine_chunks().cast(f.type)
        for f in _DECIDED_SCHEMA
    ]
    return pa.RecordBatch.from_arrays(cols, schema=_DECIDED_SCHEMA)


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


# ------------------------------------------------------------------ rejects (tasks)

_REJECT_SCHEMA = pa.schema(
    [
        ("reject_id", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("source", pa.string()),
        ("source_ref", pa.string()),
        ("sample_id", pa.string()),
    ]
)


def _reject_batch(batch: pa.RecordBatch, stage: str = STAGE) -> pa.RecordBatch:
    """Reject rows with their content key (:func:`reject_id_of`, as every stage)."""
    t = pa.Table.from_batches([batch])
    cols = {
        c: t.column(c).to_pylist()
        for c in ("reason", "detail", "source", "source_ref", "sample_id")
    }
    dup_of, level, score = (
        t.column(c).to_pylist() for c in ("duplicate_of", "dedup_level", "score")
    )
    cols["detail"] = [
        f"duplicate of {of} (level {lv}, score {sc:.4g})" if of is not None else d
        for d, of, lv, sc in zip(cols["detail"], dup_of, level, score, strict=True)
    ]
    ids = [
        reject_id_of(stage, r, s, ref, sid)
        for r, s, ref, sid in zip(
            cols["reason"], cols["source"], cols["source_ref"], cols["sample_id"], strict=True
        )
    ]
    return pa.RecordBatch.from_arrays(
        [
            pa.array(ids, pa.string()),
            pa.array([stage] * t.num_rows, pa.string()),
            *[
                pa.array(cols[c], pa.string())
                for c in ("reason", "detail", "source", "source_ref", "sample_id")
            ],
        ],
        schema=_REJECT_SCHEMA,
    )


# ------------------------------------------------------------------ orchestration

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

_DUP_COLUMNS = ("sample_id", "duplicate_of", "dedup_level", "score")


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
        self.counts: dict[str, Any] = {"pending": 0, "kept": 0, "rejected": 0}
        self.parts = options.partitions or max(1, spark.sparkContext.defaultParallelism)
        self.shuffle_parts = max(
            self.parts, int(spark.conf.get("spark.sql.shuffle.partitions") or self.parts)
        )
        self.scratch = Scratch(lake, "preprocess")

    def persist(self, df: DataFrame) -> DataFrame:
        """Materialize ``df`` once in the run's scratch folder (see :class:`Scratch`): each
        step's plan then starts from files, not from every step before it."""
        return self.scratch.checkpoint(df)

    def close(self) -> None:
        self.scratch.remove()

    def trusted(self, model: Any) -> bool:
        return not is_untrained(model) or self.options.trust_untrained

    def uids(self, uids: np.ndarray) -> DataFrame:
        """A small DataFrame of uids (pair endpoints, duplicates) for semi/anti joins."""
        return self.spark.createDataFrame(pa.table({"uid": pa.array(uids, pa.int64())}))

    # 0. what to do
    def load_pending(self) -> DataFrame:
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
        cols = ("sample_id", "image_id", "text", "text_error", "source", "source_ref", "labels")
        # raw_pool tables written before the intent column read as intent unknown
        intent = F.col("intent") if "intent" in raw.columns else F.lit(None).cast("string")
        return self.persist(raw.select(*cols, F.coalesce(intent, F.lit("unknown")).alias("intent")))

    # 1. image checks on executors, once per distinct image
    def check_images(self, pending: DataFrame) -> DataFrame:
        """One check row per distinct image of ``pending`` (:data:`_CHECK_DDL`; ``data``
        only where normalization changed the image).

        An image whose ingest facts settle the check — decoded in full without error,
        RGB or L, one frame, no EXIF rotation, within the pixel cap and the minimum side,
        both perceptual hashes recorded — passes unchanged from those facts alone: its
        bytes are neither read nor decoded again (ingest decoded it with the same code).
        Every other image is checked from its bytes in tasks (:func:`check_image`)."""
        from pyspark.sql import functions as F

        o = self.options
        need = pending.select("image_id").where(F.col("image_id").isNotNull()).distinct()
        images = self.lake.read("images")
        if "phash_fine" in images.columns:
            rotated = F.coalesce(F.col("exif_orientation"), F.lit(1)).between(2, 8)
            settled = (
                F.col("decode_error").isNull()
                & F.col("phash").isNotNull()
                & (F.length("phash_fine") == 32)
                & F.col("mode").isin("RGB", "L")
                & (F.col("n_frames") == 1)
                & ~rotated
                & (F.col("width").cast("long") * F.col("height").cast("long") <= o.max_pixels)
                & (F.least("width", "height") >= o.min_side)
            )
            fine = F.col("phash_fine")
        else:  # an images table written before the column: every image from its bytes
            settled = F.lit(False)
            fine = F.lit(None).cast("binary")
        facts = need.join(
            images.select(
                "image_id",
                F.coalesce(settled, F.lit(False)).alias("_settled"),
                "width",
                "height",
                "mode",
                "n_frames",
                "phash",
                fine.alias("phash_fine"),
            ),
            "image_id",
            "left",
        )
        quick = facts.filter(F.col("_settled")).select(
            "image_id",
            F.lit(None).cast("string").alias("reason"),
            F.lit("").alias("detail"),
            F.col("image_id").alias("norm_image_id"),
            F.lit(False).alias("changed"),
            F.lit(None).cast("binary").alias("data"),
            "width",
            "height",
            "mode",
            "n_frames",
            F.lit(None).cast("string").alias("normalization"),
            "phash",
            "phash_fine",
        )
        rest = facts.filter(~F.coalesce(F.col("_settled"), F.lit(False))).select("image_id")
        slow = (
            rest.join(images.select("image_id", "bytes"), "image_id", "left")
            .repartition(self.parts)
            .mapInArrow(functools.partial(_check_partition, options=o), _CHECK_DDL)
        )
        return self.persist(quick.unionByName(slow))

    def image_bytes(self, checked: DataFrame) -> DataFrame:
        """``image_id, image``: the bytes of each usable checked image under its
        normalized id (the normalized bytes, or the stored ones when unchanged)."""
        from pyspark.sql import functions as F

        usable = checked.filter(F.col("reason").isNull())
        changed = usable.filter(F.col("changed")).select(
            F.col("norm_image_id").alias("image_id"), F.col("data").alias("image")
        )
        stored = (
            usable.filter(~F.col("changed"))
            .select(F.col("norm_image_id").alias("image_id"))
            .join(
                self.lake.read("images").select("image_id", F.col("bytes").alias("image")),
                "image_id",
            )
        )
        return changed.unionByName(stored).dropDuplicates(["image_id"])

    # 2. filters and dedup keys
    def screen(self, pending: DataFrame, checked: DataFrame) -> DataFrame:
        from pyspark.sql import functions as F

        meta = checked.select(
            "image_id",
            F.lit(True).alias("checked"),
            F.col("reason").alias("check_reason"),
            F.col("detail").alias("check_detail"),
            "norm_image_id",
            "width",
            "height",
            "n_frames",
            "normalization",
            "phash",
            "phash_fine",
        )
        joined = pending.join(meta, "image_id", "left")
        keys = joined.select(
            "sample_id",
            "image_id",
            "text",
            "text_error",
            "labels",
            "intent",
            "checked",
            "check_reason",
            "check_detail",
            "norm_image_id",
            "phash",
        ).mapInArrow(
            _map_batches(functools.partial(_screen_batch, options=self.options)),
            _spark_schema(_SCREEN_SCHEMA),
        )
        return self.persist(
            joined.drop("checked", "check_reason", "check_detail")
            .join(keys, "sample_id")
            .withColumn("image_id", F.when(F.col("image_id").isNotNull(), F.col("norm_image_id")))
            .drop("norm_image_id")
            .withColumn("existing", F.lit(False))
        )

    def existing_units(self) -> DataFrame | None:
        from pyspark.sql import functions as F

        if not self.lake.exists("pool"):
            return None
        pool = self.lake.read("pool").select(
            "sample_id", "image_id", "text", "labels", "phash", "phash_fine", "width", "height"
        )
        keys = pool.select("sample_id", "image_id", "text", "labels", "phash").mapInArrow(
            _map_batches(functools.partial(_existing_keys_batch, options=self.options)),
            _spark_schema(_SCREEN_SCHEMA),
        )
        return pool.join(keys, "sample_id").withColumn("existing", F.lit(True))

    # 3. exact + near dedup, new samples against each other and the existing pool
    def dedup(self, survivors: DataFrame) -> tuple[DataFrame, DataFrame]:
        """Returns (the new samples that survive exact and near dedup, their duplicates
        ``sample_id, duplicate_of, dedup_level, score``)."""
        from pyspark.sql import functions as F

        cols = [
            "sample_id",
            "image_id",
            "text",
            "labels",
            "phash",
            "phash_fine",
            "width",
            "height",
            "exact_key",
            "has_image",
            "has_text",
            "minhash",
            "near_bands",
            "existing",
        ]
        units = survivors.select(*cols)
        old = self.existing_units()
        if old is not None:
            units = units.unionByName(old.select(*cols))
        alive, exact_dups = exact_level(units)
        alive = self.persist(alive.withColumn("uid", F.xxhash64("sample_id")))
        exact = exact_dups.select(
            "sample_id",
            "duplicate_of",
            F.lit("exact").alias("dedup_level"),
            F.lit(0.0).alias("score"),
        )
        rule = NearRule(
            self.options.near_radius, self.options.near_radius_fine, self.options.prompt_jaccard
        )
        pairs = near_pairs(alive, rule, self.shuffle_parts)
        self.counts["near_pairs"] = pairs.num_rows
        near = None
        dropped = np.zeros(0, dtype=np.int64)
        if pairs.num_rows:
            a, b = pairs.column("a").to_numpy(), pairs.column("b").to_numpy()
            ends = np.unique(np.concatenate([a, b]))
            nodes = (
                alive.join(self.uids(ends), "uid", "left_semi")
                .select(
                    "uid",
                    "sample_id",
                    "existing",
                    "has_image",
                    "phash",
                    (
                        F.coalesce("width", F.lit(0)).cast("long")
                        * F.coalesce("height", F.lit(0)).cast("long")
                    ).alias("pixels"),
                )
                .toArrow()
            )
            uid = nodes.column("uid").to_numpy()
            sid = np.asarray(nodes.column("sample_id").to_pylist(), dtype=object)
            existing = nodes.column("existing").to_numpy(zero_copy_only=False).astype(bool)
            pixels = nodes.column("pixels").to_numpy()
            # the reference's rank: existing first, larger image, smallest sample id
            rank = np.empty(len(uid), dtype=np.int64)
            rank[np.lexsort((sid, -pixels, ~existing))] = np.arange(len(uid))
            dropped, reps = resolve_groups(a, b, uid, rank, ~existing)
            pos = {int(u): i for i, u in enumerate(uid.tolist())}
            ph = nodes.column("phash").fill_null(0).to_numpy().view(np.uint64)
            img = nodes.column("has_image").to_numpy(zero_copy_only=False).astype(bool)
            di = np.array([pos[int(u)] for u in dropped.tolist()], dtype=np.int64)
            ri = np.array([pos[int(u)] for u in reps.tolist()], dtype=np.int64)
            score = (
                np.where(img[di], np.bitwise_count(ph[di] ^ ph[ri]).astype(np.float64), 0.0)
                if len(di)
                else np.zeros(0)
            )
            near = self.spark.createDataFrame(
                pa.table(
                    {
                        "sample_id": pa.array(sid[di].tolist() if len(di) else [], pa.string()),
                        "duplicate_of": pa.array(sid[ri].tolist() if len(ri) else [], pa.string()),
                        "dedup_level": pa.array(["near"] * len(di), pa.string()),
                        "score": pa.array(score, pa.float64()),
                    }
                )
            )
        live = alive.filter(~F.col("existing"))
        if len(dropped):
            live = live.join(self.uids(dropped), "uid", "left_anti")
        dups = exact if near is None else exact.unionByName(near)
        return live, dups

    # 4. embeddings of the survivors
    def embed(self, live: DataFrame, checked: DataFrame) -> DataFrame | None:
        """``sample_id`` + image/text/joint embeddings (null where missing or failed)."""
        from pyspark.sql import functions as F

        if self.embedder is None:
            warnings.warn(
                "preprocess: no embedder given; pool rows get no embeddings, and semantic "
                "dedup and CLIP votes are skipped",
                stacklevel=3,
            )
            return None
        images = self.image_bytes(checked)
        req = live.select("sample_id", "image_id", "text").join(images, "image_id", "left")
        if is_spec(self.embedder):
            from vlsafety.inference import run_inference

            req = req.repartition(self.parts)
            out = live.select("sample_id")
            passes = {
                "image_embedding": ("embed_image", F.col("image").isNotNull(), ["image"]),
                "text_embedding": ("embed_text", F.col("text").isNotNull(), ["text"]),
                "joint_embedding": (
                    "embed_pair",
                    F.col("image").isNotNull() & F.col("text").isNotNull(),
                    ["image", "text"],
                ),
            }
            errs = []
            for name, (task, cond, cols) in passes.items():
                got = run_inference(
                    req.filter(cond).select(F.col("sample_id").alias("request_id"), *cols),
                    self.embedder,
                    task,
                ).select(
                    F.col("request_id").alias("sample_id"),
                    F.when(F.col("error").isNull(), F.col("embedding")).alias(name),
                    F.col("error").isNotNull().alias(f"_err_{name}"),
                )
                out = out.join(got, "sample_id", "left")
                errs.append(F.coalesce(F.col(f"_err_{name}"), F.lit(False)))
            err = errs[0] | errs[1] | errs[2]
            emb = out.select(
                "sample_id",
                "image_embedding",
                "text_embedding",
                "joint_embedding",
                err.alias("embedding_error"),
            )
        else:
            emb = req.repartition(self.parts).mapInArrow(
                functools.partial(
                    _embed_object_partition,
                    embedder=self.embedder,
                    batch_size=self.options.embed_batch_size,
                ),
                _spark_schema(_EMB_SCHEMA),
            )
        return self.persist(emb)

    # 5. semantic dedup
    def semantic(self, live: DataFrame, emb: DataFrame) -> DataFrame | None:
        """Semantic duplicates of the new samples (``sample_id, duplicate_of,
        dedup_level, score``) against each other and the existing pool."""
        from pyspark.sql import functions as F

        vec = F.coalesce("joint_embedding", "image_embedding", "text_embedding")
        new = (
            live.select("uid", "sample_id", "existing")
            .join(emb.select("sample_id", vec.alias("vec")), "sample_id")
            .filter(F.col("vec").isNotNull())
        )
        dims = [r[0] for r in new.select(F.size("vec")).distinct().limit(2).collect()]
        if len(dims) != 1:
            return None
        vectors = new
        if self.lake.exists("pool"):
            old = (
                self.lake.read("pool")
                .select(
                    F.xxhash64("sample_id").alias("uid"),
                    "sample_id",
                    F.lit(True).alias("existing"),
                    F.coalesce("joint_embedding", "image_embedding", "text_embedding").alias("vec"),
                )
                .filter(F.col("vec").isNotNull() & (F.size("vec") == dims[0]))
            )
            vectors = vectors.unionByName(old)
        vectors = self.persist(vectors)
        o = self.options
        pairs, nodes, stats = semantic_pairs_spark(
            vectors.select("uid", "vec"),
            eps=o.semantic_eps,
            cluster_size=o.semantic_cluster_size,
            max_assign=o.semantic_max_assign,
            seed=o.seed,
            partitions=self.shuffle_parts,
        )
        self.counts.update({k: v for k, v in stats.items() if k == "semantic_clusters"})
        if not pairs.num_rows:
            return None
        a, b = pairs.column("a").to_numpy(), pairs.column("b").to_numpy()
        info = (
            vectors.join(self.uids(np.unique(np.concatenate([a, b]))), "uid", "left_semi")
            .select("uid", "sample_id", "existing")
            .toArrow()
        )
        uid = info.column("uid").to_numpy()
        sid = np.asarray(info.column("sample_id").to_pylist(), dtype=object)
        existing = info.column("existing").to_numpy(zero_copy_only=False).astype(bool)
        cd = dict(
            zip(
                nodes.column("uid").to_pylist(),
                nodes.column("centroid_distance").to_pylist(),
                strict=True,
            )
        )
        dist = np.array([cd.get(int(u), np.inf) for u in uid.tolist()], dtype=np.float64)
        rank = np.empty(len(uid), dtype=np.int64)
        rank[np.lexsort((sid, dist, ~existing))] = np.arange(len(uid))
        dropped, reps = resolve_groups(a, b, uid, rank, ~existing)
        if not len(dropped):
            return None
        # the score is the cosine to the representative (a verified pair or not)
        vec_of = (
            vectors.join(self.uids(np.unique(np.concatenate([dropped, reps]))), "uid", "left_semi")
            .select("uid", "vec")
            .toArrow()
        )
        from vlsafety.preprocess._spark_dedup import vectors_numpy

        vv = vectors_numpy(vec_of, "vec").astype(np.float64)
        vv /= np.linalg.norm(vv, axis=1, keepdims=True)
        vpos = {int(u): i for i, u in enumerate(vec_of.column("uid").to_pylist())}
        pos = {int(u): i for i, u in enumerate(uid.tolist())}
        score = [
            float(vv[vpos[int(d)]] @ vv[vpos[int(r)]]) for d, r in zip(dropped, reps, strict=True)
        ]
        return self.spark.createDataFrame(
            pa.table(
                {
                    "sample_id": pa.array([sid[pos[int(u)]] for u in dropped], pa.string()),
                    "duplicate_of": pa.array([sid[pos[int(u)]] for u in reps], pa.string()),
                    "dedup_level": pa.array(["semantic"] * len(dropped), pa.string()),
                    "score": pa.array(score, pa.float64()),
                }
            )
        )

    # 6. categorization
    def categorize(self, final: DataFrame, emb: DataFrame | None, checked: DataFrame) -> DataFrame:
        from pyspark.sql import functions as F

        rows = final
        if emb is not None:
            rows = rows.join(emb.drop("embedding_error"), "sample_id", "left")
        else:
            for c in ("image_embedding", "text_embedding", "joint_embedding"):
                rows = rows.withColumn(c, F.lit(None).cast("array<float>"))
        classes = groups = None
        if emb is not None and self.trusted(self.embedder):
            groups = class_vectors(self.embedder, self.spark, self.taxonomy)
            classes = class_embeddings(groups)
        ask = False
        if self.verifier is not None:
            if not self.trusted(self.verifier):
                warnings.warn(
                    "preprocess: the verifier is untrained (random weights); its answers are "
                    "not used (fallback: source labels and keyword rules)",
                    stacklevel=3,
                )
            else:
                ask = True
        plan = _VotePlan(self.taxonomy, classes, groups, self.options.clip_logit_scale, ask)
        votes = rows.select(
            "sample_id",
            "source",
            "labels",
            "text",
            "image_embedding",
            "text_embedding",
            "joint_embedding",
        ).mapInArrow(
            _map_batches(functools.partial(_votes_batch, plan=plan)), _spark_schema(_VOTES_SCHEMA)
        )
        votes = self.persist(votes)
        if ask:
            images = self.image_bytes(checked)
            req = (
                votes.select("sample_id", "verifier_question")
                .join(rows.select("sample_id", "image_id"), "sample_id")
                .join(images, "image_id", "left")
                .drop("image_id")
                .repartition(self.parts)
            )
            answers = self._ask(req)
        else:
            answers = votes.select("sample_id", F.lit(None).cast("string").alias("verifier_raw"))
        decided = (
            rows.join(votes.drop("verifier_question"), "sample_id")
            .join(answers, "sample_id", "left")
            .withColumn("source_image_id", F.col("_source_image_id"))
            .withColumn("embedder", F.lit(self._embedder_id(emb)).cast("string"))
            .withColumn("embedder_untrained", F.lit(self._embedder_untrained(emb)).cast("boolean"))
        )
        cols = [
            f.name
            for f in POOL_SCHEMA
            if f.name
            not in (
                "category",
                "subcategory",
                "category_votes",
                "category_agreement",
                "verifier_raw",
                "taxonomy",
            )
        ]
        decided = decided.select(
            *cols, "vote_source", "vote_clip", "clip_subcategory", "verifier_raw"
        ).mapInArrow(
            _map_batches(functools.partial(_decide_batch, taxonomy=self.taxonomy)),
            _spark_schema(_DECIDED_SCHEMA),
        )
        return self.persist(decided)

    def _ask(self, req: DataFrame) -> DataFrame:
        from pyspark.sql import functions as F

        if is_spec(self.verifier):
            from vlsafety.inference import run_inference
            from vlsafety.models import SamplingParams

            messages = F.to_json(
                F.array(
                    F.struct(
                        F.lit("user").alias("role"), F.col("verifier_question").alias("content")
                    )
                )
            )
            out = run_inference(
                req.select(
                    F.col("sample_id").alias("request_id"),
                    messages.alias("messages_json"),
                    "image",
                ),
                self.verifier,
                "chat",
                sampling=SamplingParams(temperature=0.0, max_tokens=24),
            )
            return out.select(
                F.col("request_id").alias("sample_id"),
                F.when(F.col("error").isNull(), F.col("text")).alias("verifier_raw"),
            )
        return req.mapInArrow(
            functools.partial(
                _ask_object_partition, verifier=self.verifier, taxonomy=self.taxonomy
            ),
            _spark_schema(_ANSWER_SCHEMA),
        )

    def _embedder_id(self, emb: DataFrame | None) -> str | None:
        if emb is None:
            return None
        if is_spec(self.embedder):
            return str(self.embedder.id)
        spec = getattr(self.embedder, "spec", None)
        return str(getattr(spec, "id", None) or type(self.embedder).__name__)

    def _embedder_untrained(self, emb: DataFrame | None) -> bool | None:
        return None if emb is None else is_untrained(self.embedder)

    # 7. writes
    def write(
        self, pool: DataFrame, dups: DataFrame, rejects: DataFrame, checked: DataFrame
    ) -> None:
        self.write_images(pool, checked)
        if self.counts["kept"]:
            if self.lake.exists("pool") and "intent" not in self.lake.schema("pool").names:
                pool = pool.drop("intent")  # a pool written before the intent column
            self.counts["pool_version"] = self.lake.write(pool, "pool", "merge", keys=["sample_id"])
        if self.counts.get("duplicates", 0):
            self.counts["duplicates_version"] = self.lake.write(
                dups, "duplicates", "merge", keys=["sample_id"]
            )
        if self.counts["rejected"]:
            self.counts["rejects_version"] = self.lake.write(
                rejects, "rejects", "merge", keys=["reject_id"]
            )

    def write_images(self, kept: DataFrame, checked: DataFrame) -> None:
        """Merge into ``images`` the normalized images the ``kept`` rows refer to."""
        from pyspark.sql import functions as F

        kept_images = kept.select(F.col("source_image_id").alias("image_id")).where(
            F.col("image_id").isNotNull()
        )
        normalized = (
            checked.filter(F.col("changed"))
            .join(kept_images, "image_id", "left_semi")
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
                "phash_fine",
            )
            .dropDuplicates(["image_id"])
        )
        if normalized.limit(1).count():
            self.counts["images_version"] = self.lake.write(
                fit_images_schema(self.lake, normalized), "images", "merge", keys=["image_id"]
            )


def _coverage(decided: DataFrame) -> dict[str, Any]:
    """Per source, how the categorized samples got their category: the share placed by
    the source's own label (``source_label``), by a model (CLIP or verifier, no source
    label), by the keyword fallback only (``keywords``), and ``uncategorized`` (rejected).
    Keys ``coverage.<source>.<how>`` (shares of ``coverage.<source>.samples``)."""
    from pyspark.sql import functions as F

    votes = F.col("category_votes")
    has_source = votes["source"].isNotNull()
    has_model = votes["clip"].isNotNull() | votes["verifier"].isNotNull()
    how = (
        F.when(F.col("uncategorized"), F.lit("uncategorized"))
        .when(has_source, F.lit("source_label"))
        .when(has_model, F.lit("model"))
        .otherwise(F.lit("keywords"))
    )
    rows = decided.groupBy("source", how.alias("how")).agg(F.count("*").alias("n")).collect()
    totals: dict[str, int] = {}
    for r in rows:
        totals[r["source"]] = totals.get(r["source"], 0) + int(r["n"])
    out: dict[str, Any] = {}
    for source, total in sorted(totals.items()):
        out[f"coverage.{source}.samples"] = total
        for kind in ("source_label", "model", "keywords", "uncategorized"):
            n = sum(int(r["n"]) for r in rows if r["source"] == source and r["how"] == kind)
            out[f"coverage.{source}.{kind}"] = round(n / total, 4)
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
            ``ModelSpec`` (loaded once per executor worker), or a loaded Embedder
            (``embed_images`` / ``embed_texts`` / ``embed_pairs``), shipped to the tasks.
            An untrained one still provides the stored embeddings but no decisions.
        verifier: None, a ``ModelSpec`` (chat, on executors), a ChatModel, or a callable
            ``list[VerifierRequest] -> list[str | None]`` (both shipped to the tasks).

    Returns counts: ``pending`` = ``kept`` + ``rejected`` (checked), ``rejected.<reason>``
    (``rejected.intent_filtered``: intents outside ``keep_intents``), ``dedup.<level>``,
    ``votes.<voter>``, ``coverage.<source>.<how>`` (share categorized by source label, by
    model, by keywords, uncategorized), ``semantic_dedup`` (whether it ran), and the
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
    from pyspark.sql import functions as F

    counts = run.counts
    pending = run.load_pending()
    counts["pending"] = pending.count()
    if not counts["pending"]:
        return counts
    checked = run.check_images(pending)
    screened = run.screen(pending, checked)
    filtered = screened.filter(F.col("reason").isNotNull())
    survivors = screened.filter(F.col("reason").isNull())

    live, dups = run.dedup(survivors)
    live = run.persist(live)
    emb = run.embed(live, checked)
    semantic = emb is not None and run.trusted(run.embedder)
    if emb is not None and not semantic:
        warnings.warn(
            f"preprocess: embedder {run._embedder_id(emb)!r} is untrained (random weights); its "
            "embeddings are stored for selection, but semantic dedup and CLIP votes are "
            "skipped (fallback: source labels, keyword rules, exact and perceptual dedup)",
            stacklevel=3,
        )
    final = live
    if semantic and emb is not None:
        sem = run.semantic(live, emb)
        if sem is not None:
            dups = dups.unionByName(sem)
            final = live.join(sem.select("sample_id"), "sample_id", "left_anti")
    counts["semantic_dedup"] = bool(semantic)
    if emb is not None:
        counts["embedding_errors"] = emb.filter(F.col("embedding_error")).count()

    # pool rows: the normalized image id as image_id, the raw one as source_image_id
    final_rows = (
        final.select("sample_id")
        .join(
            screened.select(*_SCREENED_COLUMNS),
            "sample_id",
        )
        .join(pending.select("sample_id", F.col("image_id").alias("_source_image_id")), "sample_id")
    )
    decided = run.categorize(final_rows, emb, checked)
    pool = decided.filter(~F.col("uncategorized")).drop("uncategorized")
    uncategorized = decided.filter(F.col("uncategorized")).select(
        "sample_id",
        F.lit("uncategorized").alias("reason"),
        F.lit("no source label, model vote or keyword placed it").alias("detail"),
    )

    origin = pending.select("sample_id", "source", "source_ref")
    dups = run.persist(dups.join(origin, "sample_id"))
    no_dup = [
        F.lit(None).cast("string").alias("duplicate_of"),
        F.lit(None).cast("string").alias("dedup_level"),
        F.lit(None).cast("double").alias("score"),
    ]
    dup_rejects = dups.select(
        "sample_id",
        F.concat(F.lit("duplicate_"), F.col("dedup_level")).alias("reason"),
        F.lit(None).cast("string").alias("detail"),
        "duplicate_of",
        "dedup_level",
        "score",
    )
    reject_rows = (
        filtered.select("sample_id", "reason", "detail", *no_dup)
        .unionByName(dup_rejects)
        .unionByName(uncategorized.select("*", *no_dup))
        .join(origin, "sample_id")
    )
    rejects = run.persist(
        reject_rows.select(
            "reason",
            "detail",
            "source",
            "source_ref",
            "sample_id",
            "duplicate_of",
            "dedup_level",
            "score",
        ).mapInArrow(_map_batches(_reject_batch), _spark_schema(_REJECT_SCHEMA))
    )

    by_reason = {
        r["reason"]: int(r["n"])
        for r in rejects.groupBy("reason").agg(F.count("*").alias("n")).collect()
    }
    counts["kept"] = pool.count()
    counts["rejected"] = sum(by_reason.values())
    counts["duplicates"] = sum(v for k, v in by_reason.items() if k.startswith("duplicate_"))
    for reason, c in sorted(by_reason.items()):
        counts[f"rejected.{reason}"] = c
    for level in ("exact", "near", "semantic"):
        counts[f"dedup.{level}"] = by_reason.get(f"duplicate_{level}", 0)
    voters = ("source", "verifier", "clip", "keywords")
    agg = decided.agg(
        *[F.sum(F.col("category_votes")[v].isNotNull().cast("int")).alias(v) for v in voters]
    ).collect()[0]
    for v in voters:
        if agg[v]:
            counts[f"votes.{v}"] = int(agg[v])
    counts.update(_coverage(decided))
    if counts["pending"] != counts["kept"] + counts["rejected"]:
        raise RuntimeError(
            f"preprocess counts do not balance: pending {counts['pending']} != kept "
            f"{counts['kept']} + rejected {counts['rejected']}"
        )
    run.write(pool, dups.select(*_DUP_COLUMNS, "source", "source_ref"), rejects, checked)
    counts.pop("duplicates", None)
    counts.pop("near_pairs", None)
    return counts


#: Columns ``validate_samples`` reads of the samples it is given (``raw_pool``'s).
SAMPLE_COLUMNS = ("sample_id", "image_id", "text", "text_error", "source", "source_ref", "labels")


@contextmanager
def validate_samples(
    spark: SparkSession,
    lake: Lake,
    samples: DataFrame,
    options: PreprocessOptions | None = None,
    *,
    embedder: Any = None,
    verifier: Any = None,
    stage: str = "benchmark",
) -> Iterator[tuple[DataFrame, DataFrame, dict[str, Any]]]:
    """The validity half of preprocessing on ``samples`` (rows of ``raw_pool``'s schema):
    image checks and normalization, the prompt filters, and categorization — but no
    dedup and no intent filter: a published benchmark keeps every valid row it has,
    duplicates and benign controls included. Nothing is merged into ``pool``; images
    that normalization changed are merged into ``images`` (the rows refer to them).

    Yields ``(valid, rejects, counts)`` while the run's scratch files exist (write both
    inside the block): ``valid`` in the ``pool`` columns (:data:`POOL_SCHEMA`),
    ``rejects`` in the ``rejects`` columns with ``stage``, and counts with
    ``pending = kept + rejected`` (checked) and ``rejected.<reason>``.
    """
    from pyspark.sql import functions as F

    from vlsafety.ingest import INTENTS

    options = options or PreprocessOptions()
    options = dataclasses.replace(options, keep_intents=INTENTS)
    run = _Run(spark, lake, options, embedder, verifier)
    try:
        intent = F.col("intent") if "intent" in samples.columns else F.lit(None).cast("string")
        pending = run.persist(
            samples.select(*SAMPLE_COLUMNS, F.coalesce(intent, F.lit("unknown")).alias("intent"))
        )
        counts = run.counts
        counts["pending"] = pending.count()
        checked = run.check_images(pending)
        screened = run.screen(pending, checked)
        filtered = screened.filter(F.col("reason").isNotNull())
        live = screened.filter(F.col("reason").isNull())
        # embeddings only serve CLIP votes here (the rows keep none): skipped for an
        # untrusted embedder, whose votes would not count anyway
        use = counts["pending"] and embedder is not None and run.trusted(embedder)
        emb = run.embed(live, checked) if use else None
        rows = live.select(*_SCREENED_COLUMNS).join(
            pending.select("sample_id", F.col("image_id").alias("_source_image_id")), "sample_id"
        )
        decided = run.categorize(rows, emb, checked)
        valid = decided.filter(~F.col("uncategorized")).drop("uncategorized")
        uncategorized = decided.filter(F.col("uncategorized")).select(
            "sample_id",
            F.lit("uncategorized").alias("reason"),
            F.lit("no source label, model vote or keyword placed it").alias("detail"),
        )
        origin = pending.select("sample_id", "source", "source_ref")
        no_dup = [
            F.lit(None).cast("string").alias("duplicate_of"),
            F.lit(None).cast("string").alias("dedup_level"),
            F.lit(None).cast("double").alias("score"),
        ]
        rejects = run.persist(
            filtered.select("sample_id", "reason", "detail", *no_dup)
            .unionByName(uncategorized.select("*", *no_dup))
            .join(origin, "sample_id")
            .select(
                "reason",
                "detail",
                "source",
                "source_ref",
                "sample_id",
                "duplicate_of",
                "dedup_level",
                "score",
            )
            .mapInArrow(
                _map_batches(functools.partial(_reject_batch, stage=stage)),
                _spark_schema(_REJECT_SCHEMA),
            )
        )
        by_reason = {
            r["reason"]: int(r["n"])
            for r in rejects.groupBy("reason").agg(F.count("*").alias("n")).collect()
        }
        counts["kept"] = valid.count()
        counts["rejected"] = sum(by_reason.values())
        for reason, c in sorted(by_reason.items()):
            counts[f"rejected.{reason}"] = c
        if counts["pending"] != counts["kept"] + counts["rejected"]:
            raise RuntimeError(
                f"{stage} validity counts do not balance: pending {counts['pending']} != "
                f"kept {counts['kept']} + rejected {counts['rejected']}"
            )
        run.write_images(valid, checked)
        yield valid, rejects, dict(counts)
    finally:
        run.close()
