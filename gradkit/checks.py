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
from collections.abc import Sequence
from typing import Any

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


def check_int(name: str, value: Any, minimum: int = 1, maximum: int | None = None, optional: bool = False) -> Any:
    """``value`` as an int when it is an integer (Python or NumPy, never a bool) from ``minimum`` to
    ``maximum`` (no upper bound when None); ``optional=True`` also accepts None (and returns it).

    >>> check_int("width", 4, minimum=1), check_int("subset", None, optional=True)
    (4, None)
    >>> check_int("val", 30, minimum=0, maximum=19)
    Traceback (most recent call last):
    ...
    ValueError: val must be an int from 0 to 19, got 30
    """
    if optional and value is None:
        return None
    if (not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum
            or (maximum is not None and value > maximum)):
        accepted = f"an int >= {minimum}" if maximum is None else f"an int from {minimum} to {maximum}"
        raise ValueError(f"{name} must be {'None or ' if optional else ''}{accepted}, got {value!r}")
    return int(value)


# torch.manual_seed takes seeds up to 2^64 - 1; negative ones would map onto positive ones there.
SEED_MAX = 2**64 - 1


def check_seed(name: str, value: Any) -> int:
    """``value`` when it is a seed every generator of the kit takes: an int from 0 to :data:`SEED_MAX`.

    >>> check_seed("seed", 3)
    3
    """
    return check_int(name, value, minimum=0, maximum=SEED_MAX)


def check_positive(name: str, value: Any) -> float:
    """``value`` as a float when it is a finite real number > 0 (never a bool).

    >>> check_positive("c", 2)
    2.0
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_number(name: str, value: Any, minimum: float | None = 0.0, below: float | None = None,
                 maximum: float | None = None) -> float:
    """``value`` as a float when it is a finite real number (never a bool) with ``minimum <= value``
    (no lower bound when None) and, when given, ``value < below`` or ``value <= maximum``.

    >>> check_number("weight_decay", 0), check_number("momentum", 0.9, below=1.0), check_number("q", 1, maximum=1)
    (0.0, 0.9, 1.0)
    >>> check_number("momentum", 1.0, below=1.0)
    Traceback (most recent call last):
    ...
    ValueError: momentum must be a finite number in [0, 1), got 1.0
    """
    if minimum is None:
        accepted, low, over = "", -math.inf, lambda v: False
    elif below is not None:
        accepted, low, over = f" in [{minimum:g}, {below:g})", minimum, lambda v: v >= below
    elif maximum is not None:
        accepted, low, over = f" in [{minimum:g}, {maximum:g}]", minimum, lambda v: v > maximum
    else:
        accepted, low, over = f" >= {minimum:g}", minimum, lambda v: False
    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)
            or value < low or over(value)):
        raise ValueError(f"{name} must be a finite number{accepted}, got {value!r}")
    return float(value)


def check_list(name: str, values: Any) -> list[Any]:
    """``values`` as a list when it is a non-empty sequence (a list, tuple, range or 1-d array; not a
    string) that names each value once.

    >>> check_list("seeds", (0, 1))
    [0, 1]
    >>> check_list("seeds", [0, 0])
    Traceback (most recent call last):
    ...
    ValueError: seeds lists 0 more than once; list each value once
    """
    if getattr(values, "ndim", None) == 1 and not isinstance(values, Sequence):  # a NumPy or torch vector
        values = list(values)
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not len(values):
        raise ValueError(f"{name} must be a non-empty list, got {values!r}")
    repeated = sorted({repr(v) for v in values if list(values).count(v) > 1})
    if repeated:
        raise ValueError(f"{name} lists {', '.join(repeated)} more than once; list each value once")
    return list(values)


def check_thresholds(name: str, values: Any, also: str = "") -> list[float]:
    """``values`` as floats when it is a non-empty list of finite numbers > 0, each listed once;
    ``also`` names what else the caller accepts, for the message.

    >>> check_thresholds("thresholds", [1, 0.5])
    [1.0, 0.5]
    """
    values = check_list(name, values)
    for value in values:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be numbers > 0{also}; got {value!r}")
    return [float(v) for v in values]


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


def plain(value: Any) -> Any:
    """``value`` with every number as a plain Python ``int`` or ``float`` (a NumPy or other scalar the
    checks accept is converted), inside dicts, lists and tuples too, so it can be written as JSON
    and hashed as the same number written plainly. Other values are returned as they are.

    >>> import numpy as np
    >>> plain({"lr": np.float64(0.5), "epochs": np.int64(2), "amp": False, "model_kw": {"depth": np.int32(8)}})
    {'lr': 0.5, 'epochs': 2, 'amp': False, 'model_kw': {'depth': 8}}
    """
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
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
