"""The slider views, driven from Python: change a control, check the plotted data follows the formula."""

import math

import ipywidgets as ipw
import matplotlib.pyplot as plt
import numpy as np
import pytest

from gradkit import toys, widgets


def test_product_view_rescales_by_s_to_the_l():
    view = widgets.product_norms_view(scale=1.0, depth=30, width=16, trials=4)
    before = view.data["norms"].copy()
    view.controls["scale"].value = 2.0
    after = view.data["norms"]
    np.testing.assert_allclose(after, before * 2.0 ** np.arange(31), rtol=1e-12)
    np.testing.assert_allclose(after, toys.product_norms(30, 2.0, width=16, trials=4), rtol=1e-10)
    np.testing.assert_allclose(view.data["predicted"], np.exp(np.arange(31) * toys.log_norm_drift(2.0, 16)))
    view.controls["depth"].value = 5
    assert view.data["norms"].shape == (4, 6)


def test_mlp_view_follows_each_control():
    view = widgets.mlp_view(depth=10, width=32, activation="sigmoid", init="normal", std=0.01, batch=64)
    assert view.data["ratio"] < 1e-8 and view.data["grad_norm"].shape == (11,)
    view.controls["activation"].value = "tanh"
    view.controls["init"].value = "xavier"
    assert 0.1 < view.data["ratio"] < 10
    view.controls["depth"].value = 30
    assert view.data["grad_norm"].shape == (31,) and view.data["saturated"].shape == (30,)
    unclipped = view.data["grad_norm"].copy()
    view.controls["clip"].value = "norm:0.01"
    # Norm clipping multiplies every layer by the same factor c / (||g|| + 1e-6).
    np.testing.assert_allclose(view.data["grad_norm"], unclipped * 0.01 / (view.data["norm_before"] + 1e-6), rtol=1e-9)
    assert view.data["norm_after"] == pytest.approx(0.01, rel=1e-4)


def test_recurrence_view_is_rho_to_the_k_for_an_orthogonal_matrix():
    view = widgets.recurrence_view(rho=1.0, steps=20, width=8)
    view.controls["rho"].value = 1.2
    np.testing.assert_allclose(view.data["grad_norm"], 1.2 ** np.arange(21), rtol=1e-10)
    np.testing.assert_allclose(view.data["predicted"], 1.2 ** np.arange(21))
    view.controls["steps"].value = 40
    assert view.data["grad_norm"].shape == (41,)


def test_clip_2d_view_threshold_moves_the_clipped_vectors():
    view = widgets.clip_2d_view(gx=3.0, gy=4.0, threshold=1.0)
    np.testing.assert_allclose(view.data["norm"], np.array([0.6, 0.8]) * 5 / (5 + 1e-6), rtol=1e-12)
    np.testing.assert_allclose(view.data["value"], [1.0, 1.0])
    view.controls["threshold"].value = 3.5
    np.testing.assert_allclose(view.data["norm"], np.array([0.6, 0.8]) * 3.5 * 5 / (5 + 1e-6), rtol=1e-12)
    np.testing.assert_allclose(view.data["value"], [3.0, 3.5])
    assert view.data["value_angle"] == pytest.approx(math.degrees(math.atan2(4, 3) - math.atan2(3.5, 3)))
    assert view.data["norm_angle"] == pytest.approx(0.0, abs=1e-6)


def test_cliff_view_clipping_bounds_the_step():
    view = widgets.cliff_view(lr=0.05, threshold=2.0)
    view.controls["lr"].value = 0.3
    assert view.data["max_step"]["plain"] > 20
    assert view.data["max_step"]["clipped"] <= 0.3 * 2.0 * (1 + 1e-9)
    view.controls["threshold"].value = 0.5
    assert view.data["max_step"]["clipped"] <= 0.3 * 0.5 * (1 + 1e-9)
    view.controls["method"].value = "value"
    steps = np.abs(np.diff(view.data["clipped"].points, axis=0))
    assert steps.max() <= 0.3 * 0.5 * (1 + 1e-9)


def test_views_are_ipywidgets_and_close_their_figures():
    plt.close("all")
    view = widgets.recurrence_view(steps=10)
    for rho in (0.9, 1.1, 1.3):
        view.controls["rho"].value = rho
    assert isinstance(view.widget, ipw.VBox) and all(isinstance(c, ipw.ValueWidget) for c in view.controls.values())
    assert plt.get_fignums() == []


def test_static_draws_one_row_per_example_for_two_panel_views():
    view = widgets.mlp_view(depth=4, width=16, batch=16)
    fig = view.static([{"activation": "tanh"}, {"activation": "relu", "init": "kaiming"}])
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 4
    assert "tanh" in visible[0].get_title() and "relu" in visible[2].get_title()
    assert view.values["activation"] == "sigmoid"  # examples do not move the sliders
    with pytest.raises(ValueError, match="unknown controls.*'colour'"):
        view.static([{"colour": "red"}])


def test_show_calls_static_when_headless_and_displays_the_widget_otherwise(monkeypatch):
    view = widgets.clip_2d_view()
    monkeypatch.setenv("GRADKIT_HEADLESS", "1")
    assert widgets.show(view.widget, static=lambda: "static") == "static"
    monkeypatch.setenv("GRADKIT_HEADLESS", "0")
    assert widgets.show(view.widget, static=lambda: "static") is view.widget


def test_threshold_view_counts_steps_above_c():
    norms = [0.2, 0.4, 0.8, 1.6, 3.2, 6.4]
    view = widgets.threshold_view(norms, threshold=1.0)
    assert view.data == {"c": 1.0, "share_above": 0.5}
    view.controls["c"].value = 5.0
    assert view.data["share_above"] == pytest.approx(1 / 6)
    view.controls["c"].value = 0.1
    assert view.data["share_above"] == 1.0
    fig = view.static()
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == [
        "c = 0.5: 67% of steps above c", "c = 2: 33% of steps above c", "c = 5: 17% of steps above c"]
