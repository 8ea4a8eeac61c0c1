"""Training losses: FVU-normalised reconstruction and AuxK (Gao et al. 2024).

    L_rec = Σ_b ‖x_b − x̂_b‖² / Σ_b ‖x_b − x̄‖²                      (x̄: batch mean)
    L_aux = min(n_dead / k_aux, 1) · Σ_b ‖e_b − ê_b‖² / N
            e = x − x̂ (detached),  ê_b = Σ_{j ∈ TopK_kaux(h_b over dead latents)} ReLU(h_bj) d_j   — no b_dec
            N = Σ_b ‖x_b − x̄‖²  (norm="input", as EleutherAI sparsify)
             or Σ_b ‖e_b − ē‖²  (norm="residual", as openai/sparse_autoencoder and dictionary_learning)

The AuxK reconstruction models a residual, which has no offset: adding b_dec to ê (as three well-known
libraries do) would ask dead latents to fit b_dec as well.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .sae.kernels import Support, sparse_decode


def _wide(t: Tensor) -> Tensor:
    """t in float32 at least (bf16 activations under autocast are summed in float32; float64 stays float64)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def total_variance(x: Tensor) -> Tensor:
    """Σ_b ‖x_b − x̄‖², the FVU denominator."""
    x = _wide(x)
    return (x - x.mean(0)).pow(2).sum()


def fvu(x: Tensor, x_hat: Tensor, tv: Tensor | None = None) -> Tensor:
    """Fraction of variance unexplained: Σ_b ‖x_b − x̂_b‖² / Σ_b ‖x_b − x̄‖² (a 0-d tensor).

    tv: the denominator when it is computed elsewhere (over the global batch in data-parallel training).
    """
    tv = total_variance(x) if tv is None else tv
    return (_wide(x) - _wide(x_hat)).pow(2).sum() / tv.clamp_min(1e-30)


AUXK_NORMS = ("input", "residual")
# AuxK's decode on an accelerator: gathers of the k_aux entries per row (sparse_encode, sparse_decode) unless
# k_aux ≥ this fraction of m, where dense (B, m) GEMMs are faster. On a CPU, where reading the dead set back costs
# nothing, AuxK computes the dead latents' columns only: at d = 1280, m = 1024, k_aux = 640 the gathers made a CPU
# training step several times slower than the step without AuxK, the dead columns alone about as fast.
DENSE_AUXK_FRACTION = 0.25


def auxk_loss(sae, x: Tensor, out, dead: Tensor, k_aux: int, tv: Tensor | None = None,
              norm: str = "input") -> Tensor:
    """AuxK: the top-k_aux dead latents of each row reconstruct the detached residual x − x̂ (no b_dec).

    sae: the model (its W_dec and encoder are used); out: its SAEOutput on x; dead: bool (m,).
    On an accelerator: gathers of the k_aux entries, or dense (B, m) GEMMs once k_aux ≥ DENSE_AUXK_FRACTION · m,
    with no host sync; on a CPU: the dead columns only (`_auxk_decode_dead_columns`). The same sums.
    Slots beyond the number of dead latents are zeroed, and the loss is scaled by min(n_dead/k_aux, 1),
    so it vanishes smoothly when nothing is dead. norm: the denominator N of the module docstring,
    "input" or "residual"; tv: N when computed elsewhere (over the global batch in data-parallel training).
    """
    if norm not in AUXK_NORMS:
        raise ValueError(f"norm must be one of {AUXK_NORMS}, got {norm!r}")
    h, route = out.pre_acts, _auxk_route(dead, k_aux, sae.n_latents)
    if route == "columns":
        return _auxk_fvu(x, out, _auxk_decode_dead_columns(sae, x, dead, k_aux), dead, k_aux, tv, norm)
    masked = h.detach().masked_fill(~dead, float("-inf"))          # (B, m)
    idx = masked.topk(k_aux, dim=1, sorted=False).indices          # (B, k_aux)
    if route == "dense":   # many latents in play: dense GEMMs beat the gathers
        h = h if h.requires_grad else sae.pre_activations(x)                     # (B, m), with grad
        keep = torch.zeros_like(h, dtype=torch.bool).scatter(1, idx, dead[idx])  # the top-k_aux dead slots
        e_hat = (F.relu(h) * keep).to(sae.W_dec.dtype) @ sae.W_dec               # (B, d), no b_dec
    else:
        vals = F.relu(sae.gather_pre_acts(x, h, idx)) * dead[idx]       # (B, k_aux); 0 on non-dead slots
        e_hat = sparse_decode(Support.of_topk(idx), vals.reshape(-1), sae.W_dec)   # (B, d), no b_dec
    return _auxk_fvu(x, out, e_hat, dead, k_aux, tv, norm)


def _auxk_route(dead: Tensor, k_aux: int, n_latents: int) -> str:
    """How `auxk_loss` computes: "columns" (CPU), else "dense" or "gather" (see DENSE_AUXK_FRACTION)."""
    if dead.device.type == "cpu":
        return "columns"
    return "dense" if DENSE_AUXK_FRACTION * n_latents <= k_aux else "gather"


def _auxk_decode_dead_columns(sae, x: Tensor, dead: Tensor, k_aux: int) -> Tensor:
    """The CPU route of `auxk_loss`: ê = Σ over the top-min(k_aux, n_dead) dead latents of ReLU(h_j) W_dec[j],
    computed on the dead columns J only: h_J = (x − b_dec) W_enc[J]ᵀ + b_enc[J] (B, |J|)."""
    cols = dead.nonzero().squeeze(1)                                              # J, read back (free on a CPU)
    if cols.numel() == 0:
        return torch.zeros_like(x, dtype=sae.W_dec.dtype)
    h = F.linear(x.to(sae.W_enc.dtype) - sae.b_dec, sae.W_enc[cols], sae.b_enc[cols])   # (B, |J|), with grad
    top = h.detach().topk(min(k_aux, cols.numel()), dim=1, sorted=False).indices
    keep = torch.zeros_like(h, dtype=torch.bool).scatter(1, top, True)
    return (F.relu(h) * keep) @ sae.W_dec[cols]                                   # (B, d), no b_dec


def _auxk_fvu(x: Tensor, out, e_hat: Tensor, dead: Tensor, k_aux: int, tv: Tensor | None, norm: str) -> Tensor:
    """min(n_dead / k_aux, 1) · FVU of ê against the detached residual e = x − x̂ (over N, `auxk_loss`)."""
    e = (_wide(x) - _wide(out.x_hat)).detach()
    scale = (dead.sum() / k_aux).clamp(max=1.0)
    if tv is None:
        tv = total_variance(x if norm == "input" else e)
    return scale * fvu(e, e_hat, tv)
