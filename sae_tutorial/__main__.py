"""Command line: `python -m sae_tutorial <command> ...`; one subcommand per task.

    python -m sae_tutorial embed --backbone embedded --dataset fashion-mnist --split train --out DIR
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence


def _embed(args: argparse.Namespace) -> int:
    from . import backbones, embed, load_embeddings

    options = {k: v for k, v in (("data_dir", args.data_dir), ("repo", args.repo), ("classes", args.classes))
               if v is not None}
    backbone = backbones.get(args.backbone, args.weights, tag=args.tag)
    out = embed(backbone, args.dataset, args.split, args.out, batch_size=args.batch_size,
                num_workers=args.num_workers, shard_size=args.shard_size, limit=args.limit, device=args.device,
                dtype=args.dtype, progress=not args.no_progress, **options)
    emb = load_embeddings(out, verify=False)
    print(f"{len(emb)} embeddings of dimension {emb.shards[0].shape[1]} in {out} ({len(emb.shards)} shards)")
    if "test_accuracy" in backbone.report:
        print(f"backbone {backbone.name}: {backbone.report['test_accuracy']:.2%} test accuracy")
    return 0


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
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_embed)

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as e:        # bad input: the library's message, no traceback
        parser.exit(2, f"{parser.prog} {args.command}: error: {e}\n")


if __name__ == "__main__":
    raise SystemExit(main())
