"""The slider views, driven from Python: change a control, check the plotted data follows the formula."""

import math
import time

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


def _is_png_with_ink(data: bytes) -> bool:
    """A PNG whose pixels are not all fully transparent."""
    from io import BytesIO

    import matplotlib.image as mpimg

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = mpimg.imread(BytesIO(data), format="png")
    return pixels.shape[-1] < 4 or bool((pixels[..., 3] > 0).any())


def test_every_float_control_is_a_stop_slider_holding_its_default():
    # A FloatSlider or FloatLogSlider default off the slider's grid is rounded by the browser and written
    # back (lesson 02: 0.3 -> 0.30199517), redrawing the view; a selection over fixed stops cannot be.
    views = [widgets.product_norms_view(depth=10, width=8, trials=2), widgets.mlp_view(depth=4, width=16, batch=8),
             widgets.recurrence_view(steps=10, width=8), widgets.threshold_view([0.3, 3.0], threshold=0.5),
             widgets.clip_2d_view(), widgets.cliff_view(lr=0.3, threshold=2.0, steps=10)]
    for view in views:
        for name, control in view.controls.items():
            assert not isinstance(control, (ipw.FloatSlider, ipw.FloatLogSlider)), name
            if isinstance(control, ipw.SelectionSlider):
                assert control.options[control.index][1] == control.value
    cliff = views[-1]
    assert cliff.controls["lr"].value == 0.3 and cliff.controls["lr"].label == "0.3"
    assert widgets.stop_slider("c", 0.37, widgets.stops(0.1, 1.0)).value == 0.37  # a default off the stops joins them


def test_stops_and_grid_are_the_round_numbers_they_name():
    assert widgets.stops(1e-4, 10.0)[:3] == [0.0001, 0.0002, 0.0005]
    assert 0.3 in widgets.stops(0.1, 10.0, (1, 2, 3, 5))
    assert widgets.grid(-4.0, 4.0, 0.1)[41] == 0.1 and len(widgets.grid(-4.0, 4.0, 0.1)) == 81
    assert widgets.fmt(0.30199517) == "0.302"
    with pytest.raises(ValueError, match="lo"):
        widgets.stops(0.0, 1.0)


def test_one_png_per_change_drawn_without_pyplot():
    plt.close("all")
    view = widgets.cliff_view(lr=0.3, threshold=2.0, steps=10)
    sent = []
    view.image.observe(lambda change: sent.append(change["new"]), names="value")
    view.controls["lr"].value = 0.1
    view.controls["method"].value = "value"
    assert len(sent) == 2 and view.redraws == 3  # the first redraw came with the view
    assert all(_is_png_with_ink(png) for png in sent) and sent[-1] == view.image.value
    assert plt.get_fignums() == [] and view.figure.canvas.manager is None  # pyplot never saw a figure


def test_changes_from_many_threads_end_on_the_last_values():
    import threading

    view = widgets.recurrence_view(rho=1.0, steps=20, width=8)
    slow_draw = view._draw

    def draw(data, axes):
        time.sleep(0.02)  # a redraw long enough for changes to pile up behind it
        slow_draw(data, axes)

    view._draw = draw
    rhos = widgets.grid(0.5, 1.5, 0.01)
    threads = [threading.Thread(target=lambda r=r: setattr(view.controls["rho"], "value", r)) for r in rhos[:40]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    last = view.controls["rho"].value
    view.controls["steps"].value = 30  # one more change after the burst: the view ends on every last value
    np.testing.assert_allclose(view.data["grad_norm"], last ** np.arange(31), rtol=1e-10)
    assert view.redraws <= 1 + 40 + 1 and _is_png_with_ink(view.image.value)


def test_coalescer_draws_once_for_requests_that_wait_behind_a_redraw():
    import threading

    started, release, calls = threading.Event(), threading.Event(), []

    def redraw():
        calls.append(1)
        if len(calls) == 1:
            started.set()
            release.wait(5)

    c = widgets.Coalescer(redraw)
    first = threading.Thread(target=c.request)
    first.start()
    started.wait(5)
    waiting = [threading.Thread(target=c.request) for _ in range(5)]
    for t in waiting:
        t.start()
    time.sleep(0.2)  # all five are now blocked on the lock held by the first redraw
    release.set()
    for t in [first, *waiting]:
        t.join()
    assert len(calls) == 2  # the first, then one for the five that arrived while it drew


def test_show_draws_static_figures_in_a_kernel_without_a_widget_front_end(monkeypatch):
    view = widgets.clip_2d_view()
    monkeypatch.delenv("GRADKIT_HEADLESS", raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    monkeypatch.setattr(widgets, "_in_kernel", lambda: True)
    assert widgets.widget_front_end() is False  # papermill, nbclient, nbconvert --execute, nbval
    assert widgets.show(view.widget, static=lambda: "static") == "static"
    monkeypatch.setenv("JPY_SESSION_NAME", "/lessons/02_clipping_formulas.ipynb")  # JupyterLab's kernels
    monkeypatch.setattr("IPython.display.display", lambda *a, **k: None)
    assert widgets.widget_front_end() is True
    assert widgets.show(view.widget, static=lambda: "static") is view.widget


class _Kernel:
    """A kernel answering an execute_request: batch runners send allow_stdin=False, front ends True."""

    def __init__(self, allow_stdin: bool):
        self.parent = {"msg_type": "execute_request", "content": {"allow_stdin": allow_stdin}}

    def get_parent(self):
        return self.parent


@pytest.mark.parametrize("allow_stdin, front_end", [(False, False), (True, True)])
def test_a_batch_runner_gets_static_figures_whatever_the_environment_says(monkeypatch, allow_stdin, front_end):
    # A papermill run started inside JupyterLab inherits JPY_SESSION_NAME: the request, not the environment, decides.
    import IPython

    shell = type("Shell", (), {"kernel": _Kernel(allow_stdin), "user_ns": {}})()
    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)
    monkeypatch.setattr("IPython.display.display", lambda *a, **k: None)
    monkeypatch.delenv("GRADKIT_HEADLESS", raising=False)
    monkeypatch.setenv("JPY_SESSION_NAME", "/lessons/02_clipping_formulas.ipynb")
    view = widgets.clip_2d_view()
    assert widgets.widget_front_end() is front_end
    assert (widgets.show(view.widget, static=lambda: "static") == "static") is not front_end


WIDGET_CELL = ("from gradkit import widgets\nview = widgets.cliff_view(steps=10)\n"
               "widgets.show(view.widget, static=view.static);")


def _widget_notebook(path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(WIDGET_CELL)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


def _kinds(cell) -> set[str]:
    return {k for o in cell["outputs"] for k in o.get("data", {})}


def _inside_jupyterlab(monkeypatch):
    """The environment of a kernel JupyterLab started, and no GRADKIT_HEADLESS."""
    monkeypatch.delenv("GRADKIT_HEADLESS", raising=False)
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/student/02_clipping_formulas.ipynb")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")


def test_plain_papermill_inside_jupyterlab_draws_static_figures(tmp_path, monkeypatch):
    """Plain papermill with JPY_SESSION_NAME inherited once showed only the widget's JSON, no PNG."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    _inside_jupyterlab(monkeypatch)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "out.ipynb"
    proc = subprocess.run([sys.executable, "-m", "papermill", str(_widget_notebook(tmp_path / "w.ipynb")), str(out),
                           "-k", "python3", "--no-progress-bar"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    kinds = _kinds(json.loads(out.read_text())["cells"][0])
    assert "image/png" in kinds and "application/vnd.jupyter.widget-view+json" not in kinds, kinds


def test_plain_nbclient_inside_jupyterlab_draws_static_figures(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    _inside_jupyterlab(monkeypatch)
    nb = nbformat.read(str(_widget_notebook(tmp_path / "w.ipynb")), as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    kinds = _kinds(nb.cells[0])
    assert "image/png" in kinds and "application/vnd.jupyter.widget-view+json" not in kinds, kinds


def _static_views():
    return {"product": widgets.product_norms_view(depth=10, width=8, trials=2),
            "mlp": widgets.mlp_view(depth=4, width=16, batch=8),
            "recurrence": widgets.recurrence_view(steps=100, width=8),
            "threshold": widgets.threshold_view([0.3, 3.0], threshold=0.5),
            "clip_2d": widgets.clip_2d_view(), "cliff": widgets.cliff_view(lr=0.3, threshold=2.0, steps=10)}


@pytest.mark.parametrize("name", list(_static_views()))
def test_static_grid_titles_fit_their_panels_and_the_figure(name):
    """Lesson 02's geometry grid had its titles cut at the top edge, lesson 01's recurrence grid titles ran
    into each other ("rho^" cut): in the PNG every title lies inside the figure and beside, not over, the next."""
    from io import BytesIO

    import matplotlib.image as mpimg
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from gradkit import plots

    plots.use_style()
    view = _static_views()[name]
    fig = view.static()
    pixels = mpimg.imread(BytesIO(widgets.png(fig)), format="png")
    top = pixels[:2, :, :3]
    assert np.ptp(top) < 0.05, f"{name}: something is drawn on the figure's top edge (a title cut)"
    renderer = FigureCanvasAgg(fig).get_renderer()
    width, height = fig.bbox.width, fig.bbox.height
    boxes = [ax.title.get_window_extent(renderer) for ax in fig.axes if ax.get_visible() and ax.get_title()]
    for box in boxes:
        assert 0 <= box.x0 and box.x1 <= width and 0 <= box.y0 and box.y1 <= height, (name, box.bounds)
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), (name, a.bounds, b.bounds)


# ---- the threshold explorer's live button (gradkit.explorer, driven through its widget and controls)

# Batches of 2: 48 steps a run, so the bar moves twice (fit reports every 25 steps).
EXPLORER_BASE = {"model": "seed_cnn", "model_kw": {"width": 0.125}, "epochs": 1, "batch_size": 2, "lr": 0.05,
                 "monitor_every": 1, "seed": 0}


@pytest.fixture(scope="module")
def explorer_sweep(tmp_path_factory):
    """No clipping and norm clipping at 0.1 on 96 synthetic images: 48 steps each."""
    from gradkit.data import synthetic
    from gradkit.runs import load_sweep, sweep

    data = synthetic(n=96, n_test=48, seed=1, n_val=32)
    folder = tmp_path_factory.mktemp("sweep")
    sweep(configs=[{**EXPLORER_BASE, "clip": clip} for clip in ("none", "norm:0.1")], data=data,
          results_dir=folder, progress=False)
    return load_sweep(folder), data


def _train_row(ex):
    """The button's row of the explorer's widget: the button, its progress bar and its status line."""
    [row] = [c for c in ex.widget.children if isinstance(c, ipw.HBox) and ex.controls["train"] in c.children]
    [bar] = [c for c in row.children if isinstance(c, ipw.IntProgress)]
    [status] = [c for c in row.children if isinstance(c, ipw.HTML)]
    return bar, status


def test_train_button_shows_progress_while_training_and_says_loaded_on_a_second_press(explorer_sweep, tmp_path,
                                                                                       monkeypatch):
    """A second press on a cached run once gave no feedback, and the log stayed empty while training."""
    from gradkit import explorer
    from gradkit.explorer import ThresholdExplorer

    runs, data = explorer_sweep
    monkeypatch.setenv("GRADKIT_CACHE", str(tmp_path / "cache"))
    live = explorer.live_dir("smoke")
    assert live == tmp_path / "cache" / "live" / "smoke"  # the user's cache folder, not the checkout
    ex = ThresholdExplorer(runs, data=data, results_dir=live)
    ex.select(threshold=0.5)
    bar, status = _train_row(ex)
    seen = []
    bar.observe(lambda change: seen.append(("bar", change["new"], bar.layout.visibility)), names="value")
    status.observe(lambda change: seen.append(("status", change["new"], None)), names="value")
    ex.controls["train"].click()

    values = [v for kind, v, _ in seen if kind == "bar"]
    assert values == [25, 48] and all(vis == "visible" for kind, _, vis in seen if kind == "bar")
    lines = [text for kind, text, _ in seen if kind == "status"]
    assert lines[0].startswith("training norm clipping, c=0.5: loading the data")
    steps = [line.split(": ")[1].split(",")[0] for line in lines[1:-1] if "step " in line]
    assert list(dict.fromkeys(steps)) == ["step 0/48", "step 25/48", "step 48/48"], lines
    assert lines[-1].startswith("trained norm clipping, c=0.5 in ") and "added (3 runs)" in lines[-1]
    assert bar.layout.visibility == "hidden" and not ex.controls["train"].disabled
    [saved] = sorted(live.glob("run-*.json"))
    assert saved.stem in lines[-1]

    seen.clear()
    ex.controls["train"].click()  # the same setting again: loaded from the cache, and it says so
    assert status.value.startswith("norm clipping, c=0.5 was trained before: ") and "loaded from" in status.value
    assert saved.stem in status.value and "already among the runs" in status.value
    assert sorted(live.glob("run-*.json")) == [saved]


def test_explorer_float_controls_hold_their_values_on_their_stops(explorer_sweep):
    """Nothing for the browser to snap and write back on render: a selection slider or a dropdown, on a stop."""
    from gradkit.explorer import ThresholdExplorer

    ex = ThresholdExplorer(explorer_sweep[0])
    for requested in (None, 0.5, 0.37, 0.1):
        if requested is not None:
            ex.select(threshold=requested)
        for name, control in ex.controls.items():
            assert not isinstance(control, (ipw.FloatSlider, ipw.FloatLogSlider, ipw.FloatText)), name
            if isinstance(control, (ipw.SelectionSlider, ipw.Dropdown)):
                assert control.index is not None and control.options[control.index] in (
                    control.value, (control.label, control.value)), (name, control.value)
        assert requested is None or ex.controls["threshold"].value == requested
