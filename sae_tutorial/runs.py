"""Where an SAE's rows come from, and the folders the command line writes about them.

`read_source` reads rows from an embedding cache (st.embed) or a .pt / .npy / .safetensors file, with a provenance
record that identifies them: a cache by its manifest's identity (backbone, data set, dtype) and a content hash over
its shards' SHA-256s, a file by the SHA-256 of its bytes.

A training folder (`python -m sae_tutorial train`) holds, beside the hub files (model.safetensors, config.json):

    train_config.json   the full TrainConfig, the SAE's variant and settings, the command line
    data.json           provenance of the training and evaluation rows, the held-out split's rule and size
    split.safetensors   the held-out split's row numbers ("val_indices"), when it was drawn from the training rows
    history.json        train()'s history (per step) and the held-out checks
    report.json         st.metrics.evaluate on the held-out rows
    method_card.json    the method card (st.metrics.method_card); README.md is the same card

An evaluation folder (`python -m sae_tutorial evaluate`) holds data.json (with the SAE's path), report.json,
method_card.json and README.md. `evaluation_rows` reads either back: the SAE and the rows its report is about.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

TRAIN_CONFIG, DATA, SPLIT, HISTORY, REPORT = ("train_config.json", "data.json", "split.safetensors", "history.json",
                                              "report.json")
FILE_SUFFIXES = (".pt", ".npy", ".safetensors")


@dataclass
class Source:
    """Rows read from disk: x (N, d) float32, labels ((N,) ids or (N, C) 0/1; None without), their provenance, and
    which rows of the file or cache they are (None: all, in order)."""

    x: Tensor
    labels: Tensor | None
    classes: list[str] | None
    provenance: dict[str, Any]
    rows: Tensor | None = None

    def subset(self, rows: Tensor) -> Source:
        """The rows `rows` (row numbers into this Source), with the same provenance."""
        labels = None if self.labels is None else self.labels[rows]
        return Source(self.x[rows], labels, self.classes, self.provenance,
                      rows if self.rows is None else self.rows[rows])


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_file(p: Path) -> Tensor:
    if p.suffix == ".npy":
        return torch.from_numpy(np.load(p))
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file
        tensors = load_file(str(p))
        return tensors["x"] if "x" in tensors or len(tensors) != 1 else next(iter(tensors.values()))
    return torch.load(p, map_location="cpu", weights_only=True)


def read_source(path: str | Path, normalize: bool = True, name: str = "data") -> Source:
    """Rows from an embedding cache folder or a .pt / .npy / .safetensors file (key "x" or its only tensor),
    L2-normalised per row unless `normalize` is False. `name` names the argument in errors."""
    from .embed import load_embeddings

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{name} {path}: no such file or folder")
    if p.is_dir():
        emb = load_embeddings(p)                    # checks every shard's hash against the manifest
        m = emb.manifest
        x, labels, classes = emb.x, emb.label_tensor(), emb.classes
        if labels.ndim == 1 and bool((labels < 0).all()):
            labels = None
        shards = json.dumps([s["sha256"] for s in m["shards"]])
        provenance = {"kind": "embedding cache", "backbone": m["backbone"],
                      "dataset": {k: v for k, v in m["dataset"].items() if k != "classes"}, "dtype": m["dtype"],
                      "content_sha256": hashlib.sha256(shards.encode()).hexdigest()}
    elif p.suffix in FILE_SUFFIXES:
        try:
            x = _read_file(p)
        except Exception as e:  # noqa: BLE001 - numpy, safetensors and torch each raise their own
            raise ValueError(f"{name} {path}: cannot read it ({type(e).__name__}: {e})") from e
        labels = classes = None
        provenance = {"kind": "file", "sha256": file_sha256(p)}
    else:
        raise ValueError(f"{name} {path}: expected an embedding cache folder or a {'/'.join(FILE_SUFFIXES)} file")
    if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} {path}: expected a non-empty (rows, dim) matrix, got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
    x = x.float()
    provenance = {"path": str(p.resolve()), **provenance, "rows": x.shape[0], "dim": x.shape[1],
                  "normalized": normalize}
    return Source(F.normalize(x, dim=1) if normalize else x, labels, classes, provenance)


def read_labels(path: str | Path, name: str = "labels") -> Tensor:
    """Labels from a cache folder (its labels) or a .pt / .npy / .safetensors file: (N,) ids or (N, C) 0/1."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{name} {path}: no such file or folder")
    if p.is_dir():
        from .embed import load_embeddings
        return load_embeddings(p, verify=False).label_tensor()
    if p.suffix not in FILE_SUFFIXES:
        raise ValueError(f"{name} {path}: expected a cache folder or a {'/'.join(FILE_SUFFIXES)} file")
    return _read_file(p)


def held_out_split(n: int, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """(train rows, held-out rows), both sorted: the held-out rows are the first round(fraction · n) (at least 1)
    of torch.randperm(n) under manual_seed(seed)."""
    if not 0 < fraction < 1:
        raise ValueError(f"the held-out fraction must be in (0, 1), got {fraction}")
    n_val = max(1, round(fraction * n))
    if n_val >= n:
        raise ValueError(f"a held-out fraction of {fraction} leaves no training rows out of {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def save_split(path: Path, val_rows: Tensor) -> None:
    from safetensors.torch import save_file

    from .checkpoint import atomic_write
    atomic_write(path, lambda tmp: save_file({"val_indices": val_rows.contiguous()}, str(tmp)))


def indices_sha256(rows: Tensor) -> str:
    return hashlib.sha256(rows.to(torch.int64).numpy().tobytes()).hexdigest()


def write_json(path: Path, obj: Any) -> Path:
    """`obj` as indented JSON at `path`, atomically (NaN → null)."""
    from .checkpoint import atomic_write
    from .metrics.report import _clean
    text = json.dumps(_clean(obj), indent=1, ensure_ascii=False)
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def evaluation_rows(folder: str | Path):
    """(sae, source) of a training or evaluation folder: the SAE and the rows its report.json was computed on
    (a training folder's held-out rows), read back and checked against the recorded hashes."""
    from .interop import load

    folder = Path(folder)
    if not (folder / DATA).is_file():
        raise FileNotFoundError(f"{folder} has no {DATA}: not a folder written by `python -m sae_tutorial train` "
                                "or `evaluate`")
    record = json.loads((folder / DATA).read_text())
    sae = load(record["sae"]["path"] if "sae" in record else folder)
    ev = record["eval"]
    source = read_source(ev["path"], ev["normalized"], "the evaluation data")
    recorded = ev.get("content_sha256") or ev.get("sha256")
    found = source.provenance.get("content_sha256") or source.provenance.get("sha256")
    if recorded != found:
        raise ValueError(f"{ev['path']} has changed since {folder} was written (its content hash differs)")
    if ev.get("subset") == SPLIT:
        from safetensors.torch import load_file
        source = source.subset(load_file(str(folder / SPLIT))["val_indices"])
    return sae, source
