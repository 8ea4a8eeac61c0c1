"""Verdicts are computed from the table: an obviously-true claim holds, an obviously-false one does not."""
import itertools

import numpy as np
import pandas as pd
import pytest

from sae_tutorial.verdicts import claims, verdict_table


def synthetic_table(good: bool, seed: int = 0) -> pd.DataFrame:
    """Results where every claim of the paper is true (good=True) or reversed (good=False), with seed noise."""
    rng = np.random.default_rng(seed)
    s = 1 if good else -1
    rows = []
    for k, sd in itertools.product((8, 16, 32), (0, 1, 2)):
        n = lambda: rng.normal(0, 0.002)  # noqa: E731
        for method, mask in (("baseline", None), ("off-support l1", True), ("off-support l1", False),
                             ("l1/l2", True), ("l1/l2", False)):
            reg = method != "baseline"
            ratio = method == "l1/l2"
            fvu = 0.20 + (0.0 if good or not reg else 0.05) + n()
            rows.append({
                "backbone": "embedded", "dataset": "fashion-mnist", "k": k, "seed": sd, "method": method, "mask": mask,
                "fvu": fvu, "ms_mean": 0.30 + s * 0.05 * reg + n(), "purity": 0.50 + s * 0.05 * reg + n(),
                "dead": 10 + (s * 40 if mask is False else 0) + int(rng.integers(0, 3)),
                f"fvu_k{k // 2}": fvu * (1.5 - s * 0.2 * ratio) + n(), f"fvu_k{2 * k}": fvu * (1.3 - s * 0.2 * ratio),
                "probe_n1": 0.40 + s * 0.08 * ratio + n(), "probe_n2": 0.50 + s * 0.06 * ratio + n(),
                "probe_n8": 0.70 + n(),
            })
    return pd.DataFrame(rows)


@pytest.mark.parametrize("good,expected", [(True, "holds"), (False, "does not hold")])
def test_obvious_tables(good, expected):
    result = claims(synthetic_table(good))
    assert [c["verdict"] for c in result] == [expected] * 4, verdict_table(synthetic_table(good))
    assert all(e["n"] == 9 for c in result for e in c["effects"])


def test_mixed_and_effect_sizes():
    table = synthetic_table(True)
    table.loc[(table.method == "l1/l2") & (table["mask"] == True), "ms_mean"] -= 0.10  # noqa: E712  ℓ1/ℓ2 now lowers MS
    c1 = claims(table)[0]
    assert c1["verdict"] == "mixed"
    ms = next(e for e in c1["effects"] if e["effect"] == "l1/l2: Δ MS")
    assert ms["status"] == "contradicts" and ms["mean"] == pytest.approx(-0.05, abs=0.01)
    off = next(e for e in c1["effects"] if e["effect"] == "off-support l1: Δ MS")
    assert off["status"] == "supports" and off["mean"] == pytest.approx(0.05, abs=0.01)


def test_grid_figures_are_written(tmp_path):
    from sae_tutorial.plots import FIGURES, save_grid_figures

    table = synthetic_table(True).assign(probe_dense=0.9)
    paths = save_grid_figures(table, tmp_path)
    assert [p.name for p in paths] == [f"{name}.png" for name in FIGURES]
    assert all(p.stat().st_size > 10_000 for p in paths)


# ---------------------------------------------------------------- controlled verdicts
from sae_tutorial.verdicts import (CLAIMS, controlled_effects, controlled_verdicts, front_value, holm,  # noqa: E402
                                   per_k_effects, write_verdicts)

MS_COLUMNS = ("ms_mean", "ms_mean_frequent", "ms_mean_dead_zero", "ms_cross_mean", "ms_cross_mean_frequent")
PURITY_COLUMNS = ("purity", "purity_frequent", "purity_dead_zero")


def grid_table(gain: float = 0.1, controlled: bool = True, uncontrolled: bool = True, noise: float = 0.005,
               backbones=("embedded", "efficientnet-lite0"), seed: int = 0) -> pd.DataFrame:
    """2 backbones × 3 k × 5 seeds; the regularizers (mask on) add `gain` to MS and purity in the controlled
    columns (frequent, dead-as-0, cross-model) and/or the uncontrolled ones (alive means ms_mean, purity); claims
    2-4 are true throughout (mask off: +0.3 dead_frac; ℓ1/ℓ2: flatter FVU(k') and better few-latent probes)."""
    rng = np.random.default_rng(seed)
    rows = []
    for bb, k, sd in itertools.product(backbones, (8, 16, 32), range(5)):
        for method, mask in (("baseline", None), ("off-support l1", True), ("off-support l1", False),
                             ("l1/l2", True), ("l1/l2", False)):
            n = lambda: rng.normal(0, noise)  # noqa: E731
            on, ratio = mask is True, method == "l1/l2"
            fvu = 0.2 + n()
            row = {"backbone": bb, "dataset": "fashion-mnist", "k": k, "seed": sd, "method": method, "mask": mask,
                   "lambda": 0.0 if method == "baseline" else 1e-3, "fvu": fvu,
                   "dead_frac": 0.05 + 0.3 * (mask is False) + n(), "rare_frac": 0.1 + n(),
                   "purity_chance": 0.1, "purity_chance_matched": 0.2,
                   f"fvu_k{k // 2}": fvu * (1.5 - 0.3 * ratio) + n(), f"fvu_k{2 * k}": fvu * (0.9 + 0.05 * ratio) + n(),
                   f"fvu_k{4 * k}": fvu * (0.85 + 0.08 * ratio) + n(),
                   "probe_n1": 0.4 + 0.1 * ratio + n(), "probe_n2": 0.5 + 0.1 * ratio + n(),
                   "probe_n4": 0.6 + 0.1 * ratio + n(), "probe_n8": 0.7 + n()}
            for c in MS_COLUMNS + PURITY_COLUMNS:
                alive = c in ("ms_mean", "purity")
                row[c] = 0.3 + n() + gain * on * (uncontrolled if alive else controlled)
            rows.append(row)
    return pd.DataFrame(rows)


def baseline_front(gain_per_log_fvu: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """Baseline k-fronts of both backbones, k = 4 .. 64, 2 seeds, FVU 0.32 → 0.12, with MS (all columns) and purity
    rising by `gain_per_log_fvu` per unit decrease of log FVU around the grid's FVU 0.2."""
    rng = np.random.default_rng(seed)
    rows = []
    for bb, (k, f), sd in itertools.product(("embedded", "efficientnet-lite0"),
                                            zip((4, 8, 16, 32, 64), (0.32, 0.26, 0.2, 0.15, 0.12)), range(2)):
        fvu = f * (1 + rng.normal(0, 0.01))
        value = 0.3 - gain_per_log_fvu * np.log(fvu / 0.2)
        rows.append({"backbone": bb, "dataset": "fashion-mnist", "k": k, "seed": sd, "method": "baseline",
                     "mask": None, "fvu": fvu, "purity_chance": 0.1, "purity_chance_matched": 0.2,
                     **{c: value for c in MS_COLUMNS + PURITY_COLUMNS}})
    return pd.DataFrame(rows)


def primary(effects: pd.DataFrame, effect: str, scope: str = "pooled") -> pd.Series:
    return effects[(effects.scope == scope) & (effects.effect == effect) & effects.primary].squeeze()


def test_front_value_by_hand():
    front = pd.DataFrame({"method": ["baseline"] * 5 + ["l1/l2"], "k": [4, 4, 8, 16, 16, 8],
                          "seed": [0, 1, 0, 0, 1, 0], "fvu": [0.4, 0.2, 0.1, 0.06, 0.04, 0.3],
                          "m": [1.0, 3.0, 5.0, 8.0, 6.0, 100.0]})
    # per k over seeds: (F, M) = (0.3, 2), (0.1, 5), (0.05, 7); the l1/l2 row is not part of the baseline front
    at = 0.2  # between F = 0.1 and 0.3: 5 + (2 − 5) · (log 0.2 − log 0.1) / (log 0.3 − log 0.1)
    assert front_value(front, at, "m") == pytest.approx(5 - 3 * np.log(2) / np.log(3))
    assert front_value(front, 0.07, "m") == pytest.approx(7 - 2 * np.log(0.07 / 0.05) / np.log(2))
    assert front_value(front, 0.1, "m") == pytest.approx(5.0)
    assert front_value(front, 0.3, lambda r: 2 * r["m"]) == pytest.approx(4.0)  # a row function as the metric
    assert np.isnan(front_value(front, 0.31, "m")) and np.isnan(front_value(front, 0.049, "m"))  # no extrapolation
    assert np.isnan(front_value(front, 0.2, "absent column"))


def test_known_gain_supports_and_zero_is_inconclusive():
    effects = controlled_effects(grid_table(gain=0.1))
    assert set(effects.scope) == {"embedded", "efficientnet-lite0", "pooled"}
    for r in ("off-support l1", "l1/l2"):
        ms = primary(effects, f"{r}: Δ MS")
        assert ms.form == "cross-model, frequent latents" and ms.n == 30 and ms.status == "supports"
        assert ms.lo < 0.1 < ms.hi and ms["mean"] == pytest.approx(0.1, abs=0.005)
        assert primary(effects, f"{r}: Δ MS", "embedded").n == 15
        assert primary(effects, f"{r}: Δ purity").form == "frequent latents, above chance"
        fvu = effects[effects.effect == f"{r}: relative Δ FVU"]
        assert (fvu.status == "shown").all() and not fvu.primary.any()
    verdicts = controlled_verdicts(grid_table(gain=0.1))
    assert len(verdicts) == 3 * 4 and (verdicts.verdict == "holds").all() and not verdicts.changed.any()

    zero = controlled_effects(grid_table(gain=0.0))
    claim1 = zero[(zero.claim == CLAIMS[0]) & (zero.status != "shown")]
    assert (claim1.status == "inconclusive").all()
    assert (controlled_verdicts(grid_table(gain=0.0)).set_index("claim").loc[CLAIMS[0], "verdict"]
            == "does not hold").all()


def test_a_gain_only_in_the_uncontrolled_columns_changes_the_verdict():
    verdicts = controlled_verdicts(grid_table(gain=0.1, controlled=False)).set_index(["scope", "claim"])
    c1 = verdicts.xs(CLAIMS[0], level="claim")
    assert (c1.verdict == "does not hold").all() and (c1.verdict_uncontrolled == "holds").all() and c1.changed.all()
    others = verdicts.drop(CLAIMS[0], level="claim")
    assert (others.verdict == "holds").all() and not others.changed.any()


def test_holm_families_and_pooled_pairs():
    effects = controlled_effects(grid_table(gain=0.02, noise=0.02))
    for family in (effects.primary, ~effects.primary):
        want = holm(effects.loc[family, "p"].tolist())["p_adjusted"]
        assert effects.loc[family, "p_holm"].tolist() == pytest.approx(want, nan_ok=True)
    assert effects.primary.sum() == 3 * (2 * 2 + 2 + 1 + 3)  # scopes × (MS, purity per reg; dead per reg; k; 3 probes)
    per_scope = effects.groupby("scope").n.sum()
    assert per_scope["pooled"] == per_scope["embedded"] + per_scope["efficientnet-lite0"]
    ms = primary(effects, "l1/l2: Δ MS")  # status follows p_holm, not p
    assert ms.status == ("supports" if ms.p_holm <= 0.05 else "inconclusive") and ms.p_holm >= ms.p
    one = controlled_effects(grid_table(backbones=("embedded",)))
    assert set(one.scope) == {"embedded"}  # no "pooled" scope repeating the single backbone


def test_nan_cross_columns_fall_back_to_own_space():
    table = grid_table()
    table.loc[table.backbone == "embedded", ["ms_cross_mean", "ms_cross_mean_frequent"]] = np.nan
    effects = controlled_effects(table)
    assert primary(effects, "l1/l2: Δ MS", "embedded").form == "own space, frequent latents"
    assert primary(effects, "l1/l2: Δ MS", "efficientnet-lite0").form == "cross-model, frequent latents"
    embedded = effects[(effects.scope == "embedded") & (effects.effect == "l1/l2: Δ MS")]
    assert list(embedded.form).count("own space, frequent latents") == 1
    assert "cross-model, alive mean" not in set(embedded.form)  # a beside form with no data is left out
    pooled = primary(effects, "l1/l2: Δ MS")  # the pooled scope has cross values for one backbone: its 15 pairs
    assert pooled.form == "cross-model, frequent latents" and pooled.n == 15
    no_cross = controlled_effects(grid_table().drop(columns=["ms_cross_mean", "ms_cross_mean_frequent"]))
    ms_rows = no_cross[no_cross.primary & no_cross.effect.str.endswith("Δ MS")]
    assert set(ms_rows.form) == {"own space, frequent latents"}


def test_matched_fvu_removes_a_gain_that_the_front_explains():
    # the regularizers reach FVU 0.15 (baseline 0.2) and their MS sits on the baseline's front there: raw Δ MS > 0,
    # Δ MS at matched FVU ≈ 0; a row off the front's FVU range is dropped
    table = grid_table(gain=0.0)
    reg = table.method != "baseline"
    table.loc[reg, "fvu"] = 0.15
    on_front = 0.3 - 0.5 * np.log(0.15 / 0.2)
    table.loc[reg, list(MS_COLUMNS + PURITY_COLUMNS)] = on_front
    table.loc[(table.method == "l1/l2") & (table.seed == 0), "fvu"] = 0.05  # below the front
    effects = controlled_effects(table, baseline_front(gain_per_log_fvu=0.5))
    for r, n in (("off-support l1", 30), ("l1/l2", 24)):
        assert primary(effects, f"{r}: Δ MS").status == "supports"
        matched = primary(effects, f"{r}: Δ MS at matched FVU")
        assert matched.form == "cross-model, frequent latents" and matched.n == n
        assert abs(matched["mean"]) < 0.01 and matched.status != "supports"
        assert primary(effects, f"{r}: Δ purity at matched FVU").n == n
    verdict = controlled_verdicts(table, baseline_front(0.5)).set_index(["scope", "claim"]).loc[("pooled", CLAIMS[0])]
    assert verdict.verdict == "mixed" and verdict.verdict_uncontrolled == "holds" and verdict.changed


def test_per_k_effects_and_written_files(tmp_path):
    table, fronts = grid_table(), baseline_front()
    per_k = per_k_effects(table, fronts)
    assert set(zip(per_k.scope, per_k.k)) == set(itertools.product(("embedded", "efficientnet-lite0", "pooled"),
                                                                    (8, 16, 32)))
    ms = per_k[(per_k.effect == "l1/l2: Δ MS") & (per_k.k == 8)].set_index("scope")
    assert ms.loc["embedded", "n"] == 5 and ms.loc["pooled", "n"] == 10 and (ms.lo < 0.1).all() and (ms.hi > 0.1).all()

    paths = write_verdicts(table, fronts, tmp_path / "out")
    assert [p.name for p in paths] == ["verdicts.csv", "verdicts.md", "claims.csv", "per_k.csv", "variants.csv"]
    effects = controlled_effects(table, fronts)
    back = pd.read_csv(paths[0])
    assert list(back.columns) == list(effects.columns) and len(back) == len(effects)
    assert back.p_holm.tolist() == pytest.approx(effects.p_holm.tolist(), nan_ok=True)
    assert pd.read_csv(paths[2]).verdict.tolist() == controlled_verdicts(table, fronts).verdict.tolist()
    assert len(pd.read_csv(paths[3])) == len(per_k)
    md = paths[1].read_text(encoding="utf-8")
    assert md.index("## Claims") < md.index("## Effects")
    assert sum(line.startswith("| ") for line in md.splitlines()) == 2 + len(effects) + len(controlled_verdicts(table))
    assert not list((tmp_path / "out").glob(".*tmp*"))


def with_variant(table: pd.DataFrame, name: str = "multi-topk", flatter: float = 0.0, seed: int = 1) -> pd.DataFrame:
    """`table` plus one `name` row per baseline row: the baseline's numbers with FVU(k/2) lowered by `flatter`·fvu
    (a variant more robust to k), and small noise elsewhere."""
    rng = np.random.default_rng(seed)
    base = table[table["method"] == "baseline"].copy()
    base["method"] = name
    for c in [c for c in base.columns if c.startswith(("fvu", "ms_", "probe_"))]:
        base[c] = base[c] + rng.normal(0, 0.002, len(base))
    k_half = [f"fvu_k{k // 2}" for k in base["k"]]
    for i, (idx, col) in enumerate(zip(base.index, k_half)):
        base.loc[idx, col] -= flatter * base.loc[idx, "fvu"]
    return pd.concat([table, base], ignore_index=True)


def slow_variant_deltas(table, method, mask, variant, f):
    """The paired deltas of variant_effects, by a plain double loop."""
    out = []
    for _, a in table.iterrows():
        if a["method"] != method or (mask is not None and str(a["mask"]) != str(mask)):
            continue
        for _, b in table.iterrows():
            if b["method"] == variant and all(a[c] == b[c] for c in ("backbone", "dataset", "k", "seed")):
                out.append(f(a) - f(b))
    return out


def test_variant_effects_match_a_slow_reference_and_see_who_is_more_robust():
    from sae_tutorial.verdicts import k_degradation, variant_effects

    table = with_variant(grid_table(), "multi-topk", flatter=0.0)
    table = with_variant(table, "matryoshka", flatter=0.6, seed=2)   # far flatter than ℓ1/ℓ2's 0.3
    effects = variant_effects(table)
    assert set(effects.scope) == {"embedded", "efficientnet-lite0", "pooled"}
    assert set(effects.variant) == {"multi-topk", "matryoshka"} and set(effects.method) == {"l1/l2", "baseline"}
    row = lambda s, m, v, e: effects[(effects.scope == s) & (effects.method == m) & (effects.variant == v)  # noqa: E731
                                     & (effects.effect == e)].iloc[0]
    sub = table[table.backbone == "embedded"]
    expected = slow_variant_deltas(sub, "l1/l2", True, "matryoshka", k_degradation)
    r = row("embedded", "l1/l2", "matryoshka", "Δ mean FVU(k')/FVU(k)")
    assert r.n == len(expected) == 15 and r["mean"] == pytest.approx(np.mean(expected))
    # ℓ1/ℓ2 is flatter than the plain-copy Multi-TopK, and less flat than the Matryoshka built flatter still
    assert row("pooled", "l1/l2", "multi-topk", "Δ mean FVU(k')/FVU(k)").status == "method better"
    assert row("pooled", "l1/l2", "matryoshka", "Δ mean FVU(k')/FVU(k)").status == "variant better"
    assert row("pooled", "baseline", "multi-topk", "Δ FVU").status == "inconclusive"
    assert effects.p_holm.dropna().ge(effects.p.dropna()).all()
    assert variant_effects(grid_table()).empty   # no variant in the table: nothing to compare

