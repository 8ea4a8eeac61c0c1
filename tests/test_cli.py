"""The command line: train (one process and under torchrun), clear errors for bad input."""
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import sae_tutorial as st
from sae_tutorial.__main__ import main
from sae_tutorial.synthetic import make_sparse_data

ARGS = ["--n-latents", "64", "--k", "4", "--batch-size", "128", "--steps", "20", "--no-progress"]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "x.npy"
    np.save(path, make_sparse_data(2048, 16, 48, seed=0).x.numpy())
    return path


def test_train_writes_a_hub_folder(data_file, tmp_path, capsys):
    assert main(["train", "--data", str(data_file), "--out", str(tmp_path / "sae"), *ARGS]) == 0
    sae = st.SparseAutoencoder.from_pretrained(str(tmp_path / "sae"))
    assert isinstance(sae, st.TopKSAE) and sae.k == 4
    assert "trained TopKSAE" in capsys.readouterr().out


def test_bad_input_exits_2_with_the_reason(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", str(tmp_path / "missing.npy"), "--out", str(tmp_path / "o"), *ARGS])
    assert e.value.code == 2 and "missing.npy" in capsys.readouterr().err
    for option, reason in (("open-images-v7:repo", "DATASET.KEY=VALUE"), ("toy.repo=x", "does not use")):
        with pytest.raises(SystemExit) as e:
            main(["sweep", "--grid", "paper", "--dataset-option", option, "--out", str(tmp_path / "g")])
        assert e.value.code == 2 and reason in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:                   # the paper grid needs its Open Images copy, up front
        main(["sweep", "--grid", "paper", "--out", str(tmp_path / "g"), "--no-progress"])
    assert e.value.code == 2 and "open-images-v7.repo=" in capsys.readouterr().err
    assert not (tmp_path / "g" / "cells").exists()


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun not installed")
def test_torchrun_two_ranks_equal_one_process(data_file, tmp_path):
    torchrun = str(Path(sys.executable).parent / "torchrun")
    main(["train", "--data", str(data_file), "--out", str(tmp_path / "one"), *ARGS])
    proc = subprocess.run([torchrun, "--nproc_per_node=2", "-m", "sae_tutorial", "train", "--data", str(data_file),
                           "--out", str(tmp_path / "two"), *ARGS], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    one = st.SparseAutoencoder.from_pretrained(str(tmp_path / "one"))
    two = st.SparseAutoencoder.from_pretrained(str(tmp_path / "two"))
    torch.testing.assert_close(one.W_dec, two.W_dec, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun not installed")
def test_torchrun_embedding_equals_one_process_and_resumes_on_any_number_of_ranks(tmp_path):
    """Two ranks (shard i on rank i mod 2) write the cache one process writes, bit for bit; a cache begun by two
    ranks is finished by one, and one begun by one is finished by two."""
    torchrun = str(Path(sys.executable).parent / "torchrun")
    torch.set_num_threads(1)       # torchrun's ranks run with OMP_NUM_THREADS=1: the same numerics on both sides
    args = ["--backbone", "embedded", "--weights", "random", "--dataset", "synthetic", "--split", "train",
            "--shard-size", "16", "--batch-size", "8", "--num-workers", "0", "--no-progress"]

    def run(out, limit, ranks):
        cmd = ["embed", *args, "--out", str(tmp_path / out), "--limit", str(limit)]
        if ranks == 1:
            assert main(cmd) == 0
            return
        proc = subprocess.run([torchrun, f"--nproc_per_node={ranks}", "-m", "sae_tutorial", *cmd],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]

    run("one", 72, 1)
    run("two", 72, 2)
    run("two-then-one", 40, 2)
    run("two-then-one", 72, 1)
    run("one-then-two", 24, 1)
    run("one-then-two", 72, 2)
    ref = st.load_embeddings(tmp_path / "one")
    assert [s["rows"] for s in ref.manifest["shards"]] == [16, 16, 16, 16, 8]
    for out in ("two", "two-then-one", "one-then-two"):
        got = st.load_embeddings(tmp_path / out)
        assert got.manifest["shards"] == ref.manifest["shards"], out
        assert torch.equal(got.x, ref.x) and torch.equal(got.labels, ref.labels), out
        assert sorted(p.name for p in (tmp_path / out).iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
