"""A threshold sweep over a grid of settings, the same from Python and from ``python -m gradkit sweep``.

:func:`grid_configs` builds the configs: for every learning rate and seed, one run without
clipping and one per clipping method and threshold (:func:`gradkit.sweeps.sweep_configs`).
:func:`run_grid` checks every value first (the error names the argument and the accepted values),
then trains the runs with :func:`gradkit.runs.sweep` in parallel processes on this machine (default:
one per core), on a Dask cluster (``scheduler=``/``executor=``) or one after another (``workers=1``),
and returns their histories; :func:`grid_table` is the table the command prints at the end.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from . import executors, runtime
from .checks import check_choice, check_int, check_list, check_positive, check_seed, check_thresholds
from .history import History

DATA_SOURCES = ("cifar10", "synthetic")


def named_ranges() -> dict[str, list[float]]:
    """The threshold ranges a sweep can name instead of listing numbers: each method's ten thresholds
    (:data:`gradkit.sweeps.THRESHOLD_RANGES`); ``"default"`` gives every method its own range.

    >>> sorted(named_ranges())
    ['agc', 'norm', 'value']
    """
    from .sweeps import THRESHOLD_RANGES

    return {name: list(values) for name, values in THRESHOLD_RANGES.items()}


def grid_configs(model: str = "seed_cnn", model_kw: dict[str, Any] | None = None, methods: Sequence[str] = ("norm",),
                 thresholds: str | Sequence[float] = "default", lrs: Sequence[float] = (0.01,), optimizer: str = "sgd",
                 epochs: int = 1, seeds: Sequence[int] = (0,), subset: int | None = None, test_subset: int | None = None,
                 val: int | None = None, batch_size: int = 128, max_steps: int | None = None,
                 device: str = "auto", data: str = "cifar10") -> list[dict[str, Any]]:
    """The configs of a grid sweep, every value checked: per learning rate and seed, ``clip="none"`` and
    ``f"{method}:{t}"`` for each method and threshold. ``thresholds``: a list of numbers > 0 (used for
    every method) or a name of :func:`named_ranges` (``"default"``: each method its own range).
    ``subset``/``test_subset``/``val``: training, test and validation images (None: all of CIFAR-10;
    with ``data="synthetic"`` the generated set's sizes, default 512 and 256, no validation split).

    >>> [(c["lr"], c["clip"]) for c in grid_configs(methods=["norm"], thresholds=[0.1, 1], lrs=[0.1])]
    [(0.1, 'none'), (0.1, 'norm:0.1'), (0.1, 'norm:1')]
    >>> grid_configs(methods=["nrom"])
    Traceback (most recent call last):
    ...
    ValueError: methods='nrom' is not accepted; accepted values: value, norm, norm_inf, tensor_norm, scaled_value, agc, auto
    """
    from .clip import METHODS
    from .loop import OPTIMIZERS
    from .models import MODELS, check_model
    from .sweeps import sweep_configs

    check_choice("model", model, tuple(MODELS))
    model_kw = check_model(model, model_kw)
    accepted = METHODS[1:]
    methods = [check_choice("methods", m, accepted) for m in check_list("methods", methods)]
    per_method = _thresholds(thresholds, methods)
    lrs = [check_positive("lrs", lr) for lr in check_list("lrs", lrs)]
    check_choice("optimizer", optimizer, OPTIMIZERS)
    check_int("epochs", epochs)
    seeds = [check_seed("seeds", s) for s in check_list("seeds", seeds)]
    check_int("batch_size", batch_size)
    for name, value in (("subset", subset), ("test_subset", test_subset), ("val", val), ("max_steps", max_steps)):
        check_int(name, value, optional=True)
    check_choice("data", data, DATA_SOURCES)
    if data == "synthetic" and val is not None:
        raise ValueError("val is not accepted with data='synthetic' (the generated set has no validation split); "
                         "accepted: val=None, or data='cifar10'")
    runtime.check_device(device)
    base: dict[str, Any] = {"model": model, "model_kw": model_kw or None, "optimizer": optimizer, "epochs": epochs,
                            "batch_size": batch_size, "max_steps": max_steps, "device": device}
    if data == "cifar10":
        base.update(subset=subset, test_subset=test_subset, val=val)
    return [cfg for lr in lrs for cfg in sweep_configs({**base, "lr": lr}, per_method, seeds)]


def run_grid(model: str = "seed_cnn", model_kw: dict[str, Any] | None = None, methods: Sequence[str] = ("norm",),
             thresholds: str | Sequence[float] = "default", lrs: Sequence[float] = (0.01,), optimizer: str = "sgd",
             epochs: int = 1, seeds: Sequence[int] = (0,), subset: int | None = None, test_subset: int | None = None,
             val: int | None = None, batch_size: int = 128, max_steps: int | None = None, device: str = "auto",
             data: str = "cifar10", out: str | Path = "reports/sweep", workers: int | None = None,
             scheduler: str | None = None, executor: Any = None, retries: int = 2,
             progress: bool = True) -> list[History]:
    """Run the grid of :func:`grid_configs` into ``out`` (one ``run-<id>.json`` per run and
    ``summary.csv``; runs already there are loaded, not trained) and return the histories in grid order.

    Where the runs train: ``workers`` processes on this machine (default: one per usable core, at
    most one per run; each with torch threads ``cores // workers``; ``workers=1``: in this process),
    or the Dask cluster whose scheduler is at ``scheduler`` (``"tcp://host:8786"``), or ``executor``
    (a ``dask.distributed.Client`` or any ``concurrent.futures``-style executor). Every value is
    checked, and the scheduler reached, before any run starts. ``data="synthetic"`` trains on
    :func:`gradkit.data.synthetic` (for tests; labelled as such in every record).
    """
    from .runs import results_folder, sweep

    configs = grid_configs(model, model_kw, methods, thresholds, lrs, optimizer, epochs, seeds, subset, test_subset,
                           val, batch_size, max_steps, device, data)
    folder = results_folder(out)
    given = [name for name, value in (("workers", workers), ("scheduler", scheduler), ("executor", executor))
             if value is not None]
    if len(given) > 1:
        raise ValueError(f"pass one of workers, scheduler or executor, not {' and '.join(given)}")
    if workers is not None:
        check_int("workers", workers)
    check_int("retries", retries, minimum=0)
    client = executors.connect(scheduler) if scheduler is not None else None
    try:
        if executor is None and client is None:
            workers = min(workers or executors.usable_cores(), len(configs))
        run_data = None
        if data == "synthetic":
            from .data import synthetic

            run_data = synthetic(n=subset or 512, n_test=test_subset or 256, seed=0)
        return sweep(configs=configs, results_dir=folder, data=run_data, progress=progress,
                     executor=executor if client is None else client, workers=workers if workers != 1 else None,
                     retries=retries)
    finally:
        if client is not None:
            client.close()


def grid_table(histories: Sequence[History]) -> str:
    """One line per run: its id, clip setting, learning rate, seed, status, final validation and test
    accuracy (%, ``-`` when the run has none) and the share of steps clipped.

    >>> h = History(config={"run_id": "ab12", "clip": "norm:1", "lr": 0.1, "seed": 0}, test_acc=[0.5],
    ...             clipped=[True, False])
    >>> print(grid_table([h]))
    run id        clip                      lr  seed  status    val acc %  test acc %  clipped
    ab12          norm:1                   0.1     0  ok                -        50.0      50%
    """
    lines = [f"{'run id':<14}{'clip':<20}{'lr':>8}{'seed':>6}  {'status':<9}{'val acc %':>10}{'test acc %':>12}{'clipped':>9}"]
    for h in histories:
        c = h.config
        val, test = h.final_val_acc, h.final_test_acc
        rate = h.clip_rate
        lines.append(f"{c.get('run_id', ''):<14}{c.get('clip', ''):<20}{c.get('lr', math.nan):>8g}{c.get('seed', 0):>6}  "
                     f"{h.status:<9}{'-' if val is None else f'{100 * val:.1f}':>10}"
                     f"{'-' if test is None else f'{100 * test:.1f}':>12}"
                     f"{'-' if math.isnan(rate) else f'{rate:.0%}':>9}")
    return "\n".join(lines)


def _thresholds(thresholds: str | Sequence[float], methods: list[str]) -> dict[str, list[float]]:
    """``{method: thresholds}`` from a list of numbers or a named range (see :func:`named_ranges`)."""
    ranges = named_ranges()
    if isinstance(thresholds, str):
        if thresholds == "default":
            missing = [m for m in methods if m not in ranges]
            if missing:
                raise ValueError(f"thresholds='default' has no range for {', '.join(missing)}; give numbers or one of "
                                 f"the named ranges: {', '.join(ranges)}")
            return {m: ranges[m] for m in methods}
        check_choice("thresholds", thresholds, ("default", *ranges))
        return {m: ranges[thresholds] for m in methods}
    values = check_thresholds("thresholds", thresholds, also=f" or one of the named ranges: {', '.join(('default', *ranges))}")
    return {m: list(values) for m in methods}
