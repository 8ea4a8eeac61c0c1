"""The paper's four claims, judged from a results table (grid.py) by paired comparisons.

Every effect is a paired difference between a method and its reference trained on the
same (backbone, dataset, k, seed): Δ = metric(method) − metric(reference), over all
such pairs.

    mean Δ, its standard deviation s over pairs, standard error SE = s / √n,
    t = mean Δ / SE
    an effect SUPPORTS the claim when sign·t ≥ 2 (sign: the direction the claim
    predicts), CONTRADICTS it when sign·t ≤ −2, and is INCONCLUSIVE otherwise
    (with SE = 0, t = ±∞ or 0).

A claim HOLDS when all of its effects support it, DOES NOT HOLD when none does, and is
MIXED otherwise.

    1. both regularizers raise MS and class purity at no cost in reconstruction
       effects, for each regularizer (mask on) vs the baseline: Δ ms_mean > 0,
       Δ purity > 0, and "no cost": relative Δ fvu < tolerance (5 %), i.e. the effect
       (fvu_r − fvu_b)/fvu_b − 0.05 < 0
    2. without the batch-active mask, dead latents rise
       for each regularizer: Δ dead (mask off − mask on) > 0
    3. ℓ1/ℓ2 makes reconstruction more robust to the inference-time k
       Δ of the mean relative degradation  mean_{k'≠k} FVU(k')/FVU(k)
         (ℓ1/ℓ2 − baseline) < 0
    4. ℓ1/ℓ2 improves linear probing when only a few leading latents are kept
       Δ probe accuracy at each truncation n ≤ 4 present in the table
         (ℓ1/ℓ2 − baseline) > 0

Beside the verdicts (unchanged): `paired_ci` (a t confidence interval and p-value per
effect), `holm` (Holm's step-down correction over many p-values) and
`effect_statistics` (both, for every effect of a table).

Controlled verdicts
(`controlled_effects`, `controlled_verdicts`, `per_k_effects`, `write_verdicts`)
--------------------------------------------------------------------------------
Scopes: each backbone alone, and "pooled" (the pairs of all backbones together; only
with ≥ 2 backbones, since with one it would repeat that backbone's tests). Each effect
has one or more FORMS (the column it is measured on); one form per effect is PRIMARY,
the others are shown beside it. Non-finite deltas are dropped (n counts the rest).

    claim 1, per regularizer r (mask on) vs the baseline, sign +1:
      Δ MS      primary  cross-model, frequent latents   ms_cross_mean_frequent
                         (own space, frequent latents = ms_mean_frequent when the cross
                         column is absent or all NaN in the scope); beside: ms_mean,
                         ms_mean_frequent, ms_mean_dead_zero, ms_cross_mean
      Δ purity  primary  frequent latents, above chance  purity_frequent − purity_chance
                         beside: purity, purity_dead_zero,
                         purity − purity_chance_matched
      with fronts: Δ MS / Δ purity at matched FVU (primary),
                  one delta per r row (not a pair):
                  d = M(row) − front_value(baseline k-front of the row's backbone and
                                           dataset, fvu(row), M),
                  M the primary column of Δ MS / Δ purity; rows off the front's FVU
                  range give NaN, dropped
      relative Δ FVU = (fvu_r − fvu_b) / fvu_b, not primary, status "shown"
                  (no tolerance: "no cost" is judged by the matched-FVU effects)
    claim 2, per r: Δ dead (no mask − mask) on dead_frac (primary, +1);
      beside Δ dead + rare (dead_frac + rare_frac)
    claim 3, ℓ1/ℓ2 vs baseline, sign −1: Δ k_degradation (primary);
      beside Δ FVU(2k), Δ FVU(4k) = Δ fvu_k{2k}, fvu_k{4k}
    claim 4, ℓ1/ℓ2 vs baseline, sign +1: Δ probe_n{n} for n ∈ {1, 2, 4} present
      (all primary)

    statistics per row: `paired_ci` (mean, SE, t CI at `level`, two-sided p)
    Holm (`holm`): one family of ALL primary rows (every scope),
    another of all non-primary rows
    status = "supports"     if p_holm ≤ alpha and sign·mean > 0
             "contradicts"  if p_holm ≤ alpha and sign·mean < 0
             "inconclusive" otherwise (also n < 2);  "shown" for relative Δ FVU
    verdict per (scope, claim) from its primary rows: "holds" (all support),
    "does not hold" (none), "mixed".
    verdict_uncontrolled: the same rule on the uncontrolled forms (claim 1: Δ ms_mean
    and Δ purity over alive latents, own space; claims 2-4: their primary effects),
    with their own Holm family; changed = they differ.

Against the established variants (`variant_effects`): ℓ1/ℓ2 (mask on) and the baseline,
each paired with every other method of the table that is neither (the grid's
VARIANT_MODELS: Multi-TopK, Matryoshka) on the same (backbone, dataset, k, seed):
Δ = metric(method) − metric(variant) on k_degradation, fvu_k{4k}, fvu, the primary MS
form of claim 1 and probe_n{n} (n ≤ 4); sign −1 for the first three (lower is better),
+1 for the others. Holm over all of its rows; status "method better" / "variant better"
(p_holm ≤ alpha, by the sign of sign·mean) or "inconclusive".

The baseline's k-front (`front_value`): the baseline rows of one backbone and dataset
over many k, each k averaged over seeds to a point (F_k, M_k) = (mean fvu, mean M);
sorted by F, M is interpolated linearly in log F:

    M(F) = M_i + (M_{i+1} − M_i) · (log F − log F_i) / (log F_{i+1} − log F_i),
           F_i ≤ F ≤ F_{i+1}
    and NaN outside [min F_k, max F_k] (no extrapolation).
"""
from __future__ import annotations

import math
import re
from typing import Any

REGULARIZERS = ("off-support l1", "l1/l2")
PAIR_KEYS = ["backbone", "dataset", "k", "seed"]
FVU_TOLERANCE = 0.05
CLAIMS = ("1. both regularizers raise MS and class purity at no cost in reconstruction",
          "2. without the batch-active mask, dead latents rise",
          "3. ℓ1/ℓ2 makes reconstruction more robust to the inference-time k",
          "4. ℓ1/ℓ2 improves linear probing when only a few leading latents are kept")


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
    specs.append((CLAIMS[0], effects))
    specs.append((CLAIMS[1],
                  [(f"{r}: Δ dead (no mask − mask)", _paired(table, r, False, r, True, _diff("dead")), +1)
                   for r in REGULARIZERS]))
    specs.append((CLAIMS[2],
                  [("l1/l2: Δ mean FVU(k')/FVU(k)",
                    _paired(table, "l1/l2", True, "baseline", None,
                            lambda a, b: k_degradation(a) - k_degradation(b)), -1)]))
    probe_ns = sorted(int(m.group(1)) for c in table.columns if (m := re.fullmatch(r"probe_n(\d+)", c)))
    specs.append((CLAIMS[3],
                  [(f"l1/l2: Δ probe accuracy, n={n}",
                    _paired(table, "l1/l2", True, "baseline", None, _diff(f"probe_n{n}")), +1)
                   for n in probe_ns if n <= 4]))
    return specs


def claims(table) -> list[dict[str, Any]]:
    """The four claims, each {"claim", "verdict", "effects": [effect dicts]}, computed from `table`."""
    out = [{"claim": claim, "effects": [effect(*spec) for spec in specs]} for claim, specs in _effect_specs(table)]
    for c in out:
        c["verdict"] = _verdict([e["status"] for e in c["effects"]])
    return out


def _verdict(statuses) -> str:
    """"holds" when every status is "supports", "does not hold" when none is (or there are none), else "mixed"."""
    statuses = list(statuses)
    supported = sum(s == "supports" for s in statuses)
    return "holds" if statuses and supported == len(statuses) else "does not hold" if supported == 0 else "mixed"


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


# ---------------------------------------------------------------- controlled verdicts (see the module docstring)
def _value(row, column: str) -> float:
    """row[column] as a float; NaN when the column is absent or not a number."""
    try:
        return float(row.get(column, math.nan))
    except (TypeError, ValueError):
        return math.nan


def _col(column: str, minus: str | None = None, plus: str | None = None):
    """The row function  row[column] (− row[minus]) (+ row[plus])."""
    return lambda r: (_value(r, column) - (_value(r, minus) if minus else 0.0) + (_value(r, plus) if plus else 0.0))


MS_FORMS = (("own space, alive mean", _col("ms_mean")), ("own space, frequent latents", _col("ms_mean_frequent")),
            ("own space, dead as 0", _col("ms_mean_dead_zero")), ("cross-model, alive mean", _col("ms_cross_mean")))
MS_CROSS_PRIMARY = ("cross-model, frequent latents", _col("ms_cross_mean_frequent"))
PURITY_PRIMARY = ("frequent latents, above chance", _col("purity_frequent", minus="purity_chance"))
PURITY_FORMS = (("alive mean", _col("purity")), ("dead as 0", _col("purity_dead_zero")),
                ("alive, above matched chance", _col("purity", minus="purity_chance_matched")))
UNCONTROLLED_FORMS = ("own space, alive mean", "alive mean")  # claim 1's forms behind verdict_uncontrolled
EFFECT_COLUMNS = ["scope", "claim", "effect", "form", "primary", "sign", "n", "mean", "se", "lo", "hi", "p",
                  "p_holm", "status"]


def _finite(values) -> list[float]:
    return [float(v) for v in values if math.isfinite(v)]


def _front_curve(front_rows, metric):
    """The baseline k-front as (log F_k, M_k) sorted by F_k: per k, mean fvu and mean metric over seeds (rows
    where the metric is NaN left out). `metric`: a column name or a row function."""
    import numpy as np
    import pandas as pd

    rows = front_rows[front_rows["method"] == "baseline"] if "method" in front_rows else front_rows
    values = (rows.apply(metric, axis=1) if callable(metric) and len(rows)
              else rows[metric] if isinstance(metric, str) and metric in rows else math.nan)
    points = pd.DataFrame({"k": rows["k"], "fvu": rows["fvu"], "m": values}, index=rows.index).astype(float)
    points = points[points["m"].notna() & (points["fvu"] > 0)].groupby("k").mean().sort_values("fvu")
    return np.log(points["fvu"].to_numpy()), points["m"].to_numpy()


def _interpolate(curve, fvu: float) -> float:
    import numpy as np

    x, y = curve
    if not len(x) or not fvu > 0 or not x[0] <= np.log(fvu) <= x[-1]:
        return math.nan
    return float(np.interp(np.log(fvu), x, y))


def front_value(front_rows, fvu: float, metric) -> float:
    """The baseline's k-front value of `metric` at reconstruction `fvu` (the module docstring's M(F)).

    front_rows: rows of one backbone and dataset (only method "baseline" is used when the column is there), over
    several k and seeds. Per k: (F_k, M_k) = mean over seeds of (fvu, metric); sorted by F_k, M is interpolated
    linearly in log F between the two neighbouring points; NaN when fvu lies outside [min F_k, max F_k].
    `metric`: a column name or a function of a row."""
    return _interpolate(_front_curve(front_rows, metric), fvu)


def _matched(scope_table, fronts, method: str, f) -> list[float]:
    """f(row) − front_value(baseline front of the row's backbone and dataset, fvu(row), f), for each `method` row
    (mask on) of the scope; non-finite values (off the front's FVU range) dropped."""
    curves: dict = {}
    deltas = []
    for _, row in _rows(scope_table, method, True).iterrows():
        key = (row["backbone"], row["dataset"])
        if key not in curves:
            curves[key] = _front_curve(fronts[(fronts["backbone"] == key[0]) & (fronts["dataset"] == key[1])], f)
        deltas.append(f(row) - _interpolate(curves[key], _value(row, "fvu")))
    return _finite(deltas)


def _scopes(table) -> list[tuple[str, Any]]:
    """(scope, rows): each backbone alone, then "pooled" (all rows) when there are ≥ 2 backbones."""
    backbones = sorted(table["backbone"].dropna().unique()) if len(table) else []
    return [(b, table[table["backbone"] == b]) for b in backbones] + ([("pooled", table)] if len(backbones) > 1
                                                                      else [])


def _few_probe_ns(table) -> list[int]:
    """The truncations n ≤ 4 of the table's probe_n{n} columns (claim 4's few leading latents)."""
    return sorted(n for c in table.columns if (m := re.fullmatch(r"probe_n(\d+)", c)) and (n := int(m.group(1))) <= 4)


def _fvu_at(factor: int):
    """The row function  row[fvu_k{factor·k}]."""
    return lambda r: _value(r, f"fvu_k{factor * int(r['k'])}")


def _controlled_specs(table, fronts=None) -> list[dict[str, Any]]:
    """Every effect row of every scope: scope, claim, effect, form, primary, uncontrolled, sign, deltas."""
    probe_ns = _few_probe_ns(table)
    out = []
    for scope, t in _scopes(table):
        def add(claim, effect, form, primary, sign, deltas, uncontrolled=None, shown=False):
            if primary or deltas:  # a shown-beside form with no data at all is left out
                out.append({"scope": scope, "claim": CLAIMS[claim - 1], "effect": effect, "form": form,
                            "primary": primary, "uncontrolled": primary if uncontrolled is None else uncontrolled,
                            "shown": shown, "sign": sign, "deltas": deltas})

        def paired(method, mask, f, ref=("baseline", None), delta=lambda fa, fb: fa - fb):
            return _finite(_paired(t, method, mask, *ref, lambda a, b: delta(f(a), f(b))))

        cross = "ms_cross_mean_frequent" in t and t["ms_cross_mean_frequent"].notna().any()
        for r in REGULARIZERS:
            for name, primary, beside in ((f"{r}: Δ MS", MS_CROSS_PRIMARY if cross else MS_FORMS[1], MS_FORMS),
                                          (f"{r}: Δ purity", PURITY_PRIMARY, PURITY_FORMS)):
                for form, f in (primary, *(x for x in beside if x[0] != primary[0])):
                    add(1, name, form, form == primary[0], +1, paired(r, True, f),
                        uncontrolled=form in UNCONTROLLED_FORMS)
                if fronts is not None:
                    add(1, f"{name} at matched FVU", primary[0], True, +1, _matched(t, fronts, r, primary[1]), False)
            add(1, f"{r}: relative Δ FVU", "(fvu_r − fvu_b) / fvu_b", False, -1,
                paired(r, True, _col("fvu"), delta=lambda fa, fb: (fa - fb) / fb), shown=True)
        for r in REGULARIZERS:
            add(2, f"{r}: Δ dead (no mask − mask)", "dead_frac", True, +1,
                paired(r, False, _col("dead_frac"), (r, True)))
            add(2, f"{r}: Δ dead + rare", "dead_frac + rare_frac", False, +1,
                paired(r, False, _col("dead_frac", plus="rare_frac"), (r, True)))
        add(3, "l1/l2: Δ mean FVU(k')/FVU(k)", "mean over k' ≠ k", True, -1, paired("l1/l2", True, k_degradation))
        for factor in (2, 4):
            add(3, f"l1/l2: Δ FVU({factor}k)", "absolute FVU", False, -1, paired("l1/l2", True, _fvu_at(factor)))
        for n in probe_ns:
            add(4, f"l1/l2: Δ probe accuracy, n={n}", "top-1 accuracy", True, +1,
                paired("l1/l2", True, _col(f"probe_n{n}")))
    return out


def _status(p_holm: float, signed_mean: float, alpha: float) -> str:
    if p_holm <= alpha and signed_mean > 0:
        return "supports"
    return "contradicts" if p_holm <= alpha and signed_mean < 0 else "inconclusive"


def _judged(table, fronts, level: float, alpha: float):
    """_controlled_specs with paired_ci, the two Holm families and statuses, plus the uncontrolled judgement
    (p_holm_uncontrolled, status_uncontrolled over the uncontrolled rows' own Holm family)."""
    import pandas as pd

    rows = [{**{k: v for k, v in s.items() if k != "deltas"},
             **{k: v for k, v in paired_ci(s["deltas"], level).items() if k in ("n", "mean", "se", "lo", "hi", "p")}}
            for s in _controlled_specs(table, fronts)]
    df = pd.DataFrame(rows, columns=[*EFFECT_COLUMNS[:5], "uncontrolled", "shown", *EFFECT_COLUMNS[5:12]])
    df = df.astype({"primary": bool, "uncontrolled": bool, "shown": bool})
    for out, families in (("p_holm", (df["primary"], ~df["primary"])), ("p_holm_uncontrolled", (df["uncontrolled"],))):
        df[out] = math.nan
        for family in families:
            if family.any():
                df.loc[family, out] = holm(df.loc[family, "p"].astype(float).tolist(), alpha)["p_adjusted"]
    signed = df["sign"] * df["mean"]
    df["status"] = ["shown" if sh else _status(p, m, alpha) for sh, p, m in zip(df["shown"], df["p_holm"], signed)]
    df["status_uncontrolled"] = [_status(p, m, alpha) if u else None
                                 for u, p, m in zip(df["uncontrolled"], df["p_holm_uncontrolled"], signed)]
    return df


def controlled_effects(table, fronts=None, level: float = 0.95, alpha: float = 0.05):
    """Every effect of every scope and form (module docstring), a DataFrame with columns scope, claim, effect,
    form, primary, sign, n, mean, se, lo, hi (the `level` t interval), p (two-sided), p_holm (Holm within the
    primary rows, or within the non-primary rows), status."""
    return _judged(table, fronts, level, alpha)[EFFECT_COLUMNS]


def controlled_verdicts(table, fronts=None, level: float = 0.95, alpha: float = 0.05):
    """One row per (scope, claim): scope, claim, verdict (from the primary effects), n_effects, n_supports,
    verdict_uncontrolled (from the uncontrolled forms, their own Holm family), n_supports_uncontrolled, changed."""
    import pandas as pd

    df = _judged(table, fronts, level, alpha)
    out = []
    for (scope, claim), g in df.groupby(["scope", "claim"], sort=False):
        primary, unc = g.loc[g["primary"], "status"], g.loc[g["uncontrolled"], "status_uncontrolled"]
        out.append({"scope": scope, "claim": claim, "verdict": _verdict(primary), "n_effects": len(primary),
                    "n_supports": int((primary == "supports").sum()), "verdict_uncontrolled": _verdict(unc),
                    "n_supports_uncontrolled": int((unc == "supports").sum())})
        out[-1]["changed"] = out[-1]["verdict"] != out[-1]["verdict_uncontrolled"]
    return pd.DataFrame(out, columns=["scope", "claim", "verdict", "n_effects", "n_supports", "verdict_uncontrolled",
                                      "n_supports_uncontrolled", "changed"])


def per_k_effects(table, fronts=None, level: float = 0.95):
    """The primary effects of each scope at each k of `table` separately: a DataFrame with columns scope, k, claim,
    effect, form, sign, n, mean, se, lo, hi, p (no Holm, no verdict)."""
    import pandas as pd

    rows = [{"scope": s["scope"], "k": k, **{c: s[c] for c in ("claim", "effect", "form", "sign")},
             **{c: v for c, v in paired_ci(s["deltas"], level).items() if c in ("n", "mean", "se", "lo", "hi", "p")}}
            for k in (sorted(table["k"].unique()) if len(table) else [])
            for s in _controlled_specs(table[table["k"] == k], fronts) if s["primary"]]
    return pd.DataFrame(rows, columns=["scope", "k", "claim", "effect", "form", "sign", "n", "mean", "se", "lo",
                                       "hi", "p"])


def variant_effects(table, level: float = 0.95, alpha: float = 0.05):
    """ℓ1/ℓ2 and the baseline against each established variant of the table (module docstring): a DataFrame with
    columns scope, method, variant, effect, sign, n, mean, se, lo, hi, p, p_holm, status."""
    import pandas as pd

    variants = [m for m in dict.fromkeys(table["method"]) if m != "baseline" and m not in REGULARIZERS] \
        if len(table) else []
    cross = "ms_cross_mean_frequent" in table and table["ms_cross_mean_frequent"].notna().any()
    ms_name, ms = MS_CROSS_PRIMARY if cross else MS_FORMS[1]
    metrics = [("Δ mean FVU(k')/FVU(k)", -1, k_degradation), ("Δ FVU(4k)", -1, _fvu_at(4)),
               ("Δ FVU", -1, _col("fvu")), (f"Δ MS ({ms_name})", +1, ms),
               *((f"Δ probe accuracy, n={n}", +1, _col(f"probe_n{n}")) for n in _few_probe_ns(table))]
    rows = [{"scope": scope, "method": method, "variant": v, "effect": name, "sign": sign,
             **{c: x for c, x in paired_ci(_finite(_paired(t, method, mask, v, None, lambda a, b: f(a) - f(b))),
                                           level).items() if c in ("n", "mean", "se", "lo", "hi", "p")}}
            for scope, t in (_scopes(table) if variants else [])
            for method, mask in (("l1/l2", True), ("baseline", None)) for v in variants
            for name, sign, f in metrics]
    df = pd.DataFrame(rows, columns=["scope", "method", "variant", "effect", "sign", "n", "mean", "se", "lo", "hi",
                                     "p"])
    df["p_holm"] = holm(df["p"].astype(float).tolist(), alpha)["p_adjusted"] if len(df) else []
    df["status"] = [{"supports": "method better", "contradicts": "variant better"}.get(_status(p, sm, alpha),
                                                                                        "inconclusive")
                    for p, sm in zip(df["p_holm"], df["sign"] * df["mean"])]
    return df


def _markdown(df) -> str:
    """A pipe table of the DataFrame's cells as strings (no tabulate: it is not a dependency)."""
    cell = lambda v: str(v).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(cell, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    return "\n".join(lines + ["| " + " | ".join(map(cell, row)) + " |" for row in df.itertuples(index=False)])


def write_verdicts(table, fronts=None, out_dir=".", level: float = 0.95, alpha: float = 0.05) -> list:
    """Write verdicts.csv (controlled_effects), verdicts.md (the claims' verdicts, then every scope × effect × form
    as mean [lo, hi], p_holm, status, then the comparison with the established variants when the table has any),
    claims.csv (controlled_verdicts), per_k.csv (per_k_effects) and variants.csv (variant_effects) into `out_dir`,
    each atomically; returns their paths in that order."""
    from pathlib import Path

    from .checkpoint import atomic_write

    effects = controlled_effects(table, fronts, level, alpha)
    verdicts = controlled_verdicts(table, fronts, level, alpha)
    per_k = per_k_effects(table, fronts, level)
    variants = variant_effects(table, level, alpha)
    fmt = lambda v: f"{v:.3g}"  # noqa: E731

    def shown(df, columns):
        ci = [f"{fmt(m)} [{fmt(lo)}, {fmt(hi)}]" for m, lo, hi in zip(df["mean"], df["lo"], df["hi"])]
        df = df.assign(**{f"mean [{level:.0%} CI]": ci, "p_holm": df["p_holm"].map(lambda p: f"{p:.2g}")})
        return _markdown(df[[*columns, "n", f"mean [{level:.0%} CI]", "p_holm", "status"]])

    numbered = effects.assign(claim=effects["claim"].str.split(".").str[0])
    text = (f"# Controlled verdicts\n\nHolm's correction over all primary effects together (α = {alpha}), and "
            f"separately over the forms shown beside them. A claim holds when all its primary effects support it.\n\n"
            f"## Claims\n\n{_markdown(verdicts)}\n\n## Effects\n\n"
            f"{shown(numbered, ['scope', 'claim', 'effect', 'form', 'primary'])}\n")
    if len(variants):
        text += (f"\n## Against the established variants\n\nΔ = method − variant on the same (backbone, data set, "
                 f"k, seed); Holm over these rows together.\n\n"
                 f"{shown(variants, ['scope', 'method', 'variant', 'effect'])}\n")
    out = Path(out_dir)
    return [atomic_write(out / "verdicts.csv", lambda p: effects.to_csv(p, index=False)),
            atomic_write(out / "verdicts.md", lambda p: p.write_text(text, encoding="utf-8")),
            atomic_write(out / "claims.csv", lambda p: verdicts.to_csv(p, index=False)),
            atomic_write(out / "per_k.csv", lambda p: per_k.to_csv(p, index=False)),
            atomic_write(out / "variants.csv", lambda p: variants.to_csv(p, index=False))]
