"""Remedies that act on the weights, not the gradients: weight clipping and a max-norm constraint.

Gradient clipping bounds the size of one *update*; these bound the *weights themselves*, after
every optimizer step. Lesson 06 puts them side by side with clipping.

- :func:`clip_weights_`: w <- clamp(w, -c, c), element by element (as in the WGAN critic).
- :func:`max_norm_`: w_j <- w_j / max(1, ||w_j||_2 / c) for each output unit j (Srebro et al.
  2005; Hinton et al. 2012 and Srivastava et al. 2014 used it with dropout).
- :func:`constraint`: ``"weight_clip:c"`` or ``"max_norm:c"`` -> a callable applied to the model
  after each optimizer step (``gradkit.train.fit(..., constraint="max_norm:3")``).
- :func:`remedy_table`, :func:`remedy_findings`: lesson 06's table of runs and the sentences
  computed from it.

>>> w = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
>>> _ = max_norm_(w, 1.0)  # row norms 5 and 0.5: the first row is scaled by 1/5
>>> w
tensor([[0.6000, 0.8000],
        [0.3000, 0.4000]])
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence, Union

import torch
from torch import Tensor, nn

from .checks import CHANCE, check_positive

Params = Union[nn.Module, Tensor, Iterable[Tensor], Iterable[tuple[str, Tensor]]]

CONSTRAINT_SPECS = ("weight_clip:<c>", "max_norm:<c>")
UNIT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _tensors(params: Params) -> list[Tensor]:
    """Every tensor in ``params`` (a module, a tensor, tensors, or ``(name, tensor)`` pairs)."""
    if isinstance(params, nn.Module):
        return list(params.parameters())
    if isinstance(params, Tensor):
        return [params]
    out = []
    for item in params:
        tensor = item[1] if isinstance(item, tuple) else item
        if not isinstance(tensor, Tensor):
            raise ValueError(f"params must hold tensors or (name, tensor) pairs, got an item of type {type(tensor).__name__}")
        out.append(tensor)
    return out


def _device(tensors: list[Tensor]) -> torch.device:
    # Counters live with the weights so that no step waits for the host.
    return tensors[0].device if tensors else torch.device("cpu")


@torch.no_grad()
def clip_weights_(params: Params, c: float) -> Tensor:
    """Clamp every weight into [-c, c] in place: w <- min(max(w, -c), c). Returns the share of
    elements that changed (a 0-d tensor).

    For a module, every parameter is clamped, biases and normalisation scales included (the
    WGAN recipe); pass a list of tensors to clamp only some. Unlike gradient clipping this
    bounds the weights whatever the gradients were, and it changes the function the model
    computes.

    >>> w = torch.tensor([0.5, -2.0, 3.0, 0.0])
    >>> clip_weights_(w, 1.0), w
    (tensor(0.5000), tensor([ 0.5000, -1.0000,  1.0000,  0.0000]))
    """
    c = check_positive("c", c)
    tensors = _tensors(params)
    changed = torch.zeros((), dtype=torch.float64, device=_device(tensors))
    total = 0
    for w in tensors:
        outside = w.abs() > c
        changed = changed + outside.sum().to(changed.device, torch.float64)
        total += w.numel()
        w.clamp_(-c, c)
    return (changed / max(total, 1)).float()


def _unit_norms(w: Tensor, dim: int | None) -> Tensor:
    """L2 norm of each slice ``w.select(dim, j)`` shaped to broadcast against ``w``."""
    if dim is None:
        return w.norm()
    others = [d for d in range(w.dim()) if d != dim % w.dim()]
    if not others:
        return w.abs()
    return torch.linalg.vector_norm(w, ord=2, dim=others, keepdim=True)


@torch.no_grad()
def max_norm_(params: Params, c: float, dim: int | None = 0) -> Tensor:
    """Rescale each unit's weight vector in place so that its L2 norm is at most ``c``:
    w_j <- w_j / max(1, ||w_j||_2 / c). Returns the share of units that were rescaled (0-d).

    A *unit* is a slice along ``dim``: with the default ``dim=0`` that is one output unit of an
    ``nn.Linear`` (a row of its ``(out, in)`` weight: the incoming weights of one neuron) or one
    output channel of a conv (its ``(in, kh, kw)`` filter), as in Srebro et al. (2005) and
    Hinton et al. (2012). ``dim=None`` takes the norm of the whole tensor. Same result as
    ``torch.renorm(w, 2, dim, c)`` up to its 1e-7 guard.

    For a module, only the weights of Linear and Conv layers are constrained (biases and
    normalisation parameters are left alone); pass tensors to choose yourself.

    >>> w = torch.tensor([[6.0, 8.0], [0.6, 0.8]])  # row norms 10 and 1
    >>> max_norm_(w, 2.0), w
    (tensor(0.5000), tensor([[1.2000, 1.6000],
            [0.6000, 0.8000]]))
    """
    c = check_positive("c", c)
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int)):
        raise ValueError(f"dim must be an int (the dimension that indexes units, 0 for output units) or None, got {dim!r}")
    if isinstance(params, nn.Module):
        tensors = [m.weight for m in params.modules() if isinstance(m, UNIT_LAYERS)]
    else:
        tensors = _tensors(params)
    rescaled = torch.zeros((), dtype=torch.float64, device=_device(tensors))
    units = 0
    for w in tensors:
        if dim is not None and not -w.dim() <= dim < w.dim():
            raise ValueError(f"dim={dim} is out of range for a weight of shape {tuple(w.shape)}")
        norms = _unit_norms(w, dim)
        scale = (norms / c).clamp(min=1.0)
        rescaled = rescaled + (scale > 1).sum().to(rescaled.device, torch.float64)
        units += norms.numel()
        w.div_(scale)
    return (rescaled / max(units, 1)).float()


class Constraint:
    """A weight constraint applied after each optimizer step: ``constraint(model)`` returns the
    share of weights (``weight_clip``) or units (``max_norm``) it changed.

    Attributes: ``spec`` (canonical string), ``method`` (``"weight_clip"`` or ``"max_norm"``),
    ``threshold`` (c), ``label`` (text for tables and legends).
    """

    def __init__(self, method: str, threshold: float) -> None:
        self.method, self.threshold = method, threshold
        self.spec = f"{method}:{threshold:g}"
        self.label = {"weight_clip": "weight clipping", "max_norm": "max-norm constraint"}[method] + f", c={threshold:g}"

    def __call__(self, model: Params) -> Tensor:
        if self.method == "weight_clip":
            return clip_weights_(model, self.threshold)
        return max_norm_(model, self.threshold)

    def __repr__(self) -> str:
        return f"constraint({self.spec!r})"


def constraint(spec: str | Constraint) -> Constraint:
    """Parse a constraint spec: ``"weight_clip:c"`` (clamp every weight into [-c, c]) or
    ``"max_norm:c"`` (each output unit's incoming weight vector to L2 norm <= c); c > 0.

    >>> constraint("max_norm:3").label
    'max-norm constraint, c=3'
    """
    if isinstance(spec, Constraint):
        return spec
    accepted = f"accepted specs: {', '.join(CONSTRAINT_SPECS)} with c a number > 0, e.g. 'max_norm:3'"
    if not isinstance(spec, str):
        raise ValueError(f"constraint spec must be a string, got {spec!r}; {accepted}")
    method, sep, value = spec.partition(":")
    if method not in ("weight_clip", "max_norm") or not sep:
        raise ValueError(f"constraint spec {spec!r} is not a constraint; {accepted}")
    try:
        threshold = float(value)
    except ValueError:
        threshold = float("nan")
    if not (math.isfinite(threshold) and threshold > 0):
        raise ValueError(f"constraint spec {spec!r}: the threshold after ':' must be a finite number > 0; {accepted}")
    return Constraint(method, threshold)


def _acc(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _check_val(labels: Sequence[str], histories: Sequence[Any]) -> None:
    missing = [k for k, h in zip(labels, histories) if not h.diverged and not h.val_acc]
    if missing:
        raise ValueError(f"runs without validation accuracy: {', '.join(missing)}; train on data with a validation "
                         "split (gradkit.data.cifar10(val=...)) so that runs are compared on it, not on the test set")


def remedy_table(labels: Sequence[str], histories: Sequence[Any], dead: Sequence[float | None] | None = None) -> str:
    """A markdown table of training runs, one row per ``(label, History)``: diverged (at which
    step), final and best validation accuracy, the largest gradient norm before clipping, the
    largest step actually taken max_t ||w_t+1 - w_t|| (``History.step_norm``), the share of steps
    clipped and optionally the share of dead ReLU units after training (``dead``, one value or None
    per run). Test accuracy is not in the table: runs are compared on validation. Training time is
    not either: on a shared machine it measured the other jobs' load, not a cost of the method (lesson
    06's cpu run of commit 0c109ae had Adam at 25 s and Adam with clipping at 107 s, cosine at 14 s and
    step decay at 115 s, for the same steps).

    >>> from gradkit.train import History
    >>> h = History(config={"clip": "none"}, loss=[2.3, 2.1], grad_norm_before=[1.0, 3.0], clipped=[False, False],
    ...             step_norm=[0.5, 0.25], val_acc=[0.25], epoch_seconds=[1.5])
    >>> print(remedy_table(["baseline"], [h]).splitlines()[2])
    | baseline | no | 25.0% | 25.0% | 3 | 0.5 | 0% |
    """
    if len(labels) != len(histories):
        raise ValueError(f"labels and histories must have the same length, got {len(labels)} and {len(histories)}")
    if dead is not None and len(dead) != len(labels):
        raise ValueError(f"dead must have one value (or None) per run, got {len(dead)} for {len(labels)} runs")
    _check_val(labels, histories)
    head = "| run | diverged | final val acc | best val acc | largest ‖g‖ | largest step ‖Δw‖ | steps clipped |"
    head += " dead ReLU units |" if dead is not None else ""
    rows = [head, "|---" * (head.count("|") - 1) + "|"]
    for i, (label, h) in enumerate(zip(labels, histories)):
        norms = [v for v in h.grad_norm_before if math.isfinite(v)]
        peak = f"{max(norms):.3g}" if norms else "-"
        steps = [v for v in h.step_norm if math.isfinite(v)]
        step = f"{max(steps):.3g}" if steps else "-"
        clipped = f"{100 * h.clip_rate:.0f}%" if h.clipped else "-"
        diverged = f"yes, step {h.diverged_step}" if h.diverged else "no"
        best = max(h.val_acc) if h.val_acc else None
        row = f"| {label} | {diverged} | {_acc(h.final_val_acc)} | {_acc(best)} | {peak} | {step} | {clipped} |"
        if dead is not None:
            row += f" {_acc(dead[i]) if dead[i] is not None else '-'} |"
        rows.append(row)
    return "\n".join(rows)


def remedy_findings(labels: Sequence[str], histories: Sequence[Any], baseline: str, margin: float = 0.02,
                    min_steps: int = 100, pairs: Sequence[tuple[str, str]] = ()) -> str:
    """Sentences computed from the runs, on validation accuracy. A run *failed* if it diverged,
    or if it trained at least ``min_steps`` steps and its final validation accuracy is within
    ``margin`` (2 points) of chance (10%): stuck, e.g. dead ReLUs after a too large step. A
    shorter run near chance may simply not have had time, so it is not called stuck. Says which
    runs failed, which trained where ``baseline`` (a label) failed, and the run with the best
    final validation accuracy, with its test accuracy (the only test number: the chosen run's).
    ``pairs`` of labels ``(without, with)`` add a line with the change in final validation
    accuracy (points) that the second run's extra setting made.

    >>> from gradkit.train import History
    >>> a = History(diverged=True, diverged_step=40); b = History(val_acc=[0.3], test_acc=[0.28])
    >>> c = History(val_acc=[0.11], test_acc=[0.1]); c.loss = [2.3] * 200
    >>> print(remedy_findings(["plain", "clipped", "adam"], [a, b, c], baseline="plain"))
    Diverged: plain. Stuck at chance: adam (2 of 3 runs failed).
    Trained where plain failed: clipped.
    Best final validation accuracy: clipped, 30.0% (its test accuracy: 28.0%).
    """
    if len(labels) != len(histories):
        raise ValueError(f"labels and histories must have the same length, got {len(labels)} and {len(histories)}")
    if baseline not in labels:
        raise ValueError(f"baseline={baseline!r} is not one of the labels; accepted values: {', '.join(labels)}")
    for without, with_ in pairs:
        if without not in labels or with_ not in labels:
            raise ValueError(f"pairs must name labels; accepted values: {', '.join(labels)}")
    _check_val(labels, histories)
    runs = dict(zip(labels, histories))
    diverged = [k for k, h in runs.items() if h.diverged]
    near_chance = [k for k, h in runs.items() if not h.diverged and h.final_val_acc <= CHANCE + margin]
    stuck = [k for k in near_chance if len(runs[k].loss) >= min_steps]
    short = [k for k in near_chance if k not in stuck]
    failed = set(diverged) | set(stuck)
    first = (f"Diverged: {', '.join(diverged) or 'none'}. Stuck at chance: {', '.join(stuck) or 'none'} "
             f"({len(failed)} of {len(runs)} runs failed).")
    if short:
        first += f" Too short (< {min_steps} steps) to call stuck: {', '.join(short)}."
    lines = [first]
    if baseline in failed:
        rescued = [k for k in runs if k not in failed and k not in short]
        lines.append(f"Trained where {baseline} failed: {', '.join(rescued) or 'none'}.")
    elif baseline in short:
        lines.append(f"{baseline} was too short to judge: inconclusive at this size.")
    else:
        lines.append(f"{baseline} trained at this size, so no remedy was needed to keep it stable.")
    finished = [(h.final_val_acc, k) for k, h in runs.items() if h.final_val_acc is not None]
    if finished:
        acc, best = max(finished)
        lines.append(f"Best final validation accuracy: {best}, {_acc(acc)} (its test accuracy: "
                     f"{_acc(runs[best].final_test_acc)}).")
    effects = []
    for without, with_ in pairs:
        a, b = runs[without].final_val_acc, runs[with_].final_val_acc
        change = "diverged" if a is None or b is None else f"{100 * (b - a):+.1f} points"
        effects.append(f"{with_} vs {without}: {change}")
    if effects:
        lines.append("Change in final validation accuracy: " + "; ".join(effects) + ".")
    return "\n".join(lines)
