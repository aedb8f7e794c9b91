"""The ``m2m`` command's shape: a module per sub-command, and errors caught by their types.

A user's error (:data:`major2minor.cli.USER_ERRORS`) is one line and exit status 2; Ctrl-C is one line and
130; anything else is a bug and keeps its traceback instead of being swallowed into one line.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import major2minor
from major2minor import cli
from major2minor.checkpoint import CheckpointError
from major2minor.cli import listing, main
from major2minor.config import ConfigError
from major2minor.data.io import DataFormatError, DataNotFoundError
from major2minor.engine import NonFiniteLossError
from major2minor.experiments import GridError
from major2minor.figures import MissingDependencyError
from major2minor.memory import MemoryEstimateError
from major2minor.registry import UnknownNameError
from major2minor.report import ReportError
from major2minor.rundir import RunDirBusy, RunDirError
from major2minor.tune import TuneError

PACKAGE = Path(major2minor.__file__).parent


def _raising(exc: BaseException):
    def cmd(args):
        raise exc

    return cmd


@pytest.mark.parametrize(
    "exc",
    [
        ConfigError("train.epochs=0 must be >= 1."),
        GridError("methods='' is empty."),
        ReportError("no finished run under x."),
        TuneError("--trials 0 must be >= 1."),
        RunDirError("run directory x is not a run."),
        RunDirBusy("run directory x is being written by another process."),
        CheckpointError("x/last.pt is damaged."),
        DataNotFoundError("data set files not found under x."),
        DataFormatError("x, line 3: expected `token<TAB>tag`."),
        UnknownNameError("unknown model 'resnet'."),
        MemoryEstimateError("data.image_size=100000 needs 1.09 TiB."),
        NonFiniteLossError("the loss is nan at epoch 3."),
        MissingDependencyError("train.tensorboard=true needs tensorboard."),
        ValueError("data.ratio=0.5 must be >= 1."),
        FileNotFoundError("x/summary.json does not exist."),
        PermissionError("[Errno 13] Permission denied: 'x'"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_user_error_is_one_line_and_status_2(exc, monkeypatch, capsys):
    monkeypatch.setattr(listing, "cmd_list", _raising(exc))
    assert main(["list", "models"]) == 2
    err = capsys.readouterr().err
    assert err == f"m2m: error: {exc}\n"


def test_ctrl_c_is_one_line_and_status_130(monkeypatch, capsys):
    monkeypatch.setattr(listing, "cmd_list", _raising(KeyboardInterrupt()))
    assert main(["list", "models"]) == 130
    err = capsys.readouterr().err
    assert err.startswith("m2m: interrupted; run the same command again") and err.count("\n") == 1


@pytest.mark.parametrize("exc", [TypeError("a bug"), RuntimeError("a bug"), KeyError("a bug"), ZeroDivisionError()])
def test_an_unexpected_error_is_not_swallowed(exc, monkeypatch, capsys):
    monkeypatch.setattr(listing, "cmd_list", _raising(exc))
    with pytest.raises(type(exc)):
        main(["list", "models"])
    assert "m2m: error" not in capsys.readouterr().err


def test_an_unexpected_error_shows_its_traceback_from_the_command_line():
    script = textwrap.dedent(
        """
        import sys
        from major2minor.cli import listing, main

        def cmd_list(args):
            raise TypeError("a bug in the code")

        listing.cmd_list = cmd_list
        sys.exit(main(["list", "models"]))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert proc.stderr.rstrip().endswith("TypeError: a bug in the code")
    assert "m2m: error" not in proc.stderr


def test_every_sub_command_has_its_own_module():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert list(sub.choices) == ["train", "list", "demo", "data", "reproduce", "report", "bench", "tune"]
    for name, command in zip(sub.choices, cli.COMMANDS):
        func = sub.choices[name].get_default("func")
        if name == "data":  # m2m data prepare|info: the data module holds both
            assert command is cli.data
            continue
        assert func.__module__ == command.__name__, (name, func.__module__)
        assert func.__name__ == f"cmd_{name}"


@pytest.mark.parametrize(
    "module", ["experiments.py", "tune.py", "bench.py", "demo.py", "data/commands.py", "pipeline.py"]
)
def test_the_library_modules_hold_no_command_line(module):
    tree = ast.parse((PACKAGE / module).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert "argparse" not in imported and not any(m.startswith("major2minor.cli") for m in imported)
    functions = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert not {f for f in functions if f.startswith("cmd_") or f in ("add_parser", "add_parsers")}


def test_version_answers_without_importing_torch():
    """`m2m --version` is answered before the library is imported (it took 2.3 s, torch's import, before)."""
    import subprocess
    import sys

    from major2minor._version import __version__

    code = "import sys; from major2minor.cli import main; main(['--version']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["major2minor", __version__, "False"]


def test_list_keys_gives_type_default_allowed_values_and_help(capsys):
    from major2minor.config import Config, all_keys, children

    assert main(["list", "keys"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    sections = {name for name, value in children(Config()) if hasattr(value, "__dataclass_fields__")}
    assert set(lines) == {k for k in all_keys() if k not in sections}  # every leaf key, once
    assert "train.epochs              int = 200  [>= 1]" in lines["train.epochs"]
    select = lines["train.select"]  # type, default, the declared check, the comment above the field
    assert "str = 'from_t0'  [one of: from_t0, all]" in select and "which epochs the reported" in select
    assert lines["m2m.beta"].split("]  ", 1)[1].startswith("seed weight p_j = 1 - beta")  # the field's own comment
