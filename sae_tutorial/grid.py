"""The paper's experimental grid as resumable cells: plan, train, evaluate, tabulate.

    cell = (backbone, dataset, k, method, mask, seed)        method ∈ {baseline, off-support l1, l1/l2}
    per (backbone, dataset, k, seed): baseline + each regularizer with the mask on and off  → 5 cells

Each cell lives in out/cells/<key>/ : sae.safetensors, report.json (written last: its presence marks the cell
done) and a method card. A killed run continues where it stopped; the results table (out/results.csv and .json)
is rebuilt from the reports in plan order, so it equals the table of an uninterrupted run.

Presets: `embedded` (Fashion-MNIST through the embedded CNN, k ∈ {8, 16, 32}, 3 seeds: CPU minutes) and `paper`
(CLIP ViT-L/14, SigLIP2, ViT-L/16 × ImageNet-1K, Open Images V7, k ∈ {32, 64, 128}: GPU days).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _checks
from .checkpoint import atomic_write
from .experiments import regularizer_runs
from .sae import TopKSAE
from .train import TrainConfig, train


@dataclass(frozen=True)
class GridSpec:
    """Everything that defines a grid; its hash names the cache of `reproduce`."""

    name: str
    backbones: tuple[str, ...]
    datasets: tuple[tuple[str, str, str], ...]   # (dataset, train split, evaluation split)
    ks: tuple[int, ...]
    seeds: tuple[int, ...]
    n_latents: int
    lambda_off: float
    lambda_ratio: float
    train: dict[str, Any] = field(default_factory=dict)       # TrainConfig fields shared by every cell
    evaluate: dict[str, Any] = field(default_factory=dict)    # st.metrics.evaluate options
    masks: tuple[bool, ...] = (True, False)
    limit: int | None = None                                   # rows per split (None: all)
    data_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # st.datasets.get options per data set

    def with_data_options(self, options: dict[str, dict[str, Any]]) -> "GridSpec":
        """This grid reading its data sets with `options`, e.g. {"open-images-v7": {"repo": ..., "classes": ...}}."""
        names = {ds for ds, _, _ in self.datasets}
        unknown = sorted(set(options) - names)
        if unknown:
            raise ValueError(f"data_options for {unknown}, which grid {self.name!r} does not use "
                             f"(it uses {sorted(names)})")
        merged = {ds: {**self.data_options.get(ds, {}), **opts} for ds, opts in options.items()}
        return dataclasses.replace(self, data_options={**self.data_options, **merged})

    def check_data_options(self) -> None:
        """Fail before any training when a registry data set lacks an option it cannot do without."""
        from .datasets import HUB

        for ds, _, _ in self.datasets:
            if ds in HUB and HUB[ds]["repo"] is None and "repo" not in self.data_options.get(ds, {}):
                raise ValueError(f"{ds} has no official Hugging Face release: give the grid its copy with "
                                 f"data_options={{{ds!r}: {{'repo': ..., 'classes': ...}}}} (command line: "
                                 f"--dataset-option {ds}.repo=<dataset id or folder> "
                                 f"--dataset-option {ds}.classes=<id,name CSV>)")

    def digest(self) -> str:
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


PRESETS: dict[str, GridSpec] = {
    "embedded": GridSpec(
        name="embedded", backbones=("embedded",), datasets=(("fashion-mnist", "train", "test"),),
        ks=(8, 16, 32), seeds=(0, 1, 2), n_latents=1024, lambda_off=0.01, lambda_ratio=0.003,
        train=dict(batch_size=512, epochs=3, lr=1e-3, warmup_steps=50, dead_after=60_000),
        evaluate=dict(top_n=50, probe_ns=(1, 2, 4, 8), sample_size=3000, cknna_samples=512),
    ),
    "paper": GridSpec(
        name="paper", backbones=("clip-vit-l-14", "siglip2", "vit-l-16"),
        datasets=(("imagenet-1k", "train", "validation"), ("open-images-v7", "train", "validation")),
        ks=(32, 64, 128), seeds=(0,), n_latents=8192, lambda_off=0.01, lambda_ratio=0.003,
        train=dict(batch_size=2048, epochs=50, lr=1e-4, dead_after=10_000_000),
        evaluate=dict(top_n=50, probe_ns=(1, 2, 4, 8, 16, 32), sample_size=20_000),
    ),
}


@dataclass(frozen=True)
class Cell:
    backbone: str
    dataset: str
    train_split: str
    eval_split: str
    k: int
    method: str
    mask: bool | None
    seed: int
    overrides: tuple[tuple[str, Any], ...]      # TrainConfig fields of the method

    @property
    def key(self) -> str:
        mask = "" if self.mask is None else ("_mask" if self.mask else "_nomask")
        method = self.method.replace("/", "-").replace(" ", "-")
        return f"{self.backbone}_{self.dataset}_k{self.k}_{method}{mask}_s{self.seed}".replace(":", "-")

    def describe(self) -> dict[str, Any]:
        return {"backbone": self.backbone, "dataset": self.dataset, "k": self.k, "method": self.method,
                "mask": self.mask, "seed": self.seed, "cell": self.key}


def plan(spec: GridSpec) -> list[Cell]:
    """All cells of the grid, in a fixed order."""
    runs = regularizer_runs(spec.lambda_off, spec.lambda_ratio, spec.masks)
    return [Cell(b, ds, tr, ev, k, run["method"], run["mask"], seed, tuple(sorted(run["overrides"].items())))
            for b in spec.backbones for ds, tr, ev in spec.datasets for k in spec.ks for seed in spec.seeds
            for run in runs]


# ---------------------------------------------------------------- data
def load_split(backbone: str, dataset: str, split: str, limit: int | None = None, progress: bool = False,
               **dataset_options: Any) -> tuple[Tensor, Tensor, list[str]]:
    """(x, labels, classes) of a cached split, extracting it first when missing (`dataset_options` go to
    st.datasets.get). Embeddings are L2-normalised (the MonoLoss protocol); multi-label data give an (N, C) 0/1
    label matrix."""
    from .embed import embed, load_embeddings

    emb = load_embeddings(embed(backbone, dataset, split, limit=limit, progress=progress, **dataset_options))
    n = len(emb) if limit is None else min(limit, len(emb))
    return F.normalize(emb.x[:n].float(), dim=1), emb.label_tensor(n), emb.classes


# ---------------------------------------------------------------- one cell
def run_cell(cell: Cell, spec: GridSpec, out: Path, data_fn: Callable = load_split, threads: int | None = None,
             progress: bool = False) -> dict[str, Any]:
    """Train and evaluate one cell (or read its finished report)."""
    from .metrics import evaluate, method_card

    cdir = out / "cells" / cell.key
    report_path = cdir / "report.json"
    if report_path.exists():
        return json.loads(report_path.read_text())
    if threads:
        torch.set_num_threads(threads)
    options = spec.data_options.get(cell.dataset, {})
    x_tr, _, _ = data_fn(cell.backbone, cell.dataset, cell.train_split, spec.limit, **options)
    x_ev, y_ev, _ = data_fn(cell.backbone, cell.dataset, cell.eval_split, spec.limit, **options)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sae = TopKSAE(x_tr.shape[1], spec.n_latents, cell.k, seed=cell.seed).to(device)
    cfg = TrainConfig(**{**spec.train, "seed": cell.seed, "progress": progress, **dict(cell.overrides)})
    start = time.perf_counter()
    hist = train(sae, x_tr.to(device), cfg)
    seconds = time.perf_counter() - start
    report = evaluate(sae, x_ev, labels=y_ev, **spec.evaluate)
    cdir.mkdir(parents=True, exist_ok=True)
    sae.save(cdir / "sae.safetensors")
    provenance = {"source_model": cell.backbone, "layer": "image embedding (see st.backbones)",
                  "pooling": "backbone default (see st.backbones)", "dataset": cell.dataset,
                  "split": f"train: {cell.train_split}, eval: {cell.eval_split}",
                  "preprocessing": "backbone transform; embeddings L2-normalised", "train_config": cfg,
                  "name": cell.key, "steps": len(hist["step"])}
    method_card(sae, report, provenance, cdir)
    row = {**cell.describe(), "lambda": cfg.lambda_off or cfg.lambda_ratio, **report, "train_seconds": seconds}
    atomic_write(report_path, lambda tmp: tmp.write_text(json.dumps(row, indent=1, default=float)))
    return row


def _run_cell_job(args: tuple) -> dict[str, Any]:
    return run_cell(*args)


# ---------------------------------------------------------------- the grid
def run_grid(spec: GridSpec, out: str | Path, *, jobs: int = 1, data_fn: Callable = load_split,
             progress: bool = True):
    """Run every cell not yet done (in `jobs` processes), then write out/results.csv and results.json.

    Returns the results as a pandas DataFrame, one row per cell in plan order.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    out = Path(out)
    jobs = _checks.positive_int(jobs, "jobs")
    if data_fn is load_split:
        spec.check_data_options()
    cells = plan(spec)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "spec.json", lambda tmp: tmp.write_text(json.dumps(dataclasses.asdict(spec), indent=1)))
    todo = [c for c in cells if not (out / "cells" / c.key / "report.json").exists()]
    bar = tqdm(total=len(cells), initial=len(cells) - len(todo), desc=f"grid {spec.name}", disable=not progress)
    if jobs == 1 or len(todo) <= 1:
        for cell in todo:
            run_cell(cell, spec, out, data_fn)
            bar.update(1)
    else:
        for cell in todo[:1]:  # the first cell builds the embedding caches once, before workers race for them
            run_cell(cell, spec, out, data_fn)
            bar.update(1)
        threads = max(1, (os.cpu_count() or 1) // jobs)
        ctx = torch.multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
            for _ in pool.map(_run_cell_job, [(c, spec, out, data_fn, threads) for c in todo[1:]]):
                bar.update(1)
    bar.close()
    rows = [json.loads((out / "cells" / c.key / "report.json").read_text()) for c in cells]
    table = pd.DataFrame(rows)
    atomic_write(out / "results.csv", lambda tmp: table.to_csv(tmp, index=False))
    atomic_write(out / "results.json", lambda tmp: tmp.write_text(json.dumps(rows, indent=1, default=float)))
    return table


# ---------------------------------------------------------------- the plan and its cost
# Rows per split and embedding width of the presets' data (published sizes), for planning without the data.
DATASET_ROWS = {"imagenet-1k": {"train": 1_281_167, "validation": 50_000},
                "open-images-v7": {"train": 1_743_042, "validation": 41_620},
                "fashion-mnist": {"train": 60_000, "test": 10_000}}
EMBED_DIMS = {"clip-vit-l-14": 768, "siglip2": 1152, "vit-l-16": 1024, "embedded": 128}


def measure_step(d: int, m: int, k: int, batch_size: int, overrides: dict[str, Any], steps: int = 3) -> dict[str, float]:
    """One cell kind's training step on this machine's device (bf16 autocast on CUDA), with the library's own step
    (train.loss_terms + optimizer_step), timed over `steps` steps after one warm-up; and the encoder GEMM
    (B×d @ d×m) timed the same way, the yardstick of benchmarks/bench_train.py.

    Returns {"samples_per_s", "step_s", "gemm_s", "step_per_gemm"}.
    """
    from .train import loss_terms, make_optimizer, optimizer_step

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    sae = TopKSAE(d, m, k, seed=0).to(device)
    cfg = TrainConfig(batch_size=batch_size, progress=False, **overrides)
    opt = make_optimizer(sae, cfg, 1e-4)
    x = F.normalize(torch.randn(batch_size, d, device=device), dim=1)
    dead = torch.zeros(m, dtype=torch.bool, device=device)

    def step() -> None:
        with torch.autocast(**autocast):
            loss, _, _ = loss_terms(sae, x, cfg, dead, False, max(1, d // 2))
        optimizer_step(sae, opt, loss)

    def gemm() -> None:
        with torch.autocast(**autocast):
            F.linear(x, sae.W_enc.detach())

    def seconds(fn: Callable[[], None]) -> float:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / steps

    step_s, gemm_s = seconds(step), seconds(gemm)
    return {"samples_per_s": batch_size / step_s, "step_s": step_s, "gemm_s": gemm_s, "step_per_gemm": step_s / gemm_s}


def measure_throughput(d: int, m: int, k: int, batch_size: int, overrides: dict[str, Any], steps: int = 3) -> float:
    """Training samples/s of one cell kind on this machine's device (see `measure_step`)."""
    return measure_step(d, m, k, batch_size, overrides, steps)["samples_per_s"]


# Dense bf16 tensor-core peaks (TFLOP/s, without structured sparsity), from NVIDIA's data sheets.
GPU_BF16_TFLOPS = {"L4": 121.0, "A100": 312.0, "H100 SXM": 989.0}


def gpu_hours(steps: int, batch_size: int, d: int, m: int, step_per_gemm: float, tflops: float,
              gemm_efficiency: float = 0.6) -> float:
    """A floor on the hours of `steps` training steps on a GPU that has not been measured:

        hours = steps · step_per_gemm · 2·B·d·m / (tflops · 10¹² · gemm_efficiency) / 3600

    step_per_gemm is a step's time in units of its encoder GEMM, *measured* (measure_step); each GEMM-equivalent is
    priced at `gemm_efficiency` of the card's peak. Not a prediction: on a GPU the memory-bound parts of a step
    (Top-k, gathers, elementwise passes) and kernel launches weigh far more than on a CPU, so real steps are several
    times slower. A dry run on the GPU itself measures the real figure.
    """
    gemm_s = 2 * batch_size * d * m / (tflops * 1e12 * gemm_efficiency)
    return steps * step_per_gemm * gemm_s / 3600


def gpu_floors(costs, batch_size: int, n_latents: int):
    """`gpu_hours` of every cell of a `dry_run` table (rows) on each card of GPU_BF16_TFLOPS (columns)."""
    import pandas as pd

    return pd.DataFrame({card: [gpu_hours(r.steps, batch_size, r.d, n_latents, r.step_per_gemm, tflops)
                                for r in costs.itertuples()]
                         for card, tflops in GPU_BF16_TFLOPS.items()}, index=costs.index)


def dry_run(spec: GridSpec, throughput: dict[tuple, float | dict[str, float]] | None = None):
    """The plan with its estimated device-hours: one row per cell with its training steps, hours and
    `step_per_gemm` (see `gpu_hours`), computed from steps measured here or given as {(d, k, method, mask):
    samples/s or a `measure_step` dict} (a bare samples/s gives step_per_gemm NaN). Returns a DataFrame."""
    import pandas as pd

    batch = spec.train.get("batch_size", TrainConfig().batch_size)
    measured = {kind: v if isinstance(v, dict) else {"samples_per_s": v, "step_per_gemm": math.nan}
                for kind, v in (throughput or {}).items()}
    rows = []
    for cell in plan(spec):
        n = DATASET_ROWS.get(cell.dataset, {}).get(cell.train_split, spec.limit or 0)
        n = min(n, spec.limit) if spec.limit else n
        d = EMBED_DIMS.get(cell.backbone, 0)
        steps = spec.train.get("steps") or math.ceil(spec.train.get("epochs", 1.0) * (n // batch))
        kind = (d, cell.k, cell.method, cell.mask)
        if kind not in measured:
            measured[kind] = measure_step(d, spec.n_latents, cell.k, batch, dict(cell.overrides))
        speed = measured[kind]["samples_per_s"]
        rows.append({**cell.describe(), "train_rows": n, "d": d, "steps": steps, "samples_per_s": speed,
                     "hours": steps * batch / speed / 3600, "step_per_gemm": measured[kind]["step_per_gemm"]})
    return pd.DataFrame(rows)


def load_results(out: str | Path):
    """The results table a finished grid wrote (pandas DataFrame)."""
    import pandas as pd

    path = Path(out) / "results.csv"
    if not path.exists():
        raise FileNotFoundError(f"no results table at {path}: run the grid first")
    return pd.read_csv(path)


def reproduce(preset: str = "embedded", out: str | Path | None = None, *, jobs: int = 1,
              progress: bool = True, data_options: dict[str, dict[str, Any]] | None = None):
    """Run a preset grid into `out` (default: $SAE_TUTORIAL_CACHE/reproduce/<preset>-<spec hash>); cells already
    done are skipped, so a second call returns the cached table at once. `data_options`: see GridSpec."""
    from .datasets import cache_dir

    _checks.choice(preset, "preset", tuple(PRESETS))
    spec = PRESETS[preset].with_data_options(data_options or {})
    out = Path(out) if out is not None else cache_dir() / "reproduce" / f"{preset}-{spec.digest()}"
    return run_grid(spec, out, jobs=jobs, progress=progress), out
