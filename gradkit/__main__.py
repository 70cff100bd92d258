"""Command line: ``python -m gradkit doctor``, ``python -m gradkit report`` and ``python -m gradkit slides``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gradkit", description="gradkit: gradients and clipping, taught.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help="check that this machine is ready for the lessons")
    rep = sub.add_parser("report", help="execute notebooks with papermill into HTML reports")
    rep.add_argument("notebooks", nargs="*", type=Path, help="notebooks to run (default: every lesson)")
    rep.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="set a notebook parameter (VALUE read as a Python literal, else as text)")
    rep.add_argument("--profile", choices=("smoke", "cpu", "full"), default=None,
                     help="sizes to run with (default: $GRADKIT_PROFILE, else cpu)")
    rep.add_argument("--out", type=Path, default=Path("reports"), help="output folder (default: reports/)")
    rep.add_argument("--timeout", type=int, default=None, help="seconds allowed per cell (default: none)")
    sl = sub.add_parser("slides", help="write a reveal.js slide deck (one HTML file, works offline) from a lesson")
    sl.add_argument("notebooks", nargs="+", help="lesson numbers (02) or notebook paths")
    sl.add_argument("--out", type=Path, default=Path("reports/slides"), help="output folder (default: reports/slides/)")
    sl.add_argument("--execute", action="store_true", help="run the lesson first (default: use its stored outputs)")
    sl.add_argument("--profile", choices=("smoke", "cpu", "full"), default=None,
                    help="sizes for --execute (default: $GRADKIT_PROFILE, else cpu)")
    args = parser.parse_args(argv)

    if args.command == "doctor":
        from .doctor import doctor

        return doctor()
    if args.command == "slides":
        from .lessons.slides import resolve, write_slides

        try:
            paths = [resolve(n) for n in args.notebooks]
            for path in paths:
                print(f"{path.name} -> {write_slides(path, args.out, args.execute, args.profile)}")
        except (ValueError, RuntimeError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0

    from .report import parse_value, run_report

    params = {name: parse_value(value) for name, value in args.parameter}
    try:
        entries = run_report(args.notebooks, params, args.profile, args.out, args.timeout)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    failed = [e for e in entries if not e.ok]
    for e in failed:
        print(f"error: {e.notebook} failed at cell {e.failed_cell}: {e.error}; partial notebook kept at {e.executed}",
              file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
