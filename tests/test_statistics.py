"""The new statistics helpers of verdicts.py against scipy and Holm's step-down definition."""
import math

import numpy as np
import pytest
from scipy import stats

from sae_tutorial.verdicts import claims, effect_statistics, holm, paired_ci
from test_verdicts import synthetic_table


@pytest.mark.parametrize("n, level", [(2, 0.95), (9, 0.95), (30, 0.9)])
def test_paired_ci_matches_scipy(n, level):
    d = np.random.default_rng(n).normal(0.02, 0.05, n)
    got = paired_ci(d.tolist(), level)
    ref = stats.ttest_1samp(d, 0.0)
    ci = ref.confidence_interval(level)
    assert got["t"] == pytest.approx(ref.statistic, rel=1e-10) and got["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert (got["lo"], got["hi"]) == (pytest.approx(ci.low, rel=1e-10), pytest.approx(ci.high, rel=1e-10))
    assert got["df"] == n - 1 and got["se"] == pytest.approx(stats.sem(d), rel=1e-10)


def test_paired_ci_edge_cases():
    assert math.isnan(paired_ci([0.3])["lo"]) and paired_ci([0.3])["mean"] == 0.3
    flat = paired_ci([0.5, 0.5, 0.5])
    assert (flat["lo"], flat["hi"], flat["p"], flat["t"]) == (0.5, 0.5, 0.0, math.inf)
    with pytest.raises(ValueError, match="level"):
        paired_ci([0.1, 0.2], level=95)


def holm_step_down(p, alpha):
    """Holm (1979): reject H_(1), H_(2), ... while p_(i) ≤ alpha / (m − i + 1); stop at the first failure."""
    order, reject = np.argsort(p, kind="stable"), np.zeros(len(p), bool)
    for i, j in enumerate(order):
        if p[j] > alpha / (len(p) - i):
            break
        reject[j] = True
    return reject


def test_holm_matches_the_step_down_definition():
    rng = np.random.default_rng(0)
    for _ in range(200):
        m = int(rng.integers(1, 12))
        p = np.where(rng.random(m) < 0.5, rng.random(m) * 0.02, rng.random(m))
        got = holm(p.tolist(), 0.05)
        assert got["reject"] == holm_step_down(p, 0.05).tolist()
        assert all(a >= b - 1e-15 for a, b in zip(got["p_adjusted"], p))     # never below the raw p
    # a hand-computed case: sorted 0.01, 0.02, 0.03, 0.04 → 4·0.01, 3·0.02, max(0.06, 2·0.03), max(0.06, 0.04)
    got = holm([0.03, 0.01, 0.04, 0.02], 0.05)
    assert got["p_adjusted"] == pytest.approx([0.06, 0.04, 0.06, 0.06]) and got["reject"] == [False, True, False, False]
    with_nan = holm([0.01, math.nan, 0.02], 0.05)
    assert with_nan["p_adjusted"][0] == pytest.approx(0.02) and math.isnan(with_nan["p_adjusted"][1])
    assert with_nan["reject"] == [True, False, True]


def test_effect_statistics_cover_every_effect_of_the_claims():
    table = synthetic_table(True)
    stats_table = effect_statistics(table)
    effects = [e for c in claims(table) for e in c["effects"]]
    assert stats_table["effect"].tolist() == [e["effect"] for e in effects]
    assert np.allclose(stats_table["t"], [e["t"] for e in effects]) and np.allclose(stats_table["n"], 9)
    assert (stats_table["lo"] <= stats_table["mean"]).all() and (stats_table["p_holm"] >= stats_table["p"]).all()
