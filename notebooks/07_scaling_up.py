# ---
# jupyter:
#   jupytext:
#     notebook_metadata_filter: sae_tutorial
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.17.3
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
#   sae_tutorial:
#     figures: 1
# ---

# %% [markdown]
# # Scaling up: the paper grid, several GPUs, sharing an SAE
#
# [Open in Colab](https://colab.research.google.com/github/sae-tutorial/sae-tutorial/blob/main/notebooks/07_scaling_up.ipynb) · [student notebook](https://colab.research.google.com/github/sae-tutorial/sae-tutorial/blob/main/student/07_scaling_up.ipynb) (the exercises as stubs)
#
# **Prerequisites:** chapters 1 to 4; a GPU only for the large runs. **Time:** about 45 minutes, of which exercises about 10.
#
# The chapters run in CPU minutes. The paper's experiments do not: three backbones, two data sets, three budgets and
# three training objectives, each with and without the batch-active mask. This page shows the three tools for that
# scale (a resumable sweep, data-parallel training with `torchrun`, and hub-ready checkpoints) and what they cost.
# The cost figures are measured when this page is built, on the machine that builds it.

# %% tags=["remove-cell"]
# On Colab, install the companion library (the book itself is built with it already installed).
import subprocess
import sys

if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "sae-tutorial[colab] @ git+https://github.com/sae-tutorial/sae-tutorial@main"], check=True)

# %% tags=["parameters"]
import sae_tutorial as st
import torch

# "small" on a CPU (one torch thread), "colab" on a GPU (auto), or what you set
MODE, DEVICE = st.book.setup()
print(f"mode={MODE}, device={DEVICE}")

# %% [markdown]
# ## What you will learn
#
# 1. how the paper's grid is laid out as resumable cells, and how to estimate its cost before spending it;
# 2. how `torchrun` splits a global batch over devices without changing the loss;
# 3. how to save, load and share an SAE as a hub-ready folder with its method card;
# 4. compute a floor on the GPU-hours of a training run from the shape of its step (exercise 7.1).

# %% [markdown]
# ## 1. The grid as cells
#
# `st.grid.plan` lists one cell per (backbone, data set, k, seed) and method: the Top-k baseline, and each
# regularizer with the mask on and off. Each cell is trained, evaluated and written to its own folder; a killed sweep
# continues where it stopped, and the results table is rebuilt from the cells in plan order.

# %%
import pandas as pd
from sae_tutorial import grid

cells = grid.plan(grid.PRESETS["paper"])
plan = pd.DataFrame([c.describe() for c in cells])
print(f"{len(cells)} cells")
plan.groupby(["backbone", "dataset"]).size().rename("cells").to_frame()

# %% [markdown]
# The command line runs it; `--dry-run` prints the plan with its estimated device-hours instead:
#
# ```bash
# # the plan and its cost
# python -m sae_tutorial sweep --grid paper --out runs/paper --dry-run
# # the run (resumable: rerun the same line after a kill)
# python -m sae_tutorial sweep --grid paper --out runs/paper \
#     --dataset-option open-images-v7.repo=/data/open-images-v7 \
#     --dataset-option open-images-v7.classes=oidv7-class-descriptions.csv
# ```
#
# Open Images V7 has no official Hugging Face release, so the grid needs your copy (a hub dataset id or a local
# folder with an image column and a list of label ids per image) and the CSV naming its classes. Without them the
# sweep stops before training anything. From Python: `grid.PRESETS["paper"].with_data_options({...})`.
#
# The estimate comes from the training throughput measured on the machine it runs on. Measuring every cell kind at
# the paper's sizes takes a while on a CPU, so this page measures the three kinds of step (plain Top-k, masked
# regularizer, unmasked regularizer) once, at d=1024, m=8192, k=64, and scales to the other widths by d, since the
# encoder GEMM (2·B·d·m FLOPs) dominates a step. Each step is also timed against that GEMM on the same machine.

# %%
import time

spec = grid.PRESETS["paper"]
batch = 512 if DEVICE == "cpu" else spec.train["batch_size"]
kinds = {"baseline": {}, "masked regularizer": {"lambda_ratio": spec.lambda_ratio},
         "unmasked regularizer": {"lambda_ratio": spec.lambda_ratio, "reg_mask": False}}
start = time.perf_counter()
measured = {name: grid.measure_step(1024, spec.n_latents, 64, batch, over, steps=3)
            for name, over in kinds.items()}
print(f"measured in {time.perf_counter() - start:.0f} s on {DEVICE} (batch {batch}):")
pd.DataFrame(measured).T[["samples_per_s", "step_per_gemm"]].round(2)

# %% [markdown]
# `step_per_gemm` is a step's time in units of its encoder GEMM. A plain Top-k step needs that one GEMM (the
# backward touches only the $B \cdot k$ selected entries). A regularized step needs one more,
# $G^\top (x - b_\text{dec})$, for the encoder's gradient from the dense $\partial R/\partial h$ over the
# batch-active units, so about one more unit.

# %%
def kind_of(cell) -> str:
    return ("baseline" if cell.mask is None
            else "masked regularizer" if cell.mask else "unmasked regularizer")

throughput = {(grid.EMBED_DIMS[c.backbone], c.k, c.method, c.mask):
              {**measured[kind_of(c)],
               "samples_per_s": measured[kind_of(c)]["samples_per_s"] * 1024
               / grid.EMBED_DIMS[c.backbone]} for c in cells}
costs = grid.dry_run(spec, throughput=throughput)
hours = costs.groupby(["backbone", "dataset"])["hours"].sum()
print(f"the whole grid: {costs['steps'].sum():,} steps, "
      f"{costs['hours'].sum():,.0f} {DEVICE}-hours of SAE training on this machine\n"
      "(embedding extraction not included)")
hours.round(1).to_frame(f"{DEVICE}-hours")

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(7, 3.2))
hours.unstack().plot.barh(ax=ax)
ax.set_xlabel(f"estimated {DEVICE}-hours (measured throughput on this machine)")
ax.set_title("Cost of the paper grid, per backbone and data set")
fig.tight_layout()
plt.show()

# %% [markdown]
# **On common GPUs.** The machine that built this page may have no GPU, and a GPU's figures can only be measured on
# one. What this page can give is a floor. `st.grid.gpu_hours` takes the shape of a step measured here
# (`step_per_gemm`) and prices each GEMM-equivalent at 60 % of a card's published bf16 peak:
#
# $$\text{hours} = \text{steps} \cdot \text{step\_per\_gemm} \cdot
#   \frac{2 B d m}{\text{TFLOP/s} \cdot 10^{12} \cdot 0.6} \,/\, 3600 .$$
#
# Read these numbers as floors, not predictions. On a GPU the memory-bound parts of a step (Top-k, gathers,
# elementwise passes) and kernel launches cost far more than their share on a CPU, so real steps are several times
# slower than this. What the floor does show is the scale: the SAE grid is GPU-hours, not GPU-days, and extracting
# the embeddings (three ViT-L forward passes over about three million images) will likely cost more than training
# on them. A dry run on the GPU itself replaces the floor with measured figures in about a minute.

# %%
batch_gpu = spec.train["batch_size"]
# one row per cell, one column per card
floors = grid.gpu_floors(costs, batch_gpu, spec.n_latents)
gpu = floors.groupby([costs["backbone"], costs["dataset"]]).sum()
gpu.loc[("whole grid", ""), :] = gpu.sum()
print(f"floor of the GPU-hours of SAE training, batch {batch_gpu},\n"
      f"from step/GEMM ratios measured on {DEVICE}:")
gpu.round(2)

# %% [markdown]
# ### Exercise: a floor on GPU-hours
#
# ```{exercise} A floor on GPU-hours
# :label: ex-gpu-hours
#
# *Exercise 7.1 · difficulty ●○○ · importance ●●○ · about 10 minutes*
#
# Write `gpu_floor_hours(steps, batch_size, d, m, step_per_gemm, tflops, gemm_efficiency=0.6)`: the formula
# above, in hours. The check compares it with `st.grid.gpu_hours` on hidden cases and names a missing factor.
# Then ask what dominates: which factor would you change first to halve the bill?
# ```
#
# ````{solution} ex-gpu-hours
# :class: dropdown
#
# ```python
# def gpu_floor_hours(steps, batch_size, d, m, step_per_gemm, tflops,
#                     gemm_efficiency=0.6):
#     gemm_seconds = 2 * batch_size * d * m / (tflops * 1e12 * gemm_efficiency)
#     return steps * step_per_gemm * gemm_seconds / 3600
# ```
#
# The GEMM's cost is $2Bdm$ FLOPs (a multiply and an add per entry), priced at a fraction of the card's peak, and a
# step costs `step_per_gemm` of them. Steps × batch is the number of samples seen, so for a fixed number of epochs
# the bill is proportional to $d \cdot m \cdot$ step_per_gemm: halving the dictionary halves it, and so would
# a step with fewer dense passes (the regularized step's extra GEMM is about one unit of step_per_gemm).
# ````

# %% tags=["exercise"]
def gpu_floor_hours(steps, batch_size, d, m, step_per_gemm, tflops,
                    gemm_efficiency=0.6):
    """A floor on the hours of `steps` training steps on a card of `tflops`
    bf16 TFLOP/s."""
    gemm_seconds = 2 * batch_size * d * m / (tflops * 1e12 * gemm_efficiency)
    return steps * step_per_gemm * gemm_seconds / 3600


# %%
st.exercises.check_gpu_hours(gpu_floor_hours)

# %% [markdown]
# ## 2. Several GPUs: `torchrun`
#
# ```bash
# torchrun --nproc_per_node=4 -m sae_tutorial train \
#     --data ~/.cache/sae_tutorial/embeddings/vit-l-16--imagenet-1k--train \
#     --n-latents 8192 --k 64 --batch-size 2048 --epochs 50 --lambda-ratio 0.003 \
#     --out sae-vit-l-16/
# ```
#
# Every rank holds the embeddings and takes its contiguous slice of each global batch. The FVU's denominator is the
# total variance of the **global** batch (all-reduced), and each rank's reconstruction term is scaled by the number of
# ranks, so that DDP's gradient average is exactly the gradient of the single-process loss. The fired-latent mask
# (hence the dead-latent counters and AuxK) and the batch-active set $A$ of the regularizers are all-reduced too,
# and BatchTopK keeps the top $B \cdot k$ of the global batch (each rank gathers the others' candidates).
# Only rank 0 writes checkpoints, and a checkpoint resumes on any number of ranks. The library's tests check all
# this on CPU with two `gloo` processes: the losses of 20 steps match one process within 1e-5.
#
# Embedding extraction splits the same way, by shard:
#
# ```bash
# torchrun --nproc_per_node=4 -m sae_tutorial embed \
#     --backbone vit-l-16 --dataset imagenet-1k --split train
# ```
#
# Shard $i$ goes to rank $i \bmod 4$, each rank writes its own shard files, and rank 0 alone lists the finished
# ones in the manifest, in order. The cache is the one a single process writes, and a cache begun on four GPUs
# can be finished on one (the tests check both directions, bit for bit, with two `gloo` processes).
#
# How the global-batch quantities are reduced, with the code, is in the appendix, {ref}`under-the-hood-ddp`.
#
# ## 3. Sharing an SAE
#
# `save_pretrained` writes a folder the Hugging Face hub understands: `model.safetensors` (weights and a JSON record
# with a content hash), `config.json` (schema version, variant, sizes) and the method card as `README.md`.
# `from_pretrained` reads a folder or a hub repository and refuses a newer schema or another variant with a clear
# error; `push_to_hub` (from huggingface_hub's mixin) uploads the folder.

# %%
import tempfile
from pathlib import Path

from sae_tutorial.synthetic import make_sparse_data

data = make_sparse_data(4096, 32, 128, avg_active=4, seed=0)
sae = st.TopKSAE(32, 256, 4, seed=0)
cfg = st.TrainConfig(batch_size=256, steps=100, lr=3e-3, progress=False)
history = st.train(sae, data.x, cfg)
report = st.metrics.evaluate(sae, data.x, ks=[2, 4, 8], probe_ns=[1], sample_size=500)
folder = Path(tempfile.mkdtemp()) / "my-sae"
card = st.method_card(sae, report,
                      {**st.metrics.card_source(None, "make_sparse_data(4096, 32, 128)",
                                                "all"),
                       "train_config": cfg, "name": "my-sae"},
                      folder.parent)
sae.save_pretrained(folder, card=card)
print(sorted(p.name for p in folder.iterdir()))
again = st.SparseAutoencoder.from_pretrained(str(folder))
print(type(again).__name__, "weights equal:", torch.equal(again.W_dec, sae.W_dec))

# %% [markdown]
# ```python
# sae.push_to_hub("your-name/topk-sae-vit-l-16-k64")   # needs `huggingface-cli login`
# sae = st.SparseAutoencoder.from_pretrained("your-name/topk-sae-vit-l-16-k64")
# ```
#
# ## Check your understanding
#
# ```{admonition} 1. A sweep is killed after 40 of its 90 cells. What happens when you run the same command again?
# :class: dropdown
# It skips the 40 cells whose `report.json` exists (written last, so its presence means the cell finished), redoes
# the one that was running, and goes on. The results table is rebuilt from the reports in plan order, so it is the
# table of an uninterrupted run.
# ```
#
# ```{admonition} 2. With four GPUs, why is each rank's FVU denominator the variance of the global batch, not its own slice's?
# :class: dropdown
# FVU divides by the total variance of the batch. Four slices have four different variances, so four local FVUs
# averaged by DDP would not be the FVU of the global batch, and the gradient would differ from one process on the
# whole batch. All-reducing the variance makes the loss, and so the gradient, exactly that of one process.
# ```
#
# ```{admonition} 3. Why is the GPU figure on this page called a floor?
# :class: dropdown
# It prices only the GEMM-equivalents measured on this machine at 60 % of the card's peak. On a GPU the
# memory-bound parts of a step (Top-k, gathers, elementwise passes) and kernel launches weigh far more than on a
# CPU, so real steps are slower; a dry run on the GPU measures the real figure.
# ```

# %% [markdown]
# ## Summary
#
# - The paper grid is 90 resumable cells; `sweep --dry-run` prices it from throughput measured where it runs, and
#   on a CPU it also gives a floor for common GPUs, from the measured shape of a step.
# - `torchrun -m sae_tutorial train` splits the global batch; the loss and the dead-latent statistics are those of
#   one process on the whole batch.
# - An SAE is shared as a folder: safetensors weights, a versioned `config.json` and its method card as the README.
