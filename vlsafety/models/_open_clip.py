"""The ``open_clip`` embedder backend (CLIP image and text towers)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from vlsafety.models._images import to_pil
from vlsafety.models._spec import ModelSpec
from vlsafety.models._torch import resolve_torch_device

__all__ = ["OpenClipEmbedder", "joint_embedding", "l2_normalize"]

log = logging.getLogger(__name__)

_PRECISION = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "auto": "fp32"}


def l2_normalize(x: np.ndarray, *, what: str = "vector") -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm, as float32. A zero row is a ``ValueError``
    (its direction is undefined; returning it would poison cosine distances)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    if np.any(norms <= 1e-12) or not np.all(np.isfinite(norms)):
        raise ValueError(f"cannot normalise a zero or non-finite {what}")
    return (x / norms).astype(np.float32)


def joint_embedding(image_vecs: np.ndarray, text_vecs: np.ndarray) -> np.ndarray:
    """Joint image-text embedding E(s) of VLSafetyBencher Eq. 4: the normalised mean of the
    unit image vector and the unit text vector. With both inputs unit-length, the cosine of
    two joint vectors weighs image and text similarity equally."""
    mean = (l2_normalize(image_vecs, what="image embedding") + l2_normalize(text_vecs)) / 2
    # Float32 rounding leaves ~1e-8 of a cancelled pair; normalising that noise would give
    # an arbitrary direction, so near-opposite image and text vectors are refused.
    if np.any(np.linalg.norm(mean, axis=-1) < 1e-6):
        raise ValueError("cannot form a joint embedding: image and text vectors cancel")
    return l2_normalize(mean, what="joint embedding")


def _split_preprocess(
    preprocess: Any,
) -> tuple[Callable[[Any], Any], tuple[float, ...], tuple[float, ...]] | None:
    """Split open_clip's eval transform (PIL steps, to-tensor, Normalize) into its PIL part
    and the normalisation constants, or None for any other shape of transform.

    The PIL part (resize, crop) runs on the decode threads and yields uint8 arrays; the
    float work runs batched on the device. Same operations, so the same pixels."""
    from torchvision import transforms as T

    steps = getattr(preprocess, "transforms", None)
    if not steps or len(steps) < 3:
        return None
    *head, to_tensor, norm = steps
    if type(to_tensor).__name__ not in ("ToTensor", "MaybeToTensor"):
        return None
    if not isinstance(norm, T.Normalize) or getattr(norm, "inplace", False):
        return None
    return T.Compose(head), tuple(float(m) for m in norm.mean), tuple(float(s) for s in norm.std)


class OpenClipEmbedder:
    """CLIP via ``open_clip.create_model_and_transforms(arch, pretrained=path or tag)``.

    Weights load with ``weights_only=True``. ``arch_config`` (a model-config JSON) is
    registered with ``open_clip.add_model_config`` first, so custom architectures such as
    the tiny test model load through the same call as ViT-L-14.

    Image decoding and preprocessing run on ``options.decode_threads`` threads (default:
    the task's ``resources.cpus``); the next batch is decoded while the current one is
    encoded, because on a GPU the JPEG decode, not the ViT, bounds throughput.
    """

    def __init__(self, spec: ModelSpec) -> None:
        import open_clip
        import torch

        if spec.backend != "open_clip":
            raise ValueError(f"{spec.id}: not an open_clip spec (backend {spec.backend!r})")
        self.spec = spec
        if spec.arch_config:
            if not os.path.isfile(spec.arch_config):
                raise FileNotFoundError(f"{spec.id}: arch_config {spec.arch_config} not found")
            open_clip.add_model_config(spec.arch_config)
        assert spec.arch is not None  # validated by ModelSpec
        pretrained = spec.path or spec.pretrained
        if spec.path and not os.path.exists(spec.path):
            raise FileNotFoundError(f"{spec.id}: checkpoint {spec.path} not found")
        if pretrained is None:
            log.warning("%s: no weights given, using random init (untrained)", spec.id)
        self.device = resolve_torch_device(spec.device)
        model, _, preprocess = open_clip.create_model_and_transforms(
            spec.arch,
            pretrained=pretrained,
            precision=_PRECISION[spec.dtype],
            device=self.device,
            weights_only=True,
            **spec.extra,
        )
        model.eval()
        self._model = model
        self._preprocess: Callable[[Any], Any] = preprocess
        self._tokenizer = open_clip.get_tokenizer(spec.arch)
        # open_clip keeps a few parameters (logit_scale) in fp32 under bf16/fp16 precision,
        # so the input dtype comes from the spec, not from an arbitrary parameter.
        self._dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(
            spec.dtype, torch.float32
        )
        self._torch = torch
        threads = int(spec.options.get("decode_threads", spec.resources.cpus))
        self._pool = ThreadPoolExecutor(threads, "clip-decode") if threads > 1 else None
        self._pin = self.device.startswith("cuda")
        self._split = _split_preprocess(preprocess)
        if self._split is not None:
            shape = (1, 3, 1, 1)
            self._norm = (
                torch.tensor(self._split[1], dtype=torch.float32, device=self.device).view(shape),
                torch.tensor(self._split[2], dtype=torch.float32, device=self.device).view(shape),
            )
        # open_clip models do not expose their embedding width uniformly; one probe does.
        self.dim = 0
        self.dim = int(self.embed_texts(["x"]).shape[1])

    def _chunks(self, n: int) -> list[slice]:
        b = self.spec.batch_size
        return [slice(i, min(i + b, n)) for i in range(0, n, b)]

    def _prepare(self, image: Any) -> Any:
        """One image ready for batching: uint8 HxWx3 (split preprocessing) or a tensor."""
        pil = to_pil(image)
        if self._split is None:
            return self._preprocess(pil)
        arr = np.asarray(self._split[0](pil), dtype=np.uint8)
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"preprocessing gave an image of shape {arr.shape}, not HxWx3")
        return arr

    def _decode(self, images: Sequence[Any]) -> Callable[[], list[Any]]:
        """Start decoding ``images``; the returned call waits for the results."""
        if self._pool is None:
            return lambda: [self._prepare(im) for im in images]
        futures = [self._pool.submit(self._prepare, im) for im in images]
        return lambda: [f.result() for f in futures]

    def _pixels(self, prepared: list[Any]) -> Any:
        """A batch on the device in the model's dtype."""
        torch = self._torch
        if self._split is None:
            batch = torch.stack(prepared)
        else:
            batch = torch.from_numpy(np.stack(prepared))  # uint8: 4x fewer bytes to copy
        if self._pin:
            batch = batch.pin_memory()
        batch = batch.to(self.device, non_blocking=True)
        if self._split is not None:
            # to_tensor + Normalize, the same float32 operations, batched on the device
            mean, std = self._norm
            batch = batch.permute(0, 3, 1, 2).float().div_(255).sub_(mean).div_(std)
        return batch.to(self._dtype)

    def embed_images(self, images: Sequence[Any]) -> np.ndarray:
        """Unit image vectors, shape (n, dim), float32. Bytes are decoded here."""
        torch = self._torch
        out = []
        chunks = self._chunks(len(images))
        pending = self._decode(images[chunks[0]]) if chunks else None
        for i in range(len(chunks)):
            assert pending is not None
            prepared = pending()
            # Decode batch i+1 on the threads while batch i runs on the device.
            pending = self._decode(images[chunks[i + 1]]) if i + 1 < len(chunks) else None
            with torch.inference_mode():
                feats = self._model.encode_image(self._pixels(prepared))
            out.append(feats.float().cpu().numpy())
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalize(np.concatenate(out), what="image embedding")

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Unit text vectors, shape (n, dim), float32 (texts truncated to the context length)."""
        torch = self._torch
        for t in texts:
            if not isinstance(t, str):
                raise ValueError(f"texts must be strings, got {type(t).__name__}")
        out = []
        for sl in self._chunks(len(texts)):
            tokens = self._tokenizer(list(texts[sl])).to(self.device)
            with torch.inference_mode():
                feats = self._model.encode_text(tokens)
            out.append(feats.float().cpu().numpy())
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalize(np.concatenate(out), what="text embedding")

    def embed_pairs(self, images: Sequence[Any], texts: Sequence[str]) -> np.ndarray:
        """Joint embeddings (see :func:`joint_embedding`), shape (n, dim)."""
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} texts")
        return joint_embedding(self.embed_images(images), self.embed_texts(texts))
