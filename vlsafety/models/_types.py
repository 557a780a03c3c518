"""Role Protocols (embedder, chat model, guard) and the plain records they exchange."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from vlsafety.models._spec import ModelSpec

__all__ = [
    "ChatMessage",
    "ChatModel",
    "ChatRequest",
    "ChatResult",
    "Embedder",
    "Guard",
    "GuardInput",
    "GuardJudgment",
    "ImageInput",
    "NextTokenScores",
    "SamplingParams",
    "TokenLogprob",
    "messages_from_json",
]

#: An image as raw encoded bytes (PNG, JPEG, ...) or a decoded PIL image.
ImageInput: TypeAlias = "bytes | Image.Image"

_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class ChatMessage:
    """One chat turn. The request's image (if any) belongs to the first user turn."""

    role: str
    content: str

    def __post_init__(self) -> None:
        if self.role not in _ROLES:
            raise ValueError(f"message role must be one of {', '.join(_ROLES)}, got {self.role!r}")
        if not isinstance(self.content, str):
            raise ValueError(f"message content must be a string, got {type(self.content).__name__}")


def messages_from_json(text: str) -> tuple[ChatMessage, ...]:
    """Parse ``[{"role": ..., "content": ...}, ...]`` (the ``messages_json`` column)."""
    try:
        data = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"messages_json is not valid JSON: {exc}") from exc
    if not isinstance(data, list) or not data:
        raise ValueError("messages_json must be a non-empty JSON list of messages")
    out = []
    for i, m in enumerate(data):
        if not isinstance(m, dict) or set(m) != {"role", "content"}:
            raise ValueError(f"messages_json[{i}] must be an object with exactly role and content")
        out.append(ChatMessage(m["role"], m["content"]))
    return tuple(out)


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings. ``logprobs`` = number of top alternatives reported per generated
    token (0: no log-probabilities)."""

    temperature: float = 0.0
    max_tokens: int = 256
    top_p: float = 1.0
    seed: int | None = 0
    logprobs: int = 0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.logprobs <= 20:
            raise ValueError(f"logprobs must be in 0..20, got {self.logprobs}")

    @classmethod
    def from_spec(cls, spec: ModelSpec, **overrides: Any) -> SamplingParams:
        """The spec's default sampling parameters, with ``overrides`` applied."""
        base: dict[str, Any] = {
            "temperature": spec.temperature,
            "max_tokens": spec.max_tokens,
            "top_p": spec.top_p,
            "seed": spec.seed,
        }
        base.update(overrides)
        return cls(**base)


@dataclass(frozen=True)
class ChatRequest:
    """A chat call: messages, an optional image, sampling, optional JSON-schema output.

    ``prompt`` is an already-rendered prompt string that bypasses the chat template
    (backends that only speak the chat protocol reject it).
    """

    messages: tuple[ChatMessage, ...] = ()
    image: Any = None  # ImageInput | None
    sampling: SamplingParams | None = None
    response_schema: Mapping[str, Any] | None = None
    prompt: str | None = None

    def __post_init__(self) -> None:
        if not self.messages and self.prompt is None:
            raise ValueError("a chat request needs messages or a rendered prompt")
        if self.messages and self.prompt is not None:
            raise ValueError("give messages or a rendered prompt, not both")
        if self.messages and not any(m.role == "user" for m in self.messages):
            raise ValueError("a chat request needs at least one user message")


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token, its log-probability and the top alternatives (most likely first)."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"token": self.token, "logprob": self.logprob, "top": [list(t) for t in self.top]}


#: ``ChatResult.finish_reason`` of an answer the backend marked as a refusal (e.g. the
#: ``refusal`` field of an OpenAI-compatible message): ``text`` holds the refusal message.
REFUSAL = "refusal"


@dataclass(frozen=True)
class ChatResult:
    """Outcome of one request: ``text`` or ``error`` (never both None).

    A refusal is an answer, not an error: ``text`` is the refusal message and
    ``finish_reason`` is :data:`REFUSAL`, so a victim's refusal is judged and counted.
    Stages that need content from the model (generation, parsing) treat it as a failure
    (:attr:`refused`).
    """

    text: str | None
    logprobs: tuple[TokenLogprob, ...] | None = None
    error: str | None = None
    finish_reason: str | None = None

    @property
    def refused(self) -> bool:
        """The backend marked this answer as a refusal."""
        return self.finish_reason == REFUSAL

    def logprobs_json(self) -> str | None:
        if self.logprobs is None:
            return None
        return json.dumps([t.to_dict() for t in self.logprobs], ensure_ascii=False)


@dataclass(frozen=True)
class NextTokenScores:
    """Log-probabilities of candidate tokens at the first generated position.

    ``exact`` is True when read from the full distribution (hf); False when read from
    top-k alternatives (vllm, openai), where a candidate outside the top-k gets ``-inf``.
    """

    logprobs: Mapping[str, float] | None
    error: str | None = None
    exact: bool = True


@dataclass(frozen=True)
class GuardInput:
    """What a guard judges: the (image, prompt) sent to a model and the model's response."""

    prompt: str
    response: str
    image: Any = None  # ImageInput | None


@dataclass(frozen=True)
class GuardJudgment:
    """A guard's verdict. ``p_unsafe`` is None exactly when ``parse_error`` or ``error`` is set."""

    p_unsafe: float | None
    raw: str | None = None
    parse_error: str | None = None
    error: str | None = None
    attempts: int = 1
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.p_unsafe is None and self.parse_error is None and self.error is None:
            raise ValueError("a guard judgment without p_unsafe must say why (parse_error/error)")
        if self.p_unsafe is not None and not 0.0 <= self.p_unsafe <= 1.0:
            raise ValueError(f"p_unsafe must lie in [0, 1], got {self.p_unsafe}")


@runtime_checkable
class Embedder(Protocol):
    """Images and texts to L2-normalised float32 vectors in one space (CLIP)."""

    spec: ModelSpec
    dim: int

    def embed_images(self, images: Sequence[Any]) -> np.ndarray: ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_pairs(self, images: Sequence[Any], texts: Sequence[str]) -> np.ndarray: ...


@runtime_checkable
class ChatModel(Protocol):
    """Image + messages to text; optionally token log-probabilities."""

    spec: ModelSpec

    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResult]: ...

    def next_token_logprobs(
        self, requests: Sequence[ChatRequest], candidates: Sequence[str]
    ) -> list[NextTokenScores]: ...


@runtime_checkable
class Guard(Protocol):
    """(image, prompt, response) to P(unsafe) in [0, 1]."""

    spec: ModelSpec

    @property
    def prompt_version(self) -> str:
        """Version of the prompt the guard builds (part of every cache key)."""
        ...

    def judge(self, items: Sequence[GuardInput]) -> list[GuardJudgment]: ...
