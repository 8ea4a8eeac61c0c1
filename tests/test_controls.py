"""The controlled forms of MS and purity (metrics/controls.py) against slow obvious references, their keys in
evaluate's report, and MS scored in another space (cross-model MS)."""
import itertools
import math

import numpy as np
import pytest
import torch

import sae_tutorial as st
from sae_tutorial import metrics
from test_metrics import ms_pair_loop, purity_brute_force


def test_dead_rare_frequent_partition_and_means():
    counts = torch.tensor([0, 1, 4, 5, 9, 0, 5])
    scores = torch.tensor([math.nan, 0.9, 0.5, 0.3, 0.1, math.nan, math.nan], dtype=torch.float64)
    assert metrics.rare_latents(counts, 5).tolist() == [False, True, True, False, False, False, False]
    assert metrics.frequent_latents(counts, 5).tolist() == [False, False, False, True, True, False, True]
    got = metrics.controlled_means(scores, counts, top_n=5)
    assert got["alive"] == pytest.approx((0.9 + 0.5 + 0.3 + 0.1) / 4)
    assert got["dead_zero"] == pytest.approx((0.9 + 0.5 + 0.3 + 0.1) / 7)
    assert got["frequent"] == pytest.approx((0.3 + 0.1) / 2)          # latent 6: frequent but undefined
    assert math.isnan(metrics.controlled_means(scores, counts, top_n=10)["frequent"])
    with pytest.raises(ValueError, match="counts"):
        metrics.controlled_means(scores, counts[:3], 5)


def chance_exact(y, r):
    """E over all r-subsets of the images of (largest class count / r): every subset is equally likely."""
    subsets = list(itertools.combinations(range(len(y)), r))
    if y.ndim == 1:
        return float(np.mean([np.bincount(y[list(s)]).max() / r for s in subsets]))
    return float(np.mean([y[list(s)].sum(0).max() / r for s in subsets]))


@pytest.mark.parametrize("labels", [np.array([0, 0, 0, 0, 1, 1, 2, 2, 3, 1]),
                                    np.array([[1, 0], [1, 1], [0, 1], [0, 0], [1, 0], [0, 1], [1, 1], [0, 1]])])
def test_purity_chance_curve_matches_enumeration(labels):
    curve = metrics.purity_chance_curve(labels, top_n=5, n_draws=20_000, seed=1)
    assert curve.shape == (5,) and curve.dtype == torch.float64
    exact = torch.tensor([chance_exact(labels, r) for r in range(1, 6)], dtype=torch.float64)
    assert torch.allclose(curve, exact, atol=0.012)              # Monte Carlo: 20k draws, SE ≤ 0.0035
    assert curve[-1].item() == metrics.purity_chance(labels, top_n=5, n_draws=20_000, seed=1)
    assert metrics.purity_chance_curve(labels, top_n=50).shape == (len(labels),)    # capped at N


def test_matched_chance():
    curve = torch.tensor([1.0, 0.6, 0.4], dtype=torch.float64)
    got = metrics.matched_chance(torch.tensor([3, 0, 1, 2]), curve)
    assert got[[0, 2, 3]].tolist() == [0.4, 1.0, 0.6] and math.isnan(got[1])
    with pytest.raises(ValueError, match="top_sizes"):
        metrics.matched_chance(torch.tensor([4]), curve)


def test_evaluate_controls_match_brute_force():
    torch.manual_seed(0)
    sae, top_n = st.TopKSAE(16, 64, 4, seed=0), 12
    x, y = torch.randn(300, 16), torch.randint(0, 3, (300,))
    report = metrics.evaluate(sae, x, labels=y, top_n=top_n, chunk_size=64, ks=[], probe_ns=[], sample_size=100,
                              cknna_samples=20)
    with torch.no_grad():
        codes = sae(x).codes.double()
    counts = (codes != 0).sum(0)
    frequent, rare = counts >= top_n, (counts >= 1) & (counts < top_n)
    assert frequent.any() and rare.any()                          # the case covers both kinds
    ms, purity = ms_pair_loop(codes, x), purity_brute_force(codes, y, top_n, weighted=False)
    curve = metrics.purity_chance_curve(y, top_n)
    chance = [curve[min(int(c), top_n) - 1].item() if c > 0 else math.nan for c in counts]
    chance = torch.tensor(chance, dtype=torch.float64)
    assert report["rare"] == int(rare.sum()) and report["rare_frac"] == pytest.approx(float(rare.float().mean()))
    assert report["frequent"] == int(frequent.sum())
    assert report["ms_mean_frequent"] == pytest.approx(float(np.nanmean(ms[frequent])), abs=1e-9)
    assert report["purity_frequent"] == pytest.approx(float(np.nanmean(purity[frequent])), abs=1e-12)
    assert report["purity_dead_zero"] == pytest.approx(float(purity.nan_to_num(0).mean()), abs=1e-12)
    assert report["purity_chance_matched"] == pytest.approx(float(np.nanmean(chance)), abs=1e-12)
    assert report["purity_chance_matched_dead_zero"] == pytest.approx(float(chance.nan_to_num(0).mean()), abs=1e-12)
    assert report["purity_chance_matched"] > report["purity_chance"]     # rare latents: higher chance level
    unlabelled = metrics.evaluate(sae, x, top_n=top_n, ks=[], probe_ns=[], sample_size=100, cknna_samples=20)
    assert unlabelled["ms_mean_frequent"] == report["ms_mean_frequent"] and "purity_frequent" not in unlabelled


def test_evaluate_scores_ms_in_another_space():
    """An SAE trained on space A; MS of its latents measured with B's embeddings of the same rows."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(400, 16, generator=g)
    b = torch.tanh(a[:, :6] @ torch.randn(6, 10, generator=g)) + 0.3 * torch.randn(400, 10, generator=g)
    sae = st.TopKSAE(16, 64, 4, seed=0)
    st.train(sae, a, st.TrainConfig(batch_size=100, epochs=2, warmup_steps=1, log_every=1000))
    options = dict(ks=[], probe_ns=[], sample_size=100, cknna_samples=20, top_n=10)
    own, cross = metrics.evaluate(sae, a, **options), metrics.evaluate(sae, a, embeddings=b, **options)
    with torch.no_grad():
        direct = metrics.monosemanticity(sae.encode(a), b)
    assert cross["ms_mean"] == pytest.approx(metrics.alive_mean(direct), rel=1e-9)
    assert cross["ms_max"] == pytest.approx(metrics.alive_max(direct), rel=1e-9)
    assert abs(cross["ms_mean"] - own["ms_mean"]) > 0.01
    assert cross["fvu"] == own["fvu"]                                     # only MS changes space
