"""Dedup building blocks against brute force, and the level rules."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlsafety.preprocess import (
    DedupInput,
    UnionFind,
    brute_force_hamming_pairs,
    brute_force_semantic_pairs,
    deduplicate,
    estimate_jaccard,
    lsh_pairs,
    minhash_signatures,
    multi_index_pairs,
    semantic_pairs,
    shingles,
)


def clustered_hashes(rng: np.random.Generator, n: int, n_centers: int, flips: int) -> np.ndarray:
    """Hashes around a few centers (like near-duplicate images) plus uniform ones."""
    centers = rng.integers(0, 2**63, size=n_centers, dtype=np.uint64) * np.uint64(2)
    out = rng.integers(0, 2**63, size=n, dtype=np.uint64) * np.uint64(2) + rng.integers(
        0, 2, n
    ).astype(np.uint64)
    for i in range(n):
        if rng.random() < 0.6:
            h = int(centers[rng.integers(n_centers)])
            for b in rng.choice(64, size=int(rng.integers(0, flips + 1)), replace=False):
                h ^= 1 << int(b)
            out[i] = np.uint64(h)
    return out


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 120),
    radius=st.integers(0, 16),
    bands=st.one_of(st.none(), st.integers(1, 12)),
)
def test_multi_index_equals_brute_force(seed: int, n: int, radius: int, bands: int | None) -> None:
    rng = np.random.default_rng(seed)
    h = clustered_hashes(rng, n, n_centers=4, flips=12)
    try:
        fast = multi_index_pairs(h, radius, bands=bands)
    except ValueError as exc:  # too few bands for the radius: refused, never slow
        assert "use more bands" in str(exc)
        assert bands is not None and radius // bands >= 4
        return
    ref = brute_force_hamming_pairs(h, radius)
    assert np.array_equal(fast, ref)


def test_multi_index_handles_a_crowded_bucket() -> None:
    h = np.full(1200, 0xDEADBEEF, dtype=np.uint64)
    h[::2] ^= np.uint64(1)
    pairs = multi_index_pairs(h, 1)
    assert len(pairs) == 1200 * 1199 // 2


def test_semantic_pairs_equal_brute_force_when_uncapped() -> None:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(30, 64))
    x = centers[rng.integers(0, 30, 3000)] + 0.6 * rng.normal(size=(3000, 64))
    dup_of = rng.integers(0, 3000, 400)
    x = np.concatenate([x, x[dup_of] + 0.02 * rng.normal(size=(400, 64))]).astype(np.float32)
    eps = 0.01
    res = semantic_pairs(x, eps, cluster_size=200, max_assign=64, seed=0)
    assert res.n_clusters > 1 and res.capped == 0
    ref = brute_force_semantic_pairs(x, eps)
    # float32 dot products may differ in the last bit between blockings: compare away from
    # the threshold and require the rest to agree
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims_ref = np.einsum("ij,ij->i", unit[ref[:, 0]], unit[ref[:, 1]])
    solid = {tuple(p) for p, s in zip(ref.tolist(), sims_ref, strict=True) if s >= 1 - eps + 1e-5}
    got = {tuple(p) for p in res.pairs.tolist()}
    assert solid <= got <= {tuple(p) for p in ref.tolist()}
    assert len(solid) >= 400


def test_semantic_cap_is_reported() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 16)).astype(np.float32)  # no structure: many close centroids
    res = semantic_pairs(x, 0.2, cluster_size=50, max_assign=1, seed=0)
    assert res.capped > 0


def test_union_find_groups() -> None:
    uf = UnionFind(6)
    for a, b in [(0, 1), (1, 2), (4, 5)]:
        uf.union(a, b)
    assert uf.groups() == [[0, 1, 2], [4, 5]]


def test_shingles_ignore_case_and_punctuation() -> None:
    assert shingles("Hello, World!", 5) == shingles("hello world", 5)
    assert shingles("ab", 5) == {"ab"}


def test_minhash_estimates_jaccard() -> None:
    texts = [
        "Describe how the person in the image could protect their privacy online.",
        "Please, describe how the person in the image could protect their privacy online!",
        "What is the boiling point of water at sea level in degrees Celsius?",
    ]
    sig = minhash_signatures(texts, num_perm=256)
    sets = [shingles(t) for t in texts]
    for i, j in [(0, 1), (0, 2)]:
        exact = len(sets[i] & sets[j]) / len(sets[i] | sets[j])
        assert abs(float(estimate_jaccard(sig[i], sig[j])) - exact) < 0.1


def test_lsh_finds_near_duplicate_prompts() -> None:
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(300)]
    base = [" ".join(rng.choice(words, 45)) for _ in range(200)]
    near = [b.replace(b.split()[3], "changed", 1) for b in base[:50]]
    texts = base + near
    sig = minhash_signatures(texts)
    pairs = {tuple(p) for p in lsh_pairs(sig, 0.7).tolist()}
    sets = [shingles(t) for t in texts]
    exact = [len(sets[i] & sets[200 + i]) / len(sets[i] | sets[200 + i]) for i in range(50)]
    assert min(exact) > 0.85  # one word changed: well above the 0.7 threshold
    planted = {(i, 200 + i) for i in range(50)}
    assert planted <= pairs
    assert all(j - i == 200 for i, j in pairs)  # no random base pair is that similar


# ---------------------------------------------------------------------- rules


def rows(*specs: tuple[str, str | None, str | None, int]) -> DedupInput:
    """(sample_id, image_id, text, phash) rows; fine hash = phash repeated."""
    n = len(specs)
    phash = np.array([s[3] for s in specs], dtype=np.uint64)
    fine = np.repeat(phash.view(np.uint8).reshape(n, 8), 4, axis=1)
    return DedupInput(
        sample_id=[s[0] for s in specs],
        image_id=[s[1] for s in specs],
        text=[s[2] for s in specs],
        image_text=[None] * n,
        phash=phash,
        phash_fine=fine,
        pixels=np.full(n, 100),
        existing=np.zeros(n, dtype=bool),
    )


P = "Describe how the person in the image could protect their privacy online."
FAR = 0xFFFF_FFFF_FFFF_0000  # 48 bits away from small hashes


def test_exact_duplicates_keep_the_smallest_id() -> None:
    d = rows(("b", "img1", P, 5), ("a", "img1", "  " + P.upper(), 5), ("c", "img2", P, FAR))
    r = deduplicate(d)
    assert r.duplicate_of.tolist() == [1, -1, -1]
    assert r.level == ["exact", None, None]


def test_near_needs_both_image_and_prompt() -> None:
    near_p = "Please, " + P.lower()
    far_p = "What is the capital city shown on the map in this picture?"
    d = rows(
        ("a", "img1", P, 0b1111),
        ("b", "img2", near_p, 0b1110),  # near image + near prompt → duplicate
        ("c", "img3", far_p, 0b1100),  # near image, different prompt → kept
        ("d", "img4", P, 0xFFFF_0000_FFFF_0000),  # same prompt, different image → kept
    )
    r = deduplicate(d)
    assert r.level == [None, "near", None, None]
    assert r.duplicate_of[1] == 0 and r.score[1] == 1.0


def test_image_text_separates_typographic_images() -> None:
    d = rows(("a", "img1", P, 7), ("b", "img2", P, 7))
    assert deduplicate(d).level == [None, "near"]
    d.image_text = ["Steps to report a stolen bicycle", "Polite replies to rude comments"]
    assert deduplicate(d).level == [None, None]


def test_fine_hash_verifies_candidates() -> None:
    d = rows(("a", "img1", P, 7), ("b", "img2", P, 7))
    d.phash_fine[1] = ~d.phash_fine[1]
    assert deduplicate(d).level == [None, None]


def test_text_only_near_duplicates() -> None:
    d = rows(
        ("a", None, P, 0),
        ("b", None, P.replace("online", "on the internet"), 0),
        ("c", None, "x" * 40, 0),
    )
    r = deduplicate(d, jaccard=0.7)
    assert r.level == [None, "near", None]


def test_existing_pool_samples_are_kept_as_representatives() -> None:
    d = rows(("a", "img1", P, 7), ("z", "img2", P, 7))
    d.existing = np.array([False, True])
    r = deduplicate(d)
    assert r.duplicate_of.tolist() == [1, -1]


def test_near_representative_prefers_the_larger_image() -> None:
    d = rows(("a", "img1", P, 7), ("b", "img2", P, 7))
    d.pixels = np.array([100, 400])
    assert deduplicate(d).duplicate_of.tolist() == [1, -1]


def test_semantic_level_representative_is_closest_to_centroid() -> None:
    d = rows(
        ("a", "i1", "first prompt long enough here", 1),
        ("b", "i2", "another quite different prompt", FAR),
        ("c", "i3", "a third unrelated prompt text", 0x0F0F_0F0F_0F0F_0F0F),
    )
    v = np.array([[1.0, 0.0, 0.0], [0.999, 0.04, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    d.embeddings = v
    r = deduplicate(d, semantic_eps=0.01)
    assert r.level.count("semantic") == 1
    assert r.score[r.duplicate_of >= 0][0] > 0.99


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 1000))
def test_kept_set_does_not_depend_on_input_order(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 30
    specs = []
    for i in range(n):
        img = f"img{rng.integers(0, 8)}"
        text = [P, "Please " + P, "A completely different question about the weather today."][
            rng.integers(0, 3)
        ]
        specs.append((f"s{i:02d}", img, text, int(rng.integers(0, 4))))
    perm = rng.permutation(n)
    a = deduplicate(rows(*specs))
    b = deduplicate(rows(*[specs[i] for i in perm]))
    kept_a = {specs[i][0] for i in range(n) if a.duplicate_of[i] < 0}
    kept_b = {specs[perm[i]][0] for i in range(n) if b.duplicate_of[i] < 0}
    assert kept_a == kept_b
    # every dropped sample ends at a kept one, through a chain of earlier representatives
    kept_as = a.kept_as
    assert all(a.duplicate_of[kept_as[i]] < 0 for i in range(n))
    assert all(kept_as[i] == i for i in range(n) if a.duplicate_of[i] < 0)


def test_dedup_input_length_mismatch() -> None:
    with pytest.raises(ValueError, match="indices but"):
        from vlsafety.preprocess import deduplicate_semantic

        r = deduplicate(rows(("a", "i", P, 1)))
        deduplicate_semantic(r, np.array([0]), np.zeros((2, 3)), np.array([False]), ["a"])
