"""Train CIFAR-10 models with gradient clipping, log every step, run sweeps of settings.

The loop is built so that logging costs nothing on a GPU: images stay on the device as uint8
(:class:`DeviceLoader` crops, flips and normalises them there), the per-step loss, gradient norm
before/after clipping and the clipped flag go into preallocated device tensors, and they are
copied to the host once per epoch. The only other host sync is a divergence check of the
buffered losses every :data:`CHECK_EVERY` steps.

>>> from gradkit.data import synthetic
>>> h = fit("seed_cnn", synthetic(n=256, n_test=128), epochs=1, model_kw={"width": 0.25}, progress=False)
>>> len(h.loss), h.synthetic
(2, True)
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import hashlib
import inspect
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from . import runtime

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("None", "cosine", "step:<every_epochs>:<gamma>", "warmup:<steps>", "warmup_cosine:<steps>",
             "plateau", "plateau:<patience>:<factor>")
# Divergence is checked on the buffered losses this often (one host sync per check): a run that
# blows up trains at most this many wasted steps before it stops.
CHECK_EVERY = 25
PAD = 4
EVAL_BATCH = 1000
DATA_KEYS = ("subset", "test_subset", "data_seed", "val")


class DeviceLoader:
    """Batches of normalised images made on the device from uint8 images kept on the device.

    With augmentation (the default when ``train``), each image is padded by 4 zero pixels on every
    side, cropped back to 32x32 at a random offset ``(dy, dx)`` in ``0..8`` and flipped left-right
    with probability 1/2, all per image and in one gather. Then
    ``x = (pixel / 255 - mean) / std`` per channel. ``train`` also reshuffles every epoch.
    A seeded ``torch.Generator`` on the data's device makes the batches reproducible.

    >>> x = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8); y = torch.arange(10)
    >>> xb, yb = next(iter(DeviceLoader(x, y, 4, train=False, mean=(0.5,) * 3, std=(0.5,) * 3)))
    >>> xb.shape, yb.tolist()
    (torch.Size([4, 3, 32, 32]), [0, 1, 2, 3])
    """

    def __init__(self, x_uint8: torch.Tensor, y: torch.Tensor, batch_size: int = 128, train: bool = True,
                 mean: tuple[float, float, float] = (0.0, 0.0, 0.0), std: tuple[float, float, float] = (1.0, 1.0, 1.0),
                 seed: int = 0, device: str | torch.device = "auto", augment: bool | None = None,
                 channels_last: bool = False) -> None:
        if not isinstance(x_uint8, torch.Tensor) or x_uint8.dtype != torch.uint8 or x_uint8.dim() != 4:
            raise ValueError(f"x_uint8 must be a uint8 tensor (N, C, H, W), got {_describe(x_uint8)}")
        if not isinstance(y, torch.Tensor) or y.shape != (x_uint8.shape[0],):
            raise ValueError(f"y must be a tensor of shape ({x_uint8.shape[0]},), got {_describe(y)}")
        _check_int("batch_size", batch_size)
        if len(mean) != x_uint8.shape[1] or len(std) != x_uint8.shape[1] or min(std) <= 0:
            raise ValueError(f"mean and std must have {x_uint8.shape[1]} values with std > 0, got {mean}, {std}")
        self.device = runtime.resolve_device(device)
        self.batch_size, self.train = batch_size, bool(train)
        self.augment = self.train if augment is None else bool(augment)
        self.channels_last = channels_last
        self.x = x_uint8.to(self.device)
        self.y = y.to(self.device, torch.long)
        self.n, c, self.h, self.w = self.x.shape
        # A padded copy of the whole set (40x40 per image: 1.56x the images' memory) turns every
        # batch's crops and flips into one gather.
        self._padded = F.pad(self.x, (PAD, PAD, PAD, PAD)) if self.augment else None
        stat_shape = (1, c, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32, device=self.device).view(stat_shape)
        self._scale = 1.0 / (255.0 * std_t)
        self._shift = -torch.tensor(mean, dtype=torch.float32, device=self.device).view(stat_shape) / std_t
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self._rows = torch.arange(self.h, device=self.device).view(1, -1, 1)
        self._cols = torch.arange(self.w, device=self.device).view(1, 1, -1)

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(self.n, generator=self.generator, device=self.device) if self.train else None
        for start in range(0, self.n, self.batch_size):
            stop = min(start + self.batch_size, self.n)
            idx = order[start:stop] if order is not None else None
            if self.augment:
                if idx is None:
                    idx = torch.arange(start, stop, device=self.device)
                xb = self._crop_flip(idx)
            else:
                xb = self.x[idx] if idx is not None else self.x[start:stop]
            yb = self.y[idx] if idx is not None else self.y[start:stop]
            yield self.normalize(xb), yb

    def normalize(self, xb: torch.Tensor) -> torch.Tensor:
        """uint8 images -> float32 ``(pixel / 255 - mean) / std``, computed as ``pixel * scale + shift``."""
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        out = torch.empty(xb.shape, dtype=torch.float32, device=self.device, memory_format=fmt)
        return torch.addcmul(self._shift, xb.float(), self._scale, out=out)

    def _crop_flip(self, idx: torch.Tensor) -> torch.Tensor:
        """Random per-image crop of the padded images and random flip, as one gather per batch."""
        b, (c, hp, wp) = idx.numel(), self._padded.shape[1:]
        dy = torch.randint(0, 2 * PAD + 1, (b, 1, 1), generator=self.generator, device=self.device)
        dx = torch.randint(0, 2 * PAD + 1, (b, 1, 1), generator=self.generator, device=self.device)
        flip = torch.randint(0, 2, (b, 1, 1), generator=self.generator, device=self.device) == 1
        cols = torch.where(flip, self.w - 1 - self._cols, self._cols)
        # One index per output pixel, shared by the channels: 3x fewer indices than a flat take.
        pixel = ((dy + self._rows) * wp + dx + cols).view(b, 1, -1).expand(b, c, -1)
        return self._padded[idx].view(b, c, hp * wp).gather(2, pixel).view(b, c, self.h, self.w)


@dataclasses.dataclass
class History:
    """What one training run did, step by step and epoch by epoch; saves to and loads from JSON.

    Per step: ``loss``, ``grad_norm_before``/``grad_norm_after`` (total L2 norm, or the clip
    method's norm, before and after clipping), ``clipped`` and ``lr``. Per epoch: ``train_loss``,
    ``train_acc`` (on the augmented batches as they were trained), ``test_loss``, ``test_acc``
    and ``epoch_seconds`` (the training part of the epoch, evaluation excluded). A run whose loss
    became NaN or inf has ``diverged=True`` and ``diverged_step`` = the first such step; its
    per-step records stop before that step and the epoch it broke in has no epoch record.
    Python's ``json`` writes a non-finite number as ``NaN``/``Infinity`` and reads it back.

    >>> h = History(config={"clip": "norm:1.0", "lr": 0.1}, clipped=[True, False, False, True])
    >>> h.clip_rate, h.label
    (0.5, 'norm clipping, c=1, lr=0.1')
    """

    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    device: str = ""
    torch_version: str = torch.__version__
    dataset: str = ""
    synthetic: bool = False
    date: str = ""
    seconds: float = 0.0
    steps_per_epoch: int = 0
    diverged: bool = False
    diverged_step: int | None = None
    loss: list[float] = dataclasses.field(default_factory=list)
    grad_norm_before: list[float] = dataclasses.field(default_factory=list)
    grad_norm_after: list[float] = dataclasses.field(default_factory=list)
    clipped: list[bool] = dataclasses.field(default_factory=list)
    lr: list[float] = dataclasses.field(default_factory=list)
    train_loss: list[float] = dataclasses.field(default_factory=list)
    train_acc: list[float] = dataclasses.field(default_factory=list)
    test_loss: list[float] = dataclasses.field(default_factory=list)
    test_acc: list[float] = dataclasses.field(default_factory=list)
    val_loss: list[float] = dataclasses.field(default_factory=list)
    val_acc: list[float] = dataclasses.field(default_factory=list)
    step_norm: list[float] = dataclasses.field(default_factory=list)
    epoch_seconds: list[float] = dataclasses.field(default_factory=list)
    layer_names: list[str] = dataclasses.field(default_factory=list)
    layer_steps: list[int] = dataclasses.field(default_factory=list)
    layer_grad_norm: list[list[float]] = dataclasses.field(default_factory=list)
    update_ratio: list[list[float]] = dataclasses.field(default_factory=list)

    @property
    def final_test_acc(self) -> float | None:
        """Test accuracy after the last epoch; None when the run diverged or finished no epoch."""
        return None if self.diverged or not self.test_acc else self.test_acc[-1]

    @property
    def best_test_acc(self) -> float | None:
        """Highest test accuracy over the finished epochs (for a diverged run: before it broke)."""
        return max(self.test_acc) if self.test_acc else None

    @property
    def final_val_acc(self) -> float | None:
        """Validation accuracy after the last epoch; None when diverged or without a validation split."""
        return None if self.diverged or not self.val_acc else self.val_acc[-1]

    @property
    def clip_rate(self) -> float:
        """Share of steps whose gradient was clipped: ``sum(clipped) / steps`` (nan with no steps)."""
        return sum(self.clipped) / len(self.clipped) if self.clipped else math.nan

    @property
    def label(self) -> str:
        """Legend text: the clip setting and the learning rate; synthetic runs say so."""
        from .plots import spec_label  # here, so that training does not pull in matplotlib

        text = f"{spec_label(self.config.get('clip'))}, lr={self.config.get('lr', math.nan):.3g}"
        return text + " [synthetic data]" if self.synthetic else text

    def save(self, path: str | Path) -> Path:
        """Write the history as JSON (parent folders are created); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dataclasses.asdict(self)))
        return path

    @classmethod
    def load(cls, path: str | Path) -> History:
        """Read a history written by :meth:`save`."""
        raw = json.loads(Path(path).read_text())
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(raw) - names
        if unknown:
            raise ValueError(f"path={str(path)!r} is not a gradkit History: unknown keys {sorted(unknown)}")
        return cls(**raw)


def fit(model: nn.Module | str, data: Any, epochs: int = 1, optimizer: str = "sgd", lr: float = 0.01,
        momentum: float = 0.9, weight_decay: float = 0.0, clip: Any = None, schedule: str | None = None,
        amp: bool = False, batch_size: int = 128, seed: int = 0, device: str | torch.device = "auto",
        progress: bool = True, monitor_every: int = 0, augment: bool = True, max_steps: int | None = None,
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
    Progress bars are off when ``progress=False`` or in headless runs (reports, CI).

    >>> from gradkit.data import synthetic
    >>> h = fit("seed_cnn", synthetic(n=256, n_test=128), lr=1e6, clip=None, model_kw={"width": 0.25},
    ...         epochs=3, batch_size=32, progress=False)
    >>> h.diverged, len(h.loss) == h.diverged_step
    (True, True)
    """
    config = _fit_config(locals())
    from .clip import clipper

    _check_run(data, epochs, batch_size, lr, optimizer, max_steps)
    _check_int("monitor_every", monitor_every, minimum=0)
    clip_fn = clipper(clip)
    config["clip"] = clip_fn.spec
    _parse_schedule(schedule)
    constrain = _constraint(constraint)
    if constrain is not None:
        config["constraint"] = getattr(constrain, "spec", config["constraint"])

    dev = runtime.resolve_device(device)
    cuda = dev.type == "cuda"
    model = _build_model(model, model_kw, seed, dev)
    train, test = _loaders(data, batch_size, seed, dev, augment)
    val = _val_loader(data, dev)
    total = len(train) * epochs if max_steps is None else min(len(train) * epochs, max_steps)
    opt = _optimizer(optimizer, model.parameters(), lr, momentum, weight_decay, cuda)
    sched, plateau = _scheduler(schedule, opt, len(train), total)
    autocast = torch.autocast(dev.type, dtype=torch.float16 if cuda else torch.bfloat16, enabled=amp)
    scaler = torch.amp.GradScaler("cuda") if amp and cuda else None

    hist = History(config=config, device=runtime.device_name(dev), dataset=data.name, synthetic=bool(data.synthetic),
                   date=datetime.datetime.now().isoformat(timespec="seconds"), steps_per_epoch=len(train))
    monitor = None
    if monitor_every:
        from .monitor import GradMonitor

        monitor = GradMonitor(model, every=monitor_every)
        monitor.attach(opt)
    stepper = _Stepper(model, opt, clip_fn, autocast, scaler, monitor, constrain, sched)
    bar = _progress_bar(progress, total, hist.label)
    started, step = time.perf_counter(), 0
    try:
        for _ in range(epochs):
            n = min(len(train), total - step)
            if n <= 0:
                break
            if not _train_epoch(stepper, train, n, hist, step, bar):
                return hist
            test_loss, test_acc = evaluate(model, test, amp=amp)
            hist.test_loss.append(test_loss)
            hist.test_acc.append(test_acc)
            if val is not None:
                val_loss, val_acc = evaluate(model, val, amp=amp)
                hist.val_loss.append(val_loss)
                hist.val_acc.append(val_acc)
            if plateau is not None:
                plateau.step(hist.val_loss[-1] if val is not None else hist.train_loss[-1])
            step += n
        return hist
    finally:
        hist.seconds = time.perf_counter() - started
        if bar is not None:
            bar.close()
        if monitor is not None:
            _record_layers(hist, monitor)


class _Stepper:
    """One optimisation step: forward, backward, clip, optimizer step, constraint, scheduler step."""

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer, clip_fn: Callable, autocast: Any,
                 scaler: Any, monitor: Any, constrain: Callable | None, sched: Any) -> None:
        self.model, self.opt, self.clip_fn, self.autocast = model, opt, clip_fn, autocast
        self.scaler, self.monitor, self.constrain, self.sched = scaler, monitor, constrain, sched
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.step_norm = torch.zeros((), device=self.params[0].device if self.params else "cpu")

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """Returns the loss, the logits and the clipping's ``ClipResult``, all left on the device;
        ``self.step_norm`` holds ||w_after - w_before|| of this step (0-d, on the device)."""
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
            self.step_norm = torch.stack(squares).sum().sqrt() if squares else torch.zeros(())
        if self.sched is not None:
            self.sched.step()
        return loss, logits, res


def _train_epoch(stepper: _Stepper, train: DeviceLoader, n: int, hist: History, step: int, bar: Any) -> bool:
    """Train ``n`` steps and add their records to ``hist``; False when the loss became NaN/inf.

    The records go into one device tensor (no host sync per step); every :data:`CHECK_EVERY`
    steps the new losses are copied to the host to look for a non-finite one.
    """
    start = time.perf_counter()
    buf = torch.empty(5, n, device=train.device)  # loss, norm before, norm after, clipped, step norm
    correct = torch.zeros((), dtype=torch.long, device=train.device)
    sizes, lrs, checked = [], [], 0
    for i, (x, y) in enumerate(train):
        if i == n:
            break
        lrs.append(stepper.opt.param_groups[0]["lr"])
        loss, logits, res = stepper(x, y)
        buf[0, i] = loss.detach()
        buf[1, i] = res.norm_before
        buf[2, i] = res.norm_after
        buf[3, i] = res.clipped
        buf[4, i] = stepper.step_norm
        correct += (logits.argmax(1) == y).sum()
        sizes.append(y.shape[0])
        if (i + 1) % CHECK_EVERY == 0 or i + 1 == n:
            recent = buf[0, checked:i + 1].tolist()
            bad = next((j for j, v in enumerate(recent) if not math.isfinite(v)), None)
            if bar is not None:
                bar.update(len(recent))
                bar.set_postfix(loss=f"{recent[-1]:.3g}")
            if bad is not None:
                first = checked + bad
                _record_steps(hist, buf[:, :first].tolist(), lrs[:first])
                hist.diverged, hist.diverged_step = True, step + first
                return False
            checked = i + 1
    records = buf.tolist()
    hist.epoch_seconds.append(time.perf_counter() - start)
    _record_steps(hist, records, lrs)
    hist.train_loss.append(sum(v * s for v, s in zip(records[0], sizes)) / sum(sizes))
    hist.train_acc.append(correct.item() / sum(sizes))
    return True


# The defaults that a run's identity is computed with, frozen here (not read from fit's signature):
# a keyword added to fit later, left at its default, must not change the id of any saved run.
# Changing a value here changes ids on purpose; migrate results/ then (results/README.md).
RUN_DEFAULTS: dict[str, Any] = {
    "epochs": 1, "optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0, "clip": None,
    "schedule": None, "amp": False, "batch_size": 128, "seed": 0, "device": "auto", "monitor_every": 0,
    "augment": True, "max_steps": None, "model_kw": None, "constraint": None,
}
# fit's live defaults: a config key that RUN_DEFAULTS does not know is dropped from the identity
# while it equals its default here.
FIT_DEFAULTS = {k: p.default for k, p in inspect.signature(fit).parameters.items()
                if p.default is not inspect.Parameter.empty and k != "progress"}


def evaluate(model: nn.Module, loader: DeviceLoader, amp: bool = False) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` over every batch of ``loader`` (eval mode).

    ``loss = sum_i CE(model(x_i), y_i) / N``, ``acc = #(argmax model(x_i) == y_i) / N``.
    """
    was_training = model.training
    model.eval()
    total = torch.zeros(2, device=loader.device)
    dtype = torch.float16 if loader.device.type == "cuda" else torch.bfloat16
    with torch.no_grad(), torch.autocast(loader.device.type, dtype=dtype, enabled=amp):
        for x, y in loader:
            logits = model(x).float()
            total[0] += F.cross_entropy(logits, y, reduction="sum")
            total[1] += (logits.argmax(1) == y).sum()
    model.train(was_training)
    loss_sum, correct = total.tolist()
    return loss_sum / loader.n, correct / loader.n


def sweep(configs: list[dict[str, Any]] | None = None, thresholds: list[float] | None = None, method: str = "norm",
          base: dict[str, Any] | None = None, results_dir: str | Path = "results/sweep", data: Any = None,
          progress: bool = True, stacked: bool = False) -> list[History]:
    """Run many training configurations; one JSON per run plus ``summary.csv`` in ``results_dir``.

    A config is a dict of :func:`fit` arguments (``model`` and ``model_kw`` included) plus the
    data settings ``subset``, ``test_subset``, ``data_seed`` (default: the run's ``seed``) and ``val``
    used to load CIFAR-10 with :func:`gradkit.data.cifar10` (once per distinct setting) when
    ``data`` is None. ``thresholds=[c1, c2, ...]`` builds the configs
    ``{**base, "clip": f"{method}:{c}"}``. Each run's file is named by a hash of its complete
    config (defaults filled in, the clip spec canonical, the dataset's identity included), so a
    run already on disk is loaded instead of trained again. ``summary.csv`` is rewritten after
    every run with one row per run in the folder.

    ``stacked=True`` trains configs that differ only in ``clip`` (methods none, norm, value; no
    BatchNorm, schedule, amp, monitor or constraint) together with
    :func:`gradkit.stacked.fit_stacked`, saved exactly as sequential runs; the rest use :func:`fit`.

    >>> from gradkit.data import synthetic
    >>> import tempfile
    >>> runs = sweep(thresholds=[0.1, 1.0], base={"model": "seed_cnn", "model_kw": {"width": 0.25}},
    ...              data=synthetic(n=128, n_test=64), results_dir=tempfile.mkdtemp(), progress=False)
    >>> [h.config["clip"] for h in runs]
    ['norm:0.1', 'norm:1.0']
    """
    if (configs is None) == (thresholds is None):
        raise ValueError("pass exactly one of configs (a list of dicts) or thresholds (a list of numbers)")
    if thresholds is not None:
        configs = [{**(base or {}), "clip": f"{method}:{float(t)!r}"} for t in thresholds]
    elif base:
        configs = [{**base, **c} for c in configs]
    if not configs or not all(isinstance(c, dict) for c in configs):
        raise ValueError("configs must be a non-empty list of dicts of fit() arguments and data settings")
    folder = Path(results_dir)
    # One fingerprint of the data for every config: hashing it per config would repeat the same work.
    identity = _data_identity(data) if data is not None else None
    runs = [(c, _run_id(c, data, identity)) for c in configs]
    done = {p.stem.removeprefix("run-"): History.load(p) for p in sorted(folder.glob("run-*.json"))}
    loaded: dict[tuple, Any] = {}

    def save(cfg: dict[str, Any], run_id: str, hist: History) -> None:
        full = _canonical(cfg)
        hist.config.update({k: full[k] if data is None else None for k in DATA_KEYS}, run_id=run_id)
        hist.save(folder / f"run-{run_id}.json")
        done[run_id] = hist
        _write_summary(folder, done)

    if stacked:
        from .stacked import fit_group, stacked_groups

        for group in stacked_groups({r: (c, r) for c, r in runs if r not in done}.values()):
            run_data = data if data is not None else _load_data(group[0][0], loaded)
            for (cfg, run_id), hist in zip(group, fit_group(group, run_data, progress)):
                save(cfg, run_id, hist)
    out = []
    for cfg, run_id in runs:
        if run_id not in done:
            fit_kw = {k: v for k, v in cfg.items() if k not in DATA_KEYS}
            run_data = data if data is not None else _load_data(cfg, loaded)
            save(cfg, run_id, fit(data=run_data, progress=progress, **fit_kw))
        out.append(done[run_id])
    _write_summary(folder, done)
    return out


def load_sweep(results_dir: str | Path) -> list[History]:
    """All runs saved by :func:`sweep` in ``results_dir``, oldest first."""
    folder = Path(results_dir)
    if not folder.is_dir():
        raise ValueError(f"results_dir={str(folder)!r} is not a folder")
    return sorted((History.load(p) for p in folder.glob("run-*.json")), key=lambda h: h.date)


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def _check_int(name: str, value: Any, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _check_run(data: Any, epochs: int, batch_size: int, lr: float, optimizer: str, max_steps: int | None) -> None:
    """The argument checks that ``fit`` and ``gradkit.stacked.fit_stacked`` share."""
    _check_int("epochs", epochs)
    _check_int("batch_size", batch_size)
    if max_steps is not None:
        _check_int("max_steps", max_steps)
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0:
        raise ValueError(f"lr must be a number > 0, got {lr!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer={optimizer!r} is not an optimizer; accepted values: {', '.join(OPTIMIZERS)}")
    for attr in ("train_x", "train_y", "test_x", "test_y", "mean", "std", "name", "synthetic"):
        if not hasattr(data, attr):
            raise ValueError(f"data must be a gradkit.data.Dataset (from cifar10() or synthetic()), got {type(data).__name__}")


def _build_model(model: nn.Module | str, model_kw: dict[str, Any] | None, seed: int, dev: torch.device) -> nn.Module:
    """Seed, then build (by name) or take the model; on ``dev``, channels-last, in train mode."""
    runtime.set_seed(seed)
    if isinstance(model, str):
        from .models import build_model

        model = build_model(model, **(model_kw or {}))
    elif model_kw:
        raise ValueError("model_kw is only used when model is a name; pass the keywords to the model's class instead")
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module or a model name ('seed_cnn', 'plain_cnn', 'resnet'), got {model!r}")
    if dev.type == "cuda":
        # The input shape never changes, so timing cuDNN's convolution algorithms once pays off.
        torch.backends.cudnn.benchmark = True
    # channels_last (NHWC) lets cuDNN and oneDNN use their fastest convolution kernels: a
    # forward+backward step of SeedCNN(0.25), ResNet-20 and PlainCNN-20 took 17-28% less time
    # on the 2-core CPU that built the kit.
    model = model.to(dev, memory_format=torch.channels_last)
    model.train()
    return model


def _loaders(data: Any, batch_size: int, seed: int, dev: torch.device, augment: bool) -> tuple[DeviceLoader, DeviceLoader]:
    """The seeded, augmented training loader and the plain test loader of a run."""
    train = DeviceLoader(data.train_x, data.train_y, batch_size, train=True, mean=data.mean, std=data.std,
                         seed=seed, device=dev, augment=augment, channels_last=True)
    test = DeviceLoader(data.test_x, data.test_y, EVAL_BATCH, train=False, mean=data.mean, std=data.std,
                        device=dev, channels_last=True)
    return train, test


def _fit_config(args: dict[str, Any]) -> dict[str, Any]:
    """The JSON-able settings of a fit call (the model and constraint by name)."""
    skip = {"data", "progress", "device"}
    config = {k: v for k, v in args.items() if k not in skip}
    model, constraint = config["model"], config["constraint"]
    config["model"] = model if isinstance(model, str) else type(model).__name__
    config["model_kw"] = dict(config["model_kw"] or {})
    if constraint is not None and not isinstance(constraint, str):
        config["constraint"] = getattr(constraint, "spec", None) or getattr(constraint, "__name__", type(constraint).__name__)
    return config


def _val_loader(data: Any, dev: torch.device) -> DeviceLoader | None:
    """The plain loader of ``data``'s validation split, or None when it has none."""
    if getattr(data, "val_y", None) is None or not data.val_y.numel():
        return None
    return DeviceLoader(data.val_x, data.val_y, EVAL_BATCH, train=False, mean=data.mean, std=data.std,
                        device=dev, channels_last=True)


def _constraint(constraint: str | Callable[[nn.Module], Any] | None) -> Callable[[nn.Module], Any] | None:
    if constraint is None or callable(constraint):
        return constraint
    if isinstance(constraint, str):
        from .remedies import constraint as make_constraint

        return make_constraint(constraint)
    raise ValueError(f"constraint must be None, a callable f(model) or a spec such as 'max_norm:3', got {constraint!r}")


def _optimizer(name: str, params: Iterable[torch.Tensor], lr: float, momentum: float, weight_decay: float,
               cuda: bool) -> torch.optim.Optimizer:
    params = list(params)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=cuda or None)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=cuda or None)
    return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay)


def _parse_schedule(schedule: str | None) -> tuple[str, list[float]] | None:
    """``"step:5:0.1"`` -> ``("step", [5.0, 0.1])``; None stays None; errors name the accepted forms."""
    if schedule is None:
        return None
    arity = {"cosine": (0,), "step": (2,), "warmup": (1,), "warmup_cosine": (1,), "plateau": (0, 2)}
    name, *args = schedule.split(":") if isinstance(schedule, str) else ("?",)
    try:
        values = [float(a) for a in args]
    except ValueError:
        values = None
    if name not in arity or values is None or len(values) not in arity[name] or any(not v > 0 for v in values):
        raise ValueError(f"schedule={schedule!r} is not a schedule; accepted values: {', '.join(SCHEDULES)} "
                         "(numbers > 0)")
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


def _progress_bar(progress: bool, total: int, label: str):
    if not progress or runtime.headless():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=label, leave=False)


def _record_steps(hist: History, records: list[list[float]], lrs: list[float]) -> None:
    """Append per-step rows: loss, norm before, norm after, clipped and (when given) step norm."""
    loss, before, after, clipped = records[:4]
    if len(records) > 4:
        hist.step_norm += records[4]
    hist.loss += loss
    hist.grad_norm_before += before
    hist.grad_norm_after += after
    hist.clipped += [bool(c) for c in clipped]
    hist.lr += lrs


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


def _canonical(cfg: dict[str, Any]) -> dict[str, Any]:
    """The config with every fit default filled in and the clip spec in canonical form."""
    from .clip import clipper

    accepted = set(FIT_DEFAULTS) | {"model"} | set(DATA_KEYS)
    unknown = set(cfg) - accepted
    if unknown:
        raise ValueError(f"config keys {sorted(unknown)} are not accepted; accepted keys: {', '.join(sorted(accepted))}")
    if "model" not in cfg:
        raise ValueError("every config needs 'model' (a name: 'seed_cnn', 'plain_cnn', 'resnet')")
    if not isinstance(cfg["model"], str):
        raise ValueError(f"config 'model' must be a model name so the run can be saved and resumed, got {cfg['model']!r}")
    full = {**RUN_DEFAULTS, **{k: v for k, v in cfg.items() if k in RUN_DEFAULTS or k in DATA_KEYS or k == "model"
                               or v != FIT_DEFAULTS[k]}}
    full["clip"] = clipper(full["clip"]).spec
    full["model_kw"] = dict(full["model_kw"] or {})
    full.setdefault("subset", None)
    full.setdefault("test_subset", None)
    full.setdefault("data_seed", full["seed"])
    full.setdefault("val", None)
    if full["device"] == "auto":
        full["device"] = runtime.resolve_device("auto").type
    return full


def _data_identity(data: Any) -> dict[str, Any]:
    """Name, sizes and a fingerprint of a Dataset, so runs on different data never share a file."""
    digest = hashlib.sha1()
    tensors = [data.train_y, data.test_y, data.train_x.flatten()[::997], data.test_x.flatten()[::997]]
    n_val = getattr(data, "n_val", 0)
    if n_val:
        tensors += [data.val_y, data.val_x.flatten()[::997]]
    for t in tensors:
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    identity = {"name": data.name, "n_train": int(data.train_y.numel()), "n_test": int(data.test_y.numel()),
                "fingerprint": digest.hexdigest()[:16]}
    if n_val:
        identity["n_val"] = n_val
    return identity


def _run_id(cfg: dict[str, Any], data: Any, identity: dict[str, Any] | None = None) -> str:
    """A run's file name: a hash of its canonical config and of its data (``identity``: ``data``'s
    :func:`_data_identity`, when already computed)."""
    full = _canonical(cfg)
    if data is not None:
        for key in DATA_KEYS:
            full.pop(key)
        full["data"] = identity or _data_identity(data)
    else:
        full["data"] = {"source": "cifar10", **{k: full.pop(k) for k in DATA_KEYS}}
    text = json.dumps(full, sort_keys=True, default=repr)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _load_data(cfg: dict[str, Any], cache: dict[tuple, Any]) -> Any:
    from .data import cifar10

    key = (cfg.get("subset"), cfg.get("test_subset"), cfg.get("data_seed", cfg.get("seed", 0)), cfg.get("val"))
    if key not in cache:
        cache[key] = cifar10(subset=key[0], test_subset=key[1], seed=key[2], val=key[3], device=cfg.get("device", "auto"))
    return cache[key]


SUMMARY_COLUMNS = ("run_id", "label", "dataset", "synthetic", "model", "model_kw", "optimizer", "lr", "clip",
                   "schedule", "epochs", "seed", "subset", "steps", "diverged", "diverged_step", "final_val_acc",
                   "final_test_acc", "best_test_acc", "final_train_loss", "clip_rate", "seconds", "device")


def _write_summary(folder: Path, runs: dict[str, History]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "summary.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(SUMMARY_COLUMNS)
        for run_id, h in sorted(runs.items(), key=lambda kv: kv[1].date):
            c = h.config
            writer.writerow([run_id, h.label, h.dataset, h.synthetic, c.get("model"), json.dumps(c.get("model_kw")),
                             c.get("optimizer"), c.get("lr"), c.get("clip"), c.get("schedule"), c.get("epochs"),
                             c.get("seed"), c.get("subset"), len(h.loss), h.diverged, h.diverged_step,
                             h.final_val_acc, h.final_test_acc, h.best_test_acc, h.train_loss[-1] if h.train_loss else None,
                             round(h.clip_rate, 4) if h.clipped else None, round(h.seconds, 2), h.device])
