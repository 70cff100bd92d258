"""The argument checks, constants and labels every gradkit module shares, written once.

Each check raises ``ValueError`` naming the argument, the accepted values and what was given,
before any work is done, and returns the value it accepted. This module imports nothing heavy
(no torch, no matplotlib), so every layer of the kit can use it.

>>> check_int("epochs", 3), check_positive("lr", 0.1), spec_label("norm:1.0")
(3, 0.1, 'norm clipping, c=1')
>>> check_int("epochs", 0)
Traceback (most recent call last):
...
ValueError: epochs must be an int >= 1, got 0
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Sequence

CHANCE = 0.1  # CIFAR-10 accuracy of a uniform guess: 1 of 10 classes

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


def check_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int when it is an integer (Python or NumPy, never a bool) >= ``minimum``.

    >>> check_int("width", 4, minimum=1)
    4
    """
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_positive(name: str, value: Any) -> float:
    """``value`` as a float when it is a finite real number > 0 (never a bool).

    >>> check_positive("c", 2)
    2.0
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    """``value`` when it is ``True`` or ``False``: a string such as ``"no"`` is not taken as truthy.

    >>> check_bool("augment", False)
    False
    """
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def check_choice(name: str, value: Any, accepted: Sequence[Any]) -> Any:
    """``value`` when it is one of ``accepted``; the error lists them.

    >>> check_choice("optimizer", "sgd", ("sgd", "adam"))
    'sgd'
    """
    if value not in accepted:
        raise ValueError(f"{name}={value!r} is not accepted; accepted values: {', '.join(map(str, accepted))}")
    return value


def describe(value: Any) -> str:
    """A short description of what was passed, for error messages: dtype and shape of a tensor or
    array, else the type's name.

    >>> describe([1, 2])
    'list'
    """
    if hasattr(value, "dtype") and hasattr(value, "shape"):
        kind = "tensor" if type(value).__module__.startswith("torch") else "array"
        return f"{value.dtype} {kind} of shape {tuple(value.shape)}"
    return type(value).__name__


def spec_label(spec: str | float | None) -> str:
    """A legend label that names the method and the threshold of a clip spec (thresholds as ``%g``).

    >>> spec_label("agc:0.01"), spec_label(None), spec_label(0.5)
    ('AGC, lambda=0.01', 'no clipping', 'norm clipping, c=0.5')
    """
    if spec is None:
        return METHOD_NAMES["none"]
    if not isinstance(spec, str):
        return f"{METHOD_NAMES['norm']}, c={float(spec):.3g}"
    method, _, value = spec.partition(":")
    name = METHOD_NAMES.get(method, method)
    if not value:
        return name
    symbol = {"agc": "lambda", "auto": "p"}.get(method, "c")
    return f"{name}, {symbol}={float(value):.3g}"
