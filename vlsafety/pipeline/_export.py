"""``vlsafety export``: a shareable folder for one benchmark version.

Layout::

    DIR/
      data.jsonl | data.parquet   one record per sample: ids, text, category, strategy,
                                  lineage, selection criteria, image path
      images/<image_id>.<ext>     the exact image bytes (content-addressed)
      metadata.json               table, version, lake path, MLflow run, counts, columns

Loadable with the ``datasets`` library: ``load_dataset("json", data_files="DIR/data.jsonl")``
or ``load_dataset("parquet", data_files="DIR/data.parquet")``.

Only the selected images are collected: the ``images`` table is scanned as a pyarrow
dataset over its Delta files with the filter ``image_id IN (the benchmark's ids)`` pushed
into the scan (row groups whose id statistics exclude every selected id are skipped, the
rest are filtered batch by batch as they are decoded), and each matching image is
written as it arrives. Memory holds one scan batch and the benchmark's ids, never the
whole ``images`` table (tens of GB at pool scale).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from vlsafety.lake import Lake

__all__ = ["export_benchmark"]

_EXT = {"PNG": "png", "JPEG": "jpg", "GIF": "gif", "WEBP": "webp", "BMP": "bmp", "TIFF": "tif"}
#: Large numeric columns that are internal to selection, not part of a shared benchmark.
_DROP = ("embedding",)


def export_benchmark(
    lake: Lake,
    table: str,
    version: int | None,
    out_dir: str | Path,
    *,
    fmt: Literal["jsonl", "parquet"] = "jsonl",
    images_table: str = "images",
) -> dict[str, Any]:
    """Write ``table@version`` (and its images) to ``out_dir``; return the metadata."""
    if fmt not in ("jsonl", "parquet"):
        raise ValueError(f"bad export format {fmt!r}: use jsonl or parquet")
    out = Path(out_dir)
    version = lake.version(table) if version is None else version
    data = lake.read_arrow(table, version=version)
    data = data.drop_columns([c for c in _DROP if c in data.column_names])
    (out / "images").mkdir(parents=True, exist_ok=True)

    paths: dict[str, str] = {}
    images_version = None
    if "image_id" in data.column_names and lake.exists(images_table):
        wanted = pc.unique(data.column("image_id").drop_null())
        images_version, dataset = _images_dataset(lake, images_table)
        for batch in selected_images(dataset, wanted):
            for image_id, blob, fmt_name in zip(
                batch.column("image_id").to_pylist(),
                batch.column("bytes").to_pylist(),
                batch.column("format").to_pylist(),
                strict=True,
            ):
                if image_id in paths or blob is None:
                    continue
                rel = f"images/{image_id}.{_EXT.get(str(fmt_name).upper(), 'bin')}"
                (out / rel).write_bytes(blob)
                paths[image_id] = rel
    if "image_id" in data.column_names:
        ids = data.column("image_id").to_pylist()
        missing = sorted({i for i in ids if i is not None and i not in paths})
        if missing:
            raise RuntimeError(
                f"{len(missing)} image(s) of {table}@{version} are not in the {images_table!r} "
                f"table (first: {missing[0]})"
            )
        data = data.append_column(
            "image", pa.array([paths.get(i) if i else None for i in ids], pa.string())
        )
    if fmt == "parquet":
        pq.write_table(data, out / "data.parquet")
    else:
        with (out / "data.jsonl").open("w", encoding="utf-8") as fh:
            for row in data.to_pylist():
                fh.write(json.dumps(row, ensure_ascii=False, default=_jsonable) + "\n")
    hist = {h["version"]: h for h in lake.history(table)}
    meta = {
        "table": table,
        "version": version,
        "lake": lake.path(table),
        "mlflow_run_id": hist.get(version, {}).get("run_id"),
        "rows": data.num_rows,
        "images": len(paths),
        "images_table": images_table if images_version is not None else None,
        "images_version": images_version,
        "format": fmt,
        "columns": data.column_names,
        "exported_at": datetime.now(UTC).isoformat(),
    }
    (out / "metadata.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return meta


def _images_dataset(lake: Lake, table: str) -> tuple[int, ds.Dataset]:
    """The current version of ``table`` and a pyarrow dataset over its Delta files."""
    from deltalake import DeltaTable

    dt = DeltaTable(lake.path(table), storage_options=lake.storage_options or None)
    return int(dt.version()), dt.to_pyarrow_dataset()


def selected_images(dataset: ds.Dataset, image_ids: pa.Array) -> Iterator[pa.RecordBatch]:
    """Batches of (image_id, bytes, format) for ``image_ids`` only: the filter is pushed
    into the scan, so rows of other images are dropped as each batch is decoded and never
    collected."""
    scan = dataset.scanner(
        columns=["image_id", "bytes", "format"],
        filter=pc.field("image_id").isin(image_ids),
    )
    for batch in scan.to_batches():
        if batch.num_rows:
            yield batch


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return None  # no raw bytes in records: images are files
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)
