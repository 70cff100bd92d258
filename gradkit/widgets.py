"""Sliders for the lessons, each with a static fallback for headless runs.

Every interactive view in the kit is built the same way: a function that draws one setting,
ipywidgets controls that call it on every change (no button for toy computations), and a
static grid of representative settings that :func:`show` draws instead when no widget
front-end will render (papermill reports, nbval in CI).

The builders (:func:`product_norms_view`, :func:`mlp_view`, :func:`recurrence_view`,
:func:`clip_2d_view`, :func:`cliff_view`) return a :class:`LiveView`; in a notebook::

    view = gradkit.widgets.mlp_view(activation="sigmoid", std=0.01)
    gradkit.widgets.show(view.widget, static=view.static);

and from Python (tests) the same object is driven without a browser::

    view.controls["depth"].value = 50     # recomputes at once
    view.data["grad_norm"]                # the arrays last plotted
"""

from __future__ import annotations

import io
import math
from typing import Any, Callable, Sequence

import ipywidgets as ipw
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from . import plots, toys
from .runtime import headless

Compute = Callable[..., dict[str, Any]]
Draw = Callable[[dict[str, Any], Sequence[Axes]], None]


def show(widget: Any, static: Callable[[], Any]) -> Any:
    """Display ``widget`` in a live notebook; when :func:`gradkit.runtime.headless`, call ``static()``.

    ``static`` draws the same view for a few representative settings so that an executed
    report still has figures. Returns what was displayed (the widget or ``static()``'s value).
    """
    if headless():
        return static()
    from IPython.display import display

    display(widget)
    return widget


def _in_kernel() -> bool:
    """True inside a Jupyter kernel, where figures can be displayed (not in plain Python or pytest)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def _display(fig: Figure) -> None:
    """Show ``fig`` once as a PNG (in a kernel) and close it so the inline backend does not show it again."""
    if _in_kernel():
        from IPython.display import Image, display

        buffer = io.BytesIO()
        # The figure's constrained layout already fits the margins: a "tight" pass would draw it twice.
        with matplotlib.rc_context({"savefig.bbox": "standard"}):
            fig.savefig(buffer, format="png", dpi=fig.dpi)
        display(Image(buffer.getvalue()))
    plt.close(fig)


class LiveView:
    """Controls -> ``compute(**values)`` -> :attr:`data` -> ``draw(data, axes)``, redrawn on every change.

    ``controls`` maps each keyword of ``compute`` to an ipywidget; ``draw`` fills ``panels`` axes;
    ``examples`` are the settings (partial dicts of control values) that :meth:`static` draws.
    """

    def __init__(self, controls: dict[str, ipw.ValueWidget], compute: Compute, draw: Draw, *, panels: int = 1,
                 examples: Sequence[dict[str, Any]] = (), panel_size: tuple[float, float] = (4.6, 3.6)) -> None:
        self.controls = dict(controls)
        self.examples = [dict(e) for e in examples]
        self.panels = panels
        self.output = ipw.Output()
        self.data: dict[str, Any] = {}
        self.figure: Figure | None = None
        self._compute, self._draw, self._panel_size = compute, draw, panel_size
        box = ipw.HBox(list(self.controls.values()), layout=ipw.Layout(flex_flow="row wrap"))
        self.widget = ipw.VBox([box, self.output])
        for control in self.controls.values():
            control.observe(self._changed, names="value")
        self.update()

    @property
    def values(self) -> dict[str, Any]:
        """The current value of every control."""
        return {name: control.value for name, control in self.controls.items()}

    def _changed(self, _change: dict[str, Any]) -> None:
        self.update()

    def _figure(self, rows: int, cols: int, live: bool = False) -> tuple[Figure, np.ndarray]:
        w, h = self._panel_size
        if live:
            # Fixed margins instead of constrained layout: measuring every label's extent on each
            # slider move cost about a third of a redraw.
            fig, axes = plots.figure(rows, cols, width=w * cols, height=h * rows, layout=None)
            fig.subplots_adjust(left=0.85 / w / cols, right=1 - 0.15 / w / cols, bottom=0.6 / h, top=1 - 0.55 / h,
                                wspace=0.4)
        else:
            fig, axes = plots.figure(rows, cols, width=w * cols, height=h * rows)
        return fig, np.atleast_1d(axes).reshape(rows, cols)

    def update(self) -> dict[str, Any]:
        """Recompute :attr:`data` from the controls and redraw; returns the new data."""
        self.data = self._compute(**self.values)
        fig, axes = self._figure(1, self.panels, live=True)
        self._draw(self.data, list(axes[0]))
        self.figure = fig
        if _in_kernel():
            with self.output:
                self.output.clear_output(wait=True)
                _display(fig)
        else:
            plt.close(fig)
        return self.data

    def static(self, examples: Sequence[dict[str, Any]] | None = None) -> Figure:
        """Draw ``examples`` (default: :attr:`examples`) as one grid figure, display it, and return it.

        One row per example for multi-panel views; single-panel views fill rows of up to 3.
        """
        settings = [dict(e) for e in (examples if examples is not None else self.examples)] or [{}]
        unknown = sorted({k for e in settings for k in e} - set(self.controls))
        if unknown:
            raise ValueError(f"examples name unknown controls {unknown}; accepted: {', '.join(self.controls)}")
        if self.panels == 1:
            cols = min(3, len(settings))
            rows = math.ceil(len(settings) / cols)
        else:
            rows, cols = len(settings), self.panels
        fig, axes = self._figure(rows, cols)
        flat = list(axes.flat)
        for i, setting in enumerate(settings):
            data = self._compute(**{**self.values, **setting})
            self._draw(data, flat[i * self.panels:(i + 1) * self.panels])
        for ax in flat[len(settings) * self.panels:]:
            ax.set_visible(False)
        _display(fig)
        return fig


def _style(continuous: bool = True) -> dict[str, Any]:
    # Views that recompute a network (about 0.2 s) update when the slider is released, so that
    # dragging does not queue dozens of redraws; the cheap ones follow the drag.
    return {"style": {"description_width": "initial"}, "continuous_update": continuous}


def _log_slider(description: str, value: float, lo: float, hi: float, base: float = 10.0,
                continuous: bool = True) -> ipw.FloatLogSlider:
    return ipw.FloatLogSlider(value=value, base=base, min=math.log(lo, base), max=math.log(hi, base), step=0.01,
                              description=description, readout_format=".3g", **_style(continuous))


def _int_slider(description: str, value: int, lo: int, hi: int, step: int = 1, continuous: bool = True) -> ipw.IntSlider:
    return ipw.IntSlider(value=value, min=lo, max=hi, step=step, description=description, **_style(continuous))


def _dropdown(description: str, value: Any, options: Sequence[Any]) -> ipw.Dropdown:
    return ipw.Dropdown(value=value, options=list(options), description=description, style={"description_width": "initial"})


# ----------------------------------------------------------------------------------------------
# Lesson 01


def product_norms_view(scale: float = 1.0, depth: int = 50, width: int = 64, trials: int = 16, seed: int = 0) -> LiveView:
    """Slider view of ``||W_l ... W_1 x||`` against depth for one weight scale ``s`` (``W_ij ~ N(0, s^2/width)``).

    The trials are drawn once at ``s = 1`` for the deepest setting: scaling every matrix by ``s``
    multiplies ``||W_l ... W_1 x||`` by exactly ``s^l``, so a slider move only rescales them.
    ``data``: ``depth`` (0..L), ``norms`` (trials, L+1), ``median``, ``predicted = exp(l * drift)``
    and ``boundary`` (the ``s = 1`` norms, drawn in black for reference).
    """
    base = toys.product_norms(100, 1.0, width, trials, seed)

    def compute(scale: float, depth: int) -> dict[str, Any]:
        steps = np.arange(depth + 1)
        norms = base[:, : depth + 1] * scale ** steps.astype(float)
        drift = toys.log_norm_drift(scale, width)
        return {"scale": scale, "depth": steps, "norms": norms, "median": np.median(norms, axis=0),
                "predicted": np.exp(steps * drift), "drift": drift, "boundary": base[:, : depth + 1]}

    def draw(data: dict[str, Any], axes: Sequence[Axes]) -> None:
        curves = {1.0: data["boundary"], float(data["scale"]): data["norms"]}
        plots.product_norm_curves(axes[0], curves, width)
        axes[0].set_title(f"s = {data['scale']:.3g} (black: s = 1), width {width}")

    controls = {"scale": _log_slider("scale s", scale, 0.25, 4.0, base=2.0), "depth": _int_slider("depth L", depth, 1, 100)}
    examples = [{"scale": 0.8}, {"scale": 1.0}, {"scale": 1.25}]
    return LiveView(controls, compute, draw, examples=examples)


def mlp_view(depth: int = 20, width: int = 64, activation: str = "sigmoid", init: str = "normal", std: float = 0.05,
             norm: str = "none", residual: bool = False, clip: str = "none", batch: int = 128, seed: int = 0) -> LiveView:
    """Slider view of a deep MLP at initialisation: per-layer gradient norms and activation histograms.

    Controls: depth, width, activation, init, std (used by ``init="normal"``), norm, residual, clip.
    ``data``: ``grad_norm`` (depth+1,), ``saturated`` (depth,), ``ratio`` (first/last hidden layer),
    ``norm_before``/``norm_after`` and ``profile`` (the :class:`gradkit.toys.MLPProfile`).
    """

    def compute(clip: str, **kw: Any) -> dict[str, Any]:
        return _mlp_data(toys.mlp_profile(batch=batch, seed=seed, clip=None if clip == "none" else clip, **kw))

    def draw(data: dict[str, Any], axes: Sequence[Axes]) -> None:
        plots.layer_grad_norm_bars(axes[0], data["profile"])
        plots.activation_histograms(axes[1], data["profile"])

    controls = {
        "depth": _int_slider("depth", depth, 2, 100, continuous=False),
        "width": _int_slider("width", width, 16, 128, step=16, continuous=False),
        "activation": _dropdown("activation", activation, toys.ACTIVATIONS),
        "init": _dropdown("init", init, toys.INITS),
        "std": _log_slider("std (init=normal)", std, 1e-3, 1.0, continuous=False),
        "norm": _dropdown("norm", norm, toys.NORMS),
        "residual": ipw.Checkbox(value=residual, description="residual"),
        "clip": _dropdown("clip", clip, ("none", "norm:1.0", "norm:0.1", "norm:0.01", "value:0.01")),
    }
    examples = [
        {"activation": "sigmoid", "init": "normal", "std": 0.01},
        {"activation": "tanh", "init": "normal", "std": 0.3},
        {"activation": "tanh", "init": "xavier"},
        {"activation": "relu", "init": "kaiming"},
    ]
    return LiveView(controls, compute, draw, panels=2, examples=examples, panel_size=(5.2, 3.4))


def _mlp_data(profile: toys.MLPProfile) -> dict[str, Any]:
    return {"grad_norm": profile.grad_norm, "saturated": profile.saturated, "ratio": profile.first_last_ratio,
            "norm_before": profile.norm_before, "norm_after": profile.norm_after, "profile": profile}


def recurrence_view(rho: float = 1.0, steps: int = 50, width: int = 32, matrix: str = "orthogonal",
                    activation: str = "linear", seed: int = 0) -> LiveView:
    """Slider view of ``||dL/dh_(T-k)||`` for ``h_t = W h_(t-1)``, ``W`` of spectral radius ``rho``.

    ``data``: ``k`` (0..T), ``grad_norm`` (T+1,), ``predicted = rho^k``.
    """

    def compute(rho: float, steps: int, matrix: str, activation: str) -> dict[str, Any]:
        g = toys.recurrence_grad_norms(rho, steps, width, matrix, activation, seed)
        k = np.arange(steps + 1)
        return {"rho": rho, "k": k, "grad_norm": g, "predicted": rho ** k.astype(float), "matrix": matrix,
                "activation": activation}

    def draw(data: dict[str, Any], axes: Sequence[Axes]) -> None:
        label = f"rho={data['rho']:.3g}, {data['matrix']}, {data['activation']}"
        plots.recurrence_grad_curves(axes[0], {label: (data["rho"], data["grad_norm"])})

    controls = {
        "rho": ipw.FloatSlider(value=rho, min=0.5, max=1.5, step=0.01, description="spectral radius rho",
                               readout_format=".2f", **_style()),
        "steps": _int_slider("steps T", steps, 1, 100),
        "matrix": _dropdown("matrix", matrix, toys.MATRICES),
        "activation": _dropdown("activation", activation, toys.RECURRENCE_ACTIVATIONS),
    }
    examples = [{"rho": 0.9}, {"rho": 1.0}, {"rho": 1.1}, {"rho": 0.9, "matrix": "gaussian"},
                {"rho": 1.1, "matrix": "gaussian"}, {"rho": 1.5, "activation": "tanh"}]
    return LiveView(controls, compute, draw, examples=examples)


def threshold_view(norm_before: Sequence[float], threshold: float = 0.5,
                   examples: Sequence[float] = (0.5, 2.0, 5.0)) -> LiveView:
    """Slider view of a threshold ``c`` over the recorded gradient norms of an unclipped run (lesson 03).

    It reads a record and does not retrain: ``share_above = mean(||g_t|| > c)`` is the share of steps
    that norm clipping at ``c`` would have shortened, had the run followed the same path.
    ``data``: ``c``, ``share_above``. ``examples`` are the thresholds the static grid draws.

    >>> view = threshold_view([0.5, 1.0, 2.0, 4.0], threshold=1.5)
    >>> view.data["share_above"]
    0.5
    """
    norms = np.asarray(norm_before, dtype=float)

    def compute(c: float) -> dict[str, Any]:
        return {"c": c, "share_above": float(np.mean(norms > c))}

    def draw(data: dict[str, Any], axes: Sequence[Axes]) -> None:
        plots.grad_norm_trace(axes[0], norms, threshold=data["c"], color=plots.color_for("none"))
        axes[0].set_title(f"c = {data['c']:g}: {100 * data['share_above']:.0f}% of steps above c")

    lo, hi = min(0.01, float(norms.min())), max(10 ** 1.5, float(norms.max()))
    controls = {"c": _log_slider("c", threshold, lo, hi)}
    return LiveView(controls, compute, draw, examples=[{"c": c} for c in examples], panel_size=(4.2, 3.3))


# ----------------------------------------------------------------------------------------------
# Lesson 02


def clip_2d_view(gx: float = 3.0, gy: float = 1.0, threshold: float = 1.0) -> LiveView:
    """Slider view of value vs norm clipping of the 2-D gradient ``(gx, gy)`` at threshold ``c``.

    ``data``: ``grad``, ``value``, ``norm`` (2-vectors), ``value_angle`` and ``norm_angle`` (degrees).
    """

    def compute(gx: float, gy: float, threshold: float) -> dict[str, Any]:
        r = toys.clip_2d((gx, gy), threshold)
        return {"grad": r.grad, "value": r.value, "norm": r.norm, "value_angle": r.value_angle,
                "norm_angle": r.norm_angle, "result": r}

    def draw(data: dict[str, Any], axes: Sequence[Axes]) -> None:
        plots.clip_2d_arrows(axes[0], data["result"])

    def coord(name: str, value: float) -> ipw.FloatSlider:
        return ipw.FloatSlider(value=value, min=-4.0, max=4.0, step=0.05, description=name, **_style())

    controls = {"gx": coord("g_1", gx), "gy": coord("g_2", gy),
                "threshold": ipw.FloatSlider(value=threshold, min=0.1, max=4.0, step=0.05, description="threshold c", **_style())}
    examples = [{"gx": 3.0, "gy": 1.0, "threshold": 1.0}, {"gx": 3.0, "gy": 1.0, "threshold": 2.0},
                {"gx": 0.5, "gy": 2.5, "threshold": 1.0}]
    return LiveView(controls, compute, draw, examples=examples, panel_size=(4.0, 4.0))


def cliff_view(lr: float = 0.3, threshold: float = 2.0, method: str = "norm", steps: int = 60) -> LiveView:
    """Slider view of gradient descent on :func:`gradkit.toys.cliff_loss` with and without clipping.

    ``data``: ``plain`` and ``clipped`` (:class:`gradkit.toys.Trajectory`), ``max_step`` of each.
    """

    def compute(lr: float, threshold: float, method: str) -> dict[str, Any]:
        plain = toys.descend(lr, steps)
        clipped = toys.descend(lr, steps, clip=f"{method}:{threshold}")
        return {"plain": plain, "clipped": clipped, "max_step": {"plain": float(plain.step.max()),
                                                                  "clipped": float(clipped.step.max())}}

    def draw(data: dict[str, Any], axes: Sequence[Axes]) -> None:
        plots.cliff_paths(axes[0], [data["plain"], data["clipped"]])
        plots.step_lengths(axes[1], [data["plain"], data["clipped"]])

    controls = {"lr": _log_slider("learning rate", lr, 0.01, 0.5),
                "threshold": _log_slider("threshold c", threshold, 0.1, 10.0),
                "method": _dropdown("method", method, ("norm", "value"))}
    examples = [{"lr": 0.05}, {"lr": 0.3}]
    return LiveView(controls, compute, draw, panels=2, examples=examples, panel_size=(5.6, 4.2))
