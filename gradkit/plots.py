"""One figure style for the whole kit, and the figures the lessons share.

Every clipping method keeps one colour in every figure (:func:`color_for`), every legend names
the setting (:func:`spec_label`), and gradient norms, which span decades, go on log axes.

>>> spec_label("norm:1.0")
'norm clipping, c=1'
"""

from __future__ import annotations

from typing import Any

import matplotlib

import matplotlib.pyplot as plt

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

METHOD_NAMES: dict[str, str] = {
    "none": "no clipping",
    "value": "value clipping",
    "norm": "norm clipping",
    "norm_inf": "inf-norm clipping",
    "tensor_norm": "per-tensor norm clipping",
    "scaled_value": "c/sqrt(n) value clipping",
    "agc": "AGC",
    "auto": "AutoClip",
}


def use_style() -> None:
    """Apply the kit's matplotlib style (called once when :mod:`gradkit.plots` is imported)."""
    matplotlib.rcParams.update(STYLE)


def figure(nrows: int = 1, ncols: int = 1, *, width: float | None = None, height: float | None = None, **kw: Any):
    """``plt.subplots`` with sizes that scale with the grid; returns ``(fig, axes)``."""
    w = width if width is not None else min(4.2 * ncols, 14.0)
    h = height if height is not None else 3.3 * nrows
    kw.setdefault("layout", "constrained")
    return plt.subplots(nrows, ncols, figsize=(w, h), squeeze=False if (nrows > 1 or ncols > 1) else True, **kw)


def color_for(method: str) -> str:
    """The colour of a clipping method (``"norm"``, ``"value"``, ...) in every figure."""
    return METHOD_COLORS.get(method.split(":")[0], "#999999")


def _fmt(value: float) -> str:
    return f"{value:g}"


def spec_label(spec: str | float | None) -> str:
    """A legend label that names the method and the threshold of a clip spec.

    >>> spec_label("agc:0.01"), spec_label(None)
    ('AGC, lambda=0.01', 'no clipping')
    """
    if spec is None:
        return METHOD_NAMES["none"]
    if not isinstance(spec, str):
        return f"{METHOD_NAMES['norm']}, c={_fmt(float(spec))}"
    method, _, value = spec.partition(":")
    name = METHOD_NAMES.get(method, method)
    if not value:
        return name
    symbol = {"agc": "lambda", "auto": "p"}.get(method, "c")
    return f"{name}, {symbol}={_fmt(float(value))}"


use_style()
