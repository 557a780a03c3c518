"""Racing writers cannot corrupt a table: concurrent merges of overlapping keys leave each
key exactly once, and every version stays readable.

delta-rs' own conflict check lets two blind appends of the same keys both land (each
anti-joined against the same snapshot), so ``Lake`` commits a merge only directly on top
of the snapshot it read and otherwise re-checks its staged keys and tries again.
"""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from vlsafety.lake import Lake, LakeError, retry_conflicts

WRITERS = 4
ROUNDS = 20


def _keys(writer: int, rnd: int) -> list[str]:
    """Writer w in round r: 12 keys, 8 of them shared with its neighbours."""
    return [f"k{rnd:02d}-{i:02d}" for i in range(writer * 4, writer * 4 + 12)]


def _merge_rounds(root: str, writer: int, barrier: Any, failures: Any) -> None:
    lake = Lake(root)
    for rnd in range(ROUNDS):
        keys = _keys(writer, rnd)
        data = pa.table({"id": keys, "writer": [writer] * len(keys), "round": [rnd] * len(keys)})
        barrier.wait(timeout=120)
        try:
            lake.write(data, "t", "merge", keys=["id"])
        except Exception as exc:  # reported to the parent: the test fails on any
            failures.put(f"writer {writer} round {rnd}: {type(exc).__name__}: {exc}")


def _assert_clean(lake: Lake, expected: set[str]) -> None:
    ids = lake.read_arrow("t", columns=["id"]).column("id").to_pylist()
    assert len(ids) == len(set(ids)), "a key was written twice"
    assert set(ids) == expected
    for version in range(lake.version("t") + 1):
        at = lake.read_arrow("t", version=version, columns=["id"]).column("id").to_pylist()
        assert len(at) == len(set(at)), f"version {version} holds a key twice"


def test_four_processes_merging_overlapping_keys_write_each_key_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(WRITERS)
    failures = ctx.Queue()
    root = str(tmp_path / "lake")
    procs = [
        ctx.Process(target=_merge_rounds, args=(root, w, barrier, failures)) for w in range(WRITERS)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    errors = []
    while not failures.empty():
        errors.append(failures.get())
    assert not errors, errors
    expected = {k for r in range(ROUNDS) for w in range(WRITERS) for k in _keys(w, r)}
    _assert_clean(Lake(root), expected)


def test_racing_spark_merges_write_each_key_once(lake: Lake, spark: Any) -> None:
    """The Spark-staged path (what the pipeline's stages use), from four threads."""
    rounds = 2
    errors: list[BaseException] = []

    def writer(w: int, barrier: threading.Barrier) -> None:
        for rnd in range(rounds):
            keys = _keys(w, rnd)
            df = spark.createDataFrame([(k, w) for k in keys], "id string, writer long")
            barrier.wait(timeout=120)
            try:
                lake.write(df, "t", "merge", keys=["id"])
            except BaseException as exc:
                errors.append(exc)

    barrier = threading.Barrier(WRITERS)
    threads = [threading.Thread(target=writer, args=(w, barrier)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    _assert_clean(lake, {k for r in range(rounds) for w in range(WRITERS) for k in _keys(w, r)})


class ConcurrentAppendException(Exception):
    """Named as delta-spark's (and Databricks') conflict class."""


def test_native_conflicts_are_retried_and_other_errors_are_not() -> None:
    calls = {"n": 0}

    def flaky() -> str:
        calls["n"] += 1
        if calls["n"] < 3:
            raise ConcurrentAppendException("Files were added by a concurrent update")
        return "merged"

    assert retry_conflicts(flaky, what="merge", sleep=lambda s: None) == "merged"
    assert calls["n"] == 3

    # py4j wraps the JVM exception: the Java class name is in the message
    wrapped = {"n": 0}

    def jvm() -> None:
        wrapped["n"] += 1
        raise RuntimeError("io.delta.exceptions.ConcurrentAppendException: files added")

    with pytest.raises(LakeError, match="still conflicting after 4 attempts"):
        retry_conflicts(jvm, what="merge", attempts=4, sleep=lambda s: None)
    assert wrapped["n"] == 4

    def broken() -> None:
        raise ValueError("schema mismatch")

    with pytest.raises(ValueError, match="schema mismatch"):
        retry_conflicts(broken, what="merge", sleep=lambda s: None)
