"""`python -m sae_tutorial explore FOLDER`: the explorer on a train/evaluate folder, without a browser."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(commands: Any) -> None:
    p = commands.add_parser("explore", help="latent cards of a folder written by train or evaluate",
                            description="Open st.explorer.open_evaluation(FOLDER) (in Jupyter it is a live widget), "
                                        "print the most interesting latents and save their cards as one PNG.")
    p.add_argument("folder", metavar="FOLDER", help="a folder written by `train` or `evaluate`")
    p.add_argument("--latents", type=int, default=8, help="how many latents to show (default: 8)")
    p.add_argument("--out", help="PNG of their cards (default: FOLDER/latent_cards.png)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..explorer import interesting, open_evaluation

    if args.latents <= 0:
        raise ValueError(f"--latents must be > 0, got {args.latents}")
    explorer = open_evaluation(args.folder)
    latents = interesting(explorer.stats, args.latents)
    print(f"{Path(args.folder).name}: {explorer.stats.n_latents} latents over {explorer.stats.n_samples:,} rows; "
          f"{len(latents)} latents worth a look (st.explorer.interesting):")
    for j in latents:
        print(f"  {explorer.renderer.title(j)}: {', '.join(explorer.renderer.summary(j))}")
    if latents:
        from PIL import Image
        cards = [explorer.renderer.render(j) for j in latents]
        sheet = Image.new("RGB", (sum(c.width for c in cards), max(c.height for c in cards)), "white")
        x = 0
        for card in cards:
            sheet.paste(card, (x, 0))
            x += card.width
        out = Path(args.out) if args.out else Path(args.folder) / "latent_cards.png"
        from ..checkpoint import atomic_write
        atomic_write(out, lambda tmp: sheet.save(tmp, format="PNG"))
        print(f"cards: {out}")
    return 0
