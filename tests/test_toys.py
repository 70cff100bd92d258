"""The toy computations of lessons 01 and 02, checked against closed forms, torch.nn.utils and hand computations."""

import math

import numpy as np
import pytest
import torch

from gradkit import toys


# ---------------------------------------------------------------------------------------------- products


def test_product_norms_start_at_one_and_scale_like_s_to_the_l():
    base = toys.product_norms(depth=12, scale=1.0, width=16, trials=4, seed=3)
    twice = toys.product_norms(depth=12, scale=2.0, width=16, trials=4, seed=3)
    assert base.shape == (4, 13)
    np.testing.assert_allclose(base[:, 0], 1.0)
    # Same draws, every matrix scaled by 2: the product's norm is scaled by exactly 2^l.
    np.testing.assert_allclose(twice, base * 2.0 ** np.arange(13), rtol=1e-12)


def test_product_norms_keep_the_mean_square_at_the_boundary():
    # E ||W x||^2 = ||x||^2 when W_ij ~ N(0, 1/n); over 10 layers E[||x_10||^4] = (1 + 2/n)^10 = 3.25,
    # so the mean of 4000 squares has a standard error of sqrt(2.25 / 4000) = 0.024.
    n = toys.product_norms(depth=10, scale=1.0, width=16, trials=4000, seed=0)
    assert abs(float((n[:, -1] ** 2).mean()) - 1.0) < 0.1


def test_log_norm_drift_matches_the_chi_square_formula_and_a_monte_carlo_mean():
    width = 8
    # digamma(4) = 1 + 1/2 + 1/3 - euler_gamma
    digamma4 = 1 + 1 / 2 + 1 / 3 - 0.5772156649015329
    expected = math.log(1.5) + 0.5 * (digamma4 + math.log(2 / width))
    assert toys.log_norm_drift(1.5, width) == pytest.approx(expected, rel=1e-12)
    one_layer = toys.product_norms(depth=1, scale=1.5, width=width, trials=20000, seed=1)[:, 1]
    # sd of log ||Wx|| is sqrt(trigamma(4)) / 2 = 0.27: the mean of 20000 has sd 0.002.
    assert float(np.log(one_layer).mean()) == pytest.approx(expected, abs=0.01)
    assert toys.log_norm_drift(1.0, 256) == pytest.approx(-1 / (2 * 256), rel=0.01)


def test_typical_norm_grows_like_exp_of_depth_times_drift():
    n = toys.product_norms(depth=60, scale=1.2, width=32, trials=64, seed=0)
    slope = np.polyfit(np.arange(61), np.log(n).mean(axis=0), 1)[0]
    assert slope == pytest.approx(toys.log_norm_drift(1.2, 32), abs=0.01)
    assert slope == pytest.approx(math.log(1.2), abs=0.03)


# ---------------------------------------------------------------------------------------------- deep MLP


def test_init_std_formulas():
    assert toys.init_std("normal", 64, 32, std=0.3) == 0.3
    assert toys.init_std("xavier", 64, 32) == pytest.approx(math.sqrt(2 / 96))
    assert toys.init_std("kaiming", 64, 32) == pytest.approx(torch.nn.init.calculate_gain("relu") / math.sqrt(64))


def test_saturated_share_by_hand():
    a = torch.tensor([[0.995, 0.5, 0.2], [0.004, 0.989, 0.5]])
    assert toys.saturated_share(a, "sigmoid") == pytest.approx(2 / 6)
    t = torch.tensor([[0.99, -0.985, 0.0, 0.97]])
    assert toys.saturated_share(t, "tanh") == pytest.approx(2 / 4)
    r = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 2.0]])
    assert toys.saturated_share(r, "relu") == pytest.approx(1 / 3)  # only unit 0 is 0 on every example


def _profile(**kw):
    return toys.mlp_profile(**{"depth": 20, "width": 64, "batch": 128, **kw})


def test_sigmoid_with_small_init_vanishes_toward_the_input():
    p = _profile(activation="sigmoid", init="normal", std=0.01)
    assert p.first_last_ratio < 1e-20
    assert np.all(np.diff(np.log(p.grad_norm[:-1])) > 0)  # every layer closer to the input gets less


def test_large_init_explodes_toward_the_input():
    p = _profile(activation="tanh", init="normal", std=0.3)  # std * sqrt(64) = 2.4: the chaotic side
    assert p.first_last_ratio > 20
    assert np.all(np.diff(np.log(p.grad_norm[:-1])) < 0)  # every layer closer to the input gets more
    relu = _profile(activation="relu", init="normal", std=0.3)
    healthy = _profile(activation="relu", init="kaiming")
    # ReLU: each layer multiplies the signal by 0.3 * sqrt(64 / 2) = 1.7, 1.7^19 = 2.4e4, and every
    # layer's gradient blows up together rather than toward the input.
    assert relu.norm_before > 1e4 * healthy.norm_before


@pytest.mark.parametrize("activation, init", [("tanh", "xavier"), ("relu", "kaiming")])
def test_xavier_and_kaiming_keep_gradients_in_a_band(activation, init):
    p = _profile(activation=activation, init=init)
    assert 0.1 < p.first_last_ratio < 10
    hidden = p.grad_norm[:-1]
    assert hidden.max() / hidden.min() < 20


def test_batchnorm_and_residual_remove_the_vanishing():
    base = _profile(activation="tanh", init="normal", std=0.02)
    assert base.first_last_ratio < 1e-8
    assert 0.1 < _profile(activation="tanh", init="normal", std=0.02, norm="batch").first_last_ratio < 100
    assert 0.1 < _profile(activation="tanh", init="normal", std=0.02, residual=True).first_last_ratio < 10


def test_profile_norms_add_up_and_clipping_scales_every_layer_alike():
    p = _profile(activation="sigmoid", init="normal", std=0.05)
    assert float(np.sqrt((p.grad_norm ** 2).sum())) == pytest.approx(p.norm_before, rel=1e-9)
    c = _profile(activation="sigmoid", init="normal", std=0.05, clip="norm:0.01")
    factor = 0.01 / (p.norm_before + 1e-6)  # torch.nn.utils.clip_grad_norm_'s coefficient
    np.testing.assert_allclose(c.grad_norm, p.grad_norm * factor, rtol=1e-9)
    assert c.norm_after == pytest.approx(0.01, rel=1e-4)
    assert c.first_last_ratio == pytest.approx(p.first_last_ratio, rel=1e-9)


def test_profile_shapes_and_determinism():
    a = toys.mlp_profile(depth=5, width=16, batch=32, seed=7)
    b = toys.mlp_profile(depth=5, width=16, batch=32, seed=7)
    assert a.grad_norm.shape == (6,) and a.saturated.shape == (5,) and a.activations.shape[0] == 5
    np.testing.assert_array_equal(a.grad_norm, b.grad_norm)


# ---------------------------------------------------------------------------------------------- recurrence


@pytest.mark.parametrize("matrix", toys.MATRICES)
def test_recurrence_matrix_has_the_requested_spectral_radius(matrix):
    w = toys.recurrence_matrix(1.3, width=16, matrix=matrix, seed=2)
    assert float(torch.linalg.eigvals(w).abs().max()) == pytest.approx(1.3, rel=1e-9)


@pytest.mark.parametrize("rho", [0.8, 1.0, 1.15])
def test_orthogonal_recurrence_gradient_is_exactly_rho_to_the_k(rho):
    g = toys.recurrence_grad_norms(rho, steps=60, width=16, matrix="orthogonal")
    np.testing.assert_allclose(g, rho ** np.arange(61), rtol=1e-10)


def test_recurrence_gradient_equals_a_matrix_power():
    w = toys.recurrence_matrix(1.05, width=8, matrix="gaussian", seed=4)
    g = toys.recurrence_grad_norms(1.05, steps=30, width=8, matrix="gaussian", seed=4)
    gen = torch.Generator().manual_seed(4 + 1)  # recurrence_grad_norms draws h0, then v, from seed + 1
    torch.randn(8, generator=gen, dtype=torch.float64)
    u = torch.randn(8, generator=gen, dtype=torch.float64)
    u = u / u.norm()
    for k in (0, 7, 30):
        expected = torch.linalg.matrix_power(w.T, k) @ u
        assert g[k] == pytest.approx(float(expected.norm()), rel=1e-10)


def test_non_normal_and_symmetric_matrices_follow_rho_in_the_long_run():
    for matrix in ("symmetric", "gaussian"):
        g = toys.recurrence_grad_norms(1.1, steps=200, width=16, matrix=matrix)
        rate = (g[200] / g[150]) ** (1 / 50)
        assert rate == pytest.approx(1.1, rel=0.02), matrix
    sym = toys.recurrence_grad_norms(0.9, steps=40, width=16, matrix="symmetric")
    assert np.all(sym <= 0.9 ** np.arange(41) * (1 + 1e-12))  # ||W^k|| = rho^k for a normal matrix


def test_tanh_saturation_damps_explosion():
    g = toys.recurrence_grad_norms(1.5, steps=50, width=16, activation="tanh")
    assert g[-1] < 1e-3 * 1.5 ** 50


# ---------------------------------------------------------------------------------------------- 2-D clipping


def test_clip_2d_matches_torch_nn_utils_and_hand_angles():
    r = toys.clip_2d((3.0, 1.0), 1.0)
    for fn, arg in ((torch.nn.utils.clip_grad_value_, "value"), (torch.nn.utils.clip_grad_norm_, "norm")):
        p = torch.zeros(2, dtype=torch.float64, requires_grad=True)
        p.grad = torch.tensor([3.0, 1.0], dtype=torch.float64)
        fn([p], 1.0)
        np.testing.assert_allclose(getattr(r, arg), p.grad.numpy(), rtol=1e-12)
    assert r.value.tolist() == [1.0, 1.0]
    assert r.value_angle == pytest.approx(45.0 - math.degrees(math.atan(1 / 3)))
    assert r.norm_angle == pytest.approx(0.0, abs=1e-6)
    inside = toys.clip_2d((0.3, -0.2), 1.0)
    np.testing.assert_allclose(inside.value, [0.3, -0.2])
    np.testing.assert_allclose(inside.norm, [0.3, -0.2], rtol=1e-5)


# ---------------------------------------------------------------------------------------------- the cliff


def test_cliff_loss_and_its_wall_slope_by_hand():
    assert float(toys.cliff_loss(torch.tensor([3.0, 0.0]))) == pytest.approx(50.0, abs=1e-10)
    assert float(toys.cliff_loss(torch.tensor([-3.0, 2.0]))) == pytest.approx(0.5 * 40 + 50 / (1 + math.exp(38)))
    w = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)  # on the wall: sigmoid' = 1/4
    toys.cliff_loss(w).backward()
    np.testing.assert_allclose(w.grad.numpy(), [-2.0 + 50 * 10 / 4, 50 * 10 / 4 * 0.4])


def test_descend_matches_the_closed_form_on_a_quadratic():
    t = toys.descend(0.1, steps=20, loss=lambda w: 0.5 * (w ** 2).sum(), start=(-3.0, 2.0))
    np.testing.assert_allclose(t.points[-1], np.array([-3.0, 2.0]) * 0.9 ** 20, rtol=1e-12)
    assert t.spec == "none" and t.points.shape == (21, 2)


def test_clipping_bounds_every_step_at_the_cliff():
    plain = toys.descend(0.3, steps=60)
    clipped = toys.descend(0.3, steps=60, clip="norm:2.0")
    assert plain.step.max() > 20 and plain.max_distance > 20  # thrown far away at the wall
    assert clipped.step.max() <= 0.3 * 2.0 * (1 + 1e-9)
    assert clipped.max_distance < 6
    value = toys.descend(0.3, steps=60, clip="value:1.0")
    assert np.abs(np.diff(value.points, axis=0)).max() <= 0.3 * (1 + 1e-9)


def test_tiny_regression_is_reproducible():
    (m1, x1, y1), (m2, x2, y2) = toys.tiny_regression(seed=3), toys.tiny_regression(seed=3)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert all(torch.equal(a, b) for a, b in zip(m1.parameters(), m2.parameters()))


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("call, names", [
    (lambda: toys.mlp_profile(activation="softmax"), ["activation", "sigmoid", "relu"]),
    (lambda: toys.mlp_profile(init="he"), ["init", "xavier", "kaiming"]),
    (lambda: toys.mlp_profile(norm="group"), ["norm", "batch", "layer"]),
    (lambda: toys.mlp_profile(depth=0), ["depth", ">= 1"]),
    (lambda: toys.mlp_profile(init="normal", std=0.0), ["std", "> 0"]),
    (lambda: toys.product_norms(depth=3, scale=-1.0), ["scale", "> 0"]),
    (lambda: toys.recurrence_grad_norms(0.0, steps=3), ["rho", "> 0"]),
    (lambda: toys.recurrence_grad_norms(1.0, steps=3, matrix="random"), ["matrix", "orthogonal"]),
    (lambda: toys.recurrence_grad_norms(1.0, steps=3, activation="relu"), ["activation", "linear", "tanh"]),
    (lambda: toys.clip_2d((1.0, 2.0, 3.0), 1.0), ["grad", "2 numbers"]),
    (lambda: toys.clip_2d((1.0, 2.0), 0.0), ["threshold", "> 0"]),
    (lambda: toys.descend(-0.1), ["lr", "> 0"]),
])
def test_bad_input_names_the_argument_and_the_accepted_values(call, names):
    with pytest.raises(ValueError) as err:
        call()
    for name in names:
        assert name in str(err.value)


def test_toys_restore_the_thread_count():
    before = torch.get_num_threads()
    toys.mlp_profile(depth=2, width=8, batch=4)
    assert torch.get_num_threads() == before
