"""request_key: deterministic, sensitive to what determines an answer, blind to the rest."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyspark.sql import SparkSession

from vlsafety.inference import add_request_key, request_key
from vlsafety.models import ModelSpec, SamplingParams

SPEC = ModelSpec(id="victim", role="chat", backend="hf", path="/w/victim", max_tokens=64)
MSGS = [{"role": "user", "content": "How do I do X?"}]


def test_equal_inputs_equal_keys_and_sensitivity() -> None:
    base = request_key(
        SPEC, "chat", messages=MSGS, image_id="abc", sampling=SamplingParams(), prompt_version="p@1"
    )
    assert len(base) == 64 and base == request_key(
        SPEC, "chat", prompt_version="p@1", sampling=SamplingParams(), image_id="abc", messages=MSGS
    )
    changed = [
        request_key(
            SPEC,
            "chat",
            messages=[{"role": "user", "content": "How do I do Y?"}],
            image_id="abc",
            sampling=SamplingParams(),
            prompt_version="p@1",
        ),
        request_key(
            SPEC,
            "chat",
            messages=MSGS,
            image_id="abd",
            sampling=SamplingParams(),
            prompt_version="p@1",
        ),
        request_key(
            SPEC,
            "chat",
            messages=MSGS,
            image_id="abc",
            sampling=SamplingParams(temperature=1.0),
            prompt_version="p@1",
        ),
        request_key(
            SPEC,
            "chat",
            messages=MSGS,
            image_id="abc",
            sampling=SamplingParams(),
            prompt_version="p@2",
        ),
        request_key(
            dataclasses.replace(SPEC, dtype="bfloat16"),
            "chat",
            messages=MSGS,
            image_id="abc",
            sampling=SamplingParams(),
            prompt_version="p@1",
        ),
        request_key(
            SPEC,
            "guard" if False else "chat",
            messages=MSGS,
            image_id="abc",
            sampling=SamplingParams(),
            prompt_version="p@1",
            extra=1,
        ),
    ]
    assert len({base, *changed}) == len(changed) + 1
    # operational fields do not change answers, so they do not change keys
    moved = dataclasses.replace(SPEC, path="/elsewhere", device="cuda", batch_size=99, timeout=5.0)
    assert (
        request_key(
            moved,
            "chat",
            messages=MSGS,
            image_id="abc",
            sampling=SamplingParams(),
            prompt_version="p@1",
        )
        == base
    )


def test_bytes_are_hashed_and_bad_values_rejected() -> None:
    data = b"\x89PNG fake image"
    key = request_key(SPEC, "embed_image", image=data)
    assert key == request_key(
        SPEC, "embed_image", image="sha256:" + hashlib.sha256(data).hexdigest()
    )
    with pytest.raises(ValueError, match="cannot put a object into a cache key"):
        request_key(SPEC, "chat", thing=object())
    with pytest.raises(ValueError):
        request_key(SPEC, "chat", score=float("nan"))
    with pytest.raises(ValueError, match="unknown task"):
        request_key(SPEC, "dance")


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=8), max_size=5))
def test_key_ignores_dict_order(d: dict[str, object]) -> None:
    reversed_d = dict(reversed(list(d.items())))
    assert request_key(SPEC, "chat", payload=d) == request_key(SPEC, "chat", payload=reversed_d)


def test_spark_keys_equal_python_keys(spark: SparkSession) -> None:
    rows = [("s1", json.dumps(MSGS), "img1"), ("s2", json.dumps(MSGS), None)]
    df = spark.createDataFrame(rows, "sample_id string, messages_json string, image_id string")
    consts = {"sampling": dataclasses.asdict(SamplingParams()), "prompt_version": "p@1"}
    keyed = add_request_key(df, SPEC, "chat", ["messages_json", "image_id"], constants=consts)
    got = {r["sample_id"]: r["request_key"] for r in keyed.collect()}
    for sid, msgs, image_id in rows:
        assert got[sid] == request_key(
            SPEC, "chat", messages_json=msgs, image_id=image_id, **consts
        )
    with pytest.raises(ValueError, match="no column"):
        add_request_key(df, SPEC, "chat", ["nope"])
    with pytest.raises(ValueError, match="given as column and constant"):
        add_request_key(df, SPEC, "chat", ["image_id"], constants={"image_id": 1})
