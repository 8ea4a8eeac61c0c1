"""Command line: `python -m sae_tutorial <command> ...`; one module per task.

    python -m sae_tutorial embed --backbone embedded --dataset fashion-mnist --split train --out DIR
    python -m sae_tutorial train --data DIR --k 64 --n-latents 8192 --out sae/      until the held-out FVU plateaus
    python -m sae_tutorial evaluate sae/ --data DIR [--embeddings OTHER_DIR]        any SAE st.load reads
    python -m sae_tutorial explore sae-eval/                                        latent cards of a result
    (embed and train are data-parallel under torchrun --nproc_per_node=N -m sae_tutorial ...)
    python -m sae_tutorial reproduce --preset embedded --out DIR                   the paper's grid + verdicts
    python -m sae_tutorial sweep --grid paper --out DIR [--dry-run]                any preset grid, resumable
    python -m sae_tutorial grade student/01_topk_basics.ipynb                      score a student's exercises

Bad input ends with one line naming it and exit status 2.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from . import evaluate, explore, grade, grid, train


class Parser(argparse.ArgumentParser):
    """argparse, with usage errors on one line (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parser() -> Parser:
    p = Parser(prog="python -m sae_tutorial", description=__doc__.splitlines()[0])
    commands = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    grid.add_embed_parser(commands)
    train.add_parser(commands)
    evaluate.add_parser(commands)
    explore.add_parser(commands)
    grid.add_grid_parsers(commands)
    grade.add_parser(commands)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError) as e:        # bad input: the library's message on one line, no traceback
        message = " ".join(str(e).split())
        p.exit(2, f"{p.prog} {args.command}: error: {message}\n")


if __name__ == "__main__":
    sys.exit(main())
