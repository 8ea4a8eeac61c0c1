"""Synthetic data with known ground-truth features, and how well an SAE recovers them.

    x_n = Σ_i c_ni f_i + σ ε_n,     f_i ∈ R^d random unit vectors,  ε_n ~ N(0, I_d / d)
    P(c_ni ≠ 0) = p_i ∝ (i + 1)^(−s)
                  (Zipf-like, scaled so E[#active] = avg_active, each p_i ≤ 1)
    c_ni ~ Uniform(0.5, 1.5) when active (non-negative, as SAE codes are)

Recovery: for each true feature, the best cosine with any decoder row,
max_j cos(f_i, d_j); a feature is recovered when that exceeds `threshold` (0.9).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _checks


@dataclass
class SyntheticData:
    x: Tensor            # (N, d) observations
    features: Tensor     # (F, d) true unit directions
    codes: Tensor        # (N, F) true non-negative coefficients
    frequencies: Tensor  # (F,) activation probability p_i of each feature


def make_sparse_data(n_samples: int, d: int, n_features: int, avg_active: float = 5.0, zipf_exponent: float = 1.0,
                     noise: float = 0.01, seed: int = 0) -> SyntheticData:
    """Sparse non-negative combinations of `n_features` known unit directions in R^d (see module docstring)."""
    n_samples = _checks.positive_int(n_samples, "n_samples")
    d = _checks.positive_int(d, "d")
    n_features = _checks.positive_int(n_features, "n_features")
    if not 0 < _checks.non_negative(avg_active, "avg_active") <= n_features:
        raise ValueError(f"avg_active must be in (0, n_features={n_features}], got {avg_active}")
    _checks.non_negative(zipf_exponent, "zipf_exponent")
    _checks.non_negative(noise, "noise")
    gen = torch.Generator().manual_seed(seed)
    features = F.normalize(torch.randn(n_features, d, generator=gen), dim=1)          # (F, d)
    p = (torch.arange(n_features) + 1.0).pow(-zipf_exponent)
    p = (p * avg_active / p.sum()).clamp(max=1.0)                                   # (F,)
    u = torch.rand(n_samples, n_features, generator=gen)                            # (N, F)
    on = u < p
    codes = torch.rand(n_samples, n_features, generator=gen, out=u).add_(0.5).mul_(on)  # (N, F), in u's buffer
    x = codes @ features + noise * torch.randn(n_samples, d, generator=gen) / d**0.5
    return SyntheticData(x=x, features=features, codes=codes, frequencies=p)


def feature_recovery(W_dec: Tensor, features: Tensor, threshold: float = 0.9) -> dict[str, float]:
    """{"recovered": fraction of true features with max_j cos(f_i, d_j) > threshold, "mean_max_cos": its mean}."""
    if W_dec.ndim != 2 or features.ndim != 2 or W_dec.shape[1] != features.shape[1]:
        raise ValueError(f"W_dec (m, d) and features (F, d) must share d, got {tuple(W_dec.shape)} "
                         f"and {tuple(features.shape)}")
    cos = F.normalize(features.float(), dim=1) @ F.normalize(W_dec.detach().float().cpu(), dim=1).T  # (F, m)
    best = cos.max(1).values
    return {"recovered": float((best > threshold).float().mean()), "mean_max_cos": float(best.mean())}
