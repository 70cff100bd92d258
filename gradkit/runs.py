"""Sweeps of training runs, one JSON file per run, named by the run's identity: :func:`sweep`, :func:`load_sweep`.

A run's id hashes its canonical config (every setting, defaults from the frozen table
:data:`RUN_DEFAULTS` filled in, the clip spec canonical) and the identity of its data, so a run
already on disk is found again and never trained twice. ``summary.csv`` lists every run of a
folder. With ``stacked=True``, configs that differ only in the clip setting train together
(:func:`stacked_groups`, :func:`fit_group`, :func:`gradkit.stacked.fit_stacked`); with ``workers=``
or ``executor=`` runs train in parallel processes or on a Dask cluster (:mod:`gradkit.executors`,
:func:`train_run`) and this process saves each one as it returns. The analysis of
a finished sweep (rows per setting, best thresholds, tables) is in :mod:`gradkit.sweeps`.
"""

from __future__ import annotations

import csv
import hashlib
import inspect
import io
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch

from . import executors, runtime
from .checks import check_bool, check_choice, check_int, check_seed, check_thresholds, plain
from .clip import METHODS, clipper
from .history import History
from .loop import check_data, progress_bar
from .models import check_model
from .stacked import SEQUENTIAL_ONLY, STACKED_METHODS, fit_stacked
from .train import check_fit, fit

# The data settings a sweep config may hold besides fit's arguments (see sweep).
DATA_KEYS = ("subset", "test_subset", "data_seed", "val")

# The defaults that a run's identity is computed with, frozen here (not read from fit's signature):
# a keyword added to fit later, left at its default, must not change the id of any saved run.
# Changing a value here changes ids on purpose; migrate results/ then (results/README.md).
RUN_DEFAULTS: dict[str, Any] = {
    "epochs": 1, "optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0, "clip": None,
    "schedule": None, "amp": False, "batch_size": 128, "seed": 0, "device": "auto", "monitor_every": 0,
    "augment": True, "max_steps": None, "model_kw": None, "constraint": None,
}
# fit's live defaults: a config key that RUN_DEFAULTS does not know is dropped from the identity
# while it equals its default here.
FIT_DEFAULTS = {k: p.default for k, p in inspect.signature(fit).parameters.items()
                if p.default is not inspect.Parameter.empty and k != "progress"}



def sweep(configs: list[dict[str, Any]] | None = None, thresholds: list[float] | None = None, method: str = "norm",
          base: dict[str, Any] | None = None, results_dir: str | Path = "results/sweep", data: Any = None,
          progress: bool = True, stacked: bool = False, executor: Any = None, workers: int | None = None,
          retries: int = 2) -> list[History]:
    """Run many training configurations; one JSON per run plus ``summary.csv`` in ``results_dir``.

    A config is a dict of :func:`fit` arguments (``model`` and ``model_kw`` included) plus the
    data settings ``subset``, ``test_subset``, ``data_seed`` (default: the run's ``seed``) and ``val``
    used to load CIFAR-10 with :func:`gradkit.data.cifar10` (once per distinct setting) when
    ``data`` is None. ``thresholds=[c1, c2, ...]`` builds the configs
    ``{**base, "clip": f"{method}:{c}"}``. Each run's file is named by a hash of its complete
    config (defaults filled in, the clip spec canonical, the dataset's identity included), so a
    run already on disk is loaded instead of trained again. ``summary.csv`` is rewritten after
    every run with one row per run in the folder.

    ``stacked=True`` trains configs that differ only in ``clip`` (methods none, norm, value; no
    BatchNorm, schedule, amp, monitor or constraint) together with
    :func:`gradkit.stacked.fit_stacked`, saved exactly as sequential runs; the rest use :func:`fit`.

    Parallel runs: ``workers=N`` (N > 1) trains N runs at a time in N spawned processes on this
    machine, each with torch threads ``cores // N``; ``executor=`` takes a ``dask.distributed``
    ``Client`` (the data, when given, is sent to each worker once; without it each worker loads
    CIFAR-10 itself, so ``$GRADKIT_DATA`` must hold it there) or any ``concurrent.futures``-style
    executor. The runs train with ``progress=False``; this process writes each run's file (atomically)
    as its result comes back, so an interrupted sweep resumes from the runs it finished. A run whose
    worker died or that raised is sent again up to ``retries`` times (a ``ValueError``, a bad setting,
    is not); what still failed is raised as a ``RuntimeError`` naming the runs, after every other run
    is saved. Default (neither given): one run after another in this process, as before.

    >>> from gradkit.data import synthetic
    >>> import tempfile
    >>> runs = sweep(thresholds=[0.1, 1.0], base={"model": "seed_cnn", "model_kw": {"width": 0.25}},
    ...              data=synthetic(n=128, n_test=64), results_dir=tempfile.mkdtemp(), progress=False)
    >>> [h.config["clip"] for h in runs]
    ['norm:0.1', 'norm:1.0']
    """
    configs = _sweep_configs(configs, thresholds, method, base)
    check_bool("stacked", stacked)
    if not callable(progress):
        check_bool("progress", progress)
    parallel = _check_parallel(executor, workers, retries, stacked)
    if data is not None:
        check_data(data)
    # One fingerprint of the data for every config: hashing it per config would repeat the same work.
    identity = _data_identity(data) if data is not None else None
    runs = _checked_runs(configs, data, identity)
    folder = results_folder(results_dir, create=True)
    done = _read_runs(folder)
    loaded: dict[tuple, Any] = {}

    def save(cfg: dict[str, Any], run_id: str, hist: History) -> None:
        full = _canonical(cfg)
        hist.config.update({k: full[k] if data is None else None for k in DATA_KEYS}, run_id=run_id)
        hist.save(folder / f"run-{run_id}.json")
        done[run_id] = hist
        write_summary(folder)

    if stacked:
        for group in stacked_groups({r: (c, r) for c, r in runs if r not in done}.values()):
            run_data = data if data is not None else _load_data(group[0][0], loaded)
            for (cfg, run_id), hist in zip(group, fit_group(group, run_data, progress)):
                save(cfg, run_id, hist)
    pending = {run_id: cfg for cfg, run_id in runs if run_id not in done}
    bar = progress_bar(progress, len(pending), "runs") if len(pending) > 1 else None

    def finished(run_id: str, hist: History) -> None:
        save(pending[run_id], run_id, hist)
        if bar is not None:
            bar.update(1)

    try:
        if parallel and pending:
            _run_parallel(pending, data, executor, workers, retries, finished)
        else:
            for run_id, cfg in pending.items():
                run_data = data if data is not None else _load_data(cfg, loaded)
                fit_kw = {k: v for k, v in cfg.items() if k not in DATA_KEYS}
                finished(run_id, fit(data=run_data, progress=progress, **fit_kw))
    finally:
        if bar is not None:
            bar.close()
    write_summary(folder)
    return [done[run_id] for _, run_id in runs]


def _sweep_configs(configs: Any, thresholds: Any, method: Any, base: Any) -> list[dict[str, Any]]:
    """The configs a sweep runs: ``configs`` with ``base`` under each, or one per threshold; refused
    (the error names the argument) when they are not a non-empty list of dicts or of numbers > 0."""
    if (configs is None) == (thresholds is None):
        raise ValueError("pass exactly one of configs (a list of dicts) or thresholds (a list of numbers)")
    if base is not None and not isinstance(base, dict):
        raise ValueError(f"base must be None or a dict of the settings every config shares, got {base!r}")
    if thresholds is not None:
        check_choice("method", method, METHODS[1:])
        return [{**(base or {}), "clip": f"{method}:{t!r}"} for t in check_thresholds("thresholds", thresholds)]
    if not isinstance(configs, (list, tuple)) or not configs or not all(isinstance(c, dict) for c in configs):
        hint = " (wrap one config in a list)" if isinstance(configs, dict) else ""
        raise ValueError(f"configs must be a non-empty list of dicts of fit() arguments and data settings{hint}, "
                         f"got {configs!r}")
    return [{**(base or {}), **c} for c in configs]


def _checked_runs(configs: list[dict[str, Any]], data: Any, identity: dict[str, Any] | None) -> list[tuple[dict[str, Any], str]]:
    """``(config, run id)`` per config, after every check :func:`fit` makes and those of the data
    settings, before any run trains (errors say which config); each model and its options are built
    once on the CPU (the random state is left as it was). Two configs of one run id are refused
    (the same run listed twice)."""
    runs: list[tuple[dict[str, Any], str]] = []
    first: dict[str, int] = {}
    models: set[str] = set()
    for i, cfg in enumerate(configs):
        try:
            _check_keys(cfg)
            check_fit({**FIT_DEFAULTS, **{k: v for k, v in cfg.items() if k not in DATA_KEYS}, "progress": False})
            runtime.check_device(cfg.get("device", "auto"))
            _check_data_settings(cfg, data)
            run_id = _run_id(cfg, data, identity)
            key = json.dumps([cfg["model"], cfg.get("model_kw")], sort_keys=True, default=repr)
            if key not in models:
                check_model(cfg["model"], cfg.get("model_kw"))
                models.add(key)
        except ValueError as err:
            raise ValueError(f"configs[{i}]: {err}") from err
        if run_id in first:
            raise ValueError(f"configs {first[run_id]} and {i} are the same run (run id {run_id}); list each run once")
        first[run_id] = i
        runs.append((cfg, run_id))
    return runs


def _check_data_settings(cfg: dict[str, Any], data: Any) -> None:
    """The data settings of ``cfg``: ints (None: the default), and with ``data`` given, only the values
    that describe it (the Dataset is trained on as it is: a subset of another size would not be used)."""
    for key, minimum in (("subset", 1), ("test_subset", 1), ("val", 0)):
        check_int(f"config {key!r}", cfg.get(key), minimum=minimum, optional=True)
    if cfg.get("data_seed") is not None:
        check_seed("config 'data_seed'", cfg["data_seed"])
    if data is None:
        return
    sizes = {"subset": int(data.train_y.numel()), "test_subset": int(data.test_y.numel()),
             "val": int(getattr(data, "n_val", 0))}
    for key, size in sizes.items():
        if cfg.get(key) is not None and cfg[key] != size:
            raise ValueError(f"config {key!r}={cfg[key]!r} does not describe the data given ({key} {size}): with data= "
                             "the Dataset is trained on as it is; drop the setting, or pass data=None to load CIFAR-10 "
                             "with it")
    if cfg.get("data_seed") is not None:
        raise ValueError(f"config 'data_seed'={cfg['data_seed']!r} is not used with data= (the Dataset given is "
                         "trained on as it is); drop it, or pass data=None to load CIFAR-10 with it")


def train_run(cfg: dict[str, Any], data: Any = None, threads: int | dict[str, int] | None = None) -> History:
    """Train one sweep config in this process (the task :func:`sweep` sends to a worker).

    ``data`` None loads CIFAR-10 as ``cfg``'s data settings ask, once per process and setting.
    ``threads``: torch threads for the run, or ``{host: threads}`` on a Dask cluster (looked up by
    the worker's host); None leaves them as they are.
    """
    if isinstance(threads, dict):
        from distributed import get_worker

        worker = get_worker()
        host = worker.address.split("://")[-1].rsplit(":", 1)[0]
        threads = threads.get(host) or executors.threads_per_process(worker.state.nthreads)
    if threads is not None:
        torch.set_num_threads(threads)
    run_data = data if data is not None else _load_data(cfg, _WORKER_DATA)
    return fit(data=run_data, progress=False, **{k: v for k, v in cfg.items() if k not in DATA_KEYS})


# CIFAR-10 as loaded by train_run in a worker process, one entry per data setting.
_WORKER_DATA: dict[tuple, Any] = {}


def _check_parallel(executor: Any, workers: int | None, retries: int, stacked: bool) -> bool:
    """Whether a sweep trains in parallel; refuses bad ``executor``/``workers``/``retries`` before any work."""
    check_int("retries", retries, minimum=0)
    if workers is not None:
        check_int("workers", workers)
        if executor is not None:
            raise ValueError("pass workers= (processes on this machine) or executor= (a Dask client or an "
                             "executor), not both")
    if executor is not None:
        executors.check_executor(executor)
    parallel = executor is not None or (workers or 1) > 1
    if parallel and stacked:
        raise ValueError("stacked=True trains in this process; it cannot be combined with executor= or workers= > 1")
    return parallel


def _run_parallel(pending: dict[str, dict[str, Any]], data: Any, executor: Any, workers: int | None, retries: int,
                  finished: Callable[[str, History], None]) -> None:
    """Train ``pending`` (``{run id: config}``) on ``executor`` or on ``workers`` processes, calling
    ``finished(run_id, history)`` here as each run returns; raises after the others when runs failed."""
    renew = in_flight = None
    threads: int | dict[str, int] | None = None
    if executor is None:
        workers = min(workers, max(1, len(pending)))
        executor = executors.process_pool(workers)
        renew, in_flight = (lambda: executors.process_pool(workers)), workers
    elif executors.is_dask(executor):
        threads = executors.dask_threads(executor)
        if data is not None:
            data = executors.dask_scatter(executor, data)
    tasks = {run_id: (cfg, data, threads) for run_id, cfg in pending.items()}
    failures = executors.run_tasks(executor, train_run, tasks, finished, retries=retries, renew=renew,
                                   in_flight=in_flight, name="gradkit-run")
    if failures:
        raise RuntimeError(f"{len(failures)} of {len(pending)} runs failed, the other runs are saved (run the sweep "
                           f"again to retry these): {executors.describe_failures(failures)}")


def load_sweep(results_dir: str | Path) -> list[History]:
    """All runs saved by :func:`sweep` in ``results_dir``, oldest first.

    A run file that cannot be read (cut off, not a gradkit History, wrong types: see
    :meth:`History.load`) is named in a warning and set aside as ``run-<id>.json.corrupt``;
    :func:`sweep` then trains that run again.
    """
    if not isinstance(results_dir, (str, os.PathLike)) or isinstance(results_dir, bytes):
        raise ValueError(f"results_dir must be a folder path (str or Path), got {results_dir!r}")
    folder = Path(results_dir)
    if not folder.is_dir():
        raise ValueError(f"results_dir={str(folder)!r} is not a folder")
    return sorted(_read_runs(folder).values(), key=lambda h: h.date)


def results_folder(results_dir: str | Path, create: bool = False) -> Path:
    """``results_dir`` as a folder that exists or can be made (``create=True`` makes it); refused
    before any work when it, or the nearest folder above it that exists, is a file.

    >>> import tempfile, pathlib
    >>> results_folder(pathlib.Path(tempfile.mkdtemp()) / "new" / "sweep").exists()
    False
    """
    if not isinstance(results_dir, (str, os.PathLike)) or isinstance(results_dir, bytes):
        raise ValueError(f"results_dir must be a folder path (str or Path), got {results_dir!r}")
    folder = Path(results_dir)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"results_dir={str(folder)!r} is a file, not a folder: pass a folder for the run files")
    above = next((p for p in folder.absolute().parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise ValueError(f"results_dir={str(folder)!r} cannot be made: {str(above)!r} is a file, not a folder")
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(f"results_dir={str(folder)!r} cannot be made: {err}") from err
    return folder


def _read_runs(folder: Path) -> dict[str, History]:
    """``{run id: History}`` of every readable run file in ``folder``; unreadable ones are set aside.

    A file is unreadable when :meth:`History.load` refuses it (cut off, not JSON, wrong types) or when
    its ``config["run_id"]`` is not the id in its name (a run file copied under another name would
    otherwise stand for a run it is not, and be listed twice)."""
    runs = {}
    for path in sorted(folder.glob("run-*.json")):
        run_id = path.stem.removeprefix("run-")
        try:
            hist = History.load(path)
            saved_id = hist.config.get("run_id", run_id)
            if saved_id != run_id:
                raise ValueError(f"it holds run {saved_id!r}, not {run_id!r}")
            runs[run_id] = hist
        except (ValueError, OSError) as err:
            _set_aside(path, err)
    return runs


def _set_aside(path: Path, err: Exception) -> None:
    """Rename an unreadable run file to ``*.corrupt`` (kept for a look, never read again) and warn."""
    aside = path.with_name(path.name + ".corrupt")
    try:
        os.replace(path, aside)
        where = f"set aside as {aside.name}"
    except OSError as move_err:  # a read-only folder: skip the file, still warn
        where = f"left in place, as it could not be renamed ({move_err})"
    warnings.warn(f"run file {path} could not be read ({err}); {where}, and a sweep that needs it trains it "
                  "again", stacklevel=4)


def _check_keys(cfg: dict[str, Any]) -> None:
    """A config's keys: fit's keywords and :data:`DATA_KEYS`, ``model`` a model name among them."""
    accepted = set(FIT_DEFAULTS) | {"model"} | set(DATA_KEYS)
    unknown = set(cfg) - accepted
    if unknown:
        raise ValueError(f"config keys {sorted(unknown)} are not accepted; accepted keys: {', '.join(sorted(accepted))}")
    if "model" not in cfg:
        raise ValueError("every config needs 'model' (a name: 'seed_cnn', 'plain_cnn', 'resnet')")
    if not isinstance(cfg["model"], str):
        raise ValueError(f"config 'model' must be a model name so the run can be saved and resumed, got {cfg['model']!r}")


def _canonical(cfg: dict[str, Any]) -> dict[str, Any]:
    """The config with every fit default filled in, numbers plain (``np.float64(0.1)`` hashes as 0.1)
    and the clip spec in canonical form."""
    _check_keys(cfg)
    cfg = plain(cfg)
    full = {**RUN_DEFAULTS, **{k: v for k, v in cfg.items() if k in RUN_DEFAULTS or k in DATA_KEYS or k == "model"
                               or v != FIT_DEFAULTS[k]}}
    full["clip"] = clipper(full["clip"]).spec
    full["model_kw"] = dict(full["model_kw"] or {})
    full.setdefault("subset", None)
    full.setdefault("test_subset", None)
    full.setdefault("data_seed", full["seed"])
    full.setdefault("val", None)
    if full["device"] == "auto":
        full["device"] = runtime.resolve_device("auto").type
    return full


def _data_identity(data: Any) -> dict[str, Any]:
    """Name, sizes and a fingerprint of a Dataset, so runs on different data never share a file."""
    digest = hashlib.sha1()
    tensors = [data.train_y, data.test_y, data.train_x.flatten()[::997], data.test_x.flatten()[::997]]
    n_val = getattr(data, "n_val", 0)
    if n_val:
        tensors += [data.val_y, data.val_x.flatten()[::997]]
    for t in tensors:
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    identity = {"name": data.name, "n_train": int(data.train_y.numel()), "n_test": int(data.test_y.numel()),
                "fingerprint": digest.hexdigest()[:16]}
    if n_val:
        identity["n_val"] = n_val
    return identity


def _run_id(cfg: dict[str, Any], data: Any, identity: dict[str, Any] | None = None) -> str:
    """A run's file name: a hash of its canonical config and of its data (``identity``: ``data``'s
    :func:`_data_identity`, when already computed)."""
    full = _canonical(cfg)
    if data is not None:
        for key in DATA_KEYS:
            full.pop(key)
        full["data"] = identity or _data_identity(data)
    else:
        full["data"] = {"source": "cifar10", **{k: full.pop(k) for k in DATA_KEYS}}
    text = json.dumps(full, sort_keys=True, default=repr)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _load_data(cfg: dict[str, Any], cache: dict[tuple, Any]) -> Any:
    """CIFAR-10 as ``cfg``'s data settings ask, loaded once per distinct setting (kept in ``cache``)."""
    from .data import cifar10

    key = (cfg.get("subset"), cfg.get("test_subset"), cfg.get("data_seed", cfg.get("seed", 0)), cfg.get("val"))
    if key not in cache:
        cache[key] = cifar10(subset=key[0], test_subset=key[1], seed=key[2], val=key[3], device=cfg.get("device", "auto"))
    return cache[key]


SUMMARY_COLUMNS = ("run_id", "label", "dataset", "synthetic", "model", "model_kw", "optimizer", "lr", "clip",
                   "schedule", "epochs", "seed", "subset", "steps", "status", "diverged", "diverged_step", "final_val_acc",
                   "best_val_acc", "final_test_acc", "test_acc_at_best_val", "final_train_loss", "clip_rate", "seconds",
                   "device")


def _best_on_validation(h: History) -> tuple[float | None, float | None, float | None]:
    """The summary columns ``best_val_acc, final_test_acc, test_acc_at_best_val``: the best epoch is
    chosen on validation, never on test (Nones where the run has no validation split).

    >>> _best_on_validation(History(val_acc=[0.3, 0.5, 0.4], test_acc=[0.35, 0.45, 0.6]))
    (0.5, 0.6, 0.45)
    """
    if not h.val_acc:
        return None, h.final_test_acc, None
    best = max(range(len(h.val_acc)), key=lambda i: h.val_acc[i])
    return h.val_acc[best], h.final_test_acc, h.test_acc[best] if best < len(h.test_acc) else None


def write_summary(folder: str | Path) -> Path:
    """Rebuild ``folder/summary.csv`` from the run files on disk: one row of :data:`SUMMARY_COLUMNS`
    per run, oldest first. Under a lock file (``.summary.lock``) and written atomically, so sweeps
    writing into one folder at the same time all end with every run listed."""
    from filelock import FileLock

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / ".summary.lock")):
        runs = _read_runs(folder)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(SUMMARY_COLUMNS)
        for run_id, h in sorted(runs.items(), key=lambda kv: kv[1].date):
            c = h.config
            writer.writerow([run_id, h.label, h.dataset, h.synthetic, c.get("model"), json.dumps(c.get("model_kw")),
                             c.get("optimizer"), c.get("lr"), c.get("clip"), c.get("schedule"), c.get("epochs"),
                             c.get("seed"), c.get("subset"), len(h.loss), h.status, h.diverged, h.diverged_step,
                             h.final_val_acc, *_best_on_validation(h), h.train_loss[-1] if h.train_loss else None,
                             round(h.clip_rate, 4) if h.clipped else None, round(h.seconds, 2), h.device])
        fd, tmp = tempfile.mkstemp(prefix=".summary.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "w", newline="") as f:
            f.write(buf.getvalue())
        os.replace(tmp, folder / "summary.csv")
    return folder / "summary.csv"


def stackable(cfg: dict[str, Any]) -> bool:
    """True when a sweep config can train in a stacked group: clip method in :data:`STACKED_METHODS`,
    a model without BatchNorm, and none of schedule, amp, monitor_every or constraint set."""
    full = _canonical(cfg)
    kw = full["model_kw"]
    model_ok = full["model"] == "seed_cnn" or (full["model"] == "plain_cnn" and not kw.get("batchnorm", False))
    return (model_ok and clipper(full["clip"]).method in STACKED_METHODS
            and all(full[k] == v for k, v in SEQUENTIAL_ONLY.items()))


def stacked_groups(configs: Iterable[tuple[dict[str, Any], str]]) -> Iterator[list[tuple[dict[str, Any], str]]]:
    """Groups of two or more ``(config, run_id)`` pairs that differ only in ``clip`` and can be stacked."""
    groups: dict[str, list[tuple[dict[str, Any], str]]] = {}
    for cfg, run_id in configs:
        if stackable(cfg):
            rest = {k: v for k, v in _canonical(cfg).items() if k != "clip"}
            groups.setdefault(json.dumps(rest, sort_keys=True, default=repr), []).append((cfg, run_id))
    yield from (g for g in groups.values() if len(g) > 1)


def fit_group(group: list[tuple[dict[str, Any], str]], data: Any, progress: bool) -> list[History]:
    """Train one group from :func:`stacked_groups` with :func:`fit_stacked` on ``data``."""
    cfg = group[0][0]
    kw = {k: v for k, v in cfg.items() if k not in DATA_KEYS and k not in SEQUENTIAL_ONLY and k != "clip"}
    return fit_stacked(data=data, clips=[_canonical(c)["clip"] for c, _ in group], progress=progress, **kw)
