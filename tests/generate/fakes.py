"""A scripted chat model: a test double at the ChatModel Protocol seam."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from vlsafety.models import ChatRequest, ChatResult, ModelSpec, NextTokenScores


def fake_spec(model_id: str = "fake-generator", *, untrained: bool = False) -> ModelSpec:
    return ModelSpec(
        id=model_id,
        role="chat",
        backend="openai",
        endpoint="http://127.0.0.1:9/v1",
        model_name="fake",
        untrained=untrained,
    )


class ScriptedChat:
    """Answers each request with ``script(request, call_number)``; a returned exception
    becomes a ``ChatResult`` error. Records every request it saw."""

    def __init__(
        self,
        script: Callable[[ChatRequest, int], str | Exception],
        spec: ModelSpec | None = None,
    ) -> None:
        self.spec = spec or fake_spec()
        self.script = script
        self.requests: list[ChatRequest] = []
        self.calls = 0

    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        self.calls += 1
        out = []
        for req in requests:
            self.requests.append(req)
            answer = self.script(req, len(self.requests))
            if isinstance(answer, Exception):
                out.append(ChatResult(None, error=str(answer)))
            else:
                out.append(ChatResult(answer))
        return out

    def next_token_logprobs(
        self, requests: Sequence[ChatRequest], candidates: Sequence[str]
    ) -> list[NextTokenScores]:
        raise NotImplementedError


def prompt_of(req: ChatRequest) -> str:
    return req.messages[-1].content
