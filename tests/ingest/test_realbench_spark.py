"""Real benchmark subsets through run_ingest and run_preprocess on local Spark: the
summary names the files read and skipped, raw_pool carries each record's intent, and
preprocess keeps only the intents the config asks for and reports per source how the
samples were categorized."""

from __future__ import annotations

import sys
from collections import Counter
from typing import TYPE_CHECKING, Any

import pyarrow.compute as pc
import pytest
from pyspark import cloudpickle

from vlsafety.ingest import IngestOptions, run_ingest
from vlsafety.preprocess import PreprocessOptions, VerifierRequest, run_preprocess

from .realbench import data_dir, expected_records

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from vlsafety.lake import Lake

# the verifier below runs inside Spark tasks: it travels by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])

SOURCES = {
    "vlguard": "vlguard-github-data",
    "mllmguard": "mllmguard-hf-layout/desensitize",
    "spa-vl": "spa-vl",
    "elite": "elite-hf",
}


def verifier(requests: list[VerifierRequest]) -> list[str | None]:
    """A trusted stand-in verifier: places every sample in toxicity."""
    return ["Category: toxicity" for _ in requests]


@pytest.fixture(scope="module")
def real(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from vlsafety.lake import Lake

    root = tmp_path_factory.mktemp("realbench")
    lake = Lake(root / "lake", spark)
    specs = [f"{k}:{data_dir() / rel}" for k, rel in SOURCES.items()]
    ingest = run_ingest(spark, lake, specs, IngestOptions(partitions=2))
    raw = lake.read_arrow("raw_pool").to_pylist()
    # the subsets' images are small placeholders (64x48, SPA-VL's 40x30): a lower
    # min_side keeps them, so the categorization figures cover every source
    pre = run_preprocess(
        spark, lake, PreprocessOptions(partitions=2, min_side=16), verifier=verifier
    )
    return {
        "lake": lake,
        "ingest": ingest,
        "raw": raw,
        "pre": pre,
        "rejects": lake.read_arrow("rejects").to_pylist(),
        "pool": lake.read_arrow("pool").to_pylist(),
    }


def test_ingest_counts_every_record_once(real: dict[str, Any]) -> None:
    c = real["ingest"]
    want = sum(expected_records(k, data_dir() / rel) for k, rel in SOURCES.items())
    assert c["listed"] == want == c["samples"] + c["rejected"]
    assert len(real["raw"]) == c["samples"]
    assert len({(r["source"], r["source_ref"]) for r in real["raw"]}) == len(real["raw"])


def test_ingest_summary_names_files_read_and_skipped(real: dict[str, Any]) -> None:
    c = real["ingest"]
    assert c["files.read"] == 1 + 7 + 4 + 2
    assert c["files.skipped"] == 1 + 7
    assert c["file vlguard:test.json"] == "read, 73 listed"
    assert c["file vlguard:gpt4_safe_safes.json"].startswith("skipped: GPT-4 reference answers")
    assert c["file mllmguard:privacy/ar.csv"] == (
        "skipped: language split of prompt.csv (the same rows)"
    )
    assert c["file mllmguard:position-swapping/prompt.csv"] == "read, 16 listed"


def test_raw_pool_carries_the_source_intent(real: dict[str, Any]) -> None:
    got = Counter((r["source"], r["intent"]) for r in real["raw"])
    assert got == Counter(
        {
            ("vlguard", "harmful"): 50,
            ("vlguard", "benign"): 23,
            ("mllmguard", "harmful"): 64,
            ("spa-vl", "harmful"): 36,
            ("spa-vl", "benign"): 12,
            ("elite", "harmful"): 60,
        }
    )
    assert real["ingest"]["intent.benign"] == 35


def test_preprocess_filters_benign_with_a_reason(real: dict[str, Any]) -> None:
    c = real["pre"]
    assert c["pending"] == len(real["raw"]) == c["kept"] + c["rejected"]
    assert c["rejected.intent_filtered"] == 35
    filtered = [
        r
        for r in real["rejects"]
        if r["stage"] == "preprocess" and r["reason"] == "intent_filtered"
    ]
    benign = {r["sample_id"] for r in real["raw"] if r["intent"] == "benign"}
    assert {r["sample_id"] for r in filtered} == benign
    assert all("keep_intents" in r["detail"] for r in filtered)
    assert {r["intent"] for r in real["pool"]} <= {"harmful"}


def test_preprocess_reports_how_each_source_was_categorized(real: dict[str, Any]) -> None:
    c = real["pre"]
    for source in SOURCES:
        shares = [
            c[f"coverage.{source}.{how}"]
            for how in ("source_label", "model", "keywords", "uncategorized")
        ]
        assert sum(shares) == pytest.approx(1.0, abs=1e-3)
    for source in ("mllmguard", "spa-vl", "elite"):
        assert c[f"coverage.{source}.source_label"] == 1.0
    # VLGuard's attack samples (safe image, unsafe instruction) have no source label:
    # the verifier places them
    assert 0 < c["coverage.vlguard.source_label"] < 1
    assert c["coverage.vlguard.model"] == pytest.approx(1 - c["coverage.vlguard.source_label"])


def test_preprocess_can_keep_benign_when_asked(
    spark: SparkSession, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from vlsafety.lake import Lake

    lake: Lake = Lake(tmp_path_factory.mktemp("benign") / "lake", spark)
    run_ingest(spark, lake, [f"spa-vl:{data_dir() / 'spa-vl'}"], IngestOptions(partitions=1))
    c = run_preprocess(
        spark,
        lake,
        PreprocessOptions(partitions=1, min_side=16, keep_intents=("benign",)),
        verifier=verifier,
    )
    assert c["rejected.intent_filtered"] == 36
    assert {r["intent"] for r in lake.read_arrow("pool").to_pylist()} == {"benign"}


def test_a_raw_pool_from_before_the_intent_column(
    real: dict[str, Any], spark: SparkSession, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from vlsafety.lake import Lake

    new: Lake = real["lake"]
    old: Lake = Lake(tmp_path_factory.mktemp("old") / "lake", spark)
    raw = new.read_arrow("raw_pool")
    raw = raw.filter(pc.equal(raw.column("source"), "elite")).drop_columns(["intent"])
    old.write(raw, "raw_pool", "merge", keys=["sample_id"])
    old.write(new.read_arrow("images"), "images", "merge", keys=["image_id"])
    # preprocess reads it (intent unknown: kept by default) ...
    c = run_preprocess(spark, old, PreprocessOptions(partitions=1, min_side=16))
    assert c["pending"] == raw.num_rows == c["kept"] + c["rejected"]
    assert "rejected.intent_filtered" not in c
    assert {r["intent"] for r in old.read_arrow("pool").to_pylist()} == {"unknown"}
    # ... but ingest will not merge intent-less rows into it silently
    with pytest.raises(ValueError, match="predates the intent column"):
        run_ingest(spark, old, [f"elite:{data_dir() / 'elite-hf'}"])
