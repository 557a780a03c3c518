"""``load_model(spec)``: the one place that maps a spec to a backend object."""

from __future__ import annotations

from typing import Any

from vlsafety.models._spec import ModelSpec
from vlsafety.models._types import ChatModel, Embedder, Guard

__all__ = ["load_chat_model", "load_embedder", "load_guard", "load_model"]


def _chat_backend(spec: ModelSpec) -> Any:
    if spec.backend == "hf":
        from vlsafety.models._hf import HFChatModel

        return HFChatModel(spec)
    if spec.backend == "vllm":
        from vlsafety.models._vllm import VLLMChatModel

        return VLLMChatModel(spec)
    if spec.backend == "openai":
        from vlsafety.models._openai import OpenAIChatModel

        return OpenAIChatModel(spec)
    raise ValueError(f"{spec.id}: backend {spec.backend!r} is not a chat backend")


def _require_role(spec: ModelSpec, role: str) -> None:
    if spec.role != role:
        raise ValueError(f"model {spec.id!r} is declared as a {spec.role}, not a {role}")


def load_embedder(spec: ModelSpec) -> Embedder:
    """The embedder for ``spec`` (role ``embedder``)."""
    _require_role(spec, "embedder")
    from vlsafety.models._open_clip import OpenClipEmbedder

    return OpenClipEmbedder(spec)


def load_chat_model(spec: ModelSpec) -> ChatModel:
    """The chat model for ``spec`` (role ``chat``)."""
    _require_role(spec, "chat")
    model: ChatModel = _chat_backend(spec)
    return model


def load_guard(spec: ModelSpec) -> Guard:
    """The guard for ``spec`` (role ``guard``), in its ``guard_style``."""
    _require_role(spec, "guard")
    from vlsafety.models import _guards

    if spec.guard_style == "refusal":
        return _guards.RefusalGuard(spec)
    if spec.guard_style == "classifier":
        from vlsafety.models._hf import HFSequenceClassifierGuard

        return HFSequenceClassifierGuard(spec)
    if spec.guard_style == "llama_guard":
        return _guards.LlamaGuardGuard(_chat_backend(spec), spec)
    if spec.guard_style == "guard_reasoner":
        return _guards.GuardReasonerGuard(_chat_backend(spec), spec)
    raise ValueError(f"{spec.id}: unknown guard_style {spec.guard_style!r}")  # pragma: no cover


def load_model(spec: ModelSpec) -> Embedder | ChatModel | Guard:
    """The object implementing ``spec.role``'s Protocol (:class:`Embedder`,
    :class:`ChatModel` or :class:`Guard`)."""
    if spec.role == "embedder":
        return load_embedder(spec)
    if spec.role == "chat":
        return load_chat_model(spec)
    return load_guard(spec)
