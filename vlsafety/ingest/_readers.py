"""Record readers for CSV / JSONL / JSON / parquet files that keep line numbers and
never lose a row silently: a row that cannot be parsed comes back as a :class:`BadRow`.

Files are decoded as UTF-8 with ``surrogateescape``, so a file with a few invalid bytes
still parses; :func:`clean_text` later turns the escaped bytes into U+FFFD and reports
them (the preprocessing agent rejects such prompts as ``non_utf8_text``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

__all__ = [
    "BadRow",
    "Row",
    "clean_text",
    "csv_header",
    "foreign_bom",
    "iter_csv",
    "iter_jsonl",
    "iter_parquet",
    "iter_table",
    "load_json",
    "read_text_file",
]


@dataclass(frozen=True, slots=True)
class Row:
    """A parsed record and where it came from (``where``: ``line 12``, ``#3``, ``row 7``)."""

    values: dict[str, Any]
    where: str
    index: int


@dataclass(frozen=True, slots=True)
class BadRow:
    """A record that could not be parsed."""

    where: str
    detail: str


def clean_text(value: Any) -> tuple[str | None, str | None]:
    """Normalize a text field: (text, error).

    ``None`` stays None. Bytes are decoded as UTF-8. Lone surrogates (undecodable bytes
    kept by ``surrogateescape``) become U+FFFD and the error names the first bad byte.
    Other scalar types are rejected by the caller, not stringified here.
    """
    if value is None:
        return None, None
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", errors="surrogateescape")
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    first = next((i for i, ch in enumerate(value) if "\ud800" <= ch <= "\udfff"), None)
    if first is None:
        return value, None
    code = ord(value[first])
    # surrogateescape maps an undecodable byte b to U+DC00+b (b >= 0x80).
    what = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"U+{code:04X}"
    fixed = "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in value)
    return fixed, f"invalid UTF-8: {what} at character {first}"


def read_text_file(path: Path) -> tuple[str, str | None]:
    """Read a sidecar prompt file: (text stripped of a BOM and surrounding whitespace,
    UTF-8 error or None)."""
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    text, err = clean_text(raw)
    return (text or "").strip(), err


#: Byte-order marks of the encodings a text manifest must not be in (UTF-8 is read).
_FOREIGN_BOMS: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xfe\x00\x00", "UTF-32-LE"),
    (b"\x00\x00\xfe\xff", "UTF-32-BE"),
    (b"\xff\xfe", "UTF-16-LE"),
    (b"\xfe\xff", "UTF-16-BE"),
)


def foreign_bom(path: Path) -> str | None:
    """The encoding a UTF-16/32 byte-order mark at the start of ``path`` names, else
    None. Read as UTF-8, such a file would come apart into one bad record per line (and
    a stray one per NUL), each blamed on JSON or CSV syntax."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    return next((name for bom, name in _FOREIGN_BOMS if head.startswith(bom)), None)


def _decode(path: Path) -> str:
    return path.read_bytes().decode("utf-8-sig", errors="surrogateescape")


def _open_text(path: Path) -> IO[str]:
    """``path`` as text, decoded like :func:`_decode` but read as a stream. Lines end at
    LF, CRLF or CR only (returned untranslated), as in the file's bytes: a U+2028 inside
    a JSON string does not split its line."""
    return open(path, encoding="utf-8-sig", errors="surrogateescape", newline="")


def csv_header(path: Path) -> list[str]:
    """The header row of a CSV/TSV file (empty list for an empty file)."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        try:
            return [h.strip() for h in next(csv.reader(fh, delimiter=delimiter))]
        except (StopIteration, csv.Error):
            return []


def iter_csv(path: Path, *, delimiter: str | None = None) -> Iterator[Row | BadRow]:
    """Rows of a CSV/TSV file with a header. A row whose field count differs from the
    header's, or that the csv module cannot parse, is a BadRow with its line number."""
    if delimiter is None:
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with _open_text(path) as fh:  # streamed: a large manifest is never held whole
        yield from _csv_rows(csv.reader(fh, delimiter=delimiter, strict=True))


def _csv_rows(reader: Any) -> Iterator[Row | BadRow]:
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        yield BadRow("line 1", f"cannot parse the CSV header: {exc}")
        return
    header = [h.strip() for h in header]
    index = 0
    while True:
        start = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield BadRow(f"line {start}", f"CSV parse error: {exc}")
            # csv.reader cannot resync inside a broken quoted field: stop rather than
            # guess; the remaining text is reported as one bad record.
            return
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue  # blank line: not a record
        if len(fields) != len(header):
            yield BadRow(
                f"line {start}",
                f"expected {len(header)} fields ({', '.join(header)}), got {len(fields)}",
            )
            index += 1
            continue
        yield Row(dict(zip(header, fields, strict=True)), f"line {start}", index)
        index += 1


def iter_jsonl(path: Path) -> Iterator[Row | BadRow]:
    """Objects of a JSON-lines file; a line that is not a JSON object is a BadRow."""
    with _open_text(path) as fh:  # streamed: a large manifest is never held whole
        yield from _jsonl_rows(fh)


def _jsonl_rows(lines: Iterator[str]) -> Iterator[Row | BadRow]:
    index = 0
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield BadRow(f"line {lineno}", f"not valid JSON: {exc.msg} at column {exc.colno}")
            index += 1
            continue
        if not isinstance(obj, dict):
            yield BadRow(f"line {lineno}", f"expected a JSON object, got {type(obj).__name__}")
        else:
            yield Row(obj, f"line {lineno}", index)
        index += 1


def load_json(path: Path) -> tuple[Any, BadRow | None]:
    """Parse a whole JSON file: (value, None) or (None, BadRow naming line and column)."""
    try:
        return json.loads(_decode(path)), None
    except json.JSONDecodeError as exc:
        return None, BadRow(
            f"line {exc.lineno}", f"not valid JSON: {exc.msg} at column {exc.colno}"
        )


def iter_json_list(path: Path) -> Iterator[Row | BadRow]:
    """Objects of a JSON file holding a list (or a dict of id → object)."""
    data, bad = load_json(path)
    if bad is not None:
        yield bad
        return
    if isinstance(data, dict):
        items = list(data.items())
    elif isinstance(data, list):
        items = [(str(i), v) for i, v in enumerate(data)]
    else:
        yield BadRow("line 1", f"expected a JSON list or object, got {type(data).__name__}")
        return
    for index, (key, obj) in enumerate(items):
        if not isinstance(obj, dict):
            yield BadRow(f"#{key}", f"expected a JSON object, got {type(obj).__name__}")
            continue
        if isinstance(data, dict):
            obj = {"_key": key, **obj}
        yield Row(obj, f"#{key}", index)


def iter_parquet(path: Path, *, skip_binary: bool = True) -> Iterator[Row | BadRow]:
    """Rows of a parquet file in batches; binary (image) columns are left out when
    ``skip_binary`` so the driver never holds image bytes (tasks read them by row)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        yield BadRow("file", f"not a readable parquet file: {exc}")
        return

    def heavy(t: pa.DataType) -> bool:
        if pa.types.is_binary(t) or pa.types.is_large_binary(t):
            return True
        return pa.types.is_struct(t) and any(heavy(t.field(i).type) for i in range(t.num_fields))

    columns = [f.name for f in pf.schema_arrow if not (skip_binary and heavy(f.type))]
    index = 0
    for batch in pf.iter_batches(batch_size=4096, columns=columns):
        for values in batch.to_pylist():
            yield Row(values, f"row {index}", index)
            index += 1


def iter_table(path: Path) -> Iterator[Row | BadRow]:
    """Dispatch on the suffix: .csv/.tsv, .jsonl/.ndjson, .json, .parquet."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return iter_csv(path)
    if suffix in (".jsonl", ".ndjson"):
        return iter_jsonl(path)
    if suffix == ".json":
        return iter_json_list(path)
    if suffix == ".parquet":
        return iter_parquet(path)
    raise ValueError(
        f"{path}: unsupported manifest type {suffix!r}; use .csv, .tsv, .jsonl, .json or .parquet"
    )
