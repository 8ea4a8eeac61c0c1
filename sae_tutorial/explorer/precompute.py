"""What the explorer shows about each latent, computed once in one streaming pass over
the codes and saved beside the SAE.

Per latent j, over N images with codes a_nj >= 0 (read chunk by chunk, memory
O(m·(top_n + sample + bins))):

    count_j      |{n : a_nj > 0}|     frequency_j = count_j / N
    mean_j       Σ_n a_nj / count_j   mean activation where the latent fires
    top          its top_n images with the largest a_nj > 0, sorted
                 (st.metrics' TopActivations)
    weak         n_weak contrast images: the weakest of a uniform random sample of
                 `sample` images on which j fires (reservoir sampling: every non-zero
                 entry draws an i.i.d. uniform key, j keeps its largest keys)
    histogram    counts of a_nj > 0 in `bins` equal bins over [0, 2^e_j), 2^e_j the
                 smallest power of two above max_n a_nj. Exact in one pass: when a
                 chunk raises the max, the bins merge in pairs (the edge doubles)
    dominant     the class with the largest activation-weighted share of the top
                 images, and that share
    purity       binary and activation-weighted class purity of the top images
                 (st.metrics.class_purity)
    ms           the Monosemanticity Score (st.metrics.monosemanticity), when
                 embeddings are given

`precompute` returns a `LatentStats`; `LatentStats.save` writes one .safetensors file
(tensors, plus a JSON record in its header with a content hash and the SAE's own
hash), atomically; `load_stats` reads it back and checks it.
"""
from __future__ import annotations

import json
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from .. import _checks
from ..checkpoint import atomic_write, sae_record, tensors_sha256
from ..metrics._stream import CHUNK, Coo, RowReader, Rows, iter_coo, iter_rows, labels_matrix, peek, rank_in_group
from ..metrics.semantics import Monosemanticity, TopActivations, _class_counts, purity_from_top
from ..sae import SparseAutoencoder

FORMAT = "sae_tutorial.explorer"
SCHEMA_VERSION = 1
SUFFIX = ".explorer.safetensors"


class FiringSample:
    """A uniform random sample of `size` images per latent among those where it fires, with their activations.

    Each non-zero entry draws an i.i.d. uniform key (one generator, in row-major entry order, so the sample does
    not depend on the chunking); a latent keeps the entries with its `size` largest keys.
    """

    def __init__(self, m: int, size: int, seed: int, device: torch.device | str = "cpu") -> None:
        self.size, self.gen = size, torch.Generator().manual_seed(seed)
        self.keys = torch.zeros(size, m, device=device)                           # (size, m), 0 = empty slot
        self.rows = torch.full((size, m), -1, dtype=torch.long, device=device)
        self.vals = torch.zeros(size, m, device=device)

    def update(self, c: Coo) -> None:
        keys = torch.rand(c.vals.shape[0], generator=self.gen).clamp_min(1e-30).to(c.vals.device)   # (nnz,) > 0
        keep = (keys > self.keys[-1, c.cols]).nonzero().squeeze(1)
        if keep.numel() == 0:
            return
        cols = c.cols[keep]
        pos, rank = rank_in_group(cols, keys[keep], self.size)
        new = [torch.zeros_like(self.keys), torch.full_like(self.rows, -1), torch.zeros_like(self.vals)]
        for t, v in zip(new, (keys[keep], c.rows[keep] + c.start, c.vals[keep].float())):
            t[rank, cols[pos]] = v[pos]
        self.keys, i = torch.cat([self.keys, new[0]]).topk(self.size, dim=0)
        self.rows, self.vals = torch.cat([self.rows, new[1]]).gather(0, i), torch.cat([self.vals, new[2]]).gather(0, i)

    def weakest(self, n: int) -> tuple[Tensor, Tensor]:
        """(rows, activations), each (n, m): the n sampled images with the smallest activations, weakest first
        (row −1 where a latent fired on fewer images)."""
        order = torch.where(self.rows >= 0, self.vals, torch.inf).topk(n, dim=0, largest=False).indices
        return self.rows.gather(0, order), self.vals.gather(0, order)


class Histogram:
    """Per-latent histogram of the positive activations: `bins` equal bins over [0, 2^e_j), e_j the smallest
    integer with 2^e_j > max activation so far. A chunk that raises e_j by s first sums each 2^s adjacent bins."""

    def __init__(self, m: int, bins: int, device: torch.device | str = "cpu") -> None:
        self.counts = torch.zeros(m, bins, dtype=torch.long, device=device)      # (m, bins)
        self.exp = torch.full((m,), -126, dtype=torch.int32, device=device)      # e_j; 2^-126: float32's smallest

    def update(self, c: Coo) -> None:
        m, bins = self.counts.shape
        chunk_max = torch.zeros(m, device=c.vals.device).scatter_reduce(0, c.cols, c.vals.float(), "amax")
        exp = torch.where(chunk_max > 0, torch.frexp(chunk_max).exponent, self.exp)
        exp = torch.maximum(self.exp, exp)                                        # 2^exp > every value so far
        shift = (exp - self.exp).clamp(max=bins.bit_length() - 1)                 # merge 2^shift bins into one
        for s in shift.unique().tolist():
            if s > 0:
                rows = (shift == s).nonzero().squeeze(1)
                merged = self.counts[rows].view(-1, bins >> s, 1 << s).sum(2)      # (r, bins / 2^s)
                self.counts[rows] = torch.cat([merged, torch.zeros_like(self.counts[rows, : bins - (bins >> s)])], 1)
        self.exp = exp
        scaled = torch.ldexp(c.vals.double(), (-exp[c.cols]).double()) * bins    # a / 2^e · bins in [0, bins)
        b = scaled.long().clamp(max=bins - 1)
        self.counts += torch.bincount(c.cols * bins + b, minlength=m * bins).view(m, bins)

    def upper(self) -> Tensor:
        """2^e_j (m,), the upper edge of each latent's last bin."""
        return torch.ldexp(torch.ones_like(self.exp, dtype=torch.float64), self.exp.double())


@dataclass
class LatentStats:
    """Per-latent statistics for the explorer (module docstring). Tensors are on the CPU; m = number of latents."""

    n_samples: int                    # N, images in the pass
    count: Tensor                     # (m,) int64, images on which the latent fires
    act_sum: Tensor                   # (m,) float64, Σ activations
    top_rows: Tensor                  # (top_n, m) int64, row of the r-th strongest image, −1 if none
    top_vals: Tensor                  # (top_n, m) float32, its activation
    weak_rows: Tensor                 # (n_weak, m) int64, contrast images (weakest first), −1 if none
    weak_vals: Tensor                 # (n_weak, m) float32
    hist: Tensor                      # (m, bins) int64, histogram of the positive activations
    hist_upper: Tensor                # (m,) float64, upper edge of the last bin (edges: linspace(0, upper, bins + 1))
    dominant: Tensor | None = None    # (m,) int64, dominant class of the top images, −1 if none fired
    dominant_share: Tensor | None = None  # (m,) float64, its activation-weighted share, NaN if none
    purity: Tensor | None = None      # (m,) float64, binary purity of the top images
    purity_weighted: Tensor | None = None  # (m,) float64
    ms: Tensor | None = None          # (m,) float64, Monosemanticity Score
    class_names: list[str] | None = None
    sae_sha256: str | None = None     # content hash of the SAE the codes came from, when known

    @property
    def n_latents(self) -> int:
        return self.count.shape[0]

    @property
    def top_n(self) -> int:
        return self.top_rows.shape[0]

    @property
    def frequency(self) -> Tensor:
        """Fraction of images on which each latent fires, (m,) float64."""
        return self.count.double() / self.n_samples

    @property
    def mean_act(self) -> Tensor:
        """Mean activation where each latent fires, (m,) float64, NaN for dead latents."""
        return torch.where(self.count > 0, self.act_sum / self.count.clamp_min(1), torch.nan)

    @property
    def max_act(self) -> Tensor:
        """Largest activation of each latent, (m,) float32 (0 for dead latents)."""
        return self.top_vals[0]

    @property
    def alive(self) -> Tensor:
        """Bool (m,): fires on at least one image."""
        return self.count > 0

    def latent(self, j: Any) -> int:
        """`j` checked as a latent index, as an int."""
        if isinstance(j, bool) or not hasattr(j, "__index__"):
            raise TypeError(f"latent must be an int, got {type(j).__name__}")
        j = operator.index(j)
        if not 0 <= j < self.n_latents:
            raise ValueError(f"latent must be in [0, {self.n_latents}), got {j}")
        return j

    def scores(self, metrics: dict[str, Any] | None = None) -> dict[str, Tensor]:
        """Per-latent scores, higher first when sorting: frequency, MS and purity where computed, then `metrics`
        (name -> (m,) values, e.g. an MS under another encoder), which may replace them."""
        out = {"frequency": self.frequency, "MS": self.ms, "purity": self.purity}
        for name, values in (metrics or {}).items():
            v = _checks.as_tensor(values, f"metrics[{name!r}]").double().cpu()
            if v.shape != (self.n_latents,):
                raise ValueError(f"metrics[{name!r}] must have shape ({self.n_latents},), got {tuple(v.shape)}")
            out[str(name)] = v
        return {name: v for name, v in out.items() if v is not None}

    def sort_keys(self, metrics: dict[str, Any] | None = None) -> list[str]:
        """What `order` can sort by: "index", each score, and "dominant class" when labels were given."""
        return ["index", *self.scores(metrics), *(["dominant class"] if self.dominant is not None else [])]

    def order(self, by: str = "index", metrics: dict[str, Any] | None = None) -> Tensor:
        """Latent indices (m,) sorted by `by` (`sort_keys`): scores descending; "dominant class" groups latents by
        class, each by decreasing share. Dead latents and undefined (NaN) scores come last."""
        _checks.choice(by, "by", tuple(self.sort_keys(metrics)))
        if by == "index":
            return torch.arange(self.n_latents)
        if by == "dominant class":
            key = self.dominant.double() * 2 - self.dominant_share.nan_to_num(0.0)    # class, then share
            key = torch.where(self.alive, key, torch.inf)
            return torch.sort(key, stable=True).indices
        key = -self.scores(metrics)[by]
        key = torch.where(self.alive & ~key.isnan(), key, torch.inf)
        return torch.sort(key, stable=True).indices

    # ---- persistence
    def _tensors(self) -> dict[str, Tensor]:
        return {f.name: getattr(self, f.name).contiguous() for f in fields(self)
                if isinstance(getattr(self, f.name), Tensor)}

    def save(self, path: str | Path, sae: SparseAutoencoder | None = None) -> Path:
        """Write one .safetensors file atomically (tensors + a JSON record with a content hash); `sae`: the SAE the
        codes came from, whose hash is recorded so that `load_stats(path, sae)` can refuse a mismatch."""
        from .. import __version__

        tensors = self._tensors()
        record = {"format": FORMAT, "schema_version": SCHEMA_VERSION, "library_version": __version__,
                  "n_samples": self.n_samples, "class_names": self.class_names,
                  "sae_sha256": sae_record(sae)["content_sha256"] if sae is not None else self.sae_sha256,
                  "content_sha256": tensors_sha256(tensors)}
        return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={FORMAT: json.dumps(record)}))


def stats_path(sae_path: str | Path) -> Path:
    """Where the explorer statistics of the SAE checkpoint `sae_path` live: beside it, `<stem>.explorer.safetensors`."""
    path = Path(sae_path)
    return path.with_name(path.name.removesuffix(".safetensors") + SUFFIX)


def load_stats(path: str | Path, sae: SparseAutoencoder | None = None) -> LatentStats:
    """Read statistics written by `LatentStats.save`; checks format, version and content hash, and, given `sae`,
    that they were computed from that SAE's codes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no explorer statistics at {path}; compute them with st.explorer.precompute")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path} is not a readable safetensors file (corrupt or truncated?): {e}") from e
    if FORMAT not in meta:
        raise ValueError(f"{path} is a safetensors file but not explorer statistics (no '{FORMAT}' metadata)")
    record = json.loads(meta[FORMAT])
    if record.get("schema_version", 0) > SCHEMA_VERSION:
        raise ValueError(f"{path} has schema version {record['schema_version']}; this sae_tutorial reads up to "
                         f"{SCHEMA_VERSION}. Upgrade sae_tutorial to load it.")
    if tensors_sha256(tensors) != record.get("content_sha256"):
        raise ValueError(f"{path}: content hash mismatch, the file is corrupt")
    if sae is not None and record.get("sae_sha256") not in (None, sae_record(sae)["content_sha256"]):
        raise ValueError(f"{path} was computed from another SAE's codes (its weights differ from `sae`)")
    return LatentStats(n_samples=record["n_samples"], class_names=record.get("class_names"),
                       sae_sha256=record.get("sae_sha256"), **tensors)


# ---------------------------------------------------------------- the pass
def encode(sae: SparseAutoencoder, data: Rows, chunk_size: int = CHUNK) -> Iterator[Tensor]:
    """The SAE's codes of `data` ((N, d) or chunks), chunk by chunk on the SAE's device: input for `precompute`
    that never holds all N codes at once."""
    param = sae.W_dec
    with torch.no_grad():
        for x in iter_rows(data, "data", sae.d_in, chunk_size):
            yield sae.encode(x.to(param.device, param.dtype))                   # (B, m)


def _power_of_two(value: Any, name: str) -> int:
    value = _checks.positive_int(value, name)
    if value & (value - 1):
        raise ValueError(f"{name} must be a power of two, got {value}")
    return value


def precompute(codes: Rows, labels: Any = None, embeddings: Rows | None = None, *, top_n: int = 16,
               n_weak: int = 6, sample: int = 24, bins: int = 32, class_names: Sequence[str] | None = None,
               chunk_size: int = CHUNK, seed: int = 0) -> LatentStats:
    """Every statistic the explorer shows, in one pass over `codes`
    (module docstring for the formulas).

    codes: (N, m) non-negative codes, or an iterable of (B, m) chunks
    (e.g. `encode(sae, data)`), read once.
    labels: (N,) class ids or an (N, C) 0/1 matrix (enables dominant class and purity).
    embeddings: (N, D) or chunks in any chunking (enables MS). top_n: top images kept
    per latent. n_weak: contrast images, the weakest of a random `sample` of firing
    images. bins: histogram bins (a power of two). class_names: names of the label ids.
    seed: the contrast sample's randomness.
    """
    top_n, n_weak, sample = (_checks.positive_int(v, n) for v, n in ((top_n, "top_n"), (n_weak, "n_weak"),
                                                                      (sample, "sample")))
    if sample < n_weak:
        raise ValueError(f"sample ({sample}) must be >= n_weak ({n_weak})")
    bins = _power_of_two(bins, "bins")
    y, multi = labels_matrix(labels) if labels is not None else (None, False)
    if class_names is not None and y is not None:
        n_classes = y.shape[1] if multi else int(y.max()) + 1
        if len(class_names) < n_classes:
            raise ValueError(f"class_names has {len(class_names)} names but labels use {n_classes} classes")
    emb = None if embeddings is None else RowReader(embeddings, "embeddings", chunk_size=chunk_size)

    first, chunks = peek(iter_coo(codes, "codes", chunk_size))
    m, device = first.n_cols, first.cols.device
    count = torch.zeros(m, dtype=torch.long, device=device)
    act_sum = torch.zeros(m, dtype=torch.float64, device=device)
    top, weak = TopActivations(m, top_n, device), FiringSample(m, sample, seed, device)
    hist = Histogram(m, bins, device)
    ms, n = None, 0
    for i, c in enumerate(chunks):
        if bool((c.vals < 0).any()):
            raise ValueError(f"codes (chunk {i}) has negative entries: the explorer reads SAE codes, which are >= 0")
        count += torch.bincount(c.cols, minlength=m)
        act_sum.index_add_(0, c.cols, c.vals.double())
        top.update(c)
        weak.update(c)
        hist.update(c)
        if emb is not None:
            e = emb.take(c.n_rows)
            ms = ms or Monosemanticity(m, e.shape[1], device)
            ms.update(c, e)
        n += c.n_rows
    if emb is not None:
        emb.finish()
    weak_rows, weak_vals = weak.weakest(n_weak)
    stats = LatentStats(n_samples=n, count=count.cpu(), act_sum=act_sum.cpu(), top_rows=top.rows.cpu(),
                        top_vals=top.vals.float().cpu(), weak_rows=weak_rows.cpu(), weak_vals=weak_vals.cpu(),
                        hist=hist.counts.cpu(), hist_upper=hist.upper().cpu(),
                        ms=None if ms is None else ms.scores(),
                        class_names=None if class_names is None else [str(c) for c in class_names])
    if y is not None:
        if y.shape[0] != n:
            raise ValueError(f"codes has {n} rows but labels has {y.shape[0]}")
        _add_classes(stats, top, y, multi)
    return stats


def _add_classes(stats: LatentStats, top: TopActivations, y: Tensor, multi: bool) -> None:
    """Dominant class (activation-weighted over the top images) and purity, from the collected top images."""
    rows, vals = top.rows.cpu(), top.vals.cpu()
    ok = rows >= 0                                                               # (top_n, m)
    cols = torch.arange(stats.n_latents).expand_as(rows)[ok]
    mass = _class_counts(cols, rows[ok], vals[ok], y, multi, stats.n_latents)   # (m, C) activation per class
    total = torch.zeros(stats.n_latents, dtype=torch.float64).index_add_(0, cols, vals[ok])
    share, dominant = mass.max(1)
    fired = total > 0
    stats.dominant = torch.where(fired, dominant, -1)
    stats.dominant_share = torch.where(fired, share / total.clamp_min(1e-300), torch.nan)
    stats.purity = purity_from_top(top, y, multi, weighted=False)
    stats.purity_weighted = purity_from_top(top, y, multi, weighted=True)
