"""Where the plain CNN fails to train: gradient norms per layer at initialisation, and a short
training probe. The tables in docs/models.md come from this script.

    GRADKIT_DATA=../shared/datasets python bench/plain_cnn_failure.py            # part 1, ~1 min on 2 cores
    GRADKIT_DATA=../shared/datasets python bench/plain_cnn_failure.py --probe    # + part 2, a few minutes

Part 1: for every depth and init, ``PlainCNN(depth, width, batchnorm=False, init)`` does one
forward/backward of cross-entropy on the same batch of CIFAR-10 training images (normalised with
the training mean/std). Printed: the loss (ln 10 = 2.30 is a uniform guess), the std of the
logits, the gradient norm of the first and of the last conv layer's weight, and their ratio
first/last: far below 1 means the gradient vanishes on its way to the input, far above 1 that it
grows.

Part 2 (``--probe``): trains a few settings (``PROBES``, at ``--probe-width``) with SGD
(momentum 0.9), no clipping, no augmentation, on a class-balanced subset, and prints the mean training loss of the last 20 steps,
the largest loss, the total gradient norm (first step, largest, last step) and the test
accuracy, or the step where the loss became NaN/inf.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from gradkit.data import Dataset, cifar10
from gradkit.models import PlainCNN

PROBES = (
    # (depth, init, lr): from part 1's table, each failure next to a setting of the same depth that trains.
    (20, "default", 0.01),
    (20, "kaiming", 0.01),
    (20, "kaiming", 0.1),
    (20, "normal:0.2", 0.01),
)


def normalise(data: Dataset, x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(data.mean).view(1, 3, 1, 1)
    std = torch.tensor(data.std).view(1, 3, 1, 1)
    return (x.float() / 255 - mean) / std


def gradients_at_init(data: Dataset, depth: int, init: str, width: int, batch: int, seed: int) -> dict[str, float]:
    torch.manual_seed(seed)
    model = PlainCNN(depth=depth, width=width, init=init)
    logits = model(normalise(data, data.train_x[:batch]))
    loss = F.cross_entropy(logits, data.train_y[:batch])
    loss.backward()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    first, last = convs[0].weight.grad.norm().item(), convs[-1].weight.grad.norm().item()
    return {"loss": loss.item(), "logit_std": logits.std().item(), "first": first, "last": last,
            "ratio": first / last if last > 0 else math.inf}


def probe(data: Dataset, depth: int, init: str, lr: float, width: int, batch: int, steps: int, seed: int) -> str:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = PlainCNN(depth=depth, width=width, init=init)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    losses: list[float] = []
    grad_norms: list[float] = []
    order = torch.empty(0, dtype=torch.long)
    for step in range(steps):
        if len(order) < batch:
            order = torch.randperm(len(data.train_y), generator=g)
        idx, order = order[:batch], order[batch:]
        loss = F.cross_entropy(model(normalise(data, data.train_x[idx])), data.train_y[idx])
        if not torch.isfinite(loss):
            return f"diverged: loss {loss.item()} at step {step} | | | | | "
        opt.zero_grad()
        loss.backward()
        grad_norms.append(torch.stack([p.grad.norm() for p in model.parameters()]).norm().item())
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        accuracy = (model(normalise(data, data.test_x)).argmax(1) == data.test_y).float().mean().item()
    tail = sum(losses[-20:]) / len(losses[-20:])
    return (f"{tail:.3f} | {max(losses):.3g} | {grad_norms[0]:.3g} | {max(grad_norms):.3g} | "
            f"{grad_norms[-1]:.3g} | {accuracy:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[8, 20, 32, 50])
    parser.add_argument("--inits", nargs="+", default=["default", "kaiming", "xavier", "normal:0.1"])
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--probe", action="store_true", help="also run the short training probe (part 2)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--probe-width", type=int, default=8, help="width in part 2 (8 keeps it to minutes on a CPU)")
    parser.add_argument("--subset", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = cifar10(device="cpu", subset=args.subset, test_subset=1000, seed=args.seed)
    print(f"# {data.name}, PlainCNN width={args.width} batchnorm=False, batch={args.batch}, seed={args.seed}, "
          f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}")
    print("\n## Part 1: one forward/backward at initialisation\n")
    print("| depth | init | loss | logit std | grad norm first conv | grad norm last conv | first/last |")
    print("|---|---|---|---|---|---|---|")
    start = time.perf_counter()
    for depth in args.depths:
        for init in args.inits:
            r = gradients_at_init(data, depth, init, args.width, args.batch, args.seed)
            print(f"| {depth} | {init} | {r['loss']:.3g} | {r['logit_std']:.3g} | {r['first']:.3g} | "
                  f"{r['last']:.3g} | {r['ratio']:.3g} |")
    print(f"\n({time.perf_counter() - start:.0f} s)")
    if not args.probe:
        return
    print(f"\n## Part 2: width {args.probe_width}, SGD momentum 0.9, no clipping, {args.steps} steps of batch {args.batch}, "
          f"{len(data.train_y)} training images, {len(data.test_y)} test images\n")
    print("| depth | init | lr | train loss, last 20 steps | max loss | grad norm, step 0 | max grad norm "
          "| grad norm, last step | test acc |")
    print("|---|---|---|---|---|---|---|---|---|")
    start = time.perf_counter()
    for depth, init, lr in PROBES:
        result = probe(data, depth, init, lr, args.probe_width, args.batch, args.steps, args.seed)
        print(f"| {depth} | {init} | {lr} | {result} |", flush=True)
    print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
