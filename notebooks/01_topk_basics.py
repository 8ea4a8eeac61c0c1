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
# # 1. Top-k basics
#
# [Open in Colab](https://colab.research.google.com/github/sae-tutorial/sae-tutorial/blob/main/notebooks/01_topk_basics.ipynb) · [student notebook](https://colab.research.google.com/github/sae-tutorial/sae-tutorial/blob/main/student/01_topk_basics.ipynb) (the exercises as stubs)
#
# **Prerequisites:** Python, PyTorch tensors, dot products and norms. **Time:** about 90 minutes, of which exercises about 30.
#
# A sparse autoencoder (SAE) rewrites each embedding as the sum of a few directions taken from a large learned
# dictionary. Before we point one at a vision model, where nobody knows the right answer, we train it on synthetic
# data whose directions we chose ourselves. Then we can check whether the SAE found them.

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
import pprint

import sae_tutorial as st
import torch

# "small" on a CPU (one torch thread), "colab" on a GPU (auto), or what you set
MODE, DEVICE = st.book.setup()
if MODE == "small":
    SIZES = dict(n_train=50_000, n_eval=10_000, d=64, n_features=256, n_latents=512,
                 k=6, batch_size=256, epochs=12, lr=2e-3)
else:
    # A GPU: a wider space and 8x the features. Synthetic data has no "paper scale":
    # full runs the same sizes as colab.
    SIZES = dict(n_train=500_000, n_eval=50_000, d=256, n_features=2048,
                 n_latents=4096, k=16, batch_size=1024, epochs=12, lr=1e-3)
# a no-op unless SAE_TUTORIAL_SHRINK is set (the Colab rehearsal, see How to run)
SIZES = st.book.shrink(SIZES)
print(f"mode={MODE}, device={DEVICE}")
pprint.pprint(SIZES, width=88, sort_dicts=False)

# %% [markdown]
# ## What you will learn
#
# By the end of this chapter you will be able to:
#
# 1. write down the three maps of a Top-k SAE (encode, select, decode) and find each in the library's code;
# 2. train one and measure, on data with a known answer, how many true features it recovers, and which it misses;
# 3. explain what a *dead latent* is, and show when the AuxK loss revives dead latents and when it does not;
# 4. change the sparsity budget $k$ at inference time and read the resulting reconstruction curve, the
#    starting point of the paper this book reproduces.
#
# You need PyTorch basics (tensors, `topk`, `gather`/`scatter`). All the code runs on a laptop CPU in about a minute.

# %%
import json
import re
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch.nn.functional as F
from IPython.display import Markdown, display
from sae_tutorial.book import show_source
from sae_tutorial.datasets import cache_dir



# %% [markdown]
# ## What a sparse autoencoder is
#
# Take an embedding $x \in \mathbb{R}^d$. An SAE with $m \gg d$ latents maps it to a code $z \in \mathbb{R}^m$
# that is mostly zeros, then reconstructs $x$ from the few non-zero entries:
#
# $$
# \begin{aligned}
# h &= W_\text{enc}\,(x - b_\text{dec}) + b_\text{enc} && \text{pre-activations, } (m,)\\
# S &= \operatorname{TopK}_k(h) && \text{indices of the } k \text{ largest entries}\\
# z_j &= \operatorname{ReLU}(h_j)\,\mathbf{1}[j \in S] && \text{codes: at most } k \text{ non-zero}\\
# \hat x &= \textstyle\sum_j z_j\, d_j + b_\text{dec} && d_j \text{ = row } j \text{ of } W_\text{dec}, \ \|d_j\|_2 = 1
# \end{aligned}
# $$
#
# Each decoder row $d_j$ is a direction in embedding space, a *feature*; $z_j$ says how much of it the input
# contains. The hope is that each feature means one thing, so that an embedding becomes a short, readable list of
# concepts {cite:p}`bricken2023monosemanticity`.
#
# **Why Top-k.** The classic SAE uses a ReLU and an $\ell_1$ penalty on $z$ to make codes sparse. That penalty
# has a weight to tune, controls the number of active latents only indirectly, and shrinks every active code
# towards zero. The Top-k SAE {cite:p}`gao2024scaling` drops the penalty: it keeps the $k$ largest
# pre-activations of each input, so the number of active latents ($L_0$) is fixed by construction and the loss is
# reconstruction alone. The paper this book reproduces {cite:p}`jacquier2026beyond` starts from exactly this model.
#
# Here are the maps, in the library. Every SAE variant computes its pre-activations the same way:

# %%
show_source(st.SparseAutoencoder.pre_activations)

# %% [markdown]
# The Top-k SAE's forward pass picks the budget (the trained $k$ unless you pass another) and hands over to the
# shared Top-k path, which selects, applies the ReLU on the selection only, and decodes with a gather:

# %%
show_source(st.TopKSAE.forward)
show_source(st.SparseAutoencoder._topk_output)

# %% [markdown]
# Training minimises the *fraction of variance unexplained* (FVU): the squared reconstruction error of the batch
# divided by the batch's total variance. FVU = 0 is a perfect reconstruction; FVU = 1 is no better than predicting
# the mean embedding for every input. Unlike a raw mean-squared error, it means the same thing at any scale of $x$.

# %%
show_source(st.losses.fvu)

# %% [markdown]
# Two details of the recipe of {cite:t}`gao2024scaling` live in the same base class: decoder rows are projected
# back to unit norm after every optimizer step (otherwise the model could shrink $z$ and grow $d_j$ and the
# magnitude of a code would mean nothing), and $b_\text{dec}$ starts at the geometric median of the data.

# %% [markdown]
# ### Exercise: Top-k codes by hand
#
# ```{exercise} Top-k codes by hand
# :label: ex-topk-codes
#
# *Exercise 1.1 · difficulty ●●○ · importance ●●● · about 15 minutes*
#
# Write `topk_codes(h, k)`: given pre-activations `h` of shape `(B, m)`, return the dense codes `z` of shape
# `(B, m)`, with $z_{bj} = \operatorname{ReLU}(h_{bj})$ for the $k$ largest entries of row $b$ and $0$ elsewhere.
# Use only `torch` operations: no loop over rows.
#
# In the book the next code cell holds a reference answer, so that the chapter runs from top to bottom; in the
# student notebook (linked at the top) it is a stub for your answer. The check cell after it compares your codes
# with the library's `sae(x).codes` on a batch of inputs.
# ```
#
# ````{solution} ex-topk-codes
# :class: dropdown
#
# `torch.topk` gives the indices of the $k$ largest entries of each row; `scatter` writes the ReLU'd values
# back into a row of zeros:
#
# ```python
# def topk_codes(h, k):
#     idx = h.topk(k, dim=1).indices            # (B, k) support S_b of each row
#     vals = h.gather(1, idx).relu()            # (B, k) ReLU(h) on the support
#     return torch.zeros_like(h).scatter(1, idx, vals)   # (B, m) dense codes
# ```
#
# The ReLU matters: when fewer than $k$ pre-activations are positive, the selection contains negative entries,
# which must become zeros, not negative codes. A code can therefore have *fewer* than $k$ non-zero entries, never
# more. Selecting on $\operatorname{ReLU}(h)$ instead gives the same codes: ties among zeros only move zeros
# around.
# ````

# %% tags=["exercise"]
def topk_codes(h, k):
    """Dense Top-k codes (B, m) of pre-activations h (B, m): ReLU(h) on the k largest
    entries of each row."""
    idx = h.topk(k, dim=1).indices                       # (B, k)
    vals = h.gather(1, idx).relu()                       # (B, k)
    return torch.zeros_like(h).scatter(1, idx, vals)     # (B, m)


# %% [markdown]
# The check runs a small, untrained Top-k SAE on random inputs of growing norm, so that some rows have fewer
# than $k$ positive pre-activations, and compares your codes with `sae(x).codes`:

# %%
st.exercises.check_topk_codes(topk_codes)

# %% [markdown]
# And this is what the check says to a plausible wrong answer, which forgets the ReLU:

# %%
def topk_codes_wrong(h, k):
    idx = h.topk(k, dim=1).indices
    return torch.zeros_like(h).scatter(1, idx, h.gather(1, idx))


try:
    st.exercises.check_topk_codes(topk_codes_wrong)
except AssertionError as error:
    st.book.print_wrapped("The check caught it:", error)

# %% [markdown]
# ## Training on data with a known answer
#
# `sae_tutorial.synthetic.make_sparse_data` builds each sample as a sparse, non-negative combination of
# `n_features` random unit directions (the *true features*) plus a little noise. Features are used with Zipf-like
# frequencies, a few common and many rare, as concepts are in images:

# %%
print(st.synthetic.__doc__)

# %%
S = SIZES
data = st.synthetic.make_sparse_data(S["n_train"] + S["n_eval"], d=S["d"],
                                     n_features=S["n_features"], avg_active=5,
                                     zipf_exponent=1.0, noise=0.01, seed=0)
# (N_train, d), (N_eval, d)
x_train, x_eval = data.x[:S["n_train"]], data.x[S["n_train"]:]
active = (data.codes[:S["n_train"]] > 0).sum(1).float()  # true features per sample
freq = data.frequencies                                             # (n_features,)
print(f"{len(x_train):,} training and {len(x_eval):,} held-out samples in d={S['d']}, "
      f"{S['n_features']} true features")
print(f"true features per sample: mean {active.mean():.2f}, "
      f"95th percentile {active.quantile(0.95):.0f}")
print(f"feature frequencies: most common {freq.max():.3f}, rarest {freq.min():.4f}")

# %% [markdown]
# We give the SAE twice as many latents as there are true features and a budget $k$ a little above the average
# number of active features. Every knob of training lives in one dataclass, `sae_tutorial.TrainConfig`, which is
# also saved with the SAE's method card at the end of the chapter.

# %%
def train_topk(k, x=x_train, seed=0):
    """A Top-k SAE of SIZES' width trained on x: (sae, config, history, seconds)."""
    sae = st.TopKSAE(S["d"], S["n_latents"], k=k, seed=seed).to(DEVICE)
    config = st.TrainConfig(batch_size=S["batch_size"], epochs=S["epochs"], lr=S["lr"],
                            progress=False)
    start = time.perf_counter()
    history = st.train(sae, x, config)
    return sae, config, history, time.perf_counter() - start


K = S["k"]
sae, config, history, seconds = train_topk(K)
print(f"trained {sae} for {len(history['step'])} steps in {seconds:.1f} s")
print(f"final training FVU {history['fvu'][-1]:.4f}, L0 {history['l0'][-1]:.2f}")

# %% [markdown]
# The training loss falls fast and then slowly; $L_0$ stays at $k$ throughout, because Top-k allows nothing else.
# The right panel counts latents that have not fired during the last pass over the training set (the default
# `dead_after`, capped at 10 million samples). Some latents stop firing as training goes on: we come back to
# them in the section on dead latents.

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
axes[0].plot(history["step"], history["fvu"])
axes[0].set(yscale="log", xlabel="step", ylabel="training FVU (log scale)",
            title="Reconstruction")
axes[1].plot(history["step"], history["dead_frac"], color="C3")
axes[1].set(xlabel="step", ylabel="fraction of latents",
            title="Latents that have not fired recently")
fig.suptitle(f"Top-k SAE, d={S['d']}, m={S['n_latents']}, k={K}")
fig.tight_layout()
plt.show()

# %% [markdown]
# ### Inside one forward pass
#
# For one held-out input, here are the largest pre-activations of the trained SAE. Only the $k$ largest
# (coloured) survive; the next ones, just below the cut, are set to zero. The right panel compares the input with
# its reconstruction from those $k$ latents.

# %%
with torch.no_grad():
    out = sae(x_eval[:1].to(DEVICE))
h0 = out.pre_acts[0].cpu()                                     # (m,)
order = h0.argsort(descending=True)[:4 * K]
n_true = int((data.codes[S["n_train"]] > 0).sum())     # features that made this input

fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
axes[0].bar(range(len(order)), h0[order],
            color=["C0"] * K + ["0.75"] * (len(order) - K))
axes[0].axhline(0, color="k", lw=0.5)
axes[0].set(xlabel=f"latents sorted by pre-activation "
                   f"(top {4 * K} of {S['n_latents']})",
            ylabel="pre-activation $h_j$",
            title=f"Top-{K} selection: coloured latents are kept")
dims = min(S["d"], 64)
axes[1].plot(x_eval[0, :dims], "k", lw=2, label="input $x$")
axes[1].plot(out.x_hat[0, :dims].cpu(), "C1--", label=r"reconstruction $\hat x$")
axes[1].set(xlabel="embedding dimension",
            title=f"An input made of {n_true} true features")
bottom, top = axes[1].get_ylim()
axes[1].set_ylim(top=top + 0.4 * (top - bottom))               # room for the legend
axes[1].legend(loc="upper left", ncol=2)
fig.tight_layout()
plt.show()

# %% [markdown]
# ### Did it find the true features?
#
# For each true feature $f_i$ we take its best match among the decoder rows, $\max_j \cos(f_i, d_j)$, and call
# the feature *recovered* when that cosine exceeds 0.9. `sae_tutorial.synthetic.feature_recovery` reports the
# fraction recovered; we also compute the per-feature cosines to see *which* features are missed.

# %%
recovery = st.synthetic.feature_recovery(sae.W_dec, data.features, threshold=0.9)
cos = F.normalize(data.features, dim=1) @ F.normalize(sae.W_dec.detach().cpu(), dim=1).T
best_cos = cos.max(1).values                                    # (n_features,)
with torch.no_grad():
    fvu_eval = st.metrics.fvu(x_eval, sae(x_eval.to(DEVICE)).x_hat.cpu())
print(f"recovered {recovery['recovered']:.1%} of {S['n_features']} true features "
      f"(cos > 0.9), mean best cosine {recovery['mean_max_cos']:.3f}")
print(f"held-out FVU {fvu_eval:.4f}")
rare = freq < freq.median()
print(f"recovered among the more common half of features: "
      f"{(best_cos[~rare] > 0.9).float().mean():.1%}; "
      f"among the rarer half: {(best_cos[rare] > 0.9).float().mean():.1%}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
axes[0].hist(best_cos, bins=40, range=(best_cos.min().item(), 1.0), color="C0")
axes[0].axvline(0.9, color="k", ls="--", lw=1, label="threshold 0.9")
axes[0].set(xlabel=r"best cosine $\max_j \cos(f_i, d_j)$", ylabel="true features",
            title="Best match of each true feature")
axes[0].legend()
axes[1].scatter(freq * S["n_train"], best_cos, s=8,
                c=np.where(best_cos > 0.9, "C0", "C3"))
axes[1].axhline(0.9, color="k", ls="--", lw=1)
axes[1].set(xscale="log",
            xlabel="training samples in which the feature is active (log scale)",
            ylabel="best cosine", title="Rare features are the ones missed")
fig.tight_layout()
plt.show()

# %% [markdown]
# Almost every true feature has a decoder row pointing at it. The misses (red) are among the rarest features:
# with few examples, and only $k$ slots per input, the SAE either has not learnt them yet or spends a latent on a
# blend of several of them. Real embeddings have the same long tail, which is one reason SAEs are trained on
# millions of inputs.

# %% [markdown]
# ### Exercise: FVU by hand
#
# ```{exercise} FVU by hand
# :label: ex-fvu
#
# *Exercise 1.2 · difficulty ●○○ · importance ●●● · about 10 minutes*
#
# Write `my_fvu(x, x_hat)` for two tensors of shape `(N, d)`: the summed squared error divided by the summed
# squared distance of each $x_n$ to the mean input $\bar x$. Then predict, before running it: what is the FVU of
# the "reconstruction" that outputs $\bar x$ for every input? And of $\hat x = 0$ when the data are not centred?
# ```
#
# ````{solution} ex-fvu
# :class: dropdown
#
# ```python
# def my_fvu(x, x_hat):
#     return ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
# ```
#
# Predicting $\bar x$ everywhere gives exactly FVU = 1: numerator and denominator are the same sum. Predicting
# $0$ gives $1 + N\|\bar x\|^2 / \sum_n \|x_n - \bar x\|^2$, more than 1 whenever the mean is not zero: FVU
# measures error against the best *constant* prediction, which is why $b_\text{dec}$ starts at a centre of the
# data. The check below prints both.
# ````

# %% tags=["exercise"]
def my_fvu(x, x_hat):
    """FVU of x_hat (N, d) as a reconstruction of x (N, d):
    Σ‖x_n − x̂_n‖² / Σ‖x_n − x̄‖²."""
    return ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()


# %%
st.exercises.check_fvu(my_fvu)
with torch.no_grad():
    x_hat_eval = sae(x_eval.to(DEVICE)).x_hat.cpu()
for name, x_hat_try in [("the trained SAE", x_hat_eval),
                        ("the mean input", x_eval.mean(0).expand_as(x_eval)),
                        ("zero", torch.zeros_like(x_eval))]:
    print(f"FVU of {name:<16} {float(st.losses.fvu(x_eval, x_hat_try)):8.4f}")

# %% [markdown]
# ## Dead latents and AuxK
#
# Top-k has a failure mode of its own. Only the $k$ selected latents of an input receive gradient from the
# reconstruction loss. A latent whose pre-activation is never among the $k$ largest for any input gets no
# gradient at all, so nothing ever moves it back into the competition: it is *dead*. At scale a large share of
# the dictionary can die this way, wasting capacity {cite:p}`gao2024scaling`.
#
# The library counts, for each latent, the training samples since it last fired, and calls it dead past a
# threshold (`TrainConfig.dead_after`). The AuxK loss of {cite:t}`gao2024scaling` gives dead latents a gradient:
# the top-$k_\text{aux}$ *dead* latents of each input try to reconstruct the residual $x - \hat x$ that the live
# latents left, and this auxiliary error is added to the loss with a small weight $\alpha = 1/32$. Because the
# residual has no offset, the auxiliary reconstruction uses no $b_\text{dec}$ (three well-known libraries add it
# anyway; the library's tests check that we do not):

# %%
show_source(st.losses.auxk_loss)

# %% [markdown]
# To watch it work, we make dead latents on purpose. In a small SAE ($d=16$, 128 latents, $k=4$) trained on data
# with 256 equally common features, we lower the encoder bias of half the latents by 1 at initialisation, so that
# they start far below the others and almost never enter the top $k$. We train the same handicapped SAE twice,
# with AuxK off ($\alpha = 0$) and on ($\alpha = 1/32$). A latent counts as dead after 1,024 samples (4 batches)
# without firing.
#
# A second experiment asks the opposite question: what if there are *more latents than features to learn*? There
# the data have only 48 features, the SAE has 256 latents and $k = 2$, and nothing is handicapped.

# %%
def dead_latent_run(data, n_latents, k, auxk_alpha, handicap, steps):
    """A small Top-k SAE, the first half of its latents handicapped, trained:
    (sae, config, history)."""
    sae = st.TopKSAE(data.x.shape[1], n_latents, k, seed=0).to(DEVICE)
    with torch.no_grad():
        # start half the latents below the others
        sae.b_enc[: n_latents // 2] -= handicap
    config = st.TrainConfig(batch_size=256, steps=steps, lr=3e-3, dead_after=1024,
                            auxk_alpha=auxk_alpha, progress=False)
    return sae, config, st.train(sae, data.x, config)


handicapped_data = st.synthetic.make_sparse_data(20_000, d=16, n_features=256,
                                                 avg_active=4, zipf_exponent=0.0,
                                                 seed=1)
redundant_data = st.synthetic.make_sparse_data(20_000, d=16, n_features=48,
                                               avg_active=2, zipf_exponent=0.0, seed=2)
EXPERIMENTS = {
    "handicapped": dict(data=handicapped_data, n_latents=128, k=4, handicap=1.0,
                        steps=300),
    "more latents than features": dict(data=redundant_data, n_latents=256, k=2,
                                       handicap=0.0, steps=600),
}
ALPHAS = {"without AuxK": 0.0, "with AuxK (α = 1/32)": 1 / 32}
dead_runs = {(name, label): dead_latent_run(**setup, auxk_alpha=alpha)
             for name, setup in EXPERIMENTS.items() for label, alpha in ALPHAS.items()}

rows = []
for (name, label), (small_sae, _, hist) in dead_runs.items():
    data_i = EXPERIMENTS[name]["data"]
    with torch.no_grad():
        codes = small_sae.encode(data_i.x.to(DEVICE)).cpu()                # (N, m)
        fvu_i = st.metrics.fvu(data_i.x, small_sae(data_i.x.to(DEVICE)).x_hat.cpu())
    alive = ~st.metrics.dead_latents(codes)                                 # (m,)
    # Does a live latent stand for a true feature? Best cosine of its decoder row
    # with one.
    W = F.normalize(small_sae.W_dec.detach().cpu(), dim=1)
    matches = (W @ F.normalize(data_i.features, dim=1).T).max(1).values > 0.9   # (m,)
    recovered = st.synthetic.feature_recovery(small_sae.W_dec,
                                              data_i.features)["recovered"]
    # How far below the winners do the dead latents sit? Their pre-activation, where
    # positive, over the k-th largest selected value of the same row.
    with torch.no_grad():
        # (N, n_dead)
        h = small_sae.pre_activations(data_i.x.to(DEVICE)).cpu()[:, ~alive]
    kth = codes.topk(small_sae.k, dim=1).values[:, -1:]                     # (N, 1)
    gap = (h / kth)[h > 0]
    rows.append({"experiment": name, "AuxK": label,
                 "dead (training)": hist["dead_frac"][-1],
                 "never fire": 1 - alive.float().mean().item(),
                 "FVU": fvu_i, "recovered": recovered,
                 "live, match": int((alive & matches).sum()),
                 "live, no match": int((alive & ~matches).sum()),
                 "dead h / k-th": gap.median().item() if gap.numel() else float("nan")})
dead_table = pd.DataFrame(rows).set_index(["experiment", "AuxK"])
dead_table.round(3)

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
for ax, (name, setup) in zip(axes, EXPERIMENTS.items()):
    for color, label in zip(("C3", "C0"), ALPHAS):
        hist = dead_runs[(name, label)][2]
        ax.plot(hist["step"], hist["dead_frac"], color=color, label=label)
    n_features = setup["data"].features.shape[0]
    ax.set(xlabel="step", title=f"{name}\n{n_features} features, "
                                f"{setup['n_latents']} latents, k={setup['k']}")
    ax.legend()
axes[0].set_ylabel("fraction of dead latents")
fig.tight_layout()
plt.show()

# %% [markdown]
# The table's columns: the dead fraction at the last training step and on the whole data set, the FVU, the
# fraction of true features recovered, the live latents whose decoder row matches a true feature (cosine > 0.9)
# and those that match none, and, for the dead latents, their pre-activation (where positive) over the $k$-th
# largest selected value of the same input (the median).
#
# **Handicapped latents (left).** Without AuxK, nearly all of the handicapped half of the dictionary stays dead
# to the end: those latents get no gradient that could raise them. With AuxK, each one is pulled towards the part
# of the residual it can explain, its pre-activations rise, and most of them rejoin the competition, which also
# lowers the FVU a little (table above). The features themselves are not recovered in this run: 256 features in
# 16 dimensions is far too crowded for 128 latents, and this experiment is only about who gets a gradient.
#
# **More latents than features (right).** Here AuxK does not lower the dead fraction: it ends *higher* with
# AuxK than without. Yet both SAEs recover every true feature, with about the same number of live latents that
# each match one (table above). They differ in the spare latents. Without AuxK, a latent that dies keeps the
# weights it had, and many of these half-trained latents still enter the top $k$ now and then: they stay alive
# while matching no true feature, firing on a small fraction of inputs. With AuxK a dead latent is trained, but
# on the residual $e = x - \hat x$: AuxK asks its activation $a_j$ to fit the part of the residual along its
# decoder row, $\partial \mathcal{L}_\text{aux} / \partial a_j \propto -(e - \hat e) \cdot W_{\text{dec},j}$.
# When the live latents already explain every feature, the residual is what a $k=2$ code has to leave out,
# spread over directions that no spare latent matches, and the best fit for a spare latent is a small
# activation. The last column of the table measures it: where a dead latent's pre-activation is positive, it
# is this median fraction of the $k$-th winner's value on the same input. In the second experiment AuxK lowers
# that fraction several-fold: it pulls the spare latents down to the residual's scale, far below the scale at
# which a latent wins the top $k$, and they stay dead. In the first experiment the residual still holds
# features that no live latent explains; fitting it *raises* the dead latents' pre-activations, and they
# rejoin.
#
# So AuxK revives dead latents when there is something left for them to learn, and otherwise sorts the
# dictionary into latents that match a feature and latents that never fire. A dead fraction means wasted
# capacity only when features are still unlearnt; when they are all learnt, it measures spare capacity.
#
# At the scale of real vision embeddings (thousands of latents, an unknown but large number of concepts) the
# first situation is the common one, which is why AuxK is part of the standard recipe. The SAE we trained above
# is closer to the second: 512 latents for 256 features. Its method card, at the end of the chapter, reports how
# many of its latents never fire.

# %% [markdown]
# ### Exercise: count the dead latents
#
# ```{exercise} Count the dead latents
# :label: ex-dead
#
# *Exercise 1.3 · difficulty ●○○ · importance ●●○ · about 5 minutes*
#
# Write `my_dead_fraction(codes)`: given dense codes of shape `(N, m)` computed on a data set, return the
# fraction of the $m$ latents that are zero on *every* input, as a Python float. Then look at the table above:
# why can "dead (training)" and "never fire" differ?
# ```
#
# ````{solution} ex-dead
# :class: dropdown
#
# ```python
# def my_dead_fraction(codes):
#     return (codes == 0).all(dim=0).float().mean().item()
# ```
#
# They measure different things. During training a latent is dead when it has not fired in the last `dead_after`
# samples (here 1,024): a rare but alive latent can be counted dead for a while. After training,
# `sae_tutorial.metrics.dead_latents` asks whether a latent fires on *any* input of a whole data set, which is the
# definition the method cards use.
# ````

# %% tags=["exercise"]
def my_dead_fraction(codes):
    """The fraction of the m latents that are zero on every row of codes (N, m), as a
    float."""
    return (codes == 0).all(dim=0).float().mean().item()


# %%
st.exercises.check_dead_fraction(my_dead_fraction)

# %% [markdown]
# ## Changing $k$ at inference time
#
# Nothing stops us from selecting a different number of latents at inference than the $k$ used in training:
# `sae(x, k=k2)` or `sae.encode(x, k=k2)` keeps the top $k'$ instead. One might expect more latents always to
# give a better reconstruction. `sae_tutorial.metrics.k_robustness` measures the held-out FVU for several $k'$;
# we compare SAEs trained with $k/2$, $k$ and $2k$.

# %%
show_source(st.metrics.k_robustness)

# %%
sweep = {K: (sae, config, history)}
for k_train in (K // 2, 2 * K):
    sae_k, config_k, history_k, seconds_k = train_topk(k_train)
    sweep[k_train] = (sae_k, config_k, history_k)
    print(f"trained k={k_train} in {seconds_k:.1f} s")
sweep = dict(sorted(sweep.items()))

K_PRIMES = sorted({max(1, K // 4), K // 2, K, 2 * K, 4 * K, 8 * K})
curves = {k_train: st.metrics.k_robustness(s, x_eval, K_PRIMES)
          for k_train, (s, _, _) in sweep.items()}
k_table = pd.DataFrame(curves).rename_axis(index="inference k'", columns="trained k")
(k_table.style.format("{:.3f}").highlight_min(axis=0, props="font-weight: bold")
 .set_table_attributes('class="dataframe"'))

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.8))
for i, (k_train, curve) in enumerate(curves.items()):
    ax.plot(list(curve), list(curve.values()), "o-", color=f"C{i}",
            label=f"trained with k={k_train}")
    ax.plot([k_train], [curve[k_train]], "*", ms=16, color=f"C{i}")
ax.set(xscale="log", yscale="log", xlabel="inference-time budget k' (log scale)",
       ylabel="held-out FVU (log scale)",
       title="Reconstruction is best at the training k (stars)")
ax.set_xticks(K_PRIMES, [str(k) for k in K_PRIMES])
ax.minorticks_off()
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# Fewer latents than trained is worse, as expected: the code must drop real features. More latents than trained
# is *also* worse, sometimes much worse. The latents ranked just below the cut were never used in training, so
# nothing taught them to add the right amount; switched on, they add errors instead of detail. The SAE trained
# with the smallest $k$ degrades fastest. A Top-k SAE overfits to its training budget: this is the first problem
# that *Beyond the Hard Budget* {cite:p}`jacquier2026beyond` sets out to fix, with the regularizers of
# chapter 2.

# %% [markdown]
# ## Method cards
#
# Every SAE this book trains reports a *method card*: where its inputs came from, its size and training settings,
# and its metrics, saved as JSON and Markdown (`sae_tutorial.metrics.method_card`). Here are the seven SAEs of
# this chapter side by side; their full cards follow.

# %%
CARD_DIR = cache_dir() / "method_cards" / "01_topk_basics"
SYNTHETIC = "synthetic (sae_tutorial.synthetic.make_sparse_data)"


def card_for(model, config, history, x, name, dataset, split, notes):
    """Evaluate `model` on `x`, write its method card: (card as a dict, path of its
    Markdown)."""
    report = st.metrics.evaluate(model, x)
    provenance = dict(name=name, **st.metrics.card_source(None, dataset, split),
                      train_config=config, steps=len(history["step"]), notes=notes)
    json_path, md_path = st.method_card(model, report, provenance, out_dir=CARD_DIR)
    return json.loads(json_path.read_text()), md_path


cards, recovered = {}, {}
for k_train, (s, c, h) in sweep.items():
    name = f"ch1-topk-k{k_train}"
    recovered[name] = st.synthetic.feature_recovery(s.W_dec, data.features)["recovered"]
    cards[name] = card_for(
        s, c, h, x_eval, name,
        f"{SYNTHETIC}: d={S['d']}, {S['n_features']} features, avg_active=5, "
        "zipf_exponent=1, noise=0.01, seed=0",
        f"train: first {S['n_train']:,} rows; metrics: the last {S['n_eval']:,}",
        notes=f"true features recovered (cos > 0.9): {recovered[name]:.1%}")
for (experiment, label), (s, c, h) in dead_runs.items():
    setup = EXPERIMENTS[experiment]
    kind = "handicap" if setup["handicap"] else "redundant"
    name = f"ch1-dead-{kind}-{'auxk' if c.auxk_alpha else 'noauxk'}"
    recovered[name] = st.synthetic.feature_recovery(s.W_dec,
                                                    setup["data"].features)["recovered"]
    handicap = (f"; b_enc of latents 0..{s.n_latents // 2 - 1} lowered by "
                f"{setup['handicap']} at init" if setup["handicap"] else "")
    cards[name] = card_for(
        s, c, h, setup["data"].x, name,
        f"{SYNTHETIC}: d=16, {setup['data'].features.shape[0]} features, "
        "zipf_exponent=0",
        "train and metrics: the same 20,000 rows",
        notes=f"{experiment}, {label}{handicap}; true features recovered (cos > 0.9): "
              f"{recovered[name]:.1%}")

summary = pd.DataFrame([
    {"card": name, "d": c["sae"]["d_in"], "m": c["sae"]["n_latents"],
     "k": c["sae"]["k"], "AuxK α": c["training"]["auxk_alpha"],
     "steps": c["training"]["steps"],
     "FVU": c["metrics"]["fvu"], "L0": c["metrics"]["l0"],
     "dead fraction": c["metrics"]["dead_frac"], "recovered": recovered[name]}
    for name, (c, _) in cards.items()]).set_index("card")
summary.round(3)

# %% [markdown]
# The full cards (click to show). The library writes each card as a Markdown file for a README or a report; here
# its headings are demoted by three levels to sit inside this page. The Monosemanticity Score (MS) they report is
# measured in the SAE's own input space; chapter 4 explains it on images, where it means something.

# %% tags=["hide-output"] mystnb={"markdown_format": "gfm"}
for name, (_, md_path) in cards.items():
    display(Markdown(re.sub(r"^(#+) ", r"###\1 ", md_path.read_text(),
                            flags=re.MULTILINE)))
print(f"JSON and Markdown cards written to\n  {CARD_DIR}")

# %% [markdown]
# ## Check your understanding
#
# ```{admonition} 1. A Top-k SAE has $m = 512$ latents and $k = 6$. How many non-zero codes can an input have?
# :class: dropdown
# At most 6, and fewer when fewer than 6 pre-activations are positive, because the ReLU is applied to the
# selected values. $L_0 \le k$ for every input, whatever the data.
# ```
#
# ```{admonition} 2. Why does a Top-k SAE need no sparsity penalty, and what does it lose by not having one?
# :class: dropdown
# The selection itself makes codes sparse, so the loss is reconstruction alone and no penalty shrinks the active
# codes. It loses adaptivity: every input gets the same budget, simple or complex, and the model fits that budget
# so closely that a different $k'$ at inference reconstructs worse.
# ```
#
# ```{admonition} 3. A latent never enters the top $k$. What gradient does the reconstruction loss give its encoder row?
# :class: dropdown
# None: unselected latents do not appear in $\hat x$. That is how latents die, and why AuxK adds a loss in which
# dead latents do appear.
# ```
#
# ```{admonition} 4. Your SAE reports 30% dead latents. Should you worry?
# :class: dropdown
# It depends on whether the data hold features the SAE has not learnt. In the experiment with more latents than
# features, a high dead fraction came with every feature recovered: spare latents, not lost ones. On real
# embeddings the number of concepts is unknown and usually large, so dead latents usually are lost capacity;
# check reconstruction and the other metrics before concluding.
# ```
#
# ```{admonition} 5. Why is FVU = 1 a natural reference point?
# :class: dropdown
# It is the error of predicting the mean input for every sample. An SAE with an FVU above 1 does worse than that
# constant, as the SAE trained with the smallest $k$ does at large $k'$.
# ```

# %% [markdown]
# ## Summary
#
# - A Top-k SAE encodes $h = W_\text{enc}(x - b_\text{dec}) + b_\text{enc}$, keeps the ReLU of the $k$ largest
#   entries, and decodes with unit-norm dictionary rows; its loss is the FVU, with no sparsity penalty.
# - On synthetic data with known features, a small Top-k SAE trained for seconds on a CPU recovers almost all of
#   them (measured above); the ones it misses are among the rarest.
# - Latents that never win the Top-k get no gradient and die. AuxK gives them one and revives them when there is
#   something left to learn; when latents outnumber the features it does not lower the dead fraction, and the
#   dead latents are spare capacity rather than lost features.
# - Reconstruction is best at the training $k$ and degrades on both sides, badly for more latents than trained:
#   Top-k SAEs overfit to their budget.
#
# **Next:** chapter 2 adds the paper's two sparsity regularizers, which act on the pre-activations before the
# Top-k selection, and measures whether they make reconstruction robust to $k'$.
