"""Embedding extraction into a resumable on-disk cache, and loading it back.

    st.embed(backbone, dataset, split, out_dir)  writes
        out_dir/manifest.json              backbone and data identity, dtype, shards (rows, sha256), progress
        out_dir/shard-00000.safetensors    the first shard_size rows: "embeddings" (n, d) and "labels" (n,) int64
        out_dir/shard-00001.safetensors    (-1: none); multi-label sets store "labels" (nnz,) + "label_offsets" (n+1,)
    st.load_embeddings(out_dir)  memory-maps the shards and checks their hashes.

Resuming: each shard is written atomically, then the manifest (atomically too) lists it. The manifest is the
truth, so a kill at any moment loses at most the shards in flight, and a rerun starts at the first row no listed
shard holds. Data order is fixed and batches never straddle shards, so a resumed cache equals an uninterrupted
one (bit for bit on CPU).

Numerics: "bit for bit" holds under the same numerics settings: device type, compute dtype (float32, or the
autocast dtype on CUDA), torch version, and on a CPU the torch thread count (its convolutions and GEMMs split
their sums by thread, so 1 and 2 threads differ in the last bits). The manifest records the settings of the run
that began the cache ("numerics"). A run that would add rows under other settings is refused with an error that
names them; with `allow_mixed_numerics=True` it goes on, and the manifest flags the cache
("mixed_numerics": the settings and first row of each later segment), so a cache of mixed numbers is never
mistaken for a bit-identical one. Reading a finished cache checks nothing of this: it only reads.

Data-parallel (`torchrun --nproc_per_node=W -m sae_tutorial embed ...`): shard i goes to rank i mod W, each rank
writes its own shard files, and rank 0 alone lists finished shards in the manifest, in order. The cache is the
one a single process writes (same shards, same rows, bit for bit on CPU), and resumes on any number of ranks.
"""
from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from . import _checks, backbones, datasets
from .backbones import Backbone
from .checkpoint import atomic_write, tensors_sha256
from .datasets import ImageDataset
from .distributed import Group

MANIFEST = "manifest.json"
FORMAT = "sae_tutorial.embeddings"
SCHEMA_VERSION = 1
DTYPES = {"float32": torch.float32, "float16": torch.float16}
SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
LABELS_DOC = ("labels (n,) int64, -1 = none; multi-label: labels (nnz,) with label_offsets (n + 1,), "
              "row i has labels[label_offsets[i]:label_offsets[i + 1]]")


def default_out_dir(backbone: str, dataset: str, split: str) -> Path:
    """$SAE_TUTORIAL_CACHE/embeddings/<backbone>--<dataset>--<split>."""
    return datasets.cache_dir() / "embeddings" / f"{backbone}--{dataset}--{split}".replace(":", "_").replace("/", "_")


# ---------------------------------------------------------------- extraction
class _Rows(torch.utils.data.Dataset):
    """Key -> (preprocessed image, label); runs in DataLoader workers (decode + resize + normalise)."""

    def __init__(self, dataset: ImageDataset, preprocess: Any):
        self.dataset, self.preprocess = dataset, preprocess

    def __getitem__(self, key: Any) -> tuple[Tensor, Any]:
        image, label = self.dataset.load(key)
        return self.preprocess(image), label


def _batches(keys: Iterator[Any], batch_size: int, shard_size: int) -> Iterator[list[Any]]:
    """Lists of keys, cut so that no batch straddles a shard boundary (shards start at the first key)."""
    in_shard = 0
    while batch := list(itertools.islice(keys, min(batch_size, shard_size - in_shard))):
        yield batch
        in_shard = (in_shard + len(batch)) % shard_size


def _collate(rows: list[tuple[Tensor, Any]]) -> tuple[Tensor, list[Any]]:
    images, labels = zip(*rows)
    return torch.stack(images), list(labels)                 # (B, C, H, W), B labels


def _label_tensors(labels: list[Any], multilabel: bool) -> dict[str, Tensor]:
    if not multilabel:
        return {"labels": torch.tensor(labels, dtype=torch.int64)}
    lengths = torch.tensor([0] + [len(l) for l in labels], dtype=torch.int64)
    flat = torch.tensor([c for l in labels for c in l], dtype=torch.int64)
    return {"labels": flat, "label_offsets": lengths.cumsum(0)}


def _write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    atomic_write(out / MANIFEST, lambda tmp: tmp.write_text(json.dumps(manifest, indent=1)))


def _shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


def _write_shard(out: Path, index: int, emb: Tensor, labels: list[Any], dtype: str, multilabel: bool
                 ) -> dict[str, Any]:
    """Write shard `index` atomically; returns its manifest record (file, rows, sha256)."""
    from safetensors.torch import save_file

    if not bool(torch.isfinite(emb).all()):
        raise ValueError(f"the backbone produced NaN or Inf embeddings (shard {index}); nothing written")
    tensors = {"embeddings": emb.to("cpu", DTYPES[dtype]).contiguous(), **_label_tensors(labels, multilabel)}
    name = _shard_name(index)
    atomic_write(out / name, lambda tmp: save_file(tensors, str(tmp)))
    return {"file": name, "rows": len(emb), "sha256": tensors_sha256(tensors)}


def _list_finished(out: Path, manifest: dict[str, Any], shard_size: int, known: dict[int, dict[str, Any]]) -> None:
    """Append to the manifest every finished shard that follows its last listed one, in order, and write it.

    known: records of shards written by this process; other ranks' shards are read back to hash them.
    """
    from safetensors.torch import load_file

    listed = len(manifest["shards"])
    while True:
        index = len(manifest["shards"])
        if index in known:
            record = known[index]
        elif (out / _shard_name(index)).is_file():
            tensors = load_file(str(out / _shard_name(index)))
            record = {"file": _shard_name(index), "rows": len(tensors["embeddings"]),
                      "sha256": tensors_sha256(tensors)}
        else:
            break
        manifest["shards"].append(record)
        manifest["rows"] += record["rows"]
        if record["rows"] < shard_size:                   # a short shard ends the data
            break
    if len(manifest["shards"]) > listed:
        _write_manifest(out, manifest)


def _open_cache(out: Path, identity: dict[str, Any]) -> dict[str, Any]:
    """The manifest of `out` if it holds this identity's embeddings (to resume), else a fresh one."""
    identity = json.loads(json.dumps(identity))          # tuples -> lists, as stored
    if not (out / MANIFEST).is_file():
        from . import __version__
        return {"format": FORMAT, "schema_version": SCHEMA_VERSION, "library_version": __version__, **identity,
                "labels": LABELS_DOC, "shards": [], "rows": 0,
                "exhausted": False,      # the data ran out: a later, larger limit has nothing to add
                "finished": False}       # the last run ended normally (else: killed or failed, resume it)
    manifest = read_manifest(out)
    differ = [k for k in identity if manifest.get(k) != identity[k]]
    if differ:
        raise ValueError(f"{out} already holds embeddings with another {' and '.join(differ)}; "
                         "pass another out_dir, or delete it to start over")
    for tmp in out.glob(".*.tmp-*"):                      # left by a killed run
        tmp.unlink()
    return manifest


def _non_negative_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


def default_workers() -> int:
    """DataLoader workers when not given: one core stays with the main process (the forward), at most 8."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype extraction uses on `device`: bfloat16 on CUDA (float16 where unsupported, e.g. T4),
    None (plain float32) on CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


# Image batches and the model's weights are channels-last (NHWC) during extraction: convolutions take their fast
# kernels in that layout (EfficientNet-Lite0 at 64 px on one CPU thread: ~1.6x the images per second of NCHW);
# for a ViT only its patch embedding is a convolution. The layout changes rounding, so numerics() records it.
MEMORY_FORMAT = torch.channels_last


def numerics(device: torch.device) -> dict[str, Any]:
    """The settings that decide an extraction's numbers bit for bit: device type, compute dtype, torch version,
    the images' memory format (MEMORY_FORMAT), and the thread count on a CPU (the GPU's name on CUDA)."""
    amp = autocast_dtype(device)
    settings = {"device": device.type, "compute": str(amp).removeprefix("torch.") if amp else "float32",
                "torch": torch.__version__, "memory_format": str(MEMORY_FORMAT).removeprefix("torch.")}
    if device.type == "cuda":
        settings["gpu"] = torch.cuda.get_device_name(device)
    else:
        settings["threads"] = torch.get_num_threads()
    return settings


def _check_numerics(out: Path, manifest: dict[str, Any], device: torch.device, allow_mixed: bool) -> None:
    """Record the numerics settings of a cache's first rows; refuse (or, if allowed, flag) rows added under others."""
    current = numerics(device)
    if manifest["rows"] == 0:
        manifest["numerics"], manifest["mixed_numerics"] = current, []
        return
    first = manifest.get("numerics")
    if first == current:
        return
    if not allow_mixed:
        differ = ", ".join(f"{k} {(first or {}).get(k)!r} -> {current.get(k)!r}" for k in sorted(current)
                           if (first or {}).get(k) != current.get(k))
        raise ValueError(f"{out} was begun under other numerics settings ({differ}): rows added now would not be "
                         "bit-identical to one uninterrupted run. Resume under the same settings (e.g. "
                         "torch.set_num_threads / OMP_NUM_THREADS), or pass allow_mixed_numerics=True "
                         "(--allow-mixed-numerics) to go on with the cache flagged as mixed")
    manifest.setdefault("mixed_numerics", []).append({"from_row": manifest["rows"], **current})


def embed(backbone: str | Backbone, dataset: str | ImageDataset, split: str | None = None,
          out_dir: str | Path | None = None, *, weights: str | Path | None = None, tag: str | None = None,
          batch_size: int = 256, num_workers: int | None = None, shard_size: int = 16384, limit: int | None = None,
          device: str | torch.device | None = None, dtype: str = "float32", progress: bool = True,
          allow_mixed_numerics: bool = False, **dataset_options: Any) -> Path:
    """Embed every image of `dataset`/`split` (at least the first `limit`) with `backbone`; cache in `out_dir`.

    backbone: a name for `st.backbones.get` (with `weights`, `tag`) or a Backbone. dataset: a name for
    `st.datasets.get` (with `dataset_options`, e.g. data_dir=) or an ImageDataset. out_dir: default
    $SAE_TUTORIAL_CACHE/embeddings/<backbone>--<dataset>--<split>. An unfinished cache there is resumed; a
    finished one is returned as is. Images are decoded and preprocessed by `num_workers` DataLoader workers
    (default: `default_workers()`); the model runs on `device` (default CUDA when present, with autocast).
    A resumed cache is bit-identical to an uninterrupted one under the same numerics settings (`numerics`);
    adding rows under others raises, unless `allow_mixed_numerics`, which flags the cache instead (module
    docstring). Returns out_dir.
    """
    if isinstance(backbone, Backbone):
        if weights is not None or tag is not None:
            raise TypeError("weights and tag apply only when backbone is a name")
    else:
        backbone = backbones.get(backbone, weights, tag=tag)
    if isinstance(dataset, ImageDataset):
        if split not in (None, dataset.split) or dataset_options:
            raise ValueError(f"dataset is already the {dataset.split!r} split; pass no split or options with it")
    else:
        dataset = datasets.get(dataset, split or "train", **dataset_options)
    batch_size = _checks.positive_int(batch_size, "batch_size")
    shard_size = _checks.positive_int(shard_size, "shard_size")
    limit = None if limit is None else _checks.positive_int(limit, "limit")
    _checks.choice(dtype, "dtype", tuple(DTYPES))
    workers = default_workers() if num_workers is None else _non_negative_int(num_workers, "num_workers")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    out = Path(out_dir) if out_dir is not None else default_out_dir(backbone.name, dataset.name, dataset.split)
    group = Group.current()
    if group.rank == 0:                                  # rank 0 owns the manifest; the others read it
        manifest = _open_cache(out, {"backbone": backbone.info(), "dataset": dataset.info(), "dtype": dtype})
        if not (out / MANIFEST).is_file():               # a finished cache is only read (it may be read-only)
            out.mkdir(parents=True, exist_ok=True)
            _write_manifest(out, manifest)
    group.barrier()
    manifest = read_manifest(out)
    ends = [n for n in (limit, dataset.num_rows) if n is not None]
    target = min(ends) if ends else None                 # None: a stream of unknown length, to its end
    if not (manifest["exhausted"] or (target is not None and manifest["rows"] >= target)):
        _extract(out, manifest, backbone, dataset, target, batch_size, shard_size, workers, device, progress, group,
                 allow_mixed_numerics)
        manifest["exhausted"] = limit is None or manifest["rows"] < limit
    if group.rank == 0 and not manifest["finished"]:
        manifest["finished"] = True
        _write_manifest(out, manifest)
    group.barrier()
    return out


def _extract(out: Path, manifest: dict[str, Any], backbone: Backbone, dataset: ImageDataset, target: int | None,
             batch_size: int, shard_size: int, workers: int, device: torch.device, progress: bool,
             group: Group = Group(), allow_mixed_numerics: bool = False) -> None:
    """Embed rows manifest["rows"] .. target - 1 (or to the end), one shard at a time; shard i on rank i mod W.
    Leaves `manifest` as rank 0 wrote it."""
    if manifest["shards"] and manifest["shards"][-1]["rows"] < shard_size:
        # An earlier run stopped at its `limit` mid-shard: redo that shard, so that shard and batch boundaries
        # (and so the numbers) are those of one uninterrupted run.
        manifest["rows"] -= manifest["shards"].pop()["rows"]
    _check_numerics(out, manifest, device, allow_mixed_numerics)      # every rank: all raise, or none
    start, first = manifest["rows"], len(manifest["shards"])
    amp = autocast_dtype(device)
    manifest.update(finished=False, backbone_report=backbone.report)
    group.barrier()                                      # every rank has read the manifest
    if group.rank == 0:
        for stale in out.glob("shard-*.safetensors"):    # unlisted shards of a killed run: redone below
            if int(stale.stem.split("-")[1]) >= first:
                stale.unlink()
        _write_manifest(out, manifest)
    group.barrier()

    keys = itertools.islice(dataset.keys(start), None if target is None else target - start)
    mine = (key for pos, key in enumerate(keys) if (pos // shard_size) % group.world == group.rank)
    loader = torch.utils.data.DataLoader(_Rows(dataset, backbone.preprocess), num_workers=workers,
                                         batch_sampler=_batches(mine, batch_size, shard_size),
                                         collate_fn=_collate, pin_memory=device.type == "cuda")
    model = backbone.model.to(device, memory_format=MEMORY_FORMAT)
    buf = torch.empty(shard_size, backbone.embed_dim, device=device)   # (shard_size, d): the shard being filled
    n, labels, known = 0, [], {}
    index = first + group.rank                           # this rank's next shard
    one = group.world == 1
    bar = tqdm(total=target if one else None, initial=start if one else 0, unit="img",
               disable=not progress or group.rank != 0,
               desc=f"embedding {dataset.name}/{dataset.split} with {backbone.name}"
                    + ("" if one else f" (rank 0 of {group.world})"))

    def flush() -> None:
        nonlocal n, labels, index
        known[index] = _write_shard(out, index, buf[:n], labels, manifest["dtype"], manifest["dataset"]["multilabel"])
        if group.rank == 0:
            _list_finished(out, manifest, shard_size, known)
        n, labels, index = 0, [], index + group.world

    with torch.inference_mode(), bar:
        for images, batch_labels in loader:                  # (B, C, H, W), B labels
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                z = model(images.to(device, non_blocking=True, memory_format=MEMORY_FORMAT))   # (B, d)
            buf[n:n + len(z)] = z
            labels += batch_labels
            n += len(z)
            bar.update(len(z))
            if n == shard_size:
                flush()
        if n:
            flush()
    group.barrier()                                      # every shard is on disk
    if group.rank == 0:
        _list_finished(out, manifest, shard_size, known)
    group.barrier()
    if group.rank != 0:
        manifest.clear()
        manifest.update(read_manifest(out))


# ---------------------------------------------------------------- loading
def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    """The manifest of an embedding cache, with clear errors for a missing or foreign one."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no embedding cache at {out_dir} (no {MANIFEST}); create one with st.embed()")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON (corrupt?): {e}") from e
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not an sae_tutorial embedding manifest")
    if manifest.get("schema_version", 0) > SCHEMA_VERSION:
        raise ValueError(f"{path} has schema version {manifest['schema_version']}; this sae_tutorial reads up to "
                         f"{SCHEMA_VERSION}. Upgrade sae_tutorial to load it.")
    return manifest


def _map_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Memory-map every tensor of a safetensors file (copy-on-write: writing to them never touches the file)."""
    if not path.is_file():
        raise ValueError(f"shard {path} is missing")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else 0
        if not 0 < n <= size - 8:
            raise ValueError(f"shard {path} is truncated or corrupt (bad header length)")
        try:
            header = json.loads(f.read(n))
            header.pop("__metadata__", None)
            layout = {k: (SAFETENSORS_DTYPES[t["dtype"]], tuple(t["shape"]), *t["data_offsets"])
                      for k, t in header.items()}
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"shard {path} has a corrupt header: {e!r}") from e
    arrays = {}
    for name, (dtype, shape, begin, end) in layout.items():
        if 8 + n + end > size:
            raise ValueError(f"shard {path} is truncated: {size} bytes, tensor {name!r} needs {8 + n + end}")
        arrays[name] = (np.memmap(path, dtype, "c", offset=8 + n + begin, shape=shape) if end > begin
                        else np.empty(shape, dtype))
    return arrays


@dataclass
class Embeddings:
    """A loaded cache. `x` is (N, d); labels as in the manifest's "labels" entry."""

    shards: list[Tensor]             # per shard (n_i, d), memory-mapped
    labels: Tensor                   # (N,) int64, -1 = none; multi-label: (nnz,) flat class ids
    label_offsets: Tensor | None     # multi-label only: (N + 1,), row i has labels[offsets[i]:offsets[i + 1]]
    classes: list[str]
    manifest: dict[str, Any]

    @cached_property
    def x(self) -> Tensor:
        """(N, d): the memory-mapped shard itself when there is one, else the shards concatenated in memory."""
        return self.shards[0] if len(self.shards) == 1 else torch.cat(self.shards)

    def __len__(self) -> int:
        return self.manifest["rows"]

    def label_tensor(self, n: int | None = None) -> Tensor:
        """Labels of the first n rows (default all): (n,) class ids (-1 = none), or multi-label an (n, C) 0/1
        uint8 matrix."""
        n = len(self) if n is None else min(n, len(self))
        if self.label_offsets is None:
            return self.labels[:n]
        out = torch.zeros(n, len(self.classes), dtype=torch.uint8)
        off = self.label_offsets
        for i in range(n):
            out[i, self.labels[off[i]:off[i + 1]]] = 1
        return out


def load_embeddings(out_dir: str | Path, verify: bool = True, partial: bool = False) -> Embeddings:
    """Load the cache in `out_dir`. verify: check every shard's sha256 (reads it all once). partial: accept a
    cache whose extraction has not finished (its rows so far)."""
    out = Path(out_dir)
    manifest = read_manifest(out)
    if not manifest["finished"] and not partial:
        raise ValueError(f"the extraction into {out} has not finished ({manifest['rows']} rows so far): rerun "
                         "st.embed() with the same arguments to resume it, or pass partial=True")
    if not manifest["shards"]:
        raise ValueError(f"{out} holds no embeddings yet")
    shards, labels, offsets = [], [], []
    for shard in manifest["shards"]:
        tensors = {k: torch.from_numpy(a) for k, a in _map_safetensors(out / shard["file"]).items()}
        if verify and tensors_sha256(tensors) != shard["sha256"]:
            raise ValueError(f"shard {out / shard['file']} is corrupt: its content hash does not match the manifest")
        if "embeddings" not in tensors or len(tensors["embeddings"]) != shard["rows"]:
            raise ValueError(f"shard {out / shard['file']} does not hold the {shard['rows']} rows the manifest lists")
        shards.append(tensors["embeddings"])
        labels.append(tensors["labels"])
        if "label_offsets" in tensors:                      # shift each shard's offsets past the previous ones
            offsets.append(tensors["label_offsets"][1:] + sum(len(l) for l in labels[:-1]))
    label_offsets = torch.cat([torch.zeros(1, dtype=torch.int64), *offsets]) if offsets else None
    return Embeddings(shards, torch.cat(labels), label_offsets, manifest["dataset"]["classes"], manifest)
