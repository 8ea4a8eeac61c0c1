"""The explorer on what a command-line run wrote: `open_evaluation(folder)` for a folder of
`python -m sae_tutorial train` (its held-out rows) or `evaluate` (its --data rows)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..datasets import ImageDataset
from .precompute import encode, precompute
from .widget import LatentExplorer


class SubsetImages(Sequence):
    """Images rows[0], rows[1], ... of an ImageDataset, read lazily (a Sequence of PIL images for ImageSource)."""

    def __init__(self, dataset: ImageDataset, rows: Tensor | None) -> None:
        self.dataset, self.rows = dataset, rows

    def __len__(self) -> int:
        return len(self.dataset) if self.rows is None else len(self.rows)

    def __getitem__(self, i: int) -> Any:
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.dataset.load(i if self.rows is None else int(self.rows[i]))[0]


def evaluation_images(provenance: dict[str, Any], rows: Tensor | None) -> SubsetImages:
    """The images behind the recorded rows of an embedding cache, when st.datasets.get can open its data set from its
    name and split alone (fashion-mnist; others: pass `images=` to `open_evaluation`)."""
    from .. import datasets

    ds = provenance.get("dataset")
    if provenance.get("kind") != "embedding cache" or ds is None:
        raise ValueError(f"{provenance.get('path')} is not an embedding cache: pass images= (image n of each row)")
    dataset = datasets.get(ds["name"], ds["split"])
    recorded = {k: v for k, v in ds.items() if k not in ("classes",)}
    found = {k: v for k, v in dataset.info().items() if k in recorded}
    if found != recorded:
        raise ValueError(f"st.datasets.get({ds['name']!r}, {ds['split']!r}) is not the data set the cache embedded "
                         f"({recorded}); pass images= (image n of each row)")
    return SubsetImages(dataset, torch.arange(provenance["rows"]) if rows is None else rows)   # a cache may be a prefix


def open_evaluation(folder: str | Path, images: Any = None, *, top_n: int = 16, umap: bool | Any = False,
                    **options: Any) -> LatentExplorer:
    """A LatentExplorer on the SAE of a training or evaluation folder and the rows its report.json is about.

    images: image n of each of those rows (default: read from the data set the cache embedded, see
    `evaluation_images`). top_n, umap, options: as for LatentExplorer. The statistics come from one pass
    (`precompute`, MS in the SAE's input space); the folder's report.json has the full metrics.
    """
    from ..runs import evaluation_rows

    sae, source = evaluation_rows(folder)
    if images is None:
        images = evaluation_images(source.provenance, source.rows)
    stats = precompute(encode(sae, source.x), source.labels, embeddings=source.x, top_n=top_n,
                       class_names=source.classes)
    return LatentExplorer(sae, stats, images, source.labels, umap=umap, class_names=source.classes,
                          title=f"{Path(folder).name}: {type(sae).__name__}, {stats.n_samples:,} rows", **options)
