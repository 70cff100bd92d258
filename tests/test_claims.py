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


def test_verdict_augmentation():
    train = {"none": 0.95, "clip": 0.94, "augment": 0.80}
    test = {"none": 0.50, "clip": 0.50, "augment": 0.55}
    v = claims.verdict_augmentation(train, test)
    assert v.outcome == FAILS and "by -1.0 points, augmentation by -20.0" in v.reason
    assert claims.verdict_augmentation({**train, "clip": 0.80}, test).outcome == ONLY_WHEN
    flat = {"none": 0.2, "clip": 0.2, "augment": 0.2}
    assert claims.verdict_augmentation(flat, {"none": 0.19, "clip": 0.19, "augment": 0.2}).outcome == INCONCLUSIVE
    with pytest.raises(ValueError, match="need the keys"):
        claims.verdict_augmentation({"none": 1.0}, {"none": 1.0})


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
    # n_test = 10000: tol = 2 * sqrt(0.25 / 10000) = 1 point
    v = claims.verdict_more_iterations({"a": [0.30, 0.40, 0.35], "b": [0.2, 0.3, 0.4]}, 100, 10000)
    assert v.outcome == FAILS and "1 of 4" in v.reason and "more than 1.0 points" in v.reason
    assert "a fell by 5.0 points between checkpoints 2 and 3" in v.reason
    assert claims.verdict_more_iterations({"a": [0.3, 0.4, float("nan")]}, 100, 10000).outcome == FAILS
    assert claims.verdict_more_iterations({"a": [0.3, 0.295, 0.4]}, 100, 10000).outcome == ONLY_WHEN
    # the same 5-point drop on 200 test images (tol = 7.1 points) is noise
    assert claims.verdict_more_iterations({"a": [0.30, 0.40, 0.35]}, 100, 200).outcome == ONLY_WHEN
    assert claims.verdict_more_iterations({"a": [0.1, 0.12], "b": [0.09, 0.13]}, 100, 10000).outcome == INCONCLUSIVE
    short = claims.verdict_more_iterations({"a": [0.30, 0.40, 0.2]}, 5, 10000)
    assert short.outcome == INCONCLUSIVE and "5 steps between checkpoints" in short.reason


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
    grad_run = {"max_grad_norm": 5.0, "max_update_grad": 1.0, "max_abs_weight": 0.4}
    weight_run = {"max_grad_norm": 5.0, "max_update_grad": 5.0, "max_abs_weight": 0.05}
    assert claims.verdict_weight_vs_grad(grad_run, weight_run, 1.0, 0.05).outcome == FAILS
    quiet = {"max_grad_norm": 0.5, "max_update_grad": 0.5, "max_abs_weight": 0.01}
    assert claims.verdict_weight_vs_grad(quiet, quiet, 1.0, 0.05).outcome == INCONCLUSIVE


def test_verdict_direction():
    v = claims.verdict_direction([1.0, 1.0], [0.9, 0.95], [True, True])
    assert v.outcome == ONLY_WHEN and "median cos 0.9250" in v.reason
    assert claims.verdict_direction([0.9], [0.9], [True]).outcome == HOLDS
    assert claims.verdict_direction([1.0], [1.0], [True]).outcome == FAILS
    assert claims.verdict_direction([1.0], [1.0], [False]).outcome == INCONCLUSIVE


def test_smoothness_final_loss_is_the_last_quarter_mean_or_inf():
    tr = claims.Smoothness(np.array([4.0, 3.0, 2.0, 1.0, 1.0, 3.0, 2.0, 2.0]), np.ones(8), np.ones(8), False)
    assert tr.final_loss == pytest.approx(2.0)
    assert claims.Smoothness(np.array([2.0]), np.ones(1), np.ones(1), True).final_loss == math.inf


def test_claim_figures_plot_the_numbers_they_are_given():
    import matplotlib.pyplot as plt

    from gradkit import plots

    fig, axes = plt.subplots(1, 3)
    plots.clip_angle_traces(axes[0], ["norm:1.0", "value:0.1"], np.array([[1.0, 0.5], [1.0, 0.0]]))
    assert np.allclose(axes[0].lines[0].get_ydata(), [0.0, 0.0])
    assert np.allclose(axes[0].lines[1].get_ydata(), [60.0, 90.0])
    plots.smoothness_scatter(axes[1], [1.0, 2.0, float("nan"), 4.0], [0.5, 1.0, 1.0, 0.0], rho=0.5)
    assert axes[1].collections[0].get_offsets().shape == (2, 2)
    assert "rho = 0.50" in axes[1].get_legend().get_texts()[0].get_text()
    plots.train_test_bars(axes[2], {"a": 0.9, "b": 0.6}, {"a": 0.5, "b": 0.55})
    assert [t.get_text() for t in axes[2].texts] == ["gap 40.0", "gap 5.0"]
    plt.close(fig)
