"""The bad-input corpus: hostile images, manifests, paths and prompts, written by code.

Nothing binary is committed: :func:`write_corpus` writes every case into a folder at test
time. Each case is one manifest file (or one image folder) under ``<dir>/ds/`` (the
dataset root) plus the files it references; :data:`CASES` names, per row, the expected
fate: ``"pool"`` (kept, maybe normalized) or the reason code of its reject (ingest's
``INGEST_REASONS`` or preprocess's ``PREPROCESS_REASONS``). A case with no row (an
empty manifest) expects nothing and must produce nothing.

``<dir>/outside/`` holds the targets of the escapes (``../``, absolute paths, symlinks);
no case may read them.

Script use::

    python tests/data/bad/make_bad.py DIR          # write the corpus, list the cases
    python tests/data/bad/make_bad.py DIR --run    # also ingest + preprocess it on local
                                                   # Spark and print the summary as JSON

``tests/data/bad/test_bad_corpus.py`` runs the same corpus once per test session.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import sys
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vlsafety.ingest import INGEST_REASONS, IngestOptions
from vlsafety.ingest.demo_data import _png_bomb_header, scene
from vlsafety.preprocess import PREPROCESS_REASONS, PreprocessOptions

__all__ = [
    "CASES",
    "CRASH",
    "INGEST_OPTIONS",
    "PREPROCESS_OPTIONS",
    "Case",
    "Corpus",
    "FAILURES",
    "Failure",
    "cli",
    "expected",
    "matches",
    "outcomes",
    "run_corpus",
    "summarize",
    "write_corpus",
]

#: Files above this are ``file_too_large`` (small, so the oversized case stays cheap).
MAX_FILE_BYTES = 1_000_000

INGEST_OPTIONS = IngestOptions(partitions=2, max_file_bytes=MAX_FILE_BYTES)
PREPROCESS_OPTIONS = PreprocessOptions(partitions=2)

POOL = "pool"

#: The exit status :func:`cli` reports when an exception escaped ``vlsafety`` itself.
CRASH = -1

_WORDS = (  # noqa: SIM905 (a word list reads better as a sentence)
    "river lantern copper meadow violet harbor thistle granite orchard falcon velvet "
    "compass ember willow saffron glacier pebble canyon maple quartz tundra bramble "
    "cobalt dune fern hollow juniper kestrel lagoon mosaic nectar opal prairie quill "
    "rowan sorrel timber umber vessel wren yarrow zephyr almond birch cedar delta"
).split()


@dataclass(frozen=True, slots=True)
class Case:
    """One hostile input: its name (= its manifest's stem), what it is, and the expected
    fate of each manifest row in file order (``"pool"`` or a reject reason); in any order
    when ``ordered`` is False (which of two exact duplicates is kept is decided by their
    sample ids, not their lines)."""

    name: str
    what: str
    expect: tuple[str, ...]
    write: Callable[[_Writer], str]
    ordered: bool = True
    kind: str = "manifest"
    #: what preprocess did to the kept image (a note of the pool's ``normalization``)
    normalized: str | None = None


class _Writer:
    """Writes one case's files; fresh images and prompts never repeat across cases (so
    no case is a duplicate of another, unless it means to be)."""

    def __init__(self, root: Path, case: str, seed: int) -> None:
        self.root = root  # the dataset root, <dir>/ds
        self.outside = root.parent / "outside"
        self.case = case
        self.rng = np.random.default_rng(seed)

    def prompt(self) -> str:
        """A fresh prompt of 12 random words (far from every other in MinHash terms)."""
        words = " ".join(self.rng.choice(_WORDS, size=12))
        return f"Describe the {words} shown in this picture."

    def picture(self, fmt: str = "PNG", **kwargs: Any) -> bytes:
        """A fresh drawn scene (about 160 × 120), encoded as ``fmt``."""
        im = scene(self.rng).resize((160, 120))
        return encode(im, fmt, **kwargs)

    def file(self, name: str, data: bytes) -> str:
        """Write ``images/<name>``; returns its path relative to the root."""
        path = self.root / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return f"images/{name}"

    def row(self, image: Any, text: Any = ..., **extra: Any) -> dict[str, Any]:
        """A manifest row with a fresh prompt (unless ``text`` is given) and a category
        the source-label vote maps (so a kept row is categorized)."""
        return {
            "image": image,
            "text": self.prompt() if text is ... else text,
            "category": "privacy",
            **extra,
        }

    def jsonl(self, *rows: Mapping[str, Any] | bytes, suffix: str = ".jsonl") -> str:
        """Write the manifest: dict rows as JSON lines, bytes rows as they are."""
        lines = [r if isinstance(r, bytes) else json.dumps(r).encode() for r in rows]
        return self.raw(b"".join(line + b"\n" for line in lines), suffix)

    def raw(self, data: bytes, suffix: str = ".jsonl") -> str:
        name = f"{self.case}{suffix}"
        (self.root / name).write_bytes(data)
        return name


def encode(im: Image.Image, fmt: str = "PNG", **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


CASES: list[Case] = []


def case(
    name: str,
    what: str,
    *expect: str,
    ordered: bool = True,
    kind: str = "manifest",
    normalized: str | None = None,
) -> Callable[[Callable[[_Writer], str]], None]:
    def register(fn: Callable[[_Writer], str]) -> None:
        CASES.append(Case(name, what, tuple(expect), fn, ordered, kind, normalized))

    return register


def _one_image(w: _Writer, name: str, data: bytes) -> str:
    return w.jsonl(w.row(w.file(name, data)))


# ---------------------------------------------------------------------- images


@case("img_truncated_jpeg", "a JPEG cut in half", "truncated_image")
def _(w: _Writer) -> str:
    data = w.picture("JPEG", quality=90)
    return _one_image(w, "truncated.jpg", data[: len(data) // 2])


@case("img_truncated_png", "a PNG cut in half (IDAT ends early)", "truncated_image")
def _(w: _Writer) -> str:
    data = w.picture()
    return _one_image(w, "truncated.png", data[: len(data) // 2])


@case("img_header_only", "the first 40 bytes of a PNG", "undecodable_image")
def _(w: _Writer) -> str:
    return _one_image(w, "header_only.png", w.picture()[:40])


@case("img_zero_byte", "a zero-byte .jpg", "empty_file")
def _(w: _Writer) -> str:
    return _one_image(w, "zero.jpg", b"")


@case("img_png_named_jpg", "PNG bytes named .jpg (content decides)", POOL)
def _(w: _Writer) -> str:
    return _one_image(w, "really_png.jpg", w.picture())


@case("img_jpeg_named_png", "JPEG bytes named .png", POOL)
def _(w: _Writer) -> str:
    return _one_image(w, "really_jpeg.png", w.picture("JPEG", quality=90))


@case("img_junk_named_png", "text bytes named .png", "undecodable_image")
def _(w: _Writer) -> str:
    return _one_image(w, "junk.png", b"this is not an image, just text pretending\n" * 4)


@case("img_html_named_jpg", "an HTML error page saved as .jpg", "undecodable_image")
def _(w: _Writer) -> str:
    page = b"<!DOCTYPE html><html><body><h1>404 Not Found</h1></body></html>\n"
    return _one_image(w, "error_page.jpg", page)


@case("img_svg", "an SVG (no raster decoder)", "undecodable_image")
def _(w: _Writer) -> str:
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="200" height="200"><rect/></svg>'
    return _one_image(w, "vector.svg", svg)


@case("img_1x1", "a 1x1 PNG", "low_resolution")
def _(w: _Writer) -> str:
    return _one_image(w, "one_pixel.png", encode(Image.new("RGB", (1, 1), (200, 10, 10))))


@case("img_cmyk", "a CMYK JPEG (normalized to RGB)", POOL, normalized="cmyk_to_rgb")
def _(w: _Writer) -> str:
    im = scene(w.rng).resize((160, 120)).convert("CMYK")
    return _one_image(w, "cmyk.jpg", encode(im, "JPEG", quality=90))


@case(
    "img_16bit",
    "a 16-bit grayscale PNG (I;16, normalized to 8-bit L)",
    POOL,
    normalized="int16_to_l",
)
def _(w: _Writer) -> str:
    ramp = np.linspace(0, 65535, 160 * 120).reshape(120, 160)
    noise = w.rng.integers(0, 4096, size=(120, 160))
    arr = np.clip(ramp + noise, 0, 65535).astype(np.uint16)
    return _one_image(w, "sixteen_bit.png", encode(Image.fromarray(arr)))


@case(
    "img_palette_transparency",
    "a palette PNG with a transparent index",
    POOL,
    normalized="alpha_composited_on_white",
)
def _(w: _Writer) -> str:
    pal = scene(w.rng).resize((160, 120)).convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    return _one_image(w, "palette_alpha.png", encode(pal, transparency=0))


@case(
    "img_animated_gif",
    "a 3-frame animated GIF (first frame kept)",
    POOL,
    normalized="first_frame_of_3",
)
def _(w: _Writer) -> str:
    frames = [scene(w.rng).resize((160, 120)) for _ in range(3)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    return _one_image(w, "animated.gif", data)


@case(
    "img_exif_rotated",
    "a JPEG with EXIF orientation 6 (rotated when shown)",
    POOL,
    normalized="exif_orientation_6_applied",
)
def _(w: _Writer) -> str:
    exif = Image.Exif()
    exif[0x0112] = 6
    return _one_image(w, "exif6.jpg", w.picture("JPEG", quality=90, exif=exif.tobytes()))


@case("img_bomb", "a 69-byte PNG whose header claims 40000x40000", "decompression_bomb")
def _(w: _Writer) -> str:
    return _one_image(w, "bomb.png", _png_bomb_header(40000, 40000))


@case("img_float_tiff", "a float (mode F) TIFF", "unsupported_mode")
def _(w: _Writer) -> str:
    arr = (w.rng.random((96, 96)) * 1000.0).astype(np.float32)
    return _one_image(w, "float.tif", encode(Image.fromarray(arr, mode="F"), "TIFF"))


@case("img_bilevel", "a 1-bit PNG (normalized to L)", POOL, normalized="bilevel_to_l")
def _(w: _Writer) -> str:
    return _one_image(w, "bilevel.png", encode(scene(w.rng).resize((160, 120)).convert("1")))


@case("img_too_large", f"a file over max_file_bytes ({MAX_FILE_BYTES})", "file_too_large")
def _(w: _Writer) -> str:
    return _one_image(w, "huge.png", b"\x89PNG\r\n\x1a\n" + b"\0" * (MAX_FILE_BYTES + 1))


# ----------------------------------------------------------------------- paths


@case("path_dotdot_escape", "../ leaving the dataset root", "path_escape")
def _(w: _Writer) -> str:
    return w.jsonl(w.row("../outside/secret.png"))


@case("path_dotdot_deep", "images/../../ leaving the root", "path_escape")
def _(w: _Writer) -> str:
    return w.jsonl(w.row("images/../../outside/secret.png"))


@case("path_dotdot_inside", "images/../images/x.png (stays inside)", POOL)
def _(w: _Writer) -> str:
    w.file("dotdot_inside.png", w.picture())
    return w.jsonl(w.row("images/../images/dotdot_inside.png"))


@case("path_absolute_outside", "an absolute path outside the root", "path_escape")
def _(w: _Writer) -> str:
    return w.jsonl(w.row(str(w.outside / "secret.png")))


@case("path_absolute_inside", "an absolute path inside the root", POOL)
def _(w: _Writer) -> str:
    rel = w.file("absolute_inside.png", w.picture())
    return w.jsonl(w.row(str(w.root / rel)))


@case("path_etc_passwd", "/etc/passwd", "path_escape")
def _(w: _Writer) -> str:
    return w.jsonl(w.row("/etc/passwd"))


@case("path_nul_byte", "a NUL byte inside the path", "path_escape")
def _(w: _Writer) -> str:
    w.file("nul.png", w.picture())
    return w.jsonl(w.row("images/nul.png\x00.txt"))


@case("path_symlink_file_escape", "a symlinked file pointing outside the root", "path_escape")
def _(w: _Writer) -> str:
    (w.root / "images").mkdir(exist_ok=True)
    os.symlink(w.outside / "secret.png", w.root / "images" / "link_out.png")
    return w.jsonl(w.row("images/link_out.png"))


@case("path_symlink_dir_escape", "a path through a symlinked folder outside", "path_escape")
def _(w: _Writer) -> str:
    (w.root / "images").mkdir(exist_ok=True)
    os.symlink(w.outside, w.root / "images" / "dir_out", target_is_directory=True)
    return w.jsonl(w.row("images/dir_out/secret.png"))


@case("path_symlink_inside", "a symlink to a file inside the root", POOL)
def _(w: _Writer) -> str:
    w.file("link_target.png", w.picture())
    os.symlink("link_target.png", w.root / "images" / "link_in.png")
    return w.jsonl(w.row("images/link_in.png"))


@case("path_symlink_dangling", "a symlink to nothing", "missing_file")
def _(w: _Writer) -> str:
    (w.root / "images").mkdir(exist_ok=True)
    os.symlink("nothing_here.png", w.root / "images" / "dangling.png")
    return w.jsonl(w.row("images/dangling.png"))


@case("path_missing", "a file that does not exist", "missing_file")
def _(w: _Writer) -> str:
    return w.jsonl(w.row("images/does_not_exist.png"))


@case("path_is_folder", "a folder where a file is expected", "missing_file")
def _(w: _Writer) -> str:
    (w.root / "images" / "a_folder.png").mkdir(parents=True)
    return w.jsonl(w.row("images/a_folder.png"))


@case("url_https", "an https URL (remote fetching off)", "remote_not_allowed")
def _(w: _Writer) -> str:
    return w.jsonl(w.row("https://example.com/cat.png"))


@case("url_s3", "an s3 URL (remote fetching off)", "remote_not_allowed")
def _(w: _Writer) -> str:
    return w.jsonl(w.row("s3://bucket/key/cat.png"))


@case("url_file_scheme", "a file:// URL", "bad_record")
def _(w: _Writer) -> str:
    return w.jsonl(w.row("file:///etc/passwd"))


@case("url_data_ok", "an inline base64 data URL", POOL)
def _(w: _Writer) -> str:
    b64 = base64.b64encode(w.picture()).decode()
    return w.jsonl(w.row(f"data:image/png;base64,{b64}"))


@case("url_data_bad", "a data URL with broken base64", "bad_record")
def _(w: _Writer) -> str:
    return w.jsonl(w.row("data:image/png;base64,@@not-base64@@"))


# ------------------------------------------------------------ manifest encodings


@case("enc_bom_jsonl", "a JSONL manifest starting with a UTF-8 BOM", POOL, POOL)
def _(w: _Writer) -> str:
    a, b = w.file("bom_a.png", w.picture()), w.file("bom_b.png", w.picture())
    rows = [json.dumps(w.row(a)).encode(), json.dumps(w.row(b)).encode()]
    return w.raw(b"\xef\xbb\xbf" + b"\n".join(rows) + b"\n")


@case("enc_bom_csv", "a CSV manifest starting with a UTF-8 BOM (header intact)", POOL)
def _(w: _Writer) -> str:
    rel = w.file("bom_csv.png", w.picture())
    body = f"image,text,category\r\n{rel},{w.prompt()},privacy\r\n"
    return w.raw(b"\xef\xbb\xbf" + body.encode(), ".csv")


@case("enc_crlf_jsonl", "a JSONL manifest with CRLF line ends", POOL, POOL)
def _(w: _Writer) -> str:
    a, b = w.file("crlf_a.png", w.picture()), w.file("crlf_b.png", w.picture())
    return w.raw(b"".join(json.dumps(w.row(r)).encode() + b"\r\n" for r in (a, b)))


@case("enc_crlf_csv", "a CRLF CSV with a quoted multi-line prompt", POOL, POOL)
def _(w: _Writer) -> str:
    a, b = w.file("crlf_csv_a.png", w.picture()), w.file("crlf_csv_b.png", w.picture())
    multi = w.prompt().replace(" the ", " the\r\n", 1)
    body = f'image,text,category\r\n{a},"{multi}",privacy\r\n{b},{w.prompt()},privacy\r\n'
    return w.raw(body.encode(), ".csv")


@case("enc_cr_only_jsonl", "a JSONL manifest with old-Mac CR line ends", POOL, POOL)
def _(w: _Writer) -> str:
    a, b = w.file("cr_a.png", w.picture()), w.file("cr_b.png", w.picture())
    return w.raw(b"".join(json.dumps(w.row(r)).encode() + b"\r" for r in (a, b)))


@case("enc_non_utf8_jsonl", "a raw 0xFF byte inside a JSON prompt", "non_utf8_text")
def _(w: _Writer) -> str:
    rel = w.file("non_utf8.png", w.picture())
    line = json.dumps(w.row(rel, "Describe the caf\u00e9 sign shown in this picture, please."))
    return w.raw(line.encode().replace(b"caf\\u00e9", b"caf\xff") + b"\n")


@case("enc_latin1_csv", "a CSV saved as Latin-1 (not UTF-8)", "non_utf8_text")
def _(w: _Writer) -> str:
    rel = w.file("latin1.png", w.picture())
    body = f"image,text,category\n{rel},Describe the café and the crème brûlée here.,privacy\n"
    return w.raw(body.encode("latin-1"), ".csv")


@case("enc_utf16_jsonl", "a JSONL manifest saved as UTF-16 (one reject names it)", "bad_record")
def _(w: _Writer) -> str:
    a, b = w.file("utf16_a.png", w.picture()), w.file("utf16_b.png", w.picture())
    text = "".join(json.dumps(w.row(r)) + "\n" for r in (a, b))
    return w.raw(text.encode("utf-16"))


@case("enc_lone_surrogate", 'a JSON "\\ud800" escape in the prompt', "non_utf8_text")
def _(w: _Writer) -> str:
    rel = w.file("surrogate.png", w.picture())
    line = json.dumps(w.row(rel, "Describe the XSURX sign shown in this picture, please."))
    return w.raw(line.replace("XSURX", "\\ud800").encode() + b"\n")


@case("enc_non_utf8_label", "invalid UTF-8 in a label, not the prompt", POOL)
def _(w: _Writer) -> str:
    rel = w.file("bad_label.png", w.picture())
    line = json.dumps(w.row(rel, note="XLABX")).encode()
    return w.raw(line.replace(b"XLABX", b"bad \xfe\xff label") + b"\n")


@case("enc_utf16_csv", "a CSV manifest saved as UTF-16 (header unreadable as UTF-8)", "bad_record")
def _(w: _Writer) -> str:
    rel = w.file("utf16_csv.png", w.picture())
    return w.raw(f"image,text,category\n{rel},{w.prompt()},privacy\n".encode("utf-16"), ".csv")


# ------------------------------------------------------------ manifest structure


@case(
    "rows_duplicate_id_same",
    "two rows, same id, same image and prompt: one kept",
    POOL,
    "duplicate_exact",
    ordered=False,
)
def _(w: _Writer) -> str:
    row = w.row(w.file("dup_same.png", w.picture()), id="r1")
    return w.jsonl(row, row)


@case("rows_duplicate_id_diff", "two rows, same id, different content (ids are labels)", POOL, POOL)
def _(w: _Writer) -> str:
    a, b = w.file("dup_diff_a.png", w.picture()), w.file("dup_diff_b.png", w.picture())
    return w.jsonl(w.row(a, id="r1"), w.row(b, id="r1"))


@case("rows_truncated_line", "a JSONL whose last line is cut mid-string", POOL, "bad_record")
def _(w: _Writer) -> str:
    good = json.dumps(w.row(w.file("trunc_line.png", w.picture()))).encode()
    cut = json.dumps(w.row("images/trunc_line.png")).encode()
    return w.raw(good + b"\n" + cut[: len(cut) // 2])


@case("rows_truncated_json", "a .json list cut in the middle", "bad_record")
def _(w: _Writer) -> str:
    rows = [w.row(w.file(f"trunc_json_{i}.png", w.picture())) for i in range(3)]
    data = json.dumps(rows).encode()
    return w.raw(data[: len(data) * 2 // 3], ".json")


@case("rows_not_object", "JSONL lines holding a list and a string", "bad_record", "bad_record")
def _(w: _Writer) -> str:
    return w.raw(b'["images/a.png", "a prompt"]\n"just a string"\n')


@case("rows_missing_columns", "a JSONL row with neither image nor text", "bad_record")
def _(w: _Writer) -> str:
    return w.jsonl({"category": "privacy", "caption": "a caption under another name"})


@case("rows_null_fields", "a row whose image and text are both null", "bad_record")
def _(w: _Writer) -> str:
    return w.jsonl(w.row(None, None))


@case("rows_csv_short_row", "a CSV row with a field missing", POOL, "bad_record")
def _(w: _Writer) -> str:
    rel = w.file("csv_short.png", w.picture())
    body = f"image,text,category\n{rel},{w.prompt()},privacy\n{rel},privacy\n"
    return w.raw(body.encode(), ".csv")


@case("rows_csv_long_row", "a CSV row with an extra field", "bad_record")
def _(w: _Writer) -> str:
    rel = w.file("csv_long.png", w.picture())
    return w.raw(f"image,text,category\n{rel},{w.prompt()},privacy,extra\n".encode(), ".csv")


@case(
    "rows_csv_open_quote",
    "a CSV whose last field opens a quote and never closes it",
    POOL,
    "bad_record",
)
def _(w: _Writer) -> str:
    a, b = w.file("open_quote_a.png", w.picture()), w.file("open_quote_b.png", w.picture())
    body = f'image,text,category\n{a},{w.prompt()},privacy\n{b},"{w.prompt()},privacy\n'
    return w.raw(body.encode(), ".csv")


@case(
    "rows_wrong_types",
    "an image field holding a number, a text holding a list",
    "bad_record",
    "bad_record",
)
def _(w: _Writer) -> str:
    rel = w.file("wrong_types.png", w.picture())
    return w.jsonl(w.row(42), w.row(rel, ["a", "list"]))


@case("rows_text_only", "a row with a prompt and no image", POOL)
def _(w: _Writer) -> str:
    return w.jsonl(w.row(None))


@case("rows_image_only", "a row with an image and no prompt", POOL)
def _(w: _Writer) -> str:
    return w.jsonl(w.row(w.file("image_only.png", w.picture()), None))


@case("rows_empty_manifest", "a zero-byte manifest")
def _(w: _Writer) -> str:
    return w.raw(b"")


@case("rows_blank_manifest", "a manifest of blank and whitespace-only lines")
def _(w: _Writer) -> str:
    return w.raw(b"\n   \n\t\r\n\n")


@case("rows_benign_intent", "a row the source marks benign", "intent_filtered")
def _(w: _Writer) -> str:
    return w.jsonl(w.row(w.file("benign.png", w.picture()), intent="benign"))


# ---------------------------------------------------------------- image folder


@case(
    "folder_mixed",
    "an image folder (x.txt is x.png's prompt); rows in file-name order",
    POOL,  # a.png + a.txt
    "uncategorized",  # b.jpg: no prompt, no label, so nothing places it
    "orphan_sidecar",  # c.txt
    "unsupported_file",  # d.md
    "path_escape",  # e.png -> outside/secret.png
    "path_escape",  # f_dir -> outside/
    "missing_file",  # g.png: a dangling symlink
    "non_utf8_text",  # h.png + h.txt in Latin-1
    POOL,  # i.PNG + i.TXT (the sidecar's case differs)
    kind="folder",
)
def _(w: _Writer) -> str:
    d = w.root / w.case
    d.mkdir()
    (d / "a.png").write_bytes(w.picture())
    (d / "a.txt").write_text("How can the owner keep their passwords and home address private?")
    (d / "b.jpg").write_bytes(w.picture("JPEG"))
    (d / "c.txt").write_text("A prompt whose image is missing from the folder entirely.")
    (d / "d.md").write_text("# notes, not an image\n")
    os.symlink(w.outside / "secret.png", d / "e.png")
    os.symlink(w.outside, d / "f_dir", target_is_directory=True)
    os.symlink("gone.png", d / "g.png")
    (d / "h.png").write_bytes(w.picture())
    (d / "h.txt").write_bytes(
        "Which café receipts here reveal a private address?".encode("latin-1")
    )
    (d / "i.PNG").write_bytes(w.picture())
    (d / "i.TXT").write_text("Which identity documents in this photo should stay private?")
    return w.case


# --------------------------------------------------------------------- prompts


@case("prompt_empty", 'an empty prompt ""', "empty_text")
def _(w: _Writer) -> str:
    return w.jsonl(w.row(w.file("prompt_empty.png", w.picture()), ""))


@case("prompt_whitespace", "a prompt of spaces, tabs and newlines", "empty_text")
def _(w: _Writer) -> str:
    return w.jsonl(w.row(w.file("prompt_ws.png", w.picture()), " \t\n\r \u3000 " * 8))


@case("prompt_1mb", "a 1 MB prompt", "oversized_text")
def _(w: _Writer) -> str:
    text = (w.prompt() + " ") * (1_000_000 // 80)
    return w.jsonl(w.row(w.file("prompt_1mb.png", w.picture()), text[:1_000_000]))


@case("prompt_short", "a 13-character prompt", "short_prompt")
def _(w: _Writer) -> str:
    return w.jsonl(w.row(w.file("prompt_short.png", w.picture()), "Is this fair?"))


@case("prompt_control_only", "a prompt of NUL, BEL and ESC characters only", "empty_text")
def _(w: _Writer) -> str:
    return w.jsonl(w.row(w.file("prompt_ctrl.png", w.picture()), "\x00\x07\x1b\x7f" * 10))


@case("prompt_invisible_only", "a prompt of zero-width and bidi characters only", "empty_text")
def _(w: _Writer) -> str:
    return w.jsonl(w.row(w.file("prompt_zw.png", w.picture()), "\u200b\u200d\u202e\ufeff" * 10))


@case("prompt_control_embedded", "a real prompt with NUL and ANSI escapes inside", POOL)
def _(w: _Writer) -> str:
    text = w.prompt().replace(" ", " \x1b[31m", 1).replace(" ", "\x00 ", 1)
    return w.jsonl(w.row(w.file("prompt_ctrl_in.png", w.picture()), text))


# ------------------------------------------------- sources that stop the whole run


@dataclass(frozen=True, slots=True)
class Failure:
    """A source no row of which can be read: the command must stop with ``exit`` (1: the
    run failed, 2: bad usage) and one stderr line matching ``message``, writing nothing."""

    name: str
    what: str
    exit: int
    message: str
    write: Callable[[Path], str]  # writes under a folder, returns the KIND:PATH source


def _csv_without_columns(d: Path) -> str:
    (d / "no_columns.csv").write_text("url,caption\nimages/a.png,a caption\n")
    return f"manifest:{d / 'no_columns.csv'}"


def _corrupt_parquet(d: Path) -> str:
    (d / "corrupt.parquet").write_bytes(b"PAR1" + b"\x00" * 64 + b"PAR1")
    return f"manifest:{d / 'corrupt.parquet'}"


def _unsupported_suffix(d: Path) -> str:
    (d / "manifest.txt").write_text('{"image": null, "text": "a prompt long enough here"}\n')
    return f"manifest:{d / 'manifest.txt'}"


FAILURES: list[Failure] = [
    Failure(
        "csv_without_columns",
        "a CSV with neither an image nor a text column",
        1,
        r"no_columns\.csv: neither image column 'image' nor text column 'text' exists",
        _csv_without_columns,
    ),
    Failure(
        "corrupt_parquet",
        "a parquet manifest with a corrupt footer",
        1,
        r"corrupt\.parquet: not a readable parquet file",
        _corrupt_parquet,
    ),
    Failure(
        "unsupported_suffix",
        "a manifest of an unknown type (.txt)",
        1,
        r"unsupported manifest type '\.txt'",
        _unsupported_suffix,
    ),
    Failure(
        "manifest_is_a_folder",
        "a manifest source naming a folder",
        1,
        r"manifest source .* is not a file",
        lambda d: f"manifest:{d}",
    ),
    Failure(
        "source_does_not_exist",
        "a source path that does not exist",
        2,
        r"ingest --source: .*does not exist",
        lambda d: f"manifest:{d / 'nowhere.jsonl'}",
    ),
    Failure(
        "unknown_source_kind",
        "a source of an unknown kind",
        2,
        r"unknown source kind 'zip'",
        lambda d: f"zip:{d}",
    ),
]


# ------------------------------------------------------------------ the corpus


@dataclass(frozen=True, slots=True)
class Corpus:
    """A written corpus: the dataset root and, per case, its kind and path relative to
    the root (a manifest's file name or a folder's name: its rows' ``source_ref``s start
    with it, the root being every source's root)."""

    root: Path
    paths: dict[str, str]
    kinds: dict[str, str]

    @property
    def sources(self) -> list[str]:
        """``KIND:PATH`` sources, one per case, in case order."""
        return [f"{self.kinds[n]}:{self.root / p}" for n, p in self.paths.items()]


def write_corpus(directory: Path) -> Corpus:
    """Write every case under ``directory`` (``ds/`` is the root, ``outside/`` the
    escape targets). Deterministic: case ``i`` draws from seed ``i``."""
    root = directory / "ds"
    (root / "images").mkdir(parents=True)
    outside = directory / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(encode(Image.new("RGB", (96, 96), (1, 2, 3))))
    paths = {c.name: c.write(_Writer(root, c.name, seed=i)) for i, c in enumerate(CASES)}
    return Corpus(root, paths, {c.name: c.kind for c in CASES})


#: The repository's model declarations (the stages here load no model from them).
_MODELS_YAML = Path(__file__).resolve().parents[3] / "conf" / "models" / "tiny.yaml"


def cli(lake_root: Path, *args: str, root: Path | None = None) -> tuple[int, Any, str]:
    """``vlsafety --conf <empty> --set lake.root=… [settings] ARGS --json`` in-process:
    (exit status, the printed JSON or None, stderr). The empty config means the
    schema's defaults — no embedder or verifier, so preprocess loads no model — not the
    demo's; tracking is off; the Spark settings match the test session's, so an
    existing session is reused unchanged. ``root``: the sources' dataset root."""
    import contextlib

    from vlsafety.cli import main

    conf = lake_root.parent / f"{lake_root.name}.yaml"
    conf.write_text("# schema defaults\n")
    settings = {
        "lake.root": str(lake_root),
        "models.file": str(_MODELS_YAML),
        "tracking.enabled": "false",
        "spark.shuffle_partitions": "2",
        "spark.progress_bar": "false",
        "ingest.partitions": str(INGEST_OPTIONS.partitions),
        "ingest.max_file_bytes": str(INGEST_OPTIONS.max_file_bytes),
        "preprocess.partitions": str(PREPROCESS_OPTIONS.partitions),
    }
    if root is not None:
        settings["ingest.root"] = str(root)
    argv = ["--conf", str(conf), *(a for k, v in settings.items() for a in ("--set", f"{k}={v}"))]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([*argv, *args, "--json"])
        except Exception:  # escaped the CLI's error handling: a crash, not an exit status
            traceback.print_exc()
            rc = CRASH
    printed = out.getvalue()
    return rc, json.loads(printed) if rc == 0 else None, err.getvalue()


def run_corpus(spark: Any, corpus: Corpus, lake_root: Path) -> dict[str, Any]:
    """``vlsafety ingest`` then ``vlsafety preprocess`` over the corpus (one run each),
    into a lake at ``lake_root``.

    Returns ``{"exit": {stage: status}, "ingest": counts, "preprocess": counts,
    "rows": {source_ref: [fate, …]}, "normalization": {source_ref: note}}``, a fate
    being ``"pool"`` or ``"<stage>:<reason>"``, a note what preprocess did to a kept
    image (None: nothing)."""
    from vlsafety.lake import Lake

    sources = [a for s in corpus.sources for a in ("--source", s)]
    result: dict[str, Any] = {"exit": {}, "stderr": {}}
    for stage, args in (("ingest", ["ingest", *sources]), ("preprocess", ["preprocess"])):
        rc, counts, err = cli(lake_root, *args, root=corpus.root)
        result["exit"][stage], result[stage], result["stderr"][stage] = rc, counts or {}, err
        if rc != 0:
            break  # what the tables hold so far is still read below
    lake = Lake(lake_root, spark)
    rows: dict[str, list[str]] = {}
    result["normalization"] = {}
    if lake.exists("pool"):
        for r in lake.read_arrow("pool", columns=["source_ref", "normalization"]).to_pylist():
            rows.setdefault(r["source_ref"], []).append(POOL)
            result["normalization"][r["source_ref"]] = r["normalization"]
    if lake.exists("rejects"):
        cols = ["stage", "reason", "source_ref"]
        for r in lake.read_arrow("rejects", columns=cols).to_pylist():
            rows.setdefault(r["source_ref"], []).append(f"{r['stage']}:{r['reason']}")
    result["rows"] = rows
    return result


_WHERE = re.compile(r":(?:line |#|row )(\d+)$")


def outcomes(corpus: Corpus, rows: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """Per case, the fates of its rows ordered by their place in the manifest (a
    folder's: by file name). A row with two fates (in the pool and rejected, or rejected
    twice) shows both, joined by ``+`` — which the expectations never allow."""
    out: dict[str, list[tuple[int, str, str]]] = {name: [] for name in corpus.paths}
    by_path = {p: name for name, p in corpus.paths.items()}
    for ref, fates in rows.items():
        head = ref.partition(":")[0]
        name = by_path.get(head) or by_path.get(head.split("/", 1)[0])
        if name is None:
            raise ValueError(f"row {ref!r} is from no case")
        where = _WHERE.search(ref)
        line = int(where.group(1)) if where else -1
        out[name].append((line, ref, "+".join(sorted(fates))))
    return {name: [f for *_, f in sorted(v)] for name, v in out.items()}


def expected(c: Case) -> list[str]:
    """The expected fates of a case's rows, stage-qualified like :func:`outcomes`."""
    out = []
    for e in c.expect:
        if e == POOL:
            out.append(POOL)
        elif e in INGEST_REASONS:
            out.append(f"ingest:{e}")
        elif e in PREPROCESS_REASONS:
            out.append(f"preprocess:{e}")
        else:
            raise ValueError(f"case {c.name}: {e!r} is no reason code")
    return out


def matches(c: Case, fates: list[str]) -> bool:
    """Whether a case's rows ended as expected."""
    want = expected(c)
    return fates == want if c.ordered else sorted(fates) == sorted(want)


def summarize(result: Mapping[str, Any], got: Mapping[str, list[str]]) -> dict[str, Any]:
    """The corpus in figures: cases, rows, kept, rejected by reason, crashes and the
    cases whose rows did not end as expected."""
    fates: Counter[str] = Counter(f for fs in got.values() for f in fs)
    by_name = {c.name: c for c in CASES}
    return {
        "cases": len(got),
        "rows": sum(fates.values()),
        "pool": fates.get(POOL, 0),
        "rejected": dict(sorted((k, v) for k, v in fates.items() if k != POOL)),
        **{
            stage: {
                k: result.get(stage, {}).get(k)
                for k in ("rows_in", "rows_out", "rejected", "duration_s")
            }
            for stage in ("ingest", "preprocess")
        },
        "exit": dict(result["exit"]),
        "crashes": sum(1 for rc in result["exit"].values() if rc == CRASH),
        "mismatches": sorted(n for n, fs in got.items() if not matches(by_name[n], fs)),
    }


def _print_cases(cases: Iterable[Case], corpus: Corpus) -> None:
    for c in cases:
        fates = ", ".join(c.expect) or "(no rows)"
        print(f"{c.name:<28} {corpus.paths[c.name]:<32} {fates}  -- {c.what}")


def main(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dir", type=Path, help="an empty or new folder")
    p.add_argument("--run", action="store_true", help="ingest + preprocess it on local Spark")
    args = p.parse_args(argv)
    corpus = write_corpus(args.dir)
    _print_cases(CASES, corpus)
    if not args.run:
        return 0
    from vlsafety.config import SparkConfig
    from vlsafety.spark import get_spark

    spark = get_spark(SparkConfig(master="local[2]", shuffle_partitions=2, progress_bar=False))
    result = run_corpus(spark, corpus, args.dir / "lake")
    summary = summarize(result, outcomes(corpus, result["rows"]))
    print(json.dumps(summary, indent=2))
    ok = not summary["mismatches"] and set(summary["exit"].values()) == {0}
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
