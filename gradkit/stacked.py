"""Train one model under several clipping settings at once: N stacked copies, one batched step.

A threshold sweep trains the same model from the same initial weights on the same batches and
changes only the clip threshold. :func:`fit_stacked` stacks the N copies' parameters into
tensors of shape ``(N, *shape)`` (``torch.func.stack_module_state``) and runs them as one model
with ``torch.vmap(torch.func.functional_call)``: one forward, one backward, one clipping pass and
one optimizer step per batch for all N settings, instead of N small ones. On a GPU that fills
the device where a single SeedCNN leaves it mostly idle; on a CPU the batched convolutions are
grouped convolutions, which are not faster (``bench/sweep_throughput.py`` measures both).

Each member n computes exactly what ``fit(clip=clips[n], seed=seed)`` computes, up to the
order of floating-point additions (batched kernels sum in another order):
``loss_n = mean_i CE(f(w_n, x_i), y_i)``; the backward of ``sum_n loss_n`` gives each member
its own gradient (the members share no weights); clipping per member; then the optimizer.

>>> from gradkit.data import synthetic
>>> hs = fit_stacked("seed_cnn", synthetic(n=128, n_test=64), ["none", "norm:0.5"], model_kw={"width": 0.25},
...                  batch_size=64, progress=False)
>>> [h.config["clip"] for h in hs], [len(h.loss) for h in hs]
(['none', 'norm:0.5'], [2, 2])
"""

from __future__ import annotations

import copy
import datetime
import json
import math
import time
from typing import Any, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state

from . import runtime
from .train import (CHECK_EVERY, DATA_KEYS, DeviceLoader, History, _build_model, _canonical, _check_run, _loaders,
                    _optimizer, _progress_bar, _record_steps)

STACKED_METHODS = ("none", "norm", "value")
STACKED_MODELS = ("seed_cnn", "plain_cnn (batchnorm=False)")
NORM_EPS = 1e-6  # as torch.nn.utils.clip_grad_norm_ and gradkit.clip.clip_grad_norm
# fit() settings a stacked run does not support; a sweep config using any of them trains with fit().
_SEQUENTIAL_ONLY = {"schedule": None, "amp": False, "monitor_every": 0, "constraint": None}


def fit_stacked(model: nn.Module | str, data: Any, clips: list, epochs: int = 1, optimizer: str = "sgd",
                lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 0.0, batch_size: int = 128,
                seed: int = 0, device: str | torch.device = "auto", progress: bool = True,
                model_kw: dict[str, Any] | None = None, max_steps: int | None = None,
                augment: bool = True) -> list[History]:
    """Train one copy of ``model`` per clip spec in ``clips``, all at once; one :class:`History` each.

    Every copy starts from the weights ``fit`` would build (``runtime.set_seed(seed)``, then the
    model) and sees the batches ``fit(seed=seed)`` would see. Per step and member n: the total
    gradient norm ``||g_n||`` over all its parameters; ``"norm:c"``:
    ``g_n <- g_n * min(1, c / (||g_n|| + 1e-6))``; ``"value:c"``: ``g_n <- clamp(g_n, -c, c)``;
    ``"none"``: unchanged. The optimizer is a stock torch optimizer over the stacked tensors; sgd,
    adam, adamw and rmsprop are element-wise (their state and update of one element depend only
    on that element), so this equals N separate optimizers. A member whose loss becomes NaN/inf
    is marked diverged at that step exactly as in ``fit``; it keeps computing in its own slice
    (it cannot affect the others) and its records stop there. Training stops early only when
    every member has diverged.

    Supported clip methods: :data:`STACKED_METHODS`; models: :data:`STACKED_MODELS` (models with
    BatchNorm keep running statistics in buffers that vmap cannot update per member).
    Each History's ``config`` is the one ``fit`` would write (canonical clip spec), so
    ``load_sweep``, the explorer and ``summary.csv`` read them alike. ``epoch_seconds`` and
    ``seconds`` are the stacked run's, the same for every member.

    >>> from gradkit.data import synthetic
    >>> hs = fit_stacked("seed_cnn", synthetic(n=256, n_test=64), [None, "norm:0.01"], lr=1e4, epochs=2,
    ...                  batch_size=32, model_kw={"width": 0.25}, progress=False)
    >>> [h.diverged for h in hs]
    [True, False]
    """
    from .clip import clipper

    config = {"model": model if isinstance(model, str) else type(model).__name__, "epochs": epochs,
              "optimizer": optimizer, "lr": lr, "momentum": momentum, "weight_decay": weight_decay, "clip": None,
              "schedule": None, "amp": False, "batch_size": batch_size, "seed": seed, "monitor_every": 0,
              "augment": augment, "max_steps": max_steps, "model_kw": dict(model_kw or {}), "constraint": None}
    _check_run(data, epochs, batch_size, lr, optimizer, max_steps)
    if not isinstance(clips, (list, tuple)) or not clips:
        raise ValueError(f"clips must be a non-empty list of clip specs, got {clips!r}")
    clip_fns = [clipper(c) for c in clips]
    for fn in clip_fns:
        if fn.method not in STACKED_METHODS:
            raise ValueError(f"clips: {fn.spec!r} cannot be stacked; accepted methods: {', '.join(STACKED_METHODS)} "
                             "(train other methods with gradkit.train.fit)")

    dev = runtime.resolve_device(device)
    cuda = dev.type == "cuda"
    model = _build_model(model, model_kw, seed, dev)
    if any(True for _ in model.buffers()) or any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise ValueError(f"model={type(model).__name__} has BatchNorm/buffers, which fit_stacked cannot train per "
                         f"member; supported models: {', '.join(STACKED_MODELS)} (use gradkit.train.fit otherwise)")
    n_members = len(clip_fns)
    params, _ = stack_module_state([copy.deepcopy(model) for _ in range(n_members)])
    base = copy.deepcopy(model).to("meta")

    def forward(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(base, p, (x,))

    batched = torch.vmap(forward, in_dims=(0, None))
    train, test = _loaders(data, batch_size, seed, dev, augment)
    total = len(train) * epochs if max_steps is None else min(len(train) * epochs, max_steps)
    leaves = list(params.values())
    opt = _optimizer(optimizer, leaves, lr, momentum, weight_decay, cuda)
    clip = _StackedClip(clip_fns, dev)

    date = datetime.datetime.now().isoformat(timespec="seconds")
    hists = [History(config={**config, "clip": fn.spec}, device=runtime.device_name(dev), dataset=data.name,
                     synthetic=bool(data.synthetic), date=date, steps_per_epoch=len(train)) for fn in clip_fns]
    bar = _progress_bar(progress, total, f"{n_members} stacked runs")
    started, step = time.perf_counter(), 0
    try:
        for _ in range(epochs):
            n = min(len(train), total - step)
            if n <= 0 or all(h.diverged for h in hists):
                break
            _train_epoch(batched, params, leaves, opt, clip, train, n, hists, step, bar)
            live = [m for m, h in enumerate(hists) if not h.diverged]
            for m, (loss, acc) in zip(live, _evaluate(batched, params, test, live)):
                hists[m].test_loss.append(loss)
                hists[m].test_acc.append(acc)
            step += n
        return hists
    finally:
        seconds = time.perf_counter() - started
        for h in hists:
            h.seconds = seconds
        if bar is not None:
            bar.close()


class _StackedClip:
    """Per-member clipping of stacked gradients ``(N, *shape)``: norm, value or none per member.

    Each member gets both a norm bound (``c`` for norm members, +inf otherwise) and a value bound
    (``c`` for value members, +inf otherwise); +inf is a no-op, so one pass serves every member.
    """

    def __init__(self, clip_fns: list, device: torch.device) -> None:
        def bounds(method: str) -> torch.Tensor:
            values = [fn.threshold if fn.method == method else math.inf for fn in clip_fns]
            return torch.tensor(values, dtype=torch.float32, device=device)

        self.max_norm, self.max_value = bounds("norm"), bounds("value")
        self.any_value = any(fn.method == "value" for fn in clip_fns)

    def __call__(self, grads: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Clip in place; returns (norm before, norm after, clipped), each of shape ``(N,)``."""
        before = _member_norms(grads)
        clipped = torch.zeros_like(before, dtype=torch.bool)
        if self.any_value:
            bound = [_per_member(self.max_value, g) for g in grads]
            outside = torch.stack([(g.abs() > b).flatten(1).any(1) for g, b in zip(grads, bound)]).any(0)
            torch._foreach_maximum_(grads, [-b for b in bound])
            torch._foreach_minimum_(grads, bound)
            clipped |= outside
            mid = _member_norms(grads)
        else:
            mid = before
        # Always multiplied (coefficient 1 for non-norm members) so that no branch reads the device.
        coef = torch.clamp(self.max_norm / (mid + NORM_EPS), max=1.0)
        torch._foreach_mul_(grads, [_per_member(coef, g) for g in grads])
        clipped |= coef < 1
        return before, mid * coef, clipped


def _per_member(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(N,)`` -> ``(N, 1, ..., 1)`` broadcastable against a stacked tensor ``like``."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def _member_norms(grads: list[torch.Tensor]) -> torch.Tensor:
    """``||g_n||_2`` over all tensors of member n: the norm of the per-tensor norms (as torch sums it)."""
    per_tensor = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads])
    return torch.linalg.vector_norm(per_tensor, dim=0)


def _member_ce(logits: torch.Tensor, y: torch.Tensor, reduction: str) -> torch.Tensor:
    """Cross-entropy of each member's ``(B, 10)`` logits in ``(N, B, 10)``: ``(N,)`` mean or sum."""
    n, b, k = logits.shape
    per = F.cross_entropy(logits.reshape(n * b, k), y.repeat(n), reduction="none").view(n, b)
    return per.mean(1) if reduction == "mean" else per.sum(1)


def _train_epoch(batched: Any, params: dict[str, torch.Tensor], leaves: list[torch.Tensor],
                 opt: torch.optim.Optimizer, clip: _StackedClip, train: DeviceLoader, n: int, hists: list[History],
                 step: int, bar: Any) -> None:
    """Train ``n`` steps of all members; add each live member's records and epoch to its History.

    Records stay in one ``(N, 4, n)`` device tensor; every ``CHECK_EVERY`` steps the new losses
    are read to find members that diverged (one host sync for all members).
    """
    start = time.perf_counter()
    members = len(hists)
    buf = torch.empty(members, 4, n, device=train.device)  # loss, norm before, norm after, clipped
    correct = torch.zeros(members, dtype=torch.long, device=train.device)
    sizes, lrs, checked = [], [], 0
    broke: dict[int, int] = {}  # member -> first non-finite step within this epoch
    for i, (x, y) in enumerate(train):
        if i == n:
            break
        lrs.append(opt.param_groups[0]["lr"])
        logits = batched(params, x)
        loss = _member_ce(logits, y, "mean")
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        with torch.no_grad():
            before, after, clipped = clip([p.grad for p in leaves])
        opt.step()
        buf[:, 0, i] = loss.detach()
        buf[:, 1, i] = before
        buf[:, 2, i] = after
        buf[:, 3, i] = clipped
        correct += (logits.detach().argmax(2) == y).sum(1)
        sizes.append(y.shape[0])
        if (i + 1) % CHECK_EVERY == 0 or i + 1 == n:
            recent = buf[:, 0, checked:i + 1].tolist()
            for m, row in enumerate(recent):
                bad = next((j for j, v in enumerate(row) if not math.isfinite(v)), None)
                if bad is not None and m not in broke and not hists[m].diverged:
                    broke[m] = checked + bad
            if bar is not None:
                bar.update(len(recent[0]))
            checked = i + 1
            if all(h.diverged or m in broke for m, h in enumerate(hists)):
                break
    seconds = time.perf_counter() - start
    records, correct_host = buf.tolist(), correct.tolist()
    for m, hist in enumerate(hists):
        if hist.diverged:
            continue
        if m in broke:
            first = broke[m]
            _record_steps(hist, [r[:first] for r in records[m]], lrs[:first])
            hist.diverged, hist.diverged_step = True, step + first
            continue
        hist.epoch_seconds.append(seconds)
        _record_steps(hist, records[m], lrs)
        hist.train_loss.append(sum(v * s for v, s in zip(records[m][0], sizes)) / sum(sizes))
        hist.train_acc.append(correct_host[m] / sum(sizes))


@torch.no_grad()
def _evaluate(batched: Any, params: dict[str, torch.Tensor], loader: DeviceLoader,
              members: list[int]) -> list[tuple[float, float]]:
    """Mean cross-entropy and accuracy on ``loader`` of each member in ``members`` (one vmap per batch)."""
    if not members:
        return []
    idx = torch.tensor(members, device=loader.device)
    live = {k: v.detach().index_select(0, idx) for k, v in params.items()}
    total = torch.zeros(2, len(members), device=loader.device)
    for x, y in loader:
        logits = batched(live, x)
        total[0] += _member_ce(logits, y, "sum")
        total[1] += (logits.argmax(2) == y).sum(1)
    loss_sum, correct = total.tolist()
    return [(s / loader.n, c / loader.n) for s, c in zip(loss_sum, correct)]


def stackable(cfg: dict[str, Any]) -> bool:
    """True when a sweep config can train in a stacked group: clip method in :data:`STACKED_METHODS`,
    a model without BatchNorm, and none of schedule, amp, monitor_every or constraint set."""
    from .clip import clipper

    full = _canonical(cfg)
    kw = full["model_kw"]
    model_ok = full["model"] == "seed_cnn" or (full["model"] == "plain_cnn" and not kw.get("batchnorm", False))
    return (model_ok and clipper(full["clip"]).method in STACKED_METHODS
            and all(full[k] == v for k, v in _SEQUENTIAL_ONLY.items()))


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
    kw = {k: v for k, v in cfg.items() if k not in DATA_KEYS and k not in _SEQUENTIAL_ONLY and k != "clip"}
    return fit_stacked(data=data, clips=[_canonical(c)["clip"] for c, _ in group], progress=progress, **kw)
