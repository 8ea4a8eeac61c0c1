"""The resumable experiment grid: plan, kill-and-rerun equals a clean run."""
import dataclasses
import json
import subprocess
import sys

import pandas as pd
import torch

import pytest

from sae_tutorial.grid import (GPU_BF16_TFLOPS, PRESETS, GridSpec, dry_run, gpu_floors, gpu_hours, plan,
                               run_grid)
from sae_tutorial.synthetic import make_sparse_data

SPEC = GridSpec(name="tiny", backbones=("synthetic",), datasets=(("toy", "train", "test"),), ks=(4,), seeds=(0, 1),
                n_latents=64, lambda_off=0.01, lambda_ratio=0.003,
                train=dict(batch_size=128, steps=25, lr=3e-3, warmup_steps=5),
                evaluate=dict(top_n=10, probe_ns=(1, 2), sample_size=300, cknna_samples=100))


def toy_split(backbone, dataset, split, limit=None):
    data = make_sparse_data(1024, 16, 48, avg_active=3, seed=0 if split == "train" else 1)
    labels = data.codes.argmax(1) % 5
    return data.x, labels, [str(i) for i in range(5)]


def test_plan_shapes():
    assert len(plan(SPEC)) == 2 * 5
    paper = plan(PRESETS["paper"])
    assert len(paper) == 3 * 2 * 3 * 5 and len({c.key for c in paper}) == len(paper)
    embedded = PRESETS["embedded"]
    per_k = {k: len(embedded.seeds_at(k)) * (5 if k in embedded.ablation_ks else 3)
             + len(embedded.variant_seeds) * len(embedded.variants) for k in embedded.ks}
    assert len(plan(embedded)) == sum(per_k[k] for b in embedded.backbones for k in embedded.backbone_ks.get(b, embedded.ks))
    assert embedded.seeds_at(embedded.main_k) == (0, 1, 2, 3, 4) and embedded.seeds_at(8) == (0, 1, 2)


STAGED = dataclasses.replace(SPEC, backbones=("synthetic", "synthetic2"), ks=(4, 8), seeds=(0, 1), main_k=4,
                             main_seeds=(0, 1, 2), ablation_ks=(4,), validation=0.1, cross_model=True,
                             sweep={"lambda_off": (0.003, 0.03), "lambda_ratio": (0.001, 0.01)}, front_ks=(2, 4, 8),
                             train={**SPEC.train, "val_every": 5, "patience": 2})


def test_staged_grid_chooses_lambda_on_validation_rows_and_publishes_verdicts(tmp_path, monkeypatch):
    """Sweep → λ from validation FVU only → grid at that λ → verdict files; cells shared between stages train once."""
    from sae_tutorial.grid import load_results, plan_selection, publish, select
    from sae_tutorial.selection import choose_lambdas, lambdas

    monkeypatch.setenv("SAE_TUTORIAL_CACHE", str(tmp_path / "cache"))
    table = run_grid(STAGED, tmp_path / "g", data_fn=toy_split, progress=False)
    fronts = load_results(tmp_path / "g", "fronts")
    assert len(fronts) == len(plan_selection(STAGED)) and fronts["val_fvu"].notna().all()
    # the λ of the grid is the validation choice, recomputed here from the sweep's val_fvu alone
    sweep = fronts[fronts["k"] == 4].assign(fvu=lambda f: f["val_fvu"])
    expected = choose_lambdas(sweep)
    for b in STAGED.backbones:
        for method in ("off-support l1", "l1/l2"):
            rows = table[(table["backbone"] == b) & (table["method"] == method)]
            assert set(rows["lambda"]) == {expected[b][method]["lambda"]}
    assert select(STAGED, fronts.to_dict("records"))["synthetic"]["lambda_off"] == expected["synthetic"]["off-support l1"]["lambda"]
    # rows: main k has 3 seeds × 5 runs per backbone, k = 8 has 2 seeds × 3 runs (no ablation)
    assert len(table) == 2 * (3 * 5 + 2 * 3) and table["ms_cross_mean"].notna().all()
    assert set(table["cross_space"]) == {"synthetic", "synthetic2"}
    trained = {p.parent.name for p in (tmp_path / "g" / "cells").glob("*/report.json")}
    assert trained == set(table["cell"]) | set(fronts["cell"])          # shared cells are one folder
    paths = publish(tmp_path / "g")
    for name in ("verdicts", "verdicts_md", "claims", "per_k", "lambdas"):
        assert paths[name].exists(), name
    claims = pd.read_csv(paths["claims"])
    assert set(claims["scope"]) == {"synthetic", "synthetic2", "pooled"}
    assert lambdas("synthetic2")["source"].startswith("validation")    # what the chapters read


def test_grid_resumes_after_a_kill_and_matches_a_clean_run(tmp_path):
    clean = run_grid(SPEC, tmp_path / "clean", data_fn=toy_split, progress=False)
    assert len(clean) == 10 and {"fvu", "ms_mean", "purity", "probe_n1", "fvu_k2", "dead"} <= set(clean.columns)
    # a run killed after its third cell: the child exits hard (no cleanup) once three reports exist
    code = (
        "import os, sys, json; sys.path.insert(0, 'tests')\n"
        "import sae_tutorial.grid as g, test_grid as t\n"
        "done = []\n"
        "orig = g.run_cell\n"
        "def killing(*a, **k):\n"
        "    r = orig(*a, **k); done.append(1)\n"
        "    if len(done) == 3: os._exit(9)\n"
        "    return r\n"
        "g.run_cell = killing\n"
        f"g.run_grid(t.SPEC, {str(tmp_path / 'killed')!r}, data_fn=t.toy_split, progress=False)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    assert len(list((tmp_path / "killed" / "cells").glob("*/report.json"))) == 3
    resumed = run_grid(SPEC, tmp_path / "killed", data_fn=toy_split, progress=False)
    pd.testing.assert_frame_equal(clean.drop(columns="train_seconds"), resumed.drop(columns="train_seconds"))
    cell = plan(SPEC)[4]
    files = {p.name for p in (tmp_path / "killed" / "cells" / cell.key).iterdir()}
    assert {"sae.safetensors", "report.json", f"{cell.key}.json", f"{cell.key}.md"} <= files
    assert json.loads((tmp_path / "killed" / "results.json").read_text())[4]["cell"] == cell.key


def test_parallel_jobs_give_the_same_table(tmp_path):
    spec = dataclasses.replace(SPEC, seeds=(0,))
    serial = run_grid(spec, tmp_path / "a", data_fn=toy_split, progress=False)
    parallel = run_grid(spec, tmp_path / "b", jobs=2, data_fn=toy_split, progress=False)
    torch.testing.assert_close(torch.tensor(serial["fvu"].values), torch.tensor(parallel["fvu"].values))


def test_dry_run_estimates_hours_from_measured_throughput():
    spec = dataclasses.replace(PRESETS["paper"], backbones=("vit-l-16",), ks=(32,))
    plan_table = dry_run(spec, throughput={(1024, 32, m, mask): 1e5 for m, mask in
                                           (("baseline", None), ("off-support l1", True), ("off-support l1", False),
                                            ("l1/l2", True), ("l1/l2", False))})
    assert len(plan_table) == 2 * 5
    row = plan_table.iloc[0]
    steps = 50 * (1_281_167 // 2048)
    assert row["steps"] == steps and row["hours"] == pytest.approx(steps * 2048 / 1e5 / 3600)
    measured = dry_run(dataclasses.replace(SPEC, backbones=("embedded",), datasets=(("fashion-mnist", "train", "test"),)))
    assert (measured["samples_per_s"] > 0).all() and (measured["steps"] == 25).all()
    assert (measured["step_per_gemm"] > 0.5).all() and plan_table["step_per_gemm"].isna().all()
    given = dry_run(spec, throughput={kind: {"samples_per_s": 1e5, "step_per_gemm": 2.5} for kind in
                                      {(1024, 32, c.method, c.mask) for c in plan(spec)}})
    assert (given["step_per_gemm"] == 2.5).all() and given["hours"].equals(plan_table["hours"])


def test_gpu_hours_formula():
    # 1000 steps of a step worth 3 GEMMs, B=2048, d=1024, m=8192 on a 100-TFLOP/s card at 50 %
    gemm_s = 2 * 2048 * 1024 * 8192 / (100e12 * 0.5)
    assert gpu_hours(1000, 2048, 1024, 8192, 3.0, 100.0, 0.5) == pytest.approx(1000 * 3 * gemm_s / 3600)
    assert gpu_hours(1000, 2048, 1024, 8192, 3.0, 200.0, 0.5) == pytest.approx(gpu_hours(500, 2048, 1024, 8192,
                                                                                         3.0, 100.0, 0.5))
    costs = pd.DataFrame({"steps": [1000, 10], "d": [1024, 768], "step_per_gemm": [3.0, 2.0]})
    floors = gpu_floors(costs, 2048, 8192)
    assert list(floors.columns) == list(GPU_BF16_TFLOPS) and floors.shape == (2, len(GPU_BF16_TFLOPS))
    assert floors.loc[0, "A100"] == pytest.approx(gpu_hours(1000, 2048, 1024, 8192, 3.0, GPU_BF16_TFLOPS["A100"]))


def test_data_options_reach_the_loader_and_are_checked(tmp_path):
    seen = []

    def split_with_options(backbone, dataset, split, limit=None, **options):
        seen.append(options)
        return toy_split(backbone, dataset, split, limit)

    spec = dataclasses.replace(SPEC, seeds=(0,), masks=(True,)).with_data_options({"toy": {"repo": "/data/toy"}})
    run_grid(spec, tmp_path / "g", data_fn=split_with_options, progress=False)
    assert seen and all(o == {"repo": "/data/toy"} for o in seen)
    with pytest.raises(ValueError, match="does not use"):
        SPEC.with_data_options({"open-images-v7": {"repo": "x"}})
    with pytest.raises(ValueError, match="open-images-v7.repo="):
        PRESETS["paper"].check_data_options()
    PRESETS["paper"].with_data_options({"open-images-v7": {"repo": "/data/oiv7"}}).check_data_options()
    with pytest.raises(ValueError, match="open-images-v7.repo="):      # before any cell is trained
        run_grid(PRESETS["paper"], tmp_path / "paper", progress=False)
    assert not (tmp_path / "paper" / "cells").exists()


def test_plan_adds_variant_cells_and_refuses_unknown_ones():
    from sae_tutorial.grid import VARIANT_MODELS

    spec = dataclasses.replace(PRESETS["embedded"], variants=("multi-topk",), variant_seeds=())
    cells = [c for c in plan(spec) if c.method == "multi-topk"]
    assert len(cells) == sum(len(spec.seeds_at(k)) for b in spec.backbones for k in spec.backbone_ks.get(b, spec.ks))
    few = [c for c in plan(dataclasses.replace(spec, variant_seeds=(1,))) if c.method == "multi-topk"]
    assert {c.seed for c in few} == {1} and len(few) == sum(len(spec.backbone_ks.get(b, spec.ks)) for b in spec.backbones)
    assert {c.mask for c in cells} == {None} and all(c.overrides == () for c in cells)
    assert VARIANT_MODELS["matryoshka"].__name__ == "MatryoshkaSAE"
    with pytest.raises(ValueError, match="unknown variant"):
        plan(dataclasses.replace(spec, variants=("multi-topk", "gated")))


def test_variant_cells_train_their_own_model_class(tmp_path):
    import sae_tutorial as st

    spec = dataclasses.replace(SPEC, variants=("multi-topk", "matryoshka"))
    table = run_grid(spec, tmp_path / "v", data_fn=toy_split, progress=False)
    assert len(table) == 2 * 7 and set(table["method"]) >= {"multi-topk", "matryoshka"}
    for method, cls in (("multi-topk", "MultiTopKSAE"), ("matryoshka", "MatryoshkaSAE")):
        cell = table[table["method"] == method]["cell"].iloc[0]
        assert type(st.load(tmp_path / "v" / "cells" / cell / "sae.safetensors")).__name__ == cls
