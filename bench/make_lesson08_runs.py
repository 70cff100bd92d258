"""Make the runs lesson 08 ships in results/lesson08/ (JSON with provenance).

    nice -n 5 .venv/bin/python bench/make_lesson08_runs.py [--out results/lesson08] [--only exploding long charlm] [--force]

- ``exploding.json``: the adding problem with a vanilla tanh RNN (``recurrent.EXPLODING``), seeds
  0..4: first without clipping, then norm clipping at the 90th and 99th percentiles of those runs'
  gradient norms, value clipping at the 99th percentile of their largest gradient element,
  per-tensor norm clipping at the 99th-percentile norm, and a grid of thresholds per method for
  the lesson's slider (``recurrent.SLIDER_GRID``).
- ``long.json``: the same task with longer sequences (``recurrent.LONG``), vanilla RNN and GRU,
  both norm-clipped at ``recurrent.LONG_CLIP``, seeds 0..2.
- ``charlm.json``: the character-level GRU (``recurrent.CHARLM`` on ``charlm.corpus()``), seeds
  0..``CHARLM_SEEDS - 1``, without clipping and with norm clipping at ``recurrent.CHARLM_CLIP``
  (a fixed threshold: a percentile of the unclipped runs' norms would be read off their spikes);
  each run keeps a generated sample.

A file that exists is kept (``--force`` re-makes it), so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gradkit import runtime  # noqa: E402
from gradkit.clip import clipper  # noqa: E402
from gradkit.lessons import charlm, recurrent  # noqa: E402
from gradkit.lessons.recurrent import AddingTask, train  # noqa: E402


def provenance(config: dict, wall: float, cpu: float) -> dict:
    return {"device": runtime.device_name("cpu"), "torch": torch.__version__, "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "config": config, "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
            "load_average": [round(v, 1) for v in os.getloadavg()],
            "command": "python bench/make_lesson08_runs.py"}


def train_setting(task, setting: dict, members: list[tuple[str, int]], **kw) -> list:
    s = {k: v for k, v in setting.items() if k not in ("length", "seq_len", "cell")}
    return train(task, setting["cell"], members, eval_every=max(s["steps"] // 20, 1), **s, **kw)


def exploding(seeds: range) -> tuple[list, dict]:
    task = AddingTask(recurrent.EXPLODING["length"])
    free = train_setting(task, recurrent.EXPLODING, [("none", s) for s in seeds])
    norms = np.concatenate([r.norm_before for r in free])
    tops = np.concatenate([r.max_abs for r in free])
    c90, c99 = recurrent.percentile_thresholds(norms, [90, 99])
    [v99] = recurrent.percentile_thresholds(tops, [99])
    table = [f"norm:{c90}", f"norm:{c99}", f"value:{v99}", f"tensor_norm:{c99}"]
    grid = [f"{m}:{c}" for m, cs in recurrent.SLIDER_GRID.items() for c in cs]
    specs = list(dict.fromkeys(str(clipper(s).spec) for s in table + grid))
    clipped = train_setting(task, recurrent.EXPLODING, [(spec, s) for spec in specs for s in seeds])
    return free + clipped, {"table": [str(clipper(s).spec) for s in table],
                            "percentiles": {"norm_p90": c90, "norm_p99": c99, "max_abs_p99": v99}}


def long(seeds: range, clip: str) -> tuple[list, dict]:
    task = AddingTask(recurrent.LONG["length"])
    runs = []
    for cell in ("rnn", "gru"):
        runs += train_setting(task, {**recurrent.LONG, "cell": cell}, [(clip, s) for s in seeds])
    return runs, {"clip": clip}


def char_runs(seeds: range) -> tuple[list, dict]:
    text = charlm.corpus()
    task = charlm.CharTask(text, recurrent.CHARLM["seq_len"])
    clip = recurrent.CHARLM_CLIP
    runs = train_setting(task, recurrent.CHARLM, [(spec, s) for spec in ("none", clip) for s in seeds],
                         test_size=recurrent.CHARLM_TEST)
    for r in runs:
        r.extra["sample"] = charlm.generate(r.net, text, "The ", length=160, seed=r.config["seed"]) if not r.diverged else None
    return runs, {"corpus": text.describe(), "clip": clip}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "lesson08")
    parser.add_argument("--only", nargs="+", choices=("exploding", "long", "charlm"), default=("exploding", "long", "charlm"))
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for name in args.only:
        path = args.out / f"{name}.json"
        if path.exists() and not args.force:
            print(f"{path}: exists, kept")
            continue
        wall, cpu = time.perf_counter(), time.process_time()
        if name == "exploding":
            runs, info = exploding(range(5))
            config = {**recurrent.EXPLODING, "seeds": 5}
        elif name == "long":
            runs, info = long(range(3), recurrent.LONG_CLIP)
            config = {**recurrent.LONG, "seeds": 3}
        else:
            runs, info = char_runs(range(recurrent.CHARLM_SEEDS))
            config = {**recurrent.CHARLM, "seeds": recurrent.CHARLM_SEEDS, "test_size": recurrent.CHARLM_TEST}
        prov = provenance({**config, **info}, time.perf_counter() - wall, time.process_time() - cpu)
        recurrent.save_runs(path, runs, prov)
        print(f"{path}: {len(runs)} runs, {prov['wall_seconds']} s wall, {prov['cpu_seconds']} s cpu", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
