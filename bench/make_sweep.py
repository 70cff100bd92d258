"""Make the sweep shipped in ``results/`` that lessons 04 and 05 read.

    GRADKIT_DATA=/work/shared/datasets python bench/make_sweep.py [--jobs 2] [--out results]

Real CIFAR-10, one class-balanced subset for every SeedCNN run: 10,000 training images, 1,000
validation images held out of the training set (:func:`gradkit.data.cifar10`'s ``val``) and 2,000
test images. Every SeedCNN run: ``SeedCNN(width=0.25)``, SGD with momentum 0.9, batch 128 (79 steps
an epoch), 10 epochs, a cosine learning-rate schedule, random crops and flips, per-layer statistics
every 10 steps. Settings are chosen on validation accuracy; test accuracy is reported for the
chosen ones.

- Grid (lesson 04's heat-map): learning rates :data:`GRID_LRS` x norm-clipping thresholds
  :data:`GRID_NORMS`, plus no clipping at each rate; seed 0.
- Setting A (lr 0.05, the rate where SeedCNN learns best) and setting B (lr 0.2, high: without
  clipping the run collapses): the grid's norm thresholds again for seed 1, and value clipping and
  AGC at :data:`VALUE_CS` / :data:`AGC_LAMBDAS` for seeds 0 and 1.
- Setting C: ``PlainCNN(depth=20, width=8, init="kaiming")`` without batch norm at lr 0.2 (a deep
  plain net that loses its units after a huge step), 5,000 training images, 6 epochs, constant rate:
  no clipping, norm clipping and AGC, seeds 0 and 1.
- Matched learning rate: for every clipped run of settings A, B and C with seed 0 (:data:`MATCH_SEED`),
  an unclipped run at ``lr_eff = lr * mean_t(||g_t||_after / ||g_t||_before)`` (the mean factor the
  clipped run scaled its gradients by, :func:`gradkit.sweeps.matched_lr`), rounded to 3 significant
  digits, same model, data, schedule and seed. Where the clipped run scaled by more than 0.95 on
  average the matched run would be the unclipped one and is skipped. ``matched.json`` maps each
  clipped run's id to its matched run's id.

Runs go through :func:`gradkit.runs.sweep` (one JSON per run named by its config hash): an
interrupted sweep resumes where it stopped. ``--jobs N`` trains in N processes of one thread each.
Runs are ordered so that the most important finish first: settings A and B for seed 0, then the
rest of the grid, then seed 1, then setting C, then the matched runs.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GRID_LRS = (0.01, 0.05, 0.2, 0.5)
GRID_NORMS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
VALUE_CS = (0.001, 0.01)
AGC_LAMBDAS = (0.01, 0.1)
LR_A, LR_B = 0.05, 0.2
SEED_DATA = {"subset": 10000, "test_subset": 2000, "val": 1000, "data_seed": 0}
SEED_CNN = {"model": "seed_cnn", "model_kw": {"width": 0.25}, "optimizer": "sgd", "batch_size": 128, "epochs": 10,
            "schedule": "cosine", "monitor_every": 10, "device": "cpu", **SEED_DATA}
PLAIN = {"model": "plain_cnn", "model_kw": {"depth": 20, "width": 8, "init": "kaiming"}, "optimizer": "sgd",
         "batch_size": 128, "epochs": 6, "lr": 0.2, "monitor_every": 10, "device": "cpu",
         "subset": 5000, "test_subset": 2000, "val": 500, "data_seed": 0}
PLAIN_CLIPS = ("none", "norm:0.1", "norm:1", "agc:0.01", "agc:0.1")
MATCH_SKIP = 0.95
# Matched runs for one seed: they answer "is this clipped run just a smaller learning rate?", and
# the seed spread of that answer is read off the clipped runs' own two seeds.
MATCH_SEED = 0


def _seed_cnn(lr: float, clip: str, seed: int) -> dict[str, Any]:
    return {**SEED_CNN, "lr": lr, "clip": clip, "seed": seed}


def primary_configs() -> list[dict[str, Any]]:
    """Every run but the matched ones, most important first.

    >>> cfgs = primary_configs()
    >>> len(cfgs), len({json.dumps(c, sort_keys=True) for c in cfgs})
    (68, 68)
    """
    norms = ["none"] + [f"norm:{c:g}" for c in GRID_NORMS]
    others = [f"value:{c:g}" for c in VALUE_CS] + [f"agc:{c:g}" for c in AGC_LAMBDAS]
    out = [_seed_cnn(lr, clip, 0) for lr in (LR_A, LR_B) for clip in norms]
    out += [_seed_cnn(lr, clip, 0) for lr in GRID_LRS if lr not in (LR_A, LR_B) for clip in norms]
    out += [_seed_cnn(lr, clip, 0) for lr in (LR_A, LR_B) for clip in others]
    out += [_seed_cnn(lr, clip, 1) for lr in (LR_A, LR_B) for clip in norms + others]
    out += [{**PLAIN, "clip": clip, "seed": seed} for seed in (0, 1) for clip in PLAIN_CLIPS]
    return out


def matched_configs(runs: list[Any]) -> dict[str, dict[str, Any]]:
    """``{clipped run id: config of its matched-learning-rate run}`` for the clipped runs of settings A, B
    (SeedCNN at :data:`LR_A`, :data:`LR_B`) and C (the PlainCNN) with seed :data:`MATCH_SEED`.

    The matched rate is :func:`gradkit.sweeps.matched_lr`, ``lr * mean(after / before)`` over the
    clipped run's steps (a run that diverged is matched over the steps it took); runs whose mean
    scale is above :data:`MATCH_SKIP` are skipped (their matched run is the unclipped one).
    """
    from gradkit.sweeps import matched_lr, mean_scale

    out = {}
    for h in runs:
        c = h.config
        seed_cnn = c.get("model") == "seed_cnn" and c.get("lr") in (LR_A, LR_B)
        plain = c.get("model") == PLAIN["model"] and c.get("model_kw") == PLAIN["model_kw"]
        if c.get("clip") == "none" or c.get("seed") != MATCH_SEED or not (seed_cnn or plain):
            continue
        scale = mean_scale(h)
        if not math.isfinite(scale) or scale > MATCH_SKIP:
            continue
        base = _seed_cnn(0.0, "none", c["seed"]) if seed_cnn else {**PLAIN, "clip": "none", "seed": c["seed"]}
        out[c["run_id"]] = {**base, "lr": matched_lr(h)}
    return out


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


def _sweep():
    from gradkit.runs import sweep

    return sweep


def _work(args: tuple[dict[str, Any], str]) -> str:
    import torch

    cfg, out = args
    torch.set_num_threads(1)
    return _sweep()(configs=[cfg], results_dir=out, progress=False)[0].config["run_id"]


def _run_all(todo: list[dict[str, Any]], out: Path, jobs: int) -> None:
    with mp.get_context("spawn").Pool(jobs) as pool:
        for i, run_id in enumerate(pool.imap(_work, [(c, str(out)) for c in todo]), 1):
            print(f"{time.strftime('%H:%M:%S')} {i}/{len(todo)} run-{run_id}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "results", help="results folder (default: results/)")
    parser.add_argument("--jobs", type=int, default=2, help="training processes, one thread each (default: 2)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        raise SystemExit(f"--jobs must be >= 1, got {args.jobs}")
    sweep = _sweep()
    start = time.perf_counter()
    primary = primary_configs()
    _run_all(primary, args.out, args.jobs)
    matched = matched_configs(sweep(configs=primary, results_dir=args.out, progress=False))
    _run_all(list(matched.values()), args.out, args.jobs)
    # sweep returns the runs in the order of its configs: the i-th matched run belongs to the i-th clipped run
    found = sweep(configs=list(matched.values()), results_dir=args.out, progress=False)
    links = {clipped: h.config["run_id"] for clipped, h in zip(matched, found)}
    (args.out / "matched.json").write_text(json.dumps(links, indent=1, sort_keys=True) + "\n")
    runs = sweep(configs=primary + list(matched.values()), results_dir=args.out, progress=False)
    wall = time.perf_counter() - start
    size = compact(args.out)
    sweep(configs=primary + list(matched.values()), results_dir=args.out, progress=False)  # summary.csv
    print(f"{len(runs)} runs in {args.out} ({size / 1e6:.2f} MB), {wall / 60:.1f} min wall for this call; "
          f"{sum(h.seconds for h in runs) / 60:.1f} min of training in total over the runs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
