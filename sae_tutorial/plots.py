"""The figures of the paper's comparison (chapter 4 and `sweep`), drawn from a results table (grid.py).

Rows are grouped by (method, mask) and k; points are means over seeds, error bars one standard deviation.
"""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import matplotlib.ticker

METHOD_ORDER = [("baseline", None), ("off-support l1", True), ("l1/l2", True), ("off-support l1", False),
                ("l1/l2", False)]
COLORS = {"baseline": "tab:gray", "off-support l1": "tab:blue", "l1/l2": "tab:orange"}


def label(method: str, mask) -> str:
    if mask is None or method == "baseline":
        return method
    return f"{method} ({'mask' if mask else 'no mask'})"


def _groups(table):
    """(method, mask, rows) in a fixed order, for the (method, mask) pairs present."""
    for method, mask in METHOD_ORDER:
        rows = table[table["method"] == method]
        if mask is not None:
            rows = rows[rows["mask"].astype(str).str.lower() == str(mask).lower()]
        if len(rows):
            yield method, mask, rows


def _style(method: str, mask) -> dict:
    return {"color": COLORS.get(method, "k"), "linestyle": "--" if mask is False else "-",
            "marker": "s" if mask is False else "o"}


def interpretability_vs_reconstruction(table) -> matplotlib.figure.Figure:
    """MS and class purity against FVU: up-left is better."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, name in zip(axes, ("ms_mean", "purity"), ("mean MS (alive latents)", "class purity")):
        for method, mask, rows in _groups(table):
            g = rows.groupby("k")
            x, y = g["fvu"].mean(), g[metric].mean()
            ax.errorbar(x, y, xerr=g["fvu"].std(), yerr=g[metric].std(),
                        label=label(method, mask), capsize=2, **_style(method, mask))
            for k in x.index:                                   # each point says its k
                ax.annotate(f"k={k}", (x[k], y[k]), xytext=(4, 3), textcoords="offset points", fontsize=7,
                            color=COLORS.get(method, "k"))
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4))   # FVUs differ in the 3rd digit: few ticks
        ax.set_xlabel("FVU (lower is better)")
        ax.set_ylabel(name)
    axes[0].legend(fontsize=8)
    fig.suptitle("Interpretability against reconstruction (one point per k)")
    fig.tight_layout()
    return fig


def dead_latents_by_mask(table) -> matplotlib.figure.Figure:
    """Dead latents (never firing on the evaluation set) per method and k, with and without the mask."""
    fig, ax = plt.subplots(figsize=(8, 4))
    groups = list(_groups(table))
    ks = sorted(table["k"].unique())
    width = 0.8 / len(groups)
    for i, (method, mask, rows) in enumerate(groups):
        g = rows.groupby("k")["dead"]
        pos = [j + i * width for j in range(len(ks))]
        ax.bar(pos, g.mean().reindex(ks), width, yerr=g.std().reindex(ks), label=label(method, mask),
               color=COLORS.get(method, "k"), alpha=0.45 if mask is False else 0.9, hatch="//" if mask is False else None)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(ks))], [f"k={k}" for k in ks])
    ax.set_ylabel("dead latents")
    ax.legend(fontsize=8)
    ax.set_title("Dead latents with and without the batch-active mask")
    fig.tight_layout()
    return fig


def _curves_per_k(table, prefix: str, ylabel: str, masks_off: bool):
    """One panel per training k; in each, a curve per (method, mask) through the `<prefix><x>` columns."""
    ks = sorted(table["k"].unique())
    # at most 10 inches wide: the book shows figures at its text width, and wider ones shrink their text
    fig, axes = plt.subplots(1, len(ks), figsize=(min(10.0, 3.4 * len(ks)), 3.4), squeeze=False)
    cols = sorted((int(m.group(1)), c) for c in table.columns if (m := re.fullmatch(prefix + r"(\d+)", c)))
    for ax, k in zip(axes[0], ks):
        at_k = table[table["k"] == k]
        present = [(x, c) for x, c in cols if at_k[c].notna().all()]    # the budgets every run at k was scored at
        for method, mask, rows in _groups(at_k):
            if mask is False and not masks_off:
                continue
            ax.errorbar([x for x, _ in present], [rows[c].mean() for _, c in present],
                        yerr=[rows[c].std() for _, c in present], capsize=2,
                        label=label(method, mask), **_style(method, mask))
        ax.set_xscale("log", base=2)
        xs = [x for x, _ in present]
        ax.set_xticks(xs, [str(x) for x in xs], fontsize=8)    # the budgets themselves, not powers of 2
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_title(f"trained with k={k}")
    axes[0][0].set_ylabel(ylabel)
    return fig, axes[0], ks


def fvu_vs_inference_k(table) -> matplotlib.figure.Figure:
    """FVU at each inference budget k', one panel per training k (the vertical line)."""
    fig, axes, ks = _curves_per_k(table, "fvu_k", "FVU", masks_off=True)
    for ax, k in zip(axes, ks):
        ax.axvline(k, color="k", lw=0.5)
        ax.set_yscale("log")
        ax.set_xlabel("inference budget k'")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def probe_vs_truncation(table) -> matplotlib.figure.Figure:
    """Linear-probe accuracy with each sample's n leading latents kept; the dense embedding as a dotted line."""
    fig, axes, ks = _curves_per_k(table, "probe_n", "probe accuracy", masks_off=False)
    for ax, k in zip(axes, ks):
        dense = table.loc[table["k"] == k, "probe_dense"] if "probe_dense" in table else None
        if dense is not None:
            ax.axhline(dense.mean(), color="k", lw=0.8, ls=":", label="dense embedding")
        ax.set_xlabel("latents kept per sample (n)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


FIGURES = {"interpretability_vs_reconstruction": interpretability_vs_reconstruction,
           "dead_latents_by_mask": dead_latents_by_mask, "fvu_vs_inference_k": fvu_vs_inference_k,
           "probe_vs_truncation": probe_vs_truncation}


def save_grid_figures(table, out_dir: str | Path) -> list[Path]:
    """Every figure above as a PNG in out_dir; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, draw in FIGURES.items():
        fig = draw(table)
        path = out / f"{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
