"""The exact re-expressions every foreign format shares, and the one place an sae_tutorial SAE is built from them.

Our maps (sae/base.py):  h = W_enc (x − b_dec) + b_enc,  z = sparsify(h),  x̂ = z W_dec + b_dec,  W_enc and W_dec (m, d).
A foreign SAE is accepted only when its maths can be written in this form exactly (up to float rounding):

    no pre-encoder subtraction:  W x + b = W (x − b_dec) + (b + W b_dec)          fold b_dec into b_enc
    decoder norms n_i (ReLU, or a library that selects on h_i·n_i):
        z_i d_i = (n_i z_i)(d_i / n_i),  h_i n_i = (n_i W_i)(x − b_dec) + n_i b_i    fold n into the encoder
    "a ≥ θ" on floats = "a > θ⁻" with θ⁻ the next float below θ                   one threshold convention

Anything else (another activation, per-latent thresholds, an encoder that is not one affine map, Top-k over
non-unit decoder rows, ...) raises `UnsupportedSAE`, naming what sae_tutorial lacks: never an approximation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..sae import VARIANTS, SparseAutoencoder

UNIT_TOL = 1e-2   # |‖d_i‖ − 1| up to this: unit rows up to 16-bit rounding or one optimizer step's drift (libraries
                  # such as sparsify re-normalise before each step, so their saved rows are one step off); kept verbatim


class UnsupportedSAE(ValueError):
    """A foreign SAE whose maths sae_tutorial cannot express exactly; the message names what is missing."""


@dataclass
class Affine:
    """An SAE in our convention, in float64 while it is being rewritten; `dtype` is the file's."""

    W_enc: Tensor    # (m, d)
    b_enc: Tensor    # (m,)
    W_dec: Tensor    # (m, d)
    b_dec: Tensor    # (d,)
    dtype: torch.dtype
    steps: list[str] = field(default_factory=list)   # what was rewritten, for the provenance

    @classmethod
    def of(cls, W_enc: Tensor, b_enc: Tensor | None, W_dec: Tensor, b_dec: Tensor | None, source: str) -> "Affine":
        """From (m, d) encoder and decoder matrices; missing biases are zeros. Shapes are checked, naming `source`."""
        if W_enc.ndim != 2 or W_dec.shape != W_enc.shape:
            raise ValueError(f"{source}: encoder {tuple(W_enc.shape)} and decoder {tuple(W_dec.shape)} must both be "
                             "(n_latents, d_in)")
        m, d = W_enc.shape
        b_enc = torch.zeros(m, dtype=W_enc.dtype) if b_enc is None else b_enc
        b_dec = torch.zeros(d, dtype=W_enc.dtype) if b_dec is None else b_dec
        if b_enc.shape != (m,) or b_dec.shape != (d,):
            raise ValueError(f"{source}: biases have shapes {tuple(b_enc.shape)}, {tuple(b_dec.shape)}; "
                             f"expected ({m},) and ({d},)")
        if not W_enc.is_floating_point():
            raise ValueError(f"{source}: weights must be floating point, got {W_enc.dtype}")
        return cls(*(t.detach().cpu().double() for t in (W_enc, b_enc, W_dec, b_dec)), dtype=W_enc.dtype)

    def fold_input_bias(self) -> None:
        """The library encodes W x + b (no subtraction): b_enc ← b_enc + W_enc b_dec."""
        self.b_enc = self.b_enc + self.W_enc @ self.b_dec
        self.steps.append("encoder reads x, not x − b_dec: W_enc·b_dec folded into b_enc")

    def decoder_norms(self) -> Tensor:
        return torch.linalg.vector_norm(self.W_dec, dim=1)

    def fold_decoder_norms(self, why: str) -> Tensor:
        """W_dec rows to unit norm, the norms n moved into the encoder (W_enc, b_enc scaled by n); returns n."""
        n = self.decoder_norms()
        if bool((n <= 0).any()):
            raise UnsupportedSAE(f"{int((n <= 0).sum())} decoder rows are zero: their norms cannot be folded")
        self.W_dec = self.W_dec / n[:, None]
        self.W_enc, self.b_enc = self.W_enc * n[:, None], self.b_enc * n
        self.steps.append(f"decoder norms folded into the encoder ({why}); codes are in units of unit decoder rows")
        return n

    def require_unit_rows(self, what: str) -> None:
        """Top-k and threshold variants select on h itself, so rescaling latents would change the selection:
        their decoder rows must already be unit norm (kept verbatim, not renormalised)."""
        n = self.decoder_norms()
        err = float((n - 1).abs().max())
        if 1e-6 < err <= UNIT_TOL:
            self.steps.append(f"decoder rows within {err:.2g} of unit norm, kept verbatim (the maths is exact; "
                              "sae_tutorial training would re-project them at its first step)")
        if err > UNIT_TOL:
            raise UnsupportedSAE(
                f"{what} has decoder rows of norm {float(n.min()):.4g}..{float(n.max()):.4g} (max |‖d‖−1| = {err:.3g}). "
                "Its selection acts on the raw pre-activations, so the norms cannot be folded into the encoder without "
                "changing which latents fire, and sae_tutorial's budgeted SAEs keep unit decoder rows: not loadable exactly")


def next_below(theta: float, dtype: torch.dtype) -> float:
    """The largest `dtype` float < θ: `a ≥ θ` ⇔ `a > next_below(θ)` for every `a` of that dtype."""
    t = torch.tensor(theta, dtype=dtype)
    return float(torch.nextafter(t, torch.tensor(-torch.inf, dtype=dtype)))


def build(variant: str, a: Affine, provenance: dict[str, Any], *, k: int | None = None,
          threshold: float | None = None, **settings: Any) -> SparseAutoencoder:
    """The sae_tutorial SAE `variant` holding `a` (cast back to the file's dtype), with `provenance` attached.

    threshold: BatchTopK's inference θ (z = ReLU(h)·1[ReLU(h) > θ]); a negative θ keeps every positive h, as the
    libraries' unlearned thresholds do.
    """
    if variant not in VARIANTS:
        raise UnsupportedSAE(f"sae_tutorial has no {variant}; known variants: {sorted(VARIANTS)}")
    m, d = a.W_enc.shape
    cls = VARIANTS[variant]
    sae = cls(d, m, k, **settings) if k is not None else cls(d, m, **settings)
    with torch.no_grad():
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(sae, name).copy_(getattr(a, name))
        if threshold is not None:
            sae.threshold.fill_(threshold)
            sae.threshold_updates.fill_(1 if threshold >= 0 else 0)
    sae = sae.to(a.dtype).eval()
    sae.provenance = {**provenance, "mapped_to": variant, "dtype": str(a.dtype).removeprefix("torch."),
                      "rewrites": list(a.steps)}
    return sae


def provenance(library: str, source: Path, fmt: str, foreign: str, config: dict[str, Any],
               library_version: str | None = None, notes: list[str] | None = None) -> dict[str, Any]:
    """The record `st.load` attaches to an imported SAE as `sae.provenance` (JSON-safe; read by `st.method_card`)."""
    return {"library": library, "library_version": library_version, "format": fmt, "source": str(source),
            "foreign_class": foreign, "config": config, "notes": list(notes or [])}


def integer_k(value: Any, source: str, name: str = "k") -> int:
    """A budget read from a foreign config: a whole number, or UnsupportedSAE naming it."""
    if isinstance(value, Tensor):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value) or value <= 0:
        raise UnsupportedSAE(f"{source}: {name}={value!r}; sae_tutorial's budgets are whole numbers > 0")
    return int(value)
