"""EleutherAI sparsify (PyPI `eai-sparsify`): a folder with `cfg.json` + `sae.safetensors` (SparseCoder.save_to_disk).

Their maths (sparsify/sparse_coder.py, fused_encoder.py), with encoder.weight (m, d) and W_dec (m, d):

    z = TopK_k(ReLU(encoder(x − b_dec)))        x̂ = z W_dec + b_dec

which is our TopKSAE exactly (Top-k of ReLU(h) and ReLU of Top-k(h) give the same dense codes). Not expressible:
activation "groupmax", transcoders (`transcode`), a skip connection (`W_skip`), a folder saved without its decoder,
and decoder rows off the unit sphere (`normalize_decoder: false`). `multi_topk` only changes the training loss.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from ..checkpoint import atomic_write
from ..sae import SparseAutoencoder
from ._maths import Affine, UnsupportedSAE, build, integer_k, provenance

CONFIG, WEIGHTS = "cfg.json", "sae.safetensors"
LIBRARY = "sparsify"


def read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no {CONFIG}: not a sparsify SAE folder")
    return json.loads(path.read_text())


def load(folder: Path) -> SparseAutoencoder:
    """The TopKSAE equal to the sparsify SparseCoder saved in `folder`."""
    cfg = read_config(folder)
    src = str(folder)
    if cfg.get("transcode"):
        raise UnsupportedSAE(f"{src} is a sparsify transcoder (transcode=true: it predicts another module's output "
                             "and skips the b_dec subtraction); sae_tutorial has autoencoders only")
    if cfg.get("skip_connection"):
        raise UnsupportedSAE(f"{src} has a skip connection (W_skip, x̂ += x W_skipᵀ); sae_tutorial's SAEs have none")
    activation = cfg.get("activation", "topk")
    if activation != "topk":
        raise UnsupportedSAE(f"{src} uses sparsify activation {activation!r}; sae_tutorial has Top-k, not {activation}")
    weights_path = folder / WEIGHTS
    if not weights_path.is_file():
        raise FileNotFoundError(f"{folder} has {CONFIG} but no {WEIGHTS}")
    w = load_file(str(weights_path))
    if "W_dec" not in w:
        raise UnsupportedSAE(f"{weights_path} holds no decoder (saved with decoder=False); an SAE needs W_dec")
    missing = {"encoder.weight", "encoder.bias", "b_dec"} - set(w)
    if missing:
        raise ValueError(f"{weights_path} lacks {sorted(missing)}: not a sparsify SparseCoder")
    if "d_in" in cfg and cfg["d_in"] != w["b_dec"].shape[0]:
        raise ValueError(f"{folder}: cfg.json says d_in={cfg['d_in']} but b_dec has {w['b_dec'].shape[0]} entries")
    a = Affine.of(w["encoder.weight"], w["encoder.bias"], w["W_dec"], w["b_dec"], src)
    a.require_unit_rows(f"{src} (sparsify, normalize_decoder={cfg.get('normalize_decoder', True)})")
    notes = ["trained with sparsify's Multi-TopK loss; inference is plain Top-k"] if cfg.get("multi_topk") else []
    prov = provenance(LIBRARY, folder, f"{CONFIG} + {WEIGHTS}", f"SparseCoder(activation={activation})", cfg,
                      notes=notes)
    return build("TopKSAE", a, prov, k=integer_k(cfg.get("k", 32), src))


def save(sae: SparseAutoencoder, folder: Path) -> Path:
    """Write a TopKSAE as a folder that `sparsify.SparseCoder.load_from_disk` reads back with the same maths."""
    if type(sae).__name__ != "TopKSAE":
        raise UnsupportedSAE(f"sparsify has Top-k SAEs only; a {type(sae).__name__} cannot be written as one exactly")
    Affine.of(sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, "sae").require_unit_rows("this TopKSAE")
    tensors = {"encoder.weight": sae.W_enc, "encoder.bias": sae.b_enc, "W_dec": sae.W_dec, "b_dec": sae.b_dec}
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    cfg = {"activation": "topk", "expansion_factor": max(1, sae.n_latents // sae.d_in), "normalize_decoder": True,
           "num_latents": sae.n_latents, "k": sae.k, "multi_topk": False, "skip_connection": False,
           "transcode": False, "d_in": sae.d_in}
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / WEIGHTS, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    atomic_write(folder / CONFIG, lambda tmp: tmp.write_text(json.dumps(cfg)))
    return folder
