"""SAEs of other libraries: st.load maps each onto our maps exactly, sae.save_as writes what they read back, and what
we cannot express is a clear error.

sparsify, overcomplete and dictionary_learning are the real PyPI packages (requirements-dev.txt), writing and reading
their own files; each test compares our encode/decode with theirs on random inputs to 1e-5 relative (max |Δ| over
max |theirs|). Two shims, no maths changed: overcomplete 0.3.0 calls matplotlib's removed `cm.get_cmap` at import,
and dictionary_learning imports nnsight (a heavy LM-tracing stack its SAEs do not use) at import.

SAELens is not installed: its dependencies (transformer-lens, transformers, nltk, plotly, ...) are too heavy for CI.
Its files are written here in its documented v6 layout and compared with a reference of its maths, both read from
SAELens 6.x's source (sae_lens/saes/sae.py `save_model` / `process_sae_in`, standard_sae.py, topk_sae.py `TopK`,
`act_times_W_dec`, jumprelu_sae.py `encode`, batchtopk_sae.py `process_state_dict_for_saving_inference`).
"""
import json
import os
import sys
import types

import pytest
import torch
from safetensors.torch import save_file

import sae_tutorial as st
from sae_tutorial.interop import UnsupportedSAE, detect

D, M, K, N = 12, 48, 4, 64
TOL = 1e-5


def rel(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """max |ours − theirs| / max |theirs|."""
    return float((ours.double() - theirs.double()).abs().max() / theirs.double().abs().max().clamp_min(1e-30))


def assert_same(ours_codes, theirs_codes, ours_x, theirs_x):
    assert ours_codes.shape == theirs_codes.shape and ours_x.shape == theirs_x.shape
    assert rel(ours_codes, theirs_codes) < TOL, rel(ours_codes, theirs_codes)
    assert rel(ours_x, theirs_x) < TOL, rel(ours_x, theirs_x)


def inputs(seed: int = 1, n: int = N, d: int = D) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) * 2 + 0.5


def randomise_(*params: torch.Tensor, scale: float = 0.3) -> None:
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn_like(p) * scale)


# ---------------------------------------------------------------- sparsify
@pytest.fixture(scope="module")
def sparsify():
    os.environ["SPARSIFY_DISABLE_TRITON"] = "1"   # its Triton decoder needs a GPU; the eager one is the same maths
    return pytest.importorskip("sparsify")


def sparsify_coder(sparsify, **cfg):
    coder = sparsify.SparseCoder(D, sparsify.SparseCoderConfig(num_latents=M, k=K, **cfg))
    randomise_(coder.b_dec, coder.encoder.bias)
    return coder


def sparsify_codes(coder, x):
    out = coder.encode(x)
    return torch.zeros(x.shape[0], coder.num_latents).scatter(1, out.top_indices, out.top_acts)


def test_sparsify_load_equals_theirs(tmp_path, sparsify):
    coder = sparsify_coder(sparsify, multi_topk=True)
    coder.save_to_disk(tmp_path / "layer")
    assert detect(tmp_path / "layer") == "sparsify"
    sae = st.load(tmp_path / "layer")
    assert type(sae) is st.TopKSAE and sae.k == K and sae.n_latents == M
    x = inputs()
    with torch.no_grad():
        z = sparsify_codes(coder, x)
        out = coder.encode(x)
        assert_same(sae.encode(x), z, sae.decode(sae.encode(x)), coder.decode(out.top_acts, out.top_indices))
    assert sae.provenance["library"] == "sparsify" and "Multi-TopK" in sae.provenance["notes"][0]
    assert st.load(tmp_path / "layer" / "sae.safetensors", library="sparsify").k == K   # a file path works too


def test_sparsify_export_read_by_sparsify(tmp_path, sparsify):
    ours = st.TopKSAE(D, M, K, seed=3)
    st.train(ours, inputs(2, 256), st.TrainConfig(batch_size=64, steps=5, progress=False))
    ours.save_as(tmp_path / "out", library="sparsify")
    coder = sparsify.SparseCoder.load_from_disk(tmp_path / "out")
    x = inputs()
    ours.eval()
    with torch.no_grad():
        out = coder.encode(x)
        assert_same(ours.encode(x), sparsify_codes(coder, x), ours(x).x_hat, coder.decode(out.top_acts, out.top_indices))


@pytest.mark.parametrize("option, match", [
    ({"activation": "groupmax"}, "activation 'groupmax'"),
    ({"transcode": True}, "transcoder"),
    ({"skip_connection": True}, "skip connection"),
])
def test_sparsify_options_we_lack(tmp_path, sparsify, option, match):
    sparsify_coder(sparsify, **option).save_to_disk(tmp_path / "s")
    with pytest.raises(UnsupportedSAE, match=match):
        st.load(tmp_path / "s")


def test_sparsify_free_decoder_rows_are_refused(tmp_path, sparsify):
    coder = sparsify_coder(sparsify, normalize_decoder=False)
    with torch.no_grad():
        coder.W_dec.mul_(torch.linspace(0.5, 2, M)[:, None])
    coder.save_to_disk(tmp_path / "s")
    with pytest.raises(UnsupportedSAE, match=r"decoder rows of norm .*cannot be folded"):
        st.load(tmp_path / "s")


# ---------------------------------------------------------------- dictionary_learning
@pytest.fixture(scope="module")
def dictionary_learning():
    try:
        import nnsight  # noqa: F401
    except ImportError:   # imported by dictionary_learning/__init__ (its LM activation buffer), unused by its SAEs
        stub = types.ModuleType("nnsight")
        stub.LanguageModel = object
        sys.modules["nnsight"] = stub
    return pytest.importorskip("dictionary_learning")


def dl_train(trainer, folder, steps: int = 6):
    """A few real training steps, then the files trainSAE writes: config.json {"trainer": ...} and ae.pt."""
    data = inputs(5, 256)
    for step in range(steps):
        trainer.update(step, data[step * 32:(step + 1) * 32])
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"trainer": trainer.config, "buffer": {"d_submodule": D}}))
    torch.save({k: v.cpu() for k, v in trainer.ae.state_dict().items()}, folder / "ae.pt")
    return trainer.ae


def dl_trainers(dl):
    from dictionary_learning.trainers.batch_top_k import BatchTopKTrainer
    from dictionary_learning.trainers.matryoshka_batch_top_k import MatryoshkaBatchTopKTrainer
    from dictionary_learning.trainers.standard import StandardTrainer
    from dictionary_learning.trainers.top_k import TopKTrainer

    common = dict(steps=6, activation_dim=D, dict_size=M, layer=0, lm_name="none", device="cpu", seed=0,
                  warmup_steps=1)
    return {
        "AutoEncoderTopK": (lambda: TopKTrainer(k=K, threshold_start_step=2, **common), st.TopKSAE),
        "BatchTopKSAE": (lambda: BatchTopKTrainer(k=K, threshold_start_step=2, **common), st.BatchTopKSAE),
        "BatchTopKSAE-unlearned": (lambda: BatchTopKTrainer(k=K, threshold_start_step=100, **common),
                                   st.BatchTopKSAE),
        "MatryoshkaBatchTopKSAE": (lambda: MatryoshkaBatchTopKTrainer(
            k=K, group_fractions=[0.25, 0.75], threshold_start_step=2, **common), st.BatchTopKSAE),
        "AutoEncoder": (lambda: StandardTrainer(sparsity_warmup_steps=1, **common), st.ReLUSAE),
    }


@pytest.mark.parametrize("name", ["AutoEncoderTopK", "BatchTopKSAE", "BatchTopKSAE-unlearned",
                                  "MatryoshkaBatchTopKSAE", "AutoEncoder"])
def test_dictionary_learning_load_equals_theirs(tmp_path, dictionary_learning, name):
    make, expected = dl_trainers(dictionary_learning)[name]
    ae = dl_train(make(), tmp_path / "trainer_0").eval()
    sae = st.load(tmp_path / "trainer_0")
    assert type(sae) is expected and sae.provenance["foreign_class"] == name.split("-")[0]
    if name.startswith("BatchTopK"):
        learned = name == "BatchTopKSAE"
        assert (float(ae.threshold) > 0) == learned and float(sae.threshold) == pytest.approx(float(ae.threshold))
    x = inputs()
    with torch.no_grad():
        z = ae.encode(x)
        assert_same(sae.encode(x), z, sae.decode(sae.encode(x)), ae.decode(z))
        assert rel(sae(x).x_hat, ae(x)) < TOL


def test_dictionary_learning_autoencoder_new_folds_its_bias(tmp_path, dictionary_learning):
    ae = dictionary_learning.dictionary.AutoEncoderNew(D, M)
    randomise_(ae.encoder.bias, ae.decoder.bias)
    (tmp_path / "f").mkdir()
    torch.save(ae.state_dict(), tmp_path / "f" / "ae.pt")
    (tmp_path / "f" / "config.json").write_text(json.dumps({"trainer": {"dict_class": "AutoEncoderNew"}}))
    sae = st.load(tmp_path / "f", library="dictionary_learning")
    assert any("folded into b_enc" in s for s in sae.provenance["rewrites"])
    x = inputs()
    with torch.no_grad():
        assert_same(sae.encode(x), ae.encode(x), sae.decode(ae.encode(x)), ae.decode(ae.encode(x)))


@pytest.mark.parametrize("cls, match", [("JumpReluAutoEncoder", "JumpReLU"), ("GatedAutoEncoder", "gated")])
def test_dictionary_learning_variants_we_lack(tmp_path, dictionary_learning, cls, match):
    ae = getattr(dictionary_learning.dictionary, cls)(D, M)
    (tmp_path / "f").mkdir()
    torch.save(ae.state_dict(), tmp_path / "f" / "ae.pt")
    (tmp_path / "f" / "config.json").write_text(json.dumps({"trainer": {"dict_class": cls}}))
    with pytest.raises(UnsupportedSAE, match=match):
        st.load(tmp_path / "f")


# ---------------------------------------------------------------- overcomplete
@pytest.fixture(scope="module")
def overcomplete():
    import matplotlib
    import matplotlib.cm
    if not hasattr(matplotlib.cm, "get_cmap"):   # overcomplete 0.3.0 calls it at import; matplotlib 3.9 removed it
        matplotlib.cm.get_cmap = matplotlib.colormaps.get_cmap
    return pytest.importorskip("overcomplete.sae")


def oc_model(oc, cls: str, **kw):
    model = getattr(oc, cls)(D, M, **kw)
    with torch.no_grad():
        model.encoder.final_block[0].bias.normal_(0, 0.3)
    if cls == "BatchTopKSAE":
        model.train()
        model.encode(inputs(7))          # a training batch sets its running threshold
    return model.eval()


@pytest.mark.parametrize("cls, ours", [("TopKSAE", st.TopKSAE), ("BatchTopKSAE", st.BatchTopKSAE),
                                       ("SAE", st.ReLUSAE)])
@pytest.mark.parametrize("saved", ["module", "state_dict"])
def test_overcomplete_load_equals_theirs(tmp_path, overcomplete, cls, ours, saved):
    kw = {"top_k": K} if cls == "TopKSAE" else {"top_k": K * N} if cls == "BatchTopKSAE" else {}
    model = oc_model(overcomplete, cls, **kw)
    path = tmp_path / "sae.pt"
    options = {"k": K} if cls == "BatchTopKSAE" else {}
    if saved == "module":
        torch.save(model, path)
        with pytest.raises(ValueError, match="trust_pickle=True"):
            st.load(path)
        sae = st.load(path, trust_pickle=True, **options)
    else:
        torch.save(model.state_dict(), path)
        with pytest.raises(ValueError, match="pass variant="):
            st.load(path)
        if cls == "BatchTopKSAE":
            options["threshold"] = float(model.running_threshold)
        sae = st.load(path, variant=cls, **({"k": K} if cls == "TopKSAE" else {}), **options)
    assert type(sae) is ours and detect(path) == "overcomplete"
    x = inputs()
    with torch.no_grad():
        _, z = model.encode(x)
        assert_same(sae.encode(x), z, sae.decode(z), model.decode(z))


def test_overcomplete_batchnorm_encoder_folds_exactly(tmp_path, overcomplete):
    from overcomplete.sae.modules import MLPEncoder
    enc = MLPEncoder(D, M, nb_blocks=0, norm_layer=torch.nn.BatchNorm1d)
    model = overcomplete.TopKSAE(D, M, top_k=K, encoder_module=enc)
    model.train()
    for seed in range(3):
        model.encode(inputs(seed))        # BatchNorm running statistics
    with torch.no_grad():
        enc.final_block[1].weight.uniform_(0.5, 1.5)
    model.eval()
    torch.save(model, tmp_path / "bn.pt")
    sae = st.load(tmp_path / "bn.pt", trust_pickle=True)
    x = inputs()
    with torch.no_grad():
        _, z = model.encode(x)
        assert_same(sae.encode(x), z, sae.decode(z), model.decode(z))


def test_overcomplete_variants_we_lack(tmp_path, overcomplete):
    torch.save(overcomplete.JumpSAE(D, M).eval(), tmp_path / "j.pt")
    with pytest.raises(UnsupportedSAE, match="JumpSAE"):
        st.load(tmp_path / "j.pt", trust_pickle=True)
    torch.save(overcomplete.TopKSAE(D, M, top_k=K, encoder_module="mlp_ln_3").eval(), tmp_path / "mlp.pt")
    with pytest.raises(UnsupportedSAE, match="hidden blocks"):
        st.load(tmp_path / "mlp.pt", trust_pickle=True)
    torch.save(overcomplete.TopKSAE(D, M, top_k=K, encoder_module="mlp_ln_1").eval(), tmp_path / "ln.pt")
    with pytest.raises(UnsupportedSAE, match="normalisation \\['LayerNorm'\\]"):
        st.load(tmp_path / "ln.pt", trust_pickle=True)
    model = overcomplete.TopKSAE(D, M, top_k=K, dictionary_params={"normalization": "identity"})
    with torch.no_grad():
        model.dictionary._weights.mul_(3)
    torch.save(model.eval(), tmp_path / "free.pt")
    with pytest.raises(UnsupportedSAE, match="cannot be folded"):
        st.load(tmp_path / "free.pt", trust_pickle=True)
    with pytest.raises(ValueError, match="pass k="):
        torch.save(oc_model(overcomplete, "BatchTopKSAE", top_k=K * N), tmp_path / "b.pt")
        st.load(tmp_path / "b.pt", trust_pickle=True)


# ---------------------------------------------------------------- SAELens (documented layout, not installed)
def saelens_folder(folder, cfg, weights):
    """What SAE.save_model writes: sae_weights.safetensors (state dict) and cfg.json (cfg.to_dict())."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in weights.items()}, str(folder / "sae_weights.safetensors"))
    base = {"d_in": D, "d_sae": M, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": True,
            "normalize_activations": "none", "reshape_activations": "none",
            "metadata": {"sae_lens_version": "6.54.12", "model_name": "vit", "hook_name": "blocks.11.hook_resid_post"}}
    (folder / "cfg.json").write_text(json.dumps({**base, **cfg}))
    return folder


def saelens_weights(unit: bool = True, threshold=None):
    g = torch.Generator().manual_seed(4)
    W_dec = torch.randn(M, D, generator=g)
    W_dec = W_dec / W_dec.norm(dim=1, keepdim=True) if unit else W_dec * torch.rand(M, 1, generator=g) * 2
    w = {"W_enc": torch.randn(D, M, generator=g) * 0.3, "b_enc": torch.randn(M, generator=g) * 0.2,
         "W_dec": W_dec, "b_dec": torch.randn(D, generator=g)}
    if threshold is not None:
        w["threshold"] = threshold
    return w


def saelens_encode(cfg, w, x):
    """SAELens 6.x: process_sae_in, then the architecture's encode."""
    h = (x - w["b_dec"] * cfg.get("apply_b_dec_to_input", True)) @ w["W_enc"] + w["b_enc"]
    arch = cfg["architecture"]
    if arch == "standard":
        return h.relu()
    if arch in ("jumprelu", "batchtopk"):   # a batchtopk checkpoint is saved for inference as jumprelu, θ_i = θ
        return h.relu() * (h > w.get("threshold", w.get("topk_threshold")))
    if cfg.get("rescale_acts_by_decoder_norm"):
        h = h * w["W_dec"].norm(dim=-1)
    vals, idx = h.topk(cfg["k"], dim=-1, sorted=False)
    return torch.zeros_like(h).scatter(-1, idx, vals.relu())


def saelens_decode(cfg, w, z):
    if cfg["architecture"] == "topk" and cfg.get("rescale_acts_by_decoder_norm"):
        z = z * (1 / w["W_dec"].norm(dim=-1))
    return z @ w["W_dec"] + w["b_dec"]


@pytest.mark.parametrize("cfg, unit, ours", [
    ({"architecture": "standard"}, False, st.ReLUSAE),
    ({"architecture": "standard", "apply_b_dec_to_input": False}, False, st.ReLUSAE),
    ({"architecture": "topk", "k": K}, True, st.TopKSAE),
    ({"architecture": "topk", "k": K, "rescale_acts_by_decoder_norm": True}, False, st.TopKSAE),
    ({"architecture": "topk", "k": K, "apply_b_dec_to_input": False}, True, st.TopKSAE),
    ({"architecture": "jumprelu", "k": K}, True, st.BatchTopKSAE),
    ({"architecture": "batchtopk", "k": K}, True, st.BatchTopKSAE),
])
def test_saelens_layout_load_equals_its_maths(tmp_path, cfg, unit, ours):
    w = saelens_weights(unit, torch.full((M,), 0.4) if cfg["architecture"] == "jumprelu" else None)
    if cfg["architecture"] == "batchtopk":
        w["topk_threshold"] = torch.tensor(0.3, dtype=torch.float64)   # BatchTopKTrainingSAE's buffer
    folder = saelens_folder(tmp_path / "sl", cfg, w)
    assert detect(folder) == "saelens"
    sae = st.load(folder)
    assert type(sae) is ours
    x = inputs()
    with torch.no_grad():
        z = saelens_encode(cfg, w, x)
        assert_same(sae.encode(x), z, sae.decode(sae.encode(x)), saelens_decode(cfg, w, z))


def test_saelens_pre6_topk_config(tmp_path):
    w = saelens_weights()
    folder = saelens_folder(tmp_path / "old", {"architecture": None, "activation_fn_str": "topk",
                                               "activation_fn_kwargs": {"k": K}, "metadata": {}}, w)
    sae = st.load(folder)
    assert type(sae) is st.TopKSAE and sae.k == K


@pytest.mark.parametrize("cfg, threshold, match", [
    ({"architecture": "gated"}, None, "architecture 'gated'"),
    ({"architecture": "jumprelu", "k": K}, torch.linspace(0.1, 0.5, M), "per-latent thresholds"),
    ({"architecture": "jumprelu"}, torch.full((M,), 0.4), "pass k="),
    ({"architecture": "topk", "k": K, "normalize_activations": "layer_norm"}, None, "layer_norm"),
    ({"architecture": "topk", "k": 2.5}, None, "whole numbers"),
])
def test_saelens_what_we_lack(tmp_path, cfg, threshold, match):
    folder = saelens_folder(tmp_path / "sl", cfg, saelens_weights(True, threshold))
    with pytest.raises(ValueError, match=match):
        st.load(folder)


@pytest.mark.parametrize("variant", ["TopKSAE", "BatchTopKSAE", "ReLUSAE"])
def test_saelens_export_layout_and_maths(tmp_path, variant):
    from safetensors.torch import load_file
    cls = getattr(st, variant)
    ours = cls(D, M, K, seed=2) if variant != "ReLUSAE" else cls(D, M, seed=2)
    st.train(ours, inputs(2, 256), st.TrainConfig(batch_size=64, steps=5, progress=False))
    ours.eval()
    folder = ours.save_as(tmp_path / "sl", library="saelens", metadata={"hook_name": "blocks.11.hook_resid_post"})
    cfg = json.loads((folder / "cfg.json").read_text())
    w = load_file(str(folder / "sae_weights.safetensors"))
    assert cfg["d_in"] == D and cfg["d_sae"] == M and cfg["metadata"]["hook_name"] == "blocks.11.hook_resid_post"
    assert w["W_enc"].shape == (D, M) and w["W_dec"].shape == (M, D)
    assert cfg["architecture"] == {"TopKSAE": "topk", "BatchTopKSAE": "jumprelu", "ReLUSAE": "standard"}[variant]
    x = inputs()
    with torch.no_grad():
        z = saelens_encode(cfg, w, x)
        assert_same(ours.encode(x), z, ours(x).x_hat, saelens_decode(cfg, w, z))
        back = st.load(folder, k=K) if variant == "BatchTopKSAE" else st.load(folder)
        assert type(back) is cls and torch.equal(back.encode(x), ours.encode(x))


# ---------------------------------------------------------------- detection, export, provenance
def test_detection_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no known SAE format.*sparsify.*saelens.*dictionary_learning"):
        st.load(tmp_path / "empty")
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(ValueError, match="unknown SAE file type '.npz'"):
        st.load(tmp_path / "w.npz")
    with pytest.raises(ValueError, match="library must be one of"):
        st.load(tmp_path / "empty", library="neuronpedia")
    with pytest.raises(FileNotFoundError, match="no cfg.json"):
        st.load(tmp_path / "empty", library="sparsify")
    with pytest.raises(TypeError, match="takes options none"):
        st.load(tmp_path / "empty", library="sparsify", k=3)
    for name in ("layer.0", "layer.1"):
        st.TopKSAE(D, M, K).save_as(tmp_path / "multi" / name, library="sparsify")
    with pytest.raises(ValueError, match="several SAEs"):
        st.load(tmp_path / "multi")
    torch.save({"w": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an overcomplete SAE"):
        st.load(tmp_path / "other.pt")


def test_export_refuses_variants_a_library_lacks(tmp_path):
    with pytest.raises(UnsupportedSAE, match="sparsify has Top-k SAEs only; a ReLUSAE"):
        st.ReLUSAE(D, M).save_as(tmp_path / "a", library="sparsify")
    with pytest.raises(UnsupportedSAE, match="SparsemaxSAE"):
        st.SparsemaxSAE(D, M).save_as(tmp_path / "b", library="saelens")
    with pytest.raises(ValueError, match="library must be one of"):
        st.TopKSAE(D, M, K).save_as(tmp_path / "c", library="overcomplete")


def test_provenance_survives_checkpoints_and_reaches_the_method_card(tmp_path):
    w = saelens_weights()
    sae = st.load(saelens_folder(tmp_path / "sl", {"architecture": "topk", "k": K}, w))
    path = sae.save(tmp_path / "ours.safetensors")
    back = st.load(path)
    assert back.provenance == sae.provenance and back.provenance["library_version"] == "6.54.12"
    back.save_pretrained(tmp_path / "hub")
    assert st.load(tmp_path / "hub").provenance["source"] == str(tmp_path / "sl")
    x = inputs(3, 200)
    report = st.metrics.evaluate(back, x, ks=[], probe_ns=[])
    prov = {f: "-" for f in ("source_model", "layer", "pooling", "dataset", "split", "preprocessing")}
    json_path, md_path = st.method_card(back, report, {**prov, "train_config": {}}, tmp_path / "card")
    card = json.loads(json_path.read_text())
    assert card["library"]["imported_from"].startswith("saelens 6.54.12: topk SAE (cfg.json + sae_weights.safetensors)")
    assert "imported_from" in md_path.read_text()


def test_load_keeps_the_file_dtype(tmp_path):
    w = {k: v.double() for k, v in saelens_weights().items()}
    sae = st.load(saelens_folder(tmp_path / "sl", {"architecture": "topk", "k": K, "dtype": "float64"}, w))
    assert sae.W_dec.dtype == torch.float64 and sae.provenance["dtype"] == "float64"
    assert st.load(sae.save(tmp_path / "d.safetensors")).W_dec.dtype == torch.float64
    half = st.BatchTopKSAE(D, M, K, seed=0).to(torch.bfloat16).eval()
    back = st.load(half.save_as(tmp_path / "bf16", library="saelens"), k=K)
    x = inputs().to(torch.bfloat16)
    assert back.W_dec.dtype == torch.bfloat16 and torch.equal(back.encode(x), half.encode(x))


def test_saelens_inputs_scaled_outside_the_sae_are_noted(tmp_path):
    folder = saelens_folder(tmp_path / "sl", {"architecture": "topk", "k": K,
                                              "normalize_activations": "expected_average_only_in"}, saelens_weights())
    assert "feed inputs scaled the same way" in st.load(folder).provenance["notes"][0]


# ---------------------------------------------------------------- SAEBench
def test_saebench_interface():
    """Mirrors sae_bench/custom_saes/base_sae.py: shapes, attributes, (batch, seq, d) inputs, the norm check."""
    sae = st.TopKSAE(D, M, K, seed=0)
    ad = st.interop.SAEBenchAdapter(sae, model_name="vit", hook_layer=11)
    assert isinstance(ad.W_dec, torch.nn.Parameter) and ad.W_dec.shape == (ad.cfg.d_sae, ad.cfg.d_in) == (M, D)
    assert ad.W_enc.shape == (D, M) and ad.b_enc.shape == (M,) and ad.b_dec.shape == (D,)
    assert ad.dtype == torch.float32 and ad.device.type == "cpu" and ad.cfg.dtype == "float32"
    assert ad.cfg.hook_name == "blocks.11.hook_resid_post" and ad.check_decoder_norms()
    acts = torch.randn(3, 5, D)
    codes = ad.encode(acts)
    assert codes.shape == (3, 5, M) and int((codes > 0).sum(-1).max()) <= K
    assert torch.allclose(ad(acts.reshape(-1, D)).reshape(acts.shape), ad.decode(codes), atol=1e-6)
    ad.to(dtype=torch.float64)
    assert ad.dtype == torch.float64 and ad.cfg.dtype == "float64" and ad.encode(acts).dtype == torch.float64
    with torch.no_grad():
        sae.W_dec.mul_(1.1)
    assert not ad.check_decoder_norms()
    with pytest.raises(TypeError, match="SparsemaxSAE"):
        st.interop.SAEBenchAdapter(st.SparsemaxSAE(D, M)).decode(torch.zeros(2, M))
    with pytest.raises(TypeError, match="SparseAutoencoder"):
        st.interop.SAEBenchAdapter(torch.nn.Linear(2, 2))


def test_overcomplete_threshold_ties_are_kept(tmp_path, overcomplete):
    """overcomplete keeps codes ≥ θ, we keep codes > θ⁻ (the next float below): equal even when a code equals θ."""
    model = oc_model(overcomplete, "BatchTopKSAE", top_k=K * N)
    x = inputs()
    with torch.no_grad():
        _, codes = model.encoder(x)
    model.running_threshold = codes[codes > 0].median()           # some codes sit exactly at θ
    torch.save(model, tmp_path / "b.pt")
    sae = st.load(tmp_path / "b.pt", trust_pickle=True, k=K)
    with torch.no_grad():
        _, z = model.encode(x)
        assert int((z == model.running_threshold).sum()) >= 1
        assert torch.equal(sae.encode(x), z)


def test_from_hub_on_a_local_repository_layout(tmp_path, dictionary_learning):
    """The chapter 5 Colab cell's code path, offline: a repository holding several dictionary_learning SAEs in
    sub-folders (the layout of trainSAE's save_dir), read without network from a local copy."""
    from dictionary_learning.trainers.batch_top_k import BatchTopKTrainer
    repo = tmp_path / "repo"
    made = {}
    for layer in (11, 22):
        trainer = BatchTopKTrainer(steps=6, activation_dim=D, dict_size=M, k=K, layer=layer, lm_name="clip",
                                   device="cpu", seed=layer, warmup_steps=1, threshold_start_step=2)
        (repo / f"layer_{layer}").mkdir(parents=True)
        made[layer] = dl_train(trainer, repo / f"layer_{layer}" / "trainer_0").eval()
    (repo / "README.md").write_text("two SAEs")
    assert st.interop.sae_folders([p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file()]) == {
        "layer_11/trainer_0": "dictionary_learning", "layer_22/trainer_0": "dictionary_learning"}
    first = st.interop.from_hub(str(repo))
    assert first.provenance["config"]["trainer"]["layer"] == 11
    sae = st.interop.from_hub(str(repo), "layer_22/trainer_0")
    x = inputs()
    with torch.no_grad():
        assert rel(sae.encode(x), made[22].encode(x)) < TOL
    with pytest.raises(ValueError, match="no SAE in 'layer_5'.*layer_11/trainer_0"):
        st.interop.from_hub(str(repo), "layer_5")
    with pytest.raises(ValueError, match="no SAE in 'trainer_0/checkpoints'"):
        st.interop.from_hub(str(repo / "layer_11"), "trainer_0/checkpoints")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no SAE folder of a known layout"):
        st.interop.from_hub(str(tmp_path / "empty"))
