"""Suggest a clipping threshold from the gradient norms a model actually produces.

:func:`suggest_threshold` trains a copy of the model briefly without clipping, records the total
gradient norm ``||g||`` of every step, and suggests norm-clipping thresholds at quantiles of
that distribution: the median (clips about half the steps: a strong, steady brake) and the 90th
percentile (clips only the largest tenth: trims spikes, leaves ordinary steps alone).

A threshold is a bound on the size of an update. Read off the norms of *this* model, data, batch
size and learning rate, it is meaningful for them only: change any of these and measure again.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from torch import nn

from .checks import check_int, check_list, check_number


@dataclass
class ThresholdSuggestion:
    """Gradient norms of a short unclipped run and the thresholds read off them.

    ``norms``: ``||g||`` per step (finite steps only); ``quantiles``: ``{q: value}``, the
    ``q``-quantile of ``norms`` (numpy's linear interpolation) for each requested ``q``; ``median``
    and ``p90``: the 0.5 and 0.9 quantiles; ``steps``: the number of steps measured; ``diverged``:
    the loss became NaN/inf and the run stopped early; ``config``: the training run's settings.
    """

    norms: np.ndarray
    quantiles: dict[float, float]
    steps: int
    diverged: bool = False
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float:
        """The 0.5 quantile of the norms: norm clipping at it clips about half the steps."""
        return float(np.quantile(self.norms, 0.5))

    @property
    def p90(self) -> float:
        """The 0.9 quantile of the norms: norm clipping at it clips about one step in ten."""
        return float(np.quantile(self.norms, 0.9))

    def clipped_share(self, threshold: float) -> float:
        """Share of the measured steps whose norm exceeds ``threshold`` (what ``norm:threshold`` would clip).

        >>> ThresholdSuggestion(np.array([1.0, 2.0, 3.0, 4.0]), {0.5: 2.5, 0.9: 3.7}, 4).clipped_share(2.5)
        0.5
        """
        return float(np.mean(self.norms > threshold)) if self.norms.size else math.nan

    def plot(self, ax: Any = None) -> Any:
        """Histogram of the norms (log bins) with a dashed line per suggested threshold; returns the axes."""
        from . import plots  # matplotlib is loaded when a figure is asked for

        if ax is None:
            _, ax = plots.figure(1, 1, width=6.5, height=3.4)
        plots.grad_norm_histogram(ax, self.norms, label=f"||g|| over {self.steps} unclipped steps")
        for q, value in sorted(self.quantiles.items()):
            ax.axvline(value, color=plots.color_for("norm"), linestyle="--", linewidth=1.2)
            ax.annotate(f"q{100 * q:g} = {value:.3g}", (value, 1.0), xycoords=("data", "axes fraction"),
                        rotation=90, ha="right", va="top", fontsize=8)
        ax.set_title("suggested norm-clipping thresholds")
        return ax


def suggest_threshold(model: nn.Module | str, data: Any, steps: int = 200, quantiles: Sequence[float] = (0.5, 0.9), *,
                      optimizer: str = "sgd", lr: float = 0.01, batch_size: int = 128, seed: int = 0,
                      device: str = "auto", model_kw: dict[str, Any] | None = None,
                      progress: bool = False) -> ThresholdSuggestion:
    """Train a copy of ``model`` for ``steps`` steps without clipping and suggest norm-clipping
    thresholds at ``quantiles`` of the gradient norms ``||g||`` it recorded.

    ``model`` is deep-copied (the caller's weights and gradients are untouched), or built by name
    with ``model_kw``. Training goes through :func:`gradkit.train.fit` with ``clip="none"`` and the
    given optimizer, ``lr``, ``batch_size`` and ``seed``, for as many epochs as ``steps`` needs.
    If the loss becomes NaN/inf the run stops and the norms measured until then are used.

    >>> from gradkit.data import synthetic
    >>> s = suggest_threshold("seed_cnn", synthetic(n=64, n_test=32), steps=4, batch_size=16,
    ...                       model_kw={"width": 0.125})
    >>> s.steps, bool(s.median <= s.p90)
    (4, True)
    """
    from .loop import check_data
    from .train import fit

    check_int("steps", steps)
    qs = [check_number("quantiles", q, maximum=1.0) for q in check_list("quantiles", quantiles)]
    check_int("batch_size", batch_size)  # used here, before fit checks it
    check_data(data)
    if isinstance(model, nn.Module):
        model = copy.deepcopy(model)
    per_epoch = -(-int(data.train_y.numel()) // batch_size)
    h = fit(model, data, epochs=-(-steps // per_epoch), optimizer=optimizer, lr=lr, clip="none",
            batch_size=batch_size, seed=seed, device=device, progress=progress, max_steps=steps, model_kw=model_kw)
    norms = np.asarray(h.grad_norm_before, dtype=float)
    norms = norms[np.isfinite(norms)]
    if norms.size == 0:
        raise ValueError("the run recorded no finite gradient norm (it diverged at once): lower lr and try again")
    values = {q: float(np.quantile(norms, q)) for q in qs}
    return ThresholdSuggestion(norms=norms, quantiles=values, steps=int(norms.size), diverged=bool(h.diverged),
                               config=dict(h.config))
