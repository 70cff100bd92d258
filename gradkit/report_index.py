"""The report's ``index.html``: a landing page that says what ran, on what, and what came out.

At the top, the environment (device, torch, dataset and its size, profile, date, gradkit version) and a
one-line tally of outcomes; for a parameter grid, a comparison table of the recorded results with one
row per combination; then one card per run: title and goal, a thumbnail of the main figure (the cell
tagged ``main-figure``, else the first figure), the recorded results, the parameters, the line the
notebook printed about its sizes, the outcome and the run time. One self-contained file: thumbnails
are embedded, the style is inline, nothing is fetched, and the layout reflows to one column on a phone.
"""

from __future__ import annotations

import base64
import html
import io
import platform
import re
import time
from pathlib import Path
import os
import tempfile
from typing import Any
from urllib.parse import quote

# A report's entries are gradkit.report.ReportEntry objects; this module only reads their fields
# (it does not import gradkit.report, which imports this module).
ReportEntry = Any
MAIN_FIGURE_TAG = "main-figure"  # the tag a lesson puts on the cell whose figure is its thumbnail
THUMBNAIL_WIDTH = 560  # pixels: sharp at a card's ~280-400 CSS pixels on 2x screens, ~20-60 KB each
BAD = {"failed", "timed out", "interrupted"}


# ---- what a notebook says about itself ------------------------------------------------------


def _plain_markdown(text: str) -> str:
    """Links reduced to their text, emphasis, code and TeX marks dropped, whitespace collapsed.

    >>> _plain_markdown("see `clip_grad_norm_` and **why** [lesson 01](01.ipynb)")
    'see clip_grad_norm_ and why lesson 01'
    """
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"\s+", " ", re.sub(r"[*`$]", "", text)).strip()


def title(nb: Any) -> str:
    """The notebook's first heading without the ``#`` marks (empty when it has none)."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return _plain_markdown(line.lstrip("#"))
    return ""


def goal(nb: Any, limit: int = 180) -> str:
    """One line saying what the notebook is for: its first learning goal, else its first sentence.

    Read from the first markdown cell; cut at a word boundary after ``limit`` characters.
    """
    first = next((c.source for c in nb.cells if c.cell_type == "markdown"), "")
    lines = first.splitlines()
    item: list[str] = []
    in_goals = False
    for line in lines:
        if "learning goals" in line.lower():
            in_goals = True
            continue
        bullet = re.match(r"\s*(?:[-*]|\d+\.)\s+(.*)", line)
        if in_goals and bullet:
            if item:
                break
            item = [bullet.group(1)]
        elif item and line.startswith((" ", "\t")) and line.strip():
            item.append(line.strip())
        elif item:
            break
    if item:
        text = _plain_markdown(" ".join(item)).rstrip(";.,")
    else:
        paragraphs = [p for p in re.split(r"\n\s*\n", first) if p.strip() and not p.lstrip().startswith("#")]
        text = _plain_markdown(paragraphs[0]) if paragraphs else ""
        text = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]
    text = text[:1].upper() + text[1:]
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " …"
    return text


def main_figure(nb: Any) -> bytes | None:
    """The PNG of the cell tagged ``main-figure`` (its first figure); without the tag, the notebook's first PNG."""

    tagged = [c for c in nb.cells if MAIN_FIGURE_TAG in c.metadata.get("tags", [])]
    for cell in tagged or nb.cells:
        for output in cell.get("outputs", []):
            png = output.get("data", {}).get("image/png")
            if png:
                return base64.b64decode(png if isinstance(png, str) else "".join(png))
    return None


def thumbnail(png: bytes, width: int = THUMBNAIL_WIDTH) -> bytes:
    """``png`` scaled down to ``width`` pixels (never up), as PNG bytes."""
    from PIL import Image

    image = Image.open(io.BytesIO(png))
    if image.width > width:
        image = image.resize((width, max(1, round(image.height * width / image.width))), Image.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def ran_with(nb: Any) -> str:
    """The ``describe_run`` line the notebook printed (``profile=... | device=... | ...``), or empty."""
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            text = output.get("text", "") if output.get("output_type") == "stream" else ""
            for line in (text if isinstance(text, str) else "".join(text)).splitlines():
                if line.startswith("profile=") and " | device=" in line:
                    return line.strip()
    return ""


def summarize(notebook: Path, executed: Any | None) -> dict[str, Any]:
    """What a card shows besides the run's records: title and goal (from the saved notebook), the
    thumbnail and the sizes line (from the executed one, when it ran)."""

    saved = read_notebook(notebook)
    summary: dict[str, Any] = {"title": title(saved) or notebook.stem, "goal": goal(saved), "thumbnail": None,
                               "ran_with": ""}
    if executed is not None:
        png = main_figure(executed)
        summary["thumbnail"] = thumbnail(png) if png else None
        summary["ran_with"] = ran_with(executed)
    return summary


# ---- where it ran --------------------------------------------------------------------------


def dataset_line() -> str:
    """The dataset the lessons read (``GRADKIT_DATA``, ...), its size, and where it is; never downloads."""
    from .data import cifar10, find_cifar10

    where = find_cifar10()
    if where is None:
        return "CIFAR-10 not found (python -m gradkit doctor says where to put it)"
    try:
        data = cifar10(download=False, device="cpu")
    except Exception as err:  # noqa: BLE001 - the index reports the problem instead of failing the report
        return f"CIFAR-10 at {where} could not be read: {type(err).__name__}: {err}"
    return f"{data.name}: {len(data.train_y):,} training and {len(data.test_y):,} test images ({where})"


def environment(profile: str) -> dict[str, str]:
    """The facts at the top of the index, measured in the process that runs the report."""
    import torch

    from . import __version__
    from .runtime import device_name

    return {
        "device": device_name(),
        "torch": torch.__version__,
        "dataset": dataset_line(),
        "profile": profile,
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "gradkit": __version__,
        "python": platform.python_version(),
    }


# ---- the page ------------------------------------------------------------------------------

STYLE = """
*{box-sizing:border-box}
body{font:16px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1b1b;background:#fafafa;
 margin:0 auto;max-width:76rem;padding:1rem}
h1{font-size:1.6rem;margin:.2rem 0 .6rem}h2{font-size:1.1rem;margin:.5rem 0 .2rem}
a{color:#0b57d0}
.env{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:.1rem .9rem;margin:0 0 .8rem;
 background:#fff;border:1px solid #ddd;border-radius:8px;padding:.6rem .9rem}
.env dt{font-weight:600}.env dd{margin:0;overflow-wrap:anywhere}
.tally{margin:.4rem 0 1rem}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,22rem),1fr));gap:1rem}
.card{background:#fff;border:1px solid #ddd;border-radius:8px;padding:.8rem;min-width:0}
.card img{display:block;width:100%;height:auto;border:1px solid #eee;border-radius:4px}
.noimg{padding:2rem .5rem;text-align:center;color:#777;border:1px dashed #ccc;border-radius:4px}
.goal{color:#444;margin:.2rem 0 .5rem}
.outcome{font-weight:600}.ok{color:#1a7f37}.bad{color:#b42318}.wait{color:#8a6d00}
.meta{color:#555;font-size:.88rem;overflow-wrap:anywhere}
.scroll{overflow-x:auto;margin:.4rem 0}
table{border-collapse:collapse;width:100%;font-size:.92rem}
th,td{text-align:left;vertical-align:top;padding:.25rem .5rem;border-bottom:1px solid #e4e4e4}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.note{color:#666;font-size:.85rem}
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _outcome_html(entry: ReportEntry) -> str:
    status = entry.outcome.status
    css = "ok" if status == "ok" else "bad" if status in BAD else "wait"
    return f'<span class="outcome {css}">{_e(entry.outcome.text)}</span>'


def _seconds(entry: ReportEntry) -> str:
    return "–" if entry.outcome.status in ("running", "not run") else f"{entry.seconds:.1f} s"


def _value(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_value(v)}" for k, v in params.items()) or "defaults"


def _heading(entry: ReportEntry) -> str:
    name = entry.summary.get("title") or entry.notebook.stem
    if entry.grid:
        name += " (" + _params_text(entry.grid) + ")"
    return name


def _card(entry: ReportEntry) -> str:
    page = quote(entry.html.name) if entry.html else None
    thumb = entry.summary.get("thumbnail")
    if thumb:
        img = (f'<img src="data:image/png;base64,{base64.b64encode(thumb).decode()}" '
               f'alt="main figure of {_e(entry.name)}" loading="lazy">')
        figure = f'<a href="{page}">{img}</a>' if page else img
    else:
        figure = '<div class="noimg">no figure from this run</div>'
    heading = f'<a href="{page}">{_e(_heading(entry))}</a>' if page else _e(_heading(entry))
    rows = "".join(
        f'<tr><td>{_e(r.name)}{f"<div class=note>{_e(r.note)}</div>" if r.note else ""}</td>'
        f'<td class="num">{_e(r.text)}</td></tr>' for r in entry.records
    )
    results = (f'<div class="scroll"><table><tr><th>recorded result</th><th>value</th></tr>{rows}</table></div>'
               if rows else '<p class="meta">no results recorded</p>')
    links = [f'<a href="{page}">page</a>'] if page else []
    if entry.executed:
        links.append(f'<a href="{quote(entry.executed.name)}">.ipynb</a>')
    ran = entry.summary.get("ran_with")
    return (
        f'<article class="card" id="{_e(entry.name)}">{figure}<h2>{heading}</h2>'
        f'<p class="goal">{_e(entry.summary.get("goal", ""))}</p>'
        f"<p>{_outcome_html(entry)} · {_seconds(entry)}</p>{results}"
        f'<p class="meta">parameters: <code>{_e(_params_text(entry.parameters))}</code></p>'
        + (f'<p class="meta">ran with: <code>{_e(ran)}</code></p>' if ran else "")
        + f'<p class="meta">{_e(entry.notebook.name)}{" · " if links else ""}{" · ".join(links)}</p></article>'
    )


def grid_table(entries: list[ReportEntry]) -> str:
    """One comparison table per gridded notebook: a row per combination, a column per grid name and record."""
    tables = []
    groups: dict[Path, list[ReportEntry]] = {}
    for entry in entries:
        if entry.grid:
            groups.setdefault(entry.notebook.resolve(), []).append(entry)
    for runs in groups.values():
        names = list(dict.fromkeys(n for e in runs for n in e.grid))
        recorded = list(dict.fromkeys(r.name for e in runs for r in e.records))
        head = "".join(f"<th>{_e(n)}</th>" for n in names + recorded) + "<th>outcome</th><th>run time</th>"
        body = []
        for e in runs:
            values = {r.name: r.text for r in e.records}
            first = _e(_value(e.grid.get(names[0], "")))
            first = f'<a href="{quote(e.html.name)}">{first}</a>' if e.html else first
            cells = [first] + [_e(_value(e.grid[n])) if n in e.grid else "–" for n in names[1:]]
            cells += [_e(values.get(n, "–")) for n in recorded]
            body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells[:len(names)])
                        + "".join(f'<td class="num">{c}</td>' for c in cells[len(names):])
                        + f"<td>{_outcome_html(e)}</td><td class=\"num\">{_seconds(e)}</td></tr>")
        label = runs[0].summary.get("title") or runs[0].notebook.stem
        tables.append(f"<h2>Grid: {_e(label)}</h2><p class=\"meta\">{len(runs)} runs of {_e(runs[0].notebook.name)}"
                      f"; each row links to its page.</p><div class=\"scroll\"><table><tr>{head}</tr>"
                      f"{''.join(body)}</table></div>")
    return "".join(tables)


def tally(entries: list[ReportEntry]) -> str:
    """``"8 runs: 7 ok, 1 failed"``."""
    counts: dict[str, int] = {}
    for entry in entries:
        counts[entry.outcome.status] = counts.get(entry.outcome.status, 0) + 1
    parts = ", ".join(f"{n} {status}" for status, n in counts.items())
    return f"{len(entries)} run{'s' if len(entries) != 1 else ''}: {parts}"


def render_index(entries: list[ReportEntry], env: dict[str, str]) -> str:
    """The whole ``index.html`` as text."""
    dl = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in env.items())
    cards = "".join(_card(e) for e in entries)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>gradkit report ({_e(env.get('profile', ''))})</title><style>{STYLE}</style></head><body>"
        f"<h1>gradkit report</h1><dl class=\"env\">{dl}</dl><p class=\"tally\">{_e(tally(entries))}</p>"
        f"{grid_table(entries)}<div class=\"cards\">{cards}</div></body></html>"
    )


def write_index(entries: list[ReportEntry], out: Path, env: dict[str, str]) -> Path:
    """Write ``out/index.html`` atomically and return its path."""

    index = out / "index.html"
    write_atomic(index, render_index(entries, env))
    return index


def read_notebook(path: Path | str) -> Any:
    """The notebook at ``path`` (nbformat version 4)."""
    import nbformat

    return nbformat.read(str(path), as_version=4)


def write_atomic(target: Path, text: str) -> None:
    """Write ``text`` to ``target`` through a temporary file and a rename: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a report is meant to be read by others
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
