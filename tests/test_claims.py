"""Lesson 07's measurements against hand computations and torch.nn.utils, and its verdict rules."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradkit import claims
from gradkit.claims import (
    FAILS, HOLDS, INCONCLUSIVE, ONLY_WHEN, Verdict, accuracy, clip_geometry, clipped_gradient, cosine, flat_grad,
    max_abs_weight, smoothness_trace, spearman, step_times, summary_table,
)


def _batches(n_batches=3, batch=16, features=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, features, generator=g) * 3, torch.randint(0, 10, (batch,), generator=g))
            for _ in range(n_batches)]


def _model(seed=0, features=6):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(features, 8), nn.Tanh(), nn.Linear(8, 10))


# --- records and small helpers ----------------------------------------------------------------

def test_verdict_text_and_outcome_check():
    v = Verdict("4", "claim", FAILS, "same 10 parameters")
    assert v.text == "Claim 4 does not hold: same 10 parameters"
    with pytest.raises(ValueError, match="accepted values: holds, does not hold, holds only when"):
        Verdict("1", "claim", "maybe", "")


def test_summary_table_has_a_row_per_verdict_and_escapes_pipes():
    table = summary_table([Verdict("1", "a", HOLDS, "x"), Verdict("2", "b|c", FAILS, "y")])
    lines = table.splitlines()
    assert len(lines) == 4
    assert lines[3] == "| 2 | b\\|c | **does not hold** | y |"


def test_cosine_by_hand():
    assert cosine(torch.tensor([3.0, 4.0]), torch.tensor([4.0, 3.0])) == pytest.approx(24 / 25)
    assert cosine(torch.tensor([1.0, 0.0]), torch.tensor([-2.0, 0.0])) == pytest.approx(-1.0)
    assert math.isnan(cosine(torch.zeros(2), torch.ones(2)))


def test_flat_grad_and_clipped_gradient_match_torch_and_leave_grads_alone():
    model = _model()
    x, y = _batches()[0]
    F.cross_entropy(model(x), y).backward()
    raw = flat_grad(model).clone()
    assert raw.numel() == sum(p.numel() for p in model.parameters())
    c = 0.1 * float(raw.norm())
    got = clipped_gradient(model, f"norm:{c}")
    assert torch.equal(flat_grad(model), raw)
    twin = copy.deepcopy(model)
    for p, q in zip(model.parameters(), twin.parameters()):
        q.grad = p.grad.clone()
    torch.nn.utils.clip_grad_norm_(twin.parameters(), c)
    assert torch.allclose(got, torch.cat([p.grad.flatten() for p in twin.parameters()]))
    assert float(got.norm()) == pytest.approx(c, rel=1e-5)
    with pytest.raises(ValueError, match="no gradients"):
        flat_grad(nn.Linear(2, 2))


def test_spearman_by_hand_ties_and_nan():
    # d = (0, 0, 1, -1): rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman([1, 2, 3, 4], [10, 20, 40, 30]) == pytest.approx(0.8)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # monotone transforms do not change it
    x = np.array([0.3, 2.0, 5.0, 1.0, 7.0])
    assert spearman(x, np.exp(x)) == pytest.approx(1.0)
    # ties get their average rank: ranks of y = (0.5, 0.5, 2) against x ranks (0, 1, 2)
    rx, ry = np.array([0, 1, 2.0]), np.array([0.5, 0.5, 2.0])
    expected = np.corrcoef(rx, ry)[0, 1]
    assert spearman([1, 2, 3], [5, 5, 9]) == pytest.approx(expected)
    assert spearman([1, 2, 3, float("nan")], [1, 2, 3, 4]) == pytest.approx(1.0)
    assert math.isnan(spearman([1, 2], [1, 2]))
    with pytest.raises(ValueError, match="same length"):
        spearman([1, 2, 3], [1, 2])


def test_max_abs_weight():
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.5, -4.0]]))
        model.bias.fill_(1.0)
    assert max_abs_weight(model) == 4.0


def test_accuracy_by_hand():
    class Constant(nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = nn.Parameter(torch.zeros(10))

        def forward(self, x):
            return self.bias.expand(x.shape[0], 10) + torch.nn.functional.one_hot(torch.tensor(3), 10)

    x = torch.zeros(8, 3, 32, 32, dtype=torch.uint8)
    y = torch.tensor([3, 3, 3, 0, 1, 2, 3, 9])
    assert accuracy(Constant(), x, y, mean=(0.5,) * 3, std=(0.5,) * 3, batch_size=3) == pytest.approx(4 / 8)


# --- measurements on real steps ---------------------------------------------------------------

def test_clip_geometry_norm_keeps_direction_value_turns_it_and_training_matches_manual_sgd():
    batches = _batches()
    model, twin = _model(), _model()
    geo = clip_geometry(model, batches, ["norm:0.05", "value:0.01", "scaled_value:0.05"], steps=3, lr=0.1,
                        train_clip="norm:0.5")
    assert geo.specs == ["norm:0.05", "value:0.01", "scaled_value:0.05"]
    assert geo.norm.shape == geo.cos_raw.shape == geo.changed.shape == (3, 3)
    assert np.allclose(geo.cos_raw[:, 0], 1.0, atol=1e-6)
    assert np.allclose(geo.norm[:, 0], 0.05, rtol=1e-4)
    assert geo.changed[:, 1].all() and (geo.cos_raw[:, 1] < 0.999).all()
    assert (geo.norm[:, 2] <= 0.05 + 1e-6).all()
    assert geo.cos_pairs[("norm:0.05", "value:0.01")].shape == (3,)
    # the same three steps by hand: w <- w - lr * clip_norm(g, 0.5)
    for x, y in batches:
        twin.zero_grad()
        F.cross_entropy(twin(x), y).backward()
        torch.nn.utils.clip_grad_norm_(twin.parameters(), 0.5)
        with torch.no_grad():
            for p in twin.parameters():
                p.sub_(0.1 * p.grad)
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    assert geo.raw_norm[0] == pytest.approx(float(_first_grad_norm(_model(), batches[0])), rel=1e-6)


def _first_grad_norm(model, batch):
    x, y = batch
    F.cross_entropy(model(x), y).backward()
    return flat_grad(model).norm()


def test_smoothness_trace_matches_a_hand_computation_of_the_first_step():
    batches = _batches()
    model, twin = _model(), _model()
    tr = smoothness_trace(model, batches, steps=3, lr=0.2, clip="norm:0.3")
    assert tr.loss.shape == tr.grad_norm.shape == tr.smoothness.shape == (3,) and not tr.diverged
    x, y = batches[0]
    F.cross_entropy(twin(x), y).backward()
    g0 = flat_grad(twin).clone()
    torch.nn.utils.clip_grad_norm_(twin.parameters(), 0.3)
    with torch.no_grad():
        step = torch.cat([(0.2 * p.grad).flatten() for p in twin.parameters()])
        for p in twin.parameters():
            p.sub_(0.2 * p.grad)
    twin.zero_grad()
    F.cross_entropy(twin(x), y).backward()
    expected = float((flat_grad(twin) - g0).norm() / step.norm())
    assert float(step.norm()) == pytest.approx(0.2 * 0.3, rel=1e-4)
    assert tr.grad_norm[0] == pytest.approx(float(g0.norm()), rel=1e-6)
    assert tr.smoothness[0] == pytest.approx(expected, rel=1e-5)


def test_smoothness_trace_stops_at_divergence_and_validates():
    model = _model()
    with torch.no_grad():
        model[2].bias.fill_(float("nan"))
    tr = smoothness_trace(model, _batches(), steps=5, lr=0.1)
    assert tr.diverged and tr.loss.size == 0
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        smoothness_trace(model, _batches(), steps=0, lr=0.1)
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        smoothness_trace(model, _batches(), steps=1, lr=0)
    with pytest.raises(ValueError, match="batches is empty"):
        smoothness_trace(_model(), [], steps=1, lr=0.1)


def test_step_times_returns_one_median_per_canonical_spec_and_trains():
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    x, y = _batches()[0]
    times = step_times(model, x, y, ["none", "norm:1"], repeats=2, warmup=1)
    assert list(times) == ["none", "norm:1.0"]
    assert all(t > 0 for t in times.values())
    assert any(not torch.equal(p, b) for p, b in zip(model.parameters(), before))
    with pytest.raises(ValueError, match="repeats must be an int >= 1"):
        step_times(model, x, y, ["none"], repeats=0)


# --- verdict rules ----------------------------------------------------------------------------

def test_verdict_vanishing():
    v = claims.verdict_vanishing([1e-8, 1e-4, 1.0], [1e-9, 1e-5, 0.1])
    assert v.outcome == FAILS and "1e+08x smaller" in v.reason and "0.1 to 0.1" in v.reason
    assert claims.verdict_vanishing([0.5, 1.0], [0.5, 1.0]).outcome == INCONCLUSIVE
    assert claims.verdict_vanishing([1e-4, 1.0], [1e-3, 1.0]).outcome == HOLDS
    with pytest.raises(ValueError, match="same number"):
        claims.verdict_vanishing([1.0], [1.0])


def test_verdict_augmentation_pairs_seeds_and_reports_the_spread():
    train = {"none": [0.95, 0.93, 0.94], "clip": [0.94, 0.93, 0.93], "augment": [0.80, 0.79, 0.81]}
    val = {"none": [0.50, 0.49, 0.51], "clip": [0.50, 0.50, 0.50], "augment": [0.55, 0.54, 0.56]}
    # gap none: .45 .44 .43; clip: .44 .43 .43 -> d = (.01, .01, 0), mean 0.67 points < tol 2: does not hold
    v = claims.verdict_augmentation(train, val)
    assert v.outcome == FAILS and "by -0.7 points (noise bound ±2.0" in v.reason and "over 3 paired seeds" in v.reason
    assert "gap 44.0 ± 1.0" in v.reason
    # augmentation: train 80.0% vs 94.0% (-14.0 points), validation +5.0: the gap change -19.0 is mostly fitting less
    assert ("augmentation fit the training set less: clean training accuracy 80.0% vs 94.0% without it (-14.0 points), "
            "validation +5.0, so 14.0 of its -19.0-point gap change is fitting less: the augmented runs underfit at "
            "this length, so their smaller gap") in v.reason
    # augmentation that keeps the training accuracy (within the noise) is not called underfitting
    kept = claims.verdict_augmentation({**train, "augment": [0.94, 0.93, 0.93]}, val)
    assert "fit the training set less" not in kept.reason and "underfit" not in kept.reason
    # a small loss of training accuracy with a larger validation gain is fitting less, but not underfitting
    gain = claims.verdict_augmentation({**train, "augment": [0.90, 0.89, 0.91]}, {**val, "augment": [0.60, 0.59, 0.61]})
    assert "so 4.0 of its -14.0-point gap change is fitting less" in gain.reason and "underfit" not in gain.reason
    # clipping shrinks the gap by 15 points on every seed: beyond the noise
    shrunk = claims.verdict_augmentation({**train, "clip": [0.80, 0.78, 0.79]}, val)
    assert shrunk.outcome == ONLY_WHEN and "narrows the train-validation gap" in shrunk.reason
    assert "by fitting the training set less (train accuracy -15.0 and validation +0.0 points" in shrunk.reason
    # the gap narrows because validation rises while training accuracy does not fall (lesson 07's cpu run):
    # the reason must not say that the clipped runs fit the training set less
    lifted = claims.verdict_augmentation({**train, "clip": [0.96, 0.95, 0.95]},
                                         {**val, "clip": [0.58, 0.57, 0.59]})
    assert lifted.outcome == ONLY_WHEN and "fitting the training set less" not in lifted.reason.replace(
        "not by fitting the training set less", "")
    assert "through higher validation accuracy, not by fitting the training set less (train accuracy +1.3" in lifted.reason
    # a mean shrink of 15 points with a wild spread is noise: d = (0.40, -0.19, 0.24), 2 se = 2 * 0.305 / sqrt(3)
    noisy = claims.verdict_augmentation({**train, "clip": [0.55, 1.13, 0.69]}, val)
    assert noisy.outcome == FAILS and "±35.2" in noisy.reason
    # means print alike in both parts of the reason (lesson 07's cpu run had 95.2 in one and 95.1 in the other)
    odd = claims.verdict_augmentation({**train, "none": [0.977, 0.906, 0.9715]}, val)
    assert "train 95.2 ± 3.9%" in odd.reason and "vs 95.2% without it" in odd.reason
    # an augmented run below the plain run on validation is called underfitting
    under = claims.verdict_augmentation(train, {**val, "augment": [0.30, 0.31, 0.29]})
    assert ("the augmented runs underfit at this length, and they are below the unaugmented runs on validation too "
            "(30.0% < 50.0%)") in under.reason
    assert claims.verdict_augmentation({k: v[:1] for k, v in train.items()},
                                       {k: v[:1] for k, v in val.items()}).outcome == INCONCLUSIVE
    flat = {"none": [0.2, 0.2], "clip": [0.2, 0.2], "augment": [0.2, 0.2]}
    assert claims.verdict_augmentation(flat, {k: [0.19, 0.19] for k in flat}).outcome == INCONCLUSIVE
    with pytest.raises(ValueError, match="need the keys"):
        claims.verdict_augmentation({"none": [1.0]}, {"none": [1.0]})
    with pytest.raises(ValueError, match="one value per seed"):
        claims.verdict_augmentation({**train, "clip": [0.9]}, val)


def test_verdict_dead_units():
    v = claims.verdict_dead_units({"dead": 0.92, "acc": 0.1}, {"dead": 0.05, "acc": 0.3})
    assert v.outcome == ONLY_WHEN and "92.0% of the ReLU units dead without clipping" in v.reason
    assert claims.verdict_dead_units({"dead": 0.92, "acc": 0.1}, {"dead": 0.85, "acc": 0.1}).outcome == FAILS
    assert claims.verdict_dead_units({"dead": 0.2, "acc": 0.3}, {"dead": 0.0, "acc": 0.3}).outcome == INCONCLUSIVE
    with pytest.raises(ValueError, match="'dead' and 'acc'"):
        claims.verdict_dead_units({"dead": 0.9}, {"dead": 0.1, "acc": 0.3})
    # the largest steps, when given, are part of the evidence
    stepped = claims.verdict_dead_units({"dead": 0.84, "acc": 0.1, "step": 3.48}, {"dead": 0.0, "acc": 0.24, "step": 0.179})
    assert stepped.outcome == ONLY_WHEN and "largest step ||dw|| 3.48 without clipping, 0.179 with" in stepped.reason
    with pytest.raises(ValueError, match="optionally 'step'"):
        claims.verdict_dead_units({"dead": 0.9, "acc": 0.1, "steps": 1.0}, {"dead": 0.1, "acc": 0.3})


def test_update_direction_matches_hand_computed_sgd_momentum_and_adam_updates():
    batches = _batches()
    model = _model()
    c = 0.05
    opts = {"SGD": ("sgd", 0.1, 0.0), "momentum": ("sgd", 0.1, 0.9), "Adam": ("adam", 0.01, 0.0)}
    d = claims.update_direction(model, batches, [f"norm:{c}", "value:0.01", "tensor_norm:0.05"], steps=3,
                                optimizers=opts)
    assert d.cos.shape == d.changed.shape == (3, 3, 3) and d.changed.all()
    assert np.allclose(d.cos[0, 0], 1.0, atol=1e-12)   # plain SGD + global norm: same direction
    assert (d.cos[0, 1] < 0.999).all() and (d.cos[0, 2] < 1 - 1e-6).all()  # value, per-tensor: turn SGD too
    # momentum by hand, float64: the clipped run's buffer b_t = 0.9 b_{t-1} + s_t g_t; at step 2 the
    # raw update is b_1 * 0.9 + g_2 and the clipped one 0.9 b_1 + s_2 g_2
    net = copy.deepcopy(model).double()
    buf, expected = None, []
    for x, y in batches:
        net.zero_grad()
        F.cross_entropy(net(x.double()), y).backward()
        g = torch.cat([p.grad.reshape(-1) for p in net.parameters()])
        s = min(1.0, c / float(g.norm()))
        raw = g if buf is None else 0.9 * buf + g
        buf = s * g if buf is None else 0.9 * buf + s * g
        expected.append(claims.cosine(buf, raw))
        with torch.no_grad():
            offset = 0
            for p in net.parameters():
                n = p.numel()
                p.sub_(0.1 * buf[offset:offset + n].reshape(p.shape))
                offset += n
    assert np.allclose(d.cos[1, 0], expected, atol=1e-9)
    assert d.cos[1, 0, 0] == pytest.approx(1.0) and (d.cos[1, 0, 1:] < 1 - 1e-6).all()
    assert (d.cos[2, 0, 1:] < 1 - 1e-6).all()  # Adam turns after its first step
    assert d.median_angle().shape == (3, 3)
    v = claims.verdict_direction(d)
    assert v.outcome == ONLY_WHEN and "global norm (norm:0.05) with SGD" in v.reason.split(";")[0]
    with pytest.raises(ValueError, match="accepted values: sgd, adam"):
        claims.update_direction(model, batches, ["norm:1"], steps=1, optimizers={"x": ("lbfgs", 0.1, 0.0)})
    with pytest.raises(ValueError, match="steps must be"):
        claims.update_direction(model, batches, ["norm:1"], steps=0)


def test_verdict_threshold_one():
    v = claims.verdict_threshold_one([0.5, 2.0, 3.0, 0.8] * 5)
    assert v.outcome == FAILS and "clipped 50.0% of the steps" in v.reason
    assert claims.verdict_threshold_one([0.5] * 20).outcome == ONLY_WHEN
    assert claims.verdict_threshold_one([5.0] * 3).outcome == INCONCLUSIVE


def test_verdict_cost():
    v = claims.verdict_cost({"none": 1000, "clip": 1000}, {"none": 0.010, "clip": 0.0103})
    assert v.outcome == FAILS and "(+3.0%, within the 5% timing noise" in v.reason and "1,000 parameters" in v.reason
    slow = claims.verdict_cost({"none": 1000, "clip": 1000}, {"none": 0.010, "clip": 0.012})
    assert slow.outcome == FAILS and "(+20.0%: the cost of computing the norm" in slow.reason
    assert claims.verdict_cost({"none": 10, "clip": 10}, {"none": 1.0, "clip": 0.8}).outcome == INCONCLUSIVE
    assert claims.verdict_cost({"none": 10, "clip": 5}, {"none": 1.0, "clip": 1.0}).outcome == HOLDS
    with pytest.raises(ValueError, match="exactly the keys"):
        claims.verdict_cost({"none": 1}, {"none": 1.0})


def test_verdict_scaled_value():
    assert claims.verdict_scaled_value([1.0, 1.0], [1.0, 1.0]).outcome == HOLDS
    v = claims.verdict_scaled_value([0.5, 0.7, 0.9], [0.01, 0.02, 0.03])
    assert v.outcome == ONLY_WHEN and "median 0.700" in v.reason and "0.02x" in v.reason
    assert claims.verdict_scaled_value([], []).outcome == INCONCLUSIVE


def test_verdict_more_iterations():
    # n_eval = 10000: tol = 2 * sqrt(0.25 / 10000) = 1 point
    curves = {"a": [0.30, 0.40, 0.35, 0.36], "b": [0.2, 0.3, 0.4, 0.45]}
    v = claims.verdict_more_iterations(curves, 100, 10000)
    assert v.outcome == FAILS and "1 of 2 runs" in v.reason and "more than 1.0 points" in v.reason
    # the final value (36%) against the best before it (40%), not the deepest dip (35% at checkpoint 3)
    assert "a ended at 36.0% (checkpoint 4), down from 40.0% at checkpoint 2" in v.reason
    assert "the final checkpoint against the best earlier one" in v.reason
    # lesson 06's stored counterexample: best 23.7% -> final 19.3% on 1000 images (tol 3.2 points)
    lesson06 = claims.verdict_more_iterations({"SeedCNN c=1": [0.20, 0.237, 0.21, 0.193]}, 100, 1000)
    assert lesson06.outcome == FAILS and "ended at 19.3% (checkpoint 4), down from 23.7% at checkpoint 2" in lesson06.reason
    # a run that dips and then ends at its best has not ended below it (the old rule said it had)
    recovered = claims.verdict_more_iterations({"r": [0.20, 0.30, 0.25, 0.31, 0.32]}, 100, 1000)
    assert recovered.outcome == ONLY_WHEN and "ended at" not in recovered.reason
    assert ("1 dipped more than 3.2 points below an earlier best on the way and ended within 3.2 points of their best "
            "(r): accuracy did not rise at every checkpoint") in recovered.reason
    # a final value within tol of the best is noise, not a fall: 40% -> 37.5% with tol 3.2
    assert claims.verdict_more_iterations({"n": [0.30, 0.40, 0.39, 0.375]}, 100, 1000).outcome == ONLY_WHEN
    # a slow decline, each step within tol, still counts against the running best
    slow = claims.verdict_more_iterations({"a": [0.40, 0.392, 0.384, 0.376, 0.368]}, 100, 10000)
    assert slow.outcome == FAILS
    diverged = claims.verdict_more_iterations({"a": [0.3, 0.4, 0.41, float("nan")]}, 100, 10000)
    assert diverged.outcome == FAILS and "a diverged after checkpoint 3" in diverged.reason
    assert claims.verdict_more_iterations({"a": [0.3, 0.295, 0.4, 0.41]}, 100, 10000).outcome == ONLY_WHEN
    # never-learned runs are named, not silently dropped
    mixed = claims.verdict_more_iterations({"a": [0.3, 0.35, 0.4, 0.41], "dead": [0.1] * 4}, 100, 10000)
    assert mixed.outcome == ONLY_WHEN and "and the run learns at all" in mixed.reason
    assert "1 never left chance (dead)" in mixed.reason
    # the same 5-point drop on 200 images (tol = 7.1 points) is noise
    assert claims.verdict_more_iterations({"a": [0.30, 0.40, 0.35, 0.4]}, 100, 200).outcome == ONLY_WHEN
    none = claims.verdict_more_iterations({"a": [0.1, 0.12, 0.1, 0.1], "b": [0.09, 0.13, 0.1, 0.1]}, 100, 10000)
    assert none.outcome == INCONCLUSIVE and "2 never left chance" in none.reason
    short = claims.verdict_more_iterations({"a": [0.30, 0.40, 0.2, 0.1]}, 5, 10000)
    assert short.outcome == INCONCLUSIVE and "4 checkpoints 5 steps apart" in short.reason
    few = claims.verdict_more_iterations({"a": [0.30, 0.40, 0.2]}, 100, 10000)
    assert few.outcome == INCONCLUSIVE and ">= 4 checkpoints" in few.reason


def test_verdict_threshold_speed():
    assert claims.verdict_threshold_speed({"m": {0.1: 2.0, 1.0: 1.5, 10.0: 1.2}}).outcome == FAILS
    assert claims.verdict_threshold_speed({"m": {0.1: 1.2, 1.0: 1.5}}).outcome == HOLDS
    mixed = claims.verdict_threshold_speed({"m": {0.1: 2.0, 1.0: 1.5, 10.0: math.inf}})
    assert mixed.outcome == ONLY_WHEN and "m c=1->10 (diverged)" in mixed.reason
    assert "1 of 2" in mixed.reason
    assert claims.verdict_threshold_speed({"m": {0.1: 2.3, 1.0: 2.29}}).outcome == INCONCLUSIVE


def test_verdict_faster():
    runs = {(0.01, False): 1.50, (0.01, True): 1.49, (1.0, False): math.inf, (1.0, True): 1.8}
    v = claims.verdict_faster(runs, steps=100, rho=0.62, n_rho=90)
    assert v.outcome == ONLY_WHEN and "faster at lr=1" in v.reason and "diverged without" in v.reason
    assert "rho = 0.62 over 90 steps" in v.reason and "correlation shows" in v.reason
    assert claims.verdict_faster(runs, steps=10).outcome == INCONCLUSIVE
    both = {(0.01, False): 2.0, (0.01, True): 1.0, (1.0, False): 2.0, (1.0, True): 1.0}
    assert claims.verdict_faster(both, steps=100).outcome == HOLDS
    none = {(0.01, False): 1.0, (0.01, True): 1.0, (1.0, False): 1.0, (1.0, True): 1.2}
    v = claims.verdict_faster(none, steps=100, rho=0.1, n_rho=50)
    assert v.outcome == FAILS and "does not show" in v.reason
    with pytest.raises(ValueError, match="for every lr"):
        claims.verdict_faster({(0.1, True): 1.0}, steps=100)


def test_verdict_weight_vs_grad():
    setup = {"epochs": 3, "augment": False, "seed": 0}
    grad_run = {"max_grad_norm": 5.0, "max_update_grad": 1.0, "max_abs_weight": 0.4, "max_step": 0.3, "setup": setup}
    weight_run = {"max_grad_norm": 5.0, "max_update_grad": 5.0, "max_abs_weight": 0.05, "max_step": 0.2, "setup": setup}
    v = claims.verdict_weight_vs_grad(grad_run, weight_run, 1.0, 0.05)
    assert v.outcome == FAILS and "largest step was ||dw|| = 0.3" in v.reason and "augment=False" in v.reason
    quiet = {**grad_run, "max_grad_norm": 0.5, "max_update_grad": 0.5, "max_abs_weight": 0.01}
    assert claims.verdict_weight_vs_grad(quiet, quiet, 1.0, 0.05).outcome == INCONCLUSIVE
    # the stored lesson compared 6 epochs without augmentation against 3 with: no conclusion
    other = {**weight_run, "setup": {"epochs": 6, "augment": True, "seed": 0}}
    unfair = claims.verdict_weight_vs_grad(grad_run, other, 1.0, 0.05)
    assert unfair.outcome == INCONCLUSIVE and "differ in augment (False vs True), epochs (3 vs 6)" in unfair.reason
    with pytest.raises(ValueError, match="need the keys"):
        claims.verdict_weight_vs_grad({"max_grad_norm": 1.0}, weight_run, 1.0, 0.05)


def test_verdict_direction():
    on = np.ones((2, 2, 2), bool)
    cos = np.array([[[1.0, 1.0], [0.9, 0.95]], [[0.99, 1.0], [0.8, 0.7]]])
    d = claims.Direction(["SGD", "Adam"], ["norm:1.0", "value:0.1"], cos, on)
    v = claims.verdict_direction(d)
    assert v.outcome == ONLY_WHEN and v.reason.startswith("the clipping and optimiser are not global norm (norm:1.0) with SGD")
    assert "value (value:0.1) with SGD: 22 deg" in v.reason  # median(arccos .9, arccos .95) = (25.84 + 18.19) / 2
    assert claims.verdict_direction(claims.Direction(["SGD"], ["value:0.1"], cos[:1, 1:], on[:1, 1:])).outcome == HOLDS
    assert claims.verdict_direction(claims.Direction(["SGD"], ["norm:1.0"], cos[:1, :1], on[:1, :1])).outcome == FAILS
    idle = claims.verdict_direction(claims.Direction(["SGD"], ["norm:1.0"], cos[:1, :1], ~on[:1, :1]))
    assert idle.outcome == INCONCLUSIVE and "never clipped" in idle.reason


def test_smoothness_final_loss_is_the_last_quarter_mean_or_inf():
    tr = claims.Smoothness(np.array([4.0, 3.0, 2.0, 1.0, 1.0, 3.0, 2.0, 2.0]), np.ones(8), np.ones(8), False)
    assert tr.final_loss == pytest.approx(2.0)
    assert claims.Smoothness(np.array([2.0]), np.ones(1), np.ones(1), True).final_loss == math.inf


def test_claim_figures_plot_the_numbers_they_are_given():
    import matplotlib.pyplot as plt

    from gradkit import plots

    fig, axes = plt.subplots(1, 3)
    plots.update_angle_bars(axes[0], ["SGD", "Adam"], ["norm:1.0", "value:0.1"], np.array([[0.0, 30.0], [5.0, np.nan]]))
    assert [round(p.get_height(), 6) for p in axes[0].patches] == [0.0, 30.0, 5.0, 0.0]
    assert "not clipped" in [t.get_text() for t in axes[0].texts]
    plots.smoothness_scatter(axes[1], [1.0, 2.0, float("nan"), 4.0], [0.5, 1.0, 1.0, 0.0], rho=0.5)
    assert axes[1].collections[0].get_offsets().shape == (2, 2)
    assert "rho = 0.50" in axes[1].get_legend().get_texts()[0].get_text()
    plots.train_test_bars(axes[2], {"a": [0.9, 0.8], "b": [0.6, 0.6]}, {"a": [0.5, 0.4], "b": [0.55, 0.55]})
    assert [t.get_text() for t in axes[2].texts] == ["gap 40.0", "gap 5.0"]
    assert [round(p.get_height(), 6) for p in axes[2].patches] == [85.0, 60.0, 45.0, 55.0]
    plt.close(fig)
