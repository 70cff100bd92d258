"""Seconds for a threshold sweep: sequential ``sweep`` against ``sweep(stacked=True)``, side by side.

Issue 4: 8 norm-clipping thresholds x 10 epochs of SeedCNN on full CIFAR-10. Both sides train
the same 8 configs on the same data in the same process, each into a fresh temporary folder (so
nothing is loaded from disk); the stacked side trains all 8 as one vmapped model
(:func:`gradkit.stacked.fit_stacked`). Printed: the device, the seconds of each side, the ratio
sequential / stacked (> 1: stacking is faster), and the largest gap in final test accuracy.

    GRADKIT_DATA=/work/shared/datasets python bench/sweep_throughput.py          # CPU: width 0.25, 2000 images, 1 epoch
    python bench/sweep_throughput.py                                             # CUDA: width 1.0, all data, 10 epochs

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
from gradkit.runs import sweep  # noqa: E402

THRESHOLDS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def main() -> None:
    cuda = runtime.resolve_device("auto").type == "cuda"
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=float, default=1.0 if cuda else 0.25)
    parser.add_argument("--subset", type=int, default=None if cuda else 2000, help="training images (default: all on CUDA)")
    parser.add_argument("--test-subset", type=int, default=None if cuda else 1000)
    parser.add_argument("--epochs", type=int, default=10 if cuda else 1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.01)
    args = parser.parse_args()

    data = cifar10(subset=args.subset, test_subset=args.test_subset, seed=0)
    base = {"model": "seed_cnn", "model_kw": {"width": args.width}, "epochs": args.epochs,
            "batch_size": args.batch_size, "lr": args.lr, "seed": 0}
    print(f"device: {runtime.device_name()} | torch {torch.__version__} | {data.name}, "
          f"{data.train_y.numel()} train / {data.test_y.numel()} test images | SeedCNN(width={args.width}), "
          f"{args.epochs} epoch(s), batch {args.batch_size}, {len(THRESHOLDS)} norm thresholds")
    seconds, results = {}, {}
    for name, stacked in (("sequential", False), ("stacked", True)):
        with tempfile.TemporaryDirectory() as folder:
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            results[name] = sweep(thresholds=list(THRESHOLDS), base=base, data=data, results_dir=folder,
                                  progress=False, stacked=stacked)
            if cuda:
                torch.cuda.synchronize()
            seconds[name] = time.perf_counter() - start
        print(f"{name:>10}: {seconds[name]:8.2f} s")
    print(f"ratio sequential / stacked: {seconds['sequential'] / seconds['stacked']:.2f}x")
    gaps = [abs((a.final_test_acc or 0.0) - (b.final_test_acc or 0.0))
            for a, b in zip(results["sequential"], results["stacked"])]
    print(f"largest final test-accuracy gap between the two: {max(gaps):.4f}")


if __name__ == "__main__":
    main()
