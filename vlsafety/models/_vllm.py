"""The ``vllm`` backend: offline ``vllm.LLM`` on GPU workers (an optional extra).

vLLM is imported lazily, inside :class:`VLLMChatModel`, because it is CUDA-only and pins
its own torch (``pip install vlsafety[vllm]``). Request building and output parsing are
plain functions over the documented shapes (``LLM.chat`` conversations in the OpenAI
message format, ``{"prompt", "multi_modal_data"}`` prompts, ``RequestOutput.outputs[0]``
with ``text``, ``token_ids``, ``logprobs``: a list of ``{token_id: Logprob}``), so they are
tested without a GPU.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from vlsafety.models._batching import error_text, group_indices, run_isolated
from vlsafety.models._images import to_data_url, to_pil
from vlsafety.models._spec import ModelSpec
from vlsafety.models._types import (
    ChatRequest,
    ChatResult,
    NextTokenScores,
    SamplingParams,
    TokenLogprob,
)

__all__ = [
    "VLLMChatModel",
    "build_chat_messages",
    "parse_request_output",
    "structured_output_kwargs",
]

_DTYPE = {"auto": "auto", "float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}


def build_chat_messages(req: ChatRequest) -> list[dict[str, Any]]:
    """OpenAI-format messages; the image goes into the first user turn as a data URL."""
    if req.prompt is not None:
        raise ValueError("a rendered prompt is not a chat conversation")
    out: list[dict[str, Any]] = []
    placed = req.image is None
    for m in req.messages:
        if not placed and m.role == "user":
            content: Any = [
                {"type": "image_url", "image_url": {"url": to_data_url(req.image)}},
                {"type": "text", "text": m.content},
            ]
            placed = True
        else:
            content = m.content
        out.append({"role": m.role, "content": content})
    return out


def structured_output_kwargs(sampling_module: Any, schema: Mapping[str, Any]) -> dict[str, Any]:
    """``SamplingParams`` keyword for JSON-schema-constrained output.

    vLLM >= 0.11 names it ``structured_outputs=StructuredOutputsParams(json=...)``; older
    releases ``guided_decoding=GuidedDecodingParams(json=...)``. Whichever exists is used.
    """
    if hasattr(sampling_module, "StructuredOutputsParams"):
        return {"structured_outputs": sampling_module.StructuredOutputsParams(json=dict(schema))}
    if hasattr(sampling_module, "GuidedDecodingParams"):
        return {"guided_decoding": sampling_module.GuidedDecodingParams(json=dict(schema))}
    raise RuntimeError("this vLLM has neither StructuredOutputsParams nor GuidedDecodingParams")


def parse_request_output(output: Any, top_k: int) -> ChatResult:
    """A ``RequestOutput`` to a :class:`ChatResult` (first completion; top ``top_k`` alternatives
    per position, most likely first)."""
    if not getattr(output, "outputs", None):
        return ChatResult(None, error="vLLM returned no completion")
    comp = output.outputs[0]
    logprobs = None
    if getattr(comp, "logprobs", None) is not None:
        steps = []
        for pos, table in enumerate(comp.logprobs):
            chosen = comp.token_ids[pos]
            entry = table.get(chosen)
            if entry is None:
                return ChatResult(comp.text, error=f"vLLM logprobs lack the chosen token at {pos}")
            alts = sorted(
                ((str(v.decoded_token), float(v.logprob)) for v in table.values()),
                key=lambda t: -t[1],
            )[:top_k]
            steps.append(TokenLogprob(str(entry.decoded_token), float(entry.logprob), tuple(alts)))
        logprobs = tuple(steps)
    return ChatResult(
        comp.text, logprobs=logprobs, finish_reason=getattr(comp, "finish_reason", None)
    )


class VLLMChatModel:
    """Offline vLLM engine behind the ChatModel Protocol.

    ``LLM(model=path, dtype, seed, limit_mm_per_prompt={"image": 1},
    tensor_parallel_size=resources.gpus, **extra)``. Chat requests go through
    ``LLM.chat`` (the model's chat template); rendered prompts through ``LLM.generate``
    with ``multi_modal_data``. ``llm`` / ``vllm_module`` inject stand-ins for tests.
    """

    def __init__(self, spec: ModelSpec, *, llm: Any = None, vllm_module: Any = None) -> None:
        self.spec = spec
        if vllm_module is None:
            # vLLM workers must not inherit a CUDA context from a forked Spark worker.
            os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
            try:
                vllm_module = importlib.import_module("vllm")
            except ImportError as exc:
                raise ImportError(
                    f"{spec.id}: the vllm backend needs vLLM (pip install 'vlsafety[vllm]')"
                ) from exc
        self._vllm = vllm_module
        self._sampling_module = getattr(vllm_module, "sampling_params", vllm_module)
        self.top_k = int(spec.options.get("top_logprobs", 20))
        if llm is None:
            kwargs: dict[str, Any] = {
                "model": spec.path,
                "dtype": _DTYPE[spec.dtype],
                "seed": spec.seed or 0,
                "limit_mm_per_prompt": {"image": 1},
                "tensor_parallel_size": max(1, int(spec.resources.gpus)),
            }
            kwargs.update(spec.extra)
            llm = vllm_module.LLM(**kwargs)
        self.llm = llm

    def __repr__(self) -> str:
        return f"VLLMChatModel({self.spec.id!r})"

    def sampling_params(self, sp: SamplingParams, schema: Mapping[str, Any] | None = None) -> Any:
        kwargs: dict[str, Any] = {
            "temperature": sp.temperature,
            "top_p": sp.top_p,
            "max_tokens": sp.max_tokens,
            "seed": sp.seed,
            "logprobs": sp.logprobs if sp.logprobs > 0 else None,
        }
        if schema is not None:
            kwargs.update(structured_output_kwargs(self._sampling_module, schema))
        return self._vllm.SamplingParams(**kwargs)

    def _run(self, reqs: Sequence[ChatRequest]) -> list[Any]:
        params = [
            self.sampling_params(
                r.sampling or SamplingParams.from_spec(self.spec), r.response_schema
            )
            for r in reqs
        ]
        if reqs[0].prompt is None:
            convs = [build_chat_messages(r) for r in reqs]
            return list(self.llm.chat(convs, sampling_params=params, use_tqdm=False))
        prompts: list[dict[str, Any]] = []
        for r in reqs:
            p: dict[str, Any] = {"prompt": r.prompt}
            if r.image is not None:
                p["multi_modal_data"] = {"image": to_pil(r.image)}
            prompts.append(p)
        return list(self.llm.generate(prompts, sampling_params=params, use_tqdm=False))

    def _outputs(self, requests: Sequence[ChatRequest]) -> list[Any]:
        """Raw ``RequestOutput`` per request, or the exception that request raised."""
        results: list[Any] = [None] * len(requests)
        # LLM.chat and LLM.generate are separate calls: group chat vs rendered prompts.
        for _, idx in group_indices([r.prompt is None for r in requests]).items():
            outs = run_isolated(lambda ids: self._run([requests[j] for j in ids]), idx, lambda e: e)
            for j, o in zip(idx, outs, strict=True):
                results[j] = o
        return results

    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        out = []
        for req, o in zip(requests, self._outputs(requests), strict=True):
            if isinstance(o, BaseException):
                out.append(ChatResult(None, error=error_text(o)))
                continue
            k = (req.sampling.logprobs if req.sampling else 0) or self.top_k
            out.append(parse_request_output(o, k))
        return out

    def _token_id(self, candidate: str) -> int:
        ids = self.llm.get_tokenizer().encode(candidate, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(
                f"{self.spec.id}: answer token {candidate!r} is {len(ids)} tokens in this tokenizer"
            )
        return int(ids[0])

    def next_token_logprobs(
        self, requests: Sequence[ChatRequest], candidates: Sequence[str]
    ) -> list[NextTokenScores]:
        """Candidates' log-probabilities from the top-``options.top_logprobs`` alternatives of a
        one-token greedy generation; a candidate outside the top-k gets ``-inf``."""
        ids = {c: self._token_id(c) for c in candidates}
        sp = SamplingParams(temperature=0.0, max_tokens=1, seed=self.spec.seed, logprobs=self.top_k)
        one_token = [_with_sampling(r, sp) for r in requests]
        out = []
        for o in self._outputs(one_token):
            if isinstance(o, BaseException):
                out.append(NextTokenScores(None, error=error_text(o)))
                continue
            comp = o.outputs[0] if getattr(o, "outputs", None) else None
            if comp is None or not comp.logprobs:
                out.append(NextTokenScores(None, error="vLLM returned no logprobs"))
                continue
            table = comp.logprobs[0]
            scores = {
                c: float(table[i].logprob) if i in table else -math.inf for c, i in ids.items()
            }
            out.append(NextTokenScores(scores, exact=False))
        return out


def _with_sampling(req: ChatRequest, sp: SamplingParams) -> ChatRequest:
    import dataclasses

    return dataclasses.replace(req, sampling=sp, response_schema=None)
