"""The threshold explorer of lesson 04: move a threshold slider, see what clipping did to training.

A sweep (:func:`gradkit.runs.sweep`) trains a *setting* (model, optimizer, learning rate, epochs,
data) once without clipping and once per clipping method and threshold, for a few seeds. The
explorer indexes those runs and shows, for the selected setting, method and threshold, six views
(one figure, one screen) against the unclipped run of the same setting and seed and, when the sweep
has one (``matched``, from ``matched.json``), the unclipped run at the matched learning rate
``lr * mean_t ||g'_t|| / ||g_t||`` (:func:`gradkit.sweeps.matched_lr`):

1. training loss per step;
2. final validation accuracy against the threshold of the selected method only, on that method's own
   axis (seed mean, min..max band), the matched-learning-rate runs beside it, the selection starred;
3. the histogram of gradient norms before clipping, the threshold line and the share of steps clipped;
4. the step actually taken ``||w_{t+1} - w_t||``, against ``lr * c`` and the momentum bound
   ``lr * c / (1 - m)`` for norm clipping;
5. the update-to-weight ratio per layer over training, with and without clipping;
6. validation accuracy per epoch.

The threshold slider stops at the thresholds of the selected method: the sweep's own for this
setting, the method's standard range (:data:`gradkit.sweeps.THRESHOLD_RANGES`) and any trained live.
A stop without a run shows the nearest threshold in the sweep (nearest on a log scale) and says so.
"Train this setting" trains the selected configuration now (:func:`gradkit.runs.sweep` with one
config, so it is cached on disk by config, in :func:`live_dir` in the lessons), with a progress bar,
and adds it to the views. Runs without a widget front end draw a static grid of representative
thresholds instead (:func:`gradkit.widgets.show`).

A diverged run (loss NaN or inf: :func:`gradkit.train.fit` stops it) has no final accuracy; it
counts as chance, 10% on CIFAR-10's ten classes, the accuracy of predicting one class for every image.
"""

from __future__ import annotations

import html
import math
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from . import plots
from .clip import METHODS
from .data import cache_dir
from .runtime import get_profile
from .sweeps import (
    accuracy_by_method,
    draw_step_sizes,
    final_val_accuracy,
    matched_rows,
    mean_scale,
    model_label,
    run_id,
    setting_key,
    setting_label,
    THRESHOLD_RANGES,
    split_spec,
    sweep_table,
)
from .widgets import RENDER_LOCK, Coalescer, fmt, guarded, new_figure, png, show, stop_slider, stops
# Model sizes offered for live training when the sweep has no run of that model.
LIVE_MODELS: dict[str, dict[str, Any]] = {
    "seed_cnn": {"width": 0.25},
    "plain_cnn": {"depth": 20, "width": 8},
    "resnet": {"depth": 8, "width": 8},
}
# The clip methods whose threshold is on the same scale as the total gradient norm in the histogram.
_NORM_SCALE = ("norm", "norm_inf")
_SCALE_NOTE = {
    "value": "value: c bounds each element, not ||g||",
    "scaled_value": "scaled value: c/sqrt(n) bounds each element",
    "tensor_norm": "per-tensor: c bounds each tensor's norm",
    "agc": "AGC: lambda is relative to each unit's weight norm",
    "auto": "AutoClip: the threshold is a percentile of past norms",
}


def live_dir(profile: str | None = None) -> Path:
    """Where live runs are cached: ``live/<profile>`` in the user's gradkit cache folder
    (``$GRADKIT_CACHE``, else ``~/.cache/gradkit``, the folder :func:`gradkit.data.cifar10` caches
    decoded images in), outside the checkout.

    >>> live_dir("smoke").parts[-2:]
    ('live', 'smoke')
    """
    return cache_dir() / "live" / get_profile(profile)


# Inches: tall enough for the legends under the panels and the run legend above them.
FIGURE_HEIGHT = 8.2


class _ProgressBar:
    """tqdm's ``update``/``set_postfix``/``close`` drawn on an ``IntProgress`` and a line of text, for
    :func:`gradkit.train.fit`'s ``progress=``: widget updates reach the browser from any thread."""

    def __init__(self, bar: Any, text: Any, total: int, desc: str) -> None:
        self.bar, self.text, self.desc, self.started = bar, text, desc, time.perf_counter()
        bar.max, bar.value = max(total, 1), 0
        bar.layout.visibility = "visible"
        self._show("")

    def _show(self, postfix: str) -> None:
        self.text.value = (f"{html.escape(self.desc)}: step {self.bar.value}/{self.bar.max}, "
                           f"{time.perf_counter() - self.started:.1f} s{postfix}")

    def update(self, n: int = 1) -> None:
        self.bar.value = min(self.bar.value + n, self.bar.max)
        self._show("")

    def set_postfix(self, **values: Any) -> None:
        self._show("".join(f", {k} {html.escape(str(v))}" for k, v in values.items()))

    def close(self) -> None:
        self.bar.layout.visibility = "hidden"


def _nearest(values: Sequence[float], target: float) -> float:
    """The value nearest ``target`` on a log scale."""
    return min(values, key=lambda v: abs(math.log10(v) - math.log10(target)))


class SweepIndex:
    """The runs of a sweep, found by setting, method, threshold and seed."""

    def __init__(self, histories: Iterable[Any]) -> None:
        self.runs: dict[str, Any] = {}
        self.settings: dict[str, dict[str, Any]] = {}
        self._by: dict[tuple[str, str, float | None, int], str] = {}
        for h in histories:
            self.add(h)

    def add(self, h: Any) -> str:
        """Index one run; returns its setting key."""
        key = setting_key(h.config)
        method, threshold = split_spec(h.config.get("clip"))
        self.runs[run_id(h)] = h
        self.settings.setdefault(key, {k: v for k, v in h.config.items() if k not in ("clip", "seed", "run_id")})
        self._by[(key, method, threshold, int(h.config.get("seed", 0)))] = run_id(h)
        return key

    def find(self, key: str, method: str, threshold: float | None, seed: int) -> Any | None:
        """The run of that setting, clip and seed, or None."""
        rid = self._by.get((key, method, threshold, seed))
        return self.runs.get(rid) if rid else None

    def thresholds(self, key: str, method: str) -> list[float]:
        """The thresholds of ``method`` run for setting ``key``, ascending."""
        return sorted({t for (k, m, t, _) in self._by if k == key and m == method and t is not None})

    def seeds(self, key: str) -> list[int]:
        """The seeds run for setting ``key``, ascending."""
        return sorted({s for (k, *_, s) in self._by if k == key})

    def histories(self, key: str) -> list[Any]:
        """Every run of setting ``key``."""
        return [self.runs[rid] for (k, *_), rid in self._by.items() if k == key]

    def clipped_settings(self) -> list[str]:
        """The settings with at least one clipped run (an unclipped matched-learning-rate run alone is not one)."""
        return sorted({k for (k, m, *_) in self._by if m != "none"})

    def lookup(self, model: str, model_kw: dict[str, Any], optimizer: str, lr: float) -> str | None:
        """The setting with that model, optimizer and learning rate that has the most runs, or None."""
        keys = [k for k, c in self.settings.items()
                if c.get("model") == model and (c.get("model_kw") or {}) == model_kw
                and c.get("optimizer") == optimizer and math.isclose(float(c.get("lr", math.nan)), lr)]
        return max(keys, key=lambda k: len(self.histories(k))) if keys else None


class ThresholdExplorer:
    """Sliders over a precomputed sweep, with a button that trains the selected setting live.

    ``histories``: runs of :func:`gradkit.runs.sweep` (e.g. ``load_sweep("results")``).
    ``data``: the Dataset live runs train on; None lets :func:`gradkit.runs.sweep` load CIFAR-10
    with the subset sizes recorded in the setting's config. ``results_dir``: where live runs are
    cached (runs already there are loaded too; :func:`live_dir` is the user's cache); None disables
    the button. ``live_steps``: the button's runs stop after that many steps (None: full length).
    ``matched``: ``{clipped run id: matched-learning-rate run id}`` (:func:`gradkit.sweeps.load_matched`).

    ``controls`` holds the widgets (``model``, ``optimizer``, ``lr``, ``method``, ``threshold``,
    ``no_clip``, ``train``); ``views`` the data last shown, with the ids of the runs it came from;
    ``widget`` is what to display; :meth:`show` displays it (without a widget front end, :meth:`static`).
    The figure is redrawn only once the widget is shown, one PNG per change, coalesced like
    :class:`gradkit.widgets.LiveView`'s.
    """

    def __init__(self, histories: Iterable[Any], data: Any = None, results_dir: str | Path | None = None,
                 live_steps: int | None = None, matched: dict[str, str] | None = None) -> None:
        import ipywidgets as w

        from .runs import load_sweep
        from .train import OPTIMIZERS

        runs = list(histories)
        self.results_dir = Path(results_dir) if results_dir is not None else None
        if self.results_dir is not None and self.results_dir.is_dir():
            runs += load_sweep(self.results_dir)
        if not runs:
            raise ValueError("histories is empty: pass the runs of a sweep, e.g. load_sweep('results')")
        self.index = SweepIndex(runs)
        self.matched = dict(matched or {})
        self.data = data
        self.live_steps = live_steps
        self.views: dict[str, Any] = {}
        self.redraws = 0
        self._shown = False
        first = self.index.settings[max(self.index.settings, key=lambda k: len(self.index.histories(k)))]
        self._models = self._model_options()
        self._hold = False
        # Learning rates of settings with clipped runs: matched-learning-rate runs are shown beside those.
        lrs = sorted({float(self.index.settings[k]["lr"]) for k in self.index.clipped_settings()}
                     or {float(c["lr"]) for c in self.index.settings.values()})
        sweep_methods = {split_spec(h.config.get("clip"))[0] for h in runs} - {"none"}
        methods = [m for m in METHODS if m in sweep_methods] + [m for m in METHODS if m not in sweep_methods | {"none"}]
        style = {"description_width": "initial"}
        self.controls: dict[str, Any] = {
            "model": w.Dropdown(options=list(self._models), description="model", style=style,
                                value=model_label(first["model"], first.get("model_kw"))),
            "optimizer": w.Dropdown(options=list(OPTIMIZERS), value=first.get("optimizer", "sgd"),
                                    description="optimizer", style=style),
            "lr": w.Dropdown(options=lrs, value=float(first["lr"]), description="learning rate", style=style),
            "method": w.Dropdown(options=[(plots.METHOD_NAMES[m], m) for m in methods],
                                 value="norm" if "norm" in sweep_methods else methods[0],
                                 description="method", style=style),
            "threshold": stop_slider("threshold", 1.0, [1.0], continuous=False, width="460px"),
            "no_clip": w.Checkbox(value=False, description="no clipping"),
            "train": w.Button(description="Train this setting", icon="play", disabled=self.results_dir is None,
                              tooltip="train the selected configuration now (cached by config)"),
        }
        self._status = w.HTML()
        self._train_status = w.HTML()
        self._progress = w.IntProgress(min=0, max=1, layout=w.Layout(width="240px", visibility="hidden"))
        self._image = w.Image(format="png", layout=w.Layout(width="1350px"))
        self._coalescer = Coalescer(self._redraw)
        for name in ("model", "optimizer", "lr", "method", "threshold", "no_clip"):
            self.controls[name].observe(self._changed, names="value")
        self.controls["train"].on_click(guarded(self.train_selected, self._train_status))
        c = self.controls
        self.widget = w.VBox([
            w.HBox([c["model"], c["optimizer"], c["lr"]]),
            w.HBox([c["method"], c["threshold"], c["no_clip"]]),
            self._status, w.HBox([c["train"], self._progress, self._train_status]), self._image,
        ])
        self._set_stops(middle=True)
        self.refresh()

    def _model_options(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """Dropdown label -> (model name, model_kw): the sweep's models, then live-only sizes of the others."""
        options = {model_label(c["model"], c.get("model_kw")): (c["model"], dict(c.get("model_kw") or {}))
                   for c in self.index.settings.values()}
        present = {name for name, _ in options.values()}
        options.update({model_label(n, kw): (n, kw) for n, kw in LIVE_MODELS.items() if n not in present})
        return options

    def _setting(self) -> str | None:
        model, model_kw = self._models[self.controls["model"].value]
        return self.index.lookup(model, model_kw, self.controls["optimizer"].value, self.controls["lr"].value)

    def _stops(self, extra: Iterable[float] = ()) -> list[float]:
        """The threshold slider's stops for the selected setting and method: the sweep's thresholds,
        the method's standard range (1-3-10 stops from 0.001 to 100 for a method without one) and ``extra``."""
        key, method = self._setting(), self.controls["method"].value
        swept = self.index.thresholds(key, method) if key else []
        return sorted({*swept, *(THRESHOLD_RANGES.get(method) or stops(1e-3, 1e2, (1, 3))), *map(float, extra)})

    def _set_stops(self, middle: bool = False, value: float | None = None) -> None:
        """Give the slider the stops of the selected setting and method, on ``value``, else (``middle``,
        or when its value is no longer a stop) on the middle threshold of the sweep, else of the stops."""
        slider = self.controls["threshold"]
        current = float(slider.value)
        options = self._stops([value] if value is not None else [])
        if value is None:
            key = self._setting()
            swept = self.index.thresholds(key, self.controls["method"].value) if key else []
            middle_of = swept or options
            value = middle_of[len(middle_of) // 2] if middle or current not in options else current
        self._hold = True
        try:
            slider.options = [(fmt(t), t) for t in options]
            slider.value = value
        finally:
            self._hold = False

    def _changed(self, change: dict[str, Any]) -> None:
        if self._hold:
            return
        if change["owner"] in (self.controls["model"], self.controls["optimizer"], self.controls["lr"],
                               self.controls["method"]):
            self._set_stops(middle=change["owner"] is self.controls["method"])
        self.refresh()

    def select(self, **values: Any) -> dict[str, Any]:
        """Set controls by name and refresh once, e.g. ``select(model="plain_cnn", lr=0.05, method="agc")``.
        ``model`` may be a model name (its first size in the dropdown). Without ``threshold``, a new
        method starts at its middle threshold; a ``threshold`` that is not a stop of the slider becomes
        one (the views show the nearest threshold in the sweep). Returns :attr:`views`."""
        names = [k for k in self.controls if k != "train"]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(f"cannot select {unknown}; accepted names: {', '.join(names)}")
        model = values.get("model")
        if model is not None and model not in self._models:
            labels = [label for label, (name, _) in self._models.items() if name == model]
            if not labels:
                raise ValueError(f"model={model!r} is not offered; accepted: {', '.join(self._models)} "
                                 f"or a name among {', '.join(sorted({n for n, _ in self._models.values()}))}")
            values["model"] = labels[0]
        threshold = values.get("threshold")
        if threshold is not None and not (isinstance(threshold, (int, float)) and threshold > 0):
            raise ValueError(f"threshold must be a positive number, got {threshold!r}")
        self._hold = True
        try:
            for name in ("model", "optimizer", "lr", "method", "no_clip"):
                if name in values:
                    self.controls[name].value = values[name]
        finally:
            self._hold = False
        if threshold is not None:
            self._set_stops(value=float(threshold))
        elif {"model", "optimizer", "lr", "method"} & set(values):
            self._set_stops(middle="method" in values)
        self.refresh()
        return self.views

    def selection(self) -> dict[str, Any]:
        """The selected setting key, method and threshold: the slider's value snapped to the nearest
        threshold run in the sweep (None for no clipping), and the slider's own value."""
        key = self._setting()
        method = "none" if self.controls["no_clip"].value else self.controls["method"].value
        requested = float(self.controls["threshold"].value)
        available = self.index.thresholds(key, method) if key else []
        threshold = None if method == "none" else (_nearest(available, requested) if available else None)
        return {"setting": key, "method": method, "threshold": threshold, "requested": requested}

    def compute_views(self) -> dict[str, Any]:
        """The data of the six views for the current selection (see the module docstring)."""
        sel = self.selection()
        key, method, threshold = sel["setting"], sel["method"], sel["threshold"]
        views: dict[str, Any] = {**sel, "available": False}
        if key is None or (method != "none" and threshold is None):
            return views
        seed = self.index.seeds(key)[0]
        run = self.index.find(key, method, threshold, seed)
        base = self.index.find(key, "none", None, seed)
        if run is None:
            return views
        matched = self.index.runs.get(self.matched.get(run_id(run), ""))
        histories = self.index.histories(key)
        rows = sweep_table(histories)
        chosen = next(r for r in rows if r.method == method and r.threshold == threshold)
        baseline_row = next((r for r in rows if r.method == "none"), None)
        # The accuracy view shows one method, on its own threshold axis: c of norm clipping, c of
        # value clipping and AGC's lambda measure different things.
        shown = method if method != "none" else self.controls["method"].value
        pairs = [m for m in matched_rows(histories + [self.index.runs[i] for i in self.matched.values()
                                                      if i in self.index.runs], self.matched)
                 if m.method == shown]
        before = np.asarray(run.grad_norm_before, dtype=float)
        after = np.asarray(run.grad_norm_after, dtype=float)
        clipped = np.asarray(run.clipped, dtype=bool)
        base_norms = np.asarray(base.grad_norm_before, dtype=float) if base is not None else before
        finite = base_norms[np.isfinite(base_norms)]
        views.update(
            available=True, label=setting_label(run.config), seed=seed, run_id=run_id(run),
            run_ids=chosen.run_ids, baseline_id=run_id(base) if base is not None else None,
            matched_id=run_id(matched) if matched is not None else None,
            matched_lr=float(matched.config["lr"]) if matched is not None else None,
            scale=mean_scale(run),
            loss=np.asarray(run.loss, dtype=float),
            baseline_loss=np.asarray(base.loss, dtype=float) if base is not None else None,
            matched_loss=np.asarray(matched.loss, dtype=float) if matched is not None else None,
            accuracy={m: v for m, v in accuracy_by_method(rows).items() if m == shown},
            accuracy_method=shown,
            baseline_accuracy=baseline_row.val_accuracies if baseline_row else None,
            matched_accuracy=([m.threshold for m in pairs], [m.matched for m in pairs]),
            selected_accuracy=(threshold, chosen.val_mean) if threshold is not None else None,
            median_norm=float(np.median(finite)) if finite.size else math.nan,
            norms=before, baseline_norms=base_norms if base is not None else None,
            threshold_line=threshold if method in _NORM_SCALE else None,
            clipped_share=float(clipped.mean()) if clipped.size else math.nan,
            clipped=clipped, norm_after=after,
            step_factor=np.where(clipped, after / np.where(before > 0, before, np.nan), np.nan),
            layer_names=list(run.layer_names), layer_steps=np.asarray(run.layer_steps),
            update_ratio=np.asarray(run.update_ratio, dtype=float),
            baseline_layer_steps=np.asarray(base.layer_steps) if base is not None else None,
            baseline_update_ratio=np.asarray(base.update_ratio, dtype=float) if base is not None else None,
            val_acc=np.asarray(run.val_acc, dtype=float),
            baseline_val_acc=np.asarray(base.val_acc, dtype=float) if base is not None else None,
            matched_val_acc=np.asarray(matched.val_acc, dtype=float) if matched is not None else None,
        )
        return views

    def refresh(self) -> None:
        """Recompute :attr:`views` and, once the widget is shown, redraw the figure (six views, one PNG).
        Safe to call from several threads: changes that arrive during a redraw share one more redraw."""
        self._coalescer.request()

    def _redraw(self) -> None:
        views = self.compute_views()
        self.views = views
        self._status.value = self._describe(views)
        if self._shown:
            self._image.value = png(self.draw() if views["available"] else self._placeholder())
            self.redraws += 1

    def _describe(self, v: dict[str, Any]) -> str:
        """One line of HTML: which run the figure shows, and what to do when the sweep has none."""
        train = ": press <b>Train this setting</b>" if self.results_dir is not None else ""
        sym = "lambda" if v["method"] == "agc" else "c"
        if v["setting"] is None:
            return f"<i>this setting is not in the sweep{train}</i>"
        if not v["available"]:
            return f"<i>the sweep has no {plots.METHOD_NAMES.get(v['method'], v['method'])} run of this setting{train}</i>"
        if v["threshold"] is None:
            return f"showing the unclipped run (seed {v['seed']})"
        shown = f"<b>{sym}={fmt(v['threshold'])}</b> (seed {v['seed']})"
        if math.isclose(v["threshold"], v["requested"]):
            return f"showing the run at {shown}"
        return f"no run at {sym}={fmt(v['requested'])}{train or ''}; showing the nearest run in the sweep, {shown}"

    @staticmethod
    def _placeholder() -> Any:
        fig, axes = new_figure(1, 1, width=6.0, height=1.0)
        axes[0, 0].set_axis_off()
        axes[0, 0].text(0.5, 0.5, "no run for this selection (see the line above)", ha="center", va="center")
        return fig

    def summary(self) -> str:
        """The selected run beside the unclipped run of the same seed and, when there is one, the unclipped
        run at the matched learning rate, in numbers read from the runs: loss over the last 10 steps,
        first/median/largest ||g|| before clipping, share of steps clipped and the mean gradient scale,
        the median step ||w_{t+1} - w_t||, the median update-to-weight ratio of the first and last weight
        layers, and the final validation accuracy."""
        v = self.views
        if not v.get("available"):
            raise ValueError("the selection has no run in the sweep: choose another setting, or train it")
        sel, base = self.index.runs[v["run_id"]], self.index.runs.get(v["baseline_id"] or "")
        matched = self.index.runs.get(v["matched_id"] or "")
        weights = [j for j, n in enumerate(v["layer_names"]) if not n.endswith("bias")] or [0]

        def row(h: Any) -> list[str]:
            norms = np.asarray(h.grad_norm_before, dtype=float)
            ratio = np.asarray(h.update_ratio, dtype=float)
            first, last = ((f"{np.median(ratio[:, j]):.2g}" for j in (weights[0], weights[-1])) if ratio.ndim == 2
                           else ("-", "-"))
            steps = f"{np.median(h.step_norm):.3g}" if h.step_norm else "-"
            val = f"{100 * final_val_accuracy(h):.1f}%" + (" (diverged: chance)" if h.diverged else "")
            return [f"{np.mean(h.loss[-10:]):.3f}", f"{norms[0]:.3g} / {np.median(norms):.3g} / {norms.max():.3g}",
                    f"{100 * h.clip_rate:.0f}%, scale {mean_scale(h):.2f}", steps, f"{first} / {last}", val]

        labels = ["training loss, last 10 steps (ln 10 = 2.303: a uniform guess)",
                  "||g|| before clipping: first step / median / largest",
                  "steps clipped, mean gradient scale ||g'||/||g||", "median step ||w_t+1 - w_t||",
                  f"update/weight ratio, median: {v['layer_names'][weights[0]]} / {v['layer_names'][weights[-1]]}",
                  "final validation accuracy"]
        columns = [(plots.spec_label(self._spec(v)), row(sel))]
        if base is not None and base is not sel:
            columns.append((plots.METHOD_NAMES["none"], row(base)))
        if matched is not None:
            columns.append((f"no clipping at the matched lr {fmt(v['matched_lr'])}", row(matched)))
        lines = [f"{v['label']}, seed {v['seed']}: " + " | ".join(name for name, _ in columns)]
        for i, label in enumerate(labels):
            lines.append(f"  {label}: " + " | ".join(values[i] for _, values in columns))
        return "\n".join(lines)

    def draw(self) -> Any:
        """The six views of :attr:`views` in one 2x3 figure (unknown to pyplot); returns the figure."""
        v = self.views
        if not v.get("available"):
            raise ValueError("the selection has no run in the sweep: choose another setting, or train it")
        fig, axes = new_figure(2, 3, width=13.5, height=FIGURE_HEIGHT)
        self._draw_figure(fig, axes, v)
        return fig

    def _draw_figure(self, fig: Any, axes: Any, v: dict[str, Any]) -> None:
        """The six views into the 2x3 ``axes`` of ``fig``, the runs named once below them (the loss, step and
        per-epoch panels share their colours) and every other legend under its panel, off the data."""
        self._draw_row(v, list(axes[0]) + list(axes[1]))
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=8,
                   title="runs (loss, step and per-epoch panels)", title_fontsize=8)
        fig.suptitle(f"{v['label']}, seed {v['seed']}: {plots.spec_label(self._spec(v))}")

    @staticmethod
    def _spec(v: dict[str, Any]) -> str:
        return "none" if v["threshold"] is None else f"{v['method']}:{v['threshold']:g}"

    def _draw_row(self, v: dict[str, Any], axes: list[Any]) -> None:
        """Draw the six views into ``axes``: loss, accuracy vs threshold, histogram, step size, update
        ratio, validation accuracy per epoch."""
        label = plots.spec_label(self._spec(v))
        none = plots.METHOD_NAMES["none"]
        matched = f"no clipping, lr={fmt(v['matched_lr'])} (matched)" if v["matched_id"] else None
        colors = {label: plots.color_for(v["method"]), none: plots.color_for("none"), matched: "tab:orange"}
        # The unclipped runs first, so the selected run is drawn on top where they coincide.
        def curves(own: Any, baseline: Any, match: Any) -> dict[str, Any]:
            out = {}
            if baseline is not None and v["method"] != "none":
                out[none] = baseline
            if matched and match is not None:
                out[matched] = match
            out[label] = own
            return out

        it = iter(axes)
        ax = next(it)
        plots.loss_curves(ax, curves(v["loss"], v["baseline_loss"], v["matched_loss"]), colors=colors,
                          dashed=[matched] if matched else ())
        ax.get_legend().remove()  # the runs are named once, below the panels
        ax = next(it)
        self._draw_accuracy(ax, v)
        ax = next(it)
        plots.grad_norm_histogram(ax, v["norms"], threshold=v["threshold_line"],
                                  reference=v["baseline_norms"] if v["method"] != "none" else None,
                                  clipped_share=v["clipped_share"], color=colors[label])
        if v["method"] in _SCALE_NOTE:
            ax.set_title(f"{ax.get_title()}\n({_SCALE_NOTE[v['method']]})", fontsize=9)
        plots.legend_below(ax, ncol=3)
        ax = next(it)
        runs = {name: self.index.runs[rid] for name, rid in
                [(none, v["baseline_id"]), (matched, v["matched_id"]), (label, v["run_id"])]
                if name and rid and (name != none or v["method"] != "none")}
        draw_step_sizes(ax, runs, threshold=v["threshold_line"], colors=colors)
        for line in ax.lines:
            if matched and line.get_label() == matched:
                line.set_linestyle("--")  # dashed as in the loss and per-epoch panels
        ax.set_title("the step actually taken", fontsize=9)
        # under the panel: only the two bound lines (the runs are named below the panels)
        plots.legend_below(ax, [line for line in ax.lines if line.get_label().startswith("lr*c")])
        reference = None
        if v["baseline_update_ratio"] is not None and v["method"] != "none":
            reference = (v["baseline_layer_steps"], v["baseline_update_ratio"])
        ax = next(it)
        plots.update_ratio_curves(ax, v["layer_steps"], v["update_ratio"], v["layer_names"], reference=reference)
        plots.legend_below(ax, ncol=3, fontsize=6)
        if reference is not None:
            ax.set_title("solid: clipped, dotted: no clipping", fontsize=9)
        ax = next(it)
        for name, acc in curves(v["val_acc"], v["baseline_val_acc"], v["matched_val_acc"]).items():
            if acc is not None and len(acc):
                ax.plot(np.arange(1, len(acc) + 1), 100 * np.asarray(acc), marker="o", markersize=3, color=colors[name],
                        linestyle="--" if name == matched else "-", label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation accuracy (%)")
        ax.set_title("validation accuracy per epoch", fontsize=9)

    @staticmethod
    def _draw_accuracy(ax: Any, v: dict[str, Any]) -> None:
        """Validation accuracy against the selected method's threshold (its own axis), the unclipped runs
        as a grey band, the matched-learning-rate runs as diamonds, the selection starred."""
        method = v["accuracy_method"]
        plots.accuracy_vs_threshold(ax, v["accuracy"], baseline=v["baseline_accuracy"],
                                    selected=v["selected_accuracy"])
        thresholds, accs = v["matched_accuracy"]
        if thresholds:
            order = np.argsort(thresholds)
            ax.plot(np.asarray(thresholds)[order], [100 * np.mean(accs[i]) for i in order], "D--",
                    color="tab:orange", markersize=4, label="no clipping at the matched lr")
        if method in _NORM_SCALE and np.isfinite(v["median_norm"]):
            ax.axvline(v["median_norm"], color="grey", linestyle=":", linewidth=1,
                       label=f"median ||g||, no clipping ({fmt(v['median_norm'])})")
        sym = "lambda" if method == "agc" else "c"
        ax.set_xlabel(f"{plots.METHOD_NAMES.get(method, method)} threshold {sym} (log scale)")
        ax.set_ylabel("final validation accuracy (%)")
        plots.legend_below(ax)

    def static(self, count: int = 3) -> list[Any]:
        """Without a widget front end: the six views (:meth:`draw`) for ``count`` representative thresholds of
        the selected method (smallest, middle, largest), one figure each. Displays and returns them."""
        sel = self.selection()
        key = sel["setting"]
        if key is None:
            raise ValueError("the selected setting has no runs in the sweep; choose one that has")
        method = sel["method"] if sel["method"] != "none" else self.controls["method"].value
        ts = self.index.thresholds(key, method)
        if not ts:
            raise ValueError(f"method={method!r} has no runs for this setting; choose one of the sweep's methods")
        picks = sorted({ts[round(i * (len(ts) - 1) / max(count - 1, 1))] for i in range(count)})
        saved = (self.controls["threshold"].value, self.controls["no_clip"].value)
        rows = []
        # The lock keeps a redraw from another thread from reading the controls while they step through picks.
        with RENDER_LOCK:
            self._hold = True
            try:
                self.controls["no_clip"].value = False
                for t in picks:
                    self.controls["threshold"].value = t
                    rows.append(self.compute_views())
            finally:
                self.controls["threshold"].value, self.controls["no_clip"].value = saved
                self._hold = False
            return self._static_figures(rows)

    def _static_figures(self, rows: list[dict[str, Any]]) -> list[Any]:
        figures = []
        for v in rows:
            # A lower dpi keeps the stored notebooks small: these are the largest figures of the lesson.
            fig, axes = plots.figure(2, 3, width=13.5, height=FIGURE_HEIGHT, dpi=80)
            self._draw_figure(fig, axes, v)
            plots.display_figure(fig)
            figures.append(fig)
        return figures

    def show(self) -> None:
        """Display the widget where a widget front end will render it (then the figure follows every
        change); otherwise draw :meth:`static` instead (:func:`gradkit.widgets.show`)."""
        if show(self.widget, self.static) is self.widget:
            self._shown = True
            self.refresh()

    def live_config(self) -> dict[str, Any]:
        """The config "Train this setting" runs: the selected setting's config (or, for a setting the
        sweep lacks, the first setting's with model, optimizer and lr replaced), the slider's
        threshold to 3 significant digits, the first seed."""
        model, model_kw = self._models[self.controls["model"].value]
        key = self._setting()
        template = self.index.settings[key] if key else next(iter(self.index.settings.values()))
        config = dict(template)
        config.update(model=model, model_kw=model_kw, optimizer=self.controls["optimizer"].value,
                      lr=self.controls["lr"].value, seed=self.index.seeds(key)[0] if key else 0)
        method = "none" if self.controls["no_clip"].value else self.controls["method"].value
        config["clip"] = "none" if method == "none" else f"{method}:{float(self.controls['threshold'].value):.3g}"
        return config

    def train_selected(self, max_steps: int | None = None) -> Any:
        """Train :meth:`live_config` now (cached on disk in ``results_dir`` by config: a second
        press loads it), add it to the sweep and show it. Returns its History. The line beside the
        button says what happened, with a progress bar while it trains.

        ``max_steps`` (default: the explorer's ``live_steps``) cuts the run short (a demonstration):
        the run then has a config of its own, a setting of its own, and the views stay on the
        full-length runs."""
        from .runs import sweep

        if self.results_dir is None:
            raise ValueError("results_dir is None: pass results_dir= to cache live runs, e.g. explorer.live_dir()")
        config = self.live_config()
        steps = max_steps if max_steps is not None else self.live_steps
        if steps is not None:
            config["max_steps"] = steps
        label = plots.spec_label(config["clip"])
        before = set(self.results_dir.glob("run-*.json"))
        self.controls["train"].disabled = True
        self._train_status.value = f"training {html.escape(label)}: loading the data ..."
        started = time.perf_counter()
        try:
            [h] = sweep(configs=[config], results_dir=self.results_dir, data=self.data,
                        progress=lambda total, desc: _ProgressBar(self._progress, self._train_status, total,
                                                                  f"training {label}"))
        finally:
            self.controls["train"].disabled = False
            self._progress.layout.visibility = "hidden"
        rid = run_id(h)
        known = rid in self.index.runs
        self.index.add(h)
        if self.results_dir / f"run-{rid}.json" in before:
            done = f"{html.escape(label)} was trained before: run-{rid} loaded from {html.escape(str(self.results_dir))}"
        else:
            done = f"trained {html.escape(label)} in {time.perf_counter() - started:.1f} s: run-{rid}"
        done += " (already among the runs)" if known else f" added ({len(self.index.runs)} runs)"
        if steps is not None:
            done += f"; cut at {steps} steps, it is a setting of its own and the views stay on the full runs"
        self._train_status.value = done
        method, threshold = split_spec(h.config["clip"])
        if method != "none" and steps is None:
            self._set_stops(value=threshold)
        self.refresh()
        return h
