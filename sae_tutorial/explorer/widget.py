"""The live explorer (ipywidgets) and its static twin for the book.

`LatentExplorer` is a widget: pick a latent by index, or walk through the latents sorted by frequency, MS, purity
or dominant class; it shows the latent's card (cards.py), lists the latents with the most similar decoder rows and
those most associated with a class (click one to go there), and optionally a UMAP map of the dictionary.

A static page has no kernel, so Python callbacks never run there. `card_deck` precomputes the cards of a few latents
into Image widgets inside a Stack and links its slider to them in the browser (`jslink`): the page embeds every
card, and the slider works without Python.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
import torch

from .. import _checks
from ..metrics._stream import Rows
from ..sae import SparseAutoencoder
from .cards import CardRenderer, interesting
from .precompute import LatentStats, load_stats, precompute
from .umap import UmapPicker, decoder_umap

NONE = -1   # the class dropdown's "no class" entry


class LatentExplorer(widgets.VBox):
    """Inspect the latents of `sae` interactively.

    codes_or_cache: `LatentStats` from `precompute`, the path of saved ones (checked against `sae`), or the codes
    themselves ((N, m) or chunks; precomputed here with `top_n`). images: image n for each of the N rows (array,
    tensor, list of PIL images or an st.datasets ImageDataset). labels: (N,) class ids or (N, C) 0/1. metrics:
    extra per-latent scores (name -> (m,)) to show and sort by. umap: False (no map), True (computed here with
    `decoder_umap`) or (m, 2) coordinates. class_names: names of the label ids. title: shown above the explorer.
    card_options: passed to `CardRenderer` (tile, cols, show, n_similar).

    It opens on the `interesting` latent with the highest score. After `explorer.latent.value = j`, the card
    (`explorer.card.value`, PNG bytes), `header`, `similar` and the map show latent j, and `explorer.selected` is j.
    """

    def __init__(self, sae: SparseAutoencoder, codes_or_cache: LatentStats | str | Path | Rows, images: Any,
                 labels: Any = None, metrics: dict[str, Any] | None = None, *, umap: bool | Any = False,
                 class_names: Sequence[str] | None = None, title: str | None = None, top_n: int = 16,
                 **card_options: Any) -> None:
        if not isinstance(sae, SparseAutoencoder):
            raise TypeError(f"sae must be an sae_tutorial SAE, got {type(sae).__name__}")
        if isinstance(codes_or_cache, LatentStats):
            stats = codes_or_cache
        elif isinstance(codes_or_cache, (str, Path)):
            stats = load_stats(codes_or_cache, sae)
        else:
            stats = precompute(codes_or_cache, labels, top_n=top_n, class_names=class_names)
        if stats.n_latents != sae.n_latents:
            raise ValueError(f"the statistics cover {stats.n_latents} latents but sae has {sae.n_latents}")
        self.sae, self.stats, self.metrics = sae, stats, metrics
        self.renderer = CardRenderer(stats, images, labels, metrics=metrics, decoder=sae.W_dec,
                                     class_names=class_names, **card_options)
        m = stats.n_latents
        keys = stats.sort_keys(metrics)
        wide = widgets.Layout(width=f"{self.renderer.width}px")   # every control as wide as the card, no wider
        self.sort = widgets.Dropdown(options=keys, value=next(k for k in ("MS", "purity", "frequency") if k in keys),
                                     description="sort by", layout=wide)
        self.rank = widgets.IntSlider(min=0, max=m - 1, description="rank", continuous_update=False, layout=wide)
        self.latent = widgets.BoundedIntText(min=0, max=m - 1, description="latent", layout=wide)
        self.header = widgets.HTML()
        self.card = widgets.Image(format="png")
        self.similar = widgets.Select(rows=5, layout=wide)
        self.class_pick = widgets.Dropdown(options=[("(pick a class)", NONE)] + self._class_options(), layout=wide)
        self.class_hits = widgets.Select(rows=5, layout=wide)
        self.picker = None if umap is False else UmapPicker(
            decoder_umap(sae) if umap is True else umap, self._colorings(), self._pick,
            size=(self.renderer.width, round(0.85 * self.renderer.width)))

        self._set_order(self.sort.value)
        self.sort.observe(self._resort, "value")
        self.rank.observe(lambda change: self._pick(int(self._order[change["new"]])), "value")
        self.latent.observe(lambda change: self.show(change["new"]), "value")
        self.similar.observe(self._clicked, "value")
        self.class_hits.observe(self._clicked, "value")
        self.class_pick.observe(self._search, "value")

        children = [widgets.HTML(f"<b>{title}</b>")] if title else []
        children += [self.sort, self.latent, self.rank, self.header, self.card,
                     widgets.HTML("<b>most similar decoder rows</b> (click to go there)"), self.similar]
        if self.renderer.labels is not None:
            children += [widgets.HTML("<b>class search</b>: latents whose top images are most in a class"),
                         self.class_pick, self.class_hits]
        if self.picker is not None:
            children.append(self.picker)
        super().__init__(children, layout=widgets.Layout(border="1px solid #ddd", padding="4px",
                                                         width=f"{self.renderer.width + 24}px"))
        self.selected, self._updating = -1, False
        # Start on the best latent with a full grid of top images: the first by MS are often latents that fire on
        # one or two images, whose scores mean little.
        self.show((interesting(stats, 1, self.sort.value, metrics=metrics) or self._order[:1].tolist())[0])

    # ---- options
    def _class_options(self) -> list[tuple[str, int]]:
        r = self.renderer
        if r.labels is None:
            return []
        n_classes = r.labels.shape[1] if r.multi else int(r.labels.max()) + 1
        return [(r.class_name(c), c) for c in range(n_classes)]

    def _colorings(self) -> dict[str, tuple[np.ndarray, Sequence[str] | None]]:
        s, out = self.stats, {}
        if s.dominant is not None:
            names = [name for name, _ in self._class_options()]
            out["dominant class"] = (s.dominant.numpy(), names)
        for name, scores in self.renderer.scores.items():
            if name != "frequency":
                out[name] = (torch.where(s.alive, scores, torch.nan).numpy(), None)
        out["log10 frequency"] = (torch.where(s.alive, s.frequency.log10(), torch.nan).numpy(), None)
        return out

    # ---- events
    def _set_order(self, by: str) -> None:
        self._order = self.stats.order(by, self.metrics)                             # rank -> latent
        self._position = torch.empty_like(self._order).scatter_(0, self._order, torch.arange(len(self._order)))

    def _resort(self, change: dict[str, Any]) -> None:
        self._set_order(change["new"])
        if self.rank.value == 0:
            self._pick(int(self._order[0]))
        self.rank.value = 0

    def _pick(self, j: int) -> None:
        self.latent.value = j

    def _clicked(self, change: dict[str, Any]) -> None:
        if change["new"] is not None and not self._updating:   # a click, not a refill of the list
            self._pick(change["new"])

    def _search(self, change: dict[str, Any]) -> None:
        c = change["new"]
        self._refill(self.class_hits, [] if c == NONE else [
            (f"#{j}  {100 * share:.0f}% · fires on {int(self.stats.count[j]):,}", j)
            for j, share in self.renderer.associated(c, 10)])

    def _refill(self, select: widgets.Select, options: list[tuple[str, int]]) -> None:
        """New options for a list, with nothing selected (ipywidgets would select the first one)."""
        self._updating = True
        try:
            select.options, select.value = options, None
        finally:
            self._updating = False

    # ---- the view
    def show(self, j: Any) -> None:
        """Show latent j (what setting `latent.value` does)."""
        j = self.stats.latent(j)
        if j == self.selected:
            return
        self.selected = j
        self.latent.value, self.rank.value = j, int(self._position[j])
        s = self.stats
        self.header.value = (f"<small><b>latent #{j}</b>, rank {int(self._position[j])} of {s.n_latents} by "
                             f"{self.sort.value}</small>")
        self.card.value = self.renderer.png(j)
        self._refill(self.similar, [(f"#{i}  cos {cos:.2f}", i) for i, cos in self.renderer.similar(j)])
        self._refill(self.class_hits, list(self.class_hits.options))
        if self.picker is not None:
            self.picker.highlight(j)


def card_deck(explorers: LatentExplorer | Sequence[LatentExplorer], n_cards: int = 12, by: str | None = None,
              titles: Sequence[str] | None = None) -> widgets.VBox:
    """A static, kernel-free view: the cards of each explorer's `n_cards` most interesting latents (by `by`, see
    `interesting`) in a Stack of Image widgets, side by side, all driven by one slider linked to them in the
    browser. Embedded in a page, every card travels with it (about 20 kB each: keep n_cards small)."""
    explorers = [explorers] if isinstance(explorers, LatentExplorer) else list(explorers)
    if not explorers or not all(isinstance(e, LatentExplorer) for e in explorers):
        raise TypeError("explorers must be a LatentExplorer or a non-empty sequence of them")
    n_cards = _checks.positive_int(n_cards, "n_cards")
    titles = list(titles) if titles is not None else [""] * len(explorers)
    if len(titles) != len(explorers):
        raise ValueError(f"titles has {len(titles)} entries for {len(explorers)} explorers")
    decks = [[widgets.Image(value=e.renderer.png(j), format="png") for j in interesting(e.stats, n_cards, by,
                                                                                          metrics=e.metrics)]
             for e in explorers]
    n = min(len(d) for d in decks)
    if n == 0:
        raise ValueError("no latent fires on enough images for a card (see `interesting`)")
    # No Play button: its view looks up an <i> icon that the book theme's Font Awesome script swaps for an <svg>,
    # and the error it throws on every change stops the links.
    slider = widgets.IntSlider(min=0, max=n - 1, description="card")
    columns = []
    for deck, title in zip(decks, titles):
        stack = widgets.Stack(deck[:n], selected_index=0)
        widgets.jslink((slider, "value"), (stack, "selected_index"))
        columns.append(widgets.VBox([widgets.HTML(f"<b>{title}</b>"), stack]))
    return widgets.VBox([slider, widgets.HBox(columns)])
