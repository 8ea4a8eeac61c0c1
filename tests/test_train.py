"""Training: losses, AuxK without a double b_dec, the decoder constraint, resume, bad input, recovery."""
import math

import pytest
import torch
import torch.nn.functional as F

import sae_tutorial as st
from sae_tutorial.losses import auxk_loss, fvu
from sae_tutorial.synthetic import feature_recovery, make_sparse_data

D, M, K = 16, 64, 4


def quiet(**kw):
    return st.TrainConfig(progress=False, **kw)


def test_fvu_formula():
    x, x_hat = torch.randn(20, 5, dtype=torch.float64), torch.randn(20, 5, dtype=torch.float64)
    num = sum(float(((x[b] - x_hat[b]) ** 2).sum()) for b in range(20))
    mean = x.mean(0)
    den = sum(float(((x[b] - mean) ** 2).sum()) for b in range(20))
    assert abs(float(fvu(x, x_hat)) - num / den) < 1e-6


def test_auxk_decodes_dead_latents_without_b_dec():
    """The residual x − x̂ is exactly what dead latent 5 encodes; AuxK must fit it with loss 0 although b_dec ≠ 0."""
    sae = st.TopKSAE(D, M, 1, seed=0).double()
    e0, e1 = torch.eye(D, dtype=torch.float64)[:2]
    c = torch.linspace(0.2, 0.8, 6, dtype=torch.float64)[:, None]   # (6, 1) the dead latent's true codes
    with torch.no_grad():
        sae.b_dec.fill_(3.0)
        sae.W_enc.zero_()
        sae.b_enc.zero_()
        sae.W_dec[0], sae.W_dec[5] = e0, e1
        sae.b_enc[0] = 1.0                       # latent 0: h = 1 on every row, always the top-1
        sae.W_enc[5] = e1                        # latent 5: h = c, never selected (c < 1)
    x = sae.b_dec + e0 + c * e1                  # (6, D)
    out = sae(x)
    torch.testing.assert_close(out.x_hat, (sae.b_dec + e0).expand(6, D))
    dead = torch.zeros(M, dtype=torch.bool)
    dead[5] = True
    loss = auxk_loss(sae, x, out, dead, k_aux=1).detach()
    assert float(loss) < 1e-20
    # the bug: adding b_dec to the aux reconstruction leaves ‖b_dec‖² per row
    e = (x - out.x_hat).detach()
    buggy = ((e - (c * e1 + sae.b_dec)) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    assert float(buggy.detach()) > 100


def test_auxk_only_reads_dead_latents_and_scales_with_their_number():
    sae = st.TopKSAE(D, M, K, seed=1)
    x = torch.randn(8, D)
    out = sae(x)
    none = torch.zeros(M, dtype=torch.bool)
    assert float(auxk_loss(sae, x, out, none, k_aux=8)) == 0.0
    dead = torch.zeros(M, dtype=torch.bool)
    dead[[3, 7]] = True
    loss = auxk_loss(sae, x, out, dead, k_aux=8)
    h = out.pre_acts.detach()
    e_hat = F.relu(h[:, [3, 7]]) @ sae.W_dec[[3, 7]]
    e = (x - out.x_hat).detach()
    ref = (2 / 8) * ((e - e_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    torch.testing.assert_close(loss, ref)
    loss.backward()
    alive_rows = torch.ones(M, dtype=torch.bool)
    alive_rows[[3, 7]] = False
    assert sae.W_dec.grad[alive_rows].abs().max() == 0      # only dead decoder rows move


@pytest.mark.parametrize("n_dead", [0, 3, 12])
def test_auxk_routes_agree(monkeypatch, n_dead):
    """AuxK's three routes (dead columns on a CPU; dense GEMMs or gathers on an accelerator) give the same loss and
    gradients, with fewer dead latents than k_aux, more, and none."""
    import sae_tutorial.losses as losses

    x = torch.randn(16, D, dtype=torch.float64)
    dead = torch.zeros(M, dtype=torch.bool)
    dead[torch.randperm(M, generator=torch.Generator().manual_seed(0))[:n_dead]] = True
    results = []
    for route in ("columns", "dense", "gather"):
        monkeypatch.setattr(losses, "_auxk_route", lambda *a, route=route: route)
        sae = st.TopKSAE(D, M, K, seed=3).double()
        out = sae(x)
        loss = auxk_loss(sae, x, out, dead, k_aux=5)
        if loss.requires_grad:          # with nothing dead the column route returns a constant 0
            loss.backward()
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in (sae.W_enc, sae.b_enc, sae.W_dec)]
        results.append((loss.detach(), *grads))
    for a, b, c in zip(*results):
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a, c)


def test_training_reduces_fvu_keeps_unit_norm_and_logs_every_step():
    data = make_sparse_data(4096, D, 48, avg_active=3, seed=0)
    sae = st.TopKSAE(D, M, K, seed=0)
    hist = st.train(sae, data.x, quiet(batch_size=256, steps=100, lr=3e-3, warmup_steps=20, log_every=7))
    assert hist["step"] == list(range(100))
    assert set(hist) == {"step", "loss", "fvu", "auxk", "sparsity", "r_off", "r_ratio", "l0", "dead_frac", "lr"}
    assert hist["fvu"][-1] < 0.5 * hist["fvu"][0]
    assert all(abs(v - K) < 1e-6 or v < K for v in hist["l0"])
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(M))
    assert hist["lr"][0] == pytest.approx(3e-3 / 20) and hist["lr"][10] == pytest.approx(3e-3 * 11 / 20)
    assert hist["lr"][-1] == pytest.approx(3e-3)
    assert not sae.training


def test_default_lr_scaling():
    assert st.train.__module__  # the function, not the module, is exported
    from sae_tutorial.train import default_lr
    assert default_lr(2**14) == pytest.approx(2e-4)
    assert default_lr(2**16) == pytest.approx(1e-4)


@pytest.mark.parametrize("variant", ["BatchTopKSAE", "ReLUSAE", "SparsemaxSAE", "SparsemaxActSAE", "MultiTopKSAE",
                                     "MatryoshkaSAE"])
def test_every_variant_trains(variant):
    data = make_sparse_data(2048, D, 32, avg_active=3, seed=1)
    cls = st.sae.VARIANTS[variant]
    extra = {"threshold_start": 5} if variant == "BatchTopKSAE" else {}
    sae = cls(D, M, K, seed=0, **extra) if cls.takes_k else cls(D, M, seed=0)
    hist = st.train(sae, data.x, quiet(batch_size=128, steps=40, lr=3e-3, warmup_steps=5))
    assert math.isfinite(hist["loss"][-1]) and hist["fvu"][-1] < hist["fvu"][0]
    if variant == "BatchTopKSAE":
        assert float(sae.threshold) > 0


def test_auxk_revives_dead_latents():
    """Half the latents start handicapped (b_enc − 1): they never win Top-k, so without AuxK they get no gradient
    and stay dead. With 256 true features for 128 latents every latent is needed, and AuxK brings them back."""
    data = make_sparse_data(8192, D, 256, avg_active=4, zipf_exponent=0.0, seed=2)
    dead = {}
    for alpha in (0.0, 1 / 32):
        sae = st.TopKSAE(D, 128, 4, seed=3)
        with torch.no_grad():
            sae.b_enc[:64] -= 1.0
        hist = st.train(sae, data.x, quiet(batch_size=256, steps=300, lr=3e-3, dead_after=1024, auxk_alpha=alpha,
                                           log_every=10, b_dec_init="none"))
        assert (max(hist["auxk"]) > 0) == (alpha > 0)
        dead[alpha] = hist["dead_frac"][-1]
    assert dead[0.0] > 0.45 and dead[1 / 32] < 0.5 * dead[0.0], dead


def test_iterable_data_and_b_dec_init():
    data = make_sparse_data(1024, D, 32, avg_active=3, seed=4)
    batches = (data.x[i:i + 128] for i in range(0, 1024, 128))  # a one-shot generator
    sae = st.TopKSAE(D, M, K, seed=0)
    hist = st.train(sae, batches, quiet(batch_size=128, b_dec_init="mean"))
    assert len(hist["step"]) == 8
    sae2 = st.TopKSAE(D, M, K, seed=0)
    sae2.init_b_dec(data.x[:128], "mean")
    torch.testing.assert_close(sae2.b_dec, data.x[:128].mean(0))


def test_resume_is_bit_identical(tmp_path):
    data = make_sparse_data(2048, D, 32, avg_active=3, seed=5)
    cfg = dict(batch_size=128, lr=3e-3, dead_after=512, log_every=5, checkpoint_every=10)
    full = st.TopKSAE(D, M, K, seed=0)
    h_full = st.train(full, data.x, quiet(steps=40, **cfg))            # 40 steps = 2.5 epochs, crosses reshuffles
    part = st.TopKSAE(D, M, K, seed=0)
    st.train(part, data.x, quiet(steps=25, checkpoint_dir=str(tmp_path), **cfg))
    resumed = st.TopKSAE(D, M, K, seed=7)                               # other init: weights come from the checkpoint
    h_res = st.train(resumed, data.x, quiet(steps=40, checkpoint_dir=str(tmp_path), **cfg))
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert h_res["loss"] == h_full["loss"]
    with pytest.raises(ValueError, match="different TrainConfig"):
        st.train(st.TopKSAE(D, M, K), data.x, quiet(steps=50, checkpoint_dir=str(tmp_path), **{**cfg, "lr": 1e-3}))
    with pytest.raises(ValueError, match="written for a TopKSAE"):
        st.train(st.TopKSAE(D, M, 2), data.x, quiet(steps=50, checkpoint_dir=str(tmp_path), **cfg))


def test_corrupt_training_checkpoint_is_reported(tmp_path):
    (tmp_path / "train_state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt or truncated"):
        st.train(st.TopKSAE(D, M, K), torch.randn(256, D), quiet(batch_size=64, checkpoint_dir=str(tmp_path)))


def test_bad_training_input():
    sae = st.TopKSAE(D, M, K)
    x = torch.randn(256, D)
    bad_x = x.clone()
    bad_x[3, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        st.train(sae, bad_x, quiet(batch_size=64))
    with pytest.raises(ValueError, match="columns"):
        st.train(sae, torch.randn(256, D + 1), quiet(batch_size=64))
    with pytest.raises(ValueError, match="empty"):
        st.train(sae, torch.randn(0, D), quiet(batch_size=64))
    with pytest.raises(ValueError, match="empty iterable"):
        st.train(sae, iter([]), quiet(batch_size=64))
    with pytest.raises(ValueError, match="batch_size"):
        st.train(sae, x, quiet(batch_size=1024))
    with pytest.raises(TypeError, match="data"):
        st.train(sae, 3.0, quiet(batch_size=64))
    with pytest.raises(TypeError, match="sae"):
        st.train(torch.nn.Linear(2, 2), x, quiet())
    for field, value in [("lambda_off", -1.0), ("lambda_ratio", float("nan")), ("auxk_alpha", -0.1),
                         ("batch_size", 0), ("lr", 0.0), ("reg_phi", "square"), ("steps", -3)]:
        with pytest.raises((ValueError, TypeError), match=field):
            st.TrainConfig(**{field: value})
    with pytest.raises(ValueError, match="fixed-k"):
        st.train(st.ReLUSAE(D, M), x, quiet(batch_size=64, lambda_off=0.1))


def test_divergence_is_reported():
    sae = st.TopKSAE(D, M, K)
    x = torch.randn(256, D) * 1e30
    with pytest.raises(FloatingPointError, match="diverged"):
        st.train(sae, x, quiet(batch_size=64, steps=10, log_every=5, b_dec_init="none", lr=1e3, warmup_steps=0))


def test_recovers_ground_truth_features():
    """Setting: d=64, 256 true features (4x d), Zipf(1) frequencies, 5 active on average, noise 0.01;
    TopKSAE m=512, k=6, batch 512, lr 1e-3, 12 epochs of 50k samples (~10 s on 2 cores)."""
    torch.set_num_threads(2)
    data = make_sparse_data(50_000, 64, 256, avg_active=5, noise=0.01, seed=0)
    sae = st.TopKSAE(64, 512, 6, seed=0)
    st.train(sae, data.x, quiet(batch_size=512, epochs=12, lr=1e-3))
    rec = feature_recovery(sae.W_dec, data.features)
    assert rec["recovered"] >= 0.8, rec


def test_held_out_fvu_equals_the_metric_and_keeps_the_training_flag():
    from sae_tutorial.train import HeldOutFVU, held_out_fvu
    x = F.normalize(torch.randn(300, 12), dim=1) + 0.5
    sae = st.TopKSAE(12, 32, 4, seed=0)
    sae.train()
    check = HeldOutFVU(x, chunk_size=70)                       # several chunks, a short last one
    with torch.no_grad():
        ref = st.metrics.fvu(x, sae.eval()(x).x_hat)
    sae.train()
    assert check(sae) == pytest.approx(ref, rel=1e-12) and sae.training
    assert held_out_fvu(sae, x) == pytest.approx(ref, rel=1e-12)
    with torch.no_grad():
        sae.W_dec.mul_(0.5)                                    # the rows' statistics are cached, not the model
    with torch.no_grad():
        ref = st.metrics.fvu(x, sae.eval()(x).x_hat)
    assert check(sae) == pytest.approx(ref, rel=1e-12)
