"""Execute lesson notebooks in place and strip what makes diffs noisy.

    python tools/nbtool.py execute notebooks/01_exploding_vanishing.ipynb [--profile cpu] [--timings DIR]
    python tools/nbtool.py clean notebooks/*.ipynb
    python tools/nbtool.py nav

``nav`` (re)writes the last cell of every lesson, tagged ``navigation``: links to the previous
lesson, the README's lesson table and the next lesson. Running it twice changes nothing.

``execute`` runs the notebook with papermill (headless, so sliders fall back to static figures),
then ``clean`` keeps outputs (they are worth reading on the web, and nbval compares the
``# NBVAL_CHECK_OUTPUT`` cells against them), renumbers code cells 1..N, drops papermill/widget
metadata and pins the kernel to ``python3``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import nbformat

KEEP_CELL_METADATA = ("tags", "slideshow")  # slideshow: the slide type `gradkit slides` reads


def clean(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    count = 0
    for number, cell in enumerate(nb.cells):
        cell.metadata = {k: v for k, v in cell.metadata.items() if k in KEEP_CELL_METADATA}
        # Stable ids: random ones would change on every run and make diffs noisy.
        cell.id = f"cell-{number:02d}"
        if cell.cell_type == "code":
            # nbval refuses stored outputs of a cell with no execution count ("unrun reference cell"),
            # so code cells are numbered 1..N: stable across runs, unlike the kernel's own counts.
            count += 1
            cell.execution_count = count
            for out in cell.outputs:
                if "execution_count" in out:
                    out.execution_count = count
                out.get("metadata", {}).pop("papermill", None)
                data = out.get("data", {})
                data.pop("application/vnd.jupyter.widget-view+json", None)
    nbformat.write(nb, path)


def title(nb: nbformat.NotebookNode) -> str:
    """The lesson's title: its first heading without the leading ``#``."""
    return nb.cells[0].source.splitlines()[0].lstrip("# ").strip()


def navigation(folder: Path = Path(__file__).resolve().parent.parent / "notebooks") -> list[Path]:
    """Give every lesson in ``folder`` a last cell with prev / contents / next links."""
    lessons = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    books = [nbformat.read(p, as_version=4) for p in lessons]
    for i, (path, nb) in enumerate(zip(lessons, books)):
        links = []
        if i > 0:
            links.append(f"[< {title(books[i - 1])}]({lessons[i - 1].name})")
        links.append("[all lessons](../README.md#the-lessons)")
        if i + 1 < len(lessons):
            links.append(f"[{title(books[i + 1])} >]({lessons[i + 1].name})")
        # skip: the slides leave navigation out (gradkit.lessons.slides.slide_type)
        cell = nbformat.v4.new_markdown_cell(" | ".join(links), metadata={"tags": ["navigation"], "slideshow": {"slide_type": "skip"}})
        nb.cells = [c for c in nb.cells if "navigation" not in c.metadata.get("tags", [])] + [cell]
        nbformat.write(nb, path)
        clean(path)
    return lessons


def execute(path: Path, profile: str, timeout: int, timings: Path | None = None) -> None:
    import papermill

    os.environ["GRADKIT_HEADLESS"] = "1"
    os.environ["GRADKIT_PROFILE"] = profile
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    papermill.execute_notebook(
        str(path), str(path), cwd=str(path.parent), kernel_name="python3",
        execution_timeout=timeout, progress_bar=False,
    )
    if timings is not None:  # papermill's per-cell durations, which clean() strips: tools/lesson_timings.py reads them
        timings.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, timings / path.name)
    clean(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("execute", help="run notebooks in place with papermill, then clean them")
    ex.add_argument("notebooks", nargs="+", type=Path)
    ex.add_argument("--profile", default="cpu", choices=("smoke", "cpu", "full"))
    ex.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    ex.add_argument("--timings", type=Path, help="also keep each executed notebook, durations included, in this folder")
    cl = sub.add_parser("clean", help="strip execution counts and metadata")
    cl.add_argument("notebooks", nargs="+", type=Path)
    sub.add_parser("nav", help="write the prev / contents / next cell at the end of every lesson")
    args = parser.parse_args(argv)
    if args.command == "nav":
        for nb in navigation():
            print(f"nav: {nb}")
        return 0
    for nb in args.notebooks:
        if args.command == "execute":
            execute(nb, args.profile, args.timeout, args.timings)
        else:
            clean(nb)
        print(f"{args.command}: {nb}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
