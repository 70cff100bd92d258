"""Make the sweep shipped in ``results/`` that lesson 04's threshold explorer scrubs through.

    GRADKIT_DATA=/work/shared/datasets nice -n 10 python bench/make_sweep.py [--jobs 2] [--out results]

Three settings on real CIFAR-10 (the same class-balanced subset for all), each trained without
clipping and with three clipping methods at ten thresholds, for two seeds:

- A: SeedCNN(width=0.25), SGD lr 0.01 (a tutorial learning rate), 2 epochs;
- B: SeedCNN(width=0.25), SGD lr 0.2 (high: without clipping the run collapses to chance), 2 epochs;
- C: PlainCNN(depth=20, width=8, init="kaiming"), no batch norm, SGD lr 0.2 (a deep plain net at a
  learning rate where, without clipping, it does not learn), 5 epochs.

The sizes are what a 2-core CPU shared with other jobs trains in about half an hour; on a GPU,
raise ``subset``, ``test_subset`` and ``epochs``.

Runs go through :func:`gradkit.runs.sweep`, so each is one JSON named by its config hash and a
run already on disk is not trained again: an interrupted sweep resumes where it stopped.
``--jobs N`` trains in N processes of one thread each (on a shared 2-core CPU two one-thread
processes beat one two-thread process), then one pass rewrites ``summary.csv`` over every run.
Floats in the JSON files are rounded to 5 significant digits to keep the folder small.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

from gradkit.sweeps import THRESHOLD_RANGES, sweep_configs

ROOT = Path(__file__).resolve().parent.parent
SEEDS = (0, 1)
# batch 64 on 1,920 images: 30 steps an epoch; per-layer stats every 4 steps for the update-ratio view.
DATA = {"subset": 1920, "test_subset": 1000, "data_seed": 0}
COMMON = {"optimizer": "sgd", "batch_size": 64, "monitor_every": 4, **DATA}
SETTINGS: dict[str, dict[str, Any]] = {
    "A": {"model": "seed_cnn", "model_kw": {"width": 0.25}, "lr": 0.01, "epochs": 2},
    "B": {"model": "seed_cnn", "model_kw": {"width": 0.25}, "lr": 0.2, "epochs": 2},
    "C": {"model": "plain_cnn", "model_kw": {"depth": 20, "width": 8, "init": "kaiming"}, "lr": 0.2, "epochs": 5},
}


def configs() -> list[dict[str, Any]]:
    """Every run of the sweep: per setting and seed, no clipping, then each method's ten thresholds
    (:data:`gradkit.sweeps.THRESHOLD_RANGES`).

    >>> len(configs())  # 3 settings x 2 seeds x (1 + 3 methods x 10 thresholds)
    186
    """
    return [c for setting in SETTINGS.values()
            for c in sweep_configs({**COMMON, **setting}, THRESHOLD_RANGES, SEEDS)]


def round_floats(value: Any, digits: int = 5) -> Any:
    """``value`` with every finite float rounded to ``digits`` significant digits (lists and dicts walked).

    >>> round_floats({"a": [0.123456789, 2, float("inf")]})
    {'a': [0.12346, 2, inf]}
    """
    if isinstance(value, float):
        return float(f"{value:.{digits}g}") if math.isfinite(value) else value
    if isinstance(value, list):
        return [round_floats(v, digits) for v in value]
    if isinstance(value, dict):
        return {k: round_floats(v, digits) for k, v in value.items()}
    return value


def compact(results_dir: Path) -> int:
    """Round the floats of every run file in ``results_dir`` in place; returns the folder's size in bytes."""
    for path in sorted(results_dir.glob("run-*.json")):
        path.write_text(json.dumps(round_floats(json.loads(path.read_text()))))
    return sum(p.stat().st_size for p in results_dir.iterdir())


def _work(args: tuple[list[dict[str, Any]], str]) -> int:
    import torch

    from gradkit.runs import sweep

    part, out = args
    torch.set_num_threads(1)
    sweep(configs=part, results_dir=out, progress=False)
    return len(part)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "results", help="results folder (default: results/)")
    parser.add_argument("--jobs", type=int, default=2, help="training processes, one thread each (default: 2)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        raise SystemExit(f"--jobs must be >= 1, got {args.jobs}")
    todo = configs()
    # Dealt alternately, so the processes get the same mix of settings and finish together.
    parts = [todo[i::args.jobs] for i in range(args.jobs)]
    start = time.perf_counter()
    with mp.get_context("spawn").Pool(args.jobs) as pool:
        pool.map(_work, [(p, str(args.out)) for p in parts])
    trained = time.perf_counter() - start
    size = compact(args.out)
    from gradkit.runs import sweep

    runs = sweep(configs=todo, results_dir=args.out, progress=False)
    print(f"{len(runs)} runs in {args.out} ({size / 1e6:.2f} MB), {trained / 60:.1f} min wall for this call; "
          f"{sum(h.seconds for h in runs) / 60:.1f} min of training in total over the runs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
