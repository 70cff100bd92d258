"""gradkit.clip against torch.nn.utils and against hand computations of each formula."""

from __future__ import annotations

import copy
import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import gradkit
from gradkit.clip import (
    METHODS,
    AutoClip,
    Clipper,
    ClipResult,
    adaptive_clip_grad,
    clip_grad_norm,
    clip_grad_norm_per_tensor,
    clip_grad_scaled_value,
    clip_grad_value,
    clipper,
    grad_norm,
)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"))]
NORM_TYPES = [1.0, 2.0, math.inf]
RTOL = 1e-6


def small_model(seed: int, device: str = "cpu") -> nn.Module:
    """A conv + two linears with real gradients from one backward pass."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 16), nn.ReLU(), nn.Linear(16, 10)).to(device)
    x = torch.randn(8, 3, 8, 8, device=device)
    y = torch.randint(0, 10, (8,), device=device)
    nn.functional.cross_entropy(model(x), y).backward()
    return model


def clone(model: nn.Module) -> nn.Module:
    """A deep copy with the gradients (``deepcopy`` of a Parameter drops ``.grad``)."""
    twin = copy.deepcopy(model)
    for p, q in zip(model.parameters(), twin.parameters()):
        q.grad = None if p.grad is None else p.grad.clone()
    return twin


def twins(seed: int, scale: float = 1.0, device: str = "cpu") -> tuple[nn.Module, nn.Module]:
    """Two identical models with identical gradients scaled by ``scale``."""
    a = small_model(seed, device)
    for p in a.parameters():
        p.grad.mul_(scale)
    return a, clone(a)


def grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad for p in model.parameters() if p.grad is not None]


def assert_grads_close(a: nn.Module, b: nn.Module, rtol: float = RTOL) -> None:
    for ga, gb in zip(grads(a), grads(b)):
        scale = gb.abs().max().clamp(min=1e-30)
        assert torch.allclose(ga, gb, rtol=rtol, atol=float(scale) * rtol), float((ga - gb).abs().max())


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs() / b.double().abs().clamp(min=1e-30))


def flat(model_or_tensors) -> torch.Tensor:
    tensors = grads(model_or_tensors) if isinstance(model_or_tensors, nn.Module) else model_or_tensors
    return torch.cat([t.reshape(-1) for t in tensors]) if tensors else torch.zeros(0)


# --- global norm clipping: equal to torch.nn.utils.clip_grad_norm_ -------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("norm_type", NORM_TYPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("scale,acts", [(1e3, True), (1e-4, False)])
def test_clip_grad_norm_matches_torch(device, norm_type, seed, scale, acts):
    ours, theirs = twins(seed, scale, device)
    c = 0.5
    result = clip_grad_norm(ours.parameters(), c, norm_type=norm_type)
    total = torch.nn.utils.clip_grad_norm_(theirs.parameters(), c, norm_type=norm_type)
    assert rel(result.norm_before, total) < RTOL
    assert_grads_close(ours, theirs)
    assert bool(result.clipped) is acts
    assert float(result.clipped_fraction) == (1.0 if acts else 0.0)
    # the result's norm_after is computed, not measured: check it against a fresh measurement
    measured = torch.linalg.vector_norm(flat(ours), norm_type)
    assert rel(result.norm_after, measured) < 1e-5
    assert rel(result.norm_after, torch.clamp(result.norm_before, max=c)) < 1e-5
    assert float(result.threshold) == c
    for t in (result.norm_before, result.norm_after, result.threshold, result.clipped_fraction):
        assert t.device.type == device and t.ndim == 0


@pytest.mark.parametrize("norm_type", [1.5, 3.0])
def test_clip_grad_norm_other_p_matches_torch(norm_type):
    ours, theirs = twins(3, 100.0)
    result = clip_grad_norm(ours, 1.0, norm_type=norm_type)
    total = torch.nn.utils.clip_grad_norm_(theirs.parameters(), 1.0, norm_type=norm_type)
    assert rel(result.norm_before, total) < RTOL
    assert_grads_close(ours, theirs)


@pytest.mark.parametrize("device", DEVICES)
def test_clip_grad_norm_mixed_none_grads(device):
    ours, theirs = twins(4, 50.0, device)
    for m in (ours, theirs):
        m[0].weight.grad = None
        m[5].bias.grad = None
    result = clip_grad_norm(ours, 1.0)
    total = torch.nn.utils.clip_grad_norm_(theirs.parameters(), 1.0)
    assert rel(result.norm_before, total) < RTOL
    assert ours[0].weight.grad is None and ours[5].bias.grad is None
    assert_grads_close(ours, theirs)


@pytest.mark.parametrize("norm_type", NORM_TYPES)
def test_mixed_dtypes_are_grouped_like_torch(norm_type):
    torch.manual_seed(25)
    tensors = [torch.zeros(4, 3, dtype=torch.float64), torch.zeros(5), torch.zeros(2, dtype=torch.float64), torch.zeros(6)]
    for t in tensors:
        t.grad = torch.randn(t.shape, dtype=t.dtype) * 10
    twin = [t.clone() for t in tensors]
    for t, u in zip(tensors, twin):
        u.grad = t.grad.clone()
    result = clip_grad_norm(tensors, 1.0, norm_type=norm_type)
    total = torch.nn.utils.clip_grad_norm_(twin, 1.0, norm_type=norm_type)
    assert rel(result.norm_before, total) < RTOL and result.norm_before.dtype == total.dtype
    for t, u in zip(tensors, twin):
        assert t.grad.dtype == u.grad.dtype and torch.allclose(t.grad, u.grad, rtol=RTOL, atol=0)
    per = [t.clone() for t in twin]
    for t, u in zip(per, twin):
        t.grad = u.grad * 100
    expected = [t.grad * min(1.0, 0.5 / (float(torch.linalg.vector_norm(t.grad, norm_type)) + 1e-6)) for t in per]
    clip_grad_norm_per_tensor(per, 0.5, norm_type=norm_type)
    for t, e in zip(per, expected):
        assert torch.allclose(t.grad, e, rtol=1e-6, atol=0)


def test_clip_grad_norm_zero_grads_untouched():
    ours, theirs = twins(5, 0.0)
    result = clip_grad_norm(ours, 1.0)
    torch.nn.utils.clip_grad_norm_(theirs.parameters(), 1.0)
    assert float(result.norm_before) == 0.0 and float(result.norm_after) == 0.0
    assert not bool(result.clipped)
    assert all(torch.equal(g, torch.zeros_like(g)) for g in grads(ours))
    assert_grads_close(ours, theirs)


@pytest.mark.parametrize("norm_type", NORM_TYPES)
def test_clip_grad_norm_single_tensor(norm_type):
    torch.manual_seed(6)
    a = torch.zeros(5, 7, requires_grad=True)
    a.grad = torch.randn(5, 7) * 10
    b = a.detach().clone().requires_grad_()
    b.grad = a.grad.clone()
    result = clip_grad_norm(a, 2.0, norm_type=norm_type)
    total = torch.nn.utils.clip_grad_norm_(b, 2.0, norm_type=norm_type)
    assert rel(result.norm_before, total) < RTOL
    assert torch.allclose(a.grad, b.grad, rtol=RTOL, atol=0)


def test_clip_grad_norm_empty_list_and_no_grads():
    for params in ([], [torch.zeros(3, requires_grad=True)], iter([])):
        result = clip_grad_norm(params, 1.0)
        assert float(result.norm_before) == 0.0 and float(result.norm_after) == 0.0
        assert not bool(result.clipped) and result.norm_before.device.type == "cpu"
    assert float(torch.nn.utils.clip_grad_norm_([], 1.0)) == 0.0


def test_params_as_module_pairs_list_and_generator_agree():
    base = small_model(7)
    for p in base.parameters():
        p.grad.mul_(30.0)
    reference = clone(base)
    expected = clip_grad_norm(reference, 1.0)
    for make in (lambda m: m.parameters(), lambda m: list(m.parameters()), lambda m: list(m.named_parameters()), lambda m: m.named_parameters()):
        model = clone(base)
        result = clip_grad_norm(make(model), 1.0)
        assert rel(result.norm_before, expected.norm_before) < RTOL
        assert_grads_close(model, reference)


def test_tensor_threshold_equals_float_threshold():
    ours, theirs = twins(8, 100.0)
    a = clip_grad_norm(ours, torch.tensor(0.3))
    b = clip_grad_norm(theirs, 0.3)
    assert rel(a.norm_after, b.norm_after) < RTOL
    assert_grads_close(ours, theirs)


def test_error_if_nonfinite():
    for bad in (math.inf, math.nan):
        model = small_model(9)
        model[3].weight.grad[0, 0] = bad
        with pytest.raises(RuntimeError, match="error_if_nonfinite"):
            clip_grad_norm(model, 1.0, error_if_nonfinite=True)
    # without the check, inf is scaled like torch does: coef = c / inf = 0, and 0 * inf = nan
    ours, theirs = twins(9)
    for m in (ours, theirs):
        m[3].weight.grad[0, 0] = math.inf
    result = clip_grad_norm(ours, 1.0)
    torch.nn.utils.clip_grad_norm_(theirs.parameters(), 1.0)
    assert math.isinf(float(result.norm_before)) and bool(result.clipped)
    for ga, gb in zip(grads(ours), grads(theirs)):
        assert torch.equal(ga.isnan(), gb.isnan()) and torch.equal(ga.nan_to_num(), gb.nan_to_num())


# --- grad_norm is read-only ----------------------------------------------------------------------


@pytest.mark.parametrize("norm_type", [1.0, 2.0, 3.0, math.inf])
def test_grad_norm_value(norm_type):
    model = small_model(10)
    expected = torch.linalg.vector_norm(flat(model).double(), norm_type)
    assert rel(grad_norm(model, norm_type), expected) < 1e-5
    assert rel(grad_norm(model, norm_type), torch.nn.utils.get_total_norm(grads(model), norm_type)) < RTOL


def test_grad_norm_does_not_touch_gradients():
    model = small_model(11)
    model[0].weight.grad[0, 0, 0, 0] = math.nan
    model[3].weight.grad[0, 0] = math.inf
    before = [g.clone() for g in grads(model)]
    assert all(math.isnan(float(grad_norm(model, p))) for p in (1.0, 2.0, math.inf))  # nan wins over inf
    for g, b in zip(grads(model), before):
        assert torch.equal(g.isnan(), b.isnan())
        assert torch.equal(g.nan_to_num(), b.nan_to_num())  # bit-for-bit on the finite entries
    assert bool(model[0].weight.grad[0, 0, 0, 0].isnan()) and bool(model[3].weight.grad[0, 0].isinf())
    # the pitfall grad_norm avoids: clip_grad_norm_(max_norm=inf) "to log" writes nan into the gradients
    torch.nn.utils.clip_grad_norm_(model.parameters(), math.inf)
    assert bool(model[3].weight.grad.isnan().any())


# --- value clipping: equal to torch.nn.utils.clip_grad_value_ -------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("clip_value", [1e-3, 1e3])
def test_clip_grad_value_matches_torch(device, seed, clip_value):
    ours, theirs = twins(seed, 1.0, device)
    g = flat(ours)
    outside = int((g.abs() > clip_value).sum())
    norm_before = torch.linalg.vector_norm(g)
    result = clip_grad_value(ours, clip_value)
    torch.nn.utils.clip_grad_value_(theirs.parameters(), clip_value)
    assert_grads_close(ours, theirs, rtol=0.0)
    assert float(result.clipped_fraction) == pytest.approx(outside / g.numel(), rel=1e-6)
    assert bool(result.clipped) is (outside > 0)
    assert rel(result.norm_before, norm_before) < 1e-5
    assert rel(result.norm_after, torch.linalg.vector_norm(flat(ours))) < 1e-5
    assert float(result.threshold) == pytest.approx(clip_value)
    assert result.norm_before.device.type == device


def test_clip_grad_value_none_grads_single_tensor_empty():
    ours, theirs = twins(12)
    for m in (ours, theirs):
        m[3].weight.grad = None
    clip_grad_value(ours, 0.01)
    torch.nn.utils.clip_grad_value_(theirs.parameters(), 0.01)
    assert ours[3].weight.grad is None
    assert_grads_close(ours, theirs, rtol=0.0)
    t = torch.zeros(4, requires_grad=True)
    t.grad = torch.tensor([0.5, -3.0, 0.0, 2.0])
    result = clip_grad_value(t, 1.0)
    assert torch.equal(t.grad, torch.tensor([0.5, -1.0, 0.0, 1.0]))
    assert float(result.clipped_fraction) == 0.5
    empty = clip_grad_value([], 1.0)
    assert float(empty.clipped_fraction) == 0.0 and float(empty.norm_before) == 0.0


def value_clip_edges(dtype: torch.dtype) -> torch.Tensor:
    """Elements at, just inside and just outside +-0.1 in ``dtype``, zeros of both signs, inf and nan."""
    c = torch.tensor(0.1, dtype=dtype)
    up, down = torch.nextafter(c, torch.tensor(1.0, dtype=dtype)), torch.nextafter(c, torch.tensor(0.0, dtype=dtype))
    return torch.stack([c, -c, up, -up, down, -down, torch.tensor(0.0, dtype=dtype), torch.tensor(-0.0, dtype=dtype),
                        torch.tensor(math.inf, dtype=dtype), torch.tensor(-math.inf, dtype=dtype), torch.tensor(math.nan, dtype=dtype),
                        torch.tensor(5.0, dtype=dtype)])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("threshold", [0.1, "tensor"])
def test_clip_grad_value_counts_only_elements_beyond_c(dtype, threshold):
    """Elements equal to +-c are left as they are and not counted; nan is not counted; the bits equal torch's."""
    w = torch.zeros(12, dtype=dtype)
    w.grad = value_clip_edges(dtype)
    twin = w.grad.clone()
    c = torch.tensor(0.1, dtype=dtype) if threshold == "tensor" else threshold
    result = clip_grad_value(w, c)
    theirs = torch.nn.Parameter(torch.zeros(12, dtype=dtype))
    theirs.grad = twin.clone()
    torch.nn.utils.clip_grad_value_([theirs], 0.1)
    bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[dtype.itemsize]
    assert torch.equal(w.grad.view(bits), theirs.grad.view(bits))  # -0.0 and nan included
    outside = int((twin.abs() > c).sum())
    assert outside == 5  # +-next above c, +-inf, 5.0
    # the fraction is reported in the gradient's dtype, as the norms are
    assert float(result.clipped_fraction) == pytest.approx(outside / 12, rel=torch.finfo(dtype).eps)


@pytest.mark.parametrize("piece", [7, 2**20])
def test_clip_grad_value_in_pieces_is_exact(monkeypatch, piece):
    """The CPU path clips, counts and measures pieces of _PIECE elements; pieces of 7 give the same
    bits, the same count and the same norms (to rounding), channels-last and strided gradients included."""
    from gradkit import clip as gclip

    g = torch.Generator().manual_seed(3)
    conv = torch.randn(8, 3, 5, 5, generator=g).contiguous(memory_format=torch.channels_last)
    grads = [torch.randn(1000, generator=g), torch.randn(5, 5, generator=g).t(), torch.randn(3, generator=g), conv,
             torch.randn(4, 6, generator=g)[:, ::2], torch.randn(300, generator=g).double(), torch.randn(50, generator=g).half()]
    assert not grads[1].is_contiguous() and grads[3].is_contiguous(memory_format=torch.channels_last) and grads[4].stride() == (6, 2)
    expected = sum(int((t.abs() > 0.5).sum()) for t in grads)
    def norm(tensors):
        return math.sqrt(sum(float(t.double().square().sum()) for t in tensors))

    norm_before = norm(grads)
    monkeypatch.setattr(gclip, "_PIECE", piece)
    ws, twins_ = [], []
    for t in grads:
        ws.append(torch.zeros_like(t))
        ws[-1].grad = t.clone(memory_format=torch.preserve_format)
        twins_.append(torch.nn.Parameter(torch.zeros_like(t)))
        twins_[-1].grad = t.clone(memory_format=torch.preserve_format)
    result = clip_grad_value(ws, 0.5)
    torch.nn.utils.clip_grad_value_(twins_, 0.5)
    for w, u in zip(ws, twins_):
        bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[w.grad.dtype.itemsize]
        assert w.grad.stride() == u.grad.stride() and torch.equal(w.grad.view(bits), u.grad.view(bits))
    n = sum(t.numel() for t in grads)
    assert result.clipped_fraction.dtype == torch.float64 and float(result.clipped_fraction) == expected / n
    assert float(result.norm_before) == pytest.approx(norm_before, rel=1e-6)
    assert float(result.norm_after) == pytest.approx(norm([w.grad for w in ws]), rel=1e-6)


def test_clip_grad_value_in_threads_at_once():
    """Each thread marks into its own buffer: two threads clipping at once count exactly."""
    import threading

    from gradkit import clip as gclip

    def work(seed, out):
        g = torch.Generator().manual_seed(seed)
        for _ in range(15):
            w = torch.zeros(3 * gclip._PIECE // 2)
            w.grad = torch.randn(w.shape, generator=g)
            expected = int((w.grad.abs() > 1.0).sum())
            out.append(round(float(clip_grad_value(w, 1.0).clipped_fraction) * w.numel()) == expected)

    results: list[bool] = []
    threads = [threading.Thread(target=work, args=(seed, results)) for seed in (1, 2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert results == [True] * 30


# --- value clipping's fused CPU kernel (gradkit.fused, numba) against the torch path ---------------

needs_numba = pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="needs numba (pip install gradkit[fast])")
BITS = {2: torch.int16, 4: torch.int32, 8: torch.int64}
BLOCK = 4096  # gradkit.fused._BLOCK: sums of squares are blocked by this many elements


def value_grads(dtype: torch.dtype, seed: int, c: float) -> list[torch.Tensor]:
    """Gradients of many shapes and layouts in ``dtype``, around block and piece boundaries, with
    nan, +-inf, +-c, the neighbours of +-c and -0.0 among normal values."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(), (0,), (1,), (7,), (BLOCK - 1,), (BLOCK,), (BLOCK + 1,), (3 * BLOCK + 5,), (3, 5, 7), (300, 201)]
    out = [torch.randn(s, generator=g, dtype=torch.float64).to(dtype) for s in shapes]
    out.append(torch.randn(8, 3, 5, 5, generator=g).to(dtype).contiguous(memory_format=torch.channels_last))
    out.append(torch.randn(2, 3, 4, 5, 6, generator=g).to(dtype).contiguous(memory_format=torch.channels_last_3d))
    out.append(torch.randn(9, 6, generator=g).to(dtype).t())
    out.append(torch.randn(40, 30, generator=g).to(dtype)[:, ::3])
    cc = torch.tensor(c, dtype=dtype)
    edges = torch.stack([cc, -cc, torch.nextafter(cc, cc + 1), -torch.nextafter(cc, cc + 1), torch.nextafter(cc, cc * 0),
                         torch.tensor(-0.0, dtype=dtype), torch.tensor(math.inf, dtype=dtype), torch.tensor(-math.inf, dtype=dtype),
                         torch.tensor(math.nan, dtype=dtype)])
    for t in out[7:12]:  # the edges at the first, the last and random places of the larger dense tensors
        flat_view = t.as_strided((t.numel(),), (1,))
        places = torch.cat([torch.tensor([0, t.numel() - 1]), torch.randint(0, t.numel(), (12,), generator=g)])
        flat_view[places] = edges[torch.arange(len(places)) % len(edges)]
    return out


def strided_copy(t: torch.Tensor) -> torch.Tensor:
    """A copy with the same strides, gaps included (clone() makes a gapped view contiguous)."""
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype).copy_(t)


def clip_values_with(monkeypatch, numba_flag: str, tensors: list[torch.Tensor], c: float):
    """clip_grad_value on copies of ``tensors`` (strides kept) with $GRADKIT_NUMBA = ``numba_flag``."""
    monkeypatch.setenv("GRADKIT_NUMBA", numba_flag)
    params = []
    for t in tensors:
        params.append(torch.zeros_like(t))
        params[-1].grad = strided_copy(t)
    return clip_grad_value(params, c), [p.grad for p in params]


def exact_norm(tensors: list[torch.Tensor]) -> float:
    """sqrt(sum g_i^2) with one rounding per square (math.fsum): a reference for both paths."""
    squares = [np.square(t.detach().double().reshape(-1).numpy()) for t in tensors]
    return math.sqrt(math.fsum(float(x) for sq in squares for x in sq))


@needs_numba
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("seed", [0, 1])
def test_fused_and_torch_paths_write_the_same_bits_and_count_the_same(monkeypatch, dtype, seed):
    """The kernel clamps exactly as torch.clamp (nan kept, +-inf to +-c, +-c and -0.0 kept), counts
    |g_i| > c exactly, and its float64 sums are closer to the exact norm than torch's float32 norm."""
    from gradkit import fused

    c = 0.75
    monkeypatch.setenv("GRADKIT_NUMBA", "1")
    assert fused.enabled()  # else this compares the torch path with itself
    tensors = value_grads(dtype, seed, c)
    fast, fast_grads = clip_values_with(monkeypatch, "1", tensors, c)
    slow, slow_grads = clip_values_with(monkeypatch, "0", tensors, c)
    theirs = [torch.nn.Parameter(torch.zeros_like(t)) for t in tensors]
    for p, t in zip(theirs, tensors):
        p.grad = strided_copy(t)
    torch.nn.utils.clip_grad_value_(theirs, c)
    for a, b, p, t in zip(fast_grads, slow_grads, theirs, tensors):
        assert a.stride() == b.stride() == p.grad.stride() == t.stride()
        assert torch.equal(a.view(BITS[dtype.itemsize]), b.view(BITS[dtype.itemsize]))
        assert torch.equal(a.view(BITS[dtype.itemsize]), p.grad.view(BITS[dtype.itemsize]))
    outside = sum(int((t.abs() > torch.tensor(c, dtype=dtype)).sum()) for t in tensors)
    n = sum(t.numel() for t in tensors)
    assert float(fast.clipped_fraction) == float(slow.clipped_fraction) == pytest.approx(outside / n, rel=torch.finfo(dtype).eps)
    assert fast.norm_before.dtype == slow.norm_before.dtype == dtype
    assert math.isnan(float(fast.norm_before)) and math.isnan(float(slow.norm_before))  # a nan element in each
    assert math.isnan(float(fast.norm_after)) and math.isnan(float(slow.norm_after))
    # without nan and inf the norms are finite: the kernel's against the exact ones
    finite = [strided_copy(t).nan_to_num_(nan=0.0, posinf=2.0, neginf=-2.0) for t in tensors]
    fast, fast_grads = clip_values_with(monkeypatch, "1", finite, c)
    slow, _ = clip_values_with(monkeypatch, "0", finite, c)
    tolerance = {torch.float64: 1e-12, torch.float32: 1e-6}.get(dtype, 0.0)
    for ours, theirs_, reference in ((fast.norm_before, slow.norm_before, exact_norm(finite)), (fast.norm_after, slow.norm_after, exact_norm(fast_grads))):
        if dtype in (torch.float32, torch.float64):
            assert abs(float(ours) / reference - 1) <= max(tolerance, torch.finfo(dtype).eps)
            assert abs(float(theirs_) / reference - 1) < 1e-5  # torch's float32 norm is less accurate
        else:  # float16 and bfloat16 stay on the torch path: the same numbers
            assert float(ours) == float(theirs_)


@needs_numba
def test_fused_path_is_taken_for_dense_float32_and_float64_only(monkeypatch):
    """With numba installed (the dev extra installs it, so CI runs this) the kernel clips every dense
    float32/float64 gradient whole, once; strided and half-precision ones go through torch ops;
    GRADKIT_NUMBA=0 never calls it."""
    from gradkit import clip as gclip
    from gradkit import fused

    monkeypatch.delenv("GRADKIT_NUMBA", raising=False)
    assert fused.status() == "on" and fused.enabled()
    calls: list[tuple[int, bool]] = []
    real = fused.clamp_

    def spy(piece, c):
        stats = real(piece, c)
        calls.append((piece.numel(), stats is not None))
        return stats

    monkeypatch.setattr(gclip.fused, "clamp_", spy)
    dense = [torch.randn(3 * gclip._PIECE // 2), torch.randn(4, 8, 3, 3).contiguous(memory_format=torch.channels_last), torch.randn(5).double()]
    others = [torch.randn(6, 4)[:, ::2], torch.randn(10).half(), torch.randn(10).bfloat16()]
    result, _ = clip_values_with(monkeypatch, "1", dense + others, 1.0)
    assert calls == [(t.numel(), True) for t in dense] + [(10, False), (10, False)]
    expected = sum(int((t.abs() > 1.0).sum()) for t in dense + others)
    assert float(result.clipped_fraction) * sum(t.numel() for t in dense + others) == pytest.approx(expected, abs=1e-6)
    calls.clear()
    clip_values_with(monkeypatch, "0", dense + others, 1.0)
    assert calls == []
    assert fused.status() == "off: GRADKIT_NUMBA=0"
    # the kernel holds no GIL: two threads that clip at once (tested above) run at once
    assert fused._kernel().targetoptions["nogil"] is True


def test_gradkit_numba_flag_is_checked(monkeypatch):
    from gradkit import fused

    monkeypatch.setenv("GRADKIT_NUMBA", "off")
    with pytest.raises(ValueError, match=r"GRADKIT_NUMBA must be 0 .* or 1 .*, got 'off'"):
        fused.enabled()
    w = torch.zeros(3)
    w.grad = torch.tensor([0.5, -2.0, 2.0])
    with pytest.raises(ValueError, match="GRADKIT_NUMBA"):
        clip_grad_value(w, 1.0)
    monkeypatch.setenv("GRADKIT_NUMBA", "0")
    assert not fused.enabled() and float(clip_grad_value(w, 1.0).clipped_fraction) == pytest.approx(2 / 3)


@needs_numba
@pytest.mark.parametrize("dtype,other,huge", [(torch.float32, torch.float32, 1e20), (torch.float32, torch.float64, 1e20),
                                              (torch.float64, torch.float64, 1e200)])
def test_fused_norm_overflows_where_torch_does(monkeypatch, dtype, other, huge):
    """A float32 gradient of 1e20 has a float32 norm of inf in torch (its square overflows), also
    beside a float64 gradient: the kernel's float64 sum reads inf there too, so both paths report
    the same norms."""
    tensors = [torch.tensor([huge, -huge, 0.5], dtype=dtype), torch.tensor([0.25], dtype=other)]
    fast, _ = clip_values_with(monkeypatch, "1", tensors, 1.0)
    slow, _ = clip_values_with(monkeypatch, "0", tensors, 1.0)
    assert float(fast.norm_before) == float(slow.norm_before) == math.inf
    assert float(fast.norm_after) == float(slow.norm_after) == pytest.approx(math.sqrt(2 + 0.25 + 0.0625))
    assert float(fast.clipped_fraction) == float(slow.clipped_fraction) == 0.5


@needs_numba
@pytest.mark.parametrize("c", [1e39, 1e-46])
def test_fused_path_leaves_a_bound_float32_cannot_hold_to_torch(monkeypatch, c):
    """c beyond float32's range (torch raises) or below its smallest normal (rounds to 0 or a
    subnormal) is left to the torch path, which decides what happens."""
    from gradkit import fused

    assert fused.clamp_(torch.ones(3), c) is None
    assert fused.clamp_(torch.ones(3).double(), c) is not None


@needs_numba
def test_the_kernel_is_compiled_once_then_loaded_from_the_cache(tmp_path):
    """cache=True: the first process compiles (and saves) both signatures, the next one loads them."""
    code = ("from gradkit import fused; assert fused.enabled(); k = fused._kernel(); "
            "print(sum(k.stats.cache_hits.values()), sum(k.stats.cache_misses.values()))")
    env = {k: v for k, v in os.environ.items() if k != "GRADKIT_NUMBA"} | {"NUMBA_CACHE_DIR": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                           cwd=Path(__file__).resolve().parents[1]) for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr + runs[1].stderr
    assert [r.stdout.split() for r in runs] == [["0", "2"], ["2", "0"]]


@needs_numba
def test_kernel_cache_falls_back_when_no_folder_is_writable(tmp_path, monkeypatch):
    """numba raises RuntimeError when neither the source's __pycache__ nor its user cache folder is
    writable: then gradkit caches under cache_dir()/numba, and compiles without a cache when that
    fails too (no crash)."""
    from numba.core import config

    from gradkit import fused

    src = tmp_path / "src"
    src.mkdir()
    (src / "__pycache__").write_text("a file where numba wants a folder")
    (src / "tiny_kernel.py").write_text("def double(x):\n    return 2.0 * x\n")
    spec = importlib.util.spec_from_file_location("tiny_kernel", src / "tiny_kernel.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setattr(config, "CACHE_DIR", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked / "cache"))
    monkeypatch.setenv("GRADKIT_CACHE", str(tmp_path / "gradkit-cache"))
    assert fused._jit(module.double, ("f8(f8)",))(2.0) == 4.0
    assert list((tmp_path / "gradkit-cache" / "numba").rglob("*.nbi"))
    assert config.CACHE_DIR == ""
    monkeypatch.setenv("GRADKIT_CACHE", str(blocked / "gradkit-cache"))
    assert fused._jit(module.double, ("f8(f8)",))(3.0) == 6.0


# --- the parallel kernel: all of torch's threads, the serial kernel's bits ------------------------

ROOT = Path(__file__).resolve().parents[1]
PARALLEL_SIZES = [2**16, 2**16 + 1, 17 * BLOCK + 7, 2**18 + 3, 2**20]  # multiples of the block and not


def needs_threads(count: int):
    """Skip unless numba may run ``count`` threads (NUMBA_NUM_THREADS, the cores by default)."""
    from numba.core import config

    return pytest.mark.skipif(config.NUMBA_NUM_THREADS < count, reason=f"needs NUMBA_NUM_THREADS >= {count}")


def big_values(dtype: torch.dtype, seed: int, c: float) -> list[torch.Tensor]:
    """Gradients of PARALLEL_SIZES with nan, +-inf, +-c, -0.0 and huge values at the ends and inside."""
    g = torch.Generator().manual_seed(seed)
    out = [torch.randn(n, generator=g, dtype=torch.float64).to(dtype) for n in PARALLEL_SIZES]
    edges = torch.tensor([c, -c, -0.0, math.inf, -math.inf, math.nan, 1e30, -1e30], dtype=dtype)
    for t in out[1:]:  # out[0] stays finite: its norms are compared as numbers too
        places = torch.cat([torch.tensor([0, t.numel() - 1]), torch.randint(0, t.numel(), (14,), generator=g)])
        t[places] = edges[torch.arange(len(places)) % len(edges)]
    return out


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(BITS[t.dtype.itemsize])


def same_floats(a: tuple, b: tuple) -> bool:
    """Tuples equal element by element, bit for bit (nan == nan; 0.0 != -0.0)."""
    return len(a) == len(b) and all(np.array(x).tobytes() == np.array(y).tobytes() for x, y in zip(a, b))


@needs_numba
@needs_threads(2)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_parallel_kernel_writes_and_sums_as_the_serial_one_on_any_thread_count(dtype):
    """The parallel kernel adds its blocks' float64 sums in block order: on 1 and 2 threads it gives
    the serial kernel's gradient bits, counts and sums, bit for bit."""
    import numba

    from gradkit import fused

    c = 0.75
    serial, parallel = fused._kernel(), fused._parallel_kernel()
    assert parallel is not None and fused.layer() in ("omp", "tbb", "workqueue")
    scalar = {torch.float32: np.float32, torch.float64: np.float64}[dtype]
    for t in big_values(dtype, 3, c):
        want_grad = t.clone()
        want = serial(want_grad.numpy(), scalar(c))
        for count in (1, 2):
            numba.set_num_threads(count)
            got_grad = t.clone()
            got = parallel(got_grad.numpy(), scalar(c))
            assert same_floats(got, want), (t.numel(), count, got, want)
            assert torch.equal(bits(got_grad), bits(want_grad))


@needs_numba
@needs_threads(2)
def test_clip_grad_value_gives_the_same_bits_on_one_and_two_torch_threads(monkeypatch):
    """clip_grad_value follows torch.get_num_threads(): 2 threads use the parallel kernel for
    tensors of PARALLEL_MIN elements and more, 1 thread the serial one; the results are the same bits."""
    from gradkit import fused

    c = 0.75
    calls: list[int] = []
    real = fused._parallel_kernel

    def spy():
        calls.append(torch.get_num_threads())
        return real()

    monkeypatch.setattr(fused, "_parallel_kernel", spy)
    monkeypatch.delenv("GRADKIT_NUMBA", raising=False)
    tensors = big_values(torch.float32, 4, c) + [torch.randn(fused.PARALLEL_MIN - 1), torch.randn(10).double()]
    results = {}
    saved = torch.get_num_threads()
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            assert fused.threads(2**20) == count and fused.threads(fused.PARALLEL_MIN - 1) == 1
            results[count] = clip_values_with(monkeypatch, "1", tensors, c)
    finally:
        torch.set_num_threads(saved)
    assert calls == [2] * len(PARALLEL_SIZES)  # one parallel call per big tensor, none on one thread
    (one, one_grads), (two, two_grads) = results[1], results[2]
    for field in ("norm_before", "norm_after", "clipped_fraction"):
        assert same_floats((float(getattr(one, field)),), (float(getattr(two, field)),)), field
    assert all(torch.equal(bits(a), bits(b)) for a, b in zip(one_grads, two_grads))


@needs_numba
@needs_threads(2)
def test_a_thread_that_finds_the_parallel_kernel_busy_clips_serially(monkeypatch):
    """While another thread runs the parallel kernel (its lock held), clamp_ takes the serial
    kernel instead of waiting or entering it twice, with the same bits."""
    from gradkit import fused

    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    used: list[str] = []
    real = fused._parallel_kernel
    monkeypatch.setattr(fused, "_parallel_kernel", lambda: used.append("parallel") or real())
    t = big_values(torch.float32, 5, 0.5)[3]
    free, busy = t.clone(), t.clone()
    want = fused.clamp_(free, 0.5)
    with fused._parallel_lock:
        got = fused.clamp_(busy, 0.5)
    assert used == ["parallel"]  # the first call only
    assert same_floats(got, want) and torch.equal(bits(busy), bits(free))


PARALLEL_THREADS_CODE = """
import sys, threading, torch
from gradkit import fused
torch.set_num_threads(2)
torch.manual_seed(0)
base = [torch.randn(n) * 3 for n in (2**16, 2**18 + 3)]
refs = [b.clone() for b in base]
torch.set_num_threads(1)
wants = [fused.clamp_(r, 0.5) for r in refs]
torch.set_num_threads(2)
bad, parallel = [], []
real = fused._parallel_kernel
fused._parallel_kernel = lambda: parallel.append(1) or real()
def work():
    for _ in range(100):
        for b, r, want in zip(base, refs, wants):
            x = b.clone()
            if fused.clamp_(x, 0.5) != want or not torch.equal(x, r):
                bad.append(1)
threads = [threading.Thread(target=work) for _ in range(2)]
for t in threads: t.start()
for t in threads: t.join()
print(fused.layer(), len(bad), len(parallel) > 0, sep="|")
"""


@needs_numba
@needs_threads(2)
@pytest.mark.parametrize("layer", ["workqueue", "default"])
def test_two_python_threads_clip_at_once_on_any_threading_layer(layer):
    """Dask workers clip from several threads: the one that finds the parallel kernel busy clips
    serially (exact results, no crash). numba's workqueue layer, which aborts the process when two
    threads enter it and was slower than one thread, is never run: its processes clip serially."""
    env = {k: v for k, v in os.environ.items() if k != "GRADKIT_NUMBA"} | {"NUMBA_THREADING_LAYER": layer}
    run = subprocess.run([sys.executable, "-c", PARALLEL_THREADS_CODE], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    name, bad, asked = run.stdout.strip().split("|")
    assert bad == "0" and asked == "True"
    if layer == "workqueue":
        assert name.startswith("off: workqueue layer")
    else:
        assert name in ("omp", "tbb")


SPAWNED_CODE = """
import torch
from gradkit import fused
torch.set_num_threads(2)
x = torch.randn(2**20) * 3
y = x.clone()
fast = fused.clamp_(x, 0.5)
layer, threads = fused.layer(), torch.get_num_threads()
torch.set_num_threads(1)
print(layer, threads, fast == fused.clamp_(y, 0.5) and torch.equal(x, y))
"""


@needs_numba
@needs_threads(2)
def test_starting_the_threading_layer_keeps_torchs_thread_count():
    """numba's OpenMP layer shares torch's libgomp and sets its thread count to NUMBA_NUM_THREADS
    when it starts (here 3, torch has 2): gradkit puts torch's count back."""
    env = {k: v for k, v in os.environ.items() if k != "GRADKIT_NUMBA"} | {"NUMBA_NUM_THREADS": "3"}
    run = subprocess.run([sys.executable, "-c", SPAWNED_CODE], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    layer, threads, same = run.stdout.split()
    assert layer in ("omp", "tbb", "workqueue") and threads == "2" and same == "True"


def _clip_in_forked_child(queue) -> None:
    from gradkit import fused

    torch.set_num_threads(2)
    x = torch.from_numpy(np.full(2**18, 3.0, np.float32))  # no torch op on 2 threads: those hang in a fork of an OpenMP process
    queue.put((fused.threads(x.numel()), fused.clamp_(x, 0.5)))


@needs_numba
@needs_threads(2)
@pytest.mark.skipif(sys.platform != "linux", reason="fork")
def test_a_forked_child_clips_serially_after_the_parent_ran_the_parallel_kernel():
    """numba terminates a forked child that starts a parallel region its parent's GNU OpenMP had
    started: such a child clips on one thread instead, and lives."""
    import multiprocessing

    from gradkit import fused

    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        fused.clamp_(torch.randn(2**18), 0.5)  # starts the threading layer here
    finally:
        torch.set_num_threads(saved)
    assert fused.layer() != "not started"
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_clip_in_forked_child, args=(queue,))
    child.start()
    child.join(120)
    if child.exitcode is None:
        child.kill()
    assert child.exitcode == 0
    assert queue.get(timeout=5) == (1, (9.0 * 2**18, 0.25 * 2**18, 2**18))


@needs_numba
def test_the_kits_process_pool_workers_clip_on_their_share_of_the_cores():
    """A worker of gradkit.executors.process_pool runs torch on cores // workers threads, and the
    kernel on as many (1: the serial kernel), with the bits of this process's serial kernel."""
    from gradkit import executors, fused

    workers = 2
    share = executors.threads_per_process(workers)
    t = big_values(torch.float32, 6, 0.5)[4]
    mine = t.clone()
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        want = fused.clamp_(mine, 0.5)
    finally:
        torch.set_num_threads(saved)
    with executors.process_pool(workers) as pool:
        threads = pool.submit(fused.threads, t.numel()).result(timeout=300)
        got = pool.submit(fused.clamp_, t.clone(), 0.5).result(timeout=300)
    from numba.core import config

    assert threads == (1 if share == 1 else min(share, config.NUMBA_NUM_THREADS))
    assert same_floats(got, want)


@needs_numba
def test_the_parallel_kernel_is_compiled_once_then_loaded_from_the_cache(tmp_path):
    """cache=True works for the parallel kernel: the first process compiles both signatures, the next loads them."""
    code = ("from gradkit import fused; k = fused._parallel_kernel(); assert k is not None; "
            "print(sum(k.stats.cache_hits.values()), sum(k.stats.cache_misses.values()))")
    env = {k: v for k, v in os.environ.items() if k != "GRADKIT_NUMBA"} | {"NUMBA_CACHE_DIR": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT) for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr + runs[1].stderr
    assert [r.stdout.split() for r in runs] == [["0", "2"], ["2", "0"]]


# --- per-tensor norm clipping and scaled value clipping: hand computations -------------------------


def test_clip_grad_norm_per_tensor_by_hand():
    model = small_model(13)
    model[3].weight.grad.mul_(1e3)  # only this tensor exceeds c
    before = [g.clone() for g in grads(model)]
    c = 0.05
    norms = [float(torch.linalg.vector_norm(b)) for b in before]
    result = clip_grad_norm_per_tensor(model, c)
    for g, b, n in zip(grads(model), before, norms):
        expected = b * min(1.0, c / (n + 1e-6))
        assert torch.allclose(g, expected, rtol=1e-6, atol=0)
    assert float(result.clipped_fraction) == pytest.approx(sum(n > c for n in norms) / len(norms))
    assert rel(result.norm_before, torch.linalg.vector_norm(torch.tensor(norms))) < 1e-6
    after = [min(n, c * n / (n + 1e-6)) if n > c else n for n in norms]
    assert rel(result.norm_after, torch.linalg.vector_norm(torch.tensor(after))) < 1e-5
    assert rel(result.norm_after, torch.linalg.vector_norm(flat(model))) < 1e-5


def test_clip_grad_norm_per_tensor_inf_norm_and_empty():
    a = torch.zeros(3, requires_grad=True)
    a.grad = torch.tensor([1.0, -8.0, 2.0])
    result = clip_grad_norm_per_tensor([a], 2.0, norm_type=math.inf)
    assert torch.allclose(a.grad, torch.tensor([1.0, -8.0, 2.0]) * 2.0 / (8.0 + 1e-6))
    assert float(result.norm_before) == 8.0
    empty = clip_grad_norm_per_tensor([], 1.0)
    assert float(empty.norm_before) == 0.0 and float(empty.clipped_fraction) == 0.0


def test_clip_grad_scaled_value_bound_and_relation_to_norm_clipping():
    model = small_model(14)
    for p in model.parameters():
        p.grad.mul_(10.0)
    n = flat(model).numel()
    c = 1.0
    reference = clone(model)
    result = clip_grad_scaled_value(model, c)
    same = clip_grad_value(reference, c / math.sqrt(n))
    assert_grads_close(model, reference, rtol=0.0)
    assert float(result.threshold) == pytest.approx(c / math.sqrt(n), rel=1e-6)
    assert float(result.clipped_fraction) == pytest.approx(float(same.clipped_fraction))
    assert float(torch.linalg.vector_norm(flat(model))) <= c * (1 + 1e-6)  # the guarantee ||g|| <= c
    # the special case where it equals norm clipping: every |g_i| equal
    t = torch.zeros(16, requires_grad=True)
    t.grad = torch.full((16,), 2.0) * torch.tensor([1.0, -1.0]).repeat(8)
    u = t.detach().clone().requires_grad_()
    u.grad = t.grad.clone()
    clip_grad_scaled_value(t, 1.0)
    clip_grad_norm(u, 1.0)
    assert torch.allclose(t.grad, u.grad, rtol=1e-5)


def test_scaled_value_clips_more_than_norm_clipping():
    # one large element, the rest small: ||g|| = 0.5 < c = 1, norm clipping leaves it alone
    t = torch.zeros(100, requires_grad=True)
    t.grad = torch.full((100,), 0.01)
    t.grad[0] = 0.49
    assert not bool(clip_grad_norm([t], 1.0).clipped)
    result = clip_grad_scaled_value([t], 1.0)
    assert bool(result.clipped) and float(t.grad[0]) == pytest.approx(0.1)


# --- AGC: hand computation of max_i = lambda * max(||W_i||, eps) ----------------------------------


def agc_by_hand(w: torch.Tensor, g: torch.Tensor, lam: float, eps: float) -> torch.Tensor:
    units = [w.reshape(1, -1)] if w.ndim <= 1 else list(w.reshape(w.shape[0], -1))
    g_units = [g.reshape(1, -1)] if g.ndim <= 1 else list(g.reshape(g.shape[0], -1))
    out = []
    for wi, gi in zip(units, g_units):
        wn = math.sqrt(float((wi.double() ** 2).sum()))
        gn = math.sqrt(float((gi.double() ** 2).sum()))
        max_i = lam * max(wn, eps)
        out.append(gi * (max_i / max(gn, 1e-6)) if gn > max_i else gi)
    return torch.cat([o.reshape(-1) for o in out]).reshape(g.shape)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("lam", [0.01, 0.3])
def test_adaptive_clip_grad_by_hand(device, lam):
    model = small_model(15, device)
    model[3].bias.data.zero_()  # zero weights: the eps floor decides
    for p in model.parameters():
        p.grad.mul_(5.0)
    expected = [agc_by_hand(p.detach(), p.grad, lam, 1e-3) for p in model.parameters()]
    changed = [not torch.equal(e, p.grad) for e, p in zip(expected, model.parameters())]
    before = torch.linalg.vector_norm(flat(model))
    result = adaptive_clip_grad(model, clipping=lam)
    for p, e in zip(model.parameters(), expected):
        assert torch.allclose(p.grad, e, rtol=1e-5, atol=1e-12)
    assert rel(result.norm_before, before) < 1e-5
    assert rel(result.norm_after, torch.linalg.vector_norm(flat(model))) < 1e-5
    assert float(result.clipped_fraction) == pytest.approx(sum(changed) / len(changed))
    assert math.isnan(float(result.threshold))
    assert result.norm_before.device.type == device


def test_adaptive_clip_grad_scalar_and_vector_are_one_unit():
    s = torch.tensor(2.0, requires_grad=True)
    s.grad = torch.tensor(5.0)
    v = torch.tensor([3.0, 4.0], requires_grad=True)
    v.grad = torch.tensor([1.0, 1.0])
    adaptive_clip_grad([s, v], clipping=0.1)
    assert float(s.grad) == pytest.approx(0.2)  # 0.1 * |2|
    assert torch.allclose(v.grad, torch.tensor([1.0, 1.0]) * 0.5 / math.sqrt(2))  # 0.1 * ||(3, 4)||


def test_adaptive_clip_grad_exclude_by_name_module_and_tensor():
    base = small_model(16)
    for p in base.parameters():
        p.grad.mul_(100.0)
    expected_fc1 = agc_by_hand(base[3].weight.detach(), base[3].weight.grad, 0.01, 1e-3)
    assert not torch.equal(expected_fc1, base[3].weight.grad)  # the layer that is not excluded is cut
    excludes = [lambda m: "5", lambda m: ["5.weight", "5.bias"], lambda m: [m[5].weight, m[5].bias], lambda m: m[5].weight]
    for exclude in excludes:
        model = clone(base)
        adaptive_clip_grad(model, 0.01, exclude=exclude(model))
        assert torch.equal(model[5].weight.grad, base[5].weight.grad)
        assert torch.allclose(model[3].weight.grad, expected_fc1, rtol=1e-5)
    model = clone(base)
    adaptive_clip_grad(model, 0.01, exclude=model[5].weight)
    assert not torch.equal(model[5].bias.grad, base[5].bias.grad)  # only the weight was excluded
    model = clone(base)
    result = clipper("agc:0.01")(model)  # on a module the last nn.Linear is left out, as in NFNets
    changed = [not torch.equal(p.grad, q.grad) for p, q in zip(model.parameters(), base.parameters())]
    assert float(result.clipped_fraction) == pytest.approx(sum(changed) / 6) and sum(changed) >= 1  # excluded count as unchanged
    assert torch.equal(model[5].weight.grad, base[5].weight.grad) and torch.equal(model[5].bias.grad, base[5].bias.grad)
    assert torch.allclose(model[3].weight.grad, expected_fc1, rtol=1e-5)
    with pytest.raises(ValueError, match="exclude='fc9' matches no parameter name; accepted: .*here: 0.weight"):
        adaptive_clip_grad(model, 0.01, exclude="fc9")
    with pytest.raises(ValueError, match="exclude='w' matches no parameter name.*pass an nn.Module"):
        adaptive_clip_grad(list(model.parameters()), 0.01, exclude="w")


# --- AutoClip: hand computation with numpy's percentile ---------------------------------------------


def test_autoclip_matches_reference_numpy_percentile():
    torch.manual_seed(17)
    auto = AutoClip(percentile=25.0)
    w = torch.zeros(3, requires_grad=True)
    seen: list[float] = []
    for step in range(300):  # past the buffer's first capacity (256)
        g = torch.randn(3) * float(torch.rand(()) * 10 + 0.1)
        w.grad = g.clone()
        norm = float(torch.linalg.vector_norm(g))
        seen.append(norm)
        c = float(np.percentile(seen, 25.0))  # the reference: append, then np.percentile (linear)
        result = auto(w)
        assert float(result.threshold) == pytest.approx(c, rel=1e-5)
        cut = norm > float(result.threshold)
        assert torch.allclose(w.grad, g * (c / (norm + 1e-6) if cut else 1.0), rtol=1e-5)
        assert bool(result.clipped) is cut
    assert auto.history.shape == (300,)
    assert np.allclose(auto.history.numpy(), seen, rtol=1e-6)
    auto.reset()
    assert auto.history.numel() == 0


def test_autoclip_counts_a_step_clipped_only_when_the_norm_exceeds_the_percentile():
    auto, w = AutoClip(percentile=50), torch.zeros(1)
    flags = []
    for g in (2.0, 1.0, 3.0, 2.0, 8.0):  # medians: 2 (first step: the norm itself), 1.5, 2, 2, 2
        w.grad = torch.tensor([g])
        r = auto(w)
        flags.append(bool(r.clipped))
        if not flags[-1]:  # nothing cut: the gradient is exactly what it was
            assert w.grad.item() == g and float(r.norm_after) == g and float(r.clipped_fraction) == 0.0
    assert flags == [False, False, True, False, True]
    assert w.grad.item() == pytest.approx(2.0 * 8.0 / (8.0 + 1e-6))


@pytest.mark.parametrize("fn", [clip_grad_norm, clip_grad_norm_per_tensor])
def test_a_norm_equal_to_the_threshold_is_not_clipped(fn):
    w = torch.zeros(2)
    w.grad = torch.tensor([3.0, 4.0])
    r = fn(w, 5.0)
    assert not bool(r.clipped) and torch.equal(w.grad, torch.tensor([3.0, 4.0])) and float(r.norm_after) == 5.0
    r = fn(w, 4.999)
    assert bool(r.clipped) and float(r.norm_after) == pytest.approx(4.999, rel=1e-6)


def test_clipper_auto_on_a_module_first_step_is_not_clipped():
    model = small_model(3)
    before = flat(model).clone()
    r = clipper("auto:10")(model)
    assert not bool(r.clipped) and torch.equal(flat(model), before)


# --- overflow: a finite gradient whose norm is inf is zeroed (as torch does) and reported as 0 ------


def overflowing() -> tuple[torch.Tensor, torch.Tensor]:
    """A finite float32 gradient whose 2-norm overflows (sum of squares > 3.4e38), and its twin."""
    w, twin = torch.ones(2, 3), torch.ones(2, 3)
    w.grad = torch.full((2, 3), 3e38)
    twin.grad = w.grad.clone()
    assert bool(torch.isfinite(w.grad).all()) and torch.isinf(torch.linalg.vector_norm(w.grad))
    return w, twin


@pytest.mark.parametrize("clip", [lambda p: clip_grad_norm(p, 1.0), lambda p: clip_grad_norm_per_tensor(p, 1.0),
                                  lambda p: adaptive_clip_grad(p, 0.01), clipper("norm:1.0"),
                                  clipper("tensor_norm:1.0"), clipper("agc:0.01")])
def test_overflowing_norm_is_zeroed_and_reported_as_zero_not_nan(clip):
    w, twin = overflowing()
    r = clip(w)
    assert torch.equal(w.grad, torch.zeros(2, 3))
    assert float(r.norm_before) == math.inf and float(r.norm_after) == 0.0 and bool(r.clipped)


def test_overflow_matches_torch_gradients():
    w, twin = overflowing()
    clip_grad_norm(w, 1.0)
    torch.nn.utils.clip_grad_norm_([twin], 1.0)
    assert torch.equal(w.grad, twin.grad)


def test_overflow_in_the_total_only_is_reported_as_zero():
    a, b = torch.zeros(1), torch.zeros(1)
    a.grad, b.grad = torch.tensor([3e38]), torch.tensor([3e38])  # each norm finite, the total is not
    r = clip_grad_norm([a, b], 1.0)
    assert float(r.norm_before) == math.inf and float(r.norm_after) == 0.0
    assert a.grad.item() == 0.0 and b.grad.item() == 0.0


def test_overflow_in_float16_is_zeroed_and_reported_as_zero():
    w = torch.zeros(4, dtype=torch.float16)
    w.grad = torch.full((4,), 6e4, dtype=torch.float16)  # finite; the norm 1.2e5 is not (float16 max 65504)
    r = clip_grad_norm(w, 1.0)
    assert float(r.norm_before) == math.inf and float(r.norm_after) == 0.0 and torch.equal(w.grad, torch.zeros(4, dtype=torch.float16))


# --- a gradient that holds inf or nan: treated as torch treats it, reported as it is left ---------


NORM_CLIPS = {
    "norm": lambda p: clip_grad_norm(p, 1.0),
    "norm_inf": lambda p: clip_grad_norm(p, 1.0, norm_type=math.inf),
    "tensor_norm": lambda p: clip_grad_norm_per_tensor(p, 1.0),
    "agc": lambda p: adaptive_clip_grad(p, 0.01),
    "auto": lambda p: AutoClip(10)(p),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("name", list(NORM_CLIPS))
def test_an_inf_gradient_is_left_nan_and_reported_nan(name, dtype):
    """inf * 0 = nan, as in torch: the finite elements become 0, the inf ones nan, and norm_after says nan."""
    w = torch.ones(3, dtype=dtype)
    w.grad = torch.tensor([1.0, math.inf, -2.0], dtype=dtype)
    r = NORM_CLIPS[name](w)
    assert w.grad[0].item() == 0.0 and math.isnan(w.grad[1].item()) and w.grad[2].item() == 0.0
    assert float(r.norm_before) == math.inf and math.isnan(float(r.norm_after)) and bool(r.clipped)
    if name == "norm":
        twin = torch.ones(3, dtype=dtype)
        twin.grad = torch.tensor([1.0, math.inf, -2.0], dtype=dtype)
        torch.nn.utils.clip_grad_norm_([twin], 1.0)
        assert torch.equal(w.grad.isnan(), twin.grad.isnan()) and torch.equal(w.grad.nan_to_num(), twin.grad.nan_to_num())


@pytest.mark.parametrize("name", list(NORM_CLIPS))
def test_a_nan_gradient_is_reported_nan_and_not_clipped(name):
    w = torch.ones(3)
    w.grad = torch.tensor([1.0, math.nan, -2.0])
    r = NORM_CLIPS[name](w)
    assert math.isnan(float(r.norm_before)) and math.isnan(float(r.norm_after)) and not bool(r.clipped)
    assert bool(w.grad.isnan()[1])


@pytest.mark.parametrize("name", ["norm", "tensor_norm", "agc"])
def test_an_inf_in_one_tensor_makes_the_total_after_nan(name):
    """The other tensor is finite: it is zeroed (global) or left (per tensor, per unit), but the total left holds a nan."""
    a, b = torch.ones(2), torch.ones(2)
    a.grad, b.grad = torch.tensor([math.inf, 0.5]), torch.tensor([0.001, 0.002])
    r = NORM_CLIPS[name]([a, b])
    assert math.isnan(a.grad[0].item()) and math.isnan(float(r.norm_after))
    expected_b = torch.zeros(2) if name == "norm" else torch.tensor([0.001, 0.002])
    assert torch.equal(b.grad, expected_b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_checked_multiplication_is_bitwise_foreach_mul(dtype):
    """The fused check-and-multiply (used on GPUs; run here on the CPU) writes the bits _foreach_mul_
    writes, with one factor for all tensors or one each, and flags an inf or nan."""
    from gradkit import clip as gclip

    g = torch.Generator().manual_seed(4)
    tensors = [(torch.randn(50, generator=g) * 30).to(dtype) for _ in range(3)] + [torch.tensor([0.0, -0.0, 1e-40, -3.0]).to(dtype)]
    twin = [t.clone() for t in tensors]
    coef = torch.tensor(0.37, dtype=dtype)
    found = gclip._checked_mul_(tensors, [coef] * 4)
    torch._foreach_mul_(twin, coef)
    bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[dtype.itemsize]
    assert all(torch.equal(t.view(bits), u.view(bits)) for t, u in zip(tensors, twin)) and not bool(found)
    per = list(torch.tensor([0.5, 2.0, 0.1, 1.0], dtype=dtype).unbind())
    found = gclip._checked_mul_(tensors, per)
    torch._foreach_mul_(twin, per)
    assert all(torch.equal(t.view(bits), u.view(bits)) for t, u in zip(tensors, twin)) and not bool(found)
    tensors[2][7] = math.inf
    assert bool(gclip._checked_mul_(tensors, [torch.zeros((), dtype=dtype)] * 4)) and bool(tensors[2][7].isnan())


# --- AutoClip with non-finite norms: the percentile of the finite ones -------------------------------


def test_autoclip_after_an_overflow_uses_the_finite_norms():
    """Norms 2 (four ones), overflow (four 3e38), 4, 1: thresholds = percentiles of [2], [2], [2, 4], [2, 4, 1]."""
    w = torch.zeros(4)
    for p in (100, 90, 50, 10):
        auto = AutoClip(p)
        w.grad = torch.ones(4)
        assert float(auto(w).threshold) == 2.0
        w.grad = torch.full((4,), 3e38)
        r = auto(w)
        assert float(r.threshold) == 2.0 and torch.equal(w.grad, torch.zeros(4))
        assert float(r.norm_before) == math.inf and float(r.norm_after) == 0.0 and bool(r.clipped)
        w.grad = torch.full((4,), 2.0)  # norm 4
        r = auto(w)
        c = float(np.percentile([2.0, 4.0], p))
        assert float(r.threshold) == pytest.approx(c)
        assert torch.allclose(w.grad, torch.full((4,), 2.0) * (c / (4.0 + 1e-6) if c < 4 else 1.0))
        w.grad = torch.full((4,), 0.5)  # norm 1
        assert float(auto(w).threshold) == pytest.approx(float(np.percentile([2.0, 4.0, 1.0], p)))
        history = auto.history.tolist()
        assert history[0] == 2.0 and history[1] == math.inf and history[2:] == [4.0, 1.0]


def test_autoclip_first_step_overflow_zeroes_with_a_nan_threshold():
    auto, w = AutoClip(10), torch.zeros(4)
    w.grad = torch.full((4,), 3e38)
    r = auto(w)
    assert math.isnan(float(r.threshold)) and torch.equal(w.grad, torch.zeros(4))
    assert float(r.norm_after) == 0.0 and bool(r.clipped)
    w.grad = torch.ones(4)  # the first finite norm: the percentile of [2] is 2, nothing cut
    r = auto(w)
    assert float(r.threshold) == 2.0 and not bool(r.clipped) and torch.equal(w.grad, torch.ones(4))


def test_autoclip_nan_norm_does_not_poison_later_thresholds():
    auto, w = AutoClip(50), torch.zeros(2)
    for g in ([3.0, 4.0], [math.nan, 1.0], [6.0, 8.0]):
        w.grad = torch.tensor(g)
        r = auto(w)
    assert float(r.threshold) == pytest.approx(7.5)  # median of [5, 10]
    assert torch.allclose(w.grad, torch.tensor([6.0, 8.0]) * 7.5 / (10.0 + 1e-6))


def test_autoclip_no_grads_records_nothing():
    auto = AutoClip(10)
    result = auto([torch.zeros(2, requires_grad=True)])
    assert auto.history.numel() == 0 and math.isnan(float(result.threshold)) and not bool(result.clipped)


# --- clipper specs -------------------------------------------------------------------------------


SPEC_CASES = [
    ("none", "none", None, "no clipping"),
    ("value:0.1", "value", 0.1, "value clipping, c=0.1"),
    ("norm:1.0", "norm", 1.0, "norm clipping, c=1"),
    ("norm_inf:1.0", "norm_inf", 1.0, "inf-norm clipping, c=1"),
    ("tensor_norm:1.0", "tensor_norm", 1.0, "per-tensor norm clipping, c=1"),
    ("scaled_value:1.0", "scaled_value", 1.0, "c/sqrt(n) value clipping, c=1"),
    ("agc:0.01", "agc", 0.01, "AGC, lambda=0.01"),
    ("auto:10", "auto", 10.0, "AutoClip, p=10"),
]


@pytest.mark.parametrize("spec,method,threshold,label", SPEC_CASES)
def test_clipper_parses_specs(spec, method, threshold, label):
    c = clipper(spec)
    assert isinstance(c, Clipper)
    assert (c.method, c.threshold, c.label) == (method, threshold, label)
    assert clipper(c.spec).spec == c.spec  # canonical spec round-trips
    assert clipper(c) is c
    assert repr(c) == f"Clipper({c.spec!r})"


def test_clipper_numbers_none_and_case():
    assert clipper(1).spec == "norm:1.0" and clipper(0.5).spec == "norm:0.5"
    assert clipper(None).method == "none" and clipper().method == "none"
    assert clipper(" Norm : 2 ").spec == "norm:2.0"
    assert [m for m in METHODS] == ["none", "value", "norm", "norm_inf", "tensor_norm", "scaled_value", "agc", "auto"]


@pytest.mark.parametrize(
    "spec,direct",
    [
        ("value:0.001", lambda m: clip_grad_value(m, 0.001)),
        ("norm:0.5", lambda m: clip_grad_norm(m, 0.5)),
        ("norm_inf:0.01", lambda m: clip_grad_norm(m, 0.01, norm_type=math.inf)),
        ("tensor_norm:0.05", lambda m: clip_grad_norm_per_tensor(m, 0.05)),
        ("scaled_value:0.5", lambda m: clip_grad_scaled_value(m, 0.5)),
        ("agc:0.01", lambda m: adaptive_clip_grad(m, 0.01, exclude="5")),
        ("auto:50", lambda m: AutoClip(50)(m)),
    ],
)
def test_clipper_calls_the_function(spec, direct):
    ours, theirs = twins(18, 10.0)
    a = clipper(spec)(ours)
    b = direct(theirs)
    assert isinstance(a, ClipResult)
    assert_grads_close(ours, theirs, rtol=0.0)
    assert float(a.norm_after) == float(b.norm_after) and float(a.clipped_fraction) == float(b.clipped_fraction)


def test_clipper_none_measures_and_leaves_gradients():
    model = small_model(19)
    before = [g.clone() for g in grads(model)]
    result = clipper("none")(model)
    assert all(torch.equal(g, b) for g, b in zip(grads(model), before))
    assert rel(result.norm_before, torch.linalg.vector_norm(flat(model))) < 1e-6
    assert float(result.norm_after) == float(result.norm_before)
    assert math.isinf(float(result.threshold)) and not bool(result.clipped)


def test_clipper_auto_keeps_its_history():
    auto = clipper("auto:10")
    model = small_model(20)
    for _ in range(3):
        auto(model)
    assert auto._auto.history.numel() == 3


def test_public_names_exported():
    for name in ("grad_norm", "clip_grad_value", "clip_grad_norm", "clip_grad_norm_per_tensor", "clip_grad_scaled_value",
                 "adaptive_clip_grad", "AutoClip", "clipper", "ClipResult", "Clipper", "GradMonitor"):
        assert hasattr(gradkit, name), name


# --- bad input -----------------------------------------------------------------------------------


BAD_THRESHOLDS = [-1.0, 0, 0.0, math.nan, math.inf, "1.0", None, True, torch.tensor(-1.0), torch.ones(2)]


@pytest.mark.parametrize("bad", BAD_THRESHOLDS, ids=repr)
@pytest.mark.parametrize(
    "fn,arg",
    [
        (lambda p, c: clip_grad_norm(p, c), "max_norm"),
        (lambda p, c: clip_grad_norm_per_tensor(p, c), "max_norm"),
        (lambda p, c: clip_grad_value(p, c), "clip_value"),
        (lambda p, c: clip_grad_scaled_value(p, c), "c"),
        (lambda p, c: adaptive_clip_grad(p, clipping=c), "clipping"),
        (lambda p, c: adaptive_clip_grad(p, eps=c), "eps"),
    ],
)
def test_bad_thresholds_raise(fn, arg, bad):
    model = small_model(21)
    before = [g.clone() for g in grads(model)]
    with pytest.raises(ValueError, match=rf"^{arg}(=inf)? .*finite number > 0"):
        fn(model, bad)
    assert all(torch.equal(g, b) for g, b in zip(grads(model), before))  # nothing was changed


@pytest.mark.parametrize("bad", [0.5, 0, -1, math.nan, "two", None, True])
def test_bad_norm_type_raises(bad):
    model = small_model(22)
    for fn in (lambda: grad_norm(model, bad), lambda: clip_grad_norm(model, 1.0, norm_type=bad), lambda: clip_grad_norm_per_tensor(model, 1.0, bad)):
        with pytest.raises(ValueError, match=r"norm_type must be a number p >= 1 .* or float\('inf'\)"):
            fn()


def test_bad_arguments_raise():
    model = small_model(23)
    with pytest.raises(ValueError, match="error_if_nonfinite must be True or False"):
        clip_grad_norm(model, 1.0, error_if_nonfinite="yes")
    with pytest.raises(ValueError, match="params must be"):
        clip_grad_norm("weights", 1.0)
    with pytest.raises(ValueError, match="params must hold tensors"):
        clip_grad_norm([1.0, 2.0], 1.0)
    with pytest.raises(ValueError, match="exclude must"):
        adaptive_clip_grad(model, exclude=[3])
    for bad in (-1, 101, math.nan, "10", True):
        with pytest.raises(ValueError, match=r"percentile must be a finite number in \[0, 100\], got"):
            AutoClip(bad)


@pytest.mark.parametrize(
    "spec,pattern",
    [
        ("foo:1", r"spec='foo:1': unknown clipping method 'foo'; accepted specs: none, value:<c>, norm:<c>"),
        ("norm", r"spec='norm' needs a threshold.*accepted specs"),
        ("norm:", r"spec='norm:' needs a threshold"),
        ("norm:abc", r"spec='norm:abc': the threshold 'abc' is not a number; accepted specs"),
        ("none:1", r"spec='none:1': 'none' takes no threshold"),
        ("value:0", r"spec='value:0': threshold must be a finite number > 0, got 0.0"),
        ("norm:-1", r"spec='norm:-1': threshold must be a finite number > 0"),
        ("norm:nan", r"spec='norm:nan': threshold must be a finite number > 0"),
        ("norm:inf", r"spec='norm:inf': threshold=inf clips nothing"),
        ("agc:0", r"spec='agc:0': threshold \(the AGC clipping lambda\) must be a finite number > 0"),
        ("auto:150", r"spec='auto:150': percentile must be a finite number in \[0, 100\], got 150.0"),
        (-2.0, r"spec=-2.0: threshold must be a finite number > 0"),
        (True, r"spec=True is not a clipping spec; accepted specs"),
        ([1.0], r"spec=\[1.0\] is not a clipping spec"),
    ],
)
def test_bad_specs_raise(spec, pattern):
    with pytest.raises(ValueError, match=pattern):
        clipper(spec)


def test_clipper_constructor_rejects_unknown_method():
    with pytest.raises(ValueError, match="method='clip' is not a clipping method; accepted: none, value, norm"):
        Clipper("clip", 1.0)
    with pytest.raises(ValueError, match="method='none' takes no threshold"):
        Clipper("none", 1.0)


# --- CUDA: no host synchronisation on the hot path ---------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("spec", ["none", "value:0.01", "norm:1.0", "norm_inf:0.1", "tensor_norm:0.1", "scaled_value:1.0", "agc:0.01", "auto:10"])
def test_no_host_sync_on_cuda(spec):
    model = small_model(24, "cuda")
    clip = clipper(spec)
    clip(model)  # the first AutoClip call allocates its buffer
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            clip(model)
    finally:
        torch.cuda.set_sync_debug_mode("default")


# --- torch's private grouping helper has a plain fallback ----------------------------------------


def test_plain_grouping_equals_torchs_private_helper():
    from gradkit import foreach

    tensors = [torch.zeros(3, dtype=torch.float64), torch.zeros(2), torch.zeros(1, dtype=torch.float64), torch.zeros(4),
               torch.zeros(2, dtype=torch.float16)]
    ours = sorted((str(d), [id(t) for t in g], i) for d, g, i in foreach.plain_groups(tensors))
    theirs = sorted((str(d), [id(t) for t in g], i) for d, g, i in foreach.groups(tensors))
    assert ours == theirs and sorted(i for *_, idx in ours for i in idx) == list(range(5))


@pytest.mark.parametrize("spec", ["norm:0.5", "tensor_norm:0.5", "value:0.01", "norm_inf:0.5"])
def test_clipping_without_torchs_private_helper_gives_the_same_numbers(monkeypatch, spec):
    """A torch that moves ``torch.utils._foreach_utils`` still clips, through the plain grouping."""
    from gradkit import foreach

    ours, theirs = twins(7, 100.0)
    for m in (ours, theirs):
        m[0].double()  # two dtypes: two groups
        m[0].weight.grad, m[0].bias.grad = m[0].weight.grad.double(), m[0].bias.grad.double()
    expected = clipper(spec)(theirs)
    monkeypatch.setattr(foreach, "_group_tensors_by_device_and_dtype", None)
    result = clipper(spec)(ours)
    assert_grads_close(ours, theirs, rtol=0.0)
    assert float(result.norm_before) == float(expected.norm_before)
    assert float(result.clipped_fraction) == float(expected.clipped_fraction)


def test_clip_imports_when_torchs_private_helper_is_gone():
    import os
    import subprocess
    import sys

    code = ("import torch, torch.utils._foreach_utils as f\n"
            "del f._group_tensors_by_device_and_dtype  # as in a torch that renamed it\n"
            "import gradkit.foreach as f2, gradkit.clip as c; assert f2._group_tensors_by_device_and_dtype is None\n"
            "w = torch.zeros(2); w.grad = torch.tensor([3.0, 4.0]); r = c.clip_grad_norm(w, 1.0)\n"
            "print(*w.grad.tolist(), float(r.norm_before))")
    env = {**os.environ, "PYTHONPATH": str(Path(gradkit.__file__).parents[1])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert [float(v) for v in proc.stdout.split()] == pytest.approx([0.6, 0.8, 5.0], rel=1e-6)
