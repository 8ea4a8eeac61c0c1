"""A map of the dictionary: UMAP of the decoder rows, and a widget that picks a latent on it.

`decoder_umap` embeds the m unit decoder rows in 2-D with umap-learn (cosine metric: rows pointing the same way land
together). `UmapPicker` shows the map as a PNG, coloured by dominant class or by a score such as MS, with a
crosshair moved by two sliders: the latent nearest the crosshair is picked. Sliders and images are core ipywidgets,
which render offline (plot widgets such as ipympl or plotly load their front-ends from CDNs).

umap-learn compiles its numba kernels in every new process: with the neighbour graph computed here, that costs
about ten seconds on a CPU, once per process.
"""
from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as widgets
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from PIL import Image, ImageDraw

from .. import _checks
from ..sae import SparseAutoencoder
from .cards import class_color

Coloring = tuple[np.ndarray, Sequence[str] | None]   # (values (m,), class names) or (scores (m,), None)


def cosine_knn(rows: torch.Tensor, k: int, block: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of each row under the cosine distance 1 − cos, the row itself first:
    (indices (m, k) int64, distances (m, k) float32), in blocks of `block` rows (memory O(block·m))."""
    unit = F.normalize(rows.float(), dim=1)                                       # (m, d)
    idx, dist = [], []
    for s in range(0, unit.shape[0], block):
        d = 1 - unit[s:s + block] @ unit.T                                        # (b, m)
        d[torch.arange(d.shape[0]), torch.arange(s, s + d.shape[0])] = -1.0       # itself first
        top = d.topk(k, dim=1, largest=False)
        idx.append(top.indices)
        dist.append(top.values.clamp_min(0))
    return torch.cat(idx).numpy(), torch.cat(dist).numpy()


def decoder_umap(decoder: SparseAutoencoder | torch.Tensor | np.ndarray, *, n_neighbors: int = 15,
                 min_dist: float = 0.1, seed: int = 0) -> np.ndarray:
    """2-D UMAP coordinates (m, 2) of the decoder rows (an SAE or its W_dec (m, d)), cosine metric, seeded.

    The neighbour graph is computed exactly here (`cosine_knn`, one GEMM) and handed to umap-learn, which then skips
    its own search: that search's numba kernels are compiled in every new process (no NUMBA_CACHE_DIR helps), and
    above 4096 rows it would run NN-descent.
    """
    try:
        import umap
    except ImportError as e:
        raise ImportError("the UMAP view needs umap-learn: pip install 'sae-tutorial[explorer]'") from e
    W = decoder.W_dec if isinstance(decoder, SparseAutoencoder) else decoder
    W = _checks.matrix(W.detach().cpu() if isinstance(W, torch.Tensor) else W, "decoder")
    n_neighbors = _checks.positive_int(n_neighbors, "n_neighbors")
    if W.shape[0] <= n_neighbors:
        raise ValueError(f"UMAP needs more than n_neighbors={n_neighbors} decoder rows, got {W.shape[0]}")
    knn_indices, knn_dists = cosine_knn(W, n_neighbors)
    reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=min_dist, metric="cosine", random_state=seed, n_jobs=1,
                        precomputed_knn=(knn_indices, knn_dists, None))
    with warnings.catch_warnings():   # "no search index: transform() unavailable": we never transform new rows
        warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\]", category=UserWarning)
        return reducer.fit_transform(F.normalize(W.float(), dim=1).numpy()).astype(np.float32)


class UmapPicker(widgets.VBox):
    """A UMAP scatter with a crosshair: moving the x/y sliders picks the nearest latent and calls on_pick(latent).

    colorings: name -> (class ids (m,), class names) or (scores (m,), None); −1 / NaN are drawn grey.
    """

    def __init__(self, coords: Any, colorings: dict[str, Coloring], on_pick: Callable[[int], None],
                 size: tuple[int, int] = (420, 340)) -> None:
        self.coords = np.asarray(_checks.matrix(coords, "coords", 2), np.float32)
        if not colorings:
            raise ValueError("colorings must name at least one colouring")
        for name, (values, _) in colorings.items():
            if np.shape(values) != (len(self.coords),):
                raise ValueError(f"colouring {name!r} must have shape ({len(self.coords)},), got {np.shape(values)}")
        self.colorings, self.on_pick, self.size = colorings, on_pick, size
        self.latent, self._quiet = 0, False
        lo, hi = self.coords.min(0), self.coords.max(0)
        wide = widgets.Layout(width=f"{size[0]}px")                  # the controls as wide as the map, no wider
        self.color_by = widgets.Dropdown(options=list(colorings), description="colour by", layout=wide)
        self.x = widgets.FloatSlider(min=float(lo[0]), max=float(hi[0]), step=float(hi[0] - lo[0]) / 200 or 0.01,
                                     description="UMAP x", continuous_update=False, readout_format=".2f", layout=wide)
        self.y = widgets.FloatSlider(min=float(lo[1]), max=float(hi[1]), step=float(hi[1] - lo[1]) / 200 or 0.01,
                                     description="UMAP y", continuous_update=False, readout_format=".2f", layout=wide)
        self.image = widgets.Image(format="png", layout=wide)
        self.caption = widgets.HTML()
        self._draw_base()
        self.color_by.observe(self._recolor, "value")
        self.x.observe(self._crosshair_moved, "value")
        self.y.observe(self._crosshair_moved, "value")
        super().__init__([self.color_by, self.image, self.x, self.y, self.caption])
        self.highlight(0)

    def _draw_base(self) -> None:
        """Render the scatter for the current colouring once; remember how data coordinates map to pixels."""
        values, names = self.colorings[self.color_by.value]
        dpi = 100
        fig = Figure(figsize=(self.size[0] / dpi, self.size[1] / dpi), dpi=dpi)   # off pyplot: never auto-shown
        canvas, ax = FigureCanvasAgg(fig), fig.add_subplot()
        s = max(1.0, 12.0 / np.sqrt(len(self.coords) / 500))                  # smaller dots for bigger maps
        grey = np.array(class_color(-1)) / 255
        if names is None:
            v = np.asarray(values, np.float64)
            ok = ~np.isnan(v)
            ax.scatter(*self.coords[~ok].T, s=s / 2, color=grey, linewidths=0)   # undefined (dead) underneath
            points = ax.scatter(*self.coords[ok].T, s=s, c=v[ok], cmap="viridis", linewidths=0)
            fig.colorbar(points, ax=ax, fraction=0.05, pad=0.02).ax.tick_params(labelsize=6)
        else:
            ids = np.asarray(values, np.int64)
            ax.scatter(*self.coords[ids < 0].T, s=s / 2, color=grey, linewidths=0)
            ax.scatter(*self.coords[ids >= 0].T, s=s, linewidths=0,
                       c=np.array([class_color(int(c)) for c in ids[ids >= 0]]) / 255)
            present = sorted({int(c) for c in ids if c >= 0})
            handles = [Line2D([], [], ls="", marker="o", ms=4, color=np.array(class_color(c)) / 255,
                              label=names[c] if c < len(names) else f"class {c}") for c in present[:12]]
            ax.legend(handles=handles, fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False,
                      handletextpad=0.1, borderaxespad=0.2)
        ax.set(xticks=[], yticks=[])
        ax.set_title("decoder rows (UMAP); grey: dead", fontsize=8)
        fig.tight_layout(pad=0.4)
        canvas.draw()
        self.base = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba()).convert("RGB")
        (x0, y0), (x1, y1) = ax.transData.transform([[0.0, 0.0], [1.0, 1.0]])
        height = self.base.height
        self._to_pixel = (x1 - x0, x0, -(y1 - y0), height - y0)                   # px = a·x + b, py = c·y + d

    def _recolor(self, _: Any) -> None:
        self._draw_base()
        self.highlight(self.latent)

    def _pixel(self, x: float, y: float) -> tuple[float, float]:
        a, b, c, d = self._to_pixel
        return a * x + b, c * y + d

    def nearest(self, x: float, y: float) -> int:
        """The latent whose UMAP point is nearest (x, y)."""
        return int(np.argmin(((self.coords - np.array([x, y], np.float32)) ** 2).sum(1)))

    def _crosshair_moved(self, _: Any) -> None:
        if not self._quiet:
            self.on_pick(self.nearest(self.x.value, self.y.value))

    def highlight(self, latent: int) -> None:
        """Mark `latent` on the map and move the crosshair onto it (without picking again)."""
        self.latent = latent
        x, y = (float(v) for v in self.coords[latent])
        self._quiet = True
        try:
            self.x.value, self.y.value = x, y
        finally:
            self._quiet = False
        image = self.base.copy()
        draw = ImageDraw.Draw(image)
        px, py = self._pixel(x, y)
        draw.line([px, 0, px, image.height], fill=(150, 150, 150), width=1)
        draw.line([0, py, image.width, py], fill=(150, 150, 150), width=1)
        draw.ellipse([px - 7, py - 7, px + 7, py + 7], outline=(220, 30, 30), width=3)
        buf = io.BytesIO()
        image.save(buf, format="PNG", compress_level=6)
        self.image.value = buf.getvalue()
        self.caption.value = f"<small>crosshair on latent <b>#{latent}</b>; move it to pick the nearest latent</small>"
