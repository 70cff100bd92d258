"""What gradient clipping and monitoring cost per training step, as ratios to no clipping.

One training step = zero_grad, forward, cross-entropy, backward, [clip], SGD(momentum 0.9) step,
on a fixed random batch already on the device (no data loading), for the seed CNN (conv 3->64,
conv 64->128, fc 8192->1024->10) and torchvision's ResNet-18 (num_classes=10) on 32x32 inputs.
Variants, all with max_norm = 1 (value clipping: c = ``MAX_VALUE``):

- ``none``: no clipping (the baseline, ratio 1.00);
- ``torch``: ``torch.nn.utils.clip_grad_norm_`` (foreach kernels);
- ``naive``: the per-tensor loop with ``.item()`` found in many tutorials (one host sync per tensor);
- ``gradkit``: :func:`gradkit.clip_grad_norm`;
- ``gradkit+monitor``: the same through :class:`gradkit.GradMonitor` (every step: per-layer
  gradient and weight norms and the update-to-weight ratio);
- ``torch value``: ``torch.nn.utils.clip_grad_value_``;
- ``gradkit value``: :func:`gradkit.clip.clip_grad_value`, which also measures the norms before
  and after and counts the clipped elements (what ``fit`` records every step), on the CPU through
  :mod:`gradkit.fused`'s one-pass numba kernel when numba is installed (the header says whether,
  and on how many threads: torch's, from ``gradkit.fused.PARALLEL_MIN`` elements on; the last line
  names numba's threading layer);
- ``gradkit value (torch ops)``: the same with ``GRADKIT_NUMBA=0``: six torch kernels per piece.

The variants run in alternation, ``--rounds`` times, so that a machine whose load changes slows
all of them alike; each ratio is the median over rounds of the variant's time over the time of
``none`` in the same round, and ms/step is the fastest round (the least disturbed by other
processes). A second table times the clipping call alone (the fastest call; same gradients
every call), where differences between implementations are not hidden by the step's noise; it
also times value clipping, gradkit's against torch's (ratio to ``clip_grad_value_``).
CPU always, CUDA when present.

On a machine that other jobs keep busy, torch's second thread is often descheduled and every
parallel operation then waits for it (a whole scheduler slice, about 2 ms, per operation): the
ratios measure that, not the code. ``--threads 1 --clock cpu`` times one thread by its CPU time,
which other processes do not inflate.

    python bench/clip_overhead.py                         # defaults: 11 s on 2 idle CPU cores, minutes on busy ones
    python bench/clip_overhead.py --threads 1 --clock cpu # a busy machine
    python bench/clip_overhead.py --devices cuda          # batch 128, 50 steps x 5 rounds
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gradkit import fused, runtime  # noqa: E402
from gradkit.clip import clip_grad_norm, clip_grad_value  # noqa: E402
from gradkit.models import SeedCNN  # noqa: E402
from gradkit.monitor import GradMonitor  # noqa: E402

MAX_NORM = 1.0
MAX_VALUE = 1e-2
VARIANTS = ("none", "torch", "naive", "gradkit", "gradkit+monitor", "torch value", "gradkit value", "gradkit value (torch ops)")
MODELS: dict[str, Callable[[], nn.Module]] = {"seed_cnn": SeedCNN, "resnet18": lambda: resnet18(num_classes=10)}


def naive_clip(model: nn.Module, max_norm: float) -> None:
    """The tutorial loop: a Python float per tensor, so the host waits for the device each time."""
    total = math.sqrt(sum(p.grad.norm().item() ** 2 for p in model.parameters() if p.grad is not None))
    coef = max_norm / (total + 1e-6)
    if coef < 1:
        for p in model.parameters():
            if p.grad is not None:
                p.grad.mul_(coef)


def clip_values_by_torch_ops(model: nn.Module, clip_value: float) -> None:
    """gradkit's value clipping with GRADKIT_NUMBA=0 (torch ops instead of the fused kernel)."""
    saved = os.environ.get("GRADKIT_NUMBA")
    os.environ["GRADKIT_NUMBA"] = "0"
    try:
        clip_grad_value(model, clip_value)
    finally:
        if saved is None:
            del os.environ["GRADKIT_NUMBA"]
        else:
            os.environ["GRADKIT_NUMBA"] = saved


# time.perf_counter (wall time), or time.process_time with --clock cpu
clock: Callable[[], float] = time.perf_counter


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _setup(name: str, device: torch.device, batch: int) -> tuple[nn.Module, torch.optim.Optimizer, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = MODELS[name]().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    return model, opt, x, y


def _rounds(run: Callable[[str], float], variants: tuple[str, ...], rounds: int) -> dict[str, list[float]]:
    """Run every variant once per round, rotating the order so none always follows the same one."""
    times: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(rounds):
        for variant in variants[r % len(variants):] + variants[: r % len(variants)]:
            times[variant].append(run(variant))
    return times


def _baseline(variant: str) -> str:
    """The torch call a variant is compared with: clip_grad_value_ for value clipping, else clip_grad_norm_."""
    return "torch value" if "value" in variant else "torch"


def bench_steps(name: str, device: torch.device, batch: int, steps: int, rounds: int, warmup: int) -> dict[str, tuple[float, float, float]]:
    """Per variant: the fastest round's seconds per training step (the least disturbed by other
    processes), and the medians over rounds of its ratios to ``none`` and to its torch baseline
    (:func:`_baseline`) in the same round."""
    model, opt, x, y = _setup(name, device, batch)
    monitor = GradMonitor(model, every=1)
    clips: dict[str, Callable[[], object]] = {
        "none": lambda: None,
        "torch": lambda: torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM),
        "naive": lambda: naive_clip(model, MAX_NORM),
        "gradkit": lambda: clip_grad_norm(model, MAX_NORM),
        "gradkit+monitor": lambda: monitor.clip(MAX_NORM),
        "torch value": lambda: torch.nn.utils.clip_grad_value_(model.parameters(), MAX_VALUE),
        "gradkit value": lambda: clip_grad_value(model, MAX_VALUE),
        "gradkit value (torch ops)": lambda: clip_values_by_torch_ops(model, MAX_VALUE),
    }

    def run(variant: str, n: int = steps) -> float:
        clip = clips[variant]
        if variant == "gradkit+monitor":
            monitor.attach(opt)
        _sync(device)
        start = clock()
        for _ in range(n):
            opt.zero_grad(set_to_none=False)
            F.cross_entropy(model(x), y).backward()
            clip()
            opt.step()
        _sync(device)
        elapsed = clock() - start
        monitor.detach()
        return elapsed / n

    for variant in VARIANTS:
        run(variant, warmup)
    times = _rounds(run, VARIANTS, rounds)
    def ratio(v: str, to: str) -> float:
        return statistics.median(a / b for a, b in zip(times[v], times[to]))

    return {v: (min(t), ratio(v, "none"), ratio(v, _baseline(v))) for v, t in times.items()}


def bench_clip_only(name: str, device: torch.device, batch: int, reps: int, rounds: int) -> dict[str, float]:
    """The fastest of ``reps * rounds`` single clipping calls. Before each call the same large
    gradients are restored (outside the timing), so every call clips."""
    model, _, x, y = _setup(name, device, batch)
    F.cross_entropy(model(x), y).backward()
    grads = [p.grad for p in model.parameters()]
    torch._foreach_mul_(grads, 1e3)
    saved = [g.clone() for g in grads]
    clips: dict[str, Callable[[], object]] = {
        "torch": lambda: torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM),
        "naive": lambda: naive_clip(model, MAX_NORM),
        "gradkit": lambda: clip_grad_norm(model, MAX_NORM),
        "torch value": lambda: torch.nn.utils.clip_grad_value_(model.parameters(), MAX_VALUE),
        "gradkit value": lambda: clip_grad_value(model, MAX_VALUE),
        "gradkit value (torch ops)": lambda: clip_values_by_torch_ops(model, MAX_VALUE),
    }

    def run(variant: str) -> float:
        fastest = math.inf
        for _ in range(reps):
            torch._foreach_copy_(grads, saved)
            _sync(device)
            start = clock()
            clips[variant]()
            _sync(device)
            fastest = min(fastest, clock() - start)
        return fastest

    for variant in clips:
        run(variant)
    return {v: min(t) for v, t in _rounds(run, tuple(clips), rounds).items()}


def _load() -> str:
    """The 1-minute load average (Linux), to print beside the numbers."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", default="auto", help="'auto' (CPU, and CUDA when present), 'cpu' or 'cuda'")
    parser.add_argument("--models", default="seed_cnn,resnet18", help="comma-separated: seed_cnn, resnet18")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: 8 on CPU, 128 on CUDA)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per variant per round (default: 1 on CPU, 50 on CUDA)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of all variants (default: 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per variant before the rounds")
    parser.add_argument("--reps", type=int, default=None, help="clipping calls per variant per round in the clip-only table (default: 6 on CPU, 100 on CUDA)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--clock", default="wall", choices=("wall", "cpu"), help="wall time, or this process's CPU time (with --threads 1 on a busy machine)")
    args = parser.parse_args(argv)
    global clock
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads={args.threads}; accepted values: an int >= 1")
        torch.set_num_threads(args.threads)
    if args.devices == "auto":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    elif args.devices in ("cpu", "cuda"):
        devices = [args.devices]
    else:
        parser.error(f"--devices={args.devices!r}; accepted values: auto, cpu, cuda")
    models = [m.strip() for m in args.models.split(",")]
    for m in models:
        if m not in MODELS:
            parser.error(f"--models: unknown model {m!r}; accepted values: {', '.join(MODELS)}")
    torch.backends.cudnn.benchmark = True
    print(f"torch {torch.__version__}, max_norm={MAX_NORM}, value c={MAX_VALUE}, SGD(lr=0.01, momentum=0.9), random data on the device; "
          f"{torch.get_num_threads()} CPU threads, {args.clock} clock, load average {_load()}; "
          f"gradkit value's fused CPU kernel (gradkit.fused): {fused.status()}"
          + (f", {fused.threads(fused.PARALLEL_MIN)} threads from {fused.PARALLEL_MIN} elements" if fused.enabled() else ""))
    for dev_name in devices:
        device = runtime.resolve_device(dev_name)
        on_gpu = device.type == "cuda"
        batch = args.batch or (128 if on_gpu else 8)
        steps = args.steps or (50 if on_gpu else 1)
        rounds = args.rounds or 5
        reps = args.reps or (100 if on_gpu else 6)
        print(f"\n{runtime.device_name(device)}: batch {batch}, {steps} steps x {rounds} rounds per variant, warm-up {args.warmup}")
        print("Training step: ms/step of the fastest round; ratio = median over rounds of time / time of 'none' in that round; "
              "vs torch = the same to torch's clip_grad_norm_ (value variants: clip_grad_value_)")
        print(f"{'model':<10} {'variant':<25} {'ms/step':>9} {'ratio':>7} {'vs torch':>8}")
        for name in models:
            result = bench_steps(name, device, batch, steps, rounds, args.warmup)
            for variant in VARIANTS:
                ms, ratio, vs_torch = result[variant]
                shown = f"{vs_torch:8.3f}" if variant != "none" else f"{'':>8}"
                print(f"{name:<10} {variant:<25} {1000 * ms:9.2f} {ratio:7.3f} {shown}")
        print(f"Clipping call alone: fastest of {reps} calls x {rounds} rounds; ratio to torch.nn.utils.clip_grad_norm_ "
              f"(value variants: to torch.nn.utils.clip_grad_value_, c={MAX_VALUE})")
        print(f"{'model':<10} {'variant':<25} {'ms/call':>9} {'ratio':>7}")
        for name in models:
            clip_only = bench_clip_only(name, device, batch, reps, rounds)
            for variant, seconds in clip_only.items():
                baseline = clip_only[_baseline(variant)]
                print(f"{name:<10} {variant:<25} {1000 * seconds:9.3f} {seconds / baseline:7.3f}")
    if fused.enabled():
        print(f"\nnumba threading layer of the parallel kernel: {fused.layer()}; load average {_load()}")

if __name__ == "__main__":
    main()
