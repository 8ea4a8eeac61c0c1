"""saprmarks/dictionary_learning (PyPI `dictionary-learning`): a folder with `ae.pt` (the state dict) + `config.json`
({"trainer": {"dict_class", "k", ...}, "buffer": ...}), as its trainSAE writes them.

Their maths (dictionary.py, trainers/top_k.py, batch_top_k.py, matryoshka_batch_top_k.py):

    AutoEncoder        z = ReLU(encoder(x − bias)),          x̂ = decoder(z) + bias        → ReLUSAE
    AutoEncoderNew     z = ReLU(encoder(x)),                  x̂ = decoder(z) (+ its bias)  → ReLUSAE (b_dec folded)
    AutoEncoderTopK    z = TopK_k(ReLU(encoder(x − b_dec))),  x̂ = decoder(z) + b_dec       → TopKSAE
    BatchTopKSAE       z = a·1[a > θ], a = ReLU(encoder(x − b_dec))  (encode's default, use_threshold=True)
    MatryoshkaBatchTopKSAE   the same maths with W_enc (d, m) parameters                    → BatchTopKSAE

nn.Linear stores decoder.weight as (d, m): our W_dec is its transpose. θ = −1 means "never learned": their encode
then keeps every positive activation, and so does ours with θ = −1. AutoEncoderTopK's optional threshold
(encode(use_threshold=True)) is not its default and is kept in the provenance only. Not expressible: JumpReLU
and gated autoencoders (per-latent thresholds, a separate gate).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..sae import SparseAutoencoder
from ._maths import Affine, UnsupportedSAE, build, integer_k, provenance

WEIGHTS, CONFIG = "ae.pt", "config.json"
LIBRARY = "dictionary_learning"
UNSUPPORTED = {"JumpReluAutoEncoder": "JumpReLU (per-latent thresholds)",
               "GatedAutoEncoder": "a gated encoder (separate gate and magnitude paths)"}


def read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no {CONFIG}: not a dictionary_learning SAE folder")
    cfg = json.loads(path.read_text())
    if not isinstance(cfg.get("trainer"), dict):
        raise ValueError(f"{path} has no 'trainer' section: not a dictionary_learning config")
    return cfg


def _dict_class(trainer: dict[str, Any], w: dict[str, torch.Tensor]) -> str:
    """The dictionary class the trainer config names, or the one the state dict's keys imply."""
    if trainer.get("dict_class"):
        return str(trainer["dict_class"])
    if "group_sizes" in w:
        return "MatryoshkaBatchTopKSAE"
    if "k" in w:
        return "AutoEncoderTopK" if "TopK" in str(trainer.get("trainer_class", "")) else "BatchTopKSAE"
    if "threshold" in w:
        return "JumpReluAutoEncoder"
    if "r_mag" in w:
        return "GatedAutoEncoder"
    return "AutoEncoderNew" if "decoder.bias" in w else "AutoEncoder"


def load(folder: Path) -> SparseAutoencoder:
    """The sae_tutorial SAE equal to the dictionary_learning dictionary saved in `folder`."""
    cfg = read_config(folder)
    trainer, src = cfg["trainer"], str(folder)
    path = folder / WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has {CONFIG} but no {WEIGHTS}")
    try:
        w = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:   # a pickle of objects, or a corrupt file
        raise ValueError(f"{path} is not a plain state dict of tensors (dictionary_learning saves one): {e}") from e
    cls = _dict_class(trainer, w)
    if cls in UNSUPPORTED:
        raise UnsupportedSAE(f"{src} holds a dictionary_learning {cls}: {UNSUPPORTED[cls]} has no sae_tutorial variant")
    prov = provenance(LIBRARY, folder, f"{WEIGHTS} + {CONFIG}", cls, cfg)
    try:
        if cls == "AutoEncoder":
            a = Affine.of(w["encoder.weight"], w["encoder.bias"], w["decoder.weight"].T, w["bias"], src)
            return build("ReLUSAE", a, prov, **_l1(trainer))
        if cls == "AutoEncoderNew":
            a = Affine.of(w["encoder.weight"], w["encoder.bias"], w["decoder.weight"].T, w["decoder.bias"], src)
            a.fold_input_bias()
            return build("ReLUSAE", a, prov, **_l1(trainer))
        if cls in ("AutoEncoderTopK", "BatchTopKSAE"):
            a = Affine.of(w["encoder.weight"], w["encoder.bias"], w["decoder.weight"].T, w["b_dec"], src)
        elif cls == "MatryoshkaBatchTopKSAE":
            a = Affine.of(w["W_enc"].T, w["b_enc"], w["W_dec"], w["b_dec"], src)
            prov["notes"].append(f"trained with Matryoshka groups {w['group_sizes'].tolist()}; inference is "
                                 "BatchTopK's threshold")
        else:
            raise UnsupportedSAE(f"{src}: dictionary_learning class {cls!r} is not one sae_tutorial knows how to read")
    except KeyError as e:
        raise ValueError(f"{path} lacks {e} for a {cls}: not a {cls} state dict") from e
    k = integer_k(w["k"] if "k" in w else trainer.get("k"), src)
    a.require_unit_rows(f"{src} (dictionary_learning {cls})")
    if cls == "AutoEncoderTopK":
        if "threshold" in w and float(w["threshold"]) >= 0:
            prov["notes"].append(f"its optional inference threshold θ={float(w['threshold']):.6g} (encode("
                                 "use_threshold=True)) is not the default encode and is not used")
        return build("TopKSAE", a, prov, k=k)
    theta = float(w["threshold"])
    if theta < 0:
        prov["notes"].append("threshold never learned (θ = −1): every positive activation is kept, as in "
                             "dictionary_learning's encode")
    return build("BatchTopKSAE", a, prov, k=k, threshold=theta)


def _l1(trainer: dict[str, Any]) -> dict[str, float]:
    return {"l1_coeff": float(trainer["l1_penalty"])} if trainer.get("l1_penalty") is not None else {}
