"""Multi-TopK SAE (Gao et al. 2024, §5.3; sparsify's `multi_topk`): a Top-k SAE trained to reconstruct at 4k too.

    S_b^k = TopK_k(h_b),  x̂^(k) = Σ_{j∈S_b^k} ReLU(h_bj) d_j + b_dec      (the model's output, as TopKSAE)
    L = FVU(x, x̂^(k)) + FVU(x, x̂^(4k)) / 8                                 (4k capped at m)

The top 4k of each row are selected once, sorted, so S^k is their first k: one selection, one gather of 4k
values and two gather decodes (x̂^(4k) = x̂^(k) + the decode of the other 3k), all on the sparse fast path.
Inference is plain Top-k at k (or at any k').
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..losses import fvu
from .base import SAEOutput
from .kernels import Support, sparse_decode
from .topk import TopKSAE

WIDE = 4            # the second budget is WIDE·k
WIDE_WEIGHT = 1 / 8  # its weight in the loss


class MultiTopKSAE(TopKSAE):
    """Top-k SAE with the Multi-TopK loss L(k) + L(4k)/8 in training (module docstring)."""

    def forward(self, x: Tensor, k: int | None = None, *, dense_grad: bool = True) -> SAEOutput:
        if k is not None or not self.training:
            return super().forward(x, k, dense_grad=dense_grad)
        x = self._check_x(x)
        h = self._pre_acts_for(x, dense_grad)                       # (B, m)
        wide = min(WIDE * self.k, self.n_latents)
        idx = h.detach().topk(wide, dim=1, sorted=True).indices      # (B, 4k); the first k are Top-k
        vals = F.relu(self.gather_pre_acts(x, h, idx))               # (B, 4k)
        top, rest = idx[:, :self.k].contiguous(), idx[:, self.k:].contiguous()
        x_hat = self.decode_sparse(top, vals[:, :self.k])
        wide_hat = x_hat + sparse_decode(Support.of_topk(rest), vals[:, self.k:].reshape(-1), self.W_dec)
        return SAEOutput(x_hat, h, top, vals[:, :self.k], partials=wide_hat.unsqueeze(1))

    def reconstruction_loss(self, x: Tensor, out: SAEOutput, tv: Tensor | None = None) -> Tensor:
        """FVU(x, x̂^(k)) + FVU(x, x̂^(4k)) / 8 (just the first without the training-mode 4k reconstruction)."""
        loss = fvu(x, out.x_hat, tv)
        if out.partials is not None:
            loss = loss + WIDE_WEIGHT * fvu(x, out.partials[:, 0], tv)
        return loss
