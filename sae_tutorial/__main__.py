"""Command line: `python -m sae_tutorial <command> ...`; one subcommand per task.

    python -m sae_tutorial embed --backbone embedded --dataset fashion-mnist --split train --out DIR
    python -m sae_tutorial train --data DIR --k 64 --n-latents 8192 --out sae/
    (embed and train are data-parallel under torchrun --nproc_per_node=N -m sae_tutorial ...)
    python -m sae_tutorial reproduce --preset embedded --out DIR                   the paper's grid + verdicts
    python -m sae_tutorial sweep --grid paper --out DIR [--dry-run]                any preset grid, resumable
"""
from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def _ranks(device: str | None) -> Iterator[tuple[int, Any]]:
    """(rank, device) for a command; under torchrun (WORLD_SIZE > 1) one process group and one device per rank."""
    import os

    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    try:
        yield rank, dev
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _embed(args: argparse.Namespace) -> int:
    from . import backbones, embed, load_embeddings

    options = {k: v for k, v in (("data_dir", args.data_dir), ("repo", args.repo), ("classes", args.classes))
               if v is not None}
    with _ranks(args.device) as (rank, device):
        backbone = backbones.get(args.backbone, args.weights, tag=args.tag)
        out = embed(backbone, args.dataset, args.split, args.out, batch_size=args.batch_size,
                    num_workers=args.num_workers, shard_size=args.shard_size, limit=args.limit, device=device,
                    dtype=args.dtype, progress=not args.no_progress,
                    allow_mixed_numerics=args.allow_mixed_numerics, **options)
    if rank == 0:
        emb = load_embeddings(out, verify=False)
        print(f"{len(emb)} embeddings of dimension {emb.shards[0].shape[1]} in {out} ({len(emb.shards)} shards)")
        if "test_accuracy" in backbone.report:
            print(f"backbone {backbone.name}: {backbone.report['test_accuracy']:.2%} test accuracy")
    return 0


def _load_training_data(path: str, normalize: bool):
    """Rows from an embedding cache folder (st.embed) or a .pt / .npy / .safetensors file (key "x" or the only one)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from . import load_embeddings

    p = Path(path)
    if p.is_dir():
        x = load_embeddings(p).x
    elif p.suffix == ".npy":
        x = torch.from_numpy(np.load(p))
    elif p.suffix == ".safetensors":
        from safetensors.torch import load_file
        tensors = load_file(str(p))
        x = tensors["x"] if "x" in tensors or len(tensors) != 1 else next(iter(tensors.values()))
    elif p.suffix == ".pt":
        x = torch.load(p, map_location="cpu", weights_only=True)
    else:
        raise ValueError(f"--data {path}: expected an embedding cache folder or a .pt/.npy/.safetensors file")
    x = x.float()
    return F.normalize(x, dim=1) if normalize else x


def _train(args: argparse.Namespace) -> int:
    from . import TrainConfig, sae as variants, train

    with _ranks(args.device) as (rank, device):
        x = _load_training_data(args.data, not args.no_normalize)
        cls = variants.VARIANTS[args.variant]
        kwargs = {"k": args.k} if cls.takes_k else {}
        sae = cls(x.shape[1], args.n_latents, seed=args.seed, **kwargs).to(device)
        cfg = TrainConfig(batch_size=args.batch_size, steps=args.steps, epochs=args.epochs, lr=args.lr,
                          lambda_off=args.lambda_off, lambda_ratio=args.lambda_ratio, reg_mask=not args.no_mask,
                          seed=args.seed, compile=args.compile, checkpoint_dir=args.checkpoint_dir,
                          checkpoint_every=args.checkpoint_every, progress=not args.no_progress)
        history = train(sae, x.to(device), cfg)
    if rank == 0:
        sae.save_pretrained(args.out) if not args.out.endswith(".safetensors") else sae.save(args.out)
        print(f"trained {args.variant} ({x.shape[1]} -> {args.n_latents}) for {len(history['step'])} steps: "
              f"FVU {history['fvu'][-1]:.4f}, L0 {history['l0'][-1]:.1f}; saved to {args.out}")
    return 0


def _dataset_options(items: list[str] | None) -> dict[str, dict[str, str]]:
    """["open-images-v7.repo=/data/oiv7", ...] -> {"open-images-v7": {"repo": "/data/oiv7"}}."""
    options: dict[str, dict[str, str]] = {}
    for item in items or []:
        name, _, rest = item.partition(".")
        key, eq, value = rest.partition("=")
        if not (name and key and eq):
            raise ValueError(f"--dataset-option {item!r}: expected DATASET.KEY=VALUE, "
                             "e.g. open-images-v7.repo=/data/oiv7")
        options.setdefault(name, {})[key] = value
    return options


def _grid(args: argparse.Namespace) -> int:
    import pandas as pd

    from . import grid, verdicts

    name = args.preset if args.command == "reproduce" else args.grid
    options = _dataset_options(args.dataset_option)
    spec = grid.PRESETS[name].with_data_options(options)
    if getattr(args, "dry_run", False):
        table = grid.dry_run(spec)
        with pd.option_context("display.width", 200, "display.max_rows", 500):
            print(table[["cell", "train_rows", "d", "steps", "samples_per_s", "hours"]].to_string(index=False))
        gpu = __import__("torch").cuda.is_available()
        device = "GPU" if gpu else "CPU"
        print(f"{len(table)} cells, {table['hours'].sum():.1f} {device}-hours of SAE training "
              f"(throughput measured on this machine's {device}; embedding extraction not included)")
        if not gpu:
            floors = grid.gpu_floors(table, spec.train.get("batch_size", 2048), spec.n_latents).sum()
            for card, hours in floors.items():
                print(f"  floor on one {card}: {hours:.2f} GPU-hours (step/GEMM ratios measured here, each GEMM at "
                      f"60% of {grid.GPU_BF16_TFLOPS[card]:.0f} bf16 TFLOP/s; real steps are slower, "
                      "see grid.gpu_hours)")
        return 0
    table, out = grid.reproduce(name, args.out, jobs=args.jobs, progress=not args.no_progress, data_options=options)
    print(f"{len(table)} cells; results in {out / 'results.csv'}")
    from . import plots
    for path in plots.save_grid_figures(table, out / "figures"):
        print(f"figure: {path}")
    if args.command == "reproduce":
        with pd.option_context("display.width", 200, "display.max_colwidth", 60):
            print(verdicts.verdict_table(table).to_string(index=False))
    return 0


def _grade(args: argparse.Namespace) -> int:
    """Run every check of a chapter on a filled-in student notebook and print the score table."""
    from . import exercises

    print(exercises.score_table(exercises.grade(args.notebook, chapter=args.chapter)))
    return 0


def _add_grade(commands) -> None:
    p = commands.add_parser("grade", help="run every exercise check on a filled-in student notebook, print a score")
    p.add_argument("notebook", help="a student notebook (.ipynb, or its jupytext .py), e.g. student/01_topk_basics.ipynb")
    p.add_argument("--chapter", help="the chapter, e.g. 01_topk_basics (default: the notebook's file name)")
    p.set_defaults(run=_grade)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sae_tutorial", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("embed", help="extract backbone embeddings of a data set into a resumable cache")
    p.add_argument("--backbone", default="embedded", help="clip-vit-l-14, siglip2, vit-l-16, embedded, timm:<arch>, "
                                                           "open_clip:<arch> (default: embedded)")
    p.add_argument("--weights", help="'random' or a local checkpoint file (default: pretrained)")
    p.add_argument("--tag", help="pretrained tag, e.g. openai for clip-vit-l-14")
    p.add_argument("--dataset", default="fashion-mnist",
                   help="fashion-mnist, synthetic, image-folder, imagenet-1k, open-images-v7 (default: fashion-mnist)")
    p.add_argument("--split", default="train")
    p.add_argument("--out", help="cache folder (default: $SAE_TUTORIAL_CACHE/embeddings/"
                                 "<backbone>--<dataset>--<split>)")
    p.add_argument("--data-dir", help="image-folder: the folder of images")
    p.add_argument("--repo", help="imagenet-1k, open-images-v7: Hugging Face dataset id or local folder")
    p.add_argument("--classes", help="open-images-v7: CSV of label id,name (oidv7-class-descriptions.csv)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--num-workers", type=int, help="DataLoader workers (default: cores - 1, at most 8)")
    p.add_argument("--shard-size", type=int, default=16384, help="rows per shard file")
    p.add_argument("--limit", type=int, help="embed only the first LIMIT images")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"], help="stored dtype")
    p.add_argument("--allow-mixed-numerics", action="store_true",
                   help="resume a cache begun under other numerics settings (threads, device, dtype), flagging it "
                        "in the manifest instead of refusing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_embed)

    from .sae import VARIANTS
    p = commands.add_parser("train", help="train an SAE on cached embeddings (data-parallel under torchrun)")
    p.add_argument("--data", required=True, help="embedding cache folder (st.embed) or a .pt/.npy/.safetensors file")
    p.add_argument("--out", required=True, help="a folder (hub-ready: save_pretrained) or a .safetensors file")
    p.add_argument("--variant", default="TopKSAE", choices=sorted(VARIANTS))
    p.add_argument("--n-latents", type=int, default=8192)
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=2048, help="global batch, split over the ranks")
    p.add_argument("--steps", type=int)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--lr", type=float, help="default: 2e-4 / sqrt(n_latents / 2**14)")
    p.add_argument("--lambda-off", type=float, default=0.0)
    p.add_argument("--lambda-ratio", type=float, default=0.0)
    p.add_argument("--no-mask", action="store_true", help="regularize all units (the ablation)")
    p.add_argument("--no-normalize", action="store_true", help="keep embeddings as stored (default: L2-normalise)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compile", action="store_true", help="torch.compile the forward and loss")
    p.add_argument("--checkpoint-dir", help="resumable training state (resumed when present)")
    p.add_argument("--checkpoint-every", type=int, default=0)
    p.add_argument("--device")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=_train)

    from .grid import PRESETS
    for command, key, text in (("reproduce", "--preset", "the paper's grid, its method cards, figures and verdicts"),
                               ("sweep", "--grid", "a preset grid of resumable cells from cached embeddings")):
        p = commands.add_parser(command, help=text)
        p.add_argument(key, default="embedded", choices=sorted(PRESETS))
        p.add_argument("--out", help="results folder (default: $SAE_TUTORIAL_CACHE/reproduce/<preset>-<hash>)")
        p.add_argument("--jobs", type=int, default=1, help="cells trained in parallel processes")
        p.add_argument("--no-progress", action="store_true")
        p.add_argument("--dataset-option", action="append", metavar="DATASET.KEY=VALUE",
                       help="an st.datasets.get option for one data set of the grid (repeatable), e.g. "
                            "open-images-v7.repo=/data/oiv7 open-images-v7.classes=oidv7-class-descriptions.csv")
        if command == "sweep":
            p.add_argument("--dry-run", action="store_true", help="print the plan and its estimated device-hours")
        p.set_defaults(run=_grid)

    _add_grade(commands)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as e:        # bad input: the library's message, no traceback
        parser.exit(2, f"{parser.prog} {args.command}: error: {e}\n")


if __name__ == "__main__":
    raise SystemExit(main())
