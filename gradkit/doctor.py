"""``python -m gradkit doctor``: is this machine ready for the lessons?

Each check prints ``[OK]`` or ``[FAIL]`` with what it found and, on a failure, the one-line fix.
The command exits non-zero when any check fails, so scripts can stop early.
"""

from __future__ import annotations

import importlib
import os
import socket
import sys
from dataclasses import dataclass
from typing import Callable

MIN_PYTHON = (3, 10)
CIFAR10_HOST = ("www.cs.toronto.edu", 443)


@dataclass
class Check:
    """One line of the doctor's report."""

    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        mark = "[OK]  " if self.ok else "[FAIL]"
        text = f"{mark} {self.name}: {self.detail}"
        return text if self.ok or not self.fix else f"{text}\n       fix: {self.fix}"


def check_python() -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    ok = sys.version_info[:2] >= MIN_PYTHON
    return Check("Python", ok, version, "install Python >= 3.10 and re-run `make`")


# What the kit uses of each package: a module that imports but lacks these (a stub, a file that
# shadows the package, a broken install) fails the check.
USED: dict[str, tuple[str, ...]] = {
    "torch": ("nn.Module", "nn.utils.clip_grad_norm_", "func.functional_call", "_foreach_norm", "optim.SGD"),
    "torchvision": ("datasets.CIFAR10",),
    "ipywidgets": ("FloatLogSlider", "FloatSlider", "Dropdown", "VBox", "HBox", "Output"),
    "jupyterlab_widgets": (),
    "numpy": ("ndarray", "asarray", "quantile", "isfinite", "linalg.norm", "random.default_rng"),
    "matplotlib": ("colormaps", "rcParams", "rc_context", "figure.Figure", "axes.Axes", "patches.Rectangle",
                   "ticker.MaxNLocator", "ticker.FuncFormatter", "pyplot.subplots", "pyplot.close"),
    "PIL": ("Image.open", "Image.fromarray", "Image.DecompressionBombError"),
    "nbformat": ("read", "write", "writes", "from_dict", "NotebookNode"),
    "papermill": ("execute_notebook", "inspect_notebook", "exceptions.PapermillExecutionError"),
}


def _module_check(name: str, module: str, fix: str) -> Check:
    try:
        mod = importlib.import_module(module)
    except (Exception, SystemExit) as err:  # any import failure is the user's problem to see, not a crash
        return Check(name, False, f"cannot import {module} ({type(err).__name__}: {err})", fix)
    missing = []
    for attr in USED.get(module, ()):
        obj: object = mod
        for part in attr.split("."):
            try:
                obj = getattr(obj, part) if hasattr(obj, part) else importlib.import_module(f"{obj.__name__}.{part}")  # type: ignore[attr-defined]
            except (Exception, SystemExit):
                missing.append(attr)
                break
    where, version = _describe(mod)
    if missing:
        return Check(name, False, f"{module} at {where} lacks {', '.join(missing)}", fix)
    return Check(name, True, f"{version} ({where})")


def _describe(mod: object) -> tuple[str, str]:
    """A module's file and version, as text, read so that a stub's ``__getattr__`` cannot raise out."""
    where = str(getattr(mod, "__dict__", {}).get("__file__") or "no file")
    try:
        version = str(getattr(mod, "__version__", "installed"))
    except (Exception, SystemExit):  # a stub's __getattr__ may raise anything
        version = "unknown version"
    return where, version


def check_torch() -> Check:
    return _module_check("torch", "torch", "run `make` (it installs the kit with `pip install -e '.[dev]'`)")


def check_torchvision() -> Check:
    return _module_check("torchvision", "torchvision", "run `make`, or `pip install torchvision` matching your torch")


def check_numpy() -> Check:
    return _module_check("numpy", "numpy", "run `make`, or `pip install 'numpy>=1.24'`")


def check_matplotlib() -> Check:
    return _module_check("matplotlib", "matplotlib", "run `make`, or `pip install 'matplotlib>=3.7'`")


def check_pillow() -> Check:
    return _module_check("Pillow", "PIL", "run `make`, or `pip install 'pillow>=9.0'` (it reads the image folders)")


def check_nbformat() -> Check:
    return _module_check("nbformat", "nbformat", "run `make` (Jupyter needs nbformat to open the lessons)")


def check_papermill() -> Check:
    return _module_check("papermill", "papermill", "`python -m gradkit report` runs the lessons with papermill: "
                         "run `make`, or `pip install 'gradkit[dev]'`")


def check_device() -> Check:
    try:
        from .runtime import device_name, resolve_device

        dev = resolve_device("auto")
    except (Exception, SystemExit) as err:
        return Check("device", False, f"torch unusable ({type(err).__name__}: {err})", "fix the torch check first")
    note = "" if dev.type == "cuda" else " (no GPU found: lessons use the CPU-sized `cpu` profile)"
    return Check("device", True, f"{dev.type}: {device_name(dev)}{note}")


def _host_reachable(host: tuple[str, int], timeout: float = 3.0) -> bool:
    # GRADKIT_OFFLINE=1 skips the probe: offline machines and the test suite make no connection at all.
    if os.environ.get("GRADKIT_OFFLINE") == "1":
        return False
    try:
        with socket.create_connection(host, timeout=timeout):
            return True
    except OSError:
        return False


def check_cifar10(reachable: Callable[[], bool] = lambda: _host_reachable(CIFAR10_HOST)) -> Check:
    try:
        from .data import cifar10, find_cifar10
    except (Exception, SystemExit) as err:
        return Check("CIFAR-10", False, f"cannot load gradkit.data ({type(err).__name__}: {err})",
                     "fix the torch check first")
    found = find_cifar10()
    if found:
        # Open it for real: a truncated archive or a missing split fails here, not in a lesson.
        try:
            data = cifar10(download=False, device="cpu", subset=10, test_subset=10, val=0)
        except (Exception, SystemExit) as err:
            return Check("CIFAR-10", False, f"{found}: {err}",
                         "point GRADKIT_DATA at a complete copy (both train/ and test/), or delete it to download again")
        return Check("CIFAR-10", True, f"{data.name} at {found}: read a sample of {len(data.train_y)} training "
                                       f"and {len(data.test_y)} test images")
    if reachable():
        return Check("CIFAR-10", True, "not on disk yet; torchvision will download it (170 MB) on first use")
    return Check(
        "CIFAR-10", False, "not found and the download server cannot be reached",
        "set GRADKIT_DATA to a folder holding cifar-10-batches-py/, train/ and test/ image folders, "
        "or a .tar.gz of them",
    )


def check_kernel() -> Check:
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        specs = KernelSpecManager().find_kernel_specs()
    except Exception as err:
        return Check("Jupyter kernel", False, f"jupyter_client unusable ({err})", "run `make` to install the dev extras")
    if "python3" not in specs:
        return Check("Jupyter kernel", False, "no 'python3' kernel", "run `python -m ipykernel install --user`")
    return Check("Jupyter kernel", True, f"python3 at {specs['python3']}")


def check_widgets() -> Check:
    widgets = _module_check("ipywidgets", "ipywidgets", "run `make` (installs ipywidgets)")
    if not widgets.ok:
        return widgets
    front = _module_check("ipywidgets front-end", "jupyterlab_widgets", "pip install jupyterlab_widgets")
    if not front.ok:
        return Check("ipywidgets front-end", False, "ipywidgets installed but JupyterLab's widget extension is missing",
                     front.fix)
    return Check("ipywidgets front-end", True, f"ipywidgets {widgets.detail}, jupyterlab_widgets {front.detail}")


def check_shipped() -> Check:
    """The shipped sweep and lessons (:mod:`gradkit.shipped`): found, and how many runs and lessons."""
    from .shipped import NOTEBOOKS, RESULTS, locate

    found = []
    for kind, noun in ((RESULTS, "sweep runs"), (NOTEBOOKS, "lessons")):
        fix = (f"set {kind.env} (or pass {kind.option}) to a checkout's {kind.folder}/ folder, "
               "or install gradkit from its repository (`pip install .` ships both)")
        try:
            folder = locate(kind)
        except (ValueError, FileNotFoundError) as err:
            return Check("shipped runs and lessons", False, str(err), fix)
        count = len(list(folder.glob(kind.pattern)))
        if not count:
            return Check("shipped runs and lessons", False, f"{folder} holds none of {kind.holds}", fix)
        found.append(f"{count} {noun} in {folder}")
    return Check("shipped runs and lessons", True, "; ".join(found))


CHECKS: tuple[Callable[[], Check], ...] = (
    check_python, check_torch, check_torchvision, check_numpy, check_matplotlib, check_pillow, check_device,
    check_cifar10, check_kernel, check_nbformat, check_widgets, check_papermill, check_shipped,
)


def run_checks(checks: tuple[Callable[[], Check], ...] = CHECKS) -> list[Check]:
    """Run every check; a check that crashes is reported as a failure rather than stopping the rest."""
    results = []
    for check in checks:
        try:
            results.append(check())
        except (Exception, SystemExit) as err:  # a broken package is reported, never a crash
            name = check.__name__.removeprefix("check_")
            results.append(Check(name, False, f"check crashed: {type(err).__name__}: {err}", "report this as a bug"))
    return results


def doctor(checks: tuple[Callable[[], Check], ...] = CHECKS) -> int:
    """Print the report; return 0 when every check passed, else 1."""
    results = run_checks(checks)
    for result in results:
        print(result.line())
    failed = sum(not r.ok for r in results)
    print(f"{len(results) - failed} OK, {failed} FAIL" + ("" if failed else ": ready for the lessons"))
    return 1 if failed else 0
