"""Time one training step of each SAE variant, as a ratio to the encoder GEMM measured in the same process.

    python benchmarks/bench_train.py                 # sizes: small and large (d=768, m=12288, k=64, B=2048)
    python benchmarks/bench_train.py --size large --threads 1

Each row runs in its own subprocess (clean peak-memory reading) and measures, in that process: the encoder GEMM
(B×d @ d×m), the plain Top-k step and the row's step (medians). Printed: step time, ratio to the GEMM, ratio to the
plain Top-k step, samples/s, |A| (batch-active units, regularized rows), the mean L0 of the step (the adaptive
variants choose theirs; the Sparsemax SAE's is that of its random init on Gaussian data) and the step's peak extra
memory as a multiple of the B×m pre-activation tensor. On CUDA the step runs under bf16 autocast. Nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SIZES = {  # name: (d, m, k, B)
    "small": (128, 2048, 16, 512),
    "large": (768, 12288, 64, 2048),
    "gpu": (1024, 16384, 64, 4096),
}
ROWS = {  # name: (variant, TrainConfig overrides, extra setup)
    "topk": ("TopKSAE", {}, None),
    "topk-dense-autograd": ("TopKSAE", {}, "dense"),
    "topk+auxk(half dead)": ("TopKSAE", {}, "auxk"),
    "topk+off-l1": ("TopKSAE", {"lambda_off": 0.01}, None),
    "topk+l1/l2": ("TopKSAE", {"lambda_ratio": 0.01}, None),
    "topk+off-l1 |A|~m/8": ("TopKSAE", {"lambda_off": 0.01}, "narrow"),
    "topk+l1/l2 |A|~m/8": ("TopKSAE", {"lambda_ratio": 0.01}, "narrow"),
    "topk+l1/l2 no mask": ("TopKSAE", {"lambda_ratio": 0.01, "reg_mask": False}, None),
    "topk+auxk-residual": ("TopKSAE", {"auxk_norm": "residual"}, "auxk"),
    "batchtopk": ("BatchTopKSAE", {}, None),
    "multitopk": ("MultiTopKSAE", {}, None),
    "matryoshka": ("MatryoshkaSAE", {}, None),
    "relu": ("ReLUSAE", {}, None),
    "sparsemax": ("SparsemaxSAE", {}, None),               # the published model (arXiv:2604.14925)
    "sparsemax-act": ("SparsemaxActSAE", {}, None),
}


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(field)


def run_row(size: str, row: str, reps: int) -> dict:
    import torch

    import sae_tutorial as st
    from sae_tutorial.losses import fvu
    from sae_tutorial.train import loss_terms, make_optimizer, optimizer_step

    d, m, k, B = SIZES[size]
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = dev.type == "cuda"
    variant, overrides, setup = ROWS[row]

    def build(name: str, extra: str | None):
        cls = getattr(st, name)
        sae = (cls(d, m, k, seed=0) if cls.takes_k else cls(d, m, seed=0)).to(dev)
        if extra == "narrow":  # only m/8 latents can win Top-k, so |A| ≈ m/8
            with torch.no_grad():
                sae.b_enc[: m // 8] += 10.0
        sae.train()
        return sae

    x = torch.randn(B, d, device=dev)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def timed(fn, n):
        times = []
        for _ in range(n):
            sync()
            t = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    def stepper(name, cfg_over, extra):
        sae = build(name, extra)
        cfg = st.TrainConfig(batch_size=B, progress=False, **cfg_over)
        opt = make_optimizer(sae, cfg, 1e-4)
        dead = torch.zeros(m, dtype=torch.bool, device=dev)
        if extra == "auxk":
            dead[m // 2:] = True
        k_aux = d // 2

        def step():
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
                if extra == "dense":  # reference: plain autograd through the dense (B, m) pre-activations
                    out = sae(x, dense_grad=True)
                    loss = fvu(x, out.x_hat)
                else:
                    loss, _, out = loss_terms(sae, x, cfg, dead, extra == "auxk", k_aux)
            optimizer_step(sae, opt, loss)
            return out
        return sae, step

    W = torch.randn(m, d, device=dev)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
        gemm = timed(lambda: torch.nn.functional.linear(x, W), reps + 2)
    del W
    _, plain = stepper("TopKSAE", {}, None)
    plain()
    plain_t = timed(plain, reps)
    sae, step = stepper(variant, overrides, setup)
    out = step()  # warm-up: allocates Adam state
    out = step()
    active = int(torch.unique(out.indices).numel()) if out.indices is not None else None
    l0 = float(out.l0())
    del out
    if cuda:
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = _rss_kib("VmRSS") * 1024
        with open("/proc/self/clear_refs", "w") as f:  # reset the peak-RSS mark (VmHWM)
            f.write("5")
    step_t = timed(step, reps)
    peak = torch.cuda.max_memory_allocated() if cuda else _rss_kib("VmHWM") * 1024
    h_bytes = B * m * (2 if cuda else 4)
    return {"size": size, "row": row, "device": str(dev), "threads": torch.get_num_threads(), "gemm_s": gemm,
            "plain_s": plain_t, "step_s": step_t, "active": active, "l0": l0, "m": m, "samples_s": B / step_t,
            "peak_extra_x_h": max(peak - base, 0) / h_bytes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=[*SIZES, "both"], default="both")
    ap.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (sparsify's reference figure used 1)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", help="also write the rows to this JSON file")
    ap.add_argument("--one", nargs=2, metavar=("SIZE", "ROW"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.one:
        import torch
        torch.set_num_threads(args.threads)
        print(json.dumps(run_row(args.one[0], args.one[1], args.reps)))
        return

    import torch
    sizes = ["small", "large"] if args.size == "both" else [args.size]
    if args.size == "both" and torch.cuda.is_available():
        sizes.append("gpu")
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}  # big buffers go back to the OS when freed
    results = []
    header = (f"{'size':6} {'row':24} {'step ms':>9} {'x GEMM':>7} {'x plain':>8} {'samples/s':>10} "
              f"{'|A|/m':>6} {'L0':>7} {'peak/Bxm':>9}")
    print(header)
    print("-" * len(header))
    for size in sizes:
        for row in args.rows:
            cmd = [sys.executable, __file__, "--one", size, row, "--threads", str(args.threads),
                   "--reps", str(args.reps)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode:
                print(f"{size:6} {row:24} failed: {proc.stderr.strip().splitlines()[-1]}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            results.append(r)
            frac = f"{r['active'] / r['m']:.2f}" if r["active"] is not None else "-"
            print(f"{size:6} {row:24} {1e3 * r['step_s']:9.1f} {r['step_s'] / r['gemm_s']:7.2f} "
                  f"{r['step_s'] / r['plain_s']:8.2f} {r['samples_s']:10.0f} {frac:>6} {r['l0']:7.1f} "
                  f"{r['peak_extra_x_h']:9.2f}",
                  flush=True)
    if results:
        print(f"\ndevice: {results[0]['device']}, threads: {results[0]['threads']}; "
              "x GEMM = step / encoder GEMM (B×d @ d×m) timed in the same process.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
