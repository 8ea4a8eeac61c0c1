"""SAEs made by other libraries: `load` reads them (format detected in `detect`), `save_as` writes ours for them.

    st.load(path)                          sae_tutorial checkpoints and hub folders, and:
        sparsify             folder: cfg.json + sae.safetensors                  → TopKSAE
        saelens              folder: cfg.json + sae_weights.safetensors          → ReLUSAE / TopKSAE / BatchTopKSAE
        dictionary_learning  folder: ae.pt + config.json                         → ReLUSAE / TopKSAE / BatchTopKSAE
        overcomplete         file: torch.save(model) or its state_dict()         → ReLUSAE / TopKSAE / BatchTopKSAE
    sae.save_as(path, library="sparsify" | "saelens")
    st.interop.from_hub(repo_id, subfolder)   one SAE of a hub repository holding many (or a local copy of one)

Each reader maps the foreign SAE onto our maps exactly (see _maths.py) or raises `UnsupportedSAE` naming what we
lack; an imported SAE carries `sae.provenance` (library, version, source, class, rewrites), which its checkpoint keeps
and `st.method_card` prints. `saebench.SAEBenchAdapter` hands any of our SAEs to SAEBench-style evaluators.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from .. import checkpoint, hub
from ..sae import SparseAutoencoder
from . import dictionary_learning, overcomplete, saelens, sparsify
from ._maths import UnsupportedSAE
from .saebench import SAEBenchAdapter

LIBRARIES = ("sae_tutorial", "sparsify", "saelens", "dictionary_learning", "overcomplete")
FOLDER_LAYOUTS = {   # the two files that make a folder an SAE of each library, in detection order
    "sae_tutorial": (hub.CONFIG, hub.WEIGHTS),
    "sparsify": (sparsify.CONFIG, sparsify.WEIGHTS),
    "saelens": (saelens.CONFIG, saelens.WEIGHTS),
    "dictionary_learning": (dictionary_learning.CONFIG, dictionary_learning.WEIGHTS),
}
WRITERS = {"sparsify": sparsify.save, "saelens": saelens.save}
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def _is_ours(path: Path) -> bool:
    try:
        with safe_open(str(path), framework="pt") as f:
            return checkpoint.META_KEY in (f.metadata() or {})
    except (SafetensorError, OSError, ValueError):
        return False


def _is_our_folder(folder: Path) -> bool:
    cfg = folder / hub.CONFIG
    if not (cfg.is_file() and (folder / hub.WEIGHTS).is_file()):
        return False
    try:
        record = json.loads(cfg.read_text())
    except ValueError:
        return False
    return isinstance(record, dict) and "variant" in record and "schema_version" in record


def detect(path: str | Path) -> str:
    """The library that wrote `path` (one of LIBRARIES), from its files alone; a clear error when none matches."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no SAE at {path}")
    if path.is_file():
        if path.suffix == ".safetensors":
            foreign = path.name in (sparsify.WEIGHTS, saelens.WEIGHTS) and (path.parent / sparsify.CONFIG).is_file()
            if _is_ours(path) or not foreign:
                return "sae_tutorial"      # its reader names what is wrong with a foreign or corrupt file
            path = path.parent
        elif path.name in {name for pair in FOLDER_LAYOUTS.values() for name in pair}:
            path = path.parent
        elif path.suffix in TORCH_SUFFIXES:
            return "overcomplete"
        else:
            raise ValueError(f"{path}: unknown SAE file type {path.suffix!r} (expected .safetensors, a torch file or "
                             "a folder)")
    files = {p.name for p in path.iterdir()}
    library = _folder_library(path, files)
    if library is not None:
        return library
    nested = sorted(p.name for p in path.iterdir()
                    if p.is_dir() and _folder_library(p, {q.name for q in p.iterdir()}) is not None)
    if nested:
        raise ValueError(f"{path} holds several SAEs (sub-folders {nested[:5]}): load one of them")
    layouts = ", ".join(f"{library} ({a} + {b})" for library, (a, b) in FOLDER_LAYOUTS.items())
    raise ValueError(f"{path}: no known SAE format. Looked for: {layouts}, a sae_tutorial .safetensors checkpoint "
                     f"('{checkpoint.META_KEY}' metadata), overcomplete (a torch file). Found: {sorted(files)[:10]}")


def _folder_library(folder: Path, files: set[str]) -> str | None:
    """The library whose two files `folder` holds (`files`: their names), or None."""
    for library, names in FOLDER_LAYOUTS.items():
        if set(names) <= files:
            if library == "sae_tutorial" and not _is_our_folder(folder):
                continue
            if library == "sparsify" and _is_ours(folder / sparsify.WEIGHTS):
                return "sae_tutorial"     # our checkpoint named sae.safetensors beside someone's cfg.json
            return library
    return None


def sae_folders(files: list[str]) -> dict[str, str]:
    """{folder: library} for every folder of a repository file list (paths with "/") that holds an SAE layout."""
    by_folder: dict[str, set[str]] = {}
    for f in files:
        folder, _, name = f.rpartition("/")
        by_folder.setdefault(folder, set()).add(name)
    return {folder: lib for folder, names in sorted(by_folder.items())
            for lib, pair in FOLDER_LAYOUTS.items() if set(pair) <= names}


def from_hub(repo_id: str, subfolder: str | None = None, *, device: str | torch.device = "cpu",
             hub_kwargs: dict[str, Any] | None = None, **options: Any) -> SparseAutoencoder:
    """Load one SAE of a Hugging Face repository (or a local folder with the same layout), downloading only its
    two files. The repository may hold many SAEs, one per sub-folder: `subfolder` picks one (default: the first,
    in name order); the error lists them. options: as for `load`."""
    local = Path(repo_id)
    if local.is_dir():
        files = [p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()]
    else:
        from huggingface_hub import HfApi
        files = HfApi().list_repo_files(repo_id, **(hub_kwargs or {}))
    found = sae_folders(files)
    if not found:
        raise ValueError(f"{repo_id} holds no SAE folder of a known layout ({FOLDER_LAYOUTS})")
    if subfolder is None:
        subfolder = next(iter(found))
    if subfolder not in found:
        raise ValueError(f"{repo_id} has no SAE in {subfolder!r}; its SAE folders: {list(found)[:20]}")
    library = found[subfolder]
    if local.is_dir():
        return load(local / subfolder, library, device=device, **options)
    from huggingface_hub import hf_hub_download
    paths = [hf_hub_download(repo_id, f"{subfolder}/{name}" if subfolder else name, **(hub_kwargs or {}))
             for name in FOLDER_LAYOUTS[library]]
    return load(Path(paths[0]).parent, library, device=device, **options)


def _folder(path: Path) -> Path:
    return path.parent if path.is_file() else path


def load(path: str | Path, library: str | None = None, *, device: str | torch.device = "cpu",
         **options: Any) -> SparseAutoencoder:
    """Load an SAE written by sae_tutorial or another library (`library=None`: detected from the files).

    options, per library: saelens k (BatchTopK saved as JumpReLU); overcomplete variant, k, threshold,
    normalization, trust_pickle. An unknown option, or one the library does not take, is a TypeError.
    A foreign SAE comes back in eval mode (BatchTopK then applies its threshold, as the libraries' encode does).
    """
    path = Path(path)
    if library is None:
        library = detect(path)
    elif library not in LIBRARIES:
        raise ValueError(f"library must be one of {LIBRARIES} or None (detect), got {library!r}")
    allowed = {"sae_tutorial": set(), "sparsify": set(), "dictionary_learning": set(), "saelens": {"k"},
               "overcomplete": {"variant", "k", "threshold", "normalization", "trust_pickle"}}[library]
    unknown = set(options) - allowed
    if unknown:
        raise TypeError(f"st.load(library={library!r}) takes options {sorted(allowed) or 'none'}, got {sorted(unknown)}")
    if not path.exists():
        raise FileNotFoundError(f"no SAE at {path}")
    if library == "sae_tutorial":
        if path.is_dir():
            return hub.read_folder(SparseAutoencoder, str(path), map_location=device)
        return checkpoint.load_sae(path, device=device)
    if library == "sparsify":
        sae = sparsify.load(_folder(path))
    elif library == "saelens":
        sae = saelens.load(_folder(path), **options)
    elif library == "dictionary_learning":
        sae = dictionary_learning.load(_folder(path))
    else:
        if path.is_dir():
            raise ValueError(f"{path} is a folder; an overcomplete SAE is one torch file (torch.save of the model "
                             "or its state_dict)")
        trust = options.pop("trust_pickle", False)
        obj = overcomplete.read(path, trust_pickle=trust)
        if not overcomplete.is_overcomplete(obj):
            raise ValueError(f"{path} is a torch file but not an overcomplete SAE (no overcomplete module, no "
                             "'dictionary._weights' key)")
        sae = overcomplete.load(path, obj, **options)
    return sae.to(device)


def save_as(sae: SparseAutoencoder, path: str | Path, library: str, **options: Any) -> Path:
    """Write `sae` as a folder `library` reads with the same maths ("sparsify": TopKSAE; "saelens": TopKSAE,
    BatchTopKSAE, ReLUSAE; options: saelens metadata={...}). Another variant raises UnsupportedSAE."""
    if not isinstance(sae, SparseAutoencoder):
        raise TypeError(f"sae must be an sae_tutorial SparseAutoencoder, got {type(sae).__name__}")
    if library not in WRITERS:
        raise ValueError(f"library must be one of {sorted(WRITERS)}, got {library!r}")
    return WRITERS[library](sae, Path(path), **options)


__all__ = ["load", "save_as", "detect", "from_hub", "sae_folders", "LIBRARIES", "UnsupportedSAE", "SAEBenchAdapter"]
