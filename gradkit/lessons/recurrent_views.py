"""Figures and the run slider of lesson 08, drawn with :mod:`gradkit.plots` (style and colours).

Each function draws one idea on a given axes from :class:`gradkit.lessons.recurrent.Run` records;
:func:`run_view` scrubs through a set of shipped runs by clipping method and threshold.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import ipywidgets as ipw
import numpy as np

from gradkit import plots, widgets
from gradkit.clip import clipper
from gradkit.lessons.recurrent import Run, seed_table

SEED_COLORS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02")


def _method(spec: str) -> str:
    return spec.partition(":")[0]


def by_setting(runs: Sequence[Run]) -> dict[str, Run]:
    """``{label: run}`` for :func:`norm_traces` and :func:`loss_traces` with one legend entry per
    setting: the first run of each setting is labelled with its method, threshold and number of
    seeds; the others get labels that start with ``_``, which matplotlib leaves out of the legend.

    >>> runs = [Run(config={"clip": c, "seed": s}) for c in ("none", "norm:1.0") for s in (0, 1)]
    >>> list(by_setting(runs))
    ['no clipping (2 seeds)', '_none, seed 1', 'norm clipping, c=1 (2 seeds)', '_norm:1.0, seed 1']
    """
    out: dict[str, Run] = {}
    seen: set[str] = set()
    for r in runs:
        if r.spec in seen:
            out[f"_{r.spec}, seed {r.config['seed']}"] = r
        else:
            seen.add(r.spec)
            n = sum(q.spec == r.spec for q in runs)
            out[f"{plots.spec_label(r.spec)} ({n} seed{'s' if n > 1 else ''})"] = r
    return out


def norm_traces(ax: Any, runs: Mapping[str, Run], *, thresholds: Mapping[str, float] | None = None) -> Any:
    """Gradient norm before clipping at every step of each run (log axis); a run that diverged ends
    with an ``x``; dashed lines at the ``thresholds`` (label -> c)."""
    for label, run in runs.items():
        v = np.asarray(run.norm_before, dtype=float)
        line, = ax.plot(np.arange(v.size), v, linewidth=0.8, color=plots.color_for(_method(run.spec)), label=label)
        if run.diverged and v.size:
            ax.plot(v.size - 1, v[-1], "x", color=line.get_color(), markersize=9, mew=2)
    for label, c in (thresholds or {}).items():
        ax.axhline(c, color="black", linestyle="--", linewidth=1.0, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("||g|| before clipping (log scale)")
    ax.legend()
    return ax


def loss_traces(ax: Any, runs: Mapping[str, Run], *, window: int = 10, target: float | None = None) -> Any:
    """Training loss (``window``-step running mean, log axis) of each run; ``x`` where a run diverged;
    a dotted line at the success ``target``."""
    for label, run in runs.items():
        v = np.asarray(run.loss, dtype=float)
        if not v.size:
            continue
        m = plots.running_mean(v, min(window, v.size))
        line, = ax.plot(np.arange(v.size), m, color=plots.color_for(_method(run.spec)), label=label)
        if run.diverged:
            ax.plot(v.size - 1, m[-1], "x", color=line.get_color(), markersize=9, mew=2)
    if target is not None:
        ax.axhline(target, color="black", linestyle=":", linewidth=1.0, label=f"success target {target:g} (test)")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(f"training loss ({window}-step mean, log)")
    ax.legend()
    return ax


def cliff(ax: Any, probe: Mapping[str, np.ndarray], *, lr: float, c: float) -> Any:
    """The loss along the gradient direction at a spike (:func:`~gradkit.lessons.recurrent.cliff_probe`),
    with where the plain step (``lr * ||g||``) and the clipped step (``lr * c``) would land."""
    d, loss = probe["distance"], probe["loss"]
    ax.plot(d, loss, color=plots.color_for("none"), marker=".", markersize=4, label="loss along -g/||g||")
    full = lr * float(probe["grad_norm"])
    ax.axvline(full, color=plots.color_for("none"), linestyle="--", label=f"unclipped step: lr*||g|| = {full:.3g}")
    ax.axvline(lr * c, color=plots.color_for("norm"), linestyle="--", label=f"clipped step: lr*c = {lr * c:.3g}")
    ax.set_yscale("log")
    ax.set_xlabel("distance moved along the update direction")
    ax.set_ylabel("loss on the spike's batch (log)")
    ax.legend()
    return ax


def hidden_grad_curves(ax: Any, curves: Mapping[str, np.ndarray], colors: Mapping[str, str] | None = None) -> Any:
    """``||dL/dh_t||`` against the time step t for each model (log axis): the gradient that reaches
    each step of the sequence from a loss read at the last step."""
    for label, g in curves.items():
        ax.plot(np.arange(1, len(g) + 1), g, label=label, color=(colors or {}).get(label))
    ax.set_yscale("log")
    ax.set_xlabel("time step t (the loss reads h_T at the last step)")
    ax.set_ylabel("||dL/dh_t|| (log scale)")
    ax.legend()
    return ax


def held_out_curves(ax: Any, runs: Sequence[Run], *, target: float, label: Callable[[Run], str] | None = None) -> Any:
    """Test loss against step for each run (log axis), one colour per seed, the success target dotted."""
    for i, run in enumerate(runs):
        text = label(run) if label else f"seed {run.config.get('seed')}"
        if run.diverged:
            text += f" (diverged at step {run.diverged_step})"
        ax.plot(run.test_steps, run.test_loss, color=SEED_COLORS[i % len(SEED_COLORS)], label=text)
    ax.axhline(target, color="black", linestyle=":", linewidth=1.0, label=f"target {target:g}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("test loss (log scale)")
    ax.legend()
    return ax


def run_view(runs: Sequence[Run], *, target: float, examples: Sequence[str] = ()) -> widgets.LiveView:
    """A slider over shipped runs: pick a clipping method and a threshold; the view shows every seed's
    gradient norms (left) and test loss (right) for the stored setting of that method nearest to
    that threshold (on a log scale); the slider stops at the stored thresholds. ``data``: ``spec``, ``solved``, ``seeds``, ``clip_share``. ``examples``: the
    specs the static fallback draws.

    >>> r = [Run({"clip": "none", "seed": 0}, norm_before=[1.0], clipped=[False], test_steps=[0], test_loss=[0.1])]
    >>> run_view(r, target=0.2).data["solved"]
    1
    >>> r2 = r + [Run({"clip": c, "seed": 0}, norm_before=[1.0], clipped=[True], test_steps=[0], test_loss=[0.3])
    ...           for c in ("norm:0.5", "norm:2.0")]
    >>> run_view(r2, target=0.2, examples=["none", "norm:2.0"]).data["spec"]  # a slider that moves something
    'norm:2.0'
    """
    specs = list(dict.fromkeys(r.spec for r in runs))
    grid: dict[str, list[float]] = {}
    for spec in specs:
        c = clipper(spec)
        grid.setdefault(c.method, []).append(c.threshold if c.threshold is not None else math.nan)
    thresholds = sorted({t for ts in grid.values() for t in ts if math.isfinite(t)}) or [1.0]

    def nearest(method: str, c: float) -> str:
        if method == "none":
            return "none"
        best = min(grid[method], key=lambda t: abs(math.log(t) - math.log(c)))
        return clipper(f"{method}:{best}").spec

    def compute(method: str, c: float) -> dict[str, Any]:
        spec = nearest(method, c)
        group = [r for r in runs if r.spec == spec]
        [row] = seed_table(group, target)
        return {"spec": spec, "runs": group, "solved": row.solved, "seeds": row.seeds, "clip_share": row.clip_share}

    def draw(data: dict[str, Any], axes: Sequence[Any]) -> None:
        group, spec = data["runs"], data["spec"]
        for i, run in enumerate(group):
            axes[0].plot(run.norm_before, linewidth=0.7, color=SEED_COLORS[i % len(SEED_COLORS)])
        threshold = clipper(spec).threshold
        if threshold is not None and _method(spec) != "value":
            axes[0].axhline(threshold, color="black", linestyle="--", linewidth=1.0)
        axes[0].set_yscale("log")
        axes[0].set_xlabel("step")
        axes[0].set_ylabel("||g|| before clipping (log)")
        share = "" if spec == "none" else f", {100 * data['clip_share']:.1f}% of steps clipped (median)"
        axes[0].set_title(f"{plots.spec_label(spec)}{share}", fontsize=9)
        held_out_curves(axes[1], group, target=target)
        axes[1].set_title(f"solved {data['solved']} of {data['seeds']} seeds", fontsize=9)

    # Start on a clipped setting: with "no clipping" selected the threshold slider would move nothing.
    clipped = [clipper(s) for s in [*examples, *specs] if clipper(s).method != "none"]
    first = clipped[0] if clipped else clipper(specs[0])
    controls = {"method": ipw.Dropdown(value=first.method, options=list(grid), description="method"),
                "c": widgets.stop_slider("threshold c", first.threshold or thresholds[0], thresholds, continuous=False)}
    shown = [{"method": clipper(s).method, "c": clipper(s).threshold or thresholds[0]} for s in examples]
    return widgets.LiveView(controls, compute, draw, panels=2, examples=shown, panel_size=(4.8, 3.3))


def contrast(ax_rnn: Any, ax_cifar: Any, rnn_runs: Sequence[Run], target: float, cifar_rows: Sequence[Any]) -> dict[str, Any]:
    """Share of steps clipped against what clipping bought, in the two regimes.

    Left: each clipped setting of the recurrent runs, x = median share of steps clipped, y = seeds
    solved minus seeds solved without clipping (percentage points of the seeds). Right: each clipped
    row of a CIFAR-10 sweep table (:func:`gradkit.sweeps.sweep_table`), x = its clip rate, y = its
    mean test accuracy minus the unclipped run's of the same setting (points). Returns the plotted
    numbers (``rnn``: spec -> (share, gain), ``cifar``: (setting, spec) -> (rate, gain)).
    """
    rows = seed_table(rnn_runs, target)
    base = next(r for r in rows if r.spec == "none")
    rnn = {r.spec: (r.clip_share, 100.0 * (r.solved - base.solved) / r.seeds) for r in rows if r.spec != "none"}
    for spec, (share, gain) in rnn.items():
        ax_rnn.scatter(100 * share, gain, color=plots.color_for(_method(spec)), s=28)
    for method in dict.fromkeys(_method(s) for s in rnn):
        ax_rnn.scatter([], [], color=plots.color_for(method), label=plots.METHOD_NAMES.get(method, method))
    ax_rnn.axhline(0, color="black", linewidth=0.8)
    ax_rnn.set_xlabel("steps clipped (% , median over seeds)")
    ax_rnn.set_ylabel("seeds solved: clipped - unclipped (points)")
    ax_rnn.legend()
    cifar: dict[tuple[str, str], tuple[float, float]] = {}
    nones = {r.setting: r for r in cifar_rows if r.method == "none"}
    settings = list(dict.fromkeys(r.setting for r in cifar_rows if r.setting in nones))
    markers = "osD^v"
    for row in cifar_rows:
        if row.method == "none" or row.setting not in nones:
            continue
        gain = 100.0 * (row.mean - nones[row.setting].mean)
        spec = f"{row.method}:{row.threshold:g}"
        cifar[(row.setting, spec)] = (row.clip_rate, gain)
        ax_cifar.scatter(100 * row.clip_rate, gain, color=plots.color_for(row.method), s=22,
                         marker=markers[settings.index(row.setting) % len(markers)])
    for i, setting in enumerate(settings):
        ax_cifar.scatter([], [], color="#999999", marker=markers[i % len(markers)], label=nones[setting].label)
    ax_cifar.axhline(0, color="black", linewidth=0.8)
    ax_cifar.set_xlabel("steps clipped (%, mean over seeds)")
    ax_cifar.set_ylabel("test accuracy: clipped - unclipped (points)")
    ax_cifar.legend(fontsize=7)
    return {"rnn": rnn, "cifar": cifar}
