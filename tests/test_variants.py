"""The variants that follow a published reference: the Sparsemax SAE of arXiv:2604.14925, Multi-TopK, Matryoshka,
BatchTopK's threshold, AuxK's normalisation; each against a slow, obvious reference."""
import pytest
import torch
import torch.nn.functional as F

import sae_tutorial as st
from sae_tutorial import metrics
from sae_tutorial.losses import auxk_loss
from sae_tutorial.sae import sparsemax_threshold

D, M, K = 16, 64, 4


# ---------------------------------------------------------------- the sparsemax threshold
def slow_tau(row: torch.Tensor) -> float:
    """τ of one row by the textbook rule, in float64: K = max{r : 1 + r s_r > Σ_{i≤r} s_i}, τ = (c_K − 1)/K."""
    s = sorted(row.double().tolist(), reverse=True)
    c, best = 0.0, None
    for r, v in enumerate(s, start=1):
        c += v
        if 1 + r * v > c:
            best = (c - 1) / r
    return best


@pytest.mark.parametrize("scale", [0.01, 0.3, 3.0])   # supports from all m entries (τ < 0) down to a few
def test_sparsemax_threshold_against_textbook_rule(scale):
    h = torch.randn(12, 300, dtype=torch.float64) * scale        # 300 > the 128 entries tried first
    tau = sparsemax_threshold(h)
    ref = torch.tensor([slow_tau(r) for r in h], dtype=torch.float64)[:, None]
    torch.testing.assert_close(tau, ref)
    torch.testing.assert_close(F.relu(h - tau).sum(1), torch.ones(12, dtype=torch.float64))


def test_sparsemax_threshold_is_float32_under_bf16():
    """bf16 pre-activations (as under CUDA autocast), m = 8192, supports of about 470. In bf16 the ranks r and 1 + r·s
    are exact only to 256, and the old computation got supports wrong (here by up to 21 on every row); ours must
    match float64 on every row."""
    gen = torch.Generator().manual_seed(0)
    h = (torch.randn(200, 8192, generator=gen) * 0.005).to(torch.bfloat16)
    tau = sparsemax_threshold(h)
    assert tau.dtype == torch.float32
    ref_tau = torch.tensor([slow_tau(r) for r in h[:40]], dtype=torch.float64)[:, None]
    ref_sizes = (h[:40].double() > ref_tau).sum(1)
    assert 350 < ref_sizes.float().mean() < 600
    assert torch.equal((h[:40] > tau[:40]).sum(1), ref_sizes)
    # the old computation, all in bf16, gets some of these rows wrong: the test has the power to fail
    s, _ = h.sort(dim=1, descending=True)
    r = torch.arange(1, h.shape[1] + 1, dtype=h.dtype)
    old_sizes = (1 + r * s > s.cumsum(1)).sum(1)[:40]
    assert (old_sizes != ref_sizes).any()


# ---------------------------------------------------------------- the published Sparsemax SAE
def published(seed: int = 0, **kw) -> st.SparsemaxSAE:
    sae = st.SparsemaxSAE(D, M, seed=seed, **kw).double()
    with torch.no_grad():
        sae.idf[:6] = 0.5                                         # six latents above θ_idf = 0.1: masked
    return sae


def reference_forward(sae: st.SparsemaxSAE, x: torch.Tensor):
    """The equations of the module docstring, step by step, with dense matrices."""
    norm = x.norm(dim=1, keepdim=True)
    h = (x / norm) @ (sae.concept @ sae.key).T
    h = h * (sae.idf <= sae.idf_threshold)
    tau = torch.tensor([slow_tau(r) for r in h.detach()], dtype=h.dtype)[:, None]
    z = h * (h > tau)
    x_hat = norm * (z @ (sae.concept @ sae.value))
    loss = 10 * ((x_hat - x) ** 2 / norm).mean()
    return x_hat, z, loss


def test_published_sparsemax_matches_its_equations():
    sae = published()
    sae.eval()
    x = torch.randn(20, D, dtype=torch.float64) * 3
    ref_x_hat, ref_z, ref_loss = reference_forward(sae, x)
    for dense_grad in (True, False):
        out = sae(x, dense_grad=dense_grad)
        torch.testing.assert_close(out.x_hat, ref_x_hat)
        torch.testing.assert_close(out.codes, ref_z)
        torch.testing.assert_close(sae.reconstruction_loss(x, out), ref_loss)
    assert (out.codes[:, :6] == 0).all()                          # the idf mask
    torch.testing.assert_close(sae.W_enc, sae.concept @ sae.key)
    torch.testing.assert_close(sae.W_dec, sae.concept @ sae.value)
    assert sae.b_dec.abs().sum() == 0 and set(dict(sae.named_parameters())) == {"concept", "key", "value"}


def test_published_sparsemax_keeps_negative_h_on_the_support():
    """With tiny pre-activations τ < 0 and the support holds negative h: the codes are h there, not ReLU(h)."""
    sae = published()
    with torch.no_grad():
        sae.concept.mul_(0.01)
    sae.eval()
    x = torch.randn(5, D, dtype=torch.float64)
    out = sae(x, dense_grad=False)
    assert (out.codes < 0).any()
    torch.testing.assert_close(out.codes, reference_forward(sae, x)[1])
    assert float(out.l0()) == float((out.codes != 0).sum(1).double().mean())


def test_published_sparsemax_fast_path_gradients_equal_autograd_reference():
    sae = published()
    sae.eval()
    x = torch.randn(24, D, dtype=torch.float64) * 2
    grads = {}
    for dense_grad in (True, False):
        sae.zero_grad(set_to_none=True)
        sae.reconstruction_loss(x, sae(x, dense_grad=dense_grad)).backward()
        grads[dense_grad] = {n: p.grad.clone() for n, p in sae.named_parameters()}
    sae.zero_grad(set_to_none=True)
    reference_forward(sae, x)[2].backward()
    for name, p in sae.named_parameters():
        torch.testing.assert_close(grads[True][name], p.grad, msg=f"dense path, {name}")
        torch.testing.assert_close(grads[False][name], p.grad, msg=f"fast path, {name}")


@pytest.mark.parametrize("rate", [None, 0.25])
def test_published_sparsemax_idf_is_a_running_firing_rate(rate):
    sae = st.SparsemaxSAE(D, M, idf_threshold=2.0, idf_rate=rate, seed=0).double()   # θ > 1: nothing masked
    sae.train()
    idf = torch.zeros(M, dtype=torch.float64)
    for t in range(1, 4):
        x = torch.randn(30, D, dtype=torch.float64)
        out = sae(x, dense_grad=t % 2 == 0)
        f = (out.codes > 0).double().mean(0)
        idf = idf + (f - idf) / t if rate is None else (1 - rate) * idf + rate * f
        torch.testing.assert_close(sae.idf, idf)
    assert int(sae.idf_batches) == 3
    sae.eval()
    sae(torch.randn(5, D, dtype=torch.float64))
    torch.testing.assert_close(sae.idf, idf)                     # evaluation does not move it


def test_published_sparsemax_mask_switches_off_frequent_latents_and_round_trips(tmp_path):
    sae = st.SparsemaxSAE(D, M, idf_threshold=0.3, seed=0)
    st.train(sae, torch.randn(512, D), st.TrainConfig(batch_size=64, steps=6, progress=False))
    sae.eval()
    frequent = sae.idf > 0.3
    assert sae.W_enc.shape == (M, D)
    x = torch.randn(50, D)
    assert (sae.encode(x)[:, frequent] == 0).all()
    loaded = st.load(sae.save(tmp_path / "s.safetensors"))
    assert loaded.config() == sae.config() and torch.equal(loaded.idf, sae.idf)
    assert torch.equal(loaded.encode(x), sae.encode(x))


def test_published_sparsemax_bad_settings():
    with pytest.raises(ValueError, match="idf_rate"):
        st.SparsemaxSAE(D, M, idf_rate=1.5)
    with pytest.raises(ValueError, match="idf_threshold"):
        st.SparsemaxSAE(D, M, idf_threshold=-0.1)


# ---------------------------------------------------------------- Multi-TopK and Matryoshka
def slow_fvu(x, x_hat):
    mean = x.mean(0)
    return sum(((x[b] - x_hat[b]) ** 2).sum() for b in range(len(x))) / sum(((x[b] - mean) ** 2).sum()
                                                                          for b in range(len(x)))


def dense_codes(sae, x, k):
    h = (x - sae.b_dec) @ sae.W_enc.T + sae.b_enc
    mask = torch.zeros_like(h).scatter(1, h.detach().topk(k, dim=1).indices, 1.0)
    return F.relu(h) * mask


def multi_reference(sae, x):
    """L(k) + L(4k)/8 with dense codes and dense decodes."""
    rec = lambda kk: dense_codes(sae, x, kk) @ sae.W_dec + sae.b_dec
    return slow_fvu(x, rec(K)) + slow_fvu(x, rec(4 * K)) / 8


def matryoshka_reference(sae, x):
    """(1/G) Σ_g FVU of the reconstruction from the selected latents with id < P_g."""
    z = dense_codes(sae, x, K)
    ends = torch.tensor(sae.groups).cumsum(0).tolist()
    return sum(slow_fvu(x, z[:, :e] @ sae.W_dec[:e] + sae.b_dec) for e in ends) / len(ends)


@pytest.mark.parametrize("variant, reference", [("MultiTopKSAE", multi_reference),
                                                ("MatryoshkaSAE", matryoshka_reference)])
def test_multiscale_losses_and_gradients_against_dense_reference(variant, reference):
    extra = {"groups": [3, 5, 24, 32]} if variant == "MatryoshkaSAE" else {}
    sae = getattr(st, variant)(D, M, K, seed=0, **extra).double()
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_(std=0.1)
    sae.train()
    x = torch.randn(32, D, dtype=torch.float64)
    grads = {}
    for dense_grad in (True, False):
        sae.zero_grad(set_to_none=True)
        out = sae(x, dense_grad=dense_grad)
        loss = sae.reconstruction_loss(x, out)
        torch.testing.assert_close(loss, reference(sae, x).detach(), msg=f"dense_grad={dense_grad}")
        torch.testing.assert_close(out.x_hat, dense_codes(sae, x, K) @ sae.W_dec + sae.b_dec)
        loss.backward()
        grads[dense_grad] = {n: p.grad.clone() for n, p in sae.named_parameters()}
    sae.zero_grad(set_to_none=True)
    reference(sae, x).backward()
    for name, p in sae.named_parameters():
        torch.testing.assert_close(grads[True][name], p.grad, msg=f"dense path, {name}")
        torch.testing.assert_close(grads[False][name], p.grad, msg=f"fast path, {name}")
    sae.eval()                                                     # inference: plain Top-k, plain FVU
    out = sae(x)
    assert out.partials is None and out.indices.shape == (32, K)
    torch.testing.assert_close(sae.reconstruction_loss(x, out), slow_fvu(x, out.x_hat).detach())


def test_matryoshka_groups():
    assert st.MatryoshkaSAE(D, M, K).groups == [4, 4, 8, 16, 32]   # prefixes m/16, m/8, m/4, m/2, m
    assert st.MatryoshkaSAE(D, M, K, groups=[64]).config()["groups"] == [64]
    with pytest.raises(ValueError, match="groups must sum to n_latents=64"):
        st.MatryoshkaSAE(D, M, K, groups=[10, 20])
    with pytest.raises(ValueError, match="groups must be a non-empty list of positive ints"):
        st.MatryoshkaSAE(D, M, K, groups=[0, 64])


@pytest.mark.parametrize("variant", ["MultiTopKSAE", "MatryoshkaSAE"])
def test_multiscale_variants_train_with_regularizers(variant):
    sae = getattr(st, variant)(D, M, K, seed=0)
    data = st.synthetic.make_sparse_data(1024, D, 32, avg_active=3, seed=1).x
    hist = st.train(sae, data, st.TrainConfig(batch_size=128, steps=30, lr=3e-3, warmup_steps=5, progress=False,
                                              lambda_ratio=0.01))
    assert hist["fvu"][-1] < hist["fvu"][0] and hist["r_ratio"][-1] > 0
    assert hist["loss"][-1] > hist["fvu"][-1]                      # the loss holds the extra reconstructions


# ---------------------------------------------------------------- BatchTopK's threshold
def test_batchtopk_threshold_warm_up_and_momentum():
    sae = st.BatchTopKSAE(D, M, K, threshold_start=3, seed=0)
    assert sae.momentum == 0.999 and sae.config()["threshold_start"] == 3
    sae.train()
    x = [torch.randn(16, D) for _ in range(5)]
    for b in x[:3]:
        sae(b)
    assert float(sae.threshold) == 0 and int(sae.threshold_updates) == 0
    first = sae(x[3]).codes
    theta = float(first[first > 0].min())
    assert float(sae.threshold) == pytest.approx(theta)           # the first update sets θ
    second = sae(x[4]).codes
    theta = 0.999 * theta + 0.001 * float(second[second > 0].min())
    assert float(sae.threshold) == pytest.approx(theta, rel=1e-6)
    assert int(sae.train_steps) == 5 and int(sae.threshold_updates) == 2


def test_batchtopk_evaluation_at_k_uses_theta_whatever_the_chunks():
    sae = st.BatchTopKSAE(D, M, K, threshold_start=0, seed=0)
    st.train(sae, torch.randn(512, D), st.TrainConfig(batch_size=64, steps=8, progress=False))
    sae.eval()
    x = torch.randn(90, D)
    a = F.relu(sae.pre_activations(x))
    torch.testing.assert_close(sae(x, k=K).codes, a * (a > sae.threshold))
    main = metrics.fvu(x, sae(x).x_hat)
    by_chunk = [metrics.k_robustness(sae, x, [K, 2], chunk_size=c) for c in (7, 90)]
    assert by_chunk[0][K] == pytest.approx(main) and by_chunk[1][K] == pytest.approx(main)
    assert by_chunk[0][2] != pytest.approx(by_chunk[1][2])          # other k': the batch-level rule, chunk-dependent
    z2 = sae(x, k=2).codes                                         # the top B·2 of the batch
    assert int((z2 > 0).sum()) == min(90 * 2, int((a > 0).sum()))


def test_batchtopk_state_without_warm_up_counter_loads_as_started():
    sae = st.BatchTopKSAE(D, M, K, seed=0)
    state = sae.state_dict()
    state["threshold"] = torch.tensor(0.5)
    state["threshold_updates"] = torch.tensor(7)
    del state["train_steps"]
    sae.load_state_dict(state)
    assert int(sae.train_steps) == 7 + sae.threshold_start and float(sae.threshold) == 0.5


# ---------------------------------------------------------------- AuxK's normalisation
def test_auxk_residual_norm_against_slow_reference():
    sae = st.TopKSAE(D, M, K, seed=1)
    x = torch.randn(8, D, dtype=torch.float32)
    out = sae(x)
    dead = torch.zeros(M, dtype=torch.bool)
    dead[[3, 7, 11]] = True
    e = (x - out.x_hat).detach().double()
    h = out.pre_acts.detach().double()
    e_hat = F.relu(h[:, [3, 7, 11]]) @ sae.W_dec[[3, 7, 11]].detach().double()
    err = sum(((e[b] - e_hat[b]) ** 2).sum() for b in range(8))
    e_mean = e.mean(0)
    x_mean = x.double().mean(0)
    by = {"residual": sum(((e[b] - e_mean) ** 2).sum() for b in range(8)),
          "input": sum(((x[b].double() - x_mean) ** 2).sum() for b in range(8))}
    for norm, den in by.items():
        loss = auxk_loss(sae, x, out, dead, k_aux=4, norm=norm)
        assert float(loss) == pytest.approx(float(3 / 4 * err / den), rel=1e-5), norm
    with pytest.raises(ValueError, match="norm"):
        auxk_loss(sae, x, out, dead, k_aux=4, norm="batch")
    with pytest.raises(ValueError, match="auxk_norm"):
        st.TrainConfig(auxk_norm="batch")


def test_train_uses_the_residual_norm_when_asked():
    """One step with half the latents dead: the logged AuxK term is the residual-normalised one."""
    from sae_tutorial.train import loss_terms

    sae = st.TopKSAE(D, M, K, seed=0)
    x = torch.randn(64, D)
    dead = torch.zeros(M, dtype=torch.bool)
    dead[M // 2:] = True
    terms = {}
    for norm in ("input", "residual"):
        cfg = st.TrainConfig(auxk_norm=norm, progress=False)
        _, t, out = loss_terms(sae, x, cfg, dead, True, 8)
        terms[norm] = float(t["auxk"])
        assert terms[norm] == pytest.approx(float(auxk_loss(sae, x, out, dead, 8, norm=norm)), rel=1e-5)
    e = (x - sae(x).x_hat).detach()
    ratio = float(((e - e.mean(0)) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())   # ≈ the FVU
    assert terms["input"] == pytest.approx(terms["residual"] * ratio, rel=1e-4)


def test_a_state_of_the_simpler_sparsemax_model_is_refused_with_its_new_name():
    state = st.SparsemaxActSAE(D, M, seed=0).state_dict()
    with pytest.raises(ValueError, match="SparsemaxActSAE"):
        st.SparsemaxSAE(D, M).load_state_dict(state)
