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
from .base import SAEOutput, SparseAutoencoder


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
    on the given batch instead of θ. Always takes the dense path (the selection spans the batch).
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
    def _update_threshold(self, selected: Tensor) -> None:
        """θ ← μθ + (1−μ)·min(selected > 0), on the device (no host sync); the first update sets θ."""
        smallest = torch.where(selected > 0, selected, torch.inf).min().to(self.threshold.dtype)
        ok = torch.isfinite(smallest)
        ema = torch.lerp(self.threshold, smallest, 1 - self.momentum)
        new = torch.where(self.threshold_updates == 0, smallest, ema)
        self.threshold.copy_(torch.where(ok, new, self.threshold))
        self.threshold_updates.add_(ok.long())

    def forward(self, x: Tensor, k: int | None = None, *, dense_grad: bool = True) -> SAEOutput:
        x = self._check_x(x)
        h = self.pre_activations(x)                                # (B, m), always with graph
        a = F.relu(h)
        if self.training or k is not None:
            k = self.k if k is None else _checks.budget(k, self.n_latents)
            top = a.detach().flatten().topk(min(x.shape[0] * k, a.numel()), sorted=False)
            keep = torch.zeros(a.numel(), dtype=torch.bool, device=a.device)
            keep[top.indices] = True
            z = a * keep.view_as(a)                                # (B, m)
            if self.training and k == self.k:
                self._update_threshold(top.values)
        else:
            z = a * (a > self.threshold)
        return SAEOutput(self.decode(z), h, None, dense_codes=z)
