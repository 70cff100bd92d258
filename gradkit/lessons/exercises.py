"""Instant feedback on the lessons' exercises: ``check("02.1", answer)`` says right or wrong.

Every exercise of the lessons (``"NN.k"``), every "predict before you move the slider" prompt
(``"NN.pk"``), every "implement it yourself" exercise (``"implement.norm"`` ...) and every
find-the-bug exercise (``"bug.k"``) has an entry in :data:`EXERCISES`. A checkable one recomputes
the right answer from the kit (``gradkit.clip``, ``gradkit.toys``, the shipped sweep in
``results/``) when it is called, so a check can never drift from what the lesson computes. A
wrong answer gets a reason and a hint that points back to the lesson cell that explains it,
never the expected value. Open exercises (discussion, training runs whose numbers depend on the
profile) say so and point to the solution notebook the teacher holds.

>>> check("00.2", 4.0).ok, check("00.2", 3.0).ok
(True, False)
>>> print(check("00.2", None))  # no answer yet: the question again
00.2 no answer yet: For g = (3, 4): the smallest value-clipping threshold c that leaves the direction unchanged (a number).
"""

from __future__ import annotations

import ast
import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

Checker = Callable[..., tuple[bool, str]]

# The lessons' CIFAR-10 statistics, as the tutorial transforms of the find-the-bug notebook spell them.
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
SOLUTIONS = "notebooks/solutions/"


@dataclass(frozen=True)
class Feedback:
    """What :func:`check` says: ``ok`` is True (right), False (not yet) or None (no answer, or no automatic check)."""

    exercise: str
    ok: bool | None
    message: str
    where: str

    def __str__(self) -> str:
        if self.ok is None:
            return f"{self.exercise} {self.message}"
        head = "right" if self.ok else "not yet"
        return f"{self.exercise} {head}: {self.message}" + ("" if self.ok else f" See {self.where}.")

    def _repr_markdown_(self) -> str:
        mark = {True: "**✓ right**", False: "**✗ not yet**", None: "**?**"}[self.ok]
        return f"{mark} ({self.exercise}) {self.message}" + ("" if self.ok else f"  \n→ see {self.where}")

    def __repr__(self) -> str:
        return str(self)


@dataclass(frozen=True)
class Exercise:
    """One exercise: where it is taught, the question in one line, and its checker (None: open).

    ``key`` is a phrase of the exercise as the lesson's Exercises cell words it; the question and the
    solution notebook's section for the exercise repeat it, so a test finds all three telling the same
    exercise (empty for the predictions and the classroom notebooks, which have no Exercises cell).
    """

    id: str
    notebook: str
    section: str
    question: str
    hint: str
    checker: Checker | None = None
    key: str = ""

    @property
    def where(self) -> str:
        return f"{self.notebook}, section “{self.section}”"


# ----------------------------------------------------------------------------------------------
# Small tools shared by the checkers


def _number(answer: Any, name: str = "the answer") -> float:
    if isinstance(answer, bool) or not isinstance(answer, (int, float)) and not hasattr(answer, "__float__"):
        raise _Wrong(f"{name} should be a number, got {type(answer).__name__} {answer!r}")
    value = float(answer)
    if not math.isfinite(value):
        raise _Wrong(f"{name} should be a finite number, got {value}")
    return value


def _numbers(answer: Any, n: int, name: str = "the answer") -> list[float]:
    try:
        values = list(answer)
    except TypeError:
        raise _Wrong(f"{name} should be {n} numbers, got {answer!r}") from None
    if len(values) != n:
        raise _Wrong(f"{name} should have {n} numbers, got {len(values)}")
    return [_number(v, name) for v in values]


def _parts(answer: Any, n: int) -> tuple:
    if not isinstance(answer, (tuple, list)) or len(answer) != n:
        raise _Wrong(f"the answer should be a tuple of {n} parts, got {answer!r}")
    return tuple(answer)


def _close(a: float, b: float, rel: float = 1e-3, abs_: float = 1e-6) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


class _Wrong(Exception):
    """An answer of the wrong shape: the message says which shape is expected."""


def _call(fn: Any, *args: Any) -> Any:
    """Call the student's function; its own error becomes the feedback, not a traceback."""
    if not callable(fn):
        raise _Wrong(f"the answer should be a function, got {type(fn).__name__}")
    try:
        return fn(*args)
    except Exception as err:  # the student's code failing is the feedback, not a crash
        raise _Wrong(f"your function raised {type(err).__name__}: {err}") from None


def _grads(seed: int, shapes: Sequence[tuple[int, ...]], scale: float) -> list:
    import torch

    gen = torch.Generator().manual_seed(seed)
    return [scale * torch.randn(*s, generator=gen) for s in shapes]


def _as_params(grads: Sequence[Any], weights: Sequence[Any] | None = None) -> list:
    import torch

    params = []
    for i, g in enumerate(grads):
        p = (weights[i].clone() if weights is not None else torch.zeros_like(g)).requires_grad_(True)
        p.grad = g.clone()
        params.append(p)
    return params


def _same_tensors(mine: Any, ref: Sequence[Any], tol: float = 1e-5) -> tuple[bool, str]:
    import torch

    try:
        mine = [torch.as_tensor(t).detach().float() for t in mine]
    except Exception:
        return False, "your function should return a list of tensors, one per gradient"
    if len(mine) != len(ref) or any(m.shape != r.shape for m, r in zip(mine, ref)):
        return False, "your function should return one tensor per gradient, each of the gradient's shape"
    worst = max(float((m - r).abs().max()) / max(float(r.abs().max()), 1e-12) for m, r in zip(mine, ref))
    return worst <= tol, f"largest relative difference from gradkit {worst:.2e}"


SHAPES = [(5, 4), (5,), (3, 2, 3, 3)]

# ----------------------------------------------------------------------------------------------
# Lesson 00


def _c00_1(answer: Any) -> tuple[bool, str]:
    norm_part, value_part = _parts(answer, 2)
    got = (_numbers(norm_part, 2, "the norm-clipped gradient"), _numbers(value_part, 2, "the value-clipped gradient"))
    want = [0.3, 0.4]
    if all(_close(a, b, abs_=1e-4) for part in got for a, b in zip(part, want)):
        return True, "neither method changes a gradient that is already inside its threshold."
    return False, "at least one of the two vectors is not what clipping at c = 1 gives for g = (0.3, 0.4)."


def _c00_2(answer: Any) -> tuple[bool, str]:
    c = _number(answer)
    if c <= 0:
        return False, "a threshold is a positive number."
    if _close(c, 4.0, abs_=1e-6):
        return True, "below the largest element's size, clamping cuts one element more than the other."
    from gradkit import toys

    if c > 4.0:
        return False, "that threshold leaves the direction unchanged, but a smaller one does too."
    return False, f"at c = {c:g} value clipping turns g = (3, 4) by {toys.clip_2d([3.0, 4.0], c).value_angle:.1f}°."


# ----------------------------------------------------------------------------------------------
# Lesson 01


def _c01_1(answer: Any) -> tuple[bool, str]:
    from gradkit import toys

    s = _number(answer)
    if s <= 0:
        return False, "a weight scale is positive."
    drift = toys.log_norm_drift(s, 64)
    if abs(drift) < 1e-4:
        return True, f"the drift per layer at s = {s:.5g} is {drift:+.1e}: the typical norm stays put."
    return False, f"at s = {s:.5g} the drift per layer is {drift:+.2e}, so the typical norm still {'grows' if drift > 0 else 'shrinks'}."


def _mlp(**kw: Any) -> Any:
    from gradkit import toys

    return toys.mlp_profile(**{"batch": 128, "seed": 0, **kw})


def _c01_2(answer: Any) -> tuple[bool, str]:
    factor, std, stays_zero = _parts(answer, 3)
    factor, std = _number(factor, "the factor"), _number(std, "the standard deviation")
    if not 0.2 <= factor <= 0.3:
        return False, "the per-layer factor estimate is off: Xavier's sigma_w for a 64 x 64 layer times sqrt(64) times 1/4."
    if std <= 0:
        return False, "a standard deviation is positive."
    p = _mlp(depth=20, width=64, activation="sigmoid", init="normal", std=std)
    if not 0.1 <= p.first_last_ratio <= 10:
        return False, f"at std = {std:g} the first/last ratio is {p.first_last_ratio:.2g}: not flat yet (aim for 0.1 to 10)."
    if not isinstance(stays_zero, bool) or stays_zero != (p.saturated.mean() == 0):
        return False, "look at the saturated share the widget prints at your standard deviation."
    return True, (f"std = {std:g} gives a first/last ratio of {p.first_last_ratio:.2f}, but "
                  f"{100 * p.saturated.mean():.0f}% of the units are saturated: the 1/4 estimate only holds near z = 0.")


def _c01_3(answer: Any) -> tuple[bool, str]:
    if not isinstance(answer, dict) or set(answer) != {"clip", "batchnorm", "residual"}:
        return False, 'the answer should be a dict with keys "clip", "batchnorm", "residual", each (ratio, total norm).'
    base = dict(depth=50, width=64, activation="tanh", init="normal", std=0.3)
    variants = {"clip": {"clip": "norm:1.0"}, "batchnorm": {"norm": "batch"}, "residual": {"residual": True}}
    for key, extra in variants.items():
        ratio, total = _numbers(answer[key], 2, f'answer["{key}"]')
        p = _mlp(**base, **extra)
        if not (_close(ratio, p.first_last_ratio, rel=0.02) and _close(total, p.norm_after, rel=0.02)):
            return False, f'answer["{key}"] does not match what toys.mlp_profile measures for that setting.'
    return True, "clipping changed only the total norm; BatchNorm and residual connections changed the ratio."


def _c01_p1(answer: Any) -> tuple[bool, str]:
    import numpy as np

    from gradkit import toys

    guess = _number(answer)
    if guess <= 0:
        return False, "a norm is positive."
    median = float(np.median(toys.product_norms(50, 1.5, 64, 32, seed=0)[:, -1]))
    off = abs(math.log10(guess) - math.log10(median))
    if off <= 1:
        return True, f"the median over 32 draws is {median:.3g}: within a factor 10 of your guess."
    return False, f"your guess is {off:.0f} orders of magnitude {'too high' if guess > median else 'too low'}."


def _c01_p2(answer: Any) -> tuple[bool, str]:
    guess = _number(answer)
    if guess <= 0:
        return False, "a ratio of norms is positive."
    ratio = _mlp(depth=20, width=64, activation="relu", init="kaiming").first_last_ratio
    if abs(math.log10(guess / ratio)) <= 1:
        return True, f"the measured ratio is {ratio:.2g}: within a factor 10 of your guess."
    return False, f"off by more than a factor 10 ({'too high' if guess > ratio else 'too low'})."


def _c01_p3(answer: Any) -> tuple[bool, str]:
    from gradkit import toys

    guess = _number(answer)
    value = float(toys.recurrence_grad_norms(0.95, 100, seed=0)[-1])
    if guess > 0 and abs(math.log(guess / value)) <= math.log(2):
        return True, f"||dL/dh_0|| = {value:.3g}: within a factor 2 of your guess."
    return False, "off by more than a factor 2: the gradient is multiplied by rho at every step back."


# ----------------------------------------------------------------------------------------------
# Lesson 02


def _c02_1(answer: Any) -> tuple[bool, str]:
    from gradkit import toys

    try:
        grads = [_numbers(g, 2, "each gradient") for g in answer]
    except TypeError:
        raise _Wrong("the answer should be a list of three 2-D gradients") from None
    if len(grads) != 3 or len({tuple(g) for g in grads}) != 3:
        return False, "give three different 2-D gradients."
    for g in grads:
        r = toys.clip_2d(g, 1.0)
        if math.isclose(math.hypot(*r.value), math.hypot(*g), rel_tol=1e-9):
            return False, f"value clipping at 1 leaves {tuple(g)} unchanged: it must shorten it."
        if r.value_angle > 0.01:
            return False, f"value clipping at 1 turns {tuple(g)} by {r.value_angle:.1f}°."
    return True, "each one is shortened without turning. What do their elements have in common?"


def _c02_2(answer: Any) -> tuple[bool, str]:
    import torch

    from gradkit import clip_grad_norm, clip_grad_scaled_value

    guess = _number(answer)
    a, b = _as_params([torch.tensor([2.0, -2.0, 2.0, 5.0])]), _as_params([torch.tensor([2.0, -2.0, 2.0, 5.0])])
    clip_grad_norm(a, 1.0)
    clip_grad_scaled_value(b, 1.0)
    cos = float(torch.nn.functional.cosine_similarity(a[0].grad, b[0].grad, dim=0))
    if abs(guess - cos) < 1e-3:
        return True, "one element of a different size is enough to make the two results point apart."
    return False, "that is not the cosine between the two clipped vectors."


def _c02_3(answer: Any) -> tuple[bool, str]:
    from gradkit import toys

    lr, longest = _numbers(answer, 2)
    if lr <= 0:
        return False, "a learning rate is positive."
    if toys.descend(lr, 60).step.max() >= 1:
        return False, f"at lr = {lr:g} plain gradient descent already takes a step longer than 1."
    if toys.descend(lr * 1.1, 60).step.max() < 1:
        return False, f"lr = {lr:g} is safe, but a 10% larger one is safe too: look higher."
    real = toys.descend(1.0, 60, clip="norm:2").step.max()
    if abs(longest - real) > 1e-3:
        return False, "the learning rate is right; the longest clipped step at lr = 1 is not."
    return True, "the clipped step is bounded by lr * c at every learning rate; the plain one is not."


def _c02_p1(answer: Any) -> tuple[bool, str]:
    from gradkit import toys

    guess = _number(answer)
    angle = toys.clip_2d([2.0, 0.5], 1.0).value_angle
    if abs(guess - angle) <= 2:
        return True, f"value clipping turned (2, 0.5) by {angle:.1f}°."
    return False, f"more than 2° off ({'too large' if guess > angle else 'too small'})."


def _c02_p2(answer: Any) -> tuple[bool, str]:
    from gradkit import toys

    guess = _number(answer)
    longest = float(toys.descend(0.05, 60).step.max())
    if guess > 0 and abs(math.log(guess / longest)) <= math.log(2):
        return True, f"the longest step is {longest:.3g}: within a factor 2 of your guess."
    return False, f"off by more than a factor 2 ({'too long' if guess > longest else 'too short'})."


# ----------------------------------------------------------------------------------------------
# Lessons 03 and 04: predictions read from a run or from the shipped sweep


def _share(answer: Any) -> float:
    share = _number(answer, "the share")
    if not 0 <= share <= 1:
        raise _Wrong(f"give the share as a number between 0 and 1 (e.g. 0.4 for 40%), got {share:g}")
    return share


def _c03_p1(answer: Any, norms: Sequence[float] | None = None) -> tuple[bool, str]:
    if norms is None:
        raise _Wrong('pass the recorded norms too: check("03.p1", prediction, norms=none.grad_norm_before)')
    guess = _share(answer)
    real = sum(v > 2.0 for v in norms) / max(len(norms), 1)
    if abs(guess - real) <= 0.1:
        return True, f"{100 * real:.0f}% of the unclipped run's steps lie above c = 2."
    return False, f"more than 10 points off ({'too high' if guess > real else 'too low'})."


# Lesson 04's settings in the shipped sweep (results/README.md): A trains well unclipped, B's lr is too high.
SETTING_A = ("seed_cnn", 0.05)
SETTING_B = ("seed_cnn", 0.2)


def _setting_runs(model: str, lr: float) -> list:
    from gradkit import shipped
    from gradkit.runs import load_sweep

    return [h for h in load_sweep(shipped.results_dir()) if h.config["model"] == model and h.config["lr"] == lr]


def _setting_rows(model: str, lr: float) -> list:
    from gradkit import sweeps

    return sweeps.sweep_table(_setting_runs(model, lr))


def step_over_bound(runs: Sequence[Any], row: Any) -> float:
    """The longest step of ``row``'s runs over the momentum bound lr * c / (1 - m) (> 1: above the bound).

    The bound is norm clipping's: with ||g|| <= c every step of SGD with momentum m is at most
    lr * c * (1 + m + m^2 + ...) = lr * c / (1 - m). Lesson 04's step panels draw the same line.
    """
    ids = set(row.run_ids)
    mine = [h for h in runs if h.config["run_id"] in ids]
    config = mine[0].config
    bound = config["lr"] * row.threshold / (1 - config["momentum"])
    return max(max(h.step_norm) for h in mine) / bound


def _c04_1(answer: Any) -> tuple[bool, str]:
    c = _number(answer)
    rows = _setting_rows(*SETTING_A)
    none = next(r for r in rows if r.method == "none")
    near = [r for r in rows if r.method == "norm" and abs(r.val_mean - none.val_mean) <= 0.01]
    smallest = min(near, key=lambda r: r.threshold)
    if not any(_close(c, r.threshold) for r in rows if r.method == "norm"):
        return False, "that threshold is not one of the sweep's norm thresholds."
    if _close(c, smallest.threshold):
        return True, (f"it clipped {100 * smallest.clip_rate:.0f}% of the steps and its validation accuracy "
                      "still matched no clipping.")
    row = next(r for r in rows if r.method == "norm" and _close(c, r.threshold))
    if abs(row.val_mean - none.val_mean) > 0.01:
        return False, (f"at c = {c:g} the mean validation accuracy is {100 * abs(row.val_mean - none.val_mean):.1f} "
                       "points from no clipping.")
    return False, "within 1 point, but a smaller threshold is too."


def _c04_2(answer: Any) -> tuple[bool, str]:
    from gradkit import sweeps

    if not isinstance(answer, dict) or set(answer) != {"norm", "value", "keeps_step_below"}:
        return False, 'the answer should be a dict with keys "norm", "value" (best thresholds) and "keeps_step_below".'
    runs = _setting_runs(*SETTING_B)
    rows = sweeps.sweep_table(runs)
    over = {}
    for method in ("norm", "value"):
        best, _ = sweeps.best_threshold(rows, method)
        if not _close(_number(answer[method], f'answer["{method}"]'), best.threshold):
            return False, f"the best {method} threshold of setting B is another one: read the accuracy panel."
        over[method] = step_over_bound(runs, best)
    below = [m for m, ratio in over.items() if ratio <= 1]
    if answer["keeps_step_below"] not in below:
        return False, "compare each method's longest step with the dotted line lr * c / (1 - m) of its step panel."
    return True, ", ".join(f"{m}: longest step {ratio:.3g} times lr * c / (1 - m)" for m, ratio in over.items()) + (
        "; value clipping's c bounds each element, so its gradient can be sqrt(n) times longer than c.")


def _c04_p1(answer: Any) -> tuple[bool, str]:
    guess = _share(answer)
    rows = [r for r in _setting_rows(*SETTING_A) if r.method == "norm"]
    real = min(rows, key=lambda r: r.threshold).clip_rate
    if abs(guess - real) <= 0.1:
        return True, f"the smallest norm threshold clipped {100 * real:.0f}% of the steps."
    return False, f"more than 10 points off ({'too high' if guess > real else 'too low'})."


# ----------------------------------------------------------------------------------------------
# Lesson 07


def _c07_1(answer: Any, batch: int = 64) -> tuple[bool, str]:
    ratio = _number(answer)
    if _close(ratio, batch, rel=1e-3):
        return True, "the gradient is linear in the loss: summing B losses multiplies it by B."
    return False, "that is not the ratio of the two gradient norms on one batch."


# ----------------------------------------------------------------------------------------------
# Implement it yourself


def _c_impl_norm(fn: Any) -> tuple[bool, str]:
    from gradkit import clip_grad_norm

    for seed, scale, c in [(0, 1.0, 0.5), (1, 0.01, 1.0), (2, 10.0, 3.0)]:
        grads = _grads(seed, SHAPES, scale)
        ref = _as_params(grads)
        clip_grad_norm(ref, c)
        ok, why = _same_tensors(_call(fn, [g.clone() for g in grads], c), [p.grad for p in ref])
        if not ok:
            kind = "inside" if scale < 0.1 else "longer than"
            return False, f"wrong on a gradient {kind} the threshold c = {c:g}: {why}."
    return True, "your norm clipping matches gradkit.clip_grad_norm on random gradients."


def _c_impl_value(fn: Any) -> tuple[bool, str]:
    from gradkit import clip_grad_value

    for seed, c in [(0, 0.5), (1, 2.0), (2, 0.01)]:
        grads = _grads(seed, SHAPES, 1.0)
        ref = _as_params(grads)
        clip_grad_value(ref, c)
        ok, why = _same_tensors(_call(fn, [g.clone() for g in grads], c), [p.grad for p in ref])
        if not ok:
            return False, f"wrong at c = {c:g}: {why}."
    return True, "your value clipping matches gradkit.clip_grad_value on random gradients."


def _c_impl_agc(fn: Any) -> tuple[bool, str]:
    from gradkit import adaptive_clip_grad

    for seed, lam in [(0, 0.01), (1, 0.1), (2, 1.0)]:
        weights, grads = _grads(seed, SHAPES, 1.0), _grads(seed + 10, SHAPES, 0.3)
        weights[0][0] = 0.0  # a unit whose weights are all 0: only the eps floor keeps its gradient alive
        ref = _as_params(grads, weights)
        adaptive_clip_grad(ref, clipping=lam, eps=1e-3)
        mine = _call(fn, [w.clone() for w in weights], [g.clone() for g in grads], lam)
        ok, why = _same_tensors(mine, [p.grad for p in ref])
        if not ok:
            return False, f"wrong at clipping = {lam:g}: {why}."
    return True, "your AGC matches gradkit.adaptive_clip_grad, unit by unit."


def _c_impl_autoclip(fn: Any) -> tuple[bool, str]:
    from gradkit import AutoClip

    for percentile in (10.0, 50.0, 90.0):
        auto, history = AutoClip(percentile), []
        for step, scale in enumerate([1.0, 3.0, 0.5, 8.0, 2.0, 0.2, 5.0]):
            grads = _grads(step, SHAPES, scale)
            ref = _as_params(grads)
            auto(ref)
            ok, why = _same_tensors(_call(fn, history, [g.clone() for g in grads], percentile), [p.grad for p in ref])
            if not ok:
                return False, f"wrong at step {step + 1} with percentile {percentile:g}: {why}."
    return True, "your AutoClip matches gradkit.AutoClip step after step."


# ----------------------------------------------------------------------------------------------
# Find the bug


def _c_train_step(fn: Any) -> tuple[bool, str]:
    import torch
    from torch.nn import functional as F

    from gradkit import toys

    mine, x, y = toys.tiny_regression(seed=0)
    ref, _, _ = toys.tiny_regression(seed=0)
    opt_mine = torch.optim.SGD(mine.parameters(), lr=0.5)
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.5)
    for step in range(3):
        opt_ref.zero_grad()
        F.mse_loss(ref(x), y).backward()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), max_norm=1.0)
        opt_ref.step()
        _call(fn, mine, opt_mine, x, y, 1.0)
        diff = max(float((a - b).detach().abs().max()) for a, b in zip(mine.parameters(), ref.parameters()))
        if diff > 1e-6:
            return False, f"after step {step + 1} the weights differ from zero_grad, backward, clip, step by {diff:.2g}."
    return True, "three steps give exactly the weights of zero_grad, backward, clip, step."


def _c_keras(answer: Any) -> tuple[bool, str]:
    if not isinstance(answer, str):
        raise _Wrong("the answer should be the fixed line of code as a string")
    try:
        tree = ast.parse(answer.strip())
    except SyntaxError as err:
        return False, f"that is not valid Python ({err.msg})."
    names = {n.attr if isinstance(n, ast.Attribute) else n.id for n in ast.walk(tree) if isinstance(n, (ast.Name, ast.Attribute))}
    if "ClipNorm" in names:
        return False, "Keras has no ClipNorm callback: clipping is an argument of the optimizer."
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    keywords = {k.arg: k.value for c in calls for k in c.keywords}
    if "clipnorm" in keywords:
        return False, "clipnorm= clips each variable's gradient separately, not the global norm."
    value = keywords.get("global_clipnorm")
    if not isinstance(value, ast.Constant) or not isinstance(value.value, (int, float)) or value.value != 1.0:
        return False, "the optimizer needs the keyword that clips the global norm, at 1.0."
    return True, "global_clipnorm=1.0 on the optimizer clips the global norm; clipnorm would clip each variable."


def _c_test_transform(fn: Any) -> tuple[bool, str]:
    import numpy as np
    import torch
    from PIL import Image
    from torchvision import transforms as T

    reference = T.Compose([T.ToTensor(), T.Normalize(CIFAR_MEAN, CIFAR_STD)])
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    for _ in range(4):
        img = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
        first, second = _call(fn, img), _call(fn, img)
        if not isinstance(first, torch.Tensor) or first.shape != (3, 32, 32):
            return False, "the transform should turn a 32x32 PIL image into a (3, 32, 32) tensor."
        if not torch.equal(first, second):
            return False, "the same test image gave two different tensors: something random is still in it."
        if not torch.allclose(first, reference(img), atol=1e-6):
            return False, "deterministic now, but not the training pipeline's normalised tensor."
    return True, "every test image now gives one tensor, normalised like the training images."


def _c_generator(fn: Any) -> tuple[bool, str]:
    import torch
    from torch.nn import functional as F

    from gradkit import toys

    model, x, y = toys.tiny_regression(seed=0)
    F.mse_loss(model(x), y).backward()
    ref, _, _ = toys.tiny_regression(seed=0)
    for p, q in zip(ref.parameters(), model.parameters()):
        p.grad = q.grad.clone()
    want = torch.nn.utils.clip_grad_norm_(ref.parameters(), max_norm=0.1)
    total = _call(fn, model.parameters(), 0.1)
    try:
        total_ok = abs(float(total) - float(want)) <= 1e-4 * float(want)
    except (TypeError, ValueError):
        return False, "the helper should return the total norm before clipping (a number or 0-d tensor)."
    if not total_ok:
        return False, "the returned total norm is not the norm of all the gradients."
    diff = max(float((p.grad - q.grad).abs().max()) for p, q in zip(model.parameters(), ref.parameters()))
    if diff > 1e-6:
        return False, "the norm is right but the gradients were not scaled: is the second loop running at all?"
    return True, "both loops now see every parameter."


def _c_threshold_one(answer: Any) -> tuple[bool, str]:
    from gradkit.clip import clipper

    factor, spec = _parts(answer, 2)
    if not _close(_number(factor, "the factor"), 0.2, abs_=1e-4):
        return False, "that is not the factor norm:1.0 applies to a gradient of norm 5: measure it with gradkit.clip."
    try:
        method = clipper(spec).method
    except ValueError:
        return False, f"{spec!r} is not a clip spec gradkit accepts."
    if method != "none":
        return False, f"{spec!r} still clips; which spec means no clipping at all?"
    return True, "a threshold is a length in gradient units; no clipping is spelled 'none'."


def _c_not_augmentation(answer: Any) -> tuple[bool, str]:
    from gradkit.models import build_model, count_params

    if not isinstance(answer, dict) or set(answer) != {"parameters_without", "parameters_with", "images_changed"}:
        return False, 'the answer should be a dict with "parameters_without", "parameters_with", "images_changed".'
    n = count_params(build_model("seed_cnn", width=0.25))
    if answer["parameters_without"] != n or answer["parameters_with"] != n:
        return False, "count the parameters of both models again with gradkit.models.count_params."
    if answer["images_changed"] is not False:
        return False, "compare the batch before and after the clipped step with torch.equal."
    return True, "same parameters, same images: clipping only rescaled the gradient."


# ----------------------------------------------------------------------------------------------
# The registry

L00, L01, L02 = "00_tour.ipynb", "01_exploding_vanishing.ipynb", "02_clipping_formulas.ipynb"
L03, L04, L05 = "03_cifar10_baseline.ipynb", "04_threshold_explorer.ipynb", "05_sweep_report.ipynb"
L06, L07, L08 = "06_beyond_clipping.ipynb", "07_claims_check.ipynb", "08_when_clipping_saves.ipynb"
IMPL, BUGS = "implement_clipping.ipynb", "find_the_bug.ipynb"

EXERCISES: dict[str, Exercise] = {e.id: e for e in [
    Exercise("00.1", L00, "A first clipped gradient", "For g = (0.3, 0.4) and c = 1: (norm-clipped, value-clipped) as two pairs of numbers.",
             "compare ||g|| with c, and each |g_i| with c, before clipping anything.", _c00_1, key="(0.3, 0.4)"),
    Exercise("00.2", L00, "A first clipped gradient", "For g = (3, 4): the smallest value-clipping threshold c that leaves the direction unchanged (a number).",
             "value clipping turns the vector as soon as it cuts one element and not the other.", _c00_2, key="g = (3, 4)"),
    Exercise("00.3", L00, "Step zero: the doctor", "Run the CIFAR-10 check with GRADKIT_DATA pointing at a folder that does not exist.",
             "read the fix line the doctor prints.", key="a folder that does not exist"),
    Exercise("01.1", L01, "1. Products of random matrices", "The scale s that makes the drift formula exactly 0 for n = 64 (a number).",
             "set the drift formula to 0 and solve for log s.", _c01_1, key="makes the drift formula exactly 0"),
    Exercise("01.2", L01, "2. A deep MLP at initialisation", "Sigmoid with Xavier init at depth 20: (per-layer factor estimate, a std that makes the profile flat, "
             "does the saturated share stay at 0? True/False).",
             "per layer: sigma_w * sqrt(n) * rms(sigma'); the table in section 2 gives Xavier's sigma_w.", _c01_2,
             key="sigmoid with Xavier init at depth 20"),
    Exercise("01.3", L01, "4. What fixes vanishing, and what clipping does", 'Clip at norm:1.0, then BatchNorm, then residual, in the exploding setting: '
             'a dict {"clip": (ratio, total), "batchnorm": (...), "residual": (...)}.',
             "measure each with toys.mlp_profile(depth=50, width=64, activation='tanh', init='normal', std=0.3, batch=128, seed=0, ...).", _c01_3,
             key="BatchNorm, then residual"),
    Exercise("01.p1", L01, "1. Products of random matrices", "Before the slider: the median norm after 50 layers at s = 1.5, width 64 (a number).",
             "the typical norm changes by about s per layer.", _c01_p1),
    Exercise("01.p2", L01, "2. A deep MLP at initialisation", "Before the slider: the first/last gradient ratio of ReLU + Kaiming at depth 20, width 64 (a number).",
             "Kaiming's init is chosen so that the per-layer factor is about 1.", _c01_p2),
    Exercise("01.p3", L01, "3. A recurrence: the same matrix $T$ times", "Before the slider: ||dL/dh_0|| for an orthogonal matrix with rho = 0.95 and T = 100 (a number).",
             "for a scaled orthogonal matrix every step back multiplies the gradient norm by exactly rho.", _c01_p3),
    Exercise("02.1", L02, "2. The geometry in two dimensions", "Three 2-D gradients that value clipping at c = 1 shortens without turning (a list of three pairs).",
             "value clipping turns the vector when it cuts some elements and not others.", _c02_1,
             key="value clipping at c = 1 shortens without turning"),
    Exercise("02.2", L02, "3. Verification: gradkit, torch and a hand computation agree",
             "The cosine between norm clipping at c = 1 and value clipping at c/sqrt(n) of g = (2, -2, 2, 5) (a number).",
             "clip two copies with gradkit.clip_grad_norm and gradkit.clip_grad_scaled_value, then compare them.", _c02_2,
             key="g = (2, -2, 2, 5)"),
    Exercise("02.3", L02, "4. The cliff", "(the largest lr at which plain gradient descent has every step shorter than 1 over 60 steps, "
             "the longest clipped step at lr = 1 with c = 2).",
             "toys.descend(lr, 60) returns every step's length in .step.", _c02_3, key="every step shorter than 1"),
    Exercise("02.p1", L02, "2. The geometry in two dimensions", "Before the slider: by how many degrees does value clipping at c = 1 turn g = (2, 0.5)?",
             "clamp each element to [-1, 1], then compare the two angles with the x axis.", _c02_p1),
    Exercise("02.p2", L02, "4. The cliff", "Before the slider: the longest unclipped step at lr = 0.05 over 60 steps (a number).",
             "a step is lr times the gradient's length; how steep is the wall?", _c02_p2),
    Exercise("03.1", L03, "The gradient norm before clipping", "Set threshold to 2.0 and then 5.0 and rerun: share clipped, and does the clipped run follow the unclipped one?",
             "compare the threshold with the median norm printed under the figure.", key="threshold to 2.0 and then 5.0"),
    Exercise("03.2", L03, "The gradient norm before clipping", "Train without clipping at lr = 0.01 * s (s: the mean gradient scale): is its loss curve close to the clipped run's?",
             "norm clipping multiplies the step by c / ||g|| whenever it acts.", key="without clipping at lr = 0.01 * s"),
    Exercise("03.3", L03, "The step actually taken",
             "Train the clipped run with momentum=0.0: where do its steps sit relative to lr · c now?",
             "the section's two lines say what bounds a step with momentum and without.", key="momentum=0.0"),
    Exercise("03.p1", L03, "Try a threshold", "Before the slider: the share of the unclipped run's steps above c = 2 (between 0 and 1).",
             "where does c = 2 lie in the norm trace of the unclipped run?", _c03_p1),
    Exercise("04.1", L04, "The explorer", "Setting A: the smallest norm threshold whose validation accuracy is within 1 point of no clipping (a number from the sweep).",
             "read the accuracy-against-threshold panel of setting A from the right.", _c04_1,
             key="smallest norm threshold whose validation accuracy is within 1 point of no clipping"),
    Exercise("04.2", L04, "Setting B: a learning rate too high",
             "Setting B, each method at its best threshold on validation: which one keeps the step below lr · c / (1 − m)? "
             'A dict {"norm": best c, "value": best c, "keeps_step_below": "norm" or "value"}.',
             "sweeps.best_threshold gives each method's best row; each run's History.step_norm holds its steps.", _c04_2,
             key="keeps the step below lr · c / (1 − m)"),
    Exercise("04.3", L04, "Setting C: a deep plain network at a high learning rate",
             'Run the dead-unit cell with norm:0.1 and agc:0.01 (dead_specs) and a second seed: does each rescue the units in every run?',
             "a unit is rescued when its share of dead channels stays low to the end; compare the seeds.",
             key="the dead-unit cell with norm:0.1 and agc:0.01"),
    Exercise("04.p1", L04, "The explorer", "Before the slider: the share of steps clipped at setting A's smallest norm threshold (between 0 and 1).",
             "compare that threshold with the histogram of gradient norms.", _c04_p1),
    Exercise("05.1", L05, "Accuracy against the threshold, and the loss curves", "Set method = \"value\" and thresholds = [0.0001, 0.001, 0.01, 0.1]: where does value clipping start to act, "
             "compared with norm clipping?",
             "value clipping's c bounds each entry, norm clipping's the whole vector.", key='method = "value"'),
    Exercise("05.2", L05, "The table", "Set lr = 0.2: which thresholds keep the run from collapsing to chance, and how many steps did they clip?",
             "the clip-rate column says how often each threshold acted.", key="lr = 0.2"),
    Exercise("05.3", L05, "Summary, generated from the numbers", "Is 1 point a fair tolerance given the seed spreads? Set seeds = 3 and compare.",
             "compare the 1-point tolerance with the per-seed accuracies in the table.", key="seeds = 3"),
    Exercise("06.1", L06, "The runs", "Add warm-up + norm clipping c=1 in one run: better than either alone?",
             "both go into one fit call: schedule= and clip=.", key="warm-up + norm clipping c=1"),
    Exercise("06.2", L06, "The table", "Rerun with seed = 1 and with LR halved: which rows change?",
             "a run at the edge of stability can tip either way with the seed.", key="seed = 1"),
    Exercise("06.3", L06, "The runs", "max_norm:0.5, below the initial filter norms: what changes, and why does it behave like weight clipping?",
             "a Kaiming filter's norm is about sqrt(2) at initialisation.", key="max_norm:0.5"),
    Exercise("07.1", L07, "Claim 3: \"A threshold of 1 means no clipping.\"", 'The ratio of the gradient norm with reduction="sum" to that with the mean loss, for one batch of BATCH images.',
             "compute both norms on the same batch with the same fresh network; claim 3's experiment says how the "
             "two losses relate.", _c07_1, key='reduction="sum"'),
    Exercise("07.2", L07, "Claim 6: \"More iterations with clipping always give higher accuracy; a larger threshold trains slower.\"",
             "Add c = 100 and lr 0.5: a setting where a larger threshold trains slower.", "a larger c is slower only when the steps it allows are already too large.",
             key="c = 100"),
    Exercise("07.3", L07, "Claim 7: \"Clipping makes training converge faster.\"", "Collect smoothness_trace for the clipped high-learning-rate run and draw both runs on the scatter.",
             "clipping changes where the run goes, not how the landscape is shaped.",
             key="smoothness_trace for the clipped high-learning-rate run"),
    Exercise("08.1", L08, "1. The adding problem: one RNN, trained without and with clipping",
             "Thresholds at the 95th percentile and at 10 times the 99th: the share of clipped steps, and does the run survive?",
             "a threshold at the p-th percentile of the unclipped runs' norms cuts (100 - p)% of *their* steps; the clipped run's own norms differ, so measure; one above the spikes acts too late or never.",
             key="95th percentile"),
    Exercise("08.2", L08, "2. Many seeds, one table",
             "The learning rate at which every unclipped seed survives, and the steps it needs against the clipped run at the original rate.",
             "halve the learning rate until no seed diverges, then read each run's test loss against the target step by step.",
             key="the clipped run at the original"),
    Exercise("08.3", L08, "3. What clipping cannot fix: long sequences",
             "A GRU and an RNN with recurrent weights scaled to rho = 1.5, at initialisation: which vanishes, which explodes, and what does clipping do to each?",
             "clipping multiplies every gradient entry by the same factor, so it cannot change the ratio between early and late steps.",
             key="rho = 1.5"),
    Exercise("implement.norm", IMPL, "1. Norm clipping", "my_clip_norm(grads, c) -> list of tensors.",
             "one factor min(1, c / (||g|| + 1e-6)) for all tensors, ||g|| over every element of every tensor.", _c_impl_norm),
    Exercise("implement.value", IMPL, "2. Value clipping", "my_clip_value(grads, c) -> list of tensors.",
             "each element on its own: min(max(g_i, -c), c).", _c_impl_value),
    Exercise("implement.agc", IMPL, "3. Adaptive gradient clipping (AGC)", "my_agc(weights, grads, clipping) -> list of tensors.",
             "units are the slices along dim 0 of a >= 2-d tensor; a 1-d tensor is one unit; bound clipping * max(||W_i||, 1e-3).", _c_impl_agc),
    Exercise("implement.autoclip", IMPL, "4. AutoClip", "autoclip_step(history, grads, percentile) -> list of tensors.",
             "append this step's norm first, then take the percentile with linear interpolation (torch.quantile).", _c_impl_autoclip),
    Exercise("bug.1", BUGS, "Bug 1: a method that does not exist", "A fixed train_step(model, optimizer, x, y, max_norm).",
             "clipping lives in torch.nn.utils, not on the optimizer.", _c_train_step),
    Exercise("bug.2", BUGS, "Bug 2: clipping before backward()", "A fixed train_step(model, optimizer, x, y, max_norm).",
             "the order is zero_grad, backward, clip, step.", _c_train_step),
    Exercise("bug.3", BUGS, "Bug 3: a Keras callback that does not exist", "The fixed optimizer line, as a string.",
             "Keras clips through optimizer arguments: clipnorm (per variable), global_clipnorm, clipvalue.", _c_keras),
    Exercise("bug.4", BUGS, "Bug 4: training augmentation on the test set", "A fixed test_transform.",
             "random crops and flips belong to training only.", _c_test_transform),
    Exercise("bug.5", BUGS, "Bug 5: a generator consumed twice", "A fixed clip_by_total_norm(parameters, max_norm).",
             "model.parameters() is a generator: the first loop uses it up.", _c_generator),
    Exercise("bug.6", BUGS, 'Bug 6: threshold 1 read as "no clipping"', "(factor applied to a gradient of norm 5 by norm:1.0, the spec for no clipping).",
             "a threshold is a length, compared with ||g||.", _c_threshold_one),
    Exercise("bug.7", BUGS, "Bug 7: clipping as augmentation, or as a smaller model", 'A dict {"parameters_without", "parameters_with", "images_changed"}.',
             "clipping acts between backward() and step(): on gradients only.", _c_not_augmentation),
]}


def check(exercise: str, answer: Any = None, **context: Any) -> Feedback:
    """Say whether ``answer`` is right for ``exercise`` (an id of :data:`EXERCISES`, e.g. ``"02.1"``).

    ``answer=None`` repeats the question. ``context``: what a prediction is compared with when it
    depends on the student's own run (``norms=`` for ``"03.p1"``, ``batch=`` for ``"07.1"``).
    Never raises for a wrong or malformed answer: the feedback says what is expected instead.

    >>> check("bug.6", (0.2, "none")).ok
    True
    """
    if exercise not in EXERCISES:
        raise ValueError(f"exercise={exercise!r} is unknown; accepted: {', '.join(EXERCISES)}")
    ex = EXERCISES[exercise]
    if ex.checker is None:
        return Feedback(exercise, None, f"no automatic check: {ex.question} Hint: {ex.hint} "
                        f"(the teacher's solution is in {SOLUTIONS})", ex.where)
    if answer is None:
        return Feedback(exercise, None, f"no answer yet: {ex.question}", ex.where)
    accepted = list(inspect.signature(ex.checker).parameters)[1:]
    unknown = sorted(set(context) - set(accepted))
    if unknown:
        raise ValueError(f"check({exercise!r}) takes no {', '.join(unknown)}; accepted keywords: {', '.join(accepted) or 'none'}")
    try:
        ok, reason = ex.checker(answer, **context)
    except _Wrong as err:
        ok, reason = False, f"{err}."
    return Feedback(exercise, ok, reason if ok else f"{reason} Hint: {ex.hint}", ex.where)
