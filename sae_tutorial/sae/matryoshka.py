"""Matryoshka SAE (Bussmann et al. 2025; Nabeshima 2024): nested prefixes of the dictionary, each reconstructing
on its own.

The latents are split into groups of sizes n_1, …, n_G (Σ n_g = m); prefix g holds the first P_g = n_1 + … + n_g.
With the Top-k support S_b of each row (as TopKSAE),

    x̂^(g)_b = b_dec + Σ_{j ∈ S_b, j < P_g} ReLU(h_bj) d_j          (x̂^(G) is the model's output)
    L = (1/G) Σ_g FVU(x, x̂^(g))

so early latents must reconstruct alone and learn general directions; later ones refine. The group weights are
equal, as in dictionary_learning's MatryoshkaBatchTopKTrainer. One difference: the selection is per-row Top-k,
not BatchTopK, so that against TopKSAE only the loss changes. The k selected entries of a row, sorted by latent,
fall into the groups in order: one gather decode into B·G bags gives every group's part, and a cumulative sum over
groups gives every prefix.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..losses import fvu
from .base import SAEOutput
from .kernels import Support, sparse_decode
from .topk import TopKSAE


def default_groups(n_latents: int) -> list[int]:
    """Prefixes of m/16, m/8, m/4, m/2 and m latents (each doubling the last), as group sizes."""
    ends = sorted({max(1, n_latents // 2 ** i) for i in range(4, -1, -1)})
    return [b - a for a, b in zip([0, *ends[:-1]], ends)]


class MatryoshkaSAE(TopKSAE):
    """Top-k SAE trained with the Matryoshka loss (module docstring); `groups`: the group sizes n_g, summing to
    n_latents (default: `default_groups`)."""

    def __init__(self, d_in: int, n_latents: int, k: int, groups: Sequence[int] | None = None, *,
                 seed: int | None = None):
        super().__init__(d_in, n_latents, k, seed=seed)
        groups = default_groups(self.n_latents) if groups is None else list(groups)
        if not groups or any(isinstance(g, bool) or not isinstance(g, int) or g <= 0 for g in groups):
            raise ValueError(f"groups must be a non-empty list of positive ints, got {groups!r}")
        if sum(groups) != self.n_latents:
            raise ValueError(f"groups must sum to n_latents={self.n_latents}, got {groups} (sum {sum(groups)})")
        self.groups = groups
        self.register_buffer("prefix_ends", torch.tensor(groups).cumsum(0), persistent=False)  # P_g

    def config(self) -> dict[str, Any]:
        return {**super().config(), "groups": list(self.groups)}

    def forward(self, x: Tensor, k: int | None = None, *, dense_grad: bool = True) -> SAEOutput:
        if k is not None or not self.training:
            return super().forward(x, k, dense_grad=dense_grad)
        x = self._check_x(x)
        h = self._pre_acts_for(x, dense_grad)                          # (B, m)
        idx = h.detach().topk(self.k, dim=1, sorted=False).indices.sort(dim=1).values   # (B, k) by latent id
        vals = F.relu(self.gather_pre_acts(x, h, idx))                  # (B, k)
        B, G = idx.shape[0], len(self.groups)
        group = torch.searchsorted(self.prefix_ends, idx, right=True)  # (B, k) group of each entry
        bags = (torch.arange(B, device=idx.device)[:, None] * G + group).reshape(-1)   # sorted: rows, then groups
        counts = torch.bincount(bags, minlength=B * G)
        parts = sparse_decode(Support(bags, idx.reshape(-1), counts.cumsum(0) - counts), vals.reshape(-1),
                              self.W_dec).view(B, G, self.d_in)          # (B, G, d) each group's part
        prefixes = parts.cumsum(1) + self.b_dec                         # (B, G, d) x̂^(g)
        return SAEOutput(prefixes[:, -1], h, idx, vals, partials=prefixes[:, :-1])

    def reconstruction_loss(self, x: Tensor, out: SAEOutput, tv: Tensor | None = None) -> Tensor:
        """(1/G) Σ_g FVU(x, x̂^(g)) (just FVU(x, x̂) without the training-mode prefixes)."""
        loss = fvu(x, out.x_hat, tv)
        if out.partials is None:
            return loss
        for p in range(out.partials.shape[1]):
            loss = loss + fvu(x, out.partials[:, p], tv)
        return loss / (out.partials.shape[1] + 1)
