"""gradkit.stacked: N clip settings trained at once match N sequential fits."""

import math

import pytest
import torch

from gradkit.clip import clipper
from gradkit.data import synthetic
from gradkit.models import PlainCNN
from gradkit.stacked import _StackedClip, fit_stacked
from gradkit.train import fit

SMALL = {"model_kw": {"width": 0.25}, "batch_size": 32, "progress": False, "device": "cpu"}


@pytest.fixture(scope="module")
def data():
    return synthetic(n=256, n_test=128)


def _close(a, b, rtol):
    return all(math.isclose(x, y, rel_tol=rtol, abs_tol=1e-7) for x, y in zip(a, b))


def test_stacked_clip_matches_torch_per_member():
    g = torch.Generator().manual_seed(0)
    shapes = [(4, 3, 3, 3), (4,), (10, 7)]
    stacks = [torch.randn(3, *s, generator=g) for s in shapes]
    raw = [t.clone() for t in stacks]
    specs = ["none", "norm:0.5", "value:0.1"]
    before, after, clipped = _StackedClip([clipper(s) for s in specs], torch.device("cpu"))(stacks)
    for n, spec in enumerate(specs):
        ref = [torch.nn.Parameter(torch.zeros(s)) for s in shapes]
        for p, r in zip(ref, raw):
            p.grad = r[n].clone()
        norm = torch.nn.utils.get_total_norm([p.grad for p in ref])
        if spec.startswith("norm"):
            torch.nn.utils.clip_grad_norm_(ref, 0.5)
        elif spec.startswith("value"):
            torch.nn.utils.clip_grad_value_(ref, 0.1)
        torch.testing.assert_close(before[n], norm, rtol=1e-6, atol=0)
        torch.testing.assert_close(after[n], torch.nn.utils.get_total_norm([p.grad for p in ref]), rtol=1e-5, atol=0)
        for p, t in zip(ref, stacks):
            torch.testing.assert_close(t[n], p.grad, rtol=1e-6, atol=1e-7)
    assert before[1] > 0.5 and after[1] == pytest.approx(0.5, rel=1e-5)
    assert clipped.tolist() == [False, True, True]


def test_members_match_sequential_fit(data):
    clips = ["none", "norm:0.5", "value:0.01"]
    hists = fit_stacked("seed_cnn", data, clips, epochs=2, **SMALL)
    for spec, h in zip(clips, hists):
        ref = fit("seed_cnn", data, epochs=2, clip=spec, **SMALL)
        assert h.config == ref.config and list(h.config) == list(ref.config)
        assert len(h.loss) == len(ref.loss) == 16 and not h.diverged
        # Batched kernels add in another order: 2e-7 relative on the first steps measured on the
        # 2-core CPU; 1e-4 leaves room for other CPUs, and the gap may grow as training goes on.
        for key in ("loss", "grad_norm_before", "grad_norm_after"):
            assert _close(getattr(h, key)[:10], getattr(ref, key)[:10], 1e-4), (spec, key)
            assert _close(getattr(h, key), getattr(ref, key), 1e-2), (spec, key)
        assert h.clipped == ref.clipped
        assert all(abs(a - b) * 128 <= 2 for a, b in zip(h.test_acc, ref.test_acc))
        assert len(h.test_acc) == len(h.train_acc) == len(h.epoch_seconds) == 2


def test_diverging_member_stops_alone(data):
    hists = fit_stacked("seed_cnn", data, [None, "norm:0.01"], lr=1e4, epochs=2, **SMALL)
    ref = fit("seed_cnn", data, lr=1e4, clip=None, epochs=2, **SMALL)
    wild, tame = hists
    assert ref.diverged and wild.diverged and wild.diverged_step == ref.diverged_step
    assert len(wild.loss) == wild.diverged_step and wild.loss == pytest.approx(ref.loss, rel=1e-3)
    assert not tame.diverged and len(tame.loss) == 16 and all(math.isfinite(v) for v in tame.loss)
    assert len(tame.test_acc) == 2 and all(tame.clipped)


def test_members_are_evaluated_on_the_validation_split_as_fit_is():
    with_val = synthetic(n=256, n_test=64, n_val=64)
    hists = fit_stacked("seed_cnn", with_val, ["none", "norm:0.5"], epochs=2, max_steps=12, **SMALL)
    for spec, h in zip(["none", "norm:0.5"], hists):
        ref = fit("seed_cnn", with_val, epochs=2, max_steps=12, clip=spec, **SMALL)
        assert len(h.val_acc) == len(h.val_loss) == len(ref.val_acc) == 2
        assert _close(h.val_loss, ref.val_loss, 1e-3)
        assert all(abs(a - b) * 64 <= 2 for a, b in zip(h.val_acc, ref.val_acc))


@pytest.mark.parametrize("kwargs, words", [
    ({"model": "seed_cnn", "clips": ["agc:0.01"]}, ["agc:0.01", "none, norm, value"]),
    ({"model": "seed_cnn", "clips": []}, ["clips"]),
    ({"model": "resnet", "clips": ["none"], "model_kw": {"depth": 8}}, ["BatchNorm", "seed_cnn"]),
    ({"model": PlainCNN(depth=4, width=4, batchnorm=True), "clips": ["none"]}, ["BatchNorm", "plain_cnn"]),
    ({"model": "seed_cnn", "clips": ["none"], "optimizer": "lbfgs"}, ["optimizer", "sgd"]),
    ({"model": "seed_cnn", "clips": "norm:1"}, ["clips must be a non-empty list"]),
    ({"model": "seed_cnn", "clips": ["norm:1", "norm:1.0"]}, ["clips lists 'norm:1.0' more than once"]),
    ({"model": "seed_cnn", "clips": ["none"], "augment": "no"}, ["augment must be True or False"]),
    ({"model": "seed_cnn", "clips": ["none"], "momentum": float("nan")}, ["momentum must be a finite number in [0, 1)"]),
])
def test_bad_input_raises(data, kwargs, words):
    kw = {**SMALL, "model_kw": None, **kwargs}
    with pytest.raises(ValueError) as err:
        fit_stacked(data=data, **kw)
    assert all(w in str(err.value) for w in words)


# Each member's clipping against gradkit.clip on the same gradients. "norm:5.0" and "value:4.0" sit
# exactly at the threshold of the "at_c" gradient (norm 5, largest element 4): nothing is cut.
RULE_SPECS = ["none", "norm:1.0", "norm:5.0", "value:0.5", "value:4.0"]
SHAPES = [(4, 3, 3, 3), (4,), (10, 7)]


def _member_grads(case):
    g = torch.Generator().manual_seed(1)
    grads = [torch.randn(s, generator=g) for s in SHAPES]
    if case == "overflow":  # every element finite, the total norm 4.2e38 is not a float32
        grads[0][0, 0, 0, 0], grads[2][0, 0] = 3e38, -3e38
    elif case == "inf":
        grads[1][2] = math.inf
    elif case == "nan":
        grads[2][3, 4] = math.nan
    elif case == "at_c":
        grads = [torch.zeros(s) for s in SHAPES]
        grads[2][0, :2] = torch.tensor([3.0, -4.0])
    return grads


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"))])
@pytest.mark.parametrize("case", ["ordinary", "overflow", "inf", "nan", "at_c"])
def test_stacked_clip_follows_gradkit_clip_per_member(case, device):
    raw = [t.to(device) for t in _member_grads(case)]
    stacks = [t.expand(len(RULE_SPECS), *t.shape).clone() for t in raw]
    before, after, clipped = _StackedClip([clipper(s) for s in RULE_SPECS], torch.device(device))(stacks)
    for n, spec in enumerate(RULE_SPECS):
        ref = [torch.nn.Parameter(torch.zeros_like(t)) for t in raw]
        for p, t in zip(ref, raw):
            p.grad = t.clone()
        res = clipper(spec)(ref)
        where = (case, spec)
        torch.testing.assert_close(before[n], res.norm_before, rtol=1e-6, atol=0, equal_nan=True, msg=lambda m: f"{where} before: {m}")
        torch.testing.assert_close(after[n], res.norm_after, rtol=1e-6, atol=0, equal_nan=True, msg=lambda m: f"{where} after: {m}")
        assert bool(clipped[n]) == bool(res.clipped), where
        for p, t in zip(ref, stacks):
            torch.testing.assert_close(t[n], p.grad, rtol=1e-6, atol=1e-7, equal_nan=True, msg=lambda m: f"{where} gradient: {m}")
    records = dict(zip(RULE_SPECS, zip(before.tolist(), after.tolist(), clipped.tolist())))
    if case == "overflow":  # zeroed, as torch's clip_grad_norm_ does, and reported 0, not inf * 0 = nan
        assert records["norm:1.0"] == (math.inf, 0.0, True) and records["none"] == (math.inf, math.inf, False)
        assert all(float(t[1].abs().max()) == 0.0 for t in stacks)
    if case == "inf":  # inf * 0 leaves nan there: reported nan, clipped
        assert records["norm:1.0"][0] == math.inf and math.isnan(records["norm:1.0"][1]) and records["norm:1.0"][2]
        assert records["none"] == (math.inf, math.inf, False) and records["value:0.5"][2]
    if case == "nan":  # a nan norm gives nan everywhere and counts as not clipped; the others keep one nan
        assert math.isnan(records["norm:1.0"][1]) and not records["norm:1.0"][2]
        assert [int(t[3].isnan().sum()) for t in stacks] == [0, 0, 1] and records["value:0.5"][2]
    if case == "at_c":
        assert records["norm:5.0"] == (5.0, 5.0, False) and records["value:4.0"] == (5.0, 5.0, False)
        assert torch.equal(stacks[2][2], raw[2]) and torch.equal(stacks[2][4], raw[2])
        assert records["norm:1.0"][2] and records["value:0.5"][2]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_stacked_clip_does_not_wait_for_the_gpu():
    clip = _StackedClip([clipper(s) for s in RULE_SPECS], torch.device("cuda"))
    stacks = [t.cuda().expand(len(RULE_SPECS), *t.shape).clone() for t in _member_grads("inf")]
    clip(stacks)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            clip(stacks)
    finally:
        torch.cuda.set_sync_debug_mode("default")
