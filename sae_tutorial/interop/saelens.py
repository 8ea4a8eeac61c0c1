"""SAELens (PyPI `sae-lens`): a folder with `cfg.json` + `sae_weights.safetensors` (SAE.save_model, v6 layout).

Read from SAELens 6.x's source (sae_lens/saes/{sae,standard_sae,topk_sae,jumprelu_sae,batchtopk_sae}.py,
loading/pretrained_sae_loaders.py); W_enc is stored (d_in, d_sae), W_dec (d_sae, d_in):

    x' = x − b_dec·[apply_b_dec_to_input]           h = x' W_enc + b_enc
    standard:  z = ReLU(h)                                          → ReLUSAE (free decoder rows, kept verbatim)
    topk:      z = TopK_k(h) then ReLU; with rescale_acts_by_decoder_norm, h_i·‖d_i‖ is selected and
               x̂ = Σ z_i d_i/‖d_i‖ + b_dec                          → TopKSAE (norms folded into the encoder)
    jumprelu:  z = ReLU(h)·1[h > θ_i]; BatchTopK SAEs are saved this way with one θ for every latent
                                                                    → BatchTopKSAE when all θ_i are equal
    x̂ = z W_dec + b_dec

Not expressible: gated and other architectures, JumpReLU with per-latent thresholds, input normalisation other than
"none" / "expected_average_only_in" (the latter scales inputs outside the SAE, noted in the provenance), hook_z
reshaping, pre-6 `finetuning_scaling_factor`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .._version import __version__
from ..checkpoint import atomic_write
from ..sae import SparseAutoencoder
from ._maths import Affine, UnsupportedSAE, build, integer_k, provenance

CONFIG, WEIGHTS = "cfg.json", "sae_weights.safetensors"
LIBRARY = "saelens"
LAYOUT_VERSION = "6.0.0"   # the SAELens config layout written by `save` (metadata.sae_lens_version)
INPUT_NORMS = ("none", "expected_average_only_in")


def v6_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """A pre-6.0 config in 6.0's names (as SAELens's handle_pre_6_0_config renames them)."""
    version = cfg.get("sae_lens_version") or (cfg.get("metadata") or {}).get("sae_lens_version")
    if version and int(str(version).split(".")[0]) >= 6:
        return cfg
    new = {{"hook_point": "hook_name", "activation_fn_str": "activation_fn"}.get(k, k): v for k, v in cfg.items()}
    new.setdefault("apply_b_dec_to_input", True)
    new.setdefault("architecture", "standard")
    if new.get("activation_fn") == "topk" and (new.get("activation_fn_kwargs") or {}).get("k") is not None:
        new["architecture"], new["k"] = "topk", new["activation_fn_kwargs"]["k"]
    if isinstance(new.get("normalize_activations"), bool) or new.get("normalize_activations") is None:
        new["normalize_activations"] = "expected_average_only_in" if new.get("normalize_activations") else "none"
    return new


def _check_options(cfg: dict[str, Any], src: str) -> list[str]:
    norm = cfg.get("normalize_activations", "none")
    if norm not in INPUT_NORMS:
        raise UnsupportedSAE(f"{src}: normalize_activations={norm!r} rescales inputs inside the SAE; sae_tutorial's "
                             f"SAEs have no such step (supported: {list(INPUT_NORMS)})")
    if cfg.get("reshape_activations", "none") != "none":
        raise UnsupportedSAE(f"{src}: reshape_activations={cfg['reshape_activations']!r} (attention-head inputs); "
                             "sae_tutorial reads flat (B, d_in) inputs only")
    if cfg.get("finetuning_scaling_factor"):
        raise UnsupportedSAE(f"{src}: finetuning_scaling_factor scales codes by a learned vector; not in sae_tutorial")
    if cfg.get("activation_fn", "relu") not in ("relu", "topk", None):
        raise UnsupportedSAE(f"{src}: activation {cfg['activation_fn']!r}; sae_tutorial has ReLU and Top-k")
    notes = []
    if norm == "expected_average_only_in":
        notes.append("SAELens scaled inputs by a constant norm factor outside the SAE (normalize_activations="
                     "'expected_average_only_in'); feed inputs scaled the same way")
    return notes


def load(folder: Path, k: int | None = None) -> SparseAutoencoder:
    """The sae_tutorial SAE equal to the SAELens SAE saved in `folder`. k: the training budget of a BatchTopK SAE
    saved as JumpReLU (its file keeps only the threshold)."""
    path = folder / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no {CONFIG}: not a SAELens SAE folder")
    raw = json.loads(path.read_text())
    cfg, src = v6_config(raw), str(folder)
    weights_path = folder / WEIGHTS
    if not weights_path.is_file():
        raise FileNotFoundError(f"{folder} has {CONFIG} but no {WEIGHTS}")
    w = load_file(str(weights_path))
    arch = cfg.get("architecture", "standard")
    if arch not in ("standard", "topk", "jumprelu", "batchtopk"):
        raise UnsupportedSAE(f"{src}: SAELens architecture {arch!r} has no sae_tutorial equivalent "
                             "(supported: standard, topk, batchtopk, jumprelu with one shared threshold)")
    notes = _check_options(cfg, src)
    missing = {"W_enc", "b_enc", "W_dec", "b_dec"} - set(w)
    if missing:
        raise ValueError(f"{weights_path} lacks {sorted(missing)}: not a SAELens {arch} SAE")
    a = Affine.of(w["W_enc"].T, w["b_enc"], w["W_dec"], w["b_dec"], src)
    if not cfg.get("apply_b_dec_to_input", True):
        a.fold_input_bias()
    meta = cfg.get("metadata") or {}
    prov = provenance(LIBRARY, folder, f"{CONFIG} + {WEIGHTS}", f"{arch} SAE", raw,
                      library_version=meta.get("sae_lens_version") or cfg.get("sae_lens_version"), notes=notes)
    if arch == "standard":
        return build("ReLUSAE", a, prov, l1_coeff=float(cfg.get("l1_coefficient", 0.05)))
    if arch == "topk":
        if cfg.get("rescale_acts_by_decoder_norm"):
            a.fold_decoder_norms("SAELens selects on h·‖d‖ and decodes z/‖d‖: rescale_acts_by_decoder_norm")
        a.require_unit_rows(f"{src} (SAELens topk)")
        return build("TopKSAE", a, prov, k=integer_k(cfg.get("k", 100), src))
    theta = _shared_threshold(w, cfg, src)
    if cfg.get("rescale_acts_by_decoder_norm"):
        a.fold_decoder_norms("rescale_acts_by_decoder_norm: θ is in units of h·‖d‖")
    a.require_unit_rows(f"{src} (SAELens {arch})")
    k = cfg.get("k") if k is None else k
    if k is None:
        raise ValueError(f"{src} is a JumpReLU SAE with one shared threshold, i.e. a BatchTopK SAE at inference, but "
                         "its file does not keep the training budget: pass k= (the per-row k it was trained with)")
    return build("BatchTopKSAE", a, prov, k=integer_k(k, src), threshold=theta)


def _shared_threshold(w: dict[str, torch.Tensor], cfg: dict[str, Any], src: str) -> float:
    """θ of a BatchTopK SAE: the scalar `topk_threshold` (training checkpoints) or a JumpReLU `threshold` vector
    whose entries are all equal (inference saves)."""
    if "topk_threshold" in w:
        return float(w["topk_threshold"])
    if "threshold" in w:
        th = w["threshold"]
    elif "log_threshold" in w:
        th = w["log_threshold"].exp()
    else:
        raise ValueError(f"{src}: a {cfg.get('architecture')} SAE needs 'threshold' (or 'topk_threshold') weights")
    th = th.reshape(-1)
    if not bool((th == th[0]).all()):
        raise UnsupportedSAE(f"{src}: JumpReLU with per-latent thresholds ({float(th.min()):.4g}..{float(th.max()):.4g}); "
                             "sae_tutorial has no JumpReLU SAE (only BatchTopK's single threshold)")
    return float(th[0])


def save(sae: SparseAutoencoder, folder: Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write `sae` in SAELens's v6 layout: TopKSAE → topk, BatchTopKSAE → jumprelu (θ for every latent, as SAELens
    saves its own BatchTopK SAEs), ReLUSAE → standard. metadata: e.g. model_name, hook_name."""
    variant = type(sae).__name__
    arch = {"TopKSAE": "topk", "BatchTopKSAE": "jumprelu", "ReLUSAE": "standard"}.get(variant)
    if arch is None:
        raise UnsupportedSAE(f"SAELens has no architecture with the maths of a {variant}")
    tensors = {"W_enc": sae.W_enc.T, "b_enc": sae.b_enc, "W_dec": sae.W_dec, "b_dec": sae.b_dec}
    if variant == "BatchTopKSAE":
        tensors["threshold"] = sae.threshold.expand(sae.n_latents).to(sae.W_dec.dtype)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    dtype = str(sae.W_dec.dtype).removeprefix("torch.")
    cfg: dict[str, Any] = {
        "d_in": sae.d_in, "d_sae": sae.n_latents, "dtype": dtype, "device": "cpu", "apply_b_dec_to_input": True,
        "normalize_activations": "none", "reshape_activations": "none", "architecture": arch,
        "metadata": {"sae_lens_version": LAYOUT_VERSION, "sae_lens_training_version": None,
                     "exported_by": f"sae_tutorial {__version__} ({variant})", **(metadata or {})},
    }
    if arch == "topk":
        cfg.update(k=sae.k, rescale_acts_by_decoder_norm=False)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / WEIGHTS, lambda tmp: save_file(tensors, str(tmp)))
    atomic_write(folder / CONFIG, lambda tmp: tmp.write_text(json.dumps(cfg)))
    return folder
