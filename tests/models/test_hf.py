"""hf chat backend on tiny Llava / Qwen2-VL / Llama: batching, logprobs, errors per request."""

from __future__ import annotations

import dataclasses
import io
import math
from typing import Any

import pytest
import torch
from PIL import Image

from vlsafety.models import (
    ChatMessage,
    ChatModel,
    ChatRequest,
    ModelSpec,
    SamplingParams,
    load_chat_model,
)
from vlsafety.models._hf import HFChatModel


def png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(buf, format="PNG")
    return buf.getvalue()


def req(text: str, image: bytes | None = None, **sampling: Any) -> ChatRequest:
    sp = SamplingParams(**{"max_tokens": 6, **sampling})
    return ChatRequest(messages=(ChatMessage("user", text),), image=image, sampling=sp)


@pytest.fixture(scope="module")
def models(tiny_specs: dict[str, ModelSpec]) -> dict[str, ChatModel]:
    return {
        mid: load_chat_model(dataclasses.replace(tiny_specs[mid], batch_size=3))
        for mid in ("tiny-llava", "tiny-qwen2-vl", "tiny-llama")
    }


@pytest.mark.parametrize("mid", ["tiny-llava", "tiny-qwen2-vl", "tiny-llama"])
def test_generate_with_logprobs(models: dict[str, ChatModel], mid: str) -> None:
    model = models[mid]
    assert isinstance(model, ChatModel)
    image = None if mid == "tiny-llama" else png((200, 30, 30))
    requests = [
        req("describe the picture", image, logprobs=3),
        req("what is shown?", image, logprobs=3),
        req("tell me more", image, logprobs=3),
        req("and again", image, logprobs=3),  # a second chunk at batch_size=3
    ]
    results = model.generate(requests)
    assert len(results) == 4
    for r in results:
        assert r.error is None and isinstance(r.text, str)
        assert r.logprobs is not None and 1 <= len(r.logprobs) <= 6
        assert r.finish_reason in ("stop", "length")
        for step in r.logprobs:
            assert step.logprob <= 0.0 and len(step.top) == 3
            values = [lp for _, lp in step.top]
            assert values == sorted(values, reverse=True)
            # greedy decoding picks the most likely token
            assert math.isclose(step.logprob, values[0], abs_tol=1e-5)


def test_sampling_is_seeded(models: dict[str, ChatModel]) -> None:
    model = models["tiny-llama"]
    # hot enough that the taught answer (see tiny.REFUSAL_TRIGGERS) no longer dominates
    hot = [req("hello", temperature=20.0, seed=11, max_tokens=8)]
    first, again = model.generate(hot)[0].text, model.generate(hot)[0].text
    assert first == again
    other = [req("hello", temperature=20.0, seed=12, max_tokens=8)]
    greedy = [req("hello", max_tokens=8)]
    assert {model.generate(other)[0].text, model.generate(greedy)[0].text, first} != {first}


def test_next_token_logprobs_match_a_plain_forward_pass(models: dict[str, ChatModel]) -> None:
    model = models["tiny-qwen2-vl"]
    assert isinstance(model, HFChatModel)
    requests = [
        req("first question", png((0, 0, 255))),
        req("second one, longer than the first", png((9, 9, 9))),
    ]
    batched = model.next_token_logprobs(requests, ["0", "1", "5"])
    for r, scores in zip(requests, batched, strict=True):
        assert scores.exact and scores.error is None and scores.logprobs is not None
        # reference: one unpadded forward pass, full log-softmax at the last position
        enc = model._encode([r])
        with torch.inference_mode():
            logits = model.model(**enc).logits[0, -1].float()
        ref = torch.log_softmax(logits, -1)
        for c in ("0", "1", "5"):
            (tid,) = model.tokenizer.encode(c, add_special_tokens=False)
            assert scores.logprobs[c] == pytest.approx(float(ref[tid]), abs=1e-4)


def test_errors_are_per_request(models: dict[str, ChatModel]) -> None:
    llava = models["tiny-llava"]
    results = llava.generate(
        [
            req("ok", png((1, 2, 3))),
            req("broken", b"\x89PNG garbage"),
            req("ok too", png((3, 2, 1))),
        ]
    )
    assert results[0].error is None and results[2].error is None
    assert results[1].text is None and "ImageDecodeError" in (results[1].error or "")
    text_only = models["tiny-llama"].generate([req("fine"), req("with image", png((0, 0, 0)))])
    assert text_only[0].error is None
    assert "text-only" in (text_only[1].error or "")


def test_multi_token_candidates_are_refused(models: dict[str, ChatModel]) -> None:
    with pytest.raises(ValueError, match="is 2 tokens|is 3 tokens|tokens"):
        models["tiny-llama"].next_token_logprobs([req("x")], ["definitely-not-one-token"])


def test_rendering_uses_chat_template_and_raw_prompts(models: dict[str, ChatModel]) -> None:
    llava = models["tiny-llava"]
    assert isinstance(llava, HFChatModel) and llava.has_chat_template
    text = llava.render(req("describe", png((5, 5, 5))))
    assert text.count("<image>") == 1 and text.endswith("<|im_start|>assistant\n")
    raw = llava.render(ChatRequest(prompt="Question: is it safe?", image=png((5, 5, 5))))
    assert raw.startswith("<image>") and raw.endswith("is it safe?")
    with pytest.raises(ValueError, match="messages or a rendered prompt"):
        ChatRequest()
    with pytest.raises(ValueError, match="role must be one of"):
        ChatMessage("tool", "x")


def test_missing_weights_is_clear(tiny_specs: dict[str, ModelSpec]) -> None:
    with pytest.raises(FileNotFoundError, match="weights not found"):
        load_chat_model(dataclasses.replace(tiny_specs["tiny-llama"], path="/nonexistent"))
