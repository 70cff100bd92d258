"""Executed notebook reports: papermill runs the lessons, nbconvert turns them into HTML.

``python -m gradkit report [NOTEBOOK ...] [-p NAME VALUE ...] [--profile smoke|cpu|full] [--out reports/]``
writes, per notebook, the executed ``.ipynb`` and a standalone ``.html`` (figures embedded), and an
``index.html`` that links them with their parameters, status and run time.

Parameters are checked against each notebook's ``parameters`` cell before anything runs, so a typo
costs a second, not a half-hour run.
"""

from __future__ import annotations

import ast
import html
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .runtime import get_profile

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"


@dataclass
class ReportEntry:
    """What happened to one notebook."""

    notebook: Path
    executed: Path
    html: Path | None
    parameters: dict[str, Any]
    seconds: float
    error: str | None = None
    failed_cell: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


def lesson_notebooks(folder: Path = NOTEBOOK_DIR) -> list[Path]:
    """The lesson notebooks in order (``NN_name.ipynb``)."""
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def declared_parameters(notebook: Path) -> dict[str, Any]:
    """The names and defaults of a notebook's ``parameters`` cell (papermill's own parser)."""
    import papermill

    return {name: info["default"] for name, info in papermill.inspect_notebook(str(notebook)).items()}


def parse_value(text: str) -> Any:
    """A command-line value as Python sees it: ``"0.1"`` -> 0.1, ``"[1, 2]"`` -> [1, 2], ``"sgd"`` -> 'sgd'.

    >>> parse_value("[0.1, 1]"), parse_value("norm"), parse_value("None")
    ([0.1, 1], 'norm', None)
    """
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def check_parameters(notebook: Path, parameters: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the valid names when ``parameters`` has one the notebook lacks."""
    declared = declared_parameters(notebook)
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise ValueError(
            f"{notebook.name} has no parameter {', '.join(map(repr, unknown))}; "
            f"valid names: {', '.join(sorted(declared)) or '(none: the notebook has no parameters cell)'}"
        )


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    # papermill's kernel inherits this process's environment: set it for the run, then restore.
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def to_html(executed: Path) -> Path:
    """Write a standalone HTML file (images embedded) next to an executed notebook."""
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(executed, as_version=4))
    target = executed.with_suffix(".html")
    target.write_text(body, encoding="utf-8")
    return target


def run_notebook(notebook: Path, out: Path, parameters: dict[str, Any], profile: str, timeout: int | None) -> ReportEntry:
    """Execute one notebook into ``out``; a failing cell is recorded, and the partial notebook kept."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    params = dict(parameters)
    if "profile" in declared_parameters(notebook):
        params.setdefault("profile", profile)
    executed = out / notebook.name
    start = time.perf_counter()
    error, cell = None, None
    with _environment(GRADKIT_HEADLESS="1", GRADKIT_PROFILE=profile):
        try:
            papermill.execute_notebook(
                str(notebook), str(executed), parameters=params, cwd=str(notebook.parent),
                kernel_name="python3", progress_bar=False, execution_timeout=timeout,
            )
        except PapermillExecutionError as err:
            # The index counts cells of the executed notebook (papermill's injected cell included).
            first_line = (err.source or "").strip().splitlines()[:1]
            where = f" in `{first_line[0]}`" if first_line else ""
            error, cell = f"{err.ename}: {err.evalue}{where}", err.cell_index
    seconds = time.perf_counter() - start
    page = to_html(executed) if executed.exists() else None
    return ReportEntry(notebook, executed, page, params, seconds, error, cell)


def write_index(entries: list[ReportEntry], out: Path, profile: str) -> Path:
    """``index.html``: one row per notebook with links, parameters, status and run time."""
    rows = []
    for e in entries:
        status = "ok" if e.ok else f"FAILED at cell {e.failed_cell}: {html.escape(e.error or '')}"
        page = f'<a href="{e.html.name}">{e.notebook.stem}</a>' if e.html else e.notebook.stem
        params = ", ".join(f"{k}={v!r}" for k, v in e.parameters.items()) or "defaults"
        rows.append(
            f"<tr><td>{page}</td><td><a href=\"{e.executed.name}\">.ipynb</a></td>"
            f"<td><code>{html.escape(params)}</code></td><td>{status}</td><td>{e.seconds:.1f} s</td></tr>"
        )
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>gradkit report</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 10px;border-bottom:1px solid #ddd}"
        "</style></head><body><h1>gradkit report</h1>"
        f"<p>profile <b>{profile}</b>, made {stamp}</p><table><tr><th>notebook</th><th>executed</th>"
        f"<th>parameters</th><th>status</th><th>run time</th></tr>{''.join(rows)}</table></body></html>"
    )
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def run_report(
    notebooks: list[Path] | None = None,
    parameters: dict[str, Any] | None = None,
    profile: str | None = None,
    out: Path | str = "reports",
    timeout: int | None = None,
) -> list[ReportEntry]:
    """Execute notebooks (default: every lesson) into ``out`` and write the HTML pages and index.

    Every notebook's parameters are checked before the first one runs.
    """
    notebooks = [Path(n) for n in notebooks] if notebooks else lesson_notebooks()
    parameters = parameters or {}
    profile = get_profile(profile)
    missing = [str(n) for n in notebooks if not n.is_file()]
    if missing:
        raise ValueError(f"notebook not found: {', '.join(missing)}; lessons are in {NOTEBOOK_DIR}")
    for nb in notebooks:
        check_parameters(nb, parameters)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for nb in notebooks:
        entry = run_notebook(nb, out, parameters, profile, timeout)
        status = "ok" if entry.ok else f"FAILED at cell {entry.failed_cell}: {entry.error}"
        print(f"{nb.name}: {status} ({entry.seconds:.1f} s) -> {entry.html or entry.executed}", flush=True)
        entries.append(entry)
    print(f"index: {write_index(entries, out, profile)}")
    return entries
