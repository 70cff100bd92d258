import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from gradkit import report

ROOT = Path(__file__).resolve().parents[1]


def make_notebook(path: Path, body: str) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("profile = None\nscale = 2.0")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# tiny"), params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


PLOT = "import matplotlib.pyplot as plt\nplt.plot([0, 1], [0, scale])\nplt.show()\nprint('scale', scale)"


def test_unknown_parameter_is_rejected_before_running(tmp_path):
    nb = make_notebook(tmp_path / "01_tiny.ipynb", PLOT)
    with pytest.raises(ValueError, match=r"no parameter 'scael'; valid names: profile, scale"):
        report.run_report([nb], {"scael": 3}, "smoke", tmp_path / "out")
    assert not (tmp_path / "out" / "01_tiny.ipynb").exists()


def test_report_writes_notebook_html_with_figure_and_index(tmp_path):
    nb = make_notebook(tmp_path / "01_tiny.ipynb", PLOT)
    [entry] = report.run_report([nb], {"scale": 3.5}, "smoke", tmp_path / "out")
    assert entry.ok and entry.parameters == {"scale": 3.5, "profile": "smoke"}
    executed = nbformat.read(entry.executed, as_version=4)
    assert "scale 3.5" in "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    page = entry.html.read_text()
    assert "data:image/png;base64" in page
    index = (tmp_path / "out" / "index.html").read_text()
    assert '<a href="01_tiny.html">01_tiny</a>' in index and "scale=3.5" in index and "profile <b>smoke</b>" in index


def test_failing_cell_exits_nonzero_names_cell_and_keeps_partial(tmp_path):
    nb = make_notebook(tmp_path / "02_broken.ipynb", "print('before')\nraise RuntimeError('planted failure')")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "gradkit", "report", str(nb), "--out", str(out), "--profile", "smoke"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    # Cell 3 of the executed notebook: papermill injected the profile parameter as cell 2.
    assert "02_broken.ipynb failed at cell 3: RuntimeError: planted failure in `print('before')`" in proc.stderr
    partial = nbformat.read(out / "02_broken.ipynb", as_version=4)
    [failed] = [c for c in partial.cells if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    assert "planted failure" in failed.source and failed.outputs[0].text == "before\n"


def test_command_line_bad_parameter_lists_valid_names(tmp_path):
    nb = make_notebook(tmp_path / "01_tiny.ipynb", PLOT)
    proc = subprocess.run([sys.executable, "-m", "gradkit", "report", str(nb), "-p", "nope", "1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "valid names: profile, scale" in proc.stderr


def test_sweep_report_notebook_in_smoke_profile(tmp_path):
    nb = ROOT / "notebooks" / "05_sweep_report.ipynb"
    [entry] = report.run_report([nb], {}, "smoke", tmp_path / "out")
    assert entry.ok, entry.error
    page = entry.html.read_text()
    assert page.count("data:image/png;base64") >= 1
    assert "profile=smoke" in page


def test_lesson_list_is_ordered():
    names = [p.name for p in report.lesson_notebooks()]
    assert names == sorted(names) and all(n[:2].isdigit() for n in names)
