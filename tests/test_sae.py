"""The SAE family: shapes, the sparse fast path against dense autograd, constraints, variant specifics."""
import pytest
import torch
import torch.nn.functional as F

import sae_tutorial as st
from sae_tutorial.sae import VARIANTS, sparsemax_threshold
from sae_tutorial.sae.kernels import Support, sparse_decode, sparse_t_matmul

D, M, K = 16, 64, 4


def make(variant: str, **kw):
    cls = VARIANTS[variant]
    if cls.takes_k:
        return cls(D, M, K, seed=0, **kw)
    return cls(D, M, seed=0, **kw)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_shapes_and_interface(variant):
    sae = make(variant)
    x = torch.randn(8, D)
    out = sae(x)
    assert out.x_hat.shape == (8, D) and out.codes.shape == (8, M) and out.pre_acts.shape == (8, M)
    if sae.has_fixed_k:
        assert out.indices.shape == (8, K)
    else:
        assert out.indices is None
    assert (out.codes >= 0).all() or not sae.nonnegative_codes
    sae.eval()
    z = sae.encode(x)
    assert z.shape == (8, M)
    assert sae.decode(z).shape == (8, D)
    z2 = sae.encode(x, k=2)
    assert ((z2 > 0).sum(1) <= 2 * (8 if variant == "BatchTopKSAE" else 1)).all()
    assert sae.W_dec.shape == (M, D) and sae.b_dec.shape == (D,)


@pytest.mark.parametrize("variant", ["TopKSAE", "ReLUSAE", "SparsemaxSAE", "SparsemaxActSAE", "MultiTopKSAE",
                                     "MatryoshkaSAE"])
def test_inference_k_is_topk_of_relu(variant):
    sae = make(variant)
    x = torch.randn(5, D)
    z = sae.encode(x, k=3)
    xin = F.normalize(x, dim=1) if variant.startswith("Sparsemax") else x
    a = F.relu(sae.pre_activations(xin))
    ref = torch.zeros_like(a).scatter(1, a.topk(3, dim=1).indices, a.topk(3, dim=1).values)
    torch.testing.assert_close(z, ref)


def test_topk_matches_dense_reference_in_float64():
    sae = make("TopKSAE").double()
    x = torch.randn(6, D, dtype=torch.float64)
    out = sae(x)
    h = (x - sae.b_dec) @ sae.W_enc.T + sae.b_enc
    thr = h.topk(K, dim=1).values[:, -1:]
    z = F.relu(h) * (h >= thr)
    torch.testing.assert_close(out.codes, z)
    torch.testing.assert_close(out.x_hat, z @ sae.W_dec + sae.b_dec)


def _grads(sae, x, dense_grad):
    sae.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_(x.requires_grad)
    out = sae(x, dense_grad=dense_grad)
    loss = (out.x_hat - x.detach().flip(0)).pow(2).sum() + 0.3 * out.x_hat.sum()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in sae.named_parameters()}
    return {**grads, "x": x.grad} if x.requires_grad else grads


def test_fast_path_gradients_equal_dense_path_and_autograd_reference():
    sae = make("TopKSAE").double()
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_(std=0.1)
    x = torch.randn(32, D, dtype=torch.float64)
    fast, dense = _grads(sae, x, False), _grads(sae, x, True)
    # reference: plain autograd with dense codes and a dense decode GEMM
    sae.zero_grad(set_to_none=True)
    h = (x - sae.b_dec) @ sae.W_enc.T + sae.b_enc
    idx = h.detach().topk(K, dim=1).indices
    mask = torch.zeros_like(h).scatter(1, idx, 1.0)
    x_hat = (F.relu(h) * mask) @ sae.W_dec + sae.b_dec
    ((x_hat - x.flip(0)).pow(2).sum() + 0.3 * x_hat.sum()).backward()
    for name, p in sae.named_parameters():
        torch.testing.assert_close(fast[name], p.grad, msg=f"fast path, {name}")
        torch.testing.assert_close(dense[name], p.grad, msg=f"dense path, {name}")


def test_fast_path_gradient_to_the_input_when_it_asks_for_one():
    """The data need no gradient in training (b_dec's comes from Σ_b ∂L/∂h_b), but an x that requires grad gets
    its per-row gradient on the fast path too."""
    sae = make("TopKSAE").double()
    with torch.no_grad():
        sae.b_dec.normal_()
    x = torch.randn(32, D, dtype=torch.float64).requires_grad_()
    fast, dense = _grads(sae, x, False), _grads(sae, x, True)
    for name in dense:
        torch.testing.assert_close(fast[name], dense[name], msg=name)


def test_fast_path_returns_pre_acts_without_graph():
    sae = make("TopKSAE")
    out = sae(torch.randn(4, D), dense_grad=False)
    assert not out.pre_acts.requires_grad and out.x_hat.requires_grad


def test_sparse_kernels_against_dense():
    """Gᵀ·dense and G·W for a (B, k) support and for a ragged one (rows with 0 to 5 entries), against dense loops."""
    idx = torch.randint(0, 10, (7, 3))
    ragged = torch.randperm(7 * 10)[:16]                   # flat entries of a (7, 10) matrix, any number per row
    for support in (Support.of_topk(idx), Support.of_flat(ragged, 7, 10)):
        E = len(support.cols)
        w = torch.randn(E, dtype=torch.float64)
        G = torch.zeros(7, 10, dtype=torch.float64)
        for e in range(E):
            G[support.rows[e], support.cols[e]] += w[e]
        assert (support.offsets == torch.searchsorted(support.rows, torch.arange(7))).all()
        dense = torch.randn(7, 5, dtype=torch.float64)
        torch.testing.assert_close(sparse_t_matmul(support, w, dense, 10), G.T @ dense)
        W = torch.randn(10, 5, dtype=torch.float64)
        torch.testing.assert_close(sparse_decode(support, w, W), G @ W)
    flat = Support.of_flat(ragged, 7, 10)
    assert sorted((flat.rows * 10 + flat.cols).tolist()) == sorted(ragged.tolist())


def test_batchtopk_fast_path_gradients_equal_dense_path():
    """BatchTopK's sparse training path (a ragged Support) gives the dense path's outputs, gradients and θ."""
    torch.manual_seed(0)
    fast_sae = make("BatchTopKSAE").double()
    with torch.no_grad():
        fast_sae.b_dec.normal_()
    dense_sae = make("BatchTopKSAE").double()
    dense_sae.load_state_dict(fast_sae.state_dict())
    x = torch.randn(32, D, dtype=torch.float64)
    outs = {}
    for name, sae, dense_grad in (("fast", fast_sae, False), ("dense", dense_sae, True)):
        sae.train()
        out = sae(x, dense_grad=dense_grad)
        ((out.x_hat - x.flip(0)).pow(2).sum() + 0.3 * out.x_hat.sum()).backward()
        outs[name] = out
    assert outs["fast"].dense_codes is None and outs["fast"].support is not None
    assert (outs["fast"].support.offsets.diff() != K).any()                  # the rows really are ragged
    torch.testing.assert_close(outs["fast"].x_hat, outs["dense"].x_hat)
    torch.testing.assert_close(outs["fast"].codes, outs["dense"].codes)
    torch.testing.assert_close(outs["fast"].l0(), outs["dense"].l0())
    assert torch.equal(outs["fast"].fired(), outs["dense"].fired())
    torch.testing.assert_close(fast_sae.threshold, dense_sae.threshold)
    for (name, p), q in zip(fast_sae.named_parameters(), dense_sae.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_decoder_constraint_helpers():
    sae = make("TopKSAE")
    with torch.no_grad():
        sae.W_dec.mul_(3.0)
    sae.W_dec.grad = torch.randn(M, D)
    sae.normalize_decoder()
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(M))
    sae.remove_parallel_grad()
    assert (sae.W_dec.grad * sae.W_dec).sum(1).abs().max() < 1e-5


def test_tied_init_and_geometric_median():
    sae = make("TopKSAE")
    torch.testing.assert_close(sae.W_dec, F.normalize(sae.W_enc, dim=1))
    pts = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [100.0, 100.0]])
    gm = st.sae.geometric_median(pts)
    # the geometric median minimises the sum of distances and is robust to the outlier
    cost = lambda y: (pts - y).norm(dim=1).sum()
    assert cost(gm) <= cost(pts.mean(0)) and gm.norm() < 1.0
    for y in (gm + torch.tensor([1e-3, 0]), gm - torch.tensor([0, 1e-3])):
        assert cost(gm) <= cost(y) + 1e-6


def test_output_fired_and_l0():
    sae = make("TopKSAE")
    out = sae(torch.randn(10, D))
    z = out.codes
    torch.testing.assert_close(out.l0(), (z > 0).sum(1).float().mean())
    assert torch.equal(out.fired(), (z > 0).any(0))


def test_batchtopk_training_selects_batch_budget_and_learns_threshold():
    sae = make("BatchTopKSAE", threshold_start=0)
    sae.train()
    x = torch.randn(16, D)
    out = sae(x)
    assert int((out.codes > 0).sum()) <= 16 * K
    assert int((out.codes > 0).sum()) == min(16 * K, int((F.relu(out.pre_acts) > 0).sum()))
    smallest = out.codes[out.codes > 0].min()
    torch.testing.assert_close(sae.threshold, smallest)      # first update sets θ
    sae(x)
    torch.testing.assert_close(sae.threshold, smallest)      # same batch, same minimum
    sae.eval()
    z = sae.encode(x)
    a = F.relu(sae.pre_activations(x))
    torch.testing.assert_close(z, a * (a > sae.threshold))


@pytest.mark.parametrize("variant", ["SparsemaxSAE", "SparsemaxActSAE"])
def test_sparsemax_threshold_and_adaptive_support(variant):
    h = torch.randn(50, 30, dtype=torch.float64) * 2
    tau = sparsemax_threshold(h)
    torch.testing.assert_close(F.relu(h - tau).sum(1), torch.ones(50, dtype=torch.float64))
    sae = make(variant)
    out = sae(torch.randn(40, D) * 3)
    sizes = (out.codes > 0).sum(1)
    assert sizes.min() != sizes.max(), "the support should vary with the input"
    # scale equivariance: codes see the normalised input, the reconstruction is rescaled by ‖x‖
    sae.eval()                                                  # (training moves the published model's idf mask)
    x = torch.randn(3, D)
    torch.testing.assert_close(sae(5 * x).x_hat, 5 * sae(x).x_hat, rtol=1e-5, atol=1e-5)


def test_relu_sparsity_loss_formula():
    sae = make("ReLUSAE", l1_coeff=0.5)
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(M, 1) + 0.5)
    with torch.no_grad():
        out = sae(torch.randn(6, D))
    ref = 0.5 * sum(float(out.codes[b, j] * sae.W_dec[j].norm()) for b in range(6) for j in range(M)) / 6
    assert abs(float(sae.sparsity_loss(out)) - ref) < 1e-4
    assert not sae.unit_norm_decoder


@pytest.mark.parametrize("bad", [0, -1, M + 1])
def test_bad_k(bad):
    with pytest.raises(ValueError, match="k"):
        st.TopKSAE(D, M, bad)
    sae = make("TopKSAE")
    with pytest.raises(ValueError, match="k"):
        sae.encode(torch.randn(2, D), k=bad)


def test_bad_inputs_are_named():
    with pytest.raises(TypeError, match="k"):
        st.TopKSAE(D, M, 2.5)
    with pytest.raises(ValueError, match="d_in"):
        st.TopKSAE(0, M, K)
    sae = make("TopKSAE")
    with pytest.raises(ValueError, match=r"shape \(B, 16\)"):
        sae(torch.randn(3, D + 1))
    with pytest.raises(ValueError, match=r"shape \(B, 16\)"):
        sae(torch.randn(D))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        sae([[0.0] * D])
    with pytest.raises(ValueError, match="codes"):
        sae.decode(torch.randn(2, M + 1))
    with pytest.raises(ValueError, match="l1_coeff"):
        st.ReLUSAE(D, M, l1_coeff=-1.0)
    with pytest.raises(ValueError, match="momentum"):
        st.BatchTopKSAE(D, M, K, momentum=1.0)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_reconstruct_budgets_equals_forward_per_k(variant):
    sae = make(variant)
    sae.eval()
    x = torch.randn(9, D)
    got = sae.reconstruct_budgets(x, [1, 3, 8])
    for k, x_hat in got.items():
        torch.testing.assert_close(x_hat, sae(x, k=k).x_hat, rtol=1e-5, atol=1e-6)
