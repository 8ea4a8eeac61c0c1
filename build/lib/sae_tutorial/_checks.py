"""Argument checks shared by the library: each raises a ValueError/TypeError that names the argument."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor


def positive_int(value: Any, name: str) -> int:
    """`value` as an int > 0, or a clear error."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return int(value)


def budget(k: Any, n_latents: int, name: str = "k") -> int:
    """A Top-k budget: an int with 0 < k <= n_latents."""
    k = positive_int(k, name)
    if k > n_latents:
        raise ValueError(f"{name}={k} exceeds n_latents={n_latents}")
    return k


def non_negative(value: Any, name: str) -> float:
    """A finite float >= 0 (loss coefficients, thresholds)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def choice(value: Any, name: str, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value


def as_tensor(x: Any, name: str) -> Tensor:
    """A torch tensor view of a tensor or array-like (no copy when possible)."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, (np.ndarray, list, tuple)) or hasattr(x, "__array__"):
        return torch.as_tensor(np.asarray(x))
    raise TypeError(f"{name} must be a tensor or array, got {type(x).__name__}")


def matrix(x: Any, name: str, n_cols: int | None = None, finite: bool = True) -> Tensor:
    """A 2-D floating tensor of shape (N, n_cols) with N > 0; optionally checks for NaN/Inf (one host sync)."""
    x = as_tensor(x, name)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, d), got shape {tuple(x.shape)}")
    if n_cols is not None and x.shape[1] != n_cols:
        raise ValueError(f"{name} has {x.shape[1]} columns, expected {n_cols}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 rows)")
    if not x.is_floating_point():
        x = x.float()
    if finite and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf")
    return x


def same_length(a: Any, b: Any, name_a: str, name_b: str) -> None:
    if len(a) != len(b):
        raise ValueError(f"{name_a} has {len(a)} rows but {name_b} has {len(b)}")
