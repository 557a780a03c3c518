"""Benchmark: the Spark batched-inference helper vs. the same model in a plain Python loop.

CPU mode (default) builds the tiny models, then in one run measures rows/s of

* the baseline: the model loaded in this process and called batch by batch in a loop
  (decode + model call, ``--batch-size`` rows per call, the same code path the workers use);
* ``run_inference`` on local Spark, cold (Python workers start, import torch and load the
  model) and warm (reused workers keep the model), forcing every row with a ``noop`` write;

and prints Spark's overhead as the ratio warm-Spark / loop. Both sides get the same cores:
the loop's torch uses ``--cores`` threads; Spark runs ``local[--cores]`` with one core per
task. ``--task`` picks the model: embed_image (tiny CLIP), guard (tiny classifier) or chat
(tiny Llama, 8 new tokens).

    python bench/inference.py                         # embed_image, 2048 rows
    python bench/inference.py --task guard --rows 4096
    python bench/inference.py --quick

GPU mode (``--gpu``) measures open_clip ViT-L-14 image embedding on one GPU in bf16
(random weights, ``pretrained=None``; nothing is downloaded): the model-only ceiling on
pre-decoded batches, and end-to-end images/s from JPEG bytes with decoding on one thread
(the straightforward baseline) vs. ``--threads`` decode threads overlapping the GPU.

    python bench/inference.py --gpu --images 8192 --threads 12

Measured on one H100 (16 cores), 640x480 JPEGs: model only 2230 images/s; plain loop
75-105 images/s; embed_images with 4 / 8 / 12 / 16 decode threads 500 / 820 / 955 / 456
images/s (16 threads starve the thread driving the GPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

_TASK_MODEL = {"embed_image": "tiny-clip", "guard": "tiny-classifier", "chat": "tiny-llama"}


def synthetic_images(n: int, size: tuple[int, int], fmt: str, seed: int = 0) -> list[bytes]:
    """Smooth gradients plus noise: compress like photos, not like flat colour or pure noise.
    64 distinct images are repeated (decoding costs the same; generating them does not)."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out: list[bytes] = []
    for _ in range(min(n, 64)):
        a, b, c = rng.uniform(0.2, 1.0, 3)
        base = np.stack([xx / w * 255 * a, yy / h * 255 * b, (xx + yy) / (w + h) * 255 * c], -1)
        img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(
            buf, format=fmt, quality=90
        ) if fmt == "JPEG" else Image.fromarray(img).save(buf, format=fmt)
        out.append(buf.getvalue())
    return [out[i % len(out)] for i in range(n)]


def request_rows(task: str, n: int) -> tuple[list[tuple[Any, ...]], str]:
    if task == "embed_image":
        images = synthetic_images(min(n, 256), (64, 64), "PNG")
        return [
            (f"r{i}", images[i % len(images)]) for i in range(n)
        ], "request_id string, image binary"
    if task == "guard":
        rows = [
            (f"r{i}", f"How do I do thing {i}?", f"Here is step {i % 7}: " + "details " * (i % 13))
            for i in range(n)
        ]
        return rows, "request_id string, prompt string, response string"
    msgs = [
        json.dumps([{"role": "user", "content": f"Question {i}: what happens next?"}])
        for i in range(n)
    ]
    return [(f"r{i}", m) for i, m in enumerate(msgs)], "request_id string, messages_json string"


def loop_baseline(
    task: str, spec: Any, rows: list[tuple[Any, ...]], batch: int, sampling: Any
) -> float:
    """Seconds to run every row through the model in this process, batch by batch."""
    from vlsafety.models import ChatRequest, GuardInput, load_model, messages_from_json, to_pil

    model: Any = load_model(spec)
    start = time.perf_counter()
    for i in range(0, len(rows), batch):
        chunk = rows[i : i + batch]
        if task == "embed_image":
            model.embed_images([to_pil(r[1]) for r in chunk])
        elif task == "guard":
            model.judge([GuardInput(r[1], r[2]) for r in chunk])
        else:
            model.generate(
                [ChatRequest(messages=messages_from_json(r[1]), sampling=sampling) for r in chunk]
            )
    return time.perf_counter() - start


def cpu_bench(args: argparse.Namespace) -> None:
    import torch

    from vlsafety.config import SparkConfig
    from vlsafety.inference import run_inference
    from vlsafety.models import Resources, SamplingParams, load_model_specs
    from vlsafety.models.tiny import make_tiny
    from vlsafety.spark import get_spark

    tiny_dir = Path(args.tiny_dir) if args.tiny_dir else Path(tempfile.mkdtemp()) / "tiny"
    specs = load_model_specs(make_tiny(tiny_dir))
    spec = dataclasses.replace(
        specs[_TASK_MODEL[args.task]], batch_size=args.batch_size, resources=Resources(cpus=1)
    )
    sampling = SamplingParams(max_tokens=8) if args.task == "chat" else None
    rows, schema = request_rows(args.task, args.rows)

    torch.set_num_threads(args.cores)
    loop_s = loop_baseline(args.task, spec, rows, args.batch_size, sampling)

    spark = get_spark(
        SparkConfig(
            master=f"local[{args.cores}]",
            app_name="bench-inference",
            driver_memory="2g",
            shuffle_partitions=args.cores,
            arrow_batch_size=args.batch_size,
            progress_bar=False,
        )
    )
    df = spark.createDataFrame(rows, schema).repartition(args.cores * 2).cache()
    df.count()
    times = []
    for _ in range(2):  # cold (workers load the model), then warm (models cached)
        t0 = time.perf_counter()
        out = run_inference(df, spec, args.task, batch_size=args.batch_size, sampling=sampling)
        out.write.format("noop").mode("overwrite").save()
        times.append(time.perf_counter() - t0)
    errors = (
        run_inference(df, spec, args.task, sampling=sampling).filter("error IS NOT NULL").count()
    )
    spark.stop()

    n = len(rows)
    print(f"task {args.task} on {spec.id}: {n} rows, batch {args.batch_size}, {args.cores} cores")
    print(f"  plain Python loop      {n / loop_s:10.1f} rows/s  ({loop_s:.2f} s)")
    print(
        f"  Spark run_inference    {n / times[0]:10.1f} rows/s cold ({times[0]:.2f} s, workers load the model)"
    )
    print(f"  Spark run_inference    {n / times[1]:10.1f} rows/s warm ({times[1]:.2f} s)")
    print(f"  ratio warm Spark / loop: {loop_s / times[1]:.2f}x  (rows with errors: {errors})")


def gpu_bench(args: argparse.Namespace) -> None:
    import torch

    from vlsafety.models import ModelSpec, load_embedder

    if not torch.cuda.is_available():
        sys.exit("--gpu needs a CUDA GPU")
    images = synthetic_images(args.images, (640, 480), "JPEG")
    base = ModelSpec(
        id="vit-l-14-random",
        role="embedder",
        backend="open_clip",
        arch="ViT-L-14",
        dtype="bfloat16",
        device="cuda",
        batch_size=args.batch_size,
        untrained=True,  # pretrained=None: random weights, nothing downloaded
    )
    print(
        f"{torch.cuda.get_device_name()}; {args.images} JPEG 640x480, batch {args.batch_size}, bf16"
    )

    single = load_embedder(dataclasses.replace(base, options={"decode_threads": 1}))
    model = single._model  # type: ignore[attr-defined]
    pixels = torch.randn(args.batch_size, 3, 224, 224, device="cuda", dtype=torch.bfloat16)
    with torch.inference_mode():
        for _ in range(3):
            model.encode_image(pixels)
        torch.cuda.synchronize()
        reps = max(1, args.images // args.batch_size)
        t0 = time.perf_counter()
        for _ in range(reps):
            model.encode_image(pixels)
        torch.cuda.synchronize()
    ceiling = reps * args.batch_size / (time.perf_counter() - t0)
    print(f"  model only (pre-decoded)      {ceiling:10.1f} images/s")

    def plain_loop() -> float:
        """The straightforward pipeline: open_clip's transform per image, then the model."""
        t = time.perf_counter()
        for i in range(0, len(images), args.batch_size):
            chunk = images[i : i + args.batch_size]
            x = torch.stack([preprocess(Image.open(io.BytesIO(b)).convert("RGB")) for b in chunk])
            with torch.inference_mode():
                model.encode_image(x.to("cuda", dtype=torch.bfloat16)).float().cpu()
        return args.images / (time.perf_counter() - t)

    def timed(embedder: Any) -> float:
        embedder.embed_images(images[: args.batch_size])  # warm-up
        torch.cuda.synchronize()
        t = time.perf_counter()
        embedder.embed_images(images)
        torch.cuda.synchronize()
        return args.images / (time.perf_counter() - t)

    preprocess = single._preprocess  # type: ignore[attr-defined]
    base_rate = plain_loop()
    one_rate = timed(single)
    del single
    threaded = load_embedder(dataclasses.replace(base, options={"decode_threads": args.threads}))
    rate = timed(threaded)
    print(f"  plain loop (open_clip transform, 1 thread) {base_rate:8.1f} images/s  (baseline)")
    print(f"  embed_images, 1 decode thread              {one_rate:8.1f} images/s")
    print(f"  embed_images, {args.threads:2d} decode threads             {rate:8.1f} images/s")
    print(
        f"  ratio {args.threads} threads / baseline: {rate / base_rate:.2f}x; "
        f"{rate / ceiling:.0%} of the model-only ceiling"
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", choices=sorted(_TASK_MODEL), default="embed_image")
    ap.add_argument("--rows", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--cores", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--tiny-dir", default=None, help="reuse/build tiny models here")
    ap.add_argument("--quick", action="store_true", help="512 rows")
    ap.add_argument("--gpu", action="store_true", help="ViT-L-14 on a CUDA GPU")
    ap.add_argument("--images", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=min(12, os.cpu_count() or 1))
    args = ap.parse_args(argv)
    if args.quick:
        args.rows, args.images = 512, 1024
    if args.gpu:
        args.batch_size = args.batch_size or 256
        gpu_bench(args)
    else:
        args.batch_size = args.batch_size or 64
        cpu_bench(args)


if __name__ == "__main__":
    main()
