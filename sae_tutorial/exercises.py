"""The book's exercises: one check per exercise, and the registry an instructor reads (difficulty, time, chapter).

Each `check_<name>(answer, ...)` runs the learner's function (or value) on hidden cases. It prints what it found and
returns True when the answer is right, raises AssertionError naming the likely mistake when it is wrong, and prints
that the exercise is not done yet (returning False) when the answer is still a stub (`raise NotImplementedError`
or `...`), so that a student notebook runs from top to bottom before any exercise is done.

    REGISTRY    {"1.1": Exercise(...), ...}: number, chapter, label, title, the names the learner defines,
                difficulty and importance (1-3), minutes, and the check
    CHAPTERS    {"01_topk_basics": Chapter(prerequisites, minutes), ...}
    grade(path) runs every check of a filled-in student notebook (`python -m sae_tutorial grade NOTEBOOK`)
"""
from __future__ import annotations

import ast
import contextlib
import functools
import io
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from . import regularizers as REG
from . import verdicts
from .book import PAGE_WIDTH, wrap
from .metrics import class_purity, dead_latents, monosemanticity
from .sae import TopKSAE, sparsemax_threshold
from .train import default_lr


@dataclass(frozen=True)
class Exercise:
    number: str                 # "1.1": chapter 1, first exercise
    chapter: str                # notebook stem, e.g. "01_topk_basics"
    label: str                  # the MyST label of its {exercise} block
    title: str
    names: tuple[str, ...]      # what the learner defines, passed to the check in this order
    difficulty: int             # 1 (a few lines) .. 3 (needs a derivation)
    importance: int             # 1 (optional) .. 3 (the chapter builds on it)
    minutes: int
    check: Callable[..., Any]   # the public check_<name>

    @property
    def meta_line(self) -> str:
        """The line shown in the exercise block of the book (tests/test_course.py keeps them in sync)."""
        return (f"*Exercise {self.number} · difficulty {'●' * self.difficulty}{'○' * (3 - self.difficulty)} · "
                f"importance {'●' * self.importance}{'○' * (3 - self.importance)} · about {self.minutes} minutes*")


@dataclass(frozen=True)
class Chapter:
    prerequisites: str
    minutes: int                # reading, running and the exercises

    def line(self, exercises: list[Exercise]) -> str:
        """The one line at the top of a chapter."""
        work = f", of which exercises about {sum(e.minutes for e in exercises)}" if exercises else ""
        return f"**Prerequisites:** {self.prerequisites}. **Time:** about {self.minutes} minutes{work}."


CHAPTERS = {
    "01_topk_basics": Chapter("Python, PyTorch tensors, dot products and norms", 90),
    "02_regularizers": Chapter("chapter 1; gradients and autograd", 90),
    "03_vision_backbones": Chapter("chapter 1", 75),
    "04_evaluating": Chapter("chapters 1 to 3; what a t statistic is", 120),
    "05_latent_explorer": Chapter("chapters 1, 3 and 4 (MS and purity)", 60),
    "06_adaptive_budgets": Chapter("chapters 1, 2 and 4", 75),
    "07_scaling_up": Chapter("chapters 1 to 4; a GPU only for the large runs", 45),
}
REGISTRY: dict[str, Exercise] = {}


def exercises(chapter: str) -> list[Exercise]:
    """The exercises of one chapter (notebook stem), in order."""
    return [e for e in REGISTRY.values() if e.chapter == chapter]


def _exercise(number: str, chapter: str, label: str, title: str, names: tuple[str, ...], difficulty: int,
              importance: int, minutes: int):
    """Register a raw check as exercise `number`; the public check also handles answers that are still stubs."""
    def register(raw: Callable[..., str]) -> Callable[..., bool]:
        @functools.wraps(raw)
        def check(*answers: Any, **cases: Any) -> bool:
            try:
                if any(a is Ellipsis for a in answers):
                    raise NotImplementedError
                print(wrap(raw(*answers, **cases)))
            except NotImplementedError:
                print(wrap(f"Exercise {number} ({title}) is not done yet: write {', '.join(names)} above, "
                           "then run this cell again."))
                return False
            return True

        check.raw = raw
        REGISTRY[number] = Exercise(number, chapter, label, title, names, difficulty, importance, minutes, check)
        return check
    return register


def _close(a: Any, b: Any, rtol: float = 1e-5, atol: float = 1e-6) -> bool:
    """Same shape and values (tensors, arrays, numbers, sequences of numbers)."""
    try:
        a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    except (TypeError, ValueError, RuntimeError):
        return False
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=rtol, atol=atol, equal_nan=False))


def _diagnose(got: Any, mistakes: dict[str, Any] | list[tuple[str, Any]], otherwise: str) -> None:
    """Raise AssertionError with the message of the first known mistake (message: its wrong answer) that `got`
    reproduces, or `otherwise`."""
    pairs = mistakes.items() if isinstance(mistakes, dict) else mistakes
    raise AssertionError(next((message for message, wrong in pairs if _close(got, wrong)), otherwise))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- chapter 1

@_exercise("1.1", "01_topk_basics", "ex-topk-codes", "Top-k codes by hand", ("topk_codes",), 2, 3, 15)
def check_topk_codes(topk_codes: Callable) -> str:
    """topk_codes(h, k) against the codes of the library's TopKSAE, on rows with fewer than k positive entries."""
    sae = TopKSAE(d_in=16, n_latents=64, k=5, seed=0)
    x = torch.randn(32, 16, generator=_gen(0)) * torch.linspace(0.1, 3, 32)[:, None]   # rows of growing norm
    with torch.no_grad():
        sae.b_enc.fill_(-1.0)                     # small inputs: few or no positive pre-activations
        out = sae(x)
        h, k = out.pre_acts, sae.k
        z = topk_codes(h.clone(), k)
    assert isinstance(z, torch.Tensor) and z.shape == h.shape, (
        f"expected dense codes of shape (B, m) = {tuple(h.shape)}, got {getattr(z, 'shape', type(z).__name__)}: "
        "scatter the k selected values back into a row of zeros")
    if _close(z, out.codes):
        return "Correct: your codes match the library's sae(x).codes on all 32 inputs."
    idx, zeros = h.topk(k, dim=1).indices, torch.zeros_like(h)
    idx0 = h.topk(k, dim=0).indices
    _diagnose(z, {
        "some codes are negative: you kept the k largest pre-activations but did not apply the ReLU to them":
            zeros.scatter(1, idx, h.gather(1, idx)),
        "your codes are 0/1: keep the values ReLU(h) of the selected latents, not a mask of which were selected":
            zeros.scatter(1, idx, 1.0),
        "you selected along dim 0 (the k strongest inputs of each latent): select the k largest entries of each "
        "row, dim=1": zeros.scatter(0, idx0, h.gather(0, idx0)).relu(),
        "you kept every positive pre-activation (a plain ReLU): keep only the k largest entries of each row":
            h.relu(),
        "you kept the k smallest entries: torch.topk returns the largest ones by default":
            zeros.scatter(1, h.topk(k, dim=1, largest=False).indices, h).relu(),
    }, "your codes differ from the library's: ReLU(h) on the k largest entries of each row, 0 elsewhere")


@_exercise("1.2", "01_topk_basics", "ex-fvu", "FVU by hand", ("my_fvu",), 1, 3, 10)
def check_fvu(my_fvu: Callable) -> str:
    """my_fvu(x, x_hat) on non-centred data, for a good reconstruction, the mean input and zero."""
    x = torch.randn(64, 8, generator=_gen(1)) * torch.linspace(0.5, 2, 8) + 3.0        # (N, d), mean far from 0
    cases = {"a noisy reconstruction": x + 0.3 * torch.randn(64, 8, generator=_gen(2)),
             "the mean input": x.mean(0).expand_as(x), "zero": torch.zeros_like(x)}
    for what, x_hat in cases.items():
        got = my_fvu(x.clone(), x_hat.clone())
        err = (x - x_hat) ** 2
        var = (x - x.mean(0)) ** 2
        expected = err.sum() / var.sum()
        if _close(got, expected):
            continue
        sum_and_mean = "you took a sum of the errors and a mean of the variance (or the reverse): use sums in both"
        _diagnose(got, [
            ("you divided by Σ‖x_n‖², the uncentred energy: subtract the mean input x̄ = x.mean(0) first",
             err.sum() / (x ** 2).sum()),
            ("that is the mean squared error: divide the summed squared error by the total variance Σ‖x_n − x̄‖²",
             err.mean()),
            ("you averaged a per-sample ratio: divide the batch's summed error by the batch's summed variance",
             (err.sum(1) / var.sum(1)).mean()),
            ("you centred with one scalar mean (x.mean()): use the mean input x̄ = x.mean(0), one mean per dimension",
             err.sum() / ((x - x.mean()) ** 2).sum()),
            (sum_and_mean, err.sum() / var.mean()),
            (sum_and_mean, err.mean() / var.sum()),
        ], f"for {what}, expected FVU {float(expected):.5f}, got {got}: the denominator is Σ‖x_n − x̄‖² over the "
           "whole batch")
    return ("Correct: my_fvu matches on all three cases (the mean input gives exactly 1; zero gives more than 1 "
            "when the data are not centred).")


@_exercise("1.3", "01_topk_basics", "ex-dead", "Count the dead latents", ("my_dead_fraction",), 1, 2, 5)
def check_dead_fraction(my_dead_fraction: Callable) -> str:
    """my_dead_fraction(codes) on codes with dead latents, latents that fire once, and an input with no code."""
    codes = torch.rand(200, 40, generator=_gen(3)) * (torch.rand(200, 40, generator=_gen(4)) < 0.2)
    codes[:, :10] = 0                              # 10 dead latents
    codes[:, 10:15] = 0
    codes[7, 10:15] = 1.0                          # 5 latents that fire on one input only
    codes[0] = 0                                   # an input on which no latent fires
    expected = float(dead_latents(codes).float().mean())                 # 10 / 40
    got = my_dead_fraction(codes.clone())
    if _close(got, expected):
        assert isinstance(got, float), f"the value is right but a {type(got).__name__}: return a Python float " \
                                       "(call .item())"
        return f"Correct: {got:.3f} of the latents never fire."
    _diagnose(got, {
        "you returned the number of dead latents: divide by m, the number of latents": 10,
        "you returned the fraction of latents that fire: dead ones are zero on every input": 1 - expected,
        "you looked at rows (inputs with no active latent): a latent is a column of the codes, dim=0":
            float((codes == 0).all(dim=1).float().mean()),
        "you counted latents that are zero on *some* input: a dead latent is zero on every input, .all(dim=0)":
            float((codes == 0).any(dim=0).float().mean()),
    }, f"expected {expected:.4f}, got {got!r}: the fraction of columns that are zero in every row")


# ---------------------------------------------------------------- chapter 2

# Chapter 2's worked example: R_off = 0.3 with the mask, 0.5 without.
WORKED_H = torch.tensor([[2.0, 1.0, 0.5, -0.3, 0.2, -1.0],
                         [0.1, 1.5, -0.2, 1.2, 0.4, -0.5],
                         [1.8, -0.4, 0.9, 0.3, -0.1, -2.0]])


@_exercise("2.1", "02_regularizers", "ex-off-support", "Off-support ℓ1 by hand", ("my_off_support_l1",), 2, 3, 20)
def check_off_support(my_off_support_l1: Callable) -> str:
    """my_off_support_l1(h, idx, mask) against st.regularizers.off_support_l1, with and without the mask."""
    cases = [(WORKED_H, WORKED_H.topk(2, dim=1).indices)]
    gen = _gen(0)
    for _ in range(5):
        hb = torch.randn(8, 20, generator=gen) - 0.3           # (B, m), some rows mostly negative
        cases.append((hb, hb.topk(3, dim=1).indices))
    for hb, ib in cases:
        B = hb.shape[0]
        for mask in (True, False):
            got = my_off_support_l1(hb.clone(), ib.clone(), mask=mask)
            expected = REG.off_support_l1(hb, ib, mask=mask)
            if _close(got, expected):
                continue
            active = REG.batch_active_mask(ib, hb.shape[1]) if mask else torch.ones(hb.shape[1], dtype=torch.bool)
            off = active.expand_as(hb).clone().scatter(1, ib, False)
            _diagnose(got, {
                "you summed over all of A, the support included: leave out each row's own S_b":
                    (hb.relu() * active).sum() / B,
                "the mask is ignored: with mask=True only latents in A = ∪_b S_b count, with mask=False all do":
                    REG.off_support_l1(hb, ib, mask=not mask),
                "you divided by the number of entries (a mean): divide the sum by the batch size B":
                    (hb.relu() * off).sum() / hb.numel(),
                "the ReLU is missing: negative pre-activations must add 0, not lower the penalty":
                    (hb * off).sum() / B,
                "you did not divide by the batch size B": (hb.relu() * off).sum(),
            }, f"mask={mask}: expected {float(expected):.5f}, got {got}; compare with the worked example: "
               "R_off = 0.3 with the mask, 0.5 without")
    return f"Correct: your R_off matches the library's on {len(cases)} batches, with and without the mask."


@_exercise("2.2", "02_regularizers", "ex-ratio-sign", "Which way does ℓ1/ℓ2 push?", ("descent_direction",), 3, 2, 20)
def check_descent_direction(descent_direction: Callable) -> str:
    """descent_direction(p) against the sign of −∂R/∂p from autograd, on skewed positive rows."""
    gen = _gen(1)
    for trial in range(20):
        p = (torch.rand(12, generator=gen) ** 3 + 0.01).requires_grad_(True)   # a few large entries
        (p.sum() / p.norm()).backward()
        expected = -torch.sign(p.grad)                                       # +1: descent grows p_j
        p = p.detach()
        got = torch.as_tensor(descent_direction(p.clone()), dtype=torch.float32)
        assert got.shape == p.shape, f"expected shape {tuple(p.shape)}, got {tuple(got.shape)}"
        if torch.equal(got, expected):
            continue
        _diagnose(got, {
            "your signs are flipped: +1 means that a descent step grows the entry, where ∂R/∂p_j < 0":
                -expected,
            f"row {trial}: the threshold is not the mean of p: set ∂R/∂p_j = 0 and solve for p_j":
                torch.where(p > p.mean(), 1.0, -1.0),
            f"row {trial}: the threshold is ‖p‖₂² / ‖p‖₁, not ‖p‖₁ / ‖p‖₂²": torch.where(p > p.sum() / (p ** 2).sum(),
                                                                                   1.0, -1.0),
        }, f"row {trial}: wrong signs for entries {(got != expected).nonzero().squeeze(1).tolist()}: set "
           "∂R/∂p_j = 0 and solve for p_j")
    return "Correct: your directions match autograd on 20 random rows."


# ---------------------------------------------------------------- chapter 3

@_exercise("3.1", "03_vision_backbones", "ex-kill", "What survives a kill", ("after_kill",), 1, 2, 10)
def check_after_kill(after_kill: Callable, observed: tuple | None = None) -> str:
    """after_kill(images_done, shard_size, n_total) on hidden cases, and on the chapter's own kill when given
    `observed` = ((images_done, shard_size, n_total), (rows listed, images the rerun embedded))."""
    cases = [((3750, 1000, 10_000), (3000, 7000)), ((999, 1000, 10_000), (0, 10_000)),
             ((9_500, 4096, 10_000), (8192, 1808))] + ([observed] if observed else [])
    for (done, shard, total), (rows, redo) in cases:
        got = tuple(int(v) for v in after_kill(done, shard, total))
        if got == (rows, redo):
            continue
        _diagnose(got, {
            "you assumed every embedded image was saved: rows embedded since the last full shard lived only in the "
            "killed process's memory": (done, total - done),
            "you rounded up to a whole shard: a partial shard is never written, round down":
                (math.ceil(done / shard) * shard, total - math.ceil(done / shard) * shard),
            "the rerun does not start again from row 0: it resumes at the first row the manifest does not list":
                (rows, total),
            "the rerun also redoes the rows lost in the kill: it starts at the first unlisted row, not where the "
            "kill happened": (rows, total - done),
        }, f"after_kill{(done, shard, total)}: expected {(rows, redo)}, got {got}")
    return "Correct: after_kill matches " + ("the kill above and 3 more cases." if observed else "3 cases.")


@_exercise("3.2", "03_vision_backbones", "ex-normalise", "Normalise the embeddings", ("l2_normalise",), 1, 2, 5)
def check_l2_normalise(l2_normalise: Callable) -> str:
    """l2_normalise(x) on rows of very different norms, then on a signed, a zero and a tiny row."""
    x = torch.randn(50, 16, generator=_gen(5)) * 10 ** torch.empty(50, 1).uniform_(-2, 2, generator=_gen(6))
    given = x.clone()
    got = l2_normalise(given)
    assert torch.equal(given, x), "your function changed its input in place: return a new tensor"
    assert isinstance(got, torch.Tensor) and got.shape == x.shape, \
        f"expected a tensor of shape {tuple(x.shape)}, got {getattr(got, 'shape', type(got).__name__)}"
    if not _close(got, F.normalize(x, dim=1)):
        _diagnose(got, {
            "you divided each column by its norm: divide each row (one embedding) by its own norm, dim=1":
                F.normalize(x, dim=0),
            "you divided by the norm of the whole matrix: divide each row by its own norm (dim=1, keepdim=True)":
                x / x.norm(),
            "you divided by the squared norm: divide by the norm, the square root of the sum of squares":
                x / (x ** 2).sum(1, keepdim=True),
        }, "some rows do not have norm 1: divide each row by its own L2 norm")
    odd = torch.tensor([[3.0, -4.0], [0.0, 0.0], [1e-3, 0.0]])
    got = l2_normalise(odd.clone())
    assert torch.isfinite(got).all(), "a row of zeros gave NaN or Inf: guard the division, e.g. .clamp_min(1e-12)"
    assert _close(got, [[0.6, -0.8], [0.0, 0.0], [1.0, 0.0]]), \
        f"on [[3, -4], [0, 0], [0.001, 0]] expected [[0.6, -0.8], [0, 0], [1, 0]], got {got.tolist()}"
    return "Correct: l2_normalise gives unit rows at any scale and keeps zero rows at zero."


@_exercise("3.3", "03_vision_backbones", "ex-lr", "The learning rate at the paper's scale", ("gao_lr",), 1, 1, 5)
def check_gao_lr(gao_lr: Callable) -> str:
    """gao_lr(m) against the library's default_lr, for m away from 2^14 first."""
    for m in (1024, 4096, 8192, 65536, 16384):
        got, expected = gao_lr(m), default_lr(m)
        if _close(got, expected, rtol=1e-9, atol=0):
            continue
        _diagnose(got, {
            "the rate must shrink as m grows: divide 2e-4 by sqrt(m / 2^14), don't multiply":
                2e-4 * math.sqrt(m / 2 ** 14),
            "you forgot the square root: 2e-4 / sqrt(m / 2^14)": 2e-4 / (m / 2 ** 14),
            "you took the square root of m alone: divide m by 2^14 inside the root": 2e-4 / math.sqrt(m),
        }, f"for m={m} the rule gives {expected:.3g}, you gave {got}")
    return f"Correct: m=8192 gives {gao_lr(8192):.2e} (MonoLoss uses 1e-4 there); m=1024 gives {gao_lr(1024):.1e}."


# ---------------------------------------------------------------- chapter 4

@_exercise("4.1", "04_evaluating", "ex-ms-by-hand", "The Monosemanticity Score of four images", ("ms_hand",),
           2, 3, 15)
def check_ms_hand(ms_hand: float) -> str:
    """A hand-computed MS of one latent on four images, against st.metrics.monosemanticity."""
    e = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    a = torch.tensor([[2.0], [1.0], [3.0], [5.0]])
    truth = float(monosemanticity(a, e)[0])                     # 22 / 35
    if _close(ms_hand, truth):
        return f"Correct: MS = {truth:.4f}."
    self_weight = float(((a.squeeze() - 1) / 4).pow(2).sum())   # Σ ã², the self-pairs (s_nn = 1)
    _diagnose(ms_hand, {
        "you weighted the pairs by the raw activations: min-max normalise them first": 23 / 41,
        "you included the pairs of an image with itself: use n < m only":
            (0.55 + self_weight) / (0.875 + self_weight),
        "you divided by the number of pairs (6): divide by the sum of the pair weights ã_n ã_m": 0.55 / 6,
        "you averaged over the three pairs with a non-zero weight: divide by the sum of their weights": 0.55 / 3,
    }, f"{ms_hand} is not the MS of this latent: normalise a, then weight each pair's similarity by ã_n ã_m")


@_exercise("4.2", "04_evaluating", "ex-purity", "Purity of one latent", ("purity_hand", "weighted_hand"), 1, 2, 10)
def check_purity(purity_hand: float, weighted_hand: float) -> str:
    """Hand-computed binary and weighted purity of one latent, against st.metrics.class_purity."""
    labels = torch.tensor([0, 0, 1, 2, 0, 0, 1, 2])
    acts = torch.tensor([5, 0, 4, 0, 3, 2.5, 0, 1])[:, None]                     # (N=8, m=1)
    truth = float(class_purity(acts, labels, top_n=4)[0])                       # 3 / 4
    truth_w = float(class_purity(acts, labels, top_n=4, weighted=True)[0])      # 10.5 / 14.5
    if not _close(purity_hand, truth):
        _diagnose(purity_hand, {
            "you used all eight images: keep the top 4 among those where the latent fires (a > 0)": 0.5,
            "you used all five images where it fires: keep only the top_n = 4 strongest": 3 / 5,
        }, f"binary purity {purity_hand} is wrong: the share of the dominant class among the top 4 images")
    if not _close(weighted_hand, truth_w):
        _diagnose(weighted_hand, {
            "your weighted purity is the binary one: weight each of the top 4 images by its activation": truth,
            "you weighted all five images where it fires: keep only the top 4": 10.5 / 15.5,
        }, f"weighted purity {weighted_hand} is wrong: the dominant class's share of the top 4 activations")
    return f"Correct: purity = {truth:.3f}, weighted purity = {truth_w:.3f}."


def _rule(deltas: list[float], sign: int, ddof: int = 1, root_n: bool = True, use_sign: bool = True) -> str:
    """The verdict rule of st.verdicts, and its usual slips (population std, no √n, sign ignored)."""
    n = len(deltas)
    mean = sum(deltas) / n
    s = math.sqrt(sum((d - mean) ** 2 for d in deltas) / (n - ddof)) if n > ddof else 0.0
    se = s / math.sqrt(n) if root_n else s
    t = mean / se if se > 0 else (math.copysign(math.inf, mean) if mean else 0.0)
    t *= sign if use_sign else math.copysign(1, t)
    return "supports" if t >= 2 else "contradicts" if t <= -2 else "inconclusive"


@_exercise("4.3", "04_evaluating", "ex-verdict", "Deciding a verdict", ("classify", "verdict", "verdict_by_hand"),
           2, 2, 15)
def check_verdicts(classify: Callable, verdict: Callable, verdict_by_hand: str) -> str:
    """classify/verdict against st.verdicts on 300 random effects and edge cases, and the exercise's claim."""
    rng = np.random.default_rng(0)
    cases = [([0.1, 0.1, 0.1], 1), ([0.1, 0.1, 0.1], -1), ([0.0, 0.0], 1), ([0.2], 1)]
    cases += [(list(rng.normal(rng.normal(0, 1), rng.uniform(0.2, 3), rng.integers(2, 10))), int(rng.choice([-1, 1])))
              for _ in range(300)]
    got = [classify(list(d), s) for d, s in cases]
    want = [verdicts.effect("x", d, s)["status"] for d, s in cases]
    if got != want:
        slips = {
            "you judged by the sign of the mean alone: the rule needs t = mean / (s/√n) ≥ 2 (or ≤ −2)":
                lambda d, s: "supports" if s * np.mean(d) > 0 else "contradicts",
            "you used the population standard deviation (÷ n): the rule uses the sample one (÷ n − 1)":
                lambda d, s: _rule(d, s, ddof=0),
            "t is mean / (s/√n), with the standard error s/√n, not mean / s": lambda d, s: _rule(d, s, root_n=False),
            "you ignored `sign`: for a claim that predicts a decrease (sign = −1), t ≤ −2 supports it":
                lambda d, s: _rule(d, s, use_sign=False),
        }
        i = next(i for i, (g, w) in enumerate(zip(got, want)) if g != w)
        raise AssertionError(next((m for m, slip in slips.items() if got == [slip(d, s) for d, s in cases]),
                                  f"classify({np.round(cases[i][0], 3).tolist()}, {cases[i][1]}) gave {got[i]!r}, "
                                  f"the rule gives {want[i]!r}"))
    for statuses, expected in [(["supports", "supports"], "holds"), (["supports", "inconclusive"], "mixed"),
                               (["inconclusive", "contradicts"], "does not hold"),
                               (["supports", "contradicts"], "mixed")]:
        assert verdict(list(statuses)) == expected, (
            f"verdict({statuses}) gave {verdict(list(statuses))!r}, expected {expected!r}: a claim holds when every "
            "effect supports it, does not hold when none does, and is mixed otherwise")
    effects = [verdicts.effect("a", [0.02, 0.03, 0.025, 0.01, 0.04, 0.02], 1),
               verdicts.effect("b", [0.05, -0.04, 0.06, -0.03, 0.01, 0.02], 1)]
    truth = "mixed"
    hints = {"holds": "the second effect's t is only 0.70: a positive mean is not enough, so not every effect supports",
             "does not hold": "the first effect has t ≈ 5.8 and supports the claim, so at least one does"}
    assert verdict_by_hand == truth, hints.get(verdict_by_hand, f"the exercise's claim is not {verdict_by_hand!r}: "
                                                                 "compute t for each effect")
    return (f"Correct: your rule matches st.verdicts on {len(cases)} effects; the claim's verdict is {truth!r} "
            f"(t = {effects[0]['t']:.2f} and {effects[1]['t']:.2f}).")


# ---------------------------------------------------------------- chapter 5

def _sparse_codes() -> torch.Tensor:
    """(300, 12) codes: latents of every frequency, one that fires on 3 images, one that never fires."""
    gen = _gen(7)
    freq = torch.linspace(0.02, 0.6, 12)
    codes = torch.rand(300, 12, generator=gen) * (torch.rand(300, 12, generator=gen) < freq)
    codes[:, 1] = 0
    codes[[5, 50, 250], 1] = torch.tensor([0.3, 0.9, 0.6])
    codes[:, 2] = 0
    return codes


@_exercise("5.1", "05_latent_explorer", "ex-top-images", "Top images by hand", ("my_top_images",), 1, 2, 10)
def check_top_images(my_top_images: Callable) -> str:
    """my_top_images(codes, j, n) on frequent, rare and dead latents."""
    codes, n = _sparse_codes(), 15
    for j in range(codes.shape[1]):
        a = codes[:, j]
        expected = [r for r in sorted(range(len(a)), key=lambda r: -float(a[r])) if a[r] > 0][:n]
        out = my_top_images(codes.clone(), j, n)
        got = [float(r) for r in out]
        if got == [float(r) for r in expected]:
            continue
        assert len(got) == len(expected), (
            f"latent {j} fires on {int((a > 0).sum())} images; expected {len(expected)} top images, got {len(got)}: "
            "keep at most n, and only images where the latent fires (activation > 0)")
        _diagnose(got, {
            "you returned activations: return the row indices of the images": a[expected].tolist(),
            "weakest first: sort in descending order, strongest first": expected[::-1],
        }, f"latent {j}: expected rows {expected[:5]}..., got {got[:5]}...")
    return "Correct: your top images match on every latent, the rare and the dead ones included."


@_exercise("5.2", "05_latent_explorer", "ex-similar", "Similar decoder rows", ("my_similar",), 2, 2, 10)
def check_similar(my_similar: Callable) -> str:
    """my_similar(W_dec, j, n) on decoder rows of different lengths."""
    W = torch.randn(40, 8, generator=_gen(8)) * torch.linspace(0.2, 3, 40)[:, None]
    unit = F.normalize(W, dim=1)
    for j in (0, 7, 21, 39):
        cos = unit @ unit[j]
        cos[j] = -math.inf
        expected = cos.topk(5).indices.tolist()
        got = [int(i) for i in my_similar(W.clone(), j, 5)]
        if got == expected:
            continue
        assert j not in got, f"latent {j}: your list contains {j} itself: leave out the latent's own row"
        dot = W @ W[j]
        dot[j] = -math.inf
        _diagnose(got, {
            "you ranked by the dot product: normalise the rows first (cosine), or long rows win for their length":
                dot.topk(5).indices,
            "least similar first: take the n largest cosines, most similar first": cos.topk(39).indices[-5:].flip(0),
        }, f"latent {j}: expected {expected}, got {got} (most similar first)")
    return "Correct: my_similar ranks decoder rows by cosine similarity, most similar first, without the row itself."


# ---------------------------------------------------------------- chapter 6

@_exercise("6.1", "06_adaptive_budgets", "ex-sparsemax-tau", "A sparsemax threshold by hand", ("TAU", "SUPPORT"),
           2, 2, 15)
def check_sparsemax(TAU: float, SUPPORT: list[int]) -> str:
    """A hand-computed sparsemax threshold and support, against st.sae.sparsemax_threshold."""
    h = torch.tensor([[2.0, 1.2, 0.5, -1.0]])
    tau = float(TAU)
    mass = float((h - tau).clamp_min(0).sum())
    assert abs(mass - 1) < 1e-6, (
        f"with tau={tau:.3f}, Σ max(0, h_i − tau) is {mass:.3f}, not 1: an entry you kept lies below tau, or one "
        "you left out lies above it; try another support size K")
    reference = float(sparsemax_threshold(h))
    assert abs(tau - reference) < 1e-6, f"tau={tau} differs from the library's {reference:.3f}"
    expected = (h[0] > reference).nonzero().flatten().tolist()
    assert sorted(SUPPORT) == expected, \
        f"support {sorted(SUPPORT)} is not the set of indices with h_i > tau = {reference:.2f}: {expected}"
    return f"Correct: tau = {reference:.2f}, support {expected}."


SIX_MODELS = ("ReLU-L1", "Top-k", "Top-k + off-support L1", "Top-k + L1/L2", "BatchTopK", "Sparsemax")
SPIKE_MODELS = {"Top-k", "Top-k + off-support L1", "Top-k + L1/L2"}     # exactly k latents per input
WHY_NOT_A_SPIKE = {
    "BatchTopK": "BatchTopK keeps k per input only on average over a training batch; at inference its threshold "
                 "lets each input keep as many activations as exceed it",
    "ReLU-L1": "a ReLU SAE has no budget at all: its L0 is whatever the l1 penalty leaves",
    "Sparsemax": "Sparsemax has no budget knob: its L0 is whatever the threshold gives",
}


@_exercise("6.2", "06_adaptive_budgets", "ex-l0-spike", "Predict the spikes", ("SPIKES",), 1, 2, 5)
def check_spikes(SPIKES: set[str], at_k: dict[str, float] | None = None) -> str:
    """A predicted set of single-spike models; against the measured fractions at L0 = k (`at_k`) when given."""
    unknown = set(SPIKES) - set(SIX_MODELS)
    assert not unknown, f"{sorted(unknown)} are not models of this chapter; choose among {list(SIX_MODELS)}"
    measured = {n for n, frac in at_k.items() if frac >= 0.99} if at_k is not None else SPIKE_MODELS
    extra, missed = set(SPIKES) - measured, measured - set(SPIKES)
    assert not extra, "; ".join(WHY_NOT_A_SPIKE.get(n, f"{n} is not a spike") +
                                (f" (here {at_k[n]:.0%} of the inputs have L0 = k)" if at_k else "")
                                for n in sorted(extra))
    assert not missed, (f"{sorted(missed)} also give exactly k latents to at least 99% of the inputs: a Top-k SAE "
                        "keeps k per input whatever its training loss; the regularizers change which latents win, "
                        "not how many")
    return f"Correct: {sorted(measured)} are spikes at k."


# ---------------------------------------------------------------- chapter 7

@_exercise("7.1", "07_scaling_up", "ex-gpu-hours", "A floor on GPU-hours", ("gpu_floor_hours",), 1, 2, 10)
def check_gpu_hours(gpu_floor_hours: Callable) -> str:
    """gpu_floor_hours(steps, batch_size, d, m, step_per_gemm, tflops, gemm_efficiency) against st.grid.gpu_hours,
    with step_per_gemm ≠ 1 and a non-default efficiency, so that each factor of the formula shows."""
    from .grid import gpu_hours

    cases = [(31_250, 2048, 1024, 8192, 1.7, 312.0, 0.6), (1_000, 4096, 768, 16384, 2.4, 121.0, 0.5)]
    for steps, B, d, m, ratio, tflops, eff in cases:
        args = (steps, B, d, m, ratio, tflops, eff)
        got, right = gpu_floor_hours(*args), gpu_hours(*args)
        if _close(got, right, rtol=1e-6, atol=0):
            continue
        _diagnose(got, [
            ("a multiply-add is 2 FLOPs: the GEMM costs 2·B·d·m, not B·d·m", right / 2),
            ("that is in seconds: divide by 3600 for hours", right * 3600),
            ("you priced the GEMM at the card's peak: divide by gemm_efficiency too", right * eff),
            ("a step costs step_per_gemm GEMMs: multiply by it", right / ratio),
            ("TFLOP/s is 10^12 FLOP/s: multiply tflops by 1e12", right * 1e12),
        ], f"for steps={steps}, B={B}, d={d}, m={m}, step_per_gemm={ratio}, {tflops} TFLOP/s at {eff:.0%}: expected "
           f"{right:.4g} h, you gave {got}")
    hours = gpu_floor_hours(*cases[0])
    return (f"Correct: one paper cell (50 epochs of ImageNet-1K at batch 2048, d=1024, m=8192) needs at least "
            f"{hours * 3600:.0f} s ({hours:.4f} h) of SAE training on an A100: the floor is small; the real cost "
            "is in the memory-bound parts of a step and in extracting the embeddings.")


# ---------------------------------------------------------------- grading

@dataclass(frozen=True)
class Grade:
    exercise: Exercise
    status: str          # "passed", "failed", "not done", "missing"
    message: str

    @property
    def points(self) -> int:
        return int(self.status == "passed")


def _defined(source: str) -> set[str]:
    """The top-level names a cell defines (functions and assignments)."""
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
    return names


def _imports(sources: list[str]) -> str:
    """Every top-level import statement of a notebook's code cells, so the learner's cells see the same modules."""
    lines = []
    for source in sources:
        try:
            body = ast.parse(source).body
        except SyntaxError:
            continue
        lines += [ast.unparse(node) for node in body if isinstance(node, (ast.Import, ast.ImportFrom))]
    return "\n".join(dict.fromkeys(lines))


def grade(path: str | Path, chapter: str | None = None) -> list[Grade]:
    """Run every check of a chapter on a filled-in notebook (.ipynb or jupytext .py).

    The learner's answers are the code cells tagged `exercise` (the student notebooks keep the tag): each runs in
    a fresh namespace holding the notebook's imports, then its exercise's check runs on the names it defined. The
    chapter is the notebook's stem (student/01_topk_basics.ipynb: 01_topk_basics) unless given."""
    import jupytext

    path = Path(path)
    chapter = chapter or path.stem
    if chapter not in CHAPTERS:
        raise ValueError(f"{path}: {chapter!r} is not a chapter; pass chapter= one of {sorted(CHAPTERS)}")
    notebook = jupytext.read(path)
    code = [c.source for c in notebook.cells if c.cell_type == "code"]
    answers = [c.source for c in notebook.cells
               if c.cell_type == "code" and "exercise" in c.metadata.get("tags", [])]
    prelude = _imports(code)
    grades = []
    for ex in exercises(chapter):
        cell = next((s for s in answers if set(ex.names) <= _defined(s)), None)
        if cell is None:
            grades.append(Grade(ex, "missing", f"no exercise cell defines {', '.join(ex.names)}"))
            continue
        namespace: dict[str, Any] = {}
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(prelude, f"{path.name}: imports", "exec"), namespace)
                exec(compile(cell, f"{path.name}: exercise {ex.number}", "exec"), namespace)
                if any(namespace[name] is Ellipsis for name in ex.names):
                    raise NotImplementedError
                ex.check.raw(*(namespace[name] for name in ex.names))
            grades.append(Grade(ex, "passed", ""))
        except NotImplementedError:
            grades.append(Grade(ex, "not done", "still a stub"))
        except AssertionError as error:
            grades.append(Grade(ex, "failed", str(error)))
        except Exception as error:                     # the learner's code crashed: graded as failed, with why
            grades.append(Grade(ex, "failed", f"{type(error).__name__}: {error}"))
    return grades


def score_table(grades: list[Grade]) -> str:
    """A plain-text table of grades and the total, PAGE_WIDTH columns wide: each message on the lines below its row."""
    rows = [f"{'exercise':<9} {'title':<42} {'status':<9} points"]
    for g in grades:
        rows.append(f"{g.exercise.number:<9} {g.exercise.title[:42]:<42} {g.status:<9} {g.points:>6}")
        if g.message:
            rows += textwrap.wrap(g.message, PAGE_WIDTH, initial_indent=" " * 10, subsequent_indent=" " * 10)
    rows.append(f"score: {sum(g.points for g in grades)}/{len(grades)}")
    return "\n".join(rows)
