"""Recurrent nets where clipping does its real job (lesson 08): Pascanu et al.'s adding problem,
vanilla/gated cells, a training loop that records every clipping decision, and two probes.

The adding problem (Hochreiter & Schmidhuber 1997; Pascanu, Mikolov & Bengio 2013): each time
step carries a value ``v_t ~ U(0, 1)`` and a marker ``m_t``; exactly two markers are 1, one in
the first half and one in the second; the target is the sum of the two marked values. Predicting
the mean (1) scores a mean squared error of ``Var(v_a + v_b) = 2/12 = 1/6``.

Cells (one implementation for training, probes and the char-LM of :mod:`gradkit.lessons.charlm`),
with ``a = x_t W_ih + b`` split into gates:

- ``rnn``: ``h_t = tanh(x_t W_ih + h_{t-1} W_hh + b)``;
- ``gru``: ``r, z = sigmoid(a_r + h W_r), sigmoid(a_z + h W_z)``,
  ``n = tanh(a_n + r * (h W_n))``, ``h_t = (1 - z) * n + z * h_{t-1}``;
- ``lstm``: ``i, f, o = sigmoid(.)``, ``g = tanh(.)``, ``c_t = f * c_{t-1} + i * g``,
  ``h_t = o * tanh(c_t)`` (forget-gate bias initialised to 1).

:func:`train` trains several independent runs at once (each its own net, clipping spec, seed and
data), stacked in one batched forward so that the per-operation overhead of a small recurrent
net is paid once; every run is clipped on its own with :func:`gradkit.clip.clipper`.

**Rules** (one place, used by every table and verdict):

- *Diverged*: a run diverges at the first step whose training loss is non-finite or above
  ``DIVERGE_FACTOR`` (100) times the loss of the trivial predictor (``task.baseline``: 1/6 for the
  adding problem); it is not trained after that step.
- *Solved*: a run that did not diverge and whose final test loss is below ``target``
  (``ADDING_TARGET`` = 0.04 for the adding problem: a quarter of the trivial predictor's 1/6).

>>> x, y = adding_problem(4, 10, torch.Generator().manual_seed(0))
>>> x.shape, y.shape, int(x[..., 1].sum())
(torch.Size([4, 10, 2]), torch.Size([4, 1]), 8)
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from gradkit.clip import clipper, grad_norm

CELLS = ("rnn", "gru", "lstm")
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
DIVERGE_FACTOR = 100.0
ADDING_TARGET = 0.04
WEIGHTS = ("w_ih", "w_hh", "bias", "w_out", "b_out")

# The lesson's settings, shared by the notebook and bench/make_lesson08_runs.py. The readout bias
# starts at 0 (AddingTask.target_mean), so the first steps see errors of about 1 and the largest
# gradients of the run: that is where an unclipped run at this learning rate blows up.
EXPLODING = {"length": 10, "cell": "rnn", "hidden": 32, "lr": 0.1, "momentum": 0.9, "batch": 32, "steps": 3000}
SLIDER_GRID: dict[str, tuple[float, ...]] = {}  # extra thresholds for the slider beyond the table's (none on this CPU)
LONG = {"length": 40, "cell": "rnn", "hidden": 32, "lr": 0.1, "momentum": 0.9, "batch": 32, "steps": 3000}
LONG_CLIP = "norm:3.0"
# At lr 3 (momentum 0.9, no warm-up) the unclipped GRU language model spikes and ends far above the
# uniform guess in every seed on the 2-core CPU (measured 2026-12-02: 5 of 5); c = 1 is about five
# times the median gradient norm (~0.2) of runs that train normally.
CHARLM = {"seq_len": 32, "cell": "gru", "hidden": 64, "lr": 3.0, "momentum": 0.9, "batch": 32, "steps": 300}
CHARLM_CLIP = "norm:1.0"
CHARLM_SEEDS = 5
CHARLM_TEST = 200


def adding_problem(n: int, length: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` sequences of the adding problem: ``x`` (n, length, 2) = (value, marker), ``y`` (n, 1).

    One marker sits at a uniform position in ``[0, length//2)``, the other in
    ``[length//2, length)``; ``y = v_a + v_b``.

    >>> x, y = adding_problem(3, 6, torch.Generator().manual_seed(1))
    >>> bool(torch.allclose(y[:, 0], (x[..., 0] * x[..., 1]).sum(1)))
    True
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if not isinstance(length, int) or length < 2:
        raise ValueError(f"length must be an int >= 2, got {length!r}")
    values = torch.rand(n, length, generator=generator)
    first = torch.randint(0, length // 2, (n,), generator=generator)
    second = torch.randint(length // 2, length, (n,), generator=generator)
    rows = torch.arange(n)
    markers = torch.zeros(n, length)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    return torch.stack([values, markers], dim=-1), (values[rows, first] + values[rows, second]).unsqueeze(1)


class Task(Protocol):
    """What :func:`train` needs from a task."""

    name: str
    n_in: int
    n_out: int
    tokens: bool        # inputs are integer tokens (rows of w_ih) rather than feature vectors
    every_step: bool    # predict at every time step (language model) or after the last one
    baseline: float     # loss of the trivial predictor
    target_mean: float  # the readout bias starts here (0 for a language model's logits)

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]: ...

    def test_batch(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]: ...

    def loss(self, out: Tensor, y: Tensor) -> Tensor: ...

    def config(self) -> dict[str, Any]: ...


@dataclass
class AddingTask:
    """The adding problem with sequences of ``length`` steps; mean squared error per run."""

    length: int
    name: str = "adding"
    n_in: int = 2
    n_out: int = 1
    tokens: bool = False
    every_step: bool = False
    baseline: float = 1.0 / 6.0
    target_mean: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.length, int) or self.length < 2:
            raise ValueError(f"length must be an int >= 2, got {self.length!r}")

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        return adding_problem(n, self.length, generator)

    def test_batch(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        return adding_problem(n, self.length, generator)

    def config(self) -> dict[str, Any]:
        return {"length": self.length}

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        """Mean squared error of each run: ``out``, ``y`` (K, B, 1) -> (K,)."""
        return ((out - y) ** 2).mean(dim=(1, 2))


class RecurrentNet(nn.Module):
    """One recurrent net: a ``cell`` (``rnn``, ``gru``, ``lstm``) of ``hidden`` units and a linear readout.

    Weights: ``w_ih`` (n_in, G*H), ``w_hh`` (H, G*H), ``bias`` (G*H), ``w_out`` (H, n_out), ``b_out``;
    G = 1, 3, 4 gates. Uniform(-1/sqrt(H), 1/sqrt(H)) initialisation as in ``torch.nn.RNN``, except
    that ``b_out`` starts at ``out_bias`` (:func:`train` passes the task's ``target_mean``) and ``rho`` (vanilla cell only) draws ``w_hh`` from N(0, rho^2 / H), whose spectral radius is
    about ``rho``: above 1 the recurrence amplifies, below 1 it forgets.

    >>> net = RecurrentNet("gru", 2, 8, 1, seed=0)
    >>> net(torch.zeros(3, 5, 2)).shape
    torch.Size([3, 1])
    """

    def __init__(self, cell: str, n_in: int, hidden: int, n_out: int, *, rho: float | None = None,
                 tokens: bool = False, every_step: bool = False, out_bias: float = 0.0, seed: int = 0) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell={cell!r} is not a recurrent cell; accepted: {', '.join(CELLS)}")
        if rho is not None and cell != "rnn":
            raise ValueError(f"rho={rho!r} applies to the vanilla cell only (cell='rnn'), got cell={cell!r}")
        for name, value in (("n_in", n_in), ("hidden", hidden), ("n_out", n_out)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        self.cell, self.hidden, self.tokens, self.every_step = cell, hidden, tokens, every_step
        g = torch.Generator().manual_seed(seed)
        bound = 1.0 / math.sqrt(hidden)

        def uniform(*shape: int) -> nn.Parameter:
            return nn.Parameter((torch.rand(*shape, generator=g) * 2 - 1) * bound)

        gh = GATES[cell] * hidden
        self.w_ih, self.w_hh, self.bias = uniform(n_in, gh), uniform(hidden, gh), uniform(gh)
        self.w_out, self.b_out = uniform(hidden, n_out), uniform(n_out)
        with torch.no_grad():
            if rho is not None:
                self.w_hh.copy_(torch.randn(hidden, hidden, generator=g) * (rho / math.sqrt(hidden)))
            if cell == "lstm":
                self.bias[hidden:2 * hidden] = 1.0
            self.b_out.fill_(out_bias)

    def forward(self, x: Tensor) -> Tensor:
        return run_stack(stack_weights([self]), self.cell, x.unsqueeze(0), tokens=self.tokens,
                         every_step=self.every_step)[0].squeeze(0)


def stack_weights(nets: Sequence[RecurrentNet]) -> dict[str, Tensor]:
    """The nets' weights stacked along a new first axis (K, ...), differentiable to each net."""
    return {name: torch.stack([getattr(n, name) for n in nets]) for name in WEIGHTS}


def run_stack(w: dict[str, Tensor], cell: str, x: Tensor, *, tokens: bool = False, every_step: bool = False,
              keep_states: bool = False) -> tuple[Tensor, list[Tensor]]:
    """Run K nets with stacked weights ``w`` on their own inputs ``x`` (K, B, T[, n_in]).

    Returns the outputs, (K, B, n_out) after the last step or (K, B, T, n_out) at every step, and
    the hidden states h_1..h_T (each (K, B, H), gradients retained) when ``keep_states``.
    """
    k = w["w_hh"].shape[0]
    hidden = w["w_hh"].shape[1]
    if tokens:
        a = w["w_ih"][torch.arange(k).view(k, 1, 1), x]
    else:
        a = torch.matmul(x, w["w_ih"].unsqueeze(1))
    a = a + w["bias"].view(k, 1, 1, -1)
    h = a.new_zeros(k, a.shape[1], hidden)
    c = torch.zeros_like(h)
    states, outs = [], []
    for a_t in a.unbind(2):
        h, c = cell_step(cell, w["w_hh"], a_t, h, c)
        if keep_states and h.requires_grad:
            h.retain_grad()
        if keep_states:
            states.append(h)
        if every_step:
            outs.append(h)
    if every_step:
        out = torch.matmul(torch.stack(outs, 2), w["w_out"].unsqueeze(1)) + w["b_out"].view(k, 1, 1, -1)
    else:
        out = torch.baddbmm(w["b_out"].unsqueeze(1), h, w["w_out"])
    return out, states


def cell_step(cell: str, w_hh: Tensor, a_t: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """One time step of K nets: ``a_t = x_t W_ih + b`` (K, B, G*H), state ``h``, ``c`` (K, B, H) -> new ``h``, ``c``
    (``c`` is the LSTM's cell state; the other cells pass it through)."""
    if cell == "rnn":
        return torch.tanh(torch.baddbmm(a_t, h, w_hh)), c
    if cell == "gru":
        ar, az, an = a_t.chunk(3, -1)
        hr, hz, hn = torch.bmm(h, w_hh).chunk(3, -1)
        r, z = torch.sigmoid(ar + hr), torch.sigmoid(az + hz)
        return torch.lerp(torch.tanh(an + r * hn), h, z), c
    i, f, g, o = torch.baddbmm(a_t, h, w_hh).chunk(4, -1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


@dataclass
class Run:
    """One training run: its config and, per step, the loss, the gradient norm before and after
    clipping, whether it was clipped and the largest gradient element ``max_abs`` (before
    clipping: what value clipping compares with its threshold); the test loss every
    ``eval_every`` steps. ``net`` is the trained net (not saved).

    ``diverged_step`` is the step the divergence rule fired (records stop before it), else None.
    ``seconds`` is the run's share of the wall time of the stacked training it was part of;
    ``extra`` holds anything a lesson adds (a generated text sample).
    """

    config: dict[str, Any]
    loss: list[float] = field(default_factory=list)
    norm_before: list[float] = field(default_factory=list)
    norm_after: list[float] = field(default_factory=list)
    clipped: list[bool] = field(default_factory=list)
    max_abs: list[float] = field(default_factory=list)
    diverged_step: int | None = None
    test_steps: list[int] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    spike: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    net: RecurrentNet | None = field(default=None, repr=False, compare=False)

    @property
    def spec(self) -> str:
        return self.config["clip"]

    @property
    def diverged(self) -> bool:
        return self.diverged_step is not None

    @property
    def clip_share(self) -> float:
        """Share of the trained steps whose gradient was clipped."""
        return float(np.mean(self.clipped)) if self.clipped else math.nan

    @property
    def final_test_loss(self) -> float:
        """Test loss after the last trained step (inf for a run that diverged)."""
        return math.inf if self.diverged or not self.test_loss else self.test_loss[-1]

    def solved(self, target: float) -> bool:
        """The success rule: not diverged and final test loss < ``target``."""
        return not self.diverged and self.final_test_loss < target

    def to_dict(self, digits: int = 5) -> dict[str, Any]:
        """JSON-ready, floats rounded to ``digits`` significant digits; the spike snapshot is left out."""
        d = asdict(self)
        d.pop("spike")
        d.pop("net")
        for key in ("loss", "norm_before", "norm_after", "max_abs", "test_loss"):
            d[key] = [float(f"{v:.{digits}g}") for v in d[key]]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Run:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k not in ("spike", "net")})


def train(task: Task, cell: str, members: Sequence[tuple[str, int]], *, hidden: int, lr: float, steps: int,
          batch: int = 32, momentum: float = 0.0, rho: float | None = None, eval_every: int = 50,
          test_size: int = 500, test_seed: int = 12345, keep_spike: bool = False) -> list[Run]:
    """Train one run per ``(clip_spec, seed)`` in ``members`` with SGD, all stacked in one forward.

    Run ``k`` starts from ``RecurrentNet(cell, ..., seed=seed_k)`` and draws its batches from a
    generator seeded with ``seed_k + 1`` (two runs with one seed see the same start and the same
    data: a paired comparison). Each step: loss, backward, ``clipper(spec_k)(net_k)``, SGD
    (``lr``, ``momentum``). The divergence rule of the module docstring stops a run. Every
    ``eval_every`` steps and at the end, the test loss on ``test_size`` fixed sequences.
    ``keep_spike`` keeps, per run, a copy of the weights and the batch at its largest finite
    gradient norm (for :func:`cliff_probe`).

    >>> runs = train(AddingTask(6), "rnn", [("none", 0), ("norm:0.5", 0)], hidden=4, lr=0.1, steps=3, test_size=8)
    >>> [len(r.loss) for r in runs], runs[1].norm_before[0] == runs[0].norm_before[0]
    ([3, 3], True)
    """
    if cell not in CELLS:
        raise ValueError(f"cell={cell!r} is not a recurrent cell; accepted: {', '.join(CELLS)}")
    if not members:
        raise ValueError("members must name at least one (clip_spec, seed) pair")
    for name, value in (("hidden", hidden), ("steps", steps), ("batch", batch), ("eval_every", eval_every),
                        ("test_size", test_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    clips = [clipper(spec) for spec, _ in members]
    nets = [RecurrentNet(cell, task.n_in, hidden, task.n_out, rho=rho, tokens=task.tokens,
                         every_step=task.every_step, out_bias=task.target_mean, seed=seed) for _, seed in members]
    # One generator per distinct seed: runs that share a seed share their batches (drawn once).
    gens = {seed: torch.Generator().manual_seed(seed + 1) for _, seed in members}
    opt = torch.optim.SGD([p for n in nets for p in n.parameters()], lr=lr, momentum=momentum, foreach=True)
    test_x, test_y = task.test_batch(test_size, torch.Generator().manual_seed(test_seed))
    base = {"task": task.name, "cell": cell, "hidden": hidden, "lr": lr, "momentum": momentum, "steps": steps,
            "batch": batch, "rho": rho, "test_size": test_size}
    base.update(task.config())
    runs = [Run(config={**base, "clip": c.spec, "seed": seed}) for c, (_, seed) in zip(clips, members)]
    alive = list(range(len(nets)))
    peak = [-math.inf] * len(nets)
    start = time.perf_counter()

    def evaluate(step: int) -> None:
        idx = list(alive)
        if not idx:
            return
        with torch.no_grad():
            k = len(idx)
            x = test_x.unsqueeze(0).expand(k, *test_x.shape)
            out, _ = run_stack(stack_weights([nets[i] for i in idx]), cell, x, tokens=task.tokens,
                               every_step=task.every_step)
            losses = task.loss(out, test_y.unsqueeze(0).expand(k, *test_y.shape)).tolist()
        for i, v in zip(idx, losses):
            runs[i].test_steps.append(step)
            runs[i].test_loss.append(v)

    for step in range(steps):
        if step % eval_every == 0:
            evaluate(step)
        if not alive:
            break
        drawn = {seed: task.sample(batch, g) for seed, g in gens.items()}
        x = torch.stack([drawn[members[i][1]][0] for i in alive])
        y = torch.stack([drawn[members[i][1]][1] for i in alive])
        opt.zero_grad(set_to_none=True)
        out, _ = run_stack(stack_weights([nets[i] for i in alive]), cell, x, tokens=task.tokens,
                           every_step=task.every_step)
        losses = task.loss(out, y)
        losses.sum().backward()
        largest = torch.stack([grad_norm(nets[i], math.inf) for i in alive])
        results = [clips[i](nets[i]) for i in alive]
        record = torch.stack([losses.detach(), largest] + [torch.stack([r.norm_before for r in results]),
                                                  torch.stack([r.norm_after for r in results]),
                                                  torch.stack([r.clipped.float() for r in results])]).tolist()
        still = []
        for j, i in enumerate(alive):
            loss, top, before, after, clipped = (row[j] for row in record)
            if not math.isfinite(loss) or loss > DIVERGE_FACTOR * task.baseline or not math.isfinite(before):
                runs[i].diverged_step = step
                for p in nets[i].parameters():
                    p.grad = None
                continue
            runs[i].loss.append(loss)
            runs[i].norm_before.append(before)
            runs[i].norm_after.append(after)
            runs[i].clipped.append(bool(clipped))
            runs[i].max_abs.append(top)
            if keep_spike and before > peak[i]:
                peak[i] = before
                runs[i].spike = {"step": step, "norm": before, "x": x[j].clone(), "y": y[j].clone(),
                                 "net": copy.deepcopy(nets[i])}
            still.append(i)
        alive = still
        opt.step()
    evaluate(steps)
    seconds = time.perf_counter() - start
    for r, net in zip(runs, nets):
        r.seconds, r.net = seconds / len(runs), net
    return runs


def cliff_probe(net: RecurrentNet, x: Tensor, y: Tensor, task: Task, *, reach: float, points: int = 41) -> dict[str, np.ndarray]:
    """The loss along the gradient-descent direction from ``net``'s weights on one batch ``(x, y)``.

    ``L(w - s * g / ||g||)`` for ``s`` in ``[0, reach]`` (``points`` values, all evaluated at once as
    one stack of nets). With ``reach = lr * ||g||`` the last point is where a plain SGD step
    (momentum aside) would land; a clipped step stops at ``lr * c``.

    >>> net = RecurrentNet("rnn", 2, 4, 1, seed=0)
    >>> x, y = adding_problem(8, 6, torch.Generator().manual_seed(0))
    >>> p = cliff_probe(net, x, y, AddingTask(6), reach=0.1, points=5)
    >>> start = float(AddingTask(6).loss(net(x)[None], y[None]).detach())
    >>> [round(float(d), 3) for d in p["distance"][:2]], abs(float(p["loss"][0]) - start) < 1e-6
    ([0.0, 0.025], True)
    """
    if not reach > 0:
        raise ValueError(f"reach must be > 0, got {reach!r}")
    net = copy.deepcopy(net)
    net.zero_grad(set_to_none=True)
    task.loss(net(x).unsqueeze(0), y.unsqueeze(0)).sum().backward()
    grads = {name: getattr(net, name).grad for name in WEIGHTS}
    gnorm = math.sqrt(sum(float((g ** 2).sum()) for g in grads.values()))
    distance = torch.linspace(0.0, reach, points)
    with torch.no_grad():
        w = {name: getattr(net, name).detach().unsqueeze(0) - distance.view(-1, *[1] * g.dim()) * g / gnorm
             for name, g in grads.items()}
        out, _ = run_stack(w, net.cell, x.unsqueeze(0).expand(points, *x.shape), tokens=net.tokens,
                           every_step=net.every_step)
        loss = task.loss(out, y.unsqueeze(0).expand(points, *y.shape))
    return {"distance": distance.numpy(), "loss": loss.numpy(), "grad_norm": np.float64(gnorm)}


def hidden_grad_norms(net: RecurrentNet, x: Tensor, y: Tensor, task: Task) -> np.ndarray:
    """``||dL/dh_t||`` for t = 1..T (Frobenius over batch and units): how much of the loss's gradient
    reaches each time step. For the adding problem the loss only sees ``h_T``, so the values fall
    from the last step backwards as fast as the recurrence forgets.

    >>> g = hidden_grad_norms(RecurrentNet("rnn", 2, 8, 1, rho=0.5, seed=0), *adding_problem(4, 20, torch.Generator().manual_seed(0)), AddingTask(20))
    >>> g.shape, bool(g[0] < g[-1] * 1e-3)
    ((20,), True)
    """
    net = copy.deepcopy(net)
    out, states = run_stack(stack_weights([net]), net.cell, x.unsqueeze(0), tokens=net.tokens,
                            every_step=net.every_step, keep_states=True)
    task.loss(out, y.unsqueeze(0)).sum().backward()
    return np.array([float(h.grad.norm()) for h in states])


def percentile_thresholds(norms: Sequence[float], percentiles: Sequence[float]) -> list[float]:
    """Norm-clipping thresholds read from observed gradient norms: each percentile, to 2 significant digits.

    >>> percentile_thresholds(np.arange(1, 101), [50, 90])
    [50.0, 90.0]
    """
    values = np.asarray(norms, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("norms holds no finite value to read a threshold from")
    return [float(f"{np.percentile(values, q):.2g}") for q in percentiles]


@dataclass
class SeedRow:
    """One clipping setting over its seeds: how many solved, diverged, and how often it clipped."""

    spec: str
    seeds: int
    solved: int
    diverged: int
    clip_share: float       # median over the seeds of each run's share of clipped steps
    max_clip_share: float
    test_loss: float        # median final test loss (inf counts for a diverged run)

    @property
    def failed(self) -> int:
        """Runs that did not solve the task, diverged ones included."""
        return self.seeds - self.solved


def seed_table(runs: Sequence[Run], target: float) -> list[SeedRow]:
    """One :class:`SeedRow` per clipping spec, in the order the specs first appear in ``runs``.

    >>> r = [Run({"clip": "none"}, clipped=[False], test_loss=[0.5]), Run({"clip": "none"}, diverged_step=3)]
    >>> row = seed_table(r, target=0.1)[0]
    >>> row.seeds, row.solved, row.diverged, row.failed
    (2, 0, 1, 2)
    """
    rows = []
    for spec in dict.fromkeys(r.spec for r in runs):
        group = [r for r in runs if r.spec == spec]
        shares = [r.clip_share for r in group if r.clipped]
        rows.append(SeedRow(spec, len(group), sum(r.solved(target) for r in group), sum(r.diverged for r in group),
                            float(np.median(shares)) if shares else math.nan,
                            float(np.max(shares)) if shares else math.nan,
                            float(np.median([r.final_test_loss for r in group]))))
    return rows


def format_seed_table(rows: Sequence[SeedRow]) -> str:
    """A markdown table of :func:`seed_table`'s rows."""
    from gradkit.plots import spec_label

    lines = ["| setting | seeds | solved | diverged | failed, not diverged | steps clipped (median, max) | median final test loss |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        share = "-" if r.spec == "none" else f"{100 * r.clip_share:.1f}%, {100 * r.max_clip_share:.1f}%"
        lines.append(f"| {spec_label(r.spec)} | {r.seeds} | {r.solved} | {r.diverged} | {r.failed - r.diverged} | "
                     f"{share} | {r.test_loss:.4g} |")
    return "\n".join(lines)


def table_findings(rows: Sequence[SeedRow], *, rare: float = 0.2) -> list[str]:
    """Sentences computed from the table: how the unclipped runs ended, and which clipped settings
    solved the task in all seeds or all but one while clipping fewer than ``rare`` of the steps.

    >>> rows = [SeedRow("none", 5, 1, 3, math.nan, math.nan, math.inf), SeedRow("norm:1.0", 5, 5, 0, 0.04, 0.06, 0.01)]
    >>> print("\\n".join(table_findings(rows)))
    Without clipping 3 of 5 seeds diverged and 1 more failed: 4 of 5 did not solve the task (a majority).
    norm clipping, c=1 solved 5 of 5 seeds and clipped 4.0% of the steps (median; at most 6.0%): rare clipping that saved the runs.
    """
    from gradkit.plots import spec_label

    out = []
    for r in rows:
        if r.spec == "none":
            share = "a majority" if 2 * r.failed > r.seeds else "not a majority"
            out.append(f"Without clipping {r.diverged} of {r.seeds} seeds diverged and {r.failed - r.diverged} more "
                       f"failed: {r.failed} of {r.seeds} did not solve the task ({share}).")
            continue
        text = (f"{spec_label(r.spec)} solved {r.solved} of {r.seeds} seeds and clipped {100 * r.clip_share:.1f}% "
                f"of the steps (median; at most {100 * r.max_clip_share:.1f}%)")
        if r.solved >= r.seeds - 1 and r.max_clip_share < rare:
            text += ": rare clipping that saved the runs."
        elif r.solved >= r.seeds - 1:
            text += f": it saved the runs, but clipped {100 * rare:.0f}% of the steps or more in some seed, so it also acted as a smaller step."
        else:
            text += f"; {r.diverged} diverged."
        out.append(text)
    return out


def outcome(run: Run, target: float) -> str:
    """How a run ended, in words: diverged (and where), solved or not solved (with its final test loss).

    >>> outcome(Run(config={"clip": "none"}, test_loss=[0.2, 0.01]), 0.04)
    'solved (final test loss 0.0100)'
    """
    if run.diverged:
        return f"diverged at step {run.diverged_step}"
    return f"{'solved' if run.solved(target) else 'not solved'} (final test loss {run.final_test_loss:.4f})"


def repeat_note(run: Run, others: Sequence[tuple[str, Run]], target: float) -> str:
    """Compare ``run`` with earlier runs of the same setting and seed (``(name, run)`` pairs): the
    same start and the same batches. Where the outcomes differ, say why that can happen: the runs
    were computed in another order (trained alone or stacked with other runs, on another number
    of threads), so they round differently, and a run at the edge of stability can end either way.

    >>> a = Run(config={"clip": "none"}, test_loss=[0.01])
    >>> b = Run(config={"clip": "none"}, test_loss=[0.16])
    >>> repeat_note(a, [("the shipped run", a)], 0.04)
    'The shipped run: solved (final test loss 0.0100), the same outcome as this run.'
    >>> repeat_note(a, [("the shipped run", b)], 0.04).startswith("The shipped run: not solved (final test loss 0.1600), unlike this run. Same start")
    True
    """
    lines, differ = [], False
    for name, other in others:
        same = (other.diverged, other.solved(target)) == (run.diverged, run.solved(target))
        differ |= not same
        lines.append(f"{name[:1].upper()}{name[1:]}: {outcome(other, target)}, "
                     f"{'the same outcome as' if same else 'unlike'} this run.")
    text = " ".join(lines)
    if differ:
        text += (" Same start, same batches, a different outcome: the runs were computed in another order "
                 "(trained alone or stacked with other runs, on another number of threads), so they rounded "
                 "differently in the last digits, and a run at the edge of stability can end either way on "
                 "that alone. One run is an anecdote; the table of section 2 counts seeds.")
    return text


def save_runs(path: str | Path, runs: Sequence[Run], provenance: dict[str, Any]) -> Path:
    """Write ``{"provenance": ..., "runs": [...]}`` as JSON, atomically (temporary file + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({"provenance": provenance, "runs": [r.to_dict() for r in runs]}, indent=None))
    os.replace(tmp, path)
    return path


def load_runs(path: str | Path) -> tuple[list[Run], dict[str, Any]]:
    """The runs and the provenance written by :func:`save_runs`."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path={str(path)!r} is not a file of saved runs (make it with bench/make_lesson08_runs.py)")
    data = json.loads(path.read_text())
    return [Run.from_dict(d) for d in data["runs"]], data["provenance"]
