"""Time the latent explorer: the one-off precompute at N=100k images and m=8192 latents, and one selection at m=16384.

    python benchmarks/bench_explorer.py
    python benchmarks/bench_explorer.py --n 20000 --m 2048 --select-m 4096     # a quick run

Codes are Top-k of random scores (k=64 latents per image, values in (0.01, 1.01]), streamed as dense (4096, m) float32
chunks built on the fly from resident (N, k) indices and values, the way `st.explorer.encode` yields an SAE's codes;
labels have 10 classes. Rows:
    stream codes only        building and reading the chunks, no statistics (the floor every row pays)
    precompute top_n=T       st.explorer.precompute(chunks, labels, top_n=T): counts, means, top images, contrast
                             sample, histograms, dominant class, purity
    precompute + MS          the same with D=256 embeddings (adds the Monosemanticity Score)
    select a latent          LatentExplorer.latent.value = j at m=16384, d=768, N=20k images of 64x64x3, with a
                             UMAP map: the card PNG, the similar-decoder-row list, the map's highlight
Printed: wall and process CPU seconds (targets: precompute <= 60 CPU-s; a selection <= 200 ms). Nothing is asserted.
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch

import sae_tutorial as st


def timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds of this process, result) of fn()."""
    t, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t, time.process_time() - cpu, out


class RandomCodes:
    """Top-k codes of random scores, as dense (chunk, m) float32 chunks: each iteration streams all N rows again."""

    def __init__(self, n: int, m: int, k: int, chunk: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.m, self.chunk = m, chunk
        block = torch.stack([torch.randperm(m, generator=g)[:k] for _ in range(min(n, 4096))])      # (≤4096, k)
        shift = torch.arange(n)[:, None] * 7919                             # tiles differ; rows keep k distinct
        self.idx = (block.repeat((n + 4095) // 4096, 1)[:n] + shift) % m     # (N, k)
        self.vals = torch.rand(n, k, generator=g) + 0.01                     # (N, k)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for s in range(0, self.idx.shape[0], self.chunk):
            idx, vals = self.idx[s:s + self.chunk], self.vals[s:s + self.chunk]
            yield torch.zeros(idx.shape[0], self.m).scatter_(1, idx, vals)  # (chunk, m)


def bench_precompute(n: int, m: int, k: int, chunk: int, top_ns: list[int], dim: int) -> list[tuple]:
    codes = RandomCodes(n, m, k, chunk)
    labels = torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(1))
    rows = [("stream codes only", lambda: sum(c.shape[0] for c in codes))]
    rows += [(f"precompute top_n={t}", lambda t=t: st.explorer.precompute(codes, labels, top_n=t, chunk_size=chunk))
             for t in top_ns]
    emb = torch.randn(n, dim, generator=torch.Generator().manual_seed(2))
    rows.append((f"precompute top_n={top_ns[0]} + MS (D={dim})",
                 lambda: st.explorer.precompute(codes, labels, emb, top_n=top_ns[0], chunk_size=chunk)))
    return [(name, *timed(fn)[:2]) for name, fn in rows]


def bench_selection(n: int, m: int, d: int, k: int, chunk: int, repeats: int) -> list[float]:
    """Milliseconds per selection of a random latent in a LatentExplorer over m latents."""
    g = torch.Generator().manual_seed(3)
    codes = RandomCodes(n, m, k, chunk)
    labels = torch.randint(0, 10, (n,), generator=g)
    images = torch.randint(0, 256, (n, 64, 64, 3), dtype=torch.uint8, generator=g).numpy()
    stats = st.explorer.precompute(codes, labels, top_n=16, chunk_size=chunk,
                                   class_names=st.datasets.FASHION_MNIST_CLASSES)
    sae = st.TopKSAE(d, m, k, seed=0)
    coords = np.random.default_rng(0).normal(size=(m, 2)).astype(np.float32)   # where UMAP would put the rows
    explorer = st.explorer.LatentExplorer(sae, stats, images, labels, umap=coords)
    picks = torch.randint(0, m, (repeats,), generator=g).tolist()
    times = []
    for j in picks:
        t = time.perf_counter()
        explorer.latent.value = j
        times.append(1000 * (time.perf_counter() - t))
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="images in the precompute pass")
    ap.add_argument("--m", type=int, default=8192, help="latents in the precompute pass")
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--top-n", type=int, nargs="+", default=[16, 50])
    ap.add_argument("--dim", type=int, default=256, help="D, the embedding width for MS")
    ap.add_argument("--chunk", type=int, default=4096)
    ap.add_argument("--select-m", type=int, default=16384, help="latents in the selection benchmark")
    ap.add_argument("--select-n", type=int, default=20_000, help="images in the selection benchmark")
    ap.add_argument("--select-d", type=int, default=768, help="decoder width in the selection benchmark")
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()

    print(f"precompute: N={args.n:,}, m={args.m}, k={args.k}, chunk={args.chunk}, threads={torch.get_num_threads()}")
    print(f"{'row':34} {'wall s':>8} {'CPU s':>8}")
    for name, wall, cpu in bench_precompute(args.n, args.m, args.k, args.chunk, args.top_n, args.dim):
        print(f"{name:34} {wall:8.2f} {cpu:8.2f}")
    times = bench_selection(args.select_n, args.select_m, args.select_d, args.k, args.chunk, args.repeats)
    print(f"\nselect a latent: m={args.select_m}, d={args.select_d}, N={args.select_n:,} images of 64x64x3, "
          f"{args.repeats} random latents")
    print(f"{'ms per selection':34} median {statistics.median(times):.0f}, mean {statistics.mean(times):.0f}, "
          f"max {max(times):.0f}")


if __name__ == "__main__":
    main()
