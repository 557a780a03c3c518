"""run_preprocess on local Spark over the demo pool, with the embedded default's
untrained tiny CLIP (through the real run_inference path) and with trusted stand-ins."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from PIL import Image
from pyspark import cloudpickle

from vlsafety.ingest import IngestOptions, run_ingest
from vlsafety.ingest.demo_data import write_demo_data
from vlsafety.preprocess import PreprocessOptions, VerifierRequest, run_preprocess
from vlsafety.taxonomy import load_taxonomy

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from vlsafety.lake import Lake


# The stand-in models below run inside Spark tasks; workers cannot import this test
# module by name, so its classes and functions travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def line_of(source_ref: str) -> int:
    return int(re.search(r"line (\d+)$", source_ref).group(1))  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def demo(
    spark: SparkSession, tmp_path_factory: pytest.TempPathFactory, tiny_clip_spec: Any
) -> dict[str, Any]:
    from vlsafety.lake import Lake

    root = tmp_path_factory.mktemp("preprocess")
    manifest = write_demo_data(root / "demo", n=36, seed=1)
    lake = Lake(root / "lake", spark)
    run_ingest(spark, lake, [f"manifest:{manifest}"], IngestOptions(partitions=2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        counts = run_preprocess(
            spark, lake, PreprocessOptions(partitions=2), embedder=tiny_clip_spec
        )
    return {
        "root": root,
        "manifest": manifest,
        "lake": lake,
        "counts": counts,
        "warnings": [str(w.message) for w in caught],
        "planted": json.loads((root / "demo" / "planted.json").read_text()),
        "pool": lake.read_arrow("pool").to_pylist(),
        "rejects": [
            r for r in lake.read_arrow("rejects").to_pylist() if r["stage"] == "preprocess"
        ],
    }


def test_counts_balance(demo: dict[str, Any]) -> None:
    c = demo["counts"]
    lake: Lake = demo["lake"]
    assert c["pending"] == lake.read_arrow("raw_pool").num_rows
    assert c["pending"] == c["kept"] + c["rejected"]
    assert c["kept"] == len(demo["pool"]) and c["rejected"] == len(demo["rejects"])


def test_every_planted_bad_file_and_prompt_is_rejected_for_its_reason(demo: dict[str, Any]) -> None:
    got = {(r["reason"], line_of(r["source_ref"])) for r in demo["rejects"]}
    want = {
        (p["reason"], p["line"]) for p in demo["planted"]["reject"] if p["stage"] == "preprocess"
    }
    assert want <= got
    assert all(r["sample_id"] and r["detail"] for r in demo["rejects"])


def manifest_rows(manifest: Path) -> dict[int, dict[str, Any]]:
    out = {}
    for n, line in enumerate(manifest.read_bytes().splitlines(), start=1):
        try:
            out[n] = json.loads(line.decode("utf-8", "surrogateescape"))
        except json.JSONDecodeError:
            continue
    return out


def test_planted_duplicates_and_only_they_are_dropped(demo: dict[str, Any]) -> None:
    rows = manifest_rows(demo["manifest"])
    original = {
        r["image"]: n
        for n, r in sorted(rows.items(), reverse=True)
        if r.get("style") in ("typographic", "scene", "noise")
    }
    by_line = {line_of(r["source_ref"]): r for r in demo["pool"]}
    dropped = {
        line_of(r["source_ref"]): r for r in demo["rejects"] if r["reason"].startswith("duplicate_")
    }
    lake: Lake = demo["lake"]
    dup_table = {r["sample_id"]: r for r in lake.read_arrow("duplicates").to_pylist()}
    # planted copies and their originals form groups (an original may have several)
    group: dict[int, int] = {}

    def find(x: int) -> int:
        while group.setdefault(x, x) != x:
            x = group[x]
        return x

    for p in demo["planted"]["duplicate"]:
        group[find(p["line"])] = find(original[p["of"]])
    members: dict[int, set[int]] = {}
    for line in list(group):
        members.setdefault(find(line), set()).add(line)
    by_id = {r["sample_id"]: line_of(r["source_ref"]) for r in demo["rejects"]}
    for g in members.values():
        kept = g - set(dropped)
        assert len(kept) == 1, g  # one representative per group, the rest dropped
        (keeper,) = kept
        for lost in g & set(dropped):
            sid = dropped[lost]["sample_id"]
            while sid in dup_table:  # follow exact → near chains to the kept sample
                sid = dup_table[sid]["duplicate_of"]
            assert sid == by_line[keeper]["sample_id"]
    assert len(dropped) == len(dup_table) == sum(len(g) - 1 for g in members.values())
    n_exact = sum(1 for p in demo["planted"]["duplicate"] if p["kind"] == "exact")
    assert sum(1 for r in dropped.values() if r["reason"] == "duplicate_exact") == n_exact
    assert {r["reason"] for r in dropped.values()} == {"duplicate_exact", "duplicate_near"}
    del by_id


def test_untrained_embedder_warns_and_destroys_nothing(demo: dict[str, Any]) -> None:
    assert demo["counts"]["semantic_dedup"] is False
    assert any("untrained" in w for w in demo["warnings"])
    # every distinct sample that passed the filters survived: one per duplicate pair,
    # nothing else is missing
    rejected = {p["line"] for p in demo["planted"]["reject"]}
    n_rows = len(demo["manifest"].read_bytes().splitlines())
    n_dups = len(demo["planted"]["duplicate"])
    assert len(demo["pool"]) == n_rows - len(rejected) - n_dups
    assert not rejected & {line_of(r["source_ref"]) for r in demo["pool"]}
    # embeddings are stored all the same, for selection's diversity term
    for r in demo["pool"]:
        assert r["embedder"] == "tiny-clip" and r["embedder_untrained"] is True
        assert len(r["joint_embedding"]) == 16
        assert abs(np.linalg.norm(r["joint_embedding"]) - 1.0) < 1e-3


def test_categories_come_from_labels_or_keywords(demo: dict[str, Any]) -> None:
    tax = load_taxonomy("vlsb")
    for r in demo["pool"]:
        assert r["category"] in tax.names
        votes = dict(r["category_votes"])
        assert "clip" not in votes and "verifier" not in votes  # untrained: no model votes
        labels = dict(r["labels"])
        if "category" in labels:
            assert votes == {"source": labels["category"]} and r["category"] == labels["category"]
        else:
            assert set(votes) == {"keywords"}


def test_odd_images_are_normalized_into_new_content_ids(demo: dict[str, Any]) -> None:
    lake: Lake = demo["lake"]
    images = {r["image_id"]: r for r in lake.read_arrow("images").to_pylist()}
    by_line = {line_of(r["source_ref"]): r for r in demo["pool"]}
    notes = {
        "cmyk": "cmyk_to_rgb",
        "palette_transparency": "alpha_composited_on_white",
        "exif_orientation": "exif_orientation_6_applied",
        "animated": "first_frame_of_3",
    }
    for plant in demo["planted"]["survivor"]:
        if plant["kind"] not in notes:
            continue
        row = by_line[plant["line"]]
        assert notes[plant["kind"]] in row["normalization"]
        assert row["image_id"] != row["source_image_id"]
        img = images[row["image_id"]]
        assert hashlib.sha256(img["bytes"]).hexdigest() == row["image_id"]
        assert img["format"] == "PNG" and Image.open(io.BytesIO(img["bytes"])).mode in ("RGB", "L")
        assert row["source_image_id"] in images  # the original stays readable


def test_rerun_has_nothing_to_do(spark: SparkSession, demo: dict[str, Any]) -> None:
    counts = run_preprocess(spark, demo["lake"], PreprocessOptions())
    assert counts == {"pending": 0, "kept": 0, "rejected": 0}


# ------------------------------------------------------------- trusted stand-ins


class BagEmbedder:
    """A deterministic, *trusted* stand-in for CLIP: images → 8×8 grey thumbnails, texts →
    hashed bag of words (order-free), pairs → normalized mean. Meaningful enough to test
    semantic dedup and zero-shot voting without weights."""

    dim = 64
    spec = SimpleNamespace(id="bag", untrained=False)

    def embed_images(self, images: Sequence[Any]) -> np.ndarray:
        out = []
        for im in images:
            pil = Image.open(io.BytesIO(im)) if isinstance(im, bytes) else im
            out.append(
                np.asarray(pil.convert("L").resize((8, 8)), dtype=np.float64).ravel() - 127.5
            )
        return self._unit(np.array(out))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim))
        for i, t in enumerate(texts):
            for w in re.findall(r"[a-z]+", t.lower()):
                out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1.0
        return self._unit(out + 1e-6)

    def embed_pairs(self, images: Sequence[Any], texts: Sequence[str]) -> np.ndarray:
        return self._unit(self.embed_images(images) + self.embed_texts(texts))

    @staticmethod
    def _unit(x: np.ndarray) -> np.ndarray:
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def scene(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    small = (rng.random((4, 4, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small, "RGB").resize((128, 96), Image.Resampling.BICUBIC).save(buf, "PNG")
    return buf.getvalue()


def test_trusted_models_dedup_semantically_and_vote(
    spark: SparkSession, lake: Lake, tmp_path: Path
) -> None:
    root = tmp_path / "folder"
    root.mkdir()
    prompt = "How could someone protect the privacy of the home address shown here?"
    shuffled = "Shown here, the home address: how could someone protect the privacy of?"
    (root / "a.png").write_bytes(scene(1))
    (root / "a.txt").write_text(prompt)
    (root / "b.png").write_bytes(scene(1))  # same image ...
    (root / "b.txt").write_text(shuffled)  # ... same words, reordered: not a MinHash near-dup
    (root / "c.png").write_bytes(scene(2))
    (root / "c.txt").write_text("Is this viral headline about a celebrity fake news or a hoax?")
    run_ingest(spark, lake, [f"folder:{root}"])

    def verifier(reqs: Sequence[VerifierRequest]) -> list[str]:
        # runs in the executor tasks: what it saw is told in its answers
        return [
            "no image"
            if r.image is None or not r.image.startswith(b"\x89PNG")
            else "Category: privacy"
            if "privacy" in r.prompt.split("Sample prompt:")[1]
            else "no idea"
            for r in reqs
        ]

    counts = run_preprocess(
        spark, lake, PreprocessOptions(semantic_eps=0.02), embedder=BagEmbedder(), verifier=verifier
    )
    assert counts["semantic_dedup"] is True
    assert counts["dedup.semantic"] == 1 and counts["kept"] == 2
    pool = {Path(r["source_ref"]).stem: r for r in lake.read_arrow("pool").to_pylist()}
    assert set(pool) in ({"a", "c"}, {"b", "c"})
    kept_ab = pool.get("a") or pool["b"]
    votes = dict(kept_ab["category_votes"])
    assert votes["verifier"] == "privacy" and "clip" in votes
    assert kept_ab["category"] == "privacy" and kept_ab["verifier_raw"] == "Category: privacy"
    assert pool["c"]["category"] == dict(pool["c"]["category_votes"])["clip"]
    # every sample was put to the verifier with its normalized PNG image
    assert all(r["verifier_raw"] in ("Category: privacy", "no idea") for r in pool.values())
    dup = lake.read_arrow("duplicates").to_pylist()
    assert [d["dedup_level"] for d in dup] == ["semantic"] and dup[0]["score"] > 0.98


def test_new_samples_are_deduplicated_against_the_existing_pool(
    spark: SparkSession, lake: Lake, tmp_path: Path
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    for d in (first, second):
        d.mkdir()
    text = "Explain why selling counterfeit watches like the one shown is illegal."
    (first / "w.png").write_bytes(scene(5))
    (first / "w.txt").write_text(text)
    (first / "x.png").write_bytes(scene(6))
    (first / "x.txt").write_text("What safety precautions should someone take before this stunt?")
    run_ingest(spark, lake, [f"folder:{first}"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c1 = run_preprocess(spark, lake)
    assert c1["kept"] == 2
    shutil.copy(first / "w.png", second / "copy.png")
    (second / "copy.txt").write_text(text)
    run_ingest(spark, lake, [f"folder:{second}"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c2 = run_preprocess(spark, lake)
    assert c2["pending"] == 1 and c2["dedup.exact"] == 1 and c2["kept"] == 0
    old = {r["source_ref"]: r["sample_id"] for r in lake.read_arrow("pool").to_pylist()}
    (dup,) = lake.read_arrow("duplicates").to_pylist()
    assert dup["duplicate_of"] == old["w.png"]


def test_missing_tables_are_a_clear_error(spark: SparkSession, lake: Lake) -> None:
    with pytest.raises(ValueError, match="no raw_pool table; run ingest first"):
        run_preprocess(spark, lake)
