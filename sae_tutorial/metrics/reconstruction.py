"""Reconstruction and dictionary metrics: FVU, R², cosine, L0, dead latents, decoder orthogonality, k-robustness.

    FVU  = Σ_n ‖x_n − x̂_n‖² / Σ_n ‖x_n − x̄‖²                 (losses.fvu, the training loss, over the whole set)
    R²   = (1/d) Σ_i (1 − Σ_n (x_ni − x̂_ni)² / Σ_n (x_ni − x̄_i)²)   (per input dim, MonoLoss convention)
    CS   = (1/N) Σ_n cos(x_n, x̂_n)
    L0   = (1/N) Σ_n |{j : z_nj ≠ 0}|
    DO   = (1/(m(m−1))) Σ_{i≠j} (d̂_i · d̂_j)²,   d̂_i = W_dec[i] / ‖W_dec[i]‖

Sums run over chunks in float64 (means and variances merged as in Chan et al. 1979), so a streamed set gives
the numbers of the same set in memory.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _checks
from ..sae import SparseAutoencoder
from ._stream import CHUNK, Coo, Rows, iter_coo, iter_rows, peek


class Reconstruction:
    """Running FVU, R² and CS over chunks of (x, x̂): per input dim i, the count n, mean x̄_i,
    M2_i = Σ_n (x_ni − x̄_i)² and SSE_i = Σ_n (x_ni − x̂_ni)²; and Σ_n cos(x_n, x̂_n). All float64."""

    def __init__(self) -> None:
        self.n = 0
        self.mean = self.m2 = self.sse = None
        self.cos = 0.0

    def update(self, x: Tensor, x_hat: Tensor) -> "Reconstruction":
        update_shared([self], x, [x_hat])
        return self

    def _merge(self, b: int, mean_b: Tensor, m2_b: Tensor, sse_b: Tensor, cos_b: Tensor) -> None:
        """Add a chunk of b rows (its mean, M2, SSE per input dim and Σ cos) to the running sums."""
        if self.n == 0:
            self.mean, self.m2, self.sse, self.cos = mean_b, m2_b, sse_b, cos_b
        else:
            delta, total = mean_b - self.mean, self.n + b
            self.mean = self.mean + delta * (b / total)
            self.m2 = self.m2 + m2_b + delta.pow(2) * (self.n * b / total)
            self.sse, self.cos = self.sse + sse_b, self.cos + cos_b
        self.n += b

    def fvu(self) -> float:
        return float(self.sse.sum() / self.m2.sum().clamp_min(1e-300))

    def r2(self) -> float:
        """Mean over input dims with non-zero variance (a constant dim has no R²)."""
        ok = self.m2 > 0
        return float((1 - self.sse[ok] / self.m2[ok]).mean())

    def cosine(self) -> float:
        return float(self.cos / self.n)


COS_EPS = 1e-8   # torch.nn.functional.cosine_similarity's: x·x̂ / (max(‖x‖, ε) · max(‖x̂‖, ε))


def update_shared(stats: Sequence[Reconstruction], x: Tensor, x_hats: Sequence[Tensor]) -> None:
    """stats[i].update(x, x_hats[i]) for every i, the moments of x (mean, M2, row norms) computed once: several
    reconstructions of one chunk (the inference budgets of k-robustness) cost one float64 copy of x, not one each."""
    x = x.double()                                                 # (B, d)
    b, mean_b = x.shape[0], x.mean(0)
    m2_b = (x - mean_b).pow(2).sum(0)
    x_norm = x.norm(dim=1).clamp_min(COS_EPS)                      # (B,)
    for s, x_hat in zip(stats, x_hats, strict=True):
        x_hat = x_hat.double()
        sse_b = (x - x_hat).pow(2).sum(0)
        cos_b = ((x * x_hat).sum(1) / (x_norm * x_hat.norm(dim=1).clamp_min(COS_EPS))).sum()
        s._merge(b, mean_b, m2_b, sse_b, cos_b)


def _pair(x: Tensor, x_hat: Tensor) -> Reconstruction:
    x = _checks.matrix(x, "x")
    x_hat = _checks.matrix(x_hat, "x_hat", x.shape[1])
    _checks.same_length(x, x_hat, "x", "x_hat")
    return Reconstruction().update(x, x_hat)


def fvu(x: Tensor, x_hat: Tensor) -> float:
    """Fraction of variance unexplained, Σ_n ‖x_n − x̂_n‖² / Σ_n ‖x_n − x̄‖²  (x, x̂: (N, d))."""
    return _pair(x, x_hat).fvu()


def r2(x: Tensor, x_hat: Tensor) -> float:
    """Per-dim R² averaged over dims, (1/d) Σ_i (1 − SS_res,i / SS_tot,i)  (MonoLoss convention)."""
    return _pair(x, x_hat).r2()


def cosine(x: Tensor, x_hat: Tensor) -> float:
    """Mean cosine similarity between each input and its reconstruction, (1/N) Σ_n cos(x_n, x̂_n)."""
    return _pair(x, x_hat).cosine()


class Firing:
    """Running count of non-zero entries per latent and in total: dead latents and L0."""

    def __init__(self, m: int, device: torch.device | str = "cpu") -> None:
        self.counts = torch.zeros(m, dtype=torch.long, device=device)
        self.n = 0

    def update(self, c: Coo) -> None:
        self.counts += torch.bincount(c.cols, minlength=self.counts.shape[0])
        self.n += c.n_rows

    def dead(self) -> Tensor:
        return (self.counts == 0).cpu()

    def l0(self) -> float:
        return float(self.counts.sum()) / self.n


def _firing(codes: Rows, chunk_size: int) -> Firing:
    first, chunks = peek(iter_coo(codes, "codes", chunk_size))
    firing = Firing(first.n_cols, first.cols.device)
    for c in chunks:
        firing.update(c)
    return firing


def l0(codes: Rows, chunk_size: int = CHUNK) -> float:
    """Mean number of non-zero codes per row, (1/N) Σ_n |{j : z_nj ≠ 0}|  (codes: (N, m) or chunks)."""
    return _firing(codes, chunk_size).l0()


def dead_latents(codes: Rows, chunk_size: int = CHUNK) -> Tensor:
    """Bool (m,): True for latents never non-zero on the whole set, z_nj = 0 for all n  (codes: (N, m) or chunks)."""
    return _firing(codes, chunk_size).dead()


def decoder_rows(sae_or_W: SparseAutoencoder | Tensor, name: str) -> Tensor:
    """The (m, d) decoder of an SAE, or a given (m, d) matrix, detached."""
    W = sae_or_W.W_dec if isinstance(sae_or_W, SparseAutoencoder) else sae_or_W
    return _checks.matrix(W, name).detach()


def decoder_orthogonality(sae_or_W: SparseAutoencoder | Tensor) -> float:
    """DO = (1/(m(m−1))) Σ_{i≠j} (d̂_i · d̂_j)² over unit decoder rows d̂_i (0: orthogonal; lower is better).

    Σ_{i,j} (d̂_i · d̂_j)² = ‖D̂ᵀD̂‖_F², a (d, d) Gram: O(m·d²) time, no (m, m) matrix.
    """
    D = F.normalize(decoder_rows(sae_or_W, "W_dec").double(), dim=1)   # (m, d)
    m = D.shape[0]
    if m < 2:
        raise ValueError(f"decoder_orthogonality needs at least 2 decoder rows, got {m}")
    gram = D.T @ D                                                  # (d, d)
    diag = D.pow(2).sum(1).pow(2).sum()                             # Σ_i ‖d̂_i‖⁴ (= m unless a row is zero)
    return float((gram.pow(2).sum() - diag) / (m * (m - 1)))


def require_sae(sae: object) -> SparseAutoencoder:
    if not isinstance(sae, SparseAutoencoder):
        raise TypeError(f"sae must be an sae_tutorial SparseAutoencoder, got {type(sae).__name__}")
    return sae


@contextmanager
def inference(sae: SparseAutoencoder) -> Iterator[tuple[torch.device, torch.dtype]]:
    """Eval mode and no grad for the block, restoring the training flag; yields the SAE's (device, dtype)."""
    was_training = require_sae(sae).training
    sae.eval()
    try:
        with torch.no_grad():
            yield sae.W_dec.device, sae.W_dec.dtype
    finally:
        sae.train(was_training)


def budgets(ks: Sequence[int], n_latents: int) -> list[int]:
    """Distinct valid inference budgets, sorted."""
    if isinstance(ks, (int, str)) or not isinstance(ks, Sequence):
        raise TypeError(f"ks must be a sequence of ints, got {type(ks).__name__}")
    return sorted({_checks.budget(k, n_latents, "ks") for k in ks})


def k_robustness(sae: SparseAutoencoder, x: Rows, ks: Sequence[int], metric: str = "fvu",
                 chunk_size: int = CHUNK) -> dict[int, float]:
    """{k': metric of x̂ = sae(x, k=k').x_hat} for each inference budget k' (one pass over x for all k').

    metric: "fvu" (default), "cosine" or "r2" (formulas in the module docstring).
    """
    _checks.choice(metric, "metric", ("fvu", "cosine", "r2"))
    with inference(sae) as (device, dtype):
        stats = {k: Reconstruction() for k in budgets(ks, sae.n_latents)}
        for xb in iter_rows(x, "x", sae.d_in, chunk_size):
            xb = xb.to(device, dtype)
            x_hats = sae.reconstruct_budgets(xb, list(stats))
            update_shared([stats[k] for k in x_hats], xb, list(x_hats.values()))
    return {k: getattr(s, metric)() for k, s in stats.items()}
