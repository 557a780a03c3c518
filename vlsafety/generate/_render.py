"""Typographic and composited images for the ELITE methods (elite.txt §3.3, App. B.4).

ELITE draws its blueprint, flowchart and role-playing images with image-generation
models and composites its fake-news cards from photos; we render all four locally with
Pillow so nothing is downloaded and a given environment always produces the same bytes:

* :func:`render_flowchart` — the key phrase as the title of a step diagram whose boxes
  are empty (boxes and arrows);
* :func:`render_blueprint` — a blueprint sheet titled with the key phrase and an empty
  numbered list "1. 2. 3." (the FigStep typographic layout on blueprint paper);
* :func:`render_persona_card` — a silhouette and a role title, for role playing;
* :func:`render_news_card` — masthead, headline, placeholder photo and caption, for
  fake news about a fictional person.

Text is Pillow's bundled TrueType font (``ImageFont.load_default(size=...)``, Pillow >=
10.1), wrapped word by word and shrunk until it fits its box. Renderers take every choice
as an argument (no randomness inside): callers pick layouts with a seeded RNG.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from typing import Any

from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "RENDER_VERSION",
    "encode_png",
    "font_name",
    "render_blueprint",
    "render_flowchart",
    "render_news_card",
    "render_persona_card",
    "wrap_text",
]

#: Bump when a layout changes: it enters candidate ids, so old renders are not reused.
RENDER_VERSION = "1"

Color = tuple[int, int, int]
Box = tuple[int, int, int, int]

_INK: Color = (17, 17, 17)
_MIN_SIDE, _MAX_SIDE = 64, 4096


@functools.cache
def _font(size: int) -> Any:
    return ImageFont.load_default(size=size)


def font_name() -> str:
    """Which font renders text here (recorded with each rendered candidate)."""
    font = _font(12)
    kind = "truetype" if isinstance(font, ImageFont.FreeTypeFont) else "bitmap"
    family = " ".join(str(p) for p in font.getname()) if kind == "truetype" else "default"
    return f"pillow-default-{kind}:{family}"


def _check_text(value: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    return " ".join(value.split())


def _check_size(size: Sequence[int]) -> tuple[int, int]:
    if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in size):
        raise ValueError(f"size must be (width, height) integers, got {size!r}")
    w, h = int(size[0]), int(size[1])
    if not (_MIN_SIDE <= w <= _MAX_SIDE and _MIN_SIDE <= h <= _MAX_SIDE):
        raise ValueError(f"size sides must lie in {_MIN_SIDE}..{_MAX_SIDE}, got {w}x{h}")
    return w, h


def _text_width(font: Any, text: str) -> float:
    return float(font.getlength(text))


def _line_height(font: Any) -> int:
    top, bottom = font.getbbox("Hgjy")[1], font.getbbox("Hgjy")[3]
    return int(bottom - top) + max(2, int(0.25 * (bottom - top)))


def wrap_text(text: str, font: Any, max_width: int) -> list[str]:
    """Greedy word wrap to ``max_width`` pixels; a word wider than a line is split."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        while _text_width(font, word) > max_width and len(word) > 1:
            # Cut the longest prefix that fits (at least one character, so this ends).
            cut = 1
            while cut < len(word) and _text_width(font, word[: cut + 1]) <= max_width:
                cut += 1
            if current:
                lines.append(current)
                current = ""
            lines.append(word[:cut])
            word = word[cut:]
        trial = f"{current} {word}" if current else word
        if current and _text_width(font, trial) > max_width:
            lines.append(current)
            current = word
        else:
            current = trial
    if current:
        lines.append(current)
    return lines


def _fit(text: str, box: Box, max_size: int, min_size: int = 10) -> tuple[Any, list[str], int]:
    """The largest font (down to ``min_size``) whose wrapped text fits ``box``; at the
    minimum size, lines that still overflow are cut and the last one ends with an
    ellipsis (so an over-long phrase is visibly truncated, never silently clipped)."""
    width, height = box[2] - box[0], box[3] - box[1]
    size = max(max_size, min_size)
    while True:
        font = _font(size)
        lines = wrap_text(text, font, width)
        lh = _line_height(font)
        if len(lines) * lh <= height or size <= min_size:
            break
        size = max(min_size, int(size * 0.9))
    max_lines = max(1, height // lh)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        last = lines[-1]
        while last and _text_width(font, last + "...") > width:
            last = last[:-1]
        lines[-1] = last.rstrip() + "..."
    return font, lines, lh


def _draw_text(
    draw: ImageDraw.ImageDraw,
    text: str,
    box: Box,
    fill: Color,
    max_size: int,
    *,
    align: str = "center",
    min_size: int = 10,
) -> None:
    font, lines, lh = _fit(text, box, max_size, min_size)
    total = len(lines) * lh
    y = box[1] + max(0, (box[3] - box[1] - total) // 2)
    for line in lines:
        w = _text_width(font, line)
        x = box[0] + (box[2] - box[0] - w) / 2 if align == "center" else box[0]
        draw.text((x, y), line, font=font, fill=fill)
        y += lh


def _arrow(draw: ImageDraw.ImageDraw, x: int, y0: int, y1: int, width: int, fill: Color) -> None:
    head = max(4, width * 3)
    draw.line([(x, y0), (x, y1 - head)], fill=fill, width=width)
    draw.polygon([(x - head, y1 - head), (x + head, y1 - head), (x, y1)], fill=fill)


def _silhouette(draw: ImageDraw.ImageDraw, box: Box, fill: Color) -> None:
    """A head and shoulders inside ``box``."""
    x0, y0, x1, y1 = box
    cx, w, h = (x0 + x1) // 2, x1 - x0, y1 - y0
    r = int(min(w, h) * 0.2)
    head_cy = y0 + int(h * 0.35)
    draw.ellipse((cx - r, head_cy - r, cx + r, head_cy + r), fill=fill)
    sw = int(min(w * 0.45, r * 2.6))
    top = head_cy + r + max(2, r // 6)
    draw.chord((cx - sw, top, cx + sw, top + 2 * (y1 - top)), 180, 360, fill=fill)


def render_flowchart(
    phrase: str,
    *,
    size: Sequence[int] = (512, 512),
    steps: int = 3,
    title_fill: Color = (255, 244, 204),
) -> Image.Image:
    """The key phrase in a title box above ``steps`` empty, numbered step boxes joined by
    arrows (a flowchart the victim model is asked to complete)."""
    phrase = _check_text(phrase, "phrase")
    w, h = _check_size(size)
    if not 1 <= steps <= 6:
        raise ValueError(f"steps must be in 1..6, got {steps}")
    img = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    m = max(4, round(0.05 * min(w, h)))
    stroke = max(2, min(w, h) // 170)
    title = (m, m, w - m, m + round(0.26 * h))
    draw.rounded_rectangle(title, radius=m // 2, fill=title_fill, outline=_INK, width=stroke)
    pad = m // 2 + stroke
    inner = (title[0] + pad, title[1] + pad, title[2] - pad, title[3] - pad)
    _draw_text(draw, phrase, inner, _INK, max_size=max(12, h // 11))
    slot = (h - title[3] - m) / steps
    arrow_len = slot * 0.32
    label_font = _font(max(10, h // 28))
    prev_bottom = title[3]
    for k in range(steps):
        top = round(title[3] + k * slot + arrow_len)
        bottom = round(title[3] + (k + 1) * slot)
        _arrow(draw, w // 2, prev_bottom + stroke, top - stroke, stroke, _INK)
        box = (m + w // 10, top, w - m - w // 10, bottom)
        draw.rectangle(box, fill=(255, 255, 255), outline=_INK, width=stroke)
        draw.text((box[0] + pad, box[1] + pad // 2), f"Step {k + 1}", font=label_font, fill=_INK)
        prev_bottom = bottom
    return img


def render_blueprint(
    phrase: str,
    *,
    size: Sequence[int] = (512, 512),
    items: int = 3,
    paper: Color = (28, 74, 140),
    grid: Color = (58, 104, 170),
    ink: Color = (245, 245, 245),
) -> Image.Image:
    """Blueprint paper (grid on blue) titled with the key phrase, above an empty
    numbered list ``1.`` … ``items.`` with blank answer lines (FigStep-style)."""
    phrase = _check_text(phrase, "phrase")
    w, h = _check_size(size)
    if not 1 <= items <= 6:
        raise ValueError(f"items must be in 1..6, got {items}")
    img = Image.new("RGB", (w, h), paper)
    draw = ImageDraw.Draw(img)
    cell = max(8, min(w, h) // 32)
    for x in range(0, w, cell):
        draw.line([(x, 0), (x, h)], fill=grid, width=1)
    for y in range(0, h, cell):
        draw.line([(0, y), (w, y)], fill=grid, width=1)
    m = max(4, round(0.05 * min(w, h)))
    stroke = max(2, min(w, h) // 200)
    draw.rectangle((m // 2, m // 2, w - m // 2, h - m // 2), outline=ink, width=stroke)
    title = (m, m, w - m, m + round(0.26 * h))
    draw.rectangle(title, fill=paper, outline=ink, width=stroke)
    pad = m // 2 + stroke
    inner = (title[0] + pad, title[1] + pad, title[2] - pad, title[3] - pad)
    _draw_text(draw, phrase, inner, ink, max_size=max(12, h // 11))
    font = _font(max(12, h // 16))
    slot = (h - title[3] - 2 * m) / items
    for k in range(items):
        y = round(title[3] + m + k * slot + slot * 0.25)
        label = f"{k + 1}."
        draw.text((m + pad, y), label, font=font, fill=ink)
        x0 = m + pad + int(_text_width(font, label)) + pad
        base = y + _line_height(font)
        draw.line([(x0, base), (w - m - pad, base)], fill=ink, width=max(1, stroke // 2))
    return img


def render_persona_card(
    role: str,
    *,
    size: Sequence[int] = (512, 512),
    card: Color = (236, 240, 245),
    figure: Color = (70, 80, 100),
) -> Image.Image:
    """A persona card: a head-and-shoulders silhouette above the role title."""
    role = _check_text(role, "role")
    w, h = _check_size(size)
    img = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    m = max(4, round(0.05 * min(w, h)))
    stroke = max(2, min(w, h) // 170)
    draw.rounded_rectangle((m, m, w - m, h - m), radius=m, fill=card, outline=figure, width=stroke)
    portrait = (m * 3, m * 2, w - m * 3, round(0.64 * h))
    _silhouette(draw, portrait, figure)
    draw.line([(m * 2, round(0.67 * h)), (w - m * 2, round(0.67 * h))], fill=figure, width=stroke)
    caption = (m * 2, round(0.69 * h), w - m * 2, h - m * 2)
    _draw_text(draw, role.upper(), caption, _INK, max_size=max(12, h // 10))
    return img


def render_news_card(
    headline: str,
    *,
    masthead: str = "THE DAILY LEDGER",
    caption: str = "",
    size: Sequence[int] = (512, 512),
) -> Image.Image:
    """A composited news card: masthead bar, BREAKING tag, headline, a placeholder photo
    (grey silhouette; ELITE used real face photos, we use none) and a caption."""
    headline = _check_text(headline, "headline")
    masthead = _check_text(masthead, "masthead")
    w, h = _check_size(size)
    img = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    m = max(4, round(0.05 * min(w, h)))
    bar = (0, 0, w, round(0.13 * h))
    draw.rectangle(bar, fill=(20, 20, 20))
    _draw_text(draw, masthead, (m, m // 2, w - m, bar[3] - m // 2), (255, 255, 255), h // 14)
    tag_font = _font(max(10, h // 30))
    tag = "BREAKING"
    tag_box = (m, bar[3] + m // 2, m + int(_text_width(tag_font, tag)) + m, bar[3] + m // 2)
    tag_box = (tag_box[0], tag_box[1], tag_box[2], tag_box[1] + _line_height(tag_font) + 4)
    draw.rectangle(tag_box, fill=(200, 30, 30))
    draw.text((tag_box[0] + m // 2, tag_box[1] + 2), tag, font=tag_font, fill=(255, 255, 255))
    head_box = (m, tag_box[3] + m // 2, w - m, round(0.5 * h))
    _draw_text(draw, headline, head_box, _INK, max(12, h // 12), align="left")
    photo = (m, round(0.52 * h), w - m, round(0.88 * h))
    draw.rectangle(photo, fill=(205, 205, 205))
    _silhouette(draw, photo, (150, 150, 150))
    if caption.strip():
        cap = (m, photo[3] + 2, w - m, h - 2)
        _draw_text(draw, " ".join(caption.split()), cap, (90, 90, 90), h // 30, align="left")
    return img


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes of ``image`` in RGB, with fixed encoder settings and no metadata, so
    equal pixels give equal bytes (hence equal image ids)."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    buf = io.BytesIO()
    rgb.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()
