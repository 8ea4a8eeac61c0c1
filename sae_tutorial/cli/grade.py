"""`python -m sae_tutorial grade NOTEBOOK`: every exercise check of a chapter on a filled-in student notebook."""
from __future__ import annotations

import argparse
from typing import Any


def add_parser(commands: Any) -> None:
    p = commands.add_parser("grade", help="run every exercise check on a filled-in student notebook, print a score")
    p.add_argument("notebook", help="a student notebook (.ipynb, or its jupytext .py), e.g. student/01_topk_basics.ipynb")
    p.add_argument("--chapter", help="the chapter, e.g. 01_topk_basics (default: the notebook's file name)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .. import exercises

    print(exercises.score_table(exercises.grade(args.notebook, chapter=args.chapter)))
    return 0
