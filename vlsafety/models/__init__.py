"""Model roles and backends.

Roles are Protocols: :class:`Embedder` (CLIP), :class:`ChatModel` (generator, victim,
rubric judge) and :class:`Guard` (P(unsafe)). Backends (``open_clip``, ``hf``, ``vllm``,
``openai``, ``refusal``) live side by side behind them; a :class:`ModelSpec` from
``conf/models/*.yaml`` says which, and :func:`load_model` builds it.
``vlsafety.models.tiny.make_tiny`` creates random-weight test models offline.
"""

from vlsafety.models._guards import (
    DEFAULT_REFUSAL_PHRASES,
    GuardReasonerGuard,
    LlamaGuardGuard,
    RefusalGuard,
    p_unsafe_from_logprobs,
    parse_guard_reasoner,
)
from vlsafety.models._images import ImageDecodeError, to_data_url, to_pil
from vlsafety.models._loader import load_chat_model, load_embedder, load_guard, load_model
from vlsafety.models._open_clip import joint_embedding, l2_normalize
from vlsafety.models._parse import ParsedAnswer, generate_parsed
from vlsafety.models._spec import (
    BACKENDS,
    GUARD_STYLES,
    ROLES,
    ModelSpec,
    Resources,
    canonical_json,
    load_model_specs,
    resolve_panel,
)
from vlsafety.models._types import (
    REFUSAL,
    ChatMessage,
    ChatModel,
    ChatRequest,
    ChatResult,
    Embedder,
    Guard,
    GuardInput,
    GuardJudgment,
    ImageInput,
    NextTokenScores,
    SamplingParams,
    TokenLogprob,
    messages_from_json,
)

__all__ = [
    "BACKENDS",
    "DEFAULT_REFUSAL_PHRASES",
    "GUARD_STYLES",
    "REFUSAL",
    "ROLES",
    "ChatMessage",
    "ChatModel",
    "ChatRequest",
    "ChatResult",
    "Embedder",
    "Guard",
    "GuardInput",
    "GuardJudgment",
    "GuardReasonerGuard",
    "ImageDecodeError",
    "ImageInput",
    "LlamaGuardGuard",
    "ModelSpec",
    "NextTokenScores",
    "ParsedAnswer",
    "RefusalGuard",
    "Resources",
    "SamplingParams",
    "TokenLogprob",
    "canonical_json",
    "generate_parsed",
    "joint_embedding",
    "l2_normalize",
    "load_chat_model",
    "load_embedder",
    "load_guard",
    "load_model",
    "load_model_specs",
    "messages_from_json",
    "p_unsafe_from_logprobs",
    "parse_guard_reasoner",
    "resolve_panel",
    "to_data_url",
    "to_pil",
]
