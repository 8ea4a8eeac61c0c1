"""SAEBench's custom-SAE interface for any sae_tutorial SAE, mirrored from sae_bench/custom_saes/base_sae.py and
custom_sae_config.py (SAEBench itself is not a dependency).

SAEBench's evaluators read: encode(x) and decode(z) on (..., d_in) activations (they pass (batch, seq, d_in)),
forward(x) = decode(encode(x)), W_enc (d_in, d_sae), W_dec (d_sae, d_in) an nn.Parameter with unit-norm rows,
b_enc, b_dec, `dtype` and `device` attributes kept current by `to()`, check_decoder_norms(), and a `cfg` with
d_in, d_sae, model_name, hook_layer, hook_name and a few SAELens fields.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..sae import SparseAutoencoder


@dataclass
class CustomSAEConfig:
    """The fields of SAEBench's CustomSAEConfig (the core evals read several of them)."""

    model_name: str
    d_in: int
    d_sae: int
    hook_layer: int
    hook_name: str
    context_size: int | None = None
    hook_head_index: int | None = None
    architecture: str = ""
    apply_b_dec_to_input: bool = True
    finetuning_scaling_factor: bool = False
    activation_fn_str: str = ""
    activation_fn_kwargs: dict[str, Any] = field(default_factory=dict)
    prepend_bos: bool = True
    normalize_activations: str = "none"
    dtype: str = ""
    device: str = ""
    model_from_pretrained_kwargs: dict[str, Any] = field(default_factory=dict)
    dataset_path: str = ""
    dataset_trust_remote_code: bool = True
    seqpos_slice: tuple = (None,)
    training_tokens: int = -100_000
    sae_lens_training_version: str | None = None
    neuronpedia_id: str | None = None


class SAEBenchAdapter(nn.Module):
    """`sae` seen through SAEBench's BaseSAE interface; the parameters are shared, not copied (eval mode)."""

    def __init__(self, sae: SparseAutoencoder, model_name: str = "", hook_layer: int = 0,
                 hook_name: str | None = None):
        super().__init__()
        if not isinstance(sae, SparseAutoencoder):
            raise TypeError(f"sae must be an sae_tutorial SparseAutoencoder, got {type(sae).__name__}")
        self.sae = sae.eval()
        k = getattr(sae, "k", None)
        self.cfg = CustomSAEConfig(model_name, d_in=sae.d_in, d_sae=sae.n_latents, hook_layer=hook_layer,
                                   hook_name=hook_name or f"blocks.{hook_layer}.hook_resid_post",
                                   architecture=type(sae).__name__,
                                   activation_fn_kwargs={"k": k} if k is not None else {})
        self._sync()

    def _sync(self) -> None:
        self.dtype: torch.dtype = self.sae.W_dec.dtype
        self.device: torch.device = self.sae.W_dec.device
        self.cfg.dtype, self.cfg.device = str(self.dtype).removeprefix("torch."), str(self.device)

    @property
    def W_dec(self) -> nn.Parameter:
        return self.sae.W_dec                                       # (d_sae, d_in)

    @property
    def W_enc(self) -> Tensor:
        return self.sae.W_enc.T                                     # (d_in, d_sae), a view

    @property
    def b_enc(self) -> nn.Parameter:
        return self.sae.b_enc

    @property
    def b_dec(self) -> nn.Parameter:
        return self.sae.b_dec

    def _flat(self, x: Tensor, width: int) -> tuple[Tensor, tuple[int, ...]]:
        if x.shape[-1] != width:
            raise ValueError(f"last dimension must be {width}, got shape {tuple(x.shape)}")
        return x.reshape(-1, width).to(self.dtype), x.shape[:-1]

    def encode(self, x: Tensor) -> Tensor:
        """Codes (..., d_sae) of activations (..., d_in)."""
        flat, lead = self._flat(x, self.sae.d_in)
        return self.sae.encode(flat).reshape(*lead, self.sae.n_latents)

    def decode(self, feature_acts: Tensor) -> Tensor:
        """Reconstructions (..., d_in) of codes (..., d_sae)."""
        flat, lead = self._flat(feature_acts, self.sae.n_latents)
        if type(self.sae).__name__ in ("SparsemaxSAE", "SparsemaxActSAE"):
            raise TypeError("a SparsemaxSAE's reconstruction rescales by ‖x‖, which codes alone do not carry: "
                            "use forward(x)")
        return self.sae.decode(flat).reshape(*lead, self.sae.d_in)

    def forward(self, x: Tensor) -> Tensor:
        flat, lead = self._flat(x, self.sae.d_in)
        return self.sae(flat).x_hat.reshape(*lead, self.sae.d_in)

    def to(self, *args: Any, **kwargs: Any) -> "SAEBenchAdapter":
        super().to(*args, **kwargs)
        self._sync()
        return self

    @torch.no_grad()
    def check_decoder_norms(self) -> bool:
        """True when every decoder row has unit norm, to SAEBench's tolerance (1e-2 in 16-bit floats, else 1e-5)."""
        norms = torch.linalg.vector_norm(self.W_dec.float(), dim=1)
        tol = 1e-2 if self.W_dec.dtype in (torch.bfloat16, torch.float16) else 1e-5
        return bool(torch.allclose(norms, torch.ones_like(norms), atol=tol))
