"""Command line: ``python -m gradkit doctor``, ``python -m gradkit report`` and ``python -m gradkit slides``.

Each takes ``--results DIR`` and ``--notebooks DIR``: where the shipped sweep and the lessons are
when they are not found by themselves (:mod:`gradkit.shipped`).
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gradkit", description="gradkit: gradients and clipping, taught.")
    # Where the shipped folders are, for a gradkit installed without them or to use other copies.
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--results", dest="results_dir", type=Path, default=None, metavar="DIR",
                       help="the shipped sweep's folder (run-*.json; a checkout's results/); "
                            "default: $GRADKIT_RESULTS, else the checkout's, else the installed copy")
    where.add_argument("--notebooks", dest="notebooks_dir", type=Path, default=None, metavar="DIR",
                       help="the lessons' folder (NN_name.ipynb; a checkout's notebooks/); "
                            "default: $GRADKIT_NOTEBOOKS, else the checkout's, else the installed copy")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", parents=[where], help="check that this machine is ready for the lessons")
    rep = sub.add_parser(
        "report", parents=[where], help="execute notebooks with papermill into HTML reports with an index",
        description="Execute notebooks (default: every lesson) into HTML pages and an index.html.",
        epilog="exit codes: 0 every notebook ran; 1 a cell raised; 2 refused before running (bad notebook, "
               "parameter or grid); 3 a cell ran past --timeout; 130 interrupted (Ctrl-C). "
               "Example: python -m gradkit report notebooks/05_sweep_report.ipynb --grid lr=0.01,0.2 "
               "--grid method=norm,value")
    rep.add_argument("notebooks", nargs="*", type=Path, help="notebooks to run (default: every lesson)")
    rep.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="set a notebook parameter (VALUE read as a Python literal, else as text)")
    rep.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2",
                     help="run every combination of these values (repeat for more names); one row each "
                          "in the index's comparison table")
    rep.add_argument("--profile", choices=("smoke", "cpu", "full"), default=None,
                     help="sizes to run with (default: $GRADKIT_PROFILE, else cpu)")
    rep.add_argument("--out", type=Path, default=Path("reports"), help="output folder (default: reports/)")
    rep.add_argument("--timeout", type=int, default=None, help="seconds allowed per cell (default: none)")
    sl = sub.add_parser("slides", parents=[where], help="write a reveal.js slide deck (one HTML file, works offline) from a lesson")
    sl.add_argument("notebooks", nargs="+", help="lesson numbers (02) or notebook paths")
    sl.add_argument("--out", type=Path, default=Path("reports/slides"), help="output folder (default: reports/slides/)")
    sl.add_argument("--execute", action="store_true", help="run the lesson first (default: use its stored outputs)")
    sl.add_argument("--profile", choices=("smoke", "cpu", "full"), default=None,
                    help="sizes for --execute (default: $GRADKIT_PROFILE, else cpu)")
    args = parser.parse_args(argv)
    for option in ("results", "notebooks"):
        folder = getattr(args, f"{option}_dir")
        if folder is not None and not folder.is_dir():
            print(f"error: --{option} {str(folder)!r} is not a folder", file=sys.stderr)
            return 2
    with _pointed(GRADKIT_RESULTS=args.results_dir, GRADKIT_NOTEBOOKS=args.notebooks_dir):
        return _command(args)


@contextmanager
def _pointed(**folders: Path | None) -> Iterator[None]:
    """Set the given environment variables to absolute folders for the command, restored after:
    gradkit.shipped reads them, and so do the kernels report and slides start (papermill runs a
    notebook in its own folder, hence absolute paths)."""
    chosen = {name: str(folder.resolve()) for name, folder in folders.items() if folder is not None}
    before = {name: os.environ.get(name) for name in chosen}
    os.environ.update(chosen)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _command(args: argparse.Namespace) -> int:
    if args.command == "doctor":
        from .doctor import doctor

        return doctor()
    if args.command == "slides":
        from .lessons.slides import resolve, write_slides

        try:
            paths = [resolve(n) for n in args.notebooks]
            for path in paths:
                print(f"{path.name} -> {write_slides(path, args.out, args.execute, args.profile)}")
        except (ValueError, RuntimeError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0

    return _report(args)


def _report(args: argparse.Namespace) -> int:
    from .report import EXIT_INTERRUPTED, EXIT_REFUSED, exit_code, parse_grid, parse_value, run_report

    try:
        params = {name: parse_value(value) for name, value in args.parameter}
        grid = dict(parse_grid(spec) for spec in args.grid)
        if len(grid) < len(args.grid):
            raise ValueError("a --grid name is given twice; list all its values in one --grid NAME=V1,V2")
        entries = run_report(args.notebooks, params, args.profile, args.out, args.timeout, grid)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        print(f"interrupted: the index says which notebooks ran: {args.out / 'index.html'}", file=sys.stderr)
        return EXIT_INTERRUPTED
    for e in entries:
        if not e.ok:
            kept = f"; partial notebook kept at {e.executed}" if e.executed else ""
            print(f"error: {e.notebook.name} {e.outcome.text}{kept}", file=sys.stderr)
    return exit_code(entries)


if __name__ == "__main__":
    sys.exit(main())
