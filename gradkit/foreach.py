"""Lists of tensors handled as torch's foreach kernels want them, and the arithmetic of norm clipping,
shared by clip, monitor and stacked.

Grouping by (device, dtype) so that each group is one foreach launch, the norm of each tensor in
one call, and a buffer that appends rows on the device without waiting for it.

>>> tensor_norms([torch.tensor([3.0, 4.0]), torch.tensor([1.0])], 2.0, torch.device("cpu"))
tensor([5., 1.])
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor

try:  # torch's private C++ grouping (what clip_grad_norm_ uses); a plain Python one stands in if it moves
    from torch.utils._foreach_utils import _group_tensors_by_device_and_dtype
except ImportError:  # pragma: no cover - depends on the torch version
    _group_tensors_by_device_and_dtype = None


class DeviceBuffer:
    """Rows appended on the device without a host sync (the storage doubles when full)."""

    def __init__(self, capacity: int = 256) -> None:
        self._capacity = capacity
        self._data: Optional[Tensor] = None
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def append(self, *parts: Tensor) -> None:
        """Append one row: a tensor, or several stacked into the row (one kernel either way)."""
        if self._data is None:
            first = torch.stack(parts) if len(parts) > 1 else parts[0]
            self._data = first.new_empty((self._capacity, *first.shape))
        elif self._n == len(self._data):
            grown = self._data.new_empty((2 * len(self._data), *self._data.shape[1:]))
            grown[: self._n].copy_(self._data)
            self._data = grown
        if len(parts) > 1:
            torch.stack(parts, out=self._data[self._n])
        else:
            self._data[self._n].copy_(parts[0])
        self._n += 1

    def values(self) -> Tensor:
        """The rows appended so far (a view), or an empty CPU tensor."""
        return self._data[: self._n] if self._data is not None else torch.empty(0)

    def clear(self) -> None:
        self._data, self._n = None, 0


def plain_groups(tensors: list[Tensor]) -> list[tuple[torch.device, list[Tensor], list[int]]]:
    """The grouping of :func:`groups` in plain Python, for a torch without the private helper."""
    grouped: dict[tuple[torch.device, torch.dtype], tuple[list[Tensor], list[int]]] = {}
    for i, t in enumerate(tensors):
        group, idx = grouped.setdefault((t.device, t.dtype), ([], []))
        group.append(t)
        idx.append(i)
    return [(device, group, idx) for (device, _), (group, idx) in grouped.items()]


def groups(tensors: list[Tensor]) -> list[tuple[torch.device, list[Tensor], list[int]]]:
    """``tensors`` grouped by (device, dtype), with their positions: one foreach launch per group.

    torch's own (C++) grouping, the one ``clip_grad_norm_`` uses, so the Python cost is the same;
    :func:`plain_groups` when this torch does not have it.
    """
    if not tensors:
        return []
    if _group_tensors_by_device_and_dtype is None:
        return plain_groups(tensors)
    grouped = _group_tensors_by_device_and_dtype([tensors], with_indices=True)  # type: ignore[list-item]
    return [(device, group, idx) for (device, _), ([group], idx) in grouped.items()]  # type: ignore[misc]


def tensor_norms(tensors: list[Tensor], norm_type: float, device: torch.device) -> Tensor:
    """(len(tensors),) tensor on ``device``: ||t||_p of each tensor, in the order given."""
    grouped = groups(tensors)
    if not grouped:
        return torch.zeros(0, device=device)
    if len(grouped) == 1:
        return torch.stack(torch._foreach_norm(tensors, norm_type))
    norms: list[Optional[Tensor]] = [None] * len(tensors)
    for _, group, idx in grouped:
        for i, n in zip(idx, torch._foreach_norm(group, norm_type)):
            norms[i] = n.to(device)
    return torch.stack(norms)  # type: ignore[arg-type]


Threshold = Union[float, Tensor]

# The 1e-6 that torch.nn.utils.clip_grad_norm_ adds to the norm, so that the same bits are written.
NORM_EPS = 1e-6


def norm_factor(norm: Tensor, max_norm: Threshold) -> Tensor:
    """The factor of norm clipping: 1 where ||g|| <= c (nothing is cut), else c / (||g|| + 1e-6).

    torch multiplies by min(1, c / (||g|| + 1e-6)) everywhere, which is also below 1 (by about
    1e-6 / c) when ||g|| is within 1e-6 of c: gradkit leaves such a gradient exactly as it is, so
    that a step counts as clipped only when its norm exceeded c. A nan norm gives a nan factor, as
    in torch; an infinite one gives 0, whatever c: a float c is finite (checked), so c / inf = 0,
    while a tensor c may be nan (AutoClip's, until it has seen a finite norm).
    """
    coef = torch.where(norm <= max_norm, torch.ones_like(norm), max_norm / (norm + NORM_EPS))
    return torch.where(torch.isinf(norm), torch.zeros_like(coef), coef) if isinstance(max_norm, Tensor) else coef


def scaled_norm(norm: Tensor, coef: Tensor) -> Tensor:
    """||coef * g|| = coef * ||g|| for a finite gradient (norms are homogeneous: no second pass).

    A finite gradient whose norm overflowed to inf is scaled by 0 (as torch does): its norm after
    is 0, not inf * 0 = nan. A gradient that held an inf or nan is not finite: see :func:`norm_as_left`.
    """
    return torch.where(torch.isinf(norm) & (coef == 0), torch.zeros_like(norm), norm * coef)


def norm_as_left(norm_after: Tensor, nonfinite: Optional[Tensor]) -> Tensor:
    """``norm_after``, or nan where a factor of 0 met an inf (``nonfinite``, from ``gradkit.clip``'s multiplication;
    None: it did not): inf * 0 left nan in the gradient, so its norm is nan."""
    if nonfinite is None:
        return norm_after
    return torch.where(nonfinite.to(norm_after.device), torch.full_like(norm_after, math.nan), norm_after)
