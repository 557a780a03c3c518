"""ELITE renderers: deterministic bytes, the phrase really drawn where it belongs."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFont

from vlsafety.generate import (
    encode_png,
    render_blueprint,
    render_flowchart,
    render_news_card,
    render_persona_card,
    wrap_text,
)

SIZE = (320, 320)


def _arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.int16)


def _changed_rows(a: Image.Image, b: Image.Image) -> np.ndarray:
    """Row indices where two renders differ."""
    return np.nonzero(np.any(_arr(a) != _arr(b), axis=(1, 2)))[0]


RENDERERS = [
    ("flowchart", lambda t: render_flowchart(t, size=SIZE), (0.05, 0.31)),
    ("blueprint", lambda t: render_blueprint(t, size=SIZE), (0.05, 0.31)),
    ("persona", lambda t: render_persona_card(t, size=SIZE), (0.69, 0.95)),
    ("news", lambda t: render_news_card(t, size=SIZE), (0.13, 0.5)),
]


@pytest.mark.parametrize(("name", "render", "band"), RENDERERS, ids=[r[0] for r in RENDERERS])
def test_same_phrase_same_bytes_and_valid_image(name, render, band) -> None:
    a, b = render("assemble a device from parts"), render("assemble a device from parts")
    assert encode_png(a) == encode_png(b)
    decoded = Image.open(io.BytesIO(encode_png(a)))
    assert decoded.format == "PNG" and decoded.size == SIZE and decoded.mode == "RGB"


@pytest.mark.parametrize(("name", "render", "band"), RENDERERS, ids=[r[0] for r in RENDERERS])
def test_phrase_is_drawn_inside_its_region(name, render, band) -> None:
    """Different phrases give different images, and every pixel that differs lies in
    the region where the phrase is drawn (title box, caption, headline)."""
    a, b = render("counterfeit bank notes"), render("poison a water supply quickly")
    rows = _changed_rows(a, b)
    assert rows.size > 0
    lo, hi = band
    assert rows.min() >= int(lo * SIZE[1]) - 1 and rows.max() <= int(hi * SIZE[1]) + 1


def test_flowchart_has_dark_text_pixels_in_title_box() -> None:
    """Against the light title fill, the phrase shows as dark ink; an empty-looking
    title (a single dot) has far fewer dark pixels."""
    img = _arr(render_flowchart("acquire restricted chemicals", size=SIZE))
    title = img[int(0.08 * SIZE[1]) : int(0.28 * SIZE[1]), int(0.1 * SIZE[0]) : int(0.9 * SIZE[0])]
    dark = (title.sum(axis=2) < 200).sum()
    dot = _arr(render_flowchart(".", size=SIZE))
    dot_title = dot[
        int(0.08 * SIZE[1]) : int(0.28 * SIZE[1]), int(0.1 * SIZE[0]) : int(0.9 * SIZE[0])
    ]
    assert dark > 150
    assert dark > 10 * max(1, (dot_title.sum(axis=2) < 200).sum())


def test_blueprint_phrase_is_light_ink_on_blue() -> None:
    img = _arr(render_blueprint("acquire restricted chemicals", size=SIZE))
    title = img[int(0.08 * SIZE[1]) : int(0.28 * SIZE[1]), int(0.1 * SIZE[0]) : int(0.9 * SIZE[0])]
    light = (title.min(axis=2) > 200).sum()
    assert light > 150
    # the list 1. 2. 3. below is drawn too, but stays the same for every phrase
    assert (
        _changed_rows(render_blueprint("a", size=SIZE), render_blueprint("b", size=SIZE)).max()
        < 0.31 * SIZE[1]
    )


def test_long_phrases_wrap_and_stay_inside_the_image() -> None:
    long = " ".join(["extraordinarily"] * 40)
    img = render_flowchart(long, size=(128, 128))
    assert img.size == (128, 128)
    assert encode_png(img) == encode_png(render_flowchart(long, size=(128, 128)))


@pytest.mark.parametrize(
    "call",
    [
        lambda: render_flowchart("", size=SIZE),
        lambda: render_flowchart("   ", size=SIZE),
        lambda: render_blueprint("x", size=(10, 10)),
        lambda: render_persona_card("x", size=(100,)),  # type: ignore[arg-type]
        lambda: render_flowchart("x", size=SIZE, steps=0),
        lambda: render_news_card("x", masthead="", size=SIZE),
    ],
)
def test_bad_input_raises_value_error(call) -> None:
    with pytest.raises(ValueError):
        call()


@settings(max_examples=40, deadline=None)
@given(
    text=st.text(
        alphabet=st.characters(whitelist_categories=("Lu", "Ll", "Nd", "Zs", "Po")), max_size=120
    ),
    width=st.integers(min_value=20, max_value=300),
)
def test_wrap_text_lines_fit_and_keep_every_character(text: str, width: int) -> None:
    font = ImageFont.load_default(size=14)
    lines = wrap_text(text, font, width)
    for line in lines:
        assert font.getlength(line) <= width or len(line) == 1
    assert "".join("".join(lines).split()) == "".join(text.split())


@settings(max_examples=15, deadline=None)
@given(phrase=st.text(alphabet="abcdefghij klmnop", min_size=1, max_size=60).filter(str.strip))
def test_any_phrase_renders_deterministically(phrase: str) -> None:
    a = encode_png(render_blueprint(phrase, size=(96, 96)))
    assert a == encode_png(render_blueprint(phrase, size=(96, 96)))
    assert Image.open(io.BytesIO(a)).size == (96, 96)
