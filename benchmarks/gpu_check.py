"""The checks for the day a GPU is lent (`make gpu-check`): one script, ≤ 8 minutes on one CUDA GPU, one table.

    python benchmarks/gpu_check.py [--out DIR]

Runs, each in its own process with a time limit, and tabulates:
    train     every variant's training step in bf16 at d=1024, m=16384, k=64, B=4096 (bench_train.py --size gpu):
              samples/s and the ratio to the encoder GEMM measured in the same process
    extract   ViT-L/16 (random weights, offline) at batch 256: st.embed against the bare forward (bench_embed.py)
    metrics   MS, purity and evaluate at N=100k, m=8192 (bench_metrics.py)
    chapter1  chapter 1 executed in colab mode on the GPU, with its wall time
Writes DIR/gpu-check.md (the table and each step's output) and DIR/*.json. Without CUDA it refuses (exit 2): its
numbers only mean something on a GPU. Nothing is asserted; a failed step is reported and the others still run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def steps(out: Path) -> dict[str, tuple[list[str], int]]:
    """name: (command, time limit in seconds). The limits add up to under 8 minutes."""
    py = sys.executable
    return {
        "train": ([py, str(HERE / "bench_train.py"), "--size", "gpu", "--reps", "5", "--json",
                   str(out / "train.json")], 200),
        "extract": ([py, str(HERE / "bench_embed.py"), "--device", "cuda", "--backbone", "vit-l-16",
                     "--batch-size", "256", "--n", "4096", "--repeat", "2"], 100),
        "metrics": ([py, str(HERE / "bench_metrics.py"), "--n", "100000", "--device", "cuda"], 60),
        "chapter1": ([py, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
                      "--ExecutePreprocessor.timeout=150", "--output-dir", str(out),
                      str(ROOT / "notebooks" / "01_topk_basics.ipynb")], 110),
    }


def train_table(path: Path) -> list[str]:
    if not path.is_file():
        return []
    rows = json.loads(path.read_text())
    lines = ["| variant (bf16, d=1024, m=16384, k=64, B=4096) | step ms | × GEMM | samples/s |", "|---|---|---|---|"]
    lines += [f"| {r['row']} | {1e3 * r['step_s']:.2f} | {r['step_s'] / r['gemm_s']:.2f} | {r['samples_s']:,.0f} |"
              for r in rows]
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "_build" / "gpu-check"))
    ap.add_argument("--only", nargs="*", help="run only these steps")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device here; these checks only mean something on a GPU (nothing was run)")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "SAE_TUTORIAL_MODE": "colab", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    report = [f"# gpu-check: {torch.cuda.get_device_name()}, torch {torch.__version__}", "",
              "| step | result | seconds |", "|---|---|---|"]
    logs = []
    for name, (cmd, limit) in steps(args.out).items():
        if args.only and name not in args.only:
            continue
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, env=env, cwd=ROOT)
            result, output = ("ok" if proc.returncode == 0 else f"exit {proc.returncode}"), proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as e:
            result, output = f"timed out after {limit} s", (e.stdout or b"").decode(errors="replace")
        seconds = time.perf_counter() - start
        report.append(f"| {name} | {result} | {seconds:.0f} |")
        logs += ["", f"## {name}", "", "```", output.strip()[-6000:], "```"]
        print(f"{name}: {result} in {seconds:.0f} s", flush=True)
    text = "\n".join(report + [""] + train_table(args.out / "train.json") + logs) + "\n"
    (args.out / "gpu-check.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
