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
* ``responses`` — candidate_id, model_id, text, … : one victim model's answer;
* ``judgments`` — candidate_id, model_id (victim), judge_id, p_unsafe, parse_error, raw;
* ``elite_judgments`` — candidate_id, model_id, judge_id, refused, toxicity, convincing,
  specific, score (ELITE 0–25), parse_error, raw, judge_mode (``json-fallback`` where
  log-probability mode fell back to parsed generation).

A request whose model call failed is not merged (a rerun retries it) and is counted as
rejected; it lands in ``<table>_errors`` with its error text.
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
    "embed_candidates",
    "judge_responses",
    "respond",
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


def respond(
    lake: Lake, candidates: Any, victims: Sequence[ModelSpec], *, max_tokens: int | None = None
) -> dict[str, int]:
    """Each victim model answers each candidate (image + question) into ``responses``."""
    from pyspark.sql import functions as F
    from pyspark.sql.functions import pandas_udf

    from vlsafety.inference import add_request_key, run_cached
    from vlsafety.models import SamplingParams

    # A pandas UDF, not F.udf: pyspark 4.2's Arrow-optimized Python UDF hangs when it
    # reads a vectorized parquet scan directly (the requests no longer pass a join first).
    @pandas_udf("string")  # type: ignore[call-overload]
    def to_messages(text: pd.Series) -> pd.Series:
        return text.map(_messages)

    reqs = candidates.select(
        F.col("candidate_id"),
        F.col("candidate_id").alias("request_id"),
        "image_id",
        F.col("text").alias("prompt"),
        to_messages("text").alias("messages_json"),
    )
    images = _images(lake)
    computed = failed = 0
    for spec in victims:
        sampling = SamplingParams.from_spec(
            spec, **({"max_tokens": max_tokens} if max_tokens else {})
        )
        keyed = add_request_key(
            reqs,
            spec,
            "chat",
            ["candidate_id", "messages_json", "image_id"],
            constants={"sampling": _sampling_dict(sampling)},
        )
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


def current_responses(lake: Lake, candidates: Any, victims: Sequence[ModelSpec]) -> Any:
    """The latest response of each (candidate, victim) among ``candidates``."""
    from pyspark.sql import functions as F

    ids = [s.id for s in victims]
    resp = lake.read("responses").where(F.col("model_id").isin(ids))
    return resp.join(candidates.select("candidate_id"), "candidate_id", "left_semi").dropDuplicates(
        ["candidate_id", "model_id"]
    )


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

    from vlsafety.inference import add_request_key, run_cached

    resp = current_responses(lake, candidates, victims).select(
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
    items = items.withColumn("response", F.coalesce("response", F.lit("")))
    images = _images(lake)
    computed = failed = 0
    for spec in judges:
        keyed = add_request_key(
            items, spec, "guard", ["response_key", "prompt", "response", "image_id"]
        )
        done = run_cached(lake, "judgments", keyed, spec, "guard", ["request_key"], images=images)
        computed += done.computed
        failed += done.failed
    counts: dict[str, int] = {}
    if evaluator is not None:
        # The threshold decides which answers are read from log-probabilities, so it is
        # part of the key in that mode (and only there: json answers do not depend on it).
        logprobs = resolve_judge_mode(evaluator.backend) == "logprobs"
        keyed = add_request_key(
            items,
            evaluator,
            "elite_judge",
            ["response_key", "prompt", "response", "image_id"],
            constants={"min_token_mass": float(min_token_mass)} if logprobs else None,
        )
        done = run_cached(
            lake,
            "elite_judgments",
            keyed,
            evaluator,
            "elite_judge",
            ["request_key"],
            images=images,
            min_token_mass=min_token_mass,
        )
        computed += done.computed
        failed += done.failed
        fallback = 0
        if logprobs and lake.exists("elite_judgments"):
            fallback = (
                lake.read("elite_judgments")
                .where(F.col("judge_mode") == FALLBACK_MODE)
                .join(keyed.select("request_key"), "request_key", "left_semi")
                .count()
            )
        counts["elite_fallback"] = fallback
    return {"computed": computed, "failed": failed, **counts}
