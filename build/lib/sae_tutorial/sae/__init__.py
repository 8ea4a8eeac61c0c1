"""The SAE family behind one interface (see base.py for the shared maps)."""
from .base import SAEOutput, SparseAutoencoder, geometric_median
from .relu import ReLUSAE
from .sparsemax import SparsemaxSAE, sparsemax_threshold
from .topk import BatchTopKSAE, TopKSAE

VARIANTS: dict[str, type[SparseAutoencoder]] = {
    cls.__name__: cls for cls in (TopKSAE, BatchTopKSAE, ReLUSAE, SparsemaxSAE)
}

__all__ = ["SAEOutput", "SparseAutoencoder", "TopKSAE", "BatchTopKSAE", "ReLUSAE", "SparsemaxSAE",
           "VARIANTS", "geometric_median", "sparsemax_threshold"]
