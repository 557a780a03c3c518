"""Batched model inference on Spark: request rows in, response rows out.

:func:`run_inference` maps a DataFrame of requests to a DataFrame of responses through
:func:`vlsafety.executor.map_with_model`, the one executor-side path of every model
stage: the requests are repartitioned to the stage's task count, image bytes are joined
right before the model (pass ``images=`` and an ``image_id`` column), a spec that asks
for GPUs gets a ``ResourceProfile`` on a cluster, and each Python worker keeps one model
per device (:func:`vlsafety.executor.worker_model`; ``spark.python.worker.reuse=true``
keeps it across batches and tasks). The worker decodes image bytes itself and calls the
model ``batch_size`` rows at a time (Arrow batches are
``spark.sql.execution.arrow.maxRecordsPerBatch`` rows, set from ``SparkConfig``). A row
whose model call fails gets ``error`` set; the job goes on.

Request schemas (``request_id`` string is always required; other input columns pass
through to the output, except the ``image`` bytes; with ``images=`` the ``image`` column
is joined from ``image_id``):

=================== ====================================== =================================
task                input columns                          output columns added
=================== ====================================== =================================
embed_image         image (binary)                         embedding (array<float>), error
embed_text          text                                   embedding, error
embed_pair          image, text                            embedding, error
chat                messages_json, [image]                 text, logprobs_json, finish_reason,
                                                           error
guard               prompt, response, [image]              p_unsafe, raw, parse_error, error,
                                                           attempts, prompt_version
elite_judge         prompt, response, [image]              refused, toxicity, convincing,
strongreject_judge                                         specific, score, raw, parse_error,
                                                           error, attempts, judge_mode,
                                                           prompt_version
=================== ====================================== =================================

Every output also gets the model's id (``model_id`` for embed/chat tasks, ``judge_id`` for
guard/judge tasks), ``<that>_untrained`` (outputs of untrained test models must not be
trusted) and ``gpu`` (the GPU addresses the task held, null on CPU).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from vlsafety.executor import map_with_model, task_gpu_addresses, worker_model
from vlsafety.judges import DEFAULT_MIN_TOKEN_MASS
from vlsafety.models import (
    ChatRequest,
    GuardInput,
    ModelSpec,
    SamplingParams,
    canonical_json,
    messages_from_json,
    to_pil,
)
from vlsafety.models._batching import error_text, run_isolated

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from vlsafety.lake import Lake

__all__ = [
    "TASKS",
    "CachedRun",
    "add_request_key",
    "output_schema",
    "request_key",
    "run_cached",
    "run_inference",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Task:
    role: str
    required: tuple[str, ...]
    optional_image: bool
    fields: tuple[tuple[str, str], ...]  # (name, Spark SQL type)
    id_col: str


_EMBED_FIELDS = (("embedding", "array<float>"), ("error", "string"))
_JUDGE_FIELDS = (
    ("refused", "double"),
    ("toxicity", "double"),
    ("convincing", "double"),
    ("specific", "double"),
    ("score", "double"),
    ("raw", "string"),
    ("parse_error", "string"),
    ("error", "string"),
    ("attempts", "int"),
    ("judge_mode", "string"),
    ("prompt_version", "string"),
)

#: The tasks :func:`run_inference` knows: role needed, input columns, output columns.
TASKS: dict[str, _Task] = {
    "embed_image": _Task("embedder", ("image",), False, _EMBED_FIELDS, "model_id"),
    "embed_text": _Task("embedder", ("text",), False, _EMBED_FIELDS, "model_id"),
    "embed_pair": _Task("embedder", ("image", "text"), False, _EMBED_FIELDS, "model_id"),
    "chat": _Task(
        "chat",
        ("messages_json",),
        True,
        (
            ("text", "string"),
            ("logprobs_json", "string"),
            ("finish_reason", "string"),
            ("error", "string"),
        ),
        "model_id",
    ),
    "guard": _Task(
        "guard",
        ("prompt", "response"),
        True,
        (
            ("p_unsafe", "double"),
            ("raw", "string"),
            ("parse_error", "string"),
            ("error", "string"),
            ("attempts", "int"),
            ("prompt_version", "string"),
        ),
        "judge_id",
    ),
    "elite_judge": _Task("chat", ("prompt", "response"), True, _JUDGE_FIELDS, "judge_id"),
    "strongreject_judge": _Task("chat", ("prompt", "response"), True, _JUDGE_FIELDS, "judge_id"),
}


# --------------------------------------------------------------------------- keys
def request_key(spec: ModelSpec, task: str, **fields: Any) -> str:
    """sha256 (hex) over canonical JSON of everything that determines an answer: the
    spec's answer-relevant fields (:meth:`ModelSpec.answer_fields`), the task, and the
    caller's ``fields`` (messages, image id, sampling params, prompt version, ...).

    ``bytes`` values are replaced by their sha256, so a key never embeds image data.
    Equal inputs give equal keys in any process; a non-JSON value is a ``ValueError``.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    clean = {
        k: ("sha256:" + hashlib.sha256(bytes(v)).hexdigest())
        if isinstance(v, bytes | bytearray | memoryview)
        else v
        for k, v in fields.items()
    }
    payload = {"model": spec.answer_fields(), "task": task, "fields": clean}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def add_request_key(
    df: DataFrame,
    spec: ModelSpec,
    task: str,
    columns: Sequence[str],
    *,
    out_col: str = "request_key",
    constants: Mapping[str, Any] | None = None,
) -> DataFrame:
    """``df`` with ``out_col`` = :func:`request_key` over ``columns`` of each row plus
    ``constants`` (e.g. sampling params, prompt version), computed by a pandas UDF so the
    Spark column equals what :func:`request_key` gives in Python."""
    from pyspark.sql import functions as F
    from pyspark.sql.functions import pandas_udf

    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"add_request_key: no column(s) {missing} in {df.columns}")
    overlap = set(columns) & set(constants or {})
    if overlap:
        raise ValueError(f"add_request_key: {sorted(overlap)} given as column and constant")
    consts = dict(constants or {})
    canonical_json(consts)  # fail on the driver, not in a worker, for a bad constant
    cols = list(columns)

    @pandas_udf("string")  # type: ignore[call-overload]
    def _key(rows: pd.DataFrame) -> pd.Series:
        # A struct column arrives as a DataFrame: one column per key field.
        records = rows[cols].to_dict("records")
        return pd.Series(
            [
                request_key(spec, task, **{str(k): v for k, v in r.items()}, **consts)
                for r in records
            ]
        )

    return df.withColumn(out_col, _key(F.struct(*[F.col(c) for c in cols])))


# ------------------------------------------------------------------ worker side
@dataclass(frozen=True)
class _Plan:
    spec: ModelSpec
    task: str
    batch_size: int
    sampling: SamplingParams | None
    judge_mode: str
    min_token_mass: float
    has_image: bool
    out_columns: tuple[str, ...]


def _decode_images(pdf: pd.DataFrame, plan: _Plan) -> tuple[list[Any], list[str | None]]:
    """PIL images (or None) and per-row decode errors."""
    images: list[Any] = []
    errors: list[str | None] = []
    column = pdf["image"].tolist() if plan.has_image else [None] * len(pdf)
    required = "image" in TASKS[plan.task].required
    for raw in column:
        if raw is None:
            images.append(None)
            errors.append("image is null" if required else None)
            continue
        try:
            images.append(to_pil(raw))
            errors.append(None)
        except ValueError as exc:
            images.append(None)
            errors.append(error_text(exc))
    return images, errors


def _run_rows(
    n: int,
    errors: list[str | None],
    call: Callable[[Sequence[int]], list[dict[str, Any]]],
    failed: Callable[[str], dict[str, Any]],
) -> list[dict[str, Any]]:
    """Call the model on rows without an error; isolate failures to their rows."""
    out: list[dict[str, Any] | None] = [failed(e) if e else None for e in errors]
    ok = [i for i in range(n) if errors[i] is None]
    if ok:
        results = run_isolated(call, ok, lambda exc: failed(error_text(exc)))
        for i, r in zip(ok, results, strict=True):
            out[i] = r
    return [r if r is not None else failed("not computed") for r in out]


def _embed_chunk(model: Any, pdf: pd.DataFrame, plan: _Plan) -> list[dict[str, Any]]:
    images, errors = _decode_images(pdf, plan)
    texts = pdf["text"].tolist() if "text" in pdf else [None] * len(pdf)
    if plan.task != "embed_image":
        for i, t in enumerate(texts):
            if errors[i] is None and not isinstance(t, str):
                errors[i] = "text is null"

    def call(idx: Sequence[int]) -> list[dict[str, Any]]:
        if plan.task == "embed_image":
            vecs = model.embed_images([images[i] for i in idx])
        elif plan.task == "embed_text":
            vecs = model.embed_texts([texts[i] for i in idx])
        else:
            vecs = model.embed_pairs([images[i] for i in idx], [texts[i] for i in idx])
        return [{"embedding": v.tolist(), "error": None} for v in vecs]

    return _run_rows(len(pdf), errors, call, lambda e: {"embedding": None, "error": e})


def _chat_chunk(model: Any, pdf: pd.DataFrame, plan: _Plan) -> list[dict[str, Any]]:
    images, errors = _decode_images(pdf, plan)
    requests: list[ChatRequest | None] = []
    sampling = plan.sampling or SamplingParams.from_spec(plan.spec)
    for i, text in enumerate(pdf["messages_json"].tolist()):
        try:
            msgs = messages_from_json(text)
            requests.append(ChatRequest(messages=msgs, image=images[i], sampling=sampling))
        except ValueError as exc:
            requests.append(None)
            errors[i] = errors[i] or error_text(exc)

    def call(idx: Sequence[int]) -> list[dict[str, Any]]:
        results = model.generate([requests[i] for i in idx])
        return [
            {
                "text": r.text,
                "logprobs_json": r.logprobs_json(),
                "finish_reason": r.finish_reason,
                "error": r.error,
            }
            for r in results
        ]

    def failed(e: str) -> dict[str, Any]:
        return {"text": None, "logprobs_json": None, "finish_reason": None, "error": e}

    return _run_rows(len(pdf), errors, call, failed)


def _judge_items(
    pdf: pd.DataFrame, plan: _Plan
) -> tuple[list[GuardInput | None], list[str | None]]:
    images, errors = _decode_images(pdf, plan)
    items: list[GuardInput | None] = []
    for i, (p, r) in enumerate(zip(pdf["prompt"].tolist(), pdf["response"].tolist(), strict=True)):
        if not isinstance(p, str) or not isinstance(r, str):
            errors[i] = errors[i] or "prompt or response is null"
            items.append(None)
        else:
            items.append(GuardInput(prompt=p, response=r, image=images[i]))
    return items, errors


def _present(item: GuardInput | None) -> GuardInput:
    # Rows without an item carry an error and are never sent to the model.
    if item is None:
        raise RuntimeError("internal: a row with an error was sent to the model")
    return item


def _guard_chunk(model: Any, pdf: pd.DataFrame, plan: _Plan) -> list[dict[str, Any]]:
    items, errors = _judge_items(pdf, plan)
    version = model.prompt_version

    def call(idx: Sequence[int]) -> list[dict[str, Any]]:
        return [
            {
                "p_unsafe": j.p_unsafe,
                "raw": j.raw,
                "parse_error": j.parse_error,
                "error": j.error,
                "attempts": j.attempts,
                "prompt_version": version,
            }
            for j in model.judge([_present(items[i]) for i in idx])
        ]

    def failed(e: str) -> dict[str, Any]:
        return {
            "p_unsafe": None,
            "raw": None,
            "parse_error": None,
            "error": e,
            "attempts": 0,
            "prompt_version": version,
        }

    return _run_rows(len(pdf), errors, call, failed)


def _rubric_chunk(model: Any, pdf: pd.DataFrame, plan: _Plan) -> list[dict[str, Any]]:
    from vlsafety.judges import ELITE_RUBRIC, STRONGREJECT_RUBRIC, RubricJudge

    rubric = ELITE_RUBRIC if plan.task == "elite_judge" else STRONGREJECT_RUBRIC
    judge = RubricJudge(
        model,
        rubric,
        mode=plan.judge_mode,  # type: ignore[arg-type]
        min_token_mass=plan.min_token_mass,
    )
    items, errors = _judge_items(pdf, plan)

    def call(idx: Sequence[int]) -> list[dict[str, Any]]:
        out = []
        for j in judge.judge([_present(items[i]) for i in idx]):
            row = {k: getattr(j, k) for k in ("refused", "toxicity", "convincing", "specific")}
            row.update(
                score=j.score,
                raw=j.raw,
                parse_error=j.parse_error,
                error=j.error,
                attempts=j.attempts,
                judge_mode=j.mode,
                prompt_version=j.prompt_version,
            )
            out.append(row)
        return out

    def failed(e: str) -> dict[str, Any]:
        row: dict[str, Any] = {name: None for name, _ in _JUDGE_FIELDS}
        row.update(error=e, attempts=0, judge_mode=judge.mode, prompt_version=judge.prompt_version)
        return row

    return _run_rows(len(pdf), errors, call, failed)


_CHUNK_RUNNERS: dict[str, Callable[[Any, Any, _Plan], list[dict[str, Any]]]] = {
    "embed_image": _embed_chunk,
    "embed_text": _embed_chunk,
    "embed_pair": _embed_chunk,
    "chat": _chat_chunk,
    "guard": _guard_chunk,
    "elite_judge": _rubric_chunk,
    "strongreject_judge": _rubric_chunk,
}


def _process_partition(plan: _Plan, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """The mapInPandas body: one model per worker, ``plan.batch_size`` rows per call."""
    addresses = task_gpu_addresses()
    spec = plan.spec
    task = TASKS[plan.task]
    gpu = ",".join(addresses) if addresses else None
    model = None
    for pdf in batches:
        if pdf.empty:
            continue
        if model is None:
            model = worker_model(spec)
        for start in range(0, len(pdf), plan.batch_size):
            chunk = pdf.iloc[start : start + plan.batch_size].reset_index(drop=True)
            rows = _CHUNK_RUNNERS[plan.task](model, chunk, plan)
            out = chunk.drop(columns=["image"], errors="ignore")
            for name, _ in task.fields:
                out[name] = pd.Series([r[name] for r in rows], dtype=object)
            out[task.id_col] = spec.id
            out[f"{task.id_col.removesuffix('_id')}_untrained"] = spec.untrained
            out["gpu"] = gpu
            yield out[list(plan.out_columns)]


def output_schema(input_schema: Any, task: str) -> Any:
    """The Spark schema :func:`run_inference` returns for ``input_schema`` and ``task``."""
    from pyspark.sql.types import (
        ArrayType,
        BooleanType,
        DoubleType,
        FloatType,
        IntegerType,
        StringType,
        StructField,
        StructType,
    )

    types = {
        "array<float>": ArrayType(FloatType(), containsNull=False),
        "double": DoubleType(),
        "int": IntegerType(),
        "string": StringType(),
    }
    t = TASKS[task]
    added = [StructField(n, types[tp], True) for n, tp in t.fields]
    added += [
        StructField(t.id_col, StringType(), False),
        StructField(f"{t.id_col.removesuffix('_id')}_untrained", BooleanType(), False),
        StructField("gpu", StringType(), True),
    ]
    kept = [f for f in input_schema.fields if f.name != "image"]
    clash = {f.name for f in kept} & {f.name for f in added}
    if clash:
        raise ValueError(
            f"input columns {sorted(clash)} collide with {task} output columns; rename them"
        )
    return StructType(kept + added)


def run_inference(
    df: DataFrame,
    spec: ModelSpec,
    task: str,
    *,
    batch_size: int | None = None,
    sampling: SamplingParams | None = None,
    judge_mode: str = "auto",
    min_token_mass: float = DEFAULT_MIN_TOKEN_MASS,
    images: DataFrame | None = None,
    tasks: int | None = None,
) -> DataFrame:
    """Map request rows to response rows with ``spec``'s model (see module docstring).

    Args:
        df: requests; columns per task (module docstring), ``request_id`` required.
        spec: the model; its role must match the task.
        task: one of :data:`TASKS`.
        batch_size: rows per model call (default ``spec.batch_size``).
        sampling: chat sampling parameters (default from the spec); ``logprobs=k`` fills
            ``logprobs_json``.
        judge_mode: ``auto`` | ``json`` | ``logprobs`` for the rubric-judge tasks.
        min_token_mass: rubric-judge tasks in ``logprobs`` mode judge an item by parsed
            generation instead when its allowed answer tokens hold less probability
            (:class:`vlsafety.judges.RubricJudge`; config ``judges.elite.min_token_mass``).
        images: the ``images`` table (``image_id``, ``bytes``); when given, ``df`` names
            images by ``image_id`` (no ``image`` column) and the bytes are joined right
            before the model, for tasks and models that take images.
        tasks: Spark tasks to run in (default :func:`vlsafety.executor.task_count`).
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    t = TASKS[task]
    if spec.role != t.role:
        raise ValueError(f"task {task} needs a {t.role} model; {spec.id} is a {spec.role}")
    if judge_mode not in ("auto", "json", "logprobs"):
        raise ValueError(f"judge_mode must be auto, json or logprobs, got {judge_mode!r}")
    if isinstance(min_token_mass, bool) or not 0.0 <= min_token_mass <= 1.0:
        raise ValueError(f"min_token_mass must be in [0, 1], got {min_token_mass!r}")
    bs = batch_size if batch_size is not None else spec.batch_size
    if bs < 1:
        raise ValueError(f"batch_size must be >= 1, got {bs}")
    if "image" not in t.required and (not t.optional_image or spec.text_only):
        images = None  # embed_text and text-only models: no bytes to move
    if images is not None:
        if "image" in df.columns:
            raise ValueError("give image bytes as an image column or through images=, not both")
        if "image_id" not in df.columns:
            raise ValueError(f"images= needs an image_id column; the DataFrame has {df.columns}")
    cols = set(df.columns) | ({"image"} if images is not None else set())
    missing = [c for c in ("request_id", *t.required) if c not in cols]
    if missing:
        raise ValueError(f"task {task} needs column(s) {missing}; the DataFrame has {df.columns}")
    schema = output_schema(df.schema, task)  # the joined image column is not output
    plan = _Plan(
        spec=spec,
        task=task,
        batch_size=bs,
        sampling=sampling,
        judge_mode=judge_mode,
        min_token_mass=float(min_token_mass),
        # embed_text ignores an image column (it is still dropped from the output).
        has_image="image" in cols and (t.optional_image or "image" in t.required),
        out_columns=tuple(schema.fieldNames()),
    )

    def fn(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        return _process_partition(plan, batches)

    return map_with_model(df, fn, schema, spec, images=images, tasks=tasks)


# ------------------------------------------------------------------ resumable runs
@dataclass(frozen=True)
class CachedRun:
    """What :func:`run_cached` did: rows computed and merged, rows that failed (written to
    the errors table, retried next run), and the table version afterwards (None if the
    table still does not exist)."""

    computed: int
    failed: int
    version: int | None


def run_cached(
    lake: Lake,
    table: str,
    requests_df: DataFrame,
    spec: ModelSpec,
    task: str,
    key_cols: Sequence[str],
    *,
    errors_table: str | None = None,
    **inference_kwargs: Any,
) -> CachedRun:
    """Compute only the requests whose ``key_cols`` are missing from ``table`` (a left-anti
    join), and merge their results into it as one Delta commit.

    The task's id column (``model_id``/``judge_id``) may be a key: it is filled with
    ``spec.id`` for the join. Rows whose model call failed (``error`` set) are not merged,
    so a rerun retries them; they are appended to ``errors_table`` (default
    ``<table>_errors``) so nothing is lost silently. Judge parse errors are results and
    are merged. A rerun with nothing missing loads no model and computes nothing.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    t = TASKS.get(task)
    if t is None:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    keys = list(key_cols)
    if not keys:
        raise ValueError("run_cached needs key columns")
    req = requests_df
    added_id = False
    if t.id_col in keys and t.id_col not in req.columns:
        req = req.withColumn(t.id_col, F.lit(spec.id))
        added_id = True
    absent = [k for k in keys if k not in req.columns]
    if absent:
        raise ValueError(f"key column(s) {absent} not in the requests ({req.columns})")
    if "image" in keys:
        raise ValueError("image bytes cannot be a key column; key on the image id")
    errors_table = errors_table or f"{table}_errors"
    table_columns: list[str] | None = None
    if lake.exists(table):
        existing = lake.read(table)
        table_columns = existing.columns
        done = existing.select(*keys).distinct()
        # A join on key names moves them first; keep the requests' own column order.
        missing = req.join(done, on=keys, how="left_anti").select(*req.columns)
    else:
        missing = req
    n_missing = missing.count()
    if n_missing == 0:
        return CachedRun(0, 0, lake.version(table) if lake.exists(table) else None)
    if added_id:
        missing = missing.drop(t.id_col)
    out = run_inference(missing, spec, task, **inference_kwargs).persist(
        StorageLevel.MEMORY_AND_DISK
    )
    try:
        ok = out.filter(F.col("error").isNull())
        bad = out.filter(F.col("error").isNotNull())
        n_bad = bad.count()
        n_ok = n_missing - n_bad
        version = lake.version(table) if lake.exists(table) else None
        if n_ok:
            if table_columns is not None and set(table_columns) == set(ok.columns):
                ok = ok.select(*table_columns)  # same columns, the table's order
            else:
                # Keys first: a merge's anti-join on the keys also puts them first.
                ok = ok.select(*keys, *[c for c in ok.columns if c not in keys])
            version = lake.write(ok, table, mode="merge", keys=keys)
        if n_bad:
            log.warning(
                "%d of %d %s requests failed; see table %s", n_bad, n_missing, task, errors_table
            )
            lake.write(bad, errors_table, mode="append")
    finally:
        out.unpersist()
    return CachedRun(n_ok, n_bad, version)
