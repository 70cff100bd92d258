"""Lists of tensors handled as torch's foreach kernels want them, shared by clip and monitor.

Grouping by (device, dtype) so that each group is one foreach launch, the norm of each tensor in
one call, and a buffer that appends rows on the device without waiting for it.

>>> tensor_norms([torch.tensor([3.0, 4.0]), torch.tensor([1.0])], 2.0, torch.device("cpu"))
tensor([5., 1.])
"""

from __future__ import annotations

from typing import Optional

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
