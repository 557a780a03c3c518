"""The shipped synthetic demo pool."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image

from vlsafety.ingest import open_image_header
from vlsafety.ingest.demo_data import write_demo_data


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
