"""Gradient clipping: small, exact, and without host synchronisation.

Clipping bounds the size of one update. It does not cure vanishing gradients (it only ever
scales gradients *down*), it is not data augmentation, and it does not shrink the model.

Every function takes ``params``: an ``nn.Module``, a tensor, an iterable of tensors, or an
iterable of ``(name, tensor)`` pairs. Parameters whose ``.grad`` is None are skipped, gradients
are changed in place, and the :class:`ClipResult` holds 0-d tensors on the gradients' device
(the CPU when there are no gradients), so nothing waits for the GPU until you read a number.

- :func:`grad_norm`: ||g||_p over all gradients, read-only.
- :func:`clip_grad_value`: g_i <- clamp(g_i, -c, c).
- :func:`clip_grad_norm`: g <- g * c / (||g||_p + 1e-6) when ||g||_p > c, one norm for all gradients.
- :func:`clip_grad_norm_per_tensor`: the same for each tensor on its own.
- :func:`clip_grad_scaled_value`: g_i <- clamp(g_i, -c/sqrt(n), c/sqrt(n)).
- :func:`adaptive_clip_grad`: unit-wise clipping relative to the weights (AGC, NFNets).
- :class:`AutoClip`: norm clipping at a percentile of the norms seen so far.
- :func:`clipper`: ``"norm:1.0"`` and friends -> a :class:`Clipper` that the trainer, the
  widgets and papermill parameters share.

>>> w = torch.zeros(2, requires_grad=True)
>>> w.grad = torch.tensor([3.0, 4.0])
>>> r = clip_grad_norm(w, max_norm=1.0)
>>> r.norm_before, w.grad, bool(r.clipped)
(tensor(5.), tensor([0.6000, 0.8000]), True)
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Union

import torch
from torch import Tensor, nn

from gradkit import fused
from gradkit.checks import METHOD_NAMES, check_number, check_positive, spec_label  # noqa: F401  (METHOD_NAMES: legend text)
from gradkit.foreach import NORM_EPS, DeviceBuffer, groups, norm_as_left, norm_factor, scaled_norm, tensor_norms  # noqa: F401  (NORM_EPS: public here too)

Params = Union[nn.Module, Tensor, Iterable[Tensor], Iterable[tuple[str, Tensor]]]
Threshold = Union[float, Tensor]

METHODS = ("none", "value", "norm", "norm_inf", "tensor_norm", "scaled_value", "agc", "auto")
SPECS = ("none", "value:<c>", "norm:<c>", "norm_inf:<c>", "tensor_norm:<c>", "scaled_value:<c>", "agc:<lambda>", "auto:<percentile>")

# torch.nn.utils.clip_grad_norm_ divides by (norm + 1e-6); the same constant keeps results equal.
# The NFNets reference code divides by max(||G_i||, 1e-6).
AGC_GRAD_EPS = 1e-6
# torch's fused check-and-multiply (the kernel GradScaler unscales with) takes its factor as float32,
# which holds a float32, float16 or bfloat16 coefficient exactly: for these dtypes it writes the bits
# _foreach_mul_ writes and, in the same pass, flags an inf or nan element. Used on GPUs; on the CPU
# its check costs 5-10% more than _foreach_mul_ (ResNet-18), where a host read is free instead.
_FUSED_CHECK_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclass
class ClipResult:
    """What one clipping call did, as 0-d tensors on the gradients' device.

    ``threshold`` is the bound that was applied: c for norm methods, the element bound for value
    methods (c/sqrt(n) for scaled value), nan for AGC (one bound per unit), the percentile value
    for AutoClip, inf for no clipping. ``clipped_fraction`` is the share of tensors that were
    scaled (all or none for global norm clipping) or, for value methods, of elements that were
    outside the range. ``norm_after`` is the norm of the gradient as it is left: 0 for a finite
    gradient whose norm overflowed (zeroed, as torch does), nan when an inf or nan element left nan.
    """

    norm_before: Tensor
    norm_after: Tensor
    threshold: Tensor
    clipped_fraction: Tensor

    @property
    def clipped(self) -> Tensor:
        """0-d bool tensor: did clipping change anything?"""
        return self.clipped_fraction > 0


def _named(params: Params) -> list[tuple[Optional[str], Tensor]]:
    """``params`` as ``(name or None, tensor)`` pairs."""
    if isinstance(params, nn.Module):
        return list(params.named_parameters())
    if isinstance(params, Tensor):
        return [(None, params)]
    if isinstance(params, (str, bytes)) or not isinstance(params, Iterable):
        raise ValueError(f"params must be an nn.Module, a tensor, or an iterable of tensors or (name, tensor) pairs, got {type(params).__name__}")
    out: list[tuple[Optional[str], Tensor]] = []
    for item in params:
        if isinstance(item, Tensor):
            out.append((None, item))
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], Tensor):
            out.append(item)
        else:
            raise ValueError(f"params must hold tensors or (name, tensor) pairs, got an item of type {type(item).__name__}")
    return out


def _grads(params: Params) -> list[Tensor]:
    tensors = params.parameters() if isinstance(params, nn.Module) else (t for _, t in _named(params))
    return [t.grad for t in tensors if t.grad is not None]


def _device(tensors: list[Tensor]) -> torch.device:
    return tensors[0].device if tensors else torch.device("cpu")


def _total(tensors: list[Tensor], norm_type: float) -> Tensor:
    """||g||_p of all ``tensors`` concatenated, from the norms of each (as torch computes it)."""
    return torch.linalg.vector_norm(tensor_norms(tensors, norm_type, _device(tensors)), norm_type)


def _mul_(tensors: list[Tensor], coef: Tensor) -> Optional[Tensor]:
    """tensors <- tensors * coef, with a 0-d ``coef`` for all or a (len(tensors),) one per tensor.

    Returns a 0-d bool tensor on ``coef``'s device: did a factor of 0 (an infinite norm) meet an
    inf, leaving nan (inf * 0)? That tells a finite gradient whose norm overflowed (zeroed) from one
    that held an inf. (A nan norm gives a nan factor, and its nan shows without a flag.) On a GPU
    the flag comes from the multiplication itself (:func:`_checked_mul_`), or for float64 from one
    norm per tensor after it; on the CPU, where reading a value waits for nothing, the products
    are checked only when some factor is 0, and None says that none was.
    """
    per_tensor = coef.ndim == 1
    coefs = coef.unbind() if per_tensor else ()
    flags = []
    for device, group, idx in groups(tensors):
        factors = [coefs[i].to(device) for i in idx] if per_tensor else [coef.to(device)] * len(group)
        if device.type != "cpu" and group[0].dtype in _FUSED_CHECK_DTYPES:
            flags.append(_checked_mul_(group, factors))
            continue
        torch._foreach_mul_(group, factors if per_tensor else factors[0])
        if device.type != "cpu" or coef.device.type != "cpu" or (float(coef) == 0 if coef.ndim == 0 else bool((coef == 0).any())):
            flags.append(torch.stack(torch._foreach_norm(group, 2.0)).isnan().any())
    return torch.stack([f.to(coef.device) for f in flags]).any() if flags else None


def _checked_mul_(group: list[Tensor], factors: list[Tensor]) -> Tensor:
    """group[i] <- group[i] * factors[i] (float32, float16 or bfloat16 tensors on one device), by
    torch's fused check-and-multiply; returns a 0-d bool: did an element hold inf or nan before?
    One call for the group when all factors are the same tensor, else one per tensor."""
    found = torch.zeros(1, device=group[0].device)
    shared = all(f is factors[0] for f in factors)
    for part, factor in [(group, factors[0])] if shared else [([t], f) for t, f in zip(group, factors)]:
        torch._amp_foreach_non_finite_check_and_unscale_(part, found, factor.to(torch.float32).reshape(1))
    return found.reshape(()) > 0


def _full(value: Threshold, like: Tensor) -> Tensor:
    # torch.full is a fill kernel; torch.tensor(value, device=cuda) would be a blocking copy.
    if isinstance(value, Tensor):
        return value.to(like.device, like.dtype)
    return torch.full((), value, dtype=like.dtype, device=like.device)


def _check_threshold(name: str, value: object, *, example: str) -> Threshold:
    """A finite number > 0 (or a 0-d tensor); checked on the host, once."""
    if isinstance(value, Tensor):
        if value.numel() != 1 or value.dtype.is_complex or value.dtype == torch.bool:
            raise ValueError(f"{name} must be a finite number > 0 or a one-element real tensor, got a {value.dtype} tensor of shape {tuple(value.shape)}")
        # A CUDA threshold is not checked here: reading it would wait for the GPU.
        if value.device.type == "cpu":
            check_positive(name, float(value))
        return value.reshape(())
    if not isinstance(value, bool) and value == math.inf:
        raise ValueError(f"{name}=inf clips nothing; it must be a finite number > 0 (e.g. {example}). To only measure, use gradkit.grad_norm(params)")
    return check_positive(name, value)


def _check_norm_type(norm_type: object) -> float:
    """p >= 1 or inf (also the string ``"inf"``)."""
    if (isinstance(norm_type, str) and norm_type.strip().lower() == "inf") or (not isinstance(norm_type, bool) and norm_type == math.inf):
        return math.inf
    try:
        return check_number("norm_type", norm_type, minimum=1.0)
    except ValueError:  # check_number's message would say "finite": name inf too
        raise ValueError(f"norm_type must be a number p >= 1 (1, 2, ...) or float('inf'), got {norm_type!r}") from None


def _result(before: Tensor, after: Tensor, threshold: Threshold, fraction: Tensor) -> ClipResult:
    return ClipResult(before, after, _full(threshold, before), fraction.to(before.dtype))


@torch.no_grad()
def grad_norm(params: Params, norm_type: float = 2.0) -> Tensor:
    """The total gradient norm ||g||_p = (sum_i |g_i|^p)^(1/p) over every gradient, read-only.

    Use this to log the norm. ``clip_grad_norm_(max_norm=inf)`` "just to log" multiplies every
    gradient by max_norm / (norm + 1e-6) = inf / inf = nan when the norm is inf.

    >>> w = torch.zeros(2); w.grad = torch.tensor([3.0, -4.0])
    >>> grad_norm(w), grad_norm(w, 1), grad_norm(w, "inf")
    (tensor(5.), tensor(7.), tensor(4.))
    """
    p = _check_norm_type(norm_type)
    grads = _grads(params)
    return _total(grads, p)


def _scale_to_norm(grads: list[Tensor], total: Tensor, max_norm: Threshold) -> ClipResult:
    """g <- g * coef (see :func:`norm_factor`), always multiplied so that no branch reads the GPU."""
    coef = norm_factor(total, max_norm)
    nonfinite = _mul_(grads, coef)
    return _result(total, norm_as_left(scaled_norm(total, coef), nonfinite), max_norm, coef < 1)


@torch.no_grad()
def clip_grad_norm(params: Params, max_norm: Threshold, norm_type: float = 2.0, error_if_nonfinite: bool = False) -> ClipResult:
    """Global norm clipping: g <- g * c / (||g||_p + 1e-6) when ||g||_p > c, else g is left as it
    is; ||g||_p over all gradients.

    The direction of the whole gradient is kept and its length capped at c; the numbers equal
    ``torch.nn.utils.clip_grad_norm_`` (same norm kernels, same 1e-6, the same bits written by the
    multiplication), except that a gradient
    whose norm is within 1e-6 of c but not above it is left exactly as it is (torch scales it by
    c / (||g|| + 1e-6), a hair below 1). A step counts as clipped when ||g||_p > c.

    Non-finite gradients are treated as by torch, and the result reports what is left: a finite
    gradient whose norm overflows to inf is multiplied by 0 (``norm_after`` 0, clipped); one that
    holds an inf element is multiplied by 0 too, which leaves nan at the inf (``norm_after`` nan,
    clipped); one that holds a nan has a nan norm and is multiplied by nan, every element nan
    (``norm_after`` nan, not clipped: no threshold was applied). The check costs no extra pass:
    torch's fused check-and-multiply (GradScaler's) scales and flags in one. ``norm_type`` is any
    p >= 1 or inf. With ``error_if_nonfinite=True`` a nan/inf norm raises ``RuntimeError``; that
    check reads the norm on the host (one sync), as torch's does.

    >>> w = torch.zeros(2); w.grad = torch.tensor([3.0, 4.0])
    >>> r = clip_grad_norm(w, 1.0)
    >>> w.grad, r.norm_after
    (tensor([0.6000, 0.8000]), tensor(1.0000))
    """
    c = _check_threshold("max_norm", max_norm, example="1.0")
    p = _check_norm_type(norm_type)
    if not isinstance(error_if_nonfinite, bool):
        raise ValueError(f"error_if_nonfinite must be True or False, got {error_if_nonfinite!r}")
    grads = _grads(params)
    total = _total(grads, p)
    if error_if_nonfinite and not bool(torch.isfinite(total)):
        raise RuntimeError(
            f"error_if_nonfinite=True and the total gradient norm (norm_type={p:g}) is {float(total)}, so it cannot "
            "be clipped; set error_if_nonfinite=False to scale by it anyway"
        )
    return _scale_to_norm(grads, total, c)


@torch.no_grad()
def clip_grad_norm_per_tensor(params: Params, max_norm: Threshold, norm_type: float = 2.0) -> ClipResult:
    """Norm clipping of each tensor on its own: g_t <- g_t * c / (||g_t||_p + 1e-6) when ||g_t||_p > c.

    Each tensor keeps its direction but the whole gradient does not: tensors with large
    gradients are scaled more than the others. ``norm_before``/``norm_after`` are the totals;
    non-finite gradients are treated per tensor as :func:`clip_grad_norm` treats them (a nan left
    in any tensor makes ``norm_after`` nan).

    >>> a, b = torch.zeros(2), torch.zeros(1)
    >>> a.grad, b.grad = torch.tensor([3.0, 4.0]), torch.tensor([0.5])
    >>> r = clip_grad_norm_per_tensor([a, b], 1.0)
    >>> a.grad, b.grad, r.clipped_fraction
    (tensor([0.6000, 0.8000]), tensor([0.5000]), tensor(0.5000))
    """
    c = _check_threshold("max_norm", max_norm, example="1.0")
    p = _check_norm_type(norm_type)
    grads = _grads(params)
    norms = tensor_norms(grads, p, _device(grads))
    coefs = norm_factor(norms, c)
    nonfinite = _mul_(grads, coefs)
    before = torch.linalg.vector_norm(norms, p)
    after = norm_as_left(torch.linalg.vector_norm(scaled_norm(norms, coefs), p), nonfinite)
    fraction = (coefs < 1).float().mean() if grads else torch.zeros_like(before)
    return _result(before, after, c, fraction)


# Each dot product in _count_outside sums at most this many ones: every partial sum is an integer
# below 2^24, which float32 holds exactly whatever the order of the additions.
_EXACT_COUNT = 2**24


def _count_outside(g: Tensor, c: Threshold) -> Tensor:
    """#{i : |g_i| > c} as a 0-d int64 tensor (nan elements are not counted).

    hardshrink(g, c) keeps g_i where |g_i| > c and writes 0 elsewhere, so its sign is +-1 exactly
    on the elements outside [-c, c] (torch's sign of nan is 0) and s . s counts them: three
    passes of fast float kernels, where ``count_nonzero(g.abs() > c)`` spends most of its time
    writing and reading a bool tensor.
    """
    if isinstance(c, Tensor):  # hardshrink takes a Python number; reading a CUDA threshold would sync
        return torch.count_nonzero(g.abs() > c)
    s = torch.hardshrink(g, c).sign_().reshape(-1)
    if s.dtype not in (torch.float32, torch.float64):
        s = s.float()
    return torch.stack([torch.dot(part, part) for part in s.split(_EXACT_COUNT)]).long().sum()


def _clamp_(grads: list[Tensor], c: Threshold) -> None:
    """g_i <- min(max(g_i, -c), c), bit for bit what ``clip_grad_value_`` writes.

    torch clamps each group with two foreach kernels (clamp_min_, then clamp_max_): on a GPU that
    is two launches for all tensors. On the CPU (here: gradients spread over several devices; a
    CPU-only list goes through :func:`_clamp_in_pieces`) a foreach kernel is a loop over the
    tensors anyway, and one ``clamp_`` per tensor reads and writes each gradient once instead of
    twice. Both give the same bits: clamping only selects g_i, -c or c.
    """
    for device, group, _ in groups(grads):
        if device.type == "cpu":
            for g in group:
                g.clamp_(-c, c)
        else:
            torch._foreach_clamp_min_(group, -c)
            torch._foreach_clamp_max_(group, c)


# On the CPU, value clipping through torch ops (without gradkit.fused's kernel, which reads each
# element once and takes a tensor whole) goes through each gradient in pieces of this many elements (4 MiB of
# float32): a piece stays in the cache for the six operations on it (norm, mark, count, clamp,
# norm), so each gradient is read from memory once, and the marks go to a reusable buffer of this
# size (a fresh temporary per tensor cost a page fault per 4 KiB). On one thread 2^18 to 2^20 time
# the same on ResNet-18 and the seed CNN (2^22 is 45% slower there); the larger starts fewer
# parallel sections on two threads.
_PIECE = 2**20
_FLOAT32_MAX = float(torch.finfo(torch.float32).max)
_piece_buffers = threading.local()


def _piece_buffer(dtype: torch.dtype) -> Tensor:
    """This thread's CPU buffer of _PIECE elements of ``dtype`` (threads that clip at once, as the
    threads of a Dask worker may, each have their own)."""
    buffers = _piece_buffers.__dict__.setdefault("by_dtype", {})
    if dtype not in buffers or buffers[dtype].numel() < _PIECE:
        buffers[dtype] = torch.empty(_PIECE, dtype=dtype)
    return buffers[dtype]


def _flat(t: Tensor) -> Optional[Tensor]:
    """A 1-d view of ``t``'s elements when they fill one block of memory (contiguous or
    channels-last; norms, counts and clamps do not depend on the order), else None."""
    formats = {4: torch.channels_last, 5: torch.channels_last_3d}
    dense = t.is_contiguous() or (t.dim() in formats and t.is_contiguous(memory_format=formats[t.dim()]))
    return t.as_strided((t.numel(),), (1,)) if dense else None


def _pieces(t: Tensor, flat: Optional[Tensor]) -> list[Tensor]:
    """1-d views of at most _PIECE elements that cover ``t`` when it has a ``flat`` view (see
    :func:`_flat`); ``t`` itself, whole, when its layout has gaps."""
    return list(flat.split(_PIECE)) if flat is not None else [t]


def _clamp_in_pieces(grads: list[Tensor], c: float) -> tuple[Tensor, Tensor, int]:
    """CPU value clipping: (||g||_2 before, ||g||_2 after, #{i : |g_i| > c}), each piece clamped in
    between its two norms. The count is added on the host: on the CPU reading it waits for nothing.

    With numba (:func:`gradkit.fused.enabled`), a float32 or float64 gradient that is one block of
    memory goes whole through :func:`gradkit.fused.clamp_`, one pass that writes the same bits
    and counts the same elements, its squares summed in float64. Otherwise the marks are
    sign(hardshrink(g, c)): +-1 exactly where |g_i| > c, 0 inside, at +-c and for nan (torch's
    sign of nan is 0), and marks . marks counts them exactly (a piece has < 2^24 elements).
    The norms of float16 and bfloat16 pieces are kept in float32 until the total, so that a tensor
    cut in pieces is not rounded once per piece; the totals have the gradients' (promoted) dtype.
    """
    before, after, outside = [], [], 0
    squares = [0.0, 0.0]  # the fused tensors' sums of squares, before and after
    fast, fused_any = fused.enabled(), False
    for g in grads:
        flat = _flat(g)
        # one call per tensor: the kernel reads each element once, so pieces would only add calls
        stats = fused.clamp_(flat, c) if fast and flat is not None else None
        if stats is not None:
            squares[0], squares[1], outside = squares[0] + stats[0], squares[1] + stats[1], outside + stats[2]
            fused_any = True
            continue
        wide = torch.promote_types(g.dtype, torch.float32)
        for part in _pieces(g, flat):
            before.append(torch.linalg.vector_norm(part, dtype=wide))
            buffer = _piece_buffer(g.dtype)
            in_buffer = part.dim() == 1 and part.numel() <= _PIECE
            marks = (torch.hardshrink(part, c, out=buffer[: part.numel()]) if in_buffer else torch.hardshrink(part, c)).sign_()
            by_dot = in_buffer and marks.dtype in (torch.float32, torch.float64)
            outside += int(torch.dot(marks, marks) if by_dot else torch.count_nonzero(marks))
            part.clamp_(-c, c)
            after.append(torch.linalg.vector_norm(part, dtype=wide))
    dtype = functools.reduce(torch.promote_types, [g.dtype for g in grads])
    if not fused_any:
        return torch.linalg.vector_norm(torch.stack(before)).to(dtype), torch.linalg.vector_norm(torch.stack(after)).to(dtype), outside
    return _joined_norm(before, squares[0], dtype), _joined_norm(after, squares[1], dtype), outside


def _joined_norm(norms: list[Tensor], squares: float, dtype: torch.dtype) -> Tensor:
    """sqrt(sum of ``norms``^2 + ``squares``) in ``dtype``, summed in float64; inf where the torch
    path's float32 sum of the pieces' squares would overflow (gradients no wider than float32)."""
    for norm in norms:
        value = float(norm)
        squares += value * value  # not value ** 2: a float's power raises OverflowError
    if torch.promote_types(dtype, torch.float32) == torch.float32 and squares > _FLOAT32_MAX:
        squares = math.inf
    return torch.tensor(math.sqrt(squares), dtype=dtype)


def _clamp_values(grads: list[Tensor], c: Threshold) -> ClipResult:
    """g_i <- clamp(g_i, -c, c); the fraction counts elements that were outside [-c, c] (|g_i| > c:
    an element equal to +-c is left as it is and is not counted)."""
    device = _device(grads)
    n = sum(g.numel() for g in grads)
    if n == 0:
        before, zero = _total(grads, 2.0), torch.zeros((), device=device)
        return _result(before, before, c, zero)
    if all(g.device.type == "cpu" for g in grads):
        before, after, outside = _clamp_in_pieces(grads, float(c))
        return _result(before, after, c, torch.tensor(outside / n, dtype=torch.float64))
    before = _total(grads, 2.0)
    outside = torch.stack([_count_outside(g, c).to(device) for g in grads]).sum()
    _clamp_(grads, c)
    after = _total(grads, 2.0)
    return _result(before, after, c, outside.double() / n)  # int64 / int gives float32: 5/12 off in float64


@torch.no_grad()
def clip_grad_value(params: Params, clip_value: Threshold) -> ClipResult:
    """Value clipping: g_i <- min(max(g_i, -c), c) for every element, as ``clip_grad_value_``.

    Each element is capped independently, so the direction of the gradient changes whenever
    some elements are cut and others are not. The norms in the result are 2-norms.

    The result costs more than the clamp: two norms and a count. On the CPU with numba installed
    (``pip install gradkit[fast]``; ``GRADKIT_NUMBA=0`` turns it off) each float32 or float64
    gradient that is one block of memory is clipped by :mod:`gradkit.fused`'s compiled kernel,
    which clamps, counts and sums the squares in one pass: the same gradient bits and the same
    count as the torch ops, the norms summed in float64 (closer to the exact norm than torch's
    float32 norm, which is off by 1e-5 at 2^20 elements), on all of torch's threads for tensors
    of 2^16 elements and more with the same bits on any thread count: 0.85-0.94x the time of
    torch's ``clip_grad_value_`` on ResNet-18 and the seed CNN, on two threads and on one.
    Otherwise (no numba, float16/bfloat16, strided gradients, GPUs) torch ops do it, three more
    reads of every element (on the CPU piece by piece while the piece is in the cache): 2.9-3.1x
    torch's time on one CPU thread, 3.6-4.4x on two.

    >>> w = torch.zeros(3); w.grad = torch.tensor([0.05, -2.0, 0.3])
    >>> r = clip_grad_value(w, 0.1)
    >>> w.grad, r.clipped_fraction
    (tensor([ 0.0500, -0.1000,  0.1000]), tensor(0.6667))
    """
    c = _check_threshold("clip_value", clip_value, example="0.1")
    return _clamp_values(_grads(params), c)


@torch.no_grad()
def clip_grad_scaled_value(params: Params, c: Threshold) -> ClipResult:
    """Value clipping at c/sqrt(n): g_i <- clamp(g_i, -c/sqrt(n), c/sqrt(n)), n = all elements.

    A formula that circulates in tutorials. It does guarantee ||g||_2 <= c, because
    ||g||^2 = sum_i g_i^2 <= n (c/sqrt(n))^2 = c^2, but it is *not* norm clipping: it caps each
    element, so it changes the direction, and it usually clips far more than norm clipping at
    the same c (a gradient of norm c/10 is cut as soon as one element exceeds c/sqrt(n)). The
    two coincide only in special cases, e.g. when all |g_i| are equal. ``threshold`` in the
    result is the element bound c/sqrt(n).

    >>> w = torch.zeros(4); w.grad = torch.tensor([1.0, 0.1, 0.1, 0.1])  # ||g|| = 1.01
    >>> r = clip_grad_scaled_value(w, 1.0)  # bound 1/sqrt(4) = 0.5
    >>> w.grad, r.threshold
    (tensor([0.5000, 0.1000, 0.1000, 0.1000]), tensor(0.5000))
    """
    c = _check_threshold("c", c, example="1.0")
    grads = _grads(params)
    n = sum(g.numel() for g in grads)
    return _clamp_values(grads, c / math.sqrt(max(n, 1)))


def _unit_norms(t: Tensor) -> Tensor:
    """2-norm of each unit: the slices along dim 0 of a >= 2-d tensor (rows of a Linear weight,
    output channels of a conv kernel); a 0-d or 1-d tensor is one unit."""
    flat = t.reshape(t.shape[0], -1) if t.ndim >= 2 else t.reshape(1, -1)
    return torch.linalg.vector_norm(flat, dim=1)


def _excluded_ids(named: list[tuple[Optional[str], Tensor]], exclude: object) -> set[int]:
    """ids of the tensors that ``exclude`` names: tensors, parameter names or module prefixes."""
    items = [exclude] if isinstance(exclude, (str, Tensor)) else exclude
    if not isinstance(items, Iterable):
        raise ValueError(f"exclude must be parameter names, module names or tensors, got {exclude!r}")
    names = [(n, t) for n, t in named if n is not None]
    ids: set[int] = set()
    for item in items:
        if isinstance(item, Tensor):
            ids.add(id(item))
        elif isinstance(item, str):
            hits = [t for n, t in names if n == item or n.startswith(item + ".")]
            if not hits:
                known = ", ".join(n for n, _ in names[:6]) or "none: pass an nn.Module or (name, tensor) pairs to exclude by name"
                raise ValueError(f"exclude={item!r} matches no parameter name; accepted: tensors, parameter or module names (here: {known})")
            ids.update(id(t) for t in hits)
        else:
            raise ValueError(f"exclude must hold parameter names, module names or tensors, got an item of type {type(item).__name__}")
    return ids


def _tensor_norm_after(g: Tensor, g_units: Tensor, coef: Tensor) -> Tensor:
    """||g|| after AGC scaled its units by ``coef``: from the unit norms (no second pass over g),
    unless a unit norm is inf, whose unit is either zeros (finite, overflowed) or holds nan (an
    inf times 0): then g is measured. On the CPU reading a value waits for nothing, so only such a
    tensor is measured; on a GPU every tensor is, as a branch would wait for the GPU."""
    if g.device.type == "cpu" and not bool(torch.isinf(g_units).any()):
        return torch.linalg.vector_norm(scaled_norm(g_units, coef))
    return torch.linalg.vector_norm(g)


@torch.no_grad()
def adaptive_clip_grad(params: Params, clipping: Threshold = 0.01, eps: float = 1e-3, exclude: object = ()) -> ClipResult:
    """Unit-wise adaptive gradient clipping (AGC; Brock et al. 2021, NFNets).

    For each unit i (a row of a Linear weight, an output channel of a conv kernel: dim 0 of a
    >= 2-d tensor; a 0-d or 1-d tensor is one unit)::

        max_i = clipping * max(||W_i||, eps)
        G_i <- G_i * max_i / max(||G_i||, 1e-6)   if ||G_i|| > max_i,  else unchanged

    so no unit's update can be large *relative to its own weights*. The paper leaves the final
    classifier out: pass its names or tensors in ``exclude`` (``clipper("agc:0.01")`` does that
    for the last ``nn.Linear`` of a module). Norms in the result are 2-norms; ``threshold`` is nan
    (one bound per unit); ``clipped_fraction`` is the share of tensors in which some unit was cut.
    Non-finite gradients: a unit whose norm is inf is multiplied by 0, as norm clipping does; a
    finite unit whose norm overflowed is zeroed and one that held an inf is left nan there; a nan
    unit is left as it is. ``norm_after`` reports what is left (see :func:`_tensor_norm_after`).

    >>> w = torch.tensor([[3.0, 4.0], [1.0, 0.0]]); w.grad = torch.tensor([[0.0, 1.0], [0.0, 0.001]])
    >>> _ = adaptive_clip_grad(w, clipping=0.1)  # row bounds 0.1 * 5 = 0.5 and 0.1 * 1 = 0.1
    >>> w.grad
    tensor([[0.0000, 0.5000],
            [0.0000, 0.0010]])
    """
    lam = _check_threshold("clipping", clipping, example="0.01")
    unit_eps = _check_threshold("eps", eps, example="1e-3")
    named = _named(params)
    skip = _excluded_ids(named, exclude)
    pairs = [(w, w.grad) for _, w in named if w.grad is not None]
    device = _device([g for _, g in pairs])
    norms_before, norms_after, changed = [], [], []
    for w, g in pairs:
        g_units = _unit_norms(g)
        norms_before.append(torch.linalg.vector_norm(g_units).to(device))
        if id(w) in skip:
            norms_after.append(norms_before[-1])
            continue
        max_units = lam * torch.clamp(_unit_norms(w), min=unit_eps)
        cut = g_units > max_units
        coef = torch.where(cut, max_units / torch.clamp(g_units, min=AGC_GRAD_EPS), torch.ones_like(g_units))
        g.mul_(coef.reshape(g.shape[:1] + (1,) * (g.ndim - 1)) if g.ndim >= 2 else coef.reshape(()))
        norms_after.append(_tensor_norm_after(g, g_units, coef).to(device))
        changed.append(cut.any().to(device))
    zero = torch.zeros((), device=device)
    before = torch.linalg.vector_norm(torch.stack(norms_before)) if pairs else zero
    after = torch.linalg.vector_norm(torch.stack(norms_after)) if pairs else zero
    fraction = torch.stack(changed).float().sum() / len(pairs) if changed else zero
    return _result(before, after, math.nan, fraction)


class AutoClip:
    """AutoClip (Seetharaman et al. 2020): norm clipping at the p-th percentile of all the total
    gradient 2-norms seen so far, this step's included.

    Each call: append ||g||_2 to the history, c = percentile(history, p) with linear
    interpolation, then g <- g * c / (||g|| + 1e-6) when ||g|| > c. This follows the authors'
    reference code, which appends the norm, takes ``np.percentile`` (linear interpolation by
    default) and calls ``clip_grad_norm_``; ``torch.quantile`` interpolates the same way. A norm
    equal to the percentile (always so on the first step) is not cut and the step does not count
    as clipped (``clip_grad_norm_`` would scale it by c / (c + 1e-6)). The history stays on
    the device in a growing buffer, so no step waits for the host. Calls with no gradients
    record nothing.

    Non-finite norms: the history keeps every step's norm, inf and nan included, but the
    percentile is taken over the finite ones only (the reference code would let one overflowing
    step make every later threshold inf or nan). A step whose norm is inf is multiplied by 0, as
    :func:`clip_grad_norm` does whatever its c: a finite gradient whose norm overflowed is zeroed
    (``norm_after`` 0) and one holding an inf is left nan there (``norm_after`` nan); a nan norm
    multiplies by nan, as in torch. Until a finite norm has been seen the threshold is nan.

    >>> auto, w = AutoClip(percentile=50), torch.zeros(1)
    >>> for g in (1.0, 3.0, 4.0, 2.0):
    ...     w.grad = torch.tensor([g]); r = auto(w)
    >>> auto.history, r.threshold, w.grad, bool(r.clipped)  # median 2.5 > 2: not cut
    (tensor([1., 3., 4., 2.]), tensor(2.5000), tensor([2.]), False)
    """

    def __init__(self, percentile: float = 10.0) -> None:
        self.percentile = check_number("percentile", percentile, minimum=0.0, maximum=100.0)
        self._history = DeviceBuffer()

    @property
    def history(self) -> Tensor:
        """Every total gradient norm seen so far, inf and nan included (a device tensor, oldest first)."""
        return self._history.values()

    def reset(self) -> None:
        """Forget the history (for example between two training runs)."""
        self._history.clear()

    @torch.no_grad()
    def __call__(self, params: Params) -> ClipResult:
        grads = _grads(params)
        total = _total(grads, 2.0)
        if not grads:
            return _result(total, total, math.nan, torch.zeros_like(total))
        self._history.append(total)
        seen = self._history.values()
        # nanquantile leaves nan out, as np.nanpercentile: the percentile of the finite norms only.
        # It takes float32 or float64: float16 and bfloat16 norms are read in float32.
        finite = torch.where(torch.isfinite(seen), seen, math.nan).to(torch.promote_types(seen.dtype, torch.float32))
        threshold = torch.nanquantile(finite, self.percentile / 100.0).to(total.dtype)
        return _scale_to_norm(grads, total, threshold)

    def __repr__(self) -> str:
        return f"AutoClip(percentile={self.percentile:g}, steps_seen={len(self._history)})"


def _last_linear(model: nn.Module) -> list[Tensor]:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return list(linears[-1].parameters()) if linears else []


class Clipper:
    """A clipping method and its threshold, checked once, then called every step.

    ``spec`` is the canonical string (``"norm:1.0"``), ``method`` one of :data:`METHODS`,
    ``threshold`` a float (None for ``"none"``), ``label`` legend text (``"norm clipping, c=1"``).
    Calling it clips ``params`` and returns a :class:`ClipResult`; ``"none"`` only measures the
    2-norm. ``"auto"`` keeps its history in the instance: build it once per training run.

    >>> Clipper("norm", 1.0).spec
    'norm:1.0'
    """

    def __init__(self, method: str, threshold: Optional[float] = None) -> None:
        if method not in METHODS:
            raise ValueError(f"method={method!r} is not a clipping method; accepted: {', '.join(METHODS)}")
        if method == "none":
            if threshold is not None:
                raise ValueError(f"method='none' takes no threshold, got threshold={threshold!r}")
            self.threshold: Optional[float] = None
        elif method == "auto":
            self._auto = AutoClip(threshold)  # type: ignore[arg-type]
            self.threshold = self._auto.percentile
        else:
            name = "threshold (the AGC clipping lambda)" if method == "agc" else "threshold"
            example = {"agc": "0.01", "value": "0.1"}.get(method, "1.0")
            self.threshold = float(_check_threshold(name, threshold, example=example))
        self.method = method
        self._fn = self._build()

    def _build(self) -> Callable[[Params], ClipResult]:
        c = self.threshold
        if self.method == "none":
            return _measure_only
        if self.method == "agc":
            return lambda p: adaptive_clip_grad(p, c, exclude=_last_linear(p) if isinstance(p, nn.Module) else ())  # type: ignore[arg-type]
        if self.method == "auto":
            return self._auto
        fns: dict[str, Callable[[Params], ClipResult]] = {
            "value": lambda p: clip_grad_value(p, c),  # type: ignore[arg-type]
            "norm": lambda p: clip_grad_norm(p, c),  # type: ignore[arg-type]
            "norm_inf": lambda p: clip_grad_norm(p, c, norm_type=math.inf),  # type: ignore[arg-type]
            "tensor_norm": lambda p: clip_grad_norm_per_tensor(p, c),  # type: ignore[arg-type]
            "scaled_value": lambda p: clip_grad_scaled_value(p, c),  # type: ignore[arg-type]
        }
        return fns[self.method]

    @property
    def spec(self) -> str:
        return "none" if self.threshold is None else f"{self.method}:{self.threshold!r}"

    @property
    def label(self) -> str:
        return spec_label(self.spec)

    def __call__(self, params: Params) -> ClipResult:
        return self._fn(params)

    def __repr__(self) -> str:
        return f"Clipper({self.spec!r})"


def _measure_only(params: Params) -> ClipResult:
    norm = grad_norm(params)
    return _result(norm, norm, math.inf, torch.zeros_like(norm))


def clipper(spec: Union[str, float, None, Clipper] = "none") -> Clipper:
    """Build a :class:`Clipper` from a spec: ``"none"``, ``"value:0.1"``, ``"norm:1.0"``,
    ``"norm_inf:1.0"``, ``"tensor_norm:1.0"``, ``"scaled_value:1.0"``, ``"agc:0.01"``,
    ``"auto:10"``; a number means ``"norm:<number>"``, None means ``"none"``, a Clipper is
    returned as it is (AutoClip keeps its history).

    >>> clipper("norm:1"), clipper(0.5).spec, clipper(None).label
    (Clipper('norm:1.0'), 'norm:0.5', 'no clipping')
    """
    if isinstance(spec, Clipper):
        return spec
    if spec is None:
        return Clipper("none")
    accepted = f"accepted specs: {', '.join(SPECS)}, a number (= norm) or None"
    if isinstance(spec, bool) or not isinstance(spec, (str, int, float)):
        raise ValueError(f"spec={spec!r} is not a clipping spec; {accepted}")
    if not isinstance(spec, str):
        method, value = "norm", str(spec)
    else:
        method, sep, value = spec.strip().partition(":")
        method = method.strip().lower()
        if method not in METHODS:
            raise ValueError(f"spec={spec!r}: unknown clipping method {method!r}; {accepted}")
        if method == "none":
            if sep:
                raise ValueError(f"spec={spec!r}: 'none' takes no threshold; {accepted}")
            return Clipper("none")
        if not value.strip():
            raise ValueError(f"spec={spec!r} needs a threshold after ':'; {accepted}")
    try:
        threshold = float(value)
    except ValueError:
        raise ValueError(f"spec={spec!r}: the threshold {value.strip()!r} is not a number; {accepted}") from None
    try:
        return Clipper(method, threshold)
    except ValueError as err:
        raise ValueError(f"spec={spec!r}: {err}") from None
