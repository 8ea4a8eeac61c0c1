"""Controls for the per-latent scores (MS, purity): who is averaged, and against which chance level.

A mean over "alive" latents lets rare latents weigh as much as frequent ones, and a latent firing on 3 images
has a purity of at least 1/3 by construction. So each score is also reported over other sets. With
c_j = |{n : a_nj ≠ 0}| the number of evaluation rows latent j fires on, and n = top_n:

    dead      c_j = 0                          rare      1 ≤ c_j < n              frequent  c_j ≥ n

    alive mean      (1/|J|) Σ_{j ∈ J} s_j,  J = {j : s_j defined}           (ms_mean, purity)
    dead-as-zero    (1/m) Σ_j s_j,  undefined s_j counted as 0              (MonoLoss's mean)
    frequent mean   mean of s_j over {j frequent, s_j defined}

Purity's chance level depends on how many images a latent's top set T_j holds: r_j = |T_j| = min(c_j, n).
For r random images (drawn uniformly without replacement),

    chance(r) = E[max_c |{i ∈ R : c ∈ labels(i)}| / r],   |R| = r

is estimated from `n_draws` random orderings of the images: the first r images of a random ordering are a
uniform random r-subset, so one set of draws gives the whole curve r = 1..n (cumulative class counts along each
ordering). A latent's matched chance is chance(r_j) (NaN when dead); averaged alive, dead-as-zero and over
frequent latents, where r_j = n and the matched chance is the usual `purity_chance`.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _checks
from ._stream import labels_matrix


def frequent_latents(counts: Tensor, top_n: int) -> Tensor:
    """Bool (m,): latents firing on at least top_n rows, c_j ≥ top_n (counts: rows each latent fires on)."""
    return counts >= _checks.positive_int(top_n, "top_n")


def rare_latents(counts: Tensor, top_n: int) -> Tensor:
    """Bool (m,): latents that fire, but on fewer than top_n rows, 1 ≤ c_j < top_n."""
    return (counts >= 1) & ~frequent_latents(counts, top_n)


def controlled_means(scores: Tensor, counts: Tensor, top_n: int) -> dict[str, float]:
    """A per-latent score (m,) (NaN where undefined) averaged three ways (module docstring):
    {"alive": mean over defined, "dead_zero": mean over all m with NaN as 0, "frequent": mean over frequent}."""
    scores = scores.double().cpu()
    if scores.shape != counts.shape:
        raise ValueError(f"scores has shape {tuple(scores.shape)} but counts has {tuple(counts.shape)}")
    frequent = frequent_latents(counts.cpu(), top_n)
    return {"alive": float(torch.nanmean(scores)), "dead_zero": float(scores.nan_to_num(0.0).mean()),
            "frequent": float(torch.nanmean(scores[frequent])) if bool(frequent.any()) else float("nan")}


def purity_chance_curve(labels: Any, top_n: int = 50, n_draws: int = 1000, seed: int = 0) -> Tensor:
    """chance(r) for r = 1 .. min(top_n, N), float64 (module docstring): entry r − 1 is the mean binary purity
    of r images drawn at random. Its last entry is `purity_chance(labels, top_n, n_draws, seed)`."""
    y, multi = labels_matrix(labels)
    top_n = min(_checks.positive_int(top_n, "top_n"), y.shape[0])
    n_draws = _checks.positive_int(n_draws, "n_draws")
    rng = np.random.default_rng(seed)
    rows = torch.from_numpy(np.stack([rng.choice(y.shape[0], top_n, replace=False) for _ in range(n_draws)]))
    n_classes = y.shape[1] if multi else int(y.max()) + 1
    sizes = torch.arange(1, top_n + 1, dtype=torch.float64)
    best = torch.empty(n_draws, top_n, dtype=torch.float64)
    step = max(1, (1 << 22) // (top_n * n_classes))
    for s in range(0, n_draws, step):
        r = rows[s:s + step]                                                   # (b, top_n) orderings
        hits = y[r].double() if multi else F.one_hot(y[r], n_classes).double()  # (b, top_n, C)
        best[s:s + step] = hits.cumsum(1).max(2).values                        # best class count of each prefix
    return (best / sizes).mean(0)


def matched_chance(top_sizes: Tensor, curve: Tensor) -> Tensor:
    """Per-latent chance purity (m,) float64: chance(r_j) for the r_j = |T_j| images of its top set, NaN where
    r_j = 0 (dead). top_sizes: (m,) ints ≤ len(curve); curve: `purity_chance_curve`."""
    sizes = top_sizes.long().cpu()
    if bool((sizes > curve.shape[0]).any()) or bool((sizes < 0).any()):
        raise ValueError(f"top_sizes must lie in 0..{curve.shape[0]} (the chance curve's length)")
    return torch.where(sizes > 0, curve.double()[(sizes - 1).clamp_min(0)], torch.nan)


def control_report(ms: Tensor, counts: Tensor, top_n: int, purity: Tensor | None = None,
                   top_sizes: Tensor | None = None, curve: Tensor | None = None) -> dict[str, Any]:
    """The controlled keys of `evaluate` from per-latent MS (m,), firing counts c_j (m,) and, with labels,
    binary purity (m,), top-set sizes r_j (m,) and the chance curve (module docstring)."""
    counts = counts.cpu()
    m, rare, frequent = counts.shape[0], rare_latents(counts, top_n), frequent_latents(counts, top_n)
    report: dict[str, Any] = {"ms_mean_frequent": controlled_means(ms, counts, top_n)["frequent"],
                              "rare": int(rare.sum()), "rare_frac": float(rare.sum()) / m,
                              "frequent": int(frequent.sum()), "frequent_frac": float(frequent.sum()) / m}
    if purity is not None:
        p = controlled_means(purity, counts, top_n)
        chance = controlled_means(matched_chance(top_sizes, curve), counts, top_n)
        report.update(purity_dead_zero=p["dead_zero"], purity_frequent=p["frequent"],
                      purity_chance_matched=chance["alive"], purity_chance_matched_dead_zero=chance["dead_zero"])
    return report
