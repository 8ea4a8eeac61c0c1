"""The Colab rehearsal's parts (the whole rehearsal is `make colab-rehearsal`, which `make test` runs), the shrink
knob, and gpu-check's refusal without CUDA."""
import subprocess
import sys
from pathlib import Path

import pytest

import sae_tutorial as st
from sae_tutorial import home, rehearsal

ROOT = Path(__file__).resolve().parents[1]


def test_shrink_divides_work_sizes_only(monkeypatch):
    sizes = dict(n_train=500_000, n_eval=50_000, d=256, n_features=2048, n_latents=4096, k=16,
                 batch_size=1024, epochs=12, lr=1e-3, steps=1000, probe_samples=10_000, limit=None)
    assert st.book.shrink(sizes) == sizes                                   # no knob: unchanged
    monkeypatch.setenv("SAE_TUTORIAL_SHRINK", "8")
    assert st.book.shrink(sizes) == dict(sizes, n_train=62_500, n_eval=6_250, n_features=256, n_latents=512,
                                         epochs=2, steps=125, probe_samples=1_250)
    monkeypatch.setenv("SAE_TUTORIAL_SHRINK", "10000")                      # floors keep every size usable
    tiny = st.book.shrink(sizes)
    assert tiny["n_train"] == 256 and tiny["n_latents"] == 64 and tiny["epochs"] == 1 and tiny["steps"] == 10
    assert st.book.shrink(dict(n_latents=32, k=16)) == dict(n_latents=32, k=16)   # never grows
    for bad in ("0", "two"):
        monkeypatch.setenv("SAE_TUTORIAL_SHRINK", bad)
        with pytest.raises(ValueError, match="SAE_TUTORIAL_SHRINK must be an int >= 1"):
            st.book.shrink(sizes)


def test_imagenette_stand_in_has_the_real_layout_and_names(tmp_path):
    out = rehearsal.imagenette_folder(tmp_path, {"train": 2, "val": 1})
    assert out.name == "imagenette2-320" and (out / "noisy_imagenette.csv").is_file()
    assert sorted(p.name for p in (out / "train").iterdir()) == sorted(rehearsal.IMAGENETTE)
    assert len(list(out.glob("val/n01440764/*.JPEG"))) == 1
    train = st.datasets.get("image-folder", "train", data_dir=str(out))
    val = st.datasets.get("image-folder", "validation", data_dir=str(out))
    assert len(train) == 20 and len(val) == 10
    assert train.classes == list(rehearsal.IMAGENETTE.values())             # WordNet ids shown as names
    image, label = train.load(0)
    assert min(image.size) == 320 and label == 0


def test_chapters_are_prepared_as_on_colab():
    nb = rehearsal.prepare(ROOT / "notebooks" / "03_vision_backbones.ipynb")
    assert "google.colab" in nb.cells[0].source
    install = [c for c in nb.cells if "pip" in c.source and "remove-cell" in c.metadata.get("tags", [])]
    assert len(install) == 1 and rehearsal.install_line() in install[0].source
    assert home.read_home().requirement not in install[0].source
    params = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    assert nb.cells[params + 1].source.endswith("BACKBONE_WEIGHTS = 'random'")
    nb5 = rehearsal.prepare(ROOT / "notebooks" / "05_latent_explorer.ipynb", Path("/c"))
    injected = [c.source for c in nb5.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected == ["# Injected by the Colab rehearsal\nPUBLIC_REPO = '/c/hub-stand-in/sae-for-vlm'"]
    nb1 = rehearsal.prepare(ROOT / "notebooks" / "01_topk_basics.ipynb")   # no BACKBONE_WEIGHTS: nothing injected
    assert not any("injected-parameters" in c.metadata.get("tags", []) for c in nb1.cells)
    assert rehearsal.install_line(ROOT) == f"sae-tutorial[colab] @ {ROOT.as_uri()}"
    assert {"open_clip", "timm", "datasets", "umap", "torch", "sae_tutorial"} <= set(rehearsal.chapter_imports())


def test_gpu_check_refuses_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: run `make gpu-check` itself")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "no CUDA device here" in proc.stdout


def test_hub_stand_in_is_read_by_the_chapter_5_code_path(tmp_path):
    repo = rehearsal.hub_sae_repo(tmp_path, d=32, m=128, k=4)
    sae = st.interop.from_hub(str(repo))
    assert type(sae).__name__ == "BatchTopKSAE" and sae.config()["k"] == 4
    assert sae.provenance["config"]["trainer"]["layer"] == 11
    assert st.interop.SAEBenchAdapter(sae).check_decoder_norms()


def test_runtime_is_linked_with_its_requirements_and_extras(tmp_path):
    from importlib import metadata

    names = {d.metadata["Name"].lower() for d in rehearsal.runtime_closure(("torch",))}
    assert {"torch", "filelock", "sympy", "mpmath"} <= names                # requirements of requirements
    if "cuda-toolkit" in names:                                             # a CUDA build: its extras are followed
        assert "nvidia-cufft" in names
    dists = rehearsal.runtime_closure(("jinja2",))                         # its extra (i18n: babel) not asked for
    assert sorted(d.metadata["Name"].lower() for d in dists) == ["jinja2", "markupsafe"]
    n = rehearsal.link_runtime(tmp_path, dists)
    found = {d.metadata["Name"].lower(): d.version for d in metadata.distributions(path=[str(tmp_path)])}
    assert found == {d.metadata["Name"].lower(): d.version for d in dists} and n > 4
    linked = tmp_path / "jinja2" / "__init__.py"
    assert linked.samefile(metadata.distribution("jinja2").locate_file("jinja2/__init__.py"))  # a link, no copy
    with pytest.raises(RuntimeError, match="needs not-a-package-here"):
        rehearsal.runtime_closure(("not-a-package-here",))
