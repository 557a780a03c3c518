"""Image checks: an image whose ingest facts settle the check passes from those facts
alone (its bytes are not read again); every other image is checked from its bytes — and
both ways give the row :func:`check_image` gives."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pyarrow as pa
from PIL import Image

from vlsafety.ingest import image_id_of
from vlsafety.lake import Lake
from vlsafety.preprocess import PreprocessOptions
from vlsafety.preprocess._stage import CHECK_COLUMNS, _Run, check_batch


def _png(im: Image.Image, **save: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=save.pop("format", "PNG"), **save)
    return buf.getvalue()


def _images() -> dict[str, bytes]:
    grad = Image.linear_gradient("L").resize((96, 80))
    rgb = Image.merge(
        "RGB", (grad, grad.rotate(90), grad.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    )
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° when displayed
    rgba = rgb.convert("RGBA")
    rgba.putalpha(grad)
    return {
        "rgb": _png(rgb),
        "gray": _png(grad),
        "jpeg": _png(rgb, format="JPEG", quality=90),
        "rotated": _png(rgb, format="JPEG", exif=exif),
        "rgba": _png(rgba),
        "palette": _png(rgb.convert("P")),
        "small": _png(rgb.resize((20, 20))),
        "broken": _png(rgb)[:200],
    }


def _image_rows(images: dict[str, bytes], garbage: set[str]) -> pa.Table:
    """``images`` rows as ingest writes them; the bytes of ``garbage`` images replaced
    after their facts were read (a settled check must not look at them)."""
    from vlsafety.generate._stage import IMAGE_SCHEMA, image_row

    rows = []
    for name, data in images.items():
        row = image_row(data)
        if name in garbage:
            row["bytes"] = b"not an image"
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=IMAGE_SCHEMA)


def test_settled_images_pass_from_their_facts_and_the_rest_from_their_bytes(
    spark: Any, tmp_path: Path
) -> None:
    from pyspark.sql import functions as F

    images = _images()
    settled = {"rgb", "gray", "jpeg"}
    lake = Lake(tmp_path / "lake", spark)
    lake.write(_image_rows(images, garbage=settled), "images", "append", keys=["image_id"])
    options = PreprocessOptions()
    run = _Run(spark, lake, options, embedder=None, verifier=None)
    ids = {name: image_id_of(data) for name, data in images.items()}
    pending = spark.createDataFrame([(i,) for i in ids.values()], "image_id string")
    try:
        got = {r["image_id"]: r for r in run.check_images(pending).toArrow().to_pylist()}
        # what check_image says about the real bytes, image by image
        want = check_batch(
            pa.record_batch({"image_id": list(ids.values()), "bytes": list(images.values())}),
            options,
        ).to_pylist()
        for row in want:
            name = next(n for n, i in ids.items() if i == row["image_id"])
            assert {c: got[row["image_id"]][c] for c in CHECK_COLUMNS} == {
                c: row[c] for c in CHECK_COLUMNS
            }, name
            # bytes travel only for normalized images; the rest are read from the table
            assert (got[row["image_id"]]["data"] is not None) == bool(row["changed"]), name
        reasons = {n: got[i]["reason"] for n, i in ids.items()}
        assert {n for n, r in reasons.items() if r is None} == settled | {
            "rotated",
            "rgba",
            "palette",
        }
        assert reasons["small"] == "low_resolution" and reasons["broken"] in {
            "truncated_image",
            "undecodable_image",
        }
        # the settled images' stored bytes are garbage: they were never decoded
        stored = run.image_bytes(run.check_images(pending)).where(F.col("image_id") == ids["rgb"])
        assert stored.collect()[0]["image"] == b"not an image"
    finally:
        run.close()


def test_an_unsettled_image_is_checked_from_its_bytes(spark: Any, tmp_path: Path) -> None:
    """The same garbage bytes under facts that do not settle the check (a palette image)
    are decoded, and rejected."""
    images = {"palette": _images()["palette"]}
    lake = Lake(tmp_path / "lake", spark)
    lake.write(_image_rows(images, garbage={"palette"}), "images", "append", keys=["image_id"])
    run = _Run(spark, lake, PreprocessOptions(), embedder=None, verifier=None)
    pending = spark.createDataFrame([(image_id_of(images["palette"]),)], "image_id string")
    try:
        (row,) = run.check_images(pending).toArrow().to_pylist()
        assert row["reason"] == "undecodable_image"
    finally:
        run.close()
