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
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from gradkit.clip import clipper, grad_norm

CELLS = ("rnn", "gru", "lstm")
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
DIVERGE_FACTOR = 100.0
ADDING_TARGET = 0.04
WEIGHTS = ("w_ih", "w_hh", "bias", "w_out", "b_out")

# The lesson's settings, shared by the notebook and bench/make_lesson08_runs.py (measured on the
# 2-core CPU, 2026-12-04, results/lesson08/). At lr 0.12 with momentum 0.9 a vanilla RNN of 64 units
# on sequences of 10 steps trains with gradient norms around 0.3 for a thousand steps or more, then a
# few steps' gradients are 20 to 200 times longer: without clipping all 5 seeds diverged (steps 1297
# to 3434 of 4000); norm clipping at the 99th percentile of their norms (1.7) solved all 5 while
# clipping at most 2.4% of the steps. The readout bias starts at the target's mean (1), so no
# large early error starts a blow-up: the spikes come from the recurrence itself.
EXPLODING = {"length": 10, "cell": "rnn", "hidden": 64, "lr": 0.12, "momentum": 0.9, "batch": 32, "steps": 4000}
EXPLODING_SEEDS = 5
# The slider's grid: each method at these multiples of its table threshold (the 99th percentile
# of the unclipped runs' norms, or of their largest gradient element for value clipping).
SLIDER_MULTIPLES = (0.25, 0.5, 1.0, 2.0, 4.0)
# Sequences of 40 steps, clipped at the threshold that saved the exploding runs: the vanilla RNN's
# gradient at the first step is about 1e-8 of the last step's, before and after training, and it
# learns nothing in 3000 steps (3 of 3 seeds), while an LSTM (forget-gate bias 1) solves the task
# in 3 of 3; neither diverges, and the threshold acts on at most 0.1% of the steps: the gradients
# are not too long, they are missing at the early steps.
LONG = {"length": 40, "hidden": 64, "lr": 0.12, "momentum": 0.9, "batch": 32, "steps": 3000}
LONG_CELLS = ("rnn", "lstm")
LONG_CLIP = "norm:1.7"
LONG_SEEDS = 3
PROFILE_SIZE = 100  # test sequences on which train(profile_size=...) measures ||dL/dh_t||
SPIKE_RING = 64     # steps of weights and batches keep_spike holds before each run's last step
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
    target_mean: float = 1.0

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
    the hidden states h_1..h_T (each (max(K, 2), B, H), gradients retained) when ``keep_states``.

    A stack of one net is run beside a detached copy of itself (its outputs dropped, its states
    get no gradient): torch sends a
    batch of one matrix product down another kernel (the readout becomes a matrix-vector product)
    that rounds differently in the last digit, and a run at the edge of stability then ends
    differently alone than stacked. With the copy every run follows the same kernels whatever
    else it is stacked with: a net trained alone, in a pair or among 40 others has the same
    weights bit for bit (on one machine and torch version).
    """
    if w["w_hh"].shape[0] == 1:
        w = {name: torch.cat([t, t.detach()]) for name, t in w.items()}
        out, states = run_stack(w, cell, torch.cat([x, x]), tokens=tokens, every_step=every_step, keep_states=keep_states)
        return out[:1], states
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


SERIES = ("loss", "norm_before", "norm_after", "max_abs")


@dataclass
class Run:
    """One training run: its config and, per step, the loss, the gradient norm before and after
    clipping, whether it was clipped and the largest gradient element ``max_abs`` (before
    clipping: what value clipping compares with its threshold); the test loss every
    ``eval_every`` steps and, when asked (``train(profile_size=...)``), ``grad_profile``: at each of
    those steps ``||dL/dh_t||`` for t = 1..T. ``net`` is the trained net (not saved).

    ``diverged_step`` is the step the divergence rule fired (records stop before it), else None.
    ``seconds`` is the run's share of the wall time of the stacked training it was part of;
    ``extra`` holds anything a lesson adds (a generated text sample). ``spike`` and ``recent``
    (``train(keep_spike=True)``, not saved) hold the weights and batch at the largest finite
    gradient norm and at each of the last :data:`SPIKE_RING` steps (see :func:`spike_state`).
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
    grad_profile: list[list[float]] = field(default_factory=list)
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    spike: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    recent: list[dict[str, Any]] = field(default_factory=list, repr=False, compare=False)
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

    def to_dict(self, digits: int = 4, series: Sequence[str] = SERIES) -> dict[str, Any]:
        """JSON-ready: floats rounded to ``digits`` significant digits, the per-step ``series`` named
        (the others saved empty), ``clipped`` as the indices of the clipped steps (``clipped_at``:
        a few percent of the steps, where a list of booleans would hold every step); the spike
        snapshots and the net are left out.

        >>> Run({"clip": "norm:1.0"}, loss=[0.123456, 0.5], clipped=[False, True]).to_dict(3, series=["loss"])["clipped_at"]
        [1]
        """
        unknown = set(series) - set(SERIES)
        if unknown:
            raise ValueError(f"series={list(series)!r}: accepted names are {', '.join(SERIES)}")
        skip = ("spike", "recent", "net", "clipped")
        d = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name not in skip}
        d["clipped_at"] = [i for i, c in enumerate(self.clipped) if c]
        d["steps_recorded"] = len(self.clipped)
        for key in SERIES:
            d[key] = [float(f"{v:.{digits}g}") for v in d[key]] if key in series else []
        d["test_loss"] = [float(f"{v:.{digits}g}") for v in d["test_loss"]]
        d["grad_profile"] = [[float(f"{v:.3g}") for v in row] for row in d["grad_profile"]]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Run:
        """The run :meth:`to_dict` wrote (files with a ``clipped`` list of booleans load too)."""
        d = dict(d)
        if "clipped_at" in d:
            clipped = [False] * d.pop("steps_recorded")
            for i in d.pop("clipped_at"):
                clipped[i] = True
            d["clipped"] = clipped
        skip = ("spike", "recent", "net")
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k not in skip})


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread inside the block, then restore the thread count. These nets' matrices
    (32 x 64) gain nothing from a second thread (the same ms per step on an idle 2-core CPU), and on a
    busy machine each parallel region waits for a thread the OS has parked: lesson 08's pair of runs
    took 76 ms a step on two threads and about 2 on one, with the load average near 7 on 2 cores.

    >>> n = torch.get_num_threads()
    >>> with one_thread():
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == n
    True
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def train(task: Task, cell: str, members: Sequence[tuple[str, int]], *, hidden: int, lr: float, steps: int,
          batch: int = 32, momentum: float = 0.0, rho: float | None = None, eval_every: int = 50,
          test_size: int = 500, test_seed: int = 12345, keep_spike: bool = False, profile_size: int = 0) -> list[Run]:
    """Train one run per ``(clip_spec, seed)`` in ``members`` with SGD, all stacked in one forward.

    Run ``k`` starts from ``RecurrentNet(cell, ..., seed=seed_k)`` and draws its batches from a
    generator seeded with ``seed_k + 1`` (two runs with one seed see the same start and the same
    data: a paired comparison). Each step: loss, backward, ``clipper(spec_k)(net_k)``, SGD
    (``lr``, ``momentum``). The divergence rule of the module docstring stops a run. Every
    ``eval_every`` steps and at the end, the test loss on ``test_size`` fixed sequences and, with
    ``profile_size`` > 0, ``||dL/dh_t||`` on the first ``profile_size`` of them (:func:`grad_profiles`).
    ``keep_spike`` keeps, per run, the weights and the batch at its largest finite gradient norm
    and at each of its last :data:`SPIKE_RING` steps (for :func:`spike_state` and :func:`cliff_probe`).

    A run's numbers do not depend on what else is stacked with it (:func:`run_stack`): the same
    setting and seed give the same run alone or among others, on one machine and torch version.

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
    if not isinstance(profile_size, int) or not 0 <= profile_size <= test_size:
        raise ValueError(f"profile_size must be an int from 0 to test_size={test_size}, got {profile_size!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    with one_thread():
        clips = [clipper(spec) for spec, _ in members]
        nets = [RecurrentNet(cell, task.n_in, hidden, task.n_out, rho=rho, tokens=task.tokens,
                             every_step=task.every_step, out_bias=task.target_mean, seed=seed) for _, seed in members]
        # One generator per distinct seed: runs that share a seed share their batches (drawn once).
        gens = {seed: torch.Generator().manual_seed(seed + 1) for _, seed in members}
        opt = torch.optim.SGD([p for n in nets for p in n.parameters()], lr=lr, momentum=momentum, foreach=True)
        test_x, test_y = task.test_batch(test_size, torch.Generator().manual_seed(test_seed))
        base = {"task": task.name, "cell": cell, "hidden": hidden, "lr": lr, "momentum": momentum, "steps": steps,
                "batch": batch, "rho": rho, "test_size": test_size, "out_bias": task.target_mean}
        base.update(task.config())
        runs = [Run(config={**base, "clip": c.spec, "seed": seed}) for c, (_, seed) in zip(clips, members)]
        alive = list(range(len(nets)))
        peak = [-math.inf] * len(nets)
        start = time.perf_counter()

        def evaluate(step: int) -> None:
            idx = list(alive)
            if not idx:
                return
            k = len(idx)
            w = stack_weights([nets[i] for i in idx])
            with torch.no_grad():
                x = test_x.unsqueeze(0).expand(k, *test_x.shape)
                out, _ = run_stack(w, cell, x, tokens=task.tokens, every_step=task.every_step)
                losses = task.loss(out, test_y.unsqueeze(0).expand(k, *test_y.shape)).tolist()
            profiles = (grad_profiles(w, cell, test_x[:profile_size], test_y[:profile_size], task).tolist()
                        if profile_size else [None] * k)
            for i, v, prof in zip(idx, losses, profiles):
                runs[i].test_steps.append(step)
                runs[i].test_loss.append(v)
                if prof is not None:
                    runs[i].grad_profile.append(prof)

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
                if keep_spike:
                    snap = {"step": step, "norm": before, "x": x[j].clone(), "y": y[j].clone(),
                            "weights": {name: getattr(nets[i], name).detach().clone() for name in WEIGHTS}}
                    runs[i].recent = [*runs[i].recent[-(SPIKE_RING - 1):], snap]
                    if before > peak[i]:
                        peak[i] = before
                        runs[i].spike = snap
                still.append(i)
            alive = still
            opt.step()
        evaluate(steps)
        seconds = time.perf_counter() - start
        for r, net in zip(runs, nets):
            r.seconds, r.net = seconds / len(runs), net
    return runs


def snapshot_net(run: Run, snap: dict[str, Any]) -> RecurrentNet:
    """The net of ``run`` with the weights of one of its snapshots (``run.spike`` or ``run.recent[i]``)."""
    if run.net is None:
        raise ValueError("run.net is None: snapshots belong to runs trained in this session (train(keep_spike=True))")
    net = copy.deepcopy(run.net)
    with torch.no_grad():
        for name, value in snap["weights"].items():
            getattr(net, name).copy_(value)
    return net


def blowup_start(run: Run, c: float) -> int | None:
    """The step at which a diverged run's blow-up began: the first of the unbroken steps with
    ``||g|| > c`` that end at its last trained step (that step itself when its norm was <= c: the
    update that diverged); None for a run that did not diverge.

    >>> blowup_start(Run({"clip": "none"}, norm_before=[0.3, 5.0, 0.4, 6.0, 20.0], diverged_step=5), 1.0)
    3
    """
    if not run.diverged or not run.norm_before:
        return None
    s = len(run.norm_before) - 1
    while s > 0 and run.norm_before[s] > c and run.norm_before[s - 1] > c:
        s -= 1
    return s


def spike_state(run: Run, c: float) -> dict[str, Any] | None:
    """The state to probe for the cliff (:func:`cliff_probe`): for a run that diverged, the snapshot
    at :func:`blowup_start` (or the earliest one held, when the blow-up began more than
    :data:`SPIKE_RING` steps before the end), else the snapshot at the largest gradient. A dict
    with ``step``, ``norm``, ``x``, ``y`` and ``net``; None without snapshots."""
    snap = run.spike
    begin = blowup_start(run, c)
    if begin is not None and run.recent:
        snap = next((s for s in run.recent if s["step"] >= begin), run.recent[-1])
    if snap is None:
        return None
    return {**{k: v for k, v in snap.items() if k != "weights"}, "net": snapshot_net(run, snap)}


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


def grad_profiles(w: dict[str, Tensor], cell: str, x: Tensor, y: Tensor, task: Task) -> Tensor:
    """``||dL/dh_t||`` for t = 1..T (Frobenius over batch and units) of K stacked nets (weights
    ``w``, as :func:`stack_weights` gives them) on one batch ``(x, y)`` that they all read: a (K, T)
    tensor. The weights are copied, so no ``.grad`` of the nets changes."""
    k = w["w_hh"].shape[0]
    w = {name: t.detach().clone().requires_grad_(True) for name, t in w.items()}
    xs = x.unsqueeze(0).expand(k, *x.shape)
    out, states = run_stack(w, cell, xs, tokens=task.tokens, every_step=task.every_step, keep_states=True)
    grads = torch.autograd.grad(task.loss(out, y.unsqueeze(0).expand(k, *y.shape)).sum(), states)
    return torch.stack([g[:k].reshape(k, -1).norm(dim=1) for g in grads], dim=1).detach()


def hidden_grad_norms(net: RecurrentNet, x: Tensor, y: Tensor, task: Task) -> np.ndarray:
    """``||dL/dh_t||`` for t = 1..T (Frobenius over batch and units): how much of the loss's gradient
    reaches each time step. For the adding problem the loss only sees ``h_T``, so the values fall
    from the last step backwards as fast as the recurrence forgets.

    >>> g = hidden_grad_norms(RecurrentNet("rnn", 2, 8, 1, rho=0.5, seed=0), *adding_problem(4, 20, torch.Generator().manual_seed(0)), AddingTask(20))
    >>> g.shape, bool(g[0] < g[-1] * 1e-3)
    ((20,), True)
    """
    return grad_profiles(stack_weights([net]), net.cell, x, y, task)[0].numpy().astype(float)


def geometric_rate(profile: Sequence[float]) -> float:
    """The factor by which ``||dL/dh_t||`` shrinks per time step going back from the last step:
    ``(g_1 / g_T) ** (1 / (T - 1))`` (1: nothing lost; 0.6: 40% lost at every step).

    >>> round(geometric_rate([0.25, 0.5, 1.0]), 3)
    0.5
    """
    g = np.asarray(profile, dtype=float)
    if g.size < 2 or not g[-1] > 0:
        raise ValueError(f"profile must hold >= 2 values and a positive last one, got {g.size} values ending in {g[-1:]!r}")
    return float((g[0] / g[-1]) ** (1.0 / (g.size - 1)))


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
    """Sentences computed from the table, one per row: how the unclipped runs ended, and for each
    clipped setting how many seeds it solved, how many of those the unclipped runs lost, and how
    often it clipped; "rare" means fewer than ``rare`` of the steps in every seed.

    >>> rows = [SeedRow("none", 5, 0, 5, math.nan, math.nan, math.inf), SeedRow("norm:1.0", 5, 5, 0, 0.04, 0.06, 0.01),
    ...         SeedRow("value:0.5", 5, 4, 0, 0.01, 0.02, 0.02)]
    >>> print("\\n".join(table_findings(rows)))
    Without clipping 5 of 5 seeds diverged and 0 more failed: 5 of 5 did not solve the task (all of them).
    norm clipping, c=1 solved 5 of 5 seeds (0 diverged), clipping 4.0% of the steps (median; at most 6.0%): rare clipping (under 20% of the steps in every seed), and every seed solved.
    value clipping, c=0.5 solved 4 of 5 seeds (0 diverged, 1 failed without diverging), clipping 1.0% of the steps (median; at most 2.0%): rare clipping (under 20% of the steps in every seed), 4 more seeds solved than without clipping, not all.
    """
    from gradkit.plots import spec_label

    base = next((r for r in rows if r.spec == "none"), None)
    out = []
    for r in rows:
        if r.spec == "none":
            share = "all of them" if r.failed == r.seeds else "a majority" if 2 * r.failed > r.seeds else "not a majority"
            out.append(f"Without clipping {r.diverged} of {r.seeds} seeds diverged and {r.failed - r.diverged} more "
                       f"failed: {r.failed} of {r.seeds} did not solve the task ({share}).")
            continue
        quiet = r.failed - r.diverged
        ends = f"{r.diverged} diverged" + (f", {quiet} failed without diverging" if quiet else "")
        text = (f"{spec_label(r.spec)} solved {r.solved} of {r.seeds} seeds ({ends}), clipping "
                f"{100 * r.clip_share:.1f}% of the steps (median; at most {100 * r.max_clip_share:.1f}%)")
        how = (f"rare clipping (under {100 * rare:.0f}% of the steps in every seed)" if r.max_clip_share < rare
               else f"clipping {100 * rare:.0f}% of the steps or more in some seed")
        gained = r.solved - base.solved if base is not None else None
        if r.solved == r.seeds:
            verdict = f"{how}, and every seed solved"
        elif gained is not None and gained > 0:
            verdict = f"{how}, {gained} more seed{'s' if gained > 1 else ''} solved than without clipping, not all"
        elif gained is not None:
            verdict = f"{how}, and no more seeds solved than without clipping"
        else:
            verdict = how
        if r.max_clip_share >= rare and r.solved:
            verdict += " (acting on that many steps it is also a smaller step)"
        out.append(f"{text}: {verdict}.")
    return out


def outcome(run: Run, target: float) -> str:
    """How a run ended, in words: diverged (and where), solved or not solved (with its final test loss).

    >>> outcome(Run(config={"clip": "none"}, test_loss=[0.2, 0.01]), 0.04)
    'solved (final test loss 0.0100)'
    """
    if run.diverged:
        return f"diverged at step {run.diverged_step}"
    return f"{'solved' if run.solved(target) else 'not solved'} (final test loss {run.final_test_loss:.4f})"


def pair_findings(free: Run, saved: Run, c: float, target: float) -> list[str]:
    """Sentences computed from section 1's pair, one unclipped run ``free`` and its clipped twin
    ``saved`` (same seed, norm clipping at ``c``): how large the unclipped gradients got and how
    often they passed ``c``, where the blow-up began (:func:`blowup_start`) and how the run ended,
    then how often the twin was clipped and how it ended.

    >>> free = Run({"clip": "none", "seed": 0}, loss=[0.2, 0.2, 0.2, 0.3, 2.0], norm_before=[0.3, 0.3, 0.3, 6.0, 30.0],
    ...            clipped=[False] * 5, diverged_step=5)
    >>> saved = Run({"clip": "norm:1.0", "seed": 0}, loss=[0.2] * 5, norm_before=[0.3, 0.3, 6.0, 0.2, 0.2],
    ...             clipped=[False, False, True, False, False], test_loss=[0.01])
    >>> print("\\n".join(pair_findings(free, saved, 1.0, 0.04)))
    Without clipping the gradient norm had median 0.3; 2 of 5 steps had ||g|| > c = 1, and the largest, 30 at step 4, was 100 times the median.
    Its blow-up began at step 3 (||g|| = 6, 20 times the median, training loss 0.3 on that step's batch); at step 5 the loss left the bounds: the run diverged.
    With norm clipping at c = 1 the same start and batches gave 1 clipped step of 5 (20.0%); solved (final test loss 0.0100).
    """
    norms = np.asarray(free.norm_before, dtype=float)
    med = float(np.median(norms))
    top = int(np.argmax(norms))
    out = [f"Without clipping the gradient norm had median {med:.2g}; {int((norms > c).sum())} of {norms.size} steps had "
           f"||g|| > c = {c:g}, and the largest, {norms[top]:.3g} at step {top}, was {norms[top] / med:.0f} times the median."]
    begin = blowup_start(free, c)
    if begin is not None:
        out.append(f"Its blow-up began at step {begin} (||g|| = {norms[begin]:.3g}, {norms[begin] / med:.0f} times the median, "
                   f"training loss {free.loss[begin]:.3g} on that step's batch); at step {free.diverged_step} the loss left "
                   f"the bounds: the run diverged.")
    else:
        out.append(f"It did not diverge in {norms.size} steps: {outcome(free, target)}.")
    n = len(saved.clipped)
    out.append(f"With norm clipping at c = {c:g} the same start and batches gave {sum(saved.clipped)} clipped "
               f"step{'s' if sum(saved.clipped) != 1 else ''} of {n} ({100 * saved.clip_share:.1f}%); {outcome(saved, target)}.")
    return out


def cliff_findings(probe: dict[str, np.ndarray], *, lr: float, c: float, step: int, where: str) -> list[str]:
    """Sentences computed from a :func:`cliff_probe` at ``step`` (``where``: why that step): the loss on
    the batch before the step, the lowest point of the line, where the clipped (``lr * c``) and the
    unclipped (``lr * ||g||``) steps land, and whether the unclipped one lands on a wall (more than
    twice the loss before it and twice where the clipped step lands).

    >>> p = {"distance": np.linspace(0, 1, 11), "loss": np.array([0.3, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8]),
    ...      "grad_norm": np.float64(5.0)}
    >>> print("\\n".join(cliff_findings(p, lr=0.1, c=1.0, step=7, where="where the blow-up began")))
    Step 7, where the blow-up began: ||g|| = 5; the loss on its batch was 0.3 before the step.
    Along -g the loss falls to 0.1 at distance 0.1 (the length of a step with ||g|| = 1), then rises: 0.1 where the clipped step lands (lr x c = 0.1), 0.8 where the unclipped one lands (lr x ||g|| = 0.5).
    The unclipped step lands on a wall: 2.7 times the loss before it, 8 times where the clipped step lands.
    """
    d, loss = probe["distance"], probe["loss"]
    gnorm = float(probe["grad_norm"])
    full, capped_at = lr * gnorm, lr * min(c, gnorm)
    before = float(loss[0])
    low = int(np.argmin(loss))
    plain, capped = float(np.interp(full, d, loss)), float(np.interp(capped_at, d, loss))
    out = [f"Step {step}, {where}: ||g|| = {gnorm:.3g}; the loss on its batch was {before:.3g} before the step.",
           f"Along -g the loss falls to {loss[low]:.3g} at distance {d[low]:.2g} (the length of a step with "
           f"||g|| = {d[low] / lr:.2g}), then rises: {capped:.3g} where the clipped step lands (lr x c = {capped_at:.3g}), "
           f"{plain:.3g} where the unclipped one lands (lr x ||g|| = {full:.3g})." if low > 0 else
           f"Along -g the loss rises from the start: {capped:.3g} where the clipped step lands (lr x c = {capped_at:.3g}), "
           f"{plain:.3g} where the unclipped one lands (lr x ||g|| = {full:.3g})."]
    if plain > 2 * max(before, capped):
        out.append(f"The unclipped step lands on a wall: {plain / before:.2g} times the loss before it, "
                   f"{plain / capped:.2g} times where the clipped step lands.")
    elif plain > before:
        out.append(f"The unclipped step lands higher than it started ({plain / before:.2g} times the loss before it), "
                   f"but not on a wall (the clipped step: {capped / before:.2g} times).")
    else:
        out.append(f"On this batch the line does not climb to a wall: the unclipped step ends at {plain / before:.2g} "
                   f"times the loss before it.")
    return out


def long_findings(runs: Sequence[Run], target: float) -> list[str]:
    """Sentences computed from the long-sequence runs (one clipping setting, several cells): per cell
    the seeds solved and diverged, how often clipping acted and the largest gradient norm; then the
    verdict the lesson asks about, in the words the counts allow: the vanilla RNN failed (and
    whether it diverged) while each gated cell solved, or not.

    >>> rs = [Run({"clip": "norm:1.0", "cell": "rnn", "seed": s}, norm_before=[0.5], clipped=[False], test_loss=[0.16]) for s in (0, 1)]
    >>> rs += [Run({"clip": "norm:1.0", "cell": "lstm", "seed": s}, norm_before=[2.0], clipped=[True], test_loss=[0.001]) for s in (0, 1)]
    >>> print("\\n".join(long_findings(rs, 0.04)))
    RNN, norm clipping, c=1: solved 0 of 2 seeds, 0 diverged; clipping acted on 0.0% of the steps (at most, over the seeds); largest ||g|| 0.5.
    LSTM, norm clipping, c=1: solved 2 of 2 seeds, 0 diverged; clipping acted on 100.0% of the steps (at most, over the seeds); largest ||g|| 2.
    Verdict: with the same clipping the vanilla RNN failed in 2 of 2 seeds without diverging, while the LSTM solved 2 of 2.
    """
    from gradkit.plots import spec_label

    rows, out = {}, []
    for cell in dict.fromkeys(r.config["cell"] for r in runs):
        group = [r for r in runs if r.config["cell"] == cell]
        [rows[cell]] = seed_table(group, target)
        row = rows[cell]
        out.append(f"{cell.upper()}, {spec_label(row.spec)}: solved {row.solved} of {row.seeds} seeds, {row.diverged} "
                   f"diverged; clipping acted on {100 * row.max_clip_share:.1f}% of the steps (at most, over the seeds); "
                   f"largest ||g|| {max(max(r.norm_before, default=math.nan) for r in group):.3g}.")
    rnn = rows.get("rnn")
    gated = {cell: row for cell, row in rows.items() if cell != "rnn"}
    if rnn is None or not gated:
        return out
    how = "without diverging" if rnn.diverged == 0 else f"({rnn.diverged} of them diverged)"
    rnn_text = (f"the vanilla RNN failed in {rnn.failed} of {rnn.seeds} seeds {how}" if rnn.failed
                else f"the vanilla RNN solved {rnn.solved} of {rnn.seeds} seeds too")
    gated_text = " and ".join(f"the {cell.upper()} solved {row.solved} of {row.seeds}" for cell, row in gated.items())
    joint = "while" if rnn.failed and all(row.solved == row.seeds for row in gated.values()) else "and"
    out.append(f"Verdict: with the same clipping {rnn_text}, {joint} {gated_text}.")
    return out


def profile_findings(runs: Sequence[Run]) -> list[str]:
    """Sentences computed from the runs' recorded ``grad_profile``: per cell, the median over seeds
    of ``||dL/dh_1|| / ||dL/dh_T||`` at the first evaluation (initialisation) and at the last (after
    training), and the factor per time step it amounts to after training (:func:`geometric_rate`).

    >>> rs = [Run({"clip": "norm:1.0", "cell": "rnn", "seed": 0}, grad_profile=[[0.01, 0.1, 1.0], [0.04, 0.2, 1.0]])]
    >>> profile_findings(rs)
    ['RNN (1 seed): ||dL/dh_1|| / ||dL/dh_T|| = 0.01 at initialisation, 0.04 after training: a factor 0.2 per time step back from the last.']
    """
    out = []
    for cell in dict.fromkeys(r.config["cell"] for r in runs if r.grad_profile):
        group = [np.asarray(r.grad_profile, dtype=float) for r in runs if r.config["cell"] == cell and r.grad_profile]
        first = float(np.median([g[0, 0] / g[0, -1] for g in group]))
        last = float(np.median([g[-1, 0] / g[-1, -1] for g in group]))
        rate = float(np.median([geometric_rate(g[-1]) for g in group]))
        n = len(group)
        out.append(f"{cell.upper()} ({n} seed{'s' if n > 1 else ''}): ||dL/dh_1|| / ||dL/dh_T|| = {first:.2g} at "
                   f"initialisation, {last:.2g} after training: a factor {rate:.2g} per time step back from the last.")
    return out


def config_differences(run: Run, other: Run) -> dict[str, tuple[Any, Any]]:
    """The settings in which two runs differ: ``{key: (run's, other's)}`` over both configs (the
    clipping spec and the seed included); empty when they are the same setting and seed.

    >>> config_differences(Run({"clip": "none", "seed": 0, "steps": 80}), Run({"clip": "none", "seed": 0, "steps": 4000}))
    {'steps': (80, 4000)}
    """
    keys = list(dict.fromkeys([*run.config, *other.config]))
    return {k: (run.config.get(k), other.config.get(k)) for k in keys if run.config.get(k) != other.config.get(k)}


def repeat_note(run: Run, others: Sequence[tuple[str, Run]], target: float) -> str:
    """Compare ``run`` with other runs (``(name, run)`` pairs), like with like only: a run of the
    same settings and seed (same start, same batches, as many steps) is compared outcome for
    outcome; a run that differs in any setting is named with what differs and not compared.

    Runs of one setting and seed are computed alike bit for bit on one machine and torch version
    (:func:`run_stack`), so a like run with another outcome was made elsewhere (another CPU or
    torch version rounds the last digits differently), and a run at the edge of stability can end
    either way on that alone.

    >>> a = Run(config={"clip": "none", "seed": 0, "steps": 4000}, test_loss=[0.01])
    >>> b = Run(config={"clip": "none", "seed": 0, "steps": 4000}, test_loss=[0.16])
    >>> repeat_note(a, [("the shipped run", a)], 0.04)
    'The shipped run: solved (final test loss 0.0100), the same outcome as this run.'
    >>> repeat_note(a, [("the shipped run", b)], 0.04).startswith("The shipped run: not solved (final test loss 0.1600), unlike this run. Same settings")
    True
    >>> short = Run(config={"clip": "none", "seed": 0, "steps": 80}, test_loss=[0.15])
    >>> repeat_note(short, [("the shipped run", a)], 0.04)
    'The shipped run: solved (final test loss 0.0100); not compared with this run, which differs in steps (80 here, 4000 there).'
    """
    lines, differ = [], False
    for name, other in others:
        head = f"{name[:1].upper()}{name[1:]}: {outcome(other, target)}"
        diffs = config_differences(run, other)
        if diffs:
            what = ", ".join(f"{k} ({a} here, {b} there)" for k, (a, b) in diffs.items())
            lines.append(f"{head}; not compared with this run, which differs in {what}.")
            continue
        same = (other.diverged, other.diverged_step, other.solved(target)) == (run.diverged, run.diverged_step, run.solved(target))
        differ |= not same
        lines.append(f"{head}, {'the same outcome as' if same else 'unlike'} this run.")
    text = " ".join(lines)
    if differ:
        text += (" Same settings, same seed, same start and batches, a different outcome: on one machine and torch "
                 "version such runs agree bit for bit, so one of them was made elsewhere, where the last digits "
                 "round differently, and a run at the edge of stability can end either way on that alone. One run "
                 "is an anecdote; the table of section 2 counts seeds.")
    return text


def save_runs(path: str | Path, runs: Sequence[Run], provenance: dict[str, Any],
              series: Sequence[str] | Callable[[Run], Sequence[str]] = SERIES) -> Path:
    """Write ``{"provenance": ..., "runs": [...]}`` as JSON, atomically (temporary file + ``os.replace``);
    ``series``: the per-step series each run keeps (:meth:`Run.to_dict`), or a function of the run."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    pick = series if callable(series) else (lambda _run: series)
    tmp.write_text(json.dumps({"provenance": provenance, "runs": [r.to_dict(series=pick(r)) for r in runs]}, indent=None))
    os.replace(tmp, path)
    return path


def load_runs(path: str | Path) -> tuple[list[Run], dict[str, Any]]:
    """The runs and the provenance written by :func:`save_runs`."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path={str(path)!r} is not a file of saved runs (make it with bench/make_lesson08_runs.py)")
    data = json.loads(path.read_text())
    return [Run.from_dict(d) for d in data["runs"]], data["provenance"]
