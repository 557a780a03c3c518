"""Image mutations (vlsafetybencher.txt §3.4, "Image Augmentation").

Every operation is ``op(image, rng, **settings) -> (new_image, details)`` on RGB PIL
images: all randomness comes from ``rng`` (a seeded ``random.Random``; numpy noise is
seeded from it), parameters are mild so the semantics survive ("without hindering
semantics"), and ``details`` records the values drawn. Output is always RGB with both
sides >= 1 pixel.

* :func:`crop` — keep a random window of at least ``min_keep`` of each side;
* :func:`blur` — Gaussian blur of a small radius;
* :func:`add_noise` — additive Gaussian pixel noise;
* :func:`rotate`, :func:`hflip`, :func:`perspective` — spatial transforms;
* :func:`jpeg_reencode` — JPEG compression artefacts at a random quality;
* :func:`insert_marks` — a few random letters or shapes drawn in one corner
  ("insert random characters or objects into the image").
"""

from __future__ import annotations

import functools
import io
import random
import string
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

__all__ = [
    "add_noise",
    "blur",
    "crop",
    "hflip",
    "insert_marks",
    "jpeg_reencode",
    "perspective",
    "rotate",
]

_FILL = (255, 255, 255)


def _rgb(image: Image.Image) -> Image.Image:
    if not isinstance(image, Image.Image):
        raise ValueError(f"image augmentation needs a PIL image, got {type(image).__name__}")
    if image.width < 1 or image.height < 1:
        raise ValueError(f"image has no pixels: {image.size}")
    return image if image.mode == "RGB" else image.convert("RGB")


def crop(
    image: Image.Image, rng: random.Random, *, min_keep: float = 0.85
) -> tuple[Image.Image, dict[str, Any]]:
    """Crop to a random window keeping ``min_keep``..1 of each side (size changes)."""
    img = _rgb(image)
    if not 0.5 <= min_keep <= 1:
        raise ValueError(f"crop min_keep must be in [0.5, 1], got {min_keep}")
    w, h = img.size
    cw = max(1, round(w * rng.uniform(min_keep, 1.0)))
    ch = max(1, round(h * rng.uniform(min_keep, 1.0)))
    x0 = rng.randint(0, w - cw)
    y0 = rng.randint(0, h - ch)
    box = (x0, y0, x0 + cw, y0 + ch)
    return img.crop(box), {"box": list(box)}


def blur(
    image: Image.Image, rng: random.Random, *, max_radius: float = 1.5
) -> tuple[Image.Image, dict[str, Any]]:
    """Gaussian blur with a radius drawn from [0.5, ``max_radius``]."""
    img = _rgb(image)
    if not 0.5 <= max_radius <= 5:
        raise ValueError(f"blur max_radius must be in [0.5, 5], got {max_radius}")
    radius = round(rng.uniform(0.5, max_radius), 3)
    return img.filter(ImageFilter.GaussianBlur(radius)), {"radius": radius}


def add_noise(
    image: Image.Image, rng: random.Random, *, max_sigma: float = 10.0
) -> tuple[Image.Image, dict[str, Any]]:
    """Additive Gaussian noise, sigma drawn from [2, ``max_sigma``] (0-255 scale)."""
    img = _rgb(image)
    if not 2 <= max_sigma <= 50:
        raise ValueError(f"noise max_sigma must be in [2, 50], got {max_sigma}")
    sigma = round(rng.uniform(2.0, max_sigma), 3)
    noise_seed = rng.getrandbits(64)
    gen = np.random.Generator(np.random.PCG64(noise_seed))
    arr = np.asarray(img, dtype=np.float32)
    noisy = arr + gen.normal(0.0, sigma, size=arr.shape).astype(np.float32)
    out = Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8), mode="RGB")
    return out, {"sigma": sigma}


def rotate(
    image: Image.Image, rng: random.Random, *, max_degrees: float = 10.0
) -> tuple[Image.Image, dict[str, Any]]:
    """Rotate by an angle in [-``max_degrees``, ``max_degrees``] about the centre (same
    size; uncovered corners white)."""
    img = _rgb(image)
    if not 0 < max_degrees <= 30:
        raise ValueError(f"rotate max_degrees must be in (0, 30], got {max_degrees}")
    angle = round(rng.uniform(-max_degrees, max_degrees), 3)
    out = img.rotate(angle, resample=Image.Resampling.BICUBIC, expand=False, fillcolor=_FILL)
    return out, {"angle": angle}


def hflip(image: Image.Image, rng: random.Random) -> tuple[Image.Image, dict[str, Any]]:
    """Mirror left-right (never applied to images that carry text: it would mirror it)."""
    img = _rgb(image)
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT), {}


def _perspective_coeffs(
    src: list[tuple[float, float]], dst: list[tuple[float, float]]
) -> list[float]:
    """The 8 coefficients PIL's PERSPECTIVE transform needs to map output points ``dst``
    back to input points ``src`` (solve the 8x8 homography system)."""
    rows = []
    rhs = []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs.extend([u, v])
    coeffs = np.linalg.solve(np.asarray(rows, dtype=np.float64), np.asarray(rhs, dtype=np.float64))
    return [float(c) for c in coeffs]


def perspective(
    image: Image.Image, rng: random.Random, *, max_shift: float = 0.06
) -> tuple[Image.Image, dict[str, Any]]:
    """A mild perspective warp: each corner moves inwards by up to ``max_shift`` of the
    side (same size; uncovered areas white)."""
    img = _rgb(image)
    if not 0 < max_shift <= 0.2:
        raise ValueError(f"perspective max_shift must be in (0, 0.2], got {max_shift}")
    w, h = img.size
    src = [(0.0, 0.0), (w, 0.0), (w, h), (0.0, h)]
    signs = [(1, 1), (-1, 1), (-1, -1), (1, -1)]
    dst = [
        (
            round(x + sx * rng.uniform(0, max_shift) * w, 2),
            round(y + sy * rng.uniform(0, max_shift) * h, 2),
        )
        for (x, y), (sx, sy) in zip(src, signs, strict=True)
    ]
    coeffs = _perspective_coeffs(src, dst)
    out = img.transform(
        (w, h), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BICUBIC, fillcolor=_FILL
    )
    return out, {"corners": [list(p) for p in dst]}


def jpeg_reencode(
    image: Image.Image, rng: random.Random, *, min_quality: int = 60, max_quality: int = 90
) -> tuple[Image.Image, dict[str, Any]]:
    """Encode as JPEG at a quality in [``min_quality``, ``max_quality``] and decode."""
    img = _rgb(image)
    if not 10 <= min_quality <= max_quality <= 100:
        raise ValueError(
            "jpeg quality range must satisfy 10 <= min <= max <= 100, "
            f"got {min_quality}..{max_quality}"
        )
    quality = rng.randint(min_quality, max_quality)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, optimize=False, subsampling=0)
    with Image.open(io.BytesIO(buf.getvalue())) as decoded:
        out = decoded.convert("RGB")
    return out, {"quality": quality}


@functools.cache
def _font(size: int) -> Any:
    return ImageFont.load_default(size=size)


_SHAPES = ("circle", "square", "triangle")
_CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")


def insert_marks(
    image: Image.Image, rng: random.Random, *, count: int = 3, region: float = 0.25
) -> tuple[Image.Image, dict[str, Any]]:
    """Draw ``count`` random letters/digits or small shapes inside one corner region
    (``region`` of each side), leaving the rest of the image untouched."""
    img = _rgb(image).copy()
    if not 1 <= count <= 10:
        raise ValueError(f"insert count must be in 1..10, got {count}")
    if not 0.1 <= region <= 0.5:
        raise ValueError(f"insert region must be in [0.1, 0.5], got {region}")
    w, h = img.size
    corner = _CORNERS[rng.randrange(len(_CORNERS))]
    rw, rh = max(1, int(w * region)), max(1, int(h * region))
    x_base = 0 if "left" in corner else w - rw
    y_base = 0 if "top" in corner else h - rh
    draw = ImageDraw.Draw(img)
    marks = []
    for _ in range(count):
        size = max(4, int(min(rw, rh) * rng.uniform(0.25, 0.45)))
        x = x_base + rng.randint(0, max(0, rw - size))
        y = y_base + rng.randint(0, max(0, rh - size))
        color = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        if rng.random() < 0.5:
            char = rng.choice(string.ascii_uppercase + string.digits)
            draw.text((x, y), char, font=_font(size), fill=color)
            marks.append({"char": char, "xy": [x, y], "size": size, "color": list(color)})
        else:
            shape = _SHAPES[rng.randrange(len(_SHAPES))]
            box = (x, y, x + size - 1, y + size - 1)
            if shape == "circle":
                draw.ellipse(box, fill=color)
            elif shape == "square":
                draw.rectangle(box, fill=color)
            else:
                draw.polygon(
                    [(x + size // 2, y), (x, y + size - 1), (x + size - 1, y + size - 1)],
                    fill=color,
                )
            marks.append({"shape": shape, "xy": [x, y], "size": size, "color": list(color)})
    return img, {"corner": corner, "marks": marks}
