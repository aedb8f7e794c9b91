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
library.  :func:`main` turns the errors a user's input causes (:data:`USER_ERRORS`) into one line and exit
status 2; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from major2minor import distributed
from major2minor._version import __version__
from major2minor.checkpoint import CheckpointError
from major2minor.cli import bench, data, demo, listing, report, reproduce, train, tune
from major2minor.cli.argparsing import IntermixedParser
from major2minor.config import ConfigError
from major2minor.data.io import DataFormatError, DataNotFoundError
from major2minor.engine import NonFiniteLossError
from major2minor.errors import MissingDependencyError
from major2minor.experiments import GridError
from major2minor.memory import MemoryEstimateError
from major2minor.registry import UnknownNameError
from major2minor.report import ReportError
from major2minor.rundir import RunDirError
from major2minor.tune import TuneError

#: The sub-command modules, in the order ``m2m --help`` lists them.
COMMANDS = (train, listing, demo, data, reproduce, report, bench, tune)

#: What a user's input can cause, said in one line (``m2m: error: ...``) with exit status 2, no traceback.
USER_ERRORS = (
    ConfigError,  # a setting or an override (also a command-line item that is neither)
    GridError,  # m2m reproduce: methods, seeds, overrides that contradict the grid, a stale cell
    ReportError,  # m2m report: nothing to report, runs that do not fit together
    TuneError,  # m2m tune: the search space, a study defined otherwise, a study in use
    RunDirError,  # a run directory that cannot be used as asked (busy, unsealed, someone else's files)
    CheckpointError,  # a checkpoint that is damaged, foreign or does not match the run
    DataNotFoundError,  # a data set's files are not where data.root says (the error says where)
    DataFormatError,  # a data file that is not in its expected format
    UnknownNameError,  # a model, loss, method, data set or recipe name that is not registered
    MemoryEstimateError,  # a data set or model that cannot fit in memory, refused before allocating
    NonFiniteLossError,  # training diverged (NaN / inf loss)
    MissingDependencyError,  # an optional dependency (tensorboard, matplotlib, optuna) is not installed
    ValueError,  # the library's other argument checks (data.ratio, a model's depth, train.device, ...)
    OSError,  # a file that cannot be read or written: missing, a link refused, permissions, a full disk
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="m2m", description="M2m and baselines for imbalanced classification.")
    p.add_argument("--version", action="version", version=f"major2minor {__version__}")
    # sub-commands take key=value items and options in any order (--resume anywhere on the line)
    sub = p.add_subparsers(dest="command", required=True, parser_class=IntermixedParser)
    for command in COMMANDS:
        command.add_parser(sub)
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
    except USER_ERRORS as exc:
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


__all__ = ["main", "build_parser", "COMMANDS", "USER_ERRORS"]
