"""open_clip embedder on the tiny checkpoint: unit vectors, batching, the joint embedding."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from vlsafety.models import (
    Embedder,
    ImageDecodeError,
    ModelSpec,
    joint_embedding,
    l2_normalize,
    load_embedder,
    load_model,
    to_pil,
)


def png(color: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def clip(tiny_specs: dict[str, ModelSpec]) -> Embedder:
    spec = dataclasses.replace(tiny_specs["tiny-clip"], batch_size=2)
    return load_embedder(spec)


def test_protocol_and_unit_vectors(clip: Embedder) -> None:
    assert isinstance(clip, Embedder)
    images = [png((255, 0, 0)), Image.new("RGB", (50, 50), (0, 0, 255)), png((0, 255, 0), (8, 90))]
    for vecs in (clip.embed_images(images), clip.embed_texts(["a cat", "a bomb", ""])):
        assert vecs.shape == (3, clip.dim) and vecs.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)
    assert clip.embed_images([]).shape == (0, clip.dim)


def test_batched_equals_one_by_one(clip: Embedder) -> None:
    # batch_size=2 splits five inputs into three calls; each must match a call of its own.
    images = [png((i * 50, 10, 200 - i * 30)) for i in range(5)]
    texts = [f"prompt number {i}" for i in range(5)]
    batched = clip.embed_images(images)
    single = np.concatenate([clip.embed_images([im]) for im in images])
    np.testing.assert_allclose(batched, single, atol=1e-5)
    np.testing.assert_allclose(
        clip.embed_texts(texts), np.concatenate([clip.embed_texts([t]) for t in texts]), atol=1e-5
    )


def test_split_preprocessing_gives_the_reference_pixels(clip: Embedder) -> None:
    # reference: open_clip's own eval transform applied to each image
    images = [png((i * 30, 200, 90)) for i in range(3)] + [Image.new("RGB", (17, 64), (5, 6, 7))]
    ref = torch.stack([clip._preprocess(to_pil(im)) for im in images])  # type: ignore[attr-defined]
    assert clip._split is not None  # type: ignore[attr-defined]
    got = clip._pixels([clip._prepare(im) for im in images])  # type: ignore[attr-defined]
    assert torch.equal(got, ref)


def test_threaded_decode_equals_sequential(
    tiny_specs: dict[str, ModelSpec], clip: Embedder
) -> None:
    spec = dataclasses.replace(tiny_specs["tiny-clip"], batch_size=2, options={"decode_threads": 3})
    threaded = load_embedder(spec)
    images = [png((i * 30, 255 - i * 20, 7)) for i in range(7)]
    np.testing.assert_allclose(threaded.embed_images(images), clip.embed_images(images), atol=1e-6)
    with pytest.raises(ImageDecodeError):
        threaded.embed_images([images[0], b"junk", images[1]])


def test_pairs_are_normalised_mean(clip: Embedder) -> None:
    images, texts = [png((10, 20, 30)), png((200, 100, 0))], ["one", "two"]
    ref = clip.embed_images(images) + clip.embed_texts(texts)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(clip.embed_pairs(images, texts), ref, atol=1e-5)
    with pytest.raises(ValueError, match="2 images but 1 texts"):
        clip.embed_pairs(images, texts[:1])


def test_loads_checkpoint_weights(tiny_specs: dict[str, ModelSpec], clip: Embedder) -> None:
    # The weights in use are the saved checkpoint's, not a fresh random init.
    saved = torch.load(str(tiny_specs["tiny-clip"].path), weights_only=True)
    live = clip._model.state_dict()  # type: ignore[attr-defined]
    assert all(torch.equal(saved[k], live[k]) for k in saved)
    again = load_model(tiny_specs["tiny-clip"])
    assert isinstance(again, Embedder)
    np.testing.assert_allclose(again.embed_texts(["x"]), clip.embed_texts(["x"]), atol=1e-6)


def test_bad_images_and_missing_weights(tiny_specs: dict[str, ModelSpec], clip: Embedder) -> None:
    with pytest.raises(ImageDecodeError, match="cannot decode image"):
        clip.embed_images([b"not an image"])
    with pytest.raises(ImageDecodeError, match="empty"):
        clip.embed_images([b""])
    with pytest.raises(ValueError, match="texts must be strings"):
        clip.embed_texts([None])  # type: ignore[list-item]
    missing = dataclasses.replace(tiny_specs["tiny-clip"], path="/nonexistent/ckpt.pt")
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        load_embedder(missing)
    with pytest.raises(ValueError, match="declared as a embedder, not a chat"):
        from vlsafety.models import load_chat_model

        load_chat_model(tiny_specs["tiny-clip"])


@settings(max_examples=50, deadline=None)
@given(
    arrays(np.float32, (3, 8), elements=st.floats(-10, 10, width=32)),
    arrays(np.float32, (3, 8), elements=st.floats(-10, 10, width=32)),
)
def test_joint_embedding_properties(a: np.ndarray, b: np.ndarray) -> None:
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    try:
        ua, ub = l2_normalize(a), l2_normalize(b)
        joint = joint_embedding(a, b)
    except ValueError:
        # only zero vectors or image/text vectors that cancel exactly are refused
        ua = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-30)
        ub = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-30)
        assert np.any(norms <= 1e-12) or np.any(np.linalg.norm(ua + ub, axis=1) <= 2e-6)
        return
    np.testing.assert_allclose(np.linalg.norm(joint, axis=1), 1.0, rtol=1e-4)
    # symmetric in image/text and equal cosine to both halves
    np.testing.assert_allclose(joint, joint_embedding(b, a), atol=1e-5)
    np.testing.assert_allclose((joint * ua).sum(1), (joint * ub).sum(1), atol=1e-4)


def test_tiny_clip_768_loads_and_embeds_768_d(tiny_specs: dict[str, ModelSpec]) -> None:
    """The scale-path embedder: ViT-L-14-sized vectors through the same open_clip loader."""
    spec = tiny_specs["tiny-clip-768"]
    assert spec.untrained and spec.backend == "open_clip"
    model = load_model(spec)
    assert isinstance(model, Embedder) and model.dim == 768
    images = [png((i * 40, 90, 200 - i * 30), (64 + i, 64)) for i in range(5)]
    texts = ["a kettle on a shelf", "", "x" * 500]  # empty and over-long texts included
    for vecs, n in ((model.embed_images(images), 5), (model.embed_texts(texts), 3)):
        assert vecs.shape == (n, 768) and vecs.dtype == np.float32
        assert np.isfinite(vecs).all()
        np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)
    assert np.linalg.matrix_rank(model.embed_images(images)) == 5  # distinct images differ
    joint = model.embed_pairs(images[:3], texts)
    assert joint.shape == (3, 768)
