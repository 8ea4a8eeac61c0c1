"""sae_tutorial: Top-k sparse autoencoders on frozen vision embeddings, and the paper's sparsity regularizers.

Where things live:
    sae/          the SAE family (TopKSAE, BatchTopKSAE, ReLUSAE, SparsemaxSAE) and the sparse fast path
    losses.py     FVU reconstruction loss and AuxK
    regularizers.py  off-support ℓ1, ℓ1/ℓ2 ratio, batch-active mask (the paper's contribution)
    train.py      TrainConfig and train()
    checkpoint.py safetensors checkpoints, atomic writes
    synthetic.py  ground-truth sparse data and feature recovery
"""
__version__ = "0.1.0"

from . import losses, regularizers, synthetic
from .checkpoint import load_sae as load
from .sae import BatchTopKSAE, ReLUSAE, SAEOutput, SparseAutoencoder, SparsemaxSAE, TopKSAE
from .train import TrainConfig, train

__all__ = ["TopKSAE", "BatchTopKSAE", "ReLUSAE", "SparsemaxSAE", "SparseAutoencoder", "SAEOutput",
           "TrainConfig", "train", "load", "losses", "regularizers", "synthetic", "__version__"]
