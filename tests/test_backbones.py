"""Backbones, offline: the three real architectures with random weights at their real input size, local
checkpoints (timm, open_clip, the embedded CNN), and clear errors."""
import numpy as np
import pytest
import torch
from PIL import Image

import sae_tutorial as st
from sae_tutorial import backbones


def two_images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)),   # RGB, not square
            Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8))]         # grayscale, tiny


@pytest.mark.slow  # 10-30 s each on two CPU cores: the full ViT-L / SO400M image towers
@pytest.mark.parametrize("name, dim, params_m", [("clip-vit-l-14", 768, 304), ("siglip2", 1152, 428),
                                                 ("vit-l-16", 1024, 303)])
def test_real_architecture_random_weights_forward(name, dim, params_m):
    b = st.backbones.get(name, weights="random")
    assert round(sum(p.numel() for p in b.model.parameters()) / 1e6) == params_m
    assert b.input_size == (3, 224, 224) and b.embed_dim == dim and b.weights == "random"
    x = torch.stack([b.preprocess(im) for im in two_images()])
    assert x.shape == (2, 3, 224, 224)
    with torch.inference_mode():
        z = b.model(x)
    assert z.shape == (2, dim) and torch.isfinite(z).all()
    assert not torch.allclose(z[0], z[1])


def test_default_tags_and_pooling_are_the_papers():
    assert backbones.SPECS["clip-vit-l-14"].tag == "datacomp_xl_s13b_b90k"
    assert backbones.SPECS["siglip2"].arch == "ViT-SO400M-14-SigLIP2" and backbones.SPECS["siglip2"].tag == "webli"
    assert backbones.SPECS["vit-l-16"].arch + "." + backbones.SPECS["vit-l-16"].tag == \
        "vit_large_patch16_224.augreg_in21k_ft_in1k"
    assert "CLS" in backbones.SPECS["vit-l-16"].pooling


def test_random_weights_are_seeded_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b = st.backbones.get("timm:test_vit", weights="random"), st.backbones.get("timm:test_vit", weights="random")
    assert torch.equal(torch.rand(1), before)
    assert torch.equal(a(two_images()), b(two_images()))            # preprocess + model, the embedding fn


def test_timm_local_checkpoint(tmp_path):
    random = st.backbones.get("timm:test_vit", weights="random")
    torch.nn.init.normal_(random.model.cls_token)                 # differ from the seeded init
    torch.save(random.model.state_dict(), tmp_path / "w.pth")
    loaded = st.backbones.get("timm:test_vit", weights=tmp_path / "w.pth")
    assert loaded.weights == f"file:{tmp_path / 'w.pth'}"
    x = torch.stack([loaded.preprocess(im) for im in two_images()])
    assert torch.equal(loaded.model(x), random.model(x))


def test_open_clip_local_checkpoint(tmp_path):
    import open_clip

    full = open_clip.create_model("ViT-S-32-alt")                  # smallest ViT config open_clip ships
    torch.save(full.state_dict(), tmp_path / "clip.pt")
    b = st.backbones.get("open_clip:ViT-S-32-alt", weights=tmp_path / "clip.pt")
    x = torch.stack([b.preprocess(im) for im in two_images()])
    with torch.inference_mode():
        assert torch.allclose(b.model(x), full.eval().encode_image(x))


def test_embedded_round_trip_and_corruption(tmp_path, monkeypatch):
    monkeypatch.setenv("SAE_TUTORIAL_CACHE", str(tmp_path))
    model = backbones.FashionCNN()
    path = backbones.save_embedded(model, {"test_accuracy": 0.5, "config": vars(backbones.EmbeddedConfig())},
                                   tmp_path / "e.safetensors")
    b = st.backbones.get("embedded", weights=path)
    assert b.embed_dim == 128 and b.input_size == (1, 28, 28) and b.report["test_accuracy"] == 0.5
    assert b.weights.startswith("trained:")
    x = torch.stack([b.preprocess(im) for im in two_images()])     # RGB -> gray, any size -> 28x28
    assert x.shape == (2, 1, 28, 28)
    assert torch.equal(b.model(x), model.eval()(x))
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="hash mismatch"):
        st.backbones.get("embedded", weights=path)


def test_embedded_training_recipe_learns():
    """One epoch of the cached default's recipe already separates Fashion-MNIST well (the full recipe: 5)."""
    model, report = backbones.train_embedded(backbones.EmbeddedConfig(epochs=1), progress=False)
    assert report["test_accuracy"] > 0.8
    assert set(report) >= {"train_seconds", "cpu_seconds", "config"}


def test_bad_names_and_weights(tmp_path):
    with pytest.raises(ValueError, match="clip-vit-l-14.*siglip2.*vit-l-16.*embedded"):
        st.backbones.get("resnet")
    with pytest.raises(TypeError, match="name"):
        st.backbones.get(3)
    with pytest.raises(ValueError, match="weights"):
        st.backbones.get("embedded", weights=tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="not an open_clip tag.*openai"):
        st.backbones.get("clip-vit-l-14", weights="random", tag="laion5b")
