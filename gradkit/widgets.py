"""Sliders for the lessons, each with a static fallback for runs without a widget front end.

Every interactive view in the kit is built the same way: a function that draws one setting,
ipywidgets controls that call it on every change (no button for toy computations), and a
static grid of representative settings that :func:`show` draws instead when no widget
front end will render (papermill, nbclient, nbconvert ``--execute``, nbval; ``GRADKIT_HEADLESS=1``).

The builders (:func:`product_norms_view`, :func:`mlp_view`, :func:`recurrence_view`,
:func:`threshold_view`, :func:`clip_2d_view`, :func:`cliff_view`) return a :class:`LiveView`; in a notebook::

    view = gradkit.widgets.mlp_view(activation="sigmoid", std=0.01)
    gradkit.widgets.show(view.widget, static=view.static);

and from Python (tests) the same object is driven without a browser::

    view.controls["depth"].value = 50     # recomputes at once
    view.data["grad_norm"]                # the arrays last plotted

Comm messages may arrive on a thread of their own (JupyterLab 4.6 runs them on a kernel subshell),
so a live view draws on a :class:`matplotlib.figure.Figure` that pyplot never sees (the inline
backend cannot show it in an unrelated cell), renders under one lock (matplotlib's font cache is
shared), coalesces a burst of changes into one redraw of the latest values, and sends each redraw as
one PNG through an ``ipywidgets.Image``. Every float slider is a selection over fixed stops that
include its default, so the browser never writes a snapped value back.
"""

from __future__ import annotations

import html
import io
import math
import os
import sys
import threading
from typing import Any, Callable, Iterable, Sequence

import ipywidgets as ipw
import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from . import plots, toys
from .runtime import headless

Compute = Callable[..., dict[str, Any]]
Draw = Callable[[dict[str, Any], Sequence[Axes]], None]

# One lock for every redraw of every view: matplotlib's text rendering shares font objects between
# figures, and two threads drawing at once corrupted figures (a fully transparent PNG was seen).
RENDER_LOCK = threading.RLock()


def widget_front_end() -> bool:
    """True when a front end that renders widgets is attached to this kernel.

    A batch runner (papermill, nbclient, nbconvert ``--execute``, nbval) never is one: the cell's request
    says so (:func:`gradkit.report.batch_runner`), whatever environment its kernel inherited (a papermill run
    started inside JupyterLab inherits ``$JPY_SESSION_NAME``), so its runs get static figures instead of
    widgets nobody can move. Otherwise, signs of one: the kernel was started by a Jupyter server for a
    notebook session (JupyterLab, Notebook 7: ``$JPY_SESSION_NAME``), VS Code's or Colab's kernel, or a
    front end that opened the widgets' control channel.

    >>> widget_front_end()  # plain Python: no kernel at all
    False
    """
    from .report import batch_runner

    if not _in_kernel() or batch_runner():
        return False
    from IPython import get_ipython

    if os.environ.get("JPY_SESSION_NAME") or "google.colab" in sys.modules:
        return True
    shell = get_ipython()
    if shell is not None and "__vsc_ipynb_file__" in shell.user_ns:
        return True
    return getattr(ipw.Widget, "_control_comm", None) is not None


def guarded(action: Callable[[], Any], status: Any) -> Callable[[Any], None]:
    """A button handler that runs ``action()``; a failure is written into ``status`` (an HTML widget beside
    the button) instead of being raised into the comm handler, where nobody would see it.

    >>> status = ipw.HTML()
    >>> guarded(lambda: 1 / 0, status)(None)
    >>> status.value
    '<b>could not train</b>: ZeroDivisionError: division by zero'
    """
    def clicked(_button: Any) -> None:
        try:
            action()
        except Exception as err:
            status.value = f"<b>could not train</b>: {html.escape(f'{type(err).__name__}: {err}')}"

    return clicked


def show(widget: Any, static: Callable[[], Any]) -> Any:
    """Display ``widget`` where a widget front end will render it; otherwise call ``static()``.

    ``static`` draws the same view for a few representative settings so that a run without a
    front end (``GRADKIT_HEADLESS=1``, or a kernel :func:`widget_front_end` finds none for) still
    has figures. Returns what was displayed (the widget or ``static()``'s value).
    """
    if headless() or (_in_kernel() and not widget_front_end()):
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


def new_figure(rows: int = 1, cols: int = 1, *, width: float, height: float, **kw: Any) -> tuple[Figure, np.ndarray]:
    """A ``rows x cols`` figure (``width x height`` inches) and its axes as a 2-D array, unknown to pyplot.

    Like :func:`gradkit.plots.figure` (same style, constrained layout unless ``layout=`` says otherwise),
    but pyplot never registers it: nothing needs closing, no other cell's output can pick it up, and a
    comm thread can draw it while a cell runs.

    >>> fig, axes = new_figure(1, 2, width=6, height=3)
    >>> axes.shape, fig.get_size_inches().tolist()
    ((1, 2), [6.0, 3.0])
    """
    kw.setdefault("layout", "constrained")
    fig = Figure(figsize=(width, height), **kw)
    return fig, np.asarray(fig.subplots(rows, cols, squeeze=False))


def png(fig: Figure) -> bytes:
    """``fig`` rendered once as PNG bytes at its own dpi, under :data:`RENDER_LOCK`."""
    buffer = io.BytesIO()
    # The figure's layout already fits the margins: a "tight" pass would draw it twice.
    with RENDER_LOCK, matplotlib.rc_context({"savefig.bbox": "standard"}):
        if fig.get_layout_engine() is not None:
            # Constrained layout settles in a second pass when axes keep an aspect (lesson 02's square
            # panels): laid out once, their titles sat above the figure's top edge, cut.
            fig.draw_without_rendering()
        fig.savefig(buffer, format="png", dpi=fig.dpi)
    return buffer.getvalue()


def _display(fig: Figure) -> None:
    """Show ``fig`` once as a PNG, in a kernel; elsewhere do nothing."""
    if _in_kernel():
        from IPython.display import Image, display

        display(Image(png(fig)))


class Coalescer:
    """Runs ``redraw()`` for a burst of change notifications as few times as possible, one at a time.

    Every :meth:`request` counts; a redraw that starts covers every request made before it started, so
    a request that waited for the lock while a later redraw ran returns without drawing again. The
    redraw reads the controls itself, so the last one always shows the latest values.
    """

    def __init__(self, redraw: Callable[[], None]) -> None:
        self._redraw = redraw
        self._count_lock = threading.Lock()
        self._requested = 0
        self._covered = 0

    def request(self) -> bool:
        """Ask for a redraw; returns True when this call drew, False when a later redraw covered it."""
        with self._count_lock:
            self._requested += 1
            mine = self._requested
        with RENDER_LOCK:
            if self._covered >= mine:
                return False
            with self._count_lock:
                covering = self._requested
            self._redraw()
            self._covered = covering
        return True


class LiveView:
    """Controls -> ``compute(**values)`` -> :attr:`data` -> ``draw(data, axes)``, redrawn on every change.

    ``controls`` maps each keyword of ``compute`` to an ipywidget; ``draw`` fills ``panels`` axes;
    ``examples`` are the settings (partial dicts of control values) that :meth:`static` draws.
    :attr:`image` (an ``ipywidgets.Image``) holds the PNG of the last redraw and :attr:`redraws` counts them.
    """

    def __init__(self, controls: dict[str, ipw.ValueWidget], compute: Compute, draw: Draw, *, panels: int = 1,
                 examples: Sequence[dict[str, Any]] = (), panel_size: tuple[float, float] = (4.6, 3.6)) -> None:
        self.controls = dict(controls)
        self.examples = [dict(e) for e in examples]
        self.panels = panels
        self.data: dict[str, Any] = {}
        self.figure: Figure | None = None
        self.redraws = 0
        self._compute, self._draw, self._panel_size = compute, draw, panel_size
        w, h = panel_size
        self.image = ipw.Image(format="png", layout=ipw.Layout(width=f"{round(w * panels * 100)}px"))
        box = ipw.HBox(list(self.controls.values()), layout=ipw.Layout(flex_flow="row wrap"))
        self.widget = ipw.VBox([box, self.image])
        self._coalescer = Coalescer(self._redraw)
        for control in self.controls.values():
            control.observe(self._changed, names="value")
        self.update()

    @property
    def values(self) -> dict[str, Any]:
        """The current value of every control."""
        return {name: control.value for name, control in self.controls.items()}

    def _changed(self, _change: dict[str, Any]) -> None:
        self._coalescer.request()

    def _figure(self, rows: int, cols: int, live: bool = False) -> tuple[Figure, np.ndarray]:
        w, h = self._panel_size
        if live:
            # Fixed margins instead of constrained layout: measuring every label's extent on each
            # slider move cost about a third of a redraw.
            fig, axes = new_figure(rows, cols, width=w * cols, height=h * rows, layout=None)
            fig.subplots_adjust(left=0.85 / w / cols, right=1 - 0.15 / w / cols, bottom=0.6 / h, top=1 - 0.55 / h,
                                wspace=0.4)
            return fig, axes
        return new_figure(rows, cols, width=w * cols, height=h * rows)

    def _redraw(self) -> None:
        data = self._compute(**self.values)
        fig, axes = self._figure(1, self.panels, live=True)
        self._draw(data, list(axes[0]))
        image = png(fig)
        self.data, self.figure = data, fig
        self.image.value = image
        self.redraws += 1

    def update(self) -> dict[str, Any]:
        """Recompute :attr:`data` from the controls and redraw (one PNG); returns the new data."""
        self._coalescer.request()
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
        with RENDER_LOCK:
            fig, axes = self._figure(rows, cols)
            flat = list(axes.flat)
            for i, setting in enumerate(settings):
                data = self._compute(**{**self.values, **setting})
                self._draw(data, flat[i * self.panels:(i + 1) * self.panels])
            for ax in flat[len(settings) * self.panels:]:
                ax.set_visible(False)
            _display(fig)
        return fig


def fmt(value: float) -> str:
    """A slider value for labels, legends and titles: 3 significant digits.

    >>> fmt(0.30199517), fmt(2.0), fmt(0.0001)
    ('0.302', '2', '0.0001')
    """
    return f"{value:.3g}"


def stops(lo: float, hi: float, mantissas: Iterable[int] = (1, 2, 5)) -> list[float]:
    """The values ``m * 10^e`` between ``lo`` and ``hi`` (inclusive) for each mantissa ``m``: a log scale
    with few, round, labelled stops.

    >>> stops(0.01, 1.0)
    [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
    """
    if not 0 < lo <= hi:
        raise ValueError(f"need 0 < lo <= hi, got lo={lo!r}, hi={hi!r}")
    # float("2e-1") is the literal 0.2, where 2 * 10 ** -1 could be 0.20000000000000004.
    values = [float(f"{m}e{e}") for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
              for m in mantissas]
    return sorted(v for v in set(values) if lo * (1 - 1e-12) <= v <= hi * (1 + 1e-12))


def grid(lo: float, hi: float, step: float) -> list[float]:
    """``lo, lo + step, ..., hi`` as the round numbers they name (no 0.30000000000000004).

    >>> grid(0.1, 0.5, 0.1)
    [0.1, 0.2, 0.3, 0.4, 0.5]
    """
    n = round((hi - lo) / step)
    digits = max(0, -math.floor(math.log10(step))) + 2
    return [round(lo + i * step, digits) for i in range(n + 1)]


def _style(continuous: bool = True) -> dict[str, Any]:
    # Views that recompute a network (about 0.2 s) update when the slider is released, so that
    # dragging does not queue dozens of redraws; the cheap ones follow the drag.
    return {"style": {"description_width": "initial"}, "continuous_update": continuous}


def stop_slider(description: str, value: float, options: Iterable[float], continuous: bool = True,
                width: str = "420px") -> ipw.SelectionSlider:
    """A slider over the numbers ``options`` (``value`` added when missing), labelled with :func:`fmt`.

    Each key press moves one stop, and every value it can hold is exactly one of ``options``, so the
    front end has nothing to round and write back when it renders.

    >>> s = stop_slider("c", 0.3, stops(0.1, 1.0))
    >>> s.value, [label for label, _ in s.options]
    (0.3, ['0.1', '0.2', '0.3', '0.5', '1'])
    """
    values = sorted({float(v) for v in options} | {float(value)})
    return ipw.SelectionSlider(options=[(fmt(v), v) for v in values], value=float(value), description=description,
                               layout=ipw.Layout(width=width), **_style(continuous))


def _int_slider(description: str, value: int, lo: int, hi: int, step: int = 1, continuous: bool = True) -> ipw.IntSlider:
    return ipw.IntSlider(value=value, min=lo, max=hi, step=step, description=description, **_style(continuous))


def _dropdown(description: str, value: Any, options: Sequence[Any]) -> ipw.Dropdown:
    return ipw.Dropdown(value=value, options=list(options), description=description, style={"description_width": "initial"})


# ----------------------------------------------------------------------------------------------
# Lesson 01

# Weight scales s: fine steps near s = 1, where the product's norm neither explodes nor vanishes.
SCALE_STOPS = (0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15, 1.2, 1.25, 1.3, 1.4,
               1.5, 1.75, 2.0, 2.5, 3.0, 4.0)


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
        axes[0].set_title(f"s = {fmt(data['scale'])} (black: s = 1), width {width}")

    controls = {"scale": stop_slider("scale s", scale, SCALE_STOPS), "depth": _int_slider("depth L", depth, 1, 100)}
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
        "std": stop_slider("std (init=normal)", std, stops(1e-3, 1.0), continuous=False, width="360px"),
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
        plots.recurrence_grad_curves(axes[0], {"||dL/dh|| (dashed: rho^k)": (data["rho"], data["grad_norm"])})
        # The setting as the title: the plot's own title is longer than a panel of the static grid.
        axes[0].set_title(f"rho = {fmt(data['rho'])}, {data['matrix']}, {data['activation']}")

    controls = {
        "rho": stop_slider("spectral radius rho", rho, grid(0.5, 1.5, 0.01)),
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
        axes[0].set_title(f"c = {fmt(data['c'])}: {100 * data['share_above']:.0f}% of steps above c")

    lo, hi = min(0.01, float(norms.min())), max(10 ** 1.5, float(norms.max()))
    controls = {"c": stop_slider("c", threshold, stops(lo, hi))}
    return LiveView(controls, compute, draw, examples=[{"c": c} for c in examples], panel_size=(4.2, 3.3))


# ----------------------------------------------------------------------------------------------
# Lesson 02

# Learning rates of the cliff view: a few stops per decade from 0.01 to 0.5.
LR_STOPS = (0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)


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

    controls = {"gx": stop_slider("g_1", gx, grid(-4.0, 4.0, 0.1), width="320px"),
                "gy": stop_slider("g_2", gy, grid(-4.0, 4.0, 0.1), width="320px"),
                "threshold": stop_slider("threshold c", threshold, grid(0.1, 4.0, 0.1), width="320px")}
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

    controls = {"lr": stop_slider("learning rate", lr, LR_STOPS),
                "threshold": stop_slider("threshold c", threshold, stops(0.1, 10.0, (1, 2, 3, 5))),
                "method": _dropdown("method", method, ("norm", "value"))}
    examples = [{"lr": 0.05}, {"lr": 0.3}]
    return LiveView(controls, compute, draw, panels=2, examples=examples, panel_size=(5.6, 4.2))
