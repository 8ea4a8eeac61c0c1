"""The paper's experimental grid as resumable cells: plan, train, evaluate, tabulate.

    cell = (backbone, dataset, k, method, mask, seed)        method ∈ {baseline, off-support l1, l1/l2} ∪ variants
    per (backbone, dataset, k, seed): baseline + each regularizer with the mask on and off  → 5 cells,
    plus one cell per established variant of `GridSpec.variants` (VARIANT_MODELS: Multi-TopK, Matryoshka), trained
    with the baseline's settings, as references for the k-robustness and truncated-probe comparisons

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
from .sae import MatryoshkaSAE, MultiTopKSAE, TopKSAE
from .train import TrainConfig, checks_without_improvement, held_out_fvu, train


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
    main_k: int | None = None                                  # the k that gets `main_seeds` (more seeds)
    main_seeds: tuple[int, ...] = ()                           # seeds at main_k (default: seeds)
    validation: float = 0.0                                    # training rows held out (plateau stop, λ choice)
    sweep: dict[str, tuple[float, ...]] = field(default_factory=dict)  # λ swept per TrainConfig field, at main_k
    sweep_seeds: tuple[int, ...] = (0,)
    front_ks: tuple[int, ...] = ()                             # the baseline's k-front (seed sweep_seeds[0])
    cross_model: bool = False                                  # also score MS in the next backbone's space
    ablation_ks: tuple[int, ...] | None = None                 # ks with the mask-off ablation (None: every k)
    backbone_ks: dict[str, tuple[int, ...]] = field(default_factory=dict)  # ks of a backbone (default: ks)
    variants: tuple[str, ...] = ()                             # established methods beside them (VARIANT_MODELS)
    variant_seeds: tuple[int, ...] = ()                        # their seeds (default: seeds_at(k))

    def seeds_at(self, k: int) -> tuple[int, ...]:
        return self.main_seeds if k == self.main_k and self.main_seeds else self.seeds

    def masks_at(self, k: int) -> tuple[bool, ...]:
        return self.masks if self.ablation_ks is None or k in self.ablation_ks else tuple(m for m in self.masks if m)

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


# The established fixed-k variants a grid can train beside the paper's methods (GridSpec.variants): the same
# Top-k inference, another training loss (Multi-TopK: L(k) + L(4k)/8; Matryoshka: nested prefixes).
VARIANT_MODELS: dict[str, type[TopKSAE]] = {"multi-topk": MultiTopKSAE, "matryoshka": MatryoshkaSAE}
PAPER_METHODS = ("baseline", "off-support l1", "l1/l2")

# The plateau criterion of the embedded grid (TrainConfig.val_every, patience, min_delta): every 25 steps the FVU of
# the held-out training rows is measured, and training ends after 4 checks in a row (100 steps, 102,400 samples)
# that do not improve on the best by 2 %, or after EPOCH_CAP passes over the data.
PLATEAU = dict(val_every=25, patience=4, min_delta=0.02)
EPOCH_CAP = 12

PRESETS: dict[str, GridSpec] = {
    # Two backbones, like the paper's three: an ImageNet model that never saw the evaluation labels (the primary
    # one) and the CNN trained on Fashion-MNIST's own labels (the circular control). Training stops on a plateau of
    # the held-out FVU (PLATEAU) or at EPOCH_CAP; λ is chosen on held-out training rows (st.selection); MS is also
    # scored in the other backbone's space; the probes are scored on 5,000 test images. A CPU budget: a step on the
    # 1280-d ImageNet features costs about 7x one on the 128-d CNN's, so the primary backbone is trained at the
    # main k only (with the k-front of the baseline around it) and the control at every k. Multi-TopK and
    # Matryoshka, the references of chapter 6's k-robustness comparison, get three seeds at every k.
    # 256 latents: what 54,000 training rows of a ten-class data set support. At 1,024, most latents stay dead
    # (baseline at k = 8 on the CNN: 72 % dead on the test split after 3 epochs, 54 % after 12); at 256, at most
    # 10 % dead at every k the claims are judged at, on both backbones. The k-front's k = 4 on the CNN stays near
    # 30 % after the 12-epoch cap, still falling (chapter 4 plots why).
    "embedded": GridSpec(
        name="embedded", backbones=("efficientnet-lite0", "embedded"), datasets=(("fashion-mnist", "train", "test"),),
        ks=(8, 16, 32), seeds=(0, 1, 2), main_k=16, main_seeds=(0, 1, 2, 3, 4), ablation_ks=(16,),
        n_latents=256, lambda_off=0.01, lambda_ratio=0.003,
        validation=0.1, sweep={"lambda_off": (0.0003, 0.001, 0.003, 0.01),
                               "lambda_ratio": (0.0003, 0.001, 0.003, 0.01)},
        front_ks=(4, 8, 16, 32), cross_model=True,
        train=dict(batch_size=1024, epochs=EPOCH_CAP, lr=2e-3, warmup_steps=50, dead_after=5_000, **PLATEAU),
        evaluate=dict(top_n=50, probe_ns=(1, 2, 4, 8), sample_size=10_000, probe_train_frac=0.5,
                      dense_probe=False, cknna_samples=512),
        backbone_ks={"efficientnet-lite0": (16,)}, variants=tuple(VARIANT_MODELS), variant_seeds=(0, 1, 2),
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
    def lam(self) -> float:
        """The cell's regularizer weight (0 for the baseline)."""
        o = dict(self.overrides)
        return float(o.get("lambda_off") or o.get("lambda_ratio") or 0.0)

    @property
    def key(self) -> str:
        mask = "" if self.mask is None else ("_mask" if self.mask else "_nomask")
        method = self.method.replace("/", "-").replace(" ", "-")
        lam = f"_lam{self.lam:g}" if self.lam else ""
        return f"{self.backbone}_{self.dataset}_k{self.k}_{method}{mask}{lam}_s{self.seed}".replace(":", "-")

    def describe(self) -> dict[str, Any]:
        return {"backbone": self.backbone, "dataset": self.dataset, "k": self.k, "method": self.method,
                "mask": self.mask, "seed": self.seed, "cell": self.key}


def plan(spec: GridSpec, chosen: dict[str, dict[str, float]] | None = None) -> list[Cell]:
    """All cells of the grid, in a fixed order: per backbone, data set, k and seed (`spec.seeds_at(k)`), the
    baseline and each regularizer with the mask on and (at `spec.ablation_ks`) off, at λ = chosen[backbone]
    (TrainConfig field names, from the selection stage) or the spec's λ, then each of `spec.variants` (at the
    seeds of `spec.variant_seeds` only, when given)."""
    unknown = sorted(set(spec.variants) - set(VARIANT_MODELS))
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown} in grid {spec.name!r}: choose from {sorted(VARIANT_MODELS)}")
    cells = []
    for b in spec.backbones:
        lam = (chosen or {}).get(b, {})
        lam_off, lam_ratio = lam.get("lambda_off", spec.lambda_off), lam.get("lambda_ratio", spec.lambda_ratio)
        for ds, tr, ev in spec.datasets:
            for k in spec.backbone_ks.get(b, spec.ks):
                for seed in spec.seeds_at(k):
                    variants = spec.variants if seed in (spec.variant_seeds or spec.seeds_at(k)) else ()
                    runs = regularizer_runs(lam_off, lam_ratio, spec.masks_at(k)) + [
                        {"method": v, "mask": None, "overrides": {}} for v in variants]
                    cells += [Cell(b, ds, tr, ev, k, run["method"], run["mask"], seed,
                                   tuple(sorted(run["overrides"].items()))) for run in runs]
    return cells


def plan_selection(spec: GridSpec) -> list[Cell]:
    """The cells that come before the grid: the λ sweep (per backbone and data set, at main_k and each of
    sweep_seeds, the baseline and each regularizer with the mask on at every swept λ) and the baseline's k-front
    (front_ks, first sweep seed). Cells equal to grid cells share their folders, so none is trained twice."""
    cells: dict[str, Cell] = {}
    methods = {"lambda_off": "off-support l1", "lambda_ratio": "l1/l2"}
    for b in spec.backbones:
        for ds, tr, ev in spec.datasets:
            for seed in spec.sweep_seeds if spec.sweep else ():
                cells.setdefault(Cell(b, ds, tr, ev, spec.main_k, "baseline", None, seed, ()).key,
                                 Cell(b, ds, tr, ev, spec.main_k, "baseline", None, seed, ()))
                for name, values in spec.sweep.items():
                    for lam in values:
                        c = Cell(b, ds, tr, ev, spec.main_k, methods[name], True, seed,
                                 tuple(sorted({name: lam, "reg_mask": True}.items())))
                        cells.setdefault(c.key, c)
            for k in spec.front_ks:
                c = Cell(b, ds, tr, ev, k, "baseline", None, spec.sweep_seeds[0], ())
                cells.setdefault(c.key, c)
    return list(cells.values())


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
def cross_backbone(spec: GridSpec, backbone: str) -> str | None:
    """The backbone whose space scores a cell's cross-model MS: the next one of spec.backbones (cyclically)."""
    if not spec.cross_model or len(spec.backbones) < 2:
        return None
    i = spec.backbones.index(backbone)
    return spec.backbones[(i + 1) % len(spec.backbones)]


def run_cell(cell: Cell, spec: GridSpec, out: Path, data_fn: Callable = load_split, threads: int | None = None,
             progress: bool = False) -> dict[str, Any]:
    """Train and evaluate one cell (or read its finished report).

    With spec.validation > 0 a seeded fraction of the training rows is held out (selection.validation_split):
    training stops on their FVU (TrainConfig.patience) and the report carries it as val_fvu, the number the λ
    choice reads. The test metrics come from the evaluation split; with spec.cross_model MS is also scored in the
    embedding space of another backbone on the same images (ms_cross_*, `cross_backbone`).
    """
    from .metrics import evaluate, method_card
    from .metrics.report import L2_NORMALISED
    from .selection import validation_split

    cdir = out / "cells" / cell.key
    report_path = cdir / "report.json"
    if report_path.exists():
        return json.loads(report_path.read_text())
    if threads:
        torch.set_num_threads(threads)
    options = spec.data_options.get(cell.dataset, {})
    x_tr, _, _ = data_fn(cell.backbone, cell.dataset, cell.train_split, spec.limit, **options)
    x_ev, y_ev, _ = data_fn(cell.backbone, cell.dataset, cell.eval_split, spec.limit, **options)
    x_val = None
    if spec.validation:
        fit, val = validation_split(len(x_tr), spec.validation)
        x_tr, x_val = x_tr[fit], x_tr[val]
    other = cross_backbone(spec, cell.backbone)
    e_cross = None if other is None else data_fn(other, cell.dataset, cell.eval_split, spec.limit, **options)[0]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sae = VARIANT_MODELS.get(cell.method, TopKSAE)(x_tr.shape[1], spec.n_latents, cell.k, seed=cell.seed).to(device)
    cfg = TrainConfig(**{**spec.train, "seed": cell.seed, "progress": progress, **dict(cell.overrides)})
    start = time.perf_counter()
    hist = train(sae, x_tr.to(device), cfg, val_data=x_val)
    seconds = time.perf_counter() - start
    report = evaluate(sae, x_ev, labels=y_ev, cross_embeddings=e_cross, **spec.evaluate)
    if x_val is not None:
        report["val_fvu"] = held_out_fvu(sae, x_val)
    cdir.mkdir(parents=True, exist_ok=True)
    sae.save(cdir / "sae.safetensors")
    provenance = {"source_model": cell.backbone, "layer": "image embedding",
                  "pooling": "the backbone's (see st.backbones)", "dataset": cell.dataset,
                  "split": f"train: {cell.train_split}, eval: {cell.eval_split}",
                  "preprocessing": L2_NORMALISED, "train_config": cfg,
                  "name": cell.key, "steps": len(hist["step"])}
    method_card(sae, report, provenance, cdir)
    curves = {key: hist[key] for key in ("step", "fvu", "dead_frac", "val_step", "val_fvu") if key in hist}
    atomic_write(cdir / "history.json", lambda tmp: tmp.write_text(json.dumps(curves, default=float)))
    plateau = cfg.patience is not None and checks_without_improvement(hist["val_fvu"], cfg.min_delta) >= cfg.patience
    row = {**cell.describe(), "lambda": cell.lam, "steps": len(hist["step"]), "epochs": _epochs(hist, cfg, len(x_tr)),
           "plateau": plateau,
           "cross_space": other, **report, "train_seconds": seconds}
    atomic_write(report_path, lambda tmp: tmp.write_text(json.dumps(row, indent=1, default=float)))
    return row


def _epochs(hist: dict[str, list], cfg: TrainConfig, rows: int) -> float:
    """Passes over the training rows that training made (it may stop early on the held-out FVU)."""
    return len(hist["step"]) * cfg.batch_size / rows


def _run_cell_job(args: tuple) -> dict[str, Any]:
    return run_cell(*args)


# ---------------------------------------------------------------- the grid
def _run_cells(cells: list[Cell], spec: GridSpec, out: Path, jobs: int, data_fn: Callable, bar) -> list[dict]:
    """Run the cells not yet done (in `jobs` processes, once every split they read is cached, so that workers
    never race to build a cache) and return every cell's report, in order."""
    todo = [c for c in cells if not (out / "cells" / c.key / "report.json").exists()]
    bar.total += len(cells)
    bar.update(len(cells) - len(todo))
    if jobs == 1 or len(todo) <= 1:
        for cell in todo:
            run_cell(cell, spec, out, data_fn)
            bar.update(1)
        return _reports(cells, out)
    for backbone, dataset, split in sorted({(b, c.dataset, s) for c in todo for s in (c.train_split, c.eval_split)
                                            for b in (c.backbone, cross_backbone(spec, c.backbone)) if b}):
        data_fn(backbone, dataset, split, spec.limit, **spec.data_options.get(dataset, {}))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    ctx = torch.multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
        for _ in pool.map(_run_cell_job, [(c, spec, out, data_fn, threads) for c in todo]):
            bar.update(1)
    return _reports(cells, out)


def _reports(cells: list[Cell], out: Path) -> list[dict]:
    return [json.loads((out / "cells" / c.key / "report.json").read_text()) for c in cells]


def select(spec: GridSpec, rows: list[dict]) -> dict[str, dict[str, Any]]:
    """λ per backbone from the sweep's VALIDATION FVU (selection.choose_lambdas), as
    {backbone: {"lambda_off", "lambda_ratio", "selection": choose_lambdas' record}}; without a sweep, the spec's λ."""
    from .selection import REGULARIZERS, choose_lambdas

    fixed = {"lambda_off": spec.lambda_off, "lambda_ratio": spec.lambda_ratio}
    if not spec.sweep:
        return {b: dict(fixed) for b in spec.backbones}
    sweep = [{**r, "fvu": r["val_fvu"]} for r in rows if r["k"] == spec.main_k and r["seed"] in spec.sweep_seeds]
    choice = choose_lambdas(sweep)
    return {b: {**fixed, **{REGULARIZERS[m]: c["lambda"] for m, c in choice.get(b, {}).items()},
                "selection": choice.get(b, {})} for b in spec.backbones}


def _write_table(out: Path, name: str, rows: list[dict]):
    import pandas as pd

    table = pd.DataFrame(rows)
    atomic_write(out / f"{name}.csv", lambda tmp: table.to_csv(tmp, index=False))
    atomic_write(out / f"{name}.json", lambda tmp: tmp.write_text(json.dumps(rows, indent=1, default=float)))
    return table


def run_grid(spec: GridSpec, out: str | Path, *, jobs: int = 1, data_fn: Callable = load_split,
             progress: bool = True):
    """Run every cell not yet done (in `jobs` processes), then write the tables into `out`.

    Stages: (1) the λ sweep and the baseline's k-front (`plan_selection`); (2) λ per backbone, chosen on the
    validation rows (`select`, written to out/lambdas.json); (3) the grid at those λ (`plan`). Tables:
    results.csv/.json (the grid, one row per cell in plan order) and, when stage 1 has cells, fronts.csv/.json
    (its rows: test metrics, and val_fvu). Returns the results as a pandas DataFrame.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    jobs = _checks.positive_int(jobs, "jobs")
    if spec.sweep and spec.main_k is None:
        raise ValueError(f"grid {spec.name!r} sweeps λ but has no main_k to sweep it at")
    if data_fn is load_split:
        spec.check_data_options()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "spec.json", lambda tmp: tmp.write_text(json.dumps(dataclasses.asdict(spec), indent=1)))
    bar = tqdm(total=0, desc=f"grid {spec.name}", disable=not progress)
    front = _run_cells(plan_selection(spec), spec, out, jobs, data_fn, bar)
    chosen = select(spec, front)
    atomic_write(out / "lambdas.json", lambda tmp: tmp.write_text(json.dumps(chosen, indent=1, default=float)))
    rows = _run_cells(plan(spec, chosen), spec, out, jobs, data_fn, bar)
    bar.close()
    if front:
        _write_table(out, "fronts", front)
    return _write_table(out, "results", rows)


# ---------------------------------------------------------------- the plan and its cost
# Rows per split and embedding width of the presets' data (published sizes), for planning without the data.
DATASET_ROWS = {"imagenet-1k": {"train": 1_281_167, "validation": 50_000},
                "open-images-v7": {"train": 1_743_042, "validation": 41_620},
                "fashion-mnist": {"train": 60_000, "test": 10_000}}
EMBED_DIMS = {"clip-vit-l-14": 768, "siglip2": 1152, "vit-l-16": 1024, "embedded": 128}


def measure_step(d: int, m: int, k: int, batch_size: int, overrides: dict[str, Any], steps: int = 3,
                 model: type[TopKSAE] = TopKSAE) -> dict[str, float]:
    """One cell kind's training step (its `model` class) on this machine's device (bf16 autocast on CUDA), with
    the library's own step (train.loss_terms + optimizer_step), timed over `steps` steps after one warm-up; and the
    encoder GEMM (B×d @ d×m) timed the same way, the yardstick of benchmarks/bench_train.py.

    Returns {"samples_per_s", "step_s", "gemm_s", "step_per_gemm"}.
    """
    from .train import loss_terms, make_optimizer, optimizer_step

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    sae = model(d, m, k, seed=0).to(device)
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
            measured[kind] = measure_step(d, spec.n_latents, cell.k, batch, dict(cell.overrides),
                                          model=VARIANT_MODELS.get(cell.method, TopKSAE))
        speed = measured[kind]["samples_per_s"]
        rows.append({**cell.describe(), "train_rows": n, "d": d, "steps": steps, "samples_per_s": speed,
                     "hours": steps * batch / speed / 3600, "step_per_gemm": measured[kind]["step_per_gemm"]})
    return pd.DataFrame(rows)


def load_results(out: str | Path, name: str = "results"):
    """A table a finished grid wrote (pandas DataFrame): "results" (the grid) or "fronts" (the λ sweep and the
    baseline's k-front)."""
    import pandas as pd

    path = Path(out) / f"{name}.csv"
    if not path.exists():
        raise FileNotFoundError(f"no {name} table at {path}: run the grid first")
    return pd.read_csv(path)


def reproduce(preset: str = "embedded", out: str | Path | None = None, *, jobs: int = 1,
              progress: bool = True, data_options: dict[str, dict[str, Any]] | None = None):
    """Run a preset grid into `out` (default: $SAE_TUTORIAL_CACHE/reproduce/<preset>-<spec hash>); cells already
    done are skipped, so a second call returns the cached table at once. `data_options`: see GridSpec."""
    from .datasets import cache_dir

    _checks.choice(preset, "preset", tuple(PRESETS))
    spec = PRESETS[preset].with_data_options(data_options or {})
    out = Path(out) if out is not None else cache_dir() / "reproduce" / f"{preset}-{spec.digest()}"
    table = run_grid(spec, out, jobs=jobs, progress=progress)
    publish(out)
    return table, out


def publish(out: str | Path) -> dict[str, Path]:
    """Write what a finished grid in `out` concludes: the controlled verdicts (verdicts.csv/.md, claims.csv,
    per_k.csv, variants.csv: st.verdicts.write_verdicts) beside results.csv, and its λ choice into the one place
    every chapter reads (st.selection.lambdas_path(), merged by backbone). Returns the paths written."""
    from .selection import read_lambdas, save_lambdas
    from .verdicts import write_verdicts

    out = Path(out)
    table = load_results(out)
    fronts = load_results(out, "fronts") if (out / "fronts.csv").exists() else None
    names = ("verdicts", "verdicts_md", "claims", "per_k", "variants")
    paths = dict(zip(names, write_verdicts(table, fronts, out)))
    chosen = json.loads((out / "lambdas.json").read_text())
    selected = {b: c["selection"] for b, c in chosen.items() if c.get("selection")}
    if selected:
        saved = (read_lambdas() or {}).get("backbones", {})
        paths["lambdas"] = save_lambdas({**saved, **selected}, notes=f"chosen by the grid in {out}")
    return paths
