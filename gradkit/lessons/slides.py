"""Slides from a lesson: ``python -m gradkit slides 02 [--out DIR] [--execute]``.

nbconvert's reveal.js exporter turns the executed lesson into one HTML file that opens from disk
with no network: reveal.js (vendored in ``gradkit/lessons/reveal/``, MIT licence) is inlined,
figures are embedded as base64 images, and the TeX of the markdown cells is turned into MathML,
which browsers draw natively (MathJax from a CDN would not load in a room without internet).

Which cell goes on which slide comes from the cells' ``slideshow`` metadata (Jupyter's
"Slide Type"); :func:`mark_slides` writes it into the lessons with these rules: a ``##`` section
starts a slide, every further markdown cell (one idea) and every figure gets a vertical sub-slide
of its own, the parameters and navigation cells are skipped, code stays with the slide before
it. At export the code of cells is hidden (slides show results; students run the notebook),
except for the ``check(...)`` prediction and exercise cells, and the summary and every exercise
become slides of their own.
"""

from __future__ import annotations

import copy
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from ..offline import drop_cdn_loaders, tex_to_mathml
from ..shipped import lesson_path, notebooks_dir

ASSETS = Path(__file__).resolve().parent / "reveal"
PREFIX = "gradkit-reveal-assets"  # nbconvert's reveal_url_prefix, replaced by the inlined files


def __getattr__(name: str) -> Any:
    # NOTEBOOK_DIR is looked up at each use (gradkit.shipped), so GRADKIT_NOTEBOOKS and an installed wheel count.
    if name == "NOTEBOOK_DIR":
        return notebooks_dir()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def resolve(notebook: str | Path) -> Path:
    """A lesson path, its number (``"02"`` or ``2``) or its file name in the lessons' folder
    (:func:`gradkit.shipped.lesson_path`)."""
    return lesson_path(notebook)


def slide_type(cell: dict, previous: str | None = None) -> str:
    """The rule :func:`mark_slides` applies to one cell ("slide", "subslide", "-" or "skip")."""
    tags = cell.get("metadata", {}).get("tags", [])
    if {"parameters", "injected-parameters", "navigation"} & set(tags):
        return "skip"
    source = cell.get("source", "")
    if cell.get("cell_type") == "markdown":
        return "slide" if re.match(r"#{1,2} ", source) or previous is None else "subslide"
    if "check(" in source:
        return "subslide"
    images = [o for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
    return "subslide" if images else "-"


def mark_slides(nb: dict, overwrite: bool = False) -> dict:
    """Give every cell without ``slideshow`` metadata (every cell, with ``overwrite``) its slide type."""
    previous = None
    for cell in nb["cells"]:
        show = cell.setdefault("metadata", {}).get("slideshow", {})
        if overwrite or "slide_type" not in show:
            cell["metadata"]["slideshow"] = {"slide_type": slide_type(cell, previous)}
        previous = cell["metadata"]["slideshow"]["slide_type"]
    return nb


def _split_items(cell: dict) -> list[dict]:
    """A "## Exercises" / "## What you should now understand" cell as a heading plus one sub-slide per item."""
    source = cell["source"]
    heading = re.search(r"^## (Exercises|What you should now understand)\s*$", source, re.M)
    if not heading:
        return [cell]
    parts = re.split(r"(?=^## )", source, flags=re.M)
    cells = []
    for part in (p for p in parts if p.strip()):
        items = re.split(r"(?=^(?:\d+\.|-) )", part, flags=re.M)
        head, rest = items[0], [i for i in items[1:] if i.strip()]
        if part.startswith("## Exercises") and rest:
            cells.append(_md(head, "slide"))
            cells += [_md(f"{head.strip()}\n\n{item}", "subslide") for item in rest]
        else:
            cells.append(_md(part, "slide" if part.startswith("## ") else "subslide"))
    return cells


def _md(source: str, kind: str) -> dict:
    import nbformat

    return nbformat.v4.new_markdown_cell(source.strip(), metadata={"slideshow": {"slide_type": kind}})


def deck(nb: dict) -> dict:
    """The notebook as the slides show it (a copy): items split, code hidden, math as MathML."""
    nb = mark_slides(copy.deepcopy(nb))
    cells = []
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            for part in _split_items(cell):
                part["source"] = tex_to_mathml(part["source"])
                cells.append(part)
        else:
            if "check(" not in cell["source"]:
                cell["metadata"]["transient"] = {"remove_source": True}
            cells.append(cell)
    nb["cells"] = cells
    nb["metadata"].pop("widgets", None)  # widget state would pull the widget manager from a CDN
    return nb


def _inline_assets(body: str) -> str:
    """Swap every reference to a CDN for the vendored reveal.js; drop the loaders the deck does not need."""
    css = (ASSETS / "reveal.css").read_text(encoding="utf-8")
    theme = re.sub(r"@import url\([^)]*\);", "", (ASSETS / "theme-white.css").read_text(encoding="utf-8"))
    js = (ASSETS / "reveal.js").read_text(encoding="utf-8")
    body = drop_cdn_loaders(body)
    body = re.sub(rf'<link[^>]*href="{PREFIX}/dist/reveal.css"[^>]*>', lambda _: f"<style>{css}</style>", body)
    body = re.sub(rf'<link[^>]*href="{PREFIX}/dist/theme/[^"]*"[^>]*>', lambda _: f"<style>{theme}</style>", body)
    init = ("Reveal.initialize({controls: true, progress: true, history: true, transition: 'none', slideNumber: 'c/t', "
            "width: 1280, height: 800, margin: 0.04});")
    body = re.sub(r"<script>\s*require\(.*?</script>", lambda _: f"<script>{js}</script>\n<script>{init}</script>",
                  body, flags=re.S)
    return body.replace("</head>", f"<style>{_STYLE}</style>\n</head>", 1)


# Figures as large as the slide allows; tall slides scroll instead of spilling over.
_STYLE = """
.reveal .slides section { overflow-y: auto; max-height: 100%; }
.reveal .jp-OutputArea-output img { max-width: 100%; max-height: 620px; width: auto; height: auto; }
.reveal .jp-RenderedText pre { font-size: 14px; line-height: 1.25; }
.reveal math[display="block"] { margin: 0.5em 0; }
"""


def write_slides(notebook: str | Path, out: str | Path = "reports/slides", execute: bool = False,
                 profile: str | None = None) -> Path:
    """Write ``<out>/<lesson>.slides.html`` from the lesson's stored outputs (or, with ``execute``, from a fresh run)."""
    import nbformat
    from nbconvert import SlidesExporter

    path = resolve(notebook)
    if execute:
        from ..report import run_notebook
        from ..runtime import get_profile

        with tempfile.TemporaryDirectory() as tmp:
            entry = run_notebook(path, Path(tmp), {}, get_profile(profile), None)
            if not entry.ok:
                raise RuntimeError(f"{path.name} {entry.outcome.text}")
            nb = nbformat.read(str(entry.executed), as_version=4)
    else:
        nb = nbformat.read(str(path), as_version=4)
    exporter = SlidesExporter(reveal_url_prefix=PREFIX, reveal_scroll=True, exclude_input_prompt=True,
                              exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nbformat.from_dict(deck(nb)))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{path.stem}.slides.html"
    tmp_file = target.with_suffix(".html.tmp")
    tmp_file.write_text(_inline_assets(body), encoding="utf-8")
    os.replace(tmp_file, target)
    return target
