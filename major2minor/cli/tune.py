"""``m2m tune``: search M2m's knobs (or any config keys) on the validation split (:mod:`major2minor.tune`).

m2m tune RECIPE [key=value ...] [key=LOW:HIGH | key=A,B,C ...] [--trials 20] [--seeds 3]
         [--root DIR] [--method m2m] [--study NAME] [--timeout S] [--sampler-seed 0] [--no-prune]
"""

from __future__ import annotations

import argparse
from typing import Any

from major2minor.registry import REBALANCERS
from major2minor.tune import Param, TuneError, build_spec, tune


def cmd_tune(args: argparse.Namespace) -> int:
    """``m2m tune``: search, print the best knobs and the commands that use them."""
    recipe, items = args.items[0], list(args.items[1:])
    if "=" in recipe:
        raise TuneError(f"the first argument must be the recipe (e.g. digits-lt), not '{recipe}'.")
    spec = build_spec(recipe, items, args.method, args.seeds, args.root, args.study, prune=not args.no_prune)
    tune(spec, trials=args.trials, timeout=args.timeout, sampler_seed=args.sampler_seed)
    return 0


def default_spaces() -> str:
    """Each method's declared search space, for the help text (e.g. "M2m: m2m.beta in {0.9, ...}; ...")."""
    spaces = [
        f"{e.obj.label}: " + "; ".join(Param.from_knob(k).describe() for k in e.obj.search_space)
        for e in REBALANCERS.in_order()
        if e.obj.search_space
    ]
    return " | ".join(spaces) or "none declared"


def add_parser(sub: Any) -> None:
    """Add the ``tune`` sub-command to the ``m2m`` parser."""
    p = sub.add_parser(
        "tune",
        usage="m2m tune RECIPE [key=value | key=LOW:HIGH | key=A,B,C ...] [--trials N] [--seeds K] [options]",
        help="search M2m's knobs (or any keys) on the validation split with Optuna",
        description="Search the knobs of --method on the VALIDATION split (test metrics are never read): each "
        "trial trains the tuning seeds (100, 101, ...) and scores the mean best validation bACC. Default space: "
        "the method's own (" + default_spaces() + "). key=LOW:HIGH or "
        "key=A,B,C items are searched too; plain key=value items are fixed. The study lives in "
        "ROOT/tune/RECIPE-METHOD (study.db, trialN/seedS, trials.csv, best.json); the same command continues it.",
    )
    p.add_argument("items", nargs="+", help="RECIPE, then key=value (fixed), key=LOW:HIGH or key=A,B,C (searched)")
    p.add_argument(
        "--trials", type=int, default=20, metavar="N", help="finished trials the study should reach (default 20)"
    )
    p.add_argument("--seeds", default="3", metavar="K", help="tuning seeds: a count (3 = 100,101,102) or a list >= 100")
    p.add_argument(
        "--root", default=None, metavar="DIR", help="run root (default: run.root, 'runs'); the study is ROOT/tune/NAME"
    )
    p.add_argument("--method", default="m2m", metavar="NAME", help="method preset to tune (default m2m)")
    p.add_argument("--study", default=None, metavar="NAME", help="study name (default RECIPE-METHOD)")
    p.add_argument(
        "--timeout", type=float, default=None, metavar="S", help="start no new trial after this many seconds"
    )
    p.add_argument("--sampler-seed", type=int, default=0, metavar="N", help="seed of the TPE sampler (default 0)")
    p.add_argument("--no-prune", action="store_true", help="train every seed of every trial (no median pruning)")
    p.set_defaults(func=cmd_tune)
