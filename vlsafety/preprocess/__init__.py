"""The preprocessing agent (vlsafetybencher.txt §3.2): filters, three-level dedup and
categorization of the raw pool into ``pool``.

:func:`run_preprocess` runs the stage on Spark; the pieces are pure functions over
arrays and callables, testable without models: :func:`check_image` / :func:`check_text`
(filters), :func:`deduplicate` with :func:`multi_index_pairs` (pHash), MinHash prompts
and :func:`semantic_pairs` (k-means + blocked cosine), and the categorization votes
(:func:`zero_shot_probs`, :func:`parse_verifier_answer`, :func:`combine_votes`).
"""

from vlsafety.preprocess._categorize import (
    VOTER_PRIORITY,
    VerifierRequest,
    Votes,
    class_embeddings,
    combine_votes,
    is_untrained,
    parse_verifier_answer,
    verifier_prompt,
    verifier_votes,
    zero_shot_probs,
)
from vlsafety.preprocess._dedup import (
    DedupInput,
    DedupResult,
    SemanticResult,
    UnionFind,
    brute_force_hamming_pairs,
    brute_force_semantic_pairs,
    deduplicate,
    deduplicate_semantic,
    estimate_jaccard,
    lsh_pairs,
    minhash_signatures,
    multi_index_pairs,
    near_duplicate_pairs,
    semantic_pairs,
    shingles,
)
from vlsafety.preprocess._filters import (
    PREPROCESS_REASONS,
    ImageCheck,
    check_image,
    check_text,
    fine_hash,
    normalize_text,
)
from vlsafety.preprocess._options import PreprocessOptions
from vlsafety.preprocess._spark_dedup import (
    SemanticPlan,
    assign_clusters,
    band_keys,
    fixed_binary,
    phash_multi_bands,
    semantic_plan,
)
from vlsafety.preprocess._stage import POOL_SCHEMA, check_batch, run_preprocess, validate_samples

__all__ = [
    "POOL_SCHEMA",
    "PREPROCESS_REASONS",
    "VOTER_PRIORITY",
    "DedupInput",
    "DedupResult",
    "ImageCheck",
    "PreprocessOptions",
    "SemanticPlan",
    "SemanticResult",
    "UnionFind",
    "assign_clusters",
    "band_keys",
    "VerifierRequest",
    "Votes",
    "brute_force_hamming_pairs",
    "brute_force_semantic_pairs",
    "check_batch",
    "check_image",
    "check_text",
    "class_embeddings",
    "combine_votes",
    "deduplicate",
    "deduplicate_semantic",
    "estimate_jaccard",
    "fine_hash",
    "fixed_binary",
    "is_untrained",
    "lsh_pairs",
    "minhash_signatures",
    "multi_index_pairs",
    "near_duplicate_pairs",
    "normalize_text",
    "parse_verifier_answer",
    "phash_multi_bands",
    "run_preprocess",
    "semantic_pairs",
    "semantic_plan",
    "shingles",
    "validate_samples",
    "verifier_prompt",
    "verifier_votes",
    "zero_shot_probs",
]
