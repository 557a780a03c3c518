"""Executor-side dedup (``_spark_dedup``) against the single-process reference
(``deduplicate``, ``near_duplicate_pairs``, ``brute_force_semantic_pairs``).

Synthetic pools with planted exact, near and semantic duplicates: the planted groups
must come out exactly as the reference finds them (recall 1.0), and on 20K samples the
executor pairs must recover >= 99 % of the brute-force pairs with no false pair.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlsafety.preprocess import (
    DedupInput,
    PreprocessOptions,
    UnionFind,
    brute_force_hamming_pairs,
    brute_force_semantic_pairs,
    deduplicate,
    minhash_signatures,
)
from vlsafety.preprocess._spark_dedup import (
    NearRule,
    band_keys,
    exact_level,
    near_pairs,
    phash_bands,
    resolve_groups,
    semantic_pairs_spark,
    vectors_numpy,
)
from vlsafety.preprocess._stage import _keys

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
]


def flip_bits(h: int, k: int, rng: np.random.Generator, width: int = 64) -> int:
    for b in rng.choice(width, size=k, replace=False).tolist():
        h ^= 1 << int(b)
    return h


def synthetic_pool(n: int, seed: int, *, near_share: float = 0.1) -> dict[str, Any]:
    """n distinct samples (random pHash, random 12-word prompts), then planted copies:
    exact copies and near copies (pHash within 0..10 bits, fine hash within 0..40 bits,
    prompt with one word swapped or a trailing word added — Jaccard mostly above 0.85,
    sometimes below), plus some text-only and image-only samples."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for i in range(n):
        kind = rng.random()
        has_img, has_txt = kind > 0.05, kind < 0.97
        rows.append(
            {
                "image_id": f"img{i:06d}" if has_img else None,
                "text": " ".join(rng.choice(WORDS, size=12)) + f" number {i}" if has_txt else None,
                "phash": int(rng.integers(0, 2**63)) if has_img else 0,
                "fine": rng.integers(0, 256, size=32, dtype=np.uint8),
                "pixels": int(rng.integers(1000, 5000)),
            }
        )
    base = list(range(n))
    for src in rng.choice(base, size=int(n * near_share), replace=False).tolist():
        r = rows[src]
        copy = dict(r)
        if rng.random() < 0.3:  # exact: same image, same prompt (up to case)
            copy["text"] = r["text"].upper() if r["text"] else None
        else:
            if r["image_id"] is not None:
                copy["image_id"] = r["image_id"] + "-copy"
                copy["phash"] = flip_bits(r["phash"], int(rng.integers(0, 11)), rng)
                fine = r["fine"].copy()
                for b in rng.choice(256, size=int(rng.integers(0, 41)), replace=False).tolist():
                    fine[b // 8] ^= np.uint8(1 << (b % 8))
                copy["fine"] = fine
            if r["text"] is not None:
                words = r["text"].split()
                if rng.random() < 0.5:
                    words[int(rng.integers(0, 12))] = str(rng.choice(WORDS))
                else:
                    words.append("please")
                copy["text"] = " ".join(words)
            copy["pixels"] = int(rng.integers(1000, 5000))
        rows.append(copy)
    order = rng.permutation(len(rows))
    rows = [rows[i] for i in order]
    for i, r in enumerate(rows):
        r["sample_id"] = f"s{i:06d}"
    return {"rows": rows}


def reference(rows: list[dict[str, Any]], opts: PreprocessOptions) -> dict[str, tuple[str, str]]:
    data = DedupInput(
        sample_id=[r["sample_id"] for r in rows],
        image_id=[r["image_id"] for r in rows],
        text=[r["text"] for r in rows],
        image_text=[None] * len(rows),
        phash=np.array([r["phash"] for r in rows], dtype=np.uint64),
        phash_fine=np.stack([r["fine"] for r in rows]),
        pixels=np.array([r["pixels"] if r["image_id"] else 0 for r in rows]),
        existing=np.zeros(len(rows), dtype=bool),
    )
    res = deduplicate(
        data,
        radius=opts.near_radius,
        radius_fine=opts.near_radius_fine,
        jaccard=opts.prompt_jaccard,
    )
    return {
        rows[i]["sample_id"]: (rows[int(res.duplicate_of[i])]["sample_id"], str(res.level[i]))
        for i in np.flatnonzero(res.duplicate_of >= 0).tolist()
    }


def units_df(spark: SparkSession, rows: list[dict[str, Any]], opts: PreprocessOptions) -> DataFrame:
    """The executor path's input, keys computed by the stage's own ``_keys``."""
    from pyspark.sql import functions as F

    phash = np.array([r["phash"] for r in rows], dtype=np.uint64)
    keys = _keys(
        [r["image_id"] for r in rows],
        [r["text"] for r in rows],
        [None] * len(rows),
        phash,
        np.ones(len(rows), dtype=bool),
        opts,
    )
    table = pa.table(
        {
            "sample_id": [r["sample_id"] for r in rows],
            "phash": pa.array(phash.view(np.int64)),
            "phash_fine": pa.array([r["fine"].tobytes() for r in rows], pa.binary()),
            "pixels": pa.array([r["pixels"] if r["image_id"] else 0 for r in rows], pa.int64()),
            "existing": pa.array([False] * len(rows)),
            **keys,
        }
    )
    return spark.createDataFrame(table).withColumn("uid", F.xxhash64("sample_id"))


def executor_path(
    spark: SparkSession, rows: list[dict[str, Any]], opts: PreprocessOptions
) -> dict[str, tuple[str, str]]:
    from pyspark.sql import functions as F

    alive, exact = exact_level(units_df(spark, rows, opts))
    out = {r["sample_id"]: (r["duplicate_of"], "exact") for r in exact.collect()}
    alive = alive.cache()
    rule = NearRule(opts.near_radius, opts.near_radius_fine, opts.prompt_jaccard)
    pairs = near_pairs(alive, rule, 4)
    nodes = alive.select("uid", "sample_id", "existing", "pixels").toArrow()
    uid = nodes.column("uid").to_numpy()
    sid = np.asarray(nodes.column("sample_id").to_pylist(), dtype=object)
    pixels = nodes.column("pixels").to_numpy()
    rank = np.empty(len(uid), dtype=np.int64)
    rank[np.lexsort((sid, -pixels))] = np.arange(len(uid))
    dropped, reps = resolve_groups(
        pairs.column("a").to_numpy(),
        pairs.column("b").to_numpy(),
        uid,
        rank,
        np.ones(len(uid), dtype=bool),
    )
    of = dict(zip(uid.tolist(), sid.tolist(), strict=True))
    out.update(
        {of[d]: (of[r], "near") for d, r in zip(dropped.tolist(), reps.tolist(), strict=True)}
    )
    alive.unpersist()
    del F
    return out


def test_planted_duplicates_match_the_reference(spark: SparkSession) -> None:
    opts = PreprocessOptions()
    rows = synthetic_pool(1500, seed=3)["rows"]
    want = reference(rows, opts)
    got = executor_path(spark, rows, opts)
    assert {k for k, v in want.items() if v[1] == "exact"} == {
        k for k, v in got.items() if v[1] == "exact"
    }
    assert len(want) > 100
    assert got == want


def brute_force_near_pairs(
    rows: list[dict[str, Any]], sigs: np.ndarray, has_text: np.ndarray, opts: PreprocessOptions
) -> np.ndarray:
    """The near rule over all pairs: images by blocked all-pairs Hamming distance, then
    fine hash and prompt Jaccard; text-only samples by all-pairs Jaccard."""
    phash = np.array([r["phash"] for r in rows], dtype=np.uint64)
    fine = np.stack([r["fine"] for r in rows])
    has_image = np.array([r["image_id"] is not None for r in rows])
    img = np.flatnonzero(has_image)
    local = brute_force_hamming_pairs(phash[img], opts.near_radius)
    a, b = img[local[:, 0]], img[local[:, 1]]
    ok = np.bitwise_count(fine[a] ^ fine[b]).sum(axis=1) <= opts.near_radius_fine
    both = has_text[a] & has_text[b]
    jac = np.mean(sigs[a] == sigs[b], axis=1)
    ok &= np.where(both, jac >= opts.prompt_jaccard, ~has_text[a] & ~has_text[b])
    out = [np.stack([a[ok], b[ok]], axis=1)]
    txt = np.flatnonzero(~has_image & has_text)
    ii, jj = np.triu_indices(len(txt), 1)
    jac = np.mean(sigs[txt[ii]] == sigs[txt[jj]], axis=1)
    keep = jac >= opts.prompt_jaccard
    out.append(np.stack([txt[ii[keep]], txt[jj[keep]]], axis=1))
    return np.concatenate(out)


def test_near_pairs_recall_against_brute_force_on_20k(spark: SparkSession) -> None:
    opts = PreprocessOptions()
    rows = synthetic_pool(18_000, seed=11, near_share=0.12)["rows"]
    assert len(rows) >= 20_000
    texts = [r["text"] for r in rows]
    has_text = np.array([t is not None for t in texts])
    sigs = np.zeros((len(rows), opts.minhash_perms), dtype=np.uint64)
    sigs[has_text] = minhash_signatures(
        [f"{t} || " for t in texts if t is not None], num_perm=opts.minhash_perms
    )
    truth_pairs = brute_force_near_pairs(rows, sigs, has_text, opts)
    sid = [r["sample_id"] for r in rows]
    truth = {tuple(sorted((sid[a], sid[b]))) for a, b in truth_pairs.tolist()}
    units = units_df(spark, rows, opts)
    rule = NearRule(opts.near_radius, opts.near_radius_fine, opts.prompt_jaccard)
    pairs = near_pairs(units, rule, 4)
    of = dict(
        zip(
            units.select("uid").toArrow().column("uid").to_pylist(),
            [r["sample_id"] for r in units.select("sample_id").collect()],
            strict=True,
        )
    )
    found = {
        tuple(sorted((of[a], of[b])))
        for a, b in zip(pairs.column("a").to_pylist(), pairs.column("b").to_pylist(), strict=True)
    }
    assert len(truth) > 1000
    assert found <= truth  # every pair is verified by the full rule
    assert len(found & truth) / len(truth) >= 0.99


def clustered_vectors(n: int, d: int, seed: int) -> tuple[np.ndarray, int]:
    """Points around 40 centres plus planted near-copies (cosine > 0.99)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, d))
    x = centres[rng.integers(0, 40, size=n)] + rng.normal(scale=0.6, size=(n, d))
    n_copies = n // 20
    src = rng.choice(n, size=n_copies, replace=False)
    copies = x[src] + rng.normal(scale=0.02, size=(n_copies, d)) * np.linalg.norm(
        x[src], axis=1, keepdims=True
    ) / np.sqrt(d)
    return np.concatenate([x, copies]).astype(np.float32), n_copies


def test_semantic_pairs_recall_against_brute_force_on_20k(spark: SparkSession) -> None:
    vecs, n_copies = clustered_vectors(19_000, 48, seed=5)
    eps = 0.01
    truth = {tuple(p) for p in brute_force_semantic_pairs(vecs, eps).tolist()}
    uid = np.arange(len(vecs), dtype=np.int64) * 7 + 3
    offsets = pa.array(np.arange(len(vecs) + 1, dtype=np.int32) * vecs.shape[1])
    table = pa.table(
        {"uid": pa.array(uid), "vec": pa.ListArray.from_arrays(offsets, pa.array(vecs.ravel()))}
    )
    df = spark.createDataFrame(table)
    pairs, nodes, stats = semantic_pairs_spark(
        df, eps=eps, cluster_size=400, max_assign=3, seed=0, partitions=4
    )
    index = {int(u): i for i, u in enumerate(uid.tolist())}
    found = {
        tuple(sorted((index[a], index[b])))
        for a, b in zip(pairs.column("a").to_pylist(), pairs.column("b").to_pylist(), strict=True)
    }
    assert stats["semantic_clusters"] > 10
    assert len(truth) >= n_copies
    assert found <= truth
    assert len(found & truth) / len(truth) >= 0.99
    assert set(nodes.column("uid").to_pylist()) == {
        u for p in found for u in (uid[p[0]], uid[p[1]])
    }


def test_vectors_numpy_reads_the_arrow_buffers() -> None:
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    arr = pa.ListArray.from_arrays(pa.array([0, 3, 6, 9, 12], pa.int32()), pa.array(x.ravel()))
    got = vectors_numpy(pa.table({"v": arr}).slice(1, 2), "v")
    assert got.flags["C_CONTIGUOUS"] and got.dtype == np.float32
    np.testing.assert_array_equal(got, x[1:3])
    ragged = pa.array([[1.0, 2.0], [1.0]], pa.list_(pa.float32()))
    with pytest.raises(ValueError, match="different lengths"):
        vectors_numpy(pa.table({"v": ragged}), "v")


@settings(max_examples=200, deadline=None)
@given(h=st.integers(0, 2**64 - 1), radius=st.integers(0, 20), data=st.data())
def test_phash_bands_pigeonhole(h: int, radius: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(0, radius))
    bits = data.draw(st.lists(st.integers(0, 63), min_size=k, max_size=k, unique=True))
    g = h
    for b in bits:
        g ^= 1 << b
    bands = phash_bands(np.array([h, g], dtype=np.uint64), radius)
    assert (bands[0] == bands[1]).any()


def test_band_keys_agree_exactly_on_equal_bands() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2**32, size=(1, 128), dtype=np.uint64)
    b = a.copy()
    b[0, 5] += np.uint64(1)  # band 0 (slots 0..7) differs, the rest agree
    ka, kb = band_keys(a, 16), band_keys(b, 16)
    assert ka[0, 0] != kb[0, 0] and (ka[0, 1:] == kb[0, 1:]).all()


@settings(max_examples=60, deadline=None)
@given(
    edges=st.lists(st.tuples(st.integers(0, 29), st.integers(0, 29)), max_size=40),
    seed=st.integers(0, 1000),
)
def test_resolve_groups_equals_union_find(edges: list[tuple[int, int]], seed: int) -> None:
    edges = [(a, b) for a, b in edges if a != b]
    rng = np.random.default_rng(seed)
    uid = rng.permutation(1000)[:30].astype(np.int64)
    rank = rng.permutation(30)
    new = rng.random(30) < 0.7
    ends = sorted({x for e in edges for x in e})
    sel = np.array(ends, dtype=np.int64)
    a = uid[[e[0] for e in edges]] if edges else np.zeros(0, np.int64)
    b = uid[[e[1] for e in edges]] if edges else np.zeros(0, np.int64)
    dropped, reps = (
        resolve_groups(a, b, uid[sel], rank[sel], new[sel])
        if len(sel)
        else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    )
    uf = UnionFind(30)
    for x, y in edges:
        uf.union(x, y)
    want = {}
    for g in uf.groups():
        rep = min(g, key=lambda i: rank[i])
        want.update({int(uid[i]): int(uid[rep]) for i in g if i != rep and new[i]})
    assert dict(zip(dropped.tolist(), reps.tolist(), strict=True)) == want


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 7), min_size=1, max_size=12),
    budget=st.integers(1, 40),
    seed=st.integers(0, 2**16),
)
def test_near_partition_verifies_every_pair_of_every_group_in_any_chunking(
    sizes: list[int], budget: int, seed: int
) -> None:
    """The vectorized partition verifier equals a plain loop over the pairs of each group,
    whatever the pair budget cuts the partition into."""
    import vlsafety.preprocess._spark_dedup as sd

    rng = np.random.default_rng(seed)
    n = sum(sizes)
    group = np.repeat(np.arange(len(sizes)), sizes)
    # near-ish hashes inside a group so that some pairs pass and some fail
    base = rng.integers(0, 2**63, size=len(sizes), dtype=np.int64)[group].view(np.uint64)
    flips = rng.integers(0, 64, size=(n, 3))
    phash = base ^ np.bitwise_or.reduce(np.uint64(1) << flips.astype(np.uint64), axis=1)
    fine = rng.integers(0, 256, size=(len(sizes), 32), dtype=np.uint8)[group]
    sigs = rng.integers(0, 3, size=(n, 16), dtype=np.uint64)
    has_image = rng.random(n) < 0.7
    has_text = rng.random(n) < 0.7
    t = pa.table(
        {
            "uid": pa.array(rng.permutation(10 * n)[:n].astype(np.int64)),
            "has_image": pa.array(has_image),
            "band": pa.array(np.zeros(n, np.int32)),
            "key": pa.array(group.astype(np.int64)),
            "has_text": pa.array(has_text),
            "phash": pa.array(phash.view(np.int64)),
            "phash_fine": pa.array([r.tobytes() for r in fine], pa.binary()),
            "minhash": pa.array(
                [r.tobytes() if ht else None for r, ht in zip(sigs, has_text, strict=True)],
                pa.binary(),
            ),
        }
    )
    rule = NearRule(radius=3, radius_fine=256, jaccard=0.3)
    # the reference: every pair inside each group, one at a time
    want = set()
    uid = t.column("uid").to_numpy()
    for i in range(n):
        for j in range(i + 1, n):
            if group[i] != group[j] or has_image[i] != has_image[j]:
                continue
            if has_image[i] and int(np.bitwise_count(phash[i] ^ phash[j])) > rule.radius:
                continue
            if has_text[i] and has_text[j]:
                if np.mean(sigs[i] == sigs[j]) < rule.jaccard:
                    continue
            elif has_text[i] != has_text[j]:
                continue
            want.add((min(uid[i], uid[j]), max(uid[i], uid[j])))
    # rows sorted by (has_image, band, key) as the Spark side sorts them
    order = np.lexsort((group, has_image.astype(int)))
    t = t.take(pa.array(order))
    old = sd._PAIR_BUDGET
    sd._PAIR_BUDGET = budget
    try:
        got = {
            (int(a), int(b))
            for batch in sd._near_partition(iter(t.to_batches(max_chunksize=5)), rule)
            for a, b in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True)
        }
    finally:
        sd._PAIR_BUDGET = old
    assert got == want
