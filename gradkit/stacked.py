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
import math
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state

from . import runtime
from .checks import check_list
from .clip import clipper
from .foreach import norm_as_left, norm_factor, scaled_norm
from .history import History
from .loop import (build_model, check_data, check_run, cross_entropy, evaluate_into, loaders, make_optimizer, new_histories,
                   progress_bar, run_config, run_epochs, train_epoch)

STACKED_METHODS = ("none", "norm", "value")
STACKED_MODELS = ("seed_cnn", "plain_cnn (batchnorm=False)")
# fit() settings a stacked run does not support (at these values it runs them as fit does); a sweep
# config that sets any of them otherwise trains with fit().
SEQUENTIAL_ONLY = {"schedule": None, "amp": False, "monitor_every": 0, "constraint": None}


def fit_stacked(model: nn.Module | str, data: Any, clips: list, epochs: int = 1, optimizer: str = "sgd",
                lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 0.0, batch_size: int = 128,
                seed: int = 0, device: str | torch.device = "auto", progress: bool = True,
                model_kw: dict[str, Any] | None = None, max_steps: int | None = None,
                augment: bool = True) -> list[History]:
    """Train one copy of ``model`` per clip spec in ``clips``, all at once; one :class:`History` each.

    Every copy starts from the weights ``fit`` would build (``runtime.set_seed(seed)``, then the
    model) and sees the batches ``fit(seed=seed)`` would see. Per step and member n: the total
    gradient norm ``||g_n||`` over all its parameters; ``"norm:c"``: ``g_n <- g_n * c / (||g_n|| + 1e-6)``
    when ``||g_n|| > c``; ``"value:c"``: ``g_n <- clamp(g_n, -c, c)``; ``"none"``: unchanged. The
    rules, the records and the treatment of non-finite gradients are those of :mod:`gradkit.clip`
    (see :class:`_StackedClip`). The optimizer is a stock torch optimizer over the stacked tensors; sgd,
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
    settings = dict(locals())
    check_run(settings)
    check_data(data)
    config = run_config(**settings, clip=None, **SEQUENTIAL_ONLY)
    if not isinstance(clips, (list, tuple)) or not clips:
        raise ValueError(f"clips must be a non-empty list of clip specs, got {clips!r}")
    clip_fns = [clipper(c) for c in clips]
    check_list("clips", [fn.spec for fn in clip_fns])  # a setting twice would train one member twice
    for fn in clip_fns:
        if fn.method not in STACKED_METHODS:
            raise ValueError(f"clips: {fn.spec!r} cannot be stacked; accepted methods: {', '.join(STACKED_METHODS)} "
                             "(train other methods with gradkit.train.fit)")

    dev = runtime.resolve_device(device)
    cuda = dev.type == "cuda"
    model = build_model(model, model_kw, seed, dev)
    if any(True for _ in model.buffers()) or any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise ValueError(f"model={type(model).__name__} has BatchNorm/buffers, which fit_stacked cannot train per "
                         f"member; supported models: {', '.join(STACKED_MODELS)} (use gradkit.train.fit otherwise)")
    n_members = len(clip_fns)
    params, _ = stack_module_state([copy.deepcopy(model) for _ in range(n_members)])
    base = copy.deepcopy(model).to("meta")

    def forward(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(base, p, (x,))

    batched = torch.vmap(forward, in_dims=(0, None))
    train, test, val = loaders(data, batch_size, seed, dev, augment)
    total = len(train) * epochs if max_steps is None else min(len(train) * epochs, max_steps)
    leaves = list(params.values())
    opt = make_optimizer(optimizer, leaves, lr, momentum, weight_decay, cuda)
    clip = _StackedClip(clip_fns, dev)
    hists = new_histories([{**config, "clip": fn.spec} for fn in clip_fns], data, dev, len(train))

    def step(x: torch.Tensor, y: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        logits = batched(params, x)
        loss = cross_entropy(logits, y, "mean")
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        with torch.no_grad():
            before, after, clipped = clip([p.grad for p in leaves])
        opt.step()
        return (loss.detach(), before, after, clipped), (logits.detach().argmax(2) == y).sum(1)

    def evaluate_live(live: list[int]) -> None:
        idx = torch.tensor(live, device=dev)
        live_params = {k: v.detach().index_select(0, idx) for k, v in params.items()}
        evaluate_into(hists, live, lambda x: batched(live_params, x), test, val)

    bar = progress_bar(progress, total, f"{n_members} stacked runs")
    run_epochs(hists, epochs, total, len(train), lambda n, at: train_epoch(step, opt, train, n, hists, at, bar),
               evaluate_live, bar)
    return hists


class _StackedClip:
    """Per-member clipping of stacked gradients ``(N, *shape)``: norm, value or none per member,
    by the rules of :func:`gradkit.clip.clip_grad_norm` and :func:`gradkit.clip.clip_grad_value`.

    Value members: ``g <- clamp(g, -c, c)``, clipped when some ``|g_i| > c`` (an element equal to
    +-c is not cut). Norm members: ``g <- g * coef``, coef = 1 where ``||g|| <= c`` (a norm equal to
    c is not cut), ``c / (||g|| + 1e-6)`` above, 0 where ``||g||`` is inf, nan where it is nan;
    clipped when coef < 1. The norm after is ``coef * ||g||``, except 0 for a finite gradient whose
    norm overflowed (zeroed) and nan where an inf or nan element left nan. Every member goes through
    both passes (bound +inf and coef 1 for the others), so that no branch reads the device.

    >>> clip = _StackedClip([clipper("none"), clipper("norm:5"), clipper("value:3")], torch.device("cpu"))
    >>> g = torch.tensor([[3.0, -4.0]]).repeat(3, 1)  # norm 5, largest element 4
    >>> [r.tolist() for r in clip([g])], g.tolist()
    ([[5.0, 5.0, 5.0], [5.0, 5.0, 4.242640495300293], [False, False, True]], [[3.0, -4.0], [3.0, -4.0], [3.0, -3.0]])
    """

    def __init__(self, clip_fns: list, device: torch.device) -> None:
        def bounds(method: str) -> torch.Tensor:
            values = [fn.threshold if fn.method == method else math.inf for fn in clip_fns]
            return torch.tensor(values, dtype=torch.float32, device=device)

        self.max_norm, self.max_value = bounds("norm"), bounds("value")
        self.is_norm = torch.tensor([fn.method == "norm" for fn in clip_fns], device=device)
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
        # Only norm members take the norm factor: for the others an inf norm would give 0, a nan one nan.
        coef = torch.where(self.is_norm, norm_factor(mid, self.max_norm), torch.ones_like(mid))
        torch._foreach_mul_(grads, [_per_member(coef, g) for g in grads])
        clipped |= coef < 1
        return before, norm_as_left(scaled_norm(mid, coef), _left_nan(grads, mid)), clipped


def _left_nan(grads: list[torch.Tensor], norms: torch.Tensor) -> torch.Tensor:
    """``(N,)`` bool: does member n's gradient, as left, hold a nan (inf * 0, nan * c)?

    Only a member whose norm ``norms[n]`` was not finite can; on the CPU reading the norms waits
    for nothing, so the gradients are read again only then. On a GPU they are read every step (a
    branch would wait for the device): one more norm pass over the stacked gradients.
    """
    if norms.device.type == "cpu" and bool(torch.isfinite(norms).all()):
        return torch.zeros_like(norms, dtype=torch.bool)
    return torch.isnan(_member_norms(grads))


def _per_member(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(N,)`` -> ``(N, 1, ..., 1)`` broadcastable against a stacked tensor ``like``."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def _member_norms(grads: list[torch.Tensor]) -> torch.Tensor:
    """``||g_n||_2`` over all tensors of member n: the norm of the per-tensor norms (as torch sums it)."""
    per_tensor = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads])
    return torch.linalg.vector_norm(per_tensor, dim=0)
