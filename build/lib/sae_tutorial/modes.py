"""Which scale a chapter runs at: SAE_TUTORIAL_MODE = auto | small | colab | full (design.md §2).

    small  CPU minutes: Fashion-MNIST and synthetic data, the embedded backbone (CI, the book build)
    colab  one GPU, ≤ 20 min a chapter: the three real backbones on an ungated ImageNet subset
    full   the paper's scale; never chosen implicitly
    auto   colab when CUDA is available, small otherwise (the default)
"""
from __future__ import annotations

import os

import torch

from . import _checks

MODES = ("auto", "small", "colab", "full")


def get_mode(mode: str | None = None) -> str:
    """Resolve `mode` (or $SAE_TUTORIAL_MODE, default "auto") to "small", "colab" or "full".

    In small mode the Hugging Face hub is switched off (HF_HUB_OFFLINE=1) so an accidental download fails fast.
    """
    mode = mode if mode is not None else os.environ.get("SAE_TUTORIAL_MODE", "auto")
    mode = _checks.choice(str(mode).strip().lower(), "SAE_TUTORIAL_MODE", MODES)
    if mode == "auto":
        mode = "colab" if torch.cuda.is_available() else "small"
    if mode == "small":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return mode
