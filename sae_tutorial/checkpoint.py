"""Files on disk: atomic writes, content hashes, and the SAE checkpoint format.

An SAE checkpoint is one `.safetensors` file. Its header metadata holds, under the key "sae_tutorial", a JSON
record: {"schema_version", "variant", "config", "library_version", "content_sha256"}, plus "provenance" for an SAE
imported from another library (interop/). Files are written to a temporary name beside the target and renamed into
place, so a crash never leaves a half-written checkpoint.

Persistence imports the model family (sae/), never the reverse: the SAE's save/load methods import this module late.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ._version import __version__
from .sae import VARIANTS, SparseAutoencoder

SCHEMA_VERSION = 1
META_KEY = "sae_tutorial"


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call write(tmp) on a temporary file beside `path`, fsync it, then rename it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over (name, dtype, shape, raw bytes) of each tensor, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def sae_record(sae: SparseAutoencoder, tensors: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """The JSON record that describes a checkpoint of `sae` (schema version, variant, config, hash, provenance)."""
    if tensors is None:
        tensors = {k: v.detach().cpu().contiguous() for k, v in sae.state_dict().items()}
    record = {
        "schema_version": SCHEMA_VERSION,
        "variant": type(sae).__name__,
        "config": sae.config(),
        "library_version": __version__,
        "content_sha256": tensors_sha256(tensors),
    }
    if getattr(sae, "provenance", None):
        record["provenance"] = sae.provenance
    return record


def save_sae(sae: SparseAutoencoder, path: str | Path) -> Path:
    """Write `sae` (any variant) to `path` as safetensors + JSON metadata, atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in sae.state_dict().items()}
    record = sae_record(sae, tensors)
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(record)}))


def check_record(record: dict[str, Any], source: str | Path) -> dict[str, Any]:
    """Reject records of a newer schema than this library reads, naming the file."""
    version = record.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ValueError(
            f"{source} has checkpoint schema version {version}; this sae_tutorial reads up to {SCHEMA_VERSION}. "
            "Upgrade sae_tutorial to load it."
        )
    return record


def read_record(path: str | Path) -> dict[str, Any]:
    """The JSON record of a checkpoint, with clear errors for missing, foreign or corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path} is not a readable safetensors file (corrupt or truncated?): {e}") from e
    if META_KEY not in meta:
        raise ValueError(f"{path} is a safetensors file but not an sae_tutorial checkpoint (no '{META_KEY}' metadata)")
    return check_record(json.loads(meta[META_KEY]), path)


def variant_class(record: dict[str, Any], source: str | Path, expected: type | None = None) -> type:
    """The SAE class a record names, checked against the class the caller asked for."""
    variant = record.get("variant")
    if variant not in VARIANTS:
        raise ValueError(f"{source} holds unknown variant {variant!r}; known: {sorted(VARIANTS)}")
    cls = VARIANTS[variant]
    if expected is not None and expected is not SparseAutoencoder and cls is not expected:
        raise ValueError(f"{source} holds a {variant}, not a {expected.__name__}; load it with st.load()")
    return cls


def load_sae(path: str | Path, device: str | torch.device = "cpu", expected: type | None = None):
    """Rebuild the SAE stored at `path`, verifying variant, schema version and content hash."""
    record = read_record(path)
    cls = variant_class(record, path, expected)
    tensors = {}
    try:
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                tensors[name] = f.get_tensor(name)
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read tensors (corrupt or truncated?): {e}") from e
    if tensors_sha256(tensors) != record.get("content_sha256"):
        raise ValueError(f"{path}: content hash mismatch, the file is corrupt")
    sae = cls.from_config(record["config"])
    dtypes = {t.dtype for t in tensors.values() if t.is_floating_point()}
    if len(dtypes) == 1:
        sae = sae.to(dtypes.pop())          # an SAE saved in bf16 / float64 comes back in it
    sae.load_state_dict(tensors, strict=True)
    if record.get("provenance"):
        sae.provenance = record["provenance"]
    return sae.to(device)
