"""run_cached: computes only missing keys, merges them, keeps failures out and on record."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession

from vlsafety.inference import run_cached
from vlsafety.lake import Lake
from vlsafety.models import ModelSpec

SCHEMA = "request_id string, sample_id string, model_id string, prompt string, response string"


def requests(spark: SparkSession, rows: Sequence[tuple[Any, ...]]) -> DataFrame:
    return spark.createDataFrame(rows, SCHEMA).coalesce(1)


def test_resume_computes_nothing_the_second_time(
    spark: SparkSession, lake: Lake, tiny_specs: dict[str, ModelSpec]
) -> None:
    guard = tiny_specs["tiny-refusal"]
    keys = ["sample_id", "model_id", "judge_id"]
    rows = [
        ("r1", "s1", "m1", "how?", "I'm sorry, no."),
        ("r2", "s1", "m2", "how?", "Sure: step 1"),
        ("r3", "s2", "m1", "how?", "Here you go"),
    ]
    first = run_cached(lake, "judgments", requests(spark, rows), guard, "guard", keys)
    assert (first.computed, first.failed) == (3, 0) and first.version is not None
    table = lake.read("judgments").toPandas().set_index(["sample_id", "model_id"])
    assert table.loc[("s1", "m1"), "p_unsafe"] == 0.0 and table.loc[("s2", "m1"), "p_unsafe"] == 1.0
    assert set(table["judge_id"]) == {"tiny-refusal"}

    # Nothing is missing: no model is loaded (this spec could not even load) and no commit.
    broken = dataclasses.replace(guard, options={"phrases": ["x"]})
    broken = dataclasses.replace(broken, id=guard.id)
    again = run_cached(lake, "judgments", requests(spark, rows), broken, "guard", keys)
    assert again.computed == 0 and again.version == first.version

    # One new key: only it is computed and merged.
    more = rows + [("r4", "s3", "m2", "how?", "I cannot help")]
    third = run_cached(lake, "judgments", requests(spark, more), guard, "guard", keys)
    assert third.computed == 1 and third.version == (first.version or 0) + 1
    assert lake.read("judgments").count() == 4

    # Another judge is a different key: all four are computed for it.
    other = dataclasses.replace(guard, id="refusal-2", options={"phrases": ["step"]})
    fourth = run_cached(lake, "judgments", requests(spark, more), other, "guard", keys)
    assert fourth.computed == 4 and lake.read("judgments").count() == 8


def test_failed_rows_are_kept_out_and_retried(
    spark: SparkSession, lake: Lake, tiny_specs: dict[str, ModelSpec]
) -> None:
    guard = tiny_specs["tiny-refusal"]
    rows = [("r1", "s1", "m1", "how?", "fine"), ("r2", "s2", "m1", None, "no prompt")]
    keys = ["sample_id", "model_id", "judge_id"]
    first = run_cached(lake, "judged", requests(spark, rows), guard, "guard", keys)
    assert (first.computed, first.failed) == (1, 1)
    assert lake.read("judged").count() == 1
    errors = lake.read("judged_errors").toPandas()
    assert list(errors["sample_id"]) == ["s2"] and "null" in errors["error"][0]
    # the failed key is still missing, so a rerun tries it again (and only it)
    second = run_cached(lake, "judged", requests(spark, rows), guard, "guard", keys)
    assert (second.computed, second.failed) == (0, 1)
    assert lake.read("judged_errors").count() == 2


def test_bad_keys(spark: SparkSession, lake: Lake, tiny_specs: dict[str, ModelSpec]) -> None:
    df = requests(spark, [("r1", "s1", "m1", "p", "r")])
    guard = tiny_specs["tiny-refusal"]
    with pytest.raises(ValueError, match=r"key column\(s\) \['nope'\]"):
        run_cached(lake, "t", df, guard, "guard", ["nope"])
    with pytest.raises(ValueError, match="needs key columns"):
        run_cached(lake, "t", df, guard, "guard", [])
    with pytest.raises(ValueError, match="unknown task"):
        run_cached(lake, "t", df, guard, "paint", ["sample_id"])
