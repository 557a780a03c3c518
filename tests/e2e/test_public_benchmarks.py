"""Public benchmarks end to end (issue 16) on the real MM-SafetyBench, FigStep and MLLMGuard
subsets in ``../shared/realbench/data`` (read in place): ingest as a benchmark, evaluate
with the demo panel, ELITE-filter, and update against the e2e build's scored pool.

Small subsets (``--limit``) keep the run short; the lake is the session's e2e lake, so
the responses and judgments of the panel are shared with the other e2e tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlsafety.cli import main

from .conftest import E2E, REPO

DATA = REPO.parent / "shared" / "realbench" / "data"
SOURCES = [
    f"figstep:{DATA / 'figstep'}",
    f"mm-safetybench:{DATA / 'mm-safetybench'}",
    # bias (8 rows) then hallucination: its 2 first rows are multiple-choice questions
    f"mllmguard:{DATA / 'mllmguard' / 'desensitize'}",
]
LIMIT = 10
NAME = "public_bench"


def _ingest(e2e: E2E, *extra: str) -> list[str]:
    args = ["ingest", "--limit", str(LIMIT), "--as-benchmark", NAME, "--json"]
    for s in SOURCES:
        args += ["--source", s]
    return e2e.cli(*extra, *args)


def _json(capsys: pytest.CaptureFixture[str]) -> dict:
    return json.loads(capsys.readouterr().out)


def test_public_benchmark_end_to_end(
    e2e: E2E, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lake = e2e.lake
    if not DATA.is_dir():
        pytest.fail(f"the real benchmark subsets are missing: expected {DATA}")
    raw_pool_version = lake.version("raw_pool")

    # 1. ingest: the placeholder images of MM-SafetyBench and MLLMGuard (64x48) fail the
    #    default resolution check; every record is accounted for
    assert main(_ingest(e2e)) == 0
    first = _json(capsys)
    assert first["benchmark"] == f"{NAME}@0"
    assert first["listed"] == 3 * LIMIT
    assert first["rows"] == LIMIT  # FigStep's real images only
    assert first["rejected"] == 2 * LIMIT
    assert first["counts"]["valid.rejected.low_resolution"] == 2 * LIMIT
    rejects = lake.read_arrow("rejects").to_pylist()
    low = [r for r in rejects if r["stage"] == "benchmark" and r["reason"] == "low_resolution"]
    assert {r["source"] for r in low} == {"mm-safetybench", "mllmguard"}
    assert len(low) >= 2 * LIMIT

    # the next release (checks relaxed for the placeholders): the next version
    assert main(_ingest(e2e, "--set", "preprocess.min_side=16")) == 0
    second = _json(capsys)
    assert second["benchmark"] == f"{NAME}@1"
    assert second["rows"] == second["listed"] == 3 * LIMIT
    bench = lake.read_arrow(NAME, version=1).to_pylist()
    assert len(bench) == 3 * LIMIT
    assert len({r["candidate_id"] for r in bench}) == len(bench)
    assert {r["source"] for r in bench} == {"figstep", "mm-safetybench", "mllmguard"}
    for r in bench:  # the build's candidate columns, and the lineage of a public source
        assert r["strategy"] == r["origin"] == "original"
        assert r["candidate_id"] == r["parent_sample_id"]
        assert r["category"] and r["taxonomy"] == "vlsb"
        assert r["source_release"] and r["source_path"]
        assert r["source_category"] and r["labels"]
    by_source = {r["source"]: r for r in bench}
    assert by_source["figstep"]["source_path"] == str((DATA / "figstep").resolve())
    assert {r["source_category"] for r in bench if r["source"] == "mm-safetybench"} == {
        "01-Illegal_Activitiy"
    }
    mcq = [r for r in bench if r["multiple_choice"]]
    assert len(mcq) == 2 and {r["source_category"] for r in mcq} == {"hallucination"}
    assert lake.version("raw_pool") == raw_pool_version  # the build's pool is left alone

    # 2. evaluate: per model, per our taxonomy and per source category, with ELITE figures
    models = "tiny-llava,tiny-llama"
    assert main(e2e.cli("evaluate", "--benchmark", f"{NAME}@1", "--models", models, "--json")) == 0
    board = _json(capsys)["leaderboard"]
    for model in models.split(","):
        rows = {r["category"]: r for r in board if r["model_id"] == model}
        assert rows["overall"]["n"] == 3 * LIMIT
        assert rows["overall"]["n_elite"] == 3 * LIMIT  # the ELITE evaluator scored each
        ours = [r for c, r in rows.items() if c != "overall" and not c.startswith("source:")]
        own = [r for c, r in rows.items() if c.startswith("source:")]
        assert sum(r["n"] for r in ours) == sum(r["n"] for r in own) == 3 * LIMIT
        assert "source:figstep/Illegal Activity" in rows
        assert "source:mllmguard/hallucination" in rows
        assert rows["overall"]["asr"] == pytest.approx(
            sum(r["asr"] * r["n"] for r in own) / rows["overall"]["n"]
        )

    # 3. ELITE filter: the panel scores the public benchmark, then the filter drops
    #    pairs below the threshold (the tiny models' ELITE scores are all below 10)
    assert main(e2e.cli("select", "--mode", "elite-filter", "--input", f"{NAME}@1", "--json")) == 0
    summary = _json(capsys)
    assert summary["out"] == NAME and summary["out_version"] == 2
    n_in = summary["n_input"]
    assert n_in == 3 * LIMIT
    assert n_in == summary["n_selected"] + summary["n_not_selected"] + summary["n_rejected"]
    filtered = lake.read_arrow(NAME, version=2)
    assert filtered.num_rows == summary["n_selected"]
    dropped = {
        r["sample_id"]
        for r in lake.read_arrow("rejects").to_pylist()
        if r["stage"] == "select" and r["reason"] == "below_threshold"
    }
    kept = set(filtered.column("candidate_id").to_pylist())
    ids = {r["candidate_id"] for r in bench}
    assert kept | (dropped & ids) == ids and not kept & dropped
    # a threshold every score passes keeps them all, each with its ELITE scores
    assert (
        main(
            e2e.cli(
                "--set",
                "select.threshold=0",
                "select",
                "--mode",
                "elite-filter",
                "--input",
                f"{NAME}@1",
                "--out",
                "public_elite",
                "--json",
            )
        )  # fmt: skip
        == 0
    )
    assert _json(capsys)["n_selected"] == 3 * LIMIT
    assert lake.read_arrow("public_elite").num_rows == 3 * LIMIT

    # 4. update (VLSafetyBencher §5.2): replace the weakest half by the e2e build's pool;
    #    the multiple-choice questions stay out of the experiment
    pool = f"scored@{lake.version('scored')}"
    args = ["update", "--benchmark", f"{NAME}@1", "--replace", "0.5", "--pool", pool]
    assert main(e2e.cli(*args, "--out", "public_updated")) == 0
    out = capsys.readouterr().out
    print(out)  # the before -> after table (Table 2), for the record
    assert "2 multiple-choice questions excluded" in out
    for metric in ("MAD", "MEAN", "GAP", "DIV"):
        assert any(line.split()[:1] == [metric] and "→" in line for line in out.splitlines())
    updated = lake.read_arrow("public_updated").to_pylist()
    roles = [r["update_role"] for r in updated]
    n_scored = 3 * LIMIT - 2
    removed = int(0.5 * n_scored + 0.5)
    assert roles.count("excluded") == 2
    assert roles.count("kept") == n_scored - removed
    assert 0 < roles.count("added") <= removed
    assert {r["source"] for r in updated if r["update_role"] == "added"} == {pool}
    assert all(r["multiple_choice"] for r in updated if r["update_role"] == "excluded")
    meta = lake.history("public_updated")[0]["metadata"]
    assert meta["update_of"] == f"{NAME}@1" and meta["pool"] == pool
    before, after = json.loads(meta["quality_before"]), json.loads(meta["quality_after"])
    assert set(before) == set(after) == {"mad", "mean", "gap", "div"}

    # 5. the report: source categories, leaderboard, and the update's before -> after
    page_path = tmp_path / "public.html"
    assert main(e2e.cli("report", f"{NAME}@1", "--out", str(page_path))) == 0
    page = page_path.read_text()
    assert "ASR by source category" in page and "01-Illegal_Activitiy" in page
    assert '<section id="sources"><h2>Source categories (public benchmark)</h2><img' in page
    upd_path = tmp_path / "updated.html"
    assert main(e2e.cli("report", "public_updated@0", "--out", str(upd_path))) == 0
    upd = upd_path.read_text()
    assert f"{NAME}@1 → public_updated@0: 50% replaced from {pool}" in upd
    assert "<td>DIV</td>" in upd
