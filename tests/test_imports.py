"""Importing gradkit has no side effects, and the package's modules import each other without cycles."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gradkit"

FRESH_IMPORT = """
import json, sys
import matplotlib
# 'backend' is left out: reading it makes matplotlib pick a backend (and import pyplot).
before = {k: repr(matplotlib.rcParams[k]) for k in matplotlib.rcParams if k != "backend"}
for name in sys.argv[1:]:
    __import__(name)
after = {k: repr(matplotlib.rcParams[k]) for k in matplotlib.rcParams if k != "backend"}
print(json.dumps({"pyplot": "matplotlib.pyplot" in sys.modules,
                  "changed": sorted(k for k in before if before[k] != after[k]),
                  "loaded": sorted(m for m in ("ipywidgets", "IPython", "torchvision", "papermill", "gradkit.plots")
                                   if m in sys.modules)}))
"""


def fresh_import(*modules: str) -> dict:
    """Import ``modules`` in a new interpreter; what it loaded and which rcParams changed."""
    proc = subprocess.run([sys.executable, "-c", FRESH_IMPORT, *modules], capture_output=True, text=True,
                          timeout=120, cwd=PACKAGE.parent)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_gradkit_loads_no_pyplot_no_widgets_and_changes_no_setting() -> None:
    seen = fresh_import("gradkit", "gradkit.clip", "gradkit.monitor", "gradkit.data", "gradkit.train",
                        "gradkit.suggest", "gradkit.doctor")
    assert seen == {"pyplot": False, "changed": [], "loaded": []}


def test_importing_the_plotting_module_changes_no_setting_until_asked() -> None:
    seen = fresh_import("gradkit.plots", "gradkit.toys", "gradkit.sweeps")
    assert not seen["pyplot"] and seen["changed"] == []


def test_use_style_is_what_applies_the_lesson_style() -> None:
    import matplotlib

    from gradkit import plots

    with matplotlib.rc_context({"axes.grid": False, "axes.spines.top": True, "lines.linewidth": 1.0}):
        plots.use_style()
        rc = matplotlib.rcParams
        assert (rc["axes.grid"], rc["axes.spines.top"], rc["lines.linewidth"]) == (True, False, 1.6)


def test_every_lesson_that_draws_applies_the_style_itself() -> None:
    import nbformat

    for path in sorted((PACKAGE.parent / "notebooks").glob("*.ipynb")):
        sources = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
        draws = any("plots." in s or "widgets." in s for s in sources)
        assert not draws or any("plots.use_style()" in s for s in sources), f"{path.name} never calls plots.use_style()"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """For each module of the package, the package modules it imports anywhere (top level or inside
    functions: a lazy import still ties the two modules together)."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                # `from pkg import sub` imports the submodule when there is one, else the package.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_and_accepts_a_tree() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_relative_absolute_and_lazy_imports() -> None:
    graph = import_graph()
    assert "gradkit.clip" in graph["gradkit.monitor"]  # from gradkit.clip import ...
    assert "gradkit.runtime" in graph["gradkit.data"]  # from .runtime import ...
    assert "gradkit.data" in graph["gradkit.doctor"]  # imported inside a function


def test_no_import_cycle_inside_the_package() -> None:
    assert find_cycle(import_graph()) is None


@pytest.mark.parametrize("core", ["gradkit.clip", "gradkit.monitor", "gradkit.data"])
def test_the_core_imports_no_plotting_widgets_or_lessons(core: str) -> None:
    graph = import_graph()
    reachable, todo = set(), [core]
    while todo:
        for nxt in graph[todo.pop()] - reachable:
            reachable.add(nxt)
            todo.append(nxt)
    assert not reachable & {"gradkit.plots", "gradkit.widgets", "gradkit.toys", "gradkit.explorer", "gradkit.claims"}


def private_imports(source: str) -> list[str]:
    """Names starting with one underscore imported from gradkit's own modules (``from .x import _y``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").startswith("gradkit")):
            found += [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    return found


def test_the_private_import_finder_sees_relative_and_absolute_imports() -> None:
    assert private_imports("from .runs import _x, sweep\nfrom gradkit.clip import _y\nfrom . import __version__") == ["_x", "_y"]
    assert private_imports("from torch.utils._foreach_utils import _group") == []


def test_no_private_name_is_imported_across_the_package_modules() -> None:
    """A module's underscore names are its own: what another module needs is public somewhere."""
    offenders = {str(p.relative_to(PACKAGE)): names for p in sorted(PACKAGE.rglob("*.py"))
                 if (names := private_imports(p.read_text(encoding="utf-8")))}
    assert offenders == {}
