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
