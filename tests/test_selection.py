"""λ chosen on validation (st.selection) on synthetic numbers: the split, the rule, the saved file, the
chapters' fallback, and the Pareto front against a brute-force reference."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

import sae_tutorial as st
from sae_tutorial import selection


def test_validation_split_is_a_seeded_partition():
    tr, val = selection.validation_split(1000, 0.1, seed=3)
    assert len(val) == 100 and len(tr) == 900
    assert torch.equal(torch.cat([tr, val]).sort().values, torch.arange(1000))
    assert torch.equal(selection.validation_split(1000, 0.1, seed=3)[1], val)
    assert not torch.equal(selection.validation_split(1000, 0.1, seed=4)[1], val)
    assert [len(p) for p in selection.validation_split(2, 0.01)] == [1, 1]
    with pytest.raises(ValueError, match="fraction"):
        selection.validation_split(100, 1.5)
    with pytest.raises(ValueError, match="too few"):
        selection.validation_split(1)


def sweep_rows():
    """Validation FVU of a sweep: baseline 0.20 / 0.30 at k = 8 / 16 (seed 0), 0.21 / 0.31 (seed 1)."""
    rows = []
    base = {(8, 0): 0.20, (16, 0): 0.30, (8, 1): 0.21, (16, 1): 0.31}
    for (k, seed), fvu in base.items():
        rows.append(dict(backbone="embedded", method="baseline", mask=None, k=k, seed=seed, **{"lambda": 0.0},
                         fvu=fvu))
        for lam, rel_off, rel_rat in ((0.001, 0.005, 0.0), (0.003, 0.015, 0.01), (0.01, 0.05, 0.019),
                                      (0.03, 0.2, 0.03)):
            rows.append(dict(backbone="embedded", method="off-support l1", mask=True, k=k, seed=seed,
                             **{"lambda": lam}, fvu=fvu * (1 + rel_off)))
            rows.append(dict(backbone="embedded", method="l1/l2", mask=True, k=k, seed=seed, **{"lambda": lam},
                             fvu=fvu * (1 + rel_rat)))
            rows.append(dict(backbone="embedded", method="l1/l2", mask=False, k=k, seed=seed, **{"lambda": lam},
                             fvu=fvu * 0.5))                                     # the ablation: never read
    return rows


def test_rule_picks_the_largest_lambda_within_the_validation_budget():
    chosen = selection.choose_lambdas(sweep_rows(), budget=0.02)["embedded"]
    assert chosen["off-support l1"]["lambda"] == 0.003 and chosen["l1/l2"]["lambda"] == 0.01
    assert chosen["off-support l1"]["rel_fvu"] == pytest.approx(0.015)
    assert chosen["l1/l2"]["n_pairs"] == 4 and chosen["l1/l2"]["within_budget"]
    assert chosen["l1/l2"]["swept"] == [0.001, 0.003, 0.01, 0.03]
    tight = selection.choose_lambdas(pd.DataFrame(sweep_rows()), budget=0.001)["embedded"]
    assert tight["l1/l2"]["lambda"] == 0.001 and tight["l1/l2"]["within_budget"]        # ΔFVU = 0
    assert tight["off-support l1"]["lambda"] == 0.001 and not tight["off-support l1"]["within_budget"]
    # pairing: a λ measured only against another k's baseline does not count
    odd = [r for r in sweep_rows() if not (r["method"] == "baseline" and r["k"] == 16)]
    assert selection.choose_lambdas(odd)["embedded"]["l1/l2"]["n_pairs"] == 2
    with pytest.raises(ValueError, match="baseline"):
        selection.choose_lambdas([r for r in sweep_rows() if r["method"] != "baseline"])


def test_rule_stops_at_the_first_lambda_over_the_budget():
    """A larger λ that dips back under the budget after a smaller one went over (seed noise) is not chosen."""
    rows = [dict(backbone="b", method="baseline", **{"lambda": 0.0}, fvu=0.2)]
    for lam, rel in ((0.0003, 0.008), (0.001, 0.02), (0.003, 0.0068), (0.01, 0.04)):
        rows.append(dict(backbone="b", method="off-support l1", **{"lambda": lam}, fvu=0.2 * (1 + rel)))
    for budget, lam, over in ((0.015, 0.0003, 0.001), (0.03, 0.003, 0.01), (0.05, 0.01, None),
                              (0.005, 0.0003, 0.0003)):
        got = selection.choose_lambdas(rows, budget=budget)["b"]["off-support l1"]
        assert (got["lambda"], got["over"], got["within_budget"]) == (lam, over, budget > 0.008), budget


def test_saved_choice_is_what_chapters_read_and_the_fallback(tmp_path, monkeypatch):
    monkeypatch.setenv("SAE_TUTORIAL_CACHE", str(tmp_path))
    fallback = st.experiments.lambdas("embedded")
    assert fallback == {**selection.DEFAULTS, "source": "default (no validation selection saved)"}
    preset = st.grid.PRESETS["embedded"]
    assert (preset.lambda_off, preset.lambda_ratio) == (fallback["lambda_off"], fallback["lambda_ratio"])
    assert st.experiments.lambdas("synthetic")["lambda_off"] == selection.SYNTHETIC_DEFAULTS["lambda_off"]
    path = selection.save_lambdas(selection.choose_lambdas(sweep_rows()))
    assert path == tmp_path / "reproduce" / "lambdas.json"
    assert json.loads(path.read_text())["budget"] == selection.FVU_BUDGET
    got = st.experiments.lambdas("embedded")
    assert (got["lambda_off"], got["lambda_ratio"]) == (0.003, 0.01) and got["source"].startswith("validation")
    assert st.experiments.lambdas("efficientnet-lite0")["source"].startswith("default")   # not selected yet
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        st.experiments.lambdas("embedded")


def dominated_brute_force(points):
    """points (n, 3): fvu, ms, purity; i is dominated if some j is no worse on all three and better on one."""
    out = []
    for i, p in enumerate(points):
        out.append(any(q[0] <= p[0] and q[1] >= p[1] and q[2] >= p[2] and
                       (q[0] < p[0] or q[1] > p[1] or q[2] > p[2]) for j, q in enumerate(points) if j != i))
    return np.array(out)


def test_pareto_front_matches_brute_force():
    rng = np.random.default_rng(0)
    rows = [{"method": m, "lambda": lam, "fvu": round(rng.random(), 1), "ms_mean": round(rng.random(), 1),
             "purity": round(rng.random(), 1)} for m in ("baseline", "l1/l2") for lam in range(30)]  # ties occur
    rows.append({"method": "l1/l2", "lambda": 99, "fvu": math.nan, "ms_mean": 1.0, "purity": 1.0})
    front = selection.pareto_front(rows)
    for method in ("baseline", "l1/l2"):
        group = [r for r in rows if r["method"] == method and not math.isnan(r["fvu"])]
        pts = np.array([[r["fvu"], r["ms_mean"], r["purity"]] for r in group])
        want = sorted(r["lambda"] for r, d in zip(group, dominated_brute_force(pts)) if not d)
        got = front[front["method"] == method]
        assert sorted(got["lambda"]) == want and got["fvu"].is_monotonic_increasing
    overall = selection.pareto_front(rows, gains=("ms_mean",), by=None)
    pts = np.array([[r["fvu"], r["ms_mean"], r["ms_mean"]] for r in rows[:-1]])
    assert len(overall) == int((~dominated_brute_force(pts)).sum())
    with pytest.raises(ValueError, match="purity"):
        selection.pareto_front([{"method": "a", "fvu": 1.0, "ms_mean": 0.1}])
