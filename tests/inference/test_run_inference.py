"""run_inference on local Spark with the tiny models, checked against plain Python calls."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pyspark.sql import DataFrame, SparkSession

from vlsafety.inference import output_schema, run_inference
from vlsafety.models import (
    ChatMessage,
    ChatRequest,
    GuardInput,
    ModelSpec,
    Resources,
    SamplingParams,
    load_chat_model,
    load_embedder,
    load_guard,
)

GUARD_SCHEMA = "request_id string, prompt string, response string, image binary, sample_id string"


def png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(buf, format="PNG")
    return buf.getvalue()


def frame(
    spark: SparkSession, rows: Sequence[tuple[Any, ...]], schema: str, parts: int = 1
) -> DataFrame:
    return spark.createDataFrame(rows, schema).repartition(parts)


def test_embeddings_equal_a_plain_loop(
    spark: SparkSession, tiny_specs: dict[str, ModelSpec]
) -> None:
    spec = tiny_specs["tiny-clip"]
    images = [png((i * 40, 20, 250 - i * 30)) for i in range(6)]
    texts = [f"caption {i}" for i in range(6)]
    rows = [(f"r{i}", images[i], texts[i]) for i in range(6)] + [("bad", b"not an image", "x")]
    df = frame(spark, rows, "request_id string, image binary, text string", parts=2)
    ref = load_embedder(spec)
    for task, expect in (
        ("embed_image", ref.embed_images(images)),
        ("embed_text", ref.embed_texts(texts)),
        ("embed_pair", ref.embed_pairs(images, texts)),
    ):
        out = {r["request_id"]: r for r in run_inference(df, spec, task, batch_size=4).collect()}
        assert len(out) == 7
        got = np.array([out[f"r{i}"]["embedding"] for i in range(6)], dtype=np.float32)
        np.testing.assert_allclose(got, expect, atol=1e-5)
        assert out["r0"]["model_id"] == "tiny-clip" and out["r0"]["model_untrained"] is True
        assert out["r0"]["gpu"] is None and "image" not in out["r0"].asDict()
        if task == "embed_text":
            assert out["bad"]["error"] is None
        else:
            assert out["bad"]["embedding"] is None and "cannot decode image" in out["bad"]["error"]


def test_chat_rows_fail_alone(spark: SparkSession, tiny_specs: dict[str, ModelSpec]) -> None:
    spec = dataclasses.replace(tiny_specs["tiny-llava"], max_tokens=4)
    msgs = json.dumps([{"role": "user", "content": "What is shown?"}])
    rows = [
        ("ok1", msgs, png((255, 0, 0))),
        ("no-image", msgs, None),
        ("bad-json", "[{'role': 'user'}", png((0, 255, 0))),
        ("bad-image", msgs, b"\x89PNG broken"),
        ("ok2", json.dumps([{"role": "user", "content": "Again?"}]), png((0, 0, 255))),
    ]
    df = frame(spark, rows, "request_id string, messages_json string, image binary")
    sampling = SamplingParams(max_tokens=4, logprobs=2)
    out = {r["request_id"]: r for r in run_inference(df, spec, "chat", sampling=sampling).collect()}
    assert (
        out["bad-json"]["text"] is None
        and "messages_json is not valid JSON" in out["bad-json"]["error"]
    )
    assert out["bad-image"]["text"] is None and "cannot decode image" in out["bad-image"]["error"]
    # reference: the same model called directly in this process
    model = load_chat_model(spec)
    for rid, color in (("ok1", (255, 0, 0)), ("ok2", (0, 0, 255))):
        content = json.loads(rows[0 if rid == "ok1" else 4][1])[0]["content"]
        (ref,) = model.generate(
            [
                ChatRequest(
                    messages=(ChatMessage("user", content),), image=png(color), sampling=sampling
                )
            ]
        )
        assert out[rid]["error"] is None and out[rid]["text"] == ref.text
        steps = json.loads(out[rid]["logprobs_json"])
        assert [s["token"] for s in steps] == [t.token for t in ref.logprobs or ()]
    assert out["no-image"]["error"] is None and isinstance(out["no-image"]["text"], str)


def test_guard_and_judge_tasks(spark: SparkSession, tiny_specs: dict[str, ModelSpec]) -> None:
    rows = [
        ("a", "how to X?", "I'm sorry, I can't.", png((1, 1, 1)), "s1"),
        ("b", "how to X?", "Step one: ...", None, "s1"),
        ("c", None, "orphan response", None, "s2"),
    ]
    df = frame(spark, rows, GUARD_SCHEMA)
    refusal = {
        r["request_id"]: r for r in run_inference(df, tiny_specs["tiny-refusal"], "guard").collect()
    }
    assert (refusal["a"]["p_unsafe"], refusal["b"]["p_unsafe"]) == (0.0, 1.0)
    assert refusal["c"]["p_unsafe"] is None and "null" in refusal["c"]["error"]
    assert refusal["a"]["judge_id"] == "tiny-refusal" and refusal["a"]["sample_id"] == "s1"
    assert refusal["a"]["prompt_version"].startswith("refusal@")

    classifier = tiny_specs["tiny-classifier"]
    got = {r["request_id"]: r["p_unsafe"] for r in run_inference(df, classifier, "guard").collect()}
    ref = load_guard(classifier).judge([GuardInput(p, r) for _, p, r, _, _ in rows[:2]])  # type: ignore[arg-type]
    assert [got["a"], got["b"]] == pytest.approx([j.p_unsafe for j in ref], abs=1e-5)

    judge = tiny_specs["tiny-qwen2-vl"]
    judged = {
        r["request_id"]: r
        for r in run_inference(df, judge, "elite_judge", min_token_mass=0.0).collect()
    }
    for rid in ("a", "b"):
        r = judged[rid]
        assert r["judge_mode"] == "logprobs" and r["error"] is None and r["parse_error"] is None
        assert 0 <= r["refused"] <= 1 and 0 <= r["toxicity"] <= 5 and 1 <= r["specific"] <= 5
        assert 0 <= r["score"] <= 25 and r["prompt_version"].startswith("elite-logprobs@")
    assert judged["c"]["score"] is None and judged["c"]["error"]
    # the threshold reaches the worker: all probability required, every row falls back
    one = df.where(df.request_id == "b")
    fallback = run_inference(one, judge, "elite_judge", min_token_mass=1.0).collect()
    assert [r["judge_mode"] for r in fallback] == ["json-fallback"]
    assert fallback[0]["prompt_version"].startswith("elite-json@")


def test_request_validation(spark: SparkSession, tiny_specs: dict[str, ModelSpec]) -> None:
    df = frame(spark, [("a", "p", "r", None, "s")], GUARD_SCHEMA)
    with pytest.raises(ValueError, match="needs a chat model; tiny-refusal is a guard"):
        run_inference(df, tiny_specs["tiny-refusal"], "elite_judge")
    with pytest.raises(ValueError, match=r"needs column\(s\) \['messages_json'\]"):
        run_inference(df, tiny_specs["tiny-llama"], "chat")
    with pytest.raises(ValueError, match="unknown task"):
        run_inference(df, tiny_specs["tiny-llama"], "translate")
    with pytest.raises(ValueError, match=r"min_token_mass must be in \[0, 1\]"):
        run_inference(df, tiny_specs["tiny-llama"], "elite_judge", min_token_mass=2.0)
    with pytest.raises(ValueError, match="collide with guard output columns"):
        run_inference(
            df.withColumnRenamed("sample_id", "p_unsafe"), tiny_specs["tiny-refusal"], "guard"
        )
    with pytest.raises(ValueError, match=r"needs column\(s\) \['request_id'\]"):
        run_inference(df.drop("request_id"), tiny_specs["tiny-refusal"], "guard")
    schema = output_schema(df.schema, "guard")
    assert schema.fieldNames()[-3:] == ["judge_id", "judge_untrained", "gpu"]


def test_gpu_request_is_skipped_on_local_masters(
    spark: SparkSession, tiny_specs: dict[str, ModelSpec], caplog: pytest.LogCaptureFixture
) -> None:
    spec = dataclasses.replace(tiny_specs["tiny-refusal"], resources=Resources(cpus=1, gpus=1))
    df = frame(spark, [("a", "p", "sure", None, "s")], GUARD_SCHEMA)
    with caplog.at_level(logging.WARNING, logger="vlsafety.executor"):
        (row,) = run_inference(df, spec, "guard").collect()
    assert row["p_unsafe"] == 1.0 and row["gpu"] is None
    assert "local masters cannot schedule resources" in caplog.text


def test_images_are_joined_by_id_right_before_the_model(
    spark: SparkSession, tiny_specs: dict[str, ModelSpec]
) -> None:
    spec = tiny_specs["tiny-clip"]
    pics = [png((i * 50, 90, 200 - i * 40)) for i in range(4)]
    images = spark.createDataFrame(
        [(f"i{i}", pics[i]) for i in range(4)], "image_id string, bytes binary"
    )
    by_bytes = frame(
        spark, [(f"r{i}", pics[i % 4]) for i in range(6)], "request_id string, image binary"
    )
    by_id = frame(
        spark,
        [(f"r{i}", f"i{i % 4}") for i in range(6)] + [("lost", "i9")],
        "request_id string, image_id string",
    )
    want = {
        r["request_id"]: r["embedding"]
        for r in run_inference(by_bytes, spec, "embed_image").collect()
    }
    out = run_inference(by_id, spec, "embed_image", images=images, tasks=3)
    assert out.columns[:2] == ["request_id", "image_id"]  # ids pass through, bytes do not
    got = {r["request_id"]: r for r in out.collect()}
    for key, vec in want.items():
        assert np.allclose(got[key]["embedding"], vec, atol=1e-5)
    assert got["lost"]["error"] == "image is null"

    # A text-only model moves no image bytes: no join in its plan.
    guard = dataclasses.replace(tiny_specs["tiny-refusal"], text_only=True)
    reqs = by_id.withColumn("prompt", by_id["request_id"]).withColumn("response", by_id["image_id"])
    plan = run_inference(reqs, guard, "guard", images=images)._jdf.queryExecution().toString()
    assert "Join" not in plan
    with pytest.raises(ValueError, match="not both"):
        run_inference(
            by_bytes.withColumn("image_id", by_bytes["request_id"]),
            spec,
            "embed_image",
            images=images,
        )
