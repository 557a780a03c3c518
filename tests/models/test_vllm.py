"""vLLM backend at its seams: stand-ins shaped like vllm.LLM, SamplingParams, RequestOutput."""

from __future__ import annotations

import io
import math
import sys
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image

from vlsafety.models import (
    ChatMessage,
    ChatRequest,
    GuardInput,
    LlamaGuardGuard,
    ModelSpec,
    Resources,
    SamplingParams,
    load_chat_model,
)
from vlsafety.models._vllm import VLLMChatModel, build_chat_messages, parse_request_output

VOCAB = {"safe": 11, "unsafe": 12, "hello": 13, " world": 14, "0": 20, "1": 21}
INV = {v: k for k, v in VOCAB.items()}


@dataclass
class Logprob:  # vllm.sequence.Logprob
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    text: str
    token_ids: list[int]
    logprobs: list[dict[int, Logprob]] | None = None
    finish_reason: str | None = "stop"


@dataclass
class RequestOutput:
    outputs: list[CompletionOutput]


class FakeSamplingParams:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


@dataclass
class StructuredOutputsParams:
    json: Any = None


@dataclass
class GuidedDecodingParams:
    json: Any = None


class FakeTokenizer:
    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [VOCAB[text]] if text in VOCAB else [1, 2]


def table(**lps: float) -> dict[int, Logprob]:
    ranked = sorted(lps.items(), key=lambda kv: -kv[1])
    return {VOCAB[t]: Logprob(lp, i + 1, t) for i, (t, lp) in enumerate(ranked)}


@dataclass
class FakeLLM:
    kwargs: dict[str, Any] = field(default_factory=dict)
    calls: list[tuple[str, Any, Any]] = field(default_factory=list)

    def get_tokenizer(self) -> FakeTokenizer:
        return FakeTokenizer()

    def _answer(self, params: FakeSamplingParams, text_in: str) -> RequestOutput:
        if "boom" in text_in:
            raise RuntimeError("engine rejected the prompt")
        k = params.kwargs.get("logprobs")
        if params.kwargs["max_tokens"] == 1:
            tables = [table(safe=-0.2, unsafe=-1.9, hello=-3.0)] if k else None
            return RequestOutput([CompletionOutput("safe", [VOCAB["safe"]], tables)])
        tables = (
            [table(hello=-0.1, safe=-2.0), table(**{" world": -0.3, "unsafe": -1.5})] if k else None
        )
        return RequestOutput([CompletionOutput("hello world", [13, 14], tables, "length")])

    def chat(
        self, messages: list[list[dict[str, Any]]], sampling_params: list[Any], use_tqdm: bool
    ) -> list[RequestOutput]:
        self.calls.append(("chat", messages, sampling_params))
        return [self._answer(p, str(m)) for m, p in zip(messages, sampling_params, strict=True)]

    def generate(
        self, prompts: list[dict[str, Any]], sampling_params: list[Any], use_tqdm: bool
    ) -> list[RequestOutput]:
        self.calls.append(("generate", prompts, sampling_params))
        return [
            self._answer(p, pr["prompt"]) for pr, p in zip(prompts, sampling_params, strict=True)
        ]


def fake_vllm(structured: str = "new") -> SimpleNamespace:
    sp_module = SimpleNamespace()
    if structured == "new":
        sp_module.StructuredOutputsParams = StructuredOutputsParams
    elif structured == "old":
        sp_module.GuidedDecodingParams = GuidedDecodingParams
    created: list[FakeLLM] = []

    def make_llm(**kwargs: Any) -> FakeLLM:
        llm = FakeLLM(kwargs)
        created.append(llm)
        return llm

    return SimpleNamespace(
        LLM=make_llm, SamplingParams=FakeSamplingParams, sampling_params=sp_module, created=created
    )


SPEC = ModelSpec(
    id="qwen-vl",
    role="chat",
    backend="vllm",
    path="/models/qwen",
    dtype="bfloat16",
    seed=3,
    resources=Resources(cpus=8, gpus=2),
    extra={"max_model_len": 4096},
)


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (6, 6), (9, 9, 9)).save(buf, format="PNG")
    return buf.getvalue()


def ask(text: str, **kw: Any) -> ChatRequest:
    return ChatRequest(messages=(ChatMessage("system", "sys"), ChatMessage("user", text)), **kw)


def test_engine_construction() -> None:
    mod = fake_vllm()
    VLLMChatModel(SPEC, vllm_module=mod)
    (llm,) = mod.created
    assert llm.kwargs == {
        "model": "/models/qwen",
        "dtype": "bfloat16",
        "seed": 3,
        "limit_mm_per_prompt": {"image": 1},
        "tensor_parallel_size": 2,
        "max_model_len": 4096,
    }


def test_chat_requests_and_output_parsing() -> None:
    mod = fake_vllm()
    model = VLLMChatModel(SPEC, vllm_module=mod)
    results = model.generate(
        [
            ask(
                "what is in the image?",
                image=png(),
                sampling=SamplingParams(max_tokens=5, logprobs=2, seed=9),
            ),
            ask("no image"),
        ]
    )
    kind, convs, params = mod.created[0].calls[0]
    assert kind == "chat"
    assert convs[0][0] == {"role": "system", "content": "sys"}
    image_part, text_part = convs[0][1]["content"]
    assert image_part["image_url"]["url"].startswith("data:image/png;base64,")
    assert text_part == {"type": "text", "text": "what is in the image?"}
    assert convs[1][1] == {"role": "user", "content": "no image"}
    assert params[0].kwargs == {
        "temperature": 0.0,
        "top_p": 1.0,
        "max_tokens": 5,
        "seed": 9,
        "logprobs": 2,
    }
    assert (
        params[1].kwargs["logprobs"] is None and params[1].kwargs["max_tokens"] == SPEC.max_tokens
    )
    first = results[0]
    assert first.text == "hello world" and first.finish_reason == "length"
    assert first.logprobs is not None and [t.token for t in first.logprobs] == ["hello", " world"]
    assert first.logprobs[1].top == ((" world", -0.3), ("unsafe", -1.5))
    assert results[1].logprobs is None


@pytest.mark.parametrize(
    ("flavour", "key"), [("new", "structured_outputs"), ("old", "guided_decoding")]
)
def test_structured_outputs_param(flavour: str, key: str) -> None:
    mod = fake_vllm(flavour)
    model = VLLMChatModel(SPEC, vllm_module=mod)
    schema = {"type": "object"}
    model.generate([ask("json please", response_schema=schema)])
    params = mod.created[0].calls[0][2][0]
    assert params.kwargs[key].json == schema


def test_missing_structured_outputs_is_a_per_request_error() -> None:
    model = VLLMChatModel(SPEC, vllm_module=fake_vllm("none"))
    (r,) = model.generate([ask("json", response_schema={"type": "object"})])
    assert r.text is None and "StructuredOutputsParams" in (r.error or "")


def test_rendered_prompts_use_generate_with_multimodal_data() -> None:
    mod = fake_vllm()
    model = VLLMChatModel(SPEC, vllm_module=mod)
    results = model.generate(
        [ChatRequest(prompt="<image>\nrate this", image=png()), ask("chat one")]
    )
    kinds = {c[0] for c in mod.created[0].calls}
    assert kinds == {"chat", "generate"}
    gen = next(c for c in mod.created[0].calls if c[0] == "generate")
    (prompt,) = gen[1]
    assert prompt["prompt"] == "<image>\nrate this"
    assert isinstance(prompt["multi_modal_data"]["image"], Image.Image)
    assert all(r.error is None for r in results)


def test_a_failing_request_is_isolated() -> None:
    model = VLLMChatModel(SPEC, vllm_module=fake_vllm())
    results = model.generate([ask("fine"), ask("boom"), ask("also fine")])
    assert [r.error is None for r in results] == [True, False, True]
    assert "engine rejected the prompt" in (results[1].error or "")


def test_next_token_logprobs_from_top_k() -> None:
    model = VLLMChatModel(SPEC, vllm_module=fake_vllm())
    scores = model.next_token_logprobs([ask("judge"), ask("boom")], ["safe", "unsafe", "0"])
    assert scores[0].logprobs == {"safe": -0.2, "unsafe": -1.9, "0": -math.inf}
    assert scores[0].exact is False
    assert scores[1].logprobs is None and "engine rejected" in (scores[1].error or "")
    with pytest.raises(ValueError, match="is 2 tokens"):
        model.next_token_logprobs([ask("x")], ["multi token"])


def test_llama_guard_on_vllm() -> None:
    spec = ModelSpec(id="lg", role="guard", backend="vllm", guard_style="llama_guard", path="/m")
    guard = LlamaGuardGuard(VLLMChatModel(spec, vllm_module=fake_vllm()), spec)
    (j,) = guard.judge([GuardInput("how to", "like this", image=png())])
    assert j.p_unsafe == pytest.approx(math.exp(-1.9) / (math.exp(-0.2) + math.exp(-1.9)))
    assert '"exact": false' in (j.raw or "")


def test_parse_request_output_edge_cases() -> None:
    assert "no completion" in (parse_request_output(RequestOutput([]), 5).error or "")
    bad = RequestOutput([CompletionOutput("x", [99], [table(safe=-1.0)])])
    assert "lack the chosen token" in (parse_request_output(bad, 5).error or "")
    with pytest.raises(ValueError, match="not a chat conversation"):
        build_chat_messages(ChatRequest(prompt="raw"))


def test_vllm_not_installed_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_WORKER_MULTIPROC_METHOD", "spawn")  # restored after the test
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ImportError, match=r"pip install 'vlsafety\[vllm\]'"):
        load_chat_model(SPEC)
