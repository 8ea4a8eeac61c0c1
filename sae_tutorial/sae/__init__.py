"""The SAE family behind one interface (see base.py for the shared maps)."""
from .base import SAEOutput, SparseAutoencoder, geometric_median
from .matryoshka import MatryoshkaSAE
from .multitopk import MultiTopKSAE
from .relu import ReLUSAE
from .sparsemax import SparsemaxActSAE, SparsemaxSAE, sparsemax_threshold
from .topk import BatchTopKSAE, TopKSAE

VARIANTS: dict[str, type[SparseAutoencoder]] = {
    cls.__name__: cls for cls in (TopKSAE, BatchTopKSAE, ReLUSAE, SparsemaxSAE, SparsemaxActSAE, MultiTopKSAE,
                                  MatryoshkaSAE)
}

__all__ = ["SAEOutput", "SparseAutoencoder", "TopKSAE", "BatchTopKSAE", "ReLUSAE", "SparsemaxSAE",
           "SparsemaxActSAE", "MultiTopKSAE", "MatryoshkaSAE", "VARIANTS", "geometric_median", "sparsemax_threshold"]
