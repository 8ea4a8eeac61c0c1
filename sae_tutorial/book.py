"""What every chapter of the book starts with: its scale and device, and a way to show the library's own source."""
from __future__ import annotations

import inspect
from typing import Any

import torch

from .modes import get_mode


def setup(mode: str | None = None) -> tuple[str, str]:
    """(mode, device) of a chapter: the mode from `get_mode` (SAE_TUTORIAL_MODE = auto | small | colab | full) and
    "cuda" when a GPU is present. In small mode torch uses one thread: on a busy 2-core CPU a second thread makes
    the chapters' small matrices several times slower."""
    mode = get_mode(mode)
    if mode == "small":
        torch.set_num_threads(1)
    return mode, "cuda" if torch.cuda.is_available() else "cpu"


def show_source(obj: Any) -> None:
    """Display the library's source of a function or class: formulas are read where they run."""
    from IPython.display import Code, display

    display(Code(inspect.getsource(obj), language="python"))
