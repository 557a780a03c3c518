"""The shipped synthetic demo pool."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from vlsafety.ingest import open_image_header
from vlsafety.ingest.demo_data import (
    CATEGORY_PROMPTS,
    DRAWN_MAX_N,
    VARIANT_KINDS,
    PromptSpace,
    write_demo_data,
)


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_deterministic_under_the_seed(tmp_path: Path) -> None:
    write_demo_data(tmp_path / "a", n=24, seed=3)
    write_demo_data(tmp_path / "b", n=24, seed=3)
    write_demo_data(tmp_path / "c", n=24, seed=4)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_rewriting_leaves_no_stale_images(tmp_path: Path) -> None:
    write_demo_data(tmp_path, n=30, seed=0)
    manifest = write_demo_data(tmp_path, n=24, seed=0)
    referenced = set()
    for line in manifest.read_bytes().splitlines():
        try:
            row = json.loads(line.decode("utf-8", errors="surrogateescape"))
        except json.JSONDecodeError:
            continue
        referenced.add(row.get("image"))
    files = {f"images/{p.name}" for p in (tmp_path / "images").iterdir()}
    assert files <= referenced


def test_n_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n must be an integer >= 24"):
        write_demo_data(tmp_path, n=5)


def test_plants_every_case_the_filters_must_catch(tmp_path: Path) -> None:
    manifest = write_demo_data(tmp_path, n=48, seed=0)
    planted = json.loads((tmp_path / "planted.json").read_text())
    lines = manifest.read_bytes().splitlines()
    assert planted["rows"] == len(lines)
    expected = {
        ("preprocess", "truncated_image"),
        ("preprocess", "empty_file"),
        ("preprocess", "undecodable_image"),
        ("preprocess", "low_resolution"),
        ("preprocess", "decompression_bomb"),
        ("preprocess", "unsupported_mode"),
        ("preprocess", "short_prompt"),
        ("preprocess", "empty_text"),
        ("preprocess", "oversized_text"),
        ("preprocess", "non_utf8_text"),
        ("ingest", "path_escape"),
        ("ingest", "missing_file"),
        ("ingest", "remote_not_allowed"),
        ("ingest", "bad_record"),
    }
    assert {(r["stage"], r["reason"]) for r in planted["reject"]} == expected
    assert {d["kind"] for d in planted["duplicate"]} == {
        "exact",
        "resized",
        "reencoded",
        "cropped",
        "brightness",
        "near_prompt",
    }
    assert {s["kind"] for s in planted["survivor"]} >= {
        "cmyk",
        "palette_transparency",
        "exif_orientation",
        "animated",
    }
    # the files really are what they claim
    img = tmp_path / "images"
    assert (img / "zero_bytes.jpg").stat().st_size == 0
    assert Image.open(img / "cmyk.jpg").mode == "CMYK"
    assert Image.open(img / "animated.gif").n_frames == 3
    assert Image.open(img / "exif_rotated.jpg").getexif()[0x0112] == 6
    pal = Image.open(img / "palette_transparent.png")
    assert pal.mode == "P" and "transparency" in pal.info
    with pytest.raises(Image.DecompressionBombError):
        Image.open(img / "bomb_30000x30000.png")  # Pillow's own guard agrees
    assert open_image_header((img / "bomb_30000x30000.png").read_bytes()).size == (30000, 30000)
    assert Image.open(img / "float_mode.tif").mode == "F"
    # the non-UTF-8 row holds a raw 0xFF byte
    bad_line = next(r for r in planted["reject"] if r["reason"] == "non_utf8_text")["line"]
    assert b"\xff" in lines[bad_line - 1]


def test_prompts_are_mild_and_span_all_categories(tmp_path: Path) -> None:
    manifest = write_demo_data(tmp_path, n=36, seed=1)
    rows = []
    for line in manifest.read_bytes().splitlines():
        try:
            rows.append(json.loads(line))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
    cats = {r.get("category") for r in rows if r.get("style") in ("typographic", "scene", "noise")}
    assert cats - {None} == {
        "privacy",
        "bias",
        "toxicity",
        "legality",
        "misinformation",
        "health_risk",
    }
    assert sum(1 for r in rows if r.get("style") == "scene" and "category" not in r) >= 1


# ------------------------------------------------------------------ scale layout


def manifest_rows(manifest: Path) -> dict[int, dict[str, Any]]:
    """Parsed JSON rows by 1-based line (unparsable lines left out)."""
    rows = {}
    for line, raw in enumerate(manifest.read_bytes().splitlines(), start=1):
        try:
            rows[line] = json.loads(raw.decode("utf-8", errors="surrogateescape"))
        except json.JSONDecodeError:
            continue
    return rows


def prompt_key(row: dict[str, Any]) -> str:
    """The text preprocessing's near-dedup compares: prompt and rendered image text."""
    return f"{row.get('text') or ''} || {row.get('image_text') or ''}"


def jaccard_matrix(texts: list[str]) -> np.ndarray:
    """Exact character-5-shingle Jaccard of every pair (the near-dedup measure)."""
    from scipy import sparse

    from vlsafety.preprocess import shingles

    vocab: dict[str, int] = {}
    rows, cols = [], []
    for i, t in enumerate(texts):
        for s in shingles(t):
            rows.append(i)
            cols.append(vocab.setdefault(s, len(vocab)))
    x = sparse.csr_matrix(
        (np.ones(len(rows), dtype=np.int32), (rows, cols)), shape=(len(texts), len(vocab))
    )
    inter = (x @ x.T).toarray().astype(np.float64)
    sizes = np.diag(inter)
    return inter / (sizes[:, None] + sizes[None, :] - inter)


def hashes(path: Path) -> tuple[int, np.ndarray]:
    import imagehash

    from vlsafety.ingest import perceptual_hash

    with Image.open(path) as im:
        rgb = im.convert("RGB")
    return perceptual_hash(rgb), imagehash.phash(rgb, hash_size=16).hash.flatten()


@pytest.fixture(scope="module")
def scale_pool(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("scale")
    manifest = write_demo_data(root, n=2000, seed=5)  # auto: above DRAWN_MAX_N → scale
    planted = json.loads((root / "planted.json").read_text())
    return {
        "root": root,
        "manifest": manifest,
        "planted": planted,
        "rows": manifest_rows(manifest),
    }


def test_scale_pool_has_n_distinct_prompts(scale_pool: dict[str, Any]) -> None:
    rows, planted = scale_pool["rows"], scale_pool["planted"]
    assert planted["layout"] == "scale" and planted["n"] == 2000
    assert planted["rows"] == len(scale_pool["manifest"].read_bytes().splitlines())
    base = [rows[line] for line in range(1, 2001)]
    assert len({r["text"] for r in base}) == 2000
    assert {r["style"] for r in base} == {"typographic", "scene", "noise"}
    assert all(r["id"] == f"r{line:07d}" for line, r in rows.items() if "id" in r)
    # every sample that is not a planted duplicate has a prompt of its own
    dup_lines = {d["line"] for d in planted["duplicate"] if d["kind"] in VARIANT_KINDS}
    texts = [r["text"] for line, r in rows.items() if line not in dup_lines and r.get("text")]
    assert len(set(texts)) == len(texts)


def test_scale_prompts_are_not_near_duplicates(scale_pool: dict[str, Any]) -> None:
    """No two rows are near-duplicate prompts (Jaccard >= 0.85 on the near-dedup key)
    except the planted near-prompt pairs; so distinct samples never merge, whatever
    their images look like."""
    rows, planted = scale_pool["rows"], scale_pool["planted"]
    copies = {d["line"] for d in planted["duplicate"] if d["kind"] in VARIANT_KINDS}
    lines = [line for line, r in rows.items() if line not in copies and r.get("text", "").strip()]
    jac = jaccard_matrix([prompt_key(rows[line]) for line in lines])
    np.fill_diagonal(jac, 0.0)
    i, j = np.nonzero(np.triu(jac >= 0.85))
    found = {frozenset((lines[a], lines[b])) for a, b in zip(i.tolist(), j.tolist(), strict=True)}
    want = {
        frozenset((d["line"], d["of_line"]))
        for d in planted["duplicate"]
        if d["kind"] == "near_prompt"
    }
    assert found == want
    # the closest pair of distinct samples keeps a margin below the threshold
    at = {(lines.index(min(p)), lines.index(max(p))) for p in want}
    for a, b in at:
        jac[a, b] = jac[b, a] = 0.0
    assert jac.max() < 0.8


def test_scale_planted_json_is_consistent(scale_pool: dict[str, Any]) -> None:
    root, rows, planted = scale_pool["root"], scale_pool["rows"], scale_pool["planted"]
    n = planted["n"]
    dups = [d for d in planted["duplicate"] if d["level"] != "semantic"]
    sems = [d for d in planted["duplicate"] if d["level"] == "semantic"]
    c = planted["counts"]
    assert (
        c["duplicate"] == len(dups) + len(sems) and c["duplicate.semantic"] == len(sems) == n // 40
    )
    assert c["duplicate.exact"] + c["duplicate.near"] == len(dups)
    assert c["reject"] == len(planted["reject"]) == c["reject.ingest"] + c["reject.preprocess"]
    assert len(dups) == n // 8 + n // 40  # image variants and near-duplicate prompts
    assert {d["kind"] for d in dups} <= {*VARIANT_KINDS, "near_prompt"}
    originals = [d["of_line"] for d in dups + sems]
    assert len(set(originals)) == len(originals)  # every planted group is one pair
    for d in dups + sems:
        copy, orig = rows[d["line"]], rows[d["of_line"]]
        assert d["of_line"] <= n and d["line"] > n
        assert copy["image"] == d["image"] and orig["image"] == d["of"]
        assert d["id"] == copy["id"] and d["of_id"] == orig["id"]
        assert (root / d["image"]).is_file()
        level = {"exact": "exact", "semantic": "semantic"}.get(d["kind"], "near")
        assert d["level"] == level
        assert copy.get("image_text") == orig.get("image_text")
        if d["kind"] == "semantic":
            assert copy["style"] == "semantic" and copy["text"] != orig["text"]
        elif d["kind"] == "near_prompt":
            assert copy["image"] == orig["image"] and copy["text"] != orig["text"]
        else:
            assert copy["text"] == orig["text"] and copy["image"] != orig["image"]
        if d["kind"] == "exact":
            assert (root / d["image"]).read_bytes() == (root / d["of"]).read_bytes()
    expected_rejects = {(r["stage"], r["reason"]) for r in planted["reject"]}
    assert ("preprocess", "truncated_image") in expected_rejects
    assert ("ingest", "bad_record") in expected_rejects


def test_scale_plants_sit_on_the_right_side_of_the_near_rule(scale_pool: dict[str, Any]) -> None:
    """Image variants within the near radius (64-bit pHash <= 10, 256-bit <= 48);
    semantic copies beyond it, with a prompt below the Jaccard threshold."""
    root, rows, planted = scale_pool["root"], scale_pool["rows"], scale_pool["planted"]
    for d in planted["duplicate"]:
        if d["kind"] in ("exact", "near_prompt", "semantic"):
            continue
        (a64, a256), (b64, b256) = hashes(root / d["of"]), hashes(root / d["image"])
        assert (a64 ^ b64).bit_count() <= 8, d
        assert int(np.count_nonzero(a256 != b256)) <= 40, d
    for d in planted["duplicate"]:
        if d["level"] != "semantic":
            continue
        a64, b64 = hashes(root / d["of"])[0], hashes(root / d["image"])[0]
        assert (a64 ^ b64).bit_count() >= 14, d
        jac = jaccard_matrix([prompt_key(rows[d["line"]]), prompt_key(rows[d["of_line"]])])
        assert jac[0, 1] < 0.6, d


def test_scale_images_pass_the_size_filter(scale_pool: dict[str, Any]) -> None:
    root, rows, planted = scale_pool["root"], scale_pool["rows"], scale_pool["planted"]
    bad = {r["line"] for r in planted["reject"]}
    for line, r in rows.items():
        if line in bad or r["image"].startswith("images/") and "/" not in r["image"][7:]:
            continue  # planted odd files live at the top of images/
        with Image.open(root / r["image"]) as im:
            assert min(im.size) >= 64, (line, r["image"], im.size)


def test_scale_neighbouring_prompts_stay_apart() -> None:
    """The worst cases of the prompt space: two prompts whose indices differ in a
    single slot (the parity person then differs too) stay below the threshold."""
    space = PromptSpace(0)
    rng = np.random.default_rng(0)
    for category in CATEGORY_PROMPTS:
        for k in rng.integers(0, space.size, size=6).tolist():
            slots = space.slots(category, k)
            texts = [space.prompt(category, k)]
            for pos, radix in enumerate(space.radix):
                for value in range(radix):
                    if value != slots[pos]:
                        other = list(slots[:5])
                        other[pos] = value
                        texts.append(compose(category, other))
            jac = jaccard_matrix(texts)[0, 1:]
            assert jac.max() < 0.85, texts[1 + int(jac.argmax())]
        # paraphrases (semantic duplicates) sit well below the threshold
        for k in range(0, space.size, space.size // 50):
            jac = jaccard_matrix([space.prompt(category, k), space.paraphrase(category, k)])
            assert jac[0, 1] < 0.6


def compose(category: str, digits: list[int]) -> str:
    """A scale prompt from its five free slots (the person is their parity)."""
    from vlsafety.ingest.demo_data import CONTEXT_FORMS, PEOPLE, PLACES, SCALE_THINGS, TIMES

    t, f, a, p, w = digits
    head = CATEGORY_PROMPTS[category][t].format(thing=SCALE_THINGS[a])
    person = PEOPLE[sum(digits) % len(PEOPLE)]
    return head + CONTEXT_FORMS[f].format(place=PLACES[p], time=TIMES[w], person=person)


def test_scale_layout_is_deterministic_and_independent_of_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vlsafety.ingest import demo_data

    monkeypatch.setattr(demo_data, "_CHUNK", 16)  # several chunks, so the pool is used
    write_demo_data(tmp_path / "a", n=60, seed=3, layout="scale", workers=1)
    write_demo_data(tmp_path / "b", n=60, seed=3, layout="scale", workers=2)
    write_demo_data(tmp_path / "c", n=60, seed=4, layout="scale", workers=1)
    assert (tmp_path / "a/manifest.jsonl").read_bytes() == (
        tmp_path / "b/manifest.jsonl"
    ).read_bytes()
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")
    planted = json.loads((tmp_path / "a/planted.json").read_text())
    assert planted["counts"]["duplicate.semantic"] == 1
    assert planted["counts"]["duplicate"] == 60 // 8 + 1 + 1


def test_layout_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="drawn layout holds at most"):
        write_demo_data(tmp_path, n=DRAWN_MAX_N + 1, layout="drawn")
    with pytest.raises(ValueError, match="layout must be"):
        write_demo_data(tmp_path, n=30, layout="big")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at most"):
        write_demo_data(tmp_path, n=10**9)


def test_drawn_planted_entries_name_the_original(tmp_path: Path) -> None:
    manifest = write_demo_data(tmp_path, n=24, seed=0)
    rows = manifest_rows(manifest)
    planted = json.loads((tmp_path / "planted.json").read_text())
    assert planted["layout"] == "drawn" and planted["counts"]["duplicate.semantic"] == 0
    for d in planted["duplicate"]:
        assert rows[d["of_line"]]["image"] == d["of"] and rows[d["line"]]["image"] == d["image"]
        assert d["level"] == ("exact" if d["kind"] == "exact" else "near")


def test_scale_base_images_are_spread_in_phash(scale_pool: dict[str, Any]) -> None:
    """Base images' 64-bit pHashes behave like random words (mean distance near 32), so a
    large pool gives near-dedup few candidate pairs (pHash within 10 bits), and those
    few never merge: their prompts are far apart (test above)."""
    root, rows = scale_pool["root"], scale_pool["rows"]
    h = np.array([hashes(root / rows[line]["image"])[0] for line in range(1, 2001)], np.uint64)
    dist = np.bitwise_count(h[:, None] ^ h[None, :])[np.triu_indices(len(h), 1)]
    assert dist.mean() > 29
    assert int((dist <= 10).sum()) <= 2  # of ~2M pairs
