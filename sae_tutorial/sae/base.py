"""What every SAE variant shares: parameters, encode/decode, the output record, the decoder-norm constraint.

    h  = W_enc (x - b_dec) + b_enc        pre-activations      (B, m)
    z  = sparsify(h)                      codes, per variant    (B, m)
    x̂  = z W_dec + b_dec                  reconstruction        (B, d); rows of W_dec kept at unit L2 norm

Parameters are stored as W_enc (m, d) and W_dec (m, d), so row i of each belongs to latent i.
Init follows Gao et al. (2024): W_dec = W_enc row-normalised (tied), b_dec from data (`init_b_dec`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import Tensor

from .. import _checks
from .kernels import Support, known_grad_penalty, sparse_decode, sparse_encode


@dataclass
class SAEOutput:
    """What a forward pass returns. Top-k variants keep their codes sparse as (indices, values);
    `codes` materialises the dense (B, m) matrix only when asked for."""

    x_hat: Tensor                     # (B, d) reconstruction
    pre_acts: Tensor                  # (B, m) h, before any sparsifier
    indices: Tensor | None            # (B, k) support of each row; None when the budget varies per row
    values: Tensor | None = None      # (B, k) code values at `indices`, or (E,) at `support`
    dense_codes: Tensor | None = None # (B, m) for variants without a fixed k
    support: Support | None = None    # fast paths with a ragged support (BatchTopK, Sparsemax): E entries
    partials: Tensor | None = None    # (B, P, d) further reconstructions the variant's own loss reads in training
                                      # (Multi-TopK: at 4k; Matryoshka: each prefix but the last)

    def _support(self) -> Support | None:
        return Support.of_topk(self.indices) if self.indices is not None else self.support

    @property
    def codes(self) -> Tensor:
        """Dense codes z (B, m)."""
        if self.dense_codes is None:
            sup = self._support()
            z = torch.zeros_like(self.pre_acts, dtype=self.values.dtype)
            self.dense_codes = z.index_put_((sup.rows, sup.cols), self.values.reshape(-1))
        return self.dense_codes

    def l0(self) -> Tensor:
        """Mean number of non-zero codes per row (a 0-d tensor: no host sync)."""
        if self.dense_codes is None:
            return (self.values != 0).sum().float() / self.pre_acts.shape[0]
        return (self.dense_codes != 0).sum(1).float().mean()

    def fired(self) -> Tensor:
        """Bool (m,): latents non-zero for at least one row of the batch."""
        if self.dense_codes is None:
            hits = torch.zeros(self.pre_acts.shape[1], device=self.values.device)
            hits.index_add_(0, self._support().cols, (self.values != 0).float().reshape(-1))
            return hits > 0
        return (self.dense_codes != 0).any(0)


def geometric_median(points: Tensor, iters: int = 100, tol: float = 1e-7) -> Tensor:
    """argmin_y Σ_n ‖x_n − y‖₂ by Weiszfeld's iteration (as in openai/sparse_autoencoder), in float64."""
    x = points.double()
    y = x.mean(0)
    for _ in range(iters):
        w = 1.0 / torch.linalg.vector_norm(x - y, dim=1).clamp_min(1e-12)  # (N,)
        y_new = (w[:, None] * x).sum(0) / w.sum()
        if torch.linalg.vector_norm(y_new - y) <= tol * (1 + torch.linalg.vector_norm(y)):
            y = y_new
            break
        y = y_new
    return y.to(points.dtype)


class SparseAutoencoder(nn.Module, PyTorchModelHubMixin, library_name="sae_tutorial",
                        tags=["sparse-autoencoder", "interpretability", "vision"]):
    """Base class. Subclasses implement `forward` (their sparsifier) and extend `config()` with their settings.

    save_pretrained / from_pretrained / push_to_hub come from huggingface_hub's mixin (see hub.py for the folder).
    """

    unit_norm_decoder: ClassVar[bool] = True  # project W_dec rows to the unit sphere after each step
    has_fixed_k: ClassVar[bool] = True        # the output carries (B, k) indices
    uses_auxk: ClassVar[bool] = True          # dead latents are revived by AuxK in training
    per_row_budget: ClassVar[bool] = True     # forward(x, k=k') keeps each row's top-k' of ReLU(h)
    nonnegative_codes: ClassVar[bool] = True  # codes are ReLU'd (the published Sparsemax SAE's are not)
    takes_k: ClassVar[bool] = False           # the constructor takes a budget: cls(d_in, n_latents, k)

    def __init__(self, d_in: int, n_latents: int, *, seed: int | None = None):
        super().__init__()
        self.d_in = _checks.positive_int(d_in, "d_in")
        self.n_latents = _checks.positive_int(n_latents, "n_latents")
        self._init_parameters(torch.Generator().manual_seed(seed) if seed is not None else None)

    def _init_parameters(self, gen: torch.Generator | None) -> None:
        """W_enc uniform in ±1/√d (nn.Linear's scale), W_dec its row-normalised copy, zero biases."""
        bound = 1.0 / math.sqrt(self.d_in)                         # nn.Linear's default scale
        W_enc = torch.empty(self.n_latents, self.d_in).uniform_(-bound, bound, generator=gen)
        self.W_enc = nn.Parameter(W_enc)                           # (m, d)
        self.b_enc = nn.Parameter(torch.zeros(self.n_latents))     # (m,)
        self.W_dec = nn.Parameter(F.normalize(W_enc.clone(), dim=1))  # (m, d), tied init
        self.b_dec = nn.Parameter(torch.zeros(self.d_in))          # (d,)

    # ---- configuration (what save/load round-trips) ----
    def config(self) -> dict[str, Any]:
        return {"d_in": self.d_in, "n_latents": self.n_latents}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "SparseAutoencoder":
        return cls(**config)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config().items())

    # ---- the three maps ----
    def _check_x(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 2 or x.shape[1] != self.d_in:
            raise ValueError(f"x must have shape (B, {self.d_in}), got {tuple(x.shape)}")
        return x

    def pre_activations(self, x: Tensor) -> Tensor:
        """h = W_enc (x − b_dec) + b_enc, shape (B, m)."""
        return F.linear(x - self.b_dec, self.W_enc, self.b_enc)

    def gather_pre_acts(self, x: Tensor, pre_acts: Tensor, idx: Tensor) -> Tensor:
        """h[b, idx[b, j]] with gradient to the encoder. When `pre_acts` carries no graph (the fast path),
        the backward touches only the gathered entries (see kernels.py)."""
        if pre_acts.requires_grad or not torch.is_grad_enabled():
            return pre_acts.gather(1, idx)
        return sparse_encode(x, self.b_dec, self.W_enc, self.b_enc, pre_acts, Support.of_topk(idx)).view_as(idx)

    def attach_penalty(self, x: Tensor, value: Tensor, grad_h: Tensor, cols: Tensor | None = None) -> Tensor:
        """`value` (0-d), a penalty on h[:, cols] (all columns when None) with its gradient grad_h = ∂value/∂h[:, cols]
        known in closed form, given a gradient to the encoder: the regularizers' path. Its backward costs one GEMM
        over |cols| columns (see kernels.py)."""
        return known_grad_penalty(x, self.b_dec, self.W_enc, self.b_enc, value, grad_h, cols)

    def _pre_acts_for(self, x: Tensor, dense_grad: bool) -> Tensor:
        if dense_grad:
            return self.pre_activations(x)
        with torch.no_grad():
            return self.pre_activations(x)

    def _topk_output(self, x: Tensor, h: Tensor, k: int) -> SAEOutput:
        """z = ReLU(h) · 1[TopK_k(h)], decoded by a gather: the Top-k path, also every variant's inference-k path."""
        idx = h.detach().topk(k, dim=1, sorted=False).indices      # (B, k)
        vals = F.relu(self.gather_pre_acts(x, h, idx))             # (B, k)
        return SAEOutput(self.decode_sparse(idx, vals), h, idx, vals)

    @torch.no_grad()
    def reconstruct_budgets(self, x: Tensor, ks: list[int]) -> dict[int, Tensor]:
        """{k': x̂ = self(x, k=k').x_hat} for several inference budgets. Per-row Top-k' of ReLU(h) is a prefix of
        the sorted Top-max(ks), so one encoder pass serves every budget (variants with `per_row_budget`)."""
        if not self.per_row_budget:
            return {k: self(x, k=k).x_hat for k in ks}
        xin, scale = self._budget_input(self._check_x(x))
        h = self.pre_activations(xin)                              # (B, m), once
        vals, idx = F.relu(h).topk(max(ks), dim=1)                 # sorted: each budget is a prefix
        return {k: self.decode_sparse(idx[:, :k], vals[:, :k]) * scale for k in ks}

    def _budget_input(self, x: Tensor) -> tuple[Tensor, Tensor | float]:
        """(what the encoder reads, the factor x̂ is rescaled by) on the inference-k path."""
        return x, 1.0

    def encode(self, x: Tensor, k: int | None = None) -> Tensor:
        """Dense codes z (B, m); `k` overrides the budget at inference (Top-k of ReLU(h))."""
        return self.forward(x, k=k).codes

    def decode(self, codes: Tensor) -> Tensor:
        """x̂ = z W_dec + b_dec for dense codes z (B, m)."""
        if codes.ndim != 2 or codes.shape[1] != self.n_latents:
            raise ValueError(f"codes must have shape (B, {self.n_latents}), got {tuple(codes.shape)}")
        return codes.to(self.W_dec.dtype) @ self.W_dec + self.b_dec

    def decode_sparse(self, idx: Tensor | Support, vals: Tensor) -> Tensor:
        """x̂ = Σ_j vals[b, j] W_dec[idx[b, j]] + b_dec, a gather decode; idx (B, k), or a Support with vals (E,)."""
        support = idx if isinstance(idx, Support) else Support.of_topk(idx)
        return sparse_decode(support, vals.reshape(-1), self.W_dec) + self.b_dec

    def forward(self, x: Tensor, k: int | None = None, *, dense_grad: bool = True) -> SAEOutput:
        """Encode and decode x (B, d).

        k: inference-time budget (None: the trained one).
        dense_grad: when False, `pre_acts` is returned without a graph and Top-k variants take the sparse
            backward (only the B·k selected entries get gradient): the fast path for plain training.
            Keep True when a loss reads `pre_acts` (the regularizers do).
        """
        raise NotImplementedError

    # ---- losses and constraints ----
    def reconstruction_loss(self, x: Tensor, out: SAEOutput, tv: Tensor | None = None) -> Tensor:
        """The variant's training reconstruction loss: FVU = Σ_b ‖x_b − x̂_b‖² / Σ_b ‖x_b − x̄‖² by default
        (losses.fvu; tv: its denominator when computed elsewhere)."""
        from ..losses import fvu
        return fvu(x, out.x_hat, tv)

    def sparsity_loss(self, out: SAEOutput) -> Tensor:
        """A variant's own sparsity penalty (0 for budgeted variants)."""
        return out.x_hat.new_zeros(())

    @torch.no_grad()
    def init_b_dec(self, sample: Tensor, method: str = "geometric_median") -> None:
        """Set b_dec from a data sample: its geometric median (Gao et al.) or mean."""
        _checks.choice(method, "method", ("geometric_median", "mean"))
        sample = _checks.matrix(sample, "sample", self.d_in).to(self.b_dec.device)
        center = geometric_median(sample) if method == "geometric_median" else sample.mean(0)
        self.b_dec.copy_(center.to(self.b_dec.dtype))

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Project each decoder row back to the unit sphere: d_i ← d_i / ‖d_i‖."""
        if self.unit_norm_decoder:
            self.W_dec.copy_(F.normalize(self.W_dec, dim=1))

    @torch.no_grad()
    def remove_parallel_grad(self) -> None:
        """g_i ← g_i − (g_i·d_i) d_i for each decoder row d_i (unit norm): the step moves along the sphere."""
        if self.unit_norm_decoder and self.W_dec.grad is not None:
            g, W = self.W_dec.grad, self.W_dec
            g.addcmul_(torch.linalg.vecdot(g, W).unsqueeze(1), W, value=-1.0)   # no (m, d) temporary

    # ---- persistence ----
    def save(self, path: str | Path) -> Path:
        """Write a single .safetensors file: weights plus JSON config in its header (atomic)."""
        from ..checkpoint import save_sae
        return save_sae(self, path)

    def save_as(self, path: str | Path, library: str, **options: Any) -> Path:
        """Write a folder another library reads with the same maths: library="sparsify" or "saelens" (interop/)."""
        from ..interop import save_as
        return save_as(self, path, library, **options)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "SparseAutoencoder":
        """Load a checkpoint, checking it holds this variant."""
        from ..checkpoint import load_sae
        return load_sae(path, device=device, expected=cls)

    def save_pretrained(self, save_directory: str | Path, *, card: tuple[str | Path, str | Path] | None = None,
                        **kwargs: Any):
        """Write a hub-ready folder; `card` = the (JSON, Markdown) paths from `st.method_card`, used as README."""
        if card is not None:
            from ..hub import write_card
            write_card(Path(save_directory), card)
        return super().save_pretrained(save_directory, **kwargs)

    def _save_pretrained(self, save_directory: Path) -> None:
        from ..hub import write_folder
        write_folder(self, Path(save_directory))

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None, cache_dir: Any, force_download: bool,
                         local_files_only: bool, token: Any, map_location: Any = "cpu", **model_kwargs: Any):
        from ..hub import read_folder
        return read_folder(cls, model_id, map_location, revision=revision, cache_dir=cache_dir,
                           force_download=force_download, local_files_only=local_files_only, token=token)
