"""Data sets and the embedding cache, offline: extract -> cache -> load with tiny models, the HF `datasets` path on
generated image folders, resume after SIGKILL, corrupt and truncated shards."""
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sae_tutorial as st
from sae_tutorial import datasets
from sae_tutorial.embed import numerics

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """train/{cat,dog}/*.png: 2 classes x 5 images of different sizes."""
    rng = np.random.default_rng(0)
    for c, cls in enumerate(["cat", "dog"]):
        (tmp_path / "train" / cls).mkdir(parents=True)
        for i in range(5):
            pixels = rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8) // (c + 1)
            Image.fromarray(pixels).save(tmp_path / "train" / cls / f"{i}.png")
    return tmp_path


def tiny_embed(out, **kwargs):
    """Random-weight embedded CNN over 40 synthetic images: 3 shards (16, 16, 8)."""
    args = dict(weights="random", batch_size=8, shard_size=16, num_workers=0, progress=False, n=40)
    return st.embed("embedded", "synthetic", "train", out, **{**args, **kwargs})


# ---------------------------------------------------------------- data sets
def test_synthetic_is_deterministic_and_labelled():
    ds = st.datasets.get("synthetic", "train", n=30, image_size=24)
    rows = list(ds)
    assert len(rows) == len(ds) == 30 and ds.classes == datasets.SHAPES
    assert {label for _, label in rows} == set(range(5))
    img, label = ds.load(7)
    assert img.size == (24, 24) and (np.asarray(img) == np.asarray(rows[7][0])).all() and label == rows[7][1]
    test_img, _ = st.datasets.get("synthetic", "test", n=30, image_size=24).load(7)
    assert not (np.asarray(test_img) == np.asarray(img)).all()


def test_fashion_mnist_from_the_debian_package():
    ds = st.datasets.get("fashion-mnist", "test")
    img, label = ds.load(0)
    assert len(ds) == 10_000 and img.size == (28, 28) and img.mode == "L" and ds.classes[label] == "Ankle boot"


def test_fashion_mnist_missing_offline_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "FASHION_MNIST_DIR", tmp_path / "none")
    monkeypatch.setenv("SAE_TUTORIAL_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        st.datasets.get("fashion-mnist", "train")


def test_truncated_idx_file_is_detected(tmp_path):
    header = b"\0\0\x08\x01" + (100).to_bytes(4, "big")          # uint8, 1-D, 100 values...
    (tmp_path / "t.gz").write_bytes(gzip.compress(header + bytes(60)))  # ...of which 60 are there
    with pytest.raises(ValueError, match="truncated"):
        datasets._read_idx(tmp_path / "t.gz")


def test_image_folder_goes_through_hf_datasets(image_folder):
    ds = st.datasets.get("image-folder", "train", data_dir=image_folder)
    stream = st.datasets.get("image-folder", "train", data_dir=image_folder, streaming=True)
    assert ds.classes == stream.classes == ["cat", "dog"] and len(ds) == 10
    rows, streamed = list(ds), list(stream)
    assert [l for _, l in rows] == [l for _, l in streamed] == [0] * 5 + [1] * 5
    assert all((np.asarray(a) == np.asarray(b)).all() for (a, _), (b, _) in zip(rows, streamed))
    assert ds.info()["revision"] == f"local:{image_folder.resolve()}"


def test_multilabel_hub_layout_with_class_csv(tmp_path):
    """Open Images' layout (a list of label ids per image, names from a CSV), from a local folder, streamed."""
    labels = [["/m/b"], ["/m/a", "/m/c"], [], ["/m/c"]]
    with open(tmp_path / "metadata.jsonl", "w") as f:
        for i, ids in enumerate(labels):
            Image.new("RGB", (16, 16), (60 * i, 0, 0)).save(tmp_path / f"{i}.png")
            f.write(json.dumps({"file_name": f"{i}.png", "labels": ids}) + "\n")
    csv = tmp_path.parent / "classes.csv"
    csv.write_text("LabelName,DisplayName\n/m/a,Apple\n/m/b,Bee\n/m/c,Cat\n")
    ds = st.datasets.get("open-images-v7", "train", repo=str(tmp_path), classes=csv)
    assert ds.multilabel and ds.classes == ["Apple", "Bee", "Cat"] and ds.num_rows is None
    assert [l for _, l in ds] == [(1,), (0, 2), (), (2,)]
    emb = st.load_embeddings(st.embed("embedded", ds, out_dir=tmp_path / "cache", weights="random", batch_size=3,
                                      shard_size=3, num_workers=0, progress=False))
    assert len(emb) == 4 and emb.labels.tolist() == [1, 0, 2, 2] and emb.label_offsets.tolist() == [0, 1, 3, 3, 4]
    with pytest.raises(ValueError, match="repo="):
        st.datasets.get("open-images-v7", "train")


def test_dataset_errors(tmp_path):
    with pytest.raises(ValueError, match="fashion-mnist.*synthetic.*image-folder.*imagenet-1k"):
        st.datasets.get("cifar")
    with pytest.raises(ValueError, match="split"):
        st.datasets.get("synthetic", "val")
    with pytest.raises(ValueError, match="data_dir"):
        st.datasets.get("image-folder", "train", data_dir=tmp_path / "absent")
    with pytest.raises(ValueError, match="n must be > 0"):
        st.datasets.get("synthetic", "train", n=0)


# ---------------------------------------------------------------- extract -> cache -> load
def test_extract_cache_load_with_a_tiny_timm_vit(tmp_path):
    backbone = st.backbones.get("timm:test_vit", weights="random")
    ds = st.datasets.get("synthetic", "train", n=20, image_size=32)
    out = st.embed(backbone, ds, out_dir=tmp_path, batch_size=4, shard_size=8, num_workers=1, progress=False)
    emb = st.load_embeddings(out)
    images, labels = zip(*ds)
    with torch.inference_mode():
        direct = backbone.model(torch.stack([backbone.preprocess(im) for im in images]))
    assert emb.x.shape == (20, 64) and [s.shape[0] for s in emb.shards] == [8, 8, 4]
    assert torch.allclose(emb.x, direct, atol=1e-5) and emb.labels.tolist() == list(labels)
    m = emb.manifest
    assert m["backbone"]["model_id"] == "timm:test_vit" and m["backbone"]["weights"] == "random"
    assert "Normalize" in m["backbone"]["transform"] and m["backbone"]["pooling"] and m["dtype"] == "float32"
    assert (m["dataset"]["name"], m["dataset"]["split"], m["dataset"]["revision"]) == ("synthetic", "train", "seed=0")
    assert m["library_version"] == st.__version__ and m["finished"] and m["rows"] == 20
    assert all(len(s["sha256"]) == 64 for s in m["shards"]) and m["dataset"]["classes"] == datasets.SHAPES


def test_image_folder_extraction_with_workers_streaming_or_not(image_folder):
    outs = [st.embed("embedded", "image-folder", "train", image_folder / f"cache{s}", weights="random", batch_size=4,
                     shard_size=6, num_workers=2, progress=False, data_dir=image_folder, streaming=s)
            for s in (False, True)]
    a, b = (st.load_embeddings(o) for o in outs)
    assert torch.equal(a.x, b.x) and a.labels.tolist() == b.labels.tolist() == [0] * 5 + [1] * 5
    assert a.x.dtype == torch.float32 and a.classes == ["cat", "dog"]


def test_limit_then_extend_and_float16(tmp_path):
    tiny_embed(tmp_path / "a", limit=10)
    assert len(st.load_embeddings(tmp_path / "a")) == 10
    tiny_embed(tmp_path / "a")                                    # same cache, no limit: continues to the end
    full = tiny_embed(tmp_path / "b")
    assert torch.equal(st.load_embeddings(tmp_path / "a").x, st.load_embeddings(full).x)
    tiny_embed(tmp_path / "d", limit=24)                          # 16 + 8 rows, then resumed with other shards
    resized = st.load_embeddings(tiny_embed(tmp_path / "d", shard_size=32))   # the partial 8 is redone
    assert [s["rows"] for s in resized.manifest["shards"]] == [16, 24]
    torch.testing.assert_close(resized.x, st.load_embeddings(full).x)
    half = st.load_embeddings(tiny_embed(tmp_path / "c", dtype="float16"))
    assert half.x.dtype == torch.float16 and torch.allclose(half.x.float(), st.load_embeddings(full).x, atol=1e-2)


@pytest.mark.parametrize("threads", [1, 2])
def test_killed_extraction_resumes_to_the_same_cache(tmp_path, threads):
    """SIGKILL the CLI mid-run, rerun: identical to an uninterrupted run, no row lost or repeated. Both processes
    run under the same numerics settings (the CLI's thread count through OMP_NUM_THREADS, this one's set here)."""
    torch.set_num_threads(threads)                                # restored after the test (conftest.py)
    opts = dict(weights="random", limit=4000, batch_size=64, shard_size=256, num_workers=1, progress=False)
    cmd = [sys.executable, "-m", "sae_tutorial", "embed", "--backbone", "embedded", "--dataset", "fashion-mnist",
           "--split", "train", "--out", str(tmp_path / "killed"), "--no-progress",
           *(f"--{k.replace('_', '-')}={v}" for k, v in opts.items() if k != "progress")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, start_new_session=True)
    manifest = tmp_path / "killed" / "manifest.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if manifest.is_file() and json.loads(manifest.read_text())["shards"]:
            os.killpg(proc.pid, signal.SIGKILL)                   # the main process and its DataLoader worker
            break
        time.sleep(0.002)
    assert proc.wait() == -signal.SIGKILL
    killed = json.loads(manifest.read_text())
    assert not killed["finished"] and 0 < killed["rows"] < 4000
    resumed = st.load_embeddings(st.embed("embedded", "fashion-mnist", "train", tmp_path / "killed", **opts))
    whole = st.load_embeddings(st.embed("embedded", "fashion-mnist", "train", tmp_path / "whole", **opts))
    assert len(resumed) == len(whole) == 4000
    assert torch.equal(resumed.x, whole.x) and torch.equal(resumed.labels, whole.labels)
    assert [s["sha256"] for s in resumed.manifest["shards"]] == [s["sha256"] for s in whole.manifest["shards"]]
    assert resumed.labels.tolist() == st.datasets.get("fashion-mnist", "train").labels[:4000].tolist()
    assert resumed.manifest["numerics"] == whole.manifest["numerics"] == numerics(torch.device("cpu"))
    assert resumed.manifest["numerics"]["threads"] == threads and not resumed.manifest["mixed_numerics"]


def test_resume_under_other_numerics_is_refused_or_flagged(tmp_path):
    """Rows added under another thread count would not be bit-identical: refused by default, flagged if allowed."""
    opts = dict(weights="random", batch_size=32, shard_size=64, num_workers=0, progress=False)
    torch.set_num_threads(1)
    st.embed("embedded", "synthetic", "train", tmp_path / "c", limit=64, **opts)
    torch.set_num_threads(2)
    with pytest.raises(ValueError, match=r"other numerics settings \(threads 1 -> 2\).*allow_mixed_numerics"):
        st.embed("embedded", "synthetic", "train", tmp_path / "c", limit=128, **opts)
    assert st.load_embeddings(tmp_path / "c").manifest["rows"] == 64          # nothing was lost or changed
    st.embed("embedded", "synthetic", "train", tmp_path / "c", limit=128, allow_mixed_numerics=True, **opts)
    emb = st.load_embeddings(tmp_path / "c")
    assert len(emb) == 128 and emb.manifest["numerics"]["threads"] == 1
    assert [(m["from_row"], m["threads"]) for m in emb.manifest["mixed_numerics"]] == [(64, 2)]
    st.embed("embedded", "synthetic", "train", tmp_path / "c", limit=128, **opts)   # finished: only read


# ---------------------------------------------------------------- damaged caches and bad input
def test_corrupt_truncated_and_missing_shards_are_detected(tmp_path):
    out = tiny_embed(tmp_path / "c")
    shard = out / "shard-00001.safetensors"
    good = shard.read_bytes()
    shard.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(ValueError, match="shard-00001.*corrupt"):
        st.load_embeddings(out)
    st.load_embeddings(out, verify=False)                         # the check is what catches it
    shard.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="shard-00001.*truncated"):
        st.load_embeddings(out)
    shard.write_bytes(good[:5])
    with pytest.raises(ValueError, match="truncated"):
        st.load_embeddings(out)
    shard.unlink()
    with pytest.raises(ValueError, match="missing"):
        st.load_embeddings(out)
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        st.load_embeddings(out)
    with pytest.raises(FileNotFoundError, match="st.embed"):
        st.load_embeddings(tmp_path / "nothing")


def test_unfinished_cache_needs_partial(tmp_path):
    out = tiny_embed(tmp_path / "p")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["finished"] = False
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="resume"):
        st.load_embeddings(out)
    assert len(st.load_embeddings(out, partial=True)) == 40


def test_a_cache_of_something_else_is_not_resumed(tmp_path):
    tiny_embed(tmp_path / "x", limit=16)
    with pytest.raises(ValueError, match="another dtype"):
        tiny_embed(tmp_path / "x", dtype="float16")
    with pytest.raises(ValueError, match="another dataset"):
        tiny_embed(tmp_path / "x", n=50)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(shard_size=2.5), TypeError, "shard_size"),
    (dict(limit=-1), ValueError, "limit"),
    (dict(num_workers=-1), ValueError, "num_workers"),
    (dict(num_workers=1.0), TypeError, "num_workers"),
    (dict(dtype="bfloat16"), ValueError, "dtype"),
])
def test_bad_embed_arguments(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        tiny_embed(tmp_path, **kwargs)



def test_a_finished_cache_is_read_without_writing(tmp_path):
    out = tiny_embed(tmp_path / "ro")
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    out.chmod(0o555)                                           # a shared, read-only cache
    try:
        assert tiny_embed(out) == out
    finally:
        out.chmod(0o755)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
