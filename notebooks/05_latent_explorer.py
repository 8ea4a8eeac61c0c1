# ---
# jupyter:
#   jupytext:
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
#     figures: 4
# ---

# %% [markdown]
# # 5. Latent explorer
#
# [Open in Colab](https://colab.research.google.com/github/sae-tutorial/sae-tutorial/blob/main/notebooks/05_latent_explorer.ipynb) · [student notebook](https://colab.research.google.com/github/sae-tutorial/sae-tutorial/blob/main/student/05_latent_explorer.ipynb) (the exercises as stubs)
#
# **Prerequisites:** chapters 1, 3 and 4 (MS and purity). **Time:** about 60 minutes, of which exercises about 20.
#
# A metric such as the Monosemanticity Score condenses a whole dictionary into one number. To know what a
# single latent *means*, you have to look at it: the images that switch it on most, how strongly it fires across
# the data set, which classes it prefers, and which other latents point the same way. This chapter builds that view
# for two SAEs trained on the same embeddings, a plain Top-k SAE and one trained with the paper's ℓ1/ℓ2
# regularizer {cite:p}`jacquier2026beyond`, and puts them side by side.

# %% tags=["remove-cell"]
# On Colab, install the companion library (the book itself is built with it already installed).
import subprocess
import sys

if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "sae-tutorial[colab] @ git+https://github.com/sae-tutorial/sae-tutorial@main"], check=True)

# %% tags=["parameters"]
# Scale of this chapter: SAE_TUTORIAL_MODE = auto | small | colab | full
# (see "How to run this book").
import pprint

import sae_tutorial as st
import torch

# "small" on a CPU (one torch thread), "colab" on a GPU (auto), or what you set
MODE, DEVICE = st.book.setup()
# colab: a hub repository of vision SAEs (or a local copy of one)
PUBLIC_REPO = "mateuszpach/sae-for-vlm"
if MODE == "small":
    SIZES = dict(n_latents=512, k=8, epochs=3, batch_size=512, top_n=50, n_cards=12)
else:
    # A GPU: the same embedded Fashion-MNIST backbone, a 4x wider dictionary trained
    # longer. The explorer's code is the same for CLIP or SigLIP2 embeddings of ImageNet
    # (chapter 3 extracts them).
    SIZES = dict(n_latents=2048, k=16, epochs=10, batch_size=1024, top_n=50, n_cards=12)
# a no-op unless SAE_TUTORIAL_SHRINK is set (the Colab rehearsal, see How to run)
SIZES = st.book.shrink(SIZES)
# λ_rat: the embedded grid's choice on validation rows (chapter 4), as in every chapter
LAMBDA_RATIO = st.experiments.lambdas("embedded")["lambda_ratio"]
print(f"mode={MODE}, device={DEVICE}, λ_rat = {LAMBDA_RATIO:g}, sizes:")
pprint.pprint(SIZES, width=88, sort_dicts=False)

# %% [markdown]
# ## What you will learn
#
# By the end of this chapter you will be able to:
#
# 1. read a latent's *card*: its top images, activation histogram, class mix, most similar decoder rows and
#    weakly-firing contrast images, and say what the latent responds to;
# 2. compute those statistics for every latent in one streaming pass over the data, and save them beside the SAE;
# 3. use the interactive explorer to sort latents by frequency, MS, purity or class, search for a class, and move
#    across a UMAP map of the dictionary;
# 4. compare a baseline Top-k SAE with an ℓ1/ℓ2-regularized one latent by latent, and connect the summary metrics
#    of chapter 4 to what the images show;
# 5. load an SAE trained by another library (sparsify here; SAELens, dictionary_learning, overcomplete too), check
#    that its maths came across exactly, and explore it with the same tools.
#
# You need chapter 1 (what a Top-k SAE is). The regularizer is introduced in chapter 2 and the metrics in
# chapter 4; this chapter only uses them. Everything runs on a laptop CPU in one to two minutes.

# %%
import json
import re
import time
from pathlib import Path

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display
from sae_tutorial.datasets import cache_dir

# %% [markdown]
# ## Embeddings and images
#
# The book's embedded default: Fashion-MNIST (70,000 grayscale 28x28 images of clothing in 10 classes), embedded by
# a small CNN that the library trains once on the training split and caches (`backbone="embedded"`). `st.embed`
# writes the 128-d embeddings of a split into a resumable on-disk cache, and `st.load_embeddings` maps them back.
# The SAEs learn from the training split; we explore them on the 10,000 test images.

# %%
start = time.perf_counter()
train_emb = st.load_embeddings(st.embed("embedded", "fashion-mnist", "train",
                                        progress=False))
test_emb = st.load_embeddings(st.embed("embedded", "fashion-mnist", "test",
                                       progress=False))
# (60000, 128), (10000, 128)
x_train, x_test = train_emb.x.float().clone(), test_emb.x.float().clone()
# (10000,) class ids, 10 names
labels, classes = test_emb.labels, test_emb.classes
# (10000, 28, 28) uint8
images, image_labels = st.datasets.fashion_mnist_arrays("test")
assert np.array_equal(image_labels, labels.numpy()), (
    "embeddings and images must be in the same order")
print(f"train {tuple(x_train.shape)}, test {tuple(x_test.shape)} embeddings in "
      f"{time.perf_counter() - start:.1f} s")
print(f"backbone: {train_emb.manifest['backbone']['pooling']}")

# %% [markdown]
# ## Two SAEs to compare
#
# Both are Top-k SAEs with the same width, budget, seed and data order. The second adds the paper's scale-invariant
# ℓ1/ℓ2 penalty on the pre-activations of the batch-active units (chapter 2), with $\lambda_\text{rat}$
# as the embedded grid chose it on validation rows (chapter 4; `st.experiments.lambdas`, printed above):
#
# $$
# R_\text{rat} = \frac{1}{B}\sum_b \frac{\lVert \varphi(h_{b,A}) \rVert_1}{\lVert \varphi(h_{b,A}) \rVert_2 + \varepsilon}
# $$

# %%
S = SIZES
SAE_DIR = cache_dir() / "explorer" / "05_latent_explorer"
MODELS = {"baseline Top-k": 0.0, "Top-k + ℓ1/ℓ2": LAMBDA_RATIO}


def train_sae(lambda_ratio):
    ("A Top-k SAE of this chapter's size trained on the training embeddings; "
     "returns (sae, config, history).")
    sae = st.TopKSAE(x_train.shape[1], S["n_latents"], S["k"], seed=0).to(DEVICE)
    config = st.TrainConfig(batch_size=S["batch_size"], epochs=S["epochs"],
                            lambda_ratio=lambda_ratio, progress=False)
    history = st.train(sae, x_train, config)
    return sae.cpu().eval(), config, history


saes, configs, histories, paths = {}, {}, {}, {}
for name, lam in MODELS.items():
    start = time.perf_counter()
    saes[name], configs[name], histories[name] = train_sae(lam)
    paths[name] = saes[name].save(
        SAE_DIR / f"{'baseline' if lam == 0 else 'l1l2'}.safetensors")
    print(f"{name}: {len(histories[name]['step'])} steps in "
          f"{time.perf_counter() - start:.1f} s, "
          f"final training FVU {histories[name]['fvu'][-1]:.3f}")

# %% [markdown]
# ## Precompute once
#
# A view of one latent needs its strongest images among all $N$ test images. Scanning the codes again for every
# click would cost $O(N \cdot m)$ per selection; `st.explorer.precompute` instead reads the codes once, chunk by
# chunk, and keeps for every latent only what the view shows: memory $O(m \cdot \text{top\_n})$, however large $N$
# is. The codes are never held in memory at once: `st.explorer.encode(sae, x)` yields them a chunk at a time.

# %%
import importlib

# the module's docstring (st.explorer.precompute is the function it holds)
print(importlib.import_module("sae_tutorial.explorer.precompute").__doc__)

# %% [markdown]
# The contrast images are a uniform random sample of the images a latent fires on, drawn in the same single pass
# by reservoir sampling; how, with the code, is in the appendix, {ref}`under-the-hood-reservoir`.
#
# We compute the statistics of both SAEs on the test set, with the SAE's input as the embedding of the
# Monosemanticity Score, and save them beside each checkpoint (`<name>.explorer.safetensors`, written atomically,
# with a content hash and the hash of the SAE they belong to).

# %%
stats = {}
for name, sae in saes.items():
    start = time.perf_counter()
    computed = st.explorer.precompute(st.explorer.encode(sae, x_test), labels,
                                      embeddings=x_test, top_n=S["top_n"],
                                      class_names=classes)
    computed.save(st.explorer.stats_path(paths[name]), sae)
    # checks hash and SAE
    stats[name] = st.explorer.load_stats(st.explorer.stats_path(paths[name]), sae)
    print(f"{name}: statistics of {stats[name].n_latents} latents over "
          f"{stats[name].n_samples:,} images in {time.perf_counter() - start:.2f} s\n"
          f"  -> {st.explorer.stats_path(paths[name]).name}")

# %% [markdown]
# ## Reading a card
#
# Everything the explorer shows about a latent fits on one card. Here are the cards of four latents of the
# baseline SAE: `st.explorer.latent_cards` picks the latents with the highest MS among those that fire on at least
# `top_n` images, taking the best latent of each dominant class first so that one class cannot fill the figure.

# %%
BASE, REG = MODELS
fig = st.explorer.latent_cards(stats[BASE], images, labels, k=4, sae=saes[BASE],
                               title=f"{BASE}: four latents")
plt.show()

# %% [markdown]
# From top to bottom, a card shows:
#
# - **the title**: the latent's index and its dominant class, the class holding the largest share of activation
#   among its top images;
# - **the statistics line**: how often it fires (its frequency), its mean and maximum activation, its MS and its
#   purity (the fraction of its top 50 images in the most common class);
# - **the top images**, strongest first, each framed in the colour of its class with its activation below;
# - **the activation histogram** over every test image where it fires (square-root counts, so rare bins show);
# - **the class mix** of its top images;
# - **the most similar decoder rows**: the latents whose dictionary directions are closest to this one (cosine);
# - **weak activations**: a few random images where it fires only weakly. Top images show what excites a latent
#   most; these show what else it fires on. A latent whose weak images are the same kind of clothing is
#   consistent; one whose weak images are a mix is more polysemantic than its top images suggest.

# %% [markdown]
# ## The two SAEs in numbers
#
# Chapter 4 defines these metrics; here we read them off the precomputed statistics (means over latents that fire).

# %%
def summary_row(name):
    s, sae = stats[name], saes[name]
    with torch.no_grad():
        fvu = st.metrics.fvu(x_test, sae(x_test).x_hat)
    return {"SAE": name, "test FVU": fvu, "dead latents": int((~s.alive).sum()),
            "mean MS": st.metrics.alive_mean(s.ms),
            "mean purity": st.metrics.alive_mean(s.purity),
            "latents with purity ≥ 0.9": int((s.purity >= 0.9).sum()),
            "median frequency": float(s.frequency[s.alive].median())}


numbers = pd.DataFrame([summary_row(name) for name in MODELS]).set_index("SAE")
chance = st.metrics.purity_chance(labels, S["top_n"])
print(f"chance level of purity (random top-{S['top_n']} images): {chance:.3f}")
numbers.style.format(precision=3)

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
for i, name in enumerate(MODELS):
    s = stats[name]
    alive = s.alive
    axes[0].hist(s.ms[alive & ~s.ms.isnan()], bins=30, range=(0, 1), alpha=0.6,
                 color=f"C{i}", label=name)
    axes[1].hist(s.purity[alive], bins=30, range=(0, 1), alpha=0.6, color=f"C{i}",
                 label=name)
    axes[2].scatter(s.frequency[alive], s.ms[alive], s=6, alpha=0.6, color=f"C{i}",
                    label=name)
axes[0].set(xlabel="Monosemanticity Score", ylabel="latents",
            title="MS of live latents")
axes[1].axvline(chance, color="k", ls="--", lw=1, label="chance")
axes[1].set(xlabel="purity of the top 50 images", title="Class purity")
axes[2].set(xscale="log", xlabel="frequency (fraction of test images, log scale)",
            ylabel="MS", title="MS against frequency")
for ax in axes:
    ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# Read the table and the figure together. The ℓ1/ℓ2 SAE reconstructs a little worse (higher FVU) but its live
# latents are more specific: its MS distribution sits further right and more of its latents are pure. The right
# panel plots each live latent's MS against how often it fires. The widest spread is on the left, among latents
# that fire on a handful of test images: with so few images MS is a noisy estimate (and undefined for a latent
# that fires once), which is why `latent_cards` only picks latents with at least 50 images. The regularized SAE's
# most monosemantic latents:

# %%
fig = st.explorer.latent_cards(stats[REG], images, labels, k=4, sae=saes[REG],
                               title=f"{REG}: four latents")
plt.show()

# %% [markdown]
# ## The explorers, side by side
#
# `st.explorer.LatentExplorer(sae, stats_or_codes, images, labels)` is an ipywidgets panel. In Jupyter or Colab it
# is live:
#
# - **sort by** orders the latents by frequency, MS, purity or dominant class, and the **rank** slider walks down
#   that order; **latent** jumps to an index;
# - the **card** of the selected latent is redrawn on every change (a few tens of milliseconds);
# - clicking an entry of **most similar decoder rows** selects that latent;
# - **class search** lists the latents whose top images are most in a class; click one to open it;
# - the **UMAP map** places every decoder row in the plane; moving the crosshair sliders selects the nearest latent,
#   and selecting a latent elsewhere moves the crosshair onto it.
#
# ```{note}
# This page is static: there is no Python behind it, so these controls show the explorer's first view and do not
# react. Run the chapter on Colab (link at the top) to use them; the card deck in the next section works here too.
# ```
#
# The map is a UMAP embedding {cite:p}`mcinnes2018umap` of the decoder rows, computed with umap-learn,
# cosine metric, seeded. Its first call in a new Python process compiles some of umap-learn's kernels (about ten
# seconds on a CPU).

# %%
start = time.perf_counter()
umap_coords = {name: st.explorer.decoder_umap(saes[name]) for name in MODELS}
print(f"UMAP of {2 * S['n_latents']} decoder rows in "
      f"{time.perf_counter() - start:.1f} s")
explorers = {name: st.explorer.LatentExplorer(saes[name],
                                               st.explorer.stats_path(paths[name]),
                                               images, labels, umap=umap_coords[name],
                                               title=name)
             for name in MODELS}
widgets.HBox(list(explorers.values()), layout=widgets.Layout(flex_flow="row wrap"))

# %% [markdown]
# ## A static tour: the card deck
#
# `st.explorer.card_deck` renders the cards of each explorer's twelve most interesting latents (by MS, one class at
# a time) into the page and links one slider to all of them in the browser. Drag the slider: the
# left column is the baseline's $n$-th card, the right one the regularized SAE's.

# %%
card_deck = st.explorer.card_deck(list(explorers.values()), n_cards=S["n_cards"],
                                  titles=list(MODELS))
card_deck

# %% [markdown]
# ## The dictionary as a map
#
# The map in each explorer embeds the decoder rows, the directions the SAE writes back into embedding space, with
# UMAP; colours show each latent's dominant class. The static version, for both SAEs:

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
for ax, name in zip(axes, MODELS):
    s, xy = stats[name], umap_coords[name]
    ax.scatter(*xy[~s.alive.numpy()].T, s=4, color="0.85", label="dead")
    for c, class_name in enumerate(classes):
        mine = (s.dominant == c).numpy()
        ax.scatter(*xy[mine].T, s=9,
                   color=np.array(st.explorer.cards.class_color(c)) / 255,
                   label=class_name)
    ax.set(xticks=[], yticks=[],
           title=f"{name}: decoder rows (UMAP), by dominant class")
axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5),
               markerscale=1.5)
fig.tight_layout()
plt.show()

# %% [markdown]
# Latents with the same dominant class tend to share regions of the map, but they do not form separate islands, and
# neighbours on the map often belong to different classes. The cards tell why: the most similar decoder rows have
# cosines well below 1 (the next cell prints the medians). At this size the dictionary is close to orthogonal and no
# two latents duplicate each other. In much larger dictionaries, pairs of close rows appear that split one concept
# into variants, *feature splitting* {cite:p}`bricken2023monosemanticity`. Grey dots are dead latents: their rows
# still exist, but no test image switches them on.

# %% [markdown]
# ## What to look at
#
# Open the explorers (on Colab) and work through these questions; the cell below prints the numbers they rely on.
#
# 1. Sort by **frequency**. What do the most frequent latents respond to? How do their MS and purity compare with
#    those of a typical latent?
# 2. Search the class **Shirt**, the class the backbone confuses most (with T-shirts, pullovers and coats). Does
#    either SAE have latents whose top images are all shirts? What do their weak activations show?
# 3. Pick a latent with purity 1 and look at its **most similar decoder rows**. Do they share its class?
# 4. Find a latent whose top images are one class but whose **weak activations** include other classes. Is it a
#    class detector, or a detector of something several classes share (a shape, a texture, brightness)?

# %%
def class_report(name):
    ("Per class: live latents whose dominant class it is, "
     "and how many of those have purity 1.")
    s = stats[name]
    dominant, pure = s.dominant[s.alive], s.purity[s.alive]
    return {c: f"{int((dominant == i).sum())} "
               f"({int(((dominant == i) & (pure == 1)).sum())} pure)"
            for i, c in enumerate(classes)}


def nearest_rows(name):
    ("Per live latent: the cosine of the most similar other live decoder row, "
     "and that latent.")
    s = stats[name]
    W = torch.nn.functional.normalize(saes[name].W_dec.detach(), dim=1)
    cos = W @ W.T                                                           # (m, m)
    cos.fill_diagonal_(-2)
    cos[:, ~s.alive] = -2
    return cos.max(1)


display(pd.DataFrame({name: class_report(name) for name in MODELS})
        .rename_axis("dominant class"))
for name in MODELS:
    s = stats[name]
    top3 = s.order("frequency")[:3].tolist()
    print(f"{name}:\n  the 3 most frequent latents {top3} fire on "
          f"{', '.join(f'{100 * float(s.frequency[j]):.0f}%' for j in top3)} "
          "of images;\n"
          f"  MS {', '.join(f'{float(s.ms[j]):.2f}' for j in top3)} "
          f"(median {float(s.ms.nanmedian()):.2f}), purity "
          f"{', '.join(f'{float(s.purity[j]):.2f}' for j in top3)} "
          f"(median {float(s.purity.nanmedian()):.2f})")
    cos, nearest = nearest_rows(name)
    pure = s.alive & (s.purity == 1)
    same = (s.dominant[nearest] == s.dominant)[pure].float().mean()
    weak = s.weak_rows[:, pure]
    mixed = ((labels[weak.clamp_min(0)] != s.dominant[pure])
             & (weak >= 0)).any(0).float().mean()
    print(f"  most similar decoder row: median cosine "
          f"{float(cos[s.alive].median()):.2f}, "
          f"largest {float(cos[s.alive].max()):.2f};\n"
          f"  it shares the dominant class of {100 * float(same):.0f}% "
          f"of the {int(pure.sum())} pure latents")
    print(f"  pure latents with a weak activation on another class: "
          f"{100 * float(mixed):.0f}%")

# %% [markdown]
# ```{admonition} What you should find
# :class: dropdown
# 1. A latent that fires on a sixth of all images cannot be about one rare detail: it detects a common kind of
#    garment or a property several classes share. Compare the printed MS and purity with the medians: where they
#    are lower, the card's class mix shows which classes it merges.
# 2. The table counts, per class, the live latents whose dominant class it is and how many are *pure* (all top 50
#    images of that class). Both SAEs have pure *Shirt* latents, even though shirts are the class the backbone
#    confuses most; the two SAEs spend very different numbers of latents on it. Weak activations are where a
#    latent's confusions would show; for most pure latents they stay in the class.
# 3. Less often than you might expect: the printed share is well below one half, and the cosines are small. In
#    these SAEs the nearest decoder row is rarely a variant of the same concept.
# 4. Such latents exist in both SAEs (the last printed line counts them among the pure latents). Their weak images
#    reveal what else the latent responds to. This is why top images alone can overstate how monosemantic a
#    latent is, and why MS weighs every image by its activation.
# ```

# %% [markdown]
# ## Exercise: top images by hand
#
# ```{exercise} Top images by hand
# :label: ex-top-images
#
# *Exercise 5.1 · difficulty ●○○ · importance ●●○ · about 10 minutes*
#
# Write `my_top_images(codes, j, n)`: given dense codes of shape `(N, m)` and a latent `j`, return a 1-D tensor of
# the row indices of the `n` images with the largest activation of latent `j`, strongest first, *among the images
# where it fires* (activation > 0). The check compares your answer with the precomputed `top_rows` on the
# strongest and on the rarest latents.
# ```
#
# ````{solution} ex-top-images
# :class: dropdown
#
# ```python
# def my_top_images(codes, j, n):
#     a = codes[:, j]                          # (N,) activations of latent j
#     rows = a.argsort(descending=True)[:n]    # the n largest, strongest first
#     return rows[a[rows] > 0]                 # only images where it fires
# ```
#
# The last line matters for rare latents: a latent that fires on 3 images has 3 top images, not `n`. Padding with
# images where it is zero would put unrelated pictures on its card. `precompute` gets the same answer without the
# dense `(N, m)` matrix: it keeps a running top-`n` per latent while streaming the codes.
# ````

# %% tags=["exercise"]
def my_top_images(codes, j, n):
    ("Row indices of the n images where latent j of codes (N, m) fires most, "
     "strongest first.")
    a = codes[:, j]
    rows = a.argsort(descending=True)[:n]
    return rows[a[rows] > 0]


# %%
with torch.no_grad():
    # (10000, m) dense
    codes_base = torch.cat(list(st.explorer.encode(saes[BASE], x_test)))
N_TOP = 15

st.exercises.check_top_images(my_top_images)

# %% [markdown]
# The check on a plausible wrong answer, which takes the top `n` without asking whether the latent fires:

# %%
def my_top_images_wrong(codes, j, n):
    return codes[:, j].topk(n).indices


try:
    st.exercises.check_top_images(my_top_images_wrong)
except AssertionError as error:
    st.book.print_wrapped("The check caught it:", error)

# %% [markdown]
# ## Exercise: similar decoder rows by hand
#
# ```{exercise} Similar decoder rows
# :label: ex-similar
#
# *Exercise 5.2 · difficulty ●●○ · importance ●●○ · about 10 minutes*
#
# Write `my_similar(W_dec, j, n)`: the indices of the `n` latents whose decoder rows have the largest cosine
# similarity with row `j` of `W_dec` (shape `(m, d)`), most similar first, never `j` itself. Then answer: why is
# a high cosine between two decoder rows a sign of *feature splitting* rather than of a wasted latent?
# ```
#
# ````{solution} ex-similar
# :class: dropdown
#
# ```python
# def my_similar(W_dec, j, n):
#     # unit rows (the SAE keeps them so; be safe)
#     W = torch.nn.functional.normalize(W_dec, dim=1)
#     cos = W @ W[j]                     # (m,) cosine with row j
#     cos[j] = -float("inf")             # a row is always most similar to itself
#     return cos.topk(n).indices
# ```
#
# Two latents with close decoder rows write almost the same direction back into the embedding, but their
# *encoders* can select different inputs. An SAE that keeps both spends two latents on a distinction within one
# concept (two sub-types of bag, say) instead of wasting one: this is feature splitting, which grows with the
# size of the dictionary {cite:p}`bricken2023monosemanticity`. In this chapter's small SAEs the closest rows are
# far from parallel (cosines printed in "What to look at").
# ````

# %% tags=["exercise"]
def my_similar(W_dec, j, n):
    ("The n latents whose rows of W_dec (m, d) are most cosine-similar to row j, "
     "most similar first, not j.")
    W = torch.nn.functional.normalize(W_dec, dim=1)
    cos = W @ W[j]
    cos[j] = -float("inf")
    return cos.topk(n).indices


# %%
st.exercises.check_similar(my_similar)

# %%
def my_similar_wrong(W_dec, j, n):
    # forgets that row j is most similar to itself
    return (W_dec @ W_dec[j]).topk(n).indices


try:
    st.exercises.check_similar(my_similar_wrong)
except AssertionError as error:
    st.book.print_wrapped("The check caught it:", error)

# %% [markdown]
# ## Method cards
#
# Each SAE of this chapter gets its method card. Its report is that of `st.metrics.evaluate` on the test embeddings
# (reconstruction, dead latents, MS, k-robustness, CKNNA), completed with the purity in the explorer's statistics
# (top 50 images, as in chapter 4). The linear probes are chapter 4's subject, and cost more than this whole chapter
# on a CPU: they are left out here.

# %%
CARD_DIR = cache_dir() / "method_cards" / "05_latent_explorer"
backbone = train_emb.manifest["backbone"]
SPLITS = ("train (60,000 images) for training; "
          "test (10,000) for metrics and the explorer")
cards = {}
for name, sae in saes.items():
    s = stats[name]
    report = {**st.metrics.evaluate(sae, x_test), "top_n": S["top_n"],
              "purity": st.metrics.alive_mean(s.purity),
              "purity_weighted": st.metrics.alive_mean(s.purity_weighted),
              "purity_chance": chance}
    provenance = dict(
        name=f"ch5-{paths[name].stem}",
        **st.metrics.card_source(backbone, "fashion-mnist", SPLITS,
                                 preprocessing=st.metrics.report.AS_STORED),
        train_config=configs[name], steps=len(histories[name]["step"]),
        notes=f"{name}; explorer statistics in "
              f"{st.explorer.stats_path(paths[name]).name}")
    json_path, md_path = st.method_card(sae, report, provenance, out_dir=CARD_DIR)
    cards[name] = (json.loads(json_path.read_text()), md_path)

pd.DataFrame([{"card": c["name"], "regularizer": c["training"]["regularizer"],
               "λ_rat": c["training"]["lambda_ratio"], "FVU": c["metrics"]["fvu"],
               "dead": c["metrics"]["dead"], "MS (mean)": c["metrics"]["ms_mean"],
               "purity": c["metrics"]["purity"], "CKNNA": c["metrics"]["cknna"]}
              for c, _ in cards.values()]).set_index("card").style.format(precision=3)

# %% [markdown]
# The full cards (click to show), with their headings demoted by three levels to sit inside this page:

# %% tags=["hide-output"] mystnb={"markdown_format": "gfm"}
for name, (_, md_path) in cards.items():
    display(Markdown(re.sub(r"^(#+) ", r"###\1 ", md_path.read_text(),
                            flags=re.MULTILINE)))
print(f"JSON and Markdown cards written to\n  {CARD_DIR}")

# %% [markdown]
# ## An SAE from another library
#
# Everything above works on SAEs that other libraries trained. `st.load` reads the files of EleutherAI's
# sparsify, SAELens, dictionary_learning and overcomplete, detects which one wrote them, and rebuilds the SAE in
# this library with that library's exact maths: where the pre-encoder bias is subtracted, how decoder norms enter,
# which activation and threshold it uses, in the file's dtype. What it cannot express exactly (a JumpReLU with
# per-latent thresholds, a transcoder, a deeper encoder, ...) it refuses with an error naming what is missing,
# never with an approximation. The SAE it returns remembers where it came from (`sae.provenance`), and its
# checkpoint and method card carry that record.
#
# Here sparsify trains a Top-k SAE of the same width and budget on the same training embeddings, with its own
# `SparseCoder` and its own training rules (decoder rows re-normalised before each step, the gradient along each
# row removed, the b_dec initialised at the data mean, the FVU loss, no AuxK, which is sparsify's default), and
# writes it with its own `save_to_disk`. sparsify trains language-model SAEs from a model's hooks; for cached
# embeddings its training step is the few lines below.

# %%
import os

if DEVICE == "cpu":
    # sparsify's Triton decoder needs a GPU
    os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")
import sparsify

SPARSIFY_DIR = SAE_DIR / "sparsify-topk"
start = time.perf_counter()
torch.manual_seed(0)
coder = sparsify.SparseCoder(
    x_train.shape[1], sparsify.SparseCoderConfig(num_latents=S["n_latents"], k=S["k"]),
    device=DEVICE)
xs = x_train.to(DEVICE)
coder.b_dec.data = xs.mean(0)
# sparsify's Adam learning-rate rule
sparsify_lr = 2e-4 / (coder.num_latents / 2**14) ** 0.5
opt = torch.optim.Adam(coder.parameters(), lr=sparsify_lr)
order = torch.Generator().manual_seed(0)
for epoch in range(S["epochs"]):
    for idx in torch.randperm(len(xs), generator=order).split(S["batch_size"]):
        coder.set_decoder_norm_to_unit_norm()
        coder(xs[idx.to(DEVICE)]).fvu.backward()
        coder.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
coder = coder.cpu()
coder.save_to_disk(SPARSIFY_DIR)
print(f"sparsify {sparsify.__version__}: trained in "
      f"{time.perf_counter() - start:.1f} s, "
      f"files {sorted(p.name for p in SPARSIFY_DIR.iterdir())}")

# %% [markdown]
# `st.load` recognises the folder (`cfg.json` + `sae.safetensors`), maps sparsify's
# $z = \mathrm{TopK}_k(\mathrm{ReLU}(W_\text{enc}(x - b_\text{dec}) + b_\text{enc}))$ onto our `TopKSAE` and keeps
# sparsify's configuration in the provenance. The proof that nothing was approximated is to run both on the test
# embeddings:

# %%
foreign = st.load(SPARSIFY_DIR)
print(f"st.interop.detect: {st.interop.detect(SPARSIFY_DIR)} -> "
      f"{type(foreign).__name__} {foreign.config()}")
shown = {key: value for key, value in foreign.provenance.items() if key != "config"}
shown["source"] = f"<cache>/{Path(shown['source']).relative_to(cache_dir())}"
pprint.pprint(shown, width=88, sort_dicts=False)
with torch.no_grad():
    theirs = coder.encode(x_test)
    their_codes = torch.zeros(len(x_test), coder.num_latents).scatter(
        1, theirs.top_indices, theirs.top_acts)
    their_x_hat = coder.decode(theirs.top_acts, theirs.top_indices)
    our_codes = foreign.encode(x_test)
    for what, ours, ref in (("codes", our_codes, their_codes),
                            ("reconstruction", foreign.decode(our_codes), their_x_hat)):
        print(f"{what}: max |ours - sparsify| / max |sparsify| = "
              f"{float((ours - ref).abs().max() / ref.abs().max()):.1e}")

# %% [markdown]
# From here on it is an SAE like ours: its statistics, its explorer next to the baseline's (same width, same $k$,
# same data; different initialisation, optimizer and training rules), and its method card.

# %%
SPARSIFY = "sparsify Top-k"
# our checkpoint, provenance included
foreign_path = foreign.save(SAE_DIR / "sparsify.safetensors")
foreign_stats = st.explorer.precompute(st.explorer.encode(foreign, x_test), labels,
                                       embeddings=x_test, top_n=S["top_n"],
                                       class_names=classes)
foreign_stats.save(st.explorer.stats_path(foreign_path), foreign)
foreign_explorer = st.explorer.LatentExplorer(foreign,
                                              st.explorer.stats_path(foreign_path),
                                              images, labels,
                                              umap=st.explorer.decoder_umap(foreign),
                                              title=SPARSIFY)
widgets.HBox([explorers[BASE], foreign_explorer],
             layout=widgets.Layout(flex_flow="row wrap"))

# %%
fig = st.explorer.latent_cards(foreign_stats, images, labels, k=4, sae=foreign,
                               title=f"{SPARSIFY}: four latents")
plt.show()

# %% [markdown]
# Its method card says where it came from: the `Library` section names the library, class, file layout and path,
# and what the import changed. Here nothing: sparsify's maths is ours and its weights are kept verbatim. The one
# note is that sparsify re-normalises decoder rows *before* each step, so after its last step they are slightly
# off the unit sphere (by the amount printed above); they are kept as they are, so the maths stays exact.

# %%
report = {**st.metrics.evaluate(foreign, x_test), "top_n": S["top_n"],
          "purity": st.metrics.alive_mean(foreign_stats.purity),
          "purity_weighted": st.metrics.alive_mean(foreign_stats.purity_weighted),
          "purity_chance": chance}
provenance = dict(
    name="ch5-sparsify-topk",
    **st.metrics.card_source(backbone, "fashion-mnist", SPLITS,
                             preprocessing=st.metrics.report.AS_STORED),
    train_config=dict(batch_size=S["batch_size"], epochs=S["epochs"], lr=sparsify_lr,
                      seed=0, auxk_alpha=0.0, optimizer="Adam",
                      trainer=f"sparsify {sparsify.__version__} SparseCoder"),
    steps=S["epochs"] * -(-len(x_train) // S["batch_size"]),
    notes="trained by sparsify in this chapter, loaded with st.load")
json_path, md_path = st.method_card(foreign, report, provenance, out_dir=CARD_DIR)
cards[SPARSIFY] = (json.loads(json_path.read_text()), md_path)
(pd.DataFrame([{"card": c["name"],
                "trained by": c["library"].get("imported_from",
                                               "sae_tutorial").split(":")[0],
                "FVU": c["metrics"]["fvu"], "dead": c["metrics"]["dead"],
                "MS (mean)": c["metrics"]["ms_mean"],
                "purity": c["metrics"]["purity"], "CKNNA": c["metrics"]["cknna"]}
               for c, _ in (cards[BASE], cards[SPARSIFY])])
 .set_index("card").style.format(precision=3))

# %% tags=["hide-output"] mystnb={"markdown_format": "gfm"}
display(Markdown(re.sub(r"^(#+) ", r"###\1 ", md_path.read_text(),
                        flags=re.MULTILINE)))

# %% [markdown]
# The other direction works too: `sae.save_as(path, library="sparsify")` writes one of our Top-k SAEs as a folder
# sparsify's `SparseCoder.load_from_disk` reads with the same maths, and `library="saelens"` writes SAELens's layout
# (Top-k, BatchTopK as SAELens saves it, ReLU). `st.interop.SAEBenchAdapter(sae)` presents any of our SAEs through
# SAEBench's custom-SAE interface.
#
# ### On Colab: a public vision SAE from the hub
#
# Pach et al. (2025), whose Monosemanticity Score chapter 4 uses, released BatchTopK and Matryoshka BatchTopK SAEs
# trained with dictionary_learning on CLIP's vision encoder. `st.interop.from_hub` lists the repository, downloads
# the two files of one SAE (`ae.pt` and `config.json`; the first folder in name order unless you pass `subfolder=`)
# and loads it. It needs the network, so the book build skips this cell; the tests run the same function on a local
# folder with the same layout. Its inputs are CLIP activations of the layer its config names, not this chapter's
# embeddings: to explore it, extract those activations with chapter 3's tools and use the cells above.

# %%
if MODE != "small":
    public = st.interop.from_hub(PUBLIC_REPO)
    trainer_cfg = public.provenance["config"].get("trainer", {})
    print(f"{PUBLIC_REPO}: {public.provenance['foreign_class']} -> "
          f"{type(public).__name__} {public.config()}")
    print({key: trainer_cfg.get(key)
           for key in ("lm_name", "layer", "submodule_name", "k", "dict_size")})
    print("notes:", public.provenance["notes"], "| rewrites:",
          public.provenance["rewrites"])
    print("SAEBench decoder-norm check:",
          st.interop.SAEBenchAdapter(public).check_decoder_norms())

# %% [markdown]
# ## Check your understanding
#
# ```{admonition} 1. Why does the explorer precompute its statistics instead of computing them on each click?
# :class: dropdown
# Finding a latent's top images needs its activation on every image: $O(N)$ per latent, $O(N \cdot m)$ to read
# the codes. One streaming pass keeps only $O(m \cdot \text{top\_n})$ numbers, after which a click costs the time
# to draw one card. At ImageNet scale ($N$ in the millions, $m = 16{,}384$) the codes do not even fit in memory.
# ```
#
# ```{admonition} 2. A latent has purity 1 and MS 0.5. How can both be true?
# :class: dropdown
# Purity looks only at the top 50 images and their labels; MS weighs *every* image by its activation and compares
# images by their embeddings. The top images may all be sneakers while the many weak activations spread over
# sandals and boots, or the sneakers themselves may be varied in the embedding space. The card's weak images and
# histogram tell which.
# ```
#
# ```{admonition} 3. Why are dead latents grey on the map, and why do they still have a position?
# :class: dropdown
# The map embeds decoder rows, which exist for every latent. A dead latent never fires on the test set, so it has
# no top images, no dominant class and no MS: only its direction.
# ```
#
# ```{admonition} 4. Why can a ReLU SAE with decoder rows of any length be loaded exactly, but not a Top-k SAE?
# :class: dropdown
# A ReLU code can be rescaled: $z_i d_i = (n_i z_i)(d_i / n_i)$ and $\mathrm{ReLU}(n_i h_i) = n_i \mathrm{ReLU}(h_i)$
# for $n_i > 0$, so the norms $n_i$ fold into the encoder without changing the reconstruction. Top-k *selects* the $k$
# largest $h_i$, and multiplying each $h_i$ by a different $n_i$ changes which ones are largest. Unless the library
# itself selected on $h_i n_i$ (SAELens's `rescale_acts_by_decoder_norm`), the selection would change, so `st.load`
# refuses instead of approximating.
# ```
#
# ```{admonition} 5. In the static book the explorer does not react, but the card deck does. Why?
# :class: dropdown
# The explorer redraws its card in Python, and a static page has no Python kernel. The card deck's images are all
# rendered in advance and embedded in the page; its slider is linked to them in the browser (`jslink`), so moving it
# only changes which image is visible.
# ```

# %% [markdown]
# ## Summary
#
# - A latent's card gathers what it means: its top images, activation histogram, class mix, similar decoder rows
#   and weakly-firing contrast images. `st.explorer.precompute` computes all of it in one streaming pass, with
#   memory independent of the number of images, and saves it beside the SAE.
# - `LatentExplorer` makes the cards interactive (sorting, class search, a UMAP map of the dictionary); `card_deck`
#   and `latent_cards` give static views for pages and papers.
# - On Fashion-MNIST embeddings, the ℓ1/ℓ2-regularized SAE trades a little reconstruction for more specific latents
#   (higher MS and purity, measured above); the cards show what that means image by image.
# - Summary metrics hide what the cards show: which classes a broad latent merges, what a pure latent's weak
#   activations are, whether neighbouring decoder rows share a concept.
# - `st.load` opens SAEs of sparsify, SAELens, dictionary_learning and overcomplete with their exact maths (or a clear
#   error), and `sae.save_as` writes ours for sparsify and SAELens: the explorer and the method card work on any of them.
#
# **Next:** chapter 6 replaces the fixed budget $k$ by adaptive ones (Sparsemax SAE, BatchTopK); their latents can
# be explored with the same tools.
