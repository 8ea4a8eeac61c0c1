"""Sparsemax SAEs: the input decides its own budget through the sparsemax threshold τ.

    τ(h): Σ_i max(0, h_i − τ) = 1                        (Martins & Astudillo 2016), per row

Two models use it:

SparsemaxSAE — the model of Wang, Zhang, Su, Huang (arXiv:2604.14925, CVPR 2026) as its official code defines it
(qyj-bkjx/Sparsemax-SAE, `SparseAutoencoder.forward_standard`), written here from its equations:

    x̃ = x / ‖x‖₂                                          unit-norm input
    h = x̃ (C K)ᵀ,  then h_i ← 0 where idf_i > θ_idf       one concept matrix C (m, d), a key map K (d, d); no bias
    z_i = h_i · 1[h_i > τ(h)]                             codes = h on the sparsemax support (negative when τ < 0)
    x̂ = ‖x‖₂ · z (C V)                                    the same C with a value map V (d, d); no bias
    L = 10 · (1/(B·d)) Σ_b ‖x̂_b − x_b‖² / ‖x_b‖₂           its training loss

    idf_i: the fraction of training inputs with z_i > 0, a running mean over the training batches (official: the
    cumulative mean, idf_t = idf_{t−1} + (f_t − idf_{t−1}) / t; `idf_rate` = r gives an EMA with rate r instead),
    θ_idf = `idf_threshold` (official 0.1). A latent firing on more than 10 % of inputs is switched off.

So W_enc = C K and W_dec = C V: the encoder and decoder share the concepts (a cross-attention form). Where we differ
from the official code: the idf statistic moves only in training mode (theirs on every forward, evaluation
included) and is a buffer saved with the weights; under data-parallel training f_t is over the global batch.

SparsemaxActSAE — our earlier, simpler model: the sparsemax support as the activation of a standard SAE,

    x̃ = x / ‖x‖₂,   h = W_enc (x̃ − b_dec) + b_enc,   z_i = ReLU(h_i) · 1[h_i > τ(h)],   x̂ = ‖x‖₂ · (z W_dec + b_dec)

with unit-norm decoder rows, FVU loss and non-negative codes.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .. import _checks
from ..distributed import Group
from .base import SAEOutput, SparseAutoencoder
from .kernels import Support, sparse_decode, sparse_encode

FIRST_CANDIDATES = 128  # top entries per row tried first for τ; doubled for the rows whose support may be larger


def sparsemax_threshold(h: Tensor, first: int = FIRST_CANDIDATES) -> Tensor:
    """τ (B, 1) with Σ_i max(0, h_i − τ) = 1 per row, in float32 (float64 for float64 h) whatever h's dtype.

    With s sorted descending and c_r = Σ_{i≤r} s_i, τ = max_r (c_r − 1) / r (the maximum is reached at the support
    size K). Only each row's top-n entries are sorted: the maximum over r ≤ n is a lower bound τ̂ ≤ τ, and it is τ
    exactly when s_n ≤ τ̂ (the support then lies within the top n). `first` is the first n; rows not certified
    retry with 2n. In bf16 the
    ranks r and 1 + r·s would be exact only to 256, so everything is computed in float32 (as under autocast).
    """
    hw = h.detach().to(torch.promote_types(h.dtype, torch.float32))
    B, m = hw.shape
    tau = hw.new_empty(B, 1)
    rows, n = None, min(m, _checks.positive_int(first, "first"))
    while True:
        sub = hw if rows is None else hw.index_select(0, rows)
        s = sub.topk(n, dim=1).values                                       # (b, n), sorted descending
        r = torch.arange(1, n + 1, device=hw.device, dtype=hw.dtype)
        t = ((s.cumsum(1) - 1) / r).max(1, keepdim=True).values             # τ̂ (b, 1)
        done = (s[:, -1:] <= t).squeeze(1) if n < m else torch.ones_like(t, dtype=torch.bool).squeeze(1)
        if rows is None:
            tau.copy_(t)
            rows = (~done).nonzero().squeeze(1)
        else:
            tau[rows[done]] = t[done]
            rows = rows[~done]
        if rows.numel() == 0:
            return tau
        n = min(m, 2 * n)


# ---------------------------------------------------------------- our simpler model
class SparsemaxActSAE(SparseAutoencoder):
    """The sparsemax support as the activation of a standard SAE (module docstring); `encode(x, k=k')` keeps the
    top-k' of ReLU(h) instead of the sparsemax support."""

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
        return _unit_rows(x)

    def init_b_dec(self, sample: Tensor, method: str = "geometric_median") -> None:
        """b_dec lives in the unit-normalised input space, so it is fitted on normalised rows."""
        sample = _checks.matrix(sample, "sample", self.d_in)
        super().init_b_dec(F.normalize(sample, dim=1), method)


def _unit_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """(x / ‖x‖, ‖x‖ (B, 1)), the norm clamped away from 0."""
    norm = x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return x / norm, norm


# ---------------------------------------------------------------- the published model
class SparsemaxSAE(SparseAutoencoder):
    """The Sparsemax SAE of arXiv:2604.14925 (module docstring): concepts C shared by encoder C K and decoder C V,
    no biases, the idf mask, codes = h on the sparsemax support, loss 10·mean((x̂ − x)² / ‖x‖).

    `W_enc` (= C K), `W_dec` (= C V), `b_enc` and `b_dec` (zeros) are computed views for the code that reads them
    (metrics, the explorer); the parameters are `concept`, `key` and `value`. `encode(x, k=k')` keeps the top-k' of
    ReLU(h), and the fast path (dense_grad=False) gives gradients through the support's entries only; it reads the
    support size back to the host once per step.
    """

    unit_norm_decoder = False    # the official code constrains no decoder row (C V is free)
    has_fixed_k = False
    uses_auxk = False
    nonnegative_codes = False    # z = h on the support, which holds negative h when τ < 0

    def __init__(self, d_in: int, n_latents: int, *, idf_threshold: float = 0.1, idf_rate: float | None = None,
                 seed: int | None = None):
        super().__init__(d_in, n_latents, seed=seed)
        self.idf_threshold = _checks.non_negative(idf_threshold, "idf_threshold")
        if idf_rate is not None and not 0 < _checks.non_negative(idf_rate, "idf_rate") <= 1:
            raise ValueError(f"idf_rate must be None (cumulative mean) or in (0, 1], got {idf_rate}")
        self.idf_rate = None if idf_rate is None else float(idf_rate)
        self.register_buffer("idf", torch.zeros(self.n_latents))                       # firing rate per latent
        self.register_buffer("idf_batches", torch.zeros((), dtype=torch.long))          # training batches seen
        self._first = FIRST_CANDIDATES   # top entries tried first for τ: 5/4 of the last fast-path batch's largest

    def _init_parameters(self, gen: torch.Generator | None) -> None:
        """Kaiming-uniform as the official code: C with fan-in m (bound √(6/m)), K and V with fan-in d (√(6/d))."""
        m, d = self.n_latents, self.d_in
        uniform = lambda shape, fan_in: torch.empty(shape).uniform_(-math.sqrt(6 / fan_in), math.sqrt(6 / fan_in),
                                                                    generator=gen)
        self.concept = nn.Parameter(uniform((m, d), m))            # C (m, d)
        self.key = nn.Parameter(uniform((d, d), d))                # K (d, d)
        self.value = nn.Parameter(uniform((d, d), d))              # V (d, d)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "idf_threshold": self.idf_threshold, "idf_rate": self.idf_rate}

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        if prefix + "W_enc" in state_dict and prefix + "concept" not in state_dict:
            raise ValueError("this state holds the simpler Sparsemax model (W_enc, b_enc, W_dec, b_dec), which is "
                             "now named SparsemaxActSAE; SparsemaxSAE is the published model")
        super()._load_from_state_dict(state_dict, prefix, *args)

    # ---- the effective maps, for code that reads an SAE's matrices
    @property
    def W_enc(self) -> Tensor:
        """C K (m, d): h = x̃ W_encᵀ."""
        return self.concept @ self.key

    @property
    def W_dec(self) -> Tensor:
        """C V (m, d): x̂ = ‖x‖ · z W_dec."""
        return self.concept @ self.value

    @property
    def b_enc(self) -> Tensor:
        return self.concept.new_zeros(self.n_latents)

    @property
    def b_dec(self) -> Tensor:
        return self.concept.new_zeros(self.d_in)

    def _keep(self) -> Tensor:
        """Bool (m,): latents the idf mask lets through, idf_i ≤ θ_idf."""
        return self.idf <= self.idf_threshold

    def _mask(self, h: Tensor) -> Tensor:
        return h.masked_fill(~self._keep(), 0.0)

    def pre_activations(self, x: Tensor) -> Tensor:
        """h = x (C K)ᵀ with the idf-masked columns set to 0, computed as (x Kᵀ) Cᵀ; x already unit-norm."""
        return self._mask(F.linear(F.linear(x, self.key), self.concept))

    def decode(self, codes: Tensor) -> Tensor:
        """z (C V) for dense codes (B, m), in the unit-norm space (forward rescales by ‖x‖)."""
        if codes.ndim != 2 or codes.shape[1] != self.n_latents:
            raise ValueError(f"codes must have shape (B, {self.n_latents}), got {tuple(codes.shape)}")
        return F.linear(codes.to(self.concept.dtype) @ self.concept, self.value.T)

    def decode_sparse(self, idx: Tensor | Support, vals: Tensor) -> Tensor:
        support = idx if isinstance(idx, Support) else Support.of_topk(idx)
        return F.linear(sparse_decode(support, vals.reshape(-1), self.concept), self.value.T)

    def _budget_input(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return _unit_rows(x)

    def forward(self, x: Tensor, k: int | None = None, *, dense_grad: bool = True) -> SAEOutput:
        xn, norm = self._budget_input(self._check_x(x))            # x̃, ‖x‖ (B, 1)
        if k is not None:
            out = self._topk_output(xn, self.pre_activations(xn), _checks.budget(k, self.n_latents))
            out.x_hat = out.x_hat * norm
            return out
        if dense_grad:
            h = self.pre_activations(xn)                           # (B, m)
            z = h * (h > sparsemax_threshold(h.detach()))          # no gradient through the support
            out = SAEOutput(self.decode(z) * norm, h, None, dense_codes=z)
        else:
            u = F.linear(xn, self.key)                             # x̃ Kᵀ (B, d), with grad to K
            with torch.no_grad():
                h = self._mask(F.linear(u, self.concept))          # (B, m), no graph
            B, m = h.shape
            support = Support.of_flat((h > sparsemax_threshold(h, self._first)).reshape(-1).nonzero().squeeze(1), B, m)
            largest = int(torch.diff(support.offsets, append=support.offsets.new_tensor([len(support.cols)])).max())
            self._first = max(FIRST_CANDIDATES, largest + largest // 4)
            zeros_d, zeros_m = u.new_zeros(self.d_in), u.new_zeros(m)
            vals = sparse_encode(u, zeros_d, self.concept, zeros_m, h, support)   # (E,) h on the support
            vals = vals * self._keep()[support.cols]               # masked entries stay 0, without gradient
            out = SAEOutput(self.decode_sparse(support, vals) * norm, h, None, vals, support=support)
        if self.training:
            self._update_idf(out)
        return out

    @torch.no_grad()
    def _update_idf(self, out: SAEOutput) -> None:
        """idf ← idf + (f − idf)/t (cumulative mean, t = batches seen) or lerp(idf, f, idf_rate); f_i = fraction of
        the batch with z_i > 0."""
        group = Group.current()
        if out.dense_codes is not None:
            hits = (out.dense_codes > 0).sum(0).to(self.idf.dtype)
        else:
            hits = torch.zeros_like(self.idf).index_add_(0, out.support.cols, (out.values > 0).to(self.idf.dtype))
        rows = torch.tensor(float(out.pre_acts.shape[0]), device=hits.device)
        f = group.sum(hits) / group.sum(rows) if group.active else hits / rows
        self.idf_batches += 1
        rate = 1.0 / self.idf_batches.to(self.idf.dtype) if self.idf_rate is None else self.idf_rate
        self.idf.lerp_(f, rate)

    def reconstruction_loss(self, x: Tensor, out: SAEOutput, tv: Tensor | None = None) -> Tensor:
        """10 · (1/(B·d)) Σ_b ‖x̂_b − x_b‖² / ‖x_b‖₂, the official loss (tv unused: the loss is a per-row mean)."""
        x = x.to(torch.promote_types(x.dtype, torch.float32))
        err = (out.x_hat.to(x.dtype) - x).pow(2).sum(1) / x.norm(dim=1).clamp_min(1e-12)
        return 10 * err.sum() / x.numel()

    def init_b_dec(self, sample: Tensor, method: str = "geometric_median") -> None:
        """Nothing to fit: the published model has no biases."""
        _checks.choice(method, "method", ("geometric_median", "mean"))
