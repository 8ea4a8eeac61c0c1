"""The Top-k fast path: gradients that touch only the B·k selected entries.

A Top-k SAE's loss depends on the pre-activations h (B, m) only through the k entries per row that
Top-k selects. Autograd through `h.gather` would still build a dense (B, m) gradient and run two more
(B, d) x (d, m) GEMMs in the backward. Here the backward works on the selected entries alone:

    vals[b, j]   = h[b, idx[b, j]]                      forward: a gather from h computed without grad
    ∂L/∂W_enc[i] = Σ_{(b, j): idx[b, j] = i} g[b, j] xc[b]   = Gᵀ xc with G sparse (B, m): `sparse_t_matmul`
    ∂L/∂b_enc[i] = Σ_{(b, j): idx[b, j] = i} g[b, j]        = Σ_b G[b, i]
    ∂L/∂b_dec    = −Σ_b Σ_j g[b, j] W_enc[idx[b, j]]      = −(∂L/∂b_enc) W_enc: one (m,) × (m, d) product

where xc = x − b_dec. The data x need no gradient in training, so b_dec's gradient through the encoder never
needs the per-row (B, d) product; it is computed only when x itself requires grad (an embedding_bag here, a GEMM
in the penalty path below). The decode x̂ = Σ_j vals[b, j] W_dec[idx[b, j]] is an `embedding_bag`, whose own
backward is sparse too. No (B, k, d) tensor is ever built: that is what keeps the step near the one unavoidable
GEMM. Same idea as EleutherAI sparsify's fused encoder, without its (B, k, d) intermediate.

The kernels take the selected entries as a `Support` (E entries sorted by row), so the same code serves Top-k
(k per row) and BatchTopK (the top B·k of the whole batch, any number per row).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class Support(NamedTuple):
    """The non-zero entries of a (B, m) code matrix, E of them sorted by row: entry e sits at (rows[e], cols[e]),
    and row b owns entries offsets[b] .. offsets[b + 1] − 1. Top-k has k per row; BatchTopK any number."""

    rows: Tensor      # (E,)
    cols: Tensor      # (E,) latent ids
    offsets: Tensor   # (B,) start of each row's entries

    @classmethod
    def of_topk(cls, idx: Tensor) -> "Support":
        """The support of a (B, k) index matrix: entry b·k + j is (b, idx[b, j])."""
        B, k = idx.shape
        rows = torch.arange(B, device=idx.device).repeat_interleave(k)
        return cls(rows, idx.reshape(-1), torch.arange(0, B * k, k, device=idx.device))

    @classmethod
    def of_flat(cls, flat: Tensor, n_rows: int, n_cols: int) -> "Support":
        """The support of flat indices into a row-major (n_rows, n_cols) matrix, in any order."""
        flat = flat.sort().values
        rows = torch.div(flat, n_cols, rounding_mode="floor")
        counts = torch.bincount(rows, minlength=n_rows)
        return cls(rows, flat - rows * n_cols, torch.cumsum(counts, 0) - counts)


def sparse_t_matmul(support: Support, weights: Tensor, dense: Tensor, n_out: int) -> Tensor:
    """Gᵀ @ dense, where G (B, n_out) holds weights[e] at (rows[e], cols[e]) of `support`:

    out[i] = Σ_{e: cols[e] = i} weights[e] · dense[rows[e]]       shape (n_out, d)

    Computed as an embedding_bag over the rows of `dense`, one bag per output row: O(E·d) work, O(E) extra memory.
    """
    order = torch.argsort(support.cols)                           # group the E entries by output row
    counts = torch.bincount(support.cols, minlength=n_out)        # (n_out,)
    offsets = torch.cumsum(counts, 0) - counts                    # start of each bag
    w = weights.reshape(-1)[order].to(dense.dtype)
    return F.embedding_bag(support.rows[order], dense, offsets, mode="sum", per_sample_weights=w)


def _input_grads(ctx, gb: Tensor, W: Tensor, per_row: Callable[[], Tensor]) -> tuple[Tensor | None, Tensor | None]:
    """(∂L/∂x, ∂L/∂b_dec) of an encoder read of xc = x − b_dec, given gb = Σ_b ∂L/∂h_b over the columns of W.

    ∂L/∂b_dec = −Σ_b ∂L/∂xc_b = −gb W; the per-row ∂L/∂xc = `per_row()` (B, d) is built only when x needs it.
    """
    grad_x = grad_b_dec = None
    if ctx.needs_input_grad[0]:
        grad_x = per_row()
        if ctx.needs_input_grad[1]:
            grad_b_dec = -grad_x.sum(0)
    elif ctx.needs_input_grad[1]:
        grad_b_dec = -(gb.to(W.dtype) @ W)
    return grad_x, grad_b_dec


class _SparseEncode(torch.autograd.Function):
    """Gather h at a support from precomputed pre-activations; backward touches only those entries."""

    @staticmethod
    def forward(ctx, x: Tensor, b_dec: Tensor, W_enc: Tensor, b_enc: Tensor, pre_acts: Tensor,
                support: Support) -> Tensor:
        ctx.save_for_backward(x, b_dec, W_enc)
        ctx.support = support
        flat = support.rows * pre_acts.shape[1] + support.cols     # faster to read than h[rows, cols]
        return pre_acts.reshape(-1).index_select(0, flat)          # (E,)

    @staticmethod
    def backward(ctx, g: Tensor):
        x, b_dec, W_enc = ctx.saved_tensors
        sup = ctx.support
        g = g.to(W_enc.dtype)
        m = W_enc.shape[0]
        gb = torch.zeros(m, dtype=g.dtype, device=g.device).index_add_(0, sup.cols, g)                # (m,)
        grad_x, grad_b_dec = _input_grads(ctx, gb, W_enc, lambda: F.embedding_bag(
            sup.cols, W_enc, sup.offsets, mode="sum", per_sample_weights=g).to(x.dtype))
        grad_W = None
        if ctx.needs_input_grad[2]:
            grad_W = sparse_t_matmul(sup, g, (x - b_dec).to(W_enc.dtype), m)                           # (m, d)
        grad_b = gb if ctx.needs_input_grad[3] else None
        return grad_x, grad_b_dec, grad_W, grad_b, None, None


class _KnownGradPenalty(torch.autograd.Function):
    """A penalty P(h[:, cols]) whose gradient G = ∂P/∂h[:, cols] is already computed: the backward is Gᵀ(x − b_dec),
    one GEMM (and G W_enc[cols], a second, only when x requires grad)."""

    @staticmethod
    def forward(ctx, x: Tensor, b_dec: Tensor, W_enc: Tensor, b_enc: Tensor, value: Tensor, grad_h: Tensor,
                cols: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, b_dec, W_enc)
        ctx.grad_h, ctx.cols = grad_h, cols   # not saved_tensors: the backward scales grad_h in place
        return value.detach().clone()

    @staticmethod
    def backward(ctx, g: Tensor):
        x, b_dec, W_enc = ctx.saved_tensors
        G, cols = ctx.grad_h, ctx.cols
        del ctx.grad_h
        G = G.mul_(g.to(G.dtype))                                                   # (B, |cols|)
        W = W_enc if cols is None else W_enc.index_select(0, cols)
        gb = G.sum(0, dtype=W_enc.dtype)                                            # (|cols|,)
        grad_x, grad_b_dec = _input_grads(ctx, gb, W, lambda: (G @ W.to(G.dtype)).to(x.dtype))
        grad_W = grad_b = None
        if ctx.needs_input_grad[2]:
            gW = (G.T @ (x - b_dec).to(G.dtype)).to(W_enc.dtype)                    # (|cols|, d)
            grad_W = gW if cols is None else torch.zeros_like(W_enc).index_copy_(0, cols, gW)
        if ctx.needs_input_grad[3]:
            grad_b = gb if cols is None else gb.new_zeros(W_enc.shape[0]).index_copy_(0, cols, gb)
        return grad_x, grad_b_dec, grad_W, grad_b, None, None, None


def known_grad_penalty(x: Tensor, b_dec: Tensor, W_enc: Tensor, b_enc: Tensor, value: Tensor, grad_h: Tensor,
                       cols: Tensor | None = None) -> Tensor:
    """`value`, a function of h[:, cols] = (x − b_dec) W_enc[cols]ᵀ + b_enc[cols] (all columns when None), attached
    to the encoder given its gradient grad_h = ∂value/∂h[:, cols] (B, |cols|), which it consumes:

        ∂/∂W_enc[cols] = grad_hᵀ (x − b_dec)    ∂/∂b_enc[cols] = Σ_b grad_h    ∂/∂b_dec = −(Σ_b grad_h) W_enc[cols]

    One GEMM over |cols| columns (a second, grad_h W_enc[cols], only when x requires grad) and no autograd graph
    over the (B, m) pre-activations: the regularizers' step. The GEMMs run in grad_h's dtype (bf16 under CUDA
    autocast).
    """
    return _KnownGradPenalty.apply(x, b_dec, W_enc, b_enc, value, grad_h, cols)


def sparse_encode(x: Tensor, b_dec: Tensor, W_enc: Tensor, b_enc: Tensor, pre_acts: Tensor,
                  support: Support) -> Tensor:
    """vals[e] = (x[r] − b_dec) · W_enc[c] + b_enc[c] at each entry (r, c) of `support`, read from `pre_acts`
    (B, m) computed without grad: (E,). Gradients flow to x, b_dec, W_enc and b_enc through those entries only.
    """
    return _SparseEncode.apply(x, b_dec, W_enc, b_enc, pre_acts, support)


class _SparseDecode(torch.autograd.Function):
    """x̂[b] = Σ_{e of row b} vals[e] W_dec[cols[e]]; backward: ∂L/∂vals by a gathered dot, ∂L/∂W_dec = Gᵀ g."""

    @staticmethod
    def forward(ctx, support: Support, vals: Tensor, W_dec: Tensor) -> Tensor:
        vals = vals.to(W_dec.dtype)
        ctx.save_for_backward(vals, W_dec)
        ctx.support = support
        return F.embedding_bag(support.cols, W_dec, support.offsets, mode="sum", per_sample_weights=vals)  # (B, d)

    @staticmethod
    def backward(ctx, g: Tensor):
        vals, W_dec = ctx.saved_tensors
        sup = ctx.support
        g = g.to(W_dec.dtype)
        grad_vals = grad_W = None
        if ctx.needs_input_grad[1]:
            # ∂L/∂vals[e] = g[rows[e]] · W_dec[cols[e]]: embedding_bag's own per-sample-weight backward does
            # exactly this gathered dot without an (E, d) buffer, so we borrow it.
            with torch.enable_grad():
                v = vals.detach().requires_grad_()
                out = F.embedding_bag(sup.cols, W_dec.detach(), sup.offsets, mode="sum", per_sample_weights=v)
                (grad_vals,) = torch.autograd.grad(out, v, g)
        if ctx.needs_input_grad[2]:
            # embedding_bag's dense weight backward is ~5x slower on CPU than this grouped form.
            grad_W = sparse_t_matmul(sup, vals, g, W_dec.shape[0])                                # (m, d)
        return None, grad_vals, grad_W


def sparse_decode(support: Support, vals: Tensor, W_dec: Tensor) -> Tensor:
    """Σ_{e of row b} vals[e] · W_dec[cols[e]]  (B, d), without the decoder bias; a gather, not a (B, m) GEMM.
    Rows without entries decode to 0."""
    return _SparseDecode.apply(support, vals, W_dec)
