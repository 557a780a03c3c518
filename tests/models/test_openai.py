"""OpenAI-compatible backend against a local chat-completions server on 127.0.0.1."""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from PIL import Image

from tests.openai_server import KEY, FakeServer, completion, reply, stall
from vlsafety.models import ChatMessage, ChatRequest, ModelSpec, SamplingParams, load_chat_model
from vlsafety.models._openai import OpenAIChatModel


@pytest.fixture()
def server() -> Iterator[FakeServer]:
    s = FakeServer()
    yield s
    s.close()


@pytest.fixture()
def model(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> tuple[OpenAIChatModel, list[float]]:
    monkeypatch.setenv("JUDGE_KEY", KEY)
    spec = ModelSpec(
        id="judge",
        role="chat",
        backend="openai",
        endpoint=server.url,
        model_name="gpt-judge",
        api_key_env="JUDGE_KEY",
        retries=2,
        timeout=0.5,
        concurrency=4,
        options={"backoff_s": 0.01, "max_backoff_s": 0.05},
    )
    sleeps: list[float] = []
    return OpenAIChatModel(spec, sleep=sleeps.append), sleeps


def ask(text: str = "hi", **kw: Any) -> ChatRequest:
    return ChatRequest(messages=(ChatMessage("user", text),), **kw)


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(buf, format="PNG")
    return buf.getvalue()


def test_request_body_and_auth(
    server: FakeServer, model: tuple[OpenAIChatModel, list[float]]
) -> None:
    m, _ = model
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}}
    (r,) = m.generate(
        [
            ChatRequest(
                messages=(ChatMessage("system", "be brief"), ChatMessage("user", "what is this?")),
                image=png(),
                sampling=SamplingParams(temperature=0.2, max_tokens=7, seed=5, logprobs=2),
                response_schema=schema,
            )
        ]
    )
    assert r.text == "hello" and r.error is None and r.finish_reason == "stop"
    body, headers = server.requests[0], server.headers[0]
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert body["model"] == "gpt-judge" and body["max_tokens"] == 7 and body["seed"] == 5
    assert body["temperature"] == 0.2 and body["logprobs"] is True and body["top_logprobs"] == 2
    assert body["messages"][0] == {"role": "system", "content": "be brief"}
    parts = body["messages"][1]["content"]
    assert parts[0] == {"type": "text", "text": "what is this?"}
    assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == schema


def test_logprobs_are_parsed(
    server: FakeServer, model: tuple[OpenAIChatModel, list[float]]
) -> None:
    m, _ = model
    lp = {
        "content": [
            {
                "token": "safe",
                "logprob": -0.1,
                "top_logprobs": [
                    {"token": "safe", "logprob": -0.1},
                    {"token": " unsafe", "logprob": -2.5},
                ],
            }
        ]
    }
    server.script = [reply(200, completion("safe", logprobs=lp))]
    (r,) = m.generate([ask(sampling=SamplingParams(logprobs=2))])
    assert r.logprobs is not None and r.logprobs[0].token == "safe"
    assert r.logprobs[0].top == (("safe", -0.1), (" unsafe", -2.5))
    (scores,) = m.next_token_logprobs([ask()], ["safe", "unsafe", "maybe"])
    assert scores.logprobs == {"safe": -0.1, "unsafe": -2.5, "maybe": float("-inf")}
    assert not scores.exact
    assert server.requests[-1]["max_tokens"] == 1 and server.requests[-1]["top_logprobs"] == 20


@pytest.mark.parametrize("status", [429, 500, 503])
def test_transient_errors_are_retried(
    server: FakeServer, model: tuple[OpenAIChatModel, list[float]], status: int
) -> None:
    m, sleeps = model
    server.script = [
        reply(status, {"error": "busy"}),
        reply(status, {"error": "busy"}),
        reply(200, completion("ok")),
    ]
    (r,) = m.generate([ask()])
    assert r.text == "ok" and r.error is None
    assert len(server.requests) == 3 and len(sleeps) == 2
    # exponential backoff with equal jitter: attempt k waits in [b*2^k/2, b*2^k]
    assert 0.005 <= sleeps[0] <= 0.01 and 0.01 <= sleeps[1] <= 0.02


def test_retry_after_is_honoured_and_capped(
    server: FakeServer, model: tuple[OpenAIChatModel, list[float]]
) -> None:
    m, sleeps = model
    server.script = [
        reply(429, {}, {"Retry-After": "0.04"}),
        reply(429, {}, {"Retry-After": "30"}),
        reply(200, completion()),
    ]
    (r,) = m.generate([ask()])
    assert r.error is None and sleeps == [pytest.approx(0.04), pytest.approx(0.05)]


def test_gives_up_after_retries(
    server: FakeServer, model: tuple[OpenAIChatModel, list[float]]
) -> None:
    m, sleeps = model
    server.script = [reply(500, {"error": "down"})]
    (r,) = m.generate([ask()])
    assert (
        r.text is None
        and "gave up after 3 attempts" in (r.error or "")
        and "HTTP 500" in (r.error or "")
    )
    assert len(server.requests) == 3 and len(sleeps) == 2


def test_timeouts_are_retried(
    server: FakeServer, model: tuple[OpenAIChatModel, list[float]]
) -> None:
    m, _ = model
    server.script = [stall(1.0), reply(200, completion("after timeout"))]
    (r,) = m.generate([ask()])
    assert r.text == "after timeout" and len(server.requests) == 2
    server.script = [stall(1.0)]
    (r,) = m.generate([ask()])
    assert r.text is None and "timed out" in (r.error or "")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "malformed JSON"),
        ({"id": "x"}, "no choices[0].message"),
        ({"choices": []}, "no choices[0].message"),
        (completion(None), "no choices[0].message.content"),
        (completion("x", logprobs={"content": [{"token": "x"}]}), "malformed choices[0].logprobs"),
    ],
)
def test_bad_responses_become_errors(
    server: FakeServer, model: tuple[OpenAIChatModel, list[float]], body: Any, message: str
) -> None:
    m, sleeps = model
    server.script = [reply(200, body)]
    results = m.generate([ask(), ask("second")])
    assert all(r.text is None and message in (r.error or "") for r in results)
    assert sleeps == []  # a malformed answer is not retried


def test_a_refusal_is_an_answer_not_an_error(
    server: FakeServer, model: tuple[OpenAIChatModel, list[float]]
) -> None:
    from vlsafety.models import REFUSAL
    from vlsafety.models._parse import generate_parsed

    m, sleeps = model
    refusal = {"choices": [{"message": {"content": None, "refusal": "I can't help with that"}}]}
    server.script = [reply(200, refusal)]
    (r,) = m.generate([ask()])
    # a victim's refusal is its response: judged and counted, never dropped as an error
    assert r.error is None and r.text == "I can't help with that"
    assert r.finish_reason == REFUSAL and r.refused
    assert sleeps == [] and len(server.requests) == 1
    # a stage that needs content (generation, rubric parsing) sees a failure, not retried
    server.script = [reply(200, refusal)]
    (parsed,) = generate_parsed(m, [ask()], json.loads, retries=2)
    assert parsed.value is None and parsed.error == "the model refused"
    assert len(server.requests) == 2
    server.script = [reply(200, refusal)]
    (scores,) = m.next_token_logprobs([ask()], ["safe", "unsafe"])
    assert scores.logprobs is None and "the model refused" in (scores.error or "")
    server.script = [reply(200, completion("fine"))]
    (ok,) = m.generate([ask()])
    assert ok.text == "fine" and not ok.refused


def test_client_errors_are_not_retried(
    server: FakeServer, model: tuple[OpenAIChatModel, list[float]]
) -> None:
    m, _ = model
    server.script = [reply(400, {"error": {"message": "bad max_tokens"}})]
    (r,) = m.generate([ask()])
    assert "HTTP 400" in (r.error or "") and "bad max_tokens" in (r.error or "")
    assert len(server.requests) == 1


def test_key_never_leaks(server: FakeServer, model: tuple[OpenAIChatModel, list[float]]) -> None:
    m, _ = model

    def echo_auth(h: BaseHTTPRequestHandler, _: dict[str, Any]) -> None:
        reply(401, {"error": f"invalid key {h.headers['Authorization']}"})(h, {})

    server.script = [echo_auth]
    (r,) = m.generate([ask()])
    assert r.error is not None and "HTTP 401" in r.error
    assert KEY not in r.error and "***" in r.error
    assert KEY not in repr(m) and KEY not in repr(m.spec)
    with pytest.raises(TypeError, match="not picklable"):
        pickle.dumps(m)


def test_missing_key_env_names_the_variable(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOT_SET_KEY", raising=False)
    spec = ModelSpec(
        id="j",
        role="chat",
        backend="openai",
        endpoint=server.url,
        model_name="m",
        api_key_env="NOT_SET_KEY",
    )
    with pytest.raises(ValueError, match="environment variable NOT_SET_KEY"):
        load_chat_model(spec)


def test_concurrency_is_bounded(
    server: FakeServer, model: tuple[OpenAIChatModel, list[float]]
) -> None:
    m, _ = model
    server.script = [stall(0.05, echo=True)]
    results = m.generate([ask(str(i)) for i in range(12)])
    assert 1 < server.max_in_flight <= 4
    # answers come back in request order, whatever order the server finished them in
    assert [r.text for r in results] == [str(i) for i in range(12)]


def test_rendered_prompts_and_connection_errors(model: tuple[OpenAIChatModel, list[float]]) -> None:
    m, _ = model
    (r,) = m.generate([ChatRequest(prompt="raw text")])
    assert "cannot take a rendered prompt" in (r.error or "")
    dead = OpenAIChatModel(
        ModelSpec(
            id="d",
            role="chat",
            backend="openai",
            endpoint="http://127.0.0.1:9/v1",
            model_name="m",
            retries=1,
            options={"backoff_s": 0.001},
        ),
        sleep=lambda s: None,
    )
    (r,) = dead.generate([ask()])
    assert "connection failed" in (r.error or "") and "gave up after 2 attempts" in (r.error or "")
