"""Image and prompt filters, each exercised by a real bad file."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from vlsafety.ingest import image_id_of
from vlsafety.ingest.demo_data import _png_bomb_header
from vlsafety.preprocess import PreprocessOptions, check_image, check_text, normalize_text
from vlsafety.preprocess._filters import visible_text

OPTS = PreprocessOptions()


def encode(im: Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def blobs(size: tuple[int, int] = (120, 90), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = (rng.random((5, 5, 3)) * 255).astype(np.uint8)
    return Image.fromarray(small, "RGB").resize(size, Image.Resampling.BICUBIC)


def decoded(data: bytes | None) -> Image.Image:
    assert data is not None
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def test_a_good_rgb_image_passes_unchanged() -> None:
    data = encode(blobs())
    c = check_image(data, OPTS)
    assert c.reason is None and not c.changed
    assert c.data == data and c.image_id == image_id_of(data)
    assert (c.width, c.height, c.mode, c.n_frames) == (120, 90, "RGB", 1)
    assert c.phash is not None and c.phash_fine is not None and len(c.phash_fine) == 32


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty_file"),
        (b"This is a text file pretending to be a JPEG.\n", "undecodable_image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "undecodable_image"),
        (None, "missing_image"),
    ],
)
def test_undecodable_bytes(data: bytes | None, reason: str) -> None:
    assert check_image(data, OPTS).reason == reason


def test_truncated_jpeg_is_caught_by_the_full_decode() -> None:
    full = encode(blobs((200, 150)), "JPEG", quality=90)
    c = check_image(full[: len(full) // 2], OPTS)
    assert c.reason == "truncated_image"
    assert "truncated" in c.detail


def test_truncated_png() -> None:
    full = encode(blobs((200, 150)))
    assert check_image(full[: len(full) - 200], OPTS).reason == "truncated_image"
    assert check_image(full[:-12], OPTS).reason is None  # only IEND lost: all pixels there


def test_one_pixel_and_small_images_are_low_resolution() -> None:
    assert check_image(encode(Image.new("RGB", (1, 1))), OPTS).reason == "low_resolution"
    assert check_image(encode(blobs((63, 200))), OPTS).reason == "low_resolution"
    assert check_image(encode(blobs((64, 64))), OPTS).reason is None
    assert check_image(encode(blobs((40, 40))), PreprocessOptions(min_side=32)).reason is None


def test_bomb_header_is_rejected_without_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self: Image.Image) -> None:
        raise AssertionError("decoded a bomb")

    monkeypatch.setattr(Image.Image, "load", boom)
    c = check_image(_png_bomb_header(30000, 30000), OPTS)
    assert c.reason == "decompression_bomb"
    assert "30000x30000" in c.detail


def test_pixel_cap_is_configurable() -> None:
    data = encode(blobs((200, 200)))
    assert check_image(data, PreprocessOptions(max_pixels=39_999)).reason == "decompression_bomb"
    assert check_image(data, PreprocessOptions(max_pixels=40_000)).reason is None


def test_cmyk_is_converted_to_rgb() -> None:
    c = check_image(encode(blobs().convert("CMYK"), "JPEG", quality=95), OPTS)
    assert c.reason is None and c.changed and c.mode == "RGB"
    assert c.normalization == "cmyk_to_rgb"
    assert decoded(c.data).mode == "RGB"
    assert c.image_id == image_id_of(c.data or b"")


def test_palette_with_transparency_is_composited_on_white() -> None:
    im = Image.new("P", (80, 80), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.paste(1, (20, 20, 60, 60))  # a red square on index 0 ...
    data = encode(im, transparency=0)  # ... and index 0 is transparent
    c = check_image(data, OPTS)
    assert c.reason is None and c.normalization == "alpha_composited_on_white"
    out = np.asarray(decoded(c.data).convert("RGB"))
    assert tuple(out[5, 5]) == (255, 255, 255)  # transparent → white, not black
    assert tuple(out[40, 40]) == (255, 0, 0)


def test_palette_without_transparency_and_opaque_alpha_are_lossless() -> None:
    pal = blobs().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    c = check_image(encode(pal), OPTS)
    assert c.normalization == "palette_to_rgb"
    assert np.array_equal(np.asarray(decoded(c.data)), np.asarray(pal.convert("RGB")))
    rgba = blobs().convert("RGBA")
    c = check_image(encode(rgba), OPTS)
    assert c.normalization == "opaque_alpha_dropped"
    assert np.array_equal(np.asarray(decoded(c.data)), np.asarray(blobs()))


def test_la_with_real_alpha_becomes_l_on_white() -> None:
    la = Image.merge("LA", (Image.new("L", (70, 70), 0), Image.new("L", (70, 70), 0)))
    c = check_image(encode(la), OPTS)
    assert c.mode == "L" and c.normalization == "alpha_composited_on_white"
    assert int(np.asarray(decoded(c.data)).min()) == 255


def test_sixteen_bit_grayscale_keeps_its_top_byte() -> None:
    arr = np.linspace(0, 65535, 80 * 80, dtype=np.uint16).reshape(80, 80)
    c = check_image(encode(Image.fromarray(arr)), OPTS)
    assert c.reason is None and c.mode == "L" and c.normalization == "int16_to_l"
    assert np.array_equal(np.asarray(decoded(c.data)), (arr >> 8).astype(np.uint8))


def test_float_images_are_an_unsupported_mode() -> None:
    arr = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    c = check_image(encode(Image.fromarray(arr, mode="F"), "TIFF"), OPTS)
    assert c.reason == "unsupported_mode"
    assert "mode F" in c.detail


def test_exif_orientation_is_applied() -> None:
    im = blobs((160, 100))
    exif = Image.Exif()
    exif[0x0112] = 6
    c = check_image(encode(im, "JPEG", quality=95, exif=exif.tobytes()), OPTS)
    assert c.changed and (c.width, c.height) == (100, 160)
    assert c.normalization == "exif_orientation_6_applied"
    assert decoded(c.data).size == (100, 160)


def test_animated_gif_keeps_the_first_frame() -> None:
    frames = [blobs(seed=s) for s in range(3)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    c = check_image(data, OPTS)
    assert c.reason is None and c.n_frames == 3
    assert c.normalization is not None and c.normalization.startswith("first_frame_of_3")
    first = Image.open(io.BytesIO(data)).convert("RGB")
    assert np.array_equal(np.asarray(decoded(c.data).convert("RGB")), np.asarray(first))


# ------------------------------------------------------------------------- text


@pytest.mark.parametrize(
    ("text", "error", "reason"),
    [
        (None, None, None),
        ("x" * 24, None, "short_prompt"),
        ("   " + "x" * 24 + "   ", None, "short_prompt"),
        ("x" * 25, None, None),
        ("", None, "empty_text"),
        (" \n\t ", None, "empty_text"),
        ("x" * 4001, None, "oversized_text"),
        ("x" * 4000, None, None),
        ("caf\ufffd is a long enough prompt here", "invalid UTF-8: byte 0xff", "non_utf8_text"),
    ],
)
def test_check_text(text: str | None, error: str | None, reason: str | None) -> None:
    got = check_text(text, error, OPTS)
    assert (got[0] if got else None) == reason


def test_short_prompt_counts_characters_not_bytes() -> None:
    assert check_text("é" * 25, None, OPTS) is None  # 50 bytes, 25 characters


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("\x00\x07\x1b\x7f" * 10, "empty_text"),  # control characters only
        ("\u200b\u200d\u202e\ufeff" * 10, "empty_text"),  # zero-width, bidi, BOM only
        ("\x00" * 30 + "Is this fair?", "short_prompt"),  # 13 visible characters
        ("Describe\x1b[31m this\x00 picture in a few careful words.", None),
    ],
)
def test_invisible_characters_do_not_count(text: str, reason: str | None) -> None:
    got = check_text(text, None, OPTS)
    assert (got[0] if got else None) == reason


@given(st.text(max_size=60))
def test_check_text_boundary(text: str) -> None:
    got = check_text(text, None, OPTS)
    n = len(visible_text(text))
    assert n <= len(text.strip())
    if n == 0:
        assert got is not None and got[0] == "empty_text"
    elif n <= 24:
        assert got is not None and got[0] == "short_prompt"
    else:
        assert got is None


def test_normalize_text() -> None:
    assert normalize_text("  Hello\u00a0 WORLD\n") == "hello world"
    assert normalize_text(None) is None


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="near_radius"):
        PreprocessOptions(near_radius=64)
    with pytest.raises(ValueError, match="prompt_jaccard"):
        PreprocessOptions(prompt_jaccard=0.0)
    with pytest.raises(ValueError, match="min_side"):
        PreprocessOptions(min_side=0)
