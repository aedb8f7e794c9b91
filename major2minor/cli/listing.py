"""``m2m list models|losses|methods|rebalancers|datasets|recipes|keys``: the registered parts.

(The module is ``listing``, not ``list``, so that it does not shadow the built-in where it is imported.)
"""

from __future__ import annotations

import argparse
from typing import Any

from major2minor.config import list_recipes
from major2minor.keyref import format_keys, key_reference
from major2minor.registry import REGISTRIES

WHAT = ["models", "losses", "methods", "rebalancers", "datasets", "recipes", "keys"]


def cmd_list(args: argparse.Namespace) -> int:
    what = args.what
    if what == "recipes":
        print("\n".join(list_recipes()))
        return 0
    if what == "keys":
        print(format_keys(key_reference()))
        return 0
    registry = REGISTRIES[what]
    width = max(len(e.name) for e in registry.entries())
    for e in registry.entries():
        print(f"{e.name:<{width}}  {e.help}")
    return 0


def add_parser(sub: Any) -> None:
    """Add the ``list`` sub-command to the ``m2m`` parser."""
    ls = sub.add_parser("list", help="list registered parts")
    ls.add_argument("what", choices=WHAT)
    ls.set_defaults(func=cmd_list)
