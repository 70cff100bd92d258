"""Every lesson with widgets, run and moved in JupyterLab in a real browser (Chromium via Playwright).

For each lesson: Run All completes; no widget says "Error displaying widget" or shows as raw text;
the browser writes no control value back before anyone touches a control (a slider default off the
slider's grid did, and each write-back redrew); every slider, moved once with the keyboard and once
by dragging, and every dropdown changes the displayed image within 10 s, a keyboard step with at most
one PNG over the websocket; no image in a widget is fully transparent; the console shows no error. In
lesson 04 "Train this setting" adds a run. Screenshots go to ``reports/browser/``; latencies are
printed, never asserted.

Run with ``make browser-test`` (Debian's ``chromium`` at /usr/bin/chromium, ``playwright`` installed).
"""

from __future__ import annotations

import os
import re
import time

import pytest

from . import labserver

LESSONS = ["01_exploding_vanishing.ipynb", "02_clipping_formulas.ipynb", "03_cifar10_baseline.ipynb",
           "04_threshold_explorer.ipynb", "08_when_clipping_saves.ipynb"]
SHOTS = labserver.ROOT / "reports" / "browser"
CHANGE_S = 10.0
RUN_ALL_S = float(os.environ.get("GRADKIT_BROWSER_RUN_ALL_S") or 600)  # per lesson; smoke takes well under
RAW_WIDGET = re.compile(r"\b(VBox|HBox|Box|Image|Output|SelectionSlider|IntSlider|FloatSlider|FloatLogSlider|Dropdown"
                        r"|Button|Checkbox|HTML|IntProgress)\(")
PNG_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"iVBORw0KGgo")

@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    SHOTS.mkdir(parents=True, exist_ok=True)
    server = labserver.start(tmp_path_factory.mktemp("lab"), LESSONS)
    yield server
    server.stop()


class Wire:
    """What crossed the kernel websockets: PNGs received, widget updates sent by the browser."""

    def __init__(self) -> None:
        self.pngs = 0
        self.updates_sent: list[bytes] = []

    def attach(self, ws) -> None:
        if "/api/kernels/" not in ws.url:
            return
        ws.on("framereceived", self._received)
        ws.on("framesent", self._sent)

    @staticmethod
    def _bytes(payload) -> bytes:
        return payload if isinstance(payload, bytes) else payload.encode()

    def _received(self, payload) -> None:
        data = self._bytes(payload)
        self.pngs += sum(data.count(sig) for sig in PNG_SIGNATURES)

    def _sent(self, payload) -> None:
        data = self._bytes(payload)
        if b'"comm_msg"' in data and b'"update"' in data:
            self.updates_sent.append(data)


def _prompts(page) -> list[str]:
    return page.eval_on_selector_all(".jp-CodeCell .jp-InputPrompt", "els => els.map(e => e.textContent.trim())")


def _menu(page, menu: str, item: str) -> None:
    page.click(f".lm-MenuBar-item:has-text('{menu}')")
    page.get_by_role("menuitem", name=item, exact=True).click()


def _kernel_status(page) -> str:
    return page.evaluate("() => document.querySelector('.jp-Notebook-ExecutionIndicator')?.dataset.status || ''")


def _kernel_name(page) -> str:
    return page.evaluate("() => document.querySelector('.jp-NotebookPanel .jp-Toolbar-kernelName')?.textContent.trim() || ''")


def _wait_idle(page, timeout: float) -> None:
    """Wait until the notebook has a kernel attached and that kernel is idle. The execution indicator can
    read "idle" before a kernel is attached, and Run All then runs nothing (JupyterLab skips cells of a
    notebook without a kernel): the toolbar's kernel name must be a kernel's, not "No Kernel"."""
    deadline = time.monotonic() + timeout
    while _kernel_status(page) != "idle" or _kernel_name(page) in ("", "No Kernel"):
        _accept_kernel_dialog(page)
        assert time.monotonic() < deadline, (f"the kernel was not attached and idle within {timeout:.0f} s "
                                             f"(kernel {_kernel_name(page)!r}, status {_kernel_status(page)!r})")
        time.sleep(0.5)


def _accept_kernel_dialog(page) -> None:
    """Accept JupyterLab's "Select Kernel" dialog (the default, Python 3) if it is open: on a busy machine it
    can open after the page looked idle, and it holds Run All until answered."""
    if page.locator(".jp-Dialog .jp-mod-accept").count():
        page.click(".jp-Dialog .jp-mod-accept")


def run_all(page, timeout: float = RUN_ALL_S) -> float:
    """Clear every output (the stored lessons carry outputs and counts), Run All from the menu, and wait
    until every code cell has an execution count. A cell that stops Run All fails at once. Returns seconds."""
    _wait_idle(page, 300)
    _accept_kernel_dialog(page)
    _menu(page, "Edit", "Clear Outputs of All Cells")
    page.wait_for_function("() => document.querySelectorAll('.jp-OutputArea-output').length === 0")
    started = time.monotonic()
    _menu(page, "Run", "Run All Cells")
    # Run All marks every code cell "[*]" at once; stale counts from the stored lesson must not pass for done.
    # A Run All that started nothing (the kernel dialog opened, or the kernel went away and came back) is
    # given again, but only while no cell has run: a second Run All after the first began would run cells twice.
    deadline, asked = started + 180, started
    while not any("*" in p for p in _prompts(page)):
        _accept_kernel_dialog(page)
        assert time.monotonic() < deadline, (f"Run All started no cell within 180 s (kernel {_kernel_name(page)!r}, "
                                             f"status {_kernel_status(page)!r})")
        untouched = all(not re.fullmatch(r"\[\d+\]:", p) for p in _prompts(page))
        if time.monotonic() - asked > 20 and untouched and _kernel_status(page) == "idle":
            _wait_idle(page, 120)
            _menu(page, "Run", "Run All Cells")
            asked = time.monotonic()
        time.sleep(0.5)
    deadline, stalled = started + timeout, 0
    while time.monotonic() < deadline:
        prompts = _prompts(page)
        counted = [bool(re.fullmatch(r"\[\d+\]:", p)) for p in prompts]
        if prompts and all(counted) and _kernel_status(page) == "idle":
            _wait_idle(page, 120)
            return time.monotonic() - started
        idle = _kernel_status(page) == "idle"
        stalled = stalled + 1 if any(counted) and idle and not any("*" in p for p in prompts) else 0
        if stalled >= 10:
            errors = page.eval_on_selector_all(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
                                               "els => els.map(e => e.textContent.slice(-600))")
            raise AssertionError(f"Run All stopped before the last cell; error output: {errors}")
        time.sleep(1.0)
    pending = [i for i, p in enumerate(_prompts(page)) if not re.fullmatch(r"\[\d+\]:", p)]
    raise AssertionError(f"Run All did not finish in {timeout:.0f} s; code cells without a count: {pending}")


# The widget views: the outermost VBox of each widget output, with its images, sliders and dropdowns.
VIEWS_JS = """() => {
  const roots = [];
  for (const out of document.querySelectorAll('.jp-OutputArea-output')) {
    const box = out.querySelector('.widget-vbox');
    if (box) roots.push(box);
  }
  roots.forEach((r, i) => r.setAttribute('data-test-view', String(i)));
  return roots.map(r => ({
    sliders: r.querySelectorAll('.widget-hslider').length,
    dropdowns: r.querySelectorAll('.widget-dropdown select').length,
    images: r.querySelectorAll('img').length,
  }));
}"""

IMAGES_JS = """root => Array.from(root.querySelectorAll('img')).map(i => i.src)"""

TRANSPARENT_JS = """root => Array.from(root.querySelectorAll('img')).filter(img => img.naturalWidth > 0).map(img => {
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  for (let k = 3; k < d.length; k += 4) if (d[k] !== 0) return false;
  return true;
})"""


def wait_for_new_image(root, before: list[str], timeout: float = CHANGE_S) -> float | None:
    """Seconds until the view's images differ from ``before`` (all loaded), or None after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        now = root.evaluate(IMAGES_JS)
        if now and now != before and root.evaluate("r => Array.from(r.querySelectorAll('img')).every(i => i.complete)"):
            return time.monotonic() - started
        time.sleep(0.05)
    return None


def settle(wire: Wire, quiet: float = 1.0, timeout: float = CHANGE_S) -> None:
    """Wait until no PNG has arrived for ``quiet`` seconds (at most ``timeout``)."""
    deadline = time.monotonic() + timeout
    count, since = wire.pngs, time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet:
        time.sleep(0.05)
        if wire.pngs != count:
            count, since = wire.pngs, time.monotonic()


def assert_not_transparent(root, what: str) -> None:
    flags = root.evaluate(TRANSPARENT_JS)
    assert not any(flags), f"{what}: a fully transparent PNG in the widget output"


def slider_state(handle) -> tuple[float, float, float]:
    return tuple(float(handle.get_attribute(a)) for a in ("aria-valuemin", "aria-valuenow", "aria-valuemax"))


def move_by_keyboard(page, handle) -> None:
    lo, now, hi = slider_state(handle)
    handle.focus()
    page.keyboard.press("ArrowLeft" if now >= hi else "ArrowRight")


def move_by_drag(page, handle) -> None:
    """Drag the handle 45 px, or 0.6 of the distance between two stops where that is further (a slider
    with two stops snaps a short drag back to where it was, as it would for a user)."""
    lo, now, hi = slider_state(handle)
    box = handle.bounding_box()
    track = handle.locator("xpath=ancestor::*[contains(@class, 'noUi-target')][1]").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    step = 0.6 * track["width"] / max(hi - lo, 1) if track else 0.0
    dx = max(45.0, step) * (-1 if (now - lo) > 0.6 * (hi - lo) else 1)
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx / 2, y, steps=4)
    page.mouse.move(x + dx, y, steps=4)
    page.mouse.up()


@pytest.mark.parametrize("notebook", LESSONS)
def test_lesson_widgets_in_the_browser(browser, lab, notebook):
    context = browser.new_context(viewport={"width": 1700, "height": 1100})
    page = context.new_page()
    # Generous waits for the page itself (JupyterLab loads slowly on a busy 2-core machine); the 10 s
    # bar applies to the figure's answer to a control, below.
    page.set_default_timeout(180_000)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    wire = Wire()
    page.on("websocket", wire.attach)
    stem = notebook.removesuffix(".ipynb")
    latencies: list[tuple[str, float]] = []
    try:
        page.goto(lab.url(notebook))
        page.wait_for_selector(".jp-NotebookPanel")
        assert page.locator(".jp-NotebookPanel").count() == 1, "other notebooks' tabs were restored into the page"
        seconds = run_all(page)
        print(f"\n{notebook}: Run All took {seconds:.1f} s")
        time.sleep(2.0)  # widgets finish rendering; a write-back would be sent now

        assert page.locator("text=Error displaying widget").count() == 0, "a widget failed to display"
        plain = page.eval_on_selector_all(".jp-OutputArea-output[data-mime-type='text/plain']",
                                          "els => els.map(e => e.textContent)")
        raw = [t[:80] for t in plain if RAW_WIDGET.search(t)]
        assert not raw, f"widgets shown as raw text: {raw}"
        assert not wire.updates_sent, (f"the browser wrote {len(wire.updates_sent)} control value(s) back before any "
                                       f"interaction, e.g. {wire.updates_sent[0][-300:]!r}")

        views = page.evaluate(VIEWS_JS)
        assert views, "no widget view in the executed lesson"
        page.screenshot(path=str(SHOTS / f"{stem}-after-run-all.png"), full_page=False)
        for i, view in enumerate(views):
            root = page.locator(f"[data-test-view='{i}']")
            root.scroll_into_view_if_needed()
            assert view["images"] >= 1, f"view {i} shows no image"
            assert_not_transparent(root, f"view {i} after Run All")
            root.screenshot(path=str(SHOTS / f"{stem}-view{i}-before.png"))
            for j in range(view["sliders"]):
                slider = root.locator(".widget-hslider").nth(j)
                name = slider.locator(".widget-label").first.text_content().strip() or f"slider {j}"
                handle = slider.locator(".noUi-handle").first
                for how, move in (("keyboard", move_by_keyboard), ("drag", move_by_drag)):
                    settle(wire)  # a drag sends several values: its last redraw must not count for the next move
                    before, pngs = root.evaluate(IMAGES_JS), wire.pngs
                    move(page, handle)
                    took = wait_for_new_image(root, before)
                    assert took is not None, f"view {i}, {name} ({how}): the image did not change within {CHANGE_S:.0f} s"
                    latencies.append((f"view {i} {name} ({how})", took))
                    if how == "keyboard":
                        time.sleep(0.5)  # a second PNG for the same step would arrive by now
                        assert wire.pngs - pngs <= 1, f"view {i}, {name}: {wire.pngs - pngs} PNGs for one key press"
                    assert_not_transparent(root, f"view {i}, {name} ({how})")
                if j == 0:
                    root.screenshot(path=str(SHOTS / f"{stem}-view{i}-after.png"))
            for j in range(view["dropdowns"]):
                select = root.locator(".widget-dropdown select").nth(j)
                options = select.evaluate("s => Array.from(s.options).map(o => o.value)")
                current = select.evaluate("s => s.value")
                took = None
                for option in [o for o in options if o != current][:2]:
                    before = root.evaluate(IMAGES_JS)
                    select.select_option(option)
                    took = wait_for_new_image(root, before)
                    if took is not None:
                        break
                label = select.evaluate("s => s.parentElement.querySelector('label')?.textContent || ''").strip()
                assert took is not None, f"view {i}, dropdown {label or j}: the image did not change within {CHANGE_S:.0f} s"
                latencies.append((f"view {i} dropdown {label or j}", took))
                assert_not_transparent(root, f"view {i}, dropdown {label or j}")
                before = root.evaluate(IMAGES_JS)
                select.select_option(current)  # back to the lesson's setting for the next control
                assert wait_for_new_image(root, before) is not None, f"view {i}, dropdown {label or j}: no redraw back"

        train = page.locator("button:has-text('Train this setting')")
        if train.count():
            status = train.locator("xpath=..")
            before = status.inner_text()
            started = time.monotonic()
            train.first.click()
            deadline = started + 300
            text = before
            while time.monotonic() < deadline:
                text = status.inner_text()
                if "added" in text and text != before:
                    break
                time.sleep(0.2)
            assert "added" in text, f"Train this setting added no run; the line beside it says {text!r}"
            latencies.append(("Train this setting, until the run was added", time.monotonic() - started))
            page.screenshot(path=str(SHOTS / f"{stem}-trained.png"))
        assert not errors, "console errors:\n" + "\n".join(errors)
    finally:
        for what, took in latencies:
            print(f"  {what:60s} {took:6.2f} s")
        try:
            page.screenshot(path=str(SHOTS / f"{stem}-final.png"), timeout=10_000)
        except Exception as err:  # a screenshot must not hide the failure that brought us here
            print(f"  (no final screenshot: {err})")
        context.close()
        lab.shut_down_kernels()
