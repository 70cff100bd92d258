"""Value clipping of a CPU gradient in one pass, compiled by numba (optional: ``gradkit[fast]``).

Why it exists: value clipping reports, beside g_i <- clamp(g_i, -c, c), the 2-norms before and
after and the count #{i : |g_i| > c}, and eager torch has no fused op for that: the torch path of
:mod:`gradkit.clip` runs six kernels per piece (norm, hardshrink, sign, dot, clamp, norm), 2.9x
the time of ``torch.nn.utils.clip_grad_value_`` on ResNet-18's gradients (one CPU thread).
:func:`clamp_` reads and writes each element once and sums in the same loop::

    w_i = c if g_i > c else (-c if g_i < -c else g_i)      (nan stays, -0.0 stays: explicit compares)
    before = sum_i g_i^2,  after = sum_i w_i^2,  outside = #{i : g_i > c or g_i < -c}

with the squares summed in float64 in blocks of ``_BLOCK`` elements (LLVM reorders the sums in a
block into SIMD lanes: the only fast-math flags are reassoc and contract, which keep nan and inf
as they are; without them, or with a loop bounded by min(), the loop is not vectorised and takes
60x longer). The same bits as ``torch.clamp``, the same count, norms closer to the exact ones
than torch's float32 norm (1e-14 relative against 1e-5 for 2^20 elements). Measured on the
2-core development machine (2026-12-04, one thread, CPU time): ResNet-18's gradients (11.2M
elements, 62 tensors) 2.04 ms against 2.38 ms for ``clip_grad_value_`` (0.86x) and 6.84 ms for
the torch path; the seed CNN's (8.5M) 1.30 ms against 1.55 ms (0.84x). It runs on one thread
(``parallel=False``): with two torch threads ``clip_grad_value_``'s clamp uses both cores
(1.27-1.67 ms and 0.61-0.83 ms, wall time, two runs), so the kernel is 1.2-1.6x and 1.5-2.1x that.

The kernel is compiled once per machine and cached (``cache=True``; beside this file, else in
numba's user cache, else in ``gradkit.data.cache_dir()/numba``, else not cached): the first use
in a process imports numba (0.12 s) and compiles (0.43 s) or loads the cached kernel (0.22 s).
It holds no GIL (``nogil``): threads that clip at once run at once. ``GRADKIT_NUMBA=0`` turns
it off.

>>> status() in ("on", "off: GRADKIT_NUMBA=0") or status().startswith("off: numba")
True
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import Tensor

# Elements whose squares are summed before the sum joins the piece's total: the rounding error of
# a piece's norm grows with _BLOCK / lanes + n / _BLOCK, not with n.
_BLOCK = 4096
_FLOAT32_MAX = float(torch.finfo(torch.float32).max)
_SIGNATURES = ("Tuple((f8, f8, i8))(f4[::1], f4)", "Tuple((f8, f8, i8))(f8[::1], f8)")
# dtype -> (its numpy scalar, the smallest normal and the largest c the kernel takes)
_KINDS = {dtype: (scalar, float(torch.finfo(dtype).tiny), float(torch.finfo(dtype).max)) for dtype, scalar in ((torch.float32, np.float32), (torch.float64, np.float64))}

_lock = threading.Lock()
_built: Optional[tuple[Optional[Callable[..., Any]], str]] = None  # (kernel or None, status), once


def _clamp_stats(x: np.ndarray, c: Any) -> tuple[float, float, int]:
    """x <- clamp(x, -c, c) in place; (sum x^2 before, sum x^2 after, #{|x_i| > c}). numba compiles it."""
    lo = -c
    before, after, outside = 0.0, 0.0, 0
    for start in range(0, x.shape[0], _BLOCK):
        block = x[start:start + _BLOCK]  # a slice: LLVM vectorises its loop (a range with a min() bound it did not)
        b, a, k = 0.0, 0.0, 0
        for i in range(block.shape[0]):
            v = block[i]
            w = c if v > c else (lo if v < lo else v)
            k += (v > c) | (v < lo)
            block[i] = w
            vd, wd = np.float64(v), np.float64(w)
            b += vd * vd
            a += wd * wd
        before += b
        after += a
        outside += k
    return before, after, outside


def _jit(py_func: Callable[..., Any], signatures: tuple[str, ...]) -> Callable[..., Any]:
    """numba's nopython, GIL-free compilation of ``py_func`` for ``signatures`` (at once, not at the
    first call), cached on disk where a folder is writable: numba's own choice, else
    ``cache_dir()/numba``, else no cache (numba raises RuntimeError when it finds no writable folder)."""
    import numba
    from numba.core import config

    options = dict(nopython=True, nogil=True, fastmath={"reassoc", "contract"})
    try:
        return numba.jit(list(signatures), cache=True, **options)(py_func)
    except (RuntimeError, OSError):  # no writable folder, or saving failed (a full disk)
        pass
    from gradkit.data import cache_dir

    folder, saved = cache_dir() / "numba", config.CACHE_DIR
    try:
        folder.mkdir(parents=True, exist_ok=True)
        config.CACHE_DIR = str(folder)  # read when the cache locator is chosen, at decoration
        return numba.jit(list(signatures), cache=True, **options)(py_func)
    except (RuntimeError, OSError):
        return numba.jit(list(signatures), cache=False, **options)(py_func)
    finally:
        config.CACHE_DIR = saved


def _build() -> tuple[Optional[Callable[..., Any]], str]:
    try:
        import numba  # noqa: F401
    except ImportError as err:
        reason = "not installed (pip install gradkit[fast])" if isinstance(err, ModuleNotFoundError) and err.name == "numba" else f"import failed: {err}"
        return None, f"off: numba {reason}"
    try:
        return _jit(_clamp_stats, _SIGNATURES), "on"
    except Exception as err:  # a numba that cannot compile: the torch path gives the same results
        warnings.warn(f"gradkit.fused: numba could not compile the value-clipping kernel ({type(err).__name__}: {err}); using the torch path", RuntimeWarning, stacklevel=3)
        return None, f"off: numba failed to compile ({type(err).__name__})"


def _kernel() -> Optional[Callable[..., Any]]:
    global _built
    if _built is None:
        with _lock:
            if _built is None:
                _built = _build()
    return _built[0]


def enabled() -> bool:
    """Does value clipping use the kernel? ``$GRADKIT_NUMBA`` (read at every call) is not ``0`` and
    numba compiled it (the first call imports numba and compiles, or loads the cached kernel).
    ``$GRADKIT_NUMBA`` other than unset, ``""``, ``0`` or ``1`` raises ValueError."""
    flag = os.environ.get("GRADKIT_NUMBA", "")
    if flag not in ("", "0", "1"):
        raise ValueError(f"GRADKIT_NUMBA must be 0 (value clipping through torch ops) or 1 (through numba when it is installed), got {flag!r}")
    return flag != "0" and _kernel() is not None


def status() -> str:
    """``"on"``, or ``"off: "`` and why (``GRADKIT_NUMBA=0``, numba not installed, ...)."""
    if os.environ.get("GRADKIT_NUMBA", "") == "0":
        return "off: GRADKIT_NUMBA=0"
    _kernel()
    assert _built is not None
    return _built[1]


def clamp_(piece: Tensor, c: float) -> Optional[tuple[float, float, int]]:
    """piece <- clamp(piece, -c, c) in one pass, as ``torch.clamp`` writes it; returns
    (sum of squares before, sum of squares after, #{i : |piece_i| > c}), or None, untouched,
    for what the kernel does not take: other than a 1-d stride-1 float32/float64 CPU tensor, no
    kernel (see :func:`enabled`), or a c that the dtype rounds to 0 or inf (torch's own error or
    rounding then applies). A float32 sum above float32's largest value reads inf, as torch's
    float32 norm overflows.

    It does not read ``$GRADKIT_NUMBA``: callers ask :func:`enabled` once per call.

    >>> g = torch.tensor([0.5, -3.0, -0.0, 2.0])
    >>> stats = clamp_(g, 1.0)  # None without numba
    >>> stats is None or (g.tolist(), stats) == ([0.5, -1.0, -0.0, 1.0], (13.25, 2.25, 2))
    True
    """
    kernel = _built[0] if _built is not None else _kernel()
    kind = _KINDS.get(piece.dtype)
    if kind is None or kernel is None or piece.dim() != 1 or piece.stride(0) != 1 or not piece.is_cpu:
        return None
    scalar, smallest, largest = kind
    if not smallest <= c <= largest:
        return None
    before, after, outside = kernel(piece.detach().numpy(), scalar(c))
    if piece.dtype == torch.float32 and (before > _FLOAT32_MAX or after > _FLOAT32_MAX):
        before, after = (math.inf if s > _FLOAT32_MAX else s for s in (before, after))
    return before, after, outside
