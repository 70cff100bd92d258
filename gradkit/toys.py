"""Toy models and functions for lessons 01 and 02: small enough to recompute on every slider move.

Everything here runs in float64 on the CPU so that gradients of 1e-150 or 1e+60 stay numbers on a
log axis instead of underflowing to 0 or overflowing to inf, and every random draw comes from a
``seed`` argument, so the same call gives the same numbers on any machine.

- :func:`product_norms`, :func:`log_norm_drift`: the norm of ``W_L ... W_1 x`` (lesson 01, part 1).
- :func:`mlp_profile`: per-layer gradient norms and activations of a deep MLP (lesson 01, parts 2, 4).
- :func:`recurrence_grad_norms`: gradients through ``h_t = W h_{t-1}`` (lesson 01, part 3).
- :func:`clip_2d`: value vs norm clipping of one 2-D vector (lesson 02, part 2).
- :func:`cliff_loss`, :func:`descend`: gradient descent into a steep wall (lesson 02, part 4).
- :func:`tiny_regression`: a small model and batch for the "broken on purpose" pairs (lesson 02, part 5).

>>> norms = product_norms(depth=3, scale=1.0, width=8, trials=2)
>>> norms.shape
(2, 4)
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from .checks import check_choice, check_int, check_positive
from .clip import clip_grad_norm, clip_grad_value, clipper

ACTIVATIONS = ("sigmoid", "tanh", "relu")
INITS = ("normal", "xavier", "kaiming")
NORMS = ("none", "batch", "layer")
MATRICES = ("orthogonal", "symmetric", "gaussian")
RECURRENCE_ACTIVATIONS = ("linear", "tanh")
DTYPE = torch.float64
T = TypeVar("T")

# Saturation thresholds on the activation's output. Both mark the region where the derivative has
# fallen below ~4% of its maximum: sigmoid'(z) = a(1-a) <= 0.0099 (max 0.25) once |a - 0.5| > 0.49
# (|z| > 4.6), and tanh'(z) = 1 - a^2 <= 0.0396 (max 1) once |a| > 0.98 (|z| > 2.3).
SIGMOID_SATURATION = 0.49
TANH_SATURATION = 0.98


def _one_thread(fn: Callable[..., T]) -> Callable[..., T]:
    """Run ``fn`` with one torch thread, then restore the previous count.

    Toy tensors are far too small to gain from threads, and on a busy 2-core CPU the thread
    hand-offs made one depth-100 MLP profile 7x slower (0.70 s vs 0.10 s): too slow for a slider.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return wrapper


def _generator(seed: int) -> torch.Generator:
    check_int("seed", seed, 0)
    return torch.Generator().manual_seed(int(seed))


# ----------------------------------------------------------------------------------------------
# Part 1: products of random matrices


@_one_thread
def product_norms(depth: int, scale: float, width: int = 64, trials: int = 16, seed: int = 0) -> np.ndarray:
    """Norms ``||W_l ... W_1 x||`` for ``l = 0..depth`` with ``||x|| = 1`` and ``W_ij ~ N(0, scale^2 / width)``.

    ``scale = 1`` is the ``1/sqrt(fan_in)`` boundary: there ``E ||W x||^2 = ||x||^2`` exactly, so the
    mean *square* norm is preserved at every depth; below it norms shrink like ``scale^l``, above
    it they grow like ``scale^l`` (see :func:`log_norm_drift` for the exact rate of the typical norm).
    Returns an array of shape ``(trials, depth + 1)``; column 0 is all ones.

    >>> n = product_norms(depth=2, scale=2.0, width=4, trials=3)
    >>> n.shape, float(n[0, 0])
    ((3, 3), 1.0)
    """
    check_int("depth", depth, 0)
    check_positive("scale", scale)
    check_int("width", width, 1)
    check_int("trials", trials, 1)
    gen = _generator(seed)
    x = torch.randn(trials, width, 1, generator=gen, dtype=DTYPE)
    x = x / x.norm(dim=1, keepdim=True)
    norms = [torch.ones(trials, dtype=DTYPE)]
    std = scale / math.sqrt(width)
    for _ in range(depth):
        w = torch.randn(trials, width, width, generator=gen, dtype=DTYPE) * std
        x = w @ x
        norms.append(x.norm(dim=(1, 2)))
    return torch.stack(norms, dim=1).numpy()


def log_norm_drift(scale: float, width: int) -> float:
    """The exact mean change of ``log ||x||`` per layer for ``x -> W x`` with ``W_ij ~ N(0, scale^2 / width)``.

    ``||W x||^2 / ||x||^2`` is ``scale^2 / n`` times a chi-square with ``n = width`` degrees of
    freedom, whose log has mean ``digamma(n/2) + log 2``; so

        E[log ||W x|| - log ||x||] = log(scale) + (digamma(n/2) + log(2/n)) / 2 ~= log(scale) - 1/(2n).

    The typical (median) norm after ``L`` layers is therefore ``exp(L * drift)``: it grows like
    ``scale^L`` up to the small correction ``-L/(2n)``, which is why at ``scale = 1`` the typical norm
    still shrinks slowly while the mean square stays exactly 1.

    >>> round(log_norm_drift(1.0, 64), 5), round(-1 / (2 * 64), 5)
    (-0.00785, -0.00781)
    """
    check_positive("scale", scale)
    check_int("width", width, 1)
    half = torch.tensor(width / 2.0, dtype=DTYPE)
    return math.log(scale) + 0.5 * (float(torch.special.digamma(half)) + math.log(2.0 / width))


# ----------------------------------------------------------------------------------------------
# Parts 2 and 4: a deep MLP at initialisation


class DeepMLP(nn.Module):
    """``depth`` hidden layers ``h_l = act(norm(W_l h_{l-1} + b_l))`` (plus ``h_{l-1}`` if residual), then 10 logits.

    The input has ``width`` features so a residual connection can start at layer 1. Normalisation
    layers have no learnable parameters (``affine=False``), so the model's only parameters are the
    ``depth + 1`` linear layers whose gradients the lesson plots.
    """

    def __init__(self, depth: int, width: int, activation: str, norm: str = "none", residual: bool = False,
                 classes: int = 10) -> None:
        super().__init__()
        self.activation = activation
        self.residual = residual
        self.hidden = nn.ModuleList(nn.Linear(width, width, dtype=DTYPE) for _ in range(depth))
        if norm == "batch":
            self.norms = nn.ModuleList(nn.BatchNorm1d(width, affine=False, dtype=DTYPE) for _ in range(depth))
        elif norm == "layer":
            self.norms = nn.ModuleList(nn.LayerNorm(width, elementwise_affine=False, dtype=DTYPE) for _ in range(depth))
        else:
            self.norms = nn.ModuleList(nn.Identity() for _ in range(depth))
        self.out = nn.Linear(width, classes, dtype=DTYPE)
        self._act: Callable[[Tensor], Tensor] = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}[activation]

    def forward(self, x: Tensor, record: list[Tensor] | None = None) -> Tensor:
        h = x
        for linear, norm in zip(self.hidden, self.norms):
            a = self._act(norm(linear(h)))
            if record is not None:
                record.append(a.detach())
            h = h + a if self.residual else a
        return self.out(h)


def init_std(init: str, fan_in: int, fan_out: int, std: float = 0.05) -> float:
    """The weight standard deviation of an init scheme (biases start at 0).

    ``"normal"``: ``std`` as given; ``"xavier"`` (Glorot & Bengio 2010, normal form):
    ``sqrt(2 / (fan_in + fan_out))``; ``"kaiming"`` (He et al. 2015, for ReLU): ``sqrt(2 / fan_in)``.

    >>> init_std("kaiming", 128, 128) == (2 / 128) ** 0.5
    True
    """
    check_choice("init", init, INITS)
    if init == "xavier":
        return math.sqrt(2.0 / (fan_in + fan_out))
    if init == "kaiming":
        return math.sqrt(2.0 / fan_in)
    check_positive("std", std)
    return float(std)


def saturated_share(a: Tensor, activation: str) -> float:
    """The share of saturated units in activations ``a`` of shape ``(batch, width)``.

    sigmoid: entries with ``|a - 0.5| > 0.49`` (``|z| > 4.6``); tanh: entries with ``|a| > 0.98``
    (``|z| > 2.3``); in both regions the derivative is below 4% of its maximum, so almost no
    gradient passes. ReLU does not saturate on the positive side; for it the share counts *dead*
    units, those that are 0 for every example of the batch (their gradient is exactly 0).

    >>> saturated_share(torch.tensor([[0.999, 0.5], [0.001, 0.6]]), "sigmoid")
    0.5
    """
    check_choice("activation", activation, ACTIVATIONS)
    if activation == "sigmoid":
        return float(((a - 0.5).abs() > SIGMOID_SATURATION).double().mean())
    if activation == "tanh":
        return float((a.abs() > TANH_SATURATION).double().mean())
    return float((a == 0).all(dim=0).double().mean())


@dataclass
class MLPProfile:
    """What :func:`mlp_profile` measured; layer 1 is next to the input, the last entry is the output layer."""

    grad_norm: np.ndarray        # (depth + 1,) ||grad|| of each linear layer (weight and bias), after clipping if any
    saturated: np.ndarray        # (depth,) saturated share of each hidden layer, see saturated_share
    activations: np.ndarray      # (depth, k) activation values of the first examples, for histograms
    loss: float
    norm_before: float           # total gradient norm before clipping
    norm_after: float            # total gradient norm the optimizer would see
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def first_last_ratio(self) -> float:
        """``||grad layer 1|| / ||grad last hidden layer||``: << 1 vanishing, >> 1 exploding toward the input."""
        return float(self.grad_norm[0] / self.grad_norm[-2]) if len(self.grad_norm) > 1 else 1.0


@_one_thread
def mlp_profile(depth: int = 20, width: int = 128, activation: str = "tanh", init: str = "xavier", std: float = 0.05,
                norm: str = "none", residual: bool = False, batch: int = 256, clip: Any = None,
                seed: int = 0) -> MLPProfile:
    """Per-layer gradient norms and activations of a freshly initialised deep MLP on one batch.

    Inputs ``x ~ N(0, 1)`` of ``width`` features, random labels among 10 classes, cross-entropy loss;
    one backward pass, then (if ``clip`` is a spec for :func:`gradkit.clip.clipper`) clipping.
    Weights ``~ N(0, init_std(init, ...)^2)``, biases 0. In the backward pass every hidden layer
    multiplies the gradient by ``W_l^T diag(act'(z_l))``, so per layer it shrinks or grows by about
    ``std * sqrt(width) * E|act'(z)|``: below 1 the gradients *vanish* toward the input, above 1
    they *explode* toward the input. Norm clipping multiplies every layer by the same factor
    ``min(1, c / ||g||)``, so it leaves :attr:`MLPProfile.first_last_ratio` unchanged.

    >>> p = mlp_profile(depth=3, width=16, batch=32)
    >>> p.grad_norm.shape, p.saturated.shape
    ((4,), (3,))
    """
    check_int("depth", depth, 1)
    check_int("width", width, 1)
    check_choice("activation", activation, ACTIVATIONS)
    check_choice("init", init, INITS)
    check_choice("norm", norm, NORMS)
    check_int("batch", batch, 2)
    if not isinstance(residual, bool):
        raise ValueError(f"residual={residual!r} must be True or False")
    gen = _generator(seed)
    model = DeepMLP(depth, width, activation, norm, residual)
    with torch.no_grad():
        for layer in [*model.hidden, model.out]:
            layer.weight.normal_(0.0, init_std(init, layer.in_features, layer.out_features, std), generator=gen)
            layer.bias.zero_()
    x = torch.randn(batch, width, generator=gen, dtype=DTYPE)
    y = torch.randint(0, 10, (batch,), generator=gen)
    acts: list[Tensor] = []
    loss = nn.functional.cross_entropy(model(x, record=acts), y)
    loss.backward()
    layers = [*model.hidden, model.out]
    before = torch.stack([torch.cat([p.grad.flatten() for p in layer.parameters()]).norm() for layer in layers])
    norm_before = float(before.norm())
    if clip is not None:
        clipper(clip)(model)
    after = torch.stack([torch.cat([p.grad.flatten() for p in layer.parameters()]).norm() for layer in layers])
    sample = min(batch, max(1, 2048 // width))
    return MLPProfile(
        grad_norm=after.numpy(),
        saturated=np.array([saturated_share(a, activation) for a in acts]),
        activations=torch.stack([a[:sample].flatten() for a in acts]).numpy(),
        loss=float(loss.detach()),
        norm_before=norm_before,
        norm_after=float(after.norm()),
        settings=dict(depth=depth, width=width, activation=activation, init=init, std=std, norm=norm,
                      residual=residual, batch=batch, clip=clip, seed=seed),
    )


# ----------------------------------------------------------------------------------------------
# Part 3: a linear recurrence


def recurrence_matrix(rho: float, width: int = 32, matrix: str = "orthogonal", seed: int = 0) -> Tensor:
    """A ``width x width`` matrix with spectral radius ``rho`` (largest ``|eigenvalue|``).

    ``"orthogonal"``: ``rho * Q`` with ``Q`` orthogonal, so every singular value is ``rho``;
    ``"symmetric"``: a random symmetric matrix rescaled (normal, real eigenvalues);
    ``"gaussian"``: a random non-symmetric Gaussian matrix rescaled (not normal: its largest
    singular value exceeds ``rho``, so gradients can grow for a while even when ``rho < 1``).

    >>> w = recurrence_matrix(0.9, width=4)
    >>> round(float(torch.linalg.eigvals(w).abs().max()), 6)
    0.9
    """
    check_positive("rho", rho)
    check_int("width", width, 1)
    check_choice("matrix", matrix, MATRICES)
    gen = _generator(seed)
    a = torch.randn(width, width, generator=gen, dtype=DTYPE)
    if matrix == "orthogonal":
        q, r = torch.linalg.qr(a)
        return rho * q * torch.sign(torch.diagonal(r))
    if matrix == "symmetric":
        a = (a + a.T) / 2
    return rho * a / torch.linalg.eigvals(a).abs().max()


@_one_thread
def recurrence_grad_norms(rho: float, steps: int, width: int = 32, matrix: str = "orthogonal",
                          activation: str = "linear", seed: int = 0) -> np.ndarray:
    """``||dL/dh_t||`` for ``t = steps, steps-1, ..., 0`` (index ``k`` = ``k`` steps back in time).

    The recurrence is ``h_t = W h_{t-1}`` (``"linear"``) or ``h_t = tanh(W h_{t-1})`` (``"tanh"``),
    with ``W = recurrence_matrix(rho, ...)``, a random unit-norm ``h_0`` and the loss
    ``L = v . h_T`` for a random unit vector ``v``. Linear: ``dL/dh_t = (W^T)^(T-t) v``, so for the
    scaled orthogonal matrix the norm is exactly ``rho^(T-t)``; for any ``W`` it grows or shrinks
    like ``rho^(T-t)`` in the long run (Pascanu et al. 2013). With tanh, ``rho > 1`` is necessary for
    explosion but not sufficient: saturated units (``tanh' ~ 0``) damp the product.

    >>> g = recurrence_grad_norms(0.5, steps=3, width=4)
    >>> [round(float(v), 6) for v in g]
    [1.0, 0.5, 0.25, 0.125]
    """
    check_int("steps", steps, 0)
    check_choice("activation", activation, RECURRENCE_ACTIVATIONS)
    w = recurrence_matrix(rho, width, matrix, seed)
    gen = _generator(seed + 1)
    h0 = torch.randn(width, generator=gen, dtype=DTYPE)
    v = torch.randn(width, generator=gen, dtype=DTYPE)
    hs = [(h0 / h0.norm()).requires_grad_(True)]
    for _ in range(steps):
        z = w @ hs[-1]
        hs.append(torch.tanh(z) if activation == "tanh" else z)
    for h in hs[1:]:
        h.retain_grad()
    (hs[-1] @ (v / v.norm())).backward()
    return torch.stack([h.grad.norm() for h in reversed(hs)]).numpy()


# ----------------------------------------------------------------------------------------------
# Lesson 02, part 2: clipping one 2-D vector


@dataclass
class Clip2D:
    """A 2-D gradient and what value and norm clipping with threshold ``c`` make of it."""

    grad: np.ndarray     # (2,)
    value: np.ndarray    # (2,) every coordinate clamped to [-c, c]
    norm: np.ndarray     # (2,) rescaled to length min(|g|, c)
    threshold: float

    @property
    def value_angle(self) -> float:
        """Degrees between ``grad`` and its value-clipped version (0 when nothing was clamped)."""
        return _angle(self.grad, self.value)

    @property
    def norm_angle(self) -> float:
        """Degrees between ``grad`` and its norm-clipped version: always 0."""
        return _angle(self.grad, self.norm)


def _angle(a: np.ndarray, b: np.ndarray) -> float:
    # atan2(|a x b|, a . b) stays exact near 0 degrees, where acos of the cosine loses half the digits.
    return math.degrees(math.atan2(abs(float(a[0] * b[1] - a[1] * b[0])), float(a @ b)))


@_one_thread
def clip_2d(grad: Sequence[float], threshold: float) -> Clip2D:
    """Clip the 2-D vector ``grad`` by value and by norm with :mod:`gradkit.clip`.

    value: ``g_i -> clamp(g_i, -c, c)`` (the box); norm: ``g -> g * min(1, c / ||g||_2)`` (the circle).

    >>> r = clip_2d((3.0, 1.0), 1.0)
    >>> r.value.tolist(), round(r.norm_angle, 6), round(r.value_angle, 1)
    ([1.0, 1.0], 0.0, 26.6)
    """
    check_positive("threshold", threshold)
    g = torch.as_tensor(np.asarray(grad, dtype=np.float64))
    if g.shape != (2,):
        raise ValueError(f"grad={list(grad)!r} must have exactly 2 numbers")
    pv = torch.zeros(2, dtype=DTYPE, requires_grad=True)
    pn = torch.zeros(2, dtype=DTYPE, requires_grad=True)
    pv.grad, pn.grad = g.clone(), g.clone()
    clip_grad_value([pv], threshold)
    clip_grad_norm([pn], threshold)
    return Clip2D(grad=g.numpy(), value=pv.grad.numpy(), norm=pn.grad.numpy(), threshold=float(threshold))


# ----------------------------------------------------------------------------------------------
# Lesson 02, part 4: the cliff

CLIFF_START = (-3.0, 2.0)


def cliff_loss(w: Tensor, height: float = 50.0, steepness: float = 10.0) -> Tensor:
    """A bowl with a steep wall (after Pascanu et al. 2013, Fig. 6), for ``w`` of shape ``(..., 2)``:

        f(w) = ((w1 - 3)^2 + w2^2) / 2 + height * sigmoid(steepness * (w1 + 0.4 w2 - 1))

    The bowl's minimum ``(3, 0)`` lies behind a wall of the given height along ``w1 + 0.4 w2 = 1``;
    the wall's slope reaches ``height * steepness / 4 * |(1, 0.4)|`` (135 with the defaults) while
    the bowl's is a few units, and its curvature at the foot is about ``steepness`` times the slope.

    >>> round(float(cliff_loss(torch.tensor([3.0, 0.0]))), 3)
    50.0
    """
    u = w[..., 0] + 0.4 * w[..., 1] - 1.0
    return 0.5 * ((w[..., 0] - 3.0) ** 2 + w[..., 1] ** 2) + height * torch.sigmoid(steepness * u)


@dataclass
class Trajectory:
    """Gradient-descent iterates on a 2-D loss."""

    points: np.ndarray     # (steps + 1, 2)
    loss: np.ndarray       # (steps + 1,)
    grad_norm: np.ndarray  # (steps,) ||g|| before clipping
    step: np.ndarray       # (steps,) ||w_{t+1} - w_t||
    spec: str              # the clip spec, canonical ("none", "norm:2.0", ...)
    label: str

    @property
    def max_distance(self) -> float:
        """The farthest the iterate went from its start."""
        return float(np.linalg.norm(self.points - self.points[0], axis=1).max())


@_one_thread
def descend(lr: float, steps: int = 60, clip: Any = None, start: Sequence[float] = CLIFF_START,
            loss: Callable[[Tensor], Tensor] = cliff_loss) -> Trajectory:
    """Plain gradient descent ``w <- w - lr * clip(grad f(w))`` from ``start`` on a 2-D ``loss``.

    ``clip`` is ``None`` or a spec for :func:`gradkit.clip.clipper` (e.g. ``"norm:2"``): with norm
    clipping every step is at most ``lr * c`` long, whatever the wall's slope.

    >>> t = descend(0.1, steps=5, loss=lambda w: 0.5 * (w ** 2).sum())
    >>> round(float(t.points[-1, 0]), 4)  # -3 * 0.9^5
    -1.7715
    """
    check_positive("lr", lr)
    check_int("steps", steps, 0)
    apply = clipper(clip)
    w = torch.tensor(list(start), dtype=DTYPE, requires_grad=True)
    if w.shape != (2,):
        raise ValueError(f"start={list(start)!r} must have exactly 2 numbers")
    points, losses, norms, lengths = [w.detach().clone()], [], [], []
    for _ in range(steps):
        value = loss(w)
        w.grad = None
        value.backward()
        losses.append(float(value.detach()))
        norms.append(float(w.grad.norm()))
        apply([w])
        with torch.no_grad():
            w -= lr * w.grad
        lengths.append(float((w.detach() - points[-1]).norm()))
        points.append(w.detach().clone())
    with torch.no_grad():
        losses.append(float(loss(w)))
    return Trajectory(points=torch.stack(points).numpy(), loss=np.array(losses), grad_norm=np.array(norms),
                      step=np.array(lengths), spec=apply.spec, label=f"{apply.label}, lr={lr:g}")


# ----------------------------------------------------------------------------------------------
# Lesson 02, part 5: a tiny problem for the "broken on purpose" pairs


def tiny_regression(seed: int = 0, n: int = 64, features: int = 8, hidden: int = 16) -> tuple[nn.Module, Tensor, Tensor]:
    """A two-layer MLP ``features -> hidden -> 1`` (float32) and a batch ``(x, y)`` with ``y = sum(x) + noise``.

    Every call with the same ``seed`` returns the same weights and data, so a "wrong" and a "right"
    version of a training step can start from identical states.

    >>> model, x, y = tiny_regression()
    >>> tuple(x.shape), tuple(y.shape)
    ((64, 8), (64, 1))
    """
    check_int("n", n, 1)
    check_int("features", features, 1)
    check_int("hidden", hidden, 1)
    gen = _generator(seed)
    model = nn.Sequential(nn.Linear(features, hidden), nn.Tanh(), nn.Linear(hidden, 1))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[-1]))
    x = torch.randn(n, features, generator=gen)
    y = x.sum(dim=1, keepdim=True) + 0.1 * torch.randn(n, 1, generator=gen)
    return model, x, y
