"""The parts of a training run that :func:`gradkit.train.fit` and :func:`gradkit.stacked.fit_stacked` share.

A run trains M members (``fit``: one model; ``fit_stacked``: M stacked copies) on the same
batches. The pieces, in the order a run uses them:

- :func:`check_run` and :func:`check_data` check the arguments, :func:`run_config` writes them down as JSON-able
  settings and :func:`new_histories` starts one :class:`~gradkit.history.History` per member;
- :func:`build_model`, :func:`loaders` (with :class:`DeviceLoader`), :func:`make_optimizer` and
  :func:`progress_bar` build what the run needs;
- :func:`run_epochs` is the epoch loop: :func:`train_epoch` trains the steps of one epoch
  (a step function gives each step's records, which stay on the device; the loss is read every
  :data:`CHECK_EVERY` steps to find members that diverged), then :func:`evaluate_into`
  scores every member still alive on the test set and the validation split.

Logging costs nothing on a GPU: images stay on the device as uint8 (:class:`DeviceLoader` crops,
flips and normalises them there), the step records go into one preallocated device tensor
that is copied to the host once per epoch, and the divergence check is the only other sync.

>>> from gradkit.data import synthetic
>>> train, test, val = loaders(synthetic(n=64, n_test=32), batch_size=16, seed=0, dev=torch.device("cpu"), augment=True)
>>> len(train), len(test), val is None
(4, 1, True)
"""

from __future__ import annotations

import datetime
import math
import time
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import runtime
from .checks import check_bool, check_choice, check_int, check_number, check_positive, check_seed, describe, plain
from .history import CONFIG_KEYS, History
from .models import MODELS, check_model_kw
from .models import build_model as build_by_name

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
# Divergence is checked on the buffered losses this often (one host sync per check): a run that
# blows up trains at most this many wasted steps before it stops.
CHECK_EVERY = 25
PAD = 4
EVAL_BATCH = 1000
DATASET_ATTRS = ("train_x", "train_y", "test_x", "test_y", "mean", "std", "name", "synthetic")

# A step function trains one batch ``(x, y)`` for every member and returns, left on the device,
# the records of the step (loss first, then gradient norm before and after clipping, clipped, and
# optionally the step norm; each a 0-d tensor for one member or ``(M,)`` for M) and the number of
# correct predictions per member.
StepFn = Callable[[torch.Tensor, torch.Tensor], tuple[Sequence[torch.Tensor], torch.Tensor]]


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
            raise ValueError(f"x_uint8 must be a uint8 tensor (N, C, H, W), got {describe(x_uint8)}")
        if not isinstance(y, torch.Tensor) or y.shape != (x_uint8.shape[0],):
            raise ValueError(f"y must be a tensor of shape ({x_uint8.shape[0]},), got {describe(y)}")
        batch_size, seed = check_int("batch_size", batch_size), check_seed("seed", seed)
        train, channels_last = check_bool("train", train), check_bool("channels_last", channels_last)
        if augment is not None:
            check_bool("augment", augment)
        if len(mean) != x_uint8.shape[1] or len(std) != x_uint8.shape[1]:
            raise ValueError(f"mean and std must have {x_uint8.shape[1]} values each, got {mean}, {std}")
        for value in mean:
            check_number("mean", value, minimum=None)
        for value in std:
            check_positive("std", value)
        self.device = runtime.resolve_device(device)
        self.batch_size, self.train = batch_size, train
        self.augment = self.train if augment is None else augment
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



def check_run(settings: dict[str, Any]) -> None:
    """The checks of the settings every training run shares (``settings``: the run's keyword arguments,
    ``data`` and ``device`` aside), before any work; errors name the argument and the accepted values.

    epochs and batch_size: ints >= 1, max_steps None or one; lr finite > 0; momentum in [0, 1);
    weight_decay finite >= 0; seed :func:`gradkit.checks.check_seed`; augment a bool, progress a
    bool or a callable; model an ``nn.Module`` or a name of :data:`gradkit.models.MODELS` whose
    options ``model_kw`` names.
    """
    check_int("epochs", settings["epochs"])
    check_int("batch_size", settings["batch_size"])
    check_int("max_steps", settings["max_steps"], optional=True)
    check_positive("lr", settings["lr"])
    check_choice("optimizer", settings["optimizer"], OPTIMIZERS)
    check_number("momentum", settings["momentum"], below=1.0)
    check_number("weight_decay", settings["weight_decay"])
    check_seed("seed", settings["seed"])
    check_bool("augment", settings["augment"])
    if not callable(settings["progress"]):
        check_bool("progress", settings["progress"])
    model, model_kw = settings["model"], settings["model_kw"]
    if isinstance(model, nn.Module):
        if model_kw:
            raise ValueError("model_kw is only used when model is a name; pass the keywords to the model's class instead")
    elif isinstance(model, str):
        check_model_kw(model, model_kw)
    else:
        raise ValueError(f"model must be an nn.Module or a model name ({', '.join(MODELS)}), got {describe(model)}")


def check_data(data: Any) -> None:
    """``data`` when it is a :class:`gradkit.data.Dataset` (has every attribute of :data:`DATASET_ATTRS`)."""
    if not all(hasattr(data, attr) for attr in DATASET_ATTRS):
        raise ValueError(f"data must be a gradkit.data.Dataset (from cifar10() or synthetic()), got {describe(data)}")


def run_config(**settings: Any) -> dict[str, Any]:
    """The JSON-able settings of a run: the :data:`CONFIG_KEYS` of ``settings`` in that order, the
    model and the constraint by name, ``model_kw`` as a dict (other keywords are ignored).

    >>> cfg = run_config(model=nn.Linear(2, 2), model_kw=None, constraint=None, data="ignored",
    ...                  **{k: 0 for k in CONFIG_KEYS[1:-2]})
    >>> cfg["model"], cfg["model_kw"], "data" in cfg
    ('Linear', {}, False)
    """
    config = {k: plain(settings[k]) for k in CONFIG_KEYS}  # a NumPy number would not save as JSON
    model, constraint = config["model"], config["constraint"]
    config["model"] = model if isinstance(model, str) else type(model).__name__
    config["model_kw"] = dict(config["model_kw"] or {})
    if constraint is not None and not isinstance(constraint, str):
        config["constraint"] = getattr(constraint, "spec", None) or getattr(constraint, "__name__", type(constraint).__name__)
    return config


def new_histories(configs: list[dict[str, Any]], data: Any, dev: torch.device, steps_per_epoch: int) -> list[History]:
    """One empty History per member config of a run on ``data`` and ``dev``, all dated now."""
    date = datetime.datetime.now().isoformat(timespec="seconds")
    return [History(config=config, device=runtime.device_name(dev), dataset=data.name, synthetic=bool(data.synthetic),
                    date=date, steps_per_epoch=steps_per_epoch) for config in configs]


def build_model(model: nn.Module | str, model_kw: dict[str, Any] | None, seed: int, dev: torch.device) -> nn.Module:
    """Seed, then build (by name, :func:`gradkit.models.build_model`) or take the model; on ``dev``,
    channels-last, in train mode (the settings are those :func:`check_run` accepted)."""
    runtime.set_seed(seed)
    if isinstance(model, str):
        model = build_by_name(model, **(model_kw or {}))
    if dev.type == "cuda":
        # The input shape never changes, so timing cuDNN's convolution algorithms once pays off.
        torch.backends.cudnn.benchmark = True
    # channels_last (NHWC) lets cuDNN and oneDNN use their fastest convolution kernels: a
    # forward+backward step of SeedCNN(0.25), ResNet-20 and PlainCNN-20 took 17-28% less time
    # on the 2-core CPU that built the kit.
    model = model.to(dev, memory_format=torch.channels_last)
    model.train()
    return model


def loaders(data: Any, batch_size: int, seed: int, dev: torch.device,
            augment: bool) -> tuple[DeviceLoader, DeviceLoader, DeviceLoader | None]:
    """The seeded training loader (augmented when ``augment``), the plain test loader and the plain
    validation loader (None when ``data`` has no validation split)."""
    plain = {"train": False, "mean": data.mean, "std": data.std, "device": dev, "channels_last": True}
    train = DeviceLoader(data.train_x, data.train_y, batch_size, train=True, mean=data.mean, std=data.std,
                         seed=seed, device=dev, augment=augment, channels_last=True)
    test = DeviceLoader(data.test_x, data.test_y, EVAL_BATCH, **plain)
    has_val = getattr(data, "val_y", None) is not None and data.val_y.numel() > 0
    val = DeviceLoader(data.val_x, data.val_y, EVAL_BATCH, **plain) if has_val else None
    return train, test, val


def make_optimizer(name: str, params: Iterable[torch.Tensor], lr: float, momentum: float, weight_decay: float,
                   cuda: bool) -> torch.optim.Optimizer:
    """The torch optimizer named ``name`` (one of :data:`OPTIMIZERS`); fused Adam/AdamW on CUDA."""
    params = list(params)
    # Plain floats: a NumPy learning rate would be recorded per step and not save as JSON.
    lr, momentum, weight_decay = float(lr), float(momentum), float(weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=cuda or None)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=cuda or None)
    return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay)


def progress_bar(progress: bool | Callable[..., Any], total: int, label: str) -> Any:
    """A tqdm bar of ``total`` steps, or None when ``progress`` is off or the run is headless; a callable
    ``progress(total=, desc=)`` makes the bar instead (the threshold explorer's widget bar)."""
    if callable(progress):
        return progress(total=total, desc=label)
    if not progress or runtime.headless():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=label, leave=False)


def record_steps(hist: History, records: list[list[float]], lrs: list[float]) -> None:
    """Append per-step rows: loss, norm before, norm after, clipped and (when given) step norm."""
    loss, before, after, clipped = records[:4]
    if len(records) > 4:
        hist.step_norm += records[4]
    hist.loss += loss
    hist.grad_norm_before += before
    hist.grad_norm_after += after
    hist.clipped += [bool(c) for c in clipped]
    hist.lr += lrs


def train_epoch(step_fn: StepFn, opt: torch.optim.Optimizer, train: DeviceLoader, n: int, hists: list[History],
                step: int, bar: Any) -> None:
    """Train ``n`` steps of every member; add each live member's step records and epoch to its History.

    The records stay in one ``(M, fields, n)`` device tensor; every :data:`CHECK_EVERY` steps the
    new losses are read (one host sync for all members) to find a member whose loss became NaN
    or inf. Such a member gets ``diverged=True`` and ``diverged_step`` (counted from the run's
    first step; ``step`` is the first step of this epoch), its records stop before that step and
    it gets no epoch record; the epoch stops early once every member has diverged.
    ``train_loss`` is the batch-size-weighted mean of the step losses, ``train_acc`` the share of
    correct predictions on the (augmented) training batches.
    """
    start = time.perf_counter()
    buf: torch.Tensor | None = None
    correct = torch.zeros(len(hists), dtype=torch.long, device=train.device)
    sizes, lrs, checked = [], [], 0
    broke: dict[int, int] = {}  # member -> first non-finite step within this epoch
    for i, (x, y) in enumerate(train):
        if i == n:
            break
        lrs.append(opt.param_groups[0]["lr"])
        values, hits = step_fn(x, y)
        if buf is None:
            buf = torch.empty(len(hists), len(values), n, device=train.device)
        for field, value in enumerate(values):
            buf[:, field, i] = value
        correct += hits
        sizes.append(y.shape[0])
        if (i + 1) % CHECK_EVERY == 0 or i + 1 == n:
            recent = buf[:, 0, checked:i + 1].tolist()
            for m, row in enumerate(recent):
                bad = next((j for j, v in enumerate(row) if not math.isfinite(v)), None)
                if bad is not None and m not in broke and not hists[m].diverged:
                    broke[m] = checked + bad
            if bar is not None:
                bar.update(len(recent[0]))
                if len(hists) == 1:
                    bar.set_postfix(loss=f"{recent[0][-1]:.3g}")
            checked = i + 1
            if all(h.diverged or m in broke for m, h in enumerate(hists)):
                break
    seconds = time.perf_counter() - start
    records, correct_host = buf.tolist(), correct.tolist()
    for m, hist in enumerate(hists):
        if hist.diverged:
            continue
        if m in broke:
            first = broke[m]
            record_steps(hist, [r[:first] for r in records[m]], lrs[:first])
            hist.diverged, hist.diverged_step = True, step + first
            continue
        hist.epoch_seconds.append(seconds)
        record_steps(hist, records[m], lrs)
        hist.train_loss.append(sum(v * s for v, s in zip(records[m][0], sizes)) / sum(sizes))
        hist.train_acc.append(correct_host[m] / sum(sizes))


def cross_entropy(logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of one model's ``(B, K)`` logits (a 0-d tensor), or of each member's in
    ``(M, B, K)`` logits (shape ``(M,)``); ``reduction``: ``"mean"`` or ``"sum"`` over the batch."""
    if logits.dim() == 2:
        return F.cross_entropy(logits, y, reduction=reduction)
    m, b, k = logits.shape
    per = F.cross_entropy(logits.reshape(m * b, k), y.repeat(m), reduction="none").view(m, b)
    return per.mean(1) if reduction == "mean" else per.sum(1)


def member_scores(forward: Callable[[torch.Tensor], torch.Tensor], loader: DeviceLoader,
           amp: bool = False) -> list[tuple[float, float]]:
    """Mean cross-entropy and accuracy over every batch of ``loader``, one pair per member.

    ``forward(x)`` gives one model's ``(B, K)`` logits or M members' ``(M, B, K)``;
    ``loss = sum_i CE(f(x_i), y_i) / N``, ``acc = #(argmax f(x_i) == y_i) / N``. ``amp``: autocast
    as in training (bf16 on the CPU, fp16 on CUDA), the logits cast to fp32.
    """
    dtype = torch.float16 if loader.device.type == "cuda" else torch.bfloat16
    total: torch.Tensor | None = None
    with torch.no_grad(), torch.autocast(loader.device.type, dtype=dtype, enabled=amp):
        for x, y in loader:
            logits = forward(x).float()
            loss, hits = cross_entropy(logits, y, "sum"), (logits.argmax(-1) == y).sum(-1)
            if total is None:
                total = torch.zeros(2, *loss.shape, device=loader.device)
            total[0] += loss
            total[1] += hits
    if total is None:
        raise ValueError("loader has no batches to evaluate")
    loss_sum, correct = total.view(2, -1).tolist()
    return [(s / loader.n, c / loader.n) for s, c in zip(loss_sum, correct)]


def evaluate(model: nn.Module, loader: DeviceLoader, amp: bool = False) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` over every batch of ``loader`` (eval mode).

    ``loss = sum_i CE(model(x_i), y_i) / N``, ``acc = #(argmax model(x_i) == y_i) / N``.

    >>> x = torch.zeros(4, 3, 32, 32, dtype=torch.uint8); y = torch.tensor([0, 1, 2, 3])
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    >>> _ = nn.init.zeros_(model[1].weight); _ = nn.init.zeros_(model[1].bias)
    >>> loss, acc = evaluate(model, DeviceLoader(x, y, 2, train=False, device="cpu"))
    >>> round(loss, 4), acc  # uniform logits: loss ln(10), only class 0 counted right
    (2.3026, 0.25)
    """
    check_bool("amp", amp)
    if not isinstance(model, nn.Module) or not isinstance(loader, DeviceLoader):
        raise ValueError(f"evaluate takes an nn.Module and a DeviceLoader, got {describe(model)} and {describe(loader)}")
    was_training = model.training
    model.eval()
    try:
        return member_scores(model, loader, amp)[0]
    finally:
        model.train(was_training)


def evaluate_into(hists: list[History], live: list[int], forward: Callable[[torch.Tensor], torch.Tensor],
                  test: DeviceLoader, val: DeviceLoader | None, amp: bool = False) -> None:
    """Append each live member's test (and validation, when ``val``) loss and accuracy to its History;
    ``forward(x)`` gives the live members' logits in the order of ``live``."""
    for m, (loss, acc) in zip(live, member_scores(forward, test, amp)):
        hists[m].test_loss.append(loss)
        hists[m].test_acc.append(acc)
    if val is not None:
        for m, (loss, acc) in zip(live, member_scores(forward, val, amp)):
            hists[m].val_loss.append(loss)
            hists[m].val_acc.append(acc)


def run_epochs(hists: list[History], epochs: int, total: int, steps_per_epoch: int,
               epoch_fn: Callable[[int, int], None], eval_fn: Callable[[list[int]], None], bar: Any) -> None:
    """The epoch loop of a run of ``total`` steps: ``epoch_fn(n, step)`` trains ``n`` steps from step
    ``step`` (:func:`train_epoch`), then ``eval_fn(live)`` evaluates the members that have not
    diverged; it stops early when every member has diverged. Sets every History's ``seconds``
    (the whole loop, evaluations included) and closes ``bar``, even when interrupted."""
    started, step = time.perf_counter(), 0
    try:
        for _ in range(epochs):
            n = min(steps_per_epoch, total - step)
            if n <= 0 or all(h.diverged for h in hists):
                break
            epoch_fn(n, step)
            live = [m for m, h in enumerate(hists) if not h.diverged]
            if live:
                eval_fn(live)
            step += n
    finally:
        seconds = time.perf_counter() - started
        for h in hists:
            h.seconds = seconds
        if bar is not None:
            bar.close()
