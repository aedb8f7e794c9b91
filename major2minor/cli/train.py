"""``m2m train [RECIPE] [key=value ...] [--resume]``: one run, through :func:`major2minor.pipeline.train`."""

from __future__ import annotations

import argparse
from typing import Any, List, Optional, Tuple

from major2minor import pipeline
from major2minor.config import ConfigError, load_config


def split_recipe(items: List[str]) -> Tuple[Optional[str], List[str]]:
    """``['digits-lt', 'method=m2m']`` -> ``('digits-lt', ['method=m2m'])``: at most one recipe, then overrides."""
    recipe = None
    overrides = []
    for item in items:
        if "=" in item:
            overrides.append(item)
        elif recipe is None:
            recipe = item
        else:
            raise ConfigError(f"unexpected argument '{item}': give at most one recipe, then key=value overrides.")
    return recipe, overrides


def cmd_train(args: argparse.Namespace) -> int:
    recipe, overrides = split_recipe(args.items)
    cfg = load_config(recipe, overrides)
    pipeline.train(cfg, resume=args.resume)
    return 0


def add_parser(sub: Any) -> None:
    """Add the ``train`` sub-command to the ``m2m`` parser."""
    t = sub.add_parser("train", help="train one run: m2m train [RECIPE] [key=value ...]")
    t.add_argument("items", nargs="*", help="an optional recipe name or YAML path, then key=value overrides")
    t.add_argument("--resume", action="store_true", help="continue an unfinished run in its run directory")
    t.set_defaults(func=cmd_train)
