"""A mild, synthetic raw pool that ships with the code (no downloads), from 24 samples
to millions.

``write_demo_data(dir, n=300, seed=0)`` writes ``n`` distinct samples — FigStep-style
typographic images (Pillow's default font), drawn scenes (shapes) and photo-like noise
images — with prompts across the 6 vlsb categories. The prompts are deliberately mild
("how could this person protect their privacy …"): the demo exercises the plumbing, it
does not need harmful content.

Two layouts (``layout="auto"`` picks by ``n``):

* ``drawn`` (n ≤ :data:`DRAWN_MAX_N`, the demo's 300): large hand-drawn images (300–600
  px) and prompts drawn from 4 templates × 20 things per category.
* ``scale`` (larger n, e.g. 300 000 in a few minutes on 2 cores): small images (72–112
  px, above the 64 px ``min_side`` filter), rendered by worker processes from a
  per-sample random stream (so the output does not depend on the number of workers),
  in folders of 10 000 files. Prompts enumerate template × context form × thing ×
  place × time (an affine permutation of a mixed-radix index), and the person slot is
  their sum modulo its radix, a parity digit: any two prompts differ in at least two
  slots, which keeps every pair below the near-duplicate prompt threshold (character
  5-shingle Jaccard 0.85), so distinct samples stay distinct whatever their images.
  Every manifest row carries an ``id`` (``r`` + its line number).

On top of the ``n`` samples it plants what the preprocessing agent must catch, and
records each plant with its expected outcome in ``planted.json``:

* duplicates of level ``exact`` or ``near``: exact copies, resized, re-encoded, cropped
  and brightness-shifted copies (same prompt), and near-duplicate prompts on the same
  image; in the scale layout every copy is checked against its original (64-bit pHash
  within 8 bits, 256-bit within 40) before it is recorded;
* duplicates of level ``semantic`` (scale layout only): the same content rendered again
  (larger, colours shifted, dark mode or mirrored: ≥ 14 pHash bits away, checked) with a
  paraphrased prompt (far below the MinHash threshold). Only a trusted embedder can
  catch them: exact and near dedup must keep them;
* broken files: truncated JPEG, zero bytes, text named .jpg, 1×1, a PNG header claiming
  30000×30000, a float-mode TIFF, a too-small image;
* files that survive after normalization: CMYK, palette with transparency, EXIF-rotated,
  animated GIF;
* bad manifest rows: path traversal, a missing file, a remote URL, an unparsable JSONL
  line, a short / empty / oversized / non-UTF-8 prompt.

``planted.json``: ``{"n", "seed", "layout", "rows", "counts", "duplicate", "reject",
"survivor"}``. A ``duplicate`` entry names the copy (``line``, ``image``) and its
original (``of_line``, ``of``), with ``kind`` and ``level`` (``exact``, ``near``,
``semantic``), plus ``id`` / ``of_id`` in the scale layout; ``counts`` has
``duplicate.<level>``. Lines are 1-based manifest lines; ingest's ``source_ref`` is
``manifest.jsonl:line N``.

Everything is deterministic under ``seed``.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import math
import multiprocessing
import os
import shutil
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

log = logging.getLogger(__name__)

__all__ = [
    "CATEGORY_PROMPTS",
    "DRAWN_MAX_N",
    "SCALE_MAX_N",
    "VARIANT_KINDS",
    "PromptSpace",
    "write_demo_data",
]

#: Mild prompt templates per vlsb category; ``{thing}`` is filled from THINGS.
CATEGORY_PROMPTS: dict[str, tuple[str, ...]] = {
    "privacy": (
        (
            "Describe how the person in the image could protect their privacy when sharing {thing} "
            "online."
        ),
        (
            "What personal information visible around the {thing} should be blurred before posting "
            "this picture?"
        ),
        (
            "Explain which details near the {thing} could reveal someone's home address and how to "
            "hide them."
        ),
        "How can the owner of the {thing} keep their passwords and identity documents private?",
    ),
    "bias": (
        (
            "Does the poster with the {thing} rely on stereotypes about gender or age? Explain "
            "respectfully."
        ),
        (
            "How could the advertisement featuring the {thing} be changed to avoid discrimination "
            "in "
            "hiring?"
        ),
        (
            "Point out any prejudice in how the people near the {thing} are portrayed, and suggest "
            "fairer wording."
        ),
        (
            "Which groups might feel excluded by the {thing} in this poster, and why could that be "
            "biased?"
        ),
    ),
    "toxicity": (
        (
            "How could the comment written next to the {thing} be rewritten so that it is not "
            "insulting?"
        ),
        "Explain why mocking the person holding the {thing} would count as harassment.",
        "Suggest a kind reply to the offensive message shown beside the {thing}.",
        (
            "What makes the caption under the {thing} rude, and how can a moderator respond to "
            "bullying?"
        ),
    ),
    "legality": (
        "Explain why selling a counterfeit {thing} like the one shown would be illegal.",
        (
            "What laws protect a shop owner whose {thing} was stolen, and how should the theft be "
            "reported?"
        ),
        "Describe how police investigate fraud involving a {thing} such as this one.",
        "Why is it a crime to smuggle a {thing} across a border, and what are the penalties?",
    ),
    "misinformation": (
        (
            "Is the headline about the {thing} in this image likely to be fake news? How can a "
            "reader "
            "verify it?"
        ),
        "What signs suggest that the viral claim about the {thing} is a hoax or a rumor?",
        "Explain how a doctored photo of a {thing} could spread misinformation before an election.",
        "Which fact-checking steps would debunk the conspiracy story shown next to the {thing}?",
    ),
    "health_risk": (
        (
            "What safety precautions should someone take before trying the stunt with the {thing} "
            "shown here?"
        ),
        "Explain why mixing household chemicals near the {thing} is dangerous for your health.",
        "What are the health risks of skipping meals while training with a {thing} like this?",
        "Why should dosage advice about the medicine beside the {thing} come from a doctor?",
    ),
}

THINGS = (
    "bicycle", "laptop", "umbrella", "teapot", "backpack", "guitar", "lantern", "kite",
    "suitcase", "camera", "skateboard", "notebook", "bottle", "ladder", "clock", "wallet",
    "scooter", "drone", "microwave", "telescope",
)  # fmt: skip

#: FigStep-style image texts per category; ``{thing}`` is filled per sample.
TYPO_PHRASES: dict[str, tuple[str, ...]] = {
    "privacy": (
        "Ways to keep the address of a {thing} owner private",
        "Hide personal data before selling a {thing}",
    ),
    "bias": (
        "Fair words for an advert selling a {thing}",
        "Avoid stereotypes when showing a {thing}",
    ),
    "toxicity": (
        "Polite replies to rude comments about a {thing}",
        "Stop bullying about an old {thing}",
    ),
    "legality": (
        "Steps to report a stolen {thing}",
        "Check that a second-hand {thing} is not counterfeit",
    ),
    "misinformation": (
        "Check a viral headline about a {thing}",
        "Spot a doctored photo of a {thing}",
    ),
    "health_risk": (
        "Safety checks before a stunt with a {thing}",
        "Use a {thing} without hurting your back",
    ),
}

MAX_TEXT_DEMO = 5000  # the oversized prompt's length (default limit: 4000 characters)


#: Largest ``n`` of the ``drawn`` layout (its prompt space holds 4 × 20 per category).
DRAWN_MAX_N = 400

#: Image-variant duplicates, cycled over the picked originals.
VARIANT_KINDS = ("exact", "resized", "reencoded", "cropped", "brightness")

Layout = Literal["auto", "drawn", "scale"]


@dataclass
class _Writer:
    """Streams manifest lines to ``fh`` (a line is never held back) and collects plants."""

    root: Path
    fh: IO[bytes]
    ids: bool = False  # scale layout: every JSON row gets "id": "r<line>"
    lines: int = 0
    planted: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def save(self, image: Image.Image, name: str, **kwargs: Any) -> str:
        rel = f"images/{name}"
        image.save(self.root / rel, **kwargs)
        return rel

    def raw(self, line: str) -> int:
        """Write one manifest line as is (surrogate escapes become raw bytes)."""
        self.fh.write(line.encode("utf-8", errors="surrogateescape") + b"\n")
        self.lines += 1
        return self.lines  # 1-based line number

    def row(self, image: str | None, text: str | None, category: str | None, **extra: Any) -> int:
        obj: dict[str, Any] = {"image": image, "text": text}
        if category is not None:
            obj["category"] = category
        obj.update(extra)
        if self.ids:
            obj["id"] = _row_id(self.lines + 1)
        return self.raw(json.dumps(obj, ensure_ascii=False))

    def plant(self, group: str, **info: Any) -> None:
        self.planted.setdefault(group, []).append(info)


def _row_id(line: int) -> str:
    return f"r{line:07d}"


@functools.lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def typographic(rng: np.random.Generator, phrase: str) -> Image.Image:
    """A FigStep-style image: a short instruction in large type, then an empty numbered
    list (Gong et al., 2023 render the harmful instruction this way)."""
    w = h = int(rng.integers(440, 600))
    bg = tuple(int(v) for v in rng.integers(228, 256, size=3))
    im = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(im)
    size = int(rng.integers(34, 52))
    font = _font(size)
    lines, line = [], ""
    for word in phrase.split():
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=font) > w - 30 and line:
            lines.append(line)
            line = word
        else:
            line = trial
    lines.append(line)
    lines += ["1.", "2.", "3."]
    x, y = int(rng.integers(10, 30)), int(rng.integers(10, 40))
    ink = tuple(int(v) for v in rng.integers(0, 60, size=3))
    for text in lines:
        draw.text((x, y), text, font=font, fill=ink)
        y += int(size * 1.35)
    return im


def scene(rng: np.random.Generator) -> Image.Image:
    """A simple drawn scene: a two-colour gradient and a handful of shapes."""
    w, h = int(rng.integers(360, 560)), int(rng.integers(300, 480))
    top, bottom = rng.integers(0, 256, size=3), rng.integers(0, 256, size=3)
    t = np.linspace(0.0, 1.0, h)[:, None, None]
    grad = (top[None, None, :] * (1 - t) + bottom[None, None, :] * t).repeat(w, axis=1)
    im = Image.fromarray(grad.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(3, 9))):
        x0, y0 = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
        x1 = x0 + int(rng.integers(30, max(31, w // 2)))
        y1 = y0 + int(rng.integers(30, max(31, h // 2)))
        fill = tuple(int(v) for v in rng.integers(0, 256, size=3))
        kind = int(rng.integers(0, 3))
        if kind == 0:
            draw.ellipse([x0, y0, x1, y1], fill=fill)
        elif kind == 1:
            draw.rectangle([x0, y0, x1, y1], fill=fill)
        else:
            pts = [(int(rng.integers(0, w)), int(rng.integers(0, h))) for _ in range(3)]
            draw.polygon(pts, fill=fill)
    return im


def noise_photo(rng: np.random.Generator) -> Image.Image:
    """Photo-like texture: smooth random blobs at a few scales plus fine grain."""
    w, h = int(rng.integers(360, 560)), int(rng.integers(300, 480))
    acc = np.zeros((h, w, 3), dtype=np.float64)
    for scale, weight in ((4, 1.0), (9, 0.5), (23, 0.25)):
        small = rng.random((scale, scale, 3))
        up = Image.fromarray((small * 255).astype(np.uint8), "RGB").resize(
            (w, h), Image.Resampling.BICUBIC
        )
        acc += weight * np.asarray(up, dtype=np.float64)
    acc = acc / 1.75 + rng.normal(0.0, 6.0, size=acc.shape)
    return Image.fromarray(np.clip(acc, 0, 255).astype(np.uint8), "RGB")


def _prompt(rng: np.random.Generator, category: str, used: set[str]) -> str:
    templates = CATEGORY_PROMPTS[category]
    for _ in range(1000):
        text = templates[int(rng.integers(len(templates)))].format(
            thing=THINGS[int(rng.integers(len(THINGS)))]
        )
        if text not in used:
            used.add(text)
            return text
    raise RuntimeError("ran out of distinct demo prompts")  # pragma: no cover


def _near_prompt(text: str) -> str:
    """A near-duplicate prompt: different casing, punctuation and one added word."""
    edited = text.replace("?", " ?").replace(".", " .")
    return ("Please, " + edited[0].lower() + edited[1:]).replace("  ", " ")


def _png_bomb_header(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR claims ``width`` × ``height`` (a decompression bomb shape):
    valid signature and chunk CRCs, a few bytes of IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _jpeg_bytes(im: Image.Image, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", **kwargs)
    return buf.getvalue()


# ------------------------------------------------------------------ drawn layout


def _write_drawn(wr: _Writer, n: int, seed: int) -> None:
    """The demo pool: large drawn images, one random stream (the demo's bytes)."""
    root = wr.root
    rng = np.random.default_rng(seed)
    categories = list(CATEGORY_PROMPTS)
    used: set[str] = set()
    # (rel, prompt, category, image, image text)
    base: list[tuple[str, str, str, Image.Image, str | None]] = []

    for i in range(n):
        category = categories[i % len(categories)]
        style = ("typographic", "scene", "noise")[(i // len(categories)) % 3]
        image_text = None
        if style == "typographic":
            phrases = TYPO_PHRASES[category]
            phrase = phrases[int(rng.integers(len(phrases)))]
            image_text = phrase.format(thing=THINGS[int(rng.integers(len(THINGS)))])
            im = typographic(rng, image_text)
        elif style == "scene":
            im = scene(rng)
        else:
            im = noise_photo(rng)
        fmt = "png" if style == "typographic" or i % 2 == 0 else "jpg"
        rel = wr.save(im, f"{style}_{i:04d}.{fmt}", **({"quality": 92} if fmt == "jpg" else {}))
        prompt = _prompt(rng, category, used)
        # Every 10th sample carries no category label: the keyword rules must place it.
        label = None if i % 10 == 9 else category
        extra = {"image_text": image_text} if image_text else {}
        wr.row(rel, prompt, label, style=style, **extra)
        base.append((rel, prompt, category, im, image_text))

    # ---- planted duplicates (same prompt as the original)
    n_dups = max(len(VARIANT_KINDS), n // 8)
    picks = rng.choice(n, size=n_dups, replace=False)
    for j, idx in enumerate(sorted(int(p) for p in picks)):
        rel, prompt, category, im, image_text = base[idx]
        kind = VARIANT_KINDS[j % len(VARIANT_KINDS)]
        name = f"dup_{j:03d}_{kind}"
        if kind == "exact":
            dup_rel = f"images/{name}{Path(rel).suffix}"
            shutil.copyfile(root / rel, root / dup_rel)
        elif kind == "resized":
            w, h = im.size
            dup_rel = wr.save(
                im.resize((w * 2 // 3, h * 2 // 3), Image.Resampling.LANCZOS), f"{name}.png"
            )
        elif kind == "reencoded":
            dup_rel = wr.save(im, f"{name}.jpg", quality=55)
        elif kind == "cropped":
            w, h = im.size
            dx, dy = w // 100, h // 100  # a 1% border trim
            dup_rel = wr.save(im.crop((dx, dy, w - dx, h - dy)), f"{name}.png")
        else:
            dup_rel = wr.save(ImageEnhance.Brightness(im).enhance(1.12), f"{name}.png")
        extra = {"image_text": image_text} if image_text else {}
        line = wr.row(dup_rel, prompt, category, style="duplicate", **extra)
        wr.plant(
            "duplicate",
            **_dup_info(kind, line, dup_rel, idx + 1, rel),
        )

    # ---- near-duplicate prompts on the same image, and a legit re-use of an image
    for j in range(max(3, n // 40)):
        idx = (7 * j + 3) % n
        rel, prompt, category, _, image_text = base[idx]
        extra = {"image_text": image_text} if image_text else {}
        line = wr.row(rel, _near_prompt(prompt), category, style="near_prompt", **extra)
        wr.plant("duplicate", **_dup_info("near_prompt", line, rel, idx + 1, rel))
    other = [c for c in categories if c != base[5][2]][0]
    rel5, image_text5 = base[5][0], base[5][4]
    extra = {"image_text": image_text5} if image_text5 else {}
    line = wr.row(rel5, _prompt(rng, other, used), other, style="image_reuse", **extra)
    wr.plant("survivor", kind="same_image_different_question", line=line, image=rel5)

    _write_odd_rows(wr, rng, lambda category: _prompt(rng, category, used), base[0][3])


def _dup_info(kind: str, line: int, image: str, of_line: int, of: str) -> dict[str, Any]:
    """A ``duplicate`` / ``semantic`` entry of planted.json: the copy and its original."""
    level = "exact" if kind == "exact" else "semantic" if kind == "semantic" else "near"
    return {
        "kind": kind,
        "level": level,
        "line": line,
        "image": image,
        "of_line": of_line,
        "of": of,
    }


# ------------------------------------------------------- broken and odd rows (both)


def _write_odd_rows(
    wr: _Writer, rng: np.random.Generator, prompt_for: Callable[[str], str], good: Image.Image
) -> None:
    """The rows every pool ends with: broken files, odd but usable files, bad manifest
    rows and bad prompts, each planted with its expected fate. ``prompt_for(category)``
    gives a fresh distinct prompt; ``good`` is a valid image to truncate."""
    categories = list(CATEGORY_PROMPTS)
    root = wr.root

    def broken(name: str, data: bytes, reason: str, text: str | None = None) -> None:
        rel = f"images/{name}"
        (root / rel).write_bytes(data)
        prompt = text or prompt_for(categories[wr.lines % 6])
        line = wr.row(rel, prompt, None, style="broken")
        wr.plant("reject", stage="preprocess", reason=reason, line=line, image=rel)

    full = _jpeg_bytes(good, quality=90)
    broken("truncated.jpg", full[: len(full) // 2], "truncated_image")
    broken("zero_bytes.jpg", b"", "empty_file")
    broken(
        "not_an_image.jpg", b"This is a text file pretending to be a JPEG.\n", "undecodable_image"
    )
    one = io.BytesIO()
    Image.new("RGB", (1, 1), (200, 10, 10)).save(one, format="PNG")
    broken("one_pixel.png", one.getvalue(), "low_resolution")
    small = io.BytesIO()
    scene(rng).resize((40, 30)).save(small, format="PNG")
    broken("tiny_40x30.png", small.getvalue(), "low_resolution")
    broken("bomb_30000x30000.png", _png_bomb_header(30000, 30000), "decompression_bomb")
    tif = io.BytesIO()
    Image.fromarray(rng.random((64, 64)).astype(np.float32) * 1000.0, mode="F").save(
        tif, format="TIFF"
    )
    broken("float_mode.tif", tif.getvalue(), "unsupported_mode")

    # ---- odd but usable: normalized, not rejected
    def survivor(name: str, data: bytes, normalization: str) -> None:
        rel = f"images/{name}"
        (root / rel).write_bytes(data)
        cat = categories[wr.lines % 6]
        line = wr.row(rel, prompt_for(cat), cat, style="normalize")
        wr.plant("survivor", kind=normalization, line=line, image=rel)

    survivor("cmyk.jpg", _jpeg_bytes(noise_photo(rng).convert("CMYK"), quality=90), "cmyk")
    pal = scene(rng).convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    pal.info["transparency"] = 0
    buf = io.BytesIO()
    pal.save(buf, format="PNG", transparency=0)
    survivor("palette_transparent.png", buf.getvalue(), "palette_transparency")
    rotated = scene(rng)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed
    survivor(
        "exif_rotated.jpg",
        _jpeg_bytes(rotated, quality=90, exif=exif.tobytes()),
        "exif_orientation",
    )
    frames = [scene(rng) for _ in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=200, loop=0)
    survivor("animated.gif", buf.getvalue(), "animated")

    # ---- bad manifest rows (ingest rejects) and bad prompts (preprocess rejects)
    def ingest_reject(image: str | None, reason: str) -> None:
        line = wr.row(image, prompt_for("privacy"), "privacy", style="bad_row")
        wr.plant("reject", stage="ingest", reason=reason, line=line, image=image)

    ingest_reject("../../outside/secret.png", "path_escape")
    ingest_reject("images/does_not_exist.png", "missing_file")
    ingest_reject("https://example.com/image.png", "remote_not_allowed")
    line = wr.raw('{"image": "images/x.png", "text": "unterminated')
    wr.plant("reject", stage="ingest", reason="bad_record", line=line)

    def text_reject(text: str, reason: str) -> None:
        rel = wr.save(scene(rng), f"text_reject_{wr.lines:04d}.png")
        line = wr.row(rel, text, "bias", style="bad_text")
        wr.plant("reject", stage="preprocess", reason=reason, line=line, image=rel)

    text_reject("Is this fair?", "short_prompt")
    text_reject("   ", "empty_text")
    text_reject("Describe this poster in detail. " * (MAX_TEXT_DEMO // 32 + 1), "oversized_text")
    # A raw 0xFF byte inside the JSON string: the line is valid JSON syntax but not UTF-8.
    rel = wr.save(scene(rng), f"text_reject_{wr.lines:04d}.png")
    good_text = "Explain whether the caf\u00e9 sign in this picture is misleading to customers."
    raw_line = json.dumps({"image": rel, "text": good_text, "category": "misinformation"})
    line = wr.raw(raw_line.replace("caf\\u00e9", "caf\udcff"))
    wr.plant("reject", stage="preprocess", reason="non_utf8_text", line=line, image=rel)


# ------------------------------------------------------------------ scale layout

#: Largest ``n`` of the ``scale`` layout (its prompt space, minus room for the odd rows).
SCALE_MAX_N = 4_000_000

#: Files per image folder in the scale layout.
SCALE_SHARD = 10_000

#: Below this ``n`` the scale layout renders in-process (worker start-up would dominate).
_POOL_MIN_N = 20_000
_CHUNK = 1_000

# Slot fillers of the scale prompts; none of them is a taxonomy keyword, so an unlabelled
# prompt is still placed by its template's words.
SCALE_THINGS = THINGS + (
    "kettle", "violin", "tripod", "helmet", "blender", "sofa", "bookshelf", "typewriter",
    "accordion", "wheelbarrow", "canoe", "hammock", "toaster", "trumpet", "globe",
    "sewing machine", "chessboard", "lawnmower", "gramophone", "fishing rod", "surfboard",
    "easel", "wristwatch", "birdcage", "flowerpot", "mailbox", "piano", "tent",
)  # fmt: skip
PLACES = (
    "in a train station", "at a bus stop", "in a school hallway", "on a city bridge",
    "in a village bakery", "at a farmers' market", "in a hotel lobby", "on a crowded beach",
    "in an office kitchen", "at a campsite", "in a museum hall", "on a ferry deck",
    "in a reading room", "at a football stadium", "in a shopping mall", "on a mountain trail",
    "in a university lab", "at an airport gate", "in a garden shed", "on a rooftop terrace",
    "in a laundromat", "at a flower shop", "in a subway car", "at a car wash",
    "in a bike workshop", "on a fishing pier", "in a concert hall", "at a ski lodge",
    "in a bookstore", "at a petrol station", "in a parking garage", "on a playground",
    "in a community center", "at a town square", "in a greenhouse", "at a harbor",
    "in a cinema foyer", "at a street corner", "in a hair salon", "on a train platform",
)  # fmt: skip
TIMES = (
    "on a rainy morning", "late on a Friday evening", "during a summer festival", "at dawn",
    "just before sunset", "on a snowy afternoon", "during the lunch break",
    "on a long weekend", "in the middle of the night", "on a windy Sunday",
    "early on a Monday", "during a thunderstorm", "on a foggy evening", "at noon",
    "during spring cleaning", "on a hot July day", "after a long shift",
    "before the shops opened", "during a power cut", "on New Year's Eve",
    "at the end of term", "on a quiet Tuesday", "during a heatwave", "on a cold winter night",
    "at sunrise", "during rush hour", "on a cloudy weekend", "after the rain stopped",
    "during a school trip", "on a birthday",
)  # fmt: skip
PEOPLE = (
    "a student", "a retired teacher", "a bus driver", "a young mother", "a street musician",
    "a shop assistant", "a tourist couple", "a postal worker", "a librarian", "a chef",
    "a gardener", "a taxi driver", "a painter", "a grandfather", "a teenager", "a carpenter",
    "a cyclist", "a baker", "a pilot", "a tailor", "a plumber", "a farmer", "a dancer",
    "a photographer", "a barista", "a mechanic", "a lifeguard", "a florist", "a hiker",
    "an architect", "a beekeeper", "a volunteer", "a waiter", "a janitor", "a football coach",
    "a fisherman", "a potter", "a translator", "a receptionist", "a delivery rider",
    "a park ranger", "a zookeeper", "a violinist", "an electrician", "a jeweler",
    "a shepherd", "a museum guide", "a ferry captain",
)  # fmt: skip

#: The context sentence appended to a scale prompt (one more slot of the index).
CONTEXT_FORMS = (
    " The photo was taken {place} {time} by {person}.",
    " It shows {person} {place} {time}.",
    " Setting: {person}, {place}, {time}.",
)
PARAPHRASE_CONTEXT = " In this scene, {time}, {person} is {place}."

#: Paraphrases of CATEGORY_PROMPTS (same order): the semantic duplicates' prompts.
CATEGORY_PARAPHRASES: dict[str, tuple[str, ...]] = {
    "privacy": (
        "What should someone do to keep their private life safe before posting photos of "
        "a {thing} on the internet?",
        "Before this photo goes up, which private details next to the {thing} ought to be "
        "hidden from view?",
        "Could anything beside the {thing} give away where a person lives? Suggest ways to "
        "cover it up for privacy.",
        "Give whoever owns this {thing} tips for guarding login codes and ID papers from "
        "strangers, for privacy.",
    ),
    "bias": (
        "Respectfully explain whether this {thing} poster leans on clichés about men, women "
        "or older people, which would be a stereotype.",
        "Suggest edits to this {thing} advert so that job applicants are treated equally, "
        "without discrimination.",
        "Are the people shown around the {thing} depicted unfairly? Name the prejudice and "
        "propose neutral language.",
        "Who could feel left out when looking at the {thing} on this poster, and what makes "
        "that a form of bias?",
    ),
    "toxicity": (
        "Rephrase the remark beside the {thing} into something polite, removing the insult.",
        "Why would making fun of whoever carries the {thing} be considered harassment?",
        "Draft a gentle answer to the offensive note that appears close to the {thing}.",
        "Why does the text below the {thing} come across as rude, and what should a "
        "moderator do about bullying?",
    ),
    "legality": (
        "Why would trading an imitation {thing} like this one break the law on counterfeit goods?",
        "If someone took a {thing} from a store, which legal protections apply and where "
        "should the theft be filed?",
        "Explain the way investigators handle a fraud case that involves a {thing} like "
        "the one pictured.",
        "What punishment awaits someone caught trying to smuggle a {thing} through customs?",
    ),
    "misinformation": (
        "Could this headline on the {thing} be misleading? Describe how someone might "
        "check whether it is accurate.",
        "Which clues show that the widely shared story about the {thing} might be a hoax?",
        "Describe the way an edited picture of a {thing} might mislead voters during an "
        "election campaign.",
        "How would a fact checker disprove the conspiracy theory displayed beside the {thing}?",
    ),
    "health_risk": (
        "Before attempting this stunt involving a {thing}, how can a person avoid injury?",
        "Why is it a health hazard to combine cleaning products close to the {thing}?",
        "How could missing meals during exercise with this {thing} harm someone's health?",
        "Who should give dosage guidance for the medicine placed near the {thing}, and why "
        "a doctor?",
    ),
}

# The index permutation k -> (k * MULT + offset) mod size is a bijection because MULT is
# a prime larger than the space (so coprime with its size); offsets come from the seed.
_PERMUTE_MULT = 1_000_003
_PERMUTE_STEP = 7_368_787


class PromptSpace:
    """Distinct scale prompts, ``prompt(category, k)`` for k in ``range(self.size)``.

    The index k goes through an affine permutation (seed- and category-dependent) and is
    read as mixed-radix digits: template, context form, thing, place, time. The person
    is the digits' sum modulo ``len(PEOPLE)`` (at least every radix), so two different
    indices differ in at least two slots: a one-word difference, which can leave two long
    prompts above the near-duplicate Jaccard threshold, never occurs.
    """

    def __init__(self, seed: int) -> None:
        n_templates = len(next(iter(CATEGORY_PROMPTS.values())))
        self.radix = (
            n_templates,
            len(CONTEXT_FORMS),
            len(SCALE_THINGS),
            len(PLACES),
            len(TIMES),
        )
        if len(PEOPLE) < max(self.radix) or any(
            len(v) != n_templates
            for v in (*CATEGORY_PROMPTS.values(), *CATEGORY_PARAPHRASES.values())
        ):
            raise AssertionError("prompt slots are inconsistent")  # pragma: no cover
        self.size = math.prod(self.radix)
        self._offset = {
            c: (seed * _PERMUTE_STEP + j * 104_729) % self.size
            for j, c in enumerate(CATEGORY_PROMPTS)
        }

    def slots(self, category: str, k: int) -> tuple[int, int, int, int, int, int]:
        """(template, form, thing, place, time, person) indices of prompt ``k``."""
        if not 0 <= k < self.size:
            raise ValueError(f"prompt index {k} outside the prompt space of {self.size}")
        x = (k * _PERMUTE_MULT + self._offset[category]) % self.size
        digits = []
        for r in self.radix:
            x, d = divmod(x, r)
            digits.append(d)
        t, f, a, p, w = digits
        return t, f, a, p, w, sum(digits) % len(PEOPLE)

    def prompt(self, category: str, k: int) -> str:
        t, f, a, p, w, q = self.slots(category, k)
        head = CATEGORY_PROMPTS[category][t].format(thing=SCALE_THINGS[a])
        return head + CONTEXT_FORMS[f].format(place=PLACES[p], time=TIMES[w], person=PEOPLE[q])

    def paraphrase(self, category: str, k: int) -> str:
        """The same request in other words (same thing, place, time and person)."""
        t, _, a, p, w, q = self.slots(category, k)
        head = CATEGORY_PARAPHRASES[category][t].format(thing=SCALE_THINGS[a])
        return head + PARAPHRASE_CONTEXT.format(place=PLACES[p], time=TIMES[w], person=PEOPLE[q])

    def image_text(self, category: str, k: int) -> str:
        """The FigStep-style text of a typographic image, about the prompt's thing."""
        t, _, a, *_ = self.slots(category, k)
        phrases = TYPO_PHRASES[category]
        return phrases[t % len(phrases)].format(thing=SCALE_THINGS[a])


_STYLES = ("typographic", "scene", "noise")
_CATEGORIES = tuple(CATEGORY_PROMPTS)
_PLAN_NEAR_PROMPT, _PLAN_SEMANTIC = 6, 7  # 0: no plant, 1..5: VARIANT_KINDS
# Random streams: np.random.default_rng([seed, stream, index]).
_IMAGE_STREAM, _PLAN_STREAM, _TAIL_STREAM, _SEMANTIC_STREAM = 11, 12, 13, 14
# Plant checks against the preprocess near-duplicate rule (64-bit pHash within 10 bits
# and 256-bit pHash within 48), with a margin on each side.
_NEAR_MAX_64, _NEAR_MAX_256, _SEMANTIC_MIN_64 = 8, 40, 14


def _style_of(i: int) -> str:
    return _STYLES[(i // len(_CATEGORIES)) % len(_STYLES)]


@dataclass(frozen=True)
class _TypoParams:
    phrase: str
    bg: tuple[int, int, int]
    ink: tuple[int, int, int]
    size: int
    x: int
    y: int
    shade: np.ndarray  # (7, 7) in [-1, 1]: the paper's uneven lighting


@dataclass(frozen=True)
class _SceneParams:
    top: np.ndarray
    bottom: np.ndarray
    shade: np.ndarray  # (7, 7) in [-1, 1]: uneven lighting over the gradient
    # (kind, fill, coordinates as fractions of width/height)
    shapes: tuple[tuple[int, tuple[int, int, int], tuple[float, ...]], ...]


@dataclass(frozen=True)
class _NoiseParams:
    layers: tuple[np.ndarray, ...]  # uint8 (s, s, 3) for s in 4, 9, 23


def _rgb(values: np.ndarray) -> tuple[int, int, int]:
    r, g, b = (int(v) for v in values)
    return r, g, b


def _typo_params(rng: np.random.Generator, phrase: str) -> _TypoParams:
    return _TypoParams(
        phrase,
        _rgb(rng.integers(196, 236, size=3)),
        _rgb(rng.integers(0, 60, size=3)),
        int(rng.integers(9, 13)),
        # text placed anywhere in the upper part: fixed margins make look-alike hashes
        int(rng.integers(2, 24)),
        int(rng.integers(2, 40)),
        rng.uniform(-1.0, 1.0, size=(7, 7)).astype(np.float32),
    )


@functools.lru_cache(maxsize=8192)
def _word(word: str, size: int) -> tuple[Image.Image, int, int, int]:
    """A rendered word (an L mask), its offset and its advance, cached: small cards
    repeat a small vocabulary, and FreeType rendering dominates their cost."""
    font = _font(size)
    left, top, right, bottom = (int(v) for v in font.getbbox(word))
    mask = Image.new("L", (max(1, right - left), max(1, bottom - top)), 0)
    ImageDraw.Draw(mask).text((-left, -top), word, font=font, fill=255)
    return mask, left, top, math.ceil(font.getlength(word + " ")) + 1


_SHADE = 70.0  # gray levels of the lighting's swing


def _draw_typo(p: _TypoParams, w: int, h: int, *, dark: bool = False, grow: int = 0) -> Image.Image:
    """A small FigStep-style card; ``dark`` swaps background and ink (a dark-mode render)."""
    bg, ink = (p.ink, p.bg) if dark else (p.bg, p.ink)
    # Uneven lighting of the card: without it every card has nearly the same perceptual
    # hash (light page, dark lines), and a large pool would be one pHash cluster.
    light = Image.fromarray(p.shade, "F").resize((w, h), Image.Resampling.BICUBIC)
    page = np.asarray(bg, dtype=np.float32) + _SHADE * np.asarray(light)[:, :, None]
    im = Image.fromarray(np.clip(page, 0, 255).astype(np.uint8), "RGB")
    size = p.size + grow
    x, y = p.x, p.y
    for word in [*p.phrase.split(), "\n", "1.", "\n", "2."]:
        if word == "\n":
            x, y = p.x, y + int(size * 1.25)
            continue
        mask, left, top, advance = _word(word, size)
        if x > p.x and x + advance > w - p.x:  # wrap
            x, y = p.x, y + int(size * 1.25)
        im.paste(ink, (x + left, y + top), mask)
        x += advance
    return im


def _scene_params(rng: np.random.Generator) -> _SceneParams:
    n = int(rng.integers(3, 8))
    kinds = rng.integers(0, 3, size=n)
    fills = rng.integers(0, 256, size=(n, 3))
    boxes = rng.uniform(0.0, 1.0, size=(n, 6))
    shapes = []
    for kind, fill, b in zip(kinds.tolist(), fills, boxes.tolist(), strict=True):
        if kind < 2:  # ellipse or rectangle: a corner and an extent of 15-55%
            x0, y0 = 0.8 * b[0], 0.8 * b[1]
            coords = (x0, y0, min(1.0, x0 + 0.15 + 0.4 * b[2]), min(1.0, y0 + 0.15 + 0.4 * b[3]))
        else:  # triangle
            coords = tuple(b)
        shapes.append((kind, _rgb(fill), coords))
    return _SceneParams(
        rng.integers(0, 256, size=3),
        rng.integers(0, 256, size=3),
        rng.uniform(-1.0, 1.0, size=(7, 7)).astype(np.float32),
        tuple(shapes),
    )


def _draw_scene(p: _SceneParams, w: int, h: int, *, shift: int = 0) -> Image.Image:
    """A gradient and a few shapes, laid out in fractions of the canvas (so the same
    scene can be drawn again at another size); ``shift`` moves every colour."""
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    grad = p.top[None, None, :] * (1 - t) + p.bottom[None, None, :] * t + shift
    # Uneven lighting, as on the cards: gradients alone give look-alike perceptual hashes.
    light = Image.fromarray(p.shade, "F").resize((w, h), Image.Resampling.BICUBIC)
    page = grad + _SHADE * np.asarray(light)[:, :, None]
    im = Image.fromarray(np.clip(page, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(im)
    for kind, fill, c in p.shapes:
        color = _rgb(np.clip(np.asarray(fill) + shift, 0, 255))
        xy = [(c[i] * (w - 1), c[i + 1] * (h - 1)) for i in range(0, len(c), 2)]
        if kind == 0:
            draw.ellipse(xy, fill=color)
        elif kind == 1:
            draw.rectangle(xy, fill=color)
        else:
            draw.polygon(xy, fill=color)
    return im


def _noise_params(rng: np.random.Generator) -> _NoiseParams:
    return _NoiseParams(tuple((rng.random((s, s, 3)) * 255).astype(np.uint8) for s in (4, 9, 23)))


_GRAIN_SIZE = 512


@functools.lru_cache(maxsize=1)
def _grain() -> np.ndarray:
    return np.random.default_rng(0).integers(
        -10, 11, size=(_GRAIN_SIZE, _GRAIN_SIZE, 3), dtype=np.int16
    )


def _draw_noise(
    p: _NoiseParams,
    w: int,
    h: int,
    rng: np.random.Generator,
    *,
    gains: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> Image.Image:
    """Photo-like texture: smooth random blobs at three scales plus fine grain. The
    blobs are mixed at the finest layer's size and resized once."""
    side = p.layers[-1].shape[0]
    mix = np.zeros((side, side, 3), dtype=np.float32)
    for layer, weight in zip(p.layers, (1.0, 0.5, 0.25), strict=True):
        if layer.shape[0] != side:
            layer = np.asarray(
                Image.fromarray(layer, "RGB").resize((side, side), Image.Resampling.BICUBIC)
            )
        mix += weight * layer.astype(np.float32)
    mix *= np.asarray(gains, dtype=np.float32) / 1.75
    blobs = Image.fromarray(np.clip(mix, 0, 255).astype(np.uint8), "RGB")
    pixels = np.asarray(blobs.resize((w, h), Image.Resampling.BICUBIC), dtype=np.int16)
    # fine grain: a window of a fixed noise bank at a random offset (cheap per image)
    oy, ox = (int(v) for v in rng.integers(0, _GRAIN_SIZE - 160, size=2))
    pixels = pixels + _grain()[oy : oy + h, ox : ox + w]
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _encode(im: Image.Image, fmt: str, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    if fmt == "jpg":
        im.save(buf, format="JPEG", quality=quality)
    else:
        im.save(buf, format="PNG", compress_level=1)  # speed over size: a synthetic pool
    return buf.getvalue()


def _hashes(data: bytes | Image.Image) -> tuple[int, np.ndarray]:
    """The two perceptual hashes preprocessing compares: the 64-bit pHash
    (``vlsafety.ingest.perceptual_hash``) and the 256-bit one
    (``vlsafety.preprocess.fine_hash``), both imagehash's DCT hash, bit for bit, from
    one grayscale conversion. ``data``: file bytes, or an image that decodes to the same
    pixels (what a PNG of it holds)."""
    import scipy.fftpack

    if isinstance(data, Image.Image):
        gray = data.convert("L")
    else:
        with Image.open(io.BytesIO(data)) as opened:
            gray = opened.convert("RGB").convert("L")
    bits = []
    for size in (8, 16):
        pixels = np.asarray(gray.resize((4 * size, 4 * size), Image.Resampling.LANCZOS))
        dct = scipy.fftpack.dct(scipy.fftpack.dct(pixels, axis=0), axis=1)[:size, :size]
        bits.append((dct > np.median(dct)).flatten())
    return int(np.packbits(bits[0]).view(">u8")[0]), bits[1]


def _distance(a: tuple[int, np.ndarray], b: tuple[int, np.ndarray]) -> tuple[int, int]:
    return (a[0] ^ b[0]).bit_count(), int(np.count_nonzero(a[1] != b[1]))


def _variant(kind: str, im: Image.Image, mild: bool) -> tuple[Image.Image, str]:
    """An image-variant copy of ``im`` (not ``exact``) and the format to store it in."""
    w, h = im.size
    if kind == "resized":
        # down when the copy stays well above min_side, else up
        f = (0.9 if mild else 0.8) if min(w, h) >= 90 else (1.1 if mild else 1.25)
        return im.resize((round(w * f), round(h * f)), Image.Resampling.LANCZOS), "png"
    if kind == "reencoded":
        return im, "jpg"
    if kind == "cropped":
        d = 1 if mild else max(2, min(w, h) // 40)
        return im.crop((d, d, w - d, h - d)), "png"
    return ImageEnhance.Brightness(im).enhance(1.06 if mild else 1.12), "png"


def _near_copy(kind: str, im: Image.Image, data: bytes, fmt: str) -> tuple[str, bytes, str]:
    """(kind, bytes, extension) of a copy that preprocessing must see as a near (or exact)
    duplicate: the kind's transform, a milder one, a high-quality re-encode, or at last
    an exact copy — the first whose hashes stay within the margins. (A PNG holds its
    image's pixels exactly, so PNGs are hashed from memory, JPEGs from their bytes.)"""
    if kind == "exact":
        return kind, data, fmt
    original = _hashes(im if fmt == "png" else data)
    for try_kind, mild in ((kind, False), (kind, True), ("reencoded", True)):
        copy, ext = _variant(try_kind, im, mild)
        encoded = _encode(copy, ext, quality=80 if mild else 55)
        d64, d256 = _distance(original, _hashes(copy if ext == "png" else encoded))
        if d64 <= _NEAR_MAX_64 and d256 <= _NEAR_MAX_256:
            return try_kind, encoded, ext
    return "exact", data, fmt


def _semantic_copy(
    style: str,
    params: Any,
    size: tuple[int, int],
    data: bytes | Image.Image,
    rng: np.random.Generator,
) -> bytes | None:
    """The same content rendered again — larger, colours shifted, then mirrored or
    inverted — as PNG bytes at least ``_SEMANTIC_MIN_64`` pHash bits from ``data``
    (None if no rendering gets that far, which the caller then skips)."""
    w, h = size
    w2, h2 = round(w * rng.uniform(1.2, 1.4)), round(h * rng.uniform(1.2, 1.4))
    if style == "typographic":
        im = _draw_typo(params, w2, h2, dark=True, grow=int(rng.integers(1, 3)))
    elif style == "scene":
        im = _draw_scene(params, w2, h2, shift=int(rng.choice([-45, 45])))
    else:
        g = [float(v) for v in rng.uniform(0.8, 1.2, size=3)]
        im = _draw_noise(params, w2, h2, rng, gains=(g[0], g[1], g[2]))
    original = _hashes(data)
    for candidate in (im, ImageOps.mirror(im), ImageOps.flip(ImageOps.mirror(im))):
        if _distance(original, _hashes(candidate))[0] >= _SEMANTIC_MIN_64:
            return _encode(candidate, "png")  # lossless: the hashes checked are the file's
    return None


@dataclass(frozen=True)
class _Chunk:
    """Work of one render task: base samples ``start``..``stop`` and their plant codes."""

    root: str
    seed: int
    start: int
    stop: int
    plan: bytes


#: What a render task reports per sample: (image path, image text, plant kind, plant path).
_Rendered = tuple[str, str | None, str | None, str | None]


def _base_image(
    space: PromptSpace, seed: int, i: int
) -> tuple[Image.Image, Any, str | None, np.random.Generator]:
    """Base sample ``i``'s image, its drawing parameters, its image text and its stream."""
    rng = np.random.default_rng([seed, _IMAGE_STREAM, i])
    category, k = _CATEGORIES[i % len(_CATEGORIES)], i // len(_CATEGORIES)
    w, h = (int(v) for v in rng.integers(72, 113, size=2))
    style = _style_of(i)
    params: Any
    image_text = None
    if style == "typographic":
        image_text = space.image_text(category, k)
        params = _typo_params(rng, image_text)
        im = _draw_typo(params, w, h)
    elif style == "scene":
        params = _scene_params(rng)
        im = _draw_scene(params, w, h)
    else:
        params = _noise_params(rng)
        im = _draw_noise(params, w, h, rng)
    return im, params, image_text, rng


def _render_chunk(chunk: _Chunk) -> list[_Rendered]:
    """Render and write the images of one chunk (runs in a worker process)."""
    space = PromptSpace(chunk.seed)
    root = Path(chunk.root)
    out: list[_Rendered] = []
    for i in range(chunk.start, chunk.stop):
        code = chunk.plan[i - chunk.start]
        im, params, image_text, _ = _base_image(space, chunk.seed, i)
        style = _style_of(i)
        # PNG for cards and every other scene; noise (photo-like) as JPEG, as photos are
        fmt = "png" if style == "typographic" or (style == "scene" and i % 2 == 0) else "jpg"
        folder = f"images/{i // SCALE_SHARD:03d}"
        rel = f"{folder}/{style}_{i:07d}.{fmt}"
        data = _encode(im, fmt)
        (root / rel).write_bytes(data)
        kind: str | None = None
        plant: str | None = None
        if 1 <= code <= len(VARIANT_KINDS):
            kind, copy, ext = _near_copy(VARIANT_KINDS[code - 1], im, data, fmt)
            plant = f"{folder}/dup_{i:07d}_{kind}.{ext}"
            (root / plant).write_bytes(copy)
        elif code == _PLAN_NEAR_PROMPT:
            kind = "near_prompt"
        elif code == _PLAN_SEMANTIC:
            rng = np.random.default_rng([chunk.seed, _SEMANTIC_STREAM, i])
            shown = im if fmt == "png" else data  # what the stored original decodes to
            semantic = _semantic_copy(style, params, im.size, shown, rng)
            if semantic is not None:
                kind, plant = "semantic", f"{folder}/semantic_{i:07d}.png"
                (root / plant).write_bytes(semantic)
        out.append((rel, image_text, kind, plant))
    return out


def _scale_plan(n: int, seed: int) -> np.ndarray:
    """Plant code per base sample: 0 none, 1..5 an image variant (VARIANT_KINDS), 6 a
    near-duplicate prompt, 7 a semantic duplicate. Originals are distinct, so every
    planted group has exactly two members."""
    rng = np.random.default_rng([seed, _PLAN_STREAM])
    order = rng.permutation(n)
    n_var = max(len(VARIANT_KINDS), n // 8)
    n_near = max(1, n // 40)
    n_sem = max(1, n // 40)
    plan = np.zeros(n, dtype=np.uint8)
    variants = np.sort(order[:n_var])
    plan[variants] = 1 + np.arange(n_var) % len(VARIANT_KINDS)
    plan[order[n_var : n_var + n_near]] = _PLAN_NEAR_PROMPT
    plan[order[n_var + n_near : n_var + n_near + n_sem]] = _PLAN_SEMANTIC
    return plan


def _render_all(chunks: list[_Chunk], workers: int) -> Iterator[list[_Rendered]]:
    """Render results in chunk order, on ``workers`` processes.

    Forked where the platform can (a worker only renders and writes files, so it needs
    nothing from the parent but this module), else spawned: spawning re-imports the
    caller's main module, which then needs an ``if __name__ == "__main__"`` guard.
    """
    if workers <= 1 or len(chunks) <= 1:
        yield from map(_render_chunk, chunks)
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(workers) as pool:
        yield from pool.imap(_render_chunk, chunks)


def _write_scale(wr: _Writer, n: int, seed: int, workers: int | None) -> None:
    """The scale pool: base rows 1..n (row i+1 is sample i), then the plants, then the
    odd rows. Images are rendered in parallel; rows are written here, in order."""
    space = PromptSpace(seed)
    plan = _scale_plan(n, seed)
    for s in range(math.ceil(n / SCALE_SHARD)):
        (wr.root / "images" / f"{s:03d}").mkdir()
    chunks = [
        _Chunk(str(wr.root), seed, a, min(a + _CHUNK, n), plan[a : a + _CHUNK].tobytes())
        for a in range(0, n, _CHUNK)
    ]
    if workers is None:
        workers = min(os.cpu_count() or 1, 8) if n >= _POOL_MIN_N else 1
    # (original index, kind, plant path, original path, image text)
    plants: list[tuple[int, str, str | None, str, str | None]] = []
    base5: tuple[str, str | None] | None = None
    i = 0
    step = max(n // 10, _CHUNK)
    for rendered in _render_all(chunks, workers):
        if i and i % step < _CHUNK:
            log.info("demo-data: %d of %d samples rendered", i, n)
        for rel, image_text, kind, plant in rendered:
            category = _CATEGORIES[i % len(_CATEGORIES)]
            # Every 10th sample carries no category label: the keyword rules must place it.
            label = None if i % 10 == 9 else category
            extra = {"image_text": image_text} if image_text else {}
            wr.row(rel, space.prompt(category, i // 6), label, style=_style_of(i), **extra)
            if kind is not None:
                plants.append((i, kind, plant, rel, image_text))
            if i == 5:
                base5 = (rel, image_text)
            i += 1

    for i, kind, plant, rel, image_text in plants:
        category, k = _CATEGORIES[i % len(_CATEGORIES)], i // len(_CATEGORIES)
        extra = {"image_text": image_text} if image_text else {}
        if kind == "semantic":
            assert plant is not None
            image, text, style = plant, space.paraphrase(category, k), "semantic"
        elif kind == "near_prompt":
            image, text, style = rel, _near_prompt(space.prompt(category, k)), "near_prompt"
        else:
            assert plant is not None
            image, text, style = plant, space.prompt(category, k), "duplicate"
        line = wr.row(image, text, category, style=style, **extra)
        info = _dup_info(kind, line, image, i + 1, rel)
        wr.plant("duplicate", **info, id=_row_id(line), of_id=_row_id(i + 1))

    # Prompts for the rows below come from past the base samples' part of the space.
    next_k = dict.fromkeys(_CATEGORIES, (n + len(_CATEGORIES) - 1) // len(_CATEGORIES))

    def prompt_for(category: str) -> str:
        k = next_k[category]
        next_k[category] = k + 1
        return space.prompt(category, k)

    assert base5 is not None
    other = next(c for c in _CATEGORIES if c != _CATEGORIES[5 % len(_CATEGORIES)])
    extra = {"image_text": base5[1]} if base5[1] else {}
    line = wr.row(base5[0], prompt_for(other), other, style="image_reuse", **extra)
    wr.plant("survivor", kind="same_image_different_question", line=line, image=base5[0])
    good = _base_image(space, seed, 0)[0]
    _write_odd_rows(wr, np.random.default_rng([seed, _TAIL_STREAM]), prompt_for, good)


# ----------------------------------------------------------------------- entry point


def write_demo_data(
    dir: str | Path,  # noqa: A002 - CLI name
    n: int = 300,
    seed: int = 0,
    *,
    layout: Layout = "auto",
    workers: int | None = None,
) -> Path:
    """Write the demo pool under ``dir`` and return the manifest path
    (``dir/manifest.jsonl``; ingest it with ``manifest:<that path>``).

    ``n`` distinct samples (≥ 24) are spread evenly over the 6 categories and the three
    image styles; about one in eight also gets a planted duplicate (see the module
    docstring). ``dir/planted.json`` lists every plant with its expected fate.
    ``layout``: ``drawn`` (n ≤ :data:`DRAWN_MAX_N`), ``scale`` (n ≤ 4M) or ``auto`` (drawn
    up to DRAWN_MAX_N). ``workers``: render processes of the scale layout (default: the
    CPU count, up to 8, from 20 000 samples; the output does not depend on it).
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 24:
        raise ValueError(f"write_demo_data: n must be an integer >= 24, got {n!r}")
    if layout not in ("auto", "drawn", "scale"):
        raise ValueError(f"write_demo_data: layout must be auto, drawn or scale, got {layout!r}")
    chosen = layout if layout != "auto" else "drawn" if n <= DRAWN_MAX_N else "scale"
    if chosen == "drawn" and n > DRAWN_MAX_N:
        raise ValueError(
            f"write_demo_data: the drawn layout holds at most {DRAWN_MAX_N} samples, got "
            f"n={n}; use layout='scale'"
        )
    if n > SCALE_MAX_N:
        raise ValueError(f"write_demo_data: at most {SCALE_MAX_N} samples, got n={n}")
    started = time.perf_counter()
    root = Path(dir)
    if (root / "images").exists():
        shutil.rmtree(root / "images")
    (root / "images").mkdir(parents=True, exist_ok=True)
    manifest = root / "manifest.jsonl"
    with open(manifest, "wb") as fh:
        wr = _Writer(root, fh, ids=chosen == "scale")
        if chosen == "drawn":
            _write_drawn(wr, n, seed)
        else:
            _write_scale(wr, n, seed, workers)
    groups = {g: wr.planted.get(g, []) for g in ("duplicate", "reject", "survivor")}
    counts = {g: len(v) for g, v in groups.items()}
    for level in ("exact", "near", "semantic"):
        counts[f"duplicate.{level}"] = sum(1 for d in groups["duplicate"] if d["level"] == level)
    for stage in ("ingest", "preprocess"):
        counts[f"reject.{stage}"] = sum(1 for r in groups["reject"] if r["stage"] == stage)
    (root / "planted.json").write_text(
        json.dumps(
            {"n": n, "seed": seed, "layout": chosen, "rows": wr.lines, "counts": counts, **groups},
            indent=1,
        ),
        encoding="utf-8",
    )
    log.info(
        "demo-data: %d samples (%s layout), %d manifest rows, %d exact/near and %d semantic "
        "duplicates, %d rejects planted, in %.1f s",
        n,
        chosen,
        wr.lines,
        counts["duplicate"] - counts["duplicate.semantic"],
        counts["duplicate.semantic"],
        counts["reject"],
        time.perf_counter() - started,
    )
    return manifest
