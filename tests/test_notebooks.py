"""Every lesson follows the house rules: papermill can read its parameters, it teaches before it
computes, it ends with a summary and exercises, and its stored outputs carry no error."""

import ast
from pathlib import Path

import nbformat
import pytest

from gradkit.report import declared_parameters, lesson_notebooks

NOTEBOOKS = lesson_notebooks()


def test_the_lesson_sequence_is_complete():
    assert [p.name[:2] for p in NOTEBOOKS] == [f"{i:02d}" for i in range(9)]


@pytest.fixture(params=NOTEBOOKS, ids=lambda p: p.stem)
def notebook(request) -> tuple[Path, nbformat.NotebookNode]:
    return request.param, nbformat.read(request.param, as_version=4)


def test_title_and_learning_goals_come_first(notebook):
    _, nb = notebook
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# ")
    assert "learning goals" in first.source.lower()


def test_every_parameter_assignment_is_seen_by_papermill(notebook):
    path, nb = notebook
    [cell] = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assigned = {t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign) for t in node.targets}
    assert {"profile", "seed"} <= assigned
    assert set(declared_parameters(path)) == assigned


def test_ends_with_summary_and_three_exercises(notebook):
    _, nb = notebook
    tail = "\n".join(c.source for c in nb.cells[-4:] if c.cell_type == "markdown")
    assert "what you should now understand" in tail.lower()
    exercises = tail[tail.lower().index("exercises"):]
    assert sum(line.lstrip().startswith(("1.", "2.", "3.")) for line in exercises.splitlines()) >= 3


def test_stored_outputs_have_no_errors_and_sizes_are_printed(notebook):
    _, nb = notebook
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    printed = "".join(o.get("text", "") for o in outputs)
    assert "profile=" in printed and "device=" in printed


def test_kernel_is_pinned_and_cells_numbered(notebook):
    _, nb = notebook
    assert nb.metadata["kernelspec"]["name"] == "python3"
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1))


def test_navigation_links_point_to_neighbours(notebook):
    path, nb = notebook
    nav = nb.cells[-1]
    assert "navigation" in nav.metadata.get("tags", [])
    i = NOTEBOOKS.index(path)
    neighbours = NOTEBOOKS[max(i - 1, 0):i] + NOTEBOOKS[i + 1:i + 2]
    assert [p.name for p in neighbours] == [n for n in (p.name for p in NOTEBOOKS) if f"({n})" in nav.source]


ALL_NOTEBOOKS = sorted(Path(__file__).resolve().parent.parent.joinpath("notebooks").rglob("*.ipynb"))


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: p.name)
def test_one_import_style_names_from_their_module(path):
    """Every notebook imports gradkit the same way: modules with ``from gradkit import <module>`` and
    names from the module that defines them (``from gradkit.clip import clip_grad_norm``), never a name
    re-exported by the package top and never a bare ``import gradkit``."""
    import importlib
    import pkgutil

    import gradkit

    modules = {m.name for m in pkgutil.iter_modules(gradkit.__path__)}
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                assert all(a.name != "gradkit" for a in node.names), f"{path.name}: bare `import gradkit`"
            elif isinstance(node, ast.ImportFrom) and node.module == "gradkit":
                names = [a.name for a in node.names]
                assert set(names) <= modules, f"{path.name}: `from gradkit import {', '.join(names)}` imports names, not modules"
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gradkit."):
                home = importlib.import_module(node.module)
                for alias in node.names:
                    try:
                        obj = getattr(home, alias.name)
                    except AttributeError:
                        obj = importlib.import_module(f"{node.module}.{alias.name}")
                    defined = getattr(obj, "__module__", node.module)
                    assert defined == node.module or not callable(obj), \
                        f"{path.name}: {alias.name} is defined in {defined}, imported from {node.module}"


def test_the_sweep_lesson_writes_its_runs_to_the_user_cache_not_beside_the_shipped_results(tmp_path, monkeypatch):
    """Lesson 05 once wrote into ``<shipped results>/../reports``: the checkout, or site-packages when
    installed. Its runs belong in ``$GRADKIT_CACHE/sweeps/05-<profile>``."""
    from nbclient import NotebookClient

    from gradkit import sweeps

    path = next(p for p in NOTEBOOKS if p.name.startswith("05_"))
    beside = sweeps.SHIPPED_RESULTS.parent / "reports" / "sweeps" / "05-smoke"
    before = sorted(beside.glob("*")) if beside.exists() else None
    monkeypatch.setenv("GRADKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GRADKIT_PROFILE", "smoke")
    monkeypatch.setenv("GRADKIT_HEADLESS", "1")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    written = sorted((tmp_path / "cache" / "sweeps" / "05-smoke").glob("run-*.json"))
    assert written, "lesson 05 wrote no run into $GRADKIT_CACHE/sweeps/05-smoke"
    assert (sorted(beside.glob("*")) if beside.exists() else None) == before


def test_no_code_cell_reaches_the_shipped_results_by_a_relative_path():
    """A lesson copied elsewhere (the browser test's lab, a student's folder, an installed wheel) must still
    find the shipped runs: through gradkit.shipped, never "../results" (lesson 08 did, and failed in the lab)."""
    folder = NOTEBOOKS[0].parent
    for path in [*NOTEBOOKS, *sorted((folder / "solutions").glob("*.ipynb"))]:
        nb = nbformat.read(path, as_version=4)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                assert "../results" not in cell.source, f"{path.name}, cell {i}: use gradkit.shipped.results_dir()"
