"""Every adapter on the real public benchmark files (../shared/realbench/data).

For each kind and each published layout: the files read and skipped are the benchmark's
splits and only those, records in = records out + rejects, no record twice, and every
record carrying a source harm label maps to a category (coverage 100 %).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from vlsafety.ingest import (
    Reject,
    SourceFile,
    SourceRecord,
    dry_run,
    scan_source,
)
from vlsafety.taxonomy import map_label, unmapped_labels

from .realbench import CASES, DATA, MLLMGUARD_DIMENSIONS, case_id, data_dir, expected_records


def scan(kind: str, rel: str) -> tuple[list[SourceFile], list[SourceRecord], list[Reject]]:
    items = list(scan_source(f"{kind}:{data_dir() / rel}"))
    notes = [i for i in items if isinstance(i, SourceFile)]
    recs = [i for i in items if isinstance(i, SourceRecord)]
    rejs = [i for i in items if isinstance(i, Reject)]
    assert len(notes) + len(recs) + len(rejs) == len(items)
    return notes, recs, rejs


def carries_harm_label(rec: SourceRecord) -> bool:
    """Whether the source itself labels this record's harm. VLGuard labels only its
    unsafe images (harmful_category); every other benchmark labels every record."""
    if rec.source == "vlguard":
        return "harmful_category" in rec.labels
    return True


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_files_read_and_skipped(case: tuple[str, str, set[str], set[str]]) -> None:
    kind, rel, read, skipped = case
    notes, _, _ = scan(kind, rel)
    assert {n.path for n in notes if n.read} == read
    assert {n.path for n in notes if not n.read} == skipped
    assert all(n.reason for n in notes)  # each says why


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_every_record_once_none_lost(case: tuple[str, str, set[str], set[str]]) -> None:
    kind, rel, _, _ = case
    _, recs, rejs = scan(kind, rel)
    assert len(recs) + len(rejs) == expected_records(kind, data_dir() / rel)
    assert rejs == []  # the subsets are complete: every image is where the metadata says
    refs = [r.source_ref for r in recs]
    assert len(set(refs)) == len(refs)
    # no benchmark record twice under another ref (a language split, an MCQA copy)
    content = [
        (r.text, r.image.uri if r.image else None, r.image.row if r.image else None) for r in recs
    ]
    assert len(set(content)) == len(content)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_source_label_coverage_is_complete(case: tuple[str, str, set[str], set[str]]) -> None:
    kind, rel, _, _ = case
    _, recs, _ = scan(kind, rel)
    labelled = [r for r in recs if carries_harm_label(r)]
    assert labelled
    unmapped = Counter(v for r in labelled for v in unmapped_labels(kind, r.labels))
    assert unmapped == Counter()
    missing = [r.source_ref for r in labelled if map_label(kind, r.labels) is None]
    assert missing == []


def test_vlguard_intent_follows_each_instruction() -> None:
    _, recs, _ = scan("vlguard", "vlguard")
    by_type = Counter(
        (r.labels["instruction_type"], r.labels["image_safe"], r.intent) for r in recs
    )
    assert set(by_type) == {
        ("safe_instruction", "true", "benign"),
        ("unsafe_instruction", "true", "harmful"),
        ("instruction", "false", "harmful"),
    }
    # the attack (safe image, unsafe instruction) has no source category: models place it
    attack = [r for r in recs if r.labels["instruction_type"] == "unsafe_instruction"]
    assert attack and all(map_label("vlguard", r.labels) is None for r in attack)
    assert all("harmful_category" not in r.labels for r in attack)
    unsafe = [r for r in recs if r.labels["image_safe"] == "false"]
    assert all(map_label("vlguard", r.labels) is not None for r in unsafe)


def test_spa_vl_train_classes_and_help_split() -> None:
    _, recs, _ = scan("spa-vl", "spa-vl")
    train = [r for r in recs if r.labels["split"] == "train"]
    assert train and all({"class1", "class2", "class3"} <= set(r.labels) for r in train)
    first = train[0]
    assert first.labels["image_name"].startswith(f"{first.labels['class1']}/")
    assert Counter(r.intent for r in recs if r.labels["split"] == "help") == Counter(
        benign=len([r for r in recs if r.labels["split"] == "help"])
    )
    assert {r.intent for r in recs if r.labels["split"] != "help"} == {"harmful"}


def test_mllmguard_position_swapping_gives_both_images() -> None:
    _, recs, _ = scan("mllmguard", "mllmguard/desensitize")
    swap = [r for r in recs if r.labels["dimension"] == "position-swapping"]
    assert Counter(r.labels["position"] for r in swap) == Counter(original=8, reversed=8)
    pairs = {}
    for r in swap:
        assert r.image is not None
        pairs.setdefault(r.source_ref.removesuffix("/reversed"), set()).add(Path(r.image.uri).name)
    assert all(len(names) == 2 for names in pairs.values())
    assert {r.labels["dimension"] for r in recs} == set(MLLMGUARD_DIMENSIONS)


@pytest.mark.parametrize(
    ("kind", "one", "other"),
    [
        ("mllmguard", "mllmguard/desensitize", "mllmguard-hf-layout/desensitize"),
        ("elite", "elite", "elite-flat-images"),
        ("vlguard", "vlguard-github-data", "vlguard"),
    ],
)
def test_alternative_layouts_give_the_same_records(kind: str, one: str, other: str) -> None:
    def key(r: SourceRecord) -> tuple[str | None, str]:
        return r.text, map_label(kind, r.labels) or "-"

    a = Counter(key(r) for r in scan(kind, one)[1])
    b = Counter(key(r) for r in scan(kind, other)[1])
    if kind == "vlguard":  # vlguard/ adds train.json to the same test.json
        assert a <= b
    else:
        assert a == b


def test_elite_parquet_release_matches_the_csv() -> None:
    _, csv_recs, _ = scan("elite", "elite")
    _, pq_recs, _ = scan("elite", "elite-hf")
    assert sorted((r.text, r.labels["taxonomy_code"]) for r in csv_recs) == sorted(
        (r.text, r.labels["taxonomy_code"]) for r in pq_recs
    )
    assert all(r.image is not None and r.image.kind == "parquet" for r in pq_recs)


def test_a_csv_given_as_path_finds_its_checkouts_images() -> None:
    _, by_dir, _ = scan("figstep", "figstep")
    _, by_csv, _ = scan("figstep", "figstep/data/question/safebench.csv")
    assert [(r.source_ref, r.image) for r in by_csv] == [(r.source_ref, r.image) for r in by_dir]


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_dry_run_reports_each_file(case: tuple[str, str, set[str], set[str]]) -> None:
    kind, rel, read, skipped = case
    reports = dry_run([f"{kind}:{data_dir() / rel}"])
    assert {r.file for r in reports if r.read} == read
    assert {r.file for r in reports if not r.read} == skipped
    assert sum(r.records + sum(r.rejects.values()) for r in reports) == expected_records(
        kind, DATA / rel
    )
    assert all(not r.unmapped and r.missing_images == 0 for r in reports)
    assert all(not r.records for r in reports if not r.read)


def test_cli_dry_run_prints_per_file_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vlsafety.cli import main

    lake = tmp_path / "lake"
    rc = main(
        ["--lake", str(lake), "ingest", "--dry-run", "--source", f"siuo:{data_dir() / 'siuo'}/data"]
    )
    out, _ = capsys.readouterr()
    assert rc == 0
    assert "siuo:siuo_mcqa.json  SKIPPED: multiple-choice variant of siuo_gen.json" in out
    assert "siuo:siuo_gen.json  (generation questions)" in out
    assert "records: 45   rejects: 0" in out
    assert "bias: 10" in out and "unmapped label values: -" in out
    assert not lake.exists()  # metadata only: no Spark, no table


def test_dry_run_names_unmapped_values_and_missing_images(tmp_path: Path) -> None:
    # invented: a label value no mapping knows and an image that is not there
    root = tmp_path / "siuo"
    (root / "images").mkdir(parents=True)
    (root / "images" / "a.png").write_bytes(b"not read in a dry run")
    entries = [
        {"question_id": 1, "image": "a.png", "question": "q one?", "category": "new harm"},
        {"question_id": 2, "image": "a.png", "question": "q two?", "category": "new harm"},
        {"question_id": 3, "image": "gone.png", "question": "q three?", "category": "morality"},
    ]
    (root / "siuo_gen.json").write_text(json.dumps(entries), encoding="utf-8")
    (report,) = dry_run([f"siuo:{root}"])
    assert report.records == 2 and report.rejects == Counter(missing_file=1)
    assert report.unmapped == Counter({"category='new harm'": 2})
    assert report.categories == Counter({"(no source category)": 2})
    assert report.missing_images == 1 and "gone.png" in report.missing_examples[0]


@pytest.mark.parametrize(
    "args",
    [
        ["ingest", "--dry-run", "--source", "nosuchkind:/tmp"],
        ["ingest", "--dry-run", "--source", "siuo"],
        ["ingest", "--dry-run", "--source", "siuo:/no/such/path"],
        ["ingest", "--dry-run", "--bogus"],
    ],
)
def test_cli_bad_ingest_args_exit_2_with_one_line(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from vlsafety.cli import main

    rc = main(args)
    out, err = capsys.readouterr()
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("vlsafety: error:")


def test_vlsbench_mapping_lists_exactly_the_published_categories() -> None:
    from vlsafety.taxonomy import load_mappings, normalize_label

    from .realbench import json_entries

    (rule,) = [r for r in load_mappings().rules("vlsbench") if r.values is not None][:1]
    published = {
        normalize_label(str(e["category"])) for e in json_entries(data_dir() / "vlsbench/data.json")
    }
    assert rule.label == "category" and rule.values is not None
    assert set(rule.values) == published  # no value that never occurs, none missing
