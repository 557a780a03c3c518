"""Image header reading and perceptual hashing, shared by ingest and preprocessing.

Decompression bombs: Pillow refuses images above ``Image.MAX_IMAGE_PIXELS`` only when
asked to decode, and raises already in ``Image.open`` above twice that. We want the
header's size even for a bomb (to record and reject it), so headers are opened with
Pillow's check off and the pixel count is compared with our own cap before any decode;
decodes then run with ``MAX_IMAGE_PIXELS`` set to that cap as a second line of defence.
"""

from __future__ import annotations

import contextlib
import io
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "DECODE_ERRORS",
    "DEFAULT_MAX_PIXELS",
    "LOAD_ERRORS",
    "ImageHeader",
    "fine_hash",
    "hamming",
    "open_image_header",
    "perceptual_hash",
    "phash_from_int64",
    "phash_to_int64",
    "pixel_limit",
    "read_image_header",
]

#: Default pixel cap (50 MP, e.g. 8660 × 5773): far above what a VLM consumes, far below
#: the gigapixel headers of decompression bombs.
DEFAULT_MAX_PIXELS = 50_000_000

_LIMIT_LOCK = threading.RLock()

# Exceptions Pillow raises on malformed files (SyntaxError and struct.error come from
# several format plugins' header parsers).
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    MemoryError,
)

#: Errors of a full decode: malformed data or a decompression bomb.
LOAD_ERRORS: tuple[type[BaseException], ...] = (
    *DECODE_ERRORS,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)


@contextlib.contextmanager
def pixel_limit(max_pixels: int | None) -> Iterator[None]:
    """Temporarily set ``Image.MAX_IMAGE_PIXELS`` (process-global; guarded by a lock so
    threads in one process do not interleave) and turn the bomb warning into an error."""
    with _LIMIT_LOCK:
        old = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                yield
        finally:
            Image.MAX_IMAGE_PIXELS = old


def open_image_header(data: bytes) -> Image.Image:
    """``Image.open`` on the bytes: reads the header only, never the pixels."""
    with pixel_limit(None):
        return Image.open(io.BytesIO(data))


def perceptual_hash(image: Image.Image) -> int:
    """64-bit DCT perceptual hash (imagehash.phash, 8×8 of a 32×32 DCT) as an unsigned
    int, most significant bit = first hash bit. ``image`` must be decodable."""
    import imagehash

    bits = imagehash.phash(image).hash.flatten()
    value = 0
    for b in bits:
        value = (value << 1) | int(b)
    return value


def fine_hash(image: Image.Image) -> bytes:
    """256-bit pHash (16×16 DCT of a 64×64 thumbnail), 32 bytes. It verifies 64-bit
    candidates: distinct images that collide in 64 bits rarely stay close in 256."""
    import imagehash

    bits = imagehash.phash(image, hash_size=16).hash.flatten().astype(np.uint8)
    return np.packbits(bits).tobytes()


def phash_to_int64(value: int) -> int:
    """Unsigned 64-bit → signed int64 (same bits), for Spark LongType columns."""
    return value - (1 << 64) if value >= (1 << 63) else value


def phash_from_int64(value: int) -> int:
    """Signed int64 → unsigned 64-bit (same bits)."""
    return value + (1 << 64) if value < 0 else value


def hamming(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Bitwise Hamming distance of 64-bit hashes (uint64 arrays or ints), vectorized."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))
    return np.bitwise_count(x).astype(np.int64)


@dataclass(frozen=True, slots=True)
class ImageHeader:
    """What ingest records about an image without judging it (preprocessing judges)."""

    width: int | None
    height: int | None
    format: str | None
    mode: str | None
    n_frames: int | None
    exif_orientation: int | None
    phash: int | None  # unsigned 64-bit
    decode_error: str | None
    #: 256-bit hash (:func:`fine_hash`) of the same displayed first frame
    phash_fine: bytes | None = None


def _orientation(im: Image.Image) -> int | None:
    try:
        value = im.getexif().get(0x0112)
    except DECODE_ERRORS:
        return None
    return int(value) if isinstance(value, int) else None


def read_image_header(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageHeader:
    """Header facts and the perceptual hash of the first frame as displayed (EXIF
    orientation applied). Never raises on bad bytes: problems go to ``decode_error``.
    Images above ``max_pixels`` are not decoded, so they get no hash."""
    if not data:
        return ImageHeader(None, None, None, None, None, None, None, "empty file")
    try:
        im = open_image_header(data)
    except DECODE_ERRORS as exc:
        return ImageHeader(
            None, None, None, None, None, None, None, f"header: {type(exc).__name__}: {exc}"
        )
    width, height = im.size
    try:
        n_frames = int(getattr(im, "n_frames", 1))
        im.seek(0)
    except DECODE_ERRORS:
        n_frames = None
    orientation: int | None = None
    phash: int | None = None
    fine: bytes | None = None
    error: str | None = None
    if width * height > max_pixels:
        # Not even EXIF: Pillow's PNG plugin decodes the whole image to find an eXIf chunk.
        error = f"not decoded: {width}x{height} exceeds the {max_pixels}-pixel cap"
    else:
        orientation = _orientation(im)
        try:
            with pixel_limit(max_pixels):
                im.load()
                shown = ImageOps.exif_transpose(im) if orientation not in (None, 1) else im
                phash = perceptual_hash(shown)
                fine = fine_hash(shown)
        except LOAD_ERRORS as exc:
            error = f"decode: {type(exc).__name__}: {exc}"
    return ImageHeader(
        width=int(width),
        height=int(height),
        format=im.format,
        mode=im.mode,
        n_frames=n_frames,
        exif_orientation=orientation,
        phash=phash,
        decode_error=error,
        phash_fine=fine,
    )
