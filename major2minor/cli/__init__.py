"""The ``m2m`` command: a thin dispatcher over the library, one module per sub-command.

m2m train [RECIPE] [key=value ...] [--resume]                           (:mod:`major2minor.cli.train`)
m2m list models|losses|methods|rebalancers|datasets|recipes|keys        (:mod:`major2minor.cli.listing`)
m2m demo                                                                (:mod:`major2minor.cli.demo`)
m2m data prepare|info NAME ...                                          (:mod:`major2minor.cli.data`)
m2m reproduce --recipe R --methods erm,drs,m2m --seeds 3 [key=value ...] (:mod:`major2minor.cli.reproduce`)
m2m report DIR...                                                       (:mod:`major2minor.cli.report`)
m2m bench                                                               (:mod:`major2minor.cli.bench`)
m2m tune RECIPE [key=value | key=LOW:HIGH | key=A,B,C ...]              (:mod:`major2minor.cli.tune`)

Each module holds its sub-command's parser (``add_parser``) and its ``cmd_*`` function, which calls the
library.  :func:`main` turns the errors a user's input causes (:data:`USER_ERROR_NAMES`) into one line and exit
status 2; any other exception is a bug and keeps its traceback.  ``m2m --version`` imports nothing heavy.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any, List, Optional, Tuple

from major2minor._version import __version__

#: The sub-command modules (in ``major2minor.cli``), in the order ``m2m --help`` lists them.
COMMAND_MODULES = ("train", "listing", "demo", "data", "reproduce", "report", "bench", "tune")

#: What a user's input can cause, said in one line (``m2m: error: ...``) with exit status 2, no traceback:
#: (module, class) pairs, imported when a command runs, so that ``m2m --version`` loads no torch.
USER_ERROR_NAMES = (
    ("major2minor.config", "ConfigError"),  # a setting or an override (also a command-line item that is neither)
    ("major2minor.experiments", "GridError"),  # m2m reproduce: methods, seeds, overrides against the grid, a stale cell
    ("major2minor.report", "ReportError"),  # m2m report: nothing to report, runs that do not fit together
    ("major2minor.tune", "TuneError"),  # m2m tune: the search space, a study defined otherwise, a study in use
    ("major2minor.rundir", "RunDirError"),  # a run directory that cannot be used as asked (busy, unsealed, foreign)
    ("major2minor.checkpoint", "CheckpointError"),  # a checkpoint that is damaged, foreign or does not match
    ("major2minor.data.io", "DataNotFoundError"),  # a data set's files are not where data.root says
    ("major2minor.data.io", "DataFormatError"),  # a data file that is not in its expected format
    ("major2minor.registry", "UnknownNameError"),  # a model, loss, method, data set or recipe name not registered
    ("major2minor.memory", "MemoryEstimateError"),  # a data set or model that cannot fit in memory
    ("major2minor.engine", "NonFiniteLossError"),  # training diverged (NaN / inf loss)
    ("major2minor.errors", "MissingDependencyError"),  # an optional dependency is not installed
    ("builtins", "ValueError"),  # the library's other argument checks (data.ratio, a model's depth, ...)
    ("builtins", "OSError"),  # a file that cannot be read or written: missing, a link refused, a full disk
)


def user_errors() -> Tuple[type, ...]:
    """The exception classes of :data:`USER_ERROR_NAMES`."""
    return tuple(getattr(importlib.import_module(module), name) for module, name in USER_ERROR_NAMES)


def commands() -> Tuple[Any, ...]:
    """The sub-command modules, imported (each imports the library it drives)."""
    return tuple(importlib.import_module(f"major2minor.cli.{name}") for name in COMMAND_MODULES)


def __getattr__(name: str) -> Any:  # PEP 562: the tuples as attributes, built on first use
    if name == "USER_ERRORS":
        return user_errors()
    if name == "COMMANDS":
        return commands()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_parser() -> argparse.ArgumentParser:
    from major2minor.cli.argparsing import IntermixedParser

    p = argparse.ArgumentParser(prog="m2m", description="M2m and baselines for imbalanced classification.")
    p.add_argument("--version", action="version", version=f"major2minor {__version__}")
    # sub-commands take key=value items and options in any order (--resume anywhere on the line)
    sub = p.add_subparsers(dest="command", required=True, parser_class=IntermixedParser)
    for command in commands():
        command.add_parser(sub)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv == ["--version"]:  # answered before the library (and torch) is imported
        print(f"major2minor {__version__}")
        return 0
    args = build_parser().parse_args(argv)
    from major2minor import distributed

    try:
        return args.func(args)
    except BrokenPipeError:
        # the reader of our output went away (m2m list recipes | head): not an error; keep the
        # interpreter's final flush from failing on the closed pipe too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except user_errors() as exc:
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


__all__ = ["main", "build_parser", "commands", "user_errors", "COMMAND_MODULES", "USER_ERROR_NAMES"]
