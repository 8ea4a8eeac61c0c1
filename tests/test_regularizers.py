"""The paper's regularizers against slow loop references, their gradients, the mask, and training with them."""
import importlib
import math

import pytest
import torch

import sae_tutorial as st
from sae_tutorial.regularizers import (batch_active_mask, l1_l2_ratio, l1_l2_ratio_grad, off_support_l1,
                                      off_support_l1_grad)
from sae_tutorial.synthetic import make_sparse_data
from sae_tutorial.train import TrainConfig, loss_terms, regularizer_view

B, M, K = 6, 20, 3
train_module = importlib.import_module("sae_tutorial.train")   # the package attribute `train` is the function


def phi(v: float, kind: str) -> float:
    return max(v, 0.0) if kind == "relu" else abs(v)


def ref_active(idx, mask):
    return {int(j) for row in idx for j in row} if mask else set(range(M))


def ref_off(h, idx, mask, kind):
    A = ref_active(idx, mask)
    total = 0.0
    for b in range(h.shape[0]):
        support = {int(j) for j in idx[b]}
        total += sum(phi(float(h[b, j]), kind) for j in A if j not in support)
    return total / h.shape[0]


def ref_ratio(h, idx, mask, kind, eps):
    A = sorted(ref_active(idx, mask))
    total = 0.0
    for b in range(h.shape[0]):
        p = [phi(float(h[b, j]), kind) for j in A]
        total += sum(p) / (math.sqrt(sum(v * v for v in p)) + eps)
    return total / h.shape[0]


def cases():
    """Random pre-activations, plus ties at the k-th value and a row whose pre-activations are all negative."""
    h = torch.randn(B, M, dtype=torch.float64)
    h[1, :5] = 0.7                      # a tie straddling the k-th value of row 1
    h[2] = -torch.rand(M, dtype=torch.float64) - 0.1   # all negative
    idx = h.topk(K, dim=1).indices
    return h, idx


@pytest.mark.parametrize("mask", [True, False])
@pytest.mark.parametrize("kind", ["relu", "abs"])
def test_values_against_loop_reference(mask, kind):
    h, idx = cases()
    assert abs(float(off_support_l1(h, idx, mask, kind)) - ref_off(h, idx, mask, kind)) < 1e-10
    for eps in (1e-8, 0.5):
        got = float(l1_l2_ratio(h, idx, mask, kind, eps))
        assert abs(got - ref_ratio(h, idx, mask, kind, eps)) < 1e-10


def test_eps_guard_on_zero_rows():
    h = (-torch.ones(3, M, dtype=torch.float64)).requires_grad_()   # φ(h) = 0 everywhere
    idx = torch.arange(K).expand(3, K)
    r = l1_l2_ratio(h, idx)
    assert float(r.detach()) == 0.0
    r.backward()
    assert torch.isfinite(h.grad).all() and h.grad.abs().max() == 0


def test_batch_active_mask():
    idx = torch.tensor([[0, 3], [3, 5]])
    assert batch_active_mask(idx, 8).tolist() == [True, False, False, True, False, True, False, False]
    with pytest.raises(ValueError, match="indices"):
        batch_active_mask(torch.tensor([[0, 9]]), 8)
    with pytest.raises(ValueError, match="n_latents"):
        batch_active_mask(idx, 0)


def test_autograd_matches_analytic_gradients():
    h, idx = cases()
    h = h.requires_grad_()
    A = batch_active_mask(idx, M)
    p = torch.relu(h.detach()) * A
    # R_off: ∂/∂h_bj = φ'(h_bj) / B on A∖S_b, 0 elsewhere
    off_support_l1(h, idx).backward()
    expect = (h.detach() > 0).double() * A / B
    expect.scatter_(1, idx, 0.0)
    torch.testing.assert_close(h.grad, expect)
    # R_rat: ∂/∂p_j = (1/‖p‖₂ − ‖p‖₁ p_j / ‖p‖₂³) / B for p_j > 0 (ε = 0)
    h.grad = None
    l1_l2_ratio(h, idx, eps=0.0).backward()
    l1, l2 = p.sum(1, keepdim=True), p.norm(dim=1, keepdim=True)
    analytic = torch.where(p > 0, (1 / l2 - l1 * p / l2**3) / B, torch.zeros_like(p))
    analytic = torch.nan_to_num(analytic)
    torch.testing.assert_close(h.grad, analytic)


@pytest.mark.parametrize("kind", ["relu", "abs"])
def test_closed_form_twins_match_autograd_of_the_definitions(kind):
    """Training's (value, ∂R/∂h) twins against autograd through the definitions: ties, an all-negative row,
    a row of exact zeros (the ε guard, and autograd's subgradient at p = 0) and both φ."""
    h, idx = cases()
    h[3] = 0.0
    for fn, twin, kw in ((off_support_l1, off_support_l1_grad, {}),
                         (l1_l2_ratio, l1_l2_ratio_grad, {"eps": 1e-8}),
                         (l1_l2_ratio, l1_l2_ratio_grad, {"eps": 0.5})):
        hg = h.clone().requires_grad_()
        ref = fn(hg, idx, mask=False, phi=kind, **kw)
        ref.backward()
        value, grad = twin(h.clone(), idx, phi=kind, **kw)
        torch.testing.assert_close(value, ref.detach(), msg=f"{fn.__name__} value")
        torch.testing.assert_close(grad, hg.grad, msg=f"{fn.__name__} gradient")


def test_ratio_gradient_is_orthogonal_to_the_code_and_the_ratio_scale_invariant():
    h = torch.randn(B, M, dtype=torch.float64).abs().requires_grad_()
    idx = h.topk(K, dim=1).indices
    l1_l2_ratio(h, idx, mask=False, eps=0.0).backward()
    assert (h.grad * h.detach()).sum(1).abs().max() < 1e-12           # ⟨∇R, p⟩ = 0 per row
    r1 = l1_l2_ratio(h.detach(), idx, mask=False, eps=0.0)
    r2 = l1_l2_ratio(7.3 * h.detach(), idx, mask=False, eps=0.0)
    torch.testing.assert_close(r1, r2)


@pytest.mark.parametrize("fn", [off_support_l1, l1_l2_ratio])
def test_mask_confines_gradient_to_active_set(fn):
    h, idx = cases()
    h = h.abs().requires_grad_()                                     # φ' ≠ 0 everywhere
    fn(h, idx, mask=True).backward()
    A = batch_active_mask(idx, M)
    assert h.grad[:, ~A].abs().max() == 0 and h.grad[:, A].abs().max() > 0
    h.grad = None
    fn(h, idx, mask=False).backward()
    assert h.grad[:, ~A].abs().max() > 0                              # the ablation reaches every unit


def test_off_support_gradient_vanishes_on_own_support():
    h, idx = cases()
    h = h.abs().requires_grad_()
    off_support_l1(h, idx).backward()
    assert h.grad.gather(1, idx).abs().max() == 0


def test_bad_arguments():
    h, idx = cases()
    with pytest.raises(ValueError, match="phi"):
        off_support_l1(h, idx, phi="square")
    with pytest.raises(ValueError, match="indices"):
        l1_l2_ratio(h, idx[:2])
    with pytest.raises(ValueError, match="pre_acts"):
        off_support_l1(h[0], idx)
    with pytest.raises(ValueError, match="eps"):
        l1_l2_ratio(h, idx, eps=-1.0)


@pytest.mark.parametrize("mask, copy, x_grad", [(True, True, False), (True, False, False), (False, True, False),
                                               (True, True, True), (True, False, True)])
def test_training_view_gradients_equal_dense_autograd(mask, copy, x_grad, monkeypatch):
    """The trainer's path (closed-form penalty gradients on the columns of A, or on all of h with the units outside A
    excluded, plus the sparse Top-k backward) gives the same loss and gradients as autograd through the full dense
    pre-activations."""
    torch.manual_seed(0)
    sae = st.TopKSAE(12, 48, 3, seed=0).double()
    with torch.no_grad():
        sae.b_enc[:6] += 2.0                                          # |A| well below m
        sae.b_dec.normal_()
    if not copy:                                                      # keep all of h, exclude the units outside A
        monkeypatch.setattr(train_module, "COPY_ACTIVE_BELOW", 0.0)
    x = torch.randn(16, 12, dtype=torch.float64).requires_grad_(x_grad)   # x_grad: the per-row input gradient too
    cfg = TrainConfig(lambda_off=0.3, lambda_ratio=0.2, reg_mask=mask, progress=False)
    _, _, cols, exclude = regularizer_view(sae, sae(x, dense_grad=False), mask)
    assert (cols is not None) == (mask and copy) and (exclude is not None) == (mask and not copy)
    dead = torch.zeros(48, dtype=torch.bool)
    loss, terms, _ = loss_terms(sae, x, cfg, dead, False, 6, reg_w=0.7)
    loss.backward()
    fast = {n: p.grad.clone() for n, p in sae.named_parameters()}
    if x_grad:
        fast["x"], x.grad = x.grad, None
    sae.zero_grad(set_to_none=True)
    out = sae(x, dense_grad=True)
    r_off, r_rat = off_support_l1(out.pre_acts, out.indices, mask), l1_l2_ratio(out.pre_acts, out.indices, mask)
    ref = st.losses.fvu(x, out.x_hat) + 0.7 * (0.3 * r_off + 0.2 * r_rat)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(terms["r_off"], r_off.detach())
    torch.testing.assert_close(terms["r_ratio"], r_rat.detach())
    ref.backward()
    for n, p in sae.named_parameters():
        torch.testing.assert_close(fast[n], p.grad, msg=n)
    if x_grad:
        torch.testing.assert_close(fast["x"], x.grad, msg="x")


def test_training_with_each_regularizer_keeps_fvu_and_lowers_its_penalty():
    """Synthetic d=32, 128 features, TopK m=256 k=6, 400 steps: FVU within 5% of the baseline, penalty falls."""
    data = make_sparse_data(16384, 32, 128, avg_active=5, seed=0)
    base = dict(batch_size=256, steps=400, lr=2e-3, progress=False, log_every=50)
    runs = {}
    for name, over in {"baseline": {}, "off": {"lambda_off": 0.01}, "ratio": {"lambda_ratio": 0.003}}.items():
        sae = st.TopKSAE(32, 256, 6, seed=0)
        hist = st.train(sae, data.x, TrainConfig(**base, **over))
        with torch.no_grad():
            out = sae(data.x[:4096])
            runs[name] = {
                "fvu": float(st.losses.fvu(data.x[:4096], out.x_hat)),
                "off": float(off_support_l1(out.pre_acts, out.indices)),
                "ratio": float(l1_l2_ratio(out.pre_acts, out.indices)),
                "hist": hist,
            }
    for name, key in (("off", "r_off"), ("ratio", "r_ratio")):
        assert runs[name]["fvu"] <= 1.05 * runs["baseline"]["fvu"], (name, runs[name]["fvu"], runs["baseline"]["fvu"])
        h = runs[name]["hist"][key]
        assert sum(h[-50:]) / 50 < 0.8 * sum(h[:50]) / 50, (name, "penalty did not fall")
        assert runs[name][name] < runs["baseline"][name], (name, "penalty not below the baseline's")


@pytest.mark.parametrize("lam", [{"lambda_off": 0.1}, {"lambda_ratio": 0.1}])
def test_bf16_autocast_path_matches_dense_autograd_under_the_same_autocast(lam):
    """CUDA trains under bf16 autocast; CPU autocast runs the same dtype logic (bf16 h and penalty GEMM, fp32
    parameters). The fast path must equal dense autograd on the same bf16 pre-activations, up to bf16 rounding."""
    torch.manual_seed(0)
    sae = st.TopKSAE(32, 256, 8, seed=0)
    x = torch.randn(64, 32)
    cfg = TrainConfig(batch_size=64, progress=False, **lam)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _, _ = loss_terms(sae, x, cfg, torch.zeros(256, dtype=torch.bool), False, 16)
    loss.backward()
    fast = {n: p.grad.clone() for n, p in sae.named_parameters()}
    assert all(g.dtype == torch.float32 for g in fast.values())
    sae.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sae(x, dense_grad=True)
        h = out.pre_acts.float()
        ref = st.losses.fvu(x, out.x_hat) + lam.get("lambda_off", 0) * off_support_l1(h, out.indices) \
            + lam.get("lambda_ratio", 0) * l1_l2_ratio(h, out.indices)
    ref.backward()
    torch.testing.assert_close(loss, ref)
    for n, p in sae.named_parameters():
        assert float((fast[n] - p.grad).norm() / p.grad.norm()) < 0.02, n
