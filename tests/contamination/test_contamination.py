"""The contamination check on real benchmark subsets (``../shared/realbench``, read in
place) with planted near-copies: exact image copies, re-encoded and resized images,
lightly edited texts and (controlled) embedding neighbours of public records are found
with the right kind; fresh samples are not flagged; and the Spark joins find every pair
that a brute-force comparison of all pairs finds.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.ingest.realbench import data_dir
from vlsafety.contamination import (
    CONTAMINATION_SCHEMA,
    KINDS,
    ContaminationOptions,
    NoSourcesError,
    contaminated_samples,
    format_summary,
    ingested_sources,
    latest_check,
    run_contamination,
)
from vlsafety.ingest import IngestOptions, SourceRecord, iter_source, run_ingest
from vlsafety.preprocess import minhash_signatures, phash_multi_bands

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from vlsafety.lake import Lake

PUBLIC = {"figstep": "figstep", "vlguard": "vlguard-github-data"}
DIM = 32
OPTS = ContaminationOptions(partitions=2, semantic_cluster_size=40)
#: the same thresholds as config keys (the command reads them from ``preprocess.*``)
SETTINGS = ("preprocess.partitions=2", "preprocess.semantic_cluster_size=40")


def _blob(seed: int, size: tuple[int, int] = (96, 80)) -> bytes:
    """A random-blob PNG: different seeds give unrelated images (pHash ~32 bits apart)."""
    rng = np.random.default_rng(seed)
    small = (rng.random((6, 6, 3)) * 255).astype(np.uint8)
    im = Image.fromarray(small, "RGB").resize(size, Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _reencoded(data: bytes) -> bytes:
    """The image resized to 80 % and saved as JPEG (quality 75)."""
    im = Image.open(io.BytesIO(data)).convert("RGB")
    im = im.resize((int(im.width * 0.8), int(im.height * 0.8)), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=75)
    return buf.getvalue()


def _fresh_text(i: int) -> str:
    rng = np.random.default_rng(1000 + i)
    words = ["orchard", "violin", "glacier", "lantern", "pepper", "harbor", "quartz", "meadow"]
    return f"Sample {i}: " + " ".join(rng.choice(words, size=9).tolist()) + f" ({i * 7919})"


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, DIM))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def _public_records() -> dict[str, list[SourceRecord]]:
    """The records the adapters list (driver-side, no Spark), to plant copies of."""
    out: dict[str, list[SourceRecord]] = {}
    for kind, rel in PUBLIC.items():
        items = iter_source(f"{kind}:{data_dir() / rel}")
        out[kind] = sorted(
            (r for r in items if isinstance(r, SourceRecord)), key=lambda r: r.source_ref
        )
    return out


def _file(rec: SourceRecord) -> bytes:
    assert rec.image is not None and rec.image.uri is not None
    return Path(rec.image.uri).read_bytes()


@pytest.fixture(scope="module")
def world(
    spark: SparkSession,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    from vlsafety import cli
    from vlsafety.lake import Lake

    root = tmp_path_factory.mktemp("contamination")
    lake = Lake(root / "lake", spark)
    public = _public_records()
    figstep = public["figstep"]
    vlguard = [r for r in public["vlguard"] if len(r.text or "") >= 60]
    # the planted benchmark: (file bytes, suffix, text, expected kind, public record)
    plants: list[tuple[bytes, str, str, str | None, SourceRecord | None]] = []
    for i, r in enumerate(figstep[:3]):
        plants.append((_file(r), "png", _fresh_text(i), "exact_image", r))
    for i, r in enumerate(figstep[3:6]):
        plants.append((_reencoded(_file(r)), "jpg", _fresh_text(10 + i), "near_image", r))
    for i, r in enumerate(vlguard[:3]):
        text = (r.text or "").rstrip("?.") + ", please?"
        plants.append((_blob(100 + i), "png", text, "near_text", r))
    for i, r in enumerate(vlguard[3:5]):
        plants.append((_blob(200 + i), "png", _fresh_text(20 + i), "semantic", r))
    for i in range(12):
        plants.append((_blob(300 + i), "png", _fresh_text(30 + i), None, None))
    folder = root / "planted"
    folder.mkdir()
    lines = []
    for i, (data, suffix, text, kind, of) in enumerate(plants):
        (folder / f"{i:02d}.{suffix}").write_bytes(data)
        ref = f"{of.source}|{of.source_ref}" if of else ""
        lines.append(
            {"image": f"{i:02d}.{suffix}", "text": text, "plant": kind or "clean", "of": ref}
        )
    manifest = folder / "bench.jsonl"
    manifest.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    specs = [f"{k}:{data_dir() / rel}" for k, rel in PUBLIC.items()]
    run_ingest(spark, lake, [*specs, f"manifest:{manifest}"], IngestOptions(partitions=2))

    raw = lake.read_arrow("raw_pool", columns=["sample_id", "source", "source_ref"])
    recs = raw.filter(pc.field("source") != "manifest").sort_by("sample_id").to_pylist()
    id_of = {f"{r['source']}|{r['source_ref']}": r["sample_id"] for r in recs}
    # public records' joint embeddings (the pool preprocess would write), controlled
    pub_vec = _unit(np.random.default_rng(7), len(recs))
    pool = pa.table(
        {
            "sample_id": [r["sample_id"] for r in recs],
            "source": [r["source"] for r in recs],
            "category": ["toxicity"] * len(recs),
            "joint_embedding": pa.array(list(pub_vec), pa.list_(pa.float32())),
            "embedder_untrained": [False] * len(recs),
        }
    )
    lake.write(pool, "pool", "overwrite", keys=["sample_id"])
    vec_of = {r["sample_id"]: pub_vec[i] for i, r in enumerate(recs)}

    mine = lake.read_arrow("raw_pool").filter(pc.equal(pc.field("source"), "manifest"))
    mine = mine.sort_by("source_ref").to_pylist()
    assert len(mine) == len(plants)
    emb = _unit(np.random.default_rng(11), len(mine))
    expected: dict[str, tuple[str | None, str | None]] = {}
    for i, row in enumerate(mine):
        labels = dict(row["labels"])
        kind = None if labels["plant"] == "clean" else labels["plant"]
        of = id_of[labels["of"]] if labels["of"] else None
        expected[row["sample_id"]] = (kind, of)
        if kind == "semantic":
            near = vec_of[of] + 0.03 * emb[i]
            emb[i] = near / np.linalg.norm(near)
    bench = pa.table(
        {
            "candidate_id": [r["sample_id"] for r in mine],
            "image_id": [r["image_id"] for r in mine],
            "text": [r["text"] for r in mine],
            "category": ["x"] * len(mine),
            "embedding": pa.array(list(emb), pa.list_(pa.float32())),
        }
    )
    lake.write(bench, "bench", "overwrite", keys=["candidate_id"])
    # the check as the command runs it: one MLflow run, the summary as JSON
    uri = f"sqlite:///{root}/mlflow.db"
    sets = [f"lake.root={lake.root}", f"tracking.uri={uri}", *SETTINGS]
    argv = [x for kv in sets for x in ("--set", kv)]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = cli.main([*argv, "contamination", "--benchmark", "bench@0", "--json"])
    assert rc == 0
    summary = json.loads(out.getvalue())
    rows = lake.read_arrow("contamination").filter(
        pc.equal(pc.field("check_id"), summary["check_id"])
    )
    return {
        "lake": lake,
        "summary": summary,
        "settings": sets,
        "tracking_uri": uri,
        "rows": rows.to_pylist(),
        "expected": expected,
        "bench": bench,
        "vec_of": vec_of,
        "source_of": {r["sample_id"]: r["source"] for r in recs},
    }


def test_sources_are_remembered_by_kind_and_path(world: dict[str, Any]) -> None:
    lake: Lake = world["lake"]
    got = ingested_sources(lake)
    assert set(got) == {"figstep", "vlguard", "manifest"}
    assert got["vlguard"] == [str((data_dir() / "vlguard-github-data").resolve())]
    assert world["summary"]["against"] == ["figstep", "vlguard"]  # manifest is own data


def test_planted_copies_are_found_with_their_kind(world: dict[str, Any]) -> None:
    found = {(r["sample_id"], r["kind"]): r for r in world["rows"]}
    for sid, (kind, of) in world["expected"].items():
        if kind is None:
            continue
        assert (sid, kind) in found, (kind, of)
        row = found[(sid, kind)]
        assert row["source"] == world["source_of"][of]
        if kind != "near_image":  # re-encoded figstep images may match a sibling as well
            assert row["record_id"] == of
        if kind == "exact_image":
            assert row["similarity"] == 1.0
    # the kinds a plant was not made for stay quiet (fresh text, fresh image, random vector)
    for sid, (kind, _) in world["expected"].items():
        kinds = {k for (s, k) in found if s == sid}
        if kind == "exact_image":
            # an identical image is also within the pHash radius of the source's siblings
            assert kinds <= {"exact_image", "near_image"}
        elif kind is not None:
            assert kinds == {kind}


def test_the_table_has_its_declared_schema(world: dict[str, Any]) -> None:
    lake: Lake = world["lake"]
    assert lake.schema("contamination").names == CONTAMINATION_SCHEMA.names
    assert lake.keys("contamination") == ["check_id", "sample_id", "source", "kind"]
    assert {r["level"] for r in world["rows"]} == {"exact", "near", "semantic"}


def test_clean_samples_are_not_flagged(world: dict[str, Any]) -> None:
    flagged = {r["sample_id"] for r in world["rows"]}
    clean = {s for s, (kind, _) in world["expected"].items() if kind is None}
    assert len(clean) == 12
    assert not flagged & clean


def test_summary_shares(world: dict[str, Any]) -> None:
    s = world["summary"]
    n = len(world["expected"])
    assert s["samples"] == n
    planted = {k: sum(1 for kk, _ in world["expected"].values() if kk == k) for k in KINDS}
    vl = s["sources"]["vlguard"]
    assert vl["kinds"]["near_text"]["samples"] == planted["near_text"]
    assert vl["kinds"]["semantic"]["samples"] == planted["semantic"]
    assert s["sources"]["figstep"]["kinds"]["exact_image"]["samples"] == planted["exact_image"]
    assert s["any"]["contaminated"] == n - 12
    assert s["any"]["share"] == pytest.approx((n - 12) / n)
    assert s["sources"]["figstep"]["records"] == 50 and vl["records"] == 73
    text = format_summary(s)
    assert "vlguard" in text and "figstep" in text and "any" in text
    assert latest_check(world["lake"], "bench", 0)["check_id"] == s["check_id"]


def test_command_logs_to_mlflow_and_the_report_shows_it(world: dict[str, Any]) -> None:
    """``vlsafety contamination`` is one MLflow run with the shares as metrics (and the
    summary as an artifact); the report of the version shows the check."""
    from mlflow.tracking import MlflowClient

    from vlsafety.config import load_config
    from vlsafety.pipeline._report import report_data

    summary = world["summary"]
    client = MlflowClient(tracking_uri=world["tracking_uri"])
    metrics = client.get_run(summary["run_id"]).data.metrics
    n = len(world["expected"])
    assert metrics["contamination.any.share"] == pytest.approx((n - 12) / n)
    assert metrics["contamination.vlguard.near_text.share"] == pytest.approx(3 / n)
    artifacts = [a.path for a in client.list_artifacts(summary["run_id"])]
    assert "contamination_summary.json" in artifacts
    cfg = load_config(None, [*world["settings"], "tracking.enabled=false"])
    data = report_data(cfg, world["lake"], "bench", 0, None)
    assert data.contamination is not None
    assert data.contamination["check_id"] == summary["check_id"]
    assert data.contamination_matches is not None
    assert set(data.contamination_matches["kind"]) == set(KINDS)
    # the check id hashes what decides the matches: the same check from the API
    assert ContaminationOptions.from_preprocess(cfg.preprocess) == OPTS


def test_one_reason_per_contaminated_sample(world: dict[str, Any]) -> None:
    worst = contaminated_samples(world["lake"], world["summary"]["check_id"]).to_pylist()
    assert len(worst) == len({r["sample_id"] for r in world["rows"]})
    for r in worst:
        kind, _ = world["expected"][r["sample_id"]]
        assert r["kind"] == kind  # the planted kind is each sample's strongest


def test_against_an_unknown_source(spark: SparkSession, world: dict[str, Any]) -> None:
    with pytest.raises(NoSourcesError, match="not an ingested source"):
        run_contamination(spark, world["lake"], "bench", 0, against=["mm-safetybench"])


def _brute_force(world: dict[str, Any]) -> set[tuple[str, str, str]]:
    """Every (sample, source, kind) with a matching record, from all pairs (numpy)."""
    lake: Lake = world["lake"]
    images = lake.read_arrow("images", columns=["image_id", "phash", "phash_fine"]).to_pylist()
    ph = {r["image_id"]: (r["phash"], r["phash_fine"]) for r in images}
    raw = lake.read_arrow("raw_pool", columns=["sample_id", "image_id", "text", "source"])
    pub = [r for r in raw.to_pylist() if r["source"] in PUBLIC]
    bench = world["bench"].to_pylist()

    def hashes(rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        h = np.array([ph[r["image_id"]][0] for r in rows], dtype=np.int64).view(np.uint64)
        f = np.frombuffer(b"".join(ph[r["image_id"]][1] for r in rows), np.uint8)
        return h, f.reshape(len(rows), 32)

    qh, qf = hashes(bench)
    rh, rf = hashes(pub)
    dist = np.bitwise_count(qh[:, None] ^ rh[None, :])
    fine = np.bitwise_count(qf[:, None, :] ^ rf[None, :, :]).sum(axis=2)
    same = np.array([[q["image_id"] == r["image_id"] for r in pub] for q in bench])
    near_img = ~same & (dist <= OPTS.near_radius) & (fine <= OPTS.near_radius_fine)
    qs = minhash_signatures([q["text"] for q in bench], num_perm=OPTS.minhash_perms)
    rs = minhash_signatures([r["text"] for r in pub], num_perm=OPTS.minhash_perms)
    jac = (qs[:, None, :] == rs[None, :, :]).mean(axis=2)
    qv = np.stack(
        [np.asarray(v, np.float32) for v in world["bench"].column("embedding").to_pylist()]
    )
    rv = np.stack([world["vec_of"][r["sample_id"]] for r in pub])
    cos = qv @ rv.T
    out = set()
    for kind, hit in (
        ("exact_image", same),
        ("near_image", near_img),
        ("near_text", jac >= OPTS.text_jaccard),
        ("semantic", cos >= np.float32(1 - OPTS.semantic_eps)),
    ):
        for i, j in zip(*np.nonzero(hit), strict=True):
            out.add((bench[i]["candidate_id"], pub[j]["source"], kind))
    return out


def test_recall_and_precision_against_brute_force(world: dict[str, Any]) -> None:
    truth = _brute_force(world)
    got = {(r["sample_id"], r["source"], r["kind"]) for r in world["rows"]}
    assert truth, "the planted copies must match by the rules themselves"
    assert got == truth


def test_build_leaves_contaminated_samples_out(world: dict[str, Any]) -> None:
    """``select.exclude_contaminated``: a contaminated scored sample is filtered before
    selection with a ``contaminated:<source>`` reject, and the stage's counts balance."""
    from vlsafety.config import load_config
    from vlsafety.pipeline._build import Models, _Build
    from vlsafety.pipeline._runner import run_stage
    from vlsafety.taxonomy import load_taxonomy

    lake: Lake = world["lake"]
    bench: pa.Table = world["bench"]
    n = bench.num_rows
    names = load_taxonomy("vlsb").names
    scored = bench.set_column(
        bench.schema.get_field_index("category"),
        "category",
        pa.array([names[i % len(names)] for i in range(n)]),
    )
    scored = scored.append_column("p_h", pa.array(np.linspace(0.1, 0.9, n)))
    scored = scored.append_column("harm", pa.array(np.full(n, 0.5)))
    lake.write(scored, "scored", "overwrite", keys=["candidate_id"])
    cfg = load_config(
        None,
        [
            f"lake.root={lake.root}",
            "tracking.enabled=false",
            "select.exclude_contaminated=true",
            "select.n_max=100",
            "build.benchmark_table=selected",
            "preprocess.partitions=2",
        ],
    )
    result = run_stage("select", _Build(cfg, lake, Models(specs={})).select, cfg=cfg, lake=lake)
    expected = world["expected"]
    clean = {s for s, (kind, _) in expected.items() if kind is None}
    source_of = {s: world["source_of"][of] for s, (_, of) in expected.items() if of}
    assert (result.rows_in, result.rows_out, result.filtered) == (n, len(clean), n - len(clean))
    assert result.extra["contaminated"] == n - len(clean)
    assert set(lake.read_arrow("selected").column("candidate_id").to_pylist()) == clean
    rejects = lake.read_arrow("rejects").filter(pc.field("stage") == "select").to_pylist()
    assert {r["sample_id"]: r["reason"] for r in rejects} == {
        s: f"contaminated:{src}" for s, src in source_of.items()
    }


@settings(max_examples=200, deadline=None)
@given(
    h=st.integers(0, 2**64 - 1),
    radius=st.integers(0, 16),
    flips=st.integers(0, 2),
    data=st.data(),
)
def test_multi_index_bands_find_every_hash_within_the_radius(
    h: int, radius: int, flips: int, data: st.DataObject
) -> None:
    """Pigeonhole: a hash within ``radius`` bits of an indexed one shares a band key with
    it once the query side flips up to ``flips`` bits per band."""
    bits = data.draw(st.lists(st.integers(0, 63), max_size=radius, unique=True))
    other = h
    for b in bits:
        other ^= 1 << b
    band_i, key_i = phash_multi_bands(np.array([h], np.uint64), radius, flips, query=False)
    band_q, key_q = phash_multi_bands(np.array([other], np.uint64), radius, flips, query=True)
    indexed = set(zip(band_i.tolist(), key_i[0].tolist(), strict=True))
    assert indexed & set(zip(band_q.tolist(), key_q[0].tolist(), strict=True))


def test_exclude_contaminated_is_off_by_default_and_a_boolean() -> None:
    from vlsafety.config import ConfigError, SelectConfig, load_config

    assert load_config(None).select.exclude_contaminated is False
    assert load_config(None, ["select.exclude_contaminated=true"]).select.exclude_contaminated
    with pytest.raises(ConfigError, match="select.exclude_contaminated: must be true or false"):
        SelectConfig(exclude_contaminated="yes")  # type: ignore[arg-type]
