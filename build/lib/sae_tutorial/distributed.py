"""Data parallelism over torch.distributed (torchrun): every rank holds one slice of each global batch.

Rank r's losses are scaled so that DDP's gradient average (÷ W ranks) is the gradient of the global-batch loss:

    L_rec = Σ_{b ∈ global batch} ‖x_b − x̂_b‖² / TV,   TV = Σ_b ‖x_b − x̄‖² over the global batch
    rank r contributes  W · Σ_{b ∈ r} ‖x_b − x̂_b‖² / TV            (AuxK likewise)

Per-row means (the regularizers, the ReLU penalty) need no change: the average of equal-sized rank means is the
global mean. The batch-active set A, the fired mask and hence the dead-latent counters are all-reduced, so every
rank sees the statistics of the global batch; BatchTopK keeps the top B·k of the global batch (`kth_largest`).
Without an initialised process group everything is a no-op.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class Group:
    world: int = 1
    rank: int = 0

    @classmethod
    def current(cls) -> "Group":
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_world_size(), dist.get_rank())
        return cls()

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        """Wait for every rank (no-op with one)."""
        if self.active:
            dist.barrier()

    def sum(self, t: Tensor) -> Tensor:
        """Σ over ranks (in place; returned for chaining)."""
        if self.active:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def min(self, t: Tensor) -> Tensor:
        """Elementwise minimum over ranks (in place; returned for chaining)."""
        if self.active:
            dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return t

    def any(self, mask: Tensor) -> Tensor:
        """Logical OR of a bool tensor over ranks."""
        if not self.active:
            return mask
        m = mask.to(torch.uint8)
        dist.all_reduce(m, op=dist.ReduceOp.MAX)
        return m.bool()

    def kth_largest(self, values: Tensor, n: int) -> Tensor:
        """The n-th largest entry of the union of every rank's 1-D `values` (0-d). Each rank contributes its own
        top n (padded with −inf), so the all-gather moves W·n numbers whatever the ranks hold."""
        top = values.topk(min(n, values.numel()), sorted=False).values
        if not self.active:
            return top.min()
        padded = torch.full((n,), -torch.inf, dtype=values.dtype, device=values.device)
        padded[: top.numel()] = top
        gathered = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(gathered, padded)
        return torch.cat(gathered).topk(n, sorted=False).values.min()

    def total_variance(self, x: Tensor) -> Tensor:
        """TV = Σ_b ‖x_b − x̄‖² over the global batch; with one rank the direct formula, else from the all-reduced
        sums n, Σx, Σ‖x‖² in float64 (TV = Σ‖x‖² − ‖Σx‖²/n)."""
        from .losses import total_variance

        if not self.active:
            return total_variance(x)
        x64 = x.double()
        stats = torch.cat([x64.sum(0), x64.pow(2).sum().reshape(1), x64.new_tensor([x.shape[0]])])
        self.sum(stats)
        s, sq, n = stats[:-2], stats[-2], stats[-1]
        return (sq - s.pow(2).sum() / n).to(torch.promote_types(x.dtype, torch.float32))
