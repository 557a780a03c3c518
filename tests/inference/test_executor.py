"""The one executor-side path of model stages: task count, image join, profile, worker cache."""

from __future__ import annotations

import dataclasses
import gc
import sys
import types
import weakref
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from vlsafety import executor
from vlsafety.executor import (
    cached_model,
    clear_model_cache,
    default_task_count,
    device_slot,
    map_with_model,
    resolve_task_device,
    task_count,
    with_images,
)
from vlsafety.models import ModelSpec, Resources


class _Weights:
    """A stand-in model that can be weakly referenced (to see it freed)."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec


def _spec(model_id: str, device: str = "cpu") -> ModelSpec:
    return ModelSpec(
        id=model_id, role="chat", backend="hf", path=f"/models/{model_id}", device=device
    )


@pytest.fixture()
def loads() -> Iterator[list[str]]:
    clear_model_cache()
    yield []
    clear_model_cache()


def _loader(loads: list[str]) -> Any:
    def load(spec: ModelSpec) -> _Weights:
        loads.append(f"{spec.id}@{spec.device}")
        return _Weights(spec)

    return load


def test_same_device_evicts_the_previous_model(loads: list[str]) -> None:
    load = _loader(loads)
    a = cached_model(_spec("a", "cuda:0"), loader=load)
    a_ref = weakref.ref(a)
    assert cached_model(_spec("a", "cuda:0"), loader=load) is a  # a hit loads nothing
    del a
    b = cached_model(_spec("b", "cuda:0"), loader=load)
    gc.collect()
    assert a_ref() is None, "model A is still referenced after B took its GPU"
    assert loads == ["a@cuda:0", "b@cuda:0"]
    assert cached_model(_spec("b", "cuda:0"), loader=load) is b


def test_different_devices_keep_both(loads: list[str]) -> None:
    load = _loader(loads)
    a = cached_model(_spec("a", "cuda:0"), loader=load)
    b = cached_model(_spec("b", "cuda:1"), loader=load)
    assert cached_model(_spec("a", "cuda:0"), loader=load) is a
    assert cached_model(_spec("b", "cuda:1"), loader=load) is b
    assert loads == ["a@cuda:0", "b@cuda:1"]


def test_cpu_keeps_one_model_per_worker(loads: list[str]) -> None:
    load = _loader(loads)
    cached_model(_spec("a"), loader=load)
    cached_model(_spec("b"), loader=load)
    cached_model(_spec("a"), loader=load)  # reloaded: B evicted A
    assert loads == ["a@cpu", "b@cpu", "a@cpu"]
    assert set(executor._SLOTS) == {"cpu"}


def test_a_model_moved_to_another_gpu_leaves_no_copy_behind(loads: list[str]) -> None:
    load = _loader(loads)
    cached_model(_spec("a", "cuda:0"), loader=load)
    cached_model(_spec("a", "cuda:1"), loader=load)
    assert set(executor._SLOTS) == {"cuda:1"}


def test_gpus_the_task_does_not_hold_are_released(loads: list[str]) -> None:
    load = _loader(loads)
    cached_model(_spec("a", "cuda:0"), loader=load)
    cached_model(_spec("cpu-model"), loader=load)
    cached_model(_spec("b", "cuda:1"), holds=("1",), loader=load)
    assert set(executor._SLOTS) == {"cuda:1", "cpu"}


def test_eviction_empties_the_cuda_cache(loads: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    emptied: list[bool] = []
    fake_cuda = types.SimpleNamespace(
        is_available=lambda: True, empty_cache=lambda: emptied.append(True)
    )
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=fake_cuda))
    load = _loader(loads)
    cached_model(_spec("a", "cuda:0"), loader=load)
    assert emptied == []
    cached_model(_spec("b", "cuda:0"), loader=load)
    assert emptied == [True]


def test_device_slots() -> None:
    assert device_slot(_spec("a", "cuda")) == "cuda:0"
    assert device_slot(_spec("a", "cuda:3")) == "cuda:3"
    assert device_slot(_spec("a", "cpu")) == "cpu"
    remote = ModelSpec(
        id="r", role="chat", backend="openai", endpoint="http://h:1/v1", model_name="m"
    )
    assert device_slot(dataclasses.replace(remote, device="cuda")) == "cpu"


def test_resolve_task_device() -> None:
    assert resolve_task_device("cuda", ("3",)) == "cuda:3"
    assert resolve_task_device("auto", ("0", "1")) == "cuda:0"
    assert resolve_task_device("cuda:1", ("2",)) == "cuda:2"  # Spark's assignment wins
    assert resolve_task_device("cpu", ("0",)) == "cpu"
    assert resolve_task_device("cuda", ()) == "cuda"


def test_default_task_count() -> None:
    # A GPU cluster: two tasks per GPU slot.
    assert default_task_count(local=False, cores=64, cluster_gpus=8, gpus_per_task=1) == 16
    assert default_task_count(local=False, cores=64, cluster_gpus=8, gpus_per_task=2) == 8
    assert default_task_count(local=False, cores=64, cluster_gpus=8, gpus_per_task=0.5) == 32
    # CPU models, or local masters (which cannot schedule GPUs): cores per task.
    assert default_task_count(local=False, cores=64, cluster_gpus=8, gpus_per_task=0) == 64
    assert default_task_count(local=True, cores=2, cluster_gpus=1, gpus_per_task=1) == 2
    assert (
        default_task_count(local=True, cores=8, cluster_gpus=0, gpus_per_task=0, cpus_per_task=4)
        == 2
    )
    assert (
        default_task_count(local=True, cores=1, cluster_gpus=0, gpus_per_task=0, cpus_per_task=4)
        == 1
    )


def test_task_count_on_the_local_session(spark: SparkSession) -> None:
    cores = spark.sparkContext.defaultParallelism
    assert task_count(spark, None) == cores
    spec = _spec("a")
    assert task_count(spark, spec) == cores
    pinned = dataclasses.replace(spec, resources=Resources(cpus=1, gpus=1, tasks=5))
    assert task_count(spark, pinned) == 5
    with pytest.raises(ValueError, match="resources.tasks"):
        Resources(tasks=0)


def test_map_with_model_joins_bytes_into_exactly_tasks_partitions(spark: SparkSession) -> None:
    # Nested: Spark pickles it by value (workers cannot import test modules).
    def partition_ids(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        pid = ctx.partitionId() if ctx is not None else -1
        for pdf in batches:
            yield pd.DataFrame(
                {
                    "request_id": pdf["request_id"],
                    "size": pdf["image"].map(lambda b: None if b is None else len(b)),
                    "pid": pid,
                }
            )

    images = spark.createDataFrame(
        [(f"img{i}", b"x" * (i + 1), "PNG") for i in range(6)],
        "image_id string, bytes binary, format string",
    )
    rows = [(f"r{i}", f"img{i % 6}", "text") for i in range(20)]
    rows += [(f"t{i}", None, "text only") for i in range(8)] + [("gone", "img-missing", "t")]
    requests = spark.createDataFrame(rows, "request_id string, image_id string, text string")
    out = map_with_model(
        requests,
        partition_ids,
        "request_id string, size long, pid int",
        None,
        images=images,
        tasks=3,
    )
    got = {r["request_id"]: r for r in out.collect()}
    assert len(got) == len(rows)
    for i in range(20):
        assert got[f"r{i}"]["size"] == i % 6 + 1  # each request got its own image's bytes
    assert got["gone"]["size"] is None and all(got[f"t{i}"]["size"] is None for i in range(8))
    assert {r["pid"] for r in got.values()} <= {0, 1, 2}
    # Requests without an image spread over the tasks instead of sharing the null key's.
    assert len({got[f"t{i}"]["pid"] for i in range(8)}) > 1


def test_the_image_join_is_the_only_exchange_of_bytes(spark: SparkSession) -> None:
    images = spark.createDataFrame([("a", b"1")], "image_id string, bytes binary")
    requests = spark.createDataFrame([("r", "a")], "request_id string, image_id string")
    joined = with_images(requests, images, 4)
    plan = joined._jdf.queryExecution().executedPlan().toString()
    # One exchange per side, both hash-partitioned into the 4 tasks; none after the join.
    assert plan.count("Exchange hashpartitioning(_vls_image_key") == 2, plan
    assert plan.count(", 4)") >= 2 and "Exchange" not in plan.split("Join")[0], plan
    assert "SortMergeJoin" in plan and "Broadcast" not in plan, plan  # bytes never broadcast
    assert joined.columns == ["request_id", "image_id", "image"]
    assert joined.where(F.col("image").isNotNull()).count() == 1
