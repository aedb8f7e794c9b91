"""The shape of the code: short functions in the engine, an engine that knows methods only through
their protocol, and parts that own their names (the import layers are checked by `make lint`)."""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
from pathlib import Path
from typing import List

import major2minor
from major2minor.methods.base import Rebalancer
from major2minor.registry import LOSSES, METHODS, REBALANCERS

PACKAGE = Path(major2minor.__file__).parent
ENGINE = PACKAGE / "engine.py"


def function_lengths(path: Path):
    """(lines, qualified name) of every function in a module, decorators excluded."""
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out.append((node.end_lineno - node.lineno + 1, f"{path.relative_to(PACKAGE.parent)}:{node.name}"))
    return out


def test_no_engine_function_is_longer_than_60_lines():
    lengths = function_lengths(ENGINE)
    assert max(lengths)[0] <= 60, sorted(lengths)[-3:]
    fit = next(n for n, name in lengths if name.endswith(":fit") and n > 3)
    assert fit <= 60


#: The longest function allowed anywhere in the package (the engine's limit is 60).
PACKAGE_LIMIT = 60


def test_longest_function_in_the_package():
    lengths = sorted(n for p in PACKAGE.rglob("*.py") for n in function_lengths(p))
    assert lengths[-1][0] <= PACKAGE_LIMIT, lengths[-3:]


def _code_names(path: Path):
    """String constants, attribute and variable names used in a module's code (docstrings excluded)."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            names.add(node.value)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.Name):
            names.add(node.id)
    return names


def test_the_engine_never_names_a_method_or_asks_what_it_is():
    used = _code_names(ENGINE)
    assert "hasattr" not in used and "isinstance" not in used
    method_names = (set(REBALANCERS.names()) | set(METHODS.names())) - {"none"}
    sections = {getattr(REBALANCERS.get(n), "config_section", None) for n in REBALANCERS.names()} - {None}
    assert not (used & (method_names | sections)), used & (method_names | sections)


def test_every_hook_the_engine_calls_is_declared_on_the_protocol():
    """Each ``self.method.X`` / ``method_cls.X`` the engine uses exists on Rebalancer with a docstring."""
    tree = ast.parse(ENGINE.read_text())
    called = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "method":
            called.add(node.attr)
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in ("method_cls", "method")
        ):
            called.add(node.attr)
    assert called >= {"setup", "transform_batch", "epoch_stats", "merge_epoch_stats", "run_summary"}
    for hook in called:
        member = getattr(Rebalancer, hook)
        assert inspect.getdoc(member) or isinstance(member, bool), hook


def test_parts_carry_their_own_labels():
    """The results table and figures read names from the registry entries, not from lists elsewhere: each
    re-balancing and loss declares its own label (an inherited one would name it as its base class does), and
    the labels of each registry are distinct."""
    for registry in (REBALANCERS, LOSSES):
        parts = {name: registry.get(name) for name in registry.names()}
        for name, part in parts.items():
            assert "label" in vars(part) and part.label, name
        labels = [part.label for part in parts.values()]
        assert len(set(labels)) == len(labels), labels
    labels = [METHODS.get(name).label for name in METHODS.names()]
    assert all(labels) and len(set(labels)) == len(labels), labels
    report = (PACKAGE / "report.py").read_text()
    assert "METHOD_ORDER" not in report and "LOSS_NAMES" not in report


def _attributes_set_outside_init(cls_name: str, source: Path) -> List[str]:
    """``method: self.X`` for every attribute of class ``cls_name`` assigned in a method other than __init__."""
    tree = ast.parse(source.read_text())
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls_name]
    found = []
    for method in (n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name != "__init__"):
        for node in ast.walk(method):
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            for target in targets:
                for t in ast.walk(target) if target is not None else ():
                    if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                        found.append(f"{method.name}: self.{t.attr}")
    return found


def test_the_trainer_creates_no_attribute_outside_init(tmp_path):
    """The phases take and return what they use (RunParts, TrainState, Progress): no hidden state."""
    assert _attributes_set_outside_init("Trainer", ENGINE) == []
    # the check itself sees an assignment outside __init__
    probe = tmp_path / "probe.py"
    probe.write_text(
        "class Trainer:\n    def __init__(self):\n        self.a = 1\n    def fit(self):\n        self.b = 2\n"
    )
    assert _attributes_set_outside_init("Trainer", probe) == ["fit: self.b"]


#: Where a method's name may stand as a string outside methods/ and losses.py (the parts themselves): user-facing
#: text and defaults a user sees and sets, never a decision the code takes on a method's name.
USER_FACING_NAMES = {
    ("cli/__init__.py", "m2m"),  # the program's name
    ("cli/tune.py", "m2m"),  # --method's default
    ("tune.py", "m2m"),  # tune()'s default method, as the command's
    ("config.py", "erm"),  # the default method=
    ("demo.py", "erm"),  # the demo's methods
    ("demo.py", "m2m"),
    ("bench.py", "erm"),  # the benchmark's workloads, by the names `m2m bench --methods` takes
    ("bench.py", "m2m"),
}


def test_no_code_outside_the_methods_decides_on_a_method_name():
    """`grep "m2m" / "erm" / "ldam"` outside methods/ and losses.py finds only user-facing text: the rest asks the
    registered parts (search space, g, labels, acceptance, per-run keys, logit scale, the plain preset)."""
    found = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith("methods/") or rel == "losses.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in ("m2m", "erm", "ldam"):
                found.add((rel, node.value))
    assert found - USER_FACING_NAMES == set()
    assert found, "the scan found nothing at all: it no longer reads the package"


def _fresh_interpreter(code: str):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    return json.loads(out.stdout)


def test_importing_metrics_does_not_load_the_training_stack():
    """`import major2minor.metrics` loads that module alone: no torch, no pipeline or catalogue (the package's
    names are imported on first use); the public names and the built-in parts are there when asked for."""
    loaded = _fresh_interpreter(
        "import json, sys, major2minor.metrics; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'major2minor'))))"
    )
    assert loaded == ["major2minor", "major2minor._version", "major2minor.metrics"]
    seen = _fresh_interpreter(
        "import json; from major2minor.registry import DATASETS, METHODS, MODELS; "
        "from major2minor import M2mTranslator, load_config, train; "
        "print(json.dumps(['resnet32' in MODELS, 'ldam-m2m' in METHODS, 'digits-lt' in DATASETS, callable(train)]))"
    )
    assert seen == [True, True, True, True]
