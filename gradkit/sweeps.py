"""Reading a clipping sweep: one row per setting and clip, best thresholds, and words from numbers.

A sweep (:func:`gradkit.runs.sweep`) trains a *setting* (model, optimizer, learning rate, epochs,
data) once without clipping and once per clipping method and threshold, for a few seeds. This
module turns its runs into a table (:func:`sweep_table`), finds the best threshold of a method
(:func:`best_threshold`), describes what the numbers show in sentences computed from them
(:func:`describe_method`, :func:`describe_setting`), and builds and runs sweep configurations
(:func:`sweep_configs`, :func:`run_sweep`). Lessons 04 and 05 use it.

A diverged run (loss NaN or inf: :func:`gradkit.train.fit` stops it) has no final accuracy; it
counts as chance, 10% on CIFAR-10's ten classes, the accuracy of predicting one class for every image.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from . import plots
from .checks import CHANCE
from .clip import METHODS, clipper

SHIPPED_RESULTS = Path(__file__).resolve().parent.parent / "results"
# Keys that tell runs of one setting apart without making a new setting.
_RUN_KEYS = ("clip", "seed", "run_id", "data_seed")
MODEL_NAMES = {"seed_cnn": "SeedCNN", "plain_cnn": "PlainCNN", "resnet": "ResNet"}
# Ten thresholds per method over the range where each acts (the shipped sweep's): norm's c against
# ||g|| (about 0.1 to 15 for the kit's CNNs), value's c against single gradient entries (about 1e-3
# each), AGC's lambda against the unit-wise ratio ||g_unit|| / ||w_unit||.
THRESHOLD_RANGES: dict[str, list[float]] = {
    "norm": [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0],
    "value": [0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 10.0],
    "agc": [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0],
}

def run_id(h: Any) -> str:
    """The id of a run: the config hash its sweep file is named by (``run-<id>.json``)."""
    return str(h.config.get("run_id") or f"unsaved-{id(h):x}")


def final_accuracy(h: Any) -> float:
    """Final test accuracy in [0, 1]; a diverged run, or one that finished no epoch, counts as chance (0.1)."""
    acc = h.final_test_acc
    return CHANCE if acc is None else float(acc)


def split_spec(spec: str | float | None) -> tuple[str, float | None]:
    """``(method, threshold)`` of a clip spec: ``"norm:0.1"`` -> ``("norm", 0.1)``, ``"none"`` -> ``("none", None)``.

    >>> split_spec("agc:0.01"), split_spec(None)
    (('agc', 0.01), ('none', None))
    """
    c = clipper(spec)
    return c.method, c.threshold


def setting_key(config: dict[str, Any]) -> str:
    """What runs of one setting share: the config without clip, seed and run id (a JSON string).

    >>> setting_key({"model": "seed_cnn", "lr": 0.1, "clip": "norm:1", "seed": 0}) == setting_key(
    ...     {"model": "seed_cnn", "lr": 0.1, "clip": "none", "seed": 1})
    True
    """
    return json.dumps({k: v for k, v in config.items() if k not in _RUN_KEYS}, sort_keys=True, default=repr)


def model_label(model: str, model_kw: dict[str, Any] | None) -> str:
    """``("plain_cnn", {"depth": 20, "width": 8})`` -> ``"PlainCNN(depth=20, width=8)"``."""
    args = ", ".join(f"{k}={v}" for k, v in sorted((model_kw or {}).items()))
    return f"{MODEL_NAMES.get(model, model)}({args})"


def setting_label(config: dict[str, Any]) -> str:
    """Human name of a setting: ``"SeedCNN(width=0.25), sgd lr=0.01, 2 epochs"``.

    >>> setting_label({"model": "plain_cnn", "model_kw": {"depth": 20}, "lr": 0.05, "max_steps": 24})
    'PlainCNN(depth=20), sgd lr=0.05, first 24 steps'
    """
    epochs = config.get("epochs", 1)
    length = f"{epochs} epoch{'s' if epochs != 1 else ''}"
    if config.get("max_steps"):
        length = f"first {config['max_steps']} steps"
    return (f"{model_label(config.get('model', '?'), config.get('model_kw'))}, {config.get('optimizer', 'sgd')} "
            f"lr={config.get('lr', math.nan):g}, {length}")


@dataclass
class SweepRow:
    """One clip setting of one training setting over its seeds (a row of :func:`sweep_table`)."""

    setting: str
    label: str
    method: str
    threshold: float | None
    accuracies: list[float]
    diverged: int
    seconds: float
    clip_rate: float
    run_ids: list[str] = field(default_factory=list)

    @property
    def mean(self) -> float:
        """Mean final test accuracy over seeds, in [0, 1]."""
        return float(np.mean(self.accuracies))

    @property
    def spread(self) -> float:
        """max - min of the final test accuracies over seeds."""
        return float(np.max(self.accuracies) - np.min(self.accuracies))


def sweep_table(histories: Iterable[Any]) -> list[SweepRow]:
    """Group runs by (setting, method, threshold) over seeds: final accuracies (diverged = chance),
    number diverged, mean seconds per run, mean clip rate. Rows are ordered by setting, then
    "none" first, then method (in :data:`gradkit.clip.METHODS` order) and threshold."""
    groups: dict[tuple[str, str, float | None], list[Any]] = {}
    for h in histories:
        method, threshold = split_spec(h.config.get("clip"))
        groups.setdefault((setting_key(h.config), method, threshold), []).append(h)
    rows = []
    for (key, method, threshold), runs in groups.items():
        runs.sort(key=lambda h: h.config.get("seed", 0))
        rates = [h.clip_rate for h in runs if h.clipped]
        rows.append(SweepRow(
            setting=key, label=setting_label(runs[0].config), method=method, threshold=threshold,
            accuracies=[final_accuracy(h) for h in runs], diverged=sum(bool(h.diverged) for h in runs),
            seconds=float(np.mean([h.seconds for h in runs])),
            clip_rate=float(np.mean(rates)) if rates else math.nan, run_ids=[run_id(h) for h in runs],
        ))
    rows.sort(key=lambda r: (r.setting, METHODS.index(r.method), r.threshold or 0.0))
    return rows


def accuracy_by_method(rows: Sequence[SweepRow]) -> dict[str, tuple[list[float], list[list[float]]]]:
    """``{method: (thresholds, accuracies per seed)}`` of one setting's clipped rows, the input of
    :func:`gradkit.plots.accuracy_vs_threshold`.

    >>> accuracy_by_method([SweepRow("k", "s", "norm", 1.0, [0.5, 0.4], 0, 1.0, 0.2)])
    {'norm': ([1.0], [[0.5, 0.4]])}
    """
    out: dict[str, tuple[list[float], list[list[float]]]] = {}
    for r in rows:
        if r.method != "none":
            thresholds, accuracies = out.setdefault(r.method, ([], []))
            thresholds.append(r.threshold)
            accuracies.append(r.accuracies)
    return out


def best_threshold(rows: Sequence[SweepRow], method: str, tolerance: float = 0.01) -> tuple[SweepRow, SweepRow]:
    """``(best, smallest_near)``: the row of ``method`` with the highest mean accuracy, and the row of the
    smallest threshold whose mean is within ``tolerance`` (0.01 = 1 point) of it. ``rows``: one setting's.

    >>> rows = [SweepRow("k", "s", "norm", c, [a], 0, 1.0, 0.5) for c, a in [(0.1, 0.20), (1.0, 0.295), (10.0, 0.30)]]
    >>> [r.threshold for r in best_threshold(rows, "norm")]
    [10.0, 1.0]
    """
    mine = sorted((r for r in rows if r.method == method), key=lambda r: r.threshold)
    if not mine:
        raise ValueError(f"method={method!r} has no runs here; methods present: "
                         f"{', '.join(sorted({r.method for r in rows}))}")
    best = max(mine, key=lambda r: r.mean)
    return best, next(r for r in mine if r.mean >= best.mean - tolerance)


def describe_method(rows: Sequence[SweepRow], method: str, tolerance: float = 0.01) -> str:
    """Sentences, computed from the numbers, on what one method's thresholds did for one setting.

    Names the best threshold (mean over seeds) and its gain over no clipping, the smallest
    threshold within ``tolerance`` (0.01 = 1 point) of the best, what the smallest threshold cost,
    whether the largest one ended like no clipping, and which thresholds diverged. A difference is
    called real only when it exceeds both ``tolerance`` and the seed spread (max - min) of the two
    rows compared. ``rows``: one setting's rows of :func:`sweep_table`.
    """
    best, near = best_threshold(rows, method, tolerance)
    mine = sorted((r for r in rows if r.method == method), key=lambda r: r.threshold)
    base = next((r for r in rows if r.method == "none"), None)
    sym = "lambda" if method == "agc" else "c"
    pts = f"{100 * tolerance:g} point" + ("" if tolerance == 0.01 else "s")

    def at(r: SweepRow) -> str:
        return f"{sym}={r.threshold:g} ({100 * r.mean:.1f}%, {100 * r.clip_rate:.0f}% of steps clipped)"

    def noise(a: SweepRow, b: SweepRow) -> float:
        return max(tolerance, a.spread, b.spread)

    name = plots.METHOD_NAMES.get(method, method)
    if base is not None and best.mean - base.mean <= noise(best, base):
        margin = pts if noise(best, base) == tolerance else "its seed spread"
        text = [f"{name}: no threshold beat no clipping ({100 * base.mean:.1f}%) by more than {margin}; "
                f"the best was {at(best)}."]
    else:
        gain = f", {100 * (best.mean - base.mean):+.1f} points vs no clipping" if base is not None else ""
        text = [f"{name}: best {at(best)[:-1]}{gain})."]
        if best.clip_rate > 0.9:
            how = f" (each step rescaled to length lr*{sym})" if method == "norm" else ""
            text.append("It clipped nearly every step: there clipping no longer guards against rare spikes, "
                        f"it changes every step{how}, much like a smaller learning rate.")
    if near is not best:
        text.append(f"The smallest threshold within {pts} of the best: {at(near)}.")
    low, high = mine[0], mine[-1]
    if best.mean - low.mean > noise(best, low):
        text.append(f"The smallest, {at(low)}, shows what too small a threshold costs: every step shrunk, "
                    "learning slowed.")
    if base is not None and abs(high.mean - base.mean) <= tolerance and high.diverged == base.diverged:
        text.append(f"The largest, {at(high)}, ended within {pts} of no clipping"
                    + (": so large a threshold stops acting." if high.clip_rate < 0.05 else "."))
    diverged = [f"{r.threshold:g} ({r.diverged}/{len(r.accuracies)})" for r in mine if r.diverged]
    if diverged:
        text.append(f"Diverged runs at {sym} = {', '.join(diverged)}.")
    return " ".join(text)


def describe_setting(rows: Sequence[SweepRow], tolerance: float = 0.01) -> str:
    """One paragraph on one setting: the unclipped runs, then :func:`describe_method` per method."""
    if not rows:
        raise ValueError("rows is empty: pass the rows of one setting from sweep_table()")
    base = next((r for r in rows if r.method == "none"), None)
    parts = [f"{rows[0].label}."]
    if base is not None:
        n = len(base.accuracies)
        state = f"{base.diverged} of {n} diverged" if base.diverged else f"none of {n} diverged"
        parts.append(f"Without clipping: {100 * base.mean:.1f}% mean final test accuracy ({state}).")
    methods = [m for m in METHODS if m != "none" and any(r.method == m for r in rows)]
    parts += [describe_method(rows, m, tolerance) for m in methods]
    return " ".join(parts)


def sweep_configs(base: dict[str, Any], thresholds: dict[str, Sequence[float]],
                  seeds: Sequence[int]) -> list[dict[str, Any]]:
    """The configs of a threshold sweep: per seed, ``base`` without clipping, then ``method:t`` for every
    method and threshold in ``thresholds`` (``{"norm": [0.1, 1.0], ...}``).

    >>> [c["clip"] for c in sweep_configs({"model": "seed_cnn"}, {"norm": [0.1, 1.0]}, seeds=[0])]
    ['none', 'norm:0.1', 'norm:1']
    """
    if not seeds:
        raise ValueError("seeds must name at least one seed, e.g. [0, 1]")
    for method, values in thresholds.items():
        if method not in METHODS or method == "none":
            raise ValueError(f"method={method!r} is not a clipping method; accepted: {', '.join(METHODS[1:])}")
        if not values or not all(isinstance(t, (int, float)) and t > 0 for t in values):
            raise ValueError(f"thresholds[{method!r}] must be a non-empty list of numbers > 0, got {values!r}")
    out = []
    for seed in seeds:
        out.append({**base, "seed": seed, "clip": "none"})
        out += [{**base, "seed": seed, "clip": f"{m}:{t:g}"} for m, ts in thresholds.items() for t in ts]
    return out


def run_sweep(configs: list[dict[str, Any]], results_dir: str | Path, *, reuse: str | Path | None = SHIPPED_RESULTS,
              data: Any = None, progress: bool = True) -> list[Any]:
    """:func:`gradkit.runs.sweep` over ``configs`` in ``results_dir``, reusing finished runs.

    The run files of ``reuse`` (default: the shipped ``results/``) are copied into ``results_dir``
    first, so a config already run there is loaded instead of trained, and the shipped folder is
    never written to.
    """
    import shutil

    from .runs import sweep

    folder = Path(results_dir)
    if reuse is not None and Path(reuse).resolve() != folder.resolve() and Path(reuse).is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        for path in Path(reuse).glob("run-*.json"):
            if not (folder / path.name).exists():
                shutil.copyfile(path, folder / path.name)
    return sweep(configs=configs, results_dir=folder, data=data, progress=progress)


def format_table(rows: Sequence[SweepRow]) -> str:
    """A text table of :func:`sweep_table` rows: clip setting, mean and per-seed final test accuracy (%),
    runs diverged, share of steps clipped, seconds per run.

    >>> print(format_table([SweepRow("k", "s", "norm", 1.0, [0.5, 0.25], 0, 3.0, 0.2)]))
    clip                        acc %   per seed      diverged  clipped  s/run
    norm clipping, c=1           37.5   50.0 25.0     0/2           20%    3.0
    """
    lines = [f"{'clip':<26}{'acc %':>7}   {'per seed':<14}{'diverged':<10}{'clipped':>7}{'s/run':>7}"]
    for r in rows:
        spec = "none" if r.threshold is None else f"{r.method}:{r.threshold:g}"
        seeds = " ".join(f"{100 * a:.1f}" for a in r.accuracies)
        rate = "-" if math.isnan(r.clip_rate) else f"{100 * r.clip_rate:.0f}%"
        diverged = f"{r.diverged}/{len(r.accuracies)}"
        lines.append(f"{plots.spec_label(spec):<26}{100 * r.mean:>7.1f}   {seeds:<14}{diverged:<10}"
                     f"{rate:>7}{r.seconds:>7.1f}")
    return "\n".join(lines)


def sweep_figure(histories: Sequence[Any], seed: int | None = None, window: int = 10) -> Any:
    """Two panels for one setting's sweep: final test accuracy against the threshold (seed mean and
    min..max band, no clipping as a grey line), and the training loss of every run of ``seed``
    (default: the first), coloured from small (dark) to large (light) thresholds."""
    import matplotlib

    rows = sweep_table(histories)
    if len({r.setting for r in rows}) != 1:
        raise ValueError("histories must hold the runs of one setting; split them with sweep_table()'s setting keys")
    base = next((r for r in rows if r.method == "none"), None)
    fig, axes = plots.figure(1, 2, width=12.5, height=3.9)
    ax_acc, ax_loss = axes[0]
    plots.accuracy_vs_threshold(ax_acc, accuracy_by_method(rows), baseline=base.accuracies if base else None)
    ax_acc.set_title("final test accuracy (band: min..max over seeds)")
    seed = min(h.config.get("seed", 0) for h in histories) if seed is None else seed
    mine = sorted((h for h in histories if h.config.get("seed", 0) == seed),
                  key=lambda h: (split_spec(h.config["clip"])[1] or math.inf))
    cmap = matplotlib.colormaps["viridis"]
    clipped = [h for h in mine if split_spec(h.config["clip"])[0] != "none"]
    curves, colors, dashed = {}, {}, []
    for i, h in enumerate(clipped):
        curves[plots.spec_label(h.config["clip"])] = h.loss
        colors[plots.spec_label(h.config["clip"])] = cmap(i / max(len(clipped) - 1, 1))
    for h in mine:
        if split_spec(h.config["clip"])[0] == "none":
            curves[plots.METHOD_NAMES["none"]] = h.loss
            colors[plots.METHOD_NAMES["none"]] = "black"
            dashed.append(plots.METHOD_NAMES["none"])
    plots.loss_curves(ax_loss, curves, colors=colors, dashed=dashed, window=window)
    ax_loss.set_title(f"training loss, seed {seed}")
    ax_loss.legend(fontsize=7, ncol=2)
    fig.suptitle(rows[0].label)
    return fig
