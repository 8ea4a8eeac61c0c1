"""The paper's regularizers on pre-Top-k activations of batch-active units.

    A      = ∪_b S_b
             units Top-k selected at least once in the batch
    R_off  = (1/B) Σ_b Σ_{j ∈ A∖S_b} φ(h_bj)
             ℓ1 on each row's off-support active units
    R_rat  = (1/B) Σ_b ‖φ(h_b,A)‖₁ / (‖φ(h_b,A)‖₂ + ε)
             scale-invariant ℓ1/ℓ2 over the active set
    φ = ReLU (default) or |·|

`mask=False` replaces A by all m units: the ablation. Units outside A never reach the
decoder, so they get no reconstruction gradient; penalising them only pushes them
further below threshold (more dead latents).

The ℓ1/ℓ2 gradient, for p = φ(h_b,A) > 0, is ∂R/∂p_j = 1/‖p‖₂ − ‖p‖₁ p_j / ‖p‖₂³:
orthogonal to p (no global shrinkage), positive (so descent shrinks) for
p_j < ‖p‖₂²/‖p‖₁, negative (descent grows) above it.

`off_support_l1` and `l1_l2_ratio` are the definitions, differentiated by autograd.
Training uses their closed-form twins `off_support_l1_grad` and `l1_l2_ratio_grad`:
(value, ∂R/∂h) in a few elementwise passes, with no autograd graph over the (B, m)
matrix; the tests hold each twin to its definition.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _checks

PHIS = ("relu", "abs")


def _phi(h: Tensor, phi: str) -> Tensor:
    _checks.choice(phi, "phi", PHIS)
    return F.relu(h) if phi == "relu" else h.abs()


def _phi_prime(h: Tensor, phi: str) -> Tensor:
    """φ'(h): 1[h > 0] for ReLU, sign(h) for |·| (0 at h = 0, autograd's subgradient)."""
    _checks.choice(phi, "phi", PHIS)
    return torch.gt(h, 0, out=torch.empty_like(h)) if phi == "relu" else h.sign()


def _check(pre_acts: Tensor, indices: Tensor) -> None:
    if pre_acts.ndim != 2:
        raise ValueError(f"pre_acts must be 2-D (B, m), got shape {tuple(pre_acts.shape)}")
    if indices is None or indices.ndim != 2 or indices.shape[0] != pre_acts.shape[0]:
        raise ValueError(
            f"indices must be (B, k) with B={pre_acts.shape[0]}, got "
            f"{None if indices is None else tuple(indices.shape)}"
        )


def _union(indices: Tensor, n_latents: int) -> Tensor:
    active = torch.zeros(n_latents, dtype=torch.bool, device=indices.device)
    active[indices.reshape(-1)] = True
    return active


def batch_active_mask(indices: Tensor, n_latents: int) -> Tensor:
    """A = ∪_b S_b as a bool tensor (m,): True for units selected by Top-k in at least one row."""
    n_latents = _checks.positive_int(n_latents, "n_latents")
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= n_latents):
        raise ValueError(f"indices must lie in [0, {n_latents})")
    return _union(indices, n_latents)


def _active(pre_acts: Tensor, indices: Tensor, mask: bool) -> Tensor:
    """A (m,) when mask, else all m units."""
    m = pre_acts.shape[1]
    if mask:
        return _union(indices, m)
    return torch.ones(m, dtype=torch.bool, device=pre_acts.device)


def off_support_l1(pre_acts: Tensor, indices: Tensor, mask: bool = True, phi: str = "relu") -> Tensor:
    """R_off = (1/B) Σ_b Σ_{j ∈ A∖S_b} φ(h_bj); gradient is exactly zero on each row's own support S_b."""
    _check(pre_acts, indices)
    B = pre_acts.shape[0]
    off = _active(pre_acts, indices, mask).expand(B, -1).clone()   # (B, m): j ∈ A
    off.scatter_(1, indices, False)                                # … and j ∉ S_b
    return (_phi(pre_acts, phi) * off).sum() / B


def l1_l2_ratio(pre_acts: Tensor, indices: Tensor, mask: bool = True, phi: str = "relu", eps: float = 1e-8) -> Tensor:
    """R_rat = (1/B) Σ_b ‖φ(h_b,A)‖₁ / (‖φ(h_b,A)‖₂ + ε); scale-invariant, rows with φ(h_b,A) = 0 give 0."""
    _check(pre_acts, indices)
    eps = _checks.non_negative(eps, "eps")
    p = _phi(pre_acts, phi)                                        # (B, m)
    if mask:
        p = p * _active(pre_acts, indices, mask)                   # zero outside A
    l1 = p.sum(1)                                                  # (B,)
    l2 = torch.linalg.vector_norm(p, dim=1)                        # (B,), subgradient 0 at p = 0
    return (l1 / (l2 + eps)).mean()


# ---------------------------------------------------------------- closed-form gradients (the training fast path)
# Both act on the columns of h that `exclude` does not name: the trainer passes either the columns of A copied out
# of h, or all of h with the units outside A excluded (cheaper than copying when A is nearly every unit).
# Every fresh (B, m) buffer costs a page-faulting first touch, so each twin allocates at most two and works in place.
def off_support_l1_grad(h: Tensor, indices: Tensor, phi: str = "relu",
                        exclude: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(R_off, ∂R_off/∂h) over the columns of h not in `exclude`:

        ∂R_off/∂h_bj = φ'(h_bj) / B   for j ∉ S_b,   0 on S_b and on excluded columns
        R_off        = Σ_bj h_bj · ∂R_off/∂h_bj      since φ(h) = h φ'(h) for both φ
    """
    _check(h, indices)
    grad = _phi_prime(h, phi).div_(h.shape[0])                     # (B, m)
    grad.scatter_(1, indices, 0.0)                                 # nothing on the row's own support
    if exclude is not None:
        grad.index_fill_(1, exclude, 0.0)
    return torch.dot(h.reshape(-1), grad.reshape(-1)), grad


def l1_l2_ratio_grad(h: Tensor, indices: Tensor, phi: str = "relu", eps: float = 1e-8,
                     exclude: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(R_rat, ∂R_rat/∂h) over the columns of h not in `exclude`, with p = φ(h_b) and norms per row:

        ∂R_rat/∂h_bj = φ'(h_bj) a_b − c_b φ(h_bj) φ'(h_bj)
        a_b = 1 / (B (‖p‖₂ + ε)),   c_b = ‖p‖₁ / (B (‖p‖₂ + ε)² ‖p‖₂),   φ(h) φ'(h) = ReLU(h) or h

    and 0 on rows with p = 0 (autograd's subgradient of ‖p‖₂ at 0) and on excluded columns.
    """
    _check(h, indices)
    eps = _checks.non_negative(eps, "eps")
    B = h.shape[0]
    p = _phi(h, phi)                                               # (B, m)
    if exclude is not None:
        p.index_fill_(1, exclude, 0.0)
    l1 = p.sum(1, keepdim=True)                                    # (B, 1)
    l2 = torch.linalg.vector_norm(p, dim=1, keepdim=True)          # (B, 1)
    value = (l1 / (l2 + eps)).mean()
    live = l2 > 0
    a = torch.where(live, 1 / (B * (l2 + eps)), 0.0)
    c = torch.where(live, l1 / (B * (l2 + eps) ** 2 * l2.clamp_min(torch.finfo(h.dtype).tiny)), 0.0)
    grad = _phi_prime(h, phi).mul_(a)                              # φ'(h) a_b
    grad.addcmul_(p if phi == "relu" else h, c, value=-1)          # − c_b φ(h) φ'(h)
    if exclude is not None:
        grad.index_fill_(1, exclude, 0.0)
    return value, grad
