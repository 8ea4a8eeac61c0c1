"""What extraction costs, measured without downloading a model (chapter 3, appendix "Under the hood").

A backbone's FLOPs per image are exact: PyTorch's FLOP counter runs it on the `meta` device, which computes only
output shapes (no memory, no weights). A device's rate is measured on the work that dominates a ViT's forward
pass, one transformer block at its real width and token count; hours = images · FLOP/image / rate / 3600.
SAE training is priced in grid.py (`measure_step`, `gpu_hours`).
"""
from __future__ import annotations

import time
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from . import backbones
from .embed import autocast_dtype


def flop_profile(name: str) -> dict[str, Any]:
    """Backbone `name` at its real architecture, built on the `meta` device (shapes only), with its exact cost:
    {"model", "pretrained tag", "input", "embedding d", "parameters (M)", "GFLOP / image"}, the FLOPs those of
    one image through the forward pass (a multiply-add counts 2)."""
    with torch.device("meta"):
        meta = backbones.get(name, weights="random")
    with FlopCounterMode(display=False) as counter:
        z = meta.model(torch.empty(1, *meta.input_size, device="meta"))      # (1, d)
    return {"model": meta.model_id, "pretrained tag": backbones.SPECS[name].tag,
            "input": "×".join(map(str, meta.input_size)), "embedding d": z.shape[1],
            "parameters (M)": sum(p.numel() for p in meta.model.parameters()) / 1e6,
            "GFLOP / image": counter.get_total_flops() / 1e9}


def block_flop_rate(device: str | torch.device = "cpu", batch: int | None = None, name: str = "vit-l-16",
                    repeats: int = 3) -> dict[str, Any]:
    """FLOP/s that `device` sustains on one transformer block of the timm ViT `name` (its first, random weights)
    over (batch, T, width) tokens, under the autocast extraction uses there (`embed.autocast_dtype`):

        rate = FLOPs of the block (FlopCounterMode, on the meta device) / the best of `repeats` timed passes

    after one untimed warm-up pass.

    batch defaults to 4 on a CPU, 256 elsewhere. Returns {"tokens": (B, T, width), "flops", "seconds", "rate"}."""
    device = torch.device(device)
    with torch.device("meta"):
        vit = backbones.get(name, weights="random").model
    if not hasattr(vit, "blocks"):
        kind = f"{type(vit).__module__}.{type(vit).__name__}"
        raise ValueError(f"block_flop_rate needs a timm VisionTransformer; {name!r} builds {kind}")
    batch = batch or (4 if device.type == "cpu" else 256)
    shape = (batch, vit.patch_embed.num_patches + vit.num_prefix_tokens, vit.embed_dim)   # patches + CLS
    block = vit.blocks[0]
    # counted on the meta device: a fused attention kernel of a real device may be invisible to the counter
    with FlopCounterMode(display=False) as counter:
        block(torch.empty(*shape, device="meta"))
    flops = counter.get_total_flops()
    block = block.to_empty(device=device)
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.02)
    tokens = torch.randn(*shape, device=device)
    amp = autocast_dtype(device)
    times = []
    with torch.inference_mode(), torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
        for _ in range(repeats + 1):                  # the first pass warms up and is not timed
            _sync(device)
            start = time.perf_counter()
            block(tokens)
            _sync(device)
            times.append(time.perf_counter() - start)
    best = min(times[1:])
    return {"tokens": shape, "flops": flops, "seconds": best, "rate": flops / best}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def extraction_hours(images: int, gflop_per_image: float, flops_per_second: float) -> float:
    """hours = images · GFLOP/image · 10⁹ / (FLOP/s) / 3600: compute only (decoding and streaming not counted)."""
    return images * gflop_per_image * 1e9 / flops_per_second / 3600
