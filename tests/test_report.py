import base64
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest
from PIL import Image

from gradkit import report, report_index
from gradkit.__main__ import main

ROOT = Path(__file__).resolve().parents[1]


def make_notebook(path: Path, *bodies: str, tagged: int | None = None,
                  params: str = "profile = None\nscale = 2.0") -> Path:
    """A tiny notebook: a title with one learning goal, a parameters cell, then one code cell per body.

    ``tagged`` is the index (among ``bodies``) of the cell tagged as the main figure.
    """
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    code = [nbformat.v4.new_code_cell(body) for body in bodies]
    if tagged is not None:
        code[tagged].metadata["tags"] = [report.MAIN_FIGURE_TAG]
    title = nbformat.v4.new_markdown_cell("# 01 · Tiny\n\n**Learning goals**\n- draw a line\n"
                                          "  of slope `scale`;\n- more")
    nb.cells = [title, cell, *code]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


PLOT = "import matplotlib.pyplot as plt\nplt.plot([0, 1], [0, scale])\nplt.show()\nprint('scale', scale)"
# Two figures: a square one first, then a wide one (the main figure, tagged) whose thumbnail the index must show.
SQUARE = "import matplotlib.pyplot as plt\nplt.figure(figsize=(3, 3)); plt.plot([0, 1]); plt.show()"
WIDE = "plt.figure(figsize=(8, 2)); plt.plot([0, 1], [0, scale]); plt.show()"
RECORDS = ("from gradkit.report import record\nimport numpy as np\n"
           "print('profile=smoke | device=cpu | n=3')\n"
           "record('slope', np.float64(scale) * 2, note='twice the scale', fmt='.2f')\n"
           "record('not a number', float('nan'))\nrecord('steps', 1234)")


def index_of(out: Path) -> str:
    return (out / "index.html").read_text()


def embedded_images(page: str) -> list[Image.Image]:
    chunks = page.split("data:image/png;base64,")[1:]
    return [Image.open(io.BytesIO(base64.b64decode(c.split('"', 1)[0]))) for c in chunks]


# ---- record() without a kernel run -----------------------------------------------------------


class FakeKernel:
    def __init__(self, allow_stdin: bool):
        self.parent = {"msg_type": "execute_request", "content": {"allow_stdin": allow_stdin}}

    def get_parent(self):
        return self.parent


@pytest.mark.parametrize("allow_stdin, shown", [(True, 0), (False, 1)])
def test_record_displays_only_for_a_batch_runner(monkeypatch, allow_stdin, shown):
    import IPython
    import IPython.display

    shell = type("Shell", (), {"kernel": FakeKernel(allow_stdin)})()
    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)
    displayed = []
    monkeypatch.setattr(IPython.display, "display", lambda data, raw: displayed.append(data))
    value = np.float32(0.5)
    assert report.record("clip rate", value, note="c = 0.5", fmt=".1%") is value
    assert len(displayed) == shown
    if shown:
        [data] = displayed
        assert data[report.RECORD_MIME] == {"name": "clip rate", "value": 0.5, "text": "50.0%", "note": "c = 0.5"}
        assert data["text/plain"] == "recorded: clip rate = 50.0%  (c = 0.5)"


def test_record_outside_jupyter_returns_value_and_refuses_bad_input():
    assert report.record("n", 3) == 3
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        report.record("", 1.0)
    with pytest.raises(ValueError, match="value must be a number, text, a bool or None"):
        report.record("weights", np.zeros(3))
    with pytest.raises(ValueError, match="fmt='.1%' cannot format 'abc'"):
        report.record("label", "abc", fmt=".1%")


# ---- checks before any run -------------------------------------------------------------------


def test_unknown_parameter_is_rejected_before_running(tmp_path):
    nb = make_notebook(tmp_path / "01_tiny.ipynb", PLOT)
    with pytest.raises(ValueError, match=r"no parameter 'scael'; valid names: profile, scale"):
        report.run_report([nb], {"scael": 3}, "smoke", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("grid, message", [
    (["momentum=0.1,0.2"], "no parameter 'momentum'; valid names: epochs, lr, method, profile, scale, seed, thresholds"),
    (["method=norm,nrom"], "method='nrom' is not accepted; valid values: 'none', 'value', 'norm'"),
    (["scale=1,fast"], "scale='fast' is not a number (the notebook's default is 2.0)"),
    (["scale=1,1"], "--grid scale lists 1 twice"),
    (["scale"], "--grid takes NAME=V1,V2,..."),
    (["scale=1", "scale=2"], "a --grid name is given twice"),
    # lr=-1 once ran (after lr=0.01) and was saved as "__lr=1": refused by range, before any run.
    (["lr=0.01,-1"], "lr=-1 is refused (lr must be a finite number > 0, got -1); lr takes a finite number > 0"),
    (["lr=0.01,1e999"], "lr=inf is refused"),
    (["seed=0,-2"], "seed=-2 is refused (seed must be an int >= 0, got -2)"),
    # thresholds defaults to None, so its default says nothing of its kind: the kit's table does.
    (["thresholds=1,2"], "thresholds=1 is refused (thresholds must be a non-empty list of numbers, got 1); "
                         "thresholds takes a list of finite numbers > 0, or None"),
    (["thresholds=[0.1, -1],[1]"], "thresholds=[0.1, -1] is refused (thresholds[1] must be a finite number > 0"),
    (["epochs=2,0"], "epochs=0 is refused (epochs must be an int >= 1, got 0); epochs takes an int >= 1, or None"),
])
def test_command_line_bad_grid_is_refused_before_any_run(tmp_path, capsys, grid, message):
    nb = make_notebook(tmp_path / "01_tiny.ipynb", PLOT, params="profile = None\nscale = 2.0\nmethod = 'norm'\n"
                       "lr = 0.05\nseed = 0\nthresholds = None\nepochs = None")
    args = [a for spec in grid for a in ("--grid", spec)]
    assert main(["report", str(nb), "--out", str(tmp_path / "out"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_command_line_bad_parameter_lists_valid_names(tmp_path):
    nb = make_notebook(tmp_path / "01_tiny.ipynb", PLOT)
    proc = subprocess.run([sys.executable, "-m", "gradkit", "report", str(nb), "-p", "nope", "1"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "valid names: profile, scale" in proc.stderr


def test_output_names_never_repeat_and_say_the_grid_values(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    jobs = [(tmp_path / "a" / "01_x.ipynb", {}), (tmp_path / "b" / "01_x.ipynb", {}),
            (tmp_path / "a" / "01_x.ipynb", {}), (Path("05_s.ipynb"), {"thresholds": [0.1, 1], "method": "agc"})]
    names = report.output_names(jobs)
    assert names == ["a-01_x", "b-01_x", "a-01_x-2", "05_s__thresholds=0.1_1__method=agc"]
    assert report.combinations({"lr": [0.01, 0.2], "method": ["norm", "value"]}) == [
        {"lr": 0.01, "method": "norm"}, {"lr": 0.01, "method": "value"},
        {"lr": 0.2, "method": "norm"}, {"lr": 0.2, "method": "value"}]


def test_two_different_grid_values_never_give_the_same_name():
    # "-1" lost its sign ("lr=1", a run that claimed another learning rate); "0.1-1" was [0.1, 1] and the text too.
    values = [-1, 1, 1.0, -1.0, 0.1, "0.1", "1", [0.1, 1], [0.1, 1.0], (0.1, 1), "0.1-1", "0.1_1", [1], 1e-05, "1e-05",
              None, "None", True, "True", float("inf"), "inf", float("nan"), "nan", "norm", "norm ", "a b", "a-b", "a/b",
              {"width": 0.25}, {"width": 0.5}, "", "-", [[0.1]], [0.1]]
    names = [report._slug(v) for v in values]
    assert len(set(names)) == len(values), [n for n in names if names.count(n) > 1]
    assert all(re.fullmatch(r"[A-Za-z0-9.+_~-]+", n) for n in names), names
    jobs = [(Path("05_s.ipynb"), {"lr": v}) for v in (0.01, -1, 1)]
    assert report.output_names(jobs) == ["05_s__lr=0.01", "05_s__lr=-1", "05_s__lr=1"]


def test_lesson_05_grid_with_a_negative_learning_rate_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["report", "05", "--out", str(out), "--grid", "lr=0.01,-1", "--profile", "smoke"]) == 2
    assert "05_sweep_report.ipynb: lr=-1 is refused" in capsys.readouterr().err and not out.exists()
    assert main(["report", "05", "--out", str(out), "--grid", "thresholds=1,2", "--profile", "smoke"]) == 2
    assert "takes a list of finite numbers > 0, or None" in capsys.readouterr().err and not out.exists()


def test_every_lesson_tags_one_main_figure_records_results_and_has_a_goal():
    for path in report.lesson_notebooks():
        nb = nbformat.read(path, as_version=4)
        tagged = [c for c in nb.cells if report.MAIN_FIGURE_TAG in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and tagged[0].cell_type == "code", path.name
        calls = sum(c.source.count("record(") for c in nb.cells if c.cell_type == "code")
        assert 2 <= calls <= 5, f"{path.name} records {calls} results"
        assert report_index.title(nb) and len(report_index.goal(nb)) > 20, path.name


# ---- executed runs (tiny notebooks, smoke profile) --------------------------------------------


def test_records_and_main_figure_reach_the_index_and_a_failed_rerun_leaves_nothing_stale(tmp_path):
    nb = make_notebook(tmp_path / "01_tiny.ipynb", SQUARE, RECORDS, WIDE, tagged=2)
    out = tmp_path / "out"
    [entry] = report.run_report([nb], {"scale": 3.5}, "smoke", out)
    assert entry.ok and entry.parameters == {"scale": 3.5, "profile": "smoke"}
    assert [(r.name, r.value, r.text, r.note) for r in entry.records] == [
        ("slope", 7.0, "7.00", "twice the scale"), ("not a number", None, "nan", ""), ("steps", 1234, "1,234", "")]
    meta = json.loads(entry.executed.read_text())["metadata"]["gradkit"]
    assert meta["status"] == "ok" and meta["records"][0] == {"name": "slope", "value": 7.0, "text": "7.00",
                                                             "note": "twice the scale"}
    page = index_of(out)
    for text in ("01 · Tiny", "Draw a line of slope scale", "7.00", "twice the scale", "1,234", "scale=3.5",
                 "profile=smoke | device=cpu | n=3", '<span class="outcome ok">ok</span>', "<dt>torch</dt>",
                 '<a href="01_tiny.html">'):
        assert text in page, text
    [thumb] = embedded_images(page)
    assert thumb.width / thumb.height > 3  # the wide, tagged figure, not the square one before it
    assert "data:image/png;base64" in entry.html.read_text()

    # Re-run into the same folder a version that fails before its figure and records.
    make_notebook(nb, "print('second version')\nraise RuntimeError('planted failure')", RECORDS, WIDE, tagged=2)
    proc = subprocess.run([sys.executable, "-m", "gradkit", "report", str(nb), "--out", str(out), "--profile", "smoke"],
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 1, proc.stderr
    # Cell index 2 of the saved notebook; [3] in the page, after the parameters and papermill's injected cell.
    assert ("01_tiny.ipynb failed at cell index 2 ([3] in the report page): RuntimeError: planted failure "
            "in `print('second version')`") in proc.stderr
    page = index_of(out)
    assert "failed at cell index 2" in page and "outcome ok" not in page and "7.00" not in page
    assert embedded_images(page) == [] and "no figure from this run" in page
    html = (out / "01_tiny.html").read_text()
    assert "second version" in html and "planted failure" in html and "recorded: slope" not in html
    assert json.loads((out / "01_tiny.ipynb").read_text())["metadata"]["gradkit"]["cell"] == 2


def test_plain_nbclient_run_saves_the_records(tmp_path):
    from nbclient import NotebookClient

    nb = nbformat.read(make_notebook(tmp_path / "01_tiny.ipynb", RECORDS), as_version=4)
    NotebookClient(nb, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert [(r.name, r.text) for r in report.records(nb)] == [("slope", "4.00"), ("not a number", "nan"),
                                                              ("steps", "1,234")]


def test_plain_papermill_run_gives_the_records_back(tmp_path):
    """papermill alone (no gradkit report, no metadata.gradkit): records() reads them from the outputs."""
    nb = make_notebook(tmp_path / "01_tiny.ipynb", RECORDS)
    out = tmp_path / "out.ipynb"
    env = {k: v for k, v in os.environ.items() if k != "GRADKIT_HEADLESS"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "papermill", str(nb), str(out), "-k", "python3", "--no-progress-bar",
                           "-p", "scale", "3"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    executed = nbformat.read(out, as_version=4)
    assert "gradkit" not in executed.metadata
    assert [(r.name, r.value, r.text) for r in report.records(out)] == [
        ("slope", 6.0, "6.00"), ("not a number", None, "nan"), ("steps", 1234, "1,234")]
    # Outputs cleared after a gradkit report (nbstripout, "Clear All Outputs"): the metadata copy answers.
    for cell in executed.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    assert report.records(executed) == []
    executed.metadata["gradkit"] = {"records": [{"name": "slope", "value": 6.0, "text": "6.00", "note": "kept"}]}
    assert report.records(executed) == [report.Record("slope", 6.0, "6.00", "kept")]


def test_report_page_fetches_nothing_and_draws_formulas_as_mathml(tmp_path):
    """The page once loaded MathJax and require.js from a CDN: offline, its formulas stayed raw TeX."""
    nb = nbformat.v4.new_notebook()
    shown = nbformat.v4.new_code_cell("display(Markdown('$c / (1 - m)$'))")
    shown.outputs = [nbformat.v4.new_output("display_data", data={"text/markdown": "a bound $c / (1 - m)$"})]
    nb.cells = [nbformat.v4.new_markdown_cell("# T\n\nThe drift $\\log s + \\tfrac12 x^2$ and `$HOME`.\n\n$$g^2$$"), shown]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    path = tmp_path / "page.ipynb"
    nbformat.write(nb, path)
    page = report.to_html(path).read_text()
    assert not re.findall(r"<(?:script|link|img)[^>]*(?:src|href)=\"https?:", page)
    assert "mathjax" not in page.lower() and "require.min.js" not in page and "mermaid.esm" not in page
    assert page.count("<math") == 3 and "$HOME" in page and "\\tfrac12" not in page


def test_grid_runs_each_combination_and_tabulates_its_records(tmp_path):
    nb = make_notebook(tmp_path / "01_tiny.ipynb", RECORDS + "\nrecord('method', method)",
                       params="profile = None\nscale = 2.0\nmethod = 'norm'")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "gradkit", "report", str(nb), "--out", str(out), "--profile", "smoke",
                           "--grid", "scale=1,3", "--grid", "method=value"],
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr
    names = ["01_tiny__scale=1__method=value", "01_tiny__scale=3__method=value"]
    assert sorted(p.name for p in out.glob("*.html")) == sorted([f"{n}.html" for n in names] + ["index.html"])
    for name, slope in zip(names, (1.0 * 2, 3.0 * 2)):
        meta = json.loads((out / f"{name}.ipynb").read_text())["metadata"]["gradkit"]
        assert meta["parameters"] == {"scale": int(slope / 2), "method": "value", "profile": "smoke"}
        assert [r["value"] for r in meta["records"]] == [slope, None, 1234, "value"]
    page = index_of(out)
    table = page[page.index("<h2>Grid: 01 · Tiny</h2>"):page.index('<div class="cards">')]
    rows = table.split("<tr>")[2:]
    assert len(rows) == 2
    for row, slope in zip(rows, ("2.00", "6.00")):
        cells = [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
        assert cells[:6] == [str(int(float(slope) / 2)), "value", slope, "nan", "1,234", "value"], cells


def test_timeout_says_which_cell_and_exits_3(tmp_path):
    nb = make_notebook(tmp_path / "01_slow.ipynb", "x = 1", "import time\ntime.sleep(120)")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "gradkit", "report", str(nb), "--out", str(out), "--profile", "smoke",
                           "--timeout", "10"], capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 3, proc.stderr
    assert "01_slow.ipynb timed out at cell index 3" in proc.stderr and "Traceback" not in proc.stderr
    assert "timed out at cell index 3" in index_of(out) and (out / "01_slow.html").exists()


def test_ctrl_c_writes_an_index_that_says_interrupted_and_exits_130(tmp_path):
    marker = tmp_path / "started"
    slow = make_notebook(tmp_path / "01_slow.ipynb", f"import pathlib, time\npathlib.Path({str(marker)!r}).touch()\n"
                                                     "time.sleep(120)")
    later = make_notebook(tmp_path / "02_later.ipynb", "x = 1")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "gradkit", "report", str(slow), str(later), "--out", str(out),
                             "--profile", "smoke"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 900
    while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert marker.exists(), proc.communicate()
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    page = index_of(out)
    assert "interrupted at cell index 2" in page and "not run: the report was interrupted before it started" in page
    assert "outcome ok" not in page and not (out / "02_later.html").exists()


def test_sweep_report_notebook_in_smoke_profile(tmp_path):
    nb = ROOT / "notebooks" / "05_sweep_report.ipynb"
    [entry] = report.run_report([nb], {}, "smoke", tmp_path / "out")
    assert entry.ok, entry.outcome.text
    page = entry.html.read_text()
    assert page.count("data:image/png;base64") >= 1
    assert "profile=smoke" in page
    assert entry.records and entry.summary["thumbnail"]


def test_lesson_list_is_ordered():
    names = [p.name for p in report.lesson_notebooks()]
    assert names == sorted(names) and all(n[:2].isdigit() for n in names)
    assert os.path.isdir(report.notebook_folder())
