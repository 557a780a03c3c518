"""Filters of the preprocessing agent (vlsafetybencher.txt §3.2 "Filtration").

Images are fully decoded (``Image.load()``) so truncated files are caught, then
normalized to what a VLM should see. Mode policy (documented decision):

* ``RGB`` and ``L`` are kept as they are.
* ``1`` → ``L``, ``P`` without transparency → ``RGB``, ``CMYK``/``YCbCr``/``LAB``/``HSV``
  → ``RGB`` (Pillow's conversions; CMYK is not colour-managed, which is fine for
  safety content).
* Alpha (``RGBA``, ``LA``, ``PA``, ``P`` with transparency): a fully opaque alpha is
  dropped losslessly; otherwise the image is composited onto **white** — what a viewer
  sees on a page, and what keeps dark text on transparent typographic images legible
  (Pillow's plain ``convert("RGB")`` would put it on black).
* 16-bit integer modes (``I;16*``, and ``I`` within 0–65535) → 8-bit ``L`` (values
  ≤ 255 kept exactly, else the top 8 bits).
* ``F`` (floating point), ``I`` outside 0–65535 and any other mode have no canonical
  display mapping → reject ``unsupported_mode``.

EXIF orientation is applied, animated images keep their first frame (``n_frames`` is
recorded). When anything changed, the normalized image is re-encoded as PNG and gets its
own content id; ``source_image_id`` keeps the lineage.
"""

from __future__ import annotations

import io
import re
import unicodedata
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from vlsafety.ingest import (
    LOAD_ERRORS,
    fine_hash,
    image_id_of,
    open_image_header,
    perceptual_hash,
    pixel_limit,
)
from vlsafety.preprocess._options import PreprocessOptions

__all__ = [
    "PREPROCESS_REASONS",
    "ImageCheck",
    "check_image",
    "check_text",
    "fine_hash",
    "normalize_text",
    "visible_text",
]

#: Reason codes the preprocess stage writes to ``rejects``.
PREPROCESS_REASONS: dict[str, str] = {
    "intent_filtered": "the source marks the sample benign/unknown and keep_intents leaves it out",
    "missing_image": "the sample's image id is not in the images table",
    "empty_file": "the image file has zero bytes",
    "undecodable_image": "the bytes are not an image Pillow can identify or decode",
    "truncated_image": "the image data ends early (full decode failed)",
    "decompression_bomb": "the image claims more pixels than the configured cap",
    "low_resolution": "the image's shorter side is below the minimum",
    "unsupported_mode": "the image mode has no canonical RGB/L display mapping",
    "empty_text": "the prompt is empty or only whitespace, control or format characters",
    "short_prompt": "the prompt has at most short_prompt_max characters (paper: 24)",
    "oversized_text": "the prompt is longer than max_text_chars",
    "non_utf8_text": "the prompt was not valid UTF-8 in its source",
    "duplicate_exact": "same image bytes and same normalized prompt as a kept sample",
    "duplicate_near": "near-duplicate image (pHash) and near-duplicate prompt (MinHash)",
    "duplicate_semantic": "embedding cosine similarity >= 1 - eps to a kept sample",
    "uncategorized": "no vote (source label, CLIP, verifier, keywords) placed the sample",
}


@dataclass(frozen=True, slots=True)
class ImageCheck:
    """Outcome of :func:`check_image`: a reject (``reason`` set) or a usable image.

    ``data``/``image_id`` are the normalized bytes and id when normalization changed the
    image, else the original ones. ``phash`` (64-bit) and ``phash_fine`` (256-bit, 32
    bytes) hash the normalized image.
    """

    reason: str | None
    detail: str
    image_id: str | None = None
    data: bytes | None = None
    changed: bool = False
    width: int | None = None
    height: int | None = None
    mode: str | None = None
    n_frames: int | None = None
    normalization: str | None = None
    phash: int | None = None
    phash_fine: bytes | None = None


def _reject(reason: str, detail: str) -> ImageCheck:
    return ImageCheck(reason, detail)


def _alpha_is_opaque(alpha: Image.Image) -> bool:
    return int(np.asarray(alpha).min()) == 255


def _normalize_mode(im: Image.Image) -> tuple[Image.Image, str | None] | str:
    """(image, note) with a supported mode, or an unsupported-mode detail string."""
    mode = im.mode
    if mode in ("RGB", "L"):
        return im, None
    if mode == "1":
        return im.convert("L"), "bilevel_to_l"
    if mode == "P":
        if "transparency" not in im.info:
            return im.convert("RGB"), "palette_to_rgb"
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode == "PA":
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "RGBa", "LA", "La"):
        if mode in ("RGBa", "La"):  # premultiplied: undo before judging alpha
            im = im.convert("RGBA" if mode == "RGBa" else "LA")
            mode = im.mode
        alpha = im.getchannel("A")
        target = "RGB" if mode == "RGBA" else "L"
        if _alpha_is_opaque(alpha):
            return im.convert(target), "opaque_alpha_dropped"
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        flat = Image.alpha_composite(background, im.convert("RGBA")).convert(target)
        return flat, "alpha_composited_on_white"
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return im.convert("RGB"), f"{mode.lower()}_to_rgb"
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(im)
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 65535:
            return f"mode {mode} with values in [{lo}, {hi}] has no 8-bit display mapping"
        if hi <= 255:
            return Image.fromarray(arr.astype(np.uint8), "L"), "int_to_l_exact"
        return Image.fromarray((arr.astype(np.uint32) >> 8).astype(np.uint8), "L"), "int16_to_l"
    return f"mode {mode} has no canonical RGB/L display mapping"


def check_image(data: bytes | None, options: PreprocessOptions) -> ImageCheck:
    """Validate and normalize one image (see the module docstring for the policy).

    Order matters for safety and cost: the header size is checked against the pixel cap
    and the minimum side *before* any pixel is decoded, so a 30000×30000 header is
    rejected without allocating its 2.7 GB.
    """
    if data is None:
        return _reject("missing_image", "no bytes for this image id")
    if len(data) == 0:
        return _reject("empty_file", "the image file has zero bytes")
    try:
        im = open_image_header(data)
    except LOAD_ERRORS as exc:
        head = data[:16]
        return _reject("undecodable_image", f"{type(exc).__name__}: {exc} (starts {head!r})")
    width, height = im.size
    if width <= 0 or height <= 0:
        return _reject("undecodable_image", f"header claims {width}x{height}")
    if width * height > options.max_pixels:
        return _reject(
            "decompression_bomb",
            f"{width}x{height} = {width * height} pixels > cap {options.max_pixels}",
        )
    if min(width, height) < options.min_side:
        return _reject(
            "low_resolution", f"{width}x{height}: shorter side < {options.min_side} pixels"
        )
    notes: list[str] = []
    try:
        n_frames = int(getattr(im, "n_frames", 1))
        if n_frames > 1:
            im.seek(0)
            notes.append(f"first_frame_of_{n_frames}")
        with pixel_limit(options.max_pixels):
            im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return _reject("decompression_bomb", str(exc))
    except LOAD_ERRORS as exc:
        text = str(exc)
        reason = "truncated_image" if "truncated" in text.lower() else "undecodable_image"
        return _reject(reason, f"{type(exc).__name__}: {text}")
    try:
        orientation = im.getexif().get(0x0112)
    except LOAD_ERRORS:
        orientation = None
    shown = im
    if isinstance(orientation, int) and 2 <= orientation <= 8:
        shown = ImageOps.exif_transpose(im)
        notes.append(f"exif_orientation_{orientation}_applied")
    if n_frames > 1:
        shown = shown.copy()  # detach frame 0 from the multi-frame file
    normalized = _normalize_mode(shown)
    if isinstance(normalized, str):
        return _reject("unsupported_mode", normalized)
    shown, note = normalized
    if note:
        notes.append(note)
    w2, h2 = shown.size
    if min(w2, h2) < options.min_side:  # orientation swaps sides; re-check for clarity
        return _reject("low_resolution", f"{w2}x{h2}: shorter side < {options.min_side}")
    changed = bool(notes)
    out = data
    if changed:
        buf = io.BytesIO()
        shown.save(buf, format="PNG", optimize=False)
        out = buf.getvalue()
    return ImageCheck(
        reason=None,
        detail=";".join(notes),
        image_id=image_id_of(out),
        data=out,
        changed=changed,
        width=int(w2),
        height=int(h2),
        mode=shown.mode,
        n_frames=n_frames,
        normalization=";".join(notes) or None,
        phash=perceptual_hash(shown),
        phash_fine=fine_hash(shown),
    )


_SPACE = re.compile(r"\s+")


def normalize_text(text: str | None) -> str | None:
    """Text key for exact dedup: NFKC, case-folded, whitespace collapsed and stripped."""
    if text is None:
        return None
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


#: Unicode categories a reader cannot see: control (NUL, BEL, ESC …) and format
#: characters (zero-width spaces and joiners, bidi overrides, a stray BOM).
_INVISIBLE = frozenset({"Cc", "Cf"})


def visible_text(text: str) -> str:
    """``text`` without its control and format characters (whitespace kept), stripped:
    what a reader sees. A prompt of NULs or zero-width spaces is empty, not 40 long."""
    if not text.isprintable():  # fast path: most prompts hold nothing to remove
        text = "".join(
            ch for ch in text if ch.isspace() or unicodedata.category(ch) not in _INVISIBLE
        )
    return text.strip()


def check_text(
    text: str | None, text_error: str | None, options: PreprocessOptions
) -> tuple[str, str] | None:
    """(reason, detail) when the prompt must be dropped, else None.

    A missing prompt (None) is allowed — an image-only sample gets its prompt from the
    generation agent; the paper's ≤ 24-character rule applies when a prompt exists.
    Length is counted in Unicode code points of the :func:`visible_text` (the prompt
    itself is kept as the source wrote it).
    """
    if text_error is not None:
        return "non_utf8_text", text_error
    if text is None:
        return None
    stripped = visible_text(text)
    if not stripped:
        return "empty_text", "the prompt is empty or only whitespace/invisible characters"
    n = len(stripped)
    if n <= options.short_prompt_max:
        return "short_prompt", f"{n} characters <= {options.short_prompt_max}: {stripped!r}"
    if n > options.max_text_chars:
        return "oversized_text", f"{n} characters > {options.max_text_chars}"
    return None
