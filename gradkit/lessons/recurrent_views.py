"""Figures and the run slider of lesson 08, drawn with :mod:`gradkit.plots` (style and colours).

Each function draws one idea on given axes from :class:`gradkit.lessons.recurrent.Run` records;
:class:`RunSlider` scrubs through a set of shipped runs by clipping method and threshold and
trains the selected setting on a button press.
"""

from __future__ import annotations

import html
import math
import time
from typing import Any, Callable, Mapping, Sequence

import ipywidgets as ipw
import numpy as np

from gradkit import plots, widgets
from gradkit.clip import clipper
from gradkit.lessons.recurrent import DIVERGE_FACTOR, Run, config_differences, seed_table

SEED_COLORS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02")
LIVE_COLOR = "#000000"
# Below this ratio of largest to smallest value a linear axis reads better than a log one.
LOG_RATIO = 30.0


def _method(spec: str) -> str:
    return spec.partition(":")[0]


def _log_ticks(ax: Any, axis: str = "y") -> None:
    """Plain tick labels (0.01, 0.1, 1, 10) on a log axis, with 2 and 5 between decades when it
    spans under 2 decades, so that a short log axis still has several labels."""
    from matplotlib import ticker

    lo, hi = ax.get_ylim() if axis == "y" else ax.get_xlim()
    subs = (1.0,) if lo > 0 and np.log10(hi / lo) >= 2 else (1.0, 2.0, 5.0)
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_locator(ticker.LogLocator(base=10, subs=subs))
    target.set_major_formatter(ticker.FuncFormatter(lambda v, _pos: f"{v:g}"))
    target.set_minor_formatter(ticker.NullFormatter())


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
    with an ``x``; dashed lines at the ``thresholds`` (label -> c); the legend under the axes."""
    for label, run in runs.items():
        v = np.asarray(run.norm_before, dtype=float)
        line, = ax.plot(np.arange(v.size), v, linewidth=0.7, color=plots.color_for(_method(run.spec)), label=label)
        if run.diverged and v.size:
            ax.plot(v.size - 1, v[-1], "x", color=line.get_color(), markersize=9, mew=2)
    for label, c in (thresholds or {}).items():
        ax.axhline(c, color="black", linestyle="--", linewidth=1.0, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("||g|| before clipping (log scale)")
    plots.legend_below(ax, fontsize=8)
    return ax


def loss_traces(ax: Any, runs: Mapping[str, Run], *, window: int = 10, target: float | None = None) -> Any:
    """Training loss (``window``-step running mean, log axis) of each run; ``x`` where a run diverged;
    a dotted line at the success ``target``; the legend under the axes."""
    for label, run in runs.items():
        v = np.asarray(run.loss, dtype=float)
        if not v.size:
            continue
        m = plots.running_mean(v, min(window, v.size))
        line, = ax.plot(np.arange(v.size), m, color=plots.color_for(_method(run.spec)), label=label, linewidth=0.9)
        if run.diverged:
            ax.plot(v.size - 1, m[-1], "x", color=line.get_color(), markersize=9, mew=2)
    if target is not None:
        ax.axhline(target, color="black", linestyle=":", linewidth=1.0, label=f"success target {target:g} (test)")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(f"training loss ({window}-step mean, log)")
    plots.legend_below(ax, fontsize=8)
    return ax


def blowup_figure(free: Run, saved: Run, c: float, *, baseline: float, start: int | None = None, before: int = 30) -> Any:
    """Section 1's figure. Rows 1 and 2: one run each (``free`` without clipping, ``saved`` with norm
    clipping at ``c``), the gradient norm at every step (left, log axis, the threshold dashed, clipped
    steps dotted) and the training loss at every step (right, log axis, the trivial predictor's loss
    ``baseline`` dotted); an ``x`` where a run diverged, ``start`` (the step at which the unclipped
    blow-up began) marked; shared axes, so the rows compare. Row 3: a zoom on the unclipped run, one
    marker per step, from ``before`` steps ahead of ``start`` to its end (without ``start``: around
    its largest gradient), where the full trace packs the blow-up into a few pixels."""
    fig, axes = plots.figure(3, 2, width=12, height=8.4, height_ratios=(1, 1, 0.9))
    for k in (0, 1):
        axes[1][k].sharex(axes[0][k])
        axes[1][k].sharey(axes[0][k])
    steps = max(len(free.loss), len(saved.loss), 1)
    for row, run in zip(axes[:2], (free, saved)):
        color = plots.color_for(_method(run.spec))
        v = np.asarray(run.norm_before, dtype=float)
        loss = np.asarray(run.loss, dtype=float)
        row[0].plot(np.arange(v.size), v, linewidth=0.5, color=color)
        row[0].axhline(c, color="black", linestyle="--", linewidth=1.0, label=f"c = {c:g}")
        clipped = np.flatnonzero(run.clipped)
        if clipped.size:
            row[0].plot(clipped, v[clipped], ".", color="black", markersize=3, label=f"clipped steps ({clipped.size})")
        row[1].plot(np.arange(loss.size), loss, linewidth=0.5, color=color)
        row[1].axhline(baseline, color="black", linestyle=":", linewidth=1.0, label=f"trivial predictor {baseline:.3g}")
        if run.diverged:
            bound = DIVERGE_FACTOR * baseline
            row[0].plot(v.size - 1, v[-1], "x", color="black", markersize=10, mew=2, label=f"diverged at step {run.diverged_step}")
            row[1].plot(run.diverged_step, bound, "x", color="black", markersize=10, mew=2,
                        label=f"loss > {DIVERGE_FACTOR:g} x trivial: diverged")
        if start is not None and run is free:
            for ax in row:
                ax.axvline(start, color="#b2182b", linewidth=0.8, linestyle="-.", label=f"blow-up begins, step {start}")
        share = "" if run.spec == "none" else f", {100 * run.clip_share:.1f}% of steps clipped"
        end = f"diverged at step {run.diverged_step}" if run.diverged else f"{len(loss)} steps, did not diverge"
        row[0].set_title(f"{plots.spec_label(run.spec)}: {end}{share}", fontsize=9, loc="left")
        row[0].set_ylabel("||g|| before clipping (log)")
        row[1].set_ylabel("training loss, every step (log)")
        for ax in row:
            ax.set_yscale("log")
            ax.set_xlabel("step")
            ax.set_xlim(0, steps)
    v = np.asarray(free.norm_before, dtype=float)
    loss = np.asarray(free.loss, dtype=float)
    at = start if start is not None else (int(np.argmax(v)) if v.size else 0)
    lo = max(0, at - before)
    hi = v.size if start is not None else min(v.size, at + before // 3 + 1)
    zoom = np.arange(lo, hi)
    color = plots.color_for("none")
    axes[2][0].plot(zoom, v[lo:hi], ".-", color=color, markersize=4, linewidth=0.8)
    axes[2][0].axhline(c, color="black", linestyle="--", linewidth=1.0)
    axes[2][1].plot(zoom, loss[lo:hi], ".-", color=color, markersize=4, linewidth=0.8)
    axes[2][1].axhline(baseline, color="black", linestyle=":", linewidth=1.0)
    what = "the blow-up" if start is not None else "its largest gradient"
    for ax, name in zip(axes[2], ("||g|| before clipping (log)", "training loss (log)")):
        if start is not None:
            ax.axvline(start, color="#b2182b", linewidth=0.8, linestyle="-.")
        ax.set_yscale("log")
        ax.set_ylabel(name)
        ax.set_xlabel("step")
        ax.set_title(f"zoom, no clipping: steps {lo} to {hi - 1}, around {what}", fontsize=9, loc="left")
    for ax in axes.flat:
        _log_ticks(ax)
    handles = {}
    for ax in axes.flat:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=3, fontsize=8)
    return fig


def cliff(ax: Any, probe: Mapping[str, np.ndarray], *, lr: float, c: float, typical: float | None = None) -> Any:
    """The loss along the gradient direction at a spike (:func:`~gradkit.lessons.recurrent.cliff_probe`),
    with where the plain step (``lr * ||g||``), the clipped step (``lr * c``) and, given the run's
    median norm ``typical``, an ordinary step would land; linear y unless the loss spans more than
    :data:`LOG_RATIO`; the legend under the axes."""
    d, loss = probe["distance"], probe["loss"]
    ax.plot(d, loss, color=plots.color_for("none"), marker=".", markersize=3, linewidth=1.0, label="loss along -g/||g||")
    full = lr * float(probe["grad_norm"])
    if typical is not None:
        ax.axvline(lr * typical, color="#999999", linestyle=":", label=f"ordinary step: lr x median ||g|| = {lr * typical:.2g}")
    ax.axvline(lr * c, color=plots.color_for("norm"), linestyle="--", label=f"clipped step: lr x c = {lr * c:.3g}")
    ax.axvline(full, color="#b2182b", linestyle="--", label=f"unclipped step: lr x ||g|| = {full:.3g}")
    positive = loss[np.isfinite(loss) & (loss > 0)]
    if positive.size and positive.max() / positive.min() > LOG_RATIO:
        ax.set_yscale("log")
        _log_ticks(ax)
        ax.set_ylabel("loss on the spike's batch (log)")
    else:
        ax.set_ylim(bottom=0)
        ax.set_ylabel("loss on the spike's batch")
    ax.set_xlabel("distance moved along the update direction")
    plots.legend_below(ax, ncol=2, fontsize=8)
    return ax


def hidden_grad_curves(ax: Any, curves: Mapping[str, np.ndarray], colors: Mapping[str, str] | None = None,
                       styles: Mapping[str, str] | None = None) -> Any:
    """``||dL/dh_t||`` against the time step t for each model (log axis): the gradient that reaches
    each step of the sequence from a loss read at the last step; the legend under the axes."""
    for label, g in curves.items():
        ax.plot(np.arange(1, len(g) + 1), g, label=label, color=(colors or {}).get(label),
                linestyle=(styles or {}).get(label, "-"))
    ax.set_yscale("log")
    ax.set_xlabel("time step t (the loss reads h_T at the last step)")
    ax.set_ylabel("||dL/dh_t|| (log scale)")
    plots.legend_below(ax, ncol=2, fontsize=8)
    return ax


def first_step_share(ax: Any, runs: Sequence[Run], colors: Mapping[str, str]) -> Any:
    """For each run with a recorded ``grad_profile``: ``||dL/dh_1|| / ||dL/dh_T||`` at each evaluation
    step over training (log axis), one colour per cell; how much of the gradient reaches the first
    time step as the run trains."""
    seen: set[str] = set()
    for run in runs:
        if not run.grad_profile:
            continue
        g = np.asarray(run.grad_profile, dtype=float)
        cell = run.config["cell"]
        label = None if cell in seen else f"{cell.upper()} ({sum(r.config['cell'] == cell for r in runs)} seeds)"
        seen.add(cell)
        ax.plot(run.test_steps[:len(g)], g[:, 0] / g[:, -1], color=colors.get(cell), linewidth=1.0, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("||dL/dh_1|| / ||dL/dh_T|| (log)")
    plots.legend_below(ax, fontsize=8)
    return ax


def held_out_curves(ax: Any, runs: Sequence[Run], *, target: float, label: Callable[[Run], str] | None = None,
                    baseline: float | None = None, live: Sequence[Run] = (), legend: str = "below") -> Any:
    """Test loss against step for each run (log axis), one colour per seed, the success target dotted.
    A run that diverged is drawn on to an ``x`` at its divergence step, placed at the divergence
    bound (``DIVERGE_FACTOR * baseline``; without ``baseline`` at its last test loss), so a run that
    diverged before its first evaluation still shows. ``live``: runs trained now, drawn dashed black.
    ``legend``: ``"below"`` the axes, ``"inside"`` (where matplotlib finds room), or ``"lines"``: no
    legend box, the target and the divergence bound named on their lines (for a slider's figure,
    whose fixed margins would cut a legend below off and whose curves a legend inside would cover)."""
    bound = DIVERGE_FACTOR * baseline if baseline is not None else None
    for i, run in enumerate(runs):
        text = label(run) if label else f"seed {run.config.get('seed')}"
        if run.diverged:
            text += f" (diverged at step {run.diverged_step})"
        color = SEED_COLORS[i % len(SEED_COLORS)]
        ax.plot(run.test_steps, run.test_loss, color=color, label=text, linewidth=1.2)
        if run.diverged and run.test_loss:
            top = bound if bound is not None else run.test_loss[-1]
            ax.plot([run.test_steps[-1], run.diverged_step], [run.test_loss[-1], top], ":", color=color, linewidth=1.0)
            ax.plot(run.diverged_step, top, "x", color=color, markersize=9, mew=2)
    for j, run in enumerate(live):
        ax.plot(run.test_steps, run.test_loss, "--", color=LIVE_COLOR, linewidth=0.9,
                label="trained now" if j == 0 else None)
        if run.diverged:
            ax.plot(run.diverged_step, bound if bound is not None else run.test_loss[-1], "x", color=LIVE_COLOR, markersize=6)
    ax.axhline(target, color="black", linestyle=":", linewidth=1.0, label=f"target {target:g}")
    if bound is not None and any(r.diverged for r in [*runs, *live]):
        ax.axhline(bound, color="#b2182b", linestyle=":", linewidth=0.8, label=f"diverged: loss > {DIVERGE_FACTOR:g} x trivial")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("test loss (log scale)")
    if legend == "below":
        plots.legend_below(ax, ncol=2, fontsize=8)
    elif legend == "inside":
        ax.legend(fontsize=8, loc="best", framealpha=0.85, ncol=2)
    elif legend == "lines":
        for line in ax.lines:
            if line.get_label().startswith(("target", "diverged:")) and line.get_xydata().size:
                y = line.get_xydata()[0, 1]
                ax.annotate(line.get_label(), (0.01, y), xycoords=("axes fraction", "data"), textcoords="offset points",
                            xytext=(0, 3), fontsize=8, color=line.get_color())
    else:
        raise ValueError(f"legend={legend!r}: accepted values are 'below', 'inside', 'lines'")
    return ax


def live_summary(live: Sequence[Run], shipped: Sequence[Run], target: float) -> str:
    """How runs trained now compare with the shipped runs of the same setting and seed: the number
    with the same outcome (diverged at the same step, or solved or not alike); runs that differ in
    a setting (fewer steps, say) are named as not compared.

    >>> a = Run({"clip": "norm:1.0", "seed": 0, "steps": 10}, test_loss=[0.01])
    >>> live_summary([a], [a], 0.04)
    '1 of 1 seeds ended as the shipped run of the same setting and seed did.'
    >>> live_summary([Run({"clip": "norm:1.0", "seed": 0, "steps": 5}, test_loss=[0.2])], [a], 0.04)
    'not compared with the shipped runs: these differ in steps (5 here, 10 there).'
    """
    pairs, differ = [], {}
    for run in live:
        twin = next((s for s in shipped if s.spec == run.spec and s.config.get("seed") == run.config.get("seed")), None)
        if twin is None:
            continue
        diffs = config_differences(run, twin)
        if diffs:
            differ.update(diffs)
        else:
            pairs.append((run, twin))
    if differ:
        what = ", ".join(f"{k} ({a} here, {b} there)" for k, (a, b) in differ.items())
        return f"not compared with the shipped runs: these differ in {what}."
    if not pairs:
        return "no shipped run of this setting and seed to compare with."
    same = sum((a.diverged_step, a.solved(target)) == (b.diverged_step, b.solved(target)) for a, b in pairs)
    return f"{same} of {len(pairs)} seeds ended as the shipped run of the same setting and seed did."


class RunSlider:
    """A slider over shipped runs with a button that trains the selected setting now.

    Pick a clipping method and a threshold; the view shows every seed's gradient norms (left) and
    test loss (right), one colour per seed in both, for the stored setting of that method nearest to that threshold (on a log
    scale); the slider stops at the stored thresholds. "Train this setting" trains that setting for
    the shipped seeds with ``trainer(spec, seeds) -> list[Run]`` (a few seconds on a CPU for these
    small nets), adds the runs to :attr:`live` and draws their test losses dashed over the shipped ones; the
    line beside the button says what it trained, how it ended and how it compares with the shipped
    runs. ``data``: ``spec``, ``solved``, ``seeds``, ``clip_share``. ``examples``: the specs the
    static fallback draws.

    >>> r = [Run({"clip": "none", "seed": 0}, norm_before=[1.0], clipped=[False], test_steps=[0], test_loss=[0.1])]
    >>> RunSlider(r, target=0.2).data["solved"]
    1
    >>> r2 = r + [Run({"clip": c, "seed": 0}, norm_before=[1.0], clipped=[True], test_steps=[0], test_loss=[0.3])
    ...           for c in ("norm:0.5", "norm:2.0")]
    >>> RunSlider(r2, target=0.2, examples=["none", "norm:2.0"]).data["spec"]  # a slider that moves something
    'norm:2.0'
    """

    def __init__(self, runs: Sequence[Run], *, target: float, examples: Sequence[str] = (),
                 trainer: Callable[[str, list[int]], list[Run]] | None = None, baseline: float | None = None) -> None:
        self.runs, self.target, self.baseline, self.trainer = list(runs), target, baseline, trainer
        self.live: list[Run] = []
        specs = list(dict.fromkeys(r.spec for r in self.runs))
        self._grid: dict[str, list[float]] = {}
        for spec in specs:
            c = clipper(spec)
            self._grid.setdefault(c.method, []).append(c.threshold if c.threshold is not None else math.nan)
        thresholds = sorted({t for ts in self._grid.values() for t in ts if math.isfinite(t)}) or [1.0]
        # Start on a clipped setting: with "no clipping" selected the threshold slider would move nothing.
        clipped = [clipper(s) for s in [*examples, *specs] if clipper(s).method != "none"]
        first = clipped[0] if clipped else clipper(specs[0])
        controls = {"method": ipw.Dropdown(value=first.method, options=list(self._grid), description="method"),
                    "c": widgets.stop_slider("threshold c", first.threshold or thresholds[0], thresholds, continuous=False)}
        shown = [{"method": clipper(s).method, "c": clipper(s).threshold or thresholds[0]} for s in examples]
        self.view = widgets.LiveView(controls, self._compute, self._draw, panels=2, examples=shown, panel_size=(4.8, 3.3))
        self.button = ipw.Button(description="Train this setting", icon="play", disabled=trainer is None,
                                 tooltip="train the selected setting now, for the shipped seeds")
        self.status = ipw.HTML("" if trainer else "no trainer given: the button is off")
        self.button.on_click(widgets.guarded(self.train_selected, self.status))
        controls_box, image = self.view.widget.children
        self.widget = ipw.VBox([controls_box, ipw.HBox([self.button, self.status]), image])

    @property
    def data(self) -> dict[str, Any]:
        return self.view.data

    @property
    def controls(self) -> dict[str, Any]:
        return self.view.controls

    def static(self, examples: Sequence[dict[str, Any]] | None = None) -> Any:
        return self.view.static(examples)

    def _nearest(self, method: str, c: float) -> str:
        if method == "none":
            return "none"
        best = min(self._grid[method], key=lambda t: abs(math.log(t) - math.log(c)))
        return clipper(f"{method}:{best}").spec

    def _compute(self, method: str, c: float) -> dict[str, Any]:
        spec = self._nearest(method, c)
        group = [r for r in self.runs if r.spec == spec]
        [row] = seed_table(group, self.target)
        return {"spec": spec, "runs": group, "live": [r for r in self.live if r.spec == spec], "solved": row.solved,
                "seeds": row.seeds, "clip_share": row.clip_share}

    def _draw(self, data: dict[str, Any], axes: Sequence[Any]) -> None:
        group, spec = data["runs"], data["spec"]
        for i, run in enumerate(group):
            axes[0].plot(run.norm_before, linewidth=0.6, color=SEED_COLORS[i % len(SEED_COLORS)])
        threshold = clipper(spec).threshold
        if threshold is not None and _method(spec) != "value":
            axes[0].axhline(threshold, color="black", linestyle="--", linewidth=1.0)
        axes[0].set_yscale("log")
        axes[0].set_xlabel("step")
        axes[0].set_ylabel("||g|| before clipping (log)")
        share = "" if spec == "none" else f": {100 * data['clip_share']:.1f}% of steps clipped"
        axes[0].set_title(f"{plots.spec_label(spec)}{share}", fontsize=9)
        held_out_curves(axes[1], group, target=self.target, baseline=self.baseline, live=data["live"], legend="lines")
        live = f" (dashed: {len(data['live'])} trained now)" if data["live"] else ""
        axes[1].set_title(f"solved {data['solved']} of {data['seeds']} seeds{live}", fontsize=9)

    def train_selected(self) -> list[Run]:
        """Train the selected setting now for the shipped seeds of that setting; add the runs to
        :attr:`live`, redraw, and say beside the button what happened. Returns the new runs."""
        if self.trainer is None:
            raise ValueError("trainer is None: pass trainer=(spec, seeds) -> runs to train a setting live")
        spec = self.data["spec"]
        shipped = [r for r in self.runs if r.spec == spec]
        seeds = [int(r.config["seed"]) for r in shipped]
        label = html.escape(plots.spec_label(spec))
        self.button.disabled = True
        self.status.value = f"training {label}, seeds {', '.join(map(str, seeds))} ..."
        started = time.perf_counter()
        try:
            runs = self.trainer(spec, seeds)
        finally:
            self.button.disabled = False
        self.live = [r for r in self.live if r.spec != spec] + list(runs)
        [row] = seed_table(runs, self.target)
        steps = runs[0].config.get("steps") if runs else "?"
        self.status.value = (f"trained {label} now, {len(runs)} seeds x {steps} steps in {time.perf_counter() - started:.1f} s: "
                             f"solved {row.solved}, diverged {row.diverged}; "
                             f"{html.escape(live_summary(runs, shipped, self.target))} Runs added (test loss dashed; "
                             f"{len(self.live)} trained now).")
        self.view.update()
        return list(runs)


def contrast(ax_rnn: Any, ax_cifar: Any, rnn_runs: Sequence[Run], target: float, cifar_rows: Sequence[Any],
             matched: Sequence[Any], setting: str) -> dict[str, Any]:
    """Share of steps clipped against what clipping bought, in the two regimes, norm clipping only.

    Left: each norm-clipping threshold of the recurrent runs, x = median share of steps clipped,
    y = seeds solved (of the seeds run), the unclipped runs' count dashed. Right: each norm row of
    one CIFAR-10 sweep ``setting`` (:func:`gradkit.sweeps.sweep_table` rows), x = its clip rate,
    y = mean validation accuracy; open markers: unclipped runs at the matched smaller learning rate
    (:func:`gradkit.sweeps.matched_rows`), the unclipped run at the setting's own rate dashed.
    Returns the plotted numbers: ``rnn``: spec -> (share, solved, seeds), ``rnn_none``: solved
    without clipping, ``cifar``: threshold -> (rate, accuracy, matched accuracy or nan, matched lr
    or nan, :meth:`~gradkit.sweeps.MatchedRow.verdict` or ""), ``cifar_none``: the unclipped
    accuracy, ``label``: the setting's label (:func:`contrast_findings` puts them in words).
    """
    rows = seed_table(rnn_runs, target)
    base = next(r for r in rows if r.spec == "none")
    rnn = {r.spec: (r.clip_share, r.solved, r.seeds) for r in rows if _method(r.spec) == "norm"}
    order = sorted(rnn, key=lambda s: rnn[s][0])
    ax_rnn.plot([100 * rnn[s][0] for s in order], [rnn[s][1] for s in order], "o", color=plots.color_for("norm"),
                markersize=7, label="norm clipping, one threshold c (labelled)")
    for k, s in enumerate(order):  # alternate above and below: neighbours on a log axis can sit close
        ax_rnn.annotate(f"c={clipper(s).threshold:g}", (100 * rnn[s][0], rnn[s][1]), textcoords="offset points",
                        xytext=(0, 8 if k % 2 == 0 else -15), ha="center", fontsize=8)
    ax_rnn.axhline(base.solved, color=plots.color_for("none"), linestyle="--", label=f"no clipping: {base.solved} of {base.seeds}")
    ax_rnn.set_ylim(-0.6, base.seeds + 0.9)
    ax_rnn.set_ylabel(f"seeds that solved the task (of {base.seeds})")
    mine = [r for r in cifar_rows if r.setting == setting]
    none = next(r for r in mine if r.method == "none")
    pairs = {m.threshold: m for m in matched if m.setting == setting and m.method == "norm"}
    cifar = {}
    for r in sorted((r for r in mine if r.method == "norm"), key=lambda r: r.clip_rate):
        m = pairs.get(r.threshold)
        cifar[r.threshold] = (r.clip_rate, r.val_mean, float(np.mean(m.matched)) if m else math.nan,
                              float(np.mean(m.lrs)) if m else math.nan, m.verdict() if m else "")
    ax_cifar.plot([100 * v[0] for v in cifar.values()], [100 * v[1] for v in cifar.values()], "o", markersize=7,
                  color=plots.color_for("norm"), label="norm clipping, one threshold c (labelled)")
    for c, v in cifar.items():  # labels to the left: the thresholds that clip ~all steps share one x
        ax_cifar.annotate(f"c={c:g}", (100 * v[0], 100 * v[1]), textcoords="offset points", xytext=(-9, -3),
                          ha="right", fontsize=8)
    for v in cifar.values():
        if math.isfinite(v[2]):
            ax_cifar.plot([100 * v[0]] * 2, [100 * v[1], 100 * v[2]], color="#999999", linewidth=0.8)
    with_match = [(100 * v[0], 100 * v[2]) for v in cifar.values() if math.isfinite(v[2])]
    if with_match:
        ax_cifar.plot(*zip(*with_match), "o", mfc="white", markersize=7, color=plots.color_for("none"),
                      label="no clipping at that c's matched smaller lr")
    ax_cifar.axhline(100 * none.val_mean, color=plots.color_for("none"), linestyle="--",
                     label=f"no clipping at the same lr: {100 * none.val_mean:.1f}%")
    ax_cifar.set_ylabel("validation accuracy (%, mean over seeds)")
    for ax in (ax_rnn, ax_cifar):
        ax.set_xscale("log")
        ax.set_xlim(0.05, 200)
        _log_ticks(ax, "x")
        ax.set_xlabel("steps clipped (%, log scale)")
        plots.legend_below(ax, ncol=1, fontsize=8)
    return {"rnn": rnn, "rnn_none": base.solved, "cifar": cifar, "cifar_none": none.val_mean, "label": none.label}


def contrast_findings(points: Mapping[str, Any], *, rare: float = 0.2) -> list[str]:
    """Sentences computed from :func:`contrast`'s numbers: the recurrent thresholds that clipped fewer
    than ``rare`` of the steps and what they solved against no clipping; the CIFAR-10 threshold
    with the best validation accuracy, its clip rate, and how it compares with the unclipped run at
    its matched smaller learning rate.

    >>> pts = {"rnn": {"norm:8.0": (0.001, 0, 5), "norm:1.0": (0.02, 5, 5), "norm:0.1": (0.6, 4, 5)}, "rnn_none": 0,
    ...        "cifar": {0.5: (0.99, 0.62, 0.61, 0.06, "like a smaller lr")}, "cifar_none": 0.14, "label": "CNN lr=0.2"}
    >>> print("\\n".join(contrast_findings(pts)))
    Recurrent net: no clipping solved 0 of 5 seeds; the thresholds that clipped under 20% of the steps: c=1 (2.0% clipped, 5 of 5 solved); c=8 (0.1% clipped, 0 of 5 solved).
    CIFAR-10, CNN lr=0.2: no clipping reached 14.0% validation accuracy; the best threshold, c=0.5, clipped 99% of the steps and reached 62.0%; no clipping at the matched smaller lr 0.06 reached 61.0%: like a smaller lr.
    """
    rnn = points["rnn"]
    seeds = next(iter(rnn.values()))[2] if rnn else 0
    rare_ones = [f"c={clipper(s).threshold:g} ({100 * v[0]:.1f}% clipped, {v[1]} of {v[2]} solved)"
                 for s, v in sorted(rnn.items(), key=lambda kv: clipper(kv[0]).threshold) if v[0] < rare]
    out = [f"Recurrent net: no clipping solved {points['rnn_none']} of {seeds} seeds; the thresholds that clipped under "
           f"{100 * rare:.0f}% of the steps: " + ("; ".join(rare_ones) if rare_ones else "none") + "."]
    cifar = points["cifar"]
    if cifar:
        c = max(cifar, key=lambda t: cifar[t][1])
        rate, acc, twin, lr, verdict = cifar[c]
        text = (f"CIFAR-10, {points['label']}: no clipping reached {100 * points['cifar_none']:.1f}% validation accuracy; "
                f"the best threshold, c={c:g}, clipped {100 * rate:.0f}% of the steps and reached {100 * acc:.1f}%")
        if math.isfinite(twin):
            text += f"; no clipping at the matched smaller lr {lr:.3g} reached {100 * twin:.1f}%: {verdict}"
        out.append(text + ".")
    return out
