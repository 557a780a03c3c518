"""run_ingest on local Spark: tables, keys, rejects, counts, reruns."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vlsafety.ingest import (
    IngestOptions,
    ingest_batch,
    phash_from_int64,
    records_to_arrow,
    run_ingest,
    sample_id_of,
)
from vlsafety.ingest._records import ImageRef, SourceRecord
from vlsafety.ingest.demo_data import write_demo_data

from .conftest import png_bytes, write

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from vlsafety.lake import Lake


@pytest.fixture(scope="module")
def ingested(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from vlsafety.lake import Lake

    root = tmp_path_factory.mktemp("ingest")
    manifest = write_demo_data(root / "demo", n=24, seed=0)
    lake = Lake(root / "lake", spark)
    counts = run_ingest(spark, lake, [f"manifest:{manifest}"], IngestOptions(partitions=2))
    planted = json.loads((root / "demo" / "planted.json").read_text())
    return {"lake": lake, "counts": counts, "manifest": manifest, "planted": planted}


def test_counts_balance_and_cover_every_manifest_row(ingested: dict[str, Any]) -> None:
    c = ingested["counts"]
    n_rows = len(ingested["manifest"].read_bytes().splitlines())
    assert c["listed"] == n_rows == c["samples"] + c["rejected"]
    lake: Lake = ingested["lake"]
    assert lake.read_arrow("raw_pool").num_rows == c["samples"]


def test_ingest_rejects_match_the_planted_rows(ingested: dict[str, Any]) -> None:
    lake: Lake = ingested["lake"]
    rej = lake.read_arrow("rejects").to_pylist()
    got = {(r["reason"], int(r["source_ref"].rsplit("line ", 1)[1])) for r in rej}
    want = {
        (p["reason"], p["line"]) for p in ingested["planted"]["reject"] if p["stage"] == "ingest"
    }
    assert got == want
    assert all(r["stage"] == "ingest" and r["detail"] for r in rej)


def test_images_are_content_addressed_and_described(ingested: dict[str, Any]) -> None:
    lake: Lake = ingested["lake"]
    images = lake.read_arrow("images").to_pylist()
    assert len({r["image_id"] for r in images}) == len(images) == ingested["counts"]["images"]
    for r in images:
        assert r["image_id"] == hashlib.sha256(r["bytes"]).hexdigest()
        assert r["size_bytes"] == len(r["bytes"])
        if r["phash"] is not None:
            assert f"{phash_from_int64(r['phash']):016x}" == r["phash_hex"]
    by_fmt = {(r["format"], r["mode"]) for r in images}
    assert ("JPEG", "CMYK") in by_fmt and ("GIF", "P") in by_fmt
    bomb = next(r for r in images if r["width"] == 30000)
    assert bomb["phash"] is None and "exceeds" in bomb["decode_error"]
    assert any(r["decode_error"] == "empty file" for r in images)
    # the exact-copy plant shares its original's bytes, so the table holds it once
    exact = next(d for d in ingested["planted"]["duplicate"] if d["kind"] == "exact")
    dup = (ingested["manifest"].parent / exact["image"]).read_bytes()
    assert sum(1 for r in images if r["bytes"] == dup) == 1


def test_sample_ids_hash_image_text_source_and_ref(ingested: dict[str, Any]) -> None:
    lake: Lake = ingested["lake"]
    for r in lake.read_arrow("raw_pool").to_pylist():
        assert r["sample_id"] == sample_id_of(
            r["image_id"], r["text"], r["source"], r["source_ref"]
        )
        assert r["source"] == "manifest"
    bad = [r for r in lake.read_arrow("raw_pool").to_pylist() if r["text_error"]]
    assert len(bad) == 1 and "0xff" in bad[0]["text_error"]


def test_rerun_adds_nothing(spark: SparkSession, ingested: dict[str, Any]) -> None:
    lake: Lake = ingested["lake"]
    before = {t: lake.read_arrow(t).num_rows for t in ("images", "raw_pool", "rejects")}
    counts = run_ingest(spark, lake, [f"manifest:{ingested['manifest']}"])
    assert counts["listed"] == ingested["counts"]["listed"]
    assert {t: lake.read_arrow(t).num_rows for t in before} == before


def test_a_source_listed_twice_is_an_error(spark: SparkSession, lake: Lake, tmp_path: Path) -> None:
    write(tmp_path / "d" / "a.png", png_bytes(1))
    with pytest.raises(ValueError, match="listed twice"):
        run_ingest(spark, lake, [f"folder:{tmp_path / 'd'}", f"folder:{tmp_path / 'd' / '.'}"])


def test_ingest_batch_reads_every_reference_kind(tmp_path: Path) -> None:
    pq.write_table(
        pa.table({"img": pa.array([png_bytes(1), b"", png_bytes(2)], type=pa.binary())}),
        tmp_path / "p.parquet",
        row_group_size=1,
    )
    big = write(tmp_path / "big.png", png_bytes(3, (300, 300)))
    gone = write(tmp_path / "gone.png", png_bytes(4))
    gone.unlink()  # listed, then deleted before the task read it
    recs = [
        SourceRecord(
            "t", "0", "p", ImageRef("parquet", uri=str(tmp_path / "p.parquet"), column="img", row=2)
        ),
        SourceRecord(
            "t", "1", "p", ImageRef("parquet", uri=str(tmp_path / "p.parquet"), column="img", row=1)
        ),
        SourceRecord("t", "2", "p", ImageRef("file", uri=str(big))),
        SourceRecord("t", "3", "p", ImageRef("file", uri=str(gone))),
        SourceRecord("t", "4", "p", ImageRef("url", uri="https://example.com/a.png")),
        SourceRecord("t", "5", "text only prompt", None),
    ]
    batch = records_to_arrow(recs).to_batches()[0]
    out = ingest_batch(batch, IngestOptions(max_file_bytes=len(big.read_bytes()) - 1)).to_pylist()
    assert out[0]["status"] == "ok"
    assert out[0]["image_id"] == hashlib.sha256(png_bytes(2)).hexdigest()
    assert [o["reason"] for o in out[1:5]] == [
        "missing_file",
        "file_too_large",
        "missing_file",
        "remote_not_allowed",
    ]
    assert out[5]["status"] == "ok" and out[5]["image_id"] is None
    assert all(o["reject_id"] for o in out[1:5])


def test_allowed_fetch_reads_http_with_a_size_limit(tmp_path: Path) -> None:
    """The allow_remote path, against a server on 127.0.0.1 (nothing leaves the machine)."""
    import http.server
    import threading
    from functools import partial

    from vlsafety.ingest._stage import read_image_bytes

    write(tmp_path / "a.png", png_bytes(1))
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        on = IngestOptions(allow_remote=True, fetch_timeout_s=5)
        assert read_image_bytes("url", f"{base}/a.png", None, None, None, on) == png_bytes(1)
        small = IngestOptions(allow_remote=True, max_fetch_bytes=10)
        got = read_image_bytes("url", f"{base}/a.png", None, None, None, small)
        assert isinstance(got, tuple) and got[0] == "fetch_failed" and "max_fetch_bytes" in got[1]
        missing = read_image_bytes("url", f"{base}/nope.png", None, None, None, on)
        assert isinstance(missing, tuple) and missing[0] == "fetch_failed" and "404" in missing[1]
        off = read_image_bytes("url", f"{base}/a.png", None, None, None, IngestOptions())
        assert isinstance(off, tuple) and off[0] == "remote_not_allowed"
    finally:
        server.shutdown()


def test_records_are_staged_in_chunks_and_the_staging_is_removed(
    spark: SparkSession,
    ingested: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The driver streams the listing to parquet a chunk at a time (here 5 records): the
    same tables come out as from one chunk, and no staging file is left behind."""
    from vlsafety.ingest import _stage
    from vlsafety.lake import Lake

    monkeypatch.setattr(_stage, "STAGE_CHUNK", 5)
    appended: list[str] = []
    real = _stage._Staging._flush_records

    def spy(self: Any) -> None:
        appended.append(str(len(self._records)))
        real(self)

    monkeypatch.setattr(_stage._Staging, "_flush_records", spy)
    lake = Lake(tmp_path / "lake", spark)
    counts = run_ingest(
        spark, lake, [f"manifest:{ingested['manifest']}"], IngestOptions(partitions=2)
    )
    assert counts == ingested["counts"]
    assert len([n for n in appended if n != "0"]) >= 5  # several chunks were written
    first: Lake = ingested["lake"]
    for table, key in (("raw_pool", "sample_id"), ("images", "image_id"), ("rejects", "reject_id")):
        got = sorted(lake.read_arrow(table).column(key).to_pylist())
        assert got == sorted(first.read_arrow(table, version=0).column(key).to_pylist())
    assert not any((tmp_path / "lake" / "_staging").iterdir())


def test_limit_reads_the_first_records_and_into_takes_them_instead_of_raw_pool(
    spark: SparkSession, ingested: dict[str, Any], tmp_path: Path
) -> None:
    from vlsafety.lake import Lake

    lake = Lake(tmp_path / "lake", spark)
    got: list[int] = []

    def into(rows: Any) -> dict[str, Any]:
        got.append(rows.count())
        return {"taken": got[-1]}

    spec = f"manifest:{ingested['manifest']}"
    counts = run_ingest(spark, lake, [spec], IngestOptions(partitions=1, limit=5), into=into)
    assert counts["listed"] == 5 == counts["samples"] + counts["rejected"]
    assert got == [counts["samples"]] and counts["taken"] == counts["samples"]
    assert not lake.exists("raw_pool")  # the rows went to `into` only
    with pytest.raises(ValueError, match="IngestOptions.limit: must be a positive integer"):
        IngestOptions(limit=0)
