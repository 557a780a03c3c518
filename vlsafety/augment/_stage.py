"""The augmentation stage on Spark: ``candidates`` (+ ``images``) → augmented rows in
``candidates`` + new ``images`` + ``rejects``.

Parents are the candidates whose ``origin`` is in ``options.origins``. As in generation,
a planning task lists every parent's units (variants) with their candidate ids, units
already in ``candidates`` (or rejected before: ``source_ref`` of an ``augment`` reject)
are dropped, and the rest run in ``mapInArrow`` tasks through the path of every model
stage (:func:`vlsafety.executor.map_with_model`: the stage's task count, fewer when
there are fewer than ``rows_per_partition`` parents per task; the bytes of the images
that image ops mutate joined right before the task; the paraphraser's GPU profile),
with the paraphraser (if any) loaded once per worker. Writes, each one atomic commit:
new images (merge on ``image_id``), rejects (merge on ``reject_id``), augmented
candidates (merge on ``candidate_id``) last.

Counts: every unit yields one augmented row or one reject, so ``rows_in`` (units to
do) = ``rows_out`` (augmented rows) + ``rejected``; ``planned`` = ``rows_in`` +
``already_done``; ``parents_planned`` candidates had variants planned, ``parents_in`` of
them had work left and ``parents_out`` of those produced >= 1 row.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from vlsafety.augment._agent import STAGE, AugmentAgent
from vlsafety.augment._options import AugmentOptions
from vlsafety.executor import task_count, worker_model
from vlsafety.generate._schema import CANDIDATE_COLUMNS, Candidate
from vlsafety.generate._stage import (
    _spark_schema,
    output_rows,
    run_model_stage,
    unit_counts,
    write_outputs,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from vlsafety.lake import Lake
    from vlsafety.models import ModelSpec

__all__ = ["run_augment"]

_PLAN_SCHEMA = pa.schema(
    [("parent_id", pa.string()), ("unit", pa.string()), ("candidate_id", pa.string())]
)


def _parent(row: dict[str, Any]) -> Candidate:
    return Candidate.from_row(row)


def _plan_partition(
    batches: Iterator[pa.RecordBatch], options: AugmentOptions, spec: ModelSpec | None
) -> Iterator[pa.RecordBatch]:
    agent = AugmentAgent(options, spec=spec)
    for batch in batches:
        out: dict[str, list[str]] = {f.name: [] for f in _PLAN_SCHEMA}
        for row in batch.to_pylist():
            parent = _parent(row)
            for unit in agent.units(parent):
                out["parent_id"].append(parent.candidate_id)
                out["unit"].append(unit)
                out["candidate_id"].append(agent.candidate_id(parent.candidate_id, unit))
        yield pa.RecordBatch.from_pydict(out, schema=_PLAN_SCHEMA)


def _model(options: AugmentOptions, spec: ModelSpec | None) -> ModelSpec | None:
    """The paraphraser the tasks call: a trusted model, when paraphrase is on."""
    if spec is None or spec.untrained or "paraphrase" not in options.text_ops:
        return None
    return spec


def _augment_partition(
    batches: Iterator[pa.RecordBatch], options: AugmentOptions, spec: ModelSpec | None
) -> Iterator[pa.RecordBatch]:
    agent: AugmentAgent | None = None
    for batch in batches:
        rows = batch.to_pylist()
        if not rows:
            continue
        if agent is None:  # an empty task loads no model
            model = _model(options, spec)
            paraphraser = worker_model(model) if model is not None else None
            agent = AugmentAgent(options, paraphraser, spec=spec)
        parents = [_parent(r) for r in rows]
        pending = {r["candidate_id"]: list(r["units"]) for r in rows}
        images = {r["image_id"]: r["image_bytes"] for r in rows if r.get("image_bytes") is not None}
        results = agent.run(parents, images, pending)
        yield output_rows(
            (r.parent.candidate_id, r.units, r.candidates, r.rejects, r.images) for r in results
        )


def run_augment(
    spark: SparkSession,
    lake: Lake,
    options: AugmentOptions | None = None,
    paraphraser_spec: ModelSpec | None = None,
) -> dict[str, int]:
    """Augment the candidates (see the module docstring for what is read, written and
    counted). ``paraphraser_spec`` names the paraphrasing chat model; None, or a spec
    marked ``untrained``, selects the rule-based paraphrase."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    options = options or AugmentOptions()
    if paraphraser_spec is not None and paraphraser_spec.role != "chat":
        raise ValueError(
            f"paraphraser {paraphraser_spec.id!r} is a {paraphraser_spec.role}, not a chat model"
        )
    all_candidates = lake.read("candidates")
    parents = all_candidates.filter(F.col("origin").isin(*options.origins)).select(
        *CANDIDATE_COLUMNS
    )
    plan = parents.mapInArrow(
        functools.partial(_plan_partition, options=options, spec=paraphraser_spec),
        _spark_schema(_PLAN_SCHEMA),
    ).persist(StorageLevel.MEMORY_AND_DISK)
    pending = plan.join(all_candidates.select("candidate_id"), on="candidate_id", how="left_anti")
    if lake.exists("rejects"):
        rejected = (
            lake.read("rejects")
            .filter(F.col("stage") == STAGE)
            .select(F.col("source_ref").alias("candidate_id"))
        )
        pending = pending.join(rejected, on="candidate_id", how="left_anti")
    pending = pending.persist(StorageLevel.MEMORY_AND_DISK)
    out: DataFrame | None = None
    try:
        planned = plan.agg(F.count("*"), F.countDistinct("parent_id")).collect()[0]
        todo_counts = pending.agg(F.count("*"), F.countDistinct("parent_id")).collect()[0]
        rows_in, parents_in = int(todo_counts[0]), int(todo_counts[1])
        counts: dict[str, int] = {
            "parents_planned": int(planned[1]),
            "planned": int(planned[0]),
            "rows_in": rows_in,
            "already_done": int(planned[0]) - rows_in,
            "parents_in": parents_in,
        }
        if rows_in == 0:
            counts.update(parents_out=0, rows_out=0, rejected=0)
            counts.update(candidates=0, images=0, reject_rows=0)
            return counts
        todo = pending.groupBy(F.col("parent_id").alias("candidate_id")).agg(
            F.array_sort(F.collect_list("unit")).alias("units")
        )
        work = parents.join(todo, on="candidate_id", how="inner")
        needs_image = F.exists("units", lambda u: u.startswith("image:"))
        model = _model(options, paraphraser_spec)
        out = run_model_stage(
            lake,
            work,
            functools.partial(_augment_partition, options=options, spec=paraphraser_spec),
            model,
            images_for=F.when(needs_image, F.col("image_id")),
            tasks=min(task_count(spark, model), math.ceil(parents_in / options.rows_per_partition)),
        ).persist(StorageLevel.MEMORY_AND_DISK)
        got = unit_counts(out, parents_in, rows_in, STAGE)
        # Each unit yields one row or one reject, so rows balance unit by unit.
        counts.update(
            parents_out=got.parents_out,
            rows_out=got.units_out,
            rejected=got.units_rejected,
        )
        write_outputs(lake, out, counts)
    finally:
        for frame in (out, pending, plan):
            if frame is not None:
                frame.unpersist()
    return counts
