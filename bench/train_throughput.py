"""Seconds per training epoch: the tutorial loop against ``gradkit.train.fit``, side by side.

The baseline is the loop every clipping tutorial shows: a Dataset of PIL images (as torchvision's
``CIFAR10`` returns them), ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``, ``ToTensor``,
``Normalize``, a ``DataLoader`` (shuffled, ``num_workers`` 0 and, on CUDA, 8), SGD(lr 0.01,
momentum 0.9), ``clip_grad_norm_(max_norm=0.5)``, batch 128, on :class:`gradkit.models.SeedCNN`.
``fit`` runs the same model, hyper-parameters and augmentation with ``clip="norm:0.5"`` while it
records the loss and the gradient norm before/after clipping at every step. Both start from the
same weights. Reported: the median seconds per epoch of the training part (evaluation
excluded), the ratio baseline / fit, and the test accuracy after the last epoch. On a shared
machine wall time depends on the other jobs, so the process CPU seconds per epoch are printed
too (training and the final evaluation, divided by the epochs; DataLoader worker processes are
not counted, so this is given for ``num_workers=0`` and fit only): with ``--threads 1`` they
measure the work itself.

    python bench/train_throughput.py --width 0.25 --subset 5000 --epochs 2     # 2-core CPU
    python bench/train_throughput.py --epochs 10                               # a GPU, all data

``--rounds r`` repeats both sides r times in alternation (A B A B ...) so that a machine whose
load changes during the run slows both alike; the median over all epochs of all rounds is used.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gradkit import runtime  # noqa: E402
from gradkit.data import cifar10  # noqa: E402
from gradkit.models import SeedCNN  # noqa: E402
from gradkit.train import fit  # noqa: E402


class PILImages(torch.utils.data.Dataset):
    """uint8 (N, 3, 32, 32) images served as PIL images through ``transform``, as torchvision's CIFAR10 does."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform: transforms.Compose) -> None:
        self.x = np.ascontiguousarray(x.permute(0, 2, 3, 1).cpu().numpy())  # HWC, like CIFAR10.data
        self.y = y.cpu().tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.x[i])), self.y[i]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def baseline(data, width: float, epochs: int, workers: int, batch_size: int, seed: int,
             device: torch.device) -> tuple[list[float], list[float], float]:
    """The tutorial loop; returns (wall seconds of each epoch's training, CPU seconds per epoch, test accuracy)."""
    normalize = transforms.Normalize(data.mean, data.std)
    train_tf = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                   transforms.ToTensor(), normalize])
    test_tf = transforms.Compose([transforms.ToTensor(), normalize])
    pin = device.type == "cuda"
    train = DataLoader(PILImages(data.train_x, data.train_y, train_tf), batch_size=batch_size, shuffle=True,
                       num_workers=workers, pin_memory=pin, persistent_workers=workers > 0)
    test = DataLoader(PILImages(data.test_x, data.test_y, test_tf), batch_size=1000, num_workers=workers,
                      pin_memory=pin)
    torch.manual_seed(seed)
    model = SeedCNN(width).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    seconds, cpu_start = [], time.process_time()
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        for x, y in train:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.5)
            opt.step()
        _sync(device)
        seconds.append(time.perf_counter() - start)
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in test:
            correct += (model(x.to(device)).argmax(1).cpu() == y).sum().item()
    return seconds, (time.process_time() - cpu_start) / epochs, correct / len(test.dataset)


def with_fit(data, width: float, epochs: int, batch_size: int, seed: int,
             device: torch.device) -> tuple[list[float], float, float]:
    """``gradkit.train.fit`` with the same settings; returns the same three numbers as :func:`baseline`."""
    torch.manual_seed(seed)
    model = SeedCNN(width)
    cpu_start = time.process_time()
    h = fit(model, data, epochs=epochs, lr=0.01, momentum=0.9, clip="norm:0.5", batch_size=batch_size,
            seed=seed, device=device, progress=False)
    return h.epoch_seconds, (time.process_time() - cpu_start) / epochs, h.test_acc[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=float, default=1.0, help="SeedCNN width (0.25 for CPUs)")
    parser.add_argument("--subset", type=int, default=None, help="training images (class-balanced); default all")
    parser.add_argument("--test-subset", type=int, default=None, help="test images; default all")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1, help="alternating repetitions of both sides")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=str, default=None,
                        help="comma-separated DataLoader num_workers for the baseline (default: 0 on CPU, 0,8 on CUDA)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = runtime.resolve_device(args.device)
    workers = [int(w) for w in args.workers.split(",")] if args.workers else ([0, 8] if device.type == "cuda" else [0])
    data = cifar10(subset=args.subset, test_subset=args.test_subset, device="cpu")
    print(f"device={runtime.device_name(device)} torch={torch.__version__} data={data.name} "
          f"train={len(data.train_y)} test={len(data.test_y)} width={args.width} batch={args.batch_size} "
          f"epochs={args.epochs} rounds={args.rounds}", flush=True)

    sides = {f"baseline num_workers={w}": (lambda w=w: baseline(data, args.width, args.epochs, w, args.batch_size,
                                                                 args.seed, device)) for w in workers}
    sides["gradkit fit"] = lambda: with_fit(data, args.width, args.epochs, args.batch_size, args.seed, device)
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    cpu: dict[str, list[float]] = {name: [] for name in sides}
    accuracy: dict[str, list[float]] = {name: [] for name in sides}
    for r in range(args.rounds):
        for name, run in sides.items():
            s, c, acc = run()
            seconds[name] += s
            cpu[name].append(c)
            accuracy[name].append(acc)
            print(f"  round {r + 1} {name}: " + ", ".join(f"{v:.2f}" for v in s)
                  + f" s/epoch, {c:.2f} CPU s/epoch, test acc {acc:.4f}", flush=True)

    fit_s, fit_cpu = statistics.median(seconds["gradkit fit"]), statistics.median(cpu["gradkit fit"])
    results = {"device": runtime.device_name(device), "torch": torch.__version__, "dataset": data.name,
               "train_images": len(data.train_y), "test_images": len(data.test_y), "width": args.width,
               "batch_size": args.batch_size, "epochs": args.epochs, "rounds": args.rounds,
               "threads": torch.get_num_threads(), "sides": {}}
    print(f"{'side':<26}{'s/epoch':>9}{'images/s':>10}{'fit speed-up':>14}{'CPU s/epoch':>13}{'CPU ratio':>11}"
          f"{'test acc':>10}")
    for name in sides:
        med, med_cpu = statistics.median(seconds[name]), statistics.median(cpu[name])
        ratio, cpu_ratio = med / fit_s, med_cpu / fit_cpu
        acc = statistics.mean(accuracy[name])
        results["sides"][name] = {"s_per_epoch": med, "epoch_seconds": seconds[name], "fit_speedup": ratio,
                                  "cpu_s_per_epoch": cpu[name], "cpu_ratio": cpu_ratio, "test_acc": accuracy[name]}
        cpu_text = f"{med_cpu:>13.2f}{cpu_ratio:>10.2f}x" if name.endswith("=0") or name == "gradkit fit" else " " * 24
        print(f"{name:<26}{med:>9.3f}{len(data.train_y) / med:>10.0f}{ratio:>13.2f}x{cpu_text}{acc:>10.4f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
