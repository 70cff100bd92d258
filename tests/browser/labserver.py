"""A throw-away JupyterLab for the browser test: 127.0.0.1, a free port, a token, temporary settings.

:func:`start` copies the lessons into a temporary folder (Run All saves nothing into the checkout),
starts ``python -m jupyterlab`` there with its own settings, workspaces and runtime folders and a
temporary ``GRADKIT_CACHE`` (live runs land there; the decoded CIFAR-10 cache is linked in, not
rebuilt), and waits until the server answers. :meth:`Lab.stop` ends it by its PID.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# JupyterLab settings that keep the page quiet offline (no news or update checks, no extension manager
# asking PyPI) and put every cell in the page (windowing would leave cells out of view unrendered);
# anything else stays at its default (comms over subshells included).
SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
    "@jupyterlab/extensionmanager-extension/plugin.jupyterlab-settings": {"enabled": False},
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Lab:
    process: subprocess.Popen
    port: int
    token: str
    root: Path
    log: Path

    def url(self, notebook: str) -> str:
        """The notebook alone in a workspace of its own, reset: a shared workspace would reopen the
        previous lessons' tabs, whose outputs stay in the page."""
        workspace = Path(notebook).stem
        return f"http://127.0.0.1:{self.port}/lab/workspaces/{workspace}/tree/{notebook}?reset&token={self.token}"

    def shut_down_kernels(self) -> int:
        """Stop every kernel the server runs (a finished lesson's kernel would hold memory and CPU
        through the next lesson); returns how many."""
        api = f"http://127.0.0.1:{self.port}/api/kernels"
        headers = {"Authorization": f"token {self.token}"}
        with urllib.request.urlopen(urllib.request.Request(api, headers=headers), timeout=30) as answer:
            kernels = json.load(answer)
        for kernel in kernels:
            request = urllib.request.Request(f"{api}/{kernel['id']}", headers=headers, method="DELETE")
            urllib.request.urlopen(request, timeout=60).close()
        return len(kernels)

    def stop(self) -> None:
        """SIGTERM to the server's PID (it shuts its kernels down), SIGKILL after 20 s."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def _data_cache() -> Path:
    return Path(os.environ.get("GRADKIT_CACHE") or "~/.cache/gradkit").expanduser()


def start(tmp: Path, notebooks: list[str], timeout: float = 300.0) -> Lab:
    """Start JupyterLab on copies of ``notebooks`` (names under ``notebooks/``) in ``tmp``."""
    root, settings, cache = tmp / "lessons", tmp / "settings", tmp / "cache"
    for folder in (root, settings, cache, tmp / "workspaces", tmp / "runtime", tmp / "config"):
        folder.mkdir(parents=True, exist_ok=True)
    for name in notebooks:
        shutil.copy(ROOT / "notebooks" / name, root / Path(name).name)
    for name, values in SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    for cached in _data_cache().glob("cifar10-*.pt"):
        (cache / cached.name).symlink_to(cached)
    env = {k: v for k, v in os.environ.items() if k not in ("GRADKIT_HEADLESS", "MPLBACKEND")}
    env.update(GRADKIT_PROFILE=env.get("GRADKIT_PROFILE") or "smoke", GRADKIT_CACHE=str(cache),
               PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])]),
               JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"),
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), JUPYTER_CONFIG_DIR=str(tmp / "config"))
    port, token = free_port(), os.urandom(16).hex()
    log = tmp / "jupyterlab.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         *(["--allow-root"] if os.geteuid() == 0 else [])],  # CI containers run as root
        cwd=root, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    lab = Lab(process, port, token, root, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {process.returncode}; its log:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=5):
                return lab
        except OSError:
            time.sleep(0.5)
    lab.stop()
    raise RuntimeError(f"JupyterLab did not answer on port {port} within {timeout:.0f} s; its log:\n{log.read_text()[-3000:]}")
