"""Model plumbing of the preprocessing agent: embeddings and the LVLM verifier.

A model may be given as a ``ModelSpec`` (run on executors through
``vlsafety.inference.run_inference``, one model per Python worker — the way to go at
scale), as a loaded model, or, for the verifier, as a plain callable; loaded models and
callables are shipped to the Spark tasks (small models, tests, notebooks). ``vlsafety.models``/``inference`` are imported lazily
so this package stays importable without torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from vlsafety.preprocess._categorize import VerifierRequest, is_untrained
from vlsafety.taxonomy import Taxonomy

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = [
    "Embeddings",
    "class_vectors",
    "embed_inprocess",
    "is_spec",
    "verifier_callable",
]


def is_spec(model: Any) -> bool:
    """True for a ``vlsafety.models.ModelSpec`` (checked by duck type: no import)."""
    return type(model).__name__ == "ModelSpec" and hasattr(model, "role")


@dataclass
class Embeddings:
    """Image, text and joint embeddings of n samples; NaN rows where a modality is
    missing or the model failed on that row."""

    image: np.ndarray
    text: np.ndarray
    joint: np.ndarray
    model_id: str
    untrained: bool
    errors: int = 0

    def sample_vectors(self) -> np.ndarray:
        """The vector that stands for the sample: joint, else image, else text."""
        out = self.joint.copy()
        for alt in (self.image, self.text):
            missing = ~np.isfinite(out).all(axis=1)
            out[missing] = alt[missing]
        return out


def _nan(n: int, d: int) -> np.ndarray:
    return np.full((n, d), np.nan, dtype=np.float32)


def embed_inprocess(
    embedder: Any, images: Sequence[bytes | None], texts: Sequence[str | None], batch: int
) -> Embeddings:
    """Embed on the driver with a loaded Embedder. A failing batch is retried row by row
    so one undecodable image costs only its own embedding."""
    n = len(images)
    d = int(getattr(embedder, "dim", 0) or np.asarray(embedder.embed_texts(["x"])).shape[1])
    img, txt, joint = _nan(n, d), _nan(n, d), _nan(n, d)

    def run(idx: list[int], fn: Callable[[list[int]], Any], target: np.ndarray) -> int:
        bad = 0
        for s in range(0, len(idx), batch):
            chunk = idx[s : s + batch]
            try:
                target[chunk] = np.asarray(fn(chunk), dtype=np.float32)
            except Exception:  # isolate the failing row(s)
                for i in chunk:
                    try:
                        target[[i]] = np.asarray(fn([i]), dtype=np.float32)
                    except Exception:
                        bad += 1
        return bad

    with_img = [i for i in range(n) if images[i] is not None]
    with_txt = [i for i in range(n) if texts[i] is not None]
    both = [i for i in with_img if texts[i] is not None]
    errors = run(with_img, lambda ix: embedder.embed_images([images[i] for i in ix]), img)
    errors += run(with_txt, lambda ix: embedder.embed_texts([texts[i] for i in ix]), txt)
    errors += run(
        both,
        lambda ix: embedder.embed_pairs([images[i] for i in ix], [texts[i] for i in ix]),
        joint,
    )
    spec = getattr(embedder, "spec", None)
    model_id = str(getattr(spec, "id", None) or type(embedder).__name__)
    return Embeddings(img, txt, joint, model_id, is_untrained(embedder), errors)


def class_vectors(embedder: Any, spark: SparkSession, taxonomy: Taxonomy) -> list[np.ndarray]:
    """Per category, the text embeddings of its description texts
    (:meth:`Taxonomy.class_texts`: the category first, then each subcategory)."""
    texts = taxonomy.class_texts()
    flat = [t for group in texts for t in group]
    if is_spec(embedder):
        from vlsafety.inference import run_inference

        ids = [str(i) for i in range(len(flat))]
        df = spark.createDataFrame(pa.table({"request_id": ids, "text": flat}))
        got = run_inference(df, embedder, "embed_text").select("request_id", "embedding").toArrow()
        vec = dict(
            zip(
                got.column("request_id").to_pylist(),
                got.column("embedding").to_pylist(),
                strict=True,
            )
        )
        if any(vec.get(i) is None for i in ids):
            raise RuntimeError("the embedder failed on the taxonomy descriptions")
        allv = np.array([vec[i] for i in ids], dtype=np.float32)
    else:
        allv = np.asarray(embedder.embed_texts(flat), dtype=np.float32)
    out, s = [], 0
    for group in texts:
        out.append(allv[s : s + len(group)])
        s += len(group)
    return out


Answerer = Callable[[Sequence[VerifierRequest]], Sequence[str | None]]


def verifier_callable(verifier: Any) -> Answerer:
    """A callable (requests → answers) for a ChatModel with ``generate`` or a plain
    callable (returned as is); it runs inside a Spark task. Greedy decoding, a few
    tokens: the verifier only has to name a category. (A ``ModelSpec`` verifier goes
    through ``run_inference`` instead, one model per worker.)"""
    if is_spec(verifier):
        raise ValueError("a ModelSpec verifier runs through vlsafety.inference.run_inference")
    if hasattr(verifier, "generate"):
        from vlsafety.models import ChatMessage, ChatRequest, SamplingParams

        sampling = SamplingParams(temperature=0.0, max_tokens=24)

        def via_model(reqs: Sequence[VerifierRequest]) -> list[str | None]:
            results = verifier.generate(
                [
                    ChatRequest(
                        messages=(ChatMessage("user", r.prompt),), image=r.image, sampling=sampling
                    )
                    for r in reqs
                ]
            )
            return [res.text if res.error is None and not res.refused else None for res in results]

        return via_model
    if callable(verifier):
        return verifier  # type: ignore[no-any-return]
    raise ValueError(
        f"verifier must be a ModelSpec, a ChatModel or a callable, got {type(verifier).__name__}"
    )
