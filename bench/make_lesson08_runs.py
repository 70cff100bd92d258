"""Make the runs lesson 08 ships in results/lesson08/ (JSON with provenance).

    nice -n 5 .venv/bin/python bench/make_lesson08_runs.py [--out results/lesson08] [--only exploding long charlm] [--force] [--jobs 2]

- ``exploding.json``: the adding problem with a vanilla tanh RNN (``recurrent.EXPLODING``), seeds
  0..``EXPLODING_SEEDS - 1``: first without clipping; then the table's settings, norm clipping at
  the 95th and 99th percentiles of those runs' gradient norms, value clipping at the 99th
  percentile of their largest gradient element, per-tensor norm clipping at the 99th-percentile
  norm; and the slider's grid, each method at ``recurrent.SLIDER_MULTIPLES`` times its table
  threshold.
- ``long.json``: the same task with longer sequences (``recurrent.LONG``), the cells of
  ``recurrent.LONG_CELLS`` all norm-clipped at ``recurrent.LONG_CLIP``, seeds 0..``LONG_SEEDS - 1``,
  with ``||dL/dh_t||`` on ``recurrent.PROFILE_SIZE`` test sequences at every evaluation.
- ``charlm.json``: the character-level GRU (``recurrent.CHARLM`` on ``charlm.corpus()``), seeds
  0..``CHARLM_SEEDS - 1``, without clipping and with norm clipping at ``recurrent.CHARLM_CLIP``
  (a fixed threshold: a percentile of the unclipped runs' norms would be read off their spikes);
  each run keeps a generated sample.

The parts run in ``--jobs`` processes of one torch thread each (a run's numbers do not depend on
what it is stacked with, ``recurrent.run_stack``). Each file's provenance names the gradkit commit
it was made with (``git rev-parse HEAD``) and the files of gradkit/ and bench/ that differed from
it. A file that exists is kept (``--force`` re-makes it), so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gradkit import runtime  # noqa: E402
from gradkit.clip import clipper  # noqa: E402
from gradkit.lessons import charlm, recurrent  # noqa: E402
from gradkit.lessons.recurrent import AddingTask, Run, train  # noqa: E402

NAMES = ("exploding", "long", "charlm")


def git_state(root: Path = ROOT) -> dict[str, Any]:
    """``{"gradkit_commit": HEAD or None, "uncommitted": [paths under gradkit/ and bench/ that differ from it]}``."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    head, status = git("rev-parse", "HEAD"), git("status", "--porcelain", "--", "gradkit", "bench")
    # porcelain lines are "XY path": two status letters, a space, the path
    return {"gradkit_commit": head.strip() if head else None,
            "uncommitted": sorted(line[3:] for line in status.splitlines() if line.strip()) if status else []}


def provenance(config: dict, seconds: float, wall: float, jobs: int) -> dict:
    """Where and how a file was made: ``device`` is the machine (its thread count is the main
    process's); the runs themselves trained in ``workers`` processes of one torch thread each."""
    return {"device": runtime.device_name("cpu"), "workers": jobs, "torch_threads_per_worker": 1,
            "torch": torch.__version__, "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            **git_state(), "config": config, "train_seconds": round(seconds, 1), "bench_wall_seconds": round(wall, 1),
            "load_average": [round(v, 1) for v in os.getloadavg()],
            "command": "python bench/make_lesson08_runs.py"}


def _train(task, setting: dict, members: list[tuple[str, int]], **kw) -> tuple[list[Run], float]:
    """Train in this (worker) process with one torch thread; the runs and the wall seconds."""
    torch.set_num_threads(1)
    s = {k: v for k, v in setting.items() if k not in ("length", "seq_len", "cell")}
    started = time.perf_counter()
    runs = train(task, setting["cell"], members, eval_every=max(s["steps"] // 20, 1), **s, **kw)
    return runs, time.perf_counter() - started


def adding_part(setting: dict, members: list[tuple[str, int]], **kw) -> tuple[list[Run], float]:
    runs, seconds = _train(AddingTask(setting["length"]), setting, members, **kw)
    for r in runs:
        r.net = None
    return runs, seconds


def charlm_part(seeds: list[int]) -> tuple[list[Run], float]:
    text = charlm.corpus()
    task = charlm.CharTask(text, recurrent.CHARLM["seq_len"])
    members = [(spec, s) for spec in ("none", recurrent.CHARLM_CLIP) for s in seeds]
    runs, seconds = _train(task, recurrent.CHARLM, members, test_size=recurrent.CHARLM_TEST)
    for r in runs:
        r.extra["sample"] = None if r.diverged else charlm.generate(r.net, text, "The ", length=160, seed=r.config["seed"])
        r.net = None
    return runs, seconds


def exploding_specs(free: list[Run]) -> tuple[list[str], list[str], dict[str, float]]:
    """The table's clipped specs, the slider's grid (beyond the table) and the percentiles they come from."""
    norms = np.concatenate([r.norm_before for r in free])
    tops = np.concatenate([r.max_abs for r in free])
    c95, c99 = recurrent.percentile_thresholds(norms, [95, 99])
    [v99] = recurrent.percentile_thresholds(tops, [99])
    table = [clipper(s).spec for s in (f"norm:{c95}", f"norm:{c99}", f"value:{v99}", f"tensor_norm:{c99}")]
    grid = [clipper(f"{m}:{float(f'{m_c * k:.2g}')}").spec for m, m_c in (("norm", c99), ("value", v99), ("tensor_norm", c99))
            for k in recurrent.SLIDER_MULTIPLES]
    grid = [s for s in dict.fromkeys(grid) if s not in table]
    return table, grid, {"norm_p95": c95, "norm_p99": c99, "max_abs_p99": v99}


def kept_series(name: str, run: Run) -> tuple[str, ...]:
    """The per-step series a shipped run keeps: what the lesson draws or reads thresholds from. The
    exploding setting's clipped runs keep their gradient norms only (the slider draws those; their
    outcomes come from the test losses), which keeps the file a few MB for 85 runs of 4000 steps."""
    if name != "exploding":
        return ("loss", "norm_before")
    return ("loss", "norm_before", "max_abs") if run.spec == "none" else ("norm_before",)


def chunks(items: list, n: int) -> list[list]:
    """``items`` in ``n`` interleaved parts (none empty)."""
    return [part for part in (items[i::n] for i in range(n)) if part]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "lesson08")
    parser.add_argument("--only", nargs="+", choices=NAMES, default=NAMES)
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    todo = [n for n in args.only if args.force or not (args.out / f"{n}.json").exists()]
    for name in set(args.only) - set(todo):
        print(f"{args.out / name}.json: exists, kept")
    started = time.perf_counter()
    parts: dict[str, list[Future]] = {}
    info: dict[str, dict] = {}
    with ProcessPoolExecutor(args.jobs) as pool:
        ex = recurrent.EXPLODING
        seeds = list(range(recurrent.EXPLODING_SEEDS))
        if "exploding" in todo:
            free_part = pool.submit(adding_part, ex, [("none", s) for s in seeds])
        if "long" in todo:
            lg_seeds = list(range(recurrent.LONG_SEEDS))
            parts["long"] = [pool.submit(adding_part, {**recurrent.LONG, "cell": cell},
                                         [(recurrent.LONG_CLIP, s) for s in lg_seeds], profile_size=recurrent.PROFILE_SIZE)
                             for cell in recurrent.LONG_CELLS]
            info["long"] = {**recurrent.LONG, "cells": list(recurrent.LONG_CELLS), "clip": recurrent.LONG_CLIP,
                            "seeds": recurrent.LONG_SEEDS, "profile_size": recurrent.PROFILE_SIZE}
        if "charlm" in todo:
            parts["charlm"] = [pool.submit(charlm_part, list(range(recurrent.CHARLM_SEEDS)))]
            info["charlm"] = {**recurrent.CHARLM, "seeds": recurrent.CHARLM_SEEDS, "test_size": recurrent.CHARLM_TEST,
                              "corpus": charlm.corpus().describe(), "clip": recurrent.CHARLM_CLIP}
        if "exploding" in todo:
            free_runs, free_seconds = free_part.result()
            table, grid, pct = exploding_specs(free_runs)
            members = [(spec, s) for spec in table + grid for s in seeds]
            parts["exploding"] = [pool.submit(adding_part, ex, part) for part in chunks(members, args.jobs)]
            info["exploding"] = {**ex, "seeds": len(seeds), "table": table, "grid": grid, "multiples": list(recurrent.SLIDER_MULTIPLES),
                                 "percentiles": pct}
        for name in todo:
            done = [f.result() for f in parts[name]]
            runs = [r for part, _ in done for r in part]
            seconds = sum(s for _, s in done)
            if name == "exploding":
                runs, seconds = free_runs + sorted(runs, key=lambda r: members.index((r.spec, r.config["seed"]))), seconds + free_seconds
            prov = provenance(info[name], seconds, time.perf_counter() - started, args.jobs)
            path = args.out / f"{name}.json"
            recurrent.save_runs(path, runs, prov, series=lambda r: kept_series(name, r))
            print(f"{path}: {len(runs)} runs, {prov['train_seconds']} s of training, {prov['bench_wall_seconds']} s since the start",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
