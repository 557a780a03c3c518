"""Header reading and perceptual hashing at ingest."""

from __future__ import annotations

import io

import imagehash
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from vlsafety.ingest import (
    hamming,
    perceptual_hash,
    phash_from_int64,
    phash_to_int64,
    read_image_header,
)
from vlsafety.ingest.demo_data import _png_bomb_header

from .conftest import jpeg_bytes, png_bytes


def test_header_of_a_good_image() -> None:
    h = read_image_header(png_bytes(3, (120, 90)))
    assert (h.width, h.height, h.format, h.mode, h.n_frames) == (120, 90, "PNG", "RGB", 1)
    assert h.decode_error is None
    expected = int(str(imagehash.phash(Image.open(io.BytesIO(png_bytes(3, (120, 90)))))), 16)
    assert h.phash == expected


def test_header_problems_are_recorded_not_raised() -> None:
    assert read_image_header(b"").decode_error == "empty file"
    text = read_image_header(b"just some text, not a JPEG")
    assert (
        text.width is None and text.decode_error and "UnidentifiedImageError" in text.decode_error
    )
    full = jpeg_bytes(1, (200, 160))
    truncated = read_image_header(full[: len(full) // 2])
    assert (truncated.width, truncated.height) == (200, 160)
    assert truncated.phash is None and "truncated" in (truncated.decode_error or "")


def test_bomb_header_is_measured_but_never_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self: Image.Image) -> None:
        raise AssertionError("a bomb must not be decoded")

    monkeypatch.setattr(Image.Image, "load", boom)
    h = read_image_header(_png_bomb_header(30000, 30000))
    assert (h.width, h.height) == (30000, 30000)
    assert h.phash is None and "exceeds" in (h.decode_error or "")


def test_exif_orientation_is_recorded_and_applied_before_hashing() -> None:
    im = Image.open(io.BytesIO(png_bytes(5, (160, 100)))).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    h = read_image_header(buf.getvalue())
    assert h.exif_orientation == 6
    assert (h.width, h.height) == (160, 100)  # the stored (unrotated) size
    upright = Image.open(io.BytesIO(buf.getvalue())).transpose(Image.Transpose.ROTATE_270)
    assert h.phash == perceptual_hash(upright)


def test_animated_gif_counts_frames() -> None:
    frames = [Image.open(io.BytesIO(png_bytes(s))).convert("RGB") for s in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    assert read_image_header(buf.getvalue()).n_frames == 3


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_int64_round_trip(value: int) -> None:
    signed = phash_to_int64(value)
    assert -(2**63) <= signed < 2**63
    assert phash_from_int64(signed) == value


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_hamming_matches_bit_count(a: int, b: int) -> None:
    assert int(hamming(np.uint64(a), np.uint64(b))) == bin(a ^ b).count("1")
