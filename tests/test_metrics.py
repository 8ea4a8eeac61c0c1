"""st.metrics: each metric against a slow, obvious reference on small inputs; streaming == in memory; bad inputs."""
import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import r2_score

import sae_tutorial as st
from sae_tutorial import metrics
from sae_tutorial.train import default_lr
from sae_tutorial.losses import fvu as loss_fvu


def chunks(t, sizes):
    """t split into row chunks of the given sizes (the last takes the rest), as a one-shot generator."""
    cuts = np.cumsum(sizes).tolist()
    return (t[a:b] for a, b in zip([0, *cuts], [*cuts, len(t)]) if b > a)


def sparse_acts(n, m, density=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(n, m, generator=g, dtype=torch.float64)
    return a * (torch.rand(n, m, generator=g) < density)


# ---------------------------------------------------------------- reconstruction
def test_reconstruction_metrics_match_references():
    x, x_hat = torch.randn(200, 12, dtype=torch.float64), torch.randn(200, 12, dtype=torch.float64)
    x_hat = x + 0.3 * x_hat
    assert metrics.fvu(x, x_hat) == pytest.approx(float(loss_fvu(x, x_hat)), rel=1e-12)
    assert metrics.r2(x, x_hat) == pytest.approx(r2_score(x.numpy(), x_hat.numpy()), rel=1e-12)
    cos = np.mean([float(x[i] @ x_hat[i] / (x[i].norm() * x_hat[i].norm())) for i in range(200)])
    assert metrics.cosine(x, x_hat) == pytest.approx(cos, rel=1e-12)


def test_shared_update_equals_one_update_per_reconstruction():
    from sae_tutorial.metrics.reconstruction import Reconstruction, update_shared
    x = torch.randn(120, 9, dtype=torch.float64) + 2.0
    x_hats = [x + s * torch.randn_like(x) for s in (0.1, 0.5)] + [torch.zeros_like(x)]
    shared, alone = [Reconstruction() for _ in x_hats], [Reconstruction() for _ in x_hats]
    for a, b in [(0, 50), (50, 120)]:
        update_shared(shared, x[a:b], [h[a:b] for h in x_hats])
    for s, h in zip(alone, x_hats):
        for a, b in [(0, 50), (50, 120)]:
            s.update(x[a:b], h[a:b])
    for s, a, h in zip(shared, alone, x_hats):
        assert (s.fvu(), s.r2(), s.cosine()) == (a.fvu(), a.r2(), a.cosine())
        ref = F.cosine_similarity(x, h, dim=1).mean().item()         # torch's ε: a zero x̂ has cosine 0
        assert s.cosine() == pytest.approx(ref, rel=1e-12, abs=1e-15)
    with pytest.raises(ValueError):
        update_shared(shared, x, x_hats[:2])


def test_reconstruction_streamed_equals_in_memory():
    from sae_tutorial.metrics.reconstruction import Reconstruction
    x = torch.randn(300, 8, dtype=torch.float64) + 5.0
    x_hat = x + 0.1 * torch.randn_like(x)
    stream = Reconstruction()
    for a, b in [(0, 7), (7, 150), (150, 151), (151, 300)]:
        stream.update(x[a:b], x_hat[a:b])
    assert stream.fvu() == pytest.approx(metrics.fvu(x, x_hat), rel=1e-10)
    assert stream.r2() == pytest.approx(metrics.r2(x, x_hat), rel=1e-10)
    assert stream.cosine() == pytest.approx(metrics.cosine(x, x_hat), rel=1e-12)


def test_l0_and_dead_latents():
    a = sparse_acts(100, 30, 0.05)
    a[:, 3] = 0
    a[:, 7] = 0
    a[42, 7] = 0.5                                                    # alive on one image
    dead = metrics.dead_latents(a)
    assert dead.dtype == torch.bool and dead.shape == (30,)
    assert torch.equal(dead, (a == 0).all(0)) and dead[3] and not dead[7]
    assert metrics.l0(a) == pytest.approx(float((a != 0).sum(1).double().mean()))
    assert torch.equal(metrics.dead_latents(chunks(a, [13, 50])), dead)
    assert metrics.l0(chunks(a, [1, 2, 3])) == pytest.approx(metrics.l0(a))


def test_decoder_orthogonality_matches_pair_loop():
    W = torch.randn(20, 6)
    D = F.normalize(W.double(), dim=1)
    ref = np.mean([float(D[i] @ D[j]) ** 2 for i in range(20) for j in range(20) if i != j])
    assert metrics.decoder_orthogonality(W) == pytest.approx(ref, rel=1e-10)
    assert metrics.decoder_orthogonality(torch.eye(5)) == pytest.approx(0.0, abs=1e-15)
    sae = st.TopKSAE(6, 20, 2, seed=1)
    assert metrics.decoder_orthogonality(sae) == pytest.approx(metrics.decoder_orthogonality(sae.W_dec), rel=1e-12)


# ---------------------------------------------------------------- monosemanticity
def ms_pair_loop(a, e):
    """MS_j = Σ_{n<m} ã_n ã_m s_nm / Σ_{n<m} ã_n ã_m over all O(N²) pairs (Pach et al.'s definition)."""
    a, e = a.numpy(), F.normalize(e.double(), dim=1).numpy()
    s = e @ e.T
    iu = np.triu_indices(len(a), k=1)
    out = []
    for j in range(a.shape[1]):
        lo, hi = a[:, j].min(), a[:, j].max()
        if hi == lo:
            out.append(math.nan)
            continue
        t = (a[:, j] - lo) / (hi - lo)
        w = np.outer(t, t)[iu]
        out.append((w * s[iu]).sum() / w.sum() if w.sum() > 0 else math.nan)
    return torch.tensor(out, dtype=torch.float64)


@pytest.fixture
def ms_case():
    """N = 300 images, 10 latents covering every case of the closed form."""
    n = 300
    a = sparse_acts(n, 10, 0.1, seed=3)
    a[:, 1] = 0
    a[[17, 201], 1] = torch.tensor([0.8, 0.05], dtype=torch.float64)       # rare: fires on exactly 2 images
    a[:, 2] = 0
    a[[5, 6], 2] = torch.tensor([2.0, 3.0], dtype=torch.float64)           # rare, in the same first chunk
    a[:, 3] = 0                                                            # dead -> NaN
    a[:, 4] = 0
    a[99, 4] = 1.0                                                         # fires on one image -> NaN
    a[:, 5] = 3.0 + torch.rand(n, dtype=torch.float64)                     # always on: min > 0
    a[:, 6] = torch.randn(n, dtype=torch.float64)                          # signed (e.g. pre-activations)
    a[:, 7] = 0.7                                                          # constant, non-zero -> NaN
    a[:, 8] = 1.0 + torch.rand(n, dtype=torch.float64)
    a[250, 8] = 0.0                                                        # on in the first chunks, min later
    e = torch.randn(n, 5, dtype=torch.float64) + 0.5                       # not unit-norm: MS normalises
    return a, e


def test_monosemanticity_matches_pair_loop(ms_case):
    a, e = ms_case
    ref = ms_pair_loop(a, e)
    got = metrics.monosemanticity(a, e)
    assert got.dtype == torch.float64 and got.shape == (10,)
    assert torch.equal(torch.isnan(got), torch.isnan(ref))
    assert torch.isnan(got[[3, 4, 7]]).all()
    ok = ~torch.isnan(ref)
    assert torch.allclose(got[ok], ref[ok], rtol=0, atol=1e-9)
    cos = float(F.cosine_similarity(e[17], e[201], dim=0))
    assert got[1].item() == pytest.approx(cos, abs=1e-9)                 # a pair's MS is its cosine


def test_monosemanticity_chunked_equals_in_memory(ms_case):
    a, e = ms_case
    full = metrics.monosemanticity(a, e)
    streamed = metrics.monosemanticity(chunks(a.float(), [37, 100, 1, 62]), chunks(e, [64, 64, 64]))
    ok = ~torch.isnan(full)
    assert torch.equal(torch.isnan(streamed), ~ok)
    assert torch.allclose(streamed[ok], ms_pair_loop(a.float().double(), e)[ok], rtol=0, atol=1e-9)
    assert torch.allclose(metrics.monosemanticity(list(chunks(a, [150])), e)[ok], full[ok], rtol=0, atol=1e-12)


def test_monosemanticity_summaries():
    s = torch.tensor([0.2, math.nan, 0.6, math.nan], dtype=torch.float64)
    assert metrics.alive_mean(s) == pytest.approx(0.4)
    assert metrics.alive_max(s) == pytest.approx(0.6)
    assert math.isnan(metrics.alive_max(torch.full((3,), math.nan)))


# ---------------------------------------------------------------- class purity
def test_class_purity_hand_computed():
    #                 latent 0          latent 1         latent 2 (never fires)
    a = torch.tensor([[0.9, 0.0, 0.0],
                      [0.8, 0.1, 0.0],
                      [0.7, 0.0, 0.0],
                      [0.1, 0.5, 0.0],
                      [0.0, 0.4, 0.0],
                      [0.2, 0.0, 0.0]])
    y = torch.tensor([0, 0, 1, 1, 1, 2])
    # top 3 of latent 0: images 0, 1, 2 (classes 0, 0, 1); latent 1 fires on only 3 images: 1, 3, 4 (0, 1, 1)
    p = metrics.class_purity(a, y, top_n=3)
    assert p[0].item() == pytest.approx(2 / 3) and p[1].item() == pytest.approx(2 / 3) and math.isnan(p[2])
    pw = metrics.class_purity(a, y, top_n=3, weighted=True)
    assert pw[0].item() == pytest.approx(1.7 / 2.4) and pw[1].item() == pytest.approx(0.9 / 1.0)
    assert metrics.class_purity(a, y, top_n=1)[:2].tolist() == [1.0, 1.0]
    # multi-label: an image counts for each of its classes
    Y = torch.tensor([[1, 0], [1, 1], [0, 1], [0, 1], [0, 1], [1, 0]])
    pm = metrics.class_purity(a, Y, top_n=3)
    assert pm[0].item() == pytest.approx(2 / 3) and pm[1].item() == pytest.approx(1.0)
    pmw = metrics.class_purity(a, Y.numpy().astype(bool), top_n=3, weighted=True)
    assert pmw[0].item() == pytest.approx(1.7 / 2.4) and pmw[1].item() == pytest.approx(1.0)


def purity_brute_force(a, y, top_n, weighted):
    out = []
    for j in range(a.shape[1]):
        pos = torch.nonzero(a[:, j] > 0).flatten()
        top = pos[torch.argsort(a[pos, j], descending=True)[:top_n]]
        if len(top) == 0:
            out.append(math.nan)
            continue
        w = a[top, j].double() if weighted else torch.ones(len(top), dtype=torch.float64)
        out.append(max(float(w[y[top] == c].sum()) for c in range(int(y.max()) + 1)) / float(w.sum()))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("weighted", [False, True])
def test_class_purity_streamed_equals_brute_force(weighted):
    a, y = sparse_acts(500, 40, 0.2, seed=5).float(), torch.randint(0, 4, (500,))
    a[:, 0] = 0
    ref = purity_brute_force(a, y, 7, weighted)
    for acts in (a, chunks(a, [3, 100, 250]), [a[:1], a[1:]]):
        got = metrics.class_purity(acts, y.numpy(), top_n=7, weighted=weighted)
        assert torch.equal(torch.isnan(got), torch.isnan(ref))
        assert torch.allclose(got[1:], ref[1:], atol=1e-12)


def test_purity_chance():
    assert metrics.purity_chance(torch.tensor([0, 0, 0, 1]), top_n=4) == pytest.approx(0.75)
    assert metrics.purity_chance(torch.tensor([0, 1] * 50), top_n=1) == pytest.approx(1.0)
    y = torch.arange(1000) % 10                                        # balanced 10 classes: above 1/10 at n=50
    assert 0.16 < metrics.purity_chance(y, top_n=50, n_draws=300) < 0.22
    assert metrics.purity_chance(torch.ones(20, 3, dtype=torch.int64), top_n=5) == pytest.approx(1.0)


# ---------------------------------------------------------------- probes
def test_truncated_probe_separable_and_random_labels():
    g = torch.Generator().manual_seed(0)
    n, m, C = 800, 64, 4
    y = torch.randint(0, C, (n,), generator=g)
    z = 0.5 * torch.rand(n, m, generator=g) * (torch.rand(n, m, generator=g) < 0.1)
    z[torch.arange(n), y] = 1.0 + torch.rand(n, generator=g)          # the class latent is each row's largest
    acc = metrics.truncated_probe(z[:600], y[:600], chunks(z[600:], [50]), y[600:], ns=[1, 4])
    assert set(acc) == {1, 4} and acc[1] > 0.97 and acc[4] > 0.9
    y_rand = torch.randint(0, C, (n,), generator=g)
    acc_rand = metrics.truncated_probe(z[:600], y_rand[:600], z[600:], y_rand[600:], ns=[2])
    assert abs(acc_rand[2] - 1 / C) < 0.12
    x = torch.randn(n, 8, generator=g) + 3 * F.one_hot(y, 8).float()     # dense reference
    assert metrics.linear_probe(x[:600], y[:600], x[600:], y[600:]) > 0.9


# ---------------------------------------------------------------- CKNNA
def cknna_loops(x, z, k):
    """Huh et al.'s CKNNA written out element by element."""
    def kernel(f):
        f = F.normalize(f.double(), dim=1).tolist()
        return [[sum(p * q for p, q in zip(a, b)) for b in f] for a in f]

    def knn(M, i):
        return set(sorted((j for j in range(len(M)) if j != i), key=lambda j: -M[i][j])[:k])

    def hsic(A, B):  # unbiased HSIC, Song et al. (2012), with zeroed diagonals
        n = len(A)
        A = [[A[i][j] if i != j else 0.0 for j in range(n)] for i in range(n)]
        B = [[B[i][j] if i != j else 0.0 for j in range(n)] for i in range(n)]
        tr = sum(A[i][j] * B[j][i] for i in range(n) for j in range(n))
        sa, sb = sum(map(sum, A)), sum(map(sum, B))
        sab = sum(A[i][q] * B[q][j] for i in range(n) for q in range(n) for j in range(n))
        return (tr + sa * sb / ((n - 1) * (n - 2)) - 2 * sab / (n - 2)) / (n * (n - 3))

    def align(A, B, nbrs):
        n = len(A)
        return hsic([[A[i][j] * (j in nbrs[i]) for j in range(n)] for i in range(n)],
                    [[B[i][j] * (j in nbrs[i]) for j in range(n)] for i in range(n)])

    K, L = kernel(x), kernel(z)
    nK, nL = [knn(K, i) for i in range(len(K))], [knn(L, i) for i in range(len(L))]
    mutual = [a & b for a, b in zip(nK, nL)]
    return align(K, L, mutual) / math.sqrt(align(K, K, nK) * align(L, L, nL))


def test_cknna_matches_direct_formula():
    x = torch.randn(24, 5)
    z = torch.relu(x @ torch.randn(5, 16) + 0.3 * torch.randn(24, 16))
    assert metrics.cknna(x, z, k=5) == pytest.approx(cknna_loops(x, z, 5), rel=1e-9)
    Q, _ = torch.linalg.qr(torch.randn(5, 5))
    assert metrics.cknna(x, x @ Q, k=5) == pytest.approx(1.0, abs=1e-9)   # same kernel up to rotation


# ---------------------------------------------------------------- seed stability, k-robustness
def test_seed_stability_hungarian():
    W = F.normalize(torch.randn(6, 4), dim=1)
    assert metrics.seed_stability(W, W[torch.randperm(6)]) == pytest.approx(1.0, abs=1e-6)
    A, B = torch.randn(5, 3), torch.randn(5, 3)
    cos = F.normalize(A, dim=1) @ F.normalize(B, dim=1).T
    best = max(sum(cos[i, p[i]].item() for i in range(5)) for p in itertools.permutations(range(5))) / 5
    assert metrics.seed_stability(A, B) == pytest.approx(best, abs=1e-6)
    assert metrics.matched_cosines(A, B).shape == (5,)
    sae_a, sae_b = st.TopKSAE(4, 6, 2, seed=0), st.TopKSAE(4, 6, 2, seed=1)
    assert -1 <= metrics.seed_stability(sae_a, sae_b) <= 1


def test_k_robustness_matches_direct_forward():
    sae = st.TopKSAE(16, 64, 8, seed=0)
    x = torch.randn(100, 16)
    with torch.no_grad():
        ref = {k: metrics.fvu(x, sae(x, k=k).x_hat) for k in (2, 8, 32)}
        ref_cos = metrics.cosine(x, sae(x, k=32).x_hat)
    got = metrics.k_robustness(sae, chunks(x, [30, 30]), [32, 2, 8])
    assert list(got) == [2, 8, 32]
    assert all(got[k] == pytest.approx(ref[k], rel=1e-6) for k in ref)
    assert metrics.k_robustness(sae, x, [32], metric="cosine")[32] == pytest.approx(ref_cos, rel=1e-6)


# ---------------------------------------------------------------- evaluate and the method card
def test_evaluate_report_agrees_with_the_metrics(tmp_path):
    sae = st.TopKSAE(16, 64, 4, seed=0)
    x, y = torch.randn(300, 16), torch.randint(0, 3, (300,))
    report = metrics.evaluate(sae, x, labels=y, chunk_size=64, probe_ns=[1, 4], sample_size=200, cknna_samples=50)
    df = pd.DataFrame([report])
    assert len(df) == 1
    with torch.no_grad():
        out = sae(x)
    assert report["fvu"] == pytest.approx(metrics.fvu(x, out.x_hat), rel=1e-6)
    assert report["l0"] == pytest.approx(metrics.l0(out.codes))
    ms = metrics.monosemanticity(out.codes, x)
    assert report["ms_mean"] == pytest.approx(metrics.alive_mean(ms), rel=1e-9)
    assert report["purity"] == pytest.approx(metrics.alive_mean(metrics.class_purity(out.codes, y)), rel=1e-9)
    assert report["fvu_k16"] == pytest.approx(metrics.k_robustness(sae, x, [16])[16], rel=1e-6)
    assert {"probe_n1", "probe_n4", "probe_dense", "cknna", "purity_chance", "dead_frac"} <= set(report)
    streamed = metrics.evaluate(sae, chunks(x, [64] * 4), labels=y, chunk_size=64, probe_ns=[1], sample_size=200,
                                cknna_samples=50)
    for key in ("fvu", "r2", "cosine", "l0", "dead", "ms_mean", "ms_max", "purity", "purity_weighted", "fvu_k1"):
        assert streamed[key] == pytest.approx(report[key], rel=1e-9, abs=1e-12)

    prov = {"source_model": "none (Gaussian data)", "layer": "-", "pooling": "-", "dataset": "randn",
            "split": "all", "preprocessing": "none", "train_config": st.TrainConfig(lambda_ratio=0.1),
            "name": "card"}
    json_path, md_path = st.method_card(sae, report, prov, tmp_path)
    card = json.loads(json_path.read_text())
    assert card["training"]["regularizer"] == "ℓ1/ℓ2" and card["training"]["mask"] == "batch-active units"
    assert card["sae"]["n_latents"] == 64 and card["metrics"]["fvu"] == pytest.approx(report["fvu"])
    assert card["metrics"]["k_robustness_fvu"]["4"] == pytest.approx(report["fvu_k4"])
    assert len(card["library"]["config_hash"]) == 16
    assert "| fvu |" in md_path.read_text()
    with pytest.raises(ValueError, match="layer"):
        st.method_card(sae, report, {k: v for k, v in prov.items() if k != "layer"}, tmp_path)


def test_evaluate_without_probes_or_budgets_and_its_card(tmp_path):
    """probe_ns=[] and ks=[] skip those metrics; the card says so, resolves AuxK's defaults and omits AuxK for
    variants trained without it."""
    x, y = torch.randn(300, 16), torch.randint(0, 3, (300,))
    prov = {"source_model": "none", "layer": "-", "pooling": "-", "dataset": "randn", "split": "all",
            "preprocessing": "none", "train_config": st.TrainConfig()}
    for sae in (st.TopKSAE(16, 64, 4, seed=0), st.ReLUSAE(16, 64, seed=0)):
        report = metrics.evaluate(sae, x, labels=y, probe_ns=[], ks=[], sample_size=200, cknna_samples=50)
        assert not any(key.startswith(("probe_", "fvu_k")) for key in report) and "purity" in report
        json_path, md_path = st.method_card(sae, report, {**prov, "name": type(sae).__name__}, tmp_path)
        training, md = json.loads(json_path.read_text())["training"], md_path.read_text()
        assert "**probe_accuracy**: not measured" in md and "**k_robustness_fvu**: not measured" in md
        assert training["lr"] == pytest.approx(default_lr(64))
        if sae.uses_auxk:
            assert training["k_aux"] == 8 and training["dead_after"] == "min(10M, training rows)"
            assert training["auxk_norm"] == st.TrainConfig().auxk_norm
        else:
            assert training["auxk"] == "not used by this variant" and "k_aux" not in training


def test_card_source_speaks_one_vocabulary(tmp_path):
    """card_source gives exactly a card's source fields: the backbone's describe line and its own pooling words, or
    NO_BACKBONE for synthetic rows; method_card accepts them as they are."""
    from sae_tutorial.backbones import describe
    from sae_tutorial.metrics.report import L2_NORMALISED, NO_BACKBONE, SOURCE_FIELDS

    info = {"name": "toy", "model_id": "timm:toy", "weights": "random", "pooling": "CLS token", "input_size": [3, 8, 8]}
    cnn = metrics.card_source(info, "fashion-mnist", "test")
    assert tuple(cnn) == SOURCE_FIELDS
    assert cnn["source_model"] == describe(info) and cnn["pooling"] == "CLS token"
    assert cnn["layer"] == "image embedding" and cnn["preprocessing"] == L2_NORMALISED
    synthetic = metrics.card_source(None, "make_sparse_data", "all")
    assert synthetic["source_model"] == synthetic["layer"] == synthetic["pooling"] == NO_BACKBONE
    assert synthetic["preprocessing"] == "none" and metrics.card_source(None, "d", "s", "centred")["preprocessing"] == "centred"
    sae = st.TopKSAE(8, 16, 2, seed=0)
    report = metrics.evaluate(sae, torch.randn(64, 8), probe_ns=[], ks=[], sample_size=32, cknna_samples=16)
    json_path, _ = st.method_card(sae, report, {**cnn, "train_config": st.TrainConfig(), "name": "toy"}, tmp_path)
    assert json.loads(json_path.read_text())["source"]["source_model"] == describe(info)


@pytest.mark.parametrize("variant", [st.ReLUSAE, st.SparsemaxSAE, st.BatchTopKSAE])
def test_evaluate_other_variants(variant):
    sae = variant(8, 32, 4, seed=0) if variant is st.BatchTopKSAE else variant(8, 32, seed=0)
    x, Y = torch.randn(120, 8), torch.randint(0, 2, (120, 3))
    report = metrics.evaluate(sae, x, labels=Y, embeddings=torch.randn(120, 5), ks=[2], sample_size=100)
    assert 0 <= report["purity"] <= 1 and "probe_dense" not in report               # multi-label: no probe
    assert report["fvu_k2"] > 0 and report["k"] == getattr(sae, "k", None)


# ---------------------------------------------------------------- bad inputs
def test_bad_inputs_raise_clear_errors():
    a, e, y = sparse_acts(50, 8), torch.randn(50, 4), torch.randint(0, 3, (50,))
    with pytest.raises(ValueError, match="embeddings has 50 rows, more"):
        metrics.monosemanticity(a[:40], e)
    with pytest.raises(ValueError, match="embeddings has 30 rows, fewer"):
        metrics.monosemanticity(a, e[:30])
    with pytest.raises(ValueError, match="labels has 49"):
        metrics.class_purity(a, y[:49])
    with pytest.raises(ValueError, match="x has 50 rows but x_hat has 49"):
        metrics.fvu(e, e[:49])
    bad = a.clone()
    bad[45, 2] = math.nan
    with pytest.raises(ValueError, match=r"acts \(chunk 1\) contains NaN"):
        metrics.monosemanticity(chunks(bad, [40]), e)
    with pytest.raises(ValueError, match="must be 2-D"):
        metrics.dead_latents(torch.ones(5))
    with pytest.raises(ValueError, match="embeddings .* has 3 columns, expected 4"):
        metrics.monosemanticity(chunks(a, [25]), [e[:25], torch.randn(25, 3)])
    for top_n in (0, -3):
        with pytest.raises(ValueError, match="top_n must be > 0"):
            metrics.class_purity(a, y, top_n=top_n)
    with pytest.raises(TypeError, match="top_n must be an int"):
        metrics.class_purity(a, y, top_n=2.5)
    with pytest.raises(TypeError, match="integer class ids"):
        metrics.class_purity(a, y.float())
    with pytest.raises(ValueError, match="only 0 and 1"):
        metrics.class_purity(a, 2 * torch.ones(50, 3))
    with pytest.raises(ValueError, match="all-zero row"):
        metrics.monosemanticity(a, torch.zeros(50, 4))
    with pytest.raises(ValueError, match="acts is empty"):
        metrics.monosemanticity(iter([]), e)
    with pytest.raises(TypeError, match="acts must be a tensor"):
        metrics.class_purity(3.0, y)
    with pytest.raises(ValueError, match="ks must be > 0"):
        metrics.k_robustness(st.TopKSAE(4, 8, 2), torch.randn(5, 4), [0])
    with pytest.raises(ValueError, match="x must have 4 columns|x .* has 3 columns"):
        metrics.k_robustness(st.TopKSAE(4, 8, 2), torch.randn(5, 3), [2])
    with pytest.raises(ValueError, match="2 <= k"):
        metrics.cknna(e, a, k=1)
    with pytest.raises(ValueError, match="x has 50 rows but z has 49"):
        metrics.cknna(e, a[:49])
    with pytest.raises(ValueError, match="ns must be > 0"):
        metrics.truncated_probe(a, y, a, y, ns=[0])
    with pytest.raises(ValueError, match="data has 50 rows but labels has 49"):
        metrics.evaluate(st.TopKSAE(4, 8, 2), e, labels=y[:49])
    with pytest.raises(TypeError, match="sae must be"):
        metrics.evaluate(torch.nn.Linear(4, 8), e)


def slow_concept_classification(sae, x_fit, y_fit, x_test, y_test, n):
    """Nearest prototype through the top-n concepts, one class and one test row at a time."""
    protos = {}
    torch.set_grad_enabled(False)
    for c in sorted(set(y_fit.tolist())):
        mu = x_fit[y_fit == c].mean(0)
        z = sae.encode((mu / mu.norm())[None])[0]
        order = sorted(range(len(z)), key=lambda j: -abs(float(z[j])))
        keep = torch.zeros_like(z)
        for j in order[: len(z) if n is None else n]:
            keep[j] = z[j]
        protos[c] = sae.decode(keep[None])[0]
    right = 0
    for x, y in zip(x_test, y_test):
        cos = {c: float(F.cosine_similarity(x, p, dim=0)) for c, p in protos.items()}
        right += max(cos, key=cos.get) == int(y)
    torch.set_grad_enabled(True)
    return right / len(y_test)


@pytest.mark.parametrize("model", ["topk", "sparsemax"])
def test_concept_classification_matches_a_slow_reference(model):
    torch.manual_seed(0)
    d, m, C = 12, 40, 4
    centres = F.normalize(torch.randn(C, d), dim=1)
    y = torch.arange(200) % C
    x = F.normalize(centres[y] + 0.4 * torch.randn(200, d), dim=1)
    sae = (st.TopKSAE(d, m, 8, seed=0) if model == "topk" else st.SparsemaxSAE(d, m, seed=0)).eval()
    if model == "topk":   # a non-zero b_dec: two classes sharing their top concept then give different prototypes
        torch.nn.init.normal_(sae.b_dec, std=0.3)
    got = metrics.concept_classification(sae, x[:150], y[:150], x[150:], y[150:], ns=(1, 3, None))
    for n in (1, 3, None):
        assert got[n] == pytest.approx(slow_concept_classification(sae, x[:150], y[:150], x[150:], y[150:], n))
    # a dictionary that holds the class centres rebuilds each prototype as its centre from one concept: the
    # accuracy is the nearest-true-centre classifier's
    oracle = st.TopKSAE(d, C, 1, seed=0).eval()
    with torch.no_grad():
        oracle.W_enc.copy_(centres), oracle.W_dec.copy_(centres), oracle.b_enc.zero_(), oracle.b_dec.zero_()
    nearest_centre = float(((x[150:] @ centres.T).argmax(1) == y[150:]).float().mean())
    assert metrics.concept_classification(oracle, x[:150], y[:150], x[150:], y[150:], ns=(1,))[1] == nearest_centre
    assert nearest_centre > 0.8
    with pytest.raises(ValueError, match="one entry per row"):
        metrics.concept_classification(sae, x[:150], y[:100], x[150:], y[150:])
