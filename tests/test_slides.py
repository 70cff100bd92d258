"""`python -m gradkit slides`: one offline HTML deck per lesson, slides chosen by cell metadata."""

import re
import sys
from pathlib import Path

import nbformat
import pytest

from gradkit.__main__ import main
from gradkit.lessons.slides import NOTEBOOK_DIR, deck, mark_slides, resolve, write_slides

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from nbtool import clean  # noqa: E402

# A reference a browser would fetch to render the page: script/img/iframe src, stylesheet links,
# CSS url()/@import and ES module imports. Plain <a href> links to papers are not needed to render.
FETCHED = re.compile(r"""(?:src=["']https?:|<link[^>]*href=["']https?:|url\(\s*["']?https?:|@import\s+["']https?:|from\s+["']https?:)""", re.I)


def test_number_shorthand_resolves_to_the_lesson():
    assert resolve("02") == NOTEBOOK_DIR / "02_clipping_formulas.ipynb"
    assert resolve(7).name.startswith("07_")
    with pytest.raises(ValueError, match="accepted numbers: 00, 01"):
        resolve("42")
    with pytest.raises(ValueError, match="not found"):
        resolve("no_such.ipynb")


def test_rules_one_idea_per_slide():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Title"),
        nbformat.v4.new_code_cell("profile = None", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_markdown_cell("## A section"),
        nbformat.v4.new_markdown_cell("an idea"),
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_code_cell("plot()", outputs=[nbformat.v4.new_output("display_data", data={"image/png": "iVBOR"})]),
        nbformat.v4.new_code_cell('print(check("01.p1", prediction))'),
        nbformat.v4.new_markdown_cell("[next](x.ipynb)", metadata={"tags": ["navigation"]}),
    ]
    kinds = [c.metadata["slideshow"]["slide_type"] for c in mark_slides(nb).cells]
    assert kinds == ["slide", "skip", "slide", "subslide", "-", "subslide", "subslide", "skip"]
    nb.cells[3].metadata["slideshow"]["slide_type"] = "fragment"  # a teacher's own choice is kept
    assert mark_slides(nb).cells[3].metadata["slideshow"]["slide_type"] == "fragment"


def test_every_lesson_carries_slide_metadata():
    for path in sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(str(path), as_version=4)
        assert all("slide_type" in c.metadata.get("slideshow", {}) for c in nb.cells), path.name


def test_nbtool_clean_keeps_slide_metadata(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# T", metadata={"slideshow": {"slide_type": "slide"}, "collapsed": True})]
    path = tmp_path / "t.ipynb"
    nbformat.write(nb, str(path))
    clean(path)
    assert nbformat.read(str(path), as_version=4).cells[0].metadata == {"slideshow": {"slide_type": "slide"}}


def test_deck_gives_each_exercise_its_own_slide_and_hides_code():
    nb = deck(nbformat.read(str(resolve("02")), as_version=4))
    exercise_slides = [c for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("## Exercises")]
    assert len(exercise_slides) == 4  # the heading, then exercises 1, 2 and 3
    assert all(c.metadata["slideshow"]["slide_type"] == "subslide" for c in exercise_slides[1:])
    code = [c for c in nb.cells if c.cell_type == "code"]
    hidden = [c for c in code if c.metadata.get("transient", {}).get("remove_source")]
    assert len(hidden) == len([c for c in code if "check(" not in c.source]) > 0
    assert not any("$" in c.source for c in nb.cells if c.cell_type == "markdown" and "<math" in c.source and "`" not in c.source)


def test_slides_02_writes_a_deck_that_opens_from_disk(tmp_path, capsys):
    assert main(["slides", "02", "--out", str(tmp_path)]) == 0
    page = tmp_path / "02_clipping_formulas.slides.html"
    assert str(page) in capsys.readouterr().out
    html = page.read_text(encoding="utf-8")
    assert not FETCHED.findall(html)
    assert "reveal.js 4." in html and "Reveal.initialize(" in html  # reveal.js is inlined
    assert html.count("<math") > 20 and "MathJax" not in html  # TeX drawn as MathML, no MathJax from a CDN
    assert html.count('src="data:image/png;base64,') >= 3  # the three figures are embedded
    assert html.count("<section") > 25


def test_bad_lesson_number_is_an_error_not_a_traceback(tmp_path, capsys):
    assert main(["slides", "42", "--out", str(tmp_path)]) == 2
    assert "accepted numbers" in capsys.readouterr().err


def test_execute_runs_the_lesson_in_a_temporary_folder(tmp_path):
    lesson = resolve("00")
    before = lesson.read_bytes()
    page = write_slides("00", tmp_path, execute=True, profile="smoke")
    html = page.read_text(encoding="utf-8")
    assert "profile=smoke" in html and not FETCHED.findall(html)
    assert lesson.read_bytes() == before and list(tmp_path.iterdir()) == [page]


def test_execute_that_fails_says_where(tmp_path):
    # The message once read entry.failed_cell and entry.error, which a ReportEntry does not have: an AttributeError.
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# 01 · Broken"), nbformat.v4.new_code_cell("raise RuntimeError('planted')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "01_broken.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(RuntimeError, match=r"01_broken.ipynb failed at cell index 1 .*RuntimeError: planted"):
        write_slides(path, tmp_path / "out", execute=True, profile="smoke")
    assert not (tmp_path / "out").exists()
