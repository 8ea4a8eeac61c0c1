"""Sparsemax SAE (Wang, Zhang, Su, Huang, arXiv:2604.14925): the input decides its own budget.

    x̃ = x / ‖x‖₂,   h = W_enc (x̃ − b_dec) + b_enc
    τ(h): Σ_i max(0, h_i − τ) = 1                                (the sparsemax threshold)
    z_i = ReLU(h_i) · 1[h_i > τ]                                 (h kept on the sparsemax support)
    x̂ = ‖x‖₂ · (z W_dec + b_dec)

The support size |{i: h_i > τ}| varies per input. The ReLU keeps codes non-negative like every other variant
here (it only matters when τ < 0); that is our documented choice where the paper's text is not at hand.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _checks
from .base import SAEOutput, SparseAutoencoder


def sparsemax_threshold(h: Tensor) -> Tensor:
    """τ (B, 1) with Σ_i max(0, h_i − τ) = 1 per row (Martins & Astudillo 2016).

    With s sorted descending and c_r = Σ_{i≤r} s_i, the support size is K = max{r : 1 + r s_r > c_r}
    and τ = (c_K − 1) / K.
    """
    s, _ = h.sort(dim=1, descending=True)                          # (B, m)
    c = s.cumsum(1)
    r = torch.arange(1, h.shape[1] + 1, device=h.device, dtype=h.dtype)
    K = (1 + r * s > c).sum(1, keepdim=True)                       # (B, 1), the condition holds on a prefix
    return (c.gather(1, K - 1) - 1) / K.to(h.dtype)


class SparsemaxSAE(SparseAutoencoder):
    """Adaptive-budget SAE; `encode(x, k=k')` keeps the top-k' of ReLU(h) instead of the sparsemax support."""

    has_fixed_k = False
    uses_auxk = False

    def forward(self, x: Tensor, k: int | None = None, *, dense_grad: bool = True) -> SAEOutput:
        xn, norm = self._budget_input(self._check_x(x))            # x / ‖x‖, ‖x‖ (B, 1)
        h = self.pre_activations(xn)                               # (B, m)
        if k is not None:
            out = self._topk_output(xn, h, _checks.budget(k, self.n_latents))
            out.x_hat = out.x_hat * norm
            return out
        tau = sparsemax_threshold(h.detach())                      # (B, 1), no gradient through the support
        z = F.relu(h) * (h > tau)
        return SAEOutput(self.decode(z) * norm, h, None, dense_codes=z)

    def _budget_input(self, x: Tensor) -> tuple[Tensor, Tensor]:
        norm = x.norm(dim=1, keepdim=True).clamp_min(1e-12)        # (B, 1)
        return x / norm, norm

    def init_b_dec(self, sample: Tensor, method: str = "geometric_median") -> None:
        """b_dec lives in the unit-normalised input space, so it is fitted on normalised rows."""
        sample = _checks.matrix(sample, "sample", self.d_in)
        super().init_b_dec(F.normalize(sample, dim=1), method)
