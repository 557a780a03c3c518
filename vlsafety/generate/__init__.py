"""Generation agent (vlsafetybencher.txt §3.3; ELITE methods, elite.txt §3.3).

Turns pool samples into candidate image-question pairs whose harm can only be recognized
by reading image and text together (modality dependence, complementarity, conflict),
plus ELITE's flowchart, blueprint, role-playing and fake-news pairs rendered locally.
:func:`run_generate` is the Spark stage; the functions below are its pure core.
"""

from vlsafety.generate._agent import (
    GENERATE_REASONS,
    GenerationAgent,
    GenerationResult,
    generate_for_sample,
)
from vlsafety.generate._keyphrase import KeyPhrase, extract_key_phrase, key_phrase
from vlsafety.generate._options import DEFAULT_METHOD_SCOPE, GenerateOptions
from vlsafety.generate._parse import (
    Description,
    GeneratedQuestion,
    parse_description,
    parse_paraphrase,
    parse_questions,
)
from vlsafety.generate._render import (
    RENDER_VERSION,
    encode_png,
    render_blueprint,
    render_flowchart,
    render_news_card,
    render_persona_card,
    wrap_text,
)
from vlsafety.generate._schema import (
    CANDIDATE_COLUMNS,
    CANDIDATE_SCHEMA,
    ELITE_METHODS,
    HARM_PATTERNS,
    MODALITY_STRATEGIES,
    ORIGINS,
    STRATEGIES,
    STRATEGY_PATTERNS,
    Candidate,
    PoolSample,
    candidate_id_of,
    candidates_to_arrow,
    derive_seed,
)
from vlsafety.generate._stage import run_generate
from vlsafety.generate._templates import (
    ElitePair,
    MissingKeyPhraseError,
    TemplateQuestion,
    elite_pair,
    template_questions,
)

__all__ = [
    "CANDIDATE_COLUMNS",
    "CANDIDATE_SCHEMA",
    "DEFAULT_METHOD_SCOPE",
    "ELITE_METHODS",
    "GENERATE_REASONS",
    "HARM_PATTERNS",
    "MODALITY_STRATEGIES",
    "ORIGINS",
    "RENDER_VERSION",
    "STRATEGIES",
    "STRATEGY_PATTERNS",
    "Candidate",
    "Description",
    "ElitePair",
    "GenerateOptions",
    "GeneratedQuestion",
    "GenerationAgent",
    "GenerationResult",
    "KeyPhrase",
    "MissingKeyPhraseError",
    "PoolSample",
    "TemplateQuestion",
    "candidate_id_of",
    "candidates_to_arrow",
    "derive_seed",
    "elite_pair",
    "encode_png",
    "extract_key_phrase",
    "generate_for_sample",
    "key_phrase",
    "parse_description",
    "parse_paraphrase",
    "parse_questions",
    "render_blueprint",
    "render_flowchart",
    "render_news_card",
    "render_persona_card",
    "run_generate",
    "template_questions",
    "wrap_text",
]
