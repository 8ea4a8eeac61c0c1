"""Image data sets: one split of one data set as (PIL image, label) pairs in a fixed order.

    st.datasets.get("fashion-mnist", "train")                    Debian package, else a download, else an error
    st.datasets.get("synthetic", "train", n=2000)                coloured shapes drawn on the fly, 5 classes
    st.datasets.get("image-folder", "train", data_dir="photos")  class/xxx.jpg folders, via HF `datasets`
    st.datasets.get("imagenet-1k", "validation")                 HF hub, streaming (gated: `hf auth login`)
    st.datasets.get("open-images-v7", "validation", repo=..., classes="oidv7-class-descriptions.csv")

A label is an int class index (-1: none), or for multi-label sets (Open Images) a tuple of class indices;
`classes` names them. The order is fixed, so `keys(start)` can resume an interrupted pass at row `start`.
`keys()` yields cheap picklable keys (a row index, or a streamed record whose image is still encoded) and
`load(key)` turns one into (image, label): extraction decodes images in DataLoader workers that way.
"""
from __future__ import annotations

import csv
import gzip
import os
import re
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import _checks

Label = int | tuple[int, ...]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")   # Debian package dataset-fashion-mnist
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_MNIST_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60_000),
                       "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10_000)}
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
SHAPES = ["circle", "square", "triangle", "cross", "ring"]

# Hub data sets: where they live and which column holds the label(s). Open Images V7 has no official
# Hugging Face release: pass repo= (a copy with an image column and a list of label ids per image) and
# classes= (e.g. the official oidv7-class-descriptions.csv, which names each id).
HUB = {
    "imagenet-1k": {"repo": "ILSVRC/imagenet-1k", "label_column": "label"},
    "open-images-v7": {"repo": None, "label_column": "labels"},
}
NAMES = ("fashion-mnist", "synthetic", "image-folder", *HUB)


def cache_dir() -> Path:
    """Where the library keeps downloads, trained backbones and embeddings: $SAE_TUTORIAL_CACHE or
    ~/.cache/sae_tutorial."""
    return Path(os.environ.get("SAE_TUTORIAL_CACHE", Path.home() / ".cache" / "sae_tutorial")).expanduser()


def offline() -> bool:
    """True when the Hugging Face offline switches are on; the library then never tries the network."""
    switches = (os.environ.get(v, "0").lower() for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    return any(s in ("1", "true", "yes", "on") for s in switches)


class ImageDataset:
    """One split of one data set: `classes`, `multilabel`, `info()`, and rows as (PIL image, label)."""

    name: str
    split: str
    classes: list[str]
    multilabel: bool = False
    num_rows: int | None = None     # None when a stream does not say

    def keys(self, start: int = 0) -> Iterator[Any]:
        """Picklable keys of rows start, start+1, ... in the data set's fixed order (here: row indices)."""
        return iter(range(start, len(self)))

    def load(self, key: Any) -> tuple[Any, Label]:
        """(PIL image, label) of the row behind `key`."""
        raise NotImplementedError

    def source(self) -> dict[str, Any]:
        """Where the rows come from (revision, parameters): part of an embedding cache's identity."""
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "split": self.split, **self.source(),
                "classes": self.classes, "multilabel": self.multilabel}

    def __len__(self) -> int:
        if self.num_rows is None:
            raise TypeError(f"{self.name}/{self.split} is streamed and does not know its length")
        return self.num_rows

    def __iter__(self) -> Iterator[tuple[Any, Label]]:
        return map(self.load, self.keys())

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, split={self.split!r}, rows={self.num_rows}, "
                f"classes={len(self.classes)})")


def _split(split: str, options: tuple[str, ...]) -> str:
    return _checks.choice(split, "split", options)


# ---------------------------------------------------------------- Fashion-MNIST
def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip) as a uint8 array; clear errors for a wrong or truncated file."""
    try:
        with gzip.open(path) as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"{path} is not a readable gzip IDX file (corrupt or truncated?): {e}") from e
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise ValueError(f"{path} is not a uint8 IDX file")
    ndim = raw[3]
    shape = tuple(int(s) for s in np.frombuffer(raw, ">u4", ndim, 4))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != np.prod(shape):
        raise ValueError(f"{path} holds {data.size} values, its header says {shape} (truncated?)")
    return data.reshape(shape)


def _fashion_mnist_file(name: str) -> Path:
    """The Debian package's copy of `name`, else the cache's, else a fresh download, else a clear error."""
    for folder in (FASHION_MNIST_DIR, cache_dir() / "fashion-mnist"):
        if (folder / name).is_file():
            return folder / name
    how = ("Install it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu; `make system` does it), "
           f"or put the four IDX .gz files in {cache_dir() / 'fashion-mnist'}")
    if offline():
        raise FileNotFoundError(f"Fashion-MNIST file {name} not found and HF_HUB_OFFLINE is set. {how}.")
    target = cache_dir() / "fashion-mnist" / name
    from .checkpoint import atomic_write
    try:
        with urllib.request.urlopen(FASHION_MNIST_URL + name, timeout=60) as r:
            atomic_write(target, lambda tmp: tmp.write_bytes(r.read()))
    except OSError as e:
        raise FileNotFoundError(f"Fashion-MNIST file {name} not found and its download failed ({e}). {how}.") from e
    return target


def fashion_mnist_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 of Fashion-MNIST's "train" (60k) or "test" (10k) split."""
    images_file, labels_file, n = FASHION_MNIST_FILES[_split(split, tuple(FASHION_MNIST_FILES))]
    images, labels = _read_idx(_fashion_mnist_file(images_file)), _read_idx(_fashion_mnist_file(labels_file))
    if images.shape != (n, 28, 28) or labels.shape != (n,):
        raise ValueError(f"Fashion-MNIST {split}: expected {n} images of 28x28 and {n} labels, "
                         f"got {images.shape} and {labels.shape}")
    return images, labels.astype(np.int64)


class FashionMNIST(ImageDataset):
    """Zalando's Fashion-MNIST: 28x28 grayscale clothing, 10 classes (MIT licence)."""

    def __init__(self, split: str):
        self.name, self.split, self.classes = "fashion-mnist", split, FASHION_MNIST_CLASSES
        self.images, self.labels = fashion_mnist_arrays(split)
        self.num_rows = len(self.labels)

    def load(self, key: int) -> tuple[Any, int]:
        from PIL import Image
        return Image.fromarray(self.images[key]), int(self.labels[key])

    def source(self) -> dict[str, Any]:
        return {"revision": "zalando-2017 (IDX)", "rows": self.num_rows}


# ---------------------------------------------------------------- synthetic shapes
class SyntheticShapes(ImageDataset):
    """Coloured shapes (circle, square, triangle, cross, ring) at random places, sizes and colours on a noisy
    background; the label is the shape. Row i is drawn from its own seed, so any row is cheap to get."""

    def __init__(self, split: str, n: int | None = None, image_size: int = 32, seed: int = 0):
        self.name, self.split, self.classes = "synthetic", _split(split, ("train", "test")), SHAPES
        self.num_rows = _checks.positive_int(n if n is not None else (2000 if split == "train" else 500), "n")
        self.image_size = _checks.positive_int(image_size, "image_size")
        self.seed = int(seed)

    def load(self, key: int) -> tuple[Any, int]:
        from PIL import Image, ImageDraw
        rng = np.random.default_rng([self.seed, self.split == "test", key])
        s = self.image_size
        label = int(rng.integers(len(SHAPES)))
        background = rng.integers(0, 64, (s, s, 3), dtype=np.uint8)
        img = Image.fromarray(background)
        r = rng.uniform(0.2, 0.4) * s                                  # half-size of the shape
        cx, cy = rng.uniform(r, s - r, 2)
        box = (cx - r, cy - r, cx + r, cy + r)
        color = tuple(int(c) for c in rng.integers(96, 256, 3))
        draw, width = ImageDraw.Draw(img), max(1, round(r / 3))
        shape = SHAPES[label]
        if shape == "circle":
            draw.ellipse(box, fill=color)
        elif shape == "square":
            draw.rectangle(box, fill=color)
        elif shape == "triangle":
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=color)
        elif shape == "cross":
            draw.line([(cx - r, cy), (cx + r, cy)], fill=color, width=width)
            draw.line([(cx, cy - r), (cx, cy + r)], fill=color, width=width)
        else:
            draw.ellipse(box, outline=color, width=width)
        return img, label

    def source(self) -> dict[str, Any]:
        return {"revision": f"seed={self.seed}", "rows": self.num_rows, "image_size": self.image_size}


# ---------------------------------------------------------------- Hugging Face `datasets`
def _read_classes(classes: Mapping[str, str] | str | Path) -> dict[str, str]:
    """Label id -> display name, from a mapping or a CSV with a header row (id column first, name second)."""
    if isinstance(classes, Mapping):
        return {str(k): str(v) for k, v in classes.items()}
    with open(classes, newline="") as f:
        rows = list(csv.reader(f))[1:]
    return {row[0]: row[1] for row in rows if len(row) >= 2}


class HubImages(ImageDataset):
    """A split loaded with HF `datasets.load_dataset`: a hub repo, a local folder, or the `imagefolder` builder.

    Streaming reads rows in order and `keys()` yields them with the image still encoded (workers decode);
    otherwise keys are row indices into the memory-mapped Arrow table. The label column may be a ClassLabel
    (names from the data set), a list of ClassLabels (multi-label), or string ids (one or a list) named by
    `classes` (a mapping id -> name, or a CSV such as Open Images' oidv7-class-descriptions.csv).
    """

    def __init__(self, name: str, path: str, split: str, *, streaming: bool, data_dir: str | None = None,
                 revision: str | None = None, image_column: str = "image", label_column: str | None = "label",
                 classes: Mapping[str, str] | str | Path | None = None):
        import datasets

        self.name, self.split, self.path, self.data_dir, self.streaming = name, split, path, data_dir, streaming
        try:
            ds = datasets.load_dataset(path, data_dir=data_dir, split=split, streaming=streaming, revision=revision)
        except (FileNotFoundError, ValueError, RuntimeError) as e:
            raise ValueError(f"cannot load {name} split {split!r} from {path!r}: {e}. For a gated set run "
                             "`hf auth login` and accept its terms on the hub; or pass repo=<another copy>") from e
        features = ds.features or {}
        if image_column not in features:
            raise ValueError(f"{name}: no image column {image_column!r}; columns: {list(features)}")
        if label_column is not None and label_column not in features:
            label_column = None                                    # e.g. an unlabelled test split
        self.ds = ds.cast_column(image_column, datasets.Image(decode=False))
        self.image_column, self.label_column = image_column, label_column
        self.revision = _hub_revision(data_dir or path, revision)
        self.classes, self.multilabel, self._ids = self._label_names(features, classes)
        self.num_rows = None if streaming else len(ds)
        if streaming and ds.info.splits and split in ds.info.splits:
            self.num_rows = ds.info.splits[split].num_examples or None

    def _label_names(self, features: Mapping, classes: Any) -> tuple[list[str], bool, dict[str, int] | None]:
        """(class names, multi-label?, string id -> index or None) from the label feature and `classes`."""
        import datasets

        if self.label_column is None:
            return [], False, None
        feat = features[self.label_column]
        multilabel = isinstance(feat, (datasets.List, datasets.Sequence, datasets.LargeList, list))
        inner = (feat.feature if hasattr(feat, "feature") else feat[0]) if multilabel else feat
        if isinstance(inner, datasets.ClassLabel):
            return wordnet_names(list(inner.names)), multilabel, None
        if classes is None:
            raise ValueError(f"{self.name}: label column {self.label_column!r} holds {inner}, not class indices; "
                             "pass classes= (a mapping label id -> name, or a CSV of id,name rows)")
        names = _read_classes(classes)
        return list(names.values()), multilabel, {k: i for i, k in enumerate(names)}

    def _label(self, value: Any) -> Label:
        if value is None:                                         # no label column, or no label in this row
            return () if self.multilabel else -1
        if self._ids is not None:
            try:
                value = [self._ids[v] for v in value] if self.multilabel else self._ids[value]
            except KeyError as e:
                raise ValueError(f"{self.name}: label {e.args[0]!r} is not in classes") from None
        return tuple(int(v) for v in value) if self.multilabel else int(value)

    def keys(self, start: int = 0) -> Iterator[Any]:
        if not self.streaming:
            return super().keys(start)
        return iter(self.ds.skip(start) if start else self.ds)

    def load(self, key: Any) -> tuple[Any, Label]:
        import datasets

        row = self.ds[key] if isinstance(key, int) else key
        image = datasets.Image().decode_example(row[self.image_column])
        return image, self._label(row.get(self.label_column) if self.label_column else None)

    def source(self) -> dict[str, Any]:
        return {"path": self.path, "data_dir": self.data_dir, "revision": self.revision,
                "image_column": self.image_column, "label_column": self.label_column}


def wordnet_names(names: list[str]) -> list[str]:
    """Class names as a reader knows them: folder names that are all ImageNet WordNet ids (n01440764, as in
    Imagenette or an ImageNet folder) become their first lemma ("tench"), from timm's ImageNet synset table;
    any other list is returned as it is."""
    if not names or not all(re.fullmatch(r"n\d{8}", n) for n in names):
        return names
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    known = set(info.label_names())
    return [info.label_name_to_description(n).split(",")[0] if n in known else n for n in names]


def _hub_revision(path: str, revision: str | None) -> str:
    """The commit a hub repo resolves to (so a cache records exactly which data it holds); a local folder is
    named by its absolute path."""
    if Path(path).exists():
        return f"local:{Path(path).resolve()}"
    if offline():
        return revision or "main"
    from huggingface_hub import HfApi
    try:
        return HfApi().dataset_info(path, revision=revision).sha or revision or "main"
    except Exception:  # noqa: BLE001 - a revision we cannot resolve is recorded as asked, never fatal
        return revision or "main"


# ---------------------------------------------------------------- registry
def get(name: str, split: str = "train", **kwargs: Any) -> ImageDataset:
    """The data set `name`, split `split`. Options by name:

    fashion-mnist   (none)                               splits: train, test
    synthetic       n, image_size=32, seed=0             splits: train, test
    image-folder    data_dir (required), streaming=False  splits: those the folder has (train/...)
    imagenet-1k     repo, revision, streaming=True        splits: train, validation
    open-images-v7  repo (required), classes, revision, streaming=True, label_column="labels"
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if not isinstance(split, str):
        raise TypeError(f"split must be a str, got {type(split).__name__}")
    if name == "fashion-mnist":
        if kwargs:
            raise TypeError(f"fashion-mnist takes no options, got {sorted(kwargs)}")
        return FashionMNIST(split)
    if name == "synthetic":
        return SyntheticShapes(split, **kwargs)
    if name == "image-folder":
        data_dir = kwargs.pop("data_dir", None)
        if data_dir is None or not Path(data_dir).is_dir():
            raise ValueError(f"image-folder needs data_dir=<an existing folder>, got {data_dir!r}")
        return HubImages(name, "imagefolder", split, data_dir=str(data_dir), streaming=kwargs.pop("streaming", False),
                         **kwargs)
    if name in HUB:
        spec = {**HUB[name], "streaming": True, **kwargs}
        repo = spec.pop("repo")
        if repo is None:
            raise ValueError(f"{name} has no official Hugging Face release: pass repo=<a dataset id or local folder "
                             "with an image column and a list of label ids per image> and classes=<a CSV of "
                             "id,name rows such as oidv7-class-descriptions.csv>")
        return HubImages(name, str(repo), split, **spec)
    raise ValueError(f"unknown data set {name!r}; choose one of {NAMES}")

