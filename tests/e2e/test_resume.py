"""A build killed twice (SIGKILL to its whole process group, no cleanup) and run again
finishes the job in the same lake: inside a model stage (respond), then inside a Delta
commit of a later stage (judge). Each kill must have left work; afterwards the lake holds
exactly the keys the uninterrupted e2e build wrote, none twice, every version readable,
the counts balance and the benchmark is the e2e build's.

The machinery is bench/faults.py's (which kills at ten and more seeded moments).

The builds run on the e2e session's Spark layout (local[2], 2 shuffle partitions): a
model's remaining requests are then batched as in the uninterrupted build, so even the
float32 guard probabilities agree to 1e-9. (Under the demo config's layout instead, the
scores differed from the e2e lake's by up to 6e-8 with the same order: float32 kernels
give last-bit differences when Spark partitions the requests differently.)
"""

from __future__ import annotations

from pathlib import Path

from bench.faults import (
    KEYS,
    Trigger,
    after_kill,
    build_command,
    check_rerun,
    orphans,
    prepare,
    run_build,
)
from vlsafety.lake import Lake

from .conftest import E2E


def test_killed_twice_resumes_to_the_same_benchmark(
    e2e: E2E, tmp_path: Path, tiny_models_dir: Path
) -> None:
    # the e2e lake's pool and config, on the e2e session's Spark layout: the same partitions
    # batch the same requests, so the float32 model outputs agree to the last bit
    spark = ["spark.master=local[2]", "spark.shuffle_partitions=2"]
    cmd = build_command([*prepare(tmp_path, tiny_models_dir), *spark])
    root = tmp_path / "lake"
    ref = e2e.lake
    respond_s = next(s.duration_s for s in e2e.build.stages if s.name == "respond")

    # 1. inside a model stage: part of the victims' answers committed, the rest not
    first = run_build(
        cmd,
        root,
        tmp_path / "kill-respond",
        trigger=Trigger("respond", "delay", delay_s=0.4 * respond_s),
        timeout_s=900,
    )
    rep = after_kill(first, root, ref, {}, _first_version)
    assert first.killed_at is not None, first.stderr_tail
    assert rep.stage == "respond", (rep.stage, first.stage_ends)
    assert rep.work_left and not rep.benchmark_written
    assert rep.missing["responses"] > 0 and rep.missing["judgments"] > 0, rep.missing

    # 2. inside a Delta commit of a later stage: the second guard's judgments are staged
    before = orphans(root)
    second = run_build(
        cmd,
        root,
        tmp_path / "kill-judge",
        trigger=Trigger("judge", "commit", index=1),
        timeout_s=900,
    )
    rep = after_kill(second, root, ref, before, _first_version)
    assert second.killed_at is not None, second.stderr_tail
    assert rep.stage == "judge" and rep.table == "judgments", (rep.stage, rep.table)
    assert rep.inside_commit, "the kill missed the commit: no staged files were left"
    assert rep.work_left and not rep.benchmark_written
    assert rep.missing["responses"] == 0 and rep.missing["judgments"] > 0, rep.missing

    # 3. the rerun finishes the job
    done = run_build(cmd, root, tmp_path / "rerun", timeout_s=900)
    ref_bench = ref.read_arrow("benchmark", version=_first_version(ref, "benchmark"))
    rep = check_rerun(rep, done, root, ref, ref_bench, tol=1e-9, ref_version=_first_version)
    assert done.returncode == 0, rep.error
    assert not rep.unbalanced, rep.unbalanced
    assert not rep.versions["unreadable"] and not rep.versions["duplicates"], rep.versions
    assert not any(rep.missing_after.values()) and not any(rep.extra_after.values())
    assert rep.benchmark["same_ids"] and rep.benchmark["same_order"], rep.benchmark
    assert rep.benchmark["equal"], rep.benchmark  # scores to 1e-9
    # `vlsafety gc` removed the judgments the kill staged; the lake reads the same after it
    assert rep.orphans_after_gc == 0 and rep.gc_files > 0 and not rep.error, rep

    lake = Lake(root)
    for table, col in (("responses", "text"), ("candidate_embeddings", "embedding")):
        assert _by_key(lake, table, col) == _by_key(ref, table, col, _first_version(ref, table))
    p_got = _by_key(lake, "judgments", "p_unsafe")
    p_ref = _by_key(ref, "judgments", "p_unsafe", _first_version(ref, "judgments"))
    assert p_got.keys() == p_ref.keys()
    assert all(abs((p_got[k] or 0) - (p_ref[k] or 0)) <= 1e-9 for k in p_ref)
    assert set(KEYS) <= set(lake.tables())


def _first_version(lake: Lake, table: str) -> int:
    """The last version the e2e fixture's first build wrote (later tests add versions)."""
    runs = [h for h in lake.history(table) if h["command"] == "e2e build"]
    return max(h["version"] for h in runs) if runs else lake.version(table)


def _by_key(lake: Lake, table: str, col: str, version: int | None = None) -> dict:
    rows = lake.read_arrow(table, version=version, columns=["request_key", col]).to_pylist()
    return {r["request_key"]: r[col] for r in rows}
