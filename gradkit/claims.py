"""Claims about gradient clipping, measured: the helpers and verdict rules of lesson 07.

Each claim gets an experiment, numbers, and a :class:`Verdict` computed from those numbers by a
rule written in the verdict function's docstring (never typed in by hand). When the run is too
small to decide (the ``smoke`` profile), the rule answers ``"inconclusive at this size"``
instead of asserting something it did not see.

Measurements:

- :func:`clip_geometry`: on real SGD steps, the norm of each clipped gradient and the cosine
  cos(a, b) = <a, b> / (||a|| ||b||) between it, the raw gradient and the other clipped ones.
- :func:`smoothness_trace`: Zhang et al. (2020)'s local smoothness along the trajectory,
  L_t = ||g(w_{t+1}) - g(w_t)|| / ||w_{t+1} - w_t|| (both gradients on the same batch).
- :func:`update_direction`: for several optimisers and clipping methods, the cosine between the
  update the optimiser takes with the clipped gradient and the one it would take with the raw
  gradient from the same state (momentum and Adam carry state, so even a global rescale of g can
  turn the update).
- :func:`step_times`: median seconds of one training step for several clip settings.
- :func:`spearman`: rank correlation; :func:`accuracy`; :func:`max_abs_weight`.

>>> v = verdict_threshold_one([0.5, 2.0, 3.0, 0.8] * 5)
>>> v.outcome
'does not hold'
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import statistics
import time
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checks import CHANCE, check_int, check_positive
from .clip import clipper
from .train import DeviceLoader, evaluate

HOLDS, FAILS, ONLY_WHEN, INCONCLUSIVE = "holds", "does not hold", "holds only when", "inconclusive at this size"
OUTCOMES = (HOLDS, FAILS, ONLY_WHEN, INCONCLUSIVE)


@dataclasses.dataclass(frozen=True)
class Verdict:
    """One claim's verdict: ``outcome`` is one of :data:`OUTCOMES`; ``reason`` states the numbers
    that decided it (and, for ``"holds only when"``, the condition).

    >>> Verdict("3", "A threshold of 1 means no clipping.", "does not hold", "c=1 clipped 40% of steps").text
    'Claim 3 does not hold: c=1 clipped 40% of steps'
    """

    number: str
    claim: str
    outcome: str
    reason: str

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome={self.outcome!r} is not an outcome; accepted values: {', '.join(OUTCOMES)}")

    @property
    def text(self) -> str:
        """``"Claim N <outcome>: <reason>"``, the line a notebook prints under the experiment."""
        return f"Claim {self.number} {self.outcome}: {self.reason}"


def summary_table(verdicts: Sequence[Verdict]) -> str:
    """A markdown table with one row per verdict: number, claim, outcome, reason (a ``|`` inside
    a cell is escaped as ``\\|`` so that it does not split the cell).

    >>> print(summary_table([Verdict("1", "x", "holds", "y")]))
    | # | claim | verdict | measured |
    |---|---|---|---|
    | 1 | x | **holds** | y |
    """
    rows = ["| # | claim | verdict | measured |", "|---|---|---|---|"]
    for v in verdicts:
        cells = [v.number, v.claim, f"**{v.outcome}**", v.reason]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


# ---------------------------------------------------------------------------------------------
# Measurements


def _grads(model: nn.Module) -> list[Tensor]:
    return [p.grad for p in model.parameters() if p.grad is not None]


def flat_grad(model: nn.Module) -> Tensor:
    """All of the model's gradients as one vector (parameters without a gradient are skipped).

    >>> m = nn.Linear(2, 1); m(torch.ones(1, 2)).sum().backward(); flat_grad(m).tolist()
    [1.0, 1.0, 1.0]
    """
    grads = _grads(model)
    if not grads:
        raise ValueError("model has no gradients: call loss.backward() first")
    return torch.cat([g.detach().reshape(-1) for g in grads])


def cosine(a: Tensor, b: Tensor) -> float:
    """cos(a, b) = <a, b> / (||a|| ||b||), in float64 (nan when either vector is zero).

    >>> cosine(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0]))  # 1/sqrt(2)
    0.7071067811865475
    """
    a64, b64 = a.detach().double().reshape(-1), b.detach().double().reshape(-1)
    denom = a64.norm() * b64.norm()
    return float((a64 @ b64) / denom) if float(denom) > 0 else math.nan


def clipped_gradient(model: nn.Module, spec: Any) -> Tensor:
    """The model's gradient after ``gradkit.clip.clipper(spec)``, as one vector; the model's own
    ``.grad`` tensors are left as they were.

    >>> m = nn.Linear(2, 1, bias=False); m.weight.grad = torch.tensor([[3.0, 4.0]])
    >>> clipped_gradient(m, "norm:1"), m.weight.grad
    (tensor([0.6000, 0.8000]), tensor([[3., 4.]]))
    """
    saved = [g.detach().clone() for g in _grads(model)]
    try:
        clipper(spec)(model)
        return flat_grad(model).clone()
    finally:
        for g, s in zip(_grads(model), saved):
            g.copy_(s)


def _cycle(batches: Iterable[tuple[Tensor, Tensor]]) -> Iterator[tuple[Tensor, Tensor]]:
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            raise ValueError("batches is empty")


@dataclasses.dataclass
class Geometry:
    """What :func:`clip_geometry` measured, per step: ``raw_norm (T,)``, and for each spec in
    ``specs``: ``norm (T, S)`` after clipping, ``cos_raw (T, S)`` = cos(clipped, raw),
    ``changed (T, S)`` whether clipping altered the gradient; ``cos_pairs[(a, b)] (T,)`` =
    cos(clipped by a, clipped by b)."""

    specs: list[str]
    raw_norm: np.ndarray
    norm: np.ndarray
    cos_raw: np.ndarray
    changed: np.ndarray
    cos_pairs: dict[tuple[str, str], np.ndarray]


def clip_geometry(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], specs: Sequence[str], steps: int,
                  lr: float = 0.05, train_clip: Any = "norm:1.0") -> Geometry:
    """Train with plain SGD (``w <- w - lr * clip(g)``, clipped by ``train_clip``) for ``steps``
    steps; at each step clip a copy of the raw gradient g with every spec and record its norm,
    cos(clipped, g), and the cosine between each pair of clipped gradients.

    Norm clipping multiplies g by min(1, c / ||g||) > 0, so its cosine with g is 1 up to
    rounding; value clipping min(max(g_i, -c), c) changes the direction as soon as it clips.

    >>> _ = torch.manual_seed(0); m = nn.Linear(4, 10); xy = [(torch.randn(8, 4), torch.randint(0, 10, (8,)))]
    >>> geo = clip_geometry(m, xy, ["norm:0.01", "value:0.001"], steps=2)
    >>> round(float(geo.cos_raw[:, 0].min()), 6), bool(geo.cos_raw[:, 1].max() < 1), geo.norm.shape
    (1.0, True, (2, 2))
    """
    check_int("steps", steps)
    specs = [clipper(s).spec for s in specs]
    train_fn = clipper(train_clip)
    raw_norm, norm, cos_raw, changed = [], [], [], []
    pairs: dict[tuple[str, str], list[float]] = {pair: [] for pair in itertools.combinations(specs, 2)}
    model.train()
    for _, (x, y) in zip(range(steps), _cycle(batches)):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        g = flat_grad(model).clone()
        clipped = {s: clipped_gradient(model, s) for s in specs}
        raw_norm.append(float(g.norm()))
        norm.append([float(clipped[s].norm()) for s in specs])
        cos_raw.append([cosine(clipped[s], g) for s in specs])
        changed.append([not torch.equal(clipped[s], g) for s in specs])
        for a, b in pairs:
            pairs[(a, b)].append(cosine(clipped[a], clipped[b]))
        train_fn(model)
        with torch.no_grad():
            for p in model.parameters():
                if p.grad is not None:
                    p.sub_(lr * p.grad)
    return Geometry(specs, np.array(raw_norm), np.array(norm), np.array(cos_raw), np.array(changed, dtype=bool),
                    {k: np.array(v) for k, v in pairs.items()})


@dataclasses.dataclass
class Smoothness:
    """:func:`smoothness_trace`'s record per step: ``loss``, ``grad_norm`` = ||g(w_t)||,
    ``smoothness`` = L_t, and ``diverged`` (the loss became nan or inf; records stop there)."""

    loss: np.ndarray
    grad_norm: np.ndarray
    smoothness: np.ndarray
    diverged: bool

    @property
    def final_loss(self) -> float:
        """Mean loss over the last quarter of the steps (at least one); inf if the run diverged."""
        if self.diverged or self.loss.size == 0:
            return math.inf
        return float(self.loss[-max(1, self.loss.size // 4):].mean())


def smoothness_trace(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], steps: int, lr: float,
                     clip: Any = None) -> Smoothness:
    """Train with plain SGD, w_{t+1} = w_t - lr * clip(g(w_t)), and estimate the local smoothness
    at every step as in Zhang et al. (2020, "Why gradient clipping accelerates training"):

        L_t = ||g(w_{t+1}) - g(w_t)|| / ||w_{t+1} - w_t||

    with both gradients taken on step t's batch, so that L_t measures how fast the gradient
    changes along the step, not batch noise (two backward passes per step). Their finding:
    L_t grows with ||g(w_t)||, which is why a step bounded by clipping is safe where a fixed
    step of lr * g is not.

    >>> _ = torch.manual_seed(0); m = nn.Linear(4, 10); xy = [(torch.randn(8, 4), torch.randint(0, 10, (8,)))]
    >>> tr = smoothness_trace(m, xy, steps=3, lr=0.1, clip="norm:1")
    >>> tr.smoothness.shape, tr.diverged
    ((3,), False)
    """
    check_int("steps", steps)
    check_positive("lr", lr)
    clip_fn = clipper(clip)
    params = [p for p in model.parameters() if p.requires_grad]
    losses, norms, smooth = [], [], []
    diverged = False
    model.train()
    for _, (x, y) in zip(range(steps), _cycle(batches)):
        model.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        if not math.isfinite(loss.item()):
            diverged = True
            break
        loss.backward()
        g = flat_grad(model).clone()
        clip_fn(model)
        with torch.no_grad():
            step = torch.cat([(lr * p.grad).reshape(-1) for p in params if p.grad is not None])
            for p in params:
                if p.grad is not None:
                    p.sub_(lr * p.grad)
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        g_next = flat_grad(model)
        losses.append(loss.item())
        norms.append(float(g.norm()))
        smooth.append(float((g_next - g).norm() / step.norm()) if float(step.norm()) > 0 else math.nan)
    return Smoothness(np.array(losses), np.array(norms), np.array(smooth), diverged)


def step_times(model: nn.Module, x: Tensor, y: Tensor, specs: Sequence[Any], repeats: int = 20,
               warmup: int = 3, lr: float = 0.01) -> dict[str, float]:
    """Median wall-clock seconds of one SGD training step (forward, backward, clip, update) for
    each clip spec; the specs take turns in every round so that a change in machine load hits
    them all alike. Keys are the canonical specs.

    >>> m = nn.Linear(4, 10); x, y = torch.randn(8, 4), torch.randint(0, 10, (8,))
    >>> list(step_times(m, x, y, ["none", "norm:1"], repeats=2))
    ['none', 'norm:1.0']
    """
    check_int("repeats", repeats)
    fns = [clipper(s) for s in specs]
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    times: dict[str, list[float]] = {fn.spec: [] for fn in fns}
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    for round_ in range(warmup + repeats):
        for fn in fns:
            sync()
            start = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            fn(model)
            opt.step()
            sync()
            if round_ >= warmup:
                times[fn.spec].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


DIRECTION_OPTIMIZERS: dict[str, tuple[str, float, float]] = {
    "SGD": ("sgd", 0.05, 0.0),
    "SGD, momentum 0.9": ("sgd", 0.05, 0.9),
    "Adam": ("adam", 1e-3, 0.0),
}
"""The optimisers :func:`update_direction` compares by default: label -> (name, lr, momentum)."""

METHOD_NAMES = {"norm": "global norm", "tensor_norm": "per-tensor norm", "agc": "AGC", "value": "value",
                "norm_inf": "max-norm", "scaled_value": "c/sqrt(n) value", "auto": "AutoClip"}


@dataclasses.dataclass
class Direction:
    """What :func:`update_direction` measured: ``cos (O, S, T)`` = cos(update with the clipped
    gradient, update with the raw gradient) for optimiser o, clip spec s and step t, and
    ``changed (O, S, T)`` whether the clip changed the gradient at that step."""

    optimizers: list[str]
    specs: list[str]
    cos: np.ndarray
    changed: np.ndarray

    def median_angle(self) -> np.ndarray:
        """(O, S): median over the steps where the clip changed the gradient of arccos(cos), in
        degrees (nan where it never did).

        >>> Direction(["SGD"], ["value:1.0"], np.array([[[1.0, 0.5, 0.0]]]), np.array([[[False, True, True]]])).median_angle()
        array([[75.]])
        """
        out = np.full(self.cos.shape[:2], np.nan)
        for o, s in np.ndindex(*out.shape):
            on = self.changed[o, s]
            if on.any():
                out[o, s] = float(np.median(np.degrees(np.arccos(np.clip(self.cos[o, s][on], -1.0, 1.0)))))
        return out


def _make_optimizer(name: str, params: Iterable[Tensor], lr: float, momentum: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    raise ValueError(f"optimizer name {name!r} is not supported here; accepted values: sgd, adam")


def update_direction(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], specs: Sequence[str], steps: int,
                     optimizers: dict[str, tuple[str, float, float]] | None = None) -> Direction:
    """For each optimiser (label -> ``(name, lr, momentum)``, name ``"sgd"`` or ``"adam"``;
    default :data:`DIRECTION_OPTIMIZERS`) and each clip spec, train a float64 copy of ``model``
    (same start, same batches) for ``steps`` steps with the clipped gradient. At every step, from
    the same weights and optimiser state, take the update once with the raw gradient g and once
    with clip(g) (the state is restored in between) and record

        cos(dw_clip, dw_raw) = <dw_clip, dw_raw> / (||dw_clip|| ||dw_raw||)

    Plain SGD: dw = -lr g, so a global norm clip (one factor s > 0 for all of g) gives cos = 1.
    SGD with momentum m: dw = -lr (m b + s g) with the buffer b of past gradients, which s does
    not scale, so the update turns; Adam divides by running moments, so it turns as well.
    Per-tensor norm, AGC and value clipping scale parts of g differently and turn even plain
    SGD's update. Float64 so that rounding does not pass for a turn.

    >>> _ = torch.manual_seed(0); m = nn.Linear(4, 10); xy = [(torch.randn(8, 4), torch.randint(0, 10, (8,))) for _ in range(3)]
    >>> d = update_direction(m, xy, ["norm:0.01"], steps=3)
    >>> d.cos.shape, round(float(d.cos[0, 0].min()), 9), bool(d.cos[1, 0, 1:].max() < 1 - 1e-6)  # SGD keeps, momentum turns
    ((3, 1, 3), 1.0, True)
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    optimizers = dict(DIRECTION_OPTIMIZERS if optimizers is None else optimizers)
    specs = [clipper(s).spec for s in specs]
    for label, (name, _, _) in optimizers.items():
        _make_optimizer(name, [torch.zeros(1, requires_grad=True)], 0.1, 0.0)
    cos = np.full((len(optimizers), len(specs), steps), np.nan)
    changed = np.zeros(cos.shape, dtype=bool)
    for o, (name, lr, momentum) in enumerate(optimizers.values()):
        for s, spec in enumerate(specs):
            net = copy.deepcopy(model).double().train()
            params = [p for p in net.parameters() if p.requires_grad]
            opt = _make_optimizer(name, params, lr, momentum)
            clip_fn = clipper(spec)
            for t, (x, y) in zip(range(steps), _cycle(batches)):
                net.zero_grad(set_to_none=True)
                F.cross_entropy(net(x.double()), y).backward()
                start = [p.detach().clone() for p in params]
                raw = [p.grad.detach().clone() if p.grad is not None else None for p in params]
                state = copy.deepcopy(opt.state_dict())
                opt.step()
                d_raw = torch.cat([(p.detach() - w).reshape(-1) for p, w in zip(params, start)])
                with torch.no_grad():
                    for p, w in zip(params, start):
                        p.copy_(w)
                opt.load_state_dict(state)
                clip_fn(net)
                changed[o, s, t] = any(r is not None and not torch.equal(p.grad, r) for p, r in zip(params, raw))
                opt.step()
                d_clip = torch.cat([(p.detach() - w).reshape(-1) for p, w in zip(params, start)])
                cos[o, s, t] = cosine(d_clip, d_raw)
    return Direction(list(optimizers), specs, cos, changed)


@torch.no_grad()
def accuracy(model: nn.Module, x_uint8: Tensor, y: Tensor, mean: Sequence[float], std: Sequence[float],
             batch_size: int = 1000) -> float:
    """Share of images classified right, #(argmax model(x_i) == y_i) / N, in eval mode and without
    augmentation (use it for the *training* accuracy: ``History.train_acc`` is measured on
    augmented batches while the weights still change).

    >>> m = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    >>> _ = m[1].weight.data.zero_(); _ = m[1].bias.data.copy_(torch.arange(10.0))  # always predicts 9
    >>> accuracy(m, torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.tensor([9, 9, 0, 1]), (0.5,) * 3, (0.5,) * 3)
    0.5
    """
    device = next(model.parameters()).device
    loader = DeviceLoader(x_uint8, y, batch_size, train=False, mean=tuple(mean), std=tuple(std), device=device)
    return evaluate(model, loader)[1]


@torch.no_grad()
def max_abs_weight(model: nn.Module) -> float:
    """max over every parameter element of |w|.

    >>> m = nn.Linear(1, 1); _ = m.weight.data.fill_(-3.0); _ = m.bias.data.fill_(0.5)
    >>> max_abs_weight(m)
    3.0
    """
    return max(float(p.abs().max()) for p in model.parameters())


def _ranks(v: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 with ties given their average rank."""
    order = np.argsort(v, kind="stable")
    ranks = np.empty(len(v))
    ranks[order] = np.arange(len(v))
    _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation: the Pearson correlation of the ranks of x and y (ties get
    their average rank); pairs with a non-finite value are dropped; nan with fewer than 3 pairs.

    >>> spearman([1, 2, 3, 4], [10, 20, 40, 30])  # 1 - 6 * (0 + 0 + 1 + 1) / (4 * 15)
    0.8
    """
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xa.shape != ya.shape:
        raise ValueError(f"x and y must have the same length, got {xa.shape} and {ya.shape}")
    keep = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[keep], ya[keep]
    if len(xa) < 3:
        return math.nan
    rx, ry = _ranks(xa), _ranks(ya)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float((rx**2).sum() * (ry**2).sum()))
    return round(float((rx * ry).sum()) / denom, 12) if denom > 0 else math.nan


# ---------------------------------------------------------------------------------------------
# Verdicts: one rule per claim. Accuracies are fractions in [0, 1]; "points" are percentage points.

CLAIMS = {
    "1": "Clipping cures vanishing gradients (at initialisation).",
    "1b": "Clipping prevents the dead ReLU units that a too-large step leaves behind.",
    "2": "Clipping is a kind of data augmentation that reduces overfitting (a regulariser).",
    "3": "A threshold of 1 means no clipping.",
    "4": "Clipping reduces the number of parameters and the computation.",
    "5": "Clipping each element to c/sqrt(n) is the same as clipping the norm to c.",
    "6a": "More iterations with clipping always give higher accuracy.",
    "6b": "A larger clipping threshold trains slower.",
    "7": "Clipping makes training converge faster.",
    "8": "Gradient clipping and weight clipping are the same thing.",
    "9": "Clipping changes the direction of the update.",
}


def _verdict(number: str, outcome: str, reason: str) -> Verdict:
    return Verdict(number, CLAIMS[number], outcome, reason)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def verdict_vanishing(before: Sequence[float], after: Sequence[float], min_decay: float = 100.0) -> Verdict:
    """Claim 1, from per-layer gradient norms (first layer first) before and after clipping.

    Rule: if the first layer's norm is not at least ``min_decay`` times smaller than the last
    layer's, the net did not vanish: inconclusive. Otherwise the claim holds only if clipping
    raised the first layer's norm (after > 1.001 * before); else it does not hold.

    >>> verdict_vanishing([1e-6, 1e-3, 1.0], [5e-7, 5e-4, 0.5]).outcome
    'does not hold'
    """
    b, a = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    if b.shape != a.shape or b.size < 2:
        raise ValueError(f"before and after must hold the same number (>= 2) of layer norms, got {b.shape} and {a.shape}")
    decay = b[-1] / b[0] if b[0] > 0 else math.inf
    if decay < min_decay:
        return _verdict("1", INCONCLUSIVE, f"the gradient did not vanish here (last/first layer norm {decay:.3g} < {min_decay:g})")
    factor = a / b
    reason = (f"the first layer's gradient is {decay:.3g}x smaller than the last layer's before clipping and "
              f"{a[-1] / a[0]:.3g}x after; clipping multiplied the layer norms by {factor.min():.3g} to {factor.max():.3g}, "
              "never more than 1")
    if a[0] > 1.001 * b[0]:
        return _verdict("1", HOLDS, reason)
    return _verdict("1", FAILS, reason)


def verdict_dead_units(unclipped: dict[str, float], clipped: dict[str, float], min_dead: float = 0.5,
                       margin: float = 0.2) -> Verdict:
    """Claim 1b, from two runs that differ only in clipping: each dict has ``"dead"`` (share of
    ReLU units dead after training, :func:`gradkit.monitor.dead_relu_share`), ``"acc"`` (validation
    accuracy) and optionally ``"step"`` (the largest step the run took, ``max(History.step_norm)``).

    Rule: if fewer than ``min_dead`` (50%) of the unclipped run's units died, there was no
    collapse to prevent: inconclusive at this size. If the clipped run lost at least ``margin``
    (20 points) fewer units: holds only when a too-large step is what killed them (clipping bounds
    the gradient, so that step is smaller: the largest steps are reported when given). Otherwise
    clipping did not prevent the collapse: does not hold.

    >>> verdict_dead_units({"dead": 0.9, "acc": 0.1}, {"dead": 0.1, "acc": 0.3}).outcome
    'holds only when'
    """
    for name, run in (("unclipped", unclipped), ("clipped", clipped)):
        if not {"dead", "acc"} <= set(run) <= {"dead", "acc", "step"}:
            raise ValueError(f"{name} needs the keys 'dead' and 'acc' (and optionally 'step'), got {sorted(run)}")
    numbers = (f"{_pct(unclipped['dead'])} of the ReLU units dead without clipping (validation accuracy "
               f"{_pct(unclipped['acc'])}), {_pct(clipped['dead'])} with clipping ({_pct(clipped['acc'])})")
    if "step" in unclipped and "step" in clipped:
        numbers += f"; largest step ||dw|| {unclipped['step']:.3g} without clipping, {clipped['step']:.3g} with"
    if unclipped["dead"] < min_dead:
        return _verdict("1b", INCONCLUSIVE, f"the unclipped run did not collapse (< {_pct(min_dead)} dead): {numbers}")
    if clipped["dead"] <= unclipped["dead"] - margin:
        return _verdict("1b", ONLY_WHEN, f"a too-large step is what kills the units, as in this run: {numbers}")
    return _verdict("1b", FAILS, f"clipping did not prevent the collapse: {numbers}")


def _mean_sd(v: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(v, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else math.nan


def _augment_fit(tr: dict[str, np.ndarray], va: dict[str, np.ndarray], noise: float) -> str:
    """The part of claim 2's reason on how far the augmented runs fit the training set (see
    :func:`verdict_augmentation`); empty when augmentation did not lower training accuracy beyond ``noise``."""
    a = 100 * float((tr["augment"] - tr["none"]).mean())
    b = 100 * float((va["augment"] - va["none"]).mean())
    if a >= -100 * noise:
        return ""
    def pct(v: np.ndarray) -> str:  # as the reason's "mean ± sd" numbers print it, so the two agree
        return f"{_mean_sd(100 * v)[0]:.1f}%"

    split = (f"; augmentation fit the training set less: clean training accuracy {pct(tr['augment'])} vs "
             f"{pct(tr['none'])} without it ({a:+.1f} points), validation {b:+.1f}, so {-a:.1f} of its "
             f"{a - b:+.1f}-point gap change is fitting less")
    if -a > abs(b) or b < 0:
        below = (f", and they are below the unaugmented runs on validation too ({pct(va['augment'])} < "
                 f"{pct(va['none'])})") if b < 0 else ""
        split += (f": the augmented runs underfit at this length{below}, so their smaller gap measures underfitting "
                  "as much as regularisation (train longer to judge augmentation)")
    return split


def verdict_augmentation(train_acc: dict[str, Sequence[float]], val_acc: dict[str, Sequence[float]],
                         tol: float = 0.02, min_gap: float = 0.05) -> Verdict:
    """Claim 2, from clean train and held-out (validation) accuracies of three runs per seed,
    keyed ``"none"`` (no clipping, no augmentation), ``"clip"`` (clipping, no augmentation) and
    ``"augment"`` (augmentation, no clipping); list i of every key is seed i, so that the runs of
    one seed share their initialisation and batches. gap = train_acc - val_acc.

    Clipping never changes the data, so "a kind of data augmentation" is false by definition;
    the rule measures the other half, "reduces overfitting". With d_i = gap_none,i - gap_clip,i
    (paired by seed) and noise = max(``tol``, 2 sd(d) / sqrt(n)) (twice the standard error of
    the mean difference, at least 2 points):

    - fewer than 2 seeds: inconclusive (no spread measured);
    - the ``"none"`` runs' mean gap below ``min_gap`` (5 points): nothing to reduce, inconclusive;
    - mean(d) > noise: holds only when read as "narrows the train-validation gap", not as
      augmentation; the reason says which side moved: train accuracy down (fitting less, as a
      smaller step does), validation accuracy up, or both;
    - otherwise does not hold (clipping left the gap within the seed noise, or widened it).

    The reason also says when augmentation fit the training set less: with ``a = mean(train_augment -
    train_none)`` and ``b = mean(val_augment - val_none)`` (points), when ``a < -noise`` the augmented
    runs' gap change ``a - b`` is split into fitting less (``-a``) and validation (``b``); when most of
    it is fitting less (``-a > |b|``) or their validation accuracy is below the unaugmented runs'
    (``b < 0``), they *underfit at this length*: a comparison of gaps then measures underfitting as
    much as regularisation, and longer training is needed to judge augmentation.

    >>> verdict_augmentation({"none": [.9, .9], "clip": [.9, .88], "augment": [.7, .7]},
    ...                      {"none": [.5, .52], "clip": [.5, .5], "augment": [.55, .56]}).outcome
    'does not hold'
    """
    keys = ("none", "clip", "augment")
    if any(k not in train_acc or k not in val_acc for k in keys):
        raise ValueError(f"train_acc and val_acc need the keys {keys}, got {sorted(train_acc)} and {sorted(val_acc)}")
    tr = {k: np.atleast_1d(np.asarray(train_acc[k], dtype=float)) for k in keys}
    va = {k: np.atleast_1d(np.asarray(val_acc[k], dtype=float)) for k in keys}
    n = tr["none"].size
    if any(tr[k].size != n or va[k].size != n for k in keys):
        raise ValueError("train_acc and val_acc need one value per seed, the same number for every key")
    gap = {k: tr[k] - va[k] for k in keys}

    def pm(v: np.ndarray) -> str:
        mean, sd = _mean_sd(100 * v)
        return f"{mean:.1f}" + ("" if math.isnan(sd) else f" ± {sd:.1f}")

    numbers = "; ".join(f"{k}: train {pm(tr[k])}%, validation {pm(va[k])}%, gap {pm(gap[k])}" for k in keys)
    numbers += f" (mean ± sd over {n} seed{'s' if n > 1 else ''})"
    if n < 2:
        return _verdict("2", INCONCLUSIVE, f"one seed: the seed spread is unknown; {numbers}")
    d = gap["none"] - gap["clip"]
    mean_d, sd_d = _mean_sd(d)
    noise = max(tol, 2 * sd_d / math.sqrt(n))
    if gap["none"].mean() < min_gap:
        return _verdict("2", INCONCLUSIVE, f"the runs without clipping barely overfit (mean gap "
                                           f"{100 * gap['none'].mean():.1f} points < {100 * min_gap:g}); {numbers}")
    underfit = _augment_fit(tr, va, noise)
    change = (f"clipping changed the gap by {-100 * mean_d:+.1f} points (noise bound ±{100 * noise:.1f}: twice the "
              f"standard error over {n} paired seeds), augmentation by {-100 * (gap['none'] - gap['augment']).mean():+.1f}")
    if mean_d > noise:
        d_train = 100 * (tr["clip"] - tr["none"]).mean()
        d_val = 100 * (va["clip"] - va["none"]).mean()
        moved = f"train accuracy {d_train:+.1f} and validation {d_val:+.1f} points with clipping"
        if d_train < -100 * noise and d_val <= 100 * noise:
            how = f"by fitting the training set less ({moved}), as a smaller effective step does"
        elif d_val > 100 * noise and d_train >= -100 * noise:
            how = f"through higher validation accuracy, not by fitting the training set less ({moved})"
        else:
            how = f"({moved})"
        return _verdict("2", ONLY_WHEN, "read as 'narrows the train-validation gap', not as augmentation (clipping never "
                                        f"changes the data): the gap narrowed {how}; {change}; {numbers}{underfit}")
    return _verdict("2", FAILS, f"{change}: no regularising effect beyond the seed noise at this size, and clipping "
                                f"never changes the data; {numbers}{underfit}")


def verdict_threshold_one(norms_before: Sequence[float], c: float = 1.0, min_steps: int = 10) -> Verdict:
    """Claim 3, from the total gradient norm before clipping at each step of a run clipped at c.

    Rule: with fewer than ``min_steps`` steps: inconclusive. If any step had ||g|| > c, the
    threshold clipped: does not hold (the share of steps is reported). If none did: holds only
    when ||g|| stays below c, as on this run.

    >>> verdict_threshold_one([0.2, 0.3] * 10).outcome
    'holds only when'
    """
    g = np.asarray(norms_before, dtype=float)
    if g.size < min_steps:
        return _verdict("3", INCONCLUSIVE, f"only {g.size} steps (< {min_steps})")
    share = float((g > c).mean())
    numbers = f"median ||g|| {np.median(g):.3g}, max {g.max():.3g} over {g.size} steps"
    if share > 0:
        return _verdict("3", FAILS, f"c={c:g} clipped {_pct(share)} of the steps ({numbers}); whether c clips depends on "
                                    "the model and the loss scale, not on the number")
    return _verdict("3", ONLY_WHEN, f"the gradient norm stays below {c:g}, as it did here ({numbers})")


def verdict_cost(params: dict[str, int], seconds: dict[str, float], tol: float = 0.05) -> Verdict:
    """Claim 4, from the parameter counts and the median step times of the same model trained
    without (key ``"none"``) and with clipping (key ``"clip"``).

    Rule: if the counts differ: holds (it cannot happen: clipping is not part of the model). A
    clipped step is an unclipped step plus one pass over the gradient (a norm and a product),
    so a clipped step more than ``tol`` (5%) faster is timing noise: inconclusive. Otherwise
    it does not hold, with the overhead t_clip / t_none - 1 reported.

    >>> verdict_cost({"none": 10, "clip": 10}, {"none": 1.0, "clip": 1.02}).outcome
    'does not hold'
    """
    if set(params) != {"none", "clip"} or set(seconds) != {"none", "clip"}:
        raise ValueError(f"params and seconds need exactly the keys 'none' and 'clip', got {sorted(params)}, {sorted(seconds)}")
    overhead = seconds["clip"] / seconds["none"] - 1
    reason = (f"{params['none']:,} parameters without clipping, {params['clip']:,} with; a step took "
              f"{1e3 * seconds['none']:.2f} ms without and {1e3 * seconds['clip']:.2f} ms with clipping "
              f"({100 * overhead:+.1f}%")
    if params["none"] != params["clip"]:
        return _verdict("4", HOLDS, reason + ")")
    if overhead < -tol:
        return _verdict("4", INCONCLUSIVE, f"timing noise: {reason}, faster by more than {100 * tol:g}%, which extra "
                                           "work cannot be)")
    if overhead <= tol:
        return _verdict("4", FAILS, f"{reason}, within the {100 * tol:g}% timing noise: the extra pass over the "
                                    "gradients is a small part of a step)")
    return _verdict("4", FAILS, f"{reason}: the cost of computing the norm and rescaling)")


def verdict_scaled_value(cos_between: Sequence[float], norm_ratio: Sequence[float], tol: float = 1e-3) -> Verdict:
    """Claim 5, from real steps: cos(element-clipped at c/sqrt(n), norm-clipped at c) and the
    ratio of their norms.

    Rule: if every step has cos >= 1 - tol and |ratio - 1| <= tol, the two agreed here: holds.
    Otherwise holds only when every |g_i| is the same (or every |g_i| <= c/sqrt(n), where neither
    clips), with the measured distance reported. No steps: inconclusive.

    >>> verdict_scaled_value([0.9, 0.8], [0.3, 0.2]).outcome
    'holds only when'
    """
    cos, ratio = np.asarray(cos_between, dtype=float), np.asarray(norm_ratio, dtype=float)
    if cos.size == 0:
        return _verdict("5", INCONCLUSIVE, "no steps measured")
    numbers = (f"on {cos.size} real steps cos(element-clipped, norm-clipped) had median {np.median(cos):.3f} "
               f"(min {cos.min():.3f}) and the element-clipped gradient's norm was {np.median(ratio):.3g}x the "
               "norm-clipped one's (median)")
    if cos.min() >= 1 - tol and np.abs(ratio - 1).max() <= tol:
        return _verdict("5", HOLDS, numbers)
    return _verdict("5", ONLY_WHEN, "every |g_i| has the same size (or all are below c/sqrt(n)); " + numbers)


def verdict_more_iterations(curves: dict[str, Sequence[float]], steps_per_checkpoint: int, n_eval: int,
                            margin: float = 0.05, min_steps: int = 20, min_checkpoints: int = 4) -> Verdict:
    """Claim 6a, from accuracy curves (held-out accuracy after each checkpoint of iterations, in
    order; nan once a run diverged) keyed by run label, ``steps_per_checkpoint`` training steps
    apart, each measured on the same ``n_eval`` images.

    Rule: with fewer than ``min_steps`` (20) steps between checkpoints or fewer than
    ``min_checkpoints`` (4) checkpoints: inconclusive. tol = 2 sqrt(0.25 / n_eval), twice the
    largest standard error of an accuracy on n_eval images (3.2 points for 1000 images), so that
    evaluation noise is not taken for a trend. A run *ended below its best* when its final accuracy
    ``a_T`` is more than tol below the best of its earlier checkpoints, ``max_{t<T} a_t - a_T > tol``
    (a slow decline counts, not only a drop between neighbours), or when it became nan after a finite
    checkpoint (diverged). A dip on the way (more than tol below the running best) after which the run
    ended within tol of its best is not counted against the claim, only reported. A run *never learned* if its best accuracy is not ``margin`` + tol above
    chance (10%): more iterations gave it nothing, which the verdict names, but a flat curve is not a
    fall. Some run ended below its best: does not hold. None did and none learned: inconclusive.
    Otherwise: holds only when training is stable (and the run learns at all, when some never did).

    >>> verdict_more_iterations({"a": [0.2, 0.237, 0.22, 0.193]}, steps_per_checkpoint=100, n_eval=1000).outcome
    'does not hold'
    >>> verdict_more_iterations({"a": [0.20, 0.30, 0.25, 0.31, 0.32]}, steps_per_checkpoint=100, n_eval=1000).outcome
    'holds only when'
    """
    tol = 2 * math.sqrt(0.25 / n_eval)
    n_points = min((len(v) for v in curves.values()), default=0)
    if steps_per_checkpoint < min_steps or n_points < min_checkpoints:
        return _verdict("6a", INCONCLUSIVE, f"{n_points} checkpoints {steps_per_checkpoint} steps apart (needs >= "
                                            f"{min_checkpoints} checkpoints >= {min_steps} steps apart)")
    falls, never, dips = [], [], []
    for label, values in curves.items():
        acc = np.asarray(values, dtype=float)
        finite = np.isfinite(acc)
        if finite.any() and not finite[-1]:
            i = int(np.flatnonzero(finite)[-1])
            falls.append((math.inf, label, f"{label} diverged after checkpoint {i + 1}"))
            continue
        if not finite.any() or np.nanmax(acc) <= CHANCE + margin + tol:
            never.append(label)
            continue
        b = int(np.argmax(acc[:-1]))
        if acc[b] - acc[-1] > tol:
            falls.append((float(acc[b] - acc[-1]), label, f"{label} ended at {100 * acc[-1]:.1f}% (checkpoint "
                                                          f"{len(acc)}), down from {100 * acc[b]:.1f}% at checkpoint {b + 1}"))
        elif (np.maximum.accumulate(acc)[:-1] - acc[1:]).max() > tol:
            dips.append(label)
    counted = f"{len(curves)} runs, {n_points} checkpoints {steps_per_checkpoint} steps apart, tol {100 * tol:.1f} points"
    never_text = (f"; {len(never)} never left chance ({', '.join(never)}): more iterations gave them nothing"
                  if never else "")
    dip_text = (f"; {len(dips)} dipped more than {100 * tol:.1f} points below an earlier best on the way and ended "
                f"within {100 * tol:.1f} points of their best ({', '.join(dips)}): accuracy did not rise at every "
                "checkpoint" if dips else "")
    rule = "rule: the final checkpoint against the best earlier one"
    if falls:
        worst = max(falls)[2]
        return _verdict("6a", FAILS, f"{len(falls)} of {len(curves)} runs ended more than {100 * tol:.1f} points "
                                     f"(evaluation noise) below their own earlier best or diverged; worst: {worst} "
                                     f"({counted}; {rule}){dip_text}{never_text}")
    if len(never) == len(curves):
        return _verdict("6a", INCONCLUSIVE, f"no run learned ({counted}){never_text}")
    cond = "training is stable" + (" and the run learns at all" if never else "")
    return _verdict("6a", ONLY_WHEN, f"{cond}: no run that learned ended more than {100 * tol:.1f} points below its "
                                     f"earlier best ({counted}; {rule}){dip_text}{never_text}")


def verdict_threshold_speed(losses: dict[str, dict[float, float]], tol: float = 0.02,
                            learned: float = 0.95 * math.log(10)) -> Verdict:
    """Claim 6b, from the training loss reached after the same number of iterations, per model
    and threshold (``{model: {c: loss}}``, inf or nan for a diverged run).

    Rule: a model is used only if some run got its loss below ``learned`` (95% of ln 10, the
    loss of a uniform guess). For each pair of neighbouring thresholds c1 < c2, the larger
    threshold *trained slower* if loss(c2) > (1 + tol) loss(c1), *faster* if
    loss(c2) < (1 - tol) loss(c1), else tie. No slower or faster pair: inconclusive; all such
    pairs slower: holds; none slower: does not hold; else holds only when (the models and
    thresholds where it did are named).

    >>> verdict_threshold_speed({"m": {0.1: 2.0, 1.0: 1.5, 10.0: 1.2}}).outcome
    'does not hold'
    """
    slower, faster = [], []
    for model, by_c in losses.items():
        cs = sorted(by_c)
        vals = [by_c[c] if math.isfinite(by_c[c]) else math.inf for c in cs]
        if min(vals, default=math.inf) >= learned:
            continue
        for (c1, l1), (c2, l2) in zip(zip(cs, vals), zip(cs[1:], vals[1:])):
            if l2 > (1 + tol) * l1:
                slower.append(f"{model} c={c1:g}->{c2:g}" + (" (diverged)" if math.isinf(l2) else ""))
            elif l2 < (1 - tol) * l1:
                faster.append(f"{model} c={c1:g}->{c2:g}")
    if not slower and not faster:
        return _verdict("6b", INCONCLUSIVE, "no model learned enough, or every threshold reached the same loss")
    counts = f"a larger threshold reached a lower loss in {len(faster)} of {len(slower) + len(faster)} decided pairs"
    if not slower:
        return _verdict("6b", FAILS, counts)
    if not faster:
        return _verdict("6b", HOLDS, counts)
    return _verdict("6b", ONLY_WHEN, f"the steps are too large already (slower: {', '.join(slower)}); {counts}")


def verdict_faster(final_loss: dict[tuple[float, bool], float], steps: int, rho: float = math.nan, n_rho: int = 0,
                   tol: float = 0.05, min_steps: int = 50) -> Verdict:
    """Claim 7, from the mean training loss over the last quarter of equal-length runs, keyed
    ``(lr, clipped)`` for a low and a high learning rate (inf or nan: the run diverged), and
    optionally Zhang et al.'s correlation ``rho`` = Spearman(||g_t||, L_t) over ``n_rho`` steps.

    Rule: with fewer than ``min_steps`` steps per run: inconclusive. At each lr clipping is
    *faster* if loss_clipped < (1 - tol) * loss_unclipped (a diverged unclipped run counts).
    Faster at every lr: holds; at none: does not hold; at some: holds only when (the lrs named).

    >>> verdict_faster({(0.01, False): 1.5, (0.01, True): 1.5, (1.0, False): math.inf, (1.0, True): 1.8}, 100).outcome
    'holds only when'
    """
    lrs = sorted({lr for lr, _ in final_loss})
    if any((lr, c) not in final_loss for lr in lrs for c in (False, True)):
        raise ValueError(f"final_loss needs (lr, False) and (lr, True) for every lr, got {sorted(final_loss)}")
    corr = ""
    if n_rho:
        shows = "shows" if rho >= 0.3 else "does not show"
        corr = (f"; smoothness vs gradient norm: Spearman rho = {rho:.2f} over {n_rho} steps, so Zhang et al.'s "
                f"positive correlation {shows} here (rule: rho >= 0.3)")
    if steps < min_steps:
        return _verdict("7", INCONCLUSIVE, f"runs of {steps} steps (< {min_steps})" + corr)

    def fmt(v: float) -> str:
        return f"{v:.3f}" if math.isfinite(v) else "diverged"

    faster = []
    parts = []
    for lr in lrs:
        none, clip = (final_loss[(lr, c)] for c in (False, True))
        none_v = none if math.isfinite(none) else math.inf
        clip_v = clip if math.isfinite(clip) else math.inf
        if clip_v < (1 - tol) * none_v:
            faster.append(lr)
        parts.append(f"lr={lr:g}: loss {fmt(none)} without, {fmt(clip)} with clipping")
    reason = "; ".join(parts) + corr
    if len(faster) == len(lrs):
        return _verdict("7", HOLDS, reason)
    if not faster:
        return _verdict("7", FAILS, reason)
    return _verdict("7", ONLY_WHEN, f"the learning rate is high (faster at lr={', '.join(f'{lr:g}' for lr in faster)}); "
                    + reason)


def verdict_weight_vs_grad(grad_run: dict[str, Any], weight_run: dict[str, Any], grad_c: float,
                           weight_c: float) -> Verdict:
    """Claim 8, from two runs: one with gradient norm clipping at ``grad_c``, one with weight
    clipping at ``weight_c``; each dict has ``"max_grad_norm"`` (largest ||g|| before clipping),
    ``"max_update_grad"`` (largest gradient norm the optimizer received), ``"max_abs_weight"``,
    ``"max_step"`` (largest step ||w_after - w_before||, ``History.step_norm``) and ``"setup"``
    (a dict of everything else the runs were trained with: epochs, augmentation, seed, ...).

    Rule: if the setups differ, the runs are not comparable: inconclusive (no conclusion).
    Gradient clipping bounds the gradient the optimizer gets (<= grad_c), not the weights nor,
    with momentum, the step (which can reach about lr grad_c / (1 - m)); weight clipping bounds
    the weights (<= weight_c) but not the gradient. If the gradient-clipped run has a weight
    above weight_c, or the weight-clipped run fed the optimizer a gradient above grad_c: they did
    different things, does not hold. If neither showed: inconclusive.

    >>> same = {"epochs": 2, "augment": True, "seed": 0}
    >>> verdict_weight_vs_grad({"max_grad_norm": 5, "max_update_grad": 1, "max_abs_weight": 0.4, "max_step": 0.2, "setup": same},
    ...                        {"max_grad_norm": 5, "max_update_grad": 5, "max_abs_weight": 0.05, "max_step": 0.3, "setup": same},
    ...                        1.0, 0.05).outcome
    'does not hold'
    """
    keys = ("max_grad_norm", "max_update_grad", "max_abs_weight", "max_step", "setup")
    if any(k not in grad_run or k not in weight_run for k in keys):
        raise ValueError(f"grad_run and weight_run need the keys {keys}")
    a, b = grad_run["setup"], weight_run["setup"]
    differ_in = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if differ_in:
        return _verdict("8", INCONCLUSIVE, "the two runs differ in " + ", ".join(f"{k} ({a.get(k)!r} vs {b.get(k)!r})"
                                                                                  for k in differ_in) + ": no conclusion")
    reason = (f"gradient clipping (c={grad_c:g}): the optimizer got gradients of norm <= {grad_run['max_update_grad']:.3g}, "
              f"its largest step was ||dw|| = {grad_run['max_step']:.3g}, weights reached |w| = "
              f"{grad_run['max_abs_weight']:.3g}; weight clipping (c={weight_c:g}): weights stayed <= "
              f"{weight_run['max_abs_weight']:.3g}, the optimizer got gradients of norm up to "
              f"{weight_run['max_update_grad']:.3g}; same setup ({', '.join(f'{k}={v!r}' for k, v in sorted(a.items()))})")
    differ = grad_run["max_abs_weight"] > weight_c or weight_run["max_update_grad"] > grad_c
    return _verdict("8", FAILS if differ else INCONCLUSIVE, reason)


def verdict_direction(direction: Direction, tol: float = 1e-6) -> Verdict:
    """Claim 9, from :func:`update_direction`: for each optimiser and clipping method, the
    cosine between the update with the clipped and with the raw gradient, on the steps where
    the clip changed the gradient.

    Rule: a pair *turns* the update if some such step has cos < 1 - ``tol`` (float64 rounding
    stays far below 1e-6). No pair clipped any step: inconclusive. Every pair that clipped
    turned: holds. None turned: does not hold. Otherwise holds only when the pair is not one of
    those that only shortened the update (named, typically global norm clipping with plain
    SGD), with the median angle of every pair reported.

    >>> d = Direction(["SGD"], ["norm:1.0", "value:0.1"], np.array([[[1.0, 1.0], [0.9, 0.8]]]), np.ones((1, 2, 2), bool))
    >>> verdict_direction(d).outcome
    'holds only when'
    """
    angle = direction.median_angle()
    kept, turned, parts = [], [], []
    for o, opt in enumerate(direction.optimizers):
        for s, spec in enumerate(direction.specs):
            on = direction.changed[o, s]
            name = f"{METHOD_NAMES.get(clipper(spec).method, spec)} ({spec}) with {opt}"
            if not on.any():
                parts.append(f"{name}: never clipped")
                continue
            turns = float(direction.cos[o, s][on].min()) < 1 - tol
            (turned if turns else kept).append(name)
            parts.append(f"{name}: {angle[o, s]:.3g} deg")
    numbers = (f"median angle between the update with and without clipping over the clipped steps "
               f"({direction.cos.shape[2]} steps): " + "; ".join(parts))
    if not kept and not turned:
        return _verdict("9", INCONCLUSIVE, "no method clipped on the measured steps; " + numbers)
    if not kept:
        return _verdict("9", HOLDS, "every method turned the update with every optimiser; " + numbers)
    if not turned:
        return _verdict("9", FAILS, numbers)
    return _verdict("9", ONLY_WHEN, f"the clipping and optimiser are not {' or '.join(kept)}, which only shortened "
                                    f"the update (cos >= 1 - {tol:g}); " + numbers)
