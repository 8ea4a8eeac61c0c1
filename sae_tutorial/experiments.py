"""Experiments shared by the chapters and the command line: the paper's regularizer comparison.

compare_regularizers trains, on the same data with the same seeds and init:
    baseline           Top-k + AuxK
    off-support ℓ1     + λ_off R_off       (mask on, and its ablation with mask off)
    ℓ1/ℓ2              + λ_rat R_rat       (mask on, and its ablation with mask off)
and returns a tidy table, one row per (method, mask, seed).

lambdas(backbone) gives the λ_off, λ_rat to use: chosen on validation rows when a selection was saved, else
the defaults (st.selection).
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from . import _checks
from .metrics import dead_latents, k_robustness, l0
from .selection import lambdas  # noqa: F401  (st.experiments.lambdas)
from .sae import TopKSAE
from .synthetic import feature_recovery
from .train import TrainConfig, train

def regularizer_runs(lambda_off: float, lambda_ratio: float, masks: Sequence[bool] = (True, False)) -> list[dict]:
    """The (method, mask, TrainConfig overrides) grid of the paper's comparison."""
    runs = [{"method": "baseline", "mask": None, "overrides": {}}]
    for mask in masks:
        runs.append({"method": "off-support l1", "mask": mask,
                     "overrides": {"lambda_off": lambda_off, "reg_mask": mask}})
        runs.append({"method": "l1/l2", "mask": mask, "overrides": {"lambda_ratio": lambda_ratio, "reg_mask": mask}})
    return runs


@torch.no_grad()
def _evaluate_run(sae: TopKSAE, x_eval: Tensor, features: Tensor | None) -> dict[str, Any]:
    k = sae.k
    ks = sorted({max(1, k // 2), k, min(2 * k, sae.n_latents)})
    fvus = k_robustness(sae, x_eval, ks)
    codes = sae.encode(x_eval.to(sae.W_enc.device))
    row = {"fvu": fvus[k], "l0": l0(codes), "dead": int(dead_latents(codes).sum()),
           "fvu_k/2": fvus[ks[0]], "fvu_2k": fvus[ks[-1]]}
    if features is not None:
        row.update(feature_recovery(sae.W_dec, features))
    return row


def compare_regularizers(x_train: Tensor, x_eval: Tensor | None = None, *, n_latents: int, k: int,
                         lambda_off: float = 0.01, lambda_ratio: float = 0.003, config: TrainConfig | None = None,
                         seeds: Sequence[int] = (0,), masks: Sequence[bool] = (True, False),
                         features: Tensor | None = None, return_models: bool = False,
                         device: str | torch.device | None = None):
    """Train baseline / +off-support ℓ1 / +ℓ1/ℓ2 (each with and without the batch-active mask) on shared data and
    seeds, and evaluate each on `x_eval` (default: x_train).

    Returns a pandas DataFrame with columns method, mask, lambda, seed, fvu, l0, dead, fvu_k/2, fvu_2k, seconds,
    and recovered, mean_max_cos when the true `features` (F, d) of synthetic data are given. With
    return_models=True also returns {(method, mask, seed): trained SAE}. The SAEs train on `device` (default: CUDA
    when available).
    """
    import pandas as pd

    x_train = _checks.matrix(x_train, "x_train")
    x_eval = x_train if x_eval is None else _checks.matrix(x_eval, "x_eval", x_train.shape[1])
    base = config or TrainConfig()
    if base.regularized:
        raise ValueError("config must be the baseline's (lambda_off = lambda_ratio = 0); pass the λ separately")
    _checks.non_negative(lambda_off, "lambda_off")
    _checks.non_negative(lambda_ratio, "lambda_ratio")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    rows, models = [], {}
    for seed in seeds:
        for run in regularizer_runs(lambda_off, lambda_ratio, masks):
            sae = TopKSAE(x_train.shape[1], n_latents, k, seed=seed).to(device)
            cfg = dataclasses.replace(base, seed=seed, **run["overrides"])
            start = time.perf_counter()
            train(sae, x_train, cfg)
            seconds = time.perf_counter() - start
            lam = run["overrides"].get("lambda_off", run["overrides"].get("lambda_ratio", 0.0))
            rows.append({"method": run["method"], "mask": run["mask"], "lambda": lam, "seed": seed,
                         **_evaluate_run(sae, x_eval, features), "seconds": seconds})
            models[(run["method"], run["mask"], seed)] = sae
    table = pd.DataFrame(rows)
    return (table, models) if return_models else table
