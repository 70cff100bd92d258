"""Notebook pages that open offline: TeX as MathML and no script fetched from a CDN.

Shared by the report pages (:mod:`gradkit.report`) and the slide decks (:mod:`gradkit.lessons.slides`):
nbconvert's pages load MathJax, require.js and mermaid from a CDN, so in a room without internet the
formulas showed as raw TeX. Browsers draw MathML themselves.
"""

from __future__ import annotations

import copy
import html
import re

_CODE = re.compile(r"(`+)(.+?)\1", re.S)
_DISPLAY = re.compile(r"\$\$(.+?)\$\$", re.S)
_INLINE = re.compile(r"(?<![\\$])\$(?!\$)((?:[^$\n]|\n(?!\n))+?)(?<!\\)\$")


def _mathml(tex: str, display: str) -> str:
    from latex2mathml.converter import convert

    try:
        return convert(tex.strip(), display=display).replace("\n", "")
    except Exception:  # a construct latex2mathml does not know: show the TeX rather than fail the deck
        return f"<code>{html.escape(tex)}</code>"


def tex_to_mathml(markdown: str) -> str:
    """Replace ``$...$`` and ``$$...$$`` outside code spans by MathML.

    >>> out = tex_to_mathml("a `$HOME` and $x^2$")
    >>> out.startswith("a `$HOME` and <math"), "<msup><mi>x</mi><mn>2</mn></msup>" in out
    (True, True)
    """
    out, last = [], 0
    for m in _CODE.finditer(markdown):
        out.append(_math_in(markdown[last:m.start()]))
        out.append(m.group(0))
        last = m.end()
    out.append(_math_in(markdown[last:]))
    return "".join(out)


def _math_in(text: str) -> str:
    text = _DISPLAY.sub(lambda m: "\n\n" + _mathml(m.group(1), "block") + "\n\n", text)
    return _INLINE.sub(lambda m: _mathml(m.group(1), "inline"), text)


def drop_cdn_loaders(body: str) -> str:
    """An nbconvert page without the scripts it fetches from a CDN: jQuery, require.js (for widget state,
    which :func:`offline_notebook` removes), MathJax (the TeX is MathML already) and mermaid."""
    body = re.sub(r'<script src="[^"]*(jquery|require)[^"]*"></script>', "", body)
    body = re.sub(r'<script type="module">(?:(?!</script>).)*?mermaid.*?</script>', "", body, flags=re.S)
    return re.sub(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", "", body, flags=re.S)


def offline_notebook(nb: dict) -> dict:
    """A copy of ``nb`` whose markdown (cells and ``text/markdown`` outputs) has its TeX as MathML and whose
    widget state is gone: exported by nbconvert and passed through :func:`drop_cdn_loaders`, it needs no network."""
    nb = copy.deepcopy(nb)
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            cell["source"] = tex_to_mathml(cell["source"])
        for output in cell.get("outputs", []):
            text = output.get("data", {}).get("text/markdown")
            if text is not None:
                output["data"]["text/markdown"] = tex_to_mathml(text if isinstance(text, str) else "".join(text))
    nb["metadata"].pop("widgets", None)  # widget state would pull the widget manager from a CDN
    return nb
