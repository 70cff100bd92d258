"""The report's index.html as a reader opens it: from disk, in Chromium, on a phone and on a desktop.

Three lessons are executed with ``python -m gradkit report`` (the profile of the browser test, smoke in
CI); the page must show each lesson's title and goal, every thumbnail decoded, every recorded result,
and on a 390-pixel-wide phone screen no sideways scrolling of the page itself (wide tables scroll
inside their own box). Lesson 02's own page, opened with the network cut, must ask for nothing and show
its formulas as MathML (it once loaded MathJax from a CDN). Screenshots go to ``reports/browser/index-*.png``
and ``reports/browser/page-02-offline.png``.
"""

from __future__ import annotations

import subprocess
import sys

import nbformat

from gradkit.report_index import goal, title

from .labserver import ROOT

LESSONS = ["00_tour.ipynb", "02_clipping_formulas.ipynb", "05_sweep_report.ipynb"]
SHOTS = ROOT / "reports" / "browser"

PAGE_JS = """() => ({
  titles: Array.from(document.querySelectorAll('article.card h2')).map(h => h.textContent),
  goals: Array.from(document.querySelectorAll('article.card p.goal')).map(p => p.textContent),
  images: Array.from(document.querySelectorAll('article.card img')).map(i => i.complete && i.naturalWidth > 0),
  results: Array.from(document.querySelectorAll('article.card')).map(a => a.querySelectorAll('td.num').length),
  overflow: document.documentElement.scrollWidth - window.innerWidth,
  outcomes: Array.from(document.querySelectorAll('.outcome')).map(o => o.textContent),
})"""


def test_the_index_reads_on_a_phone_and_a_desktop(browser, tmp_path):
    out = tmp_path / "report"
    run = subprocess.run([sys.executable, "-m", "gradkit", "report", "--out", str(out), *LESSONS],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    SHOTS.mkdir(parents=True, exist_ok=True)
    notebooks = [nbformat.read(str(ROOT / "notebooks" / name), as_version=4) for name in LESSONS]
    for name, size in (("phone", {"width": 390, "height": 844}), ("desktop", {"width": 1280, "height": 900})):
        page = browser.new_page(viewport=size)
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((out / "index.html").as_uri())
        # The thumbnails load lazily, as a reader scrolls to them: scroll to each and wait for its decode.
        page.evaluate("""async () => {
          for (const img of document.querySelectorAll('article.card img')) {
            img.scrollIntoView();
            await img.decode().catch(() => {});
          }
          window.scrollTo(0, 0);
        }""")
        seen = page.evaluate(PAGE_JS)
        page.screenshot(path=str(SHOTS / f"index-{name}.png"), full_page=True)
        page.close()
        assert len(seen["titles"]) == len(LESSONS)
        for nb in notebooks:
            assert any(title(nb) in t for t in seen["titles"]), (title(nb), seen["titles"])
            assert goal(nb) in seen["goals"]
        assert seen["images"] and all(seen["images"]), f"{name}: a thumbnail did not decode"
        assert all(n > 0 for n in seen["results"]), f"{name}: a lesson shows no recorded result"
        assert seen["outcomes"] == ["ok"] * len(LESSONS)
        assert seen["overflow"] <= 1, f"{name}: the page scrolls sideways by {seen['overflow']} px"
        assert not errors, errors
        print(f"\nindex on a {name} ({size['width']} px): {len(seen['images'])} thumbnails, "
              f"{sum(seen['results'])} recorded values")

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    fetched = []

    def cut(route):
        fetched.append(route.request.url)
        route.abort()

    page.route("http*://**", cut)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto((out / "02_clipping_formulas.html").as_uri())
    page.wait_for_load_state("load")
    maths = page.evaluate("() => Array.from(document.querySelectorAll('math'))"
                          ".filter(m => m.getBoundingClientRect().width > 0).length")
    raw = page.evaluate("() => document.body.innerText.includes('\\\\sqrt')")
    page.screenshot(path=str(SHOTS / "page-02-offline.png"))
    page.close()
    assert not fetched, f"the lesson page asked the network for {fetched}"
    assert maths > 20 and not raw, (maths, raw)
    assert not errors, errors
    print(f"lesson 02's page offline: {maths} formulas drawn as MathML, no request")
