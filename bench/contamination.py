"""The contamination check on the real benchmark subsets (``../shared/realbench/data``,
read in place) with a planted benchmark, through the ``vlsafety`` command line.

The public side: the subsets with real metadata (FigStep with its real images,
MM-SafetyBench, VLGuard, SIUO, VLSBench). The benchmark: copies of public records —
exact image copies, images resized to 80 % and re-encoded as JPEG, texts with one short
edit — and fresh samples (random images, new texts). Prints the command's summary (the
share of the benchmark matched, per source and kind), the planted samples found, the
fresh samples flagged, and the time of the check.

    python bench/contamination.py [--copies 5] [--fresh 30] [--keep DIR]

No embeddings here (no pool): the semantic level says so in a note; the tests cover it
with controlled embeddings.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "realbench" / "data"
PUBLIC = {
    "figstep": "figstep",
    "mm-safetybench": "mm-safetybench",
    "vlguard": "vlguard-github-data",
    "siuo": "siuo",
    "vlsbench": "vlsbench",
}


def _blob(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    small = (rng.random((6, 6, 3)) * 255).astype(np.uint8)
    im = Image.fromarray(small, "RGB").resize((96, 80), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _reencoded(data: bytes) -> bytes:
    im = Image.open(io.BytesIO(data)).convert("RGB")
    im = im.resize((int(im.width * 0.8), int(im.height * 0.8)), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=75)
    return buf.getvalue()


def _fresh_text(i: int) -> str:
    rng = np.random.default_rng(1000 + i)
    words = ["orchard", "violin", "glacier", "lantern", "pepper", "harbor", "quartz", "meadow"]
    return f"Sample {i}: " + " ".join(rng.choice(words, size=9).tolist()) + f" ({i * 7919})"


def _edited(text: str) -> str:
    """One short edit: the closing punctuation replaced by a polite suffix."""
    return text.rstrip(" ?.!") + ", please?"


def main() -> None:
    from vlsafety import cli
    from vlsafety.ingest import SourceRecord, iter_source

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=5, help="planted copies of each kind")
    ap.add_argument("--fresh", type=int, default=30, help="fresh (clean) samples")
    ap.add_argument("--keep", help="keep the lake and files here (default: a temp dir)")
    args = ap.parse_args()
    root = Path(args.keep or tempfile.mkdtemp(prefix="contamination-"))
    root.mkdir(parents=True, exist_ok=True)
    records = {
        k: sorted(
            (r for r in iter_source(f"{k}:{DATA / rel}") if isinstance(r, SourceRecord)),
            key=lambda r: r.source_ref,
        )
        for k, rel in PUBLIC.items()
    }
    with_image = [r for k in ("figstep", "vlguard") for r in records[k] if r.image is not None]
    long_text = [
        r for k in ("vlguard", "siuo", "vlsbench") for r in records[k] if len(r.text or "") >= 60
    ]
    rng = np.random.default_rng(0)
    pick = rng.permutation(len(with_image))
    n = args.copies
    plants: list[tuple[bytes, str, str, str]] = []  # bytes, suffix, text, planted kind
    for i in pick[:n].tolist():
        r = with_image[i]
        plants.append((Path(r.image.uri).read_bytes(), "png", _fresh_text(i), "exact_image"))  # type: ignore[union-attr,arg-type]
    for i in pick[n : 2 * n].tolist():
        r = with_image[i]
        data = _reencoded(Path(r.image.uri).read_bytes())  # type: ignore[union-attr,arg-type]
        plants.append((data, "jpg", _fresh_text(100 + i), "near_image"))
    for j, i in enumerate(rng.permutation(len(long_text))[:n].tolist()):
        plants.append((_blob(500 + j), "png", _edited(long_text[i].text or ""), "near_text"))
    for j in range(args.fresh):
        plants.append((_blob(900 + j), "png", _fresh_text(900 + j), "clean"))
    folder = root / "planted"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    lines = []
    for i, (data, suffix, text, kind) in enumerate(plants):
        (folder / f"{i:03d}.{suffix}").write_bytes(data)
        lines.append({"image": f"{i:03d}.{suffix}", "text": text, "plant": kind})
    manifest = folder / "bench.jsonl"
    manifest.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")

    lake_root = root / "lake"
    shutil.rmtree(lake_root, ignore_errors=True)
    base = ["--lake", str(lake_root), "--set", f"tracking.uri=sqlite:///{root}/mlflow.db"]
    sources = [x for k, rel in PUBLIC.items() for x in ("--source", f"{k}:{DATA / rel}")]
    t = time.perf_counter()
    assert cli.main([*base, "ingest", *sources, "--source", f"manifest:{manifest}"]) == 0
    print(f"ingest: {time.perf_counter() - t:.1f} s")

    from pyspark.sql import functions as F

    from vlsafety.config import load_config
    from vlsafety.lake import Lake
    from vlsafety.spark import get_spark

    cfg = load_config(None, [f"lake.root={lake_root}"])
    lake = Lake(lake_root, get_spark(cfg.spark))
    mine = lake.read("raw_pool").where(F.col("source") == "manifest")
    bench = mine.select(
        F.col("sample_id").alias("candidate_id"),
        "image_id",
        "text",
        F.lit("x").alias("category"),
        F.col("labels")["plant"].alias("plant"),
    )
    lake.write(bench, "bench", "overwrite", keys=["candidate_id"])
    t = time.perf_counter()
    assert cli.main([*base, "contamination", "--benchmark", "bench@0"]) == 0
    print(f"contamination check: {time.perf_counter() - t:.1f} s")
    rows = lake.read_arrow("contamination").to_pylist()
    plant = dict(
        zip(
            lake.read_arrow("bench").column("candidate_id").to_pylist(),
            lake.read_arrow("bench").column("plant").to_pylist(),
            strict=True,
        )
    )
    kinds: dict[str, set[str]] = {}
    for r in rows:
        kinds.setdefault(r["sample_id"], set()).add(r["kind"])
    for kind in ("exact_image", "near_image", "near_text"):
        planted = [s for s, p in plant.items() if p == kind]
        found = sum(1 for s in planted if kind in kinds.get(s, set()))
        print(f"planted {kind}: {found}/{len(planted)} found with that kind")
    fresh = [s for s, p in plant.items() if p == "clean"]
    print(f"fresh samples flagged: {sum(1 for s in fresh if s in kinds)}/{len(fresh)}")
    print(f"(lake: {lake_root})")


if __name__ == "__main__":
    main()
