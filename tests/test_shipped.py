"""The shipped runs and lessons are found in a checkout, through GRADKIT_RESULTS / GRADKIT_NOTEBOOKS
(or --results / --notebooks), and inside a wheel installed outside the repository."""

import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from gradkit import doctor, report, shipped, sweeps
from gradkit.__main__ import main
from gradkit.lessons import slides

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_overrides(monkeypatch):
    monkeypatch.delenv("GRADKIT_RESULTS", raising=False)
    monkeypatch.delenv("GRADKIT_NOTEBOOKS", raising=False)


@pytest.fixture
def places(tmp_path, monkeypatch, no_overrides):
    """A fake checkout and a fake installed package, each with one run file and one lesson."""
    for base in ("checkout", "installed"):
        (tmp_path / base / "results").mkdir(parents=True)
        (tmp_path / base / "results" / "run-0.json").write_text("{}")
        (tmp_path / base / "notebooks").mkdir()
        (tmp_path / base / "notebooks" / "02_lesson.ipynb").write_text("{}")
    monkeypatch.setattr(shipped, "CHECKOUT", tmp_path / "checkout")
    monkeypatch.setattr(shipped, "INSTALLED", tmp_path / "installed")
    return tmp_path


def test_the_checkout_is_found_from_the_repository(no_overrides):
    assert shipped.results_dir() == ROOT / "results"
    assert shipped.notebooks_dir() == ROOT / "notebooks"
    assert sweeps.SHIPPED_RESULTS == ROOT / "results" and slides.NOTEBOOK_DIR == ROOT / "notebooks"


def test_order_environment_then_checkout_then_installed(places, monkeypatch):
    assert shipped.results_dir() == places / "checkout" / "results"
    (places / "checkout" / "results" / "run-0.json").unlink()  # a results/ without runs does not count
    assert shipped.results_dir() == places / "installed" / "results"
    shutil.rmtree(places / "checkout" / "notebooks")
    assert shipped.notebooks_dir() == places / "installed" / "notebooks"
    mine = places / "mine"
    mine.mkdir()
    monkeypatch.setenv("GRADKIT_RESULTS", str(mine))  # any folder: the user's word counts
    monkeypatch.setenv("GRADKIT_NOTEBOOKS", str(mine))
    assert shipped.results_dir() == mine and shipped.notebooks_dir() == mine


def test_nothing_found_names_both_places_the_variable_and_the_option(places):
    shutil.rmtree(places / "checkout" / "results")
    shutil.rmtree(places / "installed" / "results")
    with pytest.raises(FileNotFoundError) as err:
        shipped.results_dir()
    for text in (str(places / "checkout" / "results"), str(places / "installed" / "results"), "GRADKIT_RESULTS",
                 "--results"):
        assert text in str(err.value)
    # The old constant keeps its meaning: a path whose is_dir() says "no shipped runs here".
    assert sweeps.SHIPPED_RESULTS == places / "checkout" / "results" and not sweeps.SHIPPED_RESULTS.is_dir()
    assert sweeps.load_matched() == {}
    check = doctor.check_shipped()
    assert not check.ok and "GRADKIT_RESULTS" in check.fix and "--results" in check.fix


def test_an_environment_variable_that_names_no_folder_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("GRADKIT_NOTEBOOKS", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match=r"GRADKIT_NOTEBOOKS=.*missing.* is not a folder.*--notebooks"):
        shipped.notebooks_dir()


def test_the_environment_counts_after_import(monkeypatch, tmp_path):
    (tmp_path / "matched.json").write_text('{"a": "b"}')
    monkeypatch.setenv("GRADKIT_RESULTS", str(tmp_path))
    assert sweeps.SHIPPED_RESULTS == tmp_path and sweeps.load_matched() == {"a": "b"}
    (tmp_path / "07_mine.ipynb").write_text("{}")
    monkeypatch.setenv("GRADKIT_NOTEBOOKS", str(tmp_path))
    assert slides.resolve("7") == tmp_path / "07_mine.ipynb"
    assert report.lesson_notebooks() == [tmp_path / "07_mine.ipynb"]


def test_the_doctor_counts_the_shipped_runs_and_lessons(no_overrides):
    check = doctor.check_shipped()
    runs = len(list((ROOT / "results").glob("run-*.json")))
    lessons = len(list((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")))
    assert check.ok and check.detail == (f"{runs} sweep runs in {ROOT / 'results'}; "
                                         f"{lessons} lessons in {ROOT / 'notebooks'}")


def test_command_line_options_point_elsewhere_for_the_command_only(no_overrides, tmp_path, capsys):
    assert main(["slides", "02", "--notebooks", str(tmp_path)]) == 2
    assert f"no lesson '02' in {tmp_path}; accepted numbers: none" in capsys.readouterr().err
    assert "GRADKIT_NOTEBOOKS" not in os.environ  # restored after the command
    assert main(["report", "--notebooks", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert f"no lesson notebooks (NN_name.ipynb) in {tmp_path}" in capsys.readouterr().err
    assert main(["doctor", "--results", str(tmp_path / "missing")]) == 2
    assert "--results" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_a_relative_option_reaches_kernels_as_an_absolute_path(monkeypatch, tmp_path):
    from gradkit.__main__ import _pointed

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    monkeypatch.setenv("GRADKIT_RESULTS", "before")
    with _pointed(GRADKIT_RESULTS=Path("runs"), GRADKIT_NOTEBOOKS=None):
        assert os.environ["GRADKIT_RESULTS"] == str(tmp_path / "runs")
    assert os.environ["GRADKIT_RESULTS"] == "before"


# ---- a wheel, installed outside the repository ---------------------------------------------------


def _cannot_build() -> str:
    """Why this Python cannot build a wheel offline ("" when it can)."""
    if importlib.util.find_spec("setuptools") is None:
        return "setuptools is not installed (pip wheel --no-build-isolation needs it)"
    if importlib.util.find_spec("setuptools.command.bdist_wheel") is None and importlib.util.find_spec("wheel") is None:
        return "neither setuptools >= 70.1 nor the wheel package is installed: no bdist_wheel offline"
    return ""


def _shipped_files() -> set[str]:
    """The wheel paths the shipped folders must have: every lesson, exercise and solution, every run file."""
    results = [p for p in (ROOT / "results").glob("run-*.json")] + [
        ROOT / "results" / name for name in ("matched.json", "summary.csv", "README.md")]
    results += (ROOT / "results" / "lesson08").glob("*.json")
    notebooks = [*(ROOT / "notebooks").glob("*.ipynb"), *(ROOT / "notebooks" / "solutions").glob("*.ipynb")]
    return {f"gradkit/_shipped/{p.relative_to(ROOT).as_posix()}" for p in [*results, *notebooks]}


@pytest.mark.skipif(bool(_cannot_build()), reason=_cannot_build() or "can build")
def test_a_wheel_installed_outside_the_repo_runs_the_doctor_and_loads_the_shipped_sweep(tmp_path):
    # Build from a copy, so that the checkout gets no build/ or *.egg-info of its own.
    src = tmp_path / "src"
    skip = shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints", "*.pyc")
    for name in ("gradkit", "results", "notebooks"):
        shutil.copytree(ROOT / name, src / name, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    for var in ("GRADKIT_RESULTS", "GRADKIT_NOTEBOOKS", "PYTHONPATH"):
        env.pop(var, None)
    pip = [sys.executable, "-m", "pip"]
    built = subprocess.run([*pip, "wheel", str(src), "--no-deps", "--no-build-isolation", "--no-index", "-q",
                            "-w", str(tmp_path / "dist")], capture_output=True, text=True, env=env, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = (tmp_path / "dist").glob("gradkit-*.whl")

    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "gradkit").rglob("*.py")}
    assert modules - names == set(), "modules missing from the wheel: list their package in pyproject.toml"
    assert {f"gradkit/lessons/reveal/{n}" for n in ("reveal.js", "reveal.css", "LICENSE")} <= names
    assert {n for n in names if n.startswith("gradkit/_shipped/")} == _shipped_files()

    site, away = tmp_path / "site", tmp_path / "elsewhere"
    away.mkdir()
    installed = subprocess.run([*pip, "install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel)],
                               capture_output=True, text=True, env=env, timeout=300)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    env.update(PYTHONPATH=str(site), GRADKIT_OFFLINE="1", GRADKIT_DATA=str(tmp_path / "no-data"),
               GRADKIT_CACHE=str(tmp_path / "cache"), GRADKIT_HEADLESS="1", MPLBACKEND="Agg")
    data = site / "gradkit" / "_shipped"

    doc = subprocess.run([sys.executable, "-m", "gradkit", "doctor"], capture_output=True, text=True, env=env,
                         cwd=away, timeout=300)
    assert doc.returncode in (0, 1) and "Traceback" not in doc.stderr, doc.stdout + doc.stderr
    runs = len(list((ROOT / "results").glob("run-*.json")))
    lessons = len(list((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")))
    assert (f"[OK]   shipped runs and lessons: {runs} sweep runs in {data / 'results'}; "
            f"{lessons} lessons in {data / 'notebooks'}") in doc.stdout, doc.stdout

    code = textwrap.dedent("""
        import gradkit
        from gradkit import explorer, report, shipped, sweeps
        from gradkit.lessons import slides
        from gradkit.runs import load_sweep

        runs = load_sweep(sweeps.SHIPPED_RESULTS)
        ex = explorer.ThresholdExplorer(runs, matched=sweeps.load_matched())
        ex.compute_views()
        lesson08 = slides.resolve("08").parent / ".." / "results" / "lesson08"  # the lesson's own relative path
        print(gradkit.__file__, len(runs), len(ex.matched), len(report.lesson_notebooks()),
              sorted(p.name for p in lesson08.glob("*.json")), sep="\\n")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=away, timeout=300)
    assert proc.returncode == 0, proc.stderr
    where, loaded, matched, found, lesson08 = proc.stdout.strip().splitlines()[-5:]
    assert Path(where) == site / "gradkit" / "__init__.py"
    assert int(loaded) == runs > 0 and int(matched) == len(sweeps.load_matched(ROOT / "results")) > 0
    assert int(found) == lessons
    assert lesson08 == str(sorted(p.name for p in (ROOT / "results" / "lesson08").glob("*.json")))


def test_a_lesson_is_named_by_path_number_or_file_name_and_anything_else_is_refused(tmp_path, monkeypatch):
    from gradkit.report import run_report
    from gradkit.shipped import lesson_path, notebooks_dir

    lesson = notebooks_dir() / "05_sweep_report.ipynb"
    monkeypatch.chdir(tmp_path)  # a bare file name is not a path from here: it is looked up among the lessons
    assert lesson_path("05_sweep_report.ipynb") == lesson_path("05_sweep_report") == lesson_path(5) == lesson
    assert lesson_path(str(lesson)) == lesson
    with pytest.raises(ValueError, match=r"'no_such.ipynb' not found: .*accepted numbers: 00, 01"):
        lesson_path("no_such.ipynb")
    with pytest.raises(ValueError, match="no lesson '42' in .*; accepted numbers: 00, 01"):
        run_report(["00", "42"], out=tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before any run
