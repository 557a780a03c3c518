"""Content-hash ids, path containment, and the row readers."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vlsafety.ingest import (
    ImageRef,
    PathEscapeError,
    SourceRecord,
    clean_text,
    image_id_of,
    reject_id_of,
    resolve_under,
    sample_id_of,
)
from vlsafety.ingest._readers import BadRow, Row, iter_csv, iter_json_list, iter_jsonl

from .conftest import png_bytes, write

# ------------------------------------------------------------------------ ids


def test_image_id_is_sha256_of_the_bytes() -> None:
    data = png_bytes(1)
    assert image_id_of(data) == hashlib.sha256(data).hexdigest()


_field = st.one_of(st.none(), st.text(max_size=20))


@given(
    a=st.tuples(_field, _field, st.text(max_size=5), st.text(max_size=5)),
    b=st.tuples(_field, _field, st.text(max_size=5), st.text(max_size=5)),
)
def test_sample_ids_differ_exactly_when_fields_differ(
    a: tuple[str | None, str | None, str, str], b: tuple[str | None, str | None, str, str]
) -> None:
    assert (sample_id_of(*a) == sample_id_of(*b)) == (a == b)


def test_sample_id_separates_fields_that_concatenate_alike() -> None:
    assert sample_id_of("ab", "c", "s", "r") != sample_id_of("a", "bc", "s", "r")
    assert sample_id_of(None, "x", "s", "r") != sample_id_of("", "x", "s", "r")


def test_reject_id_includes_the_source() -> None:
    assert reject_id_of("ingest", "missing_file", "a", "m.jsonl:line 1", None) != reject_id_of(
        "ingest", "missing_file", "b", "m.jsonl:line 1", None
    )


def test_record_needs_an_image_or_a_text() -> None:
    with pytest.raises(ValueError, match="needs an image or a text"):
        SourceRecord("manifest", "m:1", None, None)
    with pytest.raises(ValueError, match="parquet ImageRef needs column and row"):
        ImageRef("parquet", uri="/x.parquet")


# ---------------------------------------------------------------------- paths


def test_resolve_under_accepts_paths_inside(tmp_path: Path) -> None:
    write(tmp_path / "a" / "b.png", b"x")
    assert resolve_under(tmp_path, "a/b.png") == (tmp_path / "a" / "b.png").resolve()
    assert resolve_under(tmp_path, "a/../a/b.png") == (tmp_path / "a" / "b.png").resolve()


@pytest.mark.parametrize("ref", ["../x.png", "a/../../x.png", "/etc/passwd", "a/\x00b"])
def test_resolve_under_rejects_escapes(tmp_path: Path, ref: str) -> None:
    with pytest.raises(PathEscapeError):
        resolve_under(tmp_path / "root", ref)


def test_symlink_out_of_the_root_is_an_escape(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside, root / "link.png")
    os.symlink(outside.parent, root / "dirlink")
    with pytest.raises(PathEscapeError, match="outside the root"):
        resolve_under(root, "link.png")
    with pytest.raises(PathEscapeError):
        resolve_under(root, "dirlink/secret.png")


def test_symlink_inside_the_root_is_fine(tmp_path: Path) -> None:
    target = write(tmp_path / "real.png", b"x")
    os.symlink(target, tmp_path / "link.png")
    assert resolve_under(tmp_path, "link.png") == target.resolve()


# --------------------------------------------------------------------- readers


def test_clean_text_reports_invalid_utf8() -> None:
    assert clean_text("fine") == ("fine", None)
    assert clean_text(None) == (None, None)
    text, err = clean_text(b"caf\xff au lait")
    assert text == "caf\ufffd au lait"
    assert err == "invalid UTF-8: byte 0xff at character 3"


@given(st.text())
def test_clean_text_leaves_valid_text_alone(text: str) -> None:
    cleaned, err = clean_text(text.encode("utf-8", errors="replace"))
    if not any("\ud800" <= ch <= "\udfff" for ch in text):
        assert (cleaned, err) == (text, None)


def test_csv_bad_rows_carry_line_numbers(tmp_path: Path) -> None:
    path = write(
        tmp_path / "m.csv",
        'image,text\na.png,"hello, world"\nb.png\n\nc.png,"multi\nline"\nd.png,x,extra\n',
    )
    rows = list(iter_csv(path))
    assert [type(r) for r in rows] == [Row, BadRow, Row, BadRow]
    assert isinstance(rows[0], Row) and rows[0].values == {"image": "a.png", "text": "hello, world"}
    assert isinstance(rows[1], BadRow) and rows[1].where == "line 3"
    assert "expected 2 fields" in rows[1].detail
    assert isinstance(rows[2], Row) and rows[2].values["text"] == "multi\nline"
    assert isinstance(rows[3], BadRow) and rows[3].where == "line 7"


def test_csv_unterminated_quote_is_a_bad_row(tmp_path: Path) -> None:
    path = write(tmp_path / "m.csv", 'image,text\na.png,ok\nb.png,"never closed\n')
    rows = list(iter_csv(path))
    assert isinstance(rows[0], Row)
    assert isinstance(rows[1], BadRow) and rows[1].where == "line 3"


def test_jsonl_bad_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "m.jsonl", '{"a": 1}\n\n{"a": \n[1, 2]\n{"a": 2}\n')
    rows = list(iter_jsonl(path))
    assert [type(r).__name__ for r in rows] == ["Row", "BadRow", "BadRow", "Row"]
    assert [r.where for r in rows] == ["line 1", "line 3", "line 4", "line 5"]


def test_json_list_and_dict_layouts(tmp_path: Path) -> None:
    lst = write(tmp_path / "l.json", json.dumps([{"a": 1}, 3]))
    dct = write(tmp_path / "d.json", json.dumps({"7": {"a": 1}}))
    broken = write(tmp_path / "b.json", '[{"a": 1},')
    assert [type(r).__name__ for r in iter_json_list(lst)] == ["Row", "BadRow"]
    (row,) = iter_json_list(dct)
    assert isinstance(row, Row) and row.values == {"_key": "7", "a": 1}
    (bad,) = iter_json_list(broken)
    assert isinstance(bad, BadRow) and bad.where == "line 1"


def test_jsonl_is_split_on_line_ends_only(tmp_path: Path) -> None:
    # JSON allows a raw U+2028 / U+0085 inside strings; only LF, CRLF and CR end a line,
    # so line numbers agree with the file's bytes (what the demo's planted.json counts).
    path = write(tmp_path / "m.jsonl", '{"a": "x\u2028y\u0085z"}\r\n{"a": 2}\r{"a": 3}\n')
    rows = list(iter_jsonl(path))
    assert [r.where for r in rows] == ["line 1", "line 2", "line 3"]
    assert isinstance(rows[0], Row) and rows[0].values["a"] == "x\u2028y\u0085z"
    assert len(path.read_bytes().splitlines()) == 3
