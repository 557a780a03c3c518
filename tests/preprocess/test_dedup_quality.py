"""Dedup quality on planted duplicates: precision and recall of each level.

Image levels run on the demo pool's real files (resized, re-encoded, cropped and
brightness-shifted copies, exact copies, near-duplicate prompts); the semantic level on
synthetic embeddings with planted near-copies.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from vlsafety.ingest.demo_data import write_demo_data
from vlsafety.preprocess import (
    DedupInput,
    PreprocessOptions,
    check_image,
    check_text,
    deduplicate,
    deduplicate_semantic,
)


def precision_recall(found: set[Any], truth: set[Any]) -> tuple[float, float]:
    tp = len(found & truth)
    return (tp / len(found) if found else 1.0), (tp / len(truth) if truth else 1.0)


@pytest.fixture(scope="module")
def demo_dedup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("quality")
    manifest = write_demo_data(root, n=96, seed=7)
    planted = json.loads((root / "planted.json").read_text())
    opts = PreprocessOptions()
    rows, checks = [], {}
    for line_no, line in enumerate(manifest.read_bytes().splitlines(), start=1):
        try:
            row = json.loads(line.decode("utf-8", "surrogateescape"))
        except json.JSONDecodeError:
            continue
        img = row.get("image")
        if not img or not (root / img).is_file() or check_text(row["text"], None, opts):
            continue
        if img not in checks:
            checks[img] = check_image((root / img).read_bytes(), opts)
        if checks[img].reason is None:
            rows.append((line_no, row, checks[img]))
    data = DedupInput(
        sample_id=[f"{ln:05d}" for ln, _, _ in rows],
        image_id=[c.image_id for _, _, c in rows],
        text=[r["text"] for _, r, _ in rows],
        image_text=[r.get("image_text") for _, r, _ in rows],
        phash=np.array([c.phash for _, _, c in rows], dtype=np.uint64),
        phash_fine=np.stack(
            [np.frombuffer(c.phash_fine or b"", dtype=np.uint8) for _, _, c in rows]
        ),
        pixels=np.array([(c.width or 0) * (c.height or 0) for _, _, c in rows]),
        existing=np.zeros(len(rows), dtype=bool),
    )
    result = deduplicate(
        data,
        radius=opts.near_radius,
        radius_fine=opts.near_radius_fine,
        jaccard=opts.prompt_jaccard,
    )
    return {"rows": rows, "result": result, "planted": planted}


@pytest.mark.parametrize(
    ("level", "kinds"),
    [
        ("exact", {"exact"}),
        ("near", {"resized", "reencoded", "cropped", "brightness", "near_prompt"}),
    ],
)
def test_image_levels_find_the_planted_duplicates(
    demo_dedup: dict[str, object], level: str, kinds: set[str]
) -> None:
    rows = demo_dedup["rows"]
    result = demo_dedup["result"]
    planted = demo_dedup["planted"]
    assert isinstance(rows, list) and isinstance(planted, dict)
    truth = {p["line"] for p in planted["duplicate"] if p["kind"] in kinds}
    levels = result.level  # type: ignore[attr-defined]
    found = {rows[i][0] for i, lv in enumerate(levels) if lv == level}
    precision, recall = precision_recall(found, truth)
    assert (precision, recall) == (1.0, 1.0), (sorted(found - truth), sorted(truth - found))


def test_every_planted_kind_is_covered(demo_dedup: dict[str, object]) -> None:
    planted = demo_dedup["planted"]
    assert isinstance(planted, dict)
    kinds = {p["kind"] for p in planted["duplicate"]}
    assert kinds == {"exact", "resized", "reencoded", "cropped", "brightness", "near_prompt"}


def test_distinct_images_all_survive(demo_dedup: dict[str, object]) -> None:
    rows = demo_dedup["rows"]
    result = demo_dedup["result"]
    assert isinstance(rows, list)
    dup_lines = {p["line"] for p in demo_dedup["planted"]["duplicate"]}  # type: ignore[index]
    originals = [i for i, (ln, _, _) in enumerate(rows) if ln not in dup_lines]
    assert all(result.duplicate_of[i] < 0 for i in originals)  # type: ignore[attr-defined]


def test_semantic_level_precision_and_recall() -> None:
    rng = np.random.default_rng(3)
    n, d, n_dup = 4000, 96, 300
    centers = rng.normal(size=(40, d))
    base = centers[rng.integers(0, 40, n)] + 0.8 * rng.normal(size=(n, d))
    src = rng.choice(n, n_dup, replace=False)
    copies = base[src] + 0.03 * rng.normal(size=(n_dup, d))  # cos ≈ 0.999 to the source
    vectors = np.concatenate([base, copies]).astype(np.float32)
    total = n + n_dup
    data = DedupInput(
        sample_id=[f"s{i:05d}" for i in range(total)],
        image_id=[f"i{i}" for i in range(total)],
        text=[None] * total,
        image_text=[None] * total,
        phash=np.arange(total, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15),
        phash_fine=np.zeros((total, 32), dtype=np.uint8),
        pixels=np.ones(total),
        existing=np.zeros(total, dtype=bool),
    )
    result = deduplicate(data, radius=0)  # no image-level pairs: pHashes all differ
    assert result.kept.all()
    deduplicate_semantic(
        result, np.arange(total), vectors, data.existing, data.sample_id, eps=0.01, cluster_size=250
    )
    dropped = {i for i in range(total) if result.level[i] == "semantic"}
    # each planted pair loses exactly one member (either may be the representative)
    pair_hit = sum(1 for k, s in enumerate(src) if (n + k in dropped) != (s in dropped))
    truth_pairs = {frozenset((int(s), n + k)) for k, s in enumerate(src)}
    found_pairs = {frozenset((i, int(result.duplicate_of[i]))) for i in dropped}
    precision, recall = precision_recall(found_pairs, truth_pairs)
    assert pair_hit == n_dup
    assert precision >= 0.99 and recall >= 0.99
