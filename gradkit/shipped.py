"""Where the shipped runs and lessons are, in a checkout or in an installed wheel.

The kit ships two folders beside the package: ``results/`` (the sweep's ``run-*.json`` files,
``summary.csv``, ``matched.json``, ``lesson08/``) and ``notebooks/`` (lessons, exercises,
solutions). ``pip install .`` copies them into the package as ``gradkit/_shipped/results`` and
``gradkit/_shipped/notebooks`` (``[tool.setuptools.package-dir]`` in ``pyproject.toml``), side by
side as in the checkout, so a lesson's ``../results/lesson08`` still points at its runs.

Each folder is looked up in this order, the first that qualifies wins:

1. its environment variable, ``GRADKIT_RESULTS`` or ``GRADKIT_NOTEBOOKS`` (any existing folder;
   ``python -m gradkit ... --results DIR`` / ``--notebooks DIR`` set it for the command);
2. the checkout the package was imported from (``<repo>/results``): edits there count at once;
3. the copy inside the installed package.

A checkout or installed folder qualifies when it holds what it is for: a ``run-*.json`` file, or an
``NN_name.ipynb`` lesson. When none does, a ``FileNotFoundError`` names both places and the
variable and option to set.

>>> results_dir().joinpath("summary.csv").is_file(), notebooks_dir().joinpath("02_clipping_formulas.ipynb").is_file()
(True, True)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

PACKAGE = Path(__file__).resolve().parent
CHECKOUT = PACKAGE.parent  # the repository root when gradkit is imported from a checkout
INSTALLED = PACKAGE / "_shipped"  # where a wheel puts the shipped folders


class Kind(NamedTuple):
    """One shipped folder: its name, environment variable, command-line option, and the files it must hold."""

    folder: str
    env: str
    option: str
    pattern: str
    holds: str


RESULTS = Kind("results", "GRADKIT_RESULTS", "--results", "run-*.json", "the shipped sweep's run files (run-*.json)")
NOTEBOOKS = Kind("notebooks", "GRADKIT_NOTEBOOKS", "--notebooks", "[0-9][0-9]_*.ipynb",
                 "the lesson notebooks (NN_name.ipynb)")


def results_dir() -> Path:
    """The folder of the shipped sweep (``run-*.json``, ``summary.csv``, ``matched.json``, ``lesson08/``)."""
    return locate(RESULTS)


def notebooks_dir() -> Path:
    """The folder of the lesson notebooks (``NN_name.ipynb``, exercises, ``solutions/``)."""
    return locate(NOTEBOOKS)


def locate(kind: Kind) -> Path:
    """``kind``'s folder: its environment variable, else the checkout's, else the installed copy.

    An environment variable that names no folder raises ``ValueError``; nothing found raises
    ``FileNotFoundError``; both messages say what to set.
    """
    value = os.environ.get(kind.env)
    if value:
        folder = Path(value).expanduser()
        if not folder.is_dir():
            raise ValueError(f"{kind.env}={value!r} is not a folder: point {kind.env} (or {kind.option}) "
                             f"at the folder that holds {kind.holds}")
        return folder
    places = (CHECKOUT / kind.folder, INSTALLED / kind.folder)
    for folder in places:
        if any(folder.glob(kind.pattern)):
            return folder
    raise FileNotFoundError(
        f"{kind.holds} not found in {places[0]} (a checkout) nor in {places[1]} (an installed gradkit): "
        f"set {kind.env}=DIR or pass {kind.option} DIR, DIR being a checkout's {kind.folder}/ folder")


def lesson_path(notebook: str | Path) -> Path:
    """A notebook named as a user would: a path to an ``.ipynb``; a lesson number (``"02"`` or ``2``);
    or a file name in the lessons' folder (``"02_clipping_formulas.ipynb"``, or without ``.ipynb``).
    Anything else raises ``ValueError`` naming the accepted numbers.

    >>> lesson_path("02").name == lesson_path("02_clipping_formulas.ipynb").name == "02_clipping_formulas.ipynb"
    True
    """
    text = str(notebook)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    folder = notebooks_dir()
    if text.isdigit() and len(text) <= 2:
        hits = sorted(folder.glob(f"{int(text):02d}_*.ipynb"))
    else:
        hits = [p for p in (folder / path.name, folder / f"{path.name}.ipynb") if p.is_file()]
    if hits:
        return hits[0]
    known = ", ".join(p.name[:2] for p in sorted(folder.glob("[0-9][0-9]_*.ipynb"))) or "none"
    if text.isdigit() and len(text) <= 2:
        raise ValueError(f"no lesson {text!r} in {folder}; accepted numbers: {known}")
    raise ValueError(f"notebook {text!r} not found: give a path to an .ipynb, a file name in {folder} "
                     f"or a lesson number (accepted numbers: {known})")
