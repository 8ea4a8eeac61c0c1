"""Latent explorer: what does latent j mean? Its top images, activation histogram, class mix, MS and purity,
similar decoder rows, contrast images, a class search and a UMAP map of the dictionary (design.md §9, chapter 5).

    precompute.py  one streaming pass over the codes -> LatentStats (O(m·top_n) memory), saved beside the SAE
    images.py      image n of a data set, from an array, a list of PIL images or an ImageDataset
    cards.py       a latent's card (one PNG, drawn with PIL), `latent_cards` (a matplotlib grid for the book)
    umap.py        UMAP of the decoder rows (umap-learn) and a crosshair picker widget
    widget.py      LatentExplorer (ipywidgets, live in Jupyter/Colab) and `card_deck` (static, kernel-free)
    evaluation.py  open_evaluation: the explorer on a folder written by `python -m sae_tutorial train` / `evaluate`

    stats = st.explorer.precompute(st.explorer.encode(sae, x), labels, embeddings=x)
    stats.save(st.explorer.stats_path("sae.safetensors"), sae)
    st.explorer.LatentExplorer(sae, stats, images, labels, umap=True)
"""
from .cards import CardRenderer, interesting, latent_cards
from .evaluation import open_evaluation
from .images import ImageSource
from .precompute import LatentStats, encode, load_stats, precompute, stats_path
from .umap import UmapPicker, decoder_umap
from .widget import LatentExplorer, card_deck

__all__ = ["precompute", "encode", "LatentStats", "load_stats", "stats_path", "ImageSource", "CardRenderer",
           "interesting", "latent_cards", "decoder_umap", "UmapPicker", "LatentExplorer", "card_deck",
           "open_evaluation"]
