"""Time the evaluation metrics at N=100k images, m=8192 latents, D=256, against the GEMM Eᵀ·Ã they cannot beat.

    python benchmarks/bench_metrics.py                       # CUDA if available, else CPU
    python benchmarks/bench_metrics.py --n 20000 --device cpu

Activations are Top-k of random (k=64 of m per image, positive values), streamed as dense (4096, m) float32
chunks, the way `st.metrics` reads an (N, m) matrix. Rows:
    GEMM Eᵀ·Ã            Σ_chunks e_chunkᵀ @ a_chunk in float32, the (D×N) @ (N×m) product behind MS (reference)
    monosemanticity      st.metrics.monosemanticity(acts, E)
    class_purity         st.metrics.class_purity(acts, labels, top_n=50), binary
    purity_chance        st.metrics.purity_chance(labels, 50)
    evaluate             st.metrics.evaluate(TopKSAE(D, m, k), X, labels): every metric, one pass over X (N, D)
Printed: wall and process CPU seconds, the wall-time ratio to the GEMM, and the extra peak memory over the resident
inputs (CPU: the process's peak RSS, reset before each row; CUDA: peak allocated). Nothing is asserted.
"""
from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import torch

import sae_tutorial as st


def _status_bytes(field: str) -> int:
    return 1024 * int(re.search(rf"^{field}:\s+(\d+)", Path("/proc/self/status").read_text(), re.M).group(1))


def measure(fn, device: torch.device) -> tuple[float, float, float, object]:
    """(wall seconds, CPU seconds of this process, extra peak bytes, result) of fn()."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")              # reset the peak-RSS mark (VmHWM)
        base = _status_bytes("VmRSS")
    t, cpu = time.perf_counter(), time.process_time()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else _status_bytes("VmHWM")
    return seconds, cpu, max(peak - base, 0), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--m", type=int, default=8192)
    ap.add_argument("--dim", type=int, default=256, help="D, the embedding (and SAE input) width")
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--chunk", type=int, default=4096)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--skip-evaluate", action="store_true")
    args = ap.parse_args()
    dev = torch.device(args.device)
    N, m, D, k, B = args.n, args.m, args.dim, args.k, args.chunk
    g = torch.Generator(device=dev).manual_seed(0)

    def topk_random(b: int) -> torch.Tensor:                       # (b, m): k random latents per row, values > 0
        idx = torch.rand(b, m, device=dev, generator=g).topk(k, dim=1).indices
        return torch.zeros(b, m, device=dev).scatter_(1, idx, torch.rand(b, k, device=dev, generator=g) + 0.01)

    acts = [topk_random(min(B, N - s)) for s in range(0, N, B)]      # resident input, not timed
    E = torch.randn(N, D, device=dev, generator=g)
    labels = torch.randint(0, args.classes, (N,), device=dev, generator=g).cpu()

    def gemm() -> torch.Tensor:
        out, s = torch.zeros(D, m, device=dev), 0
        for a in acts:
            out += E[s:s + a.shape[0]].T @ a
            s += a.shape[0]
        return out

    rows = [("GEMM Eᵀ·Ã (fp32)", gemm),
            ("monosemanticity", lambda: st.metrics.monosemanticity(acts, E, chunk_size=B)),
            ("class_purity", lambda: st.metrics.class_purity(acts, labels, top_n=50, chunk_size=B)),
            ("purity_chance", lambda: st.metrics.purity_chance(labels, 50))]
    results = [(name, *measure(fn, dev)) for name, fn in rows]
    if not args.skip_evaluate:
        del acts
        sae = st.TopKSAE(D, m, k, seed=0).to(dev)
        X = E                                                       # the SAE's input doubles as MS's space
        results.append(("evaluate (all metrics)",
                        *measure(lambda: st.metrics.evaluate(sae, X, labels=labels, chunk_size=B), dev)))

    t_gemm = results[0][1]
    print(f"N={N}, m={m}, D={D}, k={k}, chunk={B}, device={dev}, threads={torch.get_num_threads()}")
    print(f"{'row':24} {'wall s':>8} {'CPU s':>8} {'x GEMM':>7} {'peak extra MiB':>15}")
    for name, seconds, cpu, peak, _ in results:
        print(f"{name:24} {seconds:8.2f} {cpu:8.2f} {seconds / t_gemm:7.2f} {peak / 2**20:15.0f}")
    print(f"for scale: D·m float64 = {D * m * 8 / 2**20:.0f} MiB, chunk·m float32 = {B * m * 4 / 2**20:.0f} MiB")
    if not args.skip_evaluate:
        report = results[-1][4]
        print("evaluate:", {key: round(v, 4) if isinstance(v, float) else v for key, v in report.items()})


if __name__ == "__main__":
    main()
