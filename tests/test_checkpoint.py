"""Checkpoints: every variant round-trips; foreign, newer, corrupt or truncated files give clear errors."""
import json

import pytest
import torch
from safetensors.torch import save_file

import sae_tutorial as st
from sae_tutorial.checkpoint import META_KEY, atomic_write
from sae_tutorial.sae import VARIANTS

D, M, K = 12, 40, 3


def trained(variant: str):
    cls = VARIANTS[variant]
    extra = {"threshold_start": 0} if variant == "BatchTopKSAE" else {}   # θ moves within these 5 steps
    sae = cls(D, M, K, seed=1, **extra) if cls.takes_k else cls(D, M, seed=1)
    st.train(sae, torch.randn(512, D), st.TrainConfig(batch_size=64, steps=5, progress=False))
    return sae


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_round_trip(tmp_path, variant):
    sae = trained(variant)
    path = sae.save(tmp_path / "sae.safetensors")
    loaded = st.load(path)
    assert type(loaded) is type(sae) and loaded.config() == sae.config()
    for (name, a), b in zip(sae.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    loaded.eval()
    sae.eval()
    x = torch.randn(7, D)
    assert torch.equal(loaded.encode(x), sae.encode(x))
    assert type(sae).load(path).config() == sae.config()
    if variant == "BatchTopKSAE":
        assert float(loaded.threshold) > 0 and torch.equal(loaded.threshold, sae.threshold)
    assert not list(tmp_path.glob(".*tmp*")), "temporary files left behind"


def test_wrong_variant(tmp_path):
    path = trained("TopKSAE").save(tmp_path / "a.safetensors")
    with pytest.raises(ValueError, match="holds a TopKSAE, not a ReLUSAE"):
        st.ReLUSAE.load(path)


def _rewrite_record(path, **changes):
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        record = json.loads(f.metadata()[META_KEY])
    record.update(changes)
    save_file(tensors, str(path), metadata={META_KEY: json.dumps(record)})


def test_newer_schema_and_unknown_variant(tmp_path):
    path = trained("TopKSAE").save(tmp_path / "a.safetensors")
    _rewrite_record(path, schema_version=99)
    with pytest.raises(ValueError, match="schema version 99"):
        st.load(path)
    path = trained("TopKSAE").save(tmp_path / "b.safetensors")
    _rewrite_record(path, variant="JumpReLUSAE")
    with pytest.raises(ValueError, match="unknown variant 'JumpReLUSAE'"):
        st.load(path)


def test_corrupt_truncated_and_foreign_files(tmp_path):
    path = trained("TopKSAE").save(tmp_path / "a.safetensors")
    raw = path.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        st.load(tmp_path / "trunc.safetensors")
    flipped = bytearray(raw)
    flipped[-5] ^= 0xFF                                   # a bit flip inside the tensor data
    (tmp_path / "flip.safetensors").write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="hash mismatch"):
        st.load(tmp_path / "flip.safetensors")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not an sae_tutorial checkpoint"):
        st.load(tmp_path / "other.safetensors")
    with pytest.raises(FileNotFoundError):
        st.load(tmp_path / "missing.safetensors")


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")

    def failing(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, failing)
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_hub_folder_round_trip(tmp_path, variant):
    sae = trained(variant)
    sae.save_pretrained(tmp_path / "repo")
    assert {p.name for p in (tmp_path / "repo").iterdir()} >= {"model.safetensors", "config.json", "README.md"}
    loaded = st.SparseAutoencoder.from_pretrained(str(tmp_path / "repo"))
    assert type(loaded) is type(sae)
    for (name, a), b in zip(sae.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    assert type(sae).from_pretrained(str(tmp_path / "repo")).config() == sae.config()


def test_hub_folder_errors_and_card(tmp_path):
    sae = trained("TopKSAE")
    (tmp_path / "card.json").write_text('{"name": "demo"}')
    (tmp_path / "card.md").write_text("# Method card: demo\n")
    sae.save_pretrained(tmp_path / "repo", card=(tmp_path / "card.json", tmp_path / "card.md"))
    readme = (tmp_path / "repo" / "README.md").read_text()
    assert readme.startswith("---\nlibrary_name: sae_tutorial") and "# Method card: demo" in readme
    assert json.loads((tmp_path / "repo" / "method_card.json").read_text()) == {"name": "demo"}
    with pytest.raises(ValueError, match="holds a TopKSAE, not a BatchTopKSAE"):
        st.BatchTopKSAE.from_pretrained(str(tmp_path / "repo"))
    cfg = json.loads((tmp_path / "repo" / "config.json").read_text())
    (tmp_path / "repo" / "config.json").write_text(json.dumps({**cfg, "schema_version": 2}))
    with pytest.raises(ValueError, match="schema version 2"):
        st.TopKSAE.from_pretrained(str(tmp_path / "repo"))
    with pytest.raises(FileNotFoundError, match="method card"):
        sae.save_pretrained(tmp_path / "r2", card=(tmp_path / "nope.json", tmp_path / "card.md"))
