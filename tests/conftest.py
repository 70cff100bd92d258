"""Test-wide settings: static figures, a non-interactive backend, the smoke profile by default."""

import os

# Set before nbval starts kernels: they inherit this process's environment.
os.environ["GRADKIT_HEADLESS"] = "1"
os.environ.setdefault("GRADKIT_PROFILE", "smoke")
os.environ.setdefault("MPLBACKEND", "Agg")
# No test opens a network connection: the doctor's download probe and the dataset download stay off.
os.environ["GRADKIT_OFFLINE"] = "1"
