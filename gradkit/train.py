"""Train a CIFAR-10 model with gradient clipping and log every step: :func:`fit`.

The loop is built so that logging costs nothing on a GPU (:mod:`gradkit.loop` holds the parts
that :func:`fit` shares with :func:`gradkit.stacked.fit_stacked`: the device loader, the epoch
loop with its step records and divergence check, the evaluation). Sweeps of many runs, saved
one file per run, are in :mod:`gradkit.runs`.

>>> from gradkit.data import synthetic
>>> h = fit("seed_cnn", synthetic(n=256, n_test=128), epochs=1, model_kw={"width": 0.25}, progress=False)
>>> len(h.loss), h.synthetic
(2, True)
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import runtime
from .checks import check_bool, check_int
from .clip import Clipper, clipper
from .history import History
from .loop import (OPTIMIZERS, DeviceLoader, build_model, check_data, check_run, evaluate, evaluate_into, loaders,
                   make_optimizer, new_histories, progress_bar, run_config, run_epochs, train_epoch)

__all__ = ["fit", "History", "DeviceLoader", "evaluate", "OPTIMIZERS", "SCHEDULES"]

SCHEDULES = ("None", "cosine", "step:<every_epochs>:<gamma>", "warmup:<steps>", "warmup_cosine:<steps>",
             "plateau", "plateau:<patience>:<factor>")


def fit(model: nn.Module | str, data: Any, epochs: int = 1, optimizer: str = "sgd", lr: float = 0.01,
        momentum: float = 0.9, weight_decay: float = 0.0, clip: Any = None, schedule: str | None = None,
        amp: bool = False, batch_size: int = 128, seed: int = 0, device: str | torch.device = "auto",
        progress: bool | Callable[..., Any] = True, monitor_every: int = 0, augment: bool = True, max_steps: int | None = None,
        model_kw: dict[str, Any] | None = None, constraint: str | Callable[[nn.Module], Any] | None = None) -> History:
    """Train ``model`` on ``data`` (a :class:`gradkit.data.Dataset`) and return its :class:`History`.

    Each step: ``loss = cross_entropy(model(x), y)``; backward; ``clipper(clip)`` rescales the
    gradient (e.g. ``"norm:c"``: ``g <- g * min(1, c / ||g||)``) and reports the norm before and
    after; the optimizer steps; ``constraint`` (a callable ``f(model)`` or a spec for
    ``gradkit.remedies.constraint``) is applied to the weights; the scheduler steps.

    ``model``: an ``nn.Module`` (trained in place) or a name for :func:`gradkit.models.build_model`
    with ``model_kw``. ``seed`` seeds torch before the model is built and the batch order and
    augmentation; seeded runs repeat exactly on the same device. ``optimizer``: sgd (with
    ``momentum``), adam, adamw, rmsprop. ``clip=None`` (the default) does not clip: pass a spec
    such as ``"norm:1.0"`` to clip. ``schedule``: see :data:`SCHEDULES`; ``"plateau"`` multiplies
    the learning rate by 0.1 after 2 epochs without a lower validation loss (the training loss when
    ``data`` has no validation split; never the test loss) (set them with
    ``"plateau:<patience>:<factor>"``). Every epoch is evaluated on the validation split (when
    ``data`` has one: ``val_loss``, ``val_acc``) and on the test set (``test_loss``, ``test_acc``).
    Each step also records ``step_norm`` = ||w_after - w_before||_2 over all parameters: the size
    of the update actually taken. Clipping bounds the gradient's norm by ``c``, not the step: with
    SGD momentum m the step can reach about lr * c / (1 - m). ``amp``: bf16 autocast on the CPU, fp16 autocast with loss
    scaling on CUDA. ``monitor_every=k > 0`` records per-layer gradient norms and update/weight
    ratios every k steps. ``max_steps`` stops early (the epoch is still evaluated).
    A loss that becomes NaN or inf stops the run (see :class:`History`); it never raises.
    Progress bars are off when ``progress=False`` or in headless runs (reports, CI); a callable
    ``progress(total=, desc=)`` makes the bar instead (an object with tqdm's ``update``, ``set_postfix``, ``close``).

    >>> from gradkit.data import synthetic
    >>> h = fit("seed_cnn", synthetic(n=256, n_test=128), lr=1e6, clip=None, model_kw={"width": 0.25},
    ...         epochs=3, batch_size=32, progress=False)
    >>> h.diverged, len(h.loss) == h.diverged_step
    (True, True)
    """
    settings = dict(locals())
    clip_fn, constrain = check_fit(settings)
    check_data(data)
    config = run_config(**settings)
    config["clip"] = clip_fn.spec
    if constrain is not None:
        config["constraint"] = getattr(constrain, "spec", config["constraint"])

    dev = runtime.resolve_device(device)
    cuda = dev.type == "cuda"
    model = build_model(model, model_kw, seed, dev)
    train, test, val = loaders(data, batch_size, seed, dev, augment)
    total = len(train) * epochs if max_steps is None else min(len(train) * epochs, max_steps)
    opt = make_optimizer(optimizer, model.parameters(), lr, momentum, weight_decay, cuda)
    sched, plateau = _scheduler(schedule, opt, len(train), total)
    autocast = torch.autocast(dev.type, dtype=torch.float16 if cuda else torch.bfloat16, enabled=amp)
    scaler = torch.amp.GradScaler("cuda") if amp and cuda else None

    hist, = new_histories([config], data, dev, len(train))
    monitor = None
    if monitor_every:
        from .monitor import GradMonitor

        monitor = GradMonitor(model, every=monitor_every)
        monitor.attach(opt)
    stepper = _Stepper(model, opt, clip_fn, autocast, scaler, monitor, constrain, sched)

    def evaluate_epoch(live: list[int]) -> None:
        model.eval()
        evaluate_into([hist], live, model, test, val, amp)
        model.train()
        if plateau is not None:
            plateau.step(hist.val_loss[-1] if val is not None else hist.train_loss[-1])

    bar = progress_bar(progress, total, hist.label)
    try:
        run_epochs([hist], epochs, total, len(train), lambda n, step: train_epoch(stepper, opt, train, n, [hist], step, bar),
                   evaluate_epoch, bar)
        return hist
    finally:
        if monitor is not None:
            _record_layers(hist, monitor)


def check_fit(settings: dict[str, Any]) -> tuple[Clipper, Callable[[nn.Module], Any] | None]:
    """Every check :func:`fit` makes of its keyword arguments ``settings`` (``data`` and ``device``
    aside), before any work: those of :func:`gradkit.loop.check_run`, then ``monitor_every`` (an
    int >= 0), ``amp`` (a bool), ``clip`` (:func:`gradkit.clip.clipper`), ``schedule`` (see
    :data:`SCHEDULES`) and ``constraint``. Returns the clipper and the constraint (or None).

    >>> import inspect
    >>> defaults = {k: p.default for k, p in inspect.signature(fit).parameters.items() if k not in ("model", "data")}
    >>> check_fit({**defaults, "model": "seed_cnn", "clip": "norm:1"})[0].spec
    'norm:1.0'
    """
    check_run(settings)
    check_int("monitor_every", settings["monitor_every"], minimum=0)
    check_bool("amp", settings["amp"])
    clip_fn = clipper(settings["clip"])
    _parse_schedule(settings["schedule"])
    return clip_fn, _constraint(settings["constraint"])


class _Stepper:
    """One optimisation step: forward, backward, clip, optimizer step, constraint, scheduler step."""

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer, clip_fn: Callable, autocast: Any,
                 scaler: Any, monitor: Any, constrain: Callable | None, sched: Any) -> None:
        self.model, self.opt, self.clip_fn, self.autocast = model, opt, clip_fn, autocast
        self.scaler, self.monitor, self.constrain, self.sched = scaler, monitor, constrain, sched
        self.params = [p for p in model.parameters() if p.requires_grad]

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """One step on ``(x, y)``; returns, left on the device, the step's records (loss, norm before,
        norm after, clipped, step norm ||w_after - w_before||) and the number of correct predictions
        (the step function of :func:`gradkit.loop.train_epoch`)."""
        with self.autocast:
            logits = self.model(x)
            loss = F.cross_entropy(logits, y)
        self.opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            # Gradients must be unscaled before clipping, or the threshold would be compared with
            # the norm of the loss-scaled gradient (2^16 times too large at the start).
            self.scaler.unscale_(self.opt)
        else:
            loss.backward()
        res = self.monitor.clip(self.clip_fn) if self.monitor is not None else self.clip_fn(self.model)
        before = [p.detach().clone() for p in self.params]
        if self.scaler is not None:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        with torch.no_grad():
            if self.constrain is not None:
                self.constrain(self.model)
            squares = [(p - b).float().pow(2).sum() for p, b in zip(self.params, before)]
            step_norm = torch.stack(squares).sum().sqrt() if squares else torch.zeros(())
        if self.sched is not None:
            self.sched.step()
        records = (loss.detach(), res.norm_before, res.norm_after, res.clipped, step_norm)
        return records, (logits.argmax(1) == y).sum()


def _parse_schedule(schedule: str | None) -> tuple[str, list[float]] | None:
    """``"step:5:0.1"`` -> ``("step", [5.0, 0.1])``; None stays None; errors name the accepted forms.

    Every number is finite and > 0; warm-up steps and plateau patience are whole numbers (a warm-up of
    0.5 steps would divide by zero); the plateau factor is below 1 (it lowers the rate).

    >>> _parse_schedule("warmup:100"), _parse_schedule("plateau:3:0.5")
    (('warmup', [100.0]), ('plateau', [3.0, 0.5]))
    """
    if schedule is None:
        return None
    arity = {"cosine": (0,), "step": (2,), "warmup": (1,), "warmup_cosine": (1,), "plateau": (0, 2)}
    name, *args = schedule.split(":") if isinstance(schedule, str) else ("?",)
    try:
        values = [float(a) for a in args]
    except ValueError:
        values = None
    ok = (name in arity and values is not None and len(values) in arity[name]
          and all(math.isfinite(v) and v > 0 for v in values))
    if ok and name in ("warmup", "warmup_cosine", "plateau") and values:
        ok = values[0].is_integer() and (name != "plateau" or values[1] < 1)
    if not ok:
        raise ValueError(f"schedule={schedule!r} is not a schedule; accepted values: {', '.join(SCHEDULES)} "
                         "(finite numbers > 0; whole warm-up steps and patience; a plateau factor below 1)")
    return name, values


def _scheduler(schedule: str | None, opt: torch.optim.Optimizer, steps_per_epoch: int, total: int):
    """A per-step ``LambdaLR`` (or None) and a per-epoch ``ReduceLROnPlateau`` (or None)."""
    parsed = _parse_schedule(schedule)
    if parsed is None:
        return None, None
    name, args = parsed
    if name == "plateau":
        patience, factor = args if args else (2, 0.1)
        return None, torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=factor, patience=int(patience))

    def cosine(t: int, start: int = 0) -> float:
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (t - start) / max(1, total - start))))

    if name == "cosine":
        factor = cosine
    elif name == "step":
        every, gamma = args

        def factor(t: int) -> float:
            return gamma ** (t // max(1, round(every * steps_per_epoch)))
    else:
        warm = int(args[0])

        def factor(t: int) -> float:
            if t < warm:
                return (t + 1) / warm
            return cosine(t, warm) if name == "warmup_cosine" else 1.0
    return torch.optim.lr_scheduler.LambdaLR(opt, factor), None


def _constraint(constraint: str | Callable[[nn.Module], Any] | None) -> Callable[[nn.Module], Any] | None:
    if constraint is None or callable(constraint):
        return constraint
    if isinstance(constraint, str):
        from .remedies import constraint as make_constraint

        return make_constraint(constraint)
    raise ValueError(f"constraint must be None, a callable f(model) or a spec such as 'max_norm:3', got {constraint!r}")


def _record_layers(hist: History, monitor: Any) -> None:
    """Copy the monitor's per-layer records, dropping any taken at or after a divergence."""
    mh = monitor.history
    keep = [i for i, s in enumerate(mh.layer_steps.tolist())
            if hist.diverged_step is None or s < hist.diverged_step]
    hist.layer_names = list(mh.layer_names)
    hist.layer_steps = [int(mh.layer_steps[i]) for i in keep]
    hist.layer_grad_norm = [mh.layer_grad_norm[i].tolist() for i in keep]
    hist.update_ratio = [mh.update_ratio[i].tolist() for i in keep]
    monitor.detach()
