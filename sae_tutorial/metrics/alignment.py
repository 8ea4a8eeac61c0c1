"""Codes as representations: truncated linear probes, CKNNA (Huh et al. 2024), seed
stability.

Truncated probe: keep each sample's n largest codes,
z⁽ⁿ⁾_nj = z_nj · 1[j ∈ TopN_n(z_n)], fit a multinomial logistic regression on the
training codes (features scaled to unit variance, L2 penalty C; scikit-learn's
objective, fitted by L-BFGS in torch on the sparse codes: same accuracy, ~10x faster),
report held-out top-1 accuracy.

CKNNA, with kernels K_ij = ⟨x_i, x_j⟩ and L_ij = ⟨z_i, z_j⟩ on unit rows and the
mutual-neighbour mask α_ij = 1[i ≠ j, j ∈ kNN_K(i), j ∈ kNN_L(i)]:

    CKNNA = HSIC₁(α∘K, α∘L) / sqrt(HSIC₁(α_K∘K, α_K∘K) · HSIC₁(α_L∘L, α_L∘L))
            (α_K: K's own kNN mask)
    HSIC₁(A, B) = [tr(ÃB̃) + 1ᵀÃ1 · 1ᵀB̃1 / ((n−1)(n−2)) − 2/(n−2) · 1ᵀÃB̃1] / (n(n−3)),
                  Ã = A with zero diagonal

(the unbiased HSIC of Song et al. 2012, as in the reference code of the Platonic
Representation Hypothesis). It compares n × n kernels, so it runs on a subsample
(n ≤ `MAX_KERNEL_ROWS`).

Top-n concept classification (the Sparsemax SAE paper's zero-shot test, with each
class's prototype, the unit mean of its fitting embeddings μ_c, in place of a text
embedding, which our image backbones do not have):

    z_c = code of μ_c,   T_c(n) = the n entries of z_c largest in |z_cj|
                                  (n = None: all of them)
    p_c(n) = decode(z_c ⊙ 1[T_c(n)])   the prototype rebuilt from its n leading concepts
    ŷ(x) = argmax_c cos(x, p_c(n)),   accuracy over the test rows

Seed stability: cosines between the unit decoder rows of two SAEs, matched one-to-one
by the Hungarian algorithm (scipy's linear_sum_assignment, maximising the total
cosine); the mean matched cosine.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from .. import _checks
from ..sae import SparseAutoencoder
from ._stream import CHUNK, Rows, iter_rows
from .reconstruction import decoder_rows

MAX_KERNEL_ROWS = 4096  # a few (n, n) float64 kernels: ~1 GiB at this size


def _class_ids(y: Any, name: str) -> np.ndarray:
    y = _checks.as_tensor(y, name)
    if y.ndim != 1 or y.is_floating_point() or y.dtype == torch.bool:
        raise TypeError(f"{name} must be a 1-D array of integer class ids, got {y.dtype} of shape {tuple(y.shape)}")
    return y.cpu().numpy()


def _csr(crow: Tensor, col: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, col, values, size=shape, check_invariants=True)


def _as_csr(x: Any, name: str) -> Tensor:
    """A float64 torch CSR matrix from a dense tensor/array or a scipy sparse matrix."""
    if not sp.issparse(x):
        x = sp.csr_matrix(_checks.matrix(x, name).cpu().double().numpy())
    x = x.tocsr()
    x.sort_indices()                                                    # torch requires sorted columns per row
    return _csr(torch.from_numpy(x.indptr).long(), torch.from_numpy(x.indices).long(),
                torch.from_numpy(x.data).double(), x.shape)


def _fit_softmax(X: Tensor, y: Tensor, n_classes: int, C: float, max_iter: int) -> tuple[Tensor, Tensor]:
    """argmin_{W,b} (1/N) Σ_i −log softmax(x_i W + b)_{y_i} + ‖W‖² / (2 C N)   by L-BFGS (sklearn's objective ÷ CN).

    The gradient is written out (X is sparse): ∇W = Xᵀ(P − Y)/N + W/(CN), ∇b = mean(P − Y).
    """
    N, F_ = X.shape
    W = torch.zeros(F_, n_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    Y = F.one_hot(y, n_classes).double()
    Xt = X.t().to_sparse_csr()
    opt = torch.optim.LBFGS([W, b], max_iter=max_iter, tolerance_grad=1e-7, tolerance_change=1e-10,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        with torch.no_grad():
            logits = X @ W + b                                          # (N, classes)
            logp = logits.log_softmax(1)
            loss = -(logp * Y).sum() / N + W.pow(2).sum() / (2 * C * N)
            G = (logp.exp() - Y) / N
            W.grad = Xt @ G + W / (C * N)
            b.grad = G.sum(0)
        return loss

    opt.step(closure)
    return W.detach(), b.detach()


def linear_probe(x_tr: Any, y_tr: Any, x_te: Any, y_te: Any, C: float = 1.0, max_iter: int = 300) -> float:
    """Held-out top-1 accuracy of a multinomial logistic probe, features scaled to unit variance (sparse kept sparse).

    x_tr (N_tr, F), x_te (N_te, F): dense tensors/arrays or scipy sparse matrices; y: (N,) class ids.
    Objective: scikit-learn's LogisticRegression(C) after StandardScaler(with_mean=False), fitted by L-BFGS in
    torch (`_fit_softmax`). The dense embedding itself is the usual reference for `truncated_probe`.
    """
    y_tr, y_te = _class_ids(y_tr, "y_tr"), _class_ids(y_te, "y_te")
    X_tr, X_te = _as_csr(x_tr, "x_tr"), _as_csr(x_te, "x_te")
    for x, y, name in ((X_tr, y_tr, "tr"), (X_te, y_te, "te")):
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x_{name} has {x.shape[0]} rows but y_{name} has {y.shape[0]}")
    if X_tr.shape[1] != X_te.shape[1]:
        raise ValueError(f"x_tr has {X_tr.shape[1]} features but x_te has {X_te.shape[1]}")
    if _checks.non_negative(C, "C") == 0:
        raise ValueError("C must be > 0")
    max_iter = _checks.positive_int(max_iter, "max_iter")
    classes, y_tr_ids = np.unique(y_tr, return_inverse=True)
    # unit variance per feature over the training rows (zero-variance features left as they are)
    s1 = torch.zeros(X_tr.shape[1], dtype=torch.float64).index_add_(0, X_tr.col_indices(), X_tr.values())
    s2 = torch.zeros(X_tr.shape[1], dtype=torch.float64).index_add_(0, X_tr.col_indices(), X_tr.values() ** 2)
    n = X_tr.shape[0]
    std = (s2 / n - (s1 / n) ** 2).clamp_min(0).sqrt()
    inv = torch.where(std > 0, 1 / std, torch.ones_like(std))
    X_scaled = _csr(X_tr.crow_indices(), X_tr.col_indices(), X_tr.values() * inv[X_tr.col_indices()], X_tr.shape)
    W, b = _fit_softmax(X_scaled, torch.from_numpy(y_tr_ids), len(classes), C, max_iter)
    pred = classes[((X_te @ (inv[:, None] * W)) + b).argmax(1).numpy()]
    return float((pred == y_te).mean())


def top_codes(codes: Rows, n: int, name: str, chunk_size: int = CHUNK) -> tuple[Tensor, Tensor, int]:
    """Each row's n largest codes, sorted: (indices (N, n), values (N, n), m), on the CPU."""
    idx, vals, m = [], [], None
    for z in iter_rows(codes, name, chunk_size=chunk_size):
        m = z.shape[1]
        v, i = z.topk(min(n, m), dim=1)                                 # (B, n), descending
        idx.append(i.cpu())
        vals.append(v.cpu())
    return torch.cat(idx), torch.cat(vals), m


def _truncated(idx: Tensor, vals: Tensor, m: int, n: int) -> sp.csr_matrix:
    """The (N, m) sparse matrix of each row's first n (largest) codes."""
    N, n = idx.shape[0], min(n, idx.shape[1])
    data, cols = (t[:, :n].contiguous().reshape(-1).numpy() for t in (vals, idx))
    X = sp.csr_matrix((data, cols, np.arange(0, N * n + 1, n)), shape=(N, m))
    X.eliminate_zeros()
    return X


def truncated_probe(codes_tr: Rows, y_tr: Any, codes_te: Rows, y_te: Any, ns: Sequence[int], C: float = 1.0,
                    max_iter: int = 300) -> dict[int, float]:
    """{n: held-out top-1 accuracy of a logistic probe on codes truncated to each
    sample's n largest latents}.

    z⁽ⁿ⁾_nj = z_nj · 1[j ∈ TopN_n(z_n)]; codes: (N, m) or chunks. For the
    dense-embedding reference call `linear_probe(x_tr, y_tr, x_te, y_te)` on the
    embeddings.
    """
    if isinstance(ns, int) or not isinstance(ns, Sequence) or not ns:
        raise TypeError(f"ns must be a non-empty sequence of ints, got {ns!r}")
    ns = sorted({_checks.positive_int(n, "ns") for n in ns})
    tr, te = top_codes(codes_tr, ns[-1], "codes_tr"), top_codes(codes_te, ns[-1], "codes_te")
    if tr[2] != te[2]:
        raise ValueError(f"codes_tr has {tr[2]} latents but codes_te has {te[2]}")
    return {n: linear_probe(_truncated(*tr, n), y_tr, _truncated(*te, n), y_te, C, max_iter) for n in ns}


@torch.no_grad()
def concept_classification(sae: SparseAutoencoder, x_fit: Tensor, y_fit: Tensor, x_test: Tensor, y_test: Tensor,
                           ns: Sequence[int | None] = (1, 5, 10, 50, None)) -> dict[int | None, float]:
    """{n: accuracy of nearest-prototype classification through each class's top-n concepts} (module docstring);
    x_fit, x_test: (N, d) embeddings; y_fit, y_test: (N,) class ids; n = None keeps every concept."""
    x_fit, x_test = _checks.matrix(x_fit, "x_fit", sae.d_in), _checks.matrix(x_test, "x_test", sae.d_in)
    y_fit, y_test = torch.as_tensor(y_fit).long(), torch.as_tensor(y_test).long()
    if len(y_fit) != len(x_fit) or len(y_test) != len(x_test):
        raise ValueError(f"labels must have one entry per row: x_fit {len(x_fit)} vs y_fit {len(y_fit)}, "
                         f"x_test {len(x_test)} vs y_test {len(y_test)}")
    classes = torch.unique(y_fit)
    device = next(sae.parameters()).device
    means = torch.stack([x_fit[y_fit == c].float().mean(0) for c in classes])
    z = sae.encode(F.normalize(means, dim=1).to(device))                                # (C, m)
    x_unit = F.normalize(x_test.float(), dim=1).to(device)
    out = {}
    for n in ns:
        kept = z
        if n is not None:
            idx = z.abs().topk(min(_checks.positive_int(n, "ns"), z.shape[1]), dim=1).indices   # T_c(n)
            kept = torch.zeros_like(z).scatter_(1, idx, z.gather(1, idx))
        protos = F.normalize(sae.decode(kept).float(), dim=1)                            # (C, d)
        pred = classes.to(device)[(x_unit @ protos.T).argmax(1)]
        out[n] = float((pred.cpu() == y_test).float().mean())
    return out


def _hsic_unbiased(A: Tensor, B: Tensor) -> Tensor:
    """HSIC₁(A, B) of Song et al. (2012) for (n, n) kernels (module docstring)."""
    n = A.shape[0]
    A, B = A.clone().fill_diagonal_(0), B.clone().fill_diagonal_(0)
    trace = (A * B.T).sum()
    return (trace + A.sum() * B.sum() / ((n - 1) * (n - 2)) - 2 * (A.sum(0) @ B.sum(1)) / (n - 2)) / (n * (n - 3))


def _knn_mask(K: Tensor, k: int) -> Tensor:
    """Bool (n, n): j among the k nearest neighbours of i under kernel K, excluding i itself."""
    scores = K.clone().fill_diagonal_(-torch.inf)
    return torch.zeros_like(K, dtype=torch.bool).scatter_(1, scores.topk(k, dim=1).indices, True)


def cknna(x: Tensor, z: Tensor, k: int = 10) -> float:
    """Mutual-kNN centred kernel alignment between two representations of the same n samples (module docstring).

    x (n, d), z (n, m), rows L2-normalised here; k: neighbours (Huh et al. use 10). 1 for kernels with the same
    neighbourhoods and values; near 0 for unrelated ones. O(n²) memory: n ≤ MAX_KERNEL_ROWS, subsample first.
    """
    x = _checks.matrix(x, "x").double()
    z = _checks.matrix(z, "z").double().to(x.device)
    _checks.same_length(x, z, "x", "z")
    n = x.shape[0]
    if n > MAX_KERNEL_ROWS:
        raise ValueError(f"cknna builds n × n kernels; n = {n} > {MAX_KERNEL_ROWS}, pass a random subsample")
    k = _checks.positive_int(k, "k")
    if n < 4 or not 2 <= k <= n - 1:
        raise ValueError(f"cknna needs n >= 4 samples and 2 <= k <= n - 1 neighbours, got n={n}, k={k}")
    K, L = (F.normalize(t, dim=1) @ F.normalize(t, dim=1).T for t in (x, z))      # (n, n)
    mask_K, mask_L = _knn_mask(K, k), _knn_mask(L, k)

    def align(A: Tensor, B: Tensor, mask: Tensor) -> Tensor:
        return _hsic_unbiased(A * mask, B * mask)

    den = align(K, K, mask_K) * align(L, L, mask_L)
    return float(align(K, L, mask_K & mask_L) / den.sqrt()) if den > 0 else math.nan


def matched_cosines(a: SparseAutoencoder | Tensor, b: SparseAutoencoder | Tensor) -> Tensor:
    """Cosine of each latent of `a` with its Hungarian-matched latent of `b`, (min(m_a, m_b),), sorted descending.

    The matching maximises Σ cos(d^a_i, d^b_π(i)) over one-to-one π; O(m³) time, an (m_a, m_b) matrix.
    """
    A = F.normalize(decoder_rows(a, "sae_a").float(), dim=1)
    B = F.normalize(decoder_rows(b, "sae_b").float(), dim=1).to(A.device)
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"sae_a decodes to d={A.shape[1]} but sae_b to d={B.shape[1]}")
    cos = (A @ B.T).cpu().numpy()                                                 # (m_a, m_b)
    r, c = linear_sum_assignment(cos, maximize=True)
    return torch.from_numpy(cos[r, c]).sort(descending=True).values


def seed_stability(sae_a: SparseAutoencoder | Tensor, sae_b: SparseAutoencoder | Tensor) -> float:
    """Mean Hungarian-matched decoder cosine between two SAEs (or two (m, d) decoders): 1 = the same dictionary."""
    return float(matched_cosines(sae_a, sae_b).mean())
