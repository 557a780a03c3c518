"""The ``openai`` backend: any OpenAI-compatible chat-completions endpoint, standard library only.

Images travel as base64 ``data:`` URLs. Transient failures (HTTP 429 and 5xx, timeouts,
dropped connections) are retried ``spec.retries`` times with exponential backoff and
jitter, honouring ``Retry-After``. Requests run in a thread pool of ``spec.concurrency``.
The API key is read from the environment variable NAMED by ``spec.api_key_env``; it is kept
in one private attribute and scrubbed from every error text, and no repr shows it.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from vlsafety.models._batching import error_text
from vlsafety.models._images import to_data_url
from vlsafety.models._spec import ModelSpec
from vlsafety.models._types import (
    REFUSAL,
    ChatRequest,
    ChatResult,
    NextTokenScores,
    SamplingParams,
    TokenLogprob,
)

__all__ = ["OpenAIChatModel", "TransientHTTPError", "build_body", "parse_completion"]


class TransientHTTPError(RuntimeError):
    """A failure worth retrying (429, 5xx, timeout, connection reset)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _PermanentError(RuntimeError):
    """A failure that a retry would repeat (4xx other than 429, a malformed answer)."""


def build_body(spec: ModelSpec, req: ChatRequest) -> dict[str, Any]:
    """The chat-completions JSON body for one request."""
    if req.prompt is not None:
        raise ValueError(
            f"{spec.id}: the openai backend speaks chat completions; it cannot take a rendered prompt"
        )
    sp = req.sampling or SamplingParams.from_spec(spec)
    messages: list[dict[str, Any]] = []
    placed = req.image is None
    for m in req.messages:
        if not placed and m.role == "user":
            messages.append(
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": m.content},
                        {"type": "image_url", "image_url": {"url": to_data_url(req.image)}},
                    ],
                }
            )
            placed = True
        else:
            messages.append({"role": m.role, "content": m.content})
    body: dict[str, Any] = {
        "model": spec.model_name,
        "messages": messages,
        "temperature": sp.temperature,
        "top_p": sp.top_p,
        "max_tokens": sp.max_tokens,
    }
    if sp.seed is not None:
        body["seed"] = sp.seed
    if sp.logprobs > 0:
        body["logprobs"] = True
        body["top_logprobs"] = sp.logprobs
    if req.response_schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": dict(req.response_schema), "strict": True},
        }
    return body


def parse_completion(data: Any) -> ChatResult:
    """A chat-completions response body to a :class:`ChatResult`; missing fields raise
    ``_PermanentError`` naming the field."""
    try:
        choice = data["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError):
        raise _PermanentError("response has no choices[0].message") from None
    if not isinstance(message, Mapping):
        raise _PermanentError("choices[0].message is not an object")
    content = message.get("content")
    refusal = message.get("refusal")
    if refusal:
        # A refusal is the model's answer (judged and counted as a response), not an error.
        return ChatResult(str(refusal), finish_reason=REFUSAL)
    if content is None:
        raise _PermanentError("response has no choices[0].message.content")
    if not isinstance(content, str):
        raise _PermanentError("choices[0].message.content is not a string")
    logprobs = None
    lp = choice.get("logprobs")
    if lp:
        try:
            logprobs = tuple(
                TokenLogprob(
                    str(t["token"]),
                    float(t["logprob"]),
                    tuple(
                        (str(a["token"]), float(a["logprob"])) for a in t.get("top_logprobs") or []
                    ),
                )
                for t in lp["content"] or []
            )
        except (KeyError, TypeError, ValueError):
            raise _PermanentError("malformed choices[0].logprobs") from None
    return ChatResult(content, logprobs=logprobs, finish_reason=choice.get("finish_reason"))


class OpenAIChatModel:
    """Chat completions over HTTP. See the module docstring for retries and secrets.

    ``sleep`` and ``rng`` are injectable so tests run the backoff without waiting.
    """

    def __init__(
        self,
        spec: ModelSpec,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.spec = spec
        assert spec.endpoint is not None  # validated by ModelSpec
        self.url = spec.endpoint.rstrip("/") + "/chat/completions"
        self.__key: str | None = None
        if spec.api_key_env:
            key = os.environ.get(spec.api_key_env)
            if not key:
                raise ValueError(
                    f"{spec.id}: environment variable {spec.api_key_env} (api_key_env) is not set"
                )
            self.__key = key
        self.backoff_s = float(spec.options.get("backoff_s", 1.0))
        self.max_backoff_s = float(spec.options.get("max_backoff_s", 60.0))
        self.top_k = int(spec.options.get("top_logprobs", 20))
        self._sleep = sleep
        self._rng = rng or random.Random()

    def __repr__(self) -> str:
        return f"OpenAIChatModel({self.spec.id!r}, url={self.url!r})"

    def __getstate__(self) -> dict[str, Any]:
        # Never ship the key inside a pickled model (Spark closures, caches): workers read
        # it from their own environment.
        raise TypeError("OpenAIChatModel is not picklable; pickle its ModelSpec instead")

    def _scrub(self, text: str) -> str:
        key = self.__key
        return text.replace(key, "***") if key else text

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.__key:
            headers["Authorization"] = f"Bearer {self.__key}"
        return headers

    def _post_once(self, payload: bytes) -> Any:
        request = urllib.request.Request(self.url, data=payload, headers=self._headers())
        try:
            with urllib.request.urlopen(request, timeout=self.spec.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode("utf-8", "replace") if exc.fp else ""
            retry_after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            exc.close()
            msg = f"HTTP {exc.code} from {self.url}: {' '.join(detail.split())}"
            if exc.code == 429 or exc.code >= 500:
                raise TransientHTTPError(msg, retry_after) from None
            raise _PermanentError(msg) from None
        except TimeoutError as exc:
            raise TransientHTTPError(f"timed out after {self.spec.timeout}s: {exc}") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise TransientHTTPError(f"timed out after {self.spec.timeout}s") from None
            raise TransientHTTPError(f"connection failed: {exc.reason}") from None
        except (ConnectionError, http.client.HTTPException) as exc:
            raise TransientHTTPError(f"connection failed: {error_text(exc)}") from None
        try:
            return json.loads(raw)
        except ValueError:
            snippet = " ".join(raw[:120].decode("utf-8", "replace").split())
            raise _PermanentError(f"malformed JSON from {self.url}: {snippet!r}") from None

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        base = min(self.max_backoff_s, self.backoff_s * 2**attempt)
        delay = base / 2 + self._rng.uniform(0, base / 2)  # "equal jitter"
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_backoff_s))
        return delay

    def _call(self, req: ChatRequest) -> ChatResult:
        try:
            payload = json.dumps(build_body(self.spec, req)).encode("utf-8")
        except Exception as exc:
            return ChatResult(None, error=self._scrub(error_text(exc)))
        last = ""
        attempts = self.spec.retries + 1
        for attempt in range(attempts):
            try:
                return parse_completion(self._post_once(payload))
            except TransientHTTPError as exc:
                last = str(exc)
                if attempt + 1 < attempts:
                    self._sleep(self._backoff(attempt, exc.retry_after))
            except _PermanentError as exc:
                return ChatResult(None, error=self._scrub(str(exc)))
            except Exception as exc:  # anything unexpected fails this request only
                return ChatResult(None, error=self._scrub(error_text(exc)))
        return ChatResult(None, error=self._scrub(f"gave up after {attempts} attempts: {last}"))

    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        if len(requests) <= 1 or self.spec.concurrency == 1:
            return [self._call(r) for r in requests]
        with ThreadPoolExecutor(max_workers=min(self.spec.concurrency, len(requests))) as pool:
            return list(pool.map(self._call, requests))

    def next_token_logprobs(
        self, requests: Sequence[ChatRequest], candidates: Sequence[str]
    ) -> list[NextTokenScores]:
        """Candidates' log-probabilities from ``top_logprobs`` of a one-token greedy answer
        (a candidate matches a reported token exactly or after stripping whitespace; one
        outside the top-k gets ``-inf``)."""
        sp = SamplingParams(temperature=0.0, max_tokens=1, seed=self.spec.seed, logprobs=self.top_k)
        import dataclasses

        results = self.generate(
            [dataclasses.replace(r, sampling=sp, response_schema=None) for r in requests]
        )
        out = []
        for res in results:
            if res.error is not None:
                out.append(NextTokenScores(None, error=res.error))
                continue
            if res.refused:
                out.append(NextTokenScores(None, error=f"the model refused: {res.text}"[:240]))
                continue
            if not res.logprobs:
                out.append(NextTokenScores(None, error="endpoint returned no logprobs"))
                continue
            first = res.logprobs[0]
            alts = list(first.top) or [(first.token, first.logprob)]
            scores: dict[str, float] = {}
            for c in candidates:
                exact = [lp for tok, lp in alts if tok == c]
                loose = [lp for tok, lp in alts if tok.strip() == c.strip()]
                found = exact or loose
                scores[c] = max(found) if found else -math.inf
            out.append(NextTokenScores(scores, exact=False))
        return out


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
