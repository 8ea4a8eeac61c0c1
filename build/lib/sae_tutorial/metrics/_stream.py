"""How the metrics read their inputs: row streams, their non-zero entries, class labels.

Every `acts`, `codes`, `data` and `embeddings` argument is a matrix (torch tensor or numpy array), cut into views of
`chunk_size` rows, or any other iterable, read once, in order, as its (B, ·) chunks: a generator over shards on disk
works and N can exceed memory. Every metric needs a single pass. Activation chunks become their non-zero entries
(`Coo`), which is all the sparse metrics read.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import torch
from torch import Tensor

from .. import _checks

Rows = Union[Tensor, np.ndarray, Iterable]  # a (N, ·) matrix, or an iterable of (B, ·) chunks
CHUNK = 4096                                 # rows per view when a matrix is streamed


def iter_rows(data: Rows, name: str, n_cols: int | None = None, chunk_size: int = CHUNK,
              finite: bool = True) -> Iterator[Tensor]:
    """Yield checked (B, n_cols) floating chunks of `data` (2-D, same width, no NaN/Inf unless finite=False);
    error if there are no rows."""
    if isinstance(data, (Tensor, np.ndarray)):
        x = _checks.as_tensor(data, name)
        if x.ndim != 2:
            raise ValueError(f"{name} must be 2-D (N, ·), got shape {tuple(x.shape)}")
        chunks: Iterable = (x[s:s + chunk_size] for s in range(0, x.shape[0], chunk_size))
    elif isinstance(data, Iterable) and not isinstance(data, (str, bytes, dict)):
        chunks = data
    else:
        raise TypeError(f"{name} must be a tensor, an array or an iterable of (B, ·) chunks, got {type(data).__name__}")
    n_rows = 0
    for i, chunk in enumerate(chunks):
        chunk = _checks.matrix(chunk, f"{name} (chunk {i})", n_cols, finite)
        n_cols, n_rows = chunk.shape[1], n_rows + chunk.shape[0]
        yield chunk
    if n_rows == 0:
        raise ValueError(f"{name} is empty (0 rows)")


@dataclass
class Coo:
    """The non-zero entries of a (n_rows, n_cols) chunk of activations whose first row is row `start` of the data."""

    rows: Tensor  # (nnz,) row within the chunk
    cols: Tensor  # (nnz,) latent
    vals: Tensor  # (nnz,) activation, non-zero
    n_rows: int
    n_cols: int
    start: int

    @classmethod
    def from_dense(cls, a: Tensor, start: int) -> "Coo":
        rows, cols = a.nonzero(as_tuple=True)
        return cls(rows, cols, a[rows, cols], a.shape[0], a.shape[1], start)

    @classmethod
    def from_topk(cls, indices: Tensor, values: Tensor, n_cols: int, start: int) -> "Coo":
        """From a Top-k output's (B, k) indices and values, without the dense (B, m) matrix."""
        B, k = indices.shape
        rows = torch.arange(B, device=indices.device).repeat_interleave(k)
        keep = values.reshape(-1) != 0
        return cls(rows[keep], indices.reshape(-1)[keep], values.reshape(-1)[keep], B, n_cols, start)


def iter_coo(acts: Rows, name: str, chunk_size: int = CHUNK) -> Iterator[Coo]:
    """The chunks of `acts` as `Coo`, with their row offsets. NaN and Inf are non-zero, so checking the
    non-zero entries for them is exact, and far cheaper than scanning the dense chunk once more."""
    start = 0
    for i, a in enumerate(iter_rows(acts, name, chunk_size=chunk_size, finite=False)):
        c = Coo.from_dense(a, start)
        if not bool(torch.isfinite(c.vals).all()):
            raise ValueError(f"{name} (chunk {i}) contains NaN or Inf")
        yield c
        start += a.shape[0]


def peek(chunks: Iterator[Coo]) -> tuple[Coo, Iterator[Coo]]:
    """(the first chunk, the whole stream again): the first chunk tells the width m before anything is allocated."""
    first = next(chunks)

    def again() -> Iterator[Coo]:
        yield first
        yield from chunks
    return first, again()


class RowReader:
    """Serves the rows of `data` (a matrix or an iterable of chunks) in blocks of any size, so that a second
    argument (the embeddings) can follow the chunking of the first; `finish` checks both end together."""

    def __init__(self, data: Rows, name: str, n_cols: int | None = None, chunk_size: int = CHUNK):
        self.name, self.chunks = name, iter_rows(data, name, n_cols, chunk_size)
        self.buf: Tensor | None = None
        self.served = 0

    def take(self, n: int) -> Tensor:
        """The next n rows."""
        parts, have = [] if self.buf is None else [self.buf], 0 if self.buf is None else self.buf.shape[0]
        while have < n:
            chunk = next(self.chunks, None)
            if chunk is None:
                raise ValueError(f"{self.name} has {self.served + have} rows, fewer than the activations")
            parts.append(chunk)
            have += chunk.shape[0]
        x = parts[0] if len(parts) == 1 else torch.cat(parts)
        self.buf, self.served = x[n:], self.served + n
        return x[:n]

    def finish(self) -> None:
        """Error if rows are left over."""
        left = (0 if self.buf is None else self.buf.shape[0]) + sum(c.shape[0] for c in self.chunks)
        if left:
            raise ValueError(f"{self.name} has {self.served + left} rows, more than the {self.served} activations")


def rank_in_group(group: Tensor, vals: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Entries among the n largest positive `vals` of their group: (their positions, their rank 0..n-1).

    One sort of the int64 key (group, −val): a positive float32's bit pattern orders like its value (values
    are ranked at float32 precision).
    """
    bits = vals.float().view(torch.int32).long()
    order = torch.sort((group.long() << 32) | (0x7FFFFFFF - bits)).indices
    g = group[order]
    counts = torch.bincount(g)
    rank = torch.arange(g.shape[0], device=g.device) - (counts.cumsum(0) - counts)[g]
    top = rank < n
    return order[top], rank[top]


def labels_matrix(labels: Any, name: str = "labels") -> tuple[Tensor, bool]:
    """Check class labels: (N,) non-negative ints (single-label) or an (N, C) 0/1 matrix (multi-label).

    Returns (labels as a tensor: int64 (N,) or bool (N, C), multi_label).
    """
    y = _checks.as_tensor(labels, name)
    if y.ndim == 1:
        if y.is_floating_point() or y.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer class ids, got dtype {y.dtype}")
        if y.numel() == 0 or int(y.min()) < 0:
            raise ValueError(f"{name} must be non-empty non-negative class ids")
        return y.long(), False
    if y.ndim == 2:
        if not bool(((y == 0) | (y == 1)).all()):
            raise ValueError(f"{name} as a (N, C) multi-label matrix must hold only 0 and 1")
        return y.bool(), True
    raise ValueError(f"{name} must be (N,) class ids or an (N, C) 0/1 matrix, got shape {tuple(y.shape)}")
