"""Raw ``responses`` / ``judgments`` rows as the model stages leave them — current rows
next to stale ones (an earlier sampling config) and rows of an earlier judge config —
with request keys computed the way the stages compute them, for the score and evaluate
tests."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import reduce
from typing import Any

import pandas as pd

from vlsafety.inference import request_key
from vlsafety.models import ModelSpec, SamplingParams
from vlsafety.pipeline._model_stages import _messages, _sampling_dict
from vlsafety.pipeline._score import current_judgments, current_responses, score_frames

VICTIMS = [
    ModelSpec(
        id=f"m{k}", role="chat", backend="openai", endpoint="http://127.0.0.1:9/v1", model_name="x"
    )
    for k in range(2)
]
JUDGES = [ModelSpec(id=f"j{k}", role="guard", backend="refusal") for k in range(3)]
VICTIM_IDS = [s.id for s in VICTIMS]
JUDGE_IDS = [s.id for s in JUDGES]

RESPONSES = (
    "request_key string, candidate_id string, model_id string, text string, finish_reason string"
)
JUDGMENTS = (
    "request_key string, response_key string, candidate_id string, model_id string, "
    "judge_id string, p_unsafe double"
)
ELITE_JUDGMENTS = (
    "request_key string, response_key string, candidate_id string, model_id string, "
    "judge_id string, score double, refused double"
)


def stale_victim(spec: ModelSpec) -> ModelSpec:
    """The same model under an earlier sampling config (another response key)."""
    return dataclasses.replace(spec, temperature=0.7)


def old_judge(spec: ModelSpec) -> ModelSpec:
    """The same judge id under an earlier config (another judgment key)."""
    return dataclasses.replace(spec, options={"phrases": ["old phrase"]})


def response_key(spec: ModelSpec, cand: dict[str, Any]) -> str:
    sampling = _sampling_dict(SamplingParams.from_spec(spec))
    return request_key(
        spec,
        "chat",
        candidate_id=cand["candidate_id"],
        messages_json=_messages(cand["text"]),
        image_id=cand["image_id"],
        sampling=sampling,
    )


def judgment_key(
    judge: ModelSpec, response_key: str, cand: dict[str, Any], text: str, task: str = "guard"
) -> str:
    return request_key(
        judge,
        task,
        response_key=response_key,
        prompt=cand["text"] or "",
        response=text,
        image_id=cand["image_id"],
    )


class Lakeless:
    """Raw ``responses`` / ``judgments`` rows as the model stages leave them: current,
    stale (an earlier sampling config) and old-config judge rows side by side."""

    def __init__(self) -> None:
        self.cands: list[dict[str, Any]] = []
        self.responses: list[tuple[Any, ...]] = []
        self.judgments: list[tuple[Any, ...]] = []
        self.elite_judgments: list[tuple[Any, ...]] = []
        self.embeddings: list[tuple[str, list[float]]] = []

    def candidate(
        self, cid: str, text: str | None, image_id: str | None, emb: bool, category: str = "bias"
    ) -> None:
        self.cands.append(
            {"candidate_id": cid, "category": category, "text": text, "image_id": image_id}
        )
        if emb:
            self.embeddings.append((cid, [1.0, 0.0]))

    def respond(
        self,
        cid: str,
        spec: ModelSpec,
        text: str,
        *,
        victim_id: str,
        finish_reason: str | None = "stop",
    ) -> str:
        cand = next(c for c in self.cands if c["candidate_id"] == cid)
        key = response_key(spec, cand)
        self.responses.append((key, cid, victim_id, text, finish_reason))
        return key

    def judge(
        self, cid: str, victim_id: str, rkey: str, text: str, judge: ModelSpec, p: float | None
    ) -> None:
        cand = next(c for c in self.cands if c["candidate_id"] == cid)
        key = judgment_key(judge, rkey, cand, text)
        self.judgments.append((key, rkey, cid, victim_id, judge.id, p))

    def elite(
        self,
        cid: str,
        victim_id: str,
        rkey: str,
        text: str,
        evaluator: ModelSpec,
        score: float | None,
        refused: float | None,
    ) -> None:
        cand = next(c for c in self.cands if c["candidate_id"] == cid)
        key = judgment_key(evaluator, rkey, cand, text, task="elite_judge")
        self.elite_judgments.append((key, rkey, cid, victim_id, evaluator.id, score, refused))

    def write(self, spark: Any, lake: Any) -> Any:
        """The raw tables into ``lake``; returns the candidates as a benchmark DataFrame."""
        for table, rows, schema in (
            ("responses", self.responses, RESPONSES),
            ("judgments", self.judgments, JUDGMENTS),
            ("elite_judgments", self.elite_judgments, ELITE_JUDGMENTS),
        ):
            if rows:
                lake.write(spark.createDataFrame(rows, schema), table, "overwrite")
        return spark.createDataFrame(
            pd.DataFrame(self.cands),
            "candidate_id string, category string, text string, image_id string",
        )

    def frames(self, spark: Any) -> tuple[Any, Any, Any, Any]:
        """(candidates, current responses, current judgments, embeddings) as DataFrames."""
        cands = spark.createDataFrame(
            pd.DataFrame(self.cands),
            "candidate_id string, category string, text string, image_id string",
        )
        resp = current_responses(spark.createDataFrame(self.responses, RESPONSES), cands, VICTIMS)
        judg = current_judgments(
            spark.createDataFrame(self.judgments, JUDGMENTS), cands, resp, JUDGES
        )
        emb = spark.createDataFrame(self.embeddings, "candidate_id string, embedding array<double>")
        return cands, resp, judg, emb

    def score(
        self, spark: Any, policies: Sequence[str], threshold: float
    ) -> dict[str, tuple[dict[str, Any], dict[str, str]]]:
        """score_frames under each policy, collected in one Spark job (the policies share
        the current-row selection, so Spark computes it once)."""
        from pyspark.sql import functions as F

        cands, resp, judg, emb = self.frames(spark)
        parts = []
        for policy in policies:
            scored, rejects = score_frames(
                cands,
                resp,
                judg,
                emb,
                victims=VICTIM_IDS,
                judges=JUDGE_IDS,
                harmful_threshold=threshold,
                missing=policy,
            )
            cols = ["p_h", "harm", "judge_probs", "harmful", "n_judgments", "n_missing"]
            parts.append(
                scored.select(
                    F.lit(policy).alias("policy"),
                    "candidate_id",
                    F.lit(None).cast("string").alias("reason"),
                    *cols,
                )
            )
            parts.append(
                rejects.select(
                    F.lit(policy).alias("policy"),
                    F.col("sample_id").alias("candidate_id"),
                    "reason",
                    *[F.lit(None).alias(c) for c in cols],
                )
            )
        out: dict[str, tuple[dict[str, Any], dict[str, str]]] = {p: ({}, {}) for p in policies}
        for r in reduce(lambda a, b: a.unionByName(b), parts).collect():
            ok, bad = out[r["policy"]]
            if r["reason"] is None:
                ok[r["candidate_id"]] = r.asDict()
            else:
                bad[r["candidate_id"]] = r["reason"]
        return out
