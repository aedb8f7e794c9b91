"""Command-line parsing shared by the ``m2m`` sub-commands."""

from __future__ import annotations

import argparse


class IntermixedParser(argparse.ArgumentParser):
    """Lets ``key=value`` items and options come in any order (``m2m train method=m2m --resume train.epochs=5``).

    argparse's plain parsing stops collecting a ``nargs="*"`` positional at the first option; the
    intermixed variant collects the positionals from anywhere on the line.  Used as the parser class of
    sub-commands; a parser that itself holds sub-commands (``m2m data``) parses as usual.
    """

    _inner = False

    def parse_known_args(self, args=None, namespace=None):
        if self._inner or self._subparsers is not None:  # a parser of sub-commands parses as usual
            return super().parse_known_args(args, namespace)
        self._inner = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inner = False


def add_report_options(p: argparse.ArgumentParser) -> None:
    """The report's options, shared by ``m2m reproduce`` and ``m2m report``."""
    p.add_argument(
        "--reference",
        default="auto",
        help="method of the row relative gains are computed against (default: erm when present; 'none' for no gains)",
    )
    p.add_argument(
        "--at",
        choices=["best", "last"],
        default="best",
        help="test metrics at the best-validation epoch (default, the paper's protocol) or the last",
    )
    p.add_argument(
        "--ddof",
        type=int,
        choices=[0, 1],
        default=1,
        help="std over seeds: 1 = sample std, divisor n-1 (default); 0 = divisor n",
    )
    p.add_argument("--no-figures", action="store_true", help="write only the tables, no PNG figures")
