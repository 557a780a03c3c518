"""Preprocessing options (a light module: no Spark, no torch)."""

from __future__ import annotations

from dataclasses import dataclass

from vlsafety.ingest import DEFAULT_MAX_PIXELS, INTENTS

__all__ = ["PreprocessOptions"]


@dataclass(frozen=True)
class PreprocessOptions:
    """Thresholds of the preprocessing agent (vlsafetybencher.txt §3.2).

    Filters:
        keep_intents: which source intents enter the pool (``harmful``, ``benign``,
            ``unknown``: the raw_pool ``intent`` column, from the source's own safe/benign
            marker). The rest are rejected as ``intent_filtered``. Default: harmful and
            unknown, so a source's benign controls never mix into the pool silently.
        short_prompt_max: prompts of at most this many characters are dropped (paper: 24).
        max_text_chars: longer prompts are dropped as ``oversized_text``.
        min_side: images whose shorter side is below this are ``low_resolution``.
        max_pixels: images above this pixel count are ``decompression_bomb`` (never decoded).
    Dedup:
        near_radius: Hamming radius on the 64-bit pHash for near-duplicate candidates.
        near_radius_fine: radius on the 256-bit pHash that verifies a candidate pair.
        mih_bands: bands of the multi-index hash (None: chosen from the pool size).
        prompt_jaccard: MinHash Jaccard (character shingles) at which prompts are near-dups.
        near_bands: MinHash bands whose keys group candidate near pairs on executors (a
            pair is a candidate when one band of ``minhash_perms // near_bands`` slots
            agrees; more bands: higher recall, more candidates to verify).
        shingle_size, minhash_perms: shingle length and MinHash permutations.
        semantic_eps: semantic duplicates have cosine similarity >= 1 - eps.
        semantic_cluster_size: target k-means cluster size (k = n / this).
        semantic_max_assign: clusters a vector may join (its nearest ones within the
            pigeonhole margin), so near-boundary duplicates still meet.
    Categorization:
        taxonomy: taxonomy name or YAML path.
        clip_logit_scale: CLIP's logit scale for zero-shot softmax (100 for OpenAI CLIP).
        trust_untrained: let untrained (random-weight) models vote and dedup (tests only).
    Execution:
        embed_batch_size, partitions, seed.
    """

    keep_intents: tuple[str, ...] = ("harmful", "unknown")
    short_prompt_max: int = 24
    max_text_chars: int = 4000
    min_side: int = 64
    max_pixels: int = DEFAULT_MAX_PIXELS
    near_radius: int = 10
    near_radius_fine: int = 48
    mih_bands: int | None = None
    prompt_jaccard: float = 0.85
    near_bands: int = 16
    shingle_size: int = 5
    minhash_perms: int = 128
    semantic_eps: float = 0.05
    semantic_cluster_size: int = 400
    semantic_max_assign: int = 2
    taxonomy: str = "vlsb"
    clip_logit_scale: float = 100.0
    trust_untrained: bool = False
    embed_batch_size: int = 64
    partitions: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.keep_intents, str) or not self.keep_intents:
            raise ValueError(
                "PreprocessOptions.keep_intents: give a non-empty list of "
                f"{', '.join(INTENTS)}, got {self.keep_intents!r}"
            )
        bad = [i for i in self.keep_intents if i not in INTENTS]
        if bad:
            raise ValueError(
                f"PreprocessOptions.keep_intents: unknown intent(s) {bad}; "
                f"known: {', '.join(INTENTS)}"
            )
        object.__setattr__(self, "keep_intents", tuple(self.keep_intents))
        positive = (
            "max_text_chars",
            "min_side",
            "max_pixels",
            "shingle_size",
            "minhash_perms",
            "near_bands",
            "semantic_cluster_size",
            "semantic_max_assign",
            "embed_batch_size",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(
                    f"PreprocessOptions.{name}: must be a positive integer, got {value!r}"
                )
        if self.short_prompt_max < 0:
            raise ValueError("PreprocessOptions.short_prompt_max: must be >= 0")
        if self.short_prompt_max >= self.max_text_chars:
            raise ValueError(
                "PreprocessOptions: short_prompt_max must be below max_text_chars "
                f"({self.short_prompt_max} >= {self.max_text_chars})"
            )
        if not 0 <= self.near_radius < 64:
            raise ValueError(
                f"PreprocessOptions.near_radius: must be in [0, 63], got {self.near_radius}"
            )
        if not 0 <= self.near_radius_fine < 256:
            raise ValueError(
                "PreprocessOptions.near_radius_fine: must be in [0, 255], "
                f"got {self.near_radius_fine}"
            )
        if self.near_bands > self.minhash_perms:
            raise ValueError(
                f"PreprocessOptions.near_bands: at most minhash_perms ({self.minhash_perms}), "
                f"got {self.near_bands}"
            )
        if self.mih_bands is not None and not 1 <= self.mih_bands <= 64:
            raise ValueError(
                f"PreprocessOptions.mih_bands: must be in [1, 64], got {self.mih_bands}"
            )
        if not 0.0 < self.prompt_jaccard <= 1.0:
            raise ValueError(
                f"PreprocessOptions.prompt_jaccard: must be in (0, 1], got {self.prompt_jaccard}"
            )
        if not 0.0 <= self.semantic_eps < 1.0:
            raise ValueError(
                f"PreprocessOptions.semantic_eps: must be in [0, 1), got {self.semantic_eps}"
            )
        if self.clip_logit_scale <= 0:
            raise ValueError("PreprocessOptions.clip_logit_scale: must be positive")
        if self.partitions is not None and self.partitions <= 0:
            raise ValueError("PreprocessOptions.partitions: must be positive")
