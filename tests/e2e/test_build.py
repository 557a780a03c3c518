"""The whole build on a tiny pool: every stage runs, counts balance, versions link to runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from vlsafety.cli import main
from vlsafety.pipeline import BUILD_STAGES

from .conftest import E2E, REPO


def test_every_stage_ran_and_balanced(e2e: E2E) -> None:
    stages = {s.name: s for s in e2e.build.stages}
    assert list(stages) == list(BUILD_STAGES)
    for s in stages.values():
        assert s.rows_in == s.rows_out + s.rejected + s.filtered, s
        assert s.filtered == 0 or s.name == "select", s  # only selection leaves rows out
    assert stages["ingest"].rejected > 0  # the demo pool plants broken manifest rows
    assert stages["preprocess"].rejected > 0  # ... and broken/duplicate images
    assert stages["generate"].rows_out > 0 and stages["augment"].rows_out > 0
    assert stages["select"].rows_out == 12
    # candidates not picked are filtered, not rejected: no reject rows are written for them
    assert stages["select"].filtered == stages["select"].rows_in - 12
    assert stages["select"].rejected == 0
    assert e2e.build.benchmark_version == 0


def test_query_plans_stay_small(e2e: E2E) -> None:
    """Every stage writes from a plan of bounded size. Chains of cached DataFrames print
    (and ship) nested copies of every earlier plan: 108 MB of plan text for one preprocess
    write of 60 rows, which ran the 2 GB test driver out of heap."""
    assert {"pool", "rejects", "candidates", "responses", "judgments", "scored"} <= set(
        e2e.plan_chars
    )
    big = {t: n for t, n in e2e.plan_chars.items() if n > 500_000}
    assert not big, f"query plans over 500K characters: {big}"


def test_benchmark_rows_and_lineage(e2e: E2E) -> None:
    lake = e2e.lake
    bench = lake.read_arrow("benchmark").to_pylist()
    assert [r["rank"] for r in bench] == list(range(1, 13))
    assert len({r["candidate_id"] for r in bench}) == 12
    cands = {r["candidate_id"]: r for r in lake.read_arrow("candidates").to_pylist()}
    pool = {r["sample_id"] for r in lake.read_arrow("pool", columns=["sample_id"]).to_pylist()}
    for r in bench:
        assert (
            r["category"]
            in {"privacy", "bias", "toxicity", "legality", "misinformation", "health_risk"}
            or r["category"]
        )
        assert 0.0 <= r["c_sep"] <= 1.0 and 0.0 <= r["c_harm"] <= 1.0
        assert cands[r["candidate_id"]]["parent_sample_id"] in pool  # lineage leads to the pool
        assert len(r["harmful"]) == 3 and len(r["embedding"]) > 0


def test_no_duplicate_keys_anywhere(e2e: E2E) -> None:
    lake = e2e.lake
    for table, key in [
        ("images", "image_id"),
        ("raw_pool", "sample_id"),
        ("pool", "sample_id"),
        ("candidates", "candidate_id"),
        ("responses", "request_key"),
        ("judgments", "request_key"),
        ("scored", "candidate_id"),
        ("rejects", "reject_id"),
    ]:
        col = lake.read_arrow(table, columns=[key]).column(key).to_pylist()
        assert len(col) == len(set(col)), table


def test_history_links_mlflow_runs(e2e: E2E, capsys: pytest.CaptureFixture[str]) -> None:
    hist = e2e.lake.history("benchmark")
    run_id = hist[0]["run_id"]
    assert run_id is not None
    client = MlflowClient(tracking_uri=e2e.cfg.tracking.uri)
    child = client.get_run(run_id)
    parent_id = child.data.tags["mlflow.parentRunId"]
    assert parent_id == e2e.build.run_id
    # the commit names the job's run too, and `vlsafety history` shows that one
    assert hist[0]["metadata"]["job_run_id"] == parent_id
    assert hist[0]["metadata"]["stage"] == "stage:select"
    assert main(e2e.cli("history", "benchmark")) == 0
    line = capsys.readouterr().out.splitlines()[-1]  # oldest first is last: version 0
    assert line.split()[0] == "0" and f"{parent_id} (stage:select)" in line
    parent = client.get_run(parent_id)
    assert parent.data.tags["delta.write.benchmark"].endswith("benchmark@v0")
    for stage in BUILD_STAGES:
        assert f"{stage}.rows_in" in parent.data.metrics
        assert f"{stage}.duration_s" in parent.data.metrics
    assert parent.data.params["select.n_max"] == "12"
    assert "quality.div" in parent.data.metrics
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'"
    )
    assert {c.info.run_name for c in children} == set(BUILD_STAGES)


def test_rerun_computes_nothing_new(e2e: E2E, capsys: pytest.CaptureFixture[str]) -> None:
    from vlsafety.pipeline import build

    before = {
        t: e2e.lake.version(t)
        for t in ("candidates", "responses", "judgments", "candidate_embeddings")
    }
    result = build(
        e2e.cfg,
        e2e.lake,
        stages=("generate", "augment", "embed", "respond", "judge"),
        command="rerun",
    )
    after = {t: e2e.lake.version(t) for t in before}
    assert after == before  # nothing missing → no commit
    assert all(
        s.extra.get("computed", 0) == 0
        for s in result.stages
        if s.name in ("embed", "respond", "judge")
    )


def test_evaluate_writes_leaderboard(e2e: E2E, capsys: pytest.CaptureFixture[str]) -> None:
    args = e2e.cli(
        "evaluate", "--benchmark", "benchmark@0", "--models", "tiny-llava,tiny-llama", "--json"
    )
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    board = out["leaderboard"]
    overall = {r["model_id"]: r for r in board if r["category"] == "overall"}
    assert set(overall) == {"tiny-llava", "tiny-llama"}
    for model, row in overall.items():
        cats = [r for r in board if r["model_id"] == model and r["category"] != "overall"]
        assert row["n"] == sum(r["n"] for r in cats) == 12
        # overall is the micro average: count-weighted over categories
        assert row["asr"] == pytest.approx(sum(r["asr"] * r["n"] for r in cats) / row["n"])
        assert row["sr"] == pytest.approx(1 - row["asr"])
    assert set(out["quality"]) >= {"mad", "mean", "gap", "div"}
    stored = e2e.lake.read_arrow("leaderboard").to_pylist()
    assert {r["model_id"] for r in stored} >= {"tiny-llava", "tiny-llama"}
    # a second evaluation is served from the response/judgment cache
    v_resp = e2e.lake.version("responses")
    assert main(args) == 0
    capsys.readouterr()
    assert e2e.lake.version("responses") == v_resp


def test_export_round_trip(e2e: E2E, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import datasets

    for fmt in ("jsonl", "parquet"):
        out = tmp_path / fmt
        assert main(e2e.cli("export", "benchmark@0", "--out", str(out), "--format", fmt)) == 0
        capsys.readouterr()
        meta = json.loads((out / "metadata.json").read_text())
        assert meta["rows"] == 12 and meta["version"] == 0
        ds = datasets.load_dataset(
            "json" if fmt == "jsonl" else "parquet",
            data_files=str(out / f"data.{fmt}"),
            split="train",
        )
        assert len(ds) == 12
        assert set(ds.column_names) >= {
            "candidate_id",
            "category",
            "strategy",
            "parent_sample_id",
            "image",
            "rank",
        }
        images = {r["image"] for r in ds if r["image"]}
        assert images and all((out / p).is_file() for p in images)
        bench = {r["candidate_id"]: r for r in e2e.lake.read_arrow("benchmark").to_pylist()}
        img_bytes = {
            r["image_id"]: r["bytes"]
            for r in e2e.lake.read_arrow("images", columns=["image_id", "bytes"]).to_pylist()
        }
        for r in ds:
            if r["image"]:
                assert (out / r["image"]).read_bytes() == img_bytes[
                    bench[r["candidate_id"]]["image_id"]
                ]


def test_report_renders_every_section(
    e2e: E2E, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vlsafety.report import SECTIONS

    out = tmp_path / "report.html"
    assert main(e2e.cli("report", "benchmark@0", "--out", str(out))) == 0
    page = out.read_text()
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in page
    assert page.count("data:image/png;base64,") >= 4
    # by MLflow run id too
    out2 = tmp_path / "by-run.html"
    assert main(e2e.cli("report", e2e.build.run_id, "--out", str(out2))) == 0
    assert "benchmark@0" in out2.read_text()


def test_update_replaces_worst_share(e2e: E2E, capsys: pytest.CaptureFixture[str]) -> None:
    # the "existing benchmark": the figstep-style typographic samples of the pool
    args = e2e.cli(
        "update",
        "--benchmark",
        "pool",
        "--where",
        "labels['style'] = 'typographic'",
        "--replace",
        "0.5",
        "--out",
        "updated",
        "--json",
    )
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    n = summary["n_before"]
    assert n > 0
    assert len(summary["removed"]) == int(0.5 * n + 0.5)
    assert len(summary["added"]) <= len(summary["removed"])
    assert summary["n_after"] == n - len(summary["removed"]) + len(summary["added"])
    rows = e2e.lake.read_arrow("updated").to_pylist()
    assert len(rows) == summary["n_after"]
    ids = {r["candidate_id"] for r in rows}
    assert not ids & set(summary["removed"])
    assert set(summary["added"]) <= ids
    assert set(summary["before"]) == {"mad", "mean", "gap", "div"} == set(summary["after"])
    hist = e2e.lake.history("updated")
    assert hist[0]["metadata"]["update_of"].startswith("pool@")


def test_diff_between_versions(e2e: E2E, capsys: pytest.CaptureFixture[str]) -> None:
    # a refreshed build (new augmentation seed) → benchmark@1
    import dataclasses

    from vlsafety.pipeline import build

    cfg2 = dataclasses.replace(e2e.cfg, augment=dataclasses.replace(e2e.cfg.augment, seed=1))
    result = build(cfg2, e2e.lake, command="refresh")
    assert result.benchmark_version == 1
    assert main(e2e.cli("history", "benchmark", "--json")) == 0
    hist = json.loads(capsys.readouterr().out)
    assert [h["version"] for h in hist] == [1, 0]
    assert all(h["run_id"] for h in hist)
    assert main(e2e.cli("diff", "benchmark@0", "benchmark@1", "--json")) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["added"] - d["removed"] == 0  # same size, possibly different samples
    assert d["keys"] == ["candidate_id"]


NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9]*.py"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[n.stem for n in NOTEBOOKS])
def test_notebooks_run_as_scripts(
    e2e: E2E, notebook: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import runpy

    text = notebook.read_text()
    assert text.startswith("# Databricks notebook source")
    assert "# COMMAND ----------" in text
    conf = tmp_path / "conf.yaml"
    import yaml

    data = yaml.safe_load((REPO / "conf" / "demo.yaml").read_text())
    for o in e2e.overrides:
        key, value = o.split("=", 1)
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(value)
    conf.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("VLSAFETY_CONF", str(conf))
    monkeypatch.setenv("VLSAFETY_REPORT", str(tmp_path / "nb.html"))
    monkeypatch.chdir(REPO)
    runpy.run_path(str(notebook), run_name="__main__")


def test_single_stage_commands_reuse_the_build_stages(
    e2e: E2E, capsys: pytest.CaptureFixture[str]
) -> None:
    raw_version = e2e.lake.version("raw_pool")
    assert main(e2e.cli("ingest", "--json")) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["stage"] == "ingest"
    assert counts["rows_in"] == counts["rows_out"] + counts["rejected"]
    assert counts["rejected"] > 0
    assert e2e.lake.read_arrow("raw_pool").num_rows == counts["rows_out"]  # merge: no duplicates
    assert e2e.lake.version("raw_pool") >= raw_version
    assert main(e2e.cli("--set", "build.sources=[]", "ingest")) == 2
    assert "give at least one --source" in capsys.readouterr().err
