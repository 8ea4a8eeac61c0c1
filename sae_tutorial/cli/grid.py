"""`embed`, `reproduce` and `sweep`: extraction into a cache, and the preset grids."""
from __future__ import annotations

import argparse
from typing import Any

from ._common import ranks


def add_embed_parser(commands: Any) -> None:
    p = commands.add_parser("embed", help="extract backbone embeddings of a data set into a resumable cache")
    p.add_argument("--backbone", default="embedded", help="clip-vit-l-14, siglip2, vit-l-16, embedded, "
                                                          "efficientnet-lite0, timm:<arch>, open_clip:<arch> "
                                                          "(default: embedded)")
    p.add_argument("--weights", help="'random' or a local checkpoint file (default: pretrained)")
    p.add_argument("--tag", help="pretrained tag, e.g. openai for clip-vit-l-14")
    p.add_argument("--dataset", default="fashion-mnist",
                   help="fashion-mnist, synthetic, image-folder, imagenet-1k, open-images-v7 (default: fashion-mnist)")
    p.add_argument("--split", default="train", help="the data set's split (default: train)")
    p.add_argument("--out", help="cache folder (default: $SAE_TUTORIAL_CACHE/embeddings/"
                                 "<backbone>--<dataset>--<split>)")
    p.add_argument("--data-dir", help="image-folder: the folder of images")
    p.add_argument("--repo", help="imagenet-1k, open-images-v7: Hugging Face dataset id or local folder")
    p.add_argument("--classes", help="open-images-v7: CSV of label id,name (oidv7-class-descriptions.csv)")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default: 256)")
    p.add_argument("--num-workers", type=int, help="DataLoader workers (default: cores - 1, at most 8)")
    p.add_argument("--shard-size", type=int, default=16384, help="rows per shard file (default: 16384)")
    p.add_argument("--limit", type=int, help="embed only the first LIMIT images")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"], help="stored dtype")
    p.add_argument("--allow-mixed-numerics", action="store_true",
                   help="resume a cache begun under other numerics settings (threads, device, dtype), flagging it "
                        "in the manifest instead of refusing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run_embed)


def run_embed(args: argparse.Namespace) -> int:
    from .. import backbones, embed, load_embeddings

    options = {k: v for k, v in (("data_dir", args.data_dir), ("repo", args.repo), ("classes", args.classes))
               if v is not None}
    with ranks(args.device) as (rank, device):
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


def add_grid_parsers(commands: Any) -> None:
    from ..grid import PRESETS

    for command, key, text in (("reproduce", "--preset", "the paper's grid, its method cards, figures and verdicts"),
                               ("sweep", "--grid", "a preset grid of resumable cells from cached embeddings")):
        p = commands.add_parser(command, help=text)
        p.add_argument(key, default="embedded", choices=sorted(PRESETS), help="the preset (default: embedded)")
        p.add_argument("--out", help="results folder (default: $SAE_TUTORIAL_CACHE/reproduce/<preset>-<hash>)")
        p.add_argument("--jobs", type=int, default=1, help="cells trained in parallel processes (default: 1)")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        p.add_argument("--dataset-option", action="append", metavar="DATASET.KEY=VALUE",
                       help="an st.datasets.get option for one data set of the grid (repeatable), e.g. "
                            "open-images-v7.repo=/data/oiv7 open-images-v7.classes=oidv7-class-descriptions.csv")
        if command == "sweep":
            p.add_argument("--dry-run", action="store_true", help="print the plan and its estimated device-hours")
        p.set_defaults(run=run_grid)


def run_grid(args: argparse.Namespace) -> int:
    import pandas as pd

    from .. import grid

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
    from .. import plots
    for backbone, rows in table.groupby("backbone", sort=False):     # one set of figures per backbone
        for path in plots.save_grid_figures(rows, out / "figures" / str(backbone)):
            print(f"figure: {path}")
    if args.command == "reproduce":
        claims = pd.read_csv(out / "claims.csv")
        with pd.option_context("display.width", 200, "display.max_colwidth", 60):
            print(claims[["scope", "claim", "verdict", "verdict_uncontrolled", "changed"]].to_string(index=False))
        print(f"every effect with its 95 % CI and Holm-adjusted p: {out / 'verdicts.md'} (and verdicts.csv, "
              f"per_k.csv, variants.csv: ℓ1/ℓ2 against Multi-TopK and Matryoshka); the λ chosen on validation "
              f"rows: {out / 'lambdas.json'}")
    return 0
