"""Watch the gradients while a model trains, without slowing the training loop down.

:class:`GradMonitor` records, for every optimisation step, the total gradient norm before and
after clipping and whether clipping acted; every ``every``-th step it also records, for each
named parameter ("layer"), the gradient norm ||g|| (before clipping), the weight norm ||w||
and the update-to-weight ratio ||w_after - w_before|| / ||w_before|| (for plain SGD that is
||lr * g|| / ||w||). Everything stays on the device until :attr:`GradMonitor.history` is read,
so the GPU never waits for the host in the loop.

Typical use::

    with GradMonitor(model).attach(optimizer) as mon:
        for x, y in loader:
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            mon.clip(clip)          # clip = clipper("norm:1.0"), built once
            optimizer.step()
    h = mon.history                 # numpy arrays, ready for plotting

>>> model = torch.nn.Linear(2, 1, bias=False)
>>> with torch.no_grad():
...     _ = model.weight.copy_(torch.tensor([[3.0, 4.0]]))
>>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
>>> with GradMonitor(model).attach(opt) as mon:
...     model.weight.grad = torch.tensor([[0.0, 10.0]])
...     _ = mon.clip("norm:1.0")
...     opt.step()
>>> h = mon.history  # ||g|| = 10 clipped to 1; the update is 0.1 * 1 on a weight of norm 5
>>> h.norm_before, h.norm_after.round(4), h.clipped, h.update_ratio.round(4)
(array([10.]), array([1.]), array([ True]), array([[0.02]]))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import Tensor, nn

from gradkit.checks import check_int
from gradkit.clip import ClipResult, Clipper, clipper, grad_norm
from gradkit.foreach import DeviceBuffer, tensor_norms


@dataclass
class MonitorHistory:
    """What a :class:`GradMonitor` recorded, as numpy arrays (S steps, S_k layer steps, L layers).

    ``steps`` (S,), ``norm_before`` (S,), ``norm_after`` (S,), ``clipped`` (S,) bool: one entry per
    optimisation step. ``layer_names`` (L names), ``layer_steps`` (S_k,), ``layer_grad_norm``
    (S_k, L) before clipping, ``weight_norm`` (S_k, L) before the step and ``update_ratio``
    (S_k, L) = ||w_after - w_before|| / ||w_before||: every ``every``-th step. A layer without a
    gradient at that step has a nan gradient norm; without an attached optimizer the update
    ratio is nan.
    """

    steps: np.ndarray
    norm_before: np.ndarray
    norm_after: np.ndarray
    clipped: np.ndarray
    layer_names: list[str]
    layer_steps: np.ndarray
    layer_grad_norm: np.ndarray
    weight_norm: np.ndarray
    update_ratio: np.ndarray


class GradMonitor:
    """Record gradient and update statistics of ``model`` per optimisation step (see the module).

    ``every`` = k records the per-layer statistics on steps 0, k, 2k, ... (0: global norms only).
    ``attach(optimizer)`` adds step hooks that measure the update; without it, call
    :meth:`clip` (or :meth:`before_clip` / :meth:`after_clip`) once per step. With an attached
    optimizer and no clip call, the step is recorded as unclipped. As a context manager it
    detaches its hooks on exit. Attach one optimizer: each of its steps closes a monitor step.
    Attaching the same optimizer again changes nothing; attaching another one while attached
    raises ``ValueError`` (call :meth:`detach` first).
    """

    def __init__(self, model: nn.Module, every: int = 1) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
        every = check_int("every", every, minimum=0)  # 1: layer statistics every step, 0: never
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.model = model
        self.every = every
        self.layer_names = [n for n, _ in named]
        self._params = [p for _, p in named]
        self._hooks: list[Any] = []
        self._optimizer: Optional[torch.optim.Optimizer] = None
        self._clippers: dict[Union[str, float, None], Clipper] = {}
        self._snapshot: Optional[list[Tensor]] = None
        self.reset()

    def reset(self) -> None:
        """Forget everything recorded; hooks stay attached."""
        self._step = 0
        self._in_step = False
        self._have_norms = False
        self._layer_step = False
        self._layer_row: Optional[tuple[Tensor, Tensor]] = None
        self._update_row: Optional[Tensor] = None
        self._steps: list[int] = []
        self._layer_steps: list[int] = []
        # One row per step (norm before, norm after, clipped) and one (3, L) block per layer step
        # (gradient, weight and update norms): one kernel each to record, one transfer to read.
        self._per_step = DeviceBuffer()
        self._per_layer = DeviceBuffer()

    def attach(self, optimizer: torch.optim.Optimizer) -> "GradMonitor":
        """Hook ``optimizer.step`` to measure each update; returns the monitor (for ``with``)."""
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if self._optimizer is optimizer:
            return self  # hooking it twice would record every step twice
        if self._optimizer is not None:
            raise ValueError(
                f"this GradMonitor is already attached to a {type(self._optimizer).__name__}; each optimizer "
                "step closes one monitor step, so it watches one optimizer: call detach() first"
            )
        self._hooks = [optimizer.register_step_pre_hook(self._pre_step), optimizer.register_step_post_hook(self._post_step)]
        self._optimizer = optimizer
        return self

    def detach(self) -> None:
        """Remove the optimizer hooks."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        self._optimizer = None

    def __enter__(self) -> "GradMonitor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def clip(self, spec: Union[str, float, None, Clipper] = "none") -> ClipResult:
        """``before_clip()``, clip the model's gradients with ``clipper(spec)``, ``after_clip()``.

        A spec string is turned into a :class:`Clipper` once and reused, so ``"auto:10"`` keeps
        its history across steps.
        """
        if isinstance(spec, Clipper):
            fn = spec
        else:
            if spec not in self._clippers:
                self._clippers[spec] = clipper(spec)
            fn = self._clippers[spec]
        self.before_clip()
        result = fn(self.model)
        self.after_clip(result)
        return result

    @torch.no_grad()
    def before_clip(self) -> None:
        """Start a step and, on a layer step, record the per-layer norms of the unclipped gradients."""
        if self._in_step and self._have_norms:
            # The last step never reached optimizer.step (e.g. skipped by a GradScaler).
            self._end()
        self._begin()
        self._record_layers()

    def after_clip(self, result: ClipResult) -> None:
        """Record the global norms of ``result``; without an attached optimizer this ends the step."""
        self._record_norms(result.norm_before, result.norm_after, result.clipped)
        if not self._hooks:
            self._end()

    @property
    def history(self) -> MonitorHistory:
        """The completed steps as numpy arrays (this read is the only host sync)."""
        layers = len(self.layer_names)
        # float64 on the host whatever the gradients' dtype (numpy has no bfloat16).
        per_step = self._per_step.values().double().cpu().numpy().T if self._steps else np.zeros((3, 0))
        rows = self._per_layer.values().double().cpu().numpy().transpose(1, 0, 2) if self._layer_steps else np.zeros((3, 0, layers))
        return MonitorHistory(
            steps=np.asarray(self._steps, dtype=np.int64),
            norm_before=per_step[0],
            norm_after=per_step[1],
            clipped=per_step[2] > 0,
            layer_names=list(self.layer_names),
            layer_steps=np.asarray(self._layer_steps, dtype=np.int64),
            layer_grad_norm=rows[0],
            weight_norm=rows[1],
            update_ratio=rows[2],
        )

    def _begin(self) -> None:
        if self._in_step:
            return
        self._in_step = True
        self._have_norms = False
        self._layer_step = self.every > 0 and self._step % self.every == 0
        self._layer_row = None
        self._update_row = None

    def _record_layers(self) -> None:
        if not self._layer_step or self._layer_row is not None or not self._params:
            return
        device = self._params[0].device
        present = [p.grad for p in self._params if p.grad is not None]
        if len(present) == len(self._params):
            grad_row = tensor_norms(present, 2.0, device)
        else:
            norms = iter(tensor_norms(present, 2.0, device).unbind())
            missing = torch.full((), math.nan, device=device)
            grad_row = torch.stack([next(norms) if p.grad is not None else missing for p in self._params])
        weight_row = tensor_norms([p.detach() for p in self._params], 2.0, device)
        self._layer_row = (grad_row, weight_row)

    def _record_norms(self, before: Tensor, after: Tensor, clipped: Tensor) -> None:
        self._per_step.append(before, after, clipped)
        self._have_norms = True

    @torch.no_grad()
    def _pre_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._begin()
        if not self._have_norms:
            self._record_layers()
            norm = grad_norm(self._params)
            self._record_norms(norm, norm, torch.zeros((), dtype=torch.bool, device=norm.device))
        if self._layer_step and self._params:
            weights = [p.detach() for p in self._params]
            if self._snapshot is None:
                self._snapshot = [w.clone() for w in weights]
            else:
                torch._foreach_copy_(self._snapshot, weights)

    @torch.no_grad()
    def _post_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self._layer_step and self._layer_row is not None and self._snapshot is not None:
            # snapshot <- w_before - w_after in place: no new buffers each step.
            torch._foreach_sub_(self._snapshot, [p.detach() for p in self._params])
            weight_row = self._layer_row[1]
            self._update_row = tensor_norms(self._snapshot, 2.0, weight_row.device) / weight_row
        self._end()

    def _end(self) -> None:
        if self._layer_step and self._layer_row is not None:
            grad_row, weight_row = self._layer_row
            update_row = self._update_row if self._update_row is not None else torch.full_like(weight_row, math.nan)
            self._per_layer.append(grad_row, weight_row, update_row)
            self._layer_steps.append(self._step)
        if self._have_norms:
            self._steps.append(self._step)
        self._in_step = False
        self._have_norms = False
        self._step += 1



# ---- dead ReLU units ----------------------------------------------------------------------------
# A ReLU unit whose pre-activation is negative for every input outputs 0 and passes no gradient
# back: its weights stop changing. One huge step can push many units there at once (lesson 04's
# setting C); these functions count them.


def dead_unit_share(activation: Tensor) -> Tensor:
    """Share of dead units in one ReLU output ``a`` of a batch, as a 0-d tensor on ``a``'s device.

    Unit ``j`` is the feature ``a[:, j]`` of a ``(B, F)`` output, or the channel ``a[:, j, :, :]`` of a
    ``(B, C, H, W)`` output. It is dead on the batch when it is 0 for every input and position:
    ``dead_j = [max_{b, h, w} |a[b, j, h, w]| == 0]``, and the share is ``(1 / J) * sum_j dead_j``.

    >>> a = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 2.0]])  # unit 0 is 0 for both inputs
    >>> float(dead_unit_share(a))
    0.3333333432674408
    """
    if not isinstance(activation, Tensor) or activation.dim() < 2 or activation.shape[1] == 0:
        raise ValueError("activation must be a tensor of shape (batch, units, ...) with at least one unit, got "
                         + (f"shape {tuple(activation.shape)}" if isinstance(activation, Tensor) else type(activation).__name__))
    a = activation.detach()
    peak = a.abs().transpose(0, 1).reshape(a.shape[1], -1).amax(dim=1)
    return (peak == 0).float().mean()


def _relus(model: nn.Module) -> list[tuple[str, nn.Module]]:
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ReLU)]
    if not found:
        raise ValueError(f"model ({type(model).__name__}) has no nn.ReLU modules to watch; dead units are counted "
                         "on the outputs of nn.ReLU modules (a model calling F.relu has none)")
    return found


@torch.no_grad()
def dead_units(model: nn.Module, x: Tensor) -> dict[str, float]:
    """``{name: share}``: :func:`dead_unit_share` of every ``nn.ReLU`` module of ``model`` on the batch ``x``
    (one forward pass without gradients, in the model's current train/eval mode).

    >>> relu_net = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    >>> with torch.no_grad():
    ...     _ = relu_net[0].weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    ...     _ = relu_net[0].bias.zero_()
    >>> dead_units(relu_net, torch.tensor([[1.0, 0.0], [2.0, 0.0]]))  # unit 1 outputs -x0 < 0: dead
    {'1': 0.5}
    """
    if not isinstance(x, Tensor):
        raise ValueError(f"x must be a batch tensor, got {type(x).__name__}")
    shares: dict[str, Tensor] = {}
    hooks = [m.register_forward_hook(lambda _m, _i, out, name=name: shares.__setitem__(name, dead_unit_share(out)))
             for name, m in _relus(model)]
    try:
        model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return {name: float(v) for name, v in shares.items()}


@torch.no_grad()
def dead_relu_share(model: nn.Module, x: Tensor) -> float:
    """Share of dead units pooled over every ``nn.ReLU`` module of ``model`` on the batch ``x``
    (one forward pass in eval mode; the mode is restored):

        share = sum over ReLUs of #dead units / sum over ReLUs of #units

    with "dead" as in :func:`dead_unit_share` (0 for every image and position, so no gradient flows).

    >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    >>> _ = net[0].weight.data.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])); _ = net[0].bias.data.zero_()
    >>> dead_relu_share(net, torch.tensor([[1.0, 0.0], [2.0, 0.0]]))  # unit 1 outputs -x0 < 0 on both
    0.5
    """
    counts: list[tuple[Tensor, int]] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: counts.append((dead_unit_share(out) * out.shape[1], out.shape[1])))
             for _name, m in _relus(model)]
    was_training = model.training
    try:
        model.eval()
        model(x)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return float(sum(d for d, _ in counts)) / sum(n for _, n in counts)


@dataclass
class DeadUnitHistory:
    """What a :class:`DeadUnitMonitor` recorded: ``steps`` (S,) the training steps measured,
    ``layer_names`` (L names of ``nn.ReLU`` modules) and ``share`` (S, L), the share of dead units
    of each ReLU on that step's training batch."""

    steps: np.ndarray
    layer_names: list[str]
    share: np.ndarray


class DeadUnitMonitor:
    """Count dead ReLU units (:func:`dead_unit_share`) on the training batches while ``model`` trains.

    Forward hooks on every ``nn.ReLU`` module measure each ``every``-th forward pass of ``model`` made
    in train mode (evaluation passes, in eval mode, are not counted), on the batch being trained on;
    the shares stay on the device until :attr:`history` is read. Use it as a context manager around
    any training loop, e.g. :func:`gradkit.train.fit` with the model passed as a module.

    >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    >>> with DeadUnitMonitor(net, every=2) as dead:
    ...     for _ in range(3):
    ...         _ = net(torch.randn(4, 2))
    >>> dead.history.steps.tolist(), dead.history.layer_names, dead.history.share.shape
    ([0, 2], ['1'], (2, 1))
    """

    def __init__(self, model: nn.Module, every: int = 1) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
        every = check_int("every", every)  # 1: every training step
        relus = _relus(model)
        self.every = every
        self.layer_names = [name for name, _ in relus]
        self._forwards = 0
        self._measure = False
        self._steps: list[int] = []
        self._rows: list[dict[str, Tensor]] = []
        self._hooks = [model.register_forward_pre_hook(self._start)]
        self._hooks += [m.register_forward_hook(self._record(name)) for name, m in relus]

    def _start(self, model: nn.Module, _inputs: Any) -> None:
        self._measure = model.training and self._forwards % self.every == 0
        if model.training:
            if self._measure:
                self._steps.append(self._forwards)
                self._rows.append({})
            self._forwards += 1

    def _record(self, name: str) -> Any:
        def hook(_module: nn.Module, _inputs: Any, out: Tensor) -> None:
            if self._measure:
                self._rows[-1][name] = dead_unit_share(out)
        return hook

    def detach(self) -> None:
        """Remove the forward hooks."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def __enter__(self) -> "DeadUnitMonitor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    @property
    def history(self) -> DeadUnitHistory:
        """The measured steps as numpy arrays (this read is the only host sync)."""
        done = [(s, r) for s, r in zip(self._steps, self._rows) if len(r) == len(self.layer_names)]
        share = (torch.stack([torch.stack([r[n] for n in self.layer_names]) for _, r in done]).cpu().numpy()
                 if done else np.zeros((0, len(self.layer_names))))
        return DeadUnitHistory(steps=np.asarray([s for s, _ in done], dtype=np.int64),
                               layer_names=list(self.layer_names), share=share)
