"""Value clipping of a CPU gradient in one pass, compiled by numba (optional: ``gradkit[fast]``).

Why it exists: value clipping reports, beside g_i <- clamp(g_i, -c, c), the 2-norms before and
after and the count #{i : |g_i| > c}, and eager torch has no fused op for that: the torch path of
:mod:`gradkit.clip` runs six kernels per piece (norm, hardshrink, sign, dot, clamp, norm), 2.9x
the time of ``torch.nn.utils.clip_grad_value_`` on ResNet-18's gradients (one CPU thread).
:func:`clamp_` reads and writes each element once and sums in the same loop::

    w_i = c if g_i > c else (-c if g_i < -c else g_i)      (nan stays, -0.0 stays: explicit compares)
    before = sum_i g_i^2,  after = sum_i w_i^2,  outside = #{i : g_i > c or g_i < -c}

with the squares summed in float64 in blocks of ``_BLOCK`` elements (LLVM reorders the sums in a
block into SIMD lanes: the only fast-math flags are reassoc and contract, on the block loop only,
which keep nan and inf as they are; without them, or with a loop bounded by min(), the loop is not
vectorised and takes 60x longer) and the blocks' sums added in block order. The same bits as
``torch.clamp``, the same count, norms closer to the exact ones than torch's float32 norm (1e-14
relative against 1e-5 for 2^20 elements).

Threads: a tensor of ``PARALLEL_MIN`` (2^16) elements or more is clipped on all the threads torch
may use (``torch.get_num_threads()``, at most ``NUMBA_NUM_THREADS``; :func:`threads`), its blocks
spread over them (``prange``) and their sums added afterwards in block order: the same bits on any
thread count. Smaller tensors, one torch thread (the kit's process-pool workers on their share of
the cores), a forked child of a process that ran it, and a second Python thread while one runs it
(a lock, tried without waiting) take the serial kernel. numba picks its threading layer: here
``omp``, which shares torch's libgomp and its threads; the ``workqueue`` layer is not used (its
sleeping threads made ResNet-18 slower than one thread). Below 2^14 elements the serial kernel is
faster; from 2^14 to 2^18 the totals differ by less than the noise (2026-12-04, ResNet-18 and the
seed CNN, two threads, load 0.5).

Measured with ``bench/clip_overhead.py`` on the 2-core development machine (2026-12-04, load
0.1-0.6, two runs each), the clipping call against ``clip_grad_value_``: two torch threads (wall
time) ResNet-18's gradients (11.2M elements, 62 tensors) 0.86-0.89x (1.35-1.39 ms against 1.56 ms),
the seed CNN's (8.5M, 8 tensors) 0.93-0.94x; one thread (CPU time) 0.88-0.89x and 0.85-0.87x.
The torch path (``GRADKIT_NUMBA=0``): 3.6x and 4.3-4.4x on two threads, 2.9-3.1x on one.

The kernels are compiled once per machine and cached (``cache=True``; beside this file, else in
numba's user cache, else in ``gradkit.data.cache_dir()/numba``, else not cached): the first use
in a process imports numba (0.11 s) and compiles the serial kernel (0.5 s) or loads it (0.2 s);
the first parallel clip compiles the parallel kernel (1.3 s) or loads it (0.01 s). They hold no
GIL (``nogil``). ``GRADKIT_NUMBA=0`` turns them off.

>>> status() in ("on", "off: GRADKIT_NUMBA=0") or status().startswith("off: numba")
True
"""

from __future__ import annotations

import math
import os
import sys
import threading
import warnings
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import Tensor

# Elements whose squares are summed before the sum joins the piece's total: the rounding error of
# a piece's norm grows with _BLOCK / lanes + n / _BLOCK, not with n.
_BLOCK = 4096
# Elements from which a tensor is clipped on several threads (below, one thread is faster: see the module docstring).
PARALLEL_MIN = 2**16
_FLOAT32_MAX = float(torch.finfo(torch.float32).max)
_SIGNATURES = ("Tuple((f8, f8, i8))(f4[::1], f4)", "Tuple((f8, f8, i8))(f8[::1], f8)")
# dtype -> (its numpy scalar, the smallest normal and the largest c the kernel takes)
_KINDS = {dtype: (scalar, float(torch.finfo(dtype).tiny), float(torch.finfo(dtype).max)) for dtype, scalar in ((torch.float32, np.float32), (torch.float64, np.float64))}

_lock = threading.Lock()
_built: Optional[tuple[Optional[Callable[..., Any]], str]] = None  # (serial kernel or None, status), once
_parallel_built: Optional[tuple[Optional[Callable[..., Any]], str]] = None  # (parallel kernel or None, why not), once
# Held while the parallel kernel runs: a thread that finds it taken clips serially instead of adding
# its threads to the busy cores (and numba's workqueue layer aborts the process when two threads
# enter it; gradkit does not use that layer, other code may have chosen it).
_parallel_lock = threading.Lock()
# numba's threading layers that the parallel kernel runs on: the workqueue layer (threads that sleep
# between calls, beside torch's OpenMP threads that spin) was slower than one thread on ResNet-18
# (2.0-3.0 ms against 2.0-2.1 ms); omp shares torch's OpenMP threads.
_FAST_LAYERS = ("omp", "tbb")
_forked = False  # this process was forked from one whose numba threading layer had started
prange = range  # numba.prange once numba is imported (_build): numba reads it from this module's globals


def _block_stats(block: np.ndarray, c: Any) -> tuple[float, float, int]:
    """block <- clamp(block, -c, c) in place; (sum x^2 before, sum x^2 after, #{|x_i| > c}) over one
    block. numba compiles it with reassoc and contract, and inlines it into both kernels."""
    lo = -c
    b, a, k = 0.0, 0.0, 0
    for i in range(block.shape[0]):
        v = block[i]
        w = c if v > c else (lo if v < lo else v)
        k += (v > c) | (v < lo)
        block[i] = w
        vd, wd = np.float64(v), np.float64(w)
        b += vd * vd
        a += wd * wd
    return b, a, k


def _clamp_stats(x: np.ndarray, c: Any) -> tuple[float, float, int]:
    """x <- clamp(x, -c, c) in place, block by block on one thread; the blocks' sums added in block
    order (this function has no fast-math flags: the order is kept). numba compiles it."""
    before, after, outside = 0.0, 0.0, 0
    for j in range((x.shape[0] + _BLOCK - 1) // _BLOCK):
        b, a, k = _block_stats(x[j * _BLOCK:(j + 1) * _BLOCK], c)  # a slice: LLVM vectorises its loop (a min() bound it did not)
        before += b
        after += a
        outside += k
    return before, after, outside


def _clamp_stats_parallel(x: np.ndarray, c: Any) -> tuple[float, float, int]:
    """:func:`_clamp_stats` with the blocks spread over numba's threads: each block's sums go to
    its row of ``sums``, added afterwards in block order, so the result has the bits of the serial
    kernel whatever the thread count (counts are integers: their order does not matter)."""
    blocks = (x.shape[0] + _BLOCK - 1) // _BLOCK
    sums = np.empty((blocks, 2))
    outside = 0
    for j in prange(blocks):
        b, a, k = _block_stats(x[j * _BLOCK:(j + 1) * _BLOCK], c)
        sums[j, 0] = b
        sums[j, 1] = a
        outside += k
    before, after = 0.0, 0.0
    for j in range(blocks):
        before += sums[j, 0]
        after += sums[j, 1]
    return before, after, outside


def _jit(py_func: Callable[..., Any], signatures: tuple[str, ...], parallel: bool = False) -> Callable[..., Any]:
    """numba's nopython, GIL-free compilation of ``py_func`` for ``signatures`` (at once, not at the
    first call), cached on disk where a folder is writable: numba's own choice, else
    ``cache_dir()/numba``, else no cache (numba raises RuntimeError when it finds no writable folder)."""
    import numba
    from numba.core import config

    options = dict(nopython=True, nogil=True, parallel=parallel)
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
    global prange
    try:
        import numba
        from numba.extending import register_jitable
    except ImportError as err:
        reason = "not installed (pip install gradkit[fast])" if isinstance(err, ModuleNotFoundError) and err.name == "numba" else f"import failed: {err}"
        return None, f"off: numba {reason}"
    prange = numba.prange
    # the only fast-math flags, and only on the block loop: the kernels add the blocks' sums in order
    register_jitable(fastmath={"reassoc", "contract"})(_block_stats)
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


def _build_parallel() -> tuple[Optional[Callable[..., Any]], str]:
    """The parallel kernel, and numba's threading layer started; no kernel on the workqueue layer.
    numba's OpenMP layer shares torch's libgomp (torch is imported first) and sets its thread
    count to NUMBA_NUM_THREADS when it starts: torch's own count is put back."""
    import numba

    threads = torch.get_num_threads()
    try:
        kernel = _jit(_clamp_stats_parallel, _SIGNATURES, parallel=True)
        numba.set_num_threads(1)  # starts the threading layer here, where torch's count is restored
    except Exception as err:  # no threading layer, or a numba that cannot compile it: the serial kernel does it
        warnings.warn(f"gradkit.fused: numba could not compile the parallel value-clipping kernel ({type(err).__name__}: {err}); using one thread", RuntimeWarning, stacklevel=4)
        return None, f"failed to compile ({type(err).__name__})"
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
    layer = numba.threading_layer()
    if layer not in _FAST_LAYERS:  # its threads sleep between calls and meet torch's spinning ones
        return None, f"{layer} layer (slower than one thread beside torch; omp or tbb are used)"
    return kernel, layer


def _parallel_kernel() -> Optional[Callable[..., Any]]:
    global _parallel_built
    if _parallel_built is None and _kernel() is None:  # _build imports numba and registers the block loop
        return None
    if _parallel_built is None:
        with _lock:
            if _parallel_built is None:
                _parallel_built = _build_parallel()
    return _parallel_built[0]


def _after_fork_in_child() -> None:
    """A forked child of a process whose threading layer started must not start a parallel region:
    GNU OpenMP is not fork-safe (numba terminates the child; torch's own ops hang there)."""
    global _forked
    numba = sys.modules.get("numba")
    if numba is not None:
        try:
            numba.threading_layer()
        except ValueError:  # not started: the child may start its own
            return
        _forked = True


os.register_at_fork(after_in_child=_after_fork_in_child)


def threads(numel: int) -> int:
    """Threads :func:`clamp_` gives a tensor of ``numel`` elements: torch's thread count
    (``torch.get_num_threads()``, at most numba's ``NUMBA_NUM_THREADS``) from ``PARALLEL_MIN``
    elements on, else 1; also 1 in a process forked after the threading layer started.
    Another thread's parallel clip running at that moment makes it 1 too (:func:`clamp_`).

    >>> threads(PARALLEL_MIN - 1)
    1
    """
    if numel < PARALLEL_MIN or _forked or _kernel() is None:
        return 1
    wanted = torch.get_num_threads()
    if wanted <= 1:
        return 1
    from numba.core import config

    return min(wanted, config.NUMBA_NUM_THREADS)


def layer() -> str:
    """numba's threading layer for the parallel kernel (``"omp"``, ``"tbb"`` or ``"workqueue"``),
    ``"not started"`` before the first parallel clip, or ``"off: "`` and why."""
    if _parallel_built is None:
        return "not started"
    kernel, layer_or_why = _parallel_built
    return layer_or_why if kernel is not None else f"off: {layer_or_why}"


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
    before, after, outside = _run(kernel, piece.detach().numpy(), scalar(c))
    if piece.dtype == torch.float32 and (before > _FLOAT32_MAX or after > _FLOAT32_MAX):
        before, after = (math.inf if s > _FLOAT32_MAX else s for s in (before, after))
    return before, after, outside


def _run(serial: Callable[..., Any], x: np.ndarray, c: Any) -> tuple[float, float, int]:
    """The parallel kernel on :func:`threads` threads when that is more than 1 and no other thread
    is running it (the lock is only tried: a second thread clips serially, with the same bits),
    else ``serial``."""
    count = threads(x.shape[0])
    if count > 1 and _parallel_lock.acquire(blocking=False):
        try:
            kernel = _parallel_kernel()
            if kernel is not None:
                import numba

                numba.set_num_threads(count)  # this thread's mask: other threads keep theirs
                return kernel(x, c)
        finally:
            _parallel_lock.release()
    return serial(x, c)

