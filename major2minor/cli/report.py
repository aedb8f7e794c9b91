"""``m2m report DIR...``: tables (and figures) from finished runs (:func:`major2minor.report.write_report`).

m2m report runs/digits-lt [more dirs] [--out DIR] [--reference erm] [--at best|last]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from major2minor.cli.argparsing import add_report_options
from major2minor.report import default_out, write_report


def cmd_report(args: argparse.Namespace) -> int:
    """``m2m report DIR...``: tables (and figures) from finished runs."""
    out = Path(args.out) if args.out else default_out(args.dirs)
    write_report(
        args.dirs,
        out,
        at=args.at,
        ddof=args.ddof,
        reference=args.reference,
        figures=False if args.no_figures else None,
        log=print,
    )
    print((out / "results.md").read_text())
    return 0


def add_parser(subparsers: Any) -> None:
    """Add the ``report`` sub-command to the ``m2m`` parser."""
    p = subparsers.add_parser(
        "report",
        help="results table (mean ± std over seeds) from finished run directories",
        description="Walk DIRs for summary.json, group runs over seeds and write results.md, results.csv and figures.",
    )
    p.add_argument("dirs", nargs="+", help="run directories or folders holding them (e.g. runs/digits-lt)")
    p.add_argument("--out", default=None, help="report directory (default: DIR/report, or the common parent's)")
    add_report_options(p)
    p.set_defaults(func=cmd_report)
