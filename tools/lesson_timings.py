"""Minutes per section of executed lessons, from papermill's per-cell durations.

    python -m gradkit report --profile cpu --out reports/timing      # execute every lesson
    python tools/lesson_timings.py reports/timing/*.ipynb            # a markdown table per lesson

or, when the stored lessons are re-made, from the same run:

    python tools/nbtool.py execute notebooks/[0-9][0-9]_*.ipynb --profile cpu --timings reports/timing

``--guide`` prints the one table of all the lessons that docs/teaching.md holds.

A section starts at a ``##`` heading in a markdown cell (a cell holding two headings opens two
sections, the first one empty of code); the cells before the first heading (title, parameters, imports, data loading) form the section "setup". The seconds are wall-clock
time of the cells' execution, as papermill recorded them (kernel start-up not included).
docs/teaching.md quotes these tables.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat


def section_seconds(path: Path) -> list[tuple[str, float]]:
    """``[(section title, seconds), ...]`` in notebook order."""
    nb = nbformat.read(str(path), as_version=4)
    sections: list[tuple[str, float]] = [("setup", 0.0)]
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            sections += [(line[3:].strip(), 0.0) for line in cell.source.splitlines() if line.startswith("## ")]
        duration = cell.metadata.get("papermill", {}).get("duration")
        if duration:
            title, seconds = sections[-1]
            sections[-1] = (title, seconds + float(duration))
    return sections


LEFT_OUT = ("What you should now understand", "Exercises")  # no code runs there


def guide_rows(path: Path) -> list[str]:
    """The rows of docs/teaching.md's run-time table for one lesson: its sections (whole seconds; the
    summary and exercises left out), then all cells, with papermill's run time (kernel start included)."""
    sections = [(t, s) for t, s in section_seconds(path) if t not in LEFT_OUT]
    run = nbformat.read(str(path), as_version=4).metadata.get("papermill", {}).get("duration")
    rows = [f"| {path.stem if i == 0 else ''} | {title} | {seconds:.0f} |" for i, (title, seconds) in enumerate(sections)]
    started = f" (papermill run, kernel start included: {run:.0f} s)" if run else ""
    rows.append(f"| | **all cells**{started} | **{sum(s for _, s in sections):.0f}** |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="+", type=Path, help="notebooks executed by papermill")
    parser.add_argument("--guide", action="store_true", help="print docs/teaching.md's table of all the lessons")
    args = parser.parse_args(argv)
    for path in args.notebooks:
        if sum(s for _, s in section_seconds(path)) == 0:
            print(f"error: {path} has no papermill durations: execute it with papermill first", file=sys.stderr)
            return 2
    if args.guide:
        print("| lesson | section | seconds |\n| --- | --- | ---: |")
        for path in args.notebooks:
            print("\n".join(guide_rows(path)))
        return 0
    for path in args.notebooks:
        sections = section_seconds(path)
        print(f"\n{path.name}: {sum(s for _, s in sections):.0f} s in all\n\n| section | seconds |\n| --- | ---: |")
        for title, seconds in sections:
            print(f"| {title} | {seconds:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
