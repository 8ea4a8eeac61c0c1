"""`python -m sae_tutorial train`: train an SAE, evaluate it on held-out rows, write a complete folder."""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from ._common import card_source, ranks, refuse_existing, report_table, staged

# The default budget: train until the held-out FVU stops improving (TrainConfig.patience / min_delta / val_every).
VAL_FRACTION, VAL_EVERY, PATIENCE, MIN_DELTA, MAX_EPOCHS = 0.05, 50, 5, 0.005, 200
BUDGET_HELP = (f"Default budget: train until the held-out FVU stops improving, i.e. until {PATIENCE} checks in a row "
               f"({VAL_EVERY} steps apart) each fail to lower the best FVU so far by {100 * MIN_DELTA:g} %, for at "
               f"most {MAX_EPOCHS} epochs. --steps or --epochs train for exactly that long instead (add --patience "
               "to stop early within it).")


def add_parser(commands: Any) -> None:
    from ..sae import VARIANTS

    p = commands.add_parser("train", help="train an SAE on cached embeddings (data-parallel under torchrun)",
                            description="Train an SAE, evaluate it on held-out rows and write a folder that holds "
                                        "the weights, the full TrainConfig, the data's provenance, the held-out "
                                        "split, the history, the report and the method card (also its README.md). "
                                        + BUDGET_HELP)
    p.add_argument("--data", required=True,
                   help="embedding cache folder (python -m sae_tutorial embed) or a .pt/.npy/.safetensors file")
    p.add_argument("--out", required=True,
                   help="the SAE folder to write (hub-ready: loads with st.load and from_pretrained); a .safetensors "
                        "path writes only the checkpoint, with the method card beside it")
    p.add_argument("--overwrite", action="store_true", help="replace an --out that already holds an SAE or files")
    p.add_argument("--variant", default="TopKSAE", choices=sorted(VARIANTS), help="SAE variant (default: TopKSAE)")
    p.add_argument("--n-latents", type=int, default=8192, help="dictionary size m (default: 8192)")
    p.add_argument("--k", type=int, default=64, help="active latents per row, for variants with a fixed k "
                                                    "(default: 64)")
    p.add_argument("--batch-size", type=int, default=2048, help="global batch, split over the ranks (default: 2048)")
    p.add_argument("--steps", type=int, help="train exactly this many steps (overrides the default budget)")
    p.add_argument("--epochs", type=float, help="train exactly this many passes over the training rows (overrides "
                                                "the default budget)")
    p.add_argument("--patience", type=int, help=f"stop after this many held-out checks without improvement (default: "
                                                f"{PATIENCE} unless --steps/--epochs is given; 0: never stop early)")
    p.add_argument("--min-delta", type=float, default=MIN_DELTA,
                   help=f"relative FVU improvement a held-out check must make (default: {MIN_DELTA})")
    p.add_argument("--val-every", type=int, default=VAL_EVERY,
                   help=f"steps between held-out FVU checks (default: {VAL_EVERY})")
    p.add_argument("--val-fraction", type=float,
                   help=f"fraction of --data held out (drawn with --seed) for the checks and the report (default: "
                        f"{VAL_FRACTION}; 0: none, the report is then on the training rows)")
    p.add_argument("--val-data", help="held-out rows from another cache or file instead of a split of --data")
    p.add_argument("--lr", type=float, help="Adam learning rate (default: 2e-4 / sqrt(n_latents / 2**14))")
    p.add_argument("--lambda-off", type=float, default=0.0, help="λ_off, weight of the off-support ℓ1 (default: 0)")
    p.add_argument("--lambda-ratio", type=float, default=0.0, help="λ_ratio, weight of the ℓ1/ℓ2 ratio (default: 0)")
    p.add_argument("--no-mask", action="store_true", help="regularize all units (the ablation; default: the "
                                                          "batch-active units only)")
    p.add_argument("--no-normalize", action="store_true", help="keep embeddings as stored (default: L2-normalise)")
    p.add_argument("--top-n", type=int, default=50, help="top images per latent for purity; latents firing on fewer "
                                                         "held-out rows count as rare (default: 50)")
    p.add_argument("--seed", type=int, default=0, help="seed of the SAE's init, the data order and the split "
                                                       "(default: 0)")
    p.add_argument("--compile", action="store_true", help="torch.compile the forward and loss")
    p.add_argument("--checkpoint-dir", help="resumable training state (resumed when present)")
    p.add_argument("--checkpoint-every", type=int, default=0,
                   help="steps between training-state checkpoints (default: 0, only at the end)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def _checked(args: argparse.Namespace) -> None:
    """Bad values, named by their flag, before any data is read."""
    from ..sae import VARIANTS

    for flag, value in (("--n-latents", args.n_latents), ("--k", args.k), ("--batch-size", args.batch_size),
                        ("--steps", args.steps), ("--val-every", args.val_every), ("--top-n", args.top_n)):
        if value is not None and value <= 0:
            raise ValueError(f"{flag} must be > 0, got {value}")
    if VARIANTS[args.variant].takes_k and args.k > args.n_latents:
        raise ValueError(f"--k {args.k} exceeds --n-latents {args.n_latents}: a row cannot use more latents than "
                         "the dictionary has")
    for flag, value in (("--lambda-off", args.lambda_off), ("--lambda-ratio", args.lambda_ratio),
                        ("--min-delta", args.min_delta), ("--patience", args.patience)):
        if value is not None and value < 0:
            raise ValueError(f"{flag} must be >= 0, got {value}")
    if args.epochs is not None and args.epochs <= 0:
        raise ValueError(f"--epochs must be > 0, got {args.epochs}")
    if args.val_data and args.val_fraction is not None:
        raise ValueError("give --val-data or --val-fraction, not both")
    if args.val_fraction is not None and not 0 <= args.val_fraction < 1:
        raise ValueError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")


def _budget(args: argparse.Namespace, has_val: bool) -> dict[str, Any]:
    """TrainConfig's steps / epochs / patience from the flags (module constants for the default budget)."""
    explicit = args.steps is not None or args.epochs is not None
    patience = args.patience if args.patience is not None else (None if explicit else PATIENCE)
    patience = patience or None
    if patience and not has_val:
        raise ValueError("the default budget stops on the held-out FVU: keep a held-out split (--val-fraction > 0 "
                         "or --val-data), or give --steps or --epochs")
    epochs = args.epochs if args.epochs is not None else (1.0 if args.steps is not None else float(MAX_EPOCHS))
    return {"steps": args.steps, "epochs": epochs, "patience": patience, "min_delta": args.min_delta,
            "val_every": args.val_every}


def _stop_reason(history: dict[str, list], cfg: Any, total: int) -> str:
    from ..train import checks_without_improvement

    steps = len(history["step"])
    if cfg.patience and checks_without_improvement(history["val_fvu"], cfg.min_delta) >= cfg.patience:
        return (f"plateau: {cfg.patience} held-out checks ({cfg.val_every} steps apart) without a "
                f"{100 * cfg.min_delta:g} % improvement")
    if cfg.patience:
        return f"the budget's end ({total} steps) before a plateau"
    return f"the requested budget ({steps} steps)"


def _lambda_terms(history: dict[str, list], cfg: Any) -> str:
    """λ · R of each active regularizer, R averaged over the last 50 training steps."""
    tail = slice(-min(50, len(history["step"])), None)

    def mean(key: str) -> float:
        values = history[key][tail]
        return sum(values) / len(values)
    terms = [f"λ_{name} {lam:g} × R_{name} {mean(key):.4g} = {lam * mean(key):.4g}"
             for name, key, lam in (("off", "r_off", cfg.lambda_off), ("ratio", "r_ratio", cfg.lambda_ratio)) if lam]
    return ("; ".join(terms) or "none (λ_off = λ_ratio = 0)") + \
        f"  [training FVU {mean('fvu'):.4g}; means over the last {len(history['step'][tail])} steps]"


def run(args: argparse.Namespace) -> int:
    from .. import TrainConfig, sae as variants, train
    from ..metrics import evaluate
    from ..runs import held_out_split, read_source

    _checked(args)
    out = Path(args.out)
    refuse_existing(out, args.overwrite)
    normalize = not args.no_normalize
    with ranks(args.device) as (rank, device):
        data = read_source(args.data, normalize, "--data")
        d = data.x.shape[1]
        split = None
        if args.val_data:
            val = read_source(args.val_data, normalize, "--val-data")
            if val.x.shape[1] != d:
                raise ValueError(f"--val-data {args.val_data} has rows of dimension {val.x.shape[1]} but --data "
                                 f"{args.data} has {d}")
            fit = data
        elif (args.val_fraction if args.val_fraction is not None else VAL_FRACTION) > 0:
            fraction = args.val_fraction if args.val_fraction is not None else VAL_FRACTION
            train_rows, val_rows = held_out_split(data.x.shape[0], fraction, args.seed)
            fit, val = data.subset(train_rows), data.subset(val_rows)
            split = {"val_fraction": fraction, "seed": args.seed, "rule": "runs.held_out_split: the first "
                     "round(fraction · N) rows of torch.randperm(N) under manual_seed(seed)",
                     "n_train": len(train_rows), "n_val": len(val_rows), "val_rows": val_rows}
        else:
            fit, val = data, None
        cls = variants.VARIANTS[args.variant]
        sae = cls(d, args.n_latents, seed=args.seed, **({"k": args.k} if cls.takes_k else {})).to(device)
        cfg = TrainConfig(batch_size=args.batch_size, lr=args.lr, lambda_off=args.lambda_off,
                          lambda_ratio=args.lambda_ratio, reg_mask=not args.no_mask, seed=args.seed,
                          compile=args.compile, checkpoint_dir=args.checkpoint_dir,
                          checkpoint_every=args.checkpoint_every, progress=not args.no_progress,
                          **_budget(args, val is not None))
        history = train(sae, fit.x.to(device), cfg, val_data=None if val is None else val.x.to(device))
    if rank != 0:
        return 0
    total = cfg.steps or max(1, int(cfg.epochs * (fit.x.shape[0] // cfg.batch_size) + 0.999999))
    report_rows = val if val is not None else fit
    report = evaluate(sae, report_rows.x, labels=report_rows.labels, top_n=args.top_n, seed=args.seed)
    where = ("held-out" if val is not None else "training (no held-out split)")
    evaluated_on = (f"{where}: {report['n_samples']} rows of "
                    + (f"{args.data} (split {split['val_fraction']:g} with seed {args.seed})" if split else
                       (args.val_data if val is not None else args.data)))
    stop = _stop_reason(history, cfg, total)
    record = {
        "train": {**data.provenance, "rows_used": fit.x.shape[0]},
        "eval": {**report_rows.provenance, "rows_used": report_rows.x.shape[0],
                 **({"subset": "split.safetensors"} if split else {})},
        "split": None if split is None else {k: v for k, v in split.items() if k != "val_rows"},
    }
    if split:
        from ..runs import indices_sha256
        record["split"]["val_indices_sha256"] = indices_sha256(split["val_rows"])
    split_text = (f"train: {fit.x.shape[0]} rows of {data.provenance['dataset']['split']}"
                  if data.provenance["kind"] == "embedding cache" else f"train: {fit.x.shape[0]} rows")
    split_text += f"; eval: {evaluated_on}"
    provenance = {**card_source(data, split_text), "train_config": cfg, "name": "method_card",
                  "steps": len(history["step"]),
                  "notes": f"Trained by `python -m sae_tutorial {' '.join(sys.argv[1:]) or 'train …'}`; stopped at "
                           f"step {len(history['step'])} on {stop}. Data: {data.provenance['path']} "
                           f"({data.provenance['kind']}, content hash "
                           f"{data.provenance.get('content_sha256') or data.provenance['sha256']})."}
    _write(sae, out, args, cfg, record, history, report, provenance, split)
    print(f"trained {args.variant} ({d} -> {args.n_latents}{f', k={args.k}' if cls.takes_k else ''}) for "
          f"{len(history['step'])} steps, stopped on {stop}; saved to {out}")
    print(report_table(report, f"report ({evaluated_on}):"))
    print(f"λ terms: {_lambda_terms(history, cfg)}")
    return 0


def _write(sae: Any, out: Path, args: argparse.Namespace, cfg: Any, record: dict, history: dict, report: dict,
           provenance: dict, split: dict | None) -> None:
    """The folder (staged, then renamed into place) or, for a .safetensors --out, the checkpoint and its card."""
    from ..metrics import method_card
    from ..runs import DATA, HISTORY, REPORT, SPLIT, TRAIN_CONFIG, save_split, write_json

    if out.suffix == ".safetensors":
        sae.save(out)
        method_card(sae, report, {**provenance, "name": f"{out.stem}.card"}, out.parent)
        return
    config = {"train_config": cfg.to_dict(), "variant": type(sae).__name__, "sae": sae.config(),
              "normalize": not args.no_normalize, "top_n": args.top_n, "command": ["python -m sae_tutorial",
                                                                                  *sys.argv[1:]]}
    with staged(out, args.overwrite) as tmp, tempfile.TemporaryDirectory() as cards:
        sae.save_pretrained(tmp, card=method_card(sae, report, provenance, cards))
        write_json(tmp / TRAIN_CONFIG, config)
        write_json(tmp / DATA, record)
        write_json(tmp / HISTORY, history)
        write_json(tmp / REPORT, report)
        if split:
            save_split(tmp / SPLIT, split["val_rows"])
