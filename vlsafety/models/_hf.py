"""The ``hf`` backend: transformers chat models (VLM or text-only) and sequence classifiers.

VLMs load with ``AutoProcessor`` + ``AutoModelForImageTextToText``; text-only models with
``AutoTokenizer`` + ``AutoModelForCausalLM`` (``options.kind`` overrides the guess made
from the config's ``vision_config``). Batches are left-padded and generated together;
requests with different sampling settings or with/without an image go in separate calls.
"""

from __future__ import annotations

import copy
import logging
import math
import os
from collections.abc import Sequence
from typing import Any

from vlsafety.models._batching import chunked, error_text, group_indices, run_isolated
from vlsafety.models._images import to_pil
from vlsafety.models._spec import ModelSpec
from vlsafety.models._torch import resolve_torch_device, torch_dtype
from vlsafety.models._types import (
    ChatRequest,
    ChatResult,
    GuardInput,
    GuardJudgment,
    NextTokenScores,
    SamplingParams,
    TokenLogprob,
)
from vlsafety.prompts import load_prompt

__all__ = ["HFChatModel", "HFSequenceClassifierGuard"]

log = logging.getLogger(__name__)

# Keyword arguments a processor/tokenizer also needs when the model needs them.
_SHARED_LOAD_KWARGS = ("trust_remote_code", "revision")


def _check_path(spec: ModelSpec) -> str:
    assert spec.path is not None  # validated by ModelSpec
    if not os.path.exists(spec.path):
        raise FileNotFoundError(f"{spec.id}: weights not found at {spec.path}")
    return spec.path


class HFChatModel:
    """A transformers chat model behind the :class:`~vlsafety.models.ChatModel` Protocol.

    Log-probabilities come from the raw logits of each step (``output_logits``), not the
    temperature/top-p-warped ``output_scores``, so they are the model's own distribution,
    the same quantity vLLM and the OpenAI API report.
    """

    def __init__(self, spec: ModelSpec) -> None:
        import torch
        from transformers import (
            AutoConfig,
            AutoModelForCausalLM,
            AutoModelForImageTextToText,
            AutoProcessor,
            AutoTokenizer,
        )

        self.spec = spec
        path = _check_path(spec)
        shared = {k: v for k, v in spec.extra.items() if k in _SHARED_LOAD_KWARGS}
        config = AutoConfig.from_pretrained(path, **shared)
        kind = spec.options.get("kind") or (
            "vlm" if getattr(config, "vision_config", None) is not None else "text"
        )
        self.kind: str = kind
        self.device = resolve_torch_device(spec.device)
        dtype = torch_dtype(spec.dtype)
        model: Any
        if kind == "vlm":
            self.processor: Any = AutoProcessor.from_pretrained(path, **shared)
            self.tokenizer: Any = self.processor.tokenizer
            model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype, **spec.extra)
        else:
            self.processor = None
            self.tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left", **shared)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **spec.extra)
        # Batched generation appends new tokens on the right: prompts must be left-padded.
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            if self.tokenizer.eos_token is None:
                raise ValueError(f"{spec.id}: tokenizer has neither a pad nor an eos token")
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = model.to(self.device).eval()
        self._torch = torch
        owner = self.processor if self.processor is not None else self.tokenizer
        self.has_chat_template: bool = bool(getattr(owner, "chat_template", None))
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            eos_ids.add(self.tokenizer.eos_token_id)
        self._eos_ids = eos_ids

    def __repr__(self) -> str:
        return f"HFChatModel({self.spec.id!r}, kind={self.kind!r}, device={self.device!r})"

    # ------------------------------------------------------------- rendering
    @property
    def image_token(self) -> str | None:
        return getattr(self.processor, "image_token", None) if self.processor else None

    def _conversation(self, req: ChatRequest) -> list[dict[str, Any]]:
        conv: list[dict[str, Any]] = []
        image_placed = req.image is None
        for m in req.messages:
            if self.kind == "vlm":
                content: list[dict[str, Any]] = []
                if not image_placed and m.role == "user":
                    content.append({"type": "image"})
                    image_placed = True
                content.append({"type": "text", "text": m.content})
                conv.append({"role": m.role, "content": content})
            else:
                conv.append({"role": m.role, "content": m.content})
        return conv

    def render(self, req: ChatRequest) -> str:
        """The prompt string the model sees (chat template, or a rendered prompt as given)."""
        if req.image is not None and self.kind != "vlm":
            raise ValueError(f"{self.spec.id} is a text-only model; it cannot take an image")
        bos = self.tokenizer.bos_token
        if req.prompt is not None:
            text = req.prompt
            token = self.image_token
            if req.image is not None and token and token not in text:
                text = f"{token}\n{text}"
            # Chat templates write BOS themselves; a raw prompt needs it added here because
            # every prompt is tokenized with add_special_tokens=False.
            return text if not bos or text.startswith(bos) else bos + text
        conv = self._conversation(req)
        if self.has_chat_template:
            owner = self.processor if self.processor is not None else self.tokenizer
            rendered = owner.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
            return str(rendered)
        lines = [f"{m.role}: {m.content}" for m in req.messages] + ["assistant:"]
        text = "\n".join(lines)
        if req.image is not None and self.image_token:
            text = f"{self.image_token}\n{text}"
        return text if not bos else bos + text

    def _encode(self, reqs: Sequence[ChatRequest]) -> Any:
        texts = [self.render(r) for r in reqs]
        images = [to_pil(r.image) for r in reqs if r.image is not None]
        if images and len(images) != len(reqs):
            raise ValueError("a batch must be all with or all without images")
        if self.processor is not None:
            kwargs: dict[str, Any] = {"text": texts, "return_tensors": "pt", "padding": True}
            if images:
                kwargs["images"] = images
            enc = self.processor(**kwargs, add_special_tokens=False)
        else:
            enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        return enc.to(self.device)

    def _single_token_id(self, candidate: str) -> int:
        ids = self.tokenizer.encode(candidate, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(
                f"{self.spec.id}: answer token {candidate!r} is {len(ids)} tokens {ids} in this "
                "tokenizer; reading its probability needs exactly one token"
            )
        return int(ids[0])

    # ------------------------------------------------------------ generation
    def _generation_config(self, sp: SamplingParams) -> Any:
        gc = copy.deepcopy(self.model.generation_config)
        sample = sp.temperature > 0
        gc.update(
            max_new_tokens=sp.max_tokens,
            do_sample=sample,
            temperature=sp.temperature if sample else 1.0,
            top_p=sp.top_p if sample else 1.0,
            top_k=None,
            pad_token_id=self.tokenizer.pad_token_id,
            output_logits=sp.logprobs > 0,
            return_dict_in_generate=True,
        )
        return gc

    def _token_str(self, token_id: int) -> str:
        return str(self.tokenizer.decode([token_id]))

    def _generate_batch(self, reqs: Sequence[ChatRequest], sp: SamplingParams) -> list[ChatResult]:
        torch = self._torch
        enc = self._encode(reqs)
        if sp.seed is not None:
            # One seed per call: sampled outputs depend on the batch they were drawn in.
            torch.manual_seed(sp.seed)
        with torch.inference_mode():
            out = self.model.generate(**enc, generation_config=self._generation_config(sp))
        new = out.sequences[:, enc["input_ids"].shape[1] :].tolist()
        results = []
        for i, toks in enumerate(new):
            stop = next((t for t, tok in enumerate(toks) if tok in self._eos_ids), None)
            kept = toks if stop is None else toks[:stop]
            text = str(self.tokenizer.decode(kept, skip_special_tokens=True))
            logprobs = None
            if sp.logprobs > 0:
                steps = len(kept) if stop is None else stop + 1  # the EOS step has a logprob too
                logprobs = tuple(
                    self._step_logprob(out.logits[t][i], toks[t], sp.logprobs) for t in range(steps)
                )
            reason = "length" if stop is None and len(toks) >= sp.max_tokens else "stop"
            results.append(ChatResult(text=text, logprobs=logprobs, finish_reason=reason))
        return results

    def _step_logprob(self, logits: Any, token_id: int, k: int) -> TokenLogprob:
        torch = self._torch
        lp = torch.log_softmax(logits.float(), dim=-1)
        values, ids = torch.topk(lp, k)
        top = tuple(
            (self._token_str(int(j)), float(v))
            for v, j in zip(values.tolist(), ids.tolist(), strict=True)
        )
        return TokenLogprob(self._token_str(token_id), float(lp[token_id]), top)

    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        """Generate for every request; a failing request gets ``error``, the others go on."""
        results: list[ChatResult | None] = [None] * len(requests)
        params = [r.sampling or SamplingParams.from_spec(self.spec) for r in requests]
        for i, r in enumerate(requests):
            if r.response_schema is not None:
                # transformers has no constrained decoding; the caller's parser copes.
                log.debug("%s: response_schema ignored by the hf backend", self.spec.id)
            try:
                self.render(r)
            except Exception as exc:
                results[i] = ChatResult(None, error=error_text(exc))
        pending = [i for i, r in enumerate(results) if r is None]
        keys = [(requests[i].image is not None, params[i]) for i in pending]
        for (_, sp), members in group_indices(keys).items():
            idx = [pending[m] for m in members]
            for chunk in chunked(idx, self.spec.batch_size):

                def gen(ids: Sequence[int], sp: SamplingParams = sp) -> list[ChatResult]:
                    return self._generate_batch([requests[j] for j in ids], sp)

                outs = run_isolated(gen, chunk, lambda exc: ChatResult(None, error=error_text(exc)))
                for j, res in zip(chunk, outs, strict=True):
                    results[j] = res
        return [r if r is not None else ChatResult(None, error="not generated") for r in results]

    # ------------------------------------------------------- next-token read
    def _next_token_batch(self, reqs: Sequence[ChatRequest], ids: Sequence[int]) -> Any:
        torch = self._torch
        enc = self._encode(reqs)
        with torch.inference_mode():
            try:
                # Only the last position is needed; full-sequence logits cost seq x vocab.
                logits = self.model(**enc, logits_to_keep=1).logits
            except TypeError:
                logits = self.model(**enc).logits
        lp = torch.log_softmax(logits[:, -1, :].float(), dim=-1)
        return lp[:, list(ids)].tolist()

    def next_token_logprobs(
        self, requests: Sequence[ChatRequest], candidates: Sequence[str]
    ) -> list[NextTokenScores]:
        """Exact log-probabilities of single-token ``candidates`` at the first answer position
        (one forward pass over the prompt, full vocabulary softmax)."""
        ids = [self._single_token_id(c) for c in candidates]
        results: list[NextTokenScores | None] = [None] * len(requests)
        for i, r in enumerate(requests):
            try:
                self.render(r)
            except Exception as exc:
                results[i] = NextTokenScores(None, error=error_text(exc))
        pending = [i for i, r in enumerate(results) if r is None]
        for _, members in group_indices([requests[i].image is not None for i in pending]).items():
            idx = [pending[m] for m in members]
            for chunk in chunked(idx, self.spec.batch_size):

                def score(js: Sequence[int]) -> list[NextTokenScores]:
                    rows = self._next_token_batch([requests[j] for j in js], ids)
                    return [
                        NextTokenScores(dict(zip(candidates, row, strict=True))) for row in rows
                    ]

                outs = run_isolated(
                    score, chunk, lambda exc: NextTokenScores(None, error=error_text(exc))
                )
                for j, res in zip(chunk, outs, strict=True):
                    results[j] = res
        return [r if r is not None else NextTokenScores(None, error="not scored") for r in results]


class HFSequenceClassifierGuard:
    """A guard from ``AutoModelForSequenceClassification``: P(unsafe) = softmax(logits) at
    the label named ``options.unsafe_label`` (default ``unsafe``) in ``config.id2label``.

    The classifier reads text only (``prompts/classifier.txt``); the image is not seen.
    """

    def __init__(self, spec: ModelSpec) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.spec = spec
        path = _check_path(spec)
        shared = {k: v for k, v in spec.extra.items() if k in _SHARED_LOAD_KWARGS}
        self.tokenizer = AutoTokenizer.from_pretrained(path, **shared)
        model: Any = AutoModelForSequenceClassification.from_pretrained(
            path, dtype=torch_dtype(spec.dtype), **spec.extra
        )
        self.device = resolve_torch_device(spec.device)
        self.model = model.to(self.device).eval()
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        wanted = str(spec.options.get("unsafe_label", "unsafe")).lower()
        labels = {int(k): str(v) for k, v in self.model.config.id2label.items()}
        matches = [k for k, v in labels.items() if v.lower() == wanted]
        if len(matches) != 1:
            raise ValueError(
                f"{spec.id}: config.id2label {labels} has no single label {wanted!r}; "
                "set options.unsafe_label"
            )
        self.unsafe_index = matches[0]
        self.template = load_prompt("classifier")
        self.prompt_version = f"classifier:{self.template.version}:{labels[self.unsafe_index]}"
        self._torch = torch

    def _batch(self, items: Sequence[GuardInput]) -> list[GuardJudgment]:
        torch = self._torch
        texts = [self.template.render(prompt=it.prompt, response=it.response) for it in items]
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True)
        with torch.inference_mode():
            logits = self.model(**enc.to(self.device)).logits.float()
        probs = torch.softmax(logits, dim=-1)[:, self.unsafe_index].tolist()
        return [
            GuardJudgment(p_unsafe=min(1.0, max(0.0, p)), raw=f"{p:.6g}")
            if math.isfinite(p)
            else GuardJudgment(None, raw=str(p), error="classifier produced a non-finite score")
            for p in probs
        ]

    def judge(self, items: Sequence[GuardInput]) -> list[GuardJudgment]:
        out: list[GuardJudgment] = []
        for chunk in chunked(items, self.spec.batch_size):
            out.extend(
                run_isolated(
                    self._batch, chunk, lambda exc: GuardJudgment(None, error=error_text(exc))
                )
            )
        return out
