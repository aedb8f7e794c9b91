"""``m2m reproduce``: a (method x seed) grid and its report (:func:`major2minor.experiments.reproduce`).

m2m reproduce --recipe digits-lt --methods erm,drs,m2m --seeds 3 [--root runs] [key=value ...]
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any, Optional, Sequence

from major2minor.cli.argparsing import add_report_options
from major2minor.experiments import GridError, reproduce


def command_line(argv: Optional[Sequence[str]] = None) -> str:
    """The command as typed (``m2m reproduce ...``, shell-quoted), recorded in ``results.md``."""
    args = list(sys.argv[1:] if argv is None else argv)
    return "m2m " + " ".join(shlex.quote(a) for a in args)


def cmd_reproduce(args: argparse.Namespace) -> int:
    """``m2m reproduce``: run the grid, then write the report; exit status 1 if a cell failed."""
    overrides = []
    for item in args.overrides:
        if "=" not in item:
            raise GridError(
                f"unexpected argument '{item}': after the options give only key=value overrides "
                "(the recipe goes in --recipe)."
            )
        overrides.append(item)
    result = reproduce(
        args.recipe,
        args.methods,
        args.seeds,
        root=args.root,
        overrides=overrides,
        first_seed=args.first_seed,
        reference=args.reference,
        at=args.at,
        ddof=args.ddof,
        keep_going=args.keep_going,
        figures=False if args.no_figures else None,
        command=command_line(),
        jobs=args.jobs,
        share=args.share,
        quiet=args.quiet,
    )
    if result.report_dir is not None:
        print((result.report_dir / "results.md").read_text())
    for cell in result.failed:
        print(f"m2m: failed: {cell.method} seed {cell.seed} ({cell.run_dir}): {cell.error}", file=sys.stderr)
    return 1 if result.failed else 0


def add_parser(subparsers: Any) -> None:
    """Add the ``reproduce`` sub-command to the ``m2m`` parser."""
    r = subparsers.add_parser(
        "reproduce",
        help="run a (method x seed) grid and write its results table",
        description="Train every (method, seed) in ROOT/RECIPE/METHOD/seedN (skipping finished runs, resuming "
        "interrupted ones), then write results.md/.csv and figures into ROOT/RECIPE/report.",
    )
    r.add_argument("--recipe", required=True, help="built-in recipe name or YAML path (m2m list recipes)")
    r.add_argument(
        "--methods", required=True, help="comma-separated method presets, e.g. erm,drs,m2m (m2m list methods)"
    )
    r.add_argument("--seeds", default="3", help="number of seeds (3 = seeds 0,1,2) or a list such as 0,3,7")
    r.add_argument("--first-seed", type=int, default=0, help="first seed when --seeds is a count")
    r.add_argument("--root", default=None, help="where run directories go (default: run.root, 'runs')")
    r.add_argument("--keep-going", action="store_true", help="continue with other cells when one fails")
    r.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="cells trained at once, in separate processes (CPU: each gets "
        "cores/jobs threads; GPU: they share the device)",
    )
    r.add_argument(
        "--no-share",
        dest="share",
        action="store_false",
        help="train every cell from scratch instead of branching from shared prefixes (the epochs before T0)",
    )
    r.add_argument("--quiet", action="store_true", help="no progress display or line per finished cell")
    add_report_options(r)
    r.add_argument("overrides", nargs="*", help="key=value config overrides for every cell (e.g. train.epochs=2)")
    r.set_defaults(func=cmd_reproduce)
