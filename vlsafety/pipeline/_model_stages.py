"""Model stages of the build and evaluate jobs: embed, respond, judge.

Each goes through :func:`vlsafety.inference.run_cached`: requests are keyed by a hash of
everything that determines the answer (model, messages, image id, sampling, prompt
version), only missing keys are computed, and results are merged into Delta — so a
killed job resumes where it stopped and a rerun is nearly free.

Tables (all keyed by ``request_key``):

* ``candidate_embeddings`` — candidate_id, model_id, embedding (joint image-text CLIP
  embedding; text or image alone when the candidate lacks the other);
* ``responses`` — candidate_id, model_id, text, … : one victim model's answer;
* ``judgments`` — candidate_id, model_id (victim), judge_id, p_unsafe, parse_error, raw;
* ``elite_judgments`` — candidate_id, model_id, judge_id, refused, toxicity, convincing,
  specific, score (ELITE 0–25), parse_error, raw.

A request whose model call failed is not merged (a rerun retries it) and is counted as
rejected; it lands in ``<table>_errors`` with its error text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from vlsafety.lake import Lake
from vlsafety.models import ModelSpec

__all__ = [
    "embed_candidates",
    "judge_responses",
    "respond",
    "with_image_bytes",
]


def with_image_bytes(lake: Lake, df: Any) -> Any:
    """``df`` (with ``image_id``) joined with the image bytes as column ``image``."""
    images = lake.read("images").select("image_id", lake_col("bytes").alias("image"))
    return df.join(images, "image_id", "left")


def lake_col(name: str) -> Any:
    from pyspark.sql import functions as F

    return F.col(name)


def _for_model(df: Any, spec: ModelSpec) -> Any:
    """Requests as ``spec`` takes them: a text-only model gets no image column."""
    return df.drop("image") if spec.text_only and "image" in df.columns else df


def embed_candidates(lake: Lake, candidates: Any, spec: ModelSpec) -> dict[str, int]:
    """Joint embeddings of ``candidates`` into ``candidate_embeddings``."""
    from pyspark.sql import functions as F

    from vlsafety.inference import add_request_key, run_cached

    cands = with_image_bytes(lake, candidates.select("candidate_id", "image_id", "text"))
    cands = cands.withColumn("request_id", F.col("candidate_id"))
    groups = {
        "embed_pair": cands.where(F.col("image").isNotNull() & F.col("text").isNotNull()),
        "embed_image": cands.where(F.col("image").isNotNull() & F.col("text").isNull()).drop(
            "text"
        ),
        "embed_text": cands.where(F.col("image").isNull()).drop("image"),
    }
    computed = failed = 0
    for task, part in groups.items():
        cols = (
            ["candidate_id", "image_id", "text"]
            if task != "embed_image"
            else ["candidate_id", "image_id"]
        )
        cols = [c for c in cols if c in part.columns]
        keyed = add_request_key(part, spec, task, cols)
        done = run_cached(lake, "candidate_embeddings", keyed, spec, task, ["request_key"])
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
    from pyspark.sql.types import StringType

    from vlsafety.inference import add_request_key, run_cached
    from vlsafety.models import SamplingParams

    # a lambda: pyspark 4 warns that it cannot infer an eval type from _messages' hints
    to_messages = F.udf(lambda text: _messages(text), StringType())
    reqs = with_image_bytes(lake, candidates.select("candidate_id", "image_id", "text"))
    reqs = reqs.select(
        F.col("candidate_id"),
        F.col("candidate_id").alias("request_id"),
        "image_id",
        "image",
        F.col("text").alias("prompt"),
        to_messages("text").alias("messages_json"),
    )
    computed = failed = 0
    for spec in victims:
        sampling = SamplingParams.from_spec(
            spec, **({"max_tokens": max_tokens} if max_tokens else {})
        )
        keyed = add_request_key(
            _for_model(reqs, spec),
            spec,
            "chat",
            ["candidate_id", "messages_json", "image_id"],
            constants={"sampling": _sampling_dict(sampling)},
        )
        done = run_cached(
            lake, "responses", keyed, spec, "chat", ["request_key"], sampling=sampling
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
) -> dict[str, int]:
    """Every guard judges every current response (``judgments``); the ELITE evaluator
    scores them too (``elite_judgments``)."""
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
    items = with_image_bytes(lake, items).withColumn("request_id", F.col("response_key"))
    items = items.withColumn("prompt", F.coalesce("prompt", F.lit("")))
    items = items.withColumn("response", F.coalesce("response", F.lit("")))
    computed = failed = 0
    for spec in judges:
        keyed = add_request_key(
            _for_model(items, spec),
            spec,
            "guard",
            ["response_key", "prompt", "response", "image_id"],
        )
        done = run_cached(lake, "judgments", keyed, spec, "guard", ["request_key"])
        computed += done.computed
        failed += done.failed
    if evaluator is not None:
        keyed = add_request_key(
            _for_model(items, evaluator),
            evaluator,
            "elite_judge",
            ["response_key", "prompt", "response", "image_id"],
        )
        done = run_cached(lake, "elite_judgments", keyed, evaluator, "elite_judge", ["request_key"])
        computed += done.computed
        failed += done.failed
    return {"computed": computed, "failed": failed}
