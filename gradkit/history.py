"""The record of one training run (:class:`History`): per-step and per-epoch numbers, saved as JSON.

:func:`gradkit.train.fit` and :func:`gradkit.stacked.fit_stacked` fill it; :mod:`gradkit.runs`
saves one file per run (``run-<id>.json``) and reads them back.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .checks import spec_label


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
        raw = _finite(dataclasses.asdict(self), "", nonfinite)
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

        Raises ``ValueError`` naming the file when it is not a whole gradkit History.
        """
        try:
            raw = json.loads(Path(path).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"path={str(path)!r} is not a gradkit History: {err}") from err
        if not isinstance(raw, dict):
            raise ValueError(f"path={str(path)!r} is not a gradkit History: not a JSON object")
        for key, text in (raw.pop("nonfinite", None) or {}).items():
            *where, last = key.split("/")
            target = raw
            for part in where:
                target = target[int(part)] if isinstance(target, list) else target[part]
            target[int(last) if isinstance(target, list) else last] = float(text)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(raw) - names
        if unknown:
            raise ValueError(f"path={str(path)!r} is not a gradkit History: unknown keys {sorted(unknown)}")
        try:
            return cls(**raw)
        except TypeError as err:
            raise ValueError(f"path={str(path)!r} is not a gradkit History: {err}") from err


# A finite loss this many times the first step's marks a run as unstable (History.unstable).
BLOW_UP = 10.0


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

