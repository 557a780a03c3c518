"""The generation stage on Spark: ``pool`` (+ ``images``) → ``candidates`` + ``images`` +
``rejects``.

1. *Plan* (Spark task): every pool sample's units (strategies, methods, original) with
   their done-markers (:meth:`GenerationAgent.done_marker`).
2. *Resume*: units whose first candidate is already in ``candidates``, or whose attempt
   id is the ``source_ref`` of a ``generate`` reject, are done and dropped; only the
   rest is generated. A rerun computes nothing and adds nothing.
3. *Generate* (Spark task, ``mapInArrow`` through
   :func:`vlsafety.executor.map_with_model`, the path of every model stage): the work
   is spread over the stage's task count (``resources.tasks``, or the cluster's default;
   fewer when there are fewer than ``samples_per_partition`` samples per task), the
   image bytes of the samples whose units need them are joined right before the task,
   and a GPU generator gets its ``ResourceProfile``. One :class:`GenerationAgent` per
   task; the generator model is loaded once per Python worker
   (:func:`vlsafety.executor.worker_model`) and reused across tasks. A generation unit
   is several dependent model calls (describe, then questions, each with parse
   retries), so it runs inside one task instead of as separate ``run_inference`` passes.
4. *Write*, each one atomic commit: rendered images (merge on ``image_id``), rejects
   (merge on ``reject_id``), then candidates (merge on ``candidate_id``) last, so a
   killed run is resumed from the candidates it committed.

Counts (generation fans out, so rows are counted per pool sample):
``pool_samples`` = ``rows_in`` + ``already_done``; ``rows_in`` (samples with work left)
= ``rows_out`` (samples that produced >= 1 candidate) + ``rejected`` (samples that
produced none; each has >= 1 reject row). Units balance the same way (``units_in`` =
``units_out`` + ``units_rejected``). ``candidates``, ``images`` and ``reject_rows`` count
the rows written; ``reject_rows.<reason>`` counts reject rows per reason; the
``units_*`` figures also include ``units_planned`` and ``units_already_done``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from vlsafety.executor import map_with_model, task_count, worker_model
from vlsafety.generate._agent import MODALITY_STRATEGIES, STAGE, GenerationAgent
from vlsafety.generate._options import GenerateOptions
from vlsafety.generate._schema import CANDIDATE_COLUMNS, CANDIDATE_SCHEMA, Candidate, PoolSample
from vlsafety.ingest._images import phash_to_int64, read_image_header
from vlsafety.ingest._records import REJECT_COLUMNS, Reject, reject_id_of
from vlsafety.ingest._stage import IMAGE_COLUMNS, fit_images_schema
from vlsafety.ingest._stage import OUTPUT_SCHEMA as _INGEST_SCHEMA

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

    from vlsafety.lake import Lake
    from vlsafety.models import ModelSpec

__all__ = [
    "IMAGE_SCHEMA",
    "POOL_COLUMNS",
    "STAGE_OUTPUT_SCHEMA",
    "image_row",
    "output_rows",
    "run_generate",
]

#: Columns of ``pool`` that generation reads.
POOL_COLUMNS: tuple[str, ...] = (
    "sample_id",
    "image_id",
    "text",
    "category",
    "subcategory",
    "labels",
    "source",
)

#: The content-addressed ``images`` table, as ingest writes it.
IMAGE_SCHEMA = pa.schema([_INGEST_SCHEMA.field(c) for c in IMAGE_COLUMNS])
_REJECT_SCHEMA = pa.schema([(c, pa.string()) for c in REJECT_COLUMNS])

#: One output row per unit outcome, candidate, rendered image or reject (``kind`` says
#: which; the other kinds' columns are null). Shared with the augmentation stage.
STAGE_OUTPUT_SCHEMA = pa.schema(
    [
        ("kind", pa.string()),
        ("parent", pa.string()),
        ("unit", pa.string()),
        ("status", pa.string()),
        *CANDIDATE_SCHEMA,
        *[f for f in IMAGE_SCHEMA if f.name != "image_id"],
        *_REJECT_SCHEMA,
    ]
)

_PLAN_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("unit", pa.string()),
        ("first_id", pa.string()),
        ("attempt_id", pa.string()),
    ]
)


def image_row(data: bytes) -> dict[str, Any]:
    """An ``images`` row for encoded image bytes (sha256 id, header facts, phash)."""
    from vlsafety.ingest._records import image_id_of

    header = read_image_header(data)
    return {
        "image_id": image_id_of(data),
        "bytes": data,
        "size_bytes": len(data),
        "width": header.width,
        "height": header.height,
        "format": header.format,
        "mode": header.mode,
        "n_frames": header.n_frames,
        "exif_orientation": header.exif_orientation,
        "phash": None if header.phash is None else phash_to_int64(header.phash),
        "phash_hex": None if header.phash is None else f"{header.phash:016x}",
        "decode_error": header.decode_error,
        "phash_fine": header.phash_fine,
    }


def _spark_schema(schema: pa.Schema) -> Any:
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


def _pool_sample(row: dict[str, Any]) -> PoolSample:
    labels = row.get("labels") or {}
    if isinstance(labels, list):  # Arrow maps arrive as (key, value) pairs
        labels = dict(labels)
    return PoolSample(
        sample_id=row["sample_id"],
        image_id=row["image_id"],
        text=row["text"],
        category=row["category"],
        subcategory=row["subcategory"],
        labels=labels,
        source=row["source"],
    )


def _plan_partition(
    batches: Iterator[pa.RecordBatch], options: GenerateOptions, spec: ModelSpec | None
) -> Iterator[pa.RecordBatch]:
    agent = GenerationAgent(options, spec=spec)
    for batch in batches:
        out: dict[str, list[str]] = {f.name: [] for f in _PLAN_SCHEMA}
        for row in batch.to_pylist():
            sample = _pool_sample(row)
            for unit in agent.units(sample):
                first, attempt = agent.done_marker(sample.sample_id, unit)
                out["sample_id"].append(sample.sample_id)
                out["unit"].append(unit)
                out["first_id"].append(first)
                out["attempt_id"].append(attempt)
        yield pa.RecordBatch.from_pydict(out, schema=_PLAN_SCHEMA)


def output_rows(
    results: Iterable[
        tuple[str, Mapping[str, str], list[Candidate], list[Reject], Mapping[str, bytes]]
    ],
) -> pa.RecordBatch:
    """Stage results as :data:`STAGE_OUTPUT_SCHEMA` rows. Each result is (parent key,
    unit outcomes, candidates, rejects, new images by id); generation and augmentation
    share this."""
    rows: list[dict[str, Any]] = []
    images: dict[str, bytes] = {}
    for parent, units, candidates, rejects, new_images in results:
        for unit, status in units.items():
            rows.append({"kind": "unit", "parent": parent, "unit": unit, "status": status})
        rows.extend({"kind": "candidate", **c.to_row()} for c in candidates)
        for r in rejects:
            rid = reject_id_of(r.stage, r.reason, r.source, r.source_ref, r.sample_id)
            rows.append(
                {
                    "kind": "reject",
                    "reject_id": rid,
                    "stage": r.stage,
                    "reason": r.reason,
                    "detail": r.detail,
                    "source": r.source,
                    "source_ref": r.source_ref,
                    "sample_id": r.sample_id,
                }
            )
        images.update(new_images)
    rows.extend({"kind": "image", **image_row(data)} for data in images.values())
    return pa.RecordBatch.from_pylist(rows, schema=STAGE_OUTPUT_SCHEMA)


def _generate_partition(
    batches: Iterator[pa.RecordBatch], options: GenerateOptions, spec: ModelSpec | None
) -> Iterator[pa.RecordBatch]:
    agent: GenerationAgent | None = None
    for batch in batches:
        rows = batch.to_pylist()
        if not rows:
            continue
        if agent is None:  # an empty task loads no model
            generator = worker_model(spec) if spec is not None and not spec.untrained else None
            agent = GenerationAgent(options, generator, spec=spec)
        samples = [_pool_sample(r) for r in rows]
        pending = {r["sample_id"]: list(r["units"]) for r in rows}
        images = {r["image_id"]: r["image_bytes"] for r in rows if r.get("image_bytes") is not None}
        results = agent.run(samples, images, pending)
        yield output_rows(
            (r.sample.sample_id, r.units, r.candidates, r.rejects, r.images) for r in results
        )


def _done_filter(lake: Lake, plan: DataFrame, stage: str) -> DataFrame:
    """Plan rows whose unit is not done yet (see the module docstring)."""
    from pyspark.sql import functions as F

    if lake.exists("candidates"):
        done = lake.read("candidates").select(F.col("candidate_id").alias("first_id"))
        plan = plan.join(done, on="first_id", how="left_anti")
    if lake.exists("rejects"):
        rejected = (
            lake.read("rejects")
            .filter(F.col("stage") == stage)
            .select(F.col("source_ref").alias("attempt_id"))
        )
        plan = plan.join(rejected, on="attempt_id", how="left_anti")
    return plan


def run_model_stage(
    lake: Lake,
    work: DataFrame,
    fn: Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]],
    spec: ModelSpec | None,
    *,
    images_for: Column | None,
    tasks: int,
) -> DataFrame:
    """``fn`` over ``work`` in ``tasks`` tasks through :func:`vlsafety.executor.map_with_model`
    → :data:`STAGE_OUTPUT_SCHEMA` rows. ``images_for`` names each row's image id whose
    bytes ``fn`` needs (column ``image_bytes``; null: none); ``spec`` is the model the
    tasks run (None: no model). Shared by generation and augmentation."""
    images = None
    if images_for is not None and lake.exists("images"):
        images = lake.read("images").select("image_id", "bytes")
    return map_with_model(
        work,
        fn,
        _spark_schema(STAGE_OUTPUT_SCHEMA),
        spec,
        images=images,
        image_key=images_for if images_for is not None else "image_id",
        bytes_col="image_bytes",
        tasks=max(1, tasks),
        arrow=True,
    )


def write_outputs(lake: Lake, out: DataFrame, counts: dict[str, int]) -> None:
    """Write rendered images, rejects, then candidates (the completion marker) from a
    stage output frame; add row counts and table versions to ``counts``."""
    from pyspark.sql import functions as F

    images = out.filter(F.col("kind") == "image").select(*IMAGE_COLUMNS)
    rejects = out.filter(F.col("kind") == "reject").select(*REJECT_COLUMNS)
    cands = out.filter(F.col("kind") == "candidate").select(*CANDIDATE_COLUMNS)
    # One pass over the output for every figure (each Spark action costs a job).
    per_kind = (
        out.filter(F.col("kind") != "unit")
        .groupBy("kind", "reason")
        .agg(F.count("*").alias("n"), F.countDistinct("image_id").alias("images"))
        .collect()
    )
    counts.update(images=0, reject_rows=0, candidates=0)
    for row in per_kind:
        if row["kind"] == "image":
            counts["images"] += int(row["images"])
        elif row["kind"] == "reject":
            counts["reject_rows"] += int(row["n"])
            counts[f"reject_rows.{row['reason']}"] = int(row["n"])
        else:
            counts["candidates"] += int(row["n"])
    if counts["images"]:
        counts["images_version"] = lake.write(
            fit_images_schema(lake, images), "images", "merge", keys=["image_id"]
        )
    if counts["reject_rows"]:
        counts["rejects_version"] = lake.write(rejects, "rejects", "merge", keys=["reject_id"])
    if counts["candidates"]:
        counts["candidates_version"] = lake.write(
            cands, "candidates", "merge", keys=["candidate_id"]
        )


@dataclasses.dataclass(frozen=True)
class UnitCounts:
    """Outcomes read back from a stage's ``unit`` rows."""

    parents: int  # parents that reported units
    parents_out: int  # parents with >= 1 unit out
    units_out: int
    units_rejected: int


def unit_counts(out: DataFrame, parents_in: int, units_in: int, stage: str) -> UnitCounts:
    """Per-parent and per-unit outcomes from the ``unit`` rows; raises when they do not
    balance with what was planned (a row was lost between planning and writing)."""
    from pyspark.sql import functions as F

    units = out.filter(F.col("kind") == "unit")
    per_parent = units.groupBy("parent").agg(
        F.max((F.col("status") == "out").cast("int")).alias("any_out"),
        F.sum((F.col("status") == "out").cast("long")).alias("n_out"),
        F.sum((F.col("status") == "rejected").cast("long")).alias("n_rejected"),
    )
    agg = per_parent.agg(
        F.count("*").alias("parents"),
        F.sum("any_out").alias("parents_out"),
        F.sum("n_out").alias("units_out"),
        F.sum("n_rejected").alias("units_rejected"),
    ).collect()[0]
    got = UnitCounts(
        *(int(agg[k] or 0) for k in ("parents", "parents_out", "units_out", "units_rejected"))
    )
    if got.parents != parents_in or got.units_out + got.units_rejected != units_in:
        raise RuntimeError(
            f"{stage} counts do not balance: {parents_in} parents in, {got.parents} reported; "
            f"{units_in} units in, {got.units_out} out + {got.units_rejected} rejected"
        )
    return got


def run_generate(
    spark: SparkSession,
    lake: Lake,
    options: GenerateOptions | None = None,
    generator_spec: ModelSpec | None = None,
) -> dict[str, int]:
    """Generate candidates for every pool sample (see the module docstring for what is
    read, written and counted). ``generator_spec`` names the generator chat model; None,
    or a spec marked ``untrained``, selects the template backend."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    options = options or GenerateOptions()
    if generator_spec is not None and generator_spec.role != "chat":
        raise ValueError(
            f"generator {generator_spec.id!r} is a {generator_spec.role}, not a chat model"
        )
    pool = lake.read("pool")
    missing = [c for c in POOL_COLUMNS if c not in pool.columns]
    if missing:
        raise ValueError(f"pool table lacks column(s) {missing} needed by generation")
    pool = pool.select(*POOL_COLUMNS)
    planner = GenerationAgent(options, spec=generator_spec)
    plan = pool.mapInArrow(
        functools.partial(_plan_partition, options=options, spec=generator_spec),
        _spark_schema(_PLAN_SCHEMA),
    ).persist(StorageLevel.MEMORY_AND_DISK)
    pending = _done_filter(lake, plan, STAGE).persist(StorageLevel.MEMORY_AND_DISK)
    out: DataFrame | None = None
    try:
        # Every pool sample plans >= 1 unit (NO_UNIT at least), so the plan counts samples.
        planned = plan.agg(F.count("*"), F.countDistinct("sample_id")).collect()[0]
        todo_counts = pending.agg(F.count("*"), F.countDistinct("sample_id")).collect()[0]
        units_in, rows_in = int(todo_counts[0]), int(todo_counts[1])
        counts: dict[str, int] = {
            "pool_samples": int(planned[1]),
            "units_planned": int(planned[0]),
            "rows_in": rows_in,
            "already_done": int(planned[1]) - rows_in,
            "units_in": units_in,
            "units_already_done": int(planned[0]) - units_in,
        }
        if rows_in == 0:
            counts.update(rows_out=0, rejected=0, units_out=0, units_rejected=0)
            counts.update(candidates=0, images=0, reject_rows=0)
            return counts
        todo = pending.groupBy("sample_id").agg(F.array_sort(F.collect_list("unit")).alias("units"))
        work = pool.join(todo, on="sample_id", how="inner")
        # Only the model describes images; templates never read the bytes.
        model = generator_spec if planner.backend == "model" else None
        needs_image = F.exists("units", lambda u: u.isin(*MODALITY_STRATEGIES))
        out = run_model_stage(
            lake,
            work,
            functools.partial(_generate_partition, options=options, spec=generator_spec),
            model,
            images_for=F.when(needs_image, F.col("image_id")) if model is not None else None,
            tasks=min(task_count(spark, model), math.ceil(rows_in / options.samples_per_partition)),
        ).persist(StorageLevel.MEMORY_AND_DISK)
        got = unit_counts(out, rows_in, units_in, STAGE)
        counts.update(
            rows_out=got.parents_out,
            rejected=rows_in - got.parents_out,
            units_out=got.units_out,
            units_rejected=got.units_rejected,
        )
        write_outputs(lake, out, counts)
    finally:
        for frame in (out, pending, plan):
            if frame is not None:
                frame.unpersist()
    return counts
