"""Where and how a lesson runs: the profile, seeds, the device, headless mode.

Every notebook reads its sizes from a *profile* so the same lesson runs in seconds in CI
(``smoke``), in minutes on a laptop (``cpu``, the default) and at full size on a GPU (``full``).

>>> pick("smoke", smoke=256, cpu=5000, full=50000)
256
"""

from __future__ import annotations

import os
import platform
import random
from typing import Any, TypeVar

import torch

from .checks import check_seed

PROFILES = ("smoke", "cpu", "full")
T = TypeVar("T")


def get_profile(profile: str | None = None) -> str:
    """Return the profile to run with: ``profile``, else ``$GRADKIT_PROFILE``, else ``"cpu"``.

    >>> get_profile("smoke")
    'smoke'
    """
    name = profile if profile is not None else os.environ.get("GRADKIT_PROFILE") or "cpu"
    if name not in PROFILES:
        source = "profile" if profile is not None else "GRADKIT_PROFILE"
        raise ValueError(f"{source}={name!r} is not a profile; accepted values: {', '.join(PROFILES)}")
    return name


def pick(profile: str | None, *, smoke: T, cpu: T, full: T) -> T:
    """Return the value that belongs to ``profile`` (resolved with :func:`get_profile`)."""
    return {"smoke": smoke, "cpu": cpu, "full": full}[get_profile(profile)]


def set_seed(seed: int) -> torch.Generator:
    """Seed Python's and torch's generators (CPU and CUDA); return a fresh seeded generator.
    ``seed``: an int from 0 to :data:`gradkit.checks.SEED_MAX`.

    >>> a = torch.rand(2, generator=set_seed(0)); b = torch.rand(2, generator=set_seed(0))
    >>> bool((a == b).all())
    True
    """
    seed = check_seed("seed", seed)
    random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` means CUDA when a GPU is present, else the CPU; anything else is passed to torch.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device={device!r} is not a device; accepted values: 'auto', 'cpu', 'cuda', 'cuda:N'") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} asks for CUDA but torch sees no GPU; use device='auto' or 'cpu'")
    return dev


def check_device(device: str | torch.device) -> str | torch.device:
    """``device`` when torch can name it (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, a
    ``torch.device``); whether this machine has it is left to :func:`resolve_device` where the run
    trains (a sweep's workers may be other machines).

    >>> check_device("cuda:1")
    'cuda:1'
    """
    if device == "auto" or isinstance(device, torch.device):
        return device
    try:
        torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device={device!r} is not a device; accepted values: 'auto', 'cpu', 'cuda', 'cuda:N'") from err
    return device


def device_name(device: str | torch.device = "auto") -> str:
    """A human name for the device, e.g. ``"NVIDIA H100 80GB HBM3"`` or ``"CPU (2 threads)"``."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"CPU {platform.machine()} ({torch.get_num_threads()} threads)"


def headless() -> bool:
    """True when figures must be static because no widget front-end will render (papermill, nbval).

    ``gradkit report``, the Makefile and the test suite set ``GRADKIT_HEADLESS=1``.
    """
    return os.environ.get("GRADKIT_HEADLESS", "0") == "1"


def describe_run(profile: str | None = None, device: str | torch.device = "auto", **sizes: Any) -> str:
    """The line a notebook prints to say what it ran with.

    >>> describe_run("smoke", "cpu", epochs=1).startswith("profile=smoke")
    True
    """
    parts = [f"profile={get_profile(profile)}", f"device={device_name(device)}", f"torch={torch.__version__}"]
    parts += [f"{k}={v}" for k, v in sizes.items()]
    return " | ".join(parts)
