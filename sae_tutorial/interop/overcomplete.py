"""overcomplete (PyPI `overcomplete`): a torch file holding a saved SAE module (`torch.save(model)`) or its state dict.

Their maths (overcomplete/sae/{base,topk_sae,batchtopk_sae,dictionary,modules,factory}.py), eval mode:

    pre = encoder(x)          the "linear" encoder: Linear (+ BatchNorm1d, folded exactly from its running stats),
                              or a TieableEncoder (x Dᵀ or x Wᵀ, optional bias); codes = ReLU(pre)
    SAE           z = codes                                             → ReLUSAE
    TopKSAE       z = TopK_k(codes)                                     → TopKSAE
    BatchTopKSAE  z = codes·1[codes ≥ θ_running]                        → BatchTopKSAE, θ = next float below θ_running
    x̂ = z D,      D = normalization(_weights)·exp(multiplier)           no decoder bias: our b_dec = 0

overcomplete's BatchTopK `top_k` counts activations over a whole batch; ours counts per row, so its `k` must be given.
A state dict does not say which SAE class, budget, normalisation or running threshold it came from: pass
`variant=` ("SAE", "TopKSAE", "BatchTopKSAE"), `k=`, `threshold=` and `normalization=` (default "l2", the library's).
Not expressible: deeper encoders (MLP / attention / ResNet blocks), JumpSAE, matching pursuit, archetypal
dictionaries, Top-k over decoder rows off the unit sphere. Unpickling a module runs code from the file, so it
needs `trust_pickle=True`, and overcomplete installed.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..sae import SparseAutoencoder
from ._maths import Affine, UnsupportedSAE, build, integer_k, next_below, provenance

LIBRARY = "overcomplete"
CLASSES = {"SAE": "ReLUSAE", "TopKSAE": "TopKSAE", "BatchTopKSAE": "BatchTopKSAE"}
NORMALIZATIONS = {
    "l2": lambda w: w / (w.norm(p=2, dim=1, keepdim=True) + 1e-8),
    "max_l2": lambda w: w / w.norm(p=2, dim=1, keepdim=True).amax(dim=0, keepdim=True),
    "l1": lambda w: w / (w.norm(p=1, dim=1, keepdim=True) + 1e-8),
    "max_l1": lambda w: w / w.norm(p=1, dim=1, keepdim=True).amax(dim=0, keepdim=True),
    "identity": lambda w: w,
}


def read(path: Path, trust_pickle: bool = False) -> Any:
    """The object in a torch file: a state dict (weights-only load), or, with trust_pickle, a pickled module."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not trust_pickle:
            raise ValueError(f"{path} is a pickled Python object, not a state dict ({str(e).splitlines()[0][:200]}); "
                             "unpickling runs code from the file: pass trust_pickle=True if you trust its source") from e
    except (RuntimeError, EOFError, OSError) as e:
        raise ValueError(f"{path} is not a readable torch file (corrupt or truncated?): {e}") from e
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except ModuleNotFoundError as e:
        raise ValueError(f"{path} pickles classes of a library that is not installed ({e.name}): install it "
                         "(pip install overcomplete) to read a saved module, or save its state_dict()") from e


def is_overcomplete(obj: Any) -> bool:
    """A pickled overcomplete module, or a state dict with an overcomplete dictionary layer."""
    if isinstance(obj, torch.nn.Module):
        return type(obj).__module__.startswith("overcomplete.")
    return isinstance(obj, dict) and "dictionary._weights" in obj


def load(path: Path, obj: Any, *, variant: str | None = None, k: int | None = None, threshold: float | None = None,
         normalization: str = "l2") -> SparseAutoencoder:
    """The sae_tutorial SAE equal to the overcomplete SAE `obj` read from `path` (see the module docstring)."""
    src = str(path)
    if isinstance(obj, torch.nn.Module):
        cls = type(obj).__name__
        if cls not in CLASSES:
            raise UnsupportedSAE(f"{src} holds an overcomplete {cls}; sae_tutorial expresses {sorted(CLASSES)} only")
        if getattr(obj, "nb_concepts", None) is None or not isinstance(getattr(obj, "encoder", None), torch.nn.Module):
            raise ValueError(f"{src}: the {cls} object has no encoder / nb_concepts: not an overcomplete SAE")
        D = _module_dictionary(obj.dictionary, src)
        W, b = _module_encoder(obj.encoder, D, src)
        k = getattr(obj, "top_k", None) if cls == "TopKSAE" else k
        if cls == "BatchTopKSAE":
            running = obj.running_threshold
            if running is None:
                raise ValueError(f"{src}: the BatchTopKSAE's running threshold was never set (never trained); its "
                                 "eval encode would fail too")
            threshold = float(running)
        config = {"class": cls, "top_k": getattr(obj, "top_k", None), "encoder": type(obj.encoder).__name__}
    elif isinstance(obj, dict):
        cls = variant
        if cls not in CLASSES:
            raise ValueError(f"{src} is an overcomplete state dict, which does not record its SAE class: pass "
                             f"variant= one of {sorted(CLASSES)} (got {variant!r})")
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {sorted(NORMALIZATIONS)}, got {normalization!r}")
        D = NORMALIZATIONS[normalization](obj["dictionary._weights"]) * torch.exp(obj["dictionary.multiplier"])
        W, b = _state_encoder(obj, D, src)
        config = {"class": cls, "normalization": normalization, "state_dict_keys": sorted(obj)}
    else:
        raise ValueError(f"{src} holds a {type(obj).__name__}, neither an overcomplete SAE module nor a state dict")
    a = Affine.of(W, b, D, None, src)
    prov = provenance(LIBRARY, path, "torch module" if isinstance(obj, torch.nn.Module) else "state dict",
                      cls, config)
    if cls == "SAE":
        return build("ReLUSAE", a, prov)
    a.require_unit_rows(f"{src} (overcomplete {cls})")
    if k is None:
        what = "top_k" if cls == "TopKSAE" else "k= (the per-row budget: its top_k counts a whole batch)"
        raise ValueError(f"{src}: an overcomplete {cls} needs its budget; pass {what}")
    if cls == "TopKSAE":
        return build("TopKSAE", a, prov, k=integer_k(k, src))
    if threshold is None:
        raise ValueError(f"{src}: a BatchTopKSAE state dict does not store its running threshold; pass threshold=")
    prov["notes"].append(f"overcomplete keeps codes ≥ θ={threshold:.9g}; stored as > the next float below it")
    return build("BatchTopKSAE", a, prov, k=integer_k(k, src), threshold=next_below(threshold, a.dtype))


def _module_dictionary(layer: torch.nn.Module, src: str) -> Tensor:
    """D as overcomplete's eval mode uses it: the fused dictionary (normalised weights · exp(multiplier))."""
    if type(layer).__name__ != "DictionaryLayer":
        raise UnsupportedSAE(f"{src}: dictionary {type(layer).__name__} (e.g. archetypal) has no sae_tutorial equivalent")
    fused = getattr(layer, "_fused_dictionary", None)
    if not layer.training and fused is not None:
        return fused.detach()
    with torch.no_grad():
        return layer.normalization(layer._weights) * torch.exp(layer.multiplier)


def _module_encoder(enc: torch.nn.Module, D: Tensor, src: str) -> tuple[Tensor, Tensor | None]:
    """(W (m, d), b) of an encoder that is one affine map followed by ReLU."""
    name = type(enc).__name__
    if name == "TieableEncoder":
        W = D if enc.tied_to is not None else enc.weight
        return W.detach(), None if enc.bias is None else enc.bias.detach()
    if name != "MLPEncoder" or len(enc.mlp_blocks) > 0:
        raise UnsupportedSAE(f"{src}: encoder {name} with hidden blocks is not one affine map; sae_tutorial's "
                             "encoder is a single linear layer")
    if not isinstance(enc.final_activation, torch.nn.ReLU):
        raise UnsupportedSAE(f"{src}: encoder output activation {type(enc.final_activation).__name__}; ours is ReLU")
    linear, *norm = list(enc.final_block)
    W, b = linear.weight.detach(), None if linear.bias is None else linear.bias.detach()
    if not norm or isinstance(norm[0], torch.nn.Identity):
        return W, b
    if isinstance(norm[0], torch.nn.BatchNorm1d) and len(norm) == 1:
        bn = norm[0]
        return _fold_batchnorm(W, b, bn.running_mean, bn.running_var, bn.eps,
                               bn.weight if bn.affine else None, bn.bias if bn.affine else None, src)
    raise UnsupportedSAE(f"{src}: encoder normalisation {[type(n).__name__ for n in norm]}; only an eval-mode "
                         "BatchNorm1d (an affine map) folds into a linear encoder")


def _fold_batchnorm(W: Tensor, b: Tensor | None, mean: Tensor | None, var: Tensor | None, eps: float,
                    gamma: Tensor | None, beta: Tensor | None, src: str) -> tuple[Tensor, Tensor]:
    """Eval BatchNorm after a linear layer: γ (W x + b − μ)/√(σ² + ε) + β = (s W) x + s (b − μ) + β, s = γ/√(σ² + ε)."""
    if mean is None or var is None:
        raise UnsupportedSAE(f"{src}: BatchNorm1d without running statistics normalises with batch statistics; "
                             "not a fixed map")
    s = (var.double() + eps).rsqrt() * (1.0 if gamma is None else gamma.detach().double())
    b0 = torch.zeros_like(mean, dtype=torch.float64) if b is None else b.double()
    b_new = s * (b0 - mean.double()) + (0.0 if beta is None else beta.detach().double())
    return (W.double() * s[:, None]).to(W.dtype), b_new.to(W.dtype)


def _state_encoder(sd: dict[str, Tensor], D: Tensor, src: str) -> tuple[Tensor, Tensor | None]:
    """(W, b) from the encoder keys of a state dict (linear MLPEncoder, with or without BatchNorm, or TieableEncoder)."""
    if any(k.startswith("encoder.mlp_blocks.") for k in sd):
        raise UnsupportedSAE(f"{src}: encoder with hidden MLP blocks is not one affine map")
    if "encoder.final_block.0.weight" in sd:
        W, b = sd["encoder.final_block.0.weight"], sd.get("encoder.final_block.0.bias")
        if "encoder.final_block.1.running_mean" in sd:
            p = "encoder.final_block.1."
            return _fold_batchnorm(W, b, sd[p + "running_mean"], sd[p + "running_var"], 1e-5, sd.get(p + "weight"),
                                   sd.get(p + "bias"), src)
        if any(k.startswith("encoder.final_block.1.") for k in sd):
            raise UnsupportedSAE(f"{src}: encoder normalisation layer with parameters other than BatchNorm1d's")
        return W, b
    enc_keys = sorted(k for k in sd if k.startswith("encoder."))
    if set(enc_keys) <= {"encoder.weight", "encoder.bias"}:
        return sd.get("encoder.weight", D), sd.get("encoder.bias")     # no weight: tied to the dictionary
    raise UnsupportedSAE(f"{src}: encoder with parameters {enc_keys[:6]} is not a linear encoder")
