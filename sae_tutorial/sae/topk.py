"""Budgeted SAEs: Top-k (Gao et al. 2024, OpenAI convention) and BatchTopK (Bussmann et al. 2024).

    TopK:       S_b = TopK_k(h_b),            z_b = ReLU(h_b) · 1[S_b]           exactly k per row
    BatchTopK:  S = TopK_{B·k}(ReLU(h)) over the whole batch in training     k per row on average;
                z = ReLU(h) · 1[h > θ] at inference (and at k' = k), θ = running mean of the smallest selected
                activation: θ ← βθ + (1−β)·min(selected > 0), β = 0.999, from training step `threshold_start` on
                (dictionary_learning's BatchTopKTrainer rule)
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _checks
from ..distributed import Group
from .base import SAEOutput, SparseAutoencoder
from .kernels import Support, sparse_encode


class TopKSAE(SparseAutoencoder):
    """Top-k SAE: each input keeps its k largest pre-activations (ReLU'd)."""

    takes_k = True

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

    θ is a buffer (saved in the checkpoint): an exponential moving average with momentum β (0.999, as
    dictionary_learning) of the smallest positive activation selected in each training batch, updated from training
    step `threshold_start` on (the buffer `train_steps` counts them; the first update sets θ). dictionary_learning
    starts at step 1000, the end of its lr warm-up; our default, 100, is the end of ours (TrainConfig.warmup_steps).
    In eval mode, `encode(x)` and `encode(x, k=self.k)` apply θ, so the inference FVU at k' = k is the main FVU and
    independent of how the data are chunked. Any other k' applies a batch-level top-(B·k') on the given batch (so
    it depends on the batch, hence on the chunk size of an evaluation). With dense_grad=False (training) the B·k
    selected entries are kept as a kernels.Support, any number per row, and get Top-k's sparse backward.
    """

    has_fixed_k = False
    per_row_budget = False    # forward(x, k=k') keeps the top B·k' of the whole batch
    takes_k = True

    def __init__(self, d_in: int, n_latents: int, k: int, *, momentum: float = 0.999, threshold_start: int = 100,
                 seed: int | None = None):
        super().__init__(d_in, n_latents, seed=seed)
        self.k = _checks.budget(k, self.n_latents)
        self.momentum = _checks.non_negative(momentum, "momentum")
        if self.momentum >= 1:
            raise ValueError(f"momentum must be < 1, got {momentum}")
        if not isinstance(threshold_start, int) or isinstance(threshold_start, bool) or threshold_start < 0:
            raise ValueError(f"threshold_start must be an int >= 0, got {threshold_start!r}")
        self.threshold_start = threshold_start
        self.register_buffer("threshold", torch.zeros(()))                       # θ
        self.register_buffer("threshold_updates", torch.zeros((), dtype=torch.long))
        self.register_buffer("train_steps", torch.zeros((), dtype=torch.long))   # training forwards at k

    def config(self) -> dict:
        return {**super().config(), "k": self.k, "momentum": self.momentum, "threshold_start": self.threshold_start}

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        """A state without `train_steps` (written before the warm-up existed, or by another library) was updated
        from its first step: it loads as past the warm-up."""
        key = prefix + "train_steps"
        if key not in state_dict and prefix + "threshold" in state_dict:
            updates = state_dict.get(prefix + "threshold_updates", torch.zeros((), dtype=torch.long))
            state_dict[key] = updates.to(torch.long) + self.threshold_start
        super()._load_from_state_dict(state_dict, prefix, *args)

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
    def _update_threshold(self, selected: Tensor, started: Tensor) -> None:
        """θ ← μθ + (1−μ)·min(selected > 0) once `started` (a 0-d bool), on the device (no host sync); the first
        update sets θ."""
        smallest = torch.where(selected > 0, selected, torch.inf).min().to(self.threshold.dtype)
        smallest = Group.current().min(smallest)                  # over the global batch under torchrun
        ok = torch.isfinite(smallest) & started
        ema = torch.lerp(self.threshold, smallest, 1 - self.momentum)
        new = torch.where(self.threshold_updates == 0, smallest, ema)
        self.threshold.copy_(torch.where(ok, new, self.threshold))
        self.threshold_updates.add_(ok.long())

    def forward(self, x: Tensor, k: int | None = None, *, dense_grad: bool = True) -> SAEOutput:
        x = self._check_x(x)
        if not self.training and (k is None or k == self.k):
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
            self.train_steps += 1
            self._update_threshold(F.relu(values), self.train_steps > self.threshold_start)
        if dense_grad:
            keep = torch.zeros(h.numel(), dtype=torch.bool, device=h.device)
            keep[selected] = True
            z = F.relu(h) * keep.view_as(h)                        # (B, m)
            return SAEOutput(self.decode(z), h, None, dense_codes=z)
        support = Support.of_flat(selected, B, m)                  # E = B·k entries, sorted by row
        vals = F.relu(sparse_encode(x, self.b_dec, self.W_enc, self.b_enc, h, support))   # (E,)
        return SAEOutput(self.decode_sparse(support, vals), h, None, vals, support=support)
