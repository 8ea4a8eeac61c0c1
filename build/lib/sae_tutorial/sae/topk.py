"""Budgeted SAEs: Top-k (Gao et al. 2024, OpenAI convention) and BatchTopK (Bussmann et al. 2024).

    TopK:       S_b = TopK_k(h_b),            z_b = ReLU(h_b) · 1[S_b]           exactly k per row
    BatchTopK:  S = TopK_{B·k}(ReLU(h)) over the whole batch in training     k per row on average;
                z = ReLU(h) · 1[h > θ] at inference, θ = running mean of the smallest selected activation
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _checks
from ..distributed import Group
from .base import SAEOutput, SparseAutoencoder
from .kernels import Support, sparse_encode


class TopKSAE(SparseAutoencoder):
    """Top-k SAE: each input keeps its k largest pre-activations (ReLU'd)."""

    def __init__(self, d_in: int, n_latents: int, k: int, *, seed: int | None = None):
        super().__init__(d_in, n_latents, seed=seed)
        self.k = _checks.budget(k, self.n_latents)

    def config(self) -> dict:
        return {**super().config(), "k": self.k}

    def forward(self, x: Tensor, k: int | None = None, *, dense_grad: bool = True) -> SAEOutput:
        x = self._check_x(x)
        k = self.k if k is None else _checks.budget(k, self.n_latents)
        h = self._pre_acts_for(x, dense_grad)                      # (B, m)
        return self._topk_output(x, h, k)


class BatchTopKSAE(SparseAutoencoder):
    """BatchTopK SAE: the top B·k activations of the whole batch in training, a learned threshold θ at inference.

    θ is a buffer (saved in the checkpoint): an exponential moving average (momentum 0.99) of the smallest
    positive activation selected in each training batch. `encode(x, k=k')` applies a batch-level top-(B·k')
    on the given batch instead of θ. With dense_grad=False (training) the B·k selected entries are kept as a
    kernels.Support, any number per row, and get Top-k's sparse backward.
    """

    has_fixed_k = False
    per_row_budget = False    # forward(x, k=k') keeps the top B·k' of the whole batch

    def __init__(self, d_in: int, n_latents: int, k: int, *, momentum: float = 0.99, seed: int | None = None):
        super().__init__(d_in, n_latents, seed=seed)
        self.k = _checks.budget(k, self.n_latents)
        self.momentum = _checks.non_negative(momentum, "momentum")
        if self.momentum >= 1:
            raise ValueError(f"momentum must be < 1, got {momentum}")
        self.register_buffer("threshold", torch.zeros(()))                       # θ
        self.register_buffer("threshold_updates", torch.zeros((), dtype=torch.long))

    def config(self) -> dict:
        return {**super().config(), "k": self.k, "momentum": self.momentum}

    @torch.no_grad()
    def _select(self, h: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """(flat indices, values) of the top B·k entries of h. Data-parallel training selects over the global batch:
        the entries of this rank's slice at or above the global (B·k)-th largest value (distributed.Group)."""
        flat, group = h.flatten(), Group.current()
        if not (self.training and group.active):
            top = flat.topk(min(h.shape[0] * k, flat.numel()), sorted=False)
            return top.indices, top.values
        n = k * int(group.sum(torch.tensor(h.shape[0], device=h.device)))   # B·k of the global batch
        selected = (flat >= group.kth_largest(flat, n)).nonzero().squeeze(1)
        return selected, flat[selected]

    @torch.no_grad()
    def _update_threshold(self, selected: Tensor) -> None:
        """θ ← μθ + (1−μ)·min(selected > 0), on the device (no host sync); the first update sets θ."""
        smallest = torch.where(selected > 0, selected, torch.inf).min().to(self.threshold.dtype)
        smallest = Group.current().min(smallest)                  # over the global batch under torchrun
        ok = torch.isfinite(smallest)
        ema = torch.lerp(self.threshold, smallest, 1 - self.momentum)
        new = torch.where(self.threshold_updates == 0, smallest, ema)
        self.threshold.copy_(torch.where(ok, new, self.threshold))
        self.threshold_updates.add_(ok.long())

    def forward(self, x: Tensor, k: int | None = None, *, dense_grad: bool = True) -> SAEOutput:
        x = self._check_x(x)
        if not (self.training or k is not None):
            h = self.pre_activations(x)                            # (B, m)
            a = F.relu(h)
            z = a * (a > self.threshold)
            return SAEOutput(self.decode(z), h, None, dense_codes=z)
        k = self.k if k is None else _checks.budget(k, self.n_latents)
        h = self._pre_acts_for(x, dense_grad)                      # (B, m)
        B, m = h.shape
        # the top B·k of h over the batch; where fewer than B·k are positive, ReLU zeroes the rest, as it would
        # the zeros a top-k of ReLU(h) picks among
        selected, values = self._select(h, k)
        if self.training and k == self.k:
            self._update_threshold(F.relu(values))
        if dense_grad:
            keep = torch.zeros(h.numel(), dtype=torch.bool, device=h.device)
            keep[selected] = True
            z = F.relu(h) * keep.view_as(h)                        # (B, m)
            return SAEOutput(self.decode(z), h, None, dense_codes=z)
        support = Support.of_flat(selected, B, m)                  # E = B·k entries, sorted by row
        vals = F.relu(sparse_encode(x, self.b_dec, self.W_enc, self.b_enc, h, support))   # (E,)
        return SAEOutput(self.decode_sparse(support, vals), h, None, vals, support=support)
