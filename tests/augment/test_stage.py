"""The augmentation stage on Spark: lineage to the pool, replay from the tables, counts
that balance, and a rerun that adds nothing."""

from __future__ import annotations

import hashlib

from tests.generate.pool_data import write_pool
from vlsafety.augment import AugmentOptions, replay, run_augment
from vlsafety.generate import GenerateOptions, run_generate


def test_augment_stage_end_to_end(lake) -> None:
    pool = write_pool(lake)
    run_generate(lake.spark, lake, GenerateOptions(methods=["flowchart"], render_size=[96, 96]))
    before = lake.read_arrow("candidates").to_pylist()
    opts = AugmentOptions(
        text_variants=1, image_variants=1, ops_per_variant=2, rows_per_partition=5
    )
    counts = run_augment(lake.spark, lake, opts)
    assert counts["rows_in"] == counts["rows_out"] + counts["rejected"]
    assert counts["planned"] == counts["rows_in"] + counts["already_done"]
    assert counts["parents_planned"] == len(before) == counts["parents_in"]

    rows = lake.read_arrow("candidates").to_pylist()
    by_id = {r["candidate_id"]: r for r in rows}
    augmented = [r for r in rows if r["origin"] == "augment"]
    assert len(augmented) == counts["candidates"] == counts["rows_out"] > 0
    images = {r["image_id"]: r["bytes"] for r in lake.read_arrow("images").to_pylist()}
    pool_ids = {r["sample_id"] for r in pool}
    for r in augmented:
        parent = by_id[r["parent_candidate_id"]]  # the parent is a stored candidate ...
        assert parent["origin"] in ("generate", "original")
        assert r["parent_sample_id"] == parent["parent_sample_id"] in pool_ids  # ... of the pool
        assert (r["strategy"], r["harm_pattern"]) == (parent["strategy"], parent["harm_pattern"])
        got = replay({"text": parent["text"], "image": images.get(parent["image_id"])}, r["ops"])
        assert got.text == r["text"]
        if r["image_id"] is not None:
            assert hashlib.sha256(got.image).hexdigest() == r["image_id"]
            assert r["image_id"] in images  # the new image is in the images table

    versions = {t: lake.version(t) for t in ("candidates", "images")}
    again = run_augment(lake.spark, lake, opts)
    assert again["rows_in"] == 0 and again["already_done"] == counts["planned"]
    assert {t: lake.version(t) for t in versions} == versions
