"""The widget lessons executed with plain papermill, no widget front end and no ``GRADKIT_HEADLESS``:
every run finishes within its timeout and shows a figure under every widget cell.

A user who makes a report with papermill directly (not ``gradkit report``) runs exactly this; it once
hung at lesson 02's cliff view. Each lesson runs ``GRADKIT_PAPERMILL_REPEAT`` times (default 1, as in
CI; 20 for the full check). Collected with the browser test (``make browser-test``).
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


def _widget_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"
            and ("widgets.show(" in "".join(c["source"]) or "ex.show()" in "".join(c["source"]))]


@pytest.mark.parametrize("notebook", LESSONS)
def test_plain_papermill_finishes_and_shows_figures(notebook, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("GRADKIT_HEADLESS", "MPLBACKEND")}
    env["GRADKIT_PROFILE"] = env.get("GRADKIT_PROFILE") or "smoke"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    seconds = []
    for i in range(REPEAT):
        out = tmp_path / f"run{i}.ipynb"
        started = time.monotonic()
        # A session of its own, so that a hang is ended with papermill's kernel, not just papermill.
        proc = subprocess.Popen([sys.executable, "-m", "papermill", str(ROOT / "notebooks" / notebook), str(out),
                                 "-k", "python3", "--cwd", str(ROOT / "notebooks"), "--no-progress-bar"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            log, _ = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            pytest.fail(f"{notebook}, run {i + 1}/{REPEAT}: papermill did not finish in {TIMEOUT_S:.0f} s (a hang)")
        assert proc.returncode == 0, f"{notebook}, run {i + 1}: papermill failed:\n{log.decode()[-3000:]}"
        seconds.append(time.monotonic() - started)
        cells = _widget_cells(json.loads(out.read_text()))
        assert cells, f"{notebook} has no widget cell"
        for cell in cells:
            kinds = {k for o in cell["outputs"] for k in o.get("data", {})}
            assert "image/png" in kinds, f"{notebook}, run {i + 1}: a widget cell shows no figure: {sorted(kinds)}"
            assert "application/vnd.jupyter.widget-view+json" not in kinds, (
                f"{notebook}, run {i + 1}: a widget nobody can move was displayed")
    print(f"\n{notebook}: {REPEAT} plain papermill runs, {min(seconds):.1f} to {max(seconds):.1f} s each")
