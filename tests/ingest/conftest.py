"""Helpers for ingest tests: small real images and files in odd shapes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def png_bytes(seed: int = 0, size: tuple[int, int] = (96, 80), mode: str = "RGB") -> bytes:
    """A small random-blob PNG; different seeds give visibly different images."""
    rng = np.random.default_rng(seed)
    small = (rng.random((6, 6, 3)) * 255).astype(np.uint8)
    im = Image.fromarray(small, "RGB").resize(size, Image.Resampling.BICUBIC)
    if mode != "RGB":
        im = im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(seed: int = 0, size: tuple[int, int] = (96, 80)) -> bytes:
    im = Image.open(io.BytesIO(png_bytes(seed, size))).convert("RGB")
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


@pytest.fixture()
def outside(tmp_path: Path) -> Path:
    """A file outside any dataset root, for escape tests."""
    return write(tmp_path / "outside" / "secret.png", png_bytes(99))
