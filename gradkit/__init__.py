"""gradkit."""

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
from gradkit.train import DeviceLoader, History, fit, load_sweep, sweep  # noqa: F401
from gradkit.suggest import ThresholdSuggestion, suggest_threshold  # noqa: F401
from gradkit.remedies import Constraint, clip_weights_, constraint, max_norm_  # noqa: F401
