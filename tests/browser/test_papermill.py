"""The widget lessons executed by plain batch runners, no widget front end and no ``GRADKIT_HEADLESS``:
every run finishes within its timeout and shows a figure under every widget cell, never a widget.

A user who makes a report with papermill directly (not ``gradkit report``) runs exactly this; it once
hung at lesson 02's cliff view. nbclient and ``jupyter nbconvert --execute`` run each lesson once with
``JPY_SESSION_NAME`` set, as a kernel started from JupyterLab passes it on (papermill in such a kernel once
showed widget JSON and no PNG). papermill runs each lesson ``GRADKIT_PAPERMILL_REPEAT`` times (default 1,
as in CI; 20 for the full check). Collected with the browser test (``make browser-test``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LESSONS = ["01_exploding_vanishing.ipynb", "02_clipping_formulas.ipynb", "03_cifar10_baseline.ipynb",
           "04_threshold_explorer.ipynb", "08_when_clipping_saves.ipynb"]
REPEAT = int(os.environ.get("GRADKIT_PAPERMILL_REPEAT") or 1)
TIMEOUT_S = float(os.environ.get("GRADKIT_PAPERMILL_TIMEOUT") or 600)
# nbclient with nothing but its defaults, as a user's script would call it.
NBCLIENT = ("import sys, nbformat\nfrom nbclient import NotebookClient\n"
            "nb = nbformat.read(sys.argv[1], as_version=4)\n"
            "NotebookClient(nb, kernel_name='python3', resources={'metadata': {'path': sys.argv[3]}}).execute()\n"
            "nbformat.write(nb, sys.argv[2])")


def _widget_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"
            and ("widgets.show(" in "".join(c["source"]) or "ex.show()" in "".join(c["source"]))]


def _command(runner: str, notebook: Path, out: Path) -> list[str]:
    if runner == "papermill":
        return [sys.executable, "-m", "papermill", str(notebook), str(out), "-k", "python3", "--cwd",
                str(notebook.parent), "--no-progress-bar"]
    if runner == "nbclient":
        return [sys.executable, "-c", NBCLIENT, str(notebook), str(out), str(notebook.parent)]
    return [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", str(notebook),
            "--output-dir", str(out.parent), "--output", out.name, "--ExecutePreprocessor.timeout=-1"]


def _environment(runner: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GRADKIT_HEADLESS", "MPLBACKEND", "JPY_SESSION_NAME")}
    env["GRADKIT_PROFILE"] = env.get("GRADKIT_PROFILE") or "smoke"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    if runner != "papermill":
        env["JPY_SESSION_NAME"] = "/lab/lesson.ipynb"  # what a kernel started by JupyterLab passes on
    return env


def _run(runner: str, notebook: str, out: Path, label: str) -> float:
    """Execute one lesson with ``runner`` into ``out``; fail on a hang, an error or a widget cell without a PNG."""
    started = time.monotonic()
    # A session of its own, so that a hang is ended with the runner's kernel, not just the runner.
    proc = subprocess.Popen(_command(runner, ROOT / "notebooks" / notebook, out), env=_environment(runner),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{notebook}, {label}: {runner} did not finish in {TIMEOUT_S:.0f} s (a hang)")
    assert proc.returncode == 0, f"{notebook}, {label}: {runner} failed:\n{log.decode()[-3000:]}"
    cells = _widget_cells(json.loads(out.read_text()))
    assert cells, f"{notebook} has no widget cell"
    for cell in cells:
        kinds = {k for o in cell["outputs"] for k in o.get("data", {})}
        assert "image/png" in kinds, f"{notebook}, {label}: a widget cell shows no figure: {sorted(kinds)}"
        assert "application/vnd.jupyter.widget-view+json" not in kinds, (
            f"{notebook}, {label}: a widget nobody can move was displayed")
    return time.monotonic() - started


@pytest.mark.parametrize("notebook", LESSONS)
def test_plain_papermill_finishes_and_shows_figures(notebook, tmp_path):
    seconds = [_run("papermill", notebook, tmp_path / f"run{i}.ipynb", f"run {i + 1}/{REPEAT}") for i in range(REPEAT)]
    print(f"\n{notebook}: {REPEAT} plain papermill runs, {min(seconds):.1f} to {max(seconds):.1f} s each")


@pytest.mark.parametrize("runner", ["nbclient", "nbconvert"])
@pytest.mark.parametrize("notebook", LESSONS)
def test_nbclient_and_nbconvert_inside_jupyterlab_show_figures(runner, notebook, tmp_path):
    seconds = _run(runner, notebook, tmp_path / "out.ipynb", "JPY_SESSION_NAME set")
    print(f"\n{notebook}: {runner}, {seconds:.1f} s")
