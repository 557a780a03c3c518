"""export reads only the selected images: the filter goes into the scan of ``images``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from vlsafety.lake import Lake
from vlsafety.pipeline import _export
from vlsafety.pipeline._export import export_benchmark

N_IMAGES = 40


class _SpyDataset:
    """Wraps the images dataset: records each scan's arguments and the rows it yields."""

    def __init__(self, inner: ds.Dataset) -> None:
        self.inner = inner
        self.scans: list[dict[str, Any]] = []
        self.rows_read = 0

    def scanner(self, **kwargs: Any) -> Any:
        self.scans.append(kwargs)
        scan = self.inner.scanner(**kwargs)
        spy = self

        class _Scan:
            def to_batches(self) -> Any:
                for batch in scan.to_batches():
                    spy.rows_read += batch.num_rows
                    yield batch

        return _Scan()


def _lake(tmp_path: Path) -> Lake:
    lake = Lake(tmp_path / "lake")
    ids = [f"{i:064x}" for i in range(N_IMAGES)]
    images = pa.table(
        {
            "image_id": ids,
            "bytes": [f"image {i}".encode() for i in range(N_IMAGES)],
            "format": ["PNG"] * N_IMAGES,
        }
    )
    # Several files, as an images table grows by merges.
    for start in range(0, N_IMAGES, 10):
        lake.write(images.slice(start, 10), "images", "append")
    bench = pa.table(
        {
            "candidate_id": ["c1", "c2", "c3", "c4"],
            "image_id": [ids[3], ids[17], ids[17], None],
            "text": ["a", "b", "c", "d"],
        }
    )
    lake.write(bench, "benchmark", "overwrite")
    return lake


def test_export_reads_only_the_selected_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = _lake(tmp_path)
    spies: list[_SpyDataset] = []
    real = _export._images_dataset

    def spying(lake: Lake, table: str) -> tuple[int, Any]:
        version, dataset = real(lake, table)
        spies.append(_SpyDataset(dataset))
        return version, spies[-1]

    monkeypatch.setattr(_export, "_images_dataset", spying)
    read_whole: list[str] = []
    original_read_arrow = lake.read_arrow

    def read_arrow(table: str, *args: Any, **kwargs: Any) -> pa.Table:
        read_whole.append(table)
        return original_read_arrow(table, *args, **kwargs)

    monkeypatch.setattr(lake, "read_arrow", read_arrow)

    meta = export_benchmark(lake, "benchmark", None, tmp_path / "out")
    assert "images" not in read_whole  # the whole images table is never loaded
    (spy,) = spies
    (scan,) = spy.scans
    assert scan["columns"] == ["image_id", "bytes", "format"]
    assert str(scan["filter"]).startswith("is_in(image_id")  # the selection goes into the scan
    assert spy.rows_read == 2  # two distinct images selected, of 40
    assert meta["images"] == 2 and meta["rows"] == 4
    assert meta["images_version"] == lake.version("images")
    out = tmp_path / "out"
    rows = [json.loads(line) for line in (out / "data.jsonl").read_text().splitlines()]
    assert [r["image"] is None for r in rows] == [False, False, False, True]
    assert (out / rows[1]["image"]).read_bytes() == b"image 17"
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(
        f"{i:064x}.png" for i in (3, 17)
    )


def test_export_names_a_missing_image(tmp_path: Path) -> None:
    lake = _lake(tmp_path)
    bench = pa.table({"candidate_id": ["x"], "image_id": ["f" * 64], "text": ["t"]})
    lake.write(bench, "benchmark", "overwrite")
    with pytest.raises(RuntimeError, match="not in the 'images' table"):
        export_benchmark(lake, "benchmark", None, tmp_path / "out")
