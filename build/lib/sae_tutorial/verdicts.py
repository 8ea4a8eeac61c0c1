"""The paper's four claims, judged from a results table (grid.py) by paired comparisons.

Every effect is a paired difference between a method and its reference trained on the same
(backbone, dataset, k, seed): Δ = metric(method) − metric(reference), over all such pairs.

    mean Δ, its standard deviation s over pairs, standard error SE = s / √n, t = mean Δ / SE
    an effect SUPPORTS the claim when sign·t ≥ 2 (sign: the direction the claim predicts),
    CONTRADICTS it when sign·t ≤ −2, and is INCONCLUSIVE otherwise (with SE = 0, t = ±∞ or 0).

A claim HOLDS when all of its effects support it, DOES NOT HOLD when none does, and is MIXED otherwise.

    1. both regularizers raise MS and class purity at no cost in reconstruction
       effects, for each regularizer (mask on) vs the baseline: Δ ms_mean > 0, Δ purity > 0,
       and "no cost": relative Δ fvu < tolerance (5 %), i.e. the effect (fvu_r − fvu_b)/fvu_b − 0.05 < 0
    2. without the batch-active mask, dead latents rise
       for each regularizer: Δ dead (mask off − mask on) > 0
    3. ℓ1/ℓ2 makes reconstruction more robust to the inference-time k
       Δ of the mean relative degradation  mean_{k'≠k} FVU(k')/FVU(k)  (ℓ1/ℓ2 − baseline) < 0
    4. ℓ1/ℓ2 improves linear probing when only a few leading latents are kept
       Δ probe accuracy at each truncation n ≤ 4 present in the table (ℓ1/ℓ2 − baseline) > 0
"""
from __future__ import annotations

import math
import re
from typing import Any

REGULARIZERS = ("off-support l1", "l1/l2")
PAIR_KEYS = ["backbone", "dataset", "k", "seed"]
FVU_TOLERANCE = 0.05


def _rows(table, method: str, mask: bool | None):
    rows = table[table["method"] == method]
    if mask is None:
        return rows
    return rows[rows["mask"].astype(str).str.lower() == str(mask).lower()]


def _paired(table, method: str, mask: bool | None, ref_method: str, ref_mask: bool | None, delta) -> list[float]:
    """delta(method row, reference row) for each (backbone, dataset, k, seed) present in both."""
    a = _rows(table, method, mask).set_index(PAIR_KEYS, drop=False)
    b = _rows(table, ref_method, ref_mask).set_index(PAIR_KEYS, drop=False)
    return [float(delta(a.loc[i], b.loc[i])) for i in a.index.intersection(b.index)]


def _diff(column: str):
    return lambda a, b: a[column] - b[column]


def effect(name: str, deltas: list[float], sign: int) -> dict[str, Any]:
    """Summary of one paired effect and its classification (see the module docstring)."""
    n = len(deltas)
    if n == 0:
        return {"effect": name, "n": 0, "mean": math.nan, "std": math.nan, "t": math.nan, "status": "inconclusive"}
    mean = sum(deltas) / n
    std = math.sqrt(sum((d - mean) ** 2 for d in deltas) / (n - 1)) if n > 1 else 0.0
    se = std / math.sqrt(n)
    t = mean / se if se > 0 else (math.copysign(math.inf, mean) if mean != 0 else 0.0)
    status = "supports" if sign * t >= 2 else "contradicts" if sign * t <= -2 else "inconclusive"
    return {"effect": name, "n": n, "mean": mean, "std": std, "t": t, "status": status}


def k_degradation(row) -> float:
    """mean over k' ≠ k of FVU(k') / FVU(k), from the fvu_k{k'} columns."""
    ratios = [row[c] / row["fvu"] for c in row.index
              if (m := re.fullmatch(r"fvu_k(\d+)", c)) and int(m.group(1)) != int(row["k"]) and not math.isnan(row[c])]
    return sum(ratios) / len(ratios) if ratios else math.nan


def claims(table) -> list[dict[str, Any]]:
    """The four claims, each {"claim", "verdict", "effects": [effect dicts]}, computed from `table`."""
    out = []
    effects = []
    for r in REGULARIZERS:
        effects.append(effect(f"{r}: Δ MS", _paired(table, r, True, "baseline", None, _diff("ms_mean")), +1))
        effects.append(effect(f"{r}: Δ purity", _paired(table, r, True, "baseline", None, _diff("purity")), +1))
        effects.append(effect(f"{r}: relative Δ FVU − {FVU_TOLERANCE:.0%}",
                              _paired(table, r, True, "baseline", None,
                                      lambda a, b: (a["fvu"] - b["fvu"]) / b["fvu"] - FVU_TOLERANCE), -1))
    out.append({"claim": "1. both regularizers raise MS and class purity at no cost in reconstruction",
                "effects": effects})
    out.append({"claim": "2. without the batch-active mask, dead latents rise",
                "effects": [effect(f"{r}: Δ dead (no mask − mask)", _paired(table, r, False, r, True, _diff("dead")), +1)
                            for r in REGULARIZERS]})
    out.append({"claim": "3. ℓ1/ℓ2 makes reconstruction more robust to the inference-time k",
                "effects": [effect("l1/l2: Δ mean FVU(k')/FVU(k)",
                                   _paired(table, "l1/l2", True, "baseline", None,
                                           lambda a, b: k_degradation(a) - k_degradation(b)), -1)]})
    probe_ns = sorted(int(m.group(1)) for c in table.columns if (m := re.fullmatch(r"probe_n(\d+)", c)))
    out.append({"claim": "4. ℓ1/ℓ2 improves linear probing when only a few leading latents are kept",
                "effects": [effect(f"l1/l2: Δ probe accuracy, n={n}",
                                   _paired(table, "l1/l2", True, "baseline", None, _diff(f"probe_n{n}")), +1)
                            for n in probe_ns if n <= 4]})
    for c in out:
        statuses = [e["status"] for e in c["effects"]]
        supported = sum(s == "supports" for s in statuses)
        c["verdict"] = ("holds" if statuses and supported == len(statuses)
                        else "does not hold" if supported == 0 else "mixed")
    return out


def verdict_table(table):
    """One row per effect: claim, verdict, effect, n, mean, std, t, status (a pandas DataFrame)."""
    import pandas as pd

    return pd.DataFrame([{"claim": c["claim"], "verdict": c["verdict"], **e} for c in claims(table)
                         for e in c["effects"]])
