"""Training: one config dataclass, one loop.

    L = L_rec + α·L_aux + L_sparse + w_t·(λ_off·R_off + λ_rat·R_rat)

L_rec: the variant's `reconstruction_loss` (FVU, losses.py, for most; Multi-TopK, Matryoshka and the Sparsemax SAE
have their own); L_aux: losses.py; L_sparse: the variant's own penalty (ReLU SAE); R_off, R_rat: regularizers.py;
w_t: optional linear warm-up of the regularizers. Adam with the lr scaling of Gao et al. (2024), linear warmup.
Decoder rows: the gradient component parallel to each row is removed before the step, rows renormalised after.

The loop keeps tensor data on the model's device and shuffles it there; it never reads a value back to the
host inside a step. Each step's loss terms go into an on-device buffer that is copied to the host every
`log_every` steps (for the progress bar, the NaN check and the AuxK on/off switch).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from . import _checks
from .checkpoint import atomic_write
from .distributed import Group
from .losses import AUXK_NORMS, auxk_loss, fvu
from .regularizers import PHIS, l1_l2_ratio_grad, off_support_l1_grad
from .sae import SparseAutoencoder

HISTORY_KEYS = ("loss", "fvu", "auxk", "sparsity", "r_off", "r_ratio", "l0", "dead_frac", "lr")
STATE_FILE = "train_state.pt"
# Fields that may change between a checkpoint and its resumption without changing the math.
_RESUME_FREE = {"steps", "epochs", "progress", "checkpoint_dir", "checkpoint_every", "patience", "min_delta",
                "val_every"}


@dataclass
class TrainConfig:
    """Every knob of `train`. Serialised into training checkpoints and method cards.

    auxk_norm defaults to "residual" (openai/sparse_autoencoder, dictionary_learning), not "input":
    "input" (EleutherAI sparsify, our earlier behaviour) divides the AuxK error by the input's variance, so its
    weight is about FVU times that of "residual" (the residual's variance ≈ FVU · the input's): α = 1/32 was tuned by
    Gao et al. for the residual form. Measured on the embedded Fashion-MNIST cache (d = 128; Top-k, 4 epochs, batch
    512, lr 1e-3, dead_after = 20k samples, α = 1/32; dead = never firing on the 10k test images):

        dead fraction / FVU   no AuxK         "input"         "residual"
        m = 2048, k = 16      0.415 / 0.0553  0.479 / 0.0548  0.178 / 0.0546
        m = 4096, k = 8       0.831 / 0.0817  0.920 / 0.0813  0.918 / 0.0809

    "input" revived nothing; "residual" cut the dead fraction by 2.7x at m = 2048 with no cost in FVU, and tied at
    m = 4096, where neither recovers the dead latents in so short a run.
    """

    batch_size: int = 4096            # rows per optimizer step
    steps: int | None = None          # total steps; None: `epochs` passes over tensor data, or until an iterable ends
    epochs: float = 1.0               # used when steps is None and data is a tensor
    lr: float | None = None           # None: 2e-4 / sqrt(m / 2**14) (Gao et al. 2024)
    warmup_steps: int = 100           # linear lr warmup from 0
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 6.25e-10        # as in OpenAI's and MonoLoss's Top-k training
    auxk_alpha: float = 1 / 32        # α, weight of L_aux (0 disables AuxK)
    k_aux: int | None = None          # dead latents used by AuxK per row; None: d_in // 2 (capped at m)
    auxk_norm: str = "residual"       # L_aux over the residual's variance ("residual") or the input's ("input");
                                      # see losses.auxk_loss and the docstring
    dead_after: int | None = None     # samples without firing before a latent is dead; None: min(10M, rows of data)
    lambda_off: float = 0.0           # λ_off, off-support ℓ1 (regularizers.off_support_l1)
    lambda_ratio: float = 0.0         # λ_rat, ℓ1/ℓ2 ratio (regularizers.l1_l2_ratio)
    reg_mask: bool = True             # restrict both regularizers to the batch-active set A
    reg_phi: str = "relu"             # φ in the regularizers: "relu" or "abs"
    reg_warmup_steps: int = 0         # linear warm-up of the regularizer weights
    b_dec_init: str = "geometric_median"  # "geometric_median", "mean" or "none" (keep the current b_dec)
    seed: int = 0                     # data order; model init is the caller's (e.g. TopKSAE(..., seed=))
    autocast: bool = True             # bf16 autocast on CUDA (ignored on CPU)
    compile: bool = False             # torch.compile the forward + loss
    log_every: int = 50               # steps between host syncs (progress bar, NaN check, AuxK switch)
    checkpoint_dir: str | None = None # where train_state.pt lives; an existing one is resumed
    checkpoint_every: int = 0         # steps between checkpoints (0: only at the end)
    progress: bool = True             # tqdm bar
    val_every: int = 100              # steps between held-out FVU checks (only with train(val_data=))
    patience: int | None = None       # early stopping: end after this many held-out checks in a row without an
                                      # improvement; None: never (needs val_data)
    min_delta: float = 0.0            # a check improves when its FVU < (1 - min_delta) · the best so far

    def __post_init__(self) -> None:
        _checks.positive_int(self.batch_size, "batch_size")
        if self.steps is not None:
            _checks.positive_int(self.steps, "steps")
        if _checks.non_negative(self.epochs, "epochs") == 0:
            raise ValueError("epochs must be > 0")
        if self.lr is not None and _checks.non_negative(self.lr, "lr") == 0:
            raise ValueError("lr must be > 0")
        for name in ("warmup_steps", "reg_warmup_steps", "checkpoint_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be an int >= 0, got {getattr(self, name)!r}")
        for name in ("auxk_alpha", "lambda_off", "lambda_ratio", "adam_eps"):
            _checks.non_negative(getattr(self, name), name)
        if self.k_aux is not None:
            _checks.positive_int(self.k_aux, "k_aux")
        if self.dead_after is not None:
            _checks.positive_int(self.dead_after, "dead_after")
        _checks.positive_int(self.log_every, "log_every")
        _checks.positive_int(self.val_every, "val_every")
        if self.patience is not None:
            _checks.positive_int(self.patience, "patience")
        if _checks.non_negative(self.min_delta, "min_delta") >= 1:
            raise ValueError(f"min_delta is a relative improvement and must be < 1, got {self.min_delta}")
        _checks.choice(self.reg_phi, "reg_phi", PHIS)
        _checks.choice(self.auxk_norm, "auxk_norm", AUXK_NORMS)
        _checks.choice(self.b_dec_init, "b_dec_init", ("geometric_median", "mean", "none"))
        self.betas = tuple(self.betas)

    @property
    def regularized(self) -> bool:
        return self.lambda_off > 0 or self.lambda_ratio > 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def default_lr(n_latents: int) -> float:
    """2e-4 / sqrt(m / 2^14): Gao et al.'s scaling of the Adam lr with dictionary size."""
    return 2e-4 / math.sqrt(n_latents / 2**14)


# ---------------------------------------------------------------- data
class _Batches:
    """Batches of the training data on `device`: a resident tensor shuffled per epoch, or an iterable."""

    def __init__(self, data: Any, cfg: TrainConfig, d_in: int, device: torch.device, dtype: torch.dtype,
                 group: Group = Group()):
        self.cfg, self.device, self.dtype, self.d_in, self.group = cfg, device, dtype, d_in, group
        if cfg.batch_size % group.world:
            raise ValueError(f"batch_size={cfg.batch_size} must be divisible by the {group.world} ranks")
        if isinstance(data, (Tensor, list, tuple)) or hasattr(data, "__array__"):
            self.x = _checks.matrix(data, "data", d_in).to(device=device, dtype=dtype)
            self.n_rows = self.x.shape[0]
            if cfg.batch_size > self.n_rows:
                raise ValueError(f"batch_size={cfg.batch_size} exceeds the {self.n_rows} rows of data")
            self.per_epoch = self.n_rows // cfg.batch_size
            self.total = cfg.steps or max(1, math.ceil(cfg.epochs * self.per_epoch))
        elif isinstance(data, Iterable):
            self.x, self.n_rows, self.total = None, None, cfg.steps
            self.it, self.first = iter(data), None
        else:
            raise TypeError(f"data must be a tensor, an array or an iterable of batches, got {type(data).__name__}")

    def _perm(self, epoch: int) -> Tensor:
        gen = torch.Generator(device=self.device).manual_seed(self.cfg.seed * 1_000_003 + epoch)
        return torch.randperm(self.n_rows, generator=gen, device=self.device)

    def sample(self, n: int) -> Tensor:
        """Rows for initialising b_dec: a shuffled slice (tensor data) or the first batch (iterable)."""
        if self.x is not None:
            return self.x[self._perm(-1)[:n]]
        return self._peek()

    def _peek(self) -> Tensor:
        if self.first is None:
            first = next(self.it, None)
            if first is None:
                raise ValueError("data is an empty iterable")
            self.first = self._to_batch(first)
        return self.first

    def _to_batch(self, b: Any) -> Tensor:
        return _checks.matrix(b, "batch", self.d_in, finite=False).to(device=self.device, dtype=self.dtype)

    def _my_rows(self, batch: Tensor) -> Tensor:
        """This rank's contiguous slice of a global batch (all of it on one process)."""
        return batch.chunk(self.group.world)[self.group.rank] if self.group.active else batch

    def from_step(self, start: int) -> Iterator[Tensor]:
        """This rank's part of the global batches for steps start, start+1, ...: resuming at `start` yields what an
        uninterrupted run would, whatever the number of ranks."""
        if self.x is not None:
            B, perm, epoch = self.cfg.batch_size, None, None
            for step in range(start, self.total):
                e, pos = divmod(step, self.per_epoch)
                if e != epoch:
                    perm, epoch = self._perm(e), e
                yield self.x[self._my_rows(perm[pos * B:(pos + 1) * B])]
            return
        first = self._peek()
        rest = (self._to_batch(b) for b in self.it)
        for step, b in enumerate(_chain(first, rest)):
            if self.total is not None and step >= self.total:
                return
            if step >= start:  # resuming an iterable replays and skips the batches already seen
                yield self._my_rows(b)


def _chain(first: Tensor, rest: Iterator[Tensor]) -> Iterator[Tensor]:
    yield first
    yield from rest


# ---------------------------------------------------------------- one step
# Copying the columns of A out of h costs about one (B, m) pass; below this fraction of m it saves more than that
# in the backward GEMM, above it the trainer keeps all of h and excludes the few units outside A instead.
COPY_ACTIVE_BELOW = 0.9


def regularizer_view(sae: SparseAutoencoder, out: Any, mask: bool, group: Group = Group()
                     ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """(h, Top-k indices into h, the columns of the full h it holds, columns of it to exclude): what the regularizers
    act on.

    Masked: the batch-active units A = ∪_b S_b (over the global batch; reading A costs one host sync). When
    |A| < COPY_ACTIVE_BELOW·m only the columns of A are copied out, with the indices remapped into them, so the
    penalty's backward GEMM costs |A|/m of a full one; otherwise all of h, with the units outside A excluded.
    Unmasked (the ablation): all m units.
    """
    if not mask:
        return out.pre_acts, out.indices, None, None
    active = torch.zeros(sae.n_latents, dtype=torch.bool, device=out.pre_acts.device)
    active[out.indices.reshape(-1)] = True
    active = group.any(active)
    cols = active.nonzero().squeeze(1)                             # A, sorted
    if cols.numel() >= COPY_ACTIVE_BELOW * sae.n_latents:
        outside = (~active).nonzero().squeeze(1)
        return out.pre_acts, out.indices, None, (outside if outside.numel() else None)
    return out.pre_acts.index_select(1, cols), torch.searchsorted(cols, out.indices), cols, None


def regularizer_penalty(sae: SparseAutoencoder, x: Tensor, out: Any, cfg: TrainConfig, weight: float,
                        group: Group = Group()) -> tuple[Tensor, dict[str, Tensor]]:
    """weight · (λ_off R_off + λ_rat R_rat) with its gradient to the encoder, and each R for the log.

    Each R and its gradient ∂R/∂h come in closed form (regularizers.py); their weighted sum reaches the encoder in a
    backward of one GEMM over the view's columns (kernels.known_grad_penalty), and no autograd graph is built over
    the (B, m) matrix.
    """
    h, idx, cols, exclude = regularizer_view(sae, out, cfg.reg_mask, group)
    h = h.to(torch.promote_types(h.dtype, torch.float32))         # bf16 under autocast: the penalty in fp32
    value, grad, terms = h.new_zeros(()), None, {}
    for name, lam, fn in (("r_off", cfg.lambda_off, off_support_l1_grad),
                          ("r_ratio", cfg.lambda_ratio, l1_l2_ratio_grad)):
        if lam > 0:
            terms[name], g = fn(h, idx, phi=cfg.reg_phi, exclude=exclude)
            value = value + weight * lam * terms[name]
            grad = g.mul_(weight * lam) if grad is None else grad.add_(g, alpha=weight * lam)
    return sae.attach_penalty(x, value, grad.to(out.pre_acts.dtype), cols), terms


def loss_terms(sae: SparseAutoencoder, x: Tensor, cfg: TrainConfig, dead: Tensor, use_aux: bool, k_aux: int,
               reg_w: float = 1.0, group: Group = Group(), forward: Any = None) -> tuple[Tensor, dict[str, Tensor], Any]:
    """Forward pass and every loss term (0-d tensors): (total loss, terms, SAEOutput).

    The forward always takes the fast path: Top-k values get the sparse backward, and the regularizers hand their
    closed-form gradient to the encoder (see `regularizer_penalty`). With several ranks the FVU-type terms are
    scaled as in distributed.py; `forward` is then the DDP wrapper of `sae`.
    """
    out = (forward or sae)(x, dense_grad=False)
    tv = group.total_variance(x) / group.world                    # W · Σ_r ... / TV: see distributed.py
    zero = x.new_zeros((), dtype=torch.float32)
    rec = sae.reconstruction_loss(x, out, tv)
    own = type(sae).reconstruction_loss is not SparseAutoencoder.reconstruction_loss
    terms = {"fvu": fvu(x, out.x_hat.detach(), tv) if own else rec, "auxk": zero,
             "sparsity": sae.sparsity_loss(out).float(), "r_off": zero, "r_ratio": zero}
    if use_aux:
        aux_tv = tv if cfg.auxk_norm == "input" else group.total_variance((x - out.x_hat).detach()) / group.world
        terms["auxk"] = auxk_loss(sae, x, out, dead, k_aux, aux_tv, cfg.auxk_norm)
    penalty = zero
    if cfg.regularized:
        penalty, reg_terms = regularizer_penalty(sae, x, out, cfg, reg_w, group)
        terms.update(reg_terms)
    loss = rec + cfg.auxk_alpha * terms["auxk"] + terms["sparsity"] + penalty
    return loss, terms, out


def optimizer_step(sae: SparseAutoencoder, opt: torch.optim.Optimizer, loss: Tensor) -> None:
    """Backward, remove the decoder gradient parallel to each row, Adam step, renormalise decoder rows."""
    loss.backward()
    sae.remove_parallel_grad()
    opt.step()
    opt.zero_grad(set_to_none=True)
    sae.normalize_decoder()


def make_optimizer(sae: SparseAutoencoder, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    """Adam; the fused kernel where the device supports it (on CPU ~10x faster than the per-tensor loop)."""
    fused = sae.W_enc.device.type in ("cpu", "cuda")
    return torch.optim.Adam(sae.parameters(), lr=lr, betas=cfg.betas, eps=cfg.adam_eps, fused=fused)


def resolve_k_aux(k_aux: int | None, d_in: int, n_latents: int) -> int:
    """AuxK's budget: TrainConfig.k_aux, or d_in // 2 when None; capped at the number of latents."""
    return min(k_aux or max(1, d_in // 2), n_latents)


def _lr_at(step: int, lr: float, warmup: int) -> float:
    return lr * min(1.0, (step + 1) / warmup) if warmup > 0 else lr


# ---------------------------------------------------------------- held-out checks
def checks_without_improvement(val_fvu: list[float], min_delta: float) -> int:
    """Held-out checks since the last improvement: check t improves when FVU_t < (1 - min_delta) · best_{<t}."""
    best, since = math.inf, 0
    for f in val_fvu:
        best, since = (f, 0) if f < (1 - min_delta) * best else (best, since + 1)
    return since


class HeldOutFVU:
    """The FVU of an SAE on fixed held-out rows x, Σ‖x − x̂‖² / Σ‖x − x̄‖² over all of them (metrics.fvu), in
    float64. The rows' float64 copy and the denominator are computed once, so each check of training costs one
    forward pass and one float64 pass over the residual."""

    def __init__(self, x: Tensor, chunk_size: int = 8192) -> None:
        self.x, self.chunk_size = x, chunk_size
        x64 = x.double()
        self.x64 = x64.split(chunk_size)
        self.tv = float((x64 - x64.mean(0)).pow(2).sum().clamp_min(1e-300))

    def __call__(self, sae: SparseAutoencoder) -> float:
        was_training, sse = sae.training, 0.0
        sae.eval()
        with torch.no_grad():
            for xb, xb64 in zip(self.x.split(self.chunk_size), self.x64):
                r = (xb64 - sae(xb).x_hat.double()).flatten()
                sse += float(r @ r)
        sae.train(was_training)
        return sse / self.tv


def held_out_fvu(sae: SparseAutoencoder, x: Tensor, chunk_size: int = 8192) -> float:
    """FVU of `sae` (in eval mode) on the rows of x, Σ‖x − x̂‖² / Σ‖x − x̄‖² over all of them (metrics.fvu)."""
    return HeldOutFVU(x, chunk_size)(sae)


# ---------------------------------------------------------------- checkpoints
def _save_state(path: Path, sae: SparseAutoencoder, opt: torch.optim.Optimizer, cfg: TrainConfig, step: int,
                since_fired: Tensor, any_dead: bool, history: dict[str, list], stopped: bool = False) -> None:
    state = {"variant": type(sae).__name__, "sae_config": sae.config(), "train_config": cfg.to_dict(),
             "sae": {k: v.detach().cpu() for k, v in sae.state_dict().items()},
             "optimizer": opt.state_dict(), "step": step, "since_fired": since_fired.cpu(),
             "any_dead": any_dead, "history": history, "stopped": stopped}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def _load_state(path: Path, sae: SparseAutoencoder, cfg: TrainConfig) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the file is unusable
        raise ValueError(f"{path}: cannot read the training checkpoint (corrupt or truncated?): {e}") from e
    if state["variant"] != type(sae).__name__ or state["sae_config"] != sae.config():
        raise ValueError(f"{path} was written for a {state['variant']} {state['sae_config']}, "
                         f"not this {type(sae).__name__} {sae.config()}; use another checkpoint_dir")
    saved = {k: v for k, v in state["train_config"].items() if k not in _RESUME_FREE}
    mine = {k: v for k, v in cfg.to_dict().items() if k not in _RESUME_FREE}
    saved["betas"] = tuple(saved["betas"])
    if saved != mine:
        diff = sorted(k for k in mine if saved.get(k) != mine[k])
        raise ValueError(f"{path} was written with a different TrainConfig (fields {diff}); "
                         "use another checkpoint_dir to start afresh")
    return state


# ---------------------------------------------------------------- the loop
def train(sae: SparseAutoencoder, data: Any, config: TrainConfig | None = None, *,
          val_data: Any = None) -> dict[str, list]:
    """Train `sae` in place on `data` and return its history.

    data: a (N, d) tensor or array (kept on the model's device, reshuffled each epoch), or an iterable of
        (B, d) batches. history: {"step": [...], "loss": [...], "fvu", "auxk", "sparsity", "r_off",
        "r_ratio", "l0", "dead_frac", "lr"}, one entry per step.
    val_data: held-out (N_val, d) rows. Every `config.val_every` steps their FVU (`held_out_fvu`) goes into
        history["val_step"] / history["val_fvu"]; with `config.patience`, training ends once `patience` checks in a
        row bring no improvement (`checks_without_improvement`), else after `steps` / `epochs` as usual.
    With `config.checkpoint_dir` set, an existing checkpoint there is resumed: on CPU with the same seed the
    final weights equal those of an uninterrupted run.
    """
    cfg = config or TrainConfig()
    if not isinstance(sae, SparseAutoencoder):
        raise TypeError(f"sae must be an sae_tutorial SparseAutoencoder, got {type(sae).__name__}")
    if cfg.regularized and not sae.has_fixed_k:
        raise ValueError(f"lambda_off/lambda_ratio need a fixed-k variant (TopKSAE), not {type(sae).__name__}")
    device, dtype = sae.W_enc.device, sae.W_enc.dtype
    m = sae.n_latents
    group = Group.current()
    batches = _Batches(data, cfg, sae.d_in, device, dtype, group)
    dead_after = cfg.dead_after or min(10_000_000, batches.n_rows or 10_000_000)
    k_aux = resolve_k_aux(cfg.k_aux, sae.d_in, m)
    lr = cfg.lr or default_lr(m)
    use_aux_variant = sae.uses_auxk and cfg.auxk_alpha > 0
    if cfg.patience is not None and val_data is None:
        raise ValueError("TrainConfig.patience stops on the held-out FVU: pass train(..., val_data=)")
    x_val = None if val_data is None else _checks.matrix(val_data, "val_data", sae.d_in).to(device=device, dtype=dtype)
    val_fvu = None if x_val is None else HeldOutFVU(x_val)

    opt = make_optimizer(sae, cfg, lr)
    since_fired = torch.zeros(m, dtype=torch.long, device=device)  # samples since each latent last fired
    history: dict[str, list] = {"step": [], **{k: [] for k in HISTORY_KEYS}}
    if x_val is not None:
        history.update(val_step=[], val_fvu=[])
    start, any_dead, stopped = 0, False, False
    state_path = Path(cfg.checkpoint_dir) / STATE_FILE if cfg.checkpoint_dir else None
    writer = group.rank == 0                                       # only rank 0 writes checkpoints and shows progress
    if state_path is not None and state_path.exists():
        state = _load_state(state_path, sae, cfg)
        sae.load_state_dict(state["sae"])
        opt.load_state_dict(state["optimizer"])
        since_fired.copy_(state["since_fired"])
        start, any_dead, history = state["step"], state["any_dead"], state["history"]
        stopped = state.get("stopped", False)
        if x_val is not None:
            history.setdefault("val_step", []), history.setdefault("val_fvu", [])
    elif cfg.b_dec_init != "none":
        sae.init_b_dec(batches.sample(8192), cfg.b_dec_init)

    step_fn = torch.compile(loss_terms) if cfg.compile else loss_terms
    forward = None
    if group.active:  # gradients are averaged over ranks by DDP; parameters start equal (broadcast by DDP)
        from torch.nn.parallel import DistributedDataParallel
        forward = DistributedDataParallel(sae, device_ids=[device.index] if device.type == "cuda" else None)
    use_cuda_amp = cfg.autocast and device.type == "cuda"
    rows: list[Tensor] = []  # per-step history rows, still on the device
    lrs: list[float] = []    # kept on the host: a host->device copy per step would sync on CUDA

    def flush(step: int, refresh_dead: bool) -> None:
        """Copy the buffered history to the host; at log boundaries also refresh the AuxK switch."""
        nonlocal any_dead
        if rows:
            values = (group.sum(torch.stack(rows)) / group.world).tolist()  # the one host sync per log interval
            for i, (row, lr_i) in enumerate(zip(values, lrs)):
                history["step"].append(step - len(values) + i + 1)
                for key, v in zip(HISTORY_KEYS, [*row, lr_i]):
                    history[key].append(v)
            rows.clear()
            lrs.clear()
            if not math.isfinite(history["loss"][-1]):
                raise FloatingPointError(f"training diverged: loss is {history['loss'][-1]} at step {step}; "
                                         "lower lr or check the data")
            bar.set_postfix(fvu=f"{history['fvu'][-1]:.4f}", l0=f"{history['l0'][-1]:.1f}",
                            dead=f"{history['dead_frac'][-1]:.3f}")
        if refresh_dead:  # only at multiples of log_every, so checkpointing never changes the math
            any_dead = bool((since_fired >= dead_after).any())

    sae.train()
    bar = tqdm(total=batches.total, initial=start, disable=not (cfg.progress and writer),
               desc=f"train {type(sae).__name__}")
    step = done = start
    for step, x in enumerate(() if stopped else batches.from_step(start), start=start):
        lr_t = _lr_at(step, lr, cfg.warmup_steps)
        for param_group in opt.param_groups:
            param_group["lr"] = lr_t
        reg_w = min(1.0, (step + 1) / cfg.reg_warmup_steps) if cfg.reg_warmup_steps else 1.0
        dead = since_fired >= dead_after
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_cuda_amp):
            loss, terms, out = step_fn(sae, x, cfg, dead, use_aux_variant and any_dead, k_aux, reg_w, group, forward)
        optimizer_step(sae, opt, loss)
        with torch.no_grad():
            since_fired.add_(x.shape[0] * group.world).masked_fill_(group.any(out.fired()), 0)
            rows.append(torch.stack([loss.detach().float(), *(terms[k].detach().float() for k in HISTORY_KEYS[1:6]),
                                     out.l0(), dead.float().mean()]))
        lrs.append(lr_t)
        bar.update(1)
        done = step + 1
        if done % cfg.log_every == 0:
            flush(step, refresh_dead=True)
        if x_val is not None and done % cfg.val_every == 0:
            history["val_step"].append(done)
            history["val_fvu"].append(val_fvu(sae))
            bar.set_postfix_str(f"held-out FVU {history['val_fvu'][-1]:.4f}", refresh=False)
            stopped = (cfg.patience is not None
                       and checks_without_improvement(history["val_fvu"], cfg.min_delta) >= cfg.patience)
        if state_path is not None and cfg.checkpoint_every and done % cfg.checkpoint_every == 0:
            flush(step, refresh_dead=False)
            if writer:
                _save_state(state_path, sae, opt, cfg, done, since_fired, any_dead, history, stopped)
        if stopped:
            break
    flush(step, refresh_dead=False)
    bar.close()
    if state_path is not None and writer:
        _save_state(state_path, sae, opt, cfg, done, since_fired, any_dead, history, stopped)
    sae.eval()
    if not history["step"]:
        raise ValueError("no training step was run: data yielded no batch")
    return history
