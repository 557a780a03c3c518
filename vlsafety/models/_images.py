"""Image decoding shared by every backend: bytes or PIL in, RGB PIL (or a data URL) out."""

from __future__ import annotations

import base64
import io
from typing import Any

from PIL import Image

__all__ = ["ImageDecodeError", "MAX_IMAGE_PIXELS", "to_data_url", "to_pil"]

#: Refuse images above this many pixels (decompression bombs); 8K x 8K is far beyond any VLM.
MAX_IMAGE_PIXELS = 64_000_000

_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}


class ImageDecodeError(ValueError):
    """An image could not be decoded (corrupt bytes, unknown format, too large)."""


def to_pil(image: Any) -> Image.Image:
    """Decode ``image`` (bytes or PIL) to a fully loaded RGB PIL image."""
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    if not isinstance(image, bytes | bytearray | memoryview):
        raise ImageDecodeError(f"expected image bytes or a PIL image, got {type(image).__name__}")
    data = bytes(image)
    if not data:
        raise ImageDecodeError("empty image bytes")
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > MAX_IMAGE_PIXELS:
                raise ImageDecodeError(f"image of {w}x{h} pixels exceeds {MAX_IMAGE_PIXELS}")
            im.load()
            return im.convert("RGB")
    except ImageDecodeError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
        raise ImageDecodeError(f"cannot decode image ({len(data)} bytes): {exc}") from exc


def to_data_url(image: Any) -> str:
    """A ``data:`` URL for chat APIs. Encoded bytes in a known format are sent as they are
    (no re-encoding); anything else is decoded (validated) and sent as PNG."""
    if isinstance(image, bytes | bytearray | memoryview):
        data = bytes(image)
        try:
            with Image.open(io.BytesIO(data)) as im:
                fmt = im.format or ""
                w, h = im.size
        except (OSError, ValueError, SyntaxError) as exc:
            raise ImageDecodeError(f"cannot decode image ({len(data)} bytes): {exc}") from exc
        if w * h > MAX_IMAGE_PIXELS:
            raise ImageDecodeError(f"image of {w}x{h} pixels exceeds {MAX_IMAGE_PIXELS}")
        if fmt in _MIME:
            return f"data:{_MIME[fmt]};base64,{base64.b64encode(data).decode('ascii')}"
    pil = to_pil(image)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return f"data:image/png;base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"
