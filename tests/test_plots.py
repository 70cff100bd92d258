"""gradkit.plots: legends that cover no data, log-axis tick labels that do not collide."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from gradkit import plots, sweeps  # noqa: E402
from gradkit.train import History  # noqa: E402


def legends_off_the_data(fig) -> list[str]:
    """The legends of ``fig`` that overlap the data area of any of its axes (empty: none does)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    # a figure made without pyplot (the explorer's) has no renderer of its own
    canvas = fig.canvas if hasattr(fig.canvas, "get_renderer") else FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    boxes = [ax.get_window_extent(renderer) for ax in fig.axes]
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None] + list(fig.legends)
    return [", ".join(t.get_text() for t in leg.get_texts()) for leg in legends
            if any(leg.get_window_extent(renderer).overlaps(box) for box in boxes)]


def run(clip: str, steps: int = 60) -> History:
    rng = np.random.default_rng(0)
    norms = list(np.exp(rng.normal(0.5, 0.5, steps)))
    return History(config={"clip": clip, "lr": 0.05, "momentum": 0.9, "optimizer": "sgd"},
                   grad_norm_before=norms, grad_norm_after=[min(g, 0.5) for g in norms],
                   clipped=[g > 0.5 for g in norms], step_norm=list(0.05 * np.minimum(norms, 0.5) * 8),
                   lr=[0.05] * steps, loss=[2.0] * steps)


def test_lesson_03_panels_keep_their_legends_off_the_data():
    # lesson 03's gradient-norm figure: the threshold line runs across the whole panel
    none, clipped = run("none"), run("norm:0.5")
    fig, axes = plots.figure(1, 3, width=14.0, height=3.6)
    plots.grad_norm_trace(axes[0, 0], none.grad_norm_before, threshold=0.5, label=none.label)
    plots.grad_norm_trace(axes[0, 1], clipped.grad_norm_before, threshold=0.5, clipped=clipped.clipped, label=clipped.label)
    plots.clip_rate_curve(axes[0, 2], clipped.clipped, window=10, label=clipped.label)
    assert legends_off_the_data(fig) == []
    # lesson 03's step figure: the legend sat on the first steps and on the lr*c line
    fig, ax = plots.figure(1, 1, width=8.0, height=3.6)
    sweeps.draw_step_sizes(ax, {none.label: none, clipped.label: clipped}, threshold=0.5)
    assert legends_off_the_data(fig) == [] and len(ax.get_legend().get_texts()) == 4
    plt.close("all")


def test_remedy_bars_log_ticks_do_not_collide():
    # lesson 06's largest norms spanned 1.69 to 38.6: matplotlib's default labelled 2x10^0, 3x10^0, ... over each other
    hs = [History(config={"clip": "none"}, grad_norm_before=[g], val_acc=[0.3]) for g in (1.69, 7.6, 38.6)]
    fig, axes = plots.figure(1, 2, width=12, height=3)
    plots.remedy_bars(axes[0][0], axes[0][1], ["a", "b", "c"], hs)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    labels = [t for t in axes[0][1].get_xticklabels() if t.get_text() and t.get_visible()]
    lo, hi = axes[0][1].get_xlim()
    shown = [t for t in labels if lo <= t.get_position()[0] <= hi]
    assert [t.get_text() for t in shown] == ["2", "5", "10", "20"]
    boxes = sorted((t.get_window_extent(renderer) for t in shown), key=lambda b: b.x0)
    assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:]))
    plt.close("all")
