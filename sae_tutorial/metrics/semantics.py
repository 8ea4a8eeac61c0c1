"""What a latent means: the Monosemanticity Score (Pach et al. 2025) and class purity
of its top images.

Monosemanticity, per latent j, with activations min-max normalised over the set,
ã_n = (a_n − min a)/(max a − min a), and s_nm the cosine similarity of images n and m
under an embedding E (unit rows e_n):

    MS_j = Σ_{n<m} ã_n ã_m s_nm / Σ_{n<m} ã_n ã_m
         = (‖Σ_n ã_n e_n‖² − Σ_n ã_n²) / ((Σ_n ã_n)² − Σ_n ã_n²)
           exact, O(N·D·m) instead of O(N²·m)

The scale (max − min) cancels, so only the shifted activations a_n − c enter, for any
shift c. One pass keeps, per latent, S1 = Σ(a − c), Q = Σ(a − c)², V = Σ(a − c) e (D,)
and Σ e, in float64, with c the latent's minimum on the first chunk (0 for any latent
that is zero somewhere in it); at the end the sums move to the true minimum:
with δ = min a − c,  S1 −= Nδ,  Q −= 2δ·S1 − Nδ²,  V −= δ Σe. Only the non-zero
activations are touched, so a sparse chunk costs O(nnz·D) rather than the dense
GEMM Eᵀ·Ã; memory is O(m·D). MS is NaN for a latent that is constant (dead) or fires
on a single image: the pair sum is empty.

Class purity, per latent j, over T_j = its top_n images among those with a > 0, and
weights w_n (1, or a_n):

    purity_j = max_c Σ_{n ∈ T_j} w_n · 1[c ∈ labels(n)] / Σ_{n ∈ T_j} w_n

A single-label image has one class; a multi-label image (an (N, C) 0/1 matrix) counts
for every class it has.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _checks
from ._stream import CHUNK, Coo, RowReader, Rows, iter_coo, labels_matrix, peek, rank_in_group
from .controls import purity_chance_curve


class Monosemanticity:
    """Running sums for MS over chunks of activations and their embeddings (see the module docstring)."""

    def __init__(self, m: int, dim: int, device: torch.device | str = "cpu") -> None:
        f64 = {"dtype": torch.float64, "device": device}
        self.m, self.n = m, 0
        self.shift = None                              # c (m,)
        self.lo = torch.full((m,), torch.inf, **f64)   # running min a
        self.hi = torch.full((m,), -torch.inf, **f64)  # running max a
        self.s1 = torch.zeros(m, **f64)                # Σ (a − c)
        self.q = torch.zeros(m, **f64)                 # Σ (a − c)²
        self.v = torch.zeros(m, dim, **f64)            # Σ (a − c) e
        self.e_sum = torch.zeros(dim, **f64)           # Σ e

    def update(self, c: Coo, embeddings: Tensor) -> None:
        e = embeddings.to(self.v.device, torch.float64)
        norms = e.norm(dim=1, keepdim=True)                                             # (B, 1)
        if not bool((norms > 0).all()):
            raise ValueError("embeddings has an all-zero row: its cosine similarity is undefined")
        e = e / norms                                                                   # (B, D) unit rows
        a, B = c.vals.to(torch.float64), c.n_rows                                       # (nnz,)
        n_zero = B - torch.bincount(c.cols, minlength=self.m)                          # (m,) zeros in the chunk
        lo = torch.full_like(self.lo, torch.inf).scatter_reduce(0, c.cols, a, "amin")
        hi = torch.full_like(self.hi, -torch.inf).scatter_reduce(0, c.cols, a, "amax")
        zero = torch.zeros_like(lo)
        lo = torch.where(n_zero > 0, torch.minimum(lo, zero), lo)
        hi = torch.where(n_zero > 0, torch.maximum(hi, zero), hi)
        if self.shift is None:
            self.shift = lo
        shift, e_sum = self.shift, e.sum(0)
        self.s1 += torch.zeros_like(self.s1).index_add_(0, c.cols, a) - B * shift
        self.q += torch.zeros_like(self.q).index_add_(0, c.cols, (a - shift[c.cols]).pow(2)) + n_zero * shift.pow(2)
        ae = torch.sparse_coo_tensor(torch.stack([c.cols, c.rows]), a, (self.m, B), check_invariants=False)
        self.v += torch.sparse.mm(ae, e) - shift[:, None] * e_sum                       # (m, D)
        self.e_sum += e_sum
        self.lo, self.hi, self.n = torch.minimum(self.lo, lo), torch.maximum(self.hi, hi), self.n + B

    def scores(self) -> Tensor:
        """MS (m,) float64 on the CPU; NaN where undefined."""
        d = self.lo - self.shift                                                        # δ ≤ 0
        s1 = self.s1 - self.n * d
        q = self.q - 2 * d * self.s1 + self.n * d.pow(2)
        v = self.v - d[:, None] * self.e_sum
        num, den = v.pow(2).sum(1) - q, s1.pow(2) - q                                  # 2·pair sums
        ms = num / den.clamp_min(1e-300)
        return torch.where((self.hi > self.lo) & (den > 0), ms, torch.nan).cpu()


def monosemanticity(acts: Rows, embeddings: Rows, chunk_size: int = CHUNK) -> Tensor:
    """Monosemanticity Score per latent (m,), float64; NaN for dead latents and latents firing on one image.

    MS_j = Σ_{n<m} ã_nj ã_mj cos(e_n, e_m) / Σ_{n<m} ã_nj ã_mj, ã min-max normalised per latent over the set,
    computed exactly in linear time (module docstring). acts: (N, m) or chunks; embeddings: (N, D) or chunks,
    any chunking (the SAE's input for the usual score, or another encoder's image embeddings).
    """
    emb, ms = RowReader(embeddings, "embeddings", chunk_size=chunk_size), None
    for c in iter_coo(acts, "acts", chunk_size):
        e = emb.take(c.n_rows)
        ms = ms or Monosemanticity(c.n_cols, e.shape[1], c.cols.device)
        ms.update(c, e)
    emb.finish()
    return ms.scores()


def alive_mean(scores: Tensor) -> float:
    """Mean of a per-latent score over the latents where it is defined (NaN-free), e.g. mean MS over alive latents."""
    return float(torch.nanmean(scores.double()))


def alive_max(scores: Tensor) -> float:
    """Max of a per-latent score over the latents where it is defined."""
    ok = ~torch.isnan(scores)
    return float(scores[ok].max()) if bool(ok.any()) else float("nan")


class TopActivations:
    """Each latent's top_n largest positive activations so far, sorted: values (top_n, m) and global rows
    (−1 where a latent has fewer). A chunk only contributes entries above the current top_n-th value."""

    def __init__(self, m: int, top_n: int, device: torch.device | str = "cpu") -> None:
        self.top_n = _checks.positive_int(top_n, "top_n")
        self.vals = torch.zeros(self.top_n, m, dtype=torch.float64, device=device)
        self.rows = torch.full((self.top_n, m), -1, dtype=torch.long, device=device)

    def update(self, c: Coo) -> None:
        keep = (c.vals > self.vals[-1, c.cols]).nonzero().squeeze(1)    # > the top_n-th so far (≥ 0)
        if keep.numel() == 0:
            return
        cols, vals, rows = c.cols[keep], c.vals[keep].to(self.vals.dtype), c.rows[keep] + c.start
        pos, rank = rank_in_group(cols, vals, self.top_n)                # the chunk's own top_n per latent
        new_vals, new_rows = torch.zeros_like(self.vals), torch.full_like(self.rows, -1)
        new_vals[rank, cols[pos]], new_rows[rank, cols[pos]] = vals[pos], rows[pos]
        self.vals, i = torch.cat([self.vals, new_vals]).topk(self.top_n, dim=0)      # (top_n, m), merged
        self.rows = torch.cat([self.rows, new_rows]).gather(0, i)


def _class_counts(cols: Tensor, rows: Tensor, weights: Tensor, labels: Tensor, multi: bool, m: int) -> Tensor:
    """counts (m, C) float64: Σ over entries (col, row, w) of w · [class c of image row], in blocks."""
    n_classes = labels.shape[1] if multi else int(labels.max()) + 1
    counts = torch.zeros(m, n_classes, dtype=torch.float64)
    step = max(1, (1 << 22) // n_classes)
    for s in range(0, cols.shape[0], step):
        r = rows[s:s + step]
        hits = labels[r].double() if multi else F.one_hot(labels[r], n_classes).double()   # (b, C)
        counts.index_add_(0, cols[s:s + step], weights[s:s + step, None] * hits)
    return counts


def purity_from_top(top: TopActivations, labels: Tensor, multi: bool, weighted: bool) -> Tensor:
    """Purity (m,) from collected top activations and checked labels (`labels_matrix`); NaN where none fired."""
    rows, vals = top.rows.cpu(), top.vals.cpu()                          # (top_n, m)
    m = rows.shape[1]
    ok = rows >= 0
    cols = torch.arange(m).expand_as(rows)[ok]
    w = vals[ok] if weighted else torch.ones_like(vals[ok])
    counts = _class_counts(cols, rows[ok], w, labels, multi, m)
    total = torch.zeros(m, dtype=torch.float64).index_add_(0, cols, w)
    return torch.where(total > 0, counts.max(1).values / total.clamp_min(1e-300), torch.nan)


def class_purity(acts: Rows, labels: Any, top_n: int = 50, weighted: bool = False,
                 chunk_size: int = CHUNK) -> Tensor:
    """Purity of each latent's top_n images among those with a > 0, (m,) float64; NaN for latents that never fire.

    purity_j = max_c Σ_{n ∈ T_j} w_n 1[c ∈ labels(n)] / Σ_{n ∈ T_j} w_n,  w_n = 1 (binary) or a_nj (weighted).
    labels: (N,) class ids, or an (N, C) 0/1 matrix (multi-label: an image counts for each of its classes).
    """
    y, multi = labels_matrix(labels)
    top_n = _checks.positive_int(top_n, "top_n")
    first, chunks = peek(iter_coo(acts, "acts", chunk_size))
    top, n = TopActivations(first.n_cols, top_n, first.cols.device), 0
    for c in chunks:
        top.update(c)
        n += c.n_rows
    if n != y.shape[0]:
        raise ValueError(f"acts has {n} rows but labels has {y.shape[0]}")
    return purity_from_top(top, y, multi, weighted)


def purity_chance(labels: Any, top_n: int = 50, n_draws: int = 1000, seed: int = 0) -> float:
    """Chance level of binary purity: its mean over `n_draws` sets of top_n images drawn uniformly without
    replacement, E[max_c |{n ∈ T : c ∈ labels(n)}| / |T|] (a latent that picks images at random). The last
    point of `purity_chance_curve` (controls.py), which gives the level for smaller sets too."""
    return float(purity_chance_curve(labels, top_n, n_draws, seed)[-1])
