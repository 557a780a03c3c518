"""Benchmark: the generation and augmentation agents vs. their straightforward loops.

1. *Generation with a model.* The agent batches across samples: one describe call for
   all samples, then one call per strategy (the backend splits calls into
   ``batch_size`` chunks). The baseline calls the agent one sample at a time, as a
   per-row UDF would (1 + 3 model calls per sample, batch size 1). The model is the
   project's tiny Qwen2-VL through the real ``hf`` backend on CPU, marked trusted so its
   answers are parsed (they are noise, so every unit ends as a reject; the model calls
   are the same either way). Both sides see the same samples and settings.
2. *Image augmentation.* The agent decodes each parent image once and shares it among
   its variants; the baseline decodes the parent's bytes for every variant.

    python bench/generation.py            # 32 samples, 64 parents x 4 image variants
    python bench/generation.py --quick    # 8 samples, 16 parents x 4 image variants

Prints, per part, both times, rows/s and the ratio baseline / agent.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _photo(seed: int, size: int = 256) -> bytes:
    """A smooth gradient plus noise, PNG-encoded (compresses like a photo)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    base = np.stack([xx, yy, (xx + yy) / 2], axis=2) * (255.0 / size)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, format="PNG")
    return buf.getvalue()


def bench_generation(n: int, models_dir: Path) -> None:
    import torch

    from vlsafety.generate import GenerateOptions, GenerationAgent, PoolSample, generate_for_sample
    from vlsafety.models import load_chat_model, load_model_specs
    from vlsafety.models.tiny import make_tiny

    torch.set_num_threads(2)
    specs = load_model_specs(make_tiny(models_dir))
    spec = dataclasses.replace(specs["tiny-qwen2-vl"], untrained=False, batch_size=8)
    chat = load_chat_model(spec)
    opts = GenerateOptions(methods=[], include_original=False, parse_retries=0, max_new_tokens=16)
    images = [_photo(i, 64) for i in range(n)]
    samples = [
        PoolSample(
            f"s{i}",
            hashlib.sha256(b).hexdigest(),
            f"How do I do thing number {i}?",
            "legality",
            "weapons",
        )
        for i, b in enumerate(images)
    ]
    by_id = {s.image_id: b for s, b in zip(samples, images, strict=True)}
    assert all(s.image_id for s in samples)
    agent = GenerationAgent(opts, chat)
    agent.run(samples[:2], by_id)  # warm up torch kernels on both paths' shapes
    t0 = time.perf_counter()
    loop = [generate_for_sample(s, chat, options=opts, image=by_id[s.image_id]) for s in samples]
    t_loop = time.perf_counter() - t0
    t0 = time.perf_counter()
    batched = agent.run(samples, by_id)
    t_agent = time.perf_counter() - t0
    units = sum(len(r.units) for r in batched)
    assert units == sum(len(r.units) for r in loop) == 3 * n
    print(f"generation with a model ({n} samples, {units} units, tiny Qwen2-VL on CPU)")
    print(f"  one sample at a time : {t_loop:8.2f} s  {n / t_loop:8.1f} samples/s")
    print(f"  agent, batched       : {t_agent:8.2f} s  {n / t_agent:8.1f} samples/s")
    print(f"  ratio (loop / agent) : {t_loop / t_agent:8.2f}x")


def bench_augmentation(parents: int, variants: int) -> None:
    from vlsafety.augment import AugmentAgent, AugmentOptions, apply_op
    from vlsafety.generate import GenerateOptions, PoolSample, encode_png, generate_for_sample
    from vlsafety.models import to_pil

    opts = GenerateOptions(strategies=["modality_dependence"], methods=[], include_original=False)
    images = {}
    cands = []
    for i in range(parents):
        data = _photo(1000 + i)
        image_id = hashlib.sha256(data).hexdigest()
        images[image_id] = data
        sample = PoolSample(f"p{i}", image_id, "What is shown here?", "legality", "weapons")
        cands.extend(generate_for_sample(sample, options=opts).candidates)
    aug = AugmentOptions(text_variants=0, image_variants=variants, ops_per_variant=2)
    agent = AugmentAgent(aug)
    plans = [(c, u, agent.plan(c, u)) for c in cands for u in agent.units(c)]
    t0 = time.perf_counter()
    baseline = []
    for c, _, chain in plans:
        img = to_pil(images[c.image_id])  # decoded again for every variant
        for name, seed, settings in chain:
            img, _ = apply_op(name, img, seed, settings)
        baseline.append(encode_png(img))
    t_loop = time.perf_counter() - t0
    t0 = time.perf_counter()
    results = agent.run(cands, images)
    t_agent = time.perf_counter() - t0
    rows = [c for r in results for c in r.candidates]
    assert sorted(hashlib.sha256(b).hexdigest() for b in baseline) == sorted(
        c.image_id for c in rows
    )
    n = len(rows)
    print(f"image augmentation ({parents} parents x {variants} variants, 256x256, 2 ops each)")
    print(f"  decode per variant   : {t_loop:8.2f} s  {n / t_loop:8.1f} rows/s")
    print(f"  agent, shared decode : {t_agent:8.2f} s  {n / t_agent:8.1f} rows/s")
    print(f"  ratio (loop / agent) : {t_loop / t_agent:8.2f}x  (identical bytes)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (CI)")
    ap.add_argument("--samples", type=int, default=None, help="samples for the model part")
    ap.add_argument("--parents", type=int, default=None, help="parents for augmentation")
    ap.add_argument("--variants", type=int, default=4, help="image variants per parent")
    ap.add_argument("--models-dir", type=Path, default=None, help="where tiny models live")
    args = ap.parse_args()
    n = args.samples or (8 if args.quick else 32)
    parents = args.parents or (16 if args.quick else 64)
    with tempfile.TemporaryDirectory() as tmp:
        bench_generation(n, args.models_dir or Path(tmp) / "tiny")
    bench_augmentation(parents, args.variants)


if __name__ == "__main__":
    main()
