"""``m2m demo``: the embedded digits-lt demo (:func:`major2minor.demo.run_demo`)."""

from __future__ import annotations

import argparse
from typing import Any

from major2minor.demo import run_demo


def cmd_demo(args: argparse.Namespace) -> int:
    run_demo(seeds=args.seeds, root=args.root)
    return 0


def add_parser(sub: Any) -> None:
    """Add the ``demo`` sub-command to the ``m2m`` parser."""
    d = sub.add_parser("demo", help="the embedded digits-lt demo (a results table in minutes)")
    d.add_argument("--seeds", type=int, default=3)
    d.add_argument("--root", default="runs/demo")
    d.set_defaults(func=cmd_demo)
