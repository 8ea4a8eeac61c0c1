"""A latent's card: one PNG with everything the explorer shows about it, drawn with PIL in a few milliseconds.

    ┌────────────────────────────────────────────┐
    │ Latent 123 · Sandal (88%)                   │   title: dominant class, its share of top activation
    │ fires on 0.43% (431) · mean 1.2 · max 5.3   │   frequency, activations, MS, purity, ...
    │ ▣ ▣ ▣ ▣ ▣                                   │   top images, border = class colour,
    │ ▣ ▣ ▣ ▣ ▣                                   │   activation below each
    │ ▁▃▇▅▂▁                                      │   histogram of the activations
    │ Sandal ███████ 14/16                        │   classes of the top images
    │ #87 0.71 Sandal · #12 0.65 Sneaker          │   most similar decoder rows
    │ ▫ ▫ ▫ ▫ ▫ ▫                                 │   weak activations (random firing images)
    └────────────────────────────────────────────┘

`CardRenderer` draws cards (the live widget shows one per selection; `card_deck` in widget.py precomputes a few
for the static book); `latent_cards` lays out the cards of the most interesting latents as a matplotlib figure.
"""
from __future__ import annotations

import functools
import io
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties, findfont
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from .. import _checks
from ..metrics._stream import labels_matrix
from ..sae import SparseAutoencoder
from .images import ImageSource
from .precompute import LatentStats

PAD = 10                   # card margin (pixels)
INK, MUTED, BAR = (30, 30, 30), (110, 110, 110), (31, 119, 180)
DEAD = (215, 215, 215)     # colour of dead latents and of unlabelled images


@functools.cache
def font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    """DejaVu Sans (shipped with matplotlib, so always there) at `size` pixels."""
    return ImageFont.truetype(findfont(FontProperties(family="DejaVu Sans", weight="bold" if bold else "normal")), size)


def class_color(c: int) -> tuple[int, int, int]:
    """Colour of class c (tab10, tab20 beyond 10 classes, cycling); grey for c < 0. Same in cards and UMAP."""
    if c < 0:
        return DEAD
    return tuple(round(255 * v) for v in to_rgb(colormaps["tab10" if c < 10 else "tab20"](c % 20)))


def fmt(v: float) -> str:
    """A number in 3 significant digits, '–' when undefined."""
    return "–" if v is None or math.isnan(v) else f"{v:.3g}"


def _fit(draw: ImageDraw.ImageDraw, text: str, width: float, f: ImageFont.FreeTypeFont) -> str:
    """`text`, cut with an ellipsis to fit `width` pixels."""
    if draw.textlength(text, font=f) <= width:
        return text
    while text and draw.textlength(text + "…", font=f) > width:
        text = text[:-1]
    return text + "…"


def _wrap(draw: ImageDraw.ImageDraw, items: Sequence[str], width: float, f: ImageFont.FreeTypeFont) -> list[str]:
    """Join `items` with ' · ' into lines no wider than `width`."""
    lines = [""]
    for item in items:
        joined = f"{lines[-1]} · {item}" if lines[-1] else item
        if lines[-1] and draw.textlength(joined, font=f) > width:
            lines.append(item)
        else:
            lines[-1] = joined
    return lines


class CardRenderer:
    """Draws latent cards from precomputed `LatentStats`.

    images: image n for each of the stats' N rows (see `ImageSource`). labels: (N,) class ids or (N, C) 0/1, for
    captions and class mix. metrics: extra per-latent scores (name -> (m,)) shown on the card. decoder: the SAE's
    W_dec (m, d), for the latents with the most similar decoder rows. class_names: overrides the stats' names.
    tile: thumbnail size in pixels; cols: thumbnails per row (they set the card's width); show: top images shown
    (default three rows; at most the stats' top_n, over which the class mix is counted).
    """

    def __init__(self, stats: LatentStats, images: Any, labels: Any = None, *, metrics: dict[str, Any] | None = None,
                 decoder: Tensor | None = None, class_names: Sequence[str] | None = None, tile: int = 48,
                 cols: int = 5, show: int | None = None, n_similar: int = 5) -> None:
        if not isinstance(stats, LatentStats):
            raise TypeError(f"stats must be LatentStats (st.explorer.precompute), got {type(stats).__name__}")
        self.stats, self.images = stats, images if isinstance(images, ImageSource) else ImageSource(images)
        if len(self.images) != stats.n_samples:
            raise ValueError(f"images has {len(self.images)} rows but the statistics cover {stats.n_samples}")
        self.labels, self.multi = labels_matrix(labels) if labels is not None else (None, False)
        if self.labels is not None and self.labels.shape[0] != stats.n_samples:
            raise ValueError(f"labels has {self.labels.shape[0]} rows but the statistics cover {stats.n_samples}")
        self.scores = stats.scores(metrics)
        self.decoder = None
        if decoder is not None:
            W = _checks.matrix(decoder.detach().cpu(), "decoder")
            if W.shape[0] != stats.n_latents:
                raise ValueError(f"decoder has {W.shape[0]} rows but the statistics have {stats.n_latents} latents")
            self.decoder = F.normalize(W.float(), dim=1)                          # (m, d) unit rows
        self.class_names = list(class_names) if class_names is not None else stats.class_names
        self.tile, self.cols = _checks.positive_int(tile, "tile"), _checks.positive_int(cols, "cols")
        self.show = min(stats.top_n, _checks.positive_int(show or 3 * self.cols, "show"))
        self.n_similar = _checks.positive_int(n_similar, "n_similar")

    # ---- what a card says
    def class_name(self, c: int) -> str:
        if c < 0:
            return "none"
        return self.class_names[c] if self.class_names and c < len(self.class_names) else f"class {c}"

    def classes_of(self, n: int) -> list[int]:
        """Class ids of image n ([] when unlabelled)."""
        if self.labels is None:
            return []
        if self.multi:
            return self.labels[n].nonzero().squeeze(1).tolist()
        c = int(self.labels[n])
        return [c] if c >= 0 else []

    def class_mix(self, j: int) -> list[tuple[int, int]]:
        """(class, number of j's top images with it), most common first."""
        counts: dict[int, int] = {}
        for n in self.stats.top_rows[:, j].tolist():
            for c in self.classes_of(n) if n >= 0 else ():
                counts[c] = counts.get(c, 0) + 1
        return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))

    def associated(self, c: int, n: int = 10) -> list[tuple[int, float]]:
        """The n latents whose top images are most in class c: [(latent, activation-weighted share of its top
        images that have class c)], highest first, ties broken by how often the latent fires."""
        if self.labels is None:
            raise ValueError("class search needs labels")
        n_classes = self.labels.shape[1] if self.multi else int(self.labels.max()) + 1
        if not 0 <= int(c) < n_classes:
            raise ValueError(f"class must be in [0, {n_classes}), got {c}")
        rows, vals = self.stats.top_rows, self.stats.top_vals.double()              # (top_n, m)
        ok = rows >= 0
        has_c = self.labels[rows.clamp_min(0), c] if self.multi else self.labels[rows.clamp_min(0)] == c
        share = ((vals * (has_c & ok)).sum(0) / (vals * ok).sum(0)).nan_to_num(-1.0)   # (m,), −1 for dead
        by_count = torch.sort(self.stats.count, descending=True, stable=True).indices
        order = by_count[torch.sort(share[by_count], descending=True, stable=True).indices]
        return [(j, float(share[j])) for j in order[:n].tolist() if share[j] > 0]

    def similar(self, j: int, n: int | None = None) -> list[tuple[int, float]]:
        """The n latents whose decoder rows have the largest cosine with j's: [(latent, cosine)]."""
        if self.decoder is None:
            return []
        n = min(n or self.n_similar, self.stats.n_latents - 1)
        cos = self.decoder @ self.decoder[j]                                      # (m,)
        cos[j] = -math.inf
        top = cos.topk(n)
        return list(zip(top.indices.tolist(), top.values.tolist()))

    def summary(self, j: int) -> list[str]:
        """The card's statistics line, as items."""
        s = self.stats
        items = [f"fires on {100 * float(s.frequency[j]):.2g}% ({int(s.count[j]):,} of {s.n_samples:,})",
                 f"mean {fmt(float(s.mean_act[j]))}", f"max {fmt(float(s.max_act[j]))}"]
        items += [f"{name} {fmt(float(v[j]))}" for name, v in self.scores.items() if name != "frequency"]
        return items

    def title(self, j: int) -> str:
        """"Latent j · dominant class (its activation-weighted share of the top images)"."""
        s = self.stats
        if not bool(s.alive[j]):
            return f"Latent {j} · never fires"
        if s.dominant is None:
            return f"Latent {j}"
        return f"Latent {j} · {self.class_name(int(s.dominant[j]))} ({100 * float(s.dominant_share[j]):.0f}%)"

    # ---- drawing (one column: every section spans the card's inner width)
    @property
    def width(self) -> int:
        """Card width in pixels: the grid of top images plus margins."""
        return 2 * PAD + self.cols * (self.tile + 6) - 6

    def _tiles(self, canvas: Image.Image, rows: Tensor, vals: Tensor, y0: int, size: int) -> int:
        """Thumbnails of `rows` (−1 = none) in rows filling the card's width from y0, a border in the class colour
        and the activation below each; returns the y below the grid."""
        draw, f = ImageDraw.Draw(canvas), font(10)
        cols, cell_h = (self.width - 2 * PAD + 6) // (size + 6), size + 16
        shown = [(int(n), float(a)) for n, a in zip(rows.tolist(), vals.tolist()) if n >= 0]
        for i, (n, a) in enumerate(shown):
            x, y = PAD + 2 + (i % cols) * (size + 6), y0 + (i // cols) * cell_h
            classes = self.classes_of(n)
            draw.rectangle([x - 2, y - 2, x + size + 1, y + size + 1], fill=class_color(classes[0] if classes else -1))
            canvas.paste(self.images.thumbnail(n, size), (x, y))
            draw.text((x, y + size + 2), _fit(draw, f"{a:.3g}" if size >= 48 else f"{a:.2g}", size, f), fill=INK,
                      font=f)
        return y0 + math.ceil(len(shown) / cols) * cell_h if shown else y0

    def _histogram(self, draw: ImageDraw.ImageDraw, j: int, y0: int) -> int:
        s, h, w_all = self.stats, 56, self.width - 2 * PAD
        counts = s.hist[j]
        used = int(counts.nonzero().max()) + 1                                    # bins up to the max activation
        draw.text((PAD, y0), f"activation histogram ({int(s.count[j]):,} images, √ count)", fill=INK,
                  font=font(11, True))
        y0 += 16
        top, w = int(counts.max()), w_all / used
        for b, c in enumerate(counts[:used].tolist()):
            bar = h * math.sqrt(c / top)                                          # sqrt scale: rare bins visible
            draw.rectangle([PAD + b * w, y0 + h - bar, PAD + (b + 1) * w - 1, y0 + h], fill=BAR)
        draw.line([PAD, y0 + h, PAD + w_all, y0 + h], fill=MUTED)
        f = font(10)
        draw.text((PAD, y0 + h + 2), "0", fill=MUTED, font=f)
        draw.text((PAD + w_all, y0 + h + 2), fmt(float(s.hist_upper[j]) * used / s.hist.shape[1]), fill=MUTED,
                  font=f, anchor="ra")
        return y0 + h + 18

    def _class_bars(self, draw: ImageDraw.ImageDraw, j: int, y0: int) -> int:
        mix, w_all = self.class_mix(j), self.width - 2 * PAD
        total = sum(1 for n in self.stats.top_rows[:, j].tolist() if n >= 0)
        draw.text((PAD, y0), f"classes of the top {total} images", fill=INK, font=font(11, True))
        y0, f, name_w = y0 + 17, font(10), 84
        for c, k in mix[:5]:
            draw.text((PAD, y0), _fit(draw, self.class_name(c), name_w - 4, f), fill=INK, font=f)
            bar = (w_all - name_w - 40) * k / total
            draw.rectangle([PAD + name_w, y0 + 2, PAD + name_w + bar, y0 + 11], fill=class_color(c))
            draw.text((PAD + w_all, y0), f"{k}/{total}", fill=MUTED, font=f, anchor="ra")
            y0 += 14
        if len(mix) > 5:
            draw.text((PAD, y0), f"+ {len(mix) - 5} more classes", fill=MUTED, font=f)
            y0 += 14
        return y0 + 6

    def _similar(self, draw: ImageDraw.ImageDraw, j: int, y0: int) -> int:
        draw.text((PAD, y0), "most similar decoder rows (cosine)", fill=INK, font=font(11, True))
        items = []
        for i, cos in self.similar(j):
            dominant = -1 if self.stats.dominant is None else int(self.stats.dominant[i])
            items.append(f"#{i} {cos:.2f}" + (f" {self.class_name(dominant)}" if dominant >= 0 else ""))
        y0 += 17
        for line in _wrap(draw, items, self.width - 2 * PAD, font(10)):
            draw.text((PAD, y0), line, fill=INK, font=font(10))
            y0 += 14
        return y0 + 6

    def render(self, j: Any) -> Image.Image:
        """The card of latent j as an RGB PIL image."""
        j, s, width = self.stats.latent(j), self.stats, self.width
        canvas = Image.new("RGB", (width, 3000), "white")
        draw = ImageDraw.Draw(canvas)
        draw.text((PAD, PAD), _fit(draw, self.title(j), width - 2 * PAD, font(13, True)), fill=INK, font=font(13, True))
        y = PAD + 19
        for line in _wrap(draw, self.summary(j), width - 2 * PAD, font(11)):
            draw.text((PAD, y), line, fill=MUTED, font=font(11))
            y += 15
        y += 6
        if not bool(s.alive[j]):
            return canvas.crop((0, 0, width, y + PAD))
        draw.text((PAD, y), f"top {min(self.show, int(s.count[j]))} images", fill=INK, font=font(11, True))
        y = self._tiles(canvas, s.top_rows[: self.show, j], s.top_vals[: self.show, j], y + 18, self.tile) + 4
        y = self._histogram(draw, j, y)
        if self.labels is not None:
            y = self._class_bars(draw, j, y)
        if self.decoder is not None:
            y = self._similar(draw, j, y)
        draw.text((PAD, y), "weak activations (random firing images)", fill=INK, font=font(11, True))
        y = self._tiles(canvas, s.weak_rows[:, j], s.weak_vals[:, j], y + 18, round(self.tile * 0.75))
        return canvas.crop((0, 0, width, y + PAD))

    def png(self, j: Any) -> bytes:
        """The card of latent j as PNG bytes (what an ipywidgets Image shows), in 256 colours: half the bytes, which
        matters when a page embeds many cards (fast octree: ~5 ms, where the default median cut takes ~200 ms on
        colour photos)."""
        buf = io.BytesIO()
        self.render(j).quantize(256, method=Image.Quantize.FASTOCTREE).save(buf, format="PNG")
        return buf.getvalue()


def interesting(stats: LatentStats, k: int, by: str | None = None, *, metrics: dict[str, Any] | None = None,
                min_count: int | None = None, diverse: bool = True) -> list[int]:
    """k latents worth a look: the best by `by` (default MS, else purity, else frequency) among those that fire on
    at least `min_count` images (default: top_n, a full grid). diverse: first the best latent of each dominant
    class, in score order, then the rest, so that one class cannot fill the page."""
    k = _checks.positive_int(k, "k")
    scores = stats.scores(metrics)
    by = by or next(name for name in ("MS", "purity", "frequency") if name in scores)
    min_count = stats.top_n if min_count is None else min_count
    order = [j for j in stats.order(by, metrics).tolist() if int(stats.count[j]) >= min_count]
    if diverse and stats.dominant is not None:
        seen, first, rest = set(), [], []
        for j in order:
            c = int(stats.dominant[j])
            (rest if c in seen else first).append(j)
            seen.add(c)
        order = first + rest
    return order[:k]


def latent_cards(stats: LatentStats, images: Any, labels: Any = None, *, latents: Sequence[int] | None = None,
                 k: int = 8, by: str | None = None, ncols: int = 2, sae: SparseAutoencoder | None = None,
                 metrics: dict[str, Any] | None = None, title: str | None = None, **card_options: Any) -> Figure:
    """A matplotlib figure with the cards of `latents` (default: the k `interesting` ones by `by`), `ncols` per row
    (two cards, about 570 px, fit the book's text column at their natural size).

    images, labels, metrics, card_options: as for `CardRenderer`; sae: adds the most similar decoder rows.
    """
    import matplotlib.pyplot as plt   # here, not at import: `import sae_tutorial` stays light

    renderer = CardRenderer(stats, images, labels, metrics=metrics, decoder=None if sae is None else sae.W_dec,
                            **card_options)
    latents = interesting(stats, k, by, metrics=metrics) if latents is None else [stats.latent(j) for j in latents]
    if not latents:
        raise ValueError("no latent to show: none fires on enough images (lower min_count or pass latents=)")
    cards = [renderer.render(j) for j in latents]
    ncols = min(_checks.positive_int(ncols, "ncols"), len(cards))
    nrows = math.ceil(len(cards) / ncols)
    w, h = max(c.width for c in cards), max(c.height for c in cards)
    dpi = 100
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * w / dpi, nrows * h / dpi + (0.4 if title else 0)),
                             dpi=dpi, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, card in zip(axes.flat, cards):
        ax.imshow(card, interpolation="nearest")
    if title:
        fig.suptitle(title)
    fig.subplots_adjust(left=0, right=1, bottom=0, top=1 - (0.4 / (nrows * h / dpi + 0.4) if title else 0),
                        wspace=0.02, hspace=0.02)
    return fig
