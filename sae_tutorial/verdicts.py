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

Beside the verdicts (unchanged): `paired_ci` (a t confidence interval and p-value per effect), `holm` (Holm's
step-down correction over many p-values) and `effect_statistics` (both, for every effect of a table).
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


def _effect_specs(table) -> list[tuple[str, list[tuple[str, list[float], int]]]]:
    """The four claims, each (claim, [(effect name, paired deltas, predicted sign)]), from `table`."""
    specs = []
    effects = []
    for r in REGULARIZERS:
        effects.append((f"{r}: Δ MS", _paired(table, r, True, "baseline", None, _diff("ms_mean")), +1))
        effects.append((f"{r}: Δ purity", _paired(table, r, True, "baseline", None, _diff("purity")), +1))
        effects.append((f"{r}: relative Δ FVU − {FVU_TOLERANCE:.0%}",
                        _paired(table, r, True, "baseline", None,
                                lambda a, b: (a["fvu"] - b["fvu"]) / b["fvu"] - FVU_TOLERANCE), -1))
    specs.append(("1. both regularizers raise MS and class purity at no cost in reconstruction", effects))
    specs.append(("2. without the batch-active mask, dead latents rise",
                  [(f"{r}: Δ dead (no mask − mask)", _paired(table, r, False, r, True, _diff("dead")), +1)
                   for r in REGULARIZERS]))
    specs.append(("3. ℓ1/ℓ2 makes reconstruction more robust to the inference-time k",
                  [("l1/l2: Δ mean FVU(k')/FVU(k)",
                    _paired(table, "l1/l2", True, "baseline", None,
                            lambda a, b: k_degradation(a) - k_degradation(b)), -1)]))
    probe_ns = sorted(int(m.group(1)) for c in table.columns if (m := re.fullmatch(r"probe_n(\d+)", c)))
    specs.append(("4. ℓ1/ℓ2 improves linear probing when only a few leading latents are kept",
                  [(f"l1/l2: Δ probe accuracy, n={n}",
                    _paired(table, "l1/l2", True, "baseline", None, _diff(f"probe_n{n}")), +1)
                   for n in probe_ns if n <= 4]))
    return specs


def claims(table) -> list[dict[str, Any]]:
    """The four claims, each {"claim", "verdict", "effects": [effect dicts]}, computed from `table`."""
    out = [{"claim": claim, "effects": [effect(*spec) for spec in specs]} for claim, specs in _effect_specs(table)]
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


# ---------------------------------------------------------------- confidence intervals and multiplicity
def paired_ci(deltas: list[float], level: float = 0.95) -> dict[str, Any]:
    """Mean of paired differences with a Student-t confidence interval and a two-sided p-value (H0: mean 0).

        mean d̄, s the sample std (n − 1), SE = s/√n, t = d̄/SE, df = n − 1,
        CI = d̄ ± t_{(1+level)/2, df} · SE,   p = 2 · P(T_df ≥ |t|)
    With n < 2 the CI and p are NaN; with SE = 0, CI = [d̄, d̄] and p = 0 (d̄ ≠ 0) or 1.
    """
    from scipy import stats

    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    n = len(deltas)
    mean = sum(deltas) / n if n else math.nan
    out = {"n": n, "mean": mean, "se": math.nan, "t": math.nan, "df": n - 1, "lo": math.nan, "hi": math.nan,
           "p": math.nan, "level": level}
    if n < 2:
        return out
    se = math.sqrt(sum((d - mean) ** 2 for d in deltas) / (n - 1)) / math.sqrt(n)
    if se == 0:
        return {**out, "se": 0.0, "t": math.copysign(math.inf, mean) if mean else 0.0, "lo": mean, "hi": mean,
                "p": 0.0 if mean else 1.0}
    t = mean / se
    half = float(stats.t.ppf((1 + level) / 2, n - 1)) * se
    return {**out, "se": se, "t": t, "lo": mean - half, "hi": mean + half, "p": float(2 * stats.t.sf(abs(t), n - 1))}


def holm(p_values: list[float], alpha: float = 0.05) -> dict[str, list]:
    """Holm's step-down correction of m p-values (family-wise error ≤ alpha), in the input order.

    With p_(1) ≤ … ≤ p_(m) sorted, the adjusted p_(i) = max_{j ≤ i} min(1, (m − j + 1) p_(j)); H_(i) is rejected
    when its adjusted p ≤ alpha (the same as rejecting while p_(i) ≤ alpha / (m − i + 1), stopping at the first
    failure). NaN p-values are left out of the family and stay NaN, not rejected.
    Returns {"p_adjusted": [...], "reject": [...]}.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    ok = [i for i, p in enumerate(p_values) if not math.isnan(p)]
    if any(not 0 <= p_values[i] <= 1 for i in ok):
        raise ValueError("p_values must lie in [0, 1]")
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, i in enumerate(sorted(ok, key=lambda i: p_values[i])):
        running = max(running, min(1.0, (len(ok) - rank) * p_values[i]))
        adjusted[i] = running
    return {"p_adjusted": adjusted, "reject": [not math.isnan(p) and p <= alpha for p in adjusted]}


def effect_statistics(table, level: float = 0.95, alpha: float = 0.05):
    """Every effect of `claims` with its t confidence interval and p (`paired_ci`, two-sided) and Holm's
    adjusted p over all effects of the four claims together (`holm`): a pandas DataFrame with columns claim,
    effect, sign, n, mean, se, t, df, lo, hi, p, p_holm, reject_holm. The verdicts themselves are unchanged."""
    import pandas as pd

    rows = [{"claim": claim, "effect": name, "sign": sign, **paired_ci(deltas, level)}
            for claim, specs in _effect_specs(table) for name, deltas, sign in specs]
    corrected = holm([r["p"] for r in rows], alpha)
    for r, p, rej in zip(rows, corrected["p_adjusted"], corrected["reject"]):
        r.update(p_holm=p, reject_holm=rej)
    return pd.DataFrame(rows)
