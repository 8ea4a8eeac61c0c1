"""st.exercises: every check accepts the book's reference answer and names the mistake of typical wrong answers."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sae_tutorial import exercises as E
from sae_tutorial import regularizers as REG


# ---- the book's reference answers (chapters' exercise cells), one tuple of answers per exercise

def topk_codes(h, k):
    idx = h.topk(k, dim=1).indices
    return torch.zeros_like(h).scatter(1, idx, h.gather(1, idx).relu())


def my_off_support_l1(h, idx, mask=True):
    B, m = h.shape
    active = REG.batch_active_mask(idx, m) if mask else torch.ones(m, dtype=torch.bool)
    off = active.expand(B, m).clone().scatter(1, idx, False)
    return (h.relu() * off).sum() / B


def classify(deltas, sign):
    n = len(deltas)
    mean = sum(deltas) / n
    s = (sum((d - mean) ** 2 for d in deltas) / (n - 1)) ** 0.5 if n > 1 else 0.0
    t = mean / (s / n ** 0.5) if s > 0 else (math.copysign(math.inf, mean) if mean else 0.0)
    return "supports" if sign * t >= 2 else "contradicts" if sign * t <= -2 else "inconclusive"


def verdict(statuses):
    k = statuses.count("supports")
    return "holds" if k == len(statuses) else "does not hold" if k == 0 else "mixed"


def top_images(codes, j, n):
    a = codes[:, j]
    rows = a.argsort(descending=True)[:n]
    return rows[a[rows] > 0]


def similar(W_dec, j, n):
    W = F.normalize(W_dec, dim=1)
    cos = W @ W[j]
    cos[j] = -math.inf
    return cos.topk(n).indices


REFERENCE = {
    "1.1": (topk_codes,),
    "1.2": (lambda x, x_hat: ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum(),),
    "1.3": (lambda codes: (codes == 0).all(dim=0).float().mean().item(),),
    "2.1": (my_off_support_l1,),
    "2.2": (lambda p: torch.where(p > (p ** 2).sum() / p.sum(), 1.0, -1.0),),
    "3.1": (lambda done, shard, total: (done // shard * shard, total - done // shard * shard),),
    "3.2": (lambda x: x / x.norm(dim=1, keepdim=True).clamp_min(1e-12),),
    "3.3": (lambda m: 2e-4 / (m / 2 ** 14) ** 0.5,),
    "4.1": (22 / 35,),
    "4.2": (3 / 4, 10.5 / 14.5),
    "4.3": (classify, verdict, "mixed"),
    "5.1": (top_images,),
    "5.2": (similar,),
    "6.1": (1.1, [0, 1]),
    "6.2": ({"Top-k", "Top-k + off-support L1", "Top-k + L1/L2"},),
    "7.1": (lambda steps, B, d, m, ratio, tflops, eff=0.6:
            steps * ratio * 2 * B * d * m / (tflops * 1e12 * eff) / 3600,),
}


def relu_after_topk_missing(h, k):
    idx = h.topk(k, dim=1).indices
    return torch.zeros_like(h).scatter(1, idx, h.gather(1, idx))


def _with(number, position, answer):
    answers = list(REFERENCE[number])
    answers[position] = answer
    return tuple(answers)


# (exercise, wrong answers, the start of the expected message)
WRONG = [
    ("1.1", (relu_after_topk_missing,), "some codes are negative"),
    ("1.1", (lambda h, k: h.relu(),), "you kept every positive pre-activation"),
    ("1.1", (lambda h, k: torch.zeros_like(h).scatter(1, h.topk(k, dim=1).indices, 1.0),), "your codes are 0/1"),
    ("1.1", (lambda h, k: h.topk(k, dim=1).values.relu(),), "expected dense codes of shape"),
    ("1.2", (lambda x, xh: ((x - xh) ** 2).sum() / (x ** 2).sum(),), "you divided by Σ‖x_n‖²"),
    ("1.2", (lambda x, xh: ((x - xh) ** 2).mean(),), "that is the mean squared error"),
    ("1.2", (lambda x, xh: (((x - xh) ** 2).sum(1) / ((x - x.mean(0)) ** 2).sum(1)).mean(),),
     "you averaged a per-sample ratio"),
    ("1.3", (lambda c: float((c == 0).all(dim=0).sum()),), "you returned the number of dead latents"),
    ("1.3", (lambda c: (c == 0).all(dim=1).float().mean().item(),), "you looked at rows"),
    ("1.3", (lambda c: (c == 0).all(dim=0).float().mean(),), "the value is right but a Tensor"),
    ("2.1", (lambda h, idx, mask=True: (h.relu() * REG.batch_active_mask(idx, h.shape[1])).sum() / h.shape[0],),
     "you summed over all of A"),
    ("2.1", (lambda h, idx, mask=True: my_off_support_l1(h, idx, mask) * h.shape[0] / h.numel(),),
     "you divided by the number of entries"),
    ("2.1", (lambda h, idx, mask=True: my_off_support_l1(h, idx, mask=True),), "the mask is ignored"),
    ("2.2", (lambda p: torch.where(p > p.mean(), 1.0, -1.0),), "row 0: the threshold is not the mean of p"),
    ("2.2", (lambda p: torch.where(p > (p ** 2).sum() / p.sum(), -1.0, 1.0),), "your signs are flipped"),
    ("3.1", (lambda done, shard, total: (done, total - done),), "you assumed every embedded image was saved"),
    ("3.1", (lambda done, shard, total: (-(-done // shard) * shard, total + done // -shard * shard),),
     "you rounded up to a whole shard"),
    ("3.1", (lambda done, shard, total: (done // shard * shard, total),), "the rerun does not start again from row 0"),
    ("3.2", (lambda x: F.normalize(x, dim=0),), "you divided each column by its norm"),
    ("3.2", (lambda x: x / x.norm(dim=1, keepdim=True),), "a row of zeros gave NaN"),
    ("3.2", (lambda x: x / x.norm(),), "you divided by the norm of the whole matrix"),
    ("3.3", (lambda m: 2e-4 * (m / 2 ** 14) ** 0.5,), "the rate must shrink as m grows"),
    ("3.3", (lambda m: 2e-4 / (m / 2 ** 14),), "you forgot the square root"),
    ("4.1", (23 / 41,), "you weighted the pairs by the raw activations"),
    ("4.1", ((0.55 + 1.3125) / (0.875 + 1.3125),), "you included the pairs of an image with itself"),
    ("4.2", (0.5, 0.5), "you used all eight images"),
    ("4.2", (3 / 5, 10.5 / 14.5), "you used all five images where it fires"),
    ("4.2", (3 / 4, 3 / 4), "your weighted purity is the binary one"),
    ("4.3", (lambda d, s: "supports" if s * np.mean(d) > 0 else "contradicts", verdict, "mixed"),
     "you judged by the sign of the mean alone"),
    ("4.3", (lambda d, s: E._rule(d, s, ddof=0), verdict, "mixed"), "you used the population standard deviation"),
    ("4.3", (lambda d, s: E._rule(d, s, use_sign=False), verdict, "mixed"), "you ignored `sign`"),
    ("4.3", (classify, lambda st: "holds" if "supports" in st else "does not hold", "mixed"),
     "verdict(['supports', 'inconclusive']) gave 'holds'"),
    ("4.3", (classify, verdict, "holds"), "the second effect's t is only 0.70"),
    ("5.1", (lambda codes, j, n: codes[:, j].topk(n).indices,), "latent 0 fires on"),
    ("5.1", (lambda codes, j, n: top_images(codes, j, n).flip(0),), "weakest first"),
    ("5.1", (lambda codes, j, n: codes[top_images(codes, j, n), j],), "you returned activations"),
    ("5.2", (lambda W, j, n: (F.normalize(W, dim=1) @ F.normalize(W, dim=1)[j]).topk(n).indices,),
     "latent 0: your list contains 0 itself"),
    ("5.2", (lambda W, j, n: (W @ W[j]).index_fill(0, torch.tensor([j]), -math.inf).topk(n).indices,),
     "you ranked by the dot product"),
    ("5.2", (lambda W, j, n: similar(W, j, W.shape[0] - 1)[-n:].flip(0),), "least similar first"),
    ("6.1", ((2.0 + 1.2 + 0.5 - 1) / 3, [0, 1, 2]), "with tau=0.900, Σ max(0, h_i − tau) is 1.400"),
    ("6.1", (1.0, [0]), "with tau=1.000"),
    ("6.1", (1.1, [0, 1, 2]), "support [0, 1, 2] is not the set of indices"),
    ("6.2", ({"Top-k", "BatchTopK"},), "BatchTopK keeps k per input only on average"),
    ("6.2", ({"Top-k"},), "['Top-k + L1/L2', 'Top-k + off-support L1'] also give exactly k"),
    ("6.2", ({"TopK"},), "['TopK'] are not models of this chapter"),
    ("7.1", (lambda steps, B, d, m, r, t, e=0.6: steps * r * B * d * m / (t * 1e12 * e) / 3600,),
     "a multiply-add is 2"),
    ("7.1", (lambda steps, B, d, m, r, t, e=0.6: steps * r * 2 * B * d * m / (t * 1e12 * e),), "that is in seconds"),
    ("7.1", (lambda steps, B, d, m, r, t, e=0.6: steps * r * 2 * B * d * m / (t * 1e12) / 3600,),
     "you priced the GEMM at the card's peak"),
]


def test_every_exercise_is_registered_with_its_metadata():
    assert list(E.REGISTRY) == list(REFERENCE)
    for ex in E.REGISTRY.values():
        assert ex.chapter in E.CHAPTERS and 1 <= ex.difficulty <= 3 and 1 <= ex.importance <= 3 and ex.minutes > 0
        assert ex.check is getattr(E, ex.check.__name__)
    assert {n for n, *_ in WRONG} == set(REFERENCE)
    assert all(sum(n == number for n, *_ in WRONG) >= 2 for number in REFERENCE), "two wrong answers each"


@pytest.mark.parametrize("number", list(REFERENCE))
def test_check_accepts_the_reference_answer(number, capsys):
    assert E.REGISTRY[number].check(*REFERENCE[number]) is True
    assert capsys.readouterr().out.startswith("Correct")


@pytest.mark.parametrize("number", list(REFERENCE))
def test_check_says_a_stub_is_not_done(number, capsys):
    def stub(*args, **kwargs):
        raise NotImplementedError(f"Exercise {number}")

    answers = tuple(stub if callable(a) else ... for a in REFERENCE[number])
    assert E.REGISTRY[number].check(*answers) is False
    out = capsys.readouterr().out
    assert f"Exercise {number}" in out and "not done yet" in out


@pytest.mark.parametrize("number, answers, message", WRONG, ids=[f"{n}-{i}" for i, (n, *_) in enumerate(WRONG)])
def test_check_names_the_mistake(number, answers, message):
    with pytest.raises(AssertionError) as caught:
        E.REGISTRY[number].check(*answers)
    assert str(caught.value).startswith(message), str(caught.value)


def test_the_chapters_own_data_can_be_added():
    ok = REFERENCE["3.1"][0]
    assert E.check_after_kill(ok, observed=((3700, 1000, 10_000), (3000, 7000)))
    with pytest.raises(AssertionError, match=r"BatchTopK .* \(here 40% of the inputs"):
        E.check_spikes({"Top-k", "BatchTopK"}, at_k={"Top-k": 1.0, "BatchTopK": 0.4})
