"""One figure style for the whole kit, and the figures the lessons share.

Every clipping method keeps one colour in every figure (:func:`color_for`), every legend names
the setting (:func:`spec_label`), and gradient norms, which span decades, go on log axes.

>>> spec_label("norm:1.0")
'norm clipping, c=1'
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib
import matplotlib.patches
import matplotlib.ticker
import numpy as np

from .checks import METHOD_NAMES, spec_label  # noqa: F401  (re-exported: plots.spec_label)

STYLE: dict[str, Any] = {
    "figure.figsize": (7.0, 4.0),
    "figure.dpi": 100,
    "savefig.dpi": 120,
    "savefig.bbox": "tight",
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.labelsize": 10,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "lines.linewidth": 1.6,
    "font.size": 10,
}

METHOD_COLORS: dict[str, str] = {
    "none": "#4d4d4d",
    "value": "#d95f02",
    "norm": "#1b9e77",
    "norm_inf": "#66a61e",
    "tensor_norm": "#7570b3",
    "scaled_value": "#e7298a",
    "agc": "#e6ab02",
    "auto": "#1f78b4",
}


def legend_below(ax: Any, handles: Sequence[Any] | None = None, *, ncol: int = 2, fontsize: float = 7,
                 offset: float = 0.2) -> Any:
    """A legend under ``ax``, outside the data area (below the x label: ``offset`` is in axes heights), so it
    covers no curve, whatever the data; with a constrained layout the figure makes room for it. ``handles``:
    the artists to name (default: every labelled one). Returns the legend (None when nothing is labelled).

    >>> import matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots(layout="constrained")
    >>> _ = ax.plot([1, 2], label="a")
    >>> leg = legend_below(ax)
    >>> fig.canvas.draw()
    >>> bool(leg.get_window_extent().y1 < ax.get_window_extent().y0)  # wholly under the axes
    True
    >>> plt.close(fig)
    """
    if handles is None:
        handles = ax.get_legend_handles_labels()[0]
    if not handles:
        return None
    return ax.legend(handles=list(handles), loc="upper center", bbox_to_anchor=(0.5, -offset), ncol=ncol,
                     fontsize=fontsize, borderaxespad=0)


def use_style() -> None:
    """Apply the kit's matplotlib style to ``matplotlib.rcParams``.

    Importing gradkit changes no global setting: each lesson calls this once in its import cell.
    """
    matplotlib.rcParams.update(STYLE)


def figure(nrows: int = 1, ncols: int = 1, *, width: float | None = None, height: float | None = None, **kw: Any):
    """``plt.subplots`` with sizes that scale with the grid; returns ``(fig, axes)``."""
    w = width if width is not None else min(4.2 * ncols, 14.0)
    h = height if height is not None else 3.3 * nrows
    kw.setdefault("layout", "constrained")
    # pyplot is imported when a figure is asked for, not when gradkit is imported.
    import matplotlib.pyplot as plt

    return plt.subplots(nrows, ncols, figsize=(w, h), squeeze=False if (nrows > 1 or ncols > 1) else True, **kw)


def color_for(method: str) -> str:
    """The colour of a clipping method (``"norm"``, ``"value"``, ...) in every figure."""
    return METHOD_COLORS.get(method.split(":")[0], "#999999")


# Figures of the threshold explorer (lesson 04) and the sweep report (lesson 05). Each draws one
# idea on a given axes from plain arrays, so lessons and the explorer share them.


def running_mean(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing mean over the last ``window`` values: ``m[t] = mean(v[max(0, t-window+1) .. t])``.

    A non-finite value makes every later mean non-finite (:func:`loss_curves` cuts a run there).

    >>> running_mean([1.0, 3.0, 5.0], 2).tolist()
    [1.0, 2.0, 4.0]
    """
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be an int >= 1, got {window!r}")
    v = np.asarray(values, dtype=float)
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, v.size + 1)
    start = np.maximum(idx - window, 0)
    return (c[idx] - c[start]) / (idx - start)


def loss_curves(ax: Any, curves: Mapping[str, Sequence[float]], *, colors: Mapping[str, str] | None = None,
                dashed: Sequence[str] = (), window: int = 20) -> Any:
    """Training loss per step of each run in ``curves`` (label -> losses), as a ``window``-step running
    mean; a run whose loss became non-finite (diverged) ends with an ``x`` at its last finite value."""
    for label, losses in curves.items():
        v = np.asarray(losses, dtype=float)
        finite = np.isfinite(v)
        n = int(np.argmin(finite)) if not finite.all() else v.size
        color = (colors or {}).get(label)
        line, = ax.plot(np.arange(n), running_mean(v[:n], window), color=color,
                        linestyle="--" if label in dashed else "-", label=label)
        if n < v.size and n > 0:
            ax.plot(n - 1, running_mean(v[:n], window)[-1], "x", color=line.get_color(), markersize=9, mew=2)
    ax.set_xlabel("step")
    ax.set_ylabel(f"training loss ({window}-step mean)")
    ax.legend()
    return ax


def accuracy_vs_threshold(ax: Any, methods: Mapping[str, tuple[Sequence[float], Sequence[Sequence[float]]]], *,
                          baseline: Sequence[float] | None = None, selected: tuple[float, float] | None = None) -> Any:
    """Final test accuracy (drawn in %) against the clipping threshold on a log axis, one line per method.

    ``methods`` maps a method name to ``(thresholds, acc)``, ``acc[i]`` the accuracies in [0, 1] of
    every seed at ``thresholds[i]``: the line is the seed mean, the band spans min..max over seeds.
    ``baseline`` (the unclipped runs' accuracies) is a grey dashed line with its band; ``selected``
    ``(threshold, accuracy)`` is starred. AGC's lambda and norm's c share the axis: each is a
    threshold of its own kind, so compare shapes across methods, not positions.
    """
    if baseline is not None and len(baseline):
        b = 100 * np.asarray(baseline, dtype=float)
        ax.axhline(b.mean(), color=color_for("none"), linestyle="--", label=METHOD_NAMES["none"])
        ax.axhspan(b.min(), b.max(), color=color_for("none"), alpha=0.12, lw=0)
    for method, (thresholds, acc) in methods.items():
        t = np.asarray(thresholds, dtype=float)
        order = np.argsort(t)
        rows = [100 * np.asarray(acc[i], dtype=float) for i in order]
        color = color_for(method)
        ax.plot(t[order], [r.mean() for r in rows], "o-", color=color, markersize=3.5,
                label=METHOD_NAMES.get(method, method))
        ax.fill_between(t[order], [r.min() for r in rows], [r.max() for r in rows], color=color, alpha=0.18, lw=0)
    if selected is not None:
        ax.plot(selected[0], 100 * selected[1], "*", color="black", markersize=14, zorder=5, label="selected")
    ax.set_xscale("log")
    ax.set_xlabel("threshold (c; lambda for AGC; log scale)")
    ax.set_ylabel("final test accuracy (%)")
    ax.legend()
    return ax


def grad_norm_histogram(ax: Any, norms: Sequence[float], *, threshold: float | None = None,
                        reference: Sequence[float] | None = None, clipped_share: float | None = None,
                        label: str = "gradient norm before clipping", bins: int = 40, color: str | None = None) -> Any:
    """Histogram of gradient norms on log-spaced bins (norms span decades), with the threshold as a
    vertical line and, in the title, the share of steps clipped. ``reference`` (e.g. the unclipped
    run's norms) is drawn as an outline behind. Non-finite and zero norms are left out."""
    def clean(values: Sequence[float]) -> np.ndarray:
        v = np.asarray(values, dtype=float)
        return v[np.isfinite(v) & (v > 0)]

    main = clean(norms)
    ref = clean(reference) if reference is not None else np.empty(0)
    pooled = np.concatenate([main, ref, [threshold] if threshold and threshold > 0 else []])
    if pooled.size == 0:
        ax.text(0.5, 0.5, "no finite gradient norms", ha="center", transform=ax.transAxes)
        return ax
    lo, hi = np.log10(pooled.min()), np.log10(pooled.max())
    edges = np.logspace(lo - 0.05, hi + 0.05, bins + 1)
    if ref.size:
        ax.hist(ref, bins=edges, histtype="step", color=color_for("none"), label="no clipping")
    ax.hist(main, bins=edges, alpha=0.75, color=color or color_for("norm"), label=label)
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3g}")
    ax.set_xscale("log")
    if hi - lo < 1:
        # At least one decade wide, so a labelled power of ten is always in view.
        mid = (hi + lo) / 2
        ax.set_xlim(10 ** (mid - 0.5), 10 ** (mid + 0.5))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("gradient norm ||g|| (log scale)")
    ax.set_ylabel("steps")
    if clipped_share is not None:
        ax.set_title(f"{100 * clipped_share:.0f}% of steps clipped")
    ax.legend()
    return ax


def clip_rate_curve(ax: Any, clipped: Sequence[bool], *, window: int = 50, color: str | None = None,
                    label: str | None = None) -> Any:
    """Share of steps clipped (%) over training: a ``window``-step running mean of the 0/1 flags."""
    rate = 100 * running_mean(np.asarray(clipped, dtype=float), window)
    ax.plot(np.arange(rate.size), rate, color=color, label=label)
    ax.set_ylim(-3, 103)
    ax.set_xlabel("step")
    ax.set_ylabel(f"steps clipped (%, {window}-step mean)")
    if label:
        legend_below(ax)
    return ax


def step_reduction(ax: Any, norm_before: Sequence[float], norm_after: Sequence[float], clipped: Sequence[bool], *,
                   color: str | None = None) -> Any:
    """The factor clipping shrinks each clipped step by: ``||g_after|| / ||g_before||`` (``= c / ||g||``
    for norm clipping), one dot per clipped step, on a log axis. Unclipped steps (factor 1) are left out."""
    before = np.asarray(norm_before, dtype=float)
    after = np.asarray(norm_after, dtype=float)
    mask = np.asarray(clipped, dtype=bool) & np.isfinite(before) & np.isfinite(after) & (before > 0)
    steps = np.flatnonzero(mask)
    if steps.size == 0:
        ax.text(0.5, 0.5, "no step was clipped", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.scatter(steps, after[mask] / before[mask], s=4, color=color, alpha=0.6)
        _log_y(ax, min_decades=1.0)
    ax.set_xlabel("step")
    ax.set_ylabel("step-size factor ||g'|| / ||g||")
    return ax


def update_ratio_curves(ax: Any, layer_steps: Sequence[int], ratios: Sequence[Sequence[float]],
                        layer_names: Sequence[str], *,
                        reference: tuple[Sequence[int], Sequence[Sequence[float]]] | None = None,
                        max_layers: int = 6) -> Any:
    """Update-to-weight ratio ``||w_after - w_before|| / ||w_before||`` per layer over training, on a log
    axis (Karpathy's diagnostic: around 1e-3 is healthy; far above, steps are too big; far below, the
    layer barely learns). At most ``max_layers`` evenly spread weight tensors are drawn (biases only when
    there is nothing else), coloured shallow to deep; ``reference`` ``(steps, ratios)`` of another run
    (e.g. no clipping) is drawn dotted in the same colours."""
    r = np.asarray(ratios, dtype=float)
    if r.ndim != 2 or r.size == 0:
        ax.text(0.5, 0.5, "no per-layer statistics recorded", ha="center", va="center", transform=ax.transAxes)
        return ax
    weights = [j for j, name in enumerate(layer_names) if not name.endswith("bias")] or list(range(r.shape[1]))
    spread = np.linspace(0, len(weights) - 1, min(max_layers, len(weights))).round().astype(int)
    picks = [weights[i] for i in np.unique(spread)]
    cmap = matplotlib.colormaps["viridis"]
    ref_steps, ref = (np.asarray(reference[0]), np.asarray(reference[1], dtype=float)) if reference else (None, None)
    for k, j in enumerate(picks):
        color = cmap(k / max(len(picks) - 1, 1))
        ax.plot(layer_steps, r[:, j], color=color, label=layer_names[j])
        if ref is not None and ref.ndim == 2 and ref.shape[1] == r.shape[1]:
            ax.plot(ref_steps, ref[:, j], color=color, linestyle=":", alpha=0.8)
    ax.axhline(1e-3, color="black", linewidth=0.8, linestyle="--")
    _log_y(ax, min_decades=1.0)
    ax.set_xlabel("step")
    ax.set_ylabel("||update|| / ||weight||")
    ax.legend(ncol=2, fontsize=7)
    return ax


def display_figure(fig: Any) -> None:
    """Show ``fig`` once in a notebook as a PNG, whatever the matplotlib backend (with ``Agg``, as in
    tests and reports, ``display(fig)`` would show only its repr), then close it so the inline backend
    does not show it again. Outside a notebook kernel it only closes the figure. Returns None, so a
    cell ending with this call does not show the figure a second time as its value."""
    from IPython import get_ipython

    shell = get_ipython()
    if shell is not None and hasattr(shell, "kernel"):
        import io

        from IPython.display import Image, display

        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=fig.dpi)
        display(Image(buffer.getvalue()))
    import matplotlib.pyplot as plt

    plt.close(fig)


# Figures of the toys in gradkit.toys (lessons 01 and 02). Each draws one idea on a given axes.


def _decade_label(value: float, _pos: int) -> str:
    exponent = np.log10(value) if value > 0 else np.nan
    return f"1e{int(round(exponent))}" if np.isfinite(exponent) and abs(exponent - round(exponent)) < 1e-6 else ""


def _log_y(ax: Any, min_decades: float = 0.0) -> None:
    """Log y axis showing at least ``min_decades`` decades (so float noise on a flat curve does not
    look like structure); over two decades or more, label the decades as plain ``1e-5`` and drop
    minor ticks.

    Slider views redraw on every change: mathtext labels and hundreds of minor ticks made each
    redraw about four times slower (0.45 s vs 0.1 s for one panel on this 2-core CPU).
    """
    from matplotlib import ticker

    ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    span = np.log10(hi / lo) if lo > 0 else np.inf
    if span < min_decades:
        pad = 10 ** ((min_decades - span) / 2)
        lo, hi = lo / pad, hi * pad
        ax.set_ylim(lo, hi)
    if lo > 0 and np.log10(hi / lo) >= 2:
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(_decade_label))
        ax.yaxis.set_minor_locator(ticker.NullLocator())


def log_x_ticks(ax: Any) -> None:
    """Tick labels of a log x axis that never collide: over 3 decades or more only the decades (``1e2``),
    below that 1, 2 and 5 times each decade as plain numbers (``2``, ``50``, ``0.5``), no minor labels
    (matplotlib's default labels minor ticks as ``2x10^0``, ``3x10^0``, ... on a short axis, on top of
    each other).

    >>> import matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots()
    >>> _ = ax.plot([1.7, 38.6], [0, 1]); ax.set_xscale("log"); log_x_ticks(ax)
    >>> [t.get_text() for t in ax.get_xticklabels() if 1.7 <= t.get_position()[0] <= 38.6]
    ['2', '5', '10', '20']
    >>> plt.close(fig)
    """
    from matplotlib import ticker

    lo, hi = ax.get_xlim()
    span = np.log10(hi / lo) if lo > 0 and hi > lo else np.inf
    if span >= 3:
        ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0,)))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(_decade_label))
    else:
        ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())


def product_norm_curves(ax: Any, norms: Mapping[float, np.ndarray], width: int) -> Any:
    """``||W_l ... W_1 x||`` against depth ``l`` for each weight scale ``s`` (``W_ij ~ N(0, s^2/width)``).

    ``norms`` maps ``s`` to :func:`gradkit.toys.product_norms` output. Solid: median over trials,
    band: 10-90% of trials, dashed: the typical norm ``exp(l * drift)`` of :func:`gradkit.toys.log_norm_drift`.
    """
    from .toys import log_norm_drift

    cmap = matplotlib.colormaps["coolwarm"]
    scales = sorted(norms)
    for i, s in enumerate(scales):
        n = norms[s]
        depth = np.arange(n.shape[1])
        color = "black" if s == 1.0 else cmap(i / max(1, len(scales) - 1))
        lo, mid, hi = np.quantile(n, [0.1, 0.5, 0.9], axis=0)
        ax.fill_between(depth, lo, hi, color=color, alpha=0.15, linewidth=0)
        ax.plot(depth, mid, color=color, label=f"s={s:g}")
        ax.plot(depth, np.exp(depth * log_norm_drift(s, width)), color=color, linestyle="--", linewidth=1)
    _log_y(ax)
    ax.set_xlabel("depth l (number of matrices)")
    ax.set_ylabel("||W_l ... W_1 x||  (||x|| = 1)")
    ax.set_title(f"random products, W_ij ~ N(0, s^2/{width})")
    ax.legend(title="scale (dashed: exp(l * drift))", ncols=2)
    return ax


def layer_grad_norm_bars(ax: Any, profile: Any, *, title: str | None = None) -> Any:
    """Bars of ``||grad||`` per linear layer of a :class:`gradkit.toys.MLPProfile` (input left, log axis)."""
    g = np.maximum(np.asarray(profile.grad_norm, dtype=float), np.finfo(float).tiny)
    layers = np.arange(1, len(g) + 1)
    colors = ["#1f78b4"] * (len(g) - 1) + ["#999999"]
    # Thick vertical lines instead of ax.bar: one artist instead of one patch per layer redraws
    # twice as fast, which keeps the depth-100 slider responsive.
    bars = ax.vlines(layers, g.min() / 4, g, colors=colors, linewidth=max(1.0, 200.0 / len(g)))
    ax.set_xlim(0.3, len(g) + 0.7)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    _log_y(ax, min_decades=3)
    lo, hi = ax.get_ylim()
    bars.set_segments([[(x, lo), (x, v)] for x, v in zip(layers, g)])
    ax.set_ylim(lo, hi)
    ax.set_xlabel("layer (1 = next to the input; grey = output layer)")
    ax.set_ylabel("||grad|| of the layer")
    s = profile.settings
    init = f"N(0, {s['std']:g}^2)" if s["init"] == "normal" else s["init"]
    extra = "".join([f", {s['norm']}norm" if s["norm"] != "none" else "", ", residual" if s["residual"] else "",
                     f", {spec_label(s['clip'])}" if s["clip"] not in (None, "none") else ""])
    name = title or f"{s['activation']}, {init}{extra}, depth {s['depth']}"
    ax.set_title(f"{name}\nfirst/last hidden layer = {profile.first_last_ratio:.2g}")
    return ax


def activation_histograms(ax: Any, profile: Any, *, layers: int = 4) -> Any:
    """Histograms of the activations of up to ``layers`` evenly spaced hidden layers (after Glorot & Bengio 2010, Fig. 2-4).

    The legend gives each layer's saturated share (see :func:`gradkit.toys.saturated_share`).
    """
    acts = np.asarray(profile.activations)
    depth = acts.shape[0]
    chosen = sorted({int(round(v)) for v in np.linspace(0, depth - 1, min(layers, depth))})
    edges = np.histogram_bin_edges(acts[chosen], bins=40)
    if edges[0] == edges[-1]:
        edges = np.linspace(edges[0] - 0.5, edges[0] + 0.5, 41)
    cmap = matplotlib.colormaps["viridis"]
    what = "dead" if profile.settings["activation"] == "relu" else "saturated"
    for k, layer in enumerate(chosen):
        ax.hist(acts[layer], bins=edges, density=True, histtype="step", linewidth=1.4,
                color=cmap(k / max(1, len(chosen) - 1)),
                label=f"layer {layer + 1}: {100 * profile.saturated[layer]:.0f}% {what}")
    ax.set_xlabel(f"{profile.settings['activation']} activation value")
    ax.set_ylabel("density")
    ax.set_title("activations per layer")
    ax.legend()
    return ax


def grad_norm_profiles(ax: Any, profiles: Mapping[str, Any]) -> Any:
    """Per-layer gradient norms of several :class:`gradkit.toys.MLPProfile` as lines on one log axis.

    The legend gives each profile's first/last-hidden-layer ratio: the slope, which clipping cannot change.
    """
    cmap = matplotlib.colormaps["tab10"]
    for i, (label, p) in enumerate(profiles.items()):
        g = np.maximum(np.asarray(p.grad_norm[:-1], dtype=float), np.finfo(float).tiny)
        clipped = p.settings.get("clip") not in (None, "none")
        ax.plot(np.arange(1, len(g) + 1), g, marker="o", markersize=2.5, color=cmap(i % 10),
                linestyle="--" if clipped else "-", label=f"{label} (first/last {p.first_last_ratio:.2g})")
    _log_y(ax, min_decades=3)
    ax.set_xlabel("hidden layer (1 = next to the input)")
    ax.set_ylabel("||grad|| of the layer")
    ax.set_title("per-layer gradient norms")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return ax


def recurrence_grad_curves(ax: Any, grads: Mapping[str, tuple[float, np.ndarray]]) -> Any:
    """``||dL/dh_{T-k}||`` against steps back ``k`` for several recurrences; dashed: ``rho^k``.

    ``grads`` maps a label to ``(rho, norms)`` with ``norms`` from :func:`gradkit.toys.recurrence_grad_norms`.
    """
    cmap = matplotlib.colormaps["coolwarm"]
    for i, (label, (rho, g)) in enumerate(grads.items()):
        color = cmap(i / max(1, len(grads) - 1))
        k = np.arange(len(g))
        ax.plot(k, np.maximum(g, np.finfo(float).tiny), color=color, label=label)
        ax.plot(k, float(rho) ** k.astype(float), color=color, linestyle="--", linewidth=1)
    _log_y(ax, min_decades=2)
    ax.set_xlabel("steps back in time k")
    ax.set_ylabel("||dL/dh_(T-k)||")
    ax.set_title("gradients through h_t = W h_(t-1) (dashed: rho^k)")
    ax.legend()
    return ax


def clip_2d_arrows(ax: Any, result: Any) -> Any:
    """A 2-D gradient, the value-clipping box and the norm-clipping circle, and both clipped vectors.

    ``result`` is a :class:`gradkit.toys.Clip2D`; the legend gives each method's angle to the gradient.
    """
    c = result.threshold
    ax.add_patch(matplotlib.patches.Rectangle((-c, -c), 2 * c, 2 * c, fill=False, color=METHOD_COLORS["value"], linestyle=":"))
    ax.add_patch(matplotlib.patches.Circle((0, 0), c, fill=False, color=METHOD_COLORS["norm"], linestyle=":"))
    arrows = [(result.grad, METHOD_COLORS["none"], "gradient g"),
              (result.value, METHOD_COLORS["value"], f"value clip (turned {result.value_angle:.1f} deg)"),
              (result.norm, METHOD_COLORS["norm"], f"norm clip (turned {result.norm_angle:.1f} deg)")]
    for vec, color, label in arrows:
        ax.annotate("", xy=tuple(vec), xytext=(0, 0), arrowprops=dict(arrowstyle="-|>", color=color, lw=2))
        ax.plot([], [], color=color, linewidth=2, label=label)
    r = 1.15 * max(float(np.abs(result.grad).max()), c)
    ax.set_xlim(-r, r)
    ax.set_ylim(-r, r)
    ax.set_aspect("equal")
    ax.set_title(f"c = {c:g}: box = value, circle = norm")
    ax.legend(loc="lower left")
    return ax


def cliff_paths(ax: Any, trajectories: Sequence[Any], *, extent: tuple[float, float, float, float] = (-6.0, 6.0, -5.0, 5.0)) -> Any:
    """Gradient-descent paths (:class:`gradkit.toys.Trajectory`) over the contours of :func:`gradkit.toys.cliff_loss`.

    Iterates thrown outside ``extent`` leave the frame; the legend gives how far each path went.
    """
    import torch

    from .toys import cliff_loss

    x0, x1, y0, y1 = extent
    xs, ys = np.linspace(x0, x1, 121), np.linspace(y0, y1, 101)
    grid = torch.tensor(np.stack(np.meshgrid(xs, ys), axis=-1))
    ax.imshow(np.log1p(cliff_loss(grid).numpy()), extent=extent, origin="lower", aspect="auto", cmap="Greys", alpha=0.6)
    for t in trajectories:
        color = color_for(t.spec)
        ax.plot(t.points[:, 0], t.points[:, 1], marker="o", markersize=2.5, linewidth=1, color=color,
                label=f"{t.label}: farthest {t.max_distance:.1f} from start")
    ax.plot(*t.points[0], marker="*", markersize=10, color="black", linestyle="none")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("w1")
    ax.set_ylabel("w2")
    ax.set_title("the cliff: log(1 + loss), start = star")
    ax.legend(loc="lower left")
    return ax


def step_lengths(ax: Any, trajectories: Sequence[Any]) -> Any:
    """``||w_{t+1} - w_t||`` per step of each :class:`gradkit.toys.Trajectory` (log axis)."""
    for t in trajectories:
        color = color_for(t.spec)
        ax.plot(np.arange(1, len(t.step) + 1), np.maximum(t.step, np.finfo(float).tiny), color=color,
                label=f"{t.label}: longest {t.step.max():.2g}")
    _log_y(ax, min_decades=2)
    ax.set_xlabel("step t")
    ax.set_ylabel("||w_(t+1) - w_t||")
    ax.set_title("step lengths")
    ax.legend()
    return ax

# Figures of the CIFAR-10 lessons (03 onwards): the data, and the records of gradkit.train.fit.


def image_grid(images: Any, labels: Sequence[int], classes: Sequence[str], *, per_class: int = 6) -> Any:
    """The first ``per_class`` images of every class, one column per class named at its top.

    ``images``: uint8 ``(N, 3, H, W)`` (a tensor or array), ``labels`` their class indices.
    Returns the figure.
    """
    x = np.asarray(images.cpu() if hasattr(images, "cpu") else images)
    y = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels)
    fig, axes = figure(per_class, len(classes), width=1.05 * len(classes), height=1.05 * per_class + 0.3,
                       layout=None, gridspec_kw={"wspace": 0.05, "hspace": 0.05})
    for c, name in enumerate(classes):
        picks = np.flatnonzero(y == c)[:per_class]
        axes[0, c].set_title(name, fontsize=8, fontweight="normal")
        for r in range(per_class):
            ax = axes[r, c]
            if r < picks.size:
                ax.imshow(x[picks[r]].transpose(1, 2, 0), interpolation="nearest")
            ax.set_axis_off()
    return fig


def training_curves(histories: Sequence[Any], *, window: int = 20) -> Any:
    """Two panels for runs of :func:`gradkit.train.fit`: training loss per step (a ``window``-step
    running mean, :func:`loss_curves`) and accuracy per epoch (test solid, train dashed), one
    colour per clipping method. Returns the figure."""
    fig, axes = figure(1, 2, width=11.0, height=3.6)
    ax_loss, ax_acc = axes[0]
    colors = {h.label: color_for(h.config.get("clip", "none")) for h in histories}
    loss_curves(ax_loss, {h.label: h.loss for h in histories}, colors=colors, window=window)
    for h in histories:
        epochs = np.arange(1, len(h.test_acc) + 1)
        ax_acc.plot(epochs, 100 * np.asarray(h.test_acc), "o-", color=colors[h.label], label=f"{h.label}: test")
        ax_acc.plot(epochs, 100 * np.asarray(h.train_acc), "o--", color=colors[h.label], alpha=0.6,
                    label=f"{h.label}: train")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax_acc.set_xlim(0.5, max([len(h.test_acc) for h in histories] + [1]) + 0.5)
    ax_acc.legend()
    return fig


def grad_norm_trace(ax: Any, norm_before: Sequence[float], *, threshold: float | None = None,
                    clipped: Sequence[bool] | None = None, color: str | None = None, label: str | None = None) -> Any:
    """The gradient norm before clipping at every step, on a log axis, with the threshold ``c`` as a
    dashed line: the steps above the line are the ones clipping shortened (to length ``c``). With
    ``clipped``, the title gives the share of steps clipped."""
    v = np.asarray(norm_before, dtype=float)
    ax.plot(np.arange(v.size), v, color=color, linewidth=0.8, label=label)
    if threshold is not None:
        ax.axhline(threshold, color="black", linestyle="--", linewidth=1.2, label=f"threshold c={threshold:g}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("||g|| before clipping (log scale)")
    if clipped is not None and len(clipped):
        ax.set_title(f"{100 * float(np.mean(clipped)):.0f}% of steps clipped")
    legend_below(ax)  # the threshold line crosses the whole panel: a legend inside would sit on it
    return ax


# Figures of lessons 06 (remedies side by side) and 07 (claims about clipping put to the test).


def remedy_bars(ax_acc: Any, ax_norm: Any, labels: Sequence[str], histories: Sequence[Any], *,
                colors: Sequence[str] | None = None) -> Any:
    """One row per run, top to bottom: final validation accuracy (%) as a bar on ``ax_acc`` (a
    diverged run gets no bar but a red ``x`` and "diverged at step k") and the largest gradient
    norm before clipping as a dot on ``ax_norm`` (log axis, where a bar's length would mean
    nothing: exploding runs stand out by decades)."""
    y = np.arange(len(labels))[::-1]
    colors = list(colors) if colors is not None else ["#1b9e77"] * len(labels)
    for yi, h, color in zip(y, histories, colors):
        acc = h.final_val_acc
        if acc is None:
            ax_acc.plot(0, yi, "x", color="#d62728", markersize=8, mew=2)
            text = f"diverged at step {h.diverged_step}" if h.diverged else "no validation split"
            ax_acc.text(1, yi, text, va="center", fontsize=7, color="#d62728")
        else:
            ax_acc.barh(yi, 100 * acc, color=color, height=0.7)
            ax_acc.text(100 * acc + 0.5, yi, f"{100 * acc:.1f}", va="center", fontsize=7)
        norms = np.asarray(h.grad_norm_before, dtype=float)
        finite = norms[np.isfinite(norms)]
        peak = float(finite.max()) if finite.size else np.nan
        if np.isfinite(peak) and peak > 0:
            ax_norm.plot(peak, yi, "o", color=color, markersize=6)
        if h.diverged:
            ax_norm.plot(peak if np.isfinite(peak) and peak > 0 else 1.0, yi, "x", color="#d62728", markersize=8, mew=2)
    ax_acc.axvline(10, color="black", linestyle=":", linewidth=1, label="chance (10%)")
    ax_acc.set_yticks(y, labels)
    ax_acc.set_xlabel("final validation accuracy (%)")
    ax_acc.set_xlim(0, 100)
    ax_acc.legend(loc="upper right", fontsize=7)
    ax_norm.set_yticks(y, [])
    ax_norm.set_ylim(ax_acc.get_ylim())
    ax_norm.set_xscale("log")
    log_x_ticks(ax_norm)
    ax_norm.grid(True, axis="y", linestyle=":", linewidth=0.5)
    ax_norm.set_xlabel("largest ||g|| before clipping (log)")
    return ax_acc


def accuracy_curves(ax: Any, curves: Mapping[str, Sequence[float]], *, colors: Mapping[str, str] | None = None,
                    xlabel: str = "epoch", ylabel: str = "validation accuracy (%)", title: str | None = None) -> Any:
    """Held-out accuracy (%) at each checkpoint (1, 2, ...) for each run (label -> accuracies in
    [0, 1]; a diverged run's curve stops with an ``x``), with chance (10%) dotted; ``ylabel``
    names the split."""
    for label, acc in curves.items():
        v = 100 * np.asarray(acc, dtype=float)
        x = np.arange(1, v.size + 1)
        line, = ax.plot(x, v, "o-", markersize=3.5, color=(colors or {}).get(label), label=label)
        if v.size and not np.isfinite(v[-1]):
            last = np.flatnonzero(np.isfinite(v))
            if last.size:
                ax.plot(x[last[-1]], v[last[-1]], "x", color=line.get_color(), markersize=9, mew=2)
    ax.axhline(10, color="black", linestyle=":", linewidth=1)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7, loc="best")
    return ax


def smoothness_scatter(ax: Any, grad_norm: Sequence[float], smoothness: Sequence[float], *,
                       rho: float | None = None, color: str | None = None, label: str | None = None) -> Any:
    """Zhang et al. (2020)'s picture: the local smoothness L_t against the gradient norm ||g_t||,
    one dot per step, log-log; a positive slope means the loss is sharpest where the gradient
    is largest. ``rho`` (Spearman) goes in the legend."""
    g, s = np.asarray(grad_norm, dtype=float), np.asarray(smoothness, dtype=float)
    keep = np.isfinite(g) & np.isfinite(s) & (g > 0) & (s > 0)
    text = label or "steps"
    if rho is not None:
        text += f" (Spearman rho = {rho:.2f})"
    ax.scatter(g[keep], s[keep], s=9, alpha=0.6, color=color, label=text)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("gradient norm ||g_t|| (log)")
    ax.set_ylabel("local smoothness L_t (log)")
    ax.legend()
    return ax


def update_angle_bars(ax: Any, optimizers: Sequence[str], specs: Sequence[str], angles: Any) -> Any:
    """Grouped bars: for each clip spec (x) and optimiser (colour), the median angle in degrees
    between the update with the clipped and with the raw gradient (``angles`` (O, S), nan where
    the spec never clipped: no bar, "not clipped" written). A bar at 0 means the clip only
    shortened the update."""
    a = np.asarray(angles, dtype=float)
    x = np.arange(len(specs))
    width = 0.8 / max(1, len(optimizers))
    palette = ["#4d4d4d", "#1f78b4", "#e6ab02", "#7570b3"]
    top = np.nanmax(a) if np.isfinite(a).any() else 1.0
    for o, opt in enumerate(optimizers):
        xs = x - 0.4 + width * (o + 0.5)
        ax.bar(xs, np.nan_to_num(a[o], nan=0.0), width=width * 0.95, color=palette[o % len(palette)], label=opt)
        for xi, v in zip(xs, a[o]):
            text = "not clipped" if not np.isfinite(v) else f"{v:.2g}"
            ax.text(xi, (v if np.isfinite(v) else 0) + 0.02 * top, text, ha="center", va="bottom", fontsize=7,
                    rotation=90 if not np.isfinite(v) else 0)
    ax.set_xticks(x, [spec_label(s) for s in specs])
    ax.set_ylim(0, 1.25 * top + 1e-9)
    ax.set_ylabel("angle(update clipped, update raw) (degrees)")
    ax.legend(loc="upper left", fontsize=8)
    return ax


def dead_unit_map(ax: Any, steps: Sequence[int], share: Any, *, title: str) -> Any:
    """Dead ReLU units per layer (rows, 0 = first) and step (columns) as a heat map, in % of the layer's
    channels (``share`` (S, L) from ``monitor.DeadUnitHistory``); returns the image for a colour bar.

    >>> import matplotlib.figure
    >>> ax = matplotlib.figure.Figure().subplots()
    >>> dead_unit_map(ax, [0, 1, 2], np.array([[0.0, 1.0], [0.5, 1.0], [1.0, 1.0]]), title="t").get_array().max()
    np.float64(100.0)
    """
    share = np.asarray(share, dtype=float)
    image = ax.imshow(100 * share.T, aspect="auto", origin="lower", cmap="magma", vmin=0, vmax=100,
                      extent=(steps[0], steps[-1] + 1, -0.5, share.shape[1] - 0.5))
    ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # layers are whole numbers
    ax.set_xlabel("step")
    ax.set_ylabel("ReLU layer (0: first)")
    ax.set_title(title, fontsize=10)
    return image


def train_test_bars(ax: Any, train_acc: Mapping[str, Sequence[float]], val_acc: Mapping[str, Sequence[float]]) -> Any:
    """Clean-train and validation accuracy (%) side by side per run, mean over seeds with the
    seed spread (sd) as error bars, and the mean gap (train - validation, points) above."""
    labels = list(train_acc)
    x = np.arange(len(labels))
    tr = [100 * np.atleast_1d(np.asarray(train_acc[k], dtype=float)) for k in labels]
    va = [100 * np.atleast_1d(np.asarray(val_acc[k], dtype=float)) for k in labels]

    def sd(v: np.ndarray) -> float:
        return float(v.std(ddof=1)) if v.size > 1 else 0.0

    tr_m, va_m = np.array([v.mean() for v in tr]), np.array([v.mean() for v in va])
    tr_s, va_s = np.array([sd(v) for v in tr]), np.array([sd(v) for v in va])
    ax.bar(x - 0.2, tr_m, width=0.4, yerr=tr_s, capsize=3, color="#1f78b4", label="train (clean images)")
    ax.bar(x + 0.2, va_m, width=0.4, yerr=va_s, capsize=3, color="#ff7f00", label="validation")
    tops = np.maximum(tr_m + tr_s, va_m + va_s)
    for xi, a, b, top in zip(x, tr_m, va_m, tops):
        ax.text(xi, top + 1.5, f"gap {a - b:.1f}", ha="center", fontsize=8)
    ax.set_xticks(x, labels)
    ax.set_ylim(0, min(110.0, tops.max() + 20))
    ax.set_ylabel("accuracy (%), mean ± sd over seeds")
    ax.legend(loc="upper right", fontsize=8)
    return ax
