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

from gradkit.clip import (  # noqa: F401
    AutoClip,
    ClipResult,
    Clipper,
    adaptive_clip_grad,
    clip_grad_norm,
    clip_grad_norm_per_tensor,
    clip_grad_scaled_value,
    clip_grad_value,
    clipper,
    grad_norm,
)
from gradkit.monitor import GradMonitor, MonitorHistory  # noqa: F401
from gradkit.data import Dataset, cifar10, synthetic  # noqa: F401
from gradkit.models import PlainCNN, ResNet, SeedCNN, build_model, count_params, flops_per_image  # noqa: F401
from gradkit.train import DeviceLoader, History, fit  # noqa: F401
from gradkit.runs import load_sweep, sweep  # noqa: F401
from gradkit.suggest import ThresholdSuggestion, suggest_threshold  # noqa: F401
from gradkit.remedies import Constraint, clip_weights_, constraint, max_norm_  # noqa: F401
