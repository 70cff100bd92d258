"""Command line: ``python -m gradkit doctor``, ``report``, ``slides`` and ``sweep``.

doctor, report and slides take ``--results DIR`` and ``--notebooks DIR``: where the shipped sweep
and the lessons are when they are not found by themselves (:mod:`gradkit.shipped`).
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
    _add_sweep(sub)
    args = parser.parse_args(argv)
    for option in ("results", "notebooks"):
        folder = getattr(args, f"{option}_dir", None)  # sweep has neither option
        if folder is not None and not folder.is_dir():
            print(f"error: --{option} {str(folder)!r} is not a folder", file=sys.stderr)
            return 2
    with _pointed(GRADKIT_RESULTS=getattr(args, "results_dir", None),
                  GRADKIT_NOTEBOOKS=getattr(args, "notebooks_dir", None)):
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

    if args.command == "sweep":
        return _sweep(args)
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


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    sw = sub.add_parser(
        "sweep", help="train a grid of clipping thresholds, learning rates and seeds, in parallel or on a Dask cluster",
        description="Train, for every learning rate and seed, one run without clipping and one per clipping method "
                    "and threshold; one run-<id>.json per run and summary.csv in --out (runs already there are "
                    "loaded, so an interrupted sweep resumes). Runs train in parallel processes on this machine "
                    "(--workers, default one per core) or on a Dask cluster (--scheduler).",
        epilog="exit codes: 0 every run finished; 1 some runs failed (the others are saved); 2 refused before any "
               "run (a bad value); 130 interrupted. Example: python -m gradkit sweep --methods norm,value "
               "--thresholds default --lrs 0.05,0.2 --seeds 0,1 --subset 2000 --out reports/sweep")
    sw.add_argument("--model", default="seed_cnn", help="seed_cnn (default), plain_cnn or resnet")
    sw.add_argument("--model-option", action="append", default=[], metavar="NAME=VALUE", dest="model_options",
                    help="a model option, e.g. width=0.25 (repeat for more)")
    sw.add_argument("--methods", default="norm", help="clipping methods, comma-separated (default: norm)")
    sw.add_argument("--thresholds", default="default",
                    help="numbers, comma-separated, or a named range: default (each method its own), norm, value, agc")
    sw.add_argument("--lrs", default="0.01", help="learning rates, comma-separated (default: 0.01)")
    sw.add_argument("--optimizer", default="sgd", help="sgd (default), adam, adamw or rmsprop")
    sw.add_argument("--epochs", default="1", help="epochs per run (default: 1)")
    sw.add_argument("--seeds", default="0", help="seeds, comma-separated (default: 0)")
    sw.add_argument("--subset", default=None, help="training images (default: all)")
    sw.add_argument("--test-subset", default=None, help="test images (default: all)")
    sw.add_argument("--val", default=None, help="validation images held out of the training set (default: none)")
    sw.add_argument("--batch-size", default="128", help="batch size (default: 128)")
    sw.add_argument("--max-steps", default=None, help="stop each run after this many steps (default: no limit)")
    sw.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    sw.add_argument("--data", default="cifar10", help="cifar10 (default) or synthetic (generated images, for tests)")
    sw.add_argument("--out", type=Path, default=Path("reports/sweep"), help="folder for the run files (default: reports/sweep)")
    sw.add_argument("--workers", default=None, help="processes on this machine (default: one per core; 1: in this process)")
    sw.add_argument("--scheduler", default=None, metavar="ADDRESS",
                    help="a Dask scheduler, e.g. tcp://host:8786 (needs pip install 'gradkit[dask]')")
    sw.add_argument("--retries", default="2", help="times a failed run is tried again (default: 2)")
    sw.add_argument("--no-progress", action="store_true", help="no progress bar")


def _sweep(args: argparse.Namespace) -> int:
    from .grid import grid_table, run_grid
    from .report import EXIT_INTERRUPTED, EXIT_REFUSED, parse_value

    try:
        kw = dict(model=args.model, methods=_items(args.methods), lrs=_numbers("--lrs", args.lrs),
                  optimizer=args.optimizer, epochs=_integer("--epochs", args.epochs),
                  seeds=[_integer("--seeds", s) for s in _items(args.seeds)], data=args.data, device=args.device,
                  batch_size=_integer("--batch-size", args.batch_size), out=args.out, scheduler=args.scheduler,
                  retries=_integer("--retries", args.retries), progress=not args.no_progress)
        for flag in ("subset", "test_subset", "val", "max_steps", "workers"):
            value = getattr(args, flag)
            kw[flag] = None if value is None else _integer(f"--{flag.replace('_', '-')}", value)
        kw["thresholds"] = args.thresholds if args.thresholds.isidentifier() else _numbers("--thresholds", args.thresholds)
        options = {}
        for item in args.model_options:
            name, eq, value = item.partition("=")
            if not eq or not name:
                raise ValueError(f"--model-option {item!r} is not NAME=VALUE, e.g. --model-option width=0.25")
            options[name] = parse_value(value)
        kw["model_kw"] = options or None
        before = set(args.out.glob("run-*.json")) if args.out.is_dir() else set()
        histories = run_grid(**kw)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_REFUSED
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted: the finished runs are saved in {args.out}; run the same command again to resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    print(grid_table(histories))
    loaded = sum(args.out / f"run-{h.config['run_id']}.json" in before for h in histories)
    print(f"{len(histories)} runs ({len(histories) - loaded} trained now, {loaded} loaded from {args.out}); "
          f"summary: {args.out / 'summary.csv'}")
    return 0


def _items(text: str) -> list[str]:
    """A comma-separated list, spaces removed and empty items dropped."""
    return [item.strip() for item in text.split(",") if item.strip()]


def _numbers(flag: str, text: str) -> list[float]:
    """A comma-separated list of numbers; the error names ``flag``."""
    items = _items(text)
    if not items:
        raise ValueError(f"{flag}: {text!r} names no value; give numbers separated by commas, e.g. {flag} 0.1,1")
    numbers = []
    for item in items:
        try:
            numbers.append(float(item))
        except ValueError:
            raise ValueError(f"{flag}: {item!r} is not a number; give numbers separated by commas, "
                             f"e.g. {flag} 0.1,1") from None
    return numbers


def _integer(flag: str, text: str) -> int:
    """An integer given on the command line; the error names ``flag``."""
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{flag}: {text!r} is not an integer") from None


if __name__ == "__main__":
    sys.exit(main())
