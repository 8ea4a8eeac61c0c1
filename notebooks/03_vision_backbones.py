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
#     figures: 5
# ---

# %% [markdown]
# # 3. Training on vision backbones
#
# [Open in Colab](https://colab.research.google.com/github/sae-tutorial/sae-tutorial/blob/main/notebooks/03_vision_backbones.ipynb) · [student notebook](https://colab.research.google.com/github/sae-tutorial/sae-tutorial/blob/main/student/03_vision_backbones.ipynb) (the exercises as stubs)
#
# **Prerequisites:** chapter 1. **Time:** about 75 minutes, of which exercises about 20.
#
# So far our SAEs have read synthetic vectors. The paper this book reproduces {cite:p}`jacquier2026beyond` trains
# them on the image embeddings of three frozen vision models: CLIP ViT-L/14 {cite:p}`radford2021clip`, SigLIP2
# {cite:p}`tschannen2025siglip2` and a supervised ViT-L/16 {cite:p}`dosovitskiy2021vit`. The images come from
# ImageNet-1K {cite:p}`russakovsky2015imagenet` and Open Images V7 {cite:p}`kuznetsova2020openimages`. This
# chapter builds that pipeline: images go through a backbone into a cache on disk, and an SAE trains on the cache.
# On a CPU we run all of it with a small backbone on Fashion-MNIST. On a GPU, the same code runs the real
# backbones, and this chapter says beforehand how long that will take.

# %% tags=["remove-cell"]
# On Colab, install the companion library (the book itself is built with it already installed).
import subprocess
import sys

if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "sae-tutorial[colab] @ git+https://github.com/sae-tutorial/sae-tutorial@main"], check=True)

# %% tags=["parameters"]
# The scale: SAE_TUTORIAL_MODE = auto | small | colab | full
# (see "How to run this book").
import sae_tutorial as st
import torch

# "small" on a CPU (one torch thread), "colab" on a GPU (auto), or what you set
MODE, DEVICE = st.book.setup()
SMALL_SAE = dict(n_latents=1024, k=16)
# The real backbones (colab and full modes only; small mode skips them).
# None: pretrained weights from the hub; "random": the same architectures, offline
BACKBONE_WEIGHTS = None
# embed only the first LIMIT images of each real split (None: all of them)
LIMIT = None
# colab: a local imagenette2-320 folder (None: download it, about 330 MB)
IMAGENETTE_DIR = None
# full: a Hugging Face copy of Open Images V7 (image + list of label ids)
OPEN_IMAGES_REPO = None
OPEN_IMAGES_CLASSES = None  # full: its oidv7-class-descriptions.csv (label id, name)
print(f"mode={MODE}, device={DEVICE}")

# %% [markdown]
# ## What you will learn
#
# By the end of this chapter you will be able to:
#
# 1. extract embeddings of a data set with `st.embed` (or `python -m sae_tutorial embed`) and read the cache it
#    writes: the manifest, the shards, their hashes;
# 2. predict what survives when an extraction is killed, and check that the resumed cache equals an
#    uninterrupted one;
# 3. prepare embeddings as the paper's protocol does (L2-normalised rows) and train a Top-k SAE on them;
# 4. read the evaluation report of that SAE, look at what its latents fire on, and write its method card;
# 5. estimate, from measurements, what the paper's full grid costs before you start it, and run it on a GPU.

# %%
import dataclasses
import json
import os
import pprint
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch.nn.functional as F
from IPython.display import Markdown, display
from sae_tutorial import grid
from sae_tutorial.book import show_source
from sae_tutorial.datasets import cache_dir
from sae_tutorial.train import checks_without_improvement, default_lr



# this chapter's own caches, rebuilt on every run
CHAPTER_DIR = cache_dir() / "chapter03"
shutil.rmtree(CHAPTER_DIR, ignore_errors=True)
CHAPTER_DIR.mkdir(parents=True)

# %% [markdown]
# ## From images to embeddings
#
# An SAE for a vision model reads one vector per image: the backbone's image embedding, the vector its own
# training made meaningful. The backbone is frozen, so each image's embedding never changes. We compute it once,
# store it, and let the SAE train on the stored matrix for as many epochs as it needs: at the paper's scale that
# is one forward pass of a 300-million-parameter network per image instead of fifty.
#
# `st.backbones.get(name)` returns a backbone: the model, the preprocessing it expects and a description of which
# activation is the embedding. Here is the *embedded default*, a small convolutional network that the library
# trains on Fashion-MNIST {cite:p}`xiao2017fashion` the first time it is asked for (about a minute on a CPU) and
# caches. Its embedding is the 128-dimensional hidden layer just before the classifier.

# %%
backbone = st.backbones.get("embedded")
print(f"{backbone.model_id}: {backbone.embed_dim}-d embedding, "
      f"input {backbone.input_size}")
print(f"pooling: {backbone.pooling}")
print(f"weights: {backbone.weights[:24]}...  (a content hash of the cached model)")
print("Fashion-MNIST test accuracy of its classifier: "
      f"{backbone.report['test_accuracy']:.2%}")

# %% [markdown]
# Fashion-MNIST has 60,000 training and 10,000 test images of clothing, 28×28 pixels in grey levels, in ten
# classes. It ships as a Debian package, so this chapter runs offline. `st.datasets.get` returns it as
# (image, label) pairs in a fixed order, the same interface as ImageNet through Hugging Face `datasets`:

# %%
test_set = st.datasets.get("fashion-mnist", "test")
CLASSES = test_set.classes
print(test_set)

per_class = 6
fig, axes = plt.subplots(per_class, len(CLASSES), figsize=(10, 6.4))
for c, name in enumerate(CLASSES):
    rows = np.flatnonzero(test_set.labels == c)[:per_class]
    for r, i in enumerate(rows):
        axes[r, c].imshow(test_set.images[i], cmap="gray_r")
        axes[r, c].set_axis_off()
    axes[0, c].set_title(name, fontsize=9)
fig.suptitle("Fashion-MNIST: the first test images of each class")
fig.tight_layout()
plt.show()

# %% [markdown]
# ### Extraction into a cache
#
# `st.embed(backbone, dataset, split, out_dir)` runs every image through the backbone and writes the
# embeddings to a folder:
#
# - DataLoader workers decode and preprocess images while the model runs (on a GPU, with autocast);
# - embeddings accumulate in a buffer of `shard_size` rows; each full buffer becomes a *shard*, a safetensors
#   file with the embeddings and the labels;
# - `manifest.json` says what the cache holds: the backbone (model, weights, preprocessing, pooling), the data
#   set (name, revision, split, class names), the dtype, and for each shard its rows and the SHA-256 of its
#   content.
#
# The order of the two writes is what makes a cache safe to interrupt. A shard is written to a temporary file
# and renamed into place, and only then is it listed in the manifest (written the same way), in order. The
# manifest is the truth: a file it does not list does not count, and a rerun deletes and redoes it. The two
# functions that do this are in the appendix, {ref}`under-the-hood-cache`.
#
# We embed the 10,000 test images in shards of 1,000 rows and batches of 250. One process does everything here
# (`num_workers=0`); on a machine with idle cores, leave the default, a DataLoader worker per core but one.
# The same extraction is also a command, for long runs in a terminal:
#
# ```bash
# python -m sae_tutorial embed --backbone embedded --dataset fashion-mnist --split test \
#     --out DIR --batch-size 250 --shard-size 1000 --num-workers 0
# ```
#
# With several GPUs, `torchrun --nproc_per_node=4 -m sae_tutorial embed ...` gives shard $i$ to rank $i \bmod 4$;
# rank 0 lists the finished shards in order, so the cache is the one a single process would write.

# %%
EMBED_OPTIONS = dict(batch_size=250, shard_size=1000, num_workers=0)
reference_dir = CHAPTER_DIR / "test-uninterrupted"
start = time.perf_counter()
st.embed(backbone, "fashion-mnist", "test", reference_dir, progress=False,
         **EMBED_OPTIONS)
print(f"embedded {test_set.num_rows:,} images in {time.perf_counter() - start:.1f} s")
print("files:")
pprint.pprint(sorted(p.name for p in reference_dir.iterdir()), width=88, compact=True)

# %% [markdown]
# The manifest, without its list of class names and the text of the preprocessing:

# %%
manifest = json.loads((reference_dir / "manifest.json").read_text())
summary = {key: value for key, value in manifest.items()
           if key not in ("shards", "backbone_report")}
summary["backbone"] = {k: v for k, v in manifest["backbone"].items()
                       if k != "transform"}
summary["dataset"] = {k: v for k, v in manifest["dataset"].items() if k != "classes"}
st.book.print_wrapped(json.dumps(summary, indent=1))   # long values wrap
shards = pd.DataFrame(manifest["shards"])
shards["sha256"] = shards["sha256"].str[:16] + "…"
shards

# %% [markdown]
# ### What survives a crash
#
# Extraction at full scale takes hours, and a Colab session can end at any moment. What does a killed run leave
# behind, and how much work does the rerun repeat? Predict it before we kill one.
#
# ```{exercise} What survives a kill
# :label: ex-kill
#
# *Exercise 3.1 · difficulty ●○○ · importance ●●○ · about 10 minutes*
#
# An extraction of `n_total` images with shards of `shard_size` rows is killed (SIGKILL: no clean-up code runs)
# after the backbone has embedded `images_done` images, where `images_done` is not a multiple of `shard_size`.
# Write `after_kill(images_done, shard_size, n_total)` returning two numbers:
#
# 1. the rows the manifest lists after the kill;
# 2. how many images the rerun, with the same arguments, sends through the backbone to finish the cache.
#
# In the book the next code cell holds a reference answer, so that the chapter runs from top to bottom; in the
# student notebook (linked at the top) it is a stub for your answer. Write it, then run the kill below and the
# check after it.
# ```
#
# ````{solution} ex-kill
# :class: dropdown
#
# Only full shards are written during a run, each one as soon as its buffer is full, so the manifest lists
# the largest multiple of `shard_size` not above `images_done`. The rows embedded since then lived only in
# the killed process's memory. The rerun starts at the first unlisted row:
#
# ```python
# def after_kill(images_done, shard_size, n_total):
#     listed = images_done // shard_size * shard_size
#     return listed, n_total - listed
# ```
#
# A kill therefore costs at most one shard of repeated work: with 16,384-row shards (the default) and
# ViT-L/14 on a T4, a few minutes. A smaller shard loses less but writes more files.
# ````

# %% tags=["exercise"]
def after_kill(images_done, shard_size, n_total):
    """(rows the manifest lists after the kill,
    images the rerun sends through the backbone)."""
    listed = images_done // shard_size * shard_size
    return listed, n_total - listed


# %% [markdown]
# Now the real thing. A separate Python process starts the same extraction into a new folder, with a hook on the
# backbone that kills the process with SIGKILL as soon as 3,700 images have gone through the model. Batches are 250
# images, so the kill comes right after the forward pass that reaches 3,750.

# %%
KILL_SCRIPT = """
import os, signal, sys
import sae_tutorial as st

out, kill_after = sys.argv[1], int(sys.argv[2])
backbone = st.backbones.get("embedded")
seen = 0

def hook(module, inputs, output):  # runs after each forward pass of the backbone
    global seen
    seen += len(output)
    if seen >= kill_after:
        print(seen, flush=True)
        # no clean-up runs: like a crash or a lost Colab session
        os.kill(os.getpid(), signal.SIGKILL)

backbone.model.register_forward_hook(hook)
st.embed(backbone, "fashion-mnist", "test", out, batch_size=250, shard_size=1000,
         num_workers=0, progress=False)
"""
killed_dir = CHAPTER_DIR / "test-killed"
one_thread = {**os.environ, "OMP_NUM_THREADS": "1"} if MODE == "small" else None
result = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(killed_dir), "3700"],
                        capture_output=True, text=True, env=one_thread)
images_done = int(result.stdout.split()[-1])
killed_manifest = json.loads((killed_dir / "manifest.json").read_text())
print(f"exit status {result.returncode} ({signal.Signals(-result.returncode).name}), "
      f"after {images_done:,} images through the backbone")
print(f"manifest: rows={killed_manifest['rows']:,}, "
      f"finished={killed_manifest['finished']}, shards:")
pprint.pprint([s["file"] for s in killed_manifest["shards"]], width=88, compact=True)
print("files in the folder:")
pprint.pprint(sorted(p.name for p in killed_dir.iterdir()), width=88, compact=True)

# %% [markdown]
# Loading an unfinished cache is refused, with a message that says what to do:

# %%
try:
    st.load_embeddings(killed_dir)
except ValueError as error:
    st.book.print_wrapped("ValueError:",
                          str(error).replace(str(CHAPTER_DIR), "<chapter dir>"))

# %% [markdown]
# Rerunning `st.embed` with the same arguments resumes the cache. We count the images the rerun sends through the
# backbone with a forward hook, then compare the resumed cache with the uninterrupted one, shard by shard:

# %%
class CountImages:
    """A forward hook that counts the images a backbone embeds."""

    def __init__(self, model):
        self.n = 0
        self.handle = model.register_forward_hook(self)

    def __call__(self, module, inputs, output):
        self.n += len(output)


counter = CountImages(backbone.model)
start = time.perf_counter()
st.embed(backbone, "fashion-mnist", "test", killed_dir, progress=False, **EMBED_OPTIONS)
resumed_seconds = time.perf_counter() - start
rerun_images = counter.n
resumed = json.loads((killed_dir / "manifest.json").read_text())
same = [a["sha256"] == b["sha256"]
        for a, b in zip(resumed["shards"], manifest["shards"])]
print(f"the rerun embedded {rerun_images:,} images in {resumed_seconds:.1f} s; "
      f"the cache now has {resumed['rows']:,} rows in {len(resumed['shards'])} shards")
print("shards identical to the uninterrupted run: "
      f"{sum(same)} of {len(manifest['shards'])} "
      f"(same hashes: {resumed['shards'] == manifest['shards']})")

counter.n = 0
start = time.perf_counter()
st.embed(backbone, "fashion-mnist", "test", killed_dir, progress=False, **EMBED_OPTIONS)
print(f"a third call, on the finished cache: {counter.n} images embedded, "
      f"{1000 * (time.perf_counter() - start):.0f} ms")
counter.handle.remove()

# %% [markdown]
# The resumed cache is bit for bit the uninterrupted one. Two choices in the library make that true: the data
# come in a fixed order, and no batch straddles a shard boundary, so every shard holds the same images computed in
# the same batches whichever run wrote it.
#
# "Bit for bit" has a condition: the same *numerics settings*. On a CPU, torch splits the sums inside a
# convolution or a matrix product by thread, so the same images embedded with 1 and with 2 threads differ in the
# last bits; a GPU, a compute dtype or a torch version changes them too. That is why the killed process above
# runs with the chapter's own thread count. The manifest records the settings the cache was begun under:

# %%
print("numerics of the cache:")
pprint.pprint(resumed["numerics"], width=88, sort_dicts=False)

# %% [markdown]
# A run that would add rows under other settings is refused, with an error that names the difference. Passing
# `allow_mixed_numerics=True` (`--allow-mixed-numerics` on the command line) goes on anyway and flags the cache:
# its manifest's `mixed_numerics` lists each later segment's settings and first row, so nobody mistakes it for a
# bit-identical one. A finished cache is only read, whatever the settings.
#
# The check of your `after_kill` uses the numbers of this run, then three more cases:

# %%
st.exercises.check_after_kill(after_kill,
                              observed=((images_done, 1000, 10_000),
                                        (killed_manifest["rows"], rerun_images)))

# %% [markdown]
# A plausible wrong answer, which assumes every embedded image was saved, is caught:

# %%
try:
    st.exercises.check_after_kill(lambda images_done, shard_size, n_total:
                                  (images_done, n_total - images_done))
except AssertionError as error:
    st.book.print_wrapped("The check caught it:", error)

# %% [markdown]
# ### Loading: memory-mapped and verified
#
# `st.load_embeddings` memory-maps each shard: the rows stay on disk until they are read, so a cache larger
# than memory loads at once. By default it also hashes every shard and compares with the manifest, which reads
# the data once. A damaged shard is then reported by name instead of training an SAE on garbage:

# %%
for verify in (False, True):
    start = time.perf_counter()
    emb = st.load_embeddings(reference_dir, verify=verify)
    print(f"verify={verify}: {1000 * (time.perf_counter() - start):.1f} ms, "
          f"x {tuple(emb.x.shape)} {emb.x.dtype}, labels {tuple(emb.labels.shape)}")

damaged = CHAPTER_DIR / "test-damaged"
shutil.copytree(reference_dir, damaged)
shard_file = damaged / "shard-00002.safetensors"
raw = bytearray(shard_file.read_bytes())
raw[-100] ^= 0xFF                                       # flip one byte of one embedding
shard_file.write_bytes(bytes(raw))
for what, damage in [("one flipped byte", None),
                     ("a truncated file",
                      lambda: shard_file.write_bytes(bytes(raw[: len(raw) // 2])))]:
    if damage:
        damage()
    try:
        st.load_embeddings(damaged)
    except ValueError as error:
        st.book.print_wrapped(f"{what}: ValueError:",
                              str(error).replace(str(CHAPTER_DIR), "<chapter dir>"))

# %% [markdown]
# ### The embedding space
#
# For the SAE we use the library's default caches of both splits (`st.embed` with no `out_dir`; they are built
# the first time and reused by every chapter). `sae_tutorial.grid.load_split` loads one and prepares it as the
# MonoLoss protocol {cite:p}`nasirisarvi2026monoloss` does, which the paper most likely follows: every
# embedding is scaled to unit L2 norm.

# %%
show_source(grid.load_split)

# %%
# (60000, 128), (60000,)
x_train, y_train, _ = grid.load_split("embedded", "fashion-mnist", "train")
# (10000, 128), (10000,)
x_test, y_test, _ = grid.load_split("embedded", "fashion-mnist", "test")
raw_test = st.load_embeddings(
    st.embed(backbone, "fashion-mnist", "test", progress=False)).x   # (10000, 128)
norms = raw_test.norm(dim=1)
print(f"train {tuple(x_train.shape)}, test {tuple(x_test.shape)}")
print(f"raw embedding norms: min {norms.min():.1f}, median {norms.median():.1f}, "
      f"max {norms.max():.1f}")
print(f"entries that are exactly zero: {(raw_test == 0).float().mean():.1%} "
      "(the embedding is the output of a ReLU)")

# %% [markdown]
# Two views of the test embeddings. Left, their projection on the two leading principal directions, one colour
# per class. Right, for each of the 128 dimensions, the fraction of images in which it is non-zero.

# %%
centred = x_test - x_test.mean(0)                             # (10000, 128)
# v: (128, 128), rows = principal directions
_, s, v = torch.linalg.svd(centred, full_matrices=False)
pcs = centred @ v[:2].T                                       # (10000, 2)
explained = (s[:2] ** 2 / (s ** 2).sum()).tolist()
active = (x_test > 0).float().mean(0).sort(descending=True).values    # (128,)

fig, axes = plt.subplots(1, 2, figsize=(10, 4.2),
                         gridspec_kw={"width_ratios": [1.35, 1]})
for c, name in enumerate(CLASSES):
    pts = pcs[y_test == c]
    axes[0].scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5, color=plt.cm.tab10(c),
                    label=name)
axes[0].set(xlabel=f"PC 1 ({explained[0]:.0%} of the variance)",
            ylabel=f"PC 2 ({explained[1]:.0%})",
            title="Test embeddings (L2-normalised), 2-D PCA")
axes[0].legend(markerscale=5, fontsize=9, loc="center left", bbox_to_anchor=(1.0, 0.5),
               frameon=False)
axes[1].bar(range(len(active)), active, width=1.0, color="C0")
axes[1].set(xlabel="embedding dimension, sorted", ylabel="fraction of test images",
            title="How often each dimension is non-zero")
fig.tight_layout()
plt.show()

# %% [markdown]
# Two linear directions already sort much of the data: footwear on one side, the tops (T-shirts, pullovers,
# coats, shirts) on the other, with bags between and trousers apart. Pullovers, coats and shirts overlap, as
# they do in the backbone's own mistakes. The right panel shows what makes this embedding unlike CLIP's: it is
# non-negative, most dimensions are zero for most images, and a few are never non-zero at all, because the
# classifier reads a ReLU layer. An SAE has far less to find in 128 such numbers than in a 768-dimensional
# CLIP embedding, which is why the real backbones are the point of the paper.
#
# ```{exercise} Normalise the embeddings
# :label: ex-normalise
#
# *Exercise 3.2 · difficulty ●○○ · importance ●●○ · about 5 minutes*
#
# Write `l2_normalise(x)`: given embeddings of shape `(N, d)`, return each row divided by its L2 norm. A row of
# zeros must come back as zeros (no NaN). Then answer: after normalisation, what is the largest possible
# squared distance between two embeddings, and why does that make one learning rate fit all three backbones?
# ```
#
# ````{solution} ex-normalise
# :class: dropdown
#
# ```python
# def l2_normalise(x):
#     return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)    # (N, d) / (N, 1)
# ```
#
# This is what `torch.nn.functional.normalize(x, dim=1)` computes. The norm is over `dim=1`, each row; the
# clamp keeps a zero row at zero instead of 0/0.
#
# On the unit sphere, $\|a - b\|^2 = 2 - 2\cos(a, b) \le 4$, whatever the backbone. Raw embeddings differ
# in scale from model to model (even within one backbone and data set, the norms printed above vary
# several-fold), and the
# reconstruction error, the gradients and the pre-activations scale with them. After normalisation a
# learning rate, a $k$ and the paper's $\lambda$ mean the same thing for CLIP, SigLIP2 and ViT-L/16, and cosine
# similarity, which is how CLIP-style models compare images, is a plain dot product.
# ````

# %% tags=["exercise"]
def l2_normalise(x):
    """Each row of x (N, d) divided by its L2 norm; a row of zeros stays zero."""
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


# %%
st.exercises.check_l2_normalise(l2_normalise)
# = load_split's
assert torch.allclose(torch.nn.functional.normalize(raw_test, dim=1), x_test, atol=1e-6)

# %% [markdown]
# ## Training an SAE on the embedded default
#
# The SAE has 1,024 latents (8 times the embedding's width) and keeps $k = 16$ of them per image. The
# training settings are those of the library's `embedded` grid, which chapter 4 runs in full. Training stops
# when the FVU on a held-out tenth of the training rows stops improving (`val_every`, `patience`, `min_delta`),
# or at the epoch cap; the grid carves that validation split the same way (`st.selection.validation_split`).

# %%
EMBEDDED = grid.PRESETS["embedded"]
config = st.TrainConfig(**EMBEDDED.train, progress=False)
print(json.dumps({k: v for k, v in config.to_dict().items()
                  if k in ("batch_size", "epochs", "lr", "warmup_steps", "auxk_alpha",
                           "dead_after", "adam_eps", "b_dec_init", "seed", "val_every",
                           "patience", "min_delta")}, indent=1))

# as grid.run_cell
fit_rows, val_rows = st.selection.validation_split(len(x_train), EMBEDDED.validation)
# (54000, 128), (6000, 128)
x_fit, x_val = x_train[fit_rows].to(DEVICE), x_train[val_rows].to(DEVICE)
sae = st.TopKSAE(backbone.embed_dim, SMALL_SAE["n_latents"], SMALL_SAE["k"],
                 seed=0).to(DEVICE)
start = time.perf_counter()
history = st.train(sae, x_fit, config, val_data=x_val)
train_seconds = time.perf_counter() - start
# as the grid
stopped_early = (checks_without_improvement(history["val_fvu"], config.min_delta)
                 >= config.patience)
print(f"trained {sae} for {len(history['step'])} steps in {train_seconds:.1f} s")
print("(plateau reached)" if stopped_early
      else f"(epoch cap of {config.epochs} reached)")
print(f"last step: training FVU {history['fvu'][-1]:.4f}, "
      f"held-out FVU {history['val_fvu'][-1]:.4f}, "
      f"L0 {history['l0'][-1]:.1f}, dead fraction {history['dead_frac'][-1]:.3f}")
drop = 1 - history["val_fvu"][-1] / history["val_fvu"][-1 - 100 // config.val_every]
print(f"held-out FVU fell {drop:.1%} over the last 100 steps "
      f"(training stops once {config.patience} checks\n"
      f"in a row, one every {config.val_every} steps, "
      f"fail to beat the best by {config.min_delta:.0%})")

# %% [markdown]
# Those lines are computed from the run. On the embedded default, three epochs are a CPU budget, not a
# convergence criterion, and a longer run reconstructs better (chapter 4's Controls section measures how far
# each cell of its grid was from the plateau). The dead fraction counts latents that have not fired in the
# last `dead_after` samples.

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
axes[0].plot(history["step"], history["fvu"], label="training batches")
axes[0].plot(history["val_step"], history["val_fvu"], "o-", ms=3,
             label="held-out tenth")
axes[0].set(yscale="log", xlabel="step", ylabel="FVU (log scale)",
            title="Reconstruction")
axes[0].legend()
axes[1].plot(history["step"], history["dead_frac"], color="C3")
axes[1].set(xlabel="step", ylabel="fraction of latents",
            title=f"Not fired in the last {config.dead_after:,} samples")
fig.suptitle(f"Top-k SAE on the embedded default: d={sae.d_in}, m={sae.n_latents}, "
             f"k={sae.k}")
fig.tight_layout()
plt.show()

# %% [markdown]
# ### The evaluation report
#
# `st.metrics.evaluate` computes every metric of the book in one pass over the held-out test embeddings, with
# their labels. Chapter 4 explains each one; here is the report, with a line on what each number measures.

# %%
report = st.metrics.evaluate(sae, x_test, labels=y_test,
                             **{**EMBEDDED.evaluate, "probe_ns": (1, 4, sae.k),
                                "dense_probe": True})
MEANINGS = {
    "fvu": "fraction of variance unexplained (0 = perfect, 1 = the mean embedding)",
    "r2": "mean over dimensions of 1 − SS_res/SS_tot (MonoLoss's R²)",
    "cosine": "mean cosine between x and its reconstruction",
    "l0": "non-zero codes per image",
    "dead_frac": "latents that never fire on the test set",
    "ms_mean": "Monosemanticity Score, mean over live latents",
    "ms_max": "Monosemanticity Score, best latent",
    "purity": f"share of a latent's top {report['top_n']} images "
              "in its commonest class",
    "purity_chance": "the same for random images (chance level)",
    "probe_n1": "linear probe on each image's top 1 latent (test accuracy)",
    "probe_n4": "... on its top 4 latents",
    "probe_n16": f"... on all k = {sae.k}",
    "probe_dense": "the same probe on the embedding itself",
    "cknna": "kernel alignment between embeddings and codes (1 = same neighbours)",
}
for k_prime in (sae.k // 4, 2 * sae.k):
    MEANINGS[f"fvu_k{k_prime}"] = (
        f"FVU when {k_prime} latents are kept at inference instead of {sae.k}")
report_table = pd.DataFrame({"value": [report[key] for key in MEANINGS],
                             "what it measures": MEANINGS.values()},
                            index=list(MEANINGS)).rename_axis("metric")
report_table.style.format({"value": "{:.3f}"}).set_table_attributes('class="dataframe"')

# %% [markdown]
# The SAE reconstructs the embeddings well from 16 latents out of 1,024, and a linear probe reading only
# those codes comes within a few points of one reading the embedding itself. The two dead fractions are
# different measurements: during training a latent is dead after `dead_after` samples without firing (a moving
# window over the most recent batches), while the report asks whether it fires on any of the 10,000 test images
# (so a rare latent can count as dead on the smaller set, and one that woke late counts as alive):

# %%
print(f"dead at the last training step: {history['dead_frac'][-1]:.1%} of latents "
      f"(no firing in the last {config.dead_after:,} samples);\n"
      f"never firing on the test set: {report['dead_frac']:.1%}")

# %% [markdown]
# Purity is far above chance: most latents fire mostly on one class. Top-k's budget problem from chapter 1 is
# here too: keeping $2k$ latents at inference reconstructs worse than keeping $k$.
#
# ### What the latents fire on
#
# Many live latents are rare: they fire on a handful of test images, too few to judge. So we draw eight
# latents at random among those that fire on at least 50 test images, and show the images on which each fires
# most strongly. The label on the left gives how often the latent fires and the commonest class among its top
# 50 images, with its share (the purity of the report).

# %%
with torch.no_grad():
    codes = sae.encode(x_test.to(DEVICE)).cpu()            # (10000, m)
frequency = (codes > 0).float().mean(0)                    # (m,)
purity = st.metrics.class_purity(codes, y_test, top_n=50)  # (m,), NaN for dead latents
fired_on = (codes > 0).sum(0)                              # (m,) test images
common = torch.nonzero(fired_on >= 50).squeeze(1)
print(f"of {sae.n_latents} latents: "
      f"{int((fired_on == 0).sum())} never fire on the test set,\n"
      f"{int(((fired_on > 0) & (fired_on < 50)).sum())} fire on 1 to 49 images, "
      f"{len(common)} on 50 or more")
chosen = common[torch.randperm(
    len(common), generator=torch.Generator().manual_seed(0))[:8]].sort().values
n_top = 10

fig, axes = plt.subplots(len(chosen), n_top, figsize=(9, 8.6))
for row, j in enumerate(chosen.tolist()):
    top_rows = codes[:, j].topk(50).indices                # all 50 fire: fired_on >= 50
    dominant = int(y_test[top_rows].mode().values)
    for col in range(n_top):
        ax = axes[row, col]
        ax.imshow(test_set.images[int(top_rows[col])], cmap="gray_r")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    axes[row, 0].set_ylabel(f"latent {j}\nfires on {frequency[j]:.1%}\n"
                            f"{CLASSES[dominant]} {purity[j]:.0%}",
                            rotation=0, ha="right", va="center", fontsize=8)
fig.suptitle(f"Top {n_top} test images of eight random latents (of the {len(common)} "
             "that fire on 50+ test images)")
fig.tight_layout()
plt.show()

# %% [markdown]
# Most rows are one kind of garment, and often one style of it (a cut of dress, a shape of
# bag): a latent stands for a shape or a texture more than for a class name. A row that mixes classes
# usually shares a look, such as a silhouette, a pattern or a contrast, rather than a label. Grids like this are
# how the paper shows its features qualitatively; chapter 5 builds an explorer for them.
#
# ### The method card
#
# The card records where the SAE's inputs came from, how it was trained, and its metrics, as JSON and Markdown.
# `save_pretrained` then writes a folder ready for the Hugging Face hub, with the card as its README, and
# `from_pretrained` reads it back.

# %%
CARD_DIR = cache_dir() / "method_cards" / "03_vision_backbones"
provenance = dict(
    name="ch3-embedded-fashion-mnist-topk-k16",
    **st.metrics.card_source(backbone.info(), "fashion-mnist (zalando-2017)",
                             "train: train (60,000); metrics: test (10,000)"),
    train_config=config, steps=len(history["step"]),
    notes=f"Chapter 3. Trained in {train_seconds:.0f} s on {DEVICE}; the backbone's "
          f"Fashion-MNIST test accuracy is {backbone.report['test_accuracy']:.2%}.")
card_json, card_md = st.method_card(sae, report, provenance, out_dir=CARD_DIR)

hub_dir = CHAPTER_DIR / "hub" / provenance["name"]
sae.save_pretrained(hub_dir, card=(card_json, card_md))
reloaded = st.TopKSAE.from_pretrained(hub_dir)
pprint.pprint({p.name: f"{p.stat().st_size:,} bytes"
               for p in sorted(hub_dir.iterdir())}, width=88, sort_dicts=False)
print("reloaded weights equal:",
      all(torch.equal(a.cpu(), b) for a, b in
          zip(sae.state_dict().values(), reloaded.state_dict().values())))

# %% tags=["hide-output"] mystnb={"markdown_format": "gfm"}
display(Markdown(re.sub(r"^(#+) ", r"###\1 ", card_md.read_text(), flags=re.MULTILINE)))

# %% [markdown]
# ```{exercise} The learning rate at the paper's scale
# :label: ex-lr
#
# *Exercise 3.3 · difficulty ●○○ · importance ●○○ · about 5 minutes*
#
# When `TrainConfig.lr` is `None`, the library follows {cite:t}`gao2024scaling`: the Adam learning rate shrinks
# with the number of latents $m$ as $2\times 10^{-4} / \sqrt{m / 2^{14}}$. Write `gao_lr(n_latents)`. What does
# the rule give for the paper's $m = 8192$, and how does that compare with the $10^{-4}$ that MonoLoss uses
# there?
# ```
#
# ````{solution} ex-lr
# :class: dropdown
#
# ```python
# def gao_lr(n_latents):
#     return 2e-4 / (n_latents / 2**14) ** 0.5
# ```
#
# At $m = 2^{14} = 16384$ the rule gives exactly $2\times 10^{-4}$; halving $m$ multiplies it by $\sqrt 2$, so
# $m = 8192$ gives $2.83\times 10^{-4}$, nearly three times MonoLoss's $10^{-4}$. Both are in use: the rule
# was fitted on language-model activations, and MonoLoss trains 50 epochs, long enough for a smaller step.
# The full-scale cells below use MonoLoss's value, set explicitly in the `paper` preset. For our 1,024 latents
# the rule gives $8\times 10^{-4}$, within a factor of three of the $2\times 10^{-3}$ of the `embedded` preset.
# ````

# %% tags=["exercise"]
def gao_lr(n_latents):
    """The Adam learning rate of Gao et al. for a dictionary of n_latents latents."""
    return 2e-4 / (n_latents / 2**14) ** 0.5


# %%
st.exercises.check_gao_lr(gao_lr)
print(f"the rule at m={sae.n_latents}: {default_lr(sae.n_latents):.1e} "
      f"(embedded preset: {EMBEDDED.train['lr']:.0e})")

# %% [markdown]
# ## The paper's scale: three backbones × ImageNet-1K and Open Images V7
#
# At full scale nothing changes but the names and the sizes: `st.backbones.get("clip-vit-l-14")` instead of
# `"embedded"`, `st.embed(..., "imagenet-1k", ...)` instead of Fashion-MNIST, and the `paper` preset's SAE
# (8,192 latents, $k$ = 64, batches of 2,048, 50 epochs at learning rate $10^{-4}$). Before starting, we
# want to know what it costs. Two measurements give a useful estimate without downloading anything.
#
# **The backbones.** `st.backbones.get(name, weights="random")` builds the real architecture. On PyTorch's
# `meta` device it builds only shapes, instantly and without memory, and a forward pass there computes only
# output shapes. PyTorch's FLOP counter works on it, so `st.costs.flop_profile` gets each model's exact cost
# per image. (The library's tests build all three with real random weights and run them on two images; on
# this CPU that takes about half a minute per model, too long for this page.)

# %%
PAPER = grid.PRESETS["paper"]
# one column per backbone
architectures = pd.DataFrame({name: st.costs.flop_profile(name)
                              for name in PAPER.backbones})
architectures.map(lambda v: f"{v:.0f}" if isinstance(v, float) else v)

# %% [markdown]
# **The device's speed.** A ViT is almost entirely a stack of identical transformer blocks.
# `st.costs.block_flop_rate` takes one block of ViT-L/16 at its real width and token count, gives it real
# memory and random weights, and times it on this machine's device (with autocast on a GPU, as extraction
# runs). Its FLOPs divided by its time is the rate this device sustains on the work that dominates
# extraction. Dividing each model's FLOPs by that rate gives its time per image. The code of both
# measurements, and why the block's FLOPs are counted on the `meta` device, is in the appendix,
# {ref}`under-the-hood-costs`.

# %%
block = st.costs.block_flop_rate(DEVICE)
DEVICE_FLOPS = block["rate"]
PROCESSOR = "GPU" if DEVICE == "cuda" else "CPU"
print("one ViT-L/16 block on", block["tokens"], "tokens:")
print(f"{block['flops'] / 1e9:.1f} GFLOP in {block['seconds'] * 1000:.0f} ms "
      f"-> {DEVICE_FLOPS / 1e9:,.1f} GFLOP/s on this {PROCESSOR}")

# %% [markdown]
# **The SAE.** `grid.dry_run` lists the cells of a grid with their training steps and hours, from training
# throughput measured with the library's own training step. We ask it for the baseline Top-k SAE of the paper
# ($k$ = 64, the three backbones, both data sets; the paper's full grid adds the regularizers and two more
# values of $k$, chapter 4). On a CPU we time two steps at batch 256 instead of 2,048, to keep this page fast;
# this CPU runs larger batches faster per sample, so its CPU hours are an upper bound.

# %%
baseline_spec = dataclasses.replace(PAPER, ks=(64,), masks=())
throughput_batch = 256 if DEVICE == "cpu" else PAPER.train["batch_size"]
throughput = {}
for d in sorted({grid.EMBED_DIMS[name] for name in PAPER.backbones}):
    throughput[(d, 64, "baseline", None)] = grid.measure_throughput(
        d, PAPER.n_latents, 64, throughput_batch, {},
        steps=2 if DEVICE == "cpu" else 10)
plan = grid.dry_run(baseline_spec, throughput)
plan[["backbone", "dataset", "d", "train_rows", "steps", "samples_per_s",
      "hours"]].round({"samples_per_s": 0, "hours": 2})

# %% [markdown]
# Now the estimate. Rates for GPUs cannot be measured on a CPU, so the two GPU columns *assume* sustained
# rates, and say so: 12 TFLOP/s for Colab's free T4 in float16 and 130 TFLOP/s for an A100 in bfloat16 (our
# guesses, about a fifth and two fifths of their peaks). Run this chapter on a GPU and the first column comes
# from that GPU's measured rate. The numbers count compute only: on Colab's two CPU cores, JPEG decoding and
# streaming from the hub can be slower than the GPU (we have not measured them), so read the GPU columns as lower
# bounds. Embeddings are stored in float32.

# %%
ASSUMED_TFLOPS = {"T4 (h)*": 12, "A100 (h)*": 130}   # * assumed sustained TFLOP/s
T4, A100 = ASSUMED_TFLOPS
here = f"this {PROCESSOR} (h)"
# imagenette2-320, what colab mode uses
IMAGENETTE_ROWS = {"train": 9_469, "validation": 3_925}
SCALES = {"colab": {"imagenette": IMAGENETTE_ROWS},
          "full": {ds: grid.DATASET_ROWS[ds] for ds, _, _ in PAPER.datasets}}


rows = []
for scale, data in SCALES.items():
    for name in PAPER.backbones:
        for dataset, splits in data.items():
            images = sum(splits.values())
            gflop = architectures.loc["GFLOP / image", name]
            rows.append({
                "mode": scale, "backbone": name, "dataset": dataset, "images": images,
                "disk (GB)": images * architectures.loc["embedding d", name] * 4 / 1e9,
                here: st.costs.extraction_hours(images, gflop, DEVICE_FLOPS),
                **{gpu: st.costs.extraction_hours(images, gflop, tflops * 1e12)
                   for gpu, tflops in ASSUMED_TFLOPS.items()}})
extraction = pd.DataFrame(rows).set_index(["mode", "backbone", "dataset"])
print(f"Extraction: hours on this {PROCESSOR} at its measured rate, "
      "and (*) at an assumed\n"
      "12 TFLOP/s on a T4 and 130 on an A100; disk for float32 embeddings")


def hours(v):
    """Three significant digits, thousands separated."""
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


display(extraction.style.format({"images": "{:,}", "disk (GB)": "{:.2f}", here: hours,
                                 **{gpu: hours for gpu in ASSUMED_TFLOPS}})
        .set_table_attributes('class="dataframe"'))

# The SAE: the dry run's hours on this device; the GPU columns scale them by the same
# FLOP-rate ratio.
training = plan.set_index(["backbone", "dataset"])[["steps", "hours"]].rename(
    columns={"hours": here})
for gpu, tflops in ASSUMED_TFLOPS.items():
    training[gpu] = training[here] * DEVICE_FLOPS / (tflops * 1e12)
print(f"Training the k=64 baseline SAE ({PAPER.train['epochs']} epochs, "
      f"batch {PAPER.train['batch_size']}): hours,\n"
      "the GPU columns scaled from this device's by the ratio of FLOP rates")
display(training.style.format({"steps": "{:,}", here: hours,
                               **{gpu: hours for gpu in ASSUMED_TFLOPS}})
        .set_table_attributes('class="dataframe"'))

full = extraction.loc["full"]
print("full mode, one seed, the k=64 baseline: "
      f"{full['disk (GB)'].sum():.0f} GB of embeddings;\n"
      f"{full[T4].sum():.0f} T4-hours of extraction "
      f"+ {training[T4].sum():.1f} of training "
      f"(A100: {full[A100].sum():.1f} + {training[A100].sum():.2f})")
print(f"colab mode, Imagenette: {extraction.loc['colab'][T4].sum() * 60:.0f} "
      "T4-minutes of extraction for the three backbones")

# %%
fig, ax = plt.subplots(figsize=(9, 3.8))
labels = [f"{b}\n{d}" for b, d in full.index]
pos = np.arange(len(labels))
ax.barh(pos - 0.2, full[T4], height=0.4, color="C0",
        label="extraction (train + validation)")
ax.barh(pos + 0.2, training.loc[full.index, T4], height=0.4, color="C1",
        label="SAE training, k=64, 50 epochs")
ax.set_yticks(pos, labels, fontsize=8)
ax.invert_yaxis()
ax.set(xscale="log", xlabel="hours on a T4 at an assumed 12 TFLOP/s (log scale)",
       title="Full scale: extraction dominates "
             "(estimates scaled from measurements on this machine)")
ax.legend(loc="lower right", fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# Extraction costs one or two orders of magnitude more than training the SAE, and it is done once per
# backbone and data set, while the paper's comparison trains fifteen SAEs per seed on each cache ({doc}`07_scaling_up`
# prices that whole grid, and shows how to train on several GPUs). That is why the
# cache exists, and why it must survive interruptions. On a free T4 the full grid does not fit a
# session: run `full` on a larger GPU, and let `colab` mode show the same pipeline on Imagenette, a
# ten-class subset of ImageNet whose extraction takes minutes.
#
# ### The cells a GPU runs
#
# In `small` mode the next three cells do nothing: this is the code that runs on a GPU (colab or full mode).
#
# - `colab`: Imagenette (downloaded once from fast.ai, about 330 MB) through the three pretrained backbones, and
#   an SAE of 4,096 latents with $k$ = 32 on each (Imagenette has fewer than 10,000 training images).
# - `full`: ImageNet-1K and Open Images V7, the `paper` preset's SAE. ImageNet-1K is gated: log in with
#   `hf auth login` and accept its terms on the hub. Open Images V7 has no official Hugging Face release: set
#   `OPEN_IMAGES_REPO` and `OPEN_IMAGES_CLASSES` in the parameters cell. The hub streams ImageNet once per
#   backbone; pass `streaming=False` in its options to download it once instead (about 150 GB of disk).
#
# Both long steps resume after an interruption: extraction from its manifest, training from the checkpoint it
# writes every 1,000 steps (`TrainConfig.checkpoint_dir`). Rerun the cells after a disconnect; only the
# evaluation is computed again.

# %%
IMAGENETTE_URL = "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-320.tgz"
RUNS_DIR = cache_dir() / "runs" / "03_vision_backbones"
if MODE == "small":
    print("small mode: the real backbones are skipped\n"
          "(set SAE_TUTORIAL_MODE=colab or full on a GPU).")
else:
    if MODE == "colab":
        imagenette = (Path(IMAGENETTE_DIR) if IMAGENETTE_DIR
                      else cache_dir() / "imagenette2-320")
        if not imagenette.is_dir():
            archive = imagenette.parent / "imagenette2-320.tgz"
            imagenette.parent.mkdir(parents=True, exist_ok=True)
            urllib.request.urlretrieve(IMAGENETTE_URL, archive)
            with tarfile.open(archive) as tar:
                tar.extractall(imagenette.parent, filter="data")
        REAL_DATA = {"imagenette": ("image-folder", {"data_dir": str(imagenette)})}
        REAL_SAE = dict(n_latents=4096, k=32)
        # lr=None: the rule of the exercise above; a latent is dead after about 10
        # epochs without firing
        REAL_TRAIN = dict(batch_size=1024, epochs=100, dead_after=100_000)
    else:
        print("ImageNet-1K is gated: `hf auth login`, and accept its terms at "
              "https://huggingface.co/datasets/ILSVRC/imagenet-1k")
        REAL_DATA = {"imagenet-1k": ("imagenet-1k", {})}
        if OPEN_IMAGES_REPO:
            REAL_DATA["open-images-v7"] = ("open-images-v7",
                                           {"repo": OPEN_IMAGES_REPO,
                                            "classes": OPEN_IMAGES_CLASSES})
        else:
            print("Open Images V7 skipped: set OPEN_IMAGES_REPO and "
                  "OPEN_IMAGES_CLASSES in the parameters cell")
        REAL_SAE = dict(n_latents=PAPER.n_latents, k=64)
        # batch 2048, 50 epochs, lr 1e-4, dead after 10M samples
        REAL_TRAIN = dict(PAPER.train)
    # a no-op unless SAE_TUTORIAL_SHRINK is set (the Colab rehearsal, see How to run)
    REAL_SAE, REAL_TRAIN = st.book.shrink(REAL_SAE), st.book.shrink(REAL_TRAIN)
    suffix = "" if BACKBONE_WEIGHTS is None else f"--{BACKBONE_WEIGHTS}"
    print(f"{MODE}: backbones {list(PAPER.backbones)}, data {list(REAL_DATA)}, "
          f"SAE {REAL_SAE}, {REAL_TRAIN}")

# %% [markdown]
# Extraction: each backbone is loaded once (its pretrained weights come from the hub, 1 to 2 GB each) and
# embeds the training and validation splits of each data set into its own cache.

# %%
if MODE != "small":
    caches = {}
    for name in PAPER.backbones:
        real_backbone = st.backbones.get(name, weights=BACKBONE_WEIGHTS)
        print(f"{name}: {real_backbone.model_id}, weights {real_backbone.weights}")
        for key, (dataset, options) in REAL_DATA.items():
            for split in ("train", "validation"):
                out = cache_dir() / "embeddings" / f"{name}--{key}--{split}{suffix}"
                caches[name, key, split] = st.embed(real_backbone, dataset, split, out,
                                                    batch_size=256, limit=LIMIT,
                                                    device=DEVICE, **options)
        del real_backbone
        if DEVICE == "cuda":
            torch.cuda.empty_cache()

# %% [markdown]
# Training and evaluation, one SAE per backbone and data set, each with its method card and hub folder. The
# table compares $R^2$ and the Monosemanticity Score (MonoLoss's convention: dead latents count as 0) with the
# Top-k baselines MonoLoss reports for the same backbones {cite:p}`nasirisarvi2026monoloss`; our SigLIP2 is
# the 224-pixel model, theirs may differ.

# %%
MONOLOSS = {("clip-vit-l-14", "imagenet-1k"): (0.817, 0.469),
            ("clip-vit-l-14", "open-images-v7"): (0.758, 0.386),
            ("siglip2", "imagenet-1k"): (0.651, 0.594),
            ("siglip2", "open-images-v7"): (0.567, 0.548),
            ("vit-l-16", "imagenet-1k"): (0.809, 0.238),
            ("vit-l-16", "open-images-v7"): (0.702, 0.128)}


def load_normalised(out):
    """(x, labels) of a cache: rows L2-normalised as in grid.load_split; multi-label
    data as an (N, C) 0/1 matrix."""
    emb = st.load_embeddings(out)
    x = F.normalize(emb.x.float(), dim=1)                                   # (N, d)
    if emb.label_offsets is None:
        return x, emb.labels                                                # (N,)
    rows = torch.repeat_interleave(torch.arange(len(emb)), emb.label_offsets.diff())
    y = torch.zeros(len(emb), len(emb.classes), dtype=torch.uint8)         # (N, C)
    y[rows, emb.labels] = 1
    return x, y


if MODE != "small":
    real_rows = []
    for name in PAPER.backbones:
        for key in REAL_DATA:
            run_dir = RUNS_DIR / f"{name}--{key}{suffix}"
            x_tr, _ = load_normalised(caches[name, key, "train"])
            x_ev, y_ev = load_normalised(caches[name, key, "validation"])
            real_sae = st.TopKSAE(x_tr.shape[1], **REAL_SAE, seed=0).to(DEVICE)
            # a small local folder: one batch per epoch
            batch = min(REAL_TRAIN["batch_size"], len(x_tr))
            real_config = st.TrainConfig(**{**REAL_TRAIN, "batch_size": batch},
                                         checkpoint_dir=str(run_dir),
                                         checkpoint_every=1000)
            start = time.perf_counter()
            # resumes from run_dir
            real_history = st.train(real_sae, x_tr.to(DEVICE), real_config)
            seconds = time.perf_counter() - start
            real_report = st.metrics.evaluate(real_sae, x_ev, labels=y_ev,
                                              **PAPER.evaluate)
            card = st.method_card(real_sae, real_report, dict(
                name=f"ch3-{name}-{key}-topk-k{REAL_SAE['k']}{suffix}",
                **st.metrics.card_source(
                    st.load_embeddings(caches[name, key, "train"]).manifest["backbone"],
                    key, "train: train; metrics: validation"),
                train_config=real_config,
                steps=len(real_history["step"])), out_dir=run_dir)
            real_sae.save_pretrained(run_dir / "hub", card=card)
            reference = MONOLOSS.get((name, key), (np.nan, np.nan))
            real_rows.append({"backbone": name, "dataset": key, "train rows": len(x_tr),
                              "minutes": seconds / 60, "FVU": real_report["fvu"],
                              "R²": real_report["r2"], "R² (MonoLoss)": reference[0],
                              "MS": real_report["ms_mean_dead_zero"],
                              "MS (MonoLoss)": reference[1],
                              "dead fraction": real_report["dead_frac"],
                              "purity": real_report.get("purity", np.nan)})
    display(pd.DataFrame(real_rows).set_index(["backbone", "dataset"]).round(3))

# %% [markdown]
# ## Check your understanding
#
# ```{admonition} 1. Why extract embeddings once into a cache instead of running the backbone inside the SAE's training loop?
# :class: dropdown
# The backbone is frozen, so an image's embedding is the same at every epoch. The paper's SAEs train for 50
# epochs, and the comparison trains many SAEs per cache: computing embeddings once turns the dominant cost (the
# estimate above) from hundreds of passes into one.
# ```
#
# ```{admonition} 2. You call st.embed into a folder that holds a finished cache made with other backbone weights. What happens?
# :class: dropdown
# A `ValueError` that names what differs. The manifest records the backbone (model, weights, preprocessing,
# pooling), the data set and the dtype; a cache is resumed or reused only when all of them match, so
# embeddings of two models never mix in one cache.
# ```
#
# ```{admonition} 3. Shards are written atomically (temporary file, then rename). Why also store a hash of each?
# :class: dropdown
# The rename protects against a process that dies while writing. The hash protects against everything that
# happens later: a truncated copy, a disk error, a file replaced by hand or by another tool. Loading checks
# it, so a damaged shard fails with its name instead of silently training an SAE on wrong numbers.
# ```
#
# ```{admonition} 4. Why L2-normalise the embeddings before training?
# :class: dropdown
# Backbones produce embeddings of very different scales (even one backbone's norms vary several-fold across
# images). On the unit sphere, reconstruction errors, learning rates, $k$ and the regularizers' $\lambda$ mean
# the same for every backbone, and cosine similarity, the geometry CLIP-style models are trained for, is a
# dot product.
# ```
#
# ```{admonition} 5. At the paper's scale, what should you run first on a new GPU, before the grid?
# :class: dropdown
# An estimate: this chapter's cost cells measure the GPU's rate and give extraction and training hours, and
# the disk the embeddings need. Extraction dominates; run it once per backbone and data set, resumably, and
# only then train and compare SAEs on the caches.
# ```

# %% [markdown]
# ## Summary
#
# - A vision SAE reads frozen image embeddings. `st.embed` (or `python -m sae_tutorial embed`) computes them
#   once into a cache: shards written atomically, and a manifest with the backbone's and data set's identity
#   and a hash per shard.
# - A killed extraction loses at most the shard in flight; the rerun resumes at the first unlisted row, and
#   the result equals an uninterrupted run bit for bit (measured above). `st.load_embeddings` memory-maps the
#   shards, checks their hashes, and refuses unfinished or damaged caches.
# - As in MonoLoss, embeddings are L2-normalised. On the embedded default, a Top-k SAE with 1,024 latents and
#   $k$ = 16 trains in seconds on a CPU. Its latents are mostly class-pure, far above chance, and a linear probe
#   on its 16 codes comes within a few points of one on the full embedding. Its method card and a hub-ready
#   folder record all of it.
# - The same code runs the paper's setting on a GPU. Exact FLOP counts of the real architectures and measured
#   rates estimate the cost beforehand: extraction dominates, and the full grid needs a large GPU, not a free
#   Colab session.
#
# **Next:** chapter 4 evaluates interpretability: every metric of the report above, and the paper's comparison
# of the baseline with the two regularizers over several $k$ and seeds.
