"""The lessons' widgets in a real browser (`make browser-test`).

Collected only when ``GRADKIT_BROWSER_TEST=1`` (the make target sets it): the test starts JupyterLab
and Chromium, which `make test` neither needs nor has time for.
"""

import os

if os.environ.get("GRADKIT_BROWSER_TEST") != "1":
    collect_ignore_glob = ["*.py"]


import pytest  # noqa: E402

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium (Playwright cannot download a browser here), headless."""
    from pathlib import Path

    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the browser extra)")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
    with sync_api.sync_playwright() as pw:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()
