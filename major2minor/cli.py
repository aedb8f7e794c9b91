"""The ``m2m`` command: a thin dispatcher over the library.

m2m train [RECIPE] [key=value ...] [--resume]
m2m reproduce --recipe R --methods erm,drs,m2m --seeds 3 [key=value ...]
m2m report DIR...
m2m data prepare|info NAME ...
m2m list models|losses|methods|rebalancers|datasets|recipes|keys
m2m bench | m2m demo
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from major2minor import distributed, pipeline
from major2minor._version import __version__
from major2minor.argparsing import IntermixedParser
from major2minor.bench import add_parser as add_bench_parser
from major2minor.config import ConfigError, all_keys, list_recipes, load_config
from major2minor.data.commands import add_data_parser
from major2minor.demo import run_demo
from major2minor.experiments import add_parsers as add_experiment_parsers
from major2minor.registry import REGISTRIES
from major2minor.tune import add_parser as add_tune_parser


def _split_recipe(items: List[str]) -> tuple:
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
    recipe, overrides = _split_recipe(args.items)
    cfg = load_config(recipe, overrides)
    pipeline.train(cfg, resume=args.resume)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    what = args.what
    if what == "recipes":
        print("\n".join(list_recipes()))
        return 0
    if what == "keys":
        print("\n".join(all_keys()))
        return 0
    registry = REGISTRIES[what]
    width = max(len(e.name) for e in registry.entries())
    for e in registry.entries():
        print(f"{e.name:<{width}}  {e.help}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    run_demo(seeds=args.seeds, root=args.root)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="m2m", description="M2m and baselines for imbalanced classification.")
    p.add_argument("--version", action="version", version=f"major2minor {__version__}")
    # sub-commands take key=value items and options in any order (--resume anywhere on the line)
    sub = p.add_subparsers(dest="command", required=True, parser_class=IntermixedParser)

    t = sub.add_parser("train", help="train one run: m2m train [RECIPE] [key=value ...]")
    t.add_argument("items", nargs="*", help="an optional recipe name or YAML path, then key=value overrides")
    t.add_argument("--resume", action="store_true", help="continue an unfinished run in its run directory")
    t.set_defaults(func=cmd_train)

    ls = sub.add_parser("list", help="list registered parts")
    ls.add_argument("what", choices=["models", "losses", "methods", "rebalancers", "datasets", "recipes", "keys"])
    ls.set_defaults(func=cmd_list)

    d = sub.add_parser("demo", help="the embedded digits-lt demo (a results table in minutes)")
    d.add_argument("--seeds", type=int, default=3)
    d.add_argument("--root", default="runs/demo")
    d.set_defaults(func=cmd_demo)

    add_data_parser(sub)  # m2m data prepare|info
    add_experiment_parsers(sub)  # m2m reproduce, m2m report
    add_bench_parser(sub)  # m2m bench
    add_tune_parser(sub)  # m2m tune
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:
        # the reader of our output went away (m2m list recipes | head): not an error; keep the
        # interpreter's final flush from failing on the closed pipe too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ConfigError, KeyError, ValueError, RuntimeError, OSError, ArithmeticError) as exc:
        # (ArithmeticError: NonFiniteLossError; OSError: missing data, unwritable run directory)
        # Known, user-facing errors: one clear line, no traceback.
        print(f"m2m: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # every file is written atomically and the checkpoint holds every random state: nothing is lost
        print(
            "m2m: interrupted; run the same command again (m2m train: with --resume) to continue from the last "
            "finished epoch.",
            file=sys.stderr,
        )
        return 130
    finally:
        distributed.shutdown()  # under torchrun: the process group ends with the command


if __name__ == "__main__":
    sys.exit(main())
