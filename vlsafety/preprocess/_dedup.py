"""Three-level deduplication of the preprocessing agent (vlsafetybencher.txt §3.2).

1. **exact** — same (normalized) image bytes and the same normalized prompt.
2. **near** — a near-duplicate image *and* a near-duplicate prompt. Images: 64-bit pHash
   within ``near_radius``, found by multi-index hashing (never all pairs), verified by the
   256-bit pHash within ``near_radius_fine``. Prompts: MinHash Jaccard of character
   shingles >= ``prompt_jaccard``; two missing prompts count as equal. The prompt key
   includes the text rendered *in* the image when the source knows it (label
   ``image_text``, e.g. FigStep's instruction): perceptual hashes cannot read, and two
   typographic images that say different things are not duplicates. Text-only samples
   are near-duplicates when their prompts are (MinHash LSH finds the candidates).
3. **semantic** — embedding cosine similarity >= 1 − eps: k-means (faiss), then blocked
   pairwise cosine inside each cluster (NeMo Curator's SemDeDup layout: memory
   O(n·block), never O(n²)).

Each level groups duplicates with union-find and keeps one deterministic representative
per group; every other member records ``duplicate_of`` (the representative) and
``dedup_level``. Samples already in the pool are always kept and preferred as
representatives, so an incremental run never drops what a benchmark may already use.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, TypeVar

import numpy as np

from vlsafety.ingest import hamming

__all__ = [
    "DedupInput",
    "DedupResult",
    "UnionFind",
    "brute_force_hamming_pairs",
    "brute_force_semantic_pairs",
    "deduplicate",
    "deduplicate_semantic",
    "estimate_jaccard",
    "lsh_pairs",
    "minhash_signatures",
    "multi_index_pairs",
    "near_duplicate_pairs",
    "semantic_pairs",
    "shingles",
]


_T = TypeVar("_T")


class UnionFind:
    """Disjoint sets over 0..n-1 with path halving and union by size."""

    def __init__(self, n: int) -> None:
        self.parent = np.arange(n, dtype=np.int64)
        self.size = np.ones(n, dtype=np.int64)

    def find(self, x: int) -> int:
        p = self.parent
        while p[x] != x:
            p[x] = p[p[x]]
            x = int(p[x])
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]

    def groups(self) -> list[list[int]]:
        """Groups with at least two members, each sorted, in order of their first member."""
        roots: dict[int, list[int]] = {}
        for i in range(len(self.parent)):
            roots.setdefault(self.find(i), []).append(i)
        return sorted((g for g in roots.values() if len(g) > 1), key=lambda g: g[0])


# ------------------------------------------------------------------ Hamming search


def _pairs_key(i: np.ndarray, j: np.ndarray, n: int) -> np.ndarray:
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    return lo.astype(np.int64) * n + hi.astype(np.int64)


def _unkey(keys: np.ndarray, n: int) -> np.ndarray:
    return np.stack([keys // n, keys % n], axis=1) if len(keys) else np.zeros((0, 2), np.int64)


def brute_force_hamming_pairs(hashes: np.ndarray, radius: int, block: int = 2048) -> np.ndarray:
    """Reference: all pairs (i < j) within ``radius``, by blocked all-pairs distances."""
    h = np.asarray(hashes, dtype=np.uint64)
    n = len(h)
    out = []
    for s in range(0, n, block):
        d = hamming(h[s : s + block, None], h[None, :])
        ii, jj = np.nonzero(d <= radius)
        ii = ii + s
        keep = ii < jj
        out.append(np.stack([ii[keep], jj[keep]], axis=1))
    if not out:
        return np.zeros((0, 2), np.int64)
    pairs = np.concatenate(out).astype(np.int64)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def _band_layout(n_bands: int) -> list[tuple[int, int]]:
    """(shift, width) of ``n_bands`` contiguous bands covering 64 bits (widths differ by
    at most one)."""
    base, extra = divmod(64, n_bands)
    out, shift = [], 0
    for b in range(n_bands):
        w = base + (1 if b < extra else 0)
        out.append((shift, w))
        shift += w
    return out


def _flip_masks(width: int, max_bits: int) -> np.ndarray:
    masks = [0]
    for k in range(1, max_bits + 1):
        for bits in combinations(range(width), k):
            m = 0
            for b in bits:
                m |= 1 << b
            masks.append(m)
    return np.array(masks, dtype=np.uint64)


def _auto_bands(n: int, radius: int) -> int:
    """Bands minimizing probes + expected candidate checks for uniform hashes.

    With m bands the pigeonhole principle guarantees a pair within ``radius`` agrees to
    within ``radius // m`` bits on some band; m = radius + 1 is the classic exact-match
    split, fewer wider bands probe a small Hamming ball instead (Norouzi et al.'s
    multi-index hashing) and scale better to large pools.
    """
    best, best_cost = radius + 1, math.inf
    for m in range(1, min(64, radius + 1) + 1):
        sub = radius // m
        width = 64 // m
        probes = sum(math.comb(width, k) for k in range(sub + 1))
        if probes > _MAX_PROBES // 4:
            continue
        cost = n * m * probes + n * n * m * probes / float(2**width)
        if cost < best_cost:
            best, best_cost = m, cost
    return best


_CHUNK = 4_000_000  # candidate pairs expanded at once
_MAX_PROBES = 200_000  # flip masks per band; beyond that, use more bands
_TABLE_BITS = 22  # bands up to this wide use a direct bucket table (32 MB of int64)


def multi_index_pairs(hashes: np.ndarray, radius: int, *, bands: int | None = None) -> np.ndarray:
    """All pairs (i < j) of 64-bit hashes within Hamming ``radius`` — exactly the pairs of
    :func:`brute_force_hamming_pairs` — without comparing all pairs.

    Split the hash into ``bands`` bands; by pigeonhole a pair within ``radius`` differs in
    at most ``radius // bands`` bits on at least one band. For each band, look up every
    hash's band value XOR each flip mask of that many bits in the sorted band values
    (binary search), then verify the full distance of the candidates.
    """
    h = np.asarray(hashes, dtype=np.uint64)
    n = len(h)
    if n < 2:
        return np.zeros((0, 2), np.int64)
    if not 0 <= radius < 64:
        raise ValueError(f"radius must be in [0, 63], got {radius}")
    m = bands if bands is not None else _auto_bands(n, radius)
    if not 1 <= m <= 64:
        raise ValueError(f"bands must be in [1, 64], got {m}")
    sub = radius // m
    probes = sum(math.comb(64 // m + 1, k) for k in range(sub + 1))
    if probes > _MAX_PROBES:
        raise ValueError(
            f"bands={m} with radius {radius} needs ~{probes} probes per band; use more bands "
            f"(at least {radius // 3 + 1}) or bands=None to choose automatically"
        )
    found: list[np.ndarray] = []
    for shift, width in _band_layout(m):
        mask = np.uint64((1 << width) - 1)
        vals = (h >> np.uint64(shift)) & mask
        order = np.argsort(vals, kind="stable")
        sorted_vals = vals[order]
        # Bucket table: narrow bands are looked up directly (offset and size of each
        # band value's bucket), wide ones by binary search in the sorted values.
        table = width <= _TABLE_BITS
        if table:
            sizes = np.bincount(vals.astype(np.int64), minlength=1 << width)
            starts = np.cumsum(sizes) - sizes
        for flip in _flip_masks(width, sub):
            query = vals ^ flip
            if table:
                q = query.astype(np.int64)
                lo, counts = starts[q], sizes[q]
            else:
                lo = np.searchsorted(sorted_vals, query, side="left")
                counts = np.searchsorted(sorted_vals, query, side="right") - lo
            if not counts.any():
                continue
            # Expand (query, match) pairs in chunks so a crowded bucket (thousands of
            # images with one band value) cannot blow up memory.
            cum = np.cumsum(counts)
            start = 0
            while start < n:
                base = int(cum[start - 1]) if start else 0
                end = max(start + 1, int(np.searchsorted(cum, base + _CHUNK, side="right")))
                c = counts[start:end]
                total = int(c.sum())
                if total:
                    qi = np.repeat(np.arange(start, end), c)
                    offsets = np.arange(total) - np.repeat(np.cumsum(c) - c, c)
                    cj = order[np.repeat(lo[start:end], c) + offsets]
                    keep = qi < cj
                    qi, cj = qi[keep], cj[keep]
                    close = hamming(h[qi], h[cj]) <= radius
                    if close.any():
                        found.append(_pairs_key(qi[close], cj[close], n))
                start = end
    if not found:
        return np.zeros((0, 2), np.int64)
    return _unkey(np.unique(np.concatenate(found)), n)


# --------------------------------------------------------------------- prompts

_NON_WORD = re.compile(r"[^0-9a-z]+")


def _prompt_key(text: str) -> str:
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_NON_WORD.sub(" ", folded).split())


def shingles(text: str, k: int = 5) -> set[str]:
    """Character k-shingles of the case-folded, punctuation-free text (the whole text
    when shorter than k)."""
    key = _prompt_key(text)
    if len(key) <= k:
        return {key}
    return {key[i : i + k] for i in range(len(key) - k + 1)}


# datasketch's hashing scheme, pinned: signatures from different schemes do not compare.
_MINHASH_SCHEME = "affine32"


def minhash_signatures(
    texts: Sequence[str], *, num_perm: int = 128, shingle_size: int = 5, seed: int = 1
) -> np.ndarray:
    """MinHash signatures (datasketch), shape (n, num_perm) uint64."""
    from datasketch import MinHash

    if not texts:
        return np.zeros((0, num_perm), dtype=np.uint64)
    sets = [[s.encode("utf-8") for s in sorted(shingles(t, shingle_size))] for t in texts]
    hashes = MinHash.bulk(sets, num_perm=num_perm, seed=seed, scheme=_MINHASH_SCHEME)
    return np.stack([np.asarray(m.hashvalues, dtype=np.uint64) for m in hashes])


def estimate_jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """MinHash Jaccard estimate: share of equal signature slots (row-wise)."""
    return np.mean(np.asarray(a) == np.asarray(b), axis=-1)


def lsh_pairs(signatures: np.ndarray, threshold: float, *, seed: int = 1) -> np.ndarray:
    """Candidate pairs (i < j) sharing a MinHash LSH bucket (datasketch MinHashLSH with
    bands tuned for ``threshold``), verified by the estimated Jaccard >= threshold."""
    from datasketch import MinHash, MinHashLSH

    n, num_perm = signatures.shape if signatures.ndim == 2 else (0, 0)
    if n < 2:
        return np.zeros((0, 2), np.int64)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    objs = [
        MinHash(num_perm=num_perm, seed=seed, hashvalues=signatures[i], scheme=_MINHASH_SCHEME)
        for i in range(n)
    ]
    with lsh.insertion_session() as session:
        for i, m in enumerate(objs):
            session.insert(i, m, check_duplication=False)
    keys: list[int] = []
    for i, m in enumerate(objs):
        for j in lsh.query(m):
            if j > i:
                keys.append(i * n + int(j))
    if not keys:
        return np.zeros((0, 2), np.int64)
    pairs = _unkey(np.unique(np.array(keys, dtype=np.int64)), n)
    ok = estimate_jaccard(signatures[pairs[:, 0]], signatures[pairs[:, 1]]) >= threshold
    return pairs[ok]


def near_duplicate_pairs(
    phash: np.ndarray,
    phash_fine: np.ndarray,
    has_image: np.ndarray,
    signatures: np.ndarray,
    has_text: np.ndarray,
    *,
    radius: int,
    radius_fine: int,
    jaccard: float,
    bands: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Near-duplicate sample pairs (i < j) and their 64-bit image distance (-1 for
    text-only pairs). The rule (module docstring): image near (or both absent) and prompt
    near (or both absent)."""
    n = len(has_image)
    img = np.flatnonzero(has_image)
    out_pairs: list[np.ndarray] = []
    out_dist: list[np.ndarray] = []
    if len(img) > 1:
        local = multi_index_pairs(phash[img], radius, bands=bands)
        if len(local):
            a, b = img[local[:, 0]], img[local[:, 1]]
            fine = np.bitwise_count(np.bitwise_xor(phash_fine[a], phash_fine[b])).sum(axis=1)
            ok = fine <= radius_fine
            ta, tb = has_text[a], has_text[b]
            both = ta & tb
            jac = np.zeros(len(a))
            if both.any():
                jac[both] = estimate_jaccard(signatures[a[both]], signatures[b[both]])
            text_ok = np.where(both, jac >= jaccard, ~ta & ~tb)
            ok &= text_ok
            out_pairs.append(np.stack([a[ok], b[ok]], axis=1))
            out_dist.append(hamming(phash[a[ok]], phash[b[ok]]))
    txt = np.flatnonzero(~has_image & has_text)
    if len(txt) > 1:
        local = lsh_pairs(signatures[txt], jaccard)
        if len(local):
            out_pairs.append(np.stack([txt[local[:, 0]], txt[local[:, 1]]], axis=1))
            out_dist.append(np.full(len(local), -1, dtype=np.int64))
    if not out_pairs:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.int64)
    pairs = np.concatenate(out_pairs).astype(np.int64)
    dist = np.concatenate(out_dist).astype(np.int64)
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    del n
    return pairs[order], dist[order]


# -------------------------------------------------------------------- semantic


def _normalize_rows(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any() or not np.isfinite(x).all():
        raise ValueError("embeddings must be finite and non-zero")
    return x / norms


def brute_force_semantic_pairs(embeddings: np.ndarray, eps: float, block: int = 2048) -> np.ndarray:
    """Reference: all pairs (i < j) with cosine similarity >= 1 - eps (blocked)."""
    e = _normalize_rows(embeddings)
    n = len(e)
    out = []
    for s in range(0, n, block):
        sims = e[s : s + block] @ e.T
        ii, jj = np.nonzero(sims >= 1.0 - eps)
        ii = ii + s
        keep = ii < jj
        out.append(np.stack([ii[keep], jj[keep]], axis=1))
    if not out:
        return np.zeros((0, 2), np.int64)
    pairs = np.concatenate(out).astype(np.int64)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


@dataclass
class SemanticResult:
    """Semantic pairs, each point's primary cluster and its distance to that centroid,
    and how many points were denied a cluster by the ``max_assign`` cap (0 means the
    result equals brute force exactly)."""

    pairs: np.ndarray
    similarity: np.ndarray
    cluster: np.ndarray
    centroid_distance: np.ndarray
    capped: int = 0
    n_clusters: int = 1
    timings: dict[str, float] = field(default_factory=dict)


def _pairs_in(
    primary: np.ndarray,
    secondary: np.ndarray,
    z: np.ndarray,
    e: np.ndarray,
    radius2: float,
    thr: float,
    block: int,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Pairs within one cluster: primary × primary (upper triangle) and primary ×
    secondary. Secondary × secondary pairs are skipped: such a pair shares its own
    primary cluster, or one member is a secondary of the other's.

    Candidates have squared distance <= ``radius2`` in the (projected) space ``z``;
    they are verified with the full-dimensional cosine ``e_i · e_j >= thr``.
    """
    keys: list[np.ndarray] = []
    sims: list[np.ndarray] = []
    members = np.concatenate([primary, secondary])
    sub = z[members]
    sq = np.einsum("ij,ij->i", sub, sub)
    m, p = len(members), len(primary)
    block = max(64, min(block, 16_000_000 // max(m, 1)))  # ≤ 64 MB of distances
    limit = radius2 + _DIST_TOL
    for s in range(0, p, block):
        d2 = sq[s : s + block, None] + sq[None, s:] - 2.0 * (sub[s : s + block] @ sub[s:].T)
        ii, jj = np.nonzero(d2 <= limit)
        keep = ii < jj  # drops the diagonal and the lower primary × primary triangle
        if keep.any():
            a, b = members[ii[keep] + s], members[jj[keep] + s]
            cos = np.einsum("ij,ij->i", e[a], e[b])
            ok = cos >= thr
            if ok.any():
                keys.append(_pairs_key(a[ok], b[ok], len(e)))
                sims.append(cos[ok])
    return keys, sims


# Float32 rounding of |x|² + |y|² − 2x·y; candidates are verified exactly afterwards.
_DIST_TOL = 1e-4


def _map_clusters(fn: Callable[[Any], _T], jobs: Sequence[Any]) -> list[_T]:
    """``map(fn, jobs)`` over the clusters, one thread per core with single-threaded BLAS
    when ``threadpoolctl`` is installed: per-cluster matrices are small, and a
    multi-threaded BLAS spends more on synchronizing than on them (measured: 11 vs 85
    GFLOPS for 300×256 @ 256×600 on two cores). Without it: a plain loop."""
    try:
        import threadpoolctl  # noqa: F401 - only its presence matters here
    except ImportError:
        return [fn(j) for j in jobs]
    from concurrent.futures import ThreadPoolExecutor

    workers = max(1, min(len(jobs), os.cpu_count() or 1))
    with _single_threaded_blas(), ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, jobs))


def _projection(e: np.ndarray, dim: int, seed: int, sample: int = 20_000) -> np.ndarray:
    """Top-``dim`` principal directions of ``e`` (rows orthonormal), from a sample.

    An orthogonal projection P never lengthens a vector, so ||Px − Py|| <= ||x − y||:
    every duplicate pair stays within the radius after projecting, and searching the
    cheaper projected space loses nothing once candidates are verified in full.
    """
    rng = np.random.default_rng(seed)
    s = e[rng.choice(len(e), size=min(len(e), sample), replace=False)]
    s = s - s.mean(axis=0)
    _, vecs = np.linalg.eigh((s.T @ s).astype(np.float64))
    return np.ascontiguousarray(vecs[:, -dim:].T, dtype=np.float32)


def _kmeans(
    x: np.ndarray, k: int, *, seed: int, niter: int, points_per_centroid: int
) -> np.ndarray:
    import faiss

    rng = np.random.default_rng(seed)
    n_train = min(len(x), k * points_per_centroid)
    train = x[rng.choice(len(x), size=n_train, replace=False)] if n_train < len(x) else x
    km = faiss.Kmeans(
        x.shape[1],
        k,
        niter=niter,
        seed=seed,
        verbose=False,
        max_points_per_centroid=points_per_centroid,
        min_points_per_centroid=1,
    )
    km.train(np.ascontiguousarray(train))
    assert km.centroids is not None
    return np.asarray(km.centroids, dtype=np.float32)


def _balanced_centroids(
    e: np.ndarray,
    k: int,
    cluster_size: int,
    *,
    seed: int,
    niter: int,
    points_per_centroid: int,
    max_factor: float = 3.0,
    rounds: int = 3,
) -> np.ndarray:
    """k-means centroids, with oversized clusters split by a k-means of their own.

    The pair stage costs Σ (cluster size)², so one giant cluster (k-means trained on a
    sample of a high-dimensional pool produces them) can dominate the run; splitting
    every cluster above ``max_factor × cluster_size`` keeps the cost near n·cluster_size.
    """
    import faiss

    centroids = _kmeans(e, k, seed=seed, niter=niter, points_per_centroid=points_per_centroid)
    # Cluster sizes are estimated on a sample: exact counts would cost a full search of
    # the pool per round, and a factor-3 imbalance shows up in 50K points just as well.
    rng = np.random.default_rng(seed + 7919)
    sample = e[rng.choice(len(e), size=min(len(e), 50_000), replace=False)]
    scale = len(e) / len(sample)
    for r in range(rounds):
        index = faiss.IndexFlatL2(e.shape[1])
        index.add(centroids)
        _, a1 = index.search(sample, 1)
        sizes = np.bincount(a1[:, 0], minlength=len(centroids)) * scale
        big = np.flatnonzero(sizes > max_factor * cluster_size)
        if not len(big):
            break
        parts = [centroids[np.setdiff1d(np.arange(len(centroids)), big)]]
        for c in big:
            members = sample[a1[:, 0] == c]
            ks = min(len(members), int(math.ceil(sizes[c] / cluster_size)))
            parts.append(
                _kmeans(
                    members,
                    ks,
                    seed=seed + 1 + r,
                    niter=niter,
                    points_per_centroid=points_per_centroid,
                )
            )
        centroids = np.concatenate(parts)
    return np.ascontiguousarray(centroids)


def semantic_pairs(
    embeddings: np.ndarray,
    eps: float,
    *,
    cluster_size: int = 400,
    max_assign: int = 2,
    seed: int = 0,
    block: int = 4096,
    niter: int = 8,
    train_points_per_centroid: int = 32,
    project_dim: int | None = 256,
) -> SemanticResult:
    """Pairs (i < j) with cosine similarity >= 1 − ``eps``, by k-means + blocked
    within-cluster cosine.

    Exactness: a duplicate pair (x, y) has ||x − y|| <= r = sqrt(2·eps) on the unit
    sphere. If y's nearest centroid is c₂ and x's is c₁, then
    ||x − c₂|| <= ||y − c₂|| + r <= ||y − c₁|| + r <= ||x − c₁|| + 2r.
    So putting each
    point in every cluster within ``||x − c₁|| + 2r`` makes every duplicate pair share a
    cluster: the result equals :func:`brute_force_semantic_pairs`. ``max_assign`` caps
    the clusters per point to bound the work; ``capped`` counts points the cap cut off
    (where recall may fall short of brute force).

    Speed: BLAS runs single-threaded inside (``threadpoolctl``, when installed): faiss
    already parallelizes with OpenMP, and nested BLAS threads only oversubscribe the
    cores. Clustering and the candidate search run on a PCA projection to
    ``project_dim`` dimensions (a contraction, so the argument above still holds there);
    candidates are verified with the full cosine. Within a cluster only primary members
    are compared with everyone, so a pair is computed about once.
    """
    with _single_threaded_blas():
        return _semantic_pairs(
            embeddings,
            eps,
            cluster_size=cluster_size,
            max_assign=max_assign,
            seed=seed,
            block=block,
            niter=niter,
            train_points_per_centroid=train_points_per_centroid,
            project_dim=project_dim,
        )


def _single_threaded_blas() -> contextlib.AbstractContextManager[Any]:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _semantic_pairs(
    embeddings: np.ndarray,
    eps: float,
    *,
    cluster_size: int,
    max_assign: int,
    seed: int,
    block: int,
    niter: int,
    train_points_per_centroid: int,
    project_dim: int | None,
) -> SemanticResult:
    import time

    import faiss

    t0 = time.perf_counter()
    e = _normalize_rows(embeddings)
    n, d = e.shape
    thr = float(np.float32(1.0 - eps))
    radius2 = 2.0 * eps  # ||x − y||² = 2 − 2·cos on the unit sphere
    k = max(1, int(round(n / cluster_size)))
    timings: dict[str, float] = {}
    z = e
    if project_dim is not None and project_dim < d and n > 2 * cluster_size:
        z = e @ _projection(e, project_dim, seed).T
        timings["project_s"] = time.perf_counter() - t0
    no_sec = np.zeros(0, dtype=np.int64)
    if k == 1 or n < 2 * cluster_size:
        keys, sims = _pairs_in(np.arange(n), no_sec, z, e, radius2, thr, block)
        dist = np.linalg.norm(z - z.mean(axis=0), axis=1)
        cluster = np.zeros(n, dtype=np.int64)
        capped = 0
        k = 1
    else:
        t1 = time.perf_counter()
        centroids = _balanced_centroids(
            z,
            k,
            cluster_size,
            seed=seed,
            niter=niter,
            points_per_centroid=train_points_per_centroid,
        )
        k = len(centroids)
        timings["kmeans_s"] = time.perf_counter() - t1
        t1 = time.perf_counter()
        index = faiss.IndexFlatL2(z.shape[1])
        index.add(centroids)
        want = min(k, max_assign)
        # One extra neighbour tells whether the cap cut off a cluster within the margin.
        sq, assign = index.search(np.ascontiguousarray(z), min(k, want + 1))
        timings["assign_s"] = time.perf_counter() - t1
        t1 = time.perf_counter()
        dist_all = np.sqrt(np.maximum(sq, 0.0))
        margin = 2.0 * math.sqrt(radius2)
        limit = dist_all[:, :1] + margin + 1e-6
        capped = int((dist_all[:, want] <= limit[:, 0]).sum()) if want < k else 0
        dist_all, assign = dist_all[:, :want], assign[:, :want]
        within = dist_all <= limit
        cluster = assign[:, 0].astype(np.int64)
        dist = dist_all[:, 0]
        # columns of ``within`` beyond the first are secondary memberships
        sec_rows, sec_cols = np.nonzero(within[:, 1:])
        sec_cluster = assign[sec_rows, sec_cols + 1]
        prim_order = np.argsort(cluster, kind="stable")
        prim_bounds = np.searchsorted(cluster[prim_order], np.arange(k + 1))
        sec_order = np.argsort(sec_cluster, kind="stable")
        sec_sorted = sec_rows[sec_order]
        sec_bounds = np.searchsorted(sec_cluster[sec_order], np.arange(k + 1))
        sizes = np.diff(prim_bounds).astype(np.float64)
        timings["max_cluster"] = float(sizes.max())
        timings["imbalance"] = float((sizes**2).sum() / (n * n / k))
        jobs = []
        for c in range(k):
            prim = prim_order[prim_bounds[c] : prim_bounds[c + 1]]
            sec = sec_sorted[sec_bounds[c] : sec_bounds[c + 1]]
            if len(prim) and len(prim) + len(sec) > 1:
                jobs.append((prim, sec))
        keys, sims = [], []
        for kk, ss in _map_clusters(
            lambda job: _pairs_in(job[0], job[1], z, e, radius2, thr, block), jobs
        ):
            keys += kk
            sims += ss
        timings["pairs_s"] = time.perf_counter() - t1
    timings["total_s"] = time.perf_counter() - t0
    if keys:
        all_keys = np.concatenate(keys)
        all_sims = np.concatenate(sims)
        uniq, first = np.unique(all_keys, return_index=True)
        pairs, sim = _unkey(uniq, n), all_sims[first]
    else:
        pairs, sim = np.zeros((0, 2), np.int64), np.zeros(0, np.float32)
    return SemanticResult(
        pairs=pairs,
        similarity=sim.astype(np.float32),
        cluster=cluster,
        centroid_distance=np.asarray(dist, dtype=np.float32),
        capped=capped,
        n_clusters=k,
        timings=timings,
    )


# ------------------------------------------------------------------ orchestration


@dataclass
class DedupInput:
    """Per-sample arrays the dedup levels need (n samples, aligned).

    ``image_id``: normalized image id (None: text-only). ``text``: the prompt (None: no
    prompt). ``image_text``: text rendered in the image, if the source says (None).
    ``phash``: uint64; ``phash_fine``: (n, 32) uint8; ``pixels``: width·height (0 for
    text-only). ``existing``: True for samples already in the pool (always kept).
    ``embeddings``: (n, d) sample vectors for the semantic level, or None to skip it.
    """

    sample_id: Sequence[str]
    image_id: Sequence[str | None]
    text: Sequence[str | None]
    image_text: Sequence[str | None]
    phash: np.ndarray
    phash_fine: np.ndarray
    pixels: np.ndarray
    existing: np.ndarray
    embeddings: np.ndarray | None = None


@dataclass
class DedupResult:
    """``duplicate_of[i]``: the representative row ``i`` was merged into at the level
    that dropped it (-1: kept); that representative may itself be dropped by a later
    level (see :attr:`kept_as`). ``level[i]``: that level. ``score[i]``: the pHash
    distance to the representative (near), the cosine similarity (semantic), 0 (exact)."""

    duplicate_of: np.ndarray
    level: list[str | None]
    score: np.ndarray
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def kept(self) -> np.ndarray:
        return self.duplicate_of < 0

    @property
    def kept_as(self) -> np.ndarray:
        """The kept sample each row ends up represented by (itself if kept): follows
        chains such as an exact duplicate of a sample later dropped as a near duplicate."""
        out = np.arange(len(self.duplicate_of))
        for i in range(len(out)):
            j = i
            while self.duplicate_of[j] >= 0:
                j = int(self.duplicate_of[j])
            out[i] = j
        return out


def _apply_groups(
    pairs: np.ndarray,
    alive: np.ndarray,
    rank: np.ndarray,
    result: DedupResult,
    level: str,
    score: Callable[[int, int], float],
) -> None:
    """Union the alive endpoints of ``pairs``; in each group keep the member of smallest
    ``rank`` and mark the others as its duplicates, scored by ``score(member, rep)``."""
    uf = UnionFind(len(alive))
    for a, b in pairs:
        if alive[a] and alive[b]:
            uf.union(int(a), int(b))
    for group in uf.groups():
        rep = min(group, key=lambda i: rank[i])
        for i in group:
            if i != rep and result.duplicate_of[i] < 0:
                result.duplicate_of[i] = rep
                result.level[i] = level
                result.score[i] = score(i, rep)
                alive[i] = False


def deduplicate(
    data: DedupInput,
    *,
    radius: int = 10,
    radius_fine: int = 48,
    jaccard: float = 0.85,
    bands: int | None = None,
    shingle_size: int = 5,
    num_perm: int = 128,
    semantic_eps: float = 0.05,
    cluster_size: int = 400,
    max_assign: int = 2,
    seed: int = 0,
) -> DedupResult:
    """Run the exact, near and (if embeddings are given) semantic levels in turn; each
    level only sees the survivors of the previous ones."""
    n = len(data.sample_id)
    result = DedupResult(
        duplicate_of=np.full(n, -1, dtype=np.int64),
        level=[None] * n,
        score=np.zeros(n, dtype=np.float64),
    )
    if n == 0:
        return result
    existing = np.asarray(data.existing, dtype=bool)
    sid = np.asarray(data.sample_id, dtype=object)
    # Ranks for "keep the best representative": existing pool samples first, then larger
    # images, then the smallest sample id (deterministic, independent of input order).
    by_id = np.argsort(sid, kind="stable")
    id_rank = np.empty(n, dtype=np.int64)
    id_rank[by_id] = np.arange(n)
    pixels = np.asarray(data.pixels, dtype=np.int64)
    near_rank = np.lexsort((id_rank, -pixels, ~existing))
    near_key = np.empty(n, dtype=np.int64)
    near_key[near_rank] = np.arange(n)
    exact_rank = np.lexsort((id_rank, ~existing))
    exact_key = np.empty(n, dtype=np.int64)
    exact_key[exact_rank] = np.arange(n)
    alive = np.ones(n, dtype=bool)

    # 1. exact: same image id and same normalized prompt
    from vlsafety.preprocess._filters import normalize_text

    groups: dict[tuple[str, str | None], list[int]] = {}
    for i in range(n):
        groups.setdefault((data.image_id[i] or "", normalize_text(data.text[i])), []).append(i)
    exact_pairs = [(g[0], j) for g in groups.values() if len(g) > 1 for j in g[1:]]
    _apply_groups(
        np.array(exact_pairs, dtype=np.int64).reshape(-1, 2),
        alive,
        exact_key,
        result,
        "exact",
        lambda i, rep: 0.0,
    )
    result.stats["exact"] = float(sum(1 for lv in result.level if lv == "exact"))

    # 2. near: near image (or none) and near prompt (or none)
    idx = np.flatnonzero(alive)
    if len(idx) > 1:
        has_image = np.array([data.image_id[i] is not None for i in idx.tolist()])
        keys = []
        for i in idx.tolist():
            t, it = data.text[i], data.image_text[i]
            keys.append(None if t is None and it is None else f"{t or ''} || {it or ''}")
        has_text = np.array([k is not None for k in keys])
        sigs = np.zeros((len(idx), num_perm), dtype=np.uint64)
        if has_text.any():
            sigs[has_text] = minhash_signatures(
                [k for k in keys if k is not None], num_perm=num_perm, shingle_size=shingle_size
            )
        local, _dist = near_duplicate_pairs(
            np.asarray(data.phash, dtype=np.uint64)[idx],
            np.asarray(data.phash_fine, dtype=np.uint8)[idx],
            has_image,
            sigs,
            has_text,
            radius=radius,
            radius_fine=radius_fine,
            jaccard=jaccard,
            bands=bands,
        )
        pairs = np.stack([idx[local[:, 0]], idx[local[:, 1]]], axis=1) if len(local) else local
        ph = np.asarray(data.phash, dtype=np.uint64)
        _apply_groups(
            pairs,
            alive,
            near_key,
            result,
            "near",
            lambda i, rep: float(hamming(ph[i], ph[rep])) if data.image_id[i] else 0.0,
        )
    result.stats["near"] = float(sum(1 for lv in result.level if lv == "near"))

    # 3. semantic: cosine >= 1 - eps; representative closest to its k-means centroid
    if data.embeddings is not None:
        idx = np.flatnonzero(alive)
        deduplicate_semantic(
            result,
            idx,
            np.asarray(data.embeddings)[idx],
            existing,
            data.sample_id,
            eps=semantic_eps,
            cluster_size=cluster_size,
            max_assign=max_assign,
            seed=seed,
        )
    return result


def deduplicate_semantic(
    result: DedupResult,
    idx: np.ndarray,
    vectors: np.ndarray,
    existing: np.ndarray,
    sample_id: Sequence[str],
    *,
    eps: float = 0.05,
    cluster_size: int = 400,
    max_assign: int = 2,
    seed: int = 0,
) -> DedupResult:
    """The semantic level over the samples ``idx`` (still kept) with ``vectors``
    (aligned with ``idx``): pairs with cosine >= 1 - eps (:func:`semantic_pairs`),
    grouped; the representative is an existing pool sample if any, else the member
    closest to its k-means centroid, then the smallest sample id. Updates ``result``."""
    idx = np.asarray(idx, dtype=np.int64)
    n = len(result.duplicate_of)
    if len(idx) != len(vectors):
        raise ValueError(f"{len(idx)} indices but {len(vectors)} vectors")
    if len(idx) > 1:
        sem = semantic_pairs(
            vectors, eps, cluster_size=cluster_size, max_assign=max_assign, seed=seed
        )
        sid = np.asarray(sample_id, dtype=object)[idx]
        id_rank = np.empty(len(idx), dtype=np.int64)
        id_rank[np.argsort(sid, kind="stable")] = np.arange(len(idx))
        order = np.lexsort((id_rank, sem.centroid_distance, ~np.asarray(existing)[idx]))
        rank = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
        rank[idx[order]] = np.arange(len(idx))
        pairs = np.stack([idx[sem.pairs[:, 0]], idx[sem.pairs[:, 1]]], axis=1)
        unit = np.zeros((n, vectors.shape[1]), dtype=np.float32)
        unit[idx] = _normalize_rows(vectors)
        alive = np.zeros(n, dtype=bool)
        alive[idx] = result.duplicate_of[idx] < 0
        _apply_groups(
            pairs, alive, rank, result, "semantic", lambda i, rep: float(unit[i] @ unit[rep])
        )
        result.stats["semantic_capped"] = float(sem.capped)
        result.stats["semantic_clusters"] = float(sem.n_clusters)
    result.stats["semantic"] = float(sum(1 for lv in result.level if lv == "semantic"))
    return result
