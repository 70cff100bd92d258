"""Seconds and runs per hour for a threshold sweep: sequential ``sweep``, ``sweep(stacked=True)`` and
``sweep(workers=N)`` (N processes on this machine), side by side.

Issue 4: 8 norm-clipping thresholds x 10 epochs of SeedCNN on full CIFAR-10. Every side trains
the same 8 configs into a fresh temporary folder (so nothing is loaded from disk). Sequential:
one run after another in this process, torch on all its threads. Stacked: all 8 as one vmapped
model (:func:`gradkit.stacked.fit_stacked`). Parallel (issue 14): N spawned processes (default:
one per usable core), each with ``cores // N`` torch threads and loading the data itself; its
time includes starting the processes (importing torch in each), as a user would wait for it.
Printed: the device, each side's seconds and runs/hour, the ratios stacked / sequential and
parallel / sequential (runs/hour; > 1: faster than sequential), and the largest gap in final test
accuracy against the sequential side.

    GRADKIT_DATA=/work/shared/datasets python bench/sweep_throughput.py          # CPU: width 0.25, 2000 images, 1 epoch
    python bench/sweep_throughput.py                                             # CUDA: width 1.0, all data, 10 epochs
    python bench/sweep_throughput.py --sides sequential,parallel --workers 2     # only the issue-14 comparison

On a CPU the vmapped convolutions run as grouped convolutions, which need not be faster than N
ordinary ones: the ratio there is a measurement, not the goal (the goal is a GPU, where one
small SeedCNN leaves most of the device idle).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from gradkit import runtime  # noqa: E402
from gradkit.data import cifar10  # noqa: E402
from gradkit.executors import threads_per_process, usable_cores  # noqa: E402
from gradkit.runs import sweep  # noqa: E402

THRESHOLDS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
SIDES = ("sequential", "stacked", "parallel")


def main() -> None:
    cuda = runtime.resolve_device("auto").type == "cuda"
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=float, default=1.0 if cuda else 0.25)
    parser.add_argument("--subset", type=int, default=None if cuda else 2000, help="training images (default: all on CUDA)")
    parser.add_argument("--test-subset", type=int, default=None if cuda else 1000)
    parser.add_argument("--epochs", type=int, default=10 if cuda else 1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--workers", type=int, default=usable_cores(), help="processes of the parallel side (default: one per core)")
    parser.add_argument("--sides", default=",".join(SIDES), help=f"comma-separated, of {', '.join(SIDES)} (sequential always runs)")
    args = parser.parse_args()
    sides = ["sequential"] + [s for s in args.sides.split(",") if s != "sequential"]
    unknown = sorted(set(sides) - set(SIDES))
    if unknown:
        parser.error(f"--sides {unknown} are not sides; accepted: {', '.join(SIDES)}")

    data = cifar10(subset=args.subset, test_subset=args.test_subset, seed=0)
    # The parallel side's workers load CIFAR-10 themselves from the same settings (data=None in sweep).
    base = {"model": "seed_cnn", "model_kw": {"width": args.width}, "epochs": args.epochs,
            "batch_size": args.batch_size, "lr": args.lr, "seed": 0, "subset": args.subset,
            "test_subset": args.test_subset, "data_seed": 0}
    print(f"device: {runtime.device_name()} | torch {torch.__version__}, {torch.get_num_threads()} threads | {data.name}, "
          f"{data.train_y.numel()} train / {data.test_y.numel()} test images | SeedCNN(width={args.width}), "
          f"{args.epochs} epoch(s), batch {args.batch_size}, {len(THRESHOLDS)} norm thresholds | "
          f"parallel: {args.workers} processes x {threads_per_process(args.workers)} torch thread(s)")
    seconds, results = {}, {}
    for name in sides:
        kw = {"stacked": name == "stacked", "workers": args.workers if name == "parallel" else None}
        # Sequential and stacked train on the data loaded above, parallel workers load the same subset.
        run_data = None if name == "parallel" else data
        with tempfile.TemporaryDirectory() as folder:
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            results[name] = sweep(thresholds=list(THRESHOLDS), base=base if run_data is None else _fit_only(base),
                                  data=run_data, results_dir=folder, progress=False, **kw)
            if cuda:
                torch.cuda.synchronize()
            seconds[name] = time.perf_counter() - start
        print(f"{name:>10}: {seconds[name]:8.2f} s, {len(THRESHOLDS) * 3600 / seconds[name]:8.0f} runs/hour")
    for name in sides[1:]:
        print(f"ratio {name} / sequential (runs/hour): {seconds['sequential'] / seconds[name]:.2f}x")
        gaps = [abs((a.final_test_acc or 0.0) - (b.final_test_acc or 0.0))
                for a, b in zip(results["sequential"], results[name])]
        print(f"largest final test-accuracy gap, {name} vs sequential: {max(gaps):.4f}")


def _fit_only(base: dict) -> dict:
    """``base`` without the data settings (the data is passed to sweep)."""
    return {k: v for k, v in base.items() if k not in ("subset", "test_subset", "data_seed")}


if __name__ == "__main__":
    main()
