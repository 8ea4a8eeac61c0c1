"""What every chapter of the book starts with: its scale and device, a way to show the library's own source, and
printed lines that fit the page."""
from __future__ import annotations

import inspect
import math
import os
import textwrap
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


PAGE_WIDTH = 88   # columns of a printed line that fit the book's text column (book/static/sae-tutorial.css)


def wrap(text: str, width: int = PAGE_WIDTH) -> str:
    """`text` with each of its lines wider than `width` wrapped at spaces, continuation lines indented by two;
    lines that fit (tables, aligned formulas) are kept as they are."""
    return "\n".join(line if len(line) <= width else
                     textwrap.fill(line, width, subsequent_indent="  ", break_on_hyphens=False)
                     for line in str(text).splitlines())


def print_wrapped(*parts: Any) -> None:
    """print(*parts), wrapped to the page by `wrap`."""
    print(wrap(" ".join(str(part) for part in parts)))


# The rehearsal knob (`make colab-rehearsal`): SAE_TUTORIAL_SHRINK=N runs a chapter's colab-mode cells on a CPU in
# minutes by dividing the sizes of its work by N. Same cells, same calls: only the numbers passed to them change.
SHRINK_ENV = "SAE_TUTORIAL_SHRINK"
_ROWS = ("n_train", "n_eval", "probe_samples", "limit")       # data rows: ÷ N, at least 256
_WIDTHS = ("n_latents", "n_features")                         # dictionary and ground-truth widths: ÷ N, at least 4k
_STEPS = ("steps",)                                           # ÷ N, at least 10
_EPOCHS = ("epochs",)                                         # ÷ N rounded up, at least 1


def shrink_factor() -> int:
    """N of $SAE_TUTORIAL_SHRINK (default 1: the chapter's own sizes)."""
    raw = os.environ.get(SHRINK_ENV, "1")
    try:
        factor = int(raw)
    except ValueError:
        raise ValueError(f"{SHRINK_ENV} must be an int >= 1, got {raw!r}") from None
    if factor < 1:
        raise ValueError(f"{SHRINK_ENV} must be an int >= 1, got {raw!r}")
    return factor


def shrink(sizes: dict[str, Any]) -> dict[str, Any]:
    """A chapter's sizes divided by N = $SAE_TUTORIAL_SHRINK (unchanged when N = 1, always in the book build).

    Rows (n_train, n_eval, probe_samples, limit) ÷ N, at least 256; widths (n_latents, n_features) ÷ N, at least
    4·k; steps ÷ N, at least 10; epochs ÷ N rounded up, at least 1. Everything else (k, batch sizes, learning
    rates, λ, thresholds) is kept, so each cell runs the same code on less work."""
    factor = shrink_factor()
    if factor == 1:
        return dict(sizes)
    out = dict(sizes)
    k = int(sizes.get("k", 1))
    for key, value in sizes.items():
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if key in _ROWS:
            out[key] = max(min(int(value), 256), int(value) // factor)
        elif key in _WIDTHS:
            out[key] = max(min(int(value), 4 * k), int(value) // factor)
        elif key in _STEPS:
            out[key] = max(min(int(value), 10), int(value) // factor)
        elif key in _EPOCHS:
            out[key] = max(1, math.ceil(value / factor)) if value >= 1 else value
    return out
