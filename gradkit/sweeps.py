"""Reading a clipping sweep: one row per setting and clip, best thresholds, and words from numbers.

A sweep (:func:`gradkit.runs.sweep`) trains a *setting* (model, optimizer, learning rate, epochs,
data) once without clipping and once per clipping method and threshold, for a few seeds. This
module turns its runs into a table (:func:`sweep_table`), finds the best threshold of a method
(:func:`best_threshold`), describes what the numbers show in sentences computed from them
(:func:`describe_method`, :func:`describe_setting`), and builds and runs sweep configurations
(:func:`sweep_configs`, :func:`run_sweep`). Lessons 04 and 05 use it.

Settings are compared and chosen on *validation* accuracy (images held out of the training set,
:func:`gradkit.data.cifar10`'s ``val``); test accuracy is reported for the chosen setting only
(:func:`report_choice`), so the test set never takes part in a decision.

Clipping and a smaller learning rate: a clipped run scaled its gradients by ``s_t = ||g'_t|| / ||g_t||``
at step ``t``; an unclipped run at the *matched* learning rate ``lr * mean_t s_t``
(:func:`matched_lr`, ``matched.json`` of the shipped sweep) tells whether clipping did more than
shrink the steps on average (:func:`matched_rows`, :func:`describe_matched`). The step itself is
``||w_{t+1} - w_t||`` (``History.step_norm``): with SGD momentum ``m`` it is bounded by
``lr * c / (1 - m)``, not by ``lr * c`` (:func:`step_bound`, :func:`draw_step_sizes`).

A diverged run (loss NaN or inf: :func:`gradkit.train.fit` stops it) has no final accuracy; it
counts as chance, 10% on CIFAR-10's ten classes, the accuracy of predicting one class for every image.

``SHIPPED_RESULTS`` is the shipped sweep's folder, looked up at each use by :mod:`gradkit.shipped`
(``GRADKIT_RESULTS``, else the checkout's ``results/``, else the installed copy).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from . import plots, shipped
from .checks import CHANCE
from .clip import METHODS, clipper

# Keys that tell runs of one setting apart without making a new setting.
_RUN_KEYS = ("clip", "seed", "run_id", "data_seed")
MODEL_NAMES = {"seed_cnn": "SeedCNN", "plain_cnn": "PlainCNN", "resnet": "ResNet"}
# Ten thresholds per method over the range where each acts: norm's c against ||g|| (about 0.1 to
# 15 for the kit's CNNs), value's c against single gradient entries (about 1e-3 each), AGC's lambda
# against the unit-wise ratio ||g_unit|| / ||w_unit||. The shipped sweep uses a subset of them
# (results/README.md); :func:`swept_thresholds` reads which.
THRESHOLD_RANGES: dict[str, list[float]] = {
    "norm": [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0],
    "value": [0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 10.0],
    "agc": [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0],
}


def _shipped_results() -> Path:
    """:func:`gradkit.shipped.results_dir`; when no shipped runs are found, the checkout's ``results/``
    path (absent), so ``SHIPPED_RESULTS.is_dir()`` stays the test for "are the shipped runs here"."""
    try:
        return shipped.results_dir()
    except FileNotFoundError:
        return shipped.CHECKOUT / shipped.RESULTS.folder


def __getattr__(name: str) -> Any:
    # SHIPPED_RESULTS is looked up at each use, so GRADKIT_RESULTS set after import counts, and an
    # installed wheel finds its own copy (gradkit.shipped).
    if name == "SHIPPED_RESULTS":
        return _shipped_results()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def fmt(value: float, digits: int = 3) -> str:
    """A threshold or learning rate as text for legends, titles and sentences: ``digits`` significant digits.

    >>> fmt(1.99526), fmt(0.011749), fmt(0.501187), fmt(100.0), fmt(0.0001)
    ('2', '0.0117', '0.501', '100', '0.0001')
    """
    return f"{float(value):.{digits}g}"


def run_id(h: Any) -> str:
    """The id of a run: the config hash its sweep file is named by (``run-<id>.json``)."""
    return str(h.config.get("run_id") or f"unsaved-{id(h):x}")


def final_accuracy(h: Any) -> float:
    """Final test accuracy in [0, 1]; a diverged run, or one that finished no epoch, counts as chance (0.1)."""
    acc = h.final_test_acc
    return CHANCE if acc is None else float(acc)


def final_val_accuracy(h: Any) -> float:
    """Final validation accuracy in [0, 1]; a diverged run counts as chance (0.1); nan when the run
    had no validation split (then nothing can be chosen on it)."""
    if h.diverged:
        return CHANCE
    return float(h.val_acc[-1]) if getattr(h, "val_acc", None) else math.nan


def split_spec(spec: str | float | None) -> tuple[str, float | None]:
    """``(method, threshold)`` of a clip spec: ``"norm:0.1"`` -> ``("norm", 0.1)``, ``"none"`` -> ``("none", None)``.

    >>> split_spec("agc:0.01"), split_spec(None)
    (('agc', 0.01), ('none', None))
    """
    c = clipper(spec)
    return c.method, c.threshold


def setting_key(config: dict[str, Any], ignore: Sequence[str] = ()) -> str:
    """What runs of one setting share: the config without clip, seed, run id and the keys in ``ignore``
    (a JSON string). ``ignore=("lr",)`` groups the learning rates of a grid.

    >>> setting_key({"model": "seed_cnn", "lr": 0.1, "clip": "norm:1", "seed": 0}) == setting_key(
    ...     {"model": "seed_cnn", "lr": 0.1, "clip": "none", "seed": 1})
    True
    """
    skip = set(_RUN_KEYS) | set(ignore)
    return json.dumps({k: v for k, v in config.items() if k not in skip}, sort_keys=True, default=repr)


def model_label(model: str, model_kw: dict[str, Any] | None) -> str:
    """``("plain_cnn", {"depth": 20, "width": 8})`` -> ``"PlainCNN(depth=20, width=8)"``."""
    args = ", ".join(f"{k}={v}" for k, v in sorted((model_kw or {}).items()))
    return f"{MODEL_NAMES.get(model, model)}({args})"


def setting_label(config: dict[str, Any]) -> str:
    """Human name of a setting: ``"SeedCNN(width=0.25), sgd lr=0.01, 2 epochs"`` (with the schedule when there is one).

    >>> setting_label({"model": "plain_cnn", "model_kw": {"depth": 20}, "lr": 0.05, "max_steps": 24})
    'PlainCNN(depth=20), sgd lr=0.05, first 24 steps'
    >>> setting_label({"model": "seed_cnn", "lr": 0.0123456, "epochs": 10, "schedule": "cosine"})
    'SeedCNN(), sgd lr=0.0123, 10 epochs, cosine schedule'
    """
    epochs = config.get("epochs", 1)
    length = f"{epochs} epoch{'s' if epochs != 1 else ''}"
    if config.get("max_steps"):
        length = f"first {config['max_steps']} steps"
    schedule = f", {config['schedule']} schedule" if config.get("schedule") else ""
    return (f"{model_label(config.get('model', '?'), config.get('model_kw'))}, {config.get('optimizer', 'sgd')} "
            f"lr={fmt(config.get('lr', math.nan))}, {length}{schedule}")


@dataclass
class SweepRow:
    """One clip setting of one training setting over its seeds (a row of :func:`sweep_table`).

    ``val_accuracies``: final validation accuracy per seed (what settings are chosen on);
    ``accuracies``: final test accuracy per seed (report it for the chosen setting only);
    ``diverged``: runs whose loss became NaN/inf; ``unstable``: runs whose loss stayed finite but blew
    up (``History.status == "unstable"``: some step's loss above 10 times the first step's)."""

    setting: str
    label: str
    method: str
    threshold: float | None
    accuracies: list[float]
    diverged: int
    seconds: float
    clip_rate: float
    run_ids: list[str] = field(default_factory=list)
    val_accuracies: list[float] = field(default_factory=list)
    scale: float = math.nan
    unstable: int = 0

    @property
    def mean(self) -> float:
        """Mean final test accuracy over seeds, in [0, 1]."""
        return float(np.mean(self.accuracies))

    @property
    def spread(self) -> float:
        """max - min of the final test accuracies over seeds."""
        return float(np.max(self.accuracies) - np.min(self.accuracies))

    @property
    def val_mean(self) -> float:
        """Mean final validation accuracy over seeds, in [0, 1] (nan without a validation split)."""
        return float(np.mean(self.val_accuracies)) if self.val_accuracies else math.nan

    @property
    def val_spread(self) -> float:
        """max - min of the final validation accuracies over seeds."""
        return float(np.max(self.val_accuracies) - np.min(self.val_accuracies)) if self.val_accuracies else math.nan


def mean_scale(h: Any) -> float:
    """The mean factor a run scaled its gradients by: ``mean_t ||g'_t|| / ||g_t||`` over its steps with a
    finite, positive norm (1 for an unclipped run).

    >>> from types import SimpleNamespace as Run
    >>> mean_scale(Run(grad_norm_before=[2.0, 4.0, 0.0], grad_norm_after=[1.0, 1.0, 0.0]))  # (0.5 + 0.25) / 2
    0.375
    """
    scales = [a / b for a, b in zip(h.grad_norm_after, h.grad_norm_before)
              if b > 0 and math.isfinite(b) and math.isfinite(a)]
    return float(np.mean(scales)) if scales else math.nan


def matched_lr(h: Any, digits: int = 3) -> float:
    """The matched learning rate of a clipped run: ``lr * mean_t ||g'_t|| / ||g_t||`` (:func:`mean_scale`),
    to ``digits`` significant digits: the constant rate whose steps are as long, on average, as the
    clipped run's gradient steps (``bench/make_sweep.py`` trains an unclipped run at it).

    >>> from types import SimpleNamespace as Run
    >>> matched_lr(Run(config={"lr": 0.2}, grad_norm_before=[2.0, 4.0], grad_norm_after=[1.0, 1.0]))
    0.075
    """
    return float(f"{float(h.config['lr']) * mean_scale(h):.{digits}g}")


def sweep_table(histories: Iterable[Any]) -> list[SweepRow]:
    """Group runs by (setting, method, threshold) over seeds: final validation and test accuracies
    (diverged = chance), number diverged and number unstable (a finite loss that blew up,
    ``History.status``), mean seconds per run, mean clip rate and mean gradient scale (:func:`mean_scale`). Rows are ordered by setting, then "none" first, then method (in
    :data:`gradkit.clip.METHODS` order) and threshold."""
    groups: dict[tuple[str, str, float | None], list[Any]] = {}
    for h in histories:
        method, threshold = split_spec(h.config.get("clip"))
        groups.setdefault((setting_key(h.config), method, threshold), []).append(h)
    rows = []
    for (key, method, threshold), runs in groups.items():
        runs.sort(key=lambda h: h.config.get("seed", 0))
        rates = [h.clip_rate for h in runs if h.clipped]
        vals = [final_val_accuracy(h) for h in runs]
        rows.append(SweepRow(
            setting=key, label=setting_label(runs[0].config), method=method, threshold=threshold,
            accuracies=[final_accuracy(h) for h in runs], diverged=sum(bool(h.diverged) for h in runs),
            seconds=float(np.mean([h.seconds for h in runs])),
            clip_rate=float(np.mean(rates)) if rates else math.nan, run_ids=[run_id(h) for h in runs],
            val_accuracies=[] if any(math.isnan(v) for v in vals) else vals,
            scale=float(np.nanmean([mean_scale(h) for h in runs])) if any(h.grad_norm_before for h in runs) else math.nan,
            unstable=sum(getattr(h, "status", "ok") == "unstable" for h in runs),
        ))
    rows.sort(key=lambda r: (r.setting, METHODS.index(r.method), r.threshold or 0.0))
    return rows


def accuracy_by_method(rows: Sequence[SweepRow], split: str = "val") -> dict[str, tuple[list[float], list[list[float]]]]:
    """``{method: (thresholds, accuracies per seed)}`` of one setting's clipped rows, the input of
    :func:`gradkit.plots.accuracy_vs_threshold`; ``split``: ``"val"`` (validation, the default) or ``"test"``.

    >>> accuracy_by_method([SweepRow("k", "s", "norm", 1.0, [0.5, 0.4], 0, 1.0, 0.2, val_accuracies=[0.6, 0.5])])
    {'norm': ([1.0], [[0.6, 0.5]])}
    """
    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    out: dict[str, tuple[list[float], list[list[float]]]] = {}
    for r in rows:
        if r.method != "none":
            thresholds, accuracies = out.setdefault(r.method, ([], []))
            thresholds.append(r.threshold)
            accuracies.append(r.val_accuracies if split == "val" else r.accuracies)
    return out


def _require_val(rows: Sequence[SweepRow]) -> None:
    missing = [r for r in rows if math.isnan(r.val_mean)]
    if missing:
        raise ValueError(f"{len(missing)} of {len(rows)} rows have no validation accuracy (e.g. run "
                         f"{missing[0].run_ids[:1]}): settings are chosen on validation, never on test; "
                         "train with a validation split (gradkit.data.cifar10's val, synthetic's n_val)")


def best_threshold(rows: Sequence[SweepRow], method: str, tolerance: float = 0.01) -> tuple[SweepRow, SweepRow]:
    """``(best, smallest_near)``: the row of ``method`` with the highest mean *validation* accuracy, and the
    row of the smallest threshold whose validation mean is within ``tolerance`` (0.01 = 1 point) of it.
    ``rows``: one setting's. The test set takes no part in the choice.

    >>> rows = [SweepRow("k", "s", "norm", c, [0.9], 0, 1.0, 0.5, val_accuracies=[a])
    ...         for c, a in [(0.1, 0.20), (1.0, 0.295), (10.0, 0.30)]]
    >>> [r.threshold for r in best_threshold(rows, "norm")]
    [10.0, 1.0]
    """
    mine = sorted((r for r in rows if r.method == method), key=lambda r: r.threshold)
    if not mine:
        raise ValueError(f"method={method!r} has no runs here; methods present: "
                         f"{', '.join(sorted({r.method for r in rows}))}")
    _require_val(mine)
    best = max(mine, key=lambda r: r.val_mean)
    return best, next(r for r in mine if r.val_mean >= best.val_mean - tolerance)


def _noise(a: SweepRow, b: SweepRow, tolerance: float) -> float:
    """The smallest difference of validation means called real: ``max(tolerance, spread a, spread b)``."""
    return max(tolerance, a.val_spread, b.val_spread)


def describe_method(rows: Sequence[SweepRow], method: str, tolerance: float = 0.01,
                    matched: Sequence["MatchedRow"] = ()) -> str:
    """Sentences, computed from the numbers, on what one method's thresholds did for one setting.

    Everything is compared on mean *validation* accuracy over seeds. Names the best threshold, its
    gain over no clipping and its test accuracy (the only test number: the chosen setting's), the
    smallest threshold within ``tolerance`` (0.01 = 1 point) of the best, what the smallest
    threshold cost, whether the largest one ended like no clipping, and which thresholds diverged.
    A difference is called real only when it exceeds both ``tolerance`` and the seed spread
    (max - min) of the two rows compared. ``rows``: one setting's rows of :func:`sweep_table`.
    When the best threshold clipped nearly every step, ``matched`` (:func:`matched_rows`) says whether
    that was only a smaller learning rate: the unclipped run at its matched rate, when there is one
    (:func:`matched_note`); else the sentence says it was not compared.
    """
    best, near = best_threshold(rows, method, tolerance)
    mine = sorted((r for r in rows if r.method == method), key=lambda r: r.threshold)
    base = next((r for r in rows if r.method == "none"), None)
    if base is not None:
        _require_val([base])
    sym = "lambda" if method == "agc" else "c"
    pts = f"{100 * tolerance:g} point" + ("" if tolerance == 0.01 else "s")

    def at(r: SweepRow) -> str:
        return f"{sym}={fmt(r.threshold)} ({100 * r.val_mean:.1f}%, {100 * r.clip_rate:.0f}% of steps clipped)"

    name = plots.METHOD_NAMES.get(method, method)
    test = f"; its test accuracy: {100 * best.mean:.1f}%"
    if base is not None and best.val_mean - base.val_mean <= _noise(best, base, tolerance):
        margin = pts if _noise(best, base, tolerance) == tolerance else "its seed spread"
        text = [f"{name}: no threshold beat no clipping ({100 * base.val_mean:.1f}% validation accuracy) by "
                f"more than {margin}; the best on validation was {at(best)}{test}."]
    else:
        gain = f", {100 * (best.val_mean - base.val_mean):+.1f} points vs no clipping" if base is not None else ""
        text = [f"{name}: best on validation {at(best)[:-1]}{gain}){test}."]
    if best.clip_rate > 0.9:
        how = (f": every gradient rescaled to norm {sym} (with momentum the step itself can still reach "
               f"about lr*{sym}/(1-m))") if method == "norm" else ""
        text.append(f"The best threshold clipped nearly every step{how}; there clipping no longer guards "
                    f"against rare spikes, it rescales every step. {matched_note(best, matched, tolerance)}")
    if near is not best:
        text.append(f"The smallest threshold within {pts} of the best: {at(near)}.")
    low, high = mine[0], mine[-1]
    if best.val_mean - low.val_mean > _noise(best, low, tolerance):
        text.append(f"The smallest, {at(low)}, shows what too small a threshold costs: every gradient shrunk, "
                    "learning slowed.")
    if (base is not None and high is not best and abs(high.val_mean - base.val_mean) <= tolerance
            and high.diverged == base.diverged):
        text.append(f"The largest, {at(high)}, ended within {pts} of no clipping"
                    + (": so large a threshold stops acting." if high.clip_rate < 0.05 else "."))
    diverged = [f"{fmt(r.threshold)} ({r.diverged}/{len(r.accuracies)})" for r in mine if r.diverged]
    if diverged:
        text.append(f"Diverged runs at {sym} = {', '.join(diverged)}.")
    unstable = [f"{fmt(r.threshold)} ({r.unstable}/{len(r.accuracies)})" for r in mine if r.unstable]
    if unstable:
        text.append(f"Unstable runs (finite loss that blew up past 10 times its first value) at {sym} = "
                    f"{', '.join(unstable)}.")
    return " ".join(text)


def matched_note(row: SweepRow, matched: Sequence["MatchedRow"], tolerance: float = 0.01) -> str:
    """One sentence on whether a clip setting (``row``) was only a smaller learning rate: its
    :class:`MatchedRow` in ``matched`` (same setting, method and threshold) compared by
    :meth:`MatchedRow.verdict`; when there is none, a sentence saying it was not compared.

    >>> r = SweepRow("k", "s", "norm", 1.0, [0.5], 0, 1.0, 1.0, val_accuracies=[0.5])
    >>> matched_note(r, [])
    'Whether it did more than a smaller learning rate was not measured here (no unclipped run at its matched learning rate).'
    >>> matched_note(r, [MatchedRow("k", "s", "norm", 1.0, [0.50], [0.40], [0.01], 0.2)])
    'The unclipped run at its matched learning rate (lr 0.01, 1 seed) ended lower, 40.0% vs 50.0% on validation: clipping did more than a smaller learning rate here.'
    """
    m = next((m for m in matched if (m.setting, m.method, m.threshold) == (row.setting, row.method, row.threshold)), None)
    if m is None:
        return ("Whether it did more than a smaller learning rate was not measured here (no unclipped run at its "
                "matched learning rate).")
    n = len(m.clipped)
    where = (f"The unclipped run{'s' if n > 1 else ''} at its matched learning rate (lr {'/'.join(fmt(lr) for lr in m.lrs)}, "
             f"{n} seed{'s' if n > 1 else ''})")
    pair = f"{100 * np.mean(m.matched):.1f}% vs {100 * np.mean(m.clipped):.1f}% on validation"
    verdict = m.verdict(tolerance)
    if verdict == "like a smaller lr":
        return f"{where} ended alike, {pair}: here clipping acted as a smaller learning rate."
    if verdict == "better than a smaller lr":
        return f"{where} ended lower, {pair}: clipping did more than a smaller learning rate here."
    return f"{where} ended higher, {pair}: a smaller learning rate alone did better here."


def describe_setting(rows: Sequence[SweepRow], tolerance: float = 0.01, matched: Sequence["MatchedRow"] = ()) -> str:
    """One paragraph on one setting: the unclipped runs, then :func:`describe_method` per method
    (``matched``: :func:`matched_rows`, passed on). Accuracies are validation accuracies (percentages
    in brackets), except the test accuracy named for each method's chosen threshold."""
    if not rows:
        raise ValueError("rows is empty: pass the rows of one setting from sweep_table()")
    base = next((r for r in rows if r.method == "none"), None)
    parts = [f"{rows[0].label}; accuracies are final validation accuracies, means over seeds."]
    if base is not None:
        _require_val([base])
        n = len(base.accuracies)
        state = f"{base.diverged} of {n} diverged" if base.diverged else f"none of {n} diverged"
        if base.unstable:
            state += f", {base.unstable} of {n} unstable (finite loss that blew up)"
        parts.append(f"Without clipping: {100 * base.val_mean:.1f}% ({state}).")
    methods = [m for m in METHODS if m != "none" and any(r.method == m for r in rows)]
    parts += [describe_method(rows, m, tolerance, matched) for m in methods]
    return " ".join(parts)


def report_choice(rows: Sequence[SweepRow], method: str, tolerance: float = 0.01) -> str:
    """One line: the threshold of ``method`` chosen on validation accuracy (:func:`best_threshold`) and its
    test accuracy per seed: the one place a sweep's test accuracy is reported.

    >>> rows = [SweepRow("k", "s", "norm", c, [t, t], 0, 1.0, 0.5, val_accuracies=[v, v])
    ...         for c, v, t in [(0.1, 0.20, 0.21), (1.0, 0.30, 0.28)]]
    >>> report_choice(rows, "norm")
    'chosen on validation: norm clipping, c=1 (validation 30.0%); test accuracy 28.0% (per seed: 28.0, 28.0)'
    """
    best, _ = best_threshold(rows, method, tolerance)
    seeds = ", ".join(f"{100 * a:.1f}" for a in best.accuracies)
    return (f"chosen on validation: {plots.spec_label(f'{method}:{best.threshold:g}')} (validation "
            f"{100 * best.val_mean:.1f}%); test accuracy {100 * best.mean:.1f}% (per seed: {seeds})")


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


def run_sweep(configs: list[dict[str, Any]], results_dir: str | Path, *, reuse: str | Path | None = "shipped",
              data: Any = None, progress: bool = True) -> list[Any]:
    """:func:`gradkit.runs.sweep` over ``configs`` in ``results_dir``, reusing finished runs.

    The run files of ``reuse`` (default ``"shipped"``: :data:`SHIPPED_RESULTS`; None: none) are
    copied into ``results_dir`` first, so a config already run there is loaded instead of trained,
    and the shipped folder is never written to.
    """
    import shutil

    from .runs import sweep

    if isinstance(reuse, str) and reuse == "shipped":
        reuse = _shipped_results()
    folder = Path(results_dir)
    if reuse is not None and Path(reuse).resolve() != folder.resolve() and Path(reuse).is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        for path in Path(reuse).glob("run-*.json"):
            if not (folder / path.name).exists():
                shutil.copyfile(path, folder / path.name)
    return sweep(configs=configs, results_dir=folder, data=data, progress=progress)


def swept_thresholds(histories: Iterable[Any], method: str, **config: Any) -> list[float]:
    """The thresholds of ``method`` among ``histories`` whose config matches every ``key=value`` in
    ``config`` (floats compared with ``math.isclose``), ascending.

    >>> from types import SimpleNamespace as Run
    >>> runs = [Run(config={"lr": lr, "clip": clip}) for lr, clip in [(0.05, "norm:1"), (0.05, "norm:0.1"), (0.2, "norm:5")]]
    >>> swept_thresholds(runs, "norm", lr=0.05)
    [0.1, 1.0]
    """
    def matches(h: Any) -> bool:
        for k, v in config.items():
            got = h.config.get(k)
            if isinstance(v, float) and isinstance(got, (int, float)):
                if not math.isclose(float(got), v):
                    return False
            elif got != v:
                return False
        return True

    found = {split_spec(h.config.get("clip")) for h in histories if matches(h)}
    return sorted(t for m, t in found if m == method and t is not None)


def format_table(rows: Sequence[SweepRow]) -> str:
    """A text table of :func:`sweep_table` rows: clip setting, mean and per-seed final *validation*
    accuracy (%), runs diverged (loss NaN/inf), runs unstable (finite loss that blew up, ``History.status``),
    share of steps clipped and the mean factor the gradients were scaled by.
    Test accuracy is left out on purpose: report it for the chosen row only (:func:`report_choice`).
    Training time is left out too: on a shared machine it measures the load, not the method.

    >>> print(format_table([SweepRow("k", "s", "norm", 1.0, [0.5, 0.25], 0, 3.0, 0.2, val_accuracies=[0.5, 0.3], scale=0.9)]))
    clip                      val acc %   per seed      diverged  unstable  clipped  scale
    norm clipping, c=1             40.0   50.0 30.0     0/2       0/2           20%   0.90
    """
    lines = [f"{'clip':<26}{'val acc %':>9}   {'per seed':<14}{'diverged':<10}{'unstable':<10}{'clipped':>7}{'scale':>7}"]
    for r in rows:
        spec = "none" if r.threshold is None else f"{r.method}:{r.threshold:g}"
        seeds = " ".join(f"{100 * a:.1f}" for a in r.val_accuracies) or "-"
        rate = "-" if math.isnan(r.clip_rate) else f"{100 * r.clip_rate:.0f}%"
        scale = "-" if math.isnan(r.scale) else f"{r.scale:.2f}"
        diverged = f"{r.diverged}/{len(r.accuracies)}"
        # flagged: an unstable run's accuracy is that of a run that blew up, not of a healthy one
        unstable = f"{r.unstable}/{len(r.accuracies)}" + (" !" if r.unstable else "")
        lines.append(f"{plots.spec_label(spec):<26}{100 * r.val_mean:>9.1f}   {seeds:<14}{diverged:<10}{unstable:<10}"
                     f"{rate:>7}{scale:>7}")
    return "\n".join(lines)


def sweep_figure(histories: Sequence[Any], seed: int | None = None, window: int = 10) -> Any:
    """Two panels for one setting's sweep: final validation accuracy against the threshold (seed mean
    and min..max band, no clipping as a grey line), and the training loss of every run of ``seed``
    (default: the first), coloured from small (dark) to large (light) thresholds."""
    import matplotlib

    rows = sweep_table(histories)
    if len({r.setting for r in rows}) != 1:
        raise ValueError("histories must hold the runs of one setting; split them with sweep_table()'s setting keys")
    _require_val(rows)
    base = next((r for r in rows if r.method == "none"), None)
    fig, axes = plots.figure(1, 2, width=12.5, height=3.9)
    ax_acc, ax_loss = axes[0]
    plots.accuracy_vs_threshold(ax_acc, accuracy_by_method(rows), baseline=base.val_accuracies if base else None)
    ax_acc.set_ylabel("final validation accuracy (%)")
    ax_acc.set_title("final validation accuracy (band: min..max over seeds)")
    ax_acc.legend(fontsize=8, loc="best")
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
    # Outside the axes on the right: a legend of ten runs inside would cover the curves.
    ax_loss.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.suptitle(rows[0].label)
    return fig


# ---- clipping against a smaller learning rate ---------------------------------------------------


def load_matched(results_dir: str | Path | None = None) -> dict[str, str]:
    """``{clipped run id: matched run id}`` from ``results_dir/matched.json`` (written by
    ``bench/make_sweep.py``; default: :data:`SHIPPED_RESULTS`); an empty dict when the folder has none."""
    path = Path(results_dir if results_dir is not None else _shipped_results()) / "matched.json"
    if not path.is_file():
        return {}
    links = json.loads(path.read_text())
    if not isinstance(links, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in links.items()):
        raise ValueError(f"{path} must map clipped run ids to matched run ids (strings), got {type(links).__name__}")
    return links


@dataclass
class MatchedRow:
    """One clip setting of one training setting beside unclipped runs at its matched learning rates.

    ``clipped`` and ``matched``: final validation accuracy per seed (seeds that have both runs);
    ``lrs``: the matched learning rate of each seed; ``scale``: the clipped runs' mean gradient scale.
    """

    setting: str
    label: str
    method: str
    threshold: float
    clipped: list[float]
    matched: list[float]
    lrs: list[float]
    scale: float
    run_ids: list[str] = field(default_factory=list)
    matched_ids: list[str] = field(default_factory=list)
    clipped_spread: float = 0.0

    @property
    def difference(self) -> float:
        """Mean over seeds of clipped minus matched validation accuracy."""
        return float(np.mean(self.clipped) - np.mean(self.matched))

    @property
    def noise(self) -> float:
        """The largest seed spread (max - min): of the two sides, and of the clipped setting over all its seeds
        (``clipped_spread``: a pair trained for one seed only still has its clipped setting's spread)."""
        return float(max(np.ptp(self.clipped), np.ptp(self.matched), self.clipped_spread))

    def verdict(self, tolerance: float = 0.01) -> str:
        """``"like a smaller lr"`` when ``|difference| <= max(tolerance, noise)``, else ``"better than a
        smaller lr"`` or ``"worse than a smaller lr"``.

        >>> MatchedRow("k", "s", "norm", 1.0, [0.50, 0.52], [0.49, 0.50], [0.01, 0.01], 0.2).verdict()
        'like a smaller lr'
        >>> MatchedRow("k", "s", "norm", 1.0, [0.50, 0.52], [0.10, 0.12], [0.1, 0.1], 0.5).verdict()
        'better than a smaller lr'
        """
        if abs(self.difference) <= max(tolerance, self.noise):
            return "like a smaller lr"
        return "better than a smaller lr" if self.difference > 0 else "worse than a smaller lr"


def matched_rows(histories: Iterable[Any], matched: dict[str, str]) -> list[MatchedRow]:
    """Pair every clipped run that has a matched run (``matched``: :func:`load_matched`) with it and group
    the pairs by (setting, method, threshold) over seeds, in :func:`sweep_table`'s order."""
    runs = {run_id(h): h for h in histories}
    groups: dict[tuple[str, str, float], list[tuple[Any, Any]]] = {}
    for clipped_id, matched_id in matched.items():
        h, m = runs.get(clipped_id), runs.get(matched_id)
        if h is None or m is None:
            continue
        method, threshold = split_spec(h.config.get("clip"))
        groups.setdefault((setting_key(h.config), method, threshold), []).append((h, m))
    spreads = {(r.setting, r.method, r.threshold): r.val_spread for r in sweep_table(runs.values())}
    out = []
    for (key, method, threshold), pairs in groups.items():
        pairs.sort(key=lambda p: p[0].config.get("seed", 0))
        out.append(MatchedRow(
            setting=key, label=setting_label(pairs[0][0].config), method=method, threshold=threshold,
            clipped=[final_val_accuracy(h) for h, _ in pairs], matched=[final_val_accuracy(m) for _, m in pairs],
            lrs=[float(m.config["lr"]) for _, m in pairs], scale=float(np.mean([mean_scale(h) for h, _ in pairs])),
            run_ids=[run_id(h) for h, _ in pairs], matched_ids=[run_id(m) for _, m in pairs],
            clipped_spread=float(np.nan_to_num(spreads.get((key, method, threshold), 0.0))),
        ))
    out.sort(key=lambda r: (r.setting, METHODS.index(r.method), r.threshold))
    return out


def describe_matched(rows: Sequence[MatchedRow], tolerance: float = 0.01) -> str:
    """Sentences, computed from the numbers, on where clipping acted as a smaller learning rate and where it
    did more: each clip setting's validation accuracy beside the unclipped run at its matched rate,
    called different only beyond ``max(tolerance, seed spread)``. ``rows``: one setting's
    :func:`matched_rows`."""
    if not rows:
        return "No clipped run of this setting has a matched-learning-rate run."
    labels = sorted({r.label for r in rows if r.setting != rows[0].setting} | {rows[0].label})
    if len(labels) > 1:
        raise ValueError(f"rows must come from one setting (the sentences name one), got {len(labels)}: "
                         f"{'; '.join(labels)}; filter matched_rows(...) by .setting first")

    def item(r: MatchedRow) -> str:
        sym = "lambda" if r.method == "agc" else "c"
        return (f"{plots.METHOD_NAMES.get(r.method, r.method)} {sym}={fmt(r.threshold)} "
                f"({100 * np.mean(r.clipped):.1f}% vs {100 * np.mean(r.matched):.1f}% unclipped at lr "
                f"{'/'.join(fmt(lr) for lr in r.lrs)}, mean scale {r.scale:.2f})")

    groups: dict[str, list[MatchedRow]] = {}
    for r in rows:
        groups.setdefault(r.verdict(tolerance), []).append(r)
    text = [f"{rows[0].label}, validation accuracy, clipped vs unclipped at the matched learning rate "
            "(lr times the clipped run's mean gradient scale):"]
    words = {"like a smaller lr": "no different from a smaller learning rate (within the seed spread or "
                                  f"{100 * tolerance:g} point)",
             "better than a smaller lr": "better than the matched smaller learning rate, so more than a smaller "
                                         "learning rate",
             "worse than a smaller lr": "worse than the matched smaller learning rate"}
    for verdict, phrase in words.items():
        if verdict in groups:
            text.append(f"{phrase}: " + "; ".join(item(r) for r in groups[verdict]) + ".")
    return " ".join(text)


# ---- the learning-rate x threshold grid ---------------------------------------------------------


@dataclass
class Grid:
    """Validation accuracy over learning rates x thresholds of one method for one seed.

    ``acc[i, j]``: final validation accuracy of ``lrs[i]`` and ``thresholds[j]`` (``thresholds[0]`` is
    None: no clipping), nan where no run exists; ``run_ids`` the same shape (``""`` where none)."""

    label: str
    method: str
    seed: int
    lrs: list[float]
    thresholds: list[float | None]
    acc: np.ndarray
    run_ids: list[list[str]]

    def best(self) -> tuple[float, float | None, float]:
        """``(lr, threshold, accuracy)`` of the cell with the highest validation accuracy."""
        i, j = np.unravel_index(np.nanargmax(self.acc), self.acc.shape)
        return self.lrs[i], self.thresholds[j], float(self.acc[i, j])


def lr_threshold_grid(histories: Iterable[Any], method: str = "norm", seed: int = 0) -> Grid:
    """The learning-rate x threshold grid of ``method`` for ``seed``: among settings that differ only in the
    learning rate, the group with the most runs of ``method``; its learning rates that have at least two
    thresholds of ``method`` (a matched-learning-rate run alone is not a grid row), every threshold of
    ``method`` they have, and no clipping.
    """
    groups: dict[str, list[Any]] = {}
    for h in histories:
        if h.config.get("seed", 0) == seed and split_spec(h.config.get("clip"))[0] in (method, "none"):
            groups.setdefault(setting_key(h.config, ignore=("lr",)), []).append(h)

    def clipped(runs: list[Any]) -> list[Any]:
        return [h for h in runs if split_spec(h.config.get("clip"))[0] == method]

    if not any(clipped(g) for g in groups.values()):
        raise ValueError(f"no run of method={method!r} with seed={seed}; sweep a grid first (bench/make_sweep.py)")
    runs = max(groups.values(), key=lambda g: len(clipped(g)))
    per_lr: dict[float, dict[float | None, Any]] = {}
    for h in runs:
        per_lr.setdefault(float(h.config["lr"]), {})[split_spec(h.config["clip"])[1]] = h
    lrs = sorted(lr for lr, cells in per_lr.items() if sum(t is not None for t in cells) >= 2)
    thresholds: list[float | None] = [None] + sorted({t for lr in lrs for t in per_lr[lr] if t is not None})
    acc = np.full((len(lrs), len(thresholds)), np.nan)
    ids = [[""] * len(thresholds) for _ in lrs]
    for i, lr in enumerate(lrs):
        for j, t in enumerate(thresholds):
            h = per_lr[lr].get(t)
            if h is not None:
                acc[i, j], ids[i][j] = final_val_accuracy(h), run_id(h)
    config = dict(runs[0].config)
    label = setting_label(config).replace(f"lr={fmt(config['lr'])}", "lr as shown")
    return Grid(label=label, method=method, seed=seed, lrs=lrs, thresholds=thresholds, acc=acc, run_ids=ids)


def grid_figure(grid: Grid) -> Any:
    """A heat-map of :func:`lr_threshold_grid`: validation accuracy (%) per learning rate (rows) and
    threshold (columns, no clipping first), each cell labelled, the best cell boxed."""
    import matplotlib.patches

    fig, ax = plots.figure(1, 1, width=1.2 * len(grid.thresholds) + 2.5, height=0.7 * len(grid.lrs) + 1.8)
    values = 100 * grid.acc
    image = ax.imshow(values, cmap="viridis", vmin=np.nanmin(values), vmax=np.nanmax(values), aspect="auto")
    sym = "lambda" if grid.method == "agc" else "c"
    ax.set_xticks(range(len(grid.thresholds)),
                  ["none"] + [f"{sym}={fmt(t)}" for t in grid.thresholds[1:]])
    ax.set_yticks(range(len(grid.lrs)), [f"lr={fmt(lr)}" for lr in grid.lrs])
    ax.set_xlabel(f"{plots.METHOD_NAMES.get(grid.method, grid.method)} threshold (none: no clipping)")
    ax.set_ylabel("learning rate")
    ax.grid(False)
    middle = (np.nanmin(values) + np.nanmax(values)) / 2
    for i in range(len(grid.lrs)):
        for j in range(len(grid.thresholds)):
            if np.isfinite(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.1f}", ha="center", va="center", fontsize=9,
                        color="black" if values[i, j] > middle else "white")
    i, j = np.unravel_index(np.nanargmax(values), values.shape)
    ax.add_patch(matplotlib.patches.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.5))
    fig.colorbar(image, ax=ax, label="final validation accuracy (%)")
    ax.set_title(f"{grid.label}, seed {grid.seed}\nbox: the best cell on validation", fontsize=10)
    return fig


# ---- the step actually taken ----------------------------------------------------------------------


def step_bound(lr: float | Sequence[float], c: float, momentum: float, steps: int | None = None) -> np.ndarray:
    """The largest step ``||w_{t+1} - w_t||`` SGD with momentum ``m`` can take when every gradient's norm is
    at most ``c`` (norm clipping at ``c``), for steps ``t = 0, 1, ...``:

    ``v_t = m * v_{t-1} + g_t`` and ``w_{t+1} = w_t - lr_t * v_t`` (PyTorch's SGD, no dampening, no weight
    decay), so ``||v_t|| <= c * (1 + m + ... + m^t)`` and ``||w_{t+1} - w_t|| <= lr_t * c * (1 - m^(t+1)) / (1 - m)``,
    which approaches ``lr * c / (1 - m)``: ten times ``lr * c`` at ``m = 0.9``. ``lr``: one rate, or one per
    step (``History.lr``); ``steps``: how many, when ``lr`` is one number.

    >>> step_bound(0.1, 1.0, 0.9, steps=3).round(4).tolist()  # 0.1, 0.1 * 1.9, 0.1 * 2.71
    [0.1, 0.19, 0.271]
    >>> step_bound([0.1, 0.05], 2.0, 0.0).tolist()  # no momentum: lr_t * c
    [0.2, 0.1]
    """
    if not (isinstance(c, (int, float)) and c > 0):
        raise ValueError(f"c must be a number > 0, got {c!r}")
    if not (isinstance(momentum, (int, float)) and 0 <= momentum < 1):
        raise ValueError(f"momentum must be a number in [0, 1), got {momentum!r}")
    if np.ndim(lr) == 0:
        if not (isinstance(steps, int) and steps >= 1):
            raise ValueError(f"steps must be an int >= 1 when lr is one number, got {steps!r}")
        rates = np.full(steps, float(lr))
    else:
        rates = np.asarray(lr, dtype=float)
    t = np.arange(rates.size)
    return rates * c * (1 - momentum ** (t + 1)) / (1 - momentum)


def draw_step_sizes(ax: Any, runs: dict[str, Any], threshold: float | None = None, *, window: int = 10,
                    colors: dict[str, Any] | None = None) -> Any:
    """The step actually taken, ``||w_{t+1} - w_t||`` (``History.step_norm``, a ``window``-step running
    mean), of each run in ``runs`` (``{legend: History}``) on a log axis; with ``threshold`` = ``c`` of
    norm clipping, the lines ``lr_t * c`` (dashed: the step without momentum) and ``lr_t * c / (1 - m)``
    (dotted: the bound with momentum ``m``), read from the first run's learning rates and momentum."""
    colors = colors or {}
    first = next(iter(runs.values()))
    for label, h in runs.items():
        steps = np.asarray(h.step_norm, dtype=float)
        if steps.size:
            ax.plot(np.arange(steps.size), plots.running_mean(steps, window), color=colors.get(label), label=label)
    if threshold is not None and first.lr:
        m = float(first.config.get("momentum", 0.0) or 0.0) if first.config.get("optimizer", "sgd") == "sgd" else 0.0
        rates = np.asarray(first.lr, dtype=float)
        ax.plot(rates * threshold, color="black", linestyle="--", linewidth=1, label=f"lr*c (c={fmt(threshold)})")
        if m > 0:
            ax.plot(rates * threshold / (1 - m), color="black", linestyle=":", linewidth=1.2,
                    label=f"lr*c/(1-m), m={fmt(m)}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(f"step ||w_t+1 - w_t|| ({window}-step mean)")
    plots.legend_below(ax)  # under the panel: inside, it would cover the first steps or the bound lines
    return ax


def zero_gradient_share(h: Any) -> np.ndarray:
    """Per recorded layer step of a run (``History.layer_steps``), the share of its layers whose gradient
    norm was exactly 0: all their units passed no gradient back (dead ReLUs upstream of them, or
    behind them).

    >>> from types import SimpleNamespace as Run
    >>> zero_gradient_share(Run(layer_grad_norm=[[0.0, 1.0], [0.0, 0.0]])).tolist()
    [0.5, 1.0]
    """
    norms = np.asarray(h.layer_grad_norm, dtype=float)
    if norms.ndim != 2:
        return np.zeros(0)
    return (norms == 0).mean(axis=1)


def zero_gradient_from(h: Any, share: float = 0.9) -> int | None:
    """The first recorded step (``History.layer_steps``) at which at least ``share`` of a run's layers had a
    gradient norm of exactly 0 (:func:`zero_gradient_share`), or None when none did: where a run lost its
    units (the records are ``monitor_every`` steps apart, so the loss happened in the interval before).

    >>> from types import SimpleNamespace as Run
    >>> zero_gradient_from(Run(layer_steps=[0, 10, 20], layer_grad_norm=[[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]]))
    20
    """
    zero = zero_gradient_share(h)
    hits = np.flatnonzero(zero >= share)
    return int(h.layer_steps[hits[0]]) if hits.size else None


def describe_dead_units(label: str, steps: Sequence[int], share: Any, step_norm: Sequence[float] | None = None,
                        half: float = 0.5) -> str:
    """One sentence, computed from a :class:`gradkit.monitor.DeadUnitHistory` (``steps`` (S,), ``share``
    (S, L): the share of dead units of each ReLU layer, layer 0 first, on each measured training batch),
    on how a run lost its units: the mean share at the first and last step, the first layer to pass
    ``half`` dead and when, the layers entirely dead at the end (no gradient passes below a layer that is
    dead on the whole batch), the deepest third against the first third at the end, and, with
    ``step_norm`` (``History.step_norm``), where the largest step fell.

    >>> print(describe_dead_units("run", [0, 1, 2], [[0.0, 0.0, 0.0], [0.0, 0.2, 0.6], [0.0, 0.4, 1.0]], [0.5, 0.1, 0.1]))
    run: dead units 0% at step 0 -> 47% at step 2 (mean over 3 ReLU layers); first more than 50% dead: layer 2 (0 = first) at step 1; entirely dead at the end: layer 2, so no gradient reached the layers below it; at the end the deepest 1 layers were 100% dead, the first 1 0%; largest step 0.5 at step 0, 1 steps before a layer passed 50% dead
    """
    s = np.asarray(share, dtype=float)
    t = np.asarray(steps)
    if s.ndim != 2 or s.shape[0] != t.size or t.size == 0:
        raise ValueError(f"share must be (steps, layers) with one row per step, got shape {s.shape} for {t.size} steps")
    n = s.shape[1]
    mean = s.mean(axis=1)
    text = [f"{label}: dead units {100 * mean[0]:.0f}% at step {t[0]} -> {100 * mean[-1]:.0f}% at step {t[-1]} "
            f"(mean over {n} ReLU layers)"]
    over = s > half
    first = int(np.argmax(over.any(axis=1))) if over.any() else None
    if first is None:
        text.append(f"no layer was ever more than {100 * half:.0f}% dead")
    else:
        layers = np.flatnonzero(over[first])
        text.append(f"first more than {100 * half:.0f}% dead: layer {'/'.join(str(j) for j in layers)} (0 = first) "
                    f"at step {t[first]}")
    full = np.flatnonzero(s[-1] >= 1.0)
    if full.size:
        text.append(f"entirely dead at the end: layer {'/'.join(str(j) for j in full)}, so no gradient reached the "
                    f"layers below it")
    else:
        text.append("no layer entirely dead at the end")
    k = max(n // 3, 1)
    text.append(f"at the end the deepest {k} layers were {100 * s[-1, -k:].mean():.0f}% dead, the first {k} "
                f"{100 * s[-1, :k].mean():.0f}%")
    if step_norm is not None and len(step_norm):
        norms = np.asarray(step_norm, dtype=float)
        big = int(np.nanargmax(norms))
        when = ""
        if first is not None and t[first] > big:
            when = f", {t[first] - big} steps before a layer passed {100 * half:.0f}% dead"
        text.append(f"largest step {norms[big]:.3g} at step {big}{when}")
    return "; ".join(text)
