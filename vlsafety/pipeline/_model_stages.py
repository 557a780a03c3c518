"""Model stages of the build and evaluate jobs: embed, respond, judge.

Each goes through :func:`vlsafety.inference.run_cached`: requests are keyed by a hash of
everything that determines the answer (model, messages, image id, sampling, prompt
version), only missing keys are computed, and results are merged into Delta — so a
killed job resumes where it stopped and a rerun is nearly free. Requests carry image ids
only; the bytes of the ``images`` table are joined right before the model
(:func:`vlsafety.executor.map_with_model`), after the resume anti-join.

Tables (all keyed by ``request_key``):

* ``candidate_embeddings`` — candidate_id, model_id, embedding (joint image-text CLIP
  embedding; text or image alone when the candidate lacks the other);
* ``responses`` — candidate_id, model_id, text, finish_reason, … : one victim model's
  answer (a backend refusal is an answer with ``finish_reason`` ``refusal``);
* ``judgments`` — candidate_id, model_id (victim), judge_id, p_unsafe, parse_error, raw;
* ``elite_judgments`` — candidate_id, model_id, judge_id, refused, toxicity, convincing,
  specific, score (ELITE 0–25), parse_error, raw, judge_mode (``json-fallback`` where
  log-probability mode fell back to parsed generation).

A request whose model call failed is not merged (a rerun retries it) and is counted as
rejected; it lands in ``<table>_errors`` with its error text.

The tables keep every answer ever computed. Which rows count is decided by the current
config: :func:`current_responses` and :func:`current_judgments` recompute the keys the
stages would request now and keep only those rows, so after a prompt, sampling or judge
change the old rows stay cached (a revert reuses them) but are never mixed in.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pandas as pd

from vlsafety.judges import DEFAULT_MIN_TOKEN_MASS, FALLBACK_MODE, resolve_judge_mode
from vlsafety.lake import Lake
from vlsafety.models import ModelSpec

__all__ = [
    "JUDGE_TABLES",
    "current_judgments",
    "current_responses",
    "embed_candidates",
    "judge_responses",
    "per_judge_probs",
    "respond",
    "response_requests",
]


def _images(lake: Lake) -> Any:
    """The ``images`` table's ids and bytes, joined by the model stage itself."""
    return lake.read("images").select("image_id", "bytes")


def embed_candidates(lake: Lake, candidates: Any, spec: ModelSpec) -> dict[str, int]:
    """Joint embeddings of ``candidates`` into ``candidate_embeddings``."""
    from pyspark.sql import functions as F

    from vlsafety.inference import add_request_key, run_cached

    cands = candidates.select("candidate_id", "image_id", "text")
    cands = cands.withColumn("request_id", F.col("candidate_id"))
    with_image = F.col("image_id").isNotNull()
    groups = {
        "embed_pair": cands.where(with_image & F.col("text").isNotNull()),
        "embed_image": cands.where(with_image & F.col("text").isNull()).drop("text"),
        "embed_text": cands.where(~with_image),
    }
    images = _images(lake)
    computed = failed = 0
    for task, part in groups.items():
        cols = (
            ["candidate_id", "image_id", "text"]
            if task != "embed_image"
            else ["candidate_id", "image_id"]
        )
        cols = [c for c in cols if c in part.columns]
        keyed = add_request_key(part, spec, task, cols)
        done = run_cached(
            lake, "candidate_embeddings", keyed, spec, task, ["request_key"], images=images
        )
        computed += done.computed
        failed += done.failed
    return {"computed": computed, "failed": failed}


def _messages(text: str | None) -> str:
    return json.dumps([{"role": "user", "content": text or ""}], ensure_ascii=False)


#: The request fields a response's key hashes besides the model (and the sampling).
RESPONSE_KEY_COLUMNS = ("candidate_id", "messages_json", "image_id")
#: The request fields a judgment's key hashes besides the judge.
JUDGMENT_KEY_COLUMNS = ("response_key", "prompt", "response", "image_id")


def _sampling(spec: ModelSpec, max_tokens: int | None) -> Any:
    from vlsafety.models import SamplingParams

    return SamplingParams.from_spec(spec, **({"max_tokens": max_tokens} if max_tokens else {}))


def _current_keys(
    df: Any, specs: Sequence[ModelSpec], task: str, constants: Sequence[dict[str, Any]]
) -> Any:
    """One ``request_key`` row per (row of ``df``, spec): the key each spec's request for
    the row has now. One pandas UDF for all specs (not one per spec: the plans that use
    these keys stay small)."""
    from pyspark.sql import functions as F
    from pyspark.sql.functions import pandas_udf

    from vlsafety.inference import request_key

    cols = list(RESPONSE_KEY_COLUMNS if task == "chat" else JUDGMENT_KEY_COLUMNS)
    pairs = list(zip(specs, constants, strict=True))

    @pandas_udf("array<string>")  # type: ignore[call-overload]
    def keys(rows: pd.DataFrame) -> pd.Series:
        records = rows[cols].to_dict("records")
        return pd.Series(
            [
                [
                    request_key(spec, task, **{str(k): v for k, v in r.items()}, **c)
                    for spec, c in pairs
                ]
                for r in records
            ]
        )

    return df.select(F.explode(keys(F.struct(*[F.col(c) for c in cols]))).alias("request_key"))


def response_requests(
    candidates: Any, spec: ModelSpec, *, max_tokens: int | None = None
) -> tuple[Any, Any]:
    """``spec``'s chat requests for ``candidates``, keyed (``request_key``), and their
    sampling parameters. The key hashes the model, the messages, the image id and the
    sampling, so a changed prompt or sampling config gives new keys."""
    from vlsafety.inference import add_request_key

    sampling = _sampling(spec, max_tokens)
    keyed = add_request_key(
        _chat_requests(candidates),
        spec,
        "chat",
        list(RESPONSE_KEY_COLUMNS),
        constants={"sampling": _sampling_dict(sampling)},
    )
    return keyed, sampling


def _chat_requests(candidates: Any) -> Any:
    from pyspark.sql import functions as F
    from pyspark.sql.functions import pandas_udf

    # A pandas UDF, not F.udf: pyspark 4.2's Arrow-optimized Python UDF hangs when it
    # reads a vectorized parquet scan directly (the requests no longer pass a join first).
    @pandas_udf("string")  # type: ignore[call-overload]
    def to_messages(text: pd.Series) -> pd.Series:
        return text.map(_messages)

    return candidates.select(
        F.col("candidate_id"),
        F.col("candidate_id").alias("request_id"),
        "image_id",
        F.col("text").alias("prompt"),
        to_messages("text").alias("messages_json"),
    )


def respond(
    lake: Lake, candidates: Any, victims: Sequence[ModelSpec], *, max_tokens: int | None = None
) -> dict[str, int]:
    """Each victim model answers each candidate (image + question) into ``responses``."""
    from vlsafety.inference import run_cached

    images = _images(lake)
    computed = failed = 0
    for spec in victims:
        keyed, sampling = response_requests(candidates, spec, max_tokens=max_tokens)
        done = run_cached(
            lake,
            "responses",
            keyed,
            spec,
            "chat",
            ["request_key"],
            sampling=sampling,
            images=images,
        )
        computed += done.computed
        failed += done.failed
    return {"computed": computed, "failed": failed}


def _sampling_dict(s: Any) -> dict[str, Any]:
    import dataclasses

    return {k: v for k, v in dataclasses.asdict(s).items()}


def current_responses(
    responses: Any,
    candidates: Any,
    victims: Sequence[ModelSpec],
    *,
    max_tokens: int | None = None,
) -> Any:
    """The responses of ``victims`` to ``candidates`` under the current config.

    ``responses`` is the ``responses`` table, which keeps every answer ever computed
    (keyed by ``request_key``). The one that counts for a (candidate, model) is the one
    whose key is the key :func:`respond` would ask for now — the same model, messages,
    image and sampling — so after a prompt or sampling change the old answers are never
    mixed in, and a (candidate, model) whose current request failed has no row. At most
    one row per (candidate, model).
    """
    if not victims:
        raise ValueError("current_responses: no victim models")
    consts = [{"sampling": _sampling_dict(_sampling(spec, max_tokens))} for spec in victims]
    keys = _current_keys(_chat_requests(candidates), victims, "chat", consts)
    return responses.join(keys, "request_key", "left_semi")


#: The judgment table of each judge task.
JUDGE_TABLES = {"guard": "judgments", "elite_judge": "elite_judgments"}


def _judge_items(candidates: Any, responses: Any) -> Any:
    """What a judge sees of each current response: ids, prompt, response, image id."""
    from pyspark.sql import functions as F

    resp = responses.select(
        "candidate_id",
        "model_id",
        F.col("request_key").alias("response_key"),
        F.col("text").alias("response"),
    )
    items = resp.join(
        candidates.select("candidate_id", "image_id", F.col("text").alias("prompt")), "candidate_id"
    )
    items = items.withColumn("request_id", F.col("response_key"))
    items = items.withColumn("prompt", F.coalesce("prompt", F.lit("")))
    return items.withColumn("response", F.coalesce("response", F.lit("")))


def _judge_constants(spec: ModelSpec, task: str, min_token_mass: float) -> dict[str, Any]:
    """What else a judge request's key hashes: in log-probability mode the ELITE
    evaluator's ``min_token_mass`` decides which answers are read from the log-probs (so
    it is part of the key there, and only there: json answers do not depend on it)."""
    if task == "elite_judge" and resolve_judge_mode(spec.backend) == "logprobs":
        return {"min_token_mass": float(min_token_mass)}
    return {}


def _judge_requests(
    items: Any, spec: ModelSpec, task: str, *, min_token_mass: float = DEFAULT_MIN_TOKEN_MASS
) -> Any:
    from vlsafety.inference import add_request_key

    constants = _judge_constants(spec, task, min_token_mass)
    return add_request_key(
        items, spec, task, list(JUDGMENT_KEY_COLUMNS), constants=constants or None
    )


def current_judgments(
    judgments: Any,
    candidates: Any,
    responses: Any,
    judges: Sequence[ModelSpec],
    *,
    task: str = "guard",
    min_token_mass: float = DEFAULT_MIN_TOKEN_MASS,
) -> Any:
    """The judgments by ``judges`` of the current ``responses`` (:func:`current_responses`).

    ``judgments`` is the task's table (:data:`JUDGE_TABLES`). A judgment counts when its
    key is the one :func:`judge_responses` would ask for now: judgments of stale responses
    and those of an earlier judge config are left out, so each (candidate, model, judge)
    has at most one row.
    """
    if task not in JUDGE_TABLES:
        raise ValueError(f"task: must be one of {', '.join(JUDGE_TABLES)}, got {task!r}")
    if not judges:
        raise ValueError("current_judgments: no judges")
    items = _judge_items(candidates, responses)
    consts = [_judge_constants(spec, task, min_token_mass) for spec in judges]
    keys = _current_keys(items, judges, task, consts)
    return judgments.join(keys, "request_key", "left_semi")


def judge_responses(
    lake: Lake,
    candidates: Any,
    victims: Sequence[ModelSpec],
    judges: Sequence[ModelSpec],
    evaluator: ModelSpec | None,
    *,
    min_token_mass: float = DEFAULT_MIN_TOKEN_MASS,
) -> dict[str, int]:
    """Every guard judges every current response (``judgments``); the ELITE evaluator
    scores them too (``elite_judgments``).

    Counts: ``computed`` and ``failed`` requests; with an evaluator also
    ``elite_fallback``, how many of the current responses' ELITE judgments log-probability
    mode handed to parsed generation (``min_token_mass``, config
    ``judges.elite.min_token_mass``)."""
    from pyspark.sql import functions as F

    from vlsafety.inference import run_cached

    resp = current_responses(lake.read("responses"), candidates, victims)
    items = _judge_items(candidates, resp)
    images = _images(lake)
    computed = failed = 0
    work = [(spec, "guard") for spec in judges]
    if evaluator is not None:
        work.append((evaluator, "elite_judge"))
    counts: dict[str, int] = {}
    for spec, task in work:
        keyed = _judge_requests(items, spec, task, min_token_mass=min_token_mass)
        extra: dict[str, Any] = {"min_token_mass": min_token_mass} if task == "elite_judge" else {}
        done = run_cached(
            lake, JUDGE_TABLES[task], keyed, spec, task, ["request_key"], images=images, **extra
        )
        computed += done.computed
        failed += done.failed
        if task != "elite_judge":
            continue
        fallback = 0
        if _judge_constants(spec, task, min_token_mass) and lake.exists("elite_judgments"):
            fallback = (
                lake.read("elite_judgments")
                .where(F.col("judge_mode") == FALLBACK_MODE)
                .join(keyed.select("request_key"), "request_key", "left_semi")
                .count()
            )
        counts["elite_fallback"] = fallback
    return {"computed": computed, "failed": failed, **counts}


def per_judge_probs(judgments: Any, judge_ids: Sequence[str], prefix: str) -> Any:
    """One row per (candidate_id, model_id) of the current ``judgments``, with column
    ``{prefix}{k}`` = judge ``judge_ids[k]``'s P(unsafe): null unless that judge has exactly
    one judgment of the response with a valid (non-null, non-NaN) probability."""
    from pyspark.sql import functions as F

    valid_p = F.when(F.col("p_unsafe").isNotNull() & ~F.isnan("p_unsafe"), F.col("p_unsafe"))
    is_j = [F.col("judge_id") == j for j in judge_ids]
    return judgments.groupBy("candidate_id", "model_id").agg(
        *[
            F.when(
                F.count(F.when(c, F.lit(1))) == 1,
                F.first(F.when(c, valid_p), ignorenulls=True),
            )
            .cast("double")
            .alias(f"{prefix}{k}")
            for k, c in enumerate(is_j)
        ]
    )
