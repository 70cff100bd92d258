"""gradkit: exploding and vanishing gradients and gradient clipping, taught with measurements.

The names most lessons need are importable from here:

- clipping (:mod:`gradkit.clip`): ``grad_norm``, ``clip_grad_value``, ``clip_grad_norm``,
  ``clip_grad_norm_per_tensor``, ``clip_grad_scaled_value``, ``adaptive_clip_grad``, ``AutoClip``,
  ``clipper("norm:1.0")``;
- diagnostics (:mod:`gradkit.monitor`): ``GradMonitor``;
- data and models (:mod:`gradkit.data`, :mod:`gradkit.models`): ``cifar10``, ``synthetic``,
  ``SeedCNN``, ``PlainCNN``, ``ResNet``;
- training (:mod:`gradkit.train`, :mod:`gradkit.runs`, :mod:`gradkit.suggest`, :mod:`gradkit.remedies`): ``fit``,
  ``sweep``, ``suggest_threshold``, ``constraint("max_norm:3")``.

Figures, widgets, toys, sweeps and reports live in their own modules (``gradkit.plots``,
``gradkit.widgets``, ``gradkit.toys``, ``gradkit.sweeps``, ``gradkit.report``).

>>> import torch, gradkit
>>> p = torch.zeros(2, requires_grad=True); p.grad = torch.tensor([3.0, 4.0])
>>> float(gradkit.clip_grad_norm(p, max_norm=1.0).norm_before), [round(g, 4) for g in p.grad.tolist()]
(5.0, [0.6, 0.8])
"""

__version__ = "0.1.0"

import importlib
from typing import Any

# Each public name and the module that holds it. Modules load on first use of a name, so that
# `import gradkit` stays cheap and `python -m gradkit doctor` runs even when torch is broken.
_EXPORTS = {
    "gradkit.clip": ("AutoClip", "ClipResult", "Clipper", "adaptive_clip_grad", "clip_grad_norm",
                     "clip_grad_norm_per_tensor", "clip_grad_scaled_value", "clip_grad_value", "clipper", "grad_norm"),
    "gradkit.monitor": ("GradMonitor", "MonitorHistory"),
    "gradkit.data": ("Dataset", "cifar10", "synthetic"),
    "gradkit.models": ("PlainCNN", "ResNet", "SeedCNN", "build_model", "count_params", "flops_per_image"),
    "gradkit.train": ("DeviceLoader", "History", "fit"),
    "gradkit.runs": ("load_sweep", "sweep"),
    "gradkit.suggest": ("ThresholdSuggestion", "suggest_threshold"),
    "gradkit.remedies": ("Constraint", "clip_weights_", "constraint", "max_norm_"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    try:  # submodules: gradkit.plots, gradkit.toys, ...
        return importlib.import_module(f"gradkit.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"gradkit.{name}":
            raise
        raise AttributeError(f"module 'gradkit' has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
