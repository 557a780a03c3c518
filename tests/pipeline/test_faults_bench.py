"""The checks of bench/faults.py (kill-and-resume) on small hand-made lakes: no build.

The e2e test (tests/e2e/test_resume.py) relies on them to say a kill landed inside a
commit, that work was left and that a resumed lake is whole; here each must also say so
when it is not.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.faults import (
    LakeWatch,
    LogWatch,
    Run,
    Write,
    check_versions,
    compare_benchmark,
    key_diff,
    matches,
    orphans,
    plan_kills,
    unbalanced,
)
from vlsafety.lake import Lake
from vlsafety.pipeline import BUILD_STAGES


def _stage_files(root: Path, table: str, n: int = 1) -> str:
    """Files staged for a write that never committed (what a SIGKILL leaves)."""
    rel = f"data/{uuid.uuid4().hex}"
    folder = root / table / rel
    folder.mkdir(parents=True)
    for i in range(n):
        pq.write_table(pa.table({"k": ["z"]}), folder / f"part-{i:05d}.parquet")
    return rel


def test_watch_sees_staged_files_the_log_does_not_reference(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    lake.write(pa.table({"k": ["a", "b"]}), "t", "merge", keys=["k"])
    watch = LakeWatch(tmp_path)
    assert watch.new_writes() == [] and orphans(tmp_path) == {}
    rel = _stage_files(tmp_path, "t", 2)
    (tmp_path / "t" / "data" / "empty").mkdir()  # a folder without data files: not a write
    assert watch.new_writes() == [("t", rel)]
    assert watch.new_writes() == []  # reported once
    assert orphans(tmp_path) == {"t": 2}
    lake.write(pa.table({"k": ["c"]}), "t", "merge")  # a committed write is not an orphan
    assert orphans(tmp_path) == {"t": 2}
    assert LakeWatch(tmp_path).new_writes() == []  # what was there at the start is not new


def test_log_watch_follows_the_progress_lines(tmp_path: Path) -> None:
    log = tmp_path / "stderr.log"
    watch = LogWatch(log)
    assert watch.poll() == [] and watch.current == "ingest"
    log.write_text("noise\n[ingest    ] in=52      out=48 ...\n[preproce")
    assert watch.poll() == ["ingest"] and watch.current == "preprocess"
    with log.open("a") as fh:  # a line completed by the next write
        fh.write("ss] in=48 out=29\n")
    assert watch.poll() == ["preprocess"] and watch.current == "generate"


def test_check_versions_reports_duplicate_keys_in_any_version(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    lake.write(pa.table({"k": ["a", "b"]}), "t", "merge", keys=["k"])
    assert check_versions(lake) == {
        "tables": 1,
        "versions": 1,
        "unreadable": [],
        "duplicates": [],
    }
    lake.write(pa.table({"k": ["a"]}), "t", "append")  # what a racing merge could leave
    assert check_versions(lake)["duplicates"] == ["t@1"]


def test_check_versions_reports_a_version_with_missing_files(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    lake.write(pa.table({"k": ["a"]}), "t", "merge", keys=["k"])
    lake.write(pa.table({"k": ["b"]}), "t", "merge")
    for f in (tmp_path / "t" / "data").rglob("*.parquet"):
        if "b" in pq.read_table(f).column("k").to_pylist():
            f.unlink()
    bad = check_versions(lake)["unreadable"]
    assert len(bad) == 1 and bad[0].startswith("t@1")


def test_key_diff_counts_missing_and_extra_keys(tmp_path: Path) -> None:
    ref, got = Lake(tmp_path / "ref"), Lake(tmp_path / "got")
    ref.write(
        pa.table({"request_key": ["a", "b", "c"]}), "responses", "merge", keys=["request_key"]
    )
    got.write(pa.table({"request_key": ["a", "d"]}), "responses", "merge", keys=["request_key"])
    missing, extra = key_diff(got, ref, lambda lake, t: 0)
    assert missing["responses"] == 2 and extra["responses"] == 1
    assert missing["images"] == 0  # neither lake has it


def _bench(ids: list[str], scores: list[float]) -> pa.Table:
    return pa.table(
        {
            "candidate_id": ids,
            "rank": list(range(len(ids))),
            "score": scores,
            "embedding": [[s, -s] for s in scores],
            "category": ["c"] * len(ids),
        },
        schema=pa.schema(
            [
                ("candidate_id", pa.string()),
                ("rank", pa.int64()),
                ("score", pa.float64()),
                ("embedding", pa.list_(pa.float32())),
                ("category", pa.string()),
            ]
        ),
    )


@settings(max_examples=50, deadline=None)
@given(
    scores=st.lists(st.floats(0, 1), min_size=2, max_size=8),
    eps=st.floats(0, 1e-3),
)
def test_compare_benchmark_measures_the_largest_float_difference(
    scores: list[float], eps: float
) -> None:
    ids = [f"c{i}" for i in range(len(scores))]
    want = _bench(ids, scores)
    got = _bench(ids, [s + eps for s in scores])
    cmp = compare_benchmark(got, want, tol=1e-9)
    assert cmp["same_ids"] and cmp["same_order"] and not cmp["other_differing"]
    # float32 embeddings round: the delta is eps up to float32 rounding of the values
    assert abs(cmp["max_abs_delta"] - eps) <= 1e-6
    assert cmp["equal"] == (cmp["max_abs_delta"] <= 1e-9)
    assert matches(cmp, 1e-3 + 1e-6)


def test_compare_benchmark_tells_order_ids_and_other_columns() -> None:
    want = _bench(["a", "b", "c"], [0.9, 0.5, 0.1])
    swapped = _bench(["b", "a", "c"], [0.5, 0.9, 0.1])
    cmp = compare_benchmark(swapped, want)
    assert cmp["same_ids"] and not cmp["same_order"] and not cmp["equal"]
    assert cmp["max_abs_delta"] == 0.0  # compared by id: the rows themselves are the same
    other = compare_benchmark(_bench(["a", "b", "d"], [0.9, 0.5, 0.1]), want)
    assert not other["same_ids"] and not other["equal"]
    cat = want.set_column(4, "category", pa.array(["c", "x", "c"]))
    assert compare_benchmark(cat, want)["other_differing"] == ["category"]


def test_unbalanced_names_the_stage_that_lost_rows() -> None:
    stages = [
        {"stage": "ingest", "rows_in": 5, "rows_out": 4, "rejected": 1, "filtered": 0},
        {"stage": "select", "rows_in": 9, "rows_out": 3, "rejected": 0, "filtered": 5},
    ]
    assert unbalanced({"stages": stages}) == ["select: 9 != 3 + 0 + 5"]


def _reference() -> Run:
    ends, t, writes, stages = {}, 10.0, [], []
    for i, s in enumerate(BUILD_STAGES):
        t += 5.0 + i
        ends[s] = t
        stages.append({"stage": s, "duration_s": 5.0 + i})
        writes += [Write(t, s, "x", "data/x") for _ in range(i % 3)]  # none in some stages
    return Run(0, t, ends, writes, {"stages": stages})


@pytest.mark.parametrize("n", [1, 9, 10, 14])
def test_plan_spreads_seeded_kills_over_the_stages(n: int) -> None:
    ref = _reference()
    plan = plan_kills(ref, n, seed=7)
    assert plan == plan_kills(ref, n, seed=7) and len(plan) == n
    assert [t.stage for t in plan[:9]] == list(BUILD_STAGES[:n])
    writes = {s: sum(w.stage == s for w in ref.writes) for s in BUILD_STAGES}
    for t in plan:
        if t.kind == "commit":
            assert 0 <= t.index < writes[t.stage]
            continue
        dur = 5.0 + BUILD_STAGES.index(t.stage)
        start = ref.stage_ends[t.stage] - dur if t.stage == "ingest" else 0.0
        assert start + 0.1 * dur <= t.delay_s <= start + 0.9 * dur + 0.01
    if n >= 10:  # the tenth kill: a model stage again, the other way
        assert plan[9].stage == "embed" and {plan[4].kind, plan[9].kind} == {"commit", "delay"}
