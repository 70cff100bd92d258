"""Executed notebook reports: lessons record their headline results, papermill runs them, an index tells the story.

Inside a lesson, a headline number is recorded where it is computed::

    from gradkit.report import record
    record("test accuracy, c = 0.5", clipped.final_test_acc, note="norm clipping", fmt=".1%")

From a shell::

    python -m gradkit report [NOTEBOOK ...] [-p NAME VALUE ...] [--grid NAME=V1,V2 ...]
                             [--profile smoke|cpu|full] [--out reports/] [--timeout SECONDS]

writes, per notebook (and per combination of a parameter grid), the executed ``.ipynb`` and a
standalone ``.html`` (figures embedded), and an ``index.html`` (:mod:`gradkit.report_index`) with each
notebook's title, goal, main figure, recorded results, parameters, outcome and run time.

Parameter and grid names and values are checked against each notebook's ``parameters`` cell before
anything runs, so a typo costs a second, not a half-hour run. Exit codes of the command: 0 every
notebook ran; 1 a cell raised; 2 refused before running; 3 a cell ran past ``--timeout``; 130
interrupted (Ctrl-C). The index is rewritten before and after every notebook, so it never says "ok"
for a run that did not finish, and a notebook's previous page is deleted before it runs again.
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import math
import numbers
import os
import re
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from .checks import check_int, check_positive
from .report_index import MAIN_FIGURE_TAG, read_notebook, write_atomic  # noqa: F401 (MAIN_FIGURE_TAG: public here too)
from .runtime import get_profile
from .shipped import lesson_path

RECORD_MIME = "application/vnd.gradkit.record+json"
STATUSES = ("ok", "failed", "timed out", "interrupted", "running", "not run")
EXIT_OK, EXIT_FAILED, EXIT_REFUSED, EXIT_TIMED_OUT, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
# Cells papermill adds to the executed notebook; the user's saved notebook has none of them.
_ADDED_TAGS = {"injected-parameters", "papermill-error-cell-tag"}
T = TypeVar("T")


# ---- recording results -----------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One recorded result: ``value`` is JSON (a non-finite number is None, its ``text`` says nan/inf)."""

    name: str
    value: Any
    text: str
    note: str = ""


def record(name: str, value: T, note: str = "", fmt: str | None = None) -> T:
    """Record a headline result of the running notebook and return ``value`` unchanged.

    Under a batch runner (``gradkit report``, papermill, nbclient, nbconvert, nbval) the record is
    displayed as one output of MIME type ``application/vnd.gradkit.record+json`` (with a one-line
    ``text/plain`` fallback), so it is saved in the executed notebook and :func:`records` reads it
    back. In a live kernel (JupyterLab, VS Code) and outside Jupyter it does nothing. A batch runner is
    told apart by :func:`batch_runner`.

    ``value`` is a number, text, a bool, None, or a list of those (numpy and torch scalars are read
    with ``.item()``); ``fmt`` is a format spec for its text, e.g. ``".1%"`` (default ``.4g`` for floats).

    >>> record("clip rate, c = 0.5", 0.962, note="share of steps clipped", fmt=".1%")
    0.962
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if not isinstance(note, str):
        raise ValueError(f"note must be a string, got {note!r}")
    plain = _plain(value)
    text = _format(plain, fmt)
    if batch_runner():
        from IPython.display import display

        payload = {"name": name, "value": _finite(plain), "text": text, "note": note}
        line = f"recorded: {name} = {text}" + (f"  ({note})" if note else "")
        display({RECORD_MIME: payload, "text/plain": line}, raw=True)
    return value


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy and torch scalars
        return value.item()
    raise ValueError("value must be a number, text, a bool or None (or a list of them), "
                     f"got {type(value).__name__}: {value!r}")


def _plain(value: Any) -> Any:
    return [_scalar(v) for v in value] if isinstance(value, (list, tuple)) else _scalar(value)


def _format(value: Any, fmt: str | None) -> str:
    """``value``'s text: ``fmt`` when given, else ``.4g`` for floats and thousands separators for ints.

    >>> _format(0.9623, ".1%"), _format(1.6e-76, None), _format(532202, None), _format([0.1, 1.0], None)
    ('96.2%', '1.6e-76', '532,202', '[0.1, 1]')
    """
    if isinstance(value, list):
        return "[" + ", ".join(_format(v, fmt) for v in value) + "]"
    if value is None or isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if fmt is not None:
        try:
            return format(value, fmt)
        except (ValueError, TypeError) as err:
            raise ValueError(f"fmt={fmt!r} cannot format {value!r}: {err}") from None
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return value


def _finite(value: Any) -> Any:
    # JSON has no nan/inf (Jupyter's message packer warns on them): null, with the text keeping the meaning.
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def batch_runner() -> bool:
    """True while the kernel runs a cell for a batch runner: papermill, nbclient, nbconvert ``--execute``, nbval.

    Told apart by the request being answered: an ``execute_request`` that does not allow ``input()``
    (``allow_stdin`` false), which every batch runner sends and every interactive front end (JupyterLab,
    Notebook, VS Code) does not. The request says so whatever environment the kernel inherited: a
    papermill run started from a JupyterLab terminal or kernel inherits ``JPY_SESSION_NAME`` too.
    :func:`record` saves results and :func:`gradkit.widgets.show` draws static figures on this test.

    >>> batch_runner()  # plain Python: no kernel, no request
    False
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    kernel = getattr(get_ipython(), "kernel", None)
    if kernel is None:
        return False
    parent = kernel.get_parent() or {}
    return parent.get("msg_type") == "execute_request" and not parent.get("content", {}).get("allow_stdin", True)


def records(notebook: Path | str | Any) -> list[Record]:
    """The results an executed notebook (a path or an ``nbformat`` node) recorded with :func:`record`.

    Read from the record outputs (papermill, nbclient, nbconvert and nbval save them), in the order first
    recorded; a name recorded again (a cell run twice) keeps its last value. A notebook whose outputs were
    cleared after ``gradkit report`` ran it still has them in ``metadata.gradkit.records``.
    """
    nb = read_notebook(notebook) if isinstance(notebook, (str, Path)) else notebook
    payloads = [output.get("data", {}).get(RECORD_MIME) for cell in nb.cells for output in cell.get("outputs", [])]
    if not any(payloads):
        payloads = list(nb.metadata.get("gradkit", {}).get("records") or [])
    found: dict[str, Record] = {}
    for payload in payloads:
        if isinstance(payload, dict) and isinstance(payload.get("name"), str):
            found[payload["name"]] = Record(payload["name"], payload.get("value"), str(payload.get("text", "")),
                                            str(payload.get("note", "")))
    return list(found.values())


# ---- parameters and grids --------------------------------------------------------------------


def notebook_folder() -> Path:
    """Where the shipped lessons are: :func:`gradkit.shipped.notebooks_dir` (``GRADKIT_NOTEBOOKS``,
    else the checkout's ``notebooks/``, else the installed copy)."""
    from .shipped import notebooks_dir

    return notebooks_dir()


def lesson_notebooks(folder: Path | None = None) -> list[Path]:
    """The lesson notebooks in order (``NN_name.ipynb``)."""
    return sorted((folder or notebook_folder()).glob("[0-9][0-9]_*.ipynb"))


def declared_parameters(notebook: Path) -> dict[str, Any]:
    """The names and defaults of a notebook's ``parameters`` cell (papermill's own parser).

    A default that is not a Python literal (an expression) is kept as its source text.
    """
    import papermill

    return {name: parse_value(info["default"]) for name, info in papermill.inspect_notebook(str(notebook)).items()}


def parse_value(text: str) -> Any:
    """A command-line value as Python sees it: ``"0.1"`` -> 0.1, ``"[1, 2]"`` -> [1, 2], ``"sgd"`` -> 'sgd'.

    >>> parse_value("[0.1, 1]"), parse_value("norm"), parse_value("None")
    ([0.1, 1], 'norm', None)
    """
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_grid(spec: str) -> tuple[str, list[Any]]:
    """``--grid NAME=V1,V2,...``: the name and its values (Python literals, else text).

    >>> parse_grid("lr=0.01,0.2"), parse_grid("method=norm,value"), parse_grid("thresholds=[0.1, 1],[1]")
    (('lr', [0.01, 0.2]), ('method', ['norm', 'value']), ('thresholds', [[0.1, 1], [1]]))
    """
    name, sep, rest = spec.partition("=")
    if not sep or not name.strip() or not rest.strip():
        raise ValueError(f"--grid takes NAME=V1,V2,... (e.g. lr=0.01,0.2), got {spec!r}")
    try:
        values = ast.literal_eval(f"[{rest}]")
    except (ValueError, SyntaxError):
        values = [parse_value(v.strip()) for v in rest.split(",")]
    return name.strip(), values


def accepted_values() -> dict[str, tuple[Any, ...]]:
    """Parameter names whose values the kit knows, with the values it accepts (checked before a run)."""
    from .clip import METHODS
    from .models import MODELS
    from .runtime import PROFILES
    from .train import OPTIMIZERS

    return {"profile": (None, *PROFILES), "method": METHODS, "model": tuple(MODELS), "optimizer": OPTIMIZERS}


@dataclass(frozen=True)
class Kind:
    """What a parameter of the lessons takes: ``words`` for messages, ``check(name, value)`` raising ValueError."""

    words: str
    check: Callable[[str, Any], Any]


def _or_none(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    return lambda name, value: value if value is None else check(name, value)


def _positive_list(name: str, value: Any) -> list[float]:
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"{name} must be a non-empty list of numbers, got {value!r}")
    return [check_positive(f"{name}[{i}]", v) for i, v in enumerate(value)]


def _instance(kind: type | tuple[type, ...], words: str) -> Callable[[str, Any], Any]:
    def check(name: str, value: Any) -> Any:
        if not isinstance(value, kind):
            raise ValueError(f"{name} must be {words}, got {value!r}")
        return value

    return check


# The lessons' parameters that a default cannot describe (None: "by profile"), or whose range matters
# before a run (a negative learning rate trains nothing). Names mean the same thing in every lesson.
PARAMETER_KINDS: dict[str, Kind] = {
    "seed": Kind("an int >= 0", lambda n, v: check_int(n, v, minimum=0)),
    **{name: Kind("a finite number > 0", check_positive) for name in ("lr", "threshold", "live_threshold")},
    **{name: Kind("an int >= 1, or None (by profile)", _or_none(check_int))
       for name in ("epochs", "seeds", "subset", "test_subset")},
    "batch_size": Kind("an int >= 1", check_int),
    "thresholds": Kind("a list of finite numbers > 0, or None (the shipped sweep's)", _or_none(_positive_list)),
    "model_kw": Kind("a dict of the model's keywords", _instance(dict, "a dict")),
    "results_dir": Kind("a folder as text, or None", _or_none(_instance(str, "text"))),
    "schedule": Kind("a schedule spec as text (cosine, step:<every>:<gamma>, warmup:<steps>, plateau), or None",
                     _or_none(_instance(str, "text"))),
}


def check_value(notebook: Path, name: str, value: Any, default: Any) -> None:
    """Raise ``ValueError`` when ``value`` is not one the parameter takes: not among its accepted values,
    outside its kind and range (:data:`PARAMETER_KINDS`), or not of the kind of the notebook's default."""
    choices = accepted_values().get(name)
    if choices is not None and value not in choices:
        raise ValueError(f"{notebook.name}: {name}={value!r} is not accepted; valid values: "
                         f"{', '.join(map(repr, choices))}")
    kind = PARAMETER_KINDS.get(name)
    if kind is not None:
        try:
            kind.check(name, value)
        except ValueError as err:
            raise ValueError(f"{notebook.name}: {name}={value!r} is refused ({err}); {name} takes {kind.words}") from None
        return
    if value is None or default is None:
        return
    kinds = [(bool, "True or False"), ((int, float), "a number"), (str, "text"), ((list, tuple), "a list"),
             (dict, "a dict")]
    for kind, words in kinds:
        if isinstance(default, kind):
            number = kind == (int, float)
            if not isinstance(value, kind) or (number and isinstance(value, bool)):
                raise ValueError(f"{notebook.name}: {name}={value!r} is not {words} "
                                 f"(the notebook's default is {default!r})")
            return


def check_parameters(notebook: Path, parameters: dict[str, Any], grid: dict[str, list[Any]] | None = None) -> None:
    """Refuse unknown names (listing the valid ones), values of the wrong kind, and empty or repeated grid values."""
    declared = declared_parameters(notebook)
    grid = grid or {}
    unknown = sorted((set(parameters) | set(grid)) - set(declared))
    if unknown:
        raise ValueError(
            f"{notebook.name} has no parameter {', '.join(map(repr, unknown))}; "
            f"valid names: {', '.join(sorted(declared)) or '(none: the notebook has no parameters cell)'}"
        )
    both = sorted(set(parameters) & set(grid))
    if both:
        raise ValueError(f"{', '.join(both)} is set by both -p and --grid; give each name once")
    for name, value in parameters.items():
        check_value(notebook, name, value, declared[name])
    for name, values in grid.items():
        if not values:
            raise ValueError(f"--grid {name} has no values")
        repeated = [v for i, v in enumerate(values) if v in values[:i]]
        if repeated:
            raise ValueError(f"--grid {name} lists {repeated[0]!r} twice")
        for value in values:
            check_value(notebook, name, value, declared[name])


def combinations(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of a grid, the last name varying fastest; ``[{}]`` for no grid.

    >>> combinations({"lr": [0.01, 0.2], "method": ["norm", "value"]})[:2]
    [{'lr': 0.01, 'method': 'norm'}, {'lr': 0.01, 'method': 'value'}]
    """
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


_PLAIN = re.compile(r"[A-Za-z0-9.+-]+")


def _reads_as_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return parse_value(text) is not text  # None, True, [1] ...: a literal, not text
    return True


def _slug(value: Any) -> str:
    """A file-name part that says ``value`` and never names two different values alike.

    A number, a bool or None is written as Python writes it (``-1``, ``0.001``, ``1e-05``); text made of
    letters, digits, ``.``, ``+`` and ``-`` that does not read as a number stays as it is; a list of numbers is
    its items joined by ``_`` (one item: followed by ``_``, so ``[1]`` is not ``1``). Anything else (text with other characters or that reads as a number, dicts,
    tuples, nested lists) is written with those characters as ``-`` and ``~`` plus six hex digits of a
    hash of its ``repr``, so that ``"0.1"`` (text) and ``0.1`` (a number), or ``[0.1, 1]`` and ``"0.1-1"``,
    get different names. ``~`` and ``_`` appear in no plain part, which keeps the three forms apart.

    >>> _slug(-1), _slug(0.01), _slug("norm"), _slug([0.1, 1]), _slug([1]), _slug("0.1")
    ('-1', '0.01', 'norm', '0.1_1', '1_', '0.1~b48e06')
    """
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return repr(float(value))
    if isinstance(value, str) and _PLAIN.fullmatch(value) and not _reads_as_number(value):
        return value
    if isinstance(value, list) and value and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value):
        return "_".join(_slug(v) for v in value) + ("_" if len(value) == 1 else "")
    digest = hashlib.sha256(repr(value).encode()).hexdigest()[:6]
    return (re.sub(r"[^A-Za-z0-9.+-]+", "-", str(value)).strip("-")[:40] or "value") + "~" + digest


def output_names(jobs: list[tuple[Path, dict[str, Any]]]) -> list[str]:
    """A file name (without suffix) per run that says its grid values and never repeats in one report.

    Notebooks with the same file name from different folders get the folder's name in front.

    >>> output_names([(Path("a/01_x.ipynb"), {}), (Path("b/01_x.ipynb"), {}), (Path("05_s.ipynb"), {"lr": 0.2})])
    ['a-01_x', 'b-01_x', '05_s__lr=0.2']
    """
    def name(nb: Path, combo: dict[str, Any], folder: bool) -> str:
        stem = f"{_slug(nb.parent.resolve().name)}-{nb.stem}" if folder else nb.stem
        return stem + "".join(f"__{_slug(k)}={_slug(v)}" for k, v in combo.items())

    plain = [name(nb, combo, False) for nb, combo in jobs]
    names = [name(nb, combo, plain.count(p) > 1) for (nb, combo), p in zip(jobs, plain)]
    unique: list[str] = []
    for n in names:
        candidate, k = n, 1
        while candidate in unique:
            k += 1
            candidate = f"{n}-{k}"
        unique.append(candidate)
    return unique


# ---- running -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """How a run ended. ``cell`` is the cell's index in the saved notebook (0-based, as nbformat and
    JupyterLab's cell list count); ``count`` its execution count, the ``[n]`` beside it in the report page.
    """

    status: str
    cell: int | None = None
    count: int | None = None
    detail: str = ""

    @property
    def text(self) -> str:
        """E.g. ``failed at cell index 8 ([7] in the report page): RuntimeError: boom in `f()` ``."""
        where = ""
        if self.cell is not None:
            where = f" at cell index {self.cell}" + (f" ([{self.count}] in the report page)" if self.count else "")
        return self.status + where + (f": {self.detail}" if self.detail else "")


@dataclass
class ReportEntry:
    """One run of one notebook: where its files are, what it was given, how it ended, what it recorded."""

    notebook: Path
    name: str
    parameters: dict[str, Any]
    grid: dict[str, Any] = field(default_factory=dict)
    outcome: Outcome = field(default_factory=lambda: Outcome("not run"))
    seconds: float = 0.0
    executed: Path | None = None
    html: Path | None = None
    records: list[Record] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome.status == "ok"


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


@contextmanager
def _output_to(path: Path) -> Iterator[None]:
    # The kernel inherits file descriptors 1 and 2: its own log (transport warnings, the traceback of
    # the KeyboardInterrupt that stops it) goes to a file beside the page instead of burying our
    # messages, and a caller reading our stdout through a pipe never waits on the kernel.
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(path, "wb") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)


def to_html(executed: Path) -> Path:
    """Write a standalone HTML file next to an executed notebook that opens from disk, offline.

    Images are embedded; formulas are MathML, which browsers draw themselves (nbconvert's page would load
    MathJax and require.js from a CDN, so a room without internet saw raw TeX); no script is fetched.
    """
    import nbformat
    from nbconvert import HTMLExporter

    from .offline import drop_cdn_loaders, offline_notebook

    nb = nbformat.from_dict(offline_notebook(read_notebook(executed)))
    body, _ = HTMLExporter().from_notebook_node(nb)
    body = drop_cdn_loaders(body)
    target = executed.with_suffix(".html")
    write_atomic(target, body)
    return target


def _user_cells(nb: Any) -> list[Any]:
    """The executed notebook's cells that come from the saved notebook, at their index there."""
    return [c for c in nb.cells if not _ADDED_TAGS & set(c.metadata.get("tags", []))]


def _locate(nb: Any) -> tuple[int | None, int | None, str]:
    """``(index in the saved notebook, execution count, detail)`` of the cell where a run stopped: the
    first cell with an error, else (a timeout, Ctrl-C) the last cell that started."""
    cells = _user_cells(nb)
    for index, cell in enumerate(cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error" and not (output.get("ename") == "SystemExit"
                                                             and output.get("evalue") in ("", "0")):
                first = cell.source.strip().splitlines()[:1]
                where = f" in `{first[0]}`" if first else ""
                evalue = output.get("evalue", "")
                evalue = evalue if len(evalue) <= 300 else evalue[:297] + "..."
                return index, cell.get("execution_count"), f"{output.get('ename')}: {evalue}{where}"
    started = [i for i, c in enumerate(cells) if c.metadata.get("papermill", {}).get("start_time")]
    if not started:
        return None, None, ""
    return started[-1], cells[started[-1]].get("execution_count"), ""


def _finish(entry: ReportEntry, executed: Path, status: str, detail: str, seconds: float) -> ReportEntry:
    """Fill in the entry from the executed notebook, store the outcome and records in its metadata, write its page."""
    from .report_index import summarize

    entry.seconds = seconds
    if not executed.exists():
        entry.outcome = Outcome(status, detail=detail)
        entry.summary = summarize(entry.notebook, None)
        return entry
    nb = read_notebook(executed)
    cell, count, found = _locate(nb) if status != "ok" else (None, None, "")
    entry.outcome = Outcome(status, cell, count, detail or found)
    entry.records = records(nb)
    nb.metadata["gradkit"] = {
        "outcome": entry.outcome.text, "status": status, "cell": cell, "seconds": round(seconds, 1),
        "parameters": entry.parameters, "records": [asdict(r) for r in entry.records],
    }
    import nbformat

    write_atomic(executed, nbformat.writes(nb))
    entry.executed, entry.html = executed, to_html(executed)
    entry.summary = summarize(entry.notebook, nb)
    return entry


def run_notebook(notebook: Path, out: Path, parameters: dict[str, Any], profile: str, timeout: int | None = None,
                 name: str | None = None, grid: dict[str, Any] | None = None) -> ReportEntry:
    """Execute one notebook into ``out/<name>.ipynb`` and ``.html``; the partial notebook is kept on failure.

    The kernel's own log goes to ``out/<name>.kernel.log``.
    The previous files of that name are deleted first, so a page never outlives the run it showed. A
    cell that raises gives ``failed``, one past ``timeout`` seconds ``timed out``, Ctrl-C ``interrupted``
    (returned, not raised: :func:`run_report` writes the index, then re-raises).
    """
    import papermill
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    grid = dict(grid or {})
    params = {**parameters, **grid}
    if "profile" in declared_parameters(notebook):
        params.setdefault("profile", profile)
    name = name or notebook.stem
    executed = out / f"{name}.ipynb"
    log = out / f"{name}.kernel.log"
    for stale in (executed, executed.with_suffix(".html"), log):
        stale.unlink(missing_ok=True)
    entry = ReportEntry(notebook, name, params, grid)
    start = time.perf_counter()
    detail = ""
    try:
        # Figures must land in the notebook whatever backend this shell set (MPLBACKEND=Agg shows nothing).
        with _environment(GRADKIT_HEADLESS="1", GRADKIT_PROFILE=profile,
                          MPLBACKEND="module://matplotlib_inline.backend_inline"), _output_to(log):
            papermill.execute_notebook(
                str(notebook), str(executed), parameters=params, cwd=str(notebook.parent),
                kernel_name="python3", progress_bar=False, execution_timeout=timeout,
            )
        status = "ok"
    except PapermillExecutionError as err:
        # A Ctrl-C at a terminal reaches the kernel too: its cell then fails with KeyboardInterrupt.
        status = "interrupted" if err.ename == "KeyboardInterrupt" else "failed"
    except CellTimeoutError:
        status, detail = "timed out", f"still running after {timeout} s (--timeout {timeout})"
    except DeadKernelError:
        status, detail = "failed", "the kernel died (out of memory, or killed)"
    except KeyboardInterrupt:
        status, detail = "interrupted", "Ctrl-C"
    except Exception as err:  # noqa: BLE001 - one broken run (no kernel, bad file) must not stop the rest
        status, detail = "failed", f"{type(err).__name__}: {err}"
    return _finish(entry, executed, status, detail, time.perf_counter() - start)


def exit_code(entries: list[ReportEntry]) -> int:
    """130 when interrupted, else 3 when a cell timed out, else 1 when one failed, else 0."""
    statuses = {e.outcome.status for e in entries}
    if statuses & {"interrupted", "not run", "running"}:
        return EXIT_INTERRUPTED
    if "timed out" in statuses:
        return EXIT_TIMED_OUT
    return EXIT_FAILED if "failed" in statuses else EXIT_OK


def run_report(
    notebooks: list[Path] | None = None,
    parameters: dict[str, Any] | None = None,
    profile: str | None = None,
    out: Path | str = "reports",
    timeout: int | None = None,
    grid: dict[str, list[Any]] | None = None,
) -> list[ReportEntry]:
    """Execute notebooks (default: every lesson) into ``out``, each once per grid combination, with the index.

    Everything is checked before the first run. On Ctrl-C the index is written (the current run
    ``interrupted``, the rest ``not run``) and ``KeyboardInterrupt`` is raised again.
    """
    from .report_index import environment, summarize, write_index

    notebooks = [Path(n) for n in notebooks] if notebooks else lesson_notebooks()
    if not notebooks:
        raise ValueError(f"no lesson notebooks (NN_name.ipynb) in {notebook_folder()}: name notebooks to run, "
                         "or point --notebooks (GRADKIT_NOTEBOOKS) at the lessons' folder")
    parameters, grid = dict(parameters or {}), dict(grid or {})
    profile = get_profile(profile)
    notebooks = [lesson_path(n) for n in notebooks]
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0):
        raise ValueError(f"timeout must be a positive number of seconds per cell, got {timeout!r}")
    for nb in notebooks:
        check_parameters(nb, parameters, grid)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out={str(out)!r} is a file; give a folder for the report")
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(nb, combo) for nb in notebooks for combo in combinations(grid)]
    entries = [ReportEntry(nb, name, {**parameters, **combo}, combo, summary=summarize(nb, None))
               for (nb, combo), name in zip(jobs, output_names(jobs))]
    env = environment(profile)
    try:
        for i, planned in enumerate(entries):
            planned.outcome = Outcome("running", detail=f"since {time.strftime('%H:%M:%S')}")
            write_index(entries, out, env)
            entries[i] = run_notebook(planned.notebook, out, parameters, profile, timeout, planned.name, planned.grid)
            entry = entries[i]
            where = entry.html or entry.executed or "-"
            print(f"{entry.name}: {entry.outcome.text} ({entry.seconds:.1f} s) -> {where}", flush=True)
            if entry.outcome.status == "interrupted":
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        for entry in entries:
            if entry.outcome.status == "running":
                entry.outcome = Outcome("interrupted", detail="Ctrl-C")
            elif entry.outcome.status == "not run":
                entry.outcome = Outcome("not run", detail="the report was interrupted before it started")
        write_index(entries, out, env)
        raise
    print(f"index: {write_index(entries, out, env)}")
    return entries
