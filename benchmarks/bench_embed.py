"""Extraction throughput next to the bare forward throughput of the same model on the same device.

    python benchmarks/bench_embed.py                     # CPU: a tiny ViT, EfficientNet-Lite0 and the embedded CNN
    python benchmarks/bench_embed.py --device cuda --backbone vit-l-16 --batch-size 256 --n 8192

Bare forward: the model alone on one preprocessed batch held on the device, repeated (the ceiling; autocast on
CUDA and the channels-last layout, as in extraction); the layout gain is its images/s over the same forward in
the NCHW layout. Extraction: `st.embed` over synthetic images at the model's input size, so it pays for
drawing the images, preprocessing them in DataLoader workers, the forward, and writing and hashing shards.
Random weights (offline). On CPU the model gets the cores the workers leave (torch threads = cores - workers),
as extraction there should be run. Each measurement is repeated, alternating, and the medians are printed:
images/s of both, their ratio (target ≥ 0.90), and the ratio of CPU seconds per image (this process and its
workers), which a shared machine disturbs less than wall time. Nothing is asserted.

Expect the embedded CNN to be far below 0.90: its forward costs microseconds, so the per-image PIL preprocessing
in the workers bounds extraction (about 2k images/s on two cores).
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial

import torch

import sae_tutorial as st
from sae_tutorial.embed import MEMORY_FORMAT, autocast_dtype, default_workers


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (DataLoader workers)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def timed(fn: Callable[[], int], device: torch.device) -> tuple[float, float]:
    """(images/s, CPU seconds per image) of fn(), which returns how many images it processed."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    n = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - wall), (cpu_seconds() - cpu) / n


def bare_forward(backbone: st.backbones.Backbone, batch_size: int, n: int, device: torch.device,
                 layout: torch.memory_format = MEMORY_FORMAT) -> int:
    """backbone.model alone on a fixed preprocessed batch in `layout`, n // batch_size times."""
    image, _ = st.datasets.get("synthetic", "train", n=1, image_size=backbone.input_size[-1]).load(0)
    x = backbone.preprocess(image).expand(batch_size, *backbone.input_size).contiguous().to(device)  # (B, C, H, W)
    x, backbone.model = x.to(memory_format=layout), backbone.model.to(memory_format=layout)
    amp = autocast_dtype(device)
    with torch.inference_mode(), torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
        for _ in range(n // batch_size):
            backbone.model(x)
    return n // batch_size * batch_size


def extraction(backbone: st.backbones.Backbone, batch_size: int, n: int, device: torch.device,
               workers: int) -> int:
    """st.embed over n synthetic images into a fresh cache."""
    dataset = st.datasets.get("synthetic", "train", n=n, image_size=backbone.input_size[-1])
    with tempfile.TemporaryDirectory() as out:
        st.embed(backbone, dataset, out_dir=out, batch_size=batch_size, shard_size=4 * batch_size,
                 num_workers=workers, device=device, progress=False)
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--backbone", action="append", help="repeatable (default: timm:vit_tiny_patch16_224, embedded)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--n", type=int, default=256, help="images per measurement")
    ap.add_argument("--num-workers", type=int, default=default_workers())
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) - args.num_workers))
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {where}; {args.num_workers} workers, batch {args.batch_size}, {args.n} images per run, "
          f"median of {args.repeat}")
    print(f"{'backbone':28s} {'forward img/s':>14s} {'extract img/s':>14s} {'ratio':>6s} {'CPU-time ratio':>15s} "
          f"{'layout gain':>12s}")
    for name in args.backbone or ["timm:vit_tiny_patch16_224", "efficientnet-lite0", "embedded"]:
        backbone = st.backbones.get(name, weights="random").to(device)
        bare_forward(backbone, args.batch_size, args.batch_size, device)                    # warm-up
        forward = partial(bare_forward, backbone, args.batch_size, args.n, device)
        extract = partial(extraction, backbone, args.batch_size, args.n, device, args.num_workers)
        nchw = partial(bare_forward, backbone, args.batch_size, args.n, device, torch.contiguous_format)
        runs = [(timed(forward, device), timed(extract, device), timed(nchw, device)) for _ in range(args.repeat)]
        (forward_rate, forward_cpu), (extract_rate, extract_cpu), (nchw_rate, _) = (
            [statistics.median(v) for v in zip(*side)] for side in zip(*runs))
        print(f"{name:28s} {forward_rate:14.1f} {extract_rate:14.1f} {extract_rate / forward_rate:6.2f} "
              f"{forward_cpu / extract_cpu:15.2f} {forward_rate / nchw_rate:12.2f}")


if __name__ == "__main__":
    main()
