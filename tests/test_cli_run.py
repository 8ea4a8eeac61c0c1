"""The command line's train folder, evaluate and explore, and its one-line errors (exit 2) for bad input."""
import json

import numpy as np
import pytest
import torch

import sae_tutorial as st
from sae_tutorial.cli import main
from sae_tutorial.runs import file_sha256
from sae_tutorial.synthetic import make_sparse_data

SMALL = ["--n-latents", "64", "--k", "4", "--batch-size", "128", "--no-progress"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    x = make_sparse_data(2048, 16, 48, seed=0).x
    np.save(root / "x.npy", x.numpy())
    np.save(root / "wide.npy", torch.randn(2048, 24).numpy())
    np.save(root / "labels.npy", (x.abs().argmax(1) % 5).numpy())
    return root


@pytest.fixture(scope="module")
def trained(files, tmp_path_factory):
    """One run with the default budget (checks every 10 steps so that it plateaus fast)."""
    out = tmp_path_factory.mktemp("run") / "sae"
    assert main(["train", "--data", str(files / "x.npy"), "--out", str(out), *SMALL, "--val-every", "5",
                 "--min-delta", "0.02",
                 "--lambda-ratio", "0.01"]) == 0
    return out


def test_train_folder_is_complete_and_loads_back(trained, files, capsys):
    names = {p.name for p in trained.iterdir()}
    assert {"model.safetensors", "config.json", "README.md", "method_card.json", "train_config.json", "data.json",
            "split.safetensors", "history.json", "report.json"} <= names
    sae = st.load(trained)
    assert isinstance(sae, st.TopKSAE) and sae.k == 4
    assert torch.equal(st.SparseAutoencoder.from_pretrained(str(trained)).W_dec, sae.W_dec)
    cfg = json.loads((trained / "train_config.json").read_text())["train_config"]
    assert cfg["lambda_ratio"] == 0.01 and cfg["patience"] == 5 and cfg["reg_mask"] and cfg["seed"] == 0
    data = json.loads((trained / "data.json").read_text())
    assert data["train"]["sha256"] == file_sha256(files / "x.npy") and data["split"]["n_val"] == 102
    # the report is the held-out rows' evaluation
    from safetensors.torch import load_file
    val = load_file(str(trained / "split.safetensors"))["val_indices"]
    x = torch.nn.functional.normalize(torch.from_numpy(np.load(files / "x.npy")), dim=1)
    report = json.loads((trained / "report.json").read_text())
    assert report["n_samples"] == len(val) == 102
    assert report["fvu"] == pytest.approx(st.metrics.evaluate(sae, x[val])["fvu"], rel=1e-6)
    # the method card is method_card's, with the run's training settings; README.md is the same card
    card = json.loads((trained / "method_card.json").read_text())
    assert set(card) == {"name", "source", "sae", "training", "metrics", "library", "notes"}
    assert card["training"]["regularizer"] == "ℓ1/ℓ2" and card["training"]["mask"] == "batch-active units"
    assert card["metrics"]["fvu"] == pytest.approx(report["fvu"])
    assert "# Method card" in (trained / "README.md").read_text()
    history = json.loads((trained / "history.json").read_text())
    from sae_tutorial.train import checks_without_improvement
    assert checks_without_improvement(history["val_fvu"], 0.02) == 5                       # ended on the plateau
    assert len(history["step"]) == history["val_step"][-1] < 200 * (1946 // 128)


def test_train_prints_the_held_out_report(files, tmp_path, capsys):
    assert main(["train", "--data", str(files / "x.npy"), "--out", str(tmp_path / "s"), *SMALL,
                 "--steps", "30"]) == 0
    out = capsys.readouterr().out
    assert "for 30 steps, stopped on the requested budget" in out
    for line in ("FVU", "L0", "dead latents", "rare latents", "λ terms", "held-out: 102 rows"):
        assert line in out


def test_checks_without_improvement_against_a_loop():
    from sae_tutorial.train import checks_without_improvement
    fvus = [1.0, 0.5, 0.499, 0.4, 0.41, 0.399, 0.398]
    assert checks_without_improvement(fvus, 0.0) == 0
    assert checks_without_improvement(fvus, 0.01) == 3           # 0.41, 0.399 and 0.398 are not 1 % below 0.4
    assert checks_without_improvement([], 0.1) == 0


def test_train_library_early_stopping_needs_val_data():
    with pytest.raises(ValueError, match="val_data"):
        st.train(st.TopKSAE(8, 16, 2), torch.randn(64, 8), st.TrainConfig(batch_size=32, patience=2))


def test_evaluate_any_sae_with_cross_model_ms(trained, files, tmp_path, capsys):
    out = tmp_path / "ev"
    emb = tmp_path / "other.npy"
    np.save(emb, torch.randn(2048, 7).numpy())
    assert main(["evaluate", str(trained), "--data", str(files / "x.npy"), "--labels", str(files / "labels.npy"),
                 "--embeddings", str(emb), "--out", str(out)]) == 0
    assert "class purity" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    x = torch.nn.functional.normalize(torch.from_numpy(np.load(files / "x.npy")), dim=1)
    ref = st.metrics.evaluate(st.load(trained), x, labels=torch.from_numpy(np.load(files / "labels.npy")),
                              embeddings=torch.from_numpy(np.load(emb)))
    assert report["ms_mean"] == pytest.approx(ref["ms_mean"]) and report["purity"] == pytest.approx(ref["purity"])
    assert json.loads((out / "method_card.json").read_text())["training"]["lambda_ratio"] == 0.01
    foreign = st.load(trained).save_as(tmp_path / "sparsify-sae", "sparsify")      # another library's folder
    assert main(["evaluate", str(foreign), "--data", str(files / "x.npy")]) == 0
    card = json.loads((tmp_path / "sparsify-sae-eval-x.npy" / "method_card.json").read_text())
    assert card["library"]["imported_from"].startswith("sparsify")


def _fails(argv, capsys, *reasons):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1, err
    for reason in reasons:
        assert reason in err, err


def test_bad_input_one_line_exit_2(trained, files, tmp_path, capsys):
    x = str(files / "x.npy")
    out = str(tmp_path / "o")
    _fails(["train", "--data", str(tmp_path / "missing"), "--out", out, *SMALL], capsys, "missing",
           "no such file")
    _fails(["train", "--data", x, "--out", out, *SMALL, "--k", "65"], capsys, "--k 65 exceeds --n-latents 64")
    _fails(["train", "--data", x, "--out", out, *SMALL, "--lambda-ratio", "-1"], capsys, "--lambda-ratio", ">= 0")
    _fails(["train", "--data", x, "--out", out, *SMALL, "--lambda-off", "-0.1"], capsys, "--lambda-off")
    _fails(["train", "--data", x, "--out", out, *SMALL, "--variant", "NoSuchSAE"], capsys, "NoSuchSAE")
    _fails(["train", "--data", x, "--out", out, *SMALL, "--val-data", str(files / "wide.npy")], capsys,
           "dimension 24")
    _fails(["evaluate", str(trained), "--data", str(files / "wide.npy")], capsys, "dimension 24", "reads 16")
    _fails(["evaluate", str(tmp_path / "nosae"), "--data", x], capsys, "nosae")
    _fails(["train", "--data", x, "--out", out, *SMALL, "--val-fraction", "0"], capsys, "--steps or --epochs")
    assert not (tmp_path / "o").exists()


def test_out_holding_an_sae_is_refused_unless_overwrite(trained, files, tmp_path, capsys):
    out = tmp_path / "s"
    args = ["train", "--data", str(files / "x.npy"), "--out", str(out), *SMALL, "--steps", "5"]
    assert main(args) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    _fails([*args, "--seed", "1"], capsys, "already holds an SAE", "--overwrite")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before          # untouched
    _fails(["evaluate", str(trained), "--data", str(files / "x.npy"), "--out", str(out)], capsys, "already holds")
    assert main([*args, "--seed", "1", "--overwrite"]) == 0
    assert not torch.equal(st.load(out).W_dec, st.load(trained).W_dec)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]                 # no temporary or old folder left


def test_every_option_has_help():
    from sae_tutorial.cli import parser
    for command, sub in parser()._subparsers._group_actions[0].choices.items():
        for action in sub._actions:
            assert action.help, f"{command} {action.option_strings} has no help"
