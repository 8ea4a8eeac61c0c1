"""ReLU SAE with an L1 penalty weighted by decoder norms (Anthropic, "Towards Monosemanticity" April 2024 update).

    z = ReLU(h),      L_sparse = λ · (1/B) Σ_b Σ_j z_bj ‖d_j‖₂

The decoder rows are free (not projected to unit norm): the ‖d_j‖ weight is what stops the penalty from
being dodged by shrinking z and growing d_j.
"""
from __future__ import annotations

from torch import Tensor
import torch.nn.functional as F

from .. import _checks
from .base import SAEOutput, SparseAutoencoder


class ReLUSAE(SparseAutoencoder):
    """ReLU SAE; `l1_coeff` is λ above. `encode(x, k=k')` keeps the top-k' of ReLU(h)."""

    unit_norm_decoder = False
    has_fixed_k = False
    uses_auxk = False

    def __init__(self, d_in: int, n_latents: int, l1_coeff: float = 0.05, *, seed: int | None = None):
        super().__init__(d_in, n_latents, seed=seed)
        self.l1_coeff = _checks.non_negative(l1_coeff, "l1_coeff")

    def config(self) -> dict:
        return {**super().config(), "l1_coeff": self.l1_coeff}

    def forward(self, x: Tensor, k: int | None = None, *, dense_grad: bool = True) -> SAEOutput:
        x = self._check_x(x)
        h = self.pre_activations(x)                                # (B, m)
        if k is not None:
            return self._topk_output(x, h, _checks.budget(k, self.n_latents))
        z = F.relu(h)
        return SAEOutput(self.decode(z), h, None, dense_codes=z)

    def sparsity_loss(self, out: SAEOutput) -> Tensor:
        """λ · (1/B) Σ_b Σ_j z_bj ‖d_j‖₂"""
        norms = self.W_dec.norm(dim=1)                             # (m,)
        return self.l1_coeff * (out.codes @ norms).mean()
