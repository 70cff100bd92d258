"""The record of one training run (:class:`History`): per-step and per-epoch numbers, saved as JSON.

:func:`gradkit.train.fit` and :func:`gradkit.stacked.fit_stacked` fill it; :mod:`gradkit.runs`
saves one file per run (``run-<id>.json``) and reads them back.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from .checks import plain, spec_label


@dataclasses.dataclass
class History:
    """What one training run did, step by step and epoch by epoch; saves to and loads from JSON.

    Per step: ``loss``, ``grad_norm_before``/``grad_norm_after`` (total L2 norm, or the clip
    method's norm, before and after clipping), ``clipped`` and ``lr``. Per epoch: ``train_loss``,
    ``train_acc`` (on the augmented batches as they were trained), ``test_loss``, ``test_acc``
    and ``epoch_seconds`` (the training part of the epoch, evaluation excluded). A run whose loss
    became NaN or inf has ``diverged=True`` and ``diverged_step`` = the first such step; its
    per-step records stop before that step and the epoch it broke in has no epoch record.
    A run whose loss stayed finite but blew up (:data:`BLOW_UP`: some step's loss above 10 times
    the first step's) is ``unstable``: :attr:`status` tells the three apart.

    Files are strict JSON: a non-finite number is written as ``null`` and its meaning kept in
    ``nonfinite`` (``{"field/index": "inf" | "-inf" | "nan"}``), so any JSON reader can open them;
    :meth:`load` puts the numbers back. :meth:`save` writes a temporary file and renames it, so a
    run file is either whole or absent.

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
    def unstable(self) -> bool:
        """True when the loss stayed finite but some step's loss exceeded :data:`BLOW_UP` times the first
        step's: ``max_t loss_t > 10 * loss_0`` (for cross-entropy over 10 classes, loss_0 is about
        ln 10 = 2.3, so above 23: the network predicts wrong classes with enormous confidence)."""
        return not self.diverged and bool(self.loss) and max(self.loss) > BLOW_UP * max(self.loss[0], 1e-12)

    @property
    def status(self) -> str:
        """``"diverged"`` (loss became NaN/inf, the run stopped), ``"unstable"`` (see :attr:`unstable`) or ``"ok"``."""
        return "diverged" if self.diverged else "unstable" if self.unstable else "ok"

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
        text = f"{spec_label(self.config.get('clip'))}, lr={self.config.get('lr', math.nan):.3g}"
        return text + " [synthetic data]" if self.synthetic else text

    def save(self, path: str | Path) -> Path:
        """Write the history as strict JSON, atomically (temporary file, then rename; parent folders
        are created); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        nonfinite: dict[str, str] = {}
        raw = _finite(plain(dataclasses.asdict(self)), "", nonfinite)
        if nonfinite:
            raw["nonfinite"] = nonfinite
        text = json.dumps(raw, allow_nan=False)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | Path) -> History:
        """Read a history written by :meth:`save` (also the older files with ``NaN``/``Infinity``).

        Every field is checked against :data:`FIELD_TYPES` (and ``config`` against
        :data:`CONFIG_TYPES`, each of :data:`CONFIG_KEYS` required), so a file with wrong types fails
        here and not later in a sorted table or a plot. Raises ``ValueError`` naming the file and the
        field when it is not a whole gradkit History.
        """
        def refuse(why: str) -> ValueError:
            return ValueError(f"path={str(path)!r} is not a gradkit History: {why}")

        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise refuse("not a regular file (a pipe or device would never end)")
        if info.st_size > MAX_FILE_BYTES:
            raise refuse(f"{info.st_size} bytes, more than any run file ({MAX_FILE_BYTES} at most); not read")
        try:
            raw = json.loads(Path(path).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
            raise refuse(f"{type(err).__name__}: {err}") from err
        if not isinstance(raw, dict):
            raise refuse(f"not a JSON object but {json.dumps(raw)[:40]}")
        unknown = set(raw) - set(FIELD_TYPES) - {"nonfinite"}
        if unknown:
            raise refuse(f"unknown keys {sorted(unknown)}")
        try:
            _restore_nonfinite(raw, raw.pop("nonfinite", {}))
            _check_fields(raw)
        except ValueError as err:
            raise refuse(str(err)) from err
        return cls(**raw)
# A run file larger than this is not read: 50 epochs of 390 steps with per-layer records every step
# of a 170-tensor model is about 130 MB.
MAX_FILE_BYTES = 1 << 30
# A finite loss this many times the first step's marks a run as unstable (History.unstable).
BLOW_UP = 10.0


# The settings fit writes into every History.config, in this order (data, device and progress are not
# settings); a file whose config lacks one was not written by gradkit.
CONFIG_KEYS = ("model", "epochs", "optimizer", "lr", "momentum", "weight_decay", "clip", "schedule", "amp",
               "batch_size", "seed", "monitor_every", "augment", "max_steps", "model_kw", "constraint")
NONFINITE = ("inf", "-inf", "nan")

# What History.load accepts for each field: a type name of _KINDS, "list:<kind>" for a list of them.
FIELD_TYPES: dict[str, str] = {
    "config": "config", "device": "str", "torch_version": "str", "dataset": "str", "synthetic": "bool",
    "date": "str", "seconds": "number", "steps_per_epoch": "count", "diverged": "bool", "diverged_step": "count?",
    "loss": "list:number", "grad_norm_before": "list:number", "grad_norm_after": "list:number",
    "clipped": "list:bool", "lr": "list:number", "train_loss": "list:number", "train_acc": "list:number",
    "test_loss": "list:number", "test_acc": "list:number", "val_loss": "list:number", "val_acc": "list:number",
    "step_norm": "list:number", "epoch_seconds": "list:number", "layer_names": "list:str",
    "layer_steps": "list:count", "layer_grad_norm": "list:numbers", "update_ratio": "list:numbers",
}
# What History.load accepts in config (required: CONFIG_KEYS; the rest when present: a sweep's run id and
# data settings). Other keys, e.g. of a keyword fit gains later, may hold any JSON value.
CONFIG_TYPES: dict[str, str] = {
    "model": "str", "epochs": "count", "optimizer": "str", "lr": "number", "momentum": "number",
    "weight_decay": "number", "clip": "str?", "schedule": "str?", "amp": "bool", "batch_size": "count",
    "seed": "count", "monitor_every": "count", "augment": "bool", "max_steps": "count?", "model_kw": "dict",
    "constraint": "str?", "run_id": "str", "subset": "count?", "test_subset": "count?", "data_seed": "count?",
    "val": "count?",
}
# Fields recorded together, so of one length in a whole file: per step (step_norm: also empty, as
# fit_stacked leaves it), per epoch of training, of test and of validation, per monitored step.
STEP_FIELDS = ("loss", "grad_norm_before", "grad_norm_after", "clipped", "lr")
SAME_LENGTH = (STEP_FIELDS, ("train_loss", "train_acc", "epoch_seconds"), ("test_loss", "test_acc"),
               ("val_loss", "val_acc"), ("layer_steps", "layer_grad_norm", "update_ratio"))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_KINDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "str": ("a string", lambda v: isinstance(v, str)),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "number": ("a number", _is_number),
    "count": ("an int >= 0", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0),
    "dict": ("a JSON object", lambda v: isinstance(v, dict)),
    "numbers": ("a list of numbers", lambda v: isinstance(v, list) and all(map(_is_number, v))),
}


def _check_value(name: str, value: Any, kind: str) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is of ``kind`` (``"count?"``: a count or null,
    ``"list:number"``: a list of numbers)."""
    if kind.endswith("?"):
        if value is None:
            return
        kind = kind[:-1]
    if kind.startswith("list:"):
        if not isinstance(value, list):
            raise ValueError(f"field {name!r} must be a list, got {_short(value)}")
        for i, item in enumerate(value):
            _check_value(f"{name}/{i}", item, kind[5:])
        return
    what, ok = _KINDS[kind]
    if not ok(value):
        raise ValueError(f"field {name!r} must be {what}, got {_short(value)}")


def _check_fields(raw: dict[str, Any]) -> None:
    """Check every field of a parsed History file (see :data:`FIELD_TYPES`); names the first bad field."""
    for name, value in raw.items():
        if name == "config":
            if not isinstance(value, dict):
                raise ValueError(f"field 'config' must be a JSON object of run settings, got {_short(value)}")
            missing = [k for k in CONFIG_KEYS if k not in value]
            if missing:
                raise ValueError(f"field 'config' lacks the run settings {missing}")
            for key, item in value.items():
                if key in CONFIG_TYPES:
                    _check_value(f"config/{key}", item, CONFIG_TYPES[key])
        else:
            _check_value(name, value, FIELD_TYPES[name])
    if "config" not in raw:
        raise ValueError("field 'config' is missing")
    for group in SAME_LENGTH:
        lengths = {name: len(raw.get(name, [])) for name in group}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"fields recorded together have different lengths: {lengths}")
    if len(raw.get("step_norm", [])) not in (0, len(raw.get("loss", []))):
        raise ValueError(f"field 'step_norm' has {len(raw['step_norm'])} entries for {len(raw.get('loss', []))} steps")
    layers = len(raw.get("layer_names", []))
    for name in ("layer_grad_norm", "update_ratio"):
        if any(len(row) != layers for row in raw.get(name, [])):
            raise ValueError(f"field {name!r} has rows that are not one number per layer ({layers} layer_names)")


def _restore_nonfinite(raw: dict[str, Any], nonfinite: Any) -> None:
    """Put back the non-finite numbers :meth:`History.save` wrote as null: ``{"loss/3": "inf"}`` sets
    ``raw["loss"][3] = inf``; each key must name a null in the file and each value be one of :data:`NONFINITE`."""
    if not isinstance(nonfinite, dict):
        raise ValueError(f"field 'nonfinite' must be a JSON object {{'field/index': 'inf'}}, got {_short(nonfinite)}")
    for key, text in nonfinite.items():
        if text not in NONFINITE:
            raise ValueError(f"field 'nonfinite' at {key!r} must be one of {', '.join(NONFINITE)}, got {_short(text)}")
        *where, last = key.split("/")
        target: Any = raw
        try:
            for part in where:
                target = target[int(part)] if isinstance(target, list) else target[part]
            slot = int(last) if isinstance(target, list) else last
            if target[slot] is not None:
                raise KeyError(key)
        except (KeyError, IndexError, ValueError, TypeError):
            raise ValueError(f"field 'nonfinite' names {key!r}, which is not a null in the file") from None
        target[slot] = float(text)


def _short(value: Any) -> str:
    """``repr(value)``, cut to 60 characters for an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _finite(value: Any, where: str, nonfinite: dict[str, str]) -> Any:
    """``value`` with each non-finite float replaced by None and noted in ``nonfinite`` under its path."""
    if isinstance(value, float) and not math.isfinite(value):
        nonfinite[where.lstrip("/")] = repr(value)
        return None
    if isinstance(value, list):
        return [_finite(v, f"{where}/{i}", nonfinite) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _finite(v, f"{where}/{k}", nonfinite) for k, v in value.items()}
    return value

