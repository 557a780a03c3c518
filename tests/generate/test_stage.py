"""The generation stage on Spark: counts balance, lineage, resume, rerun adds nothing."""

from __future__ import annotations

import dataclasses
import hashlib

import pyarrow.compute as pc
import pytest

from tests.generate.pool_data import write_pool
from vlsafety.generate import CANDIDATE_COLUMNS, GenerateOptions, run_generate

OPTS = GenerateOptions(render_size=[96, 96], samples_per_partition=3)


def _check_balance(counts: dict[str, int]) -> None:
    assert counts["pool_samples"] == counts["rows_in"] + counts["already_done"]
    assert counts["rows_in"] == counts["rows_out"] + counts["rejected"]
    assert counts["units_in"] == counts["units_out"] + counts["units_rejected"]
    assert counts["units_planned"] == counts["units_in"] + counts["units_already_done"]


def test_generate_stage_lineage_counts_rerun_and_resume(lake) -> None:
    pool = write_pool(lake)
    counts = run_generate(lake.spark, lake, OPTS)
    _check_balance(counts)
    assert counts["pool_samples"] == counts["rows_in"] == len(pool)
    cands = lake.read_arrow("candidates")
    assert cands.column_names == list(CANDIDATE_COLUMNS)
    assert counts["candidates"] == cands.num_rows
    assert len(set(cands["candidate_id"].to_pylist())) == cands.num_rows
    # every row leads back to a pool sample, and every image it names is stored
    pool_ids = {r["sample_id"] for r in pool}
    assert set(cands["parent_sample_id"].to_pylist()) == pool_ids
    images = lake.read_arrow("images")
    stored = {r["image_id"]: r["bytes"] for r in images.to_pylist()}
    for image_id in set(cands["image_id"].to_pylist()) - {None}:
        assert hashlib.sha256(stored[image_id]).hexdigest() == image_id
    rendered = cands.filter(
        pc.field("strategy").isin(["flowchart", "blueprint", "role_play", "fake_news"])
    )
    assert rendered.num_rows > 0 and counts["images"] == len(set(rendered["image_id"].to_pylist()))
    # the bare image-only sample cannot fill the key-phrase patterns: recorded, not dropped
    rejects = lake.read_arrow("rejects").to_pylist()
    assert counts["reject_rows"] == len(rejects) == counts["units_rejected"] == 3
    assert {r["reason"] for r in rejects} == {"no_key_phrase"} and counts[
        "reject_rows.no_key_phrase"
    ] == 3
    assert all(r["stage"] == "generate" and r["sample_id"] in pool_ids for r in rejects)

    versions = {t: lake.version(t) for t in ("candidates", "images", "rejects")}
    again = run_generate(lake.spark, lake, OPTS)
    _check_balance(again)
    assert again["rows_in"] == 0 and again["already_done"] == len(pool)
    assert {t: lake.version(t) for t in versions} == versions  # nothing written

    # A run killed before committing some samples' candidates resumes exactly those.
    full = lake.read_arrow("candidates").sort_by("candidate_id")
    kept = sorted(pool_ids)[:3]
    lake.write(full.filter(pc.field("parent_sample_id").isin(kept)), "candidates", "overwrite")
    resumed = run_generate(lake.spark, lake, OPTS)
    _check_balance(resumed)
    assert (resumed["rows_in"], resumed["already_done"]) == (3, 3)
    assert resumed["reject_rows"] == 0  # the bare sample's rejects were kept: not redone
    assert lake.read_arrow("candidates").sort_by("candidate_id").to_pylist() == full.to_pylist()


def test_generate_stage_sample_with_nothing_is_rejected(lake) -> None:
    write_pool(lake)
    opts = GenerateOptions(
        strategies=["modality_complementarity"], methods=[], include_original=False
    )
    counts = run_generate(lake.spark, lake, opts)
    _check_balance(counts)
    # text-only sample: no image for the strategy; bare sample: no key phrase
    assert counts["rejected"] == 2 and counts["rows_out"] == 4
    reasons = sorted(r["reason"] for r in lake.read_arrow("rejects").to_pylist())
    assert reasons == ["no_applicable_strategy", "no_key_phrase"]


def test_generate_stage_with_a_model_in_spark_workers(lake, tiny_specs) -> None:
    """A trusted-marked tiny VLM loads in the Spark worker and gets the pool images;
    its noise is rejected with the raw text, and a rerun does not ask again."""
    write_pool(lake)
    spec = dataclasses.replace(tiny_specs["tiny-qwen2-vl"], untrained=False, max_tokens=8)
    opts = GenerateOptions(
        strategies=["modality_dependence"], methods=[], parse_retries=0, max_new_tokens=8
    )
    counts = run_generate(lake.spark, lake, opts, generator_spec=spec)
    _check_balance(counts)
    rejects = lake.read_arrow("rejects").to_pylist()
    with_image = 5  # pool samples that have an image
    assert [r["reason"] for r in rejects] == ["unparsable_generation"] * with_image
    assert all("raw: " in r["detail"] for r in rejects)
    again = run_generate(lake.spark, lake, opts, generator_spec=spec)
    assert again["units_in"] == 0


def test_generate_stage_rejects_a_non_chat_spec(lake, tiny_specs) -> None:
    with pytest.raises(ValueError, match="not a chat model"):
        run_generate(lake.spark, lake, OPTS, generator_spec=tiny_specs["tiny-clip"])
