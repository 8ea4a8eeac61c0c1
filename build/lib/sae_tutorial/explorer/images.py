"""Where the explorer gets image n from: an in-memory array or tensor, a list of PIL images, or an st.datasets
ImageDataset (read lazily, so ImageNet-sized sets never need to fit in memory)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..datasets import ImageDataset


class ImageSource:
    """Image n of a data set as a square RGB thumbnail.

    images: an (N, H, W), (N, H, W, C) or (N, C, H, W) array or tensor (C = 1 or 3; uint8, or floats in [0, 1]),
    a sequence of PIL images, or an `st.datasets` ImageDataset.
    """

    def __init__(self, images: Any) -> None:
        if isinstance(images, torch.Tensor):
            images = images.detach().cpu().numpy()
        if isinstance(images, np.ndarray):
            if images.ndim == 4 and images.shape[1] in (1, 3) and images.shape[-1] not in (1, 3):
                images = images.transpose(0, 2, 3, 1)                           # (N, C, H, W) -> (N, H, W, C)
            if not (images.ndim == 3 or images.ndim == 4 and images.shape[-1] in (1, 3)):
                raise ValueError("images as an array must be (N, H, W), (N, H, W, C) or (N, C, H, W) with C = 1 "
                                 f"or 3, got shape {images.shape}")
            if images.dtype != np.uint8 and not np.issubdtype(images.dtype, np.floating):
                raise TypeError(f"images must be uint8 or floating, got dtype {images.dtype}")
        elif not isinstance(images, (ImageDataset, Sequence)) or isinstance(images, (str, bytes)):
            raise TypeError("images must be an array, a tensor, a sequence of PIL images or an ImageDataset, "
                            f"got {type(images).__name__}")
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def pil(self, n: int) -> Image.Image:
        """Image n as an RGB PIL image."""
        if isinstance(self.images, ImageDataset):
            image = self.images.load(n)[0]
        else:
            image = self.images[n]
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8:
                if image.size and not (image.min() >= 0 and image.max() <= 1):
                    raise ValueError(f"image {n} is floating with values outside [0, 1]; pass uint8 or [0, 1] floats")
                image = (image * 255).round().astype(np.uint8)
            image = Image.fromarray(image.squeeze(-1) if image.ndim == 3 and image.shape[-1] == 1 else image)
        if not isinstance(image, Image.Image):
            raise TypeError(f"image {n} is a {type(image).__name__}, not a PIL image or an array")
        return image.convert("RGB")

    def thumbnail(self, n: int, size: int) -> Image.Image:
        """Image n resized to size x size pixels (nearest-neighbour when enlarging, so small images stay sharp)."""
        image = self.pil(n)
        resample = Image.Resampling.NEAREST if max(image.size) <= size else Image.Resampling.LANCZOS
        return image.resize((size, size), resample)
