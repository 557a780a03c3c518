"""The bad-input corpus (``make_bad.py``) through ``vlsafety ingest`` and ``vlsafety
preprocess``, run once for the module: every case's rows end where its table says, in the
pool or in ``rejects`` with a specific reason, and every count balances."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from vlsafety.ingest import INGEST_REASONS, image_id_of
from vlsafety.preprocess import PREPROCESS_REASONS

from .make_bad import (
    CASES,
    FAILURES,
    POOL,
    Case,
    Failure,
    cli,
    expected,
    matches,
    outcomes,
    run_corpus,
    summarize,
    write_corpus,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


@pytest.fixture(scope="module")
def corpus_run(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("bad")
    corpus = write_corpus(d)
    result = run_corpus(spark, corpus, d / "lake")
    got = outcomes(corpus, result["rows"])
    summary = summarize(result, got)
    (d / "summary.json").write_text(json.dumps(summary, indent=2))
    return {"dir": d, "corpus": corpus, "result": result, "got": got, "summary": summary}


def test_the_corpus_is_large_and_its_expectations_are_reason_codes() -> None:
    assert len(CASES) >= 40 and len({c.name for c in CASES}) == len(CASES)
    reasons = {e for c in CASES for e in c.expect if e != POOL}
    assert reasons <= set(INGEST_REASONS) | set(PREPROCESS_REASONS)
    assert not set(INGEST_REASONS) & set(PREPROCESS_REASONS)  # a code names its stage


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_case_ends_where_expected(corpus_run: dict[str, Any], case: Case) -> None:
    got = corpus_run["got"][case.name]
    assert matches(case, got), f"{case.what}: got {got}, expected {expected(case)}"


@pytest.mark.parametrize("case", [c for c in CASES if c.normalized], ids=lambda c: c.name)
def test_odd_but_usable_images_are_normalized(corpus_run: dict[str, Any], case: Case) -> None:
    notes = [
        note
        for ref, note in corpus_run["result"]["normalization"].items()
        if ref.startswith(f"{corpus_run['corpus'].paths[case.name]}:")
    ]
    assert len(notes) == 1 and case.normalized in (notes[0] or "").split(";"), notes


def test_both_runs_exit_zero_and_counts_balance(corpus_run: dict[str, Any]) -> None:
    result = corpus_run["result"]
    assert result["exit"] == {"ingest": 0, "preprocess": 0}
    ing, pre = result["ingest"], result["preprocess"]
    assert ing["listed"] == ing["samples"] + ing["rejected"]
    assert pre["pending"] == ing["samples"] == pre["kept"] + pre["rejected"]
    fates = [f for fs in corpus_run["got"].values() for f in fs]
    # every listed row has exactly one fate: none lost, none counted twice
    assert len(fates) == ing["listed"] and not any("+" in f for f in fates)
    by_reason = Counter(f for f in fates if f != POOL)
    for stage, counts in (("ingest", ing), ("preprocess", pre)):
        reported = {k.split(".", 1)[1]: v for k, v in counts.items() if k.startswith("rejected.")}
        written = {f.split(":", 1)[1]: n for f, n in by_reason.items() if f.startswith(stage)}
        assert reported == written
    assert fates.count(POOL) == pre["kept"]


def test_every_reject_says_why(corpus_run: dict[str, Any], spark: SparkSession) -> None:
    from vlsafety.lake import Lake

    rejects = Lake(corpus_run["dir"] / "lake", spark).read_arrow("rejects").to_pylist()
    for r in rejects:
        if r["reason"].startswith("duplicate_"):
            continue  # the duplicates table names the kept sample
        assert r["detail"], r


def test_no_escape_target_was_read(corpus_run: dict[str, Any], spark: SparkSession) -> None:
    from vlsafety.lake import Lake

    secret = image_id_of((corpus_run["dir"] / "outside" / "secret.png").read_bytes())
    images = Lake(corpus_run["dir"] / "lake", spark).read_arrow("images", columns=["image_id"])
    assert secret not in images.column("image_id").to_pylist()


def test_summary_figures(corpus_run: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    s = corpus_run["summary"]
    with capsys.disabled():
        print("\nbad-input corpus:", json.dumps(s))
    assert s["cases"] == len(CASES) and s["crashes"] == 0 and s["mismatches"] == []
    assert s["rows"] == sum(len(c.expect) for c in CASES)
    assert s["pool"] == sum(c.expect.count(POOL) for c in CASES)


@pytest.mark.parametrize("failure", FAILURES, ids=lambda f: f.name)
def test_a_source_that_cannot_be_read_stops_the_run_in_one_line(
    spark: SparkSession, tmp_path: Path, failure: Failure
) -> None:
    from vlsafety.lake import Lake

    (tmp_path / "src").mkdir()
    source = failure.write(tmp_path / "src")
    rc, _, err = cli(tmp_path / "lake", "ingest", "--source", source)
    lines = [line for line in err.splitlines() if line.startswith("vlsafety: error:")]
    assert rc == failure.exit and len(lines) == 1, err
    assert re.search(failure.message, lines[0]), lines[0]
    assert not Lake(tmp_path / "lake", spark).exists("raw_pool")
