"""Sliders for the lessons, each with a static fallback for headless runs.

Every interactive view in the kit is built the same way: a function that draws one setting,
ipywidgets controls that call it on every change (no button for toy computations), and a
static grid of representative settings that :func:`show` draws instead when no widget
front-end will render (papermill reports, nbval in CI).
"""

from __future__ import annotations

from typing import Any, Callable

from .runtime import headless


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
