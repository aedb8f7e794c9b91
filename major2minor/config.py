"""Typed configuration: the dataclasses below are the single source of truth.

A run's configuration is built in three layers, each validated against these dataclasses:

1. the defaults written here (and in the config section of each re-balancing method that owns
   one, e.g. ``m2m``: :class:`major2minor.methods.m2m.M2mConfig`),
2. a YAML recipe (``major2minor/recipes/NAME.yaml`` or a path), and
3. dotted ``key=value`` overrides from the command line (``optim.lr=0.05 m2m.beta=0.99``).

An unknown key or a value of the wrong type raises :class:`ConfigError` naming the key, the value,
what is allowed, and the closest valid key.  ``method=NAME`` is a preset that sets ``loss.name`` and
``rebalance.name`` together (``method=ldam-drw``); explicit ``loss=...`` / ``rebalance=...``
overrides are applied after it.  A section given a plain string (``loss=focal``) sets its ``name``.

Each section declares the allowed values of its parameters next to them (``checks``, as
imbalanced-learn's ``_parameter_constraints``); :func:`validate` applies them all, then the
cross-field checks, before any work starts.  Parts find each other through the registry only: this
module reads registered names and the metadata parts declare (a method's config section, a loss's
head), it never imports a data set, model, loss or method.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import math
import os
import re
import sys
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple, Union

import yaml

from major2minor.registry import DATASETS, LOSSES, METHODS, MODELS, REBALANCERS

RECIPE_DIR = Path(__file__).parent / "recipes"


class ConfigError(ValueError):
    """A configuration key or value that cannot be used."""


# ----------------------------------------------------------------------------------------------
# checks declared next to the parameters they guard


class Check:
    """An allowed set of values for one parameter: ``allows(value)`` and how to say what is allowed.

    ``hint`` is the fix or the usual value (``"the paper uses 0.9"``), appended to the error.
    A ``None`` value (an optional parameter left unset) always passes.
    """

    hint: str = ""

    def allows(self, value: Any) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def error(self, key: str, value: Any) -> ConfigError:
        hint = f"; {self.hint}" if self.hint else ""
        return ConfigError(f"{key}={_show(value)} must be {self.describe()}{hint}.")


@dataclass(frozen=True)
class Interval(Check):
    """``low <= value <= high`` (either bound may be None; ``closed``: both | left | right | neither)."""

    low: Optional[float] = None
    high: Optional[float] = None
    closed: str = "both"
    hint: str = ""

    def allows(self, value: Any) -> bool:
        if self.low is not None:
            if value < self.low or (value == self.low and self.closed in ("right", "neither")):
                return False
        if self.high is not None:
            if value > self.high or (value == self.high and self.closed in ("left", "neither")):
                return False
        return True

    def describe(self) -> str:
        lo_in = self.closed in ("both", "left")
        hi_in = self.closed in ("both", "right")
        if self.high is None:
            return f"{'>=' if lo_in else '>'} {_num(self.low)}"
        if self.low is None:
            return f"{'<=' if hi_in else '<'} {_num(self.high)}"
        return f"in {'[' if lo_in else '('}{_num(self.low)}, {_num(self.high)}{']' if hi_in else ')'}"


@dataclass(frozen=True)
class OneOf(Check):
    """One of a fixed set of strings."""

    values: Tuple[str, ...] = ()
    hint: str = ""

    def allows(self, value: Any) -> bool:
        return value in self.values

    def describe(self) -> str:
        return "one of: " + ", ".join(self.values)

    def error(self, key: str, value: Any) -> ConfigError:
        close = difflib.get_close_matches(str(value), list(self.values), n=1, cutoff=0.5)
        hint = f" Did you mean '{close[0]}'?" if close else (f" {self.hint}." if self.hint else "")
        return ConfigError(f"{key}='{value}' is not allowed; choose one of: {', '.join(self.values)}.{hint}")


@dataclass(frozen=True)
class Matches(Check):
    """A string matching a regular expression (``what`` says it in words)."""

    pattern: str = ""
    what: str = ""
    hint: str = ""

    def allows(self, value: Any) -> bool:
        return re.fullmatch(self.pattern, str(value)) is not None

    def describe(self) -> str:
        return self.what


@dataclass(frozen=True)
class Each(Check):
    """Every item of a list passes ``check``."""

    check: Check = field(default_factory=Interval)
    hint: str = ""

    def allows(self, value: Any) -> bool:
        return all(v is None or self.check.allows(v) for v in value)

    def describe(self) -> str:
        return "a list whose every item is " + self.check.describe()


def _num(v: Optional[float]) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def check_section(section: Any, prefix: str) -> None:
    """Apply the ``checks`` a config section declares to its current values."""
    for name, check in getattr(type(section), "checks", {}).items():
        value = getattr(section, name)
        if value is not None and not check.allows(value):
            raise check.error(f"{prefix}{name}", value)


# ----------------------------------------------------------------------------------------------
# the sections


@dataclass
class DataConfig:
    name: str = "digits-lt"
    root: Optional[str] = None  # directory holding the data set's files
    profile: str = "longtail"  # longtail | step | natural (keep the data's own counts)
    ratio: float = 10.0  # imbalance ratio rho = N_max / N_min (longtail, step)
    n_max: Optional[int] = None  # size of the largest class; None = as many as the data allow
    step_minor_fraction: float = 0.5  # step profile: fraction of classes that are minority
    selection: str = "first"  # first n_i per class in file order | random (seeded)
    val_per_class: Optional[int] = None  # held-out validation images per class (data-set default)
    test_per_class: Optional[int] = None  # held-out test images per class (data-set default)
    augment: bool = True  # the data set's training augmentation (crop/flip)
    embeddings: Optional[str] = None  # word-vector text file (twitter-pos)
    image_size: Optional[int] = None  # resize target for image data sets that resize
    cache: Optional[str] = None  # decoded-array cache (default: $M2M_CACHE, else the user cache dir)
    workers: int = 4  # DataLoader workers (per process) for streamed data sets (imagenet-lt)
    seed: Optional[int] = None  # seed of seeded splits/selection; None = train.seed (M2m's g reuses f's)
    stream: bool = False  # decode + augment images in DataLoader workers each epoch (imagenet-lt)
    label_column: Optional[str] = None  # csv: the label column (default: 'label' if present, else the last)

    neutral: ClassVar[Tuple[str, ...]] = ("root", "cache", "workers")  # where the files are, decoding processes
    checks: ClassVar[Dict[str, Check]] = {
        "profile": OneOf(("longtail", "step", "natural")),
        "ratio": Interval(1, None, hint="N_max / N_min: use 1 for a balanced set, 100 for the paper's CIFAR-LT"),
        "n_max": Interval(1, None, hint="the size of the largest class, or null for as many as the data allow"),
        "step_minor_fraction": Interval(0, 1, hint="the fraction of minority classes of the step profile, e.g. 0.5"),
        "selection": OneOf(("first", "random")),
        "val_per_class": Interval(
            1, None, hint="model selection needs a validation split; set null for the data set's default"
        ),
        "test_per_class": Interval(1, None, hint="the test split cannot be empty; set null for the data set's default"),
        "image_size": Interval(
            1, None, hint="the side in pixels images are resized to, or null for the data set's default (32)"
        ),
        "workers": Interval(0, None, hint="0 decodes in the training process"),
        "seed": Interval(0, 2**63 - 1, hint="a non-negative integer, or null to use train.seed"),
    }


@dataclass
class ModelConfig:
    name: str = "cnn"
    hidden: List[int] = field(default_factory=lambda: [256])  # mlp hidden sizes
    width: int = 32  # cnn base channels
    head: str = "auto"  # auto | linear | normed (cosine head, needed by LDAM)

    checks: ClassVar[Dict[str, Check]] = {
        "hidden": Each(Interval(1, None), hint="the MLP's hidden layer sizes, e.g. [256]; [] for no hidden layer"),
        "width": Interval(1, None, hint="the CNN's base number of channels, e.g. 32"),
        "head": OneOf(("auto", "linear", "normed")),
    }


@dataclass
class OptimConfig:
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 2e-4
    nesterov: bool = False
    warmup_epochs: int = 5  # linear warm-up: lr * (epoch+1)/warmup for epoch < warmup
    milestones: List[int] = field(default_factory=lambda: [160, 180])
    decay: float = 0.01  # lr multiplied by this at each milestone

    checks: ClassVar[Dict[str, Check]] = {
        "lr": Interval(0, 1e6, closed="right", hint="the paper uses 0.1"),
        "momentum": Interval(0, 1, closed="left", hint="the paper uses 0.9"),
        "weight_decay": Interval(0, None, hint="the paper uses 2e-4"),
        "warmup_epochs": Interval(0, None, hint="epochs of linear warm-up; 0 for none"),
        "milestones": Each(Interval(0, None), hint="the epochs at which the lr is multiplied by optim.decay"),
        "decay": Interval(0, None, closed="neither", hint="the lr factor at each milestone, e.g. 0.1"),
    }


@dataclass
class LossConfig:
    name: str = "ce"
    focal_gamma: float = 1.0
    ldam_max_margin: float = 0.5
    ldam_scale: float = 30.0
    tau: float = 1.0  # logit adjustment strength (balanced softmax: tau = 1)

    checks: ClassVar[Dict[str, Check]] = {
        # Lin et al. study gamma in [0, 5] (best 2); far above, (1 - p)^gamma underflows to 0 for every
        # sample that is not already almost wholly wrong: the loss and its gradient vanish, nothing is learnt
        "focal_gamma": Interval(
            0, 5, hint="the M2m paper uses 1, the focal loss paper studies 0 to 5; 0 is plain cross-entropy"
        ),
        "ldam_max_margin": Interval(0, None, hint="the largest class margin; LDAM uses 0.5"),
        "ldam_scale": Interval(0, None, closed="neither", hint="the logit scale s of the cosine head; LDAM uses 30"),
    }


@dataclass
class RebalanceConfig:
    name: str = "none"
    cb_beta: float = 0.999  # class-balanced (effective number) weights
    smote_k: int = 5  # SMOTE neighbours
    # how a re-weighted batch loss is averaged: "mean" = mean_i w_yi l_i (the M2m public code),
    # "weights" = sum_i w_yi l_i / sum_i w_yi (PyTorch's weighted cross-entropy mean; kaidic/LDAM-DRW)
    weighted_mean: str = "mean"

    checks: ClassVar[Dict[str, Check]] = {
        "cb_beta": Interval(0, 1, hint="the paper uses 0.999; 1 means 1/N, 0 means no re-weighting"),
        "smote_k": Interval(1, None, hint="imbalanced-learn's default is 5"),
        "weighted_mean": OneOf(("mean", "weights")),
    }


@dataclass
class TrainConfig:
    epochs: int = 200
    schedule_scale: float = 1.0  # scales epochs, T0, lr milestones and warm-up together (0.2: 200 -> 40 epochs)
    batch_size: int = 128
    eval_batch_size: int = 1024
    deferred_epoch: int = 160  # T0: re-balancing (DRS/DRW/M2m) switches on at this epoch
    # which epochs the reported (best-validation) epoch is chosen from: from_t0 = a method with a deferred
    # phase (DRS, DRW, M2m, ...) is judged on its own epochs >= T0 (before T0 it is the plain model);
    # all = every epoch (the whole-run best is recorded either way)
    select: str = "from_t0"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch intra-op threads; 0 = automatic (1 for small models, else torch's default)
    deterministic: bool = True  # GPU: cuDNN's deterministic algorithms, autotuner off (false leaves torch's defaults)
    channels_last: bool = True  # NHWC memory layout for image models (faster convolutions on CPU and GPU)
    amp: str = "auto"  # auto (bf16 where it pays: numerics.choose_amp) | none (strict fp32) | bf16
    compile: bool = False  # torch.compile the model
    flush_denormal: bool = True  # CPU: flush subnormal floats to zero (faster once gradients underflow)
    progress: str = "auto"  # auto (bar only on a terminal) | bar | none

    # where and how fast it runs, how progress shows: the same numbers up to rounding
    neutral: ClassVar[Tuple[str, ...]] = (
        "eval_batch_size",
        "device",
        "threads",
        "deterministic",
        "channels_last",
        "compile",
        "flush_denormal",
        "progress",
    )
    checks: ClassVar[Dict[str, Check]] = {
        "epochs": Interval(1, None),
        "schedule_scale": Interval(0, None, closed="neither", hint="0.2 turns the 200-epoch recipes into 40 epochs"),
        "batch_size": Interval(1, None, hint="the paper uses 128"),
        "eval_batch_size": Interval(1, None),
        "deferred_epoch": Interval(0, None, hint="the epoch re-balancing switches on (T0); the paper uses 160 of 200"),
        "select": OneOf(("from_t0", "all")),
        "seed": Interval(0, 2**63 - 1, hint="any non-negative integer below 2^63"),
        "device": Matches(
            r"auto|cpu|cuda(:\d+)?|mps", "auto, cpu, cuda or cuda:N", hint="auto picks a GPU when there is one"
        ),
        "threads": Interval(0, None, hint="0 leaves torch's default"),
        "amp": OneOf(("auto", "none", "bf16")),
        "progress": OneOf(("auto", "bar", "none")),
    }


@dataclass
class RunConfig:
    dir: Optional[str] = None  # run directory; default ROOT/RECIPE/METHOD/seedN
    root: str = "runs"
    tensorboard: bool = False


def method_sections() -> Dict[str, type]:
    """Config sections owned by registered re-balancing methods (``m2m`` -> ``M2mConfig``).

    A method class declares ``config_section = "NAME"`` and ``config_class = SomeDataclass``; the
    section is then ``cfg.NAME`` with keys ``NAME.*``, checked by the dataclass's ``checks``.
    """
    out: Dict[str, type] = {}
    for entry in REBALANCERS.in_order():
        name = getattr(entry.obj, "config_section", None)
        if name and name not in out:
            out[name] = entry.obj.config_class
    return out


#: The fixed sections, in the order config.yaml lists them; method sections come after ``rebalance``.
_BEFORE_METHOD_SECTIONS = ("recipe", "method", "data", "model", "optim", "loss", "rebalance")


@dataclass
class Config:
    """A run's whole configuration: the fixed sections, plus one section per method that owns one
    (``cfg.m2m``), reached as attributes like the others."""

    recipe: str = "digits-lt"
    method: str = "erm"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    rebalance: RebalanceConfig = field(default_factory=RebalanceConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    sections: Dict[str, Any] = field(default_factory=lambda: {n: c() for n, c in method_sections().items()}, repr=False)

    def __getattr__(self, name: str) -> Any:
        # only reached when ordinary lookup fails: a method's section (cfg.m2m)
        sections = self.__dict__.get("sections")
        if sections is not None and name in sections:
            return sections[name]
        raise AttributeError(f"{type(self).__name__} has no section '{name}'")

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for name, value in children(self):
            out[name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else copy.deepcopy(value)
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def children(node: Any) -> List[Tuple[str, Any]]:
    """``(name, value)`` of a config node's keys, in order; for :class:`Config` the method sections
    sit right after ``rebalance``, where config.yaml lists them."""
    if isinstance(node, Config):
        fixed = [(f.name, getattr(node, f.name)) for f in dataclasses.fields(node) if f.name != "sections"]
        head = [kv for kv in fixed if kv[0] in _BEFORE_METHOD_SECTIONS]
        tail = [kv for kv in fixed if kv[0] not in _BEFORE_METHOD_SECTIONS]
        return head + list(node.sections.items()) + tail
    return [(f.name, getattr(node, f.name)) for f in dataclasses.fields(node)]


# ----------------------------------------------------------------------------------------------
# settings that never change a result


def result_neutral_keys() -> List[str]:
    """Keys (``"run."`` = the whole section) whose value never changes what a run computes beyond
    rounding: names, where files go, how progress shows, where and how fast it runs.

    The one list that resume, ``m2m reproduce``, ``m2m report`` and M2m's generator cache all use.
    Each section declares its own (``neutral``, next to its parameters); the top-level ``recipe``
    (a name) and the whole ``run`` section are neutral.
    """
    keys = ["recipe", "run."]
    for name, section in children(Config()):
        keys += [f"{name}.{f}" for f in getattr(type(section), "neutral", ())]
    return keys


def is_result_neutral(key: str, neutral: Optional[Sequence[str]] = None) -> bool:
    neutral = result_neutral_keys() if neutral is None else neutral
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in neutral)


def flatten(tree: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    """``{'a': {'b': 1}} -> {'a.b': 1}`` (lists are kept as values)."""
    out: Dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def result_settings(config: Dict[str, Any]) -> Dict[str, Any]:
    """The flat settings of a ``to_dict()`` config that decide its result (neutral keys dropped)."""
    neutral = result_neutral_keys()
    return {k: v for k, v in flatten(config).items() if not is_result_neutral(k, neutral)}


def settings_digest(config: Dict[str, Any], without: Sequence[str] = ()) -> str:
    """12 hex digits naming a ``to_dict()`` config by its :func:`result_settings` less the keys ``without``
    (those a cache's directory names otherwise, or that the cached run does not read): the name of a cached
    ERM g (``.generators/<recipe>-<digest>``) and of a shared prefix (``.prefix/<method>-<digest>``)."""
    key = result_settings(config)
    for name in without:
        key.pop(name, None)
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]


def differing_settings(saved: Dict[str, Any], current: Dict[str, Any], ignore: Sequence[str] = ()) -> List[str]:
    """``"key=A there, B now"`` for every result-deciding key where two ``to_dict()`` configs differ.

    A key that ``saved`` lacks (a setting added to the package after that run was started) counts as its
    default, so a run started by an earlier version resumes when every setting it did record matches.
    """
    a, b = result_settings(saved), result_settings(current)
    defaults = result_settings(Config().to_dict())
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key in ignore:
            continue
        va, vb = a.get(key, defaults.get(key, "<unset>")), b.get(key, "<unset>")
        if json.dumps(va, sort_keys=True, default=str) != json.dumps(vb, sort_keys=True, default=str):
            diffs.append(f"{key}={va!r} there, {vb!r} now")
    return diffs


# ----------------------------------------------------------------------------------------------
# keys, values and overrides


def all_keys(node: Any = None, prefix: str = "") -> List[str]:
    """Every dotted key of the config tree, e.g. ``['recipe', 'data.name', ...]``."""
    node = Config() if node is None else node
    keys = []
    for name, value in children(node):
        key = prefix + name
        keys.append(key)
        if dataclasses.is_dataclass(value):
            keys.extend(all_keys(value, key + "."))
    return keys


def _unknown_key(key: str) -> ConfigError:
    valid = all_keys()
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    section = key.rsplit(".", 1)[0] + "." if "." in key else ""
    siblings = [k for k in valid if k.startswith(section) and "." not in k[len(section) :]]
    if not siblings:  # an unknown section: list the sections
        siblings = [k for k in valid if "." not in k]
        return ConfigError(
            f"unknown config key '{key}': '{section[:-1]}' is not a config section.{hint} "
            f"Sections and top-level keys: {', '.join(siblings)}."
        )
    return ConfigError(f"unknown config key '{key}'.{hint} Valid keys here: {', '.join(siblings)}.")


def _show(value: Any) -> str:
    """A value as the user typed it: numbers bare (``2.5``), other text quoted (``'ten'``)."""
    if isinstance(value, str):
        try:
            float(value)
            return value
        except ValueError:
            return repr(value)
    return repr(value)


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against the field type ``annotation``; return it converted."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Union:  # Optional[X]
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "~", "")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner[0])
    if origin in (list, List, Sequence):
        (item,) = args or (Any,)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v != ""] if value else []
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            value = [value]
        return [_coerce(key, v, item) for v in value]
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ConfigError(f"{key}={_show(value)} must be a boolean (true/false).")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{key}={_show(value)} must be an integer.")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())  # exact, also beyond 2**53
            except ValueError:
                pass
        try:
            as_float = float(value)
        except ValueError:
            raise ConfigError(f"{key}={_show(value)} must be an integer.") from None
        if not math.isfinite(as_float):
            raise ConfigError(f"{key}={_show(value)} must be a finite integer.")
        if as_float != int(as_float):
            raise ConfigError(f"{key}={_show(value)} must be an integer, not a fraction.")
        return int(as_float)
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}={_show(value)} must be a number.")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={_show(value)} must be a number.") from None
    if annotation is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}={_show(value)} must be a single string.")
        return str(value)
    return value


def _field_types(node: Any) -> Dict[str, Any]:
    return typing.get_type_hints(type(node))


def set_key(cfg: Config, key: str, value: Any) -> None:
    """Set one dotted key, validating the key and the value's type."""
    parts = key.split(".")
    node: Any = cfg
    for i, part in enumerate(parts):
        named = dict(children(node)) if dataclasses.is_dataclass(node) else {}
        if part not in named:
            raise _unknown_key(key)
        if i == len(parts) - 1:
            current = named[part]
            if dataclasses.is_dataclass(current):
                if isinstance(value, dict):
                    for k, v in value.items():
                        set_key(cfg, f"{key}.{k}", v)
                    return
                if "name" in {f.name for f in dataclasses.fields(current)}:
                    set_key(cfg, f"{key}.name", value)  # loss=focal means loss.name=focal
                    return
                raise ConfigError(f"{key} is a section; set one of its keys, e.g. {key}.<key>=VALUE.")
            setattr(node, part, _coerce(key, value, _field_types(node)[part]))
        else:
            node = named[part]


def apply_dict(cfg: Config, values: Dict[str, Any], prefix: str = "") -> None:
    for k, v in values.items():
        set_key(cfg, prefix + k, v)


def parse_override(text: str) -> tuple:
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key=value (e.g. optim.lr=0.05).")
    key, raw = text.split("=", 1)
    key = key.strip().lstrip("-")
    raw = raw.strip()
    if not raw.startswith(("[", "{", "'", '"')):
        # A plain scalar stays text: the field's type converts it (set_key), so a string field keeps
        # exactly what was typed (run.dir=2024.10 stays '2024.10', data.root=on stays 'on').
        return key, raw
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return key, value


def recipe_path(recipe: str) -> Path:
    path = Path(recipe)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    builtin = RECIPE_DIR / f"{recipe}.yaml"
    if builtin.exists():
        return builtin
    valid = list_recipes()
    close = difflib.get_close_matches(recipe, valid, n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise ConfigError(
        f"recipe='{recipe}' is neither a YAML file nor a built-in recipe; built-in: {', '.join(valid)}.{hint}"
    )


def list_recipes() -> List[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A key given twice in one YAML mapping."""

    fix = "Merge the two into one (YAML would keep only the last and drop the first without a word)."


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping: plain YAML keeps the last, so
    a recipe with two ``train:`` blocks would silently lose every setting of the first."""

    def construct_mapping(self, node, deep=False):
        seen: Dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *base' may be overridden: YAML's own rule
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class says what is wrong with it
                break
            if first is not None:
                raise DuplicateKeyError(
                    None, None, f"key '{key}' is given twice (first at line {first})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def read_yaml(path: Union[str, Path], what: str = "file") -> Any:
    """A YAML file's contents; a syntax error or a key given twice names the file, the line and the fix."""
    path = Path(path)
    try:
        with open(path) as fh:
            return yaml.load(fh, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        fix = getattr(exc, "fix", "Fix the file (keys as 'section:' lines with indented 'key: value' entries).")
        raise ConfigError(f"{what} {path} is not valid YAML{where}: {problem}. {fix}") from None


def apply_method_preset(cfg: Config, method: str) -> None:
    preset = METHODS.get(method)
    cfg.method = method
    cfg.loss.name = preset.loss
    cfg.rebalance.name = preset.rebalance
    for key, value in preset.overrides.items():
        set_key(cfg, key, value)


def load_config(recipe: Optional[str] = None, overrides: Sequence[str] = ()) -> Config:
    """Defaults, then the recipe, then the overrides; ``method=`` presets first, then the rest."""
    parsed = [parse_override(o) for o in overrides]
    recipe = next((str(v) for k, v in parsed if k == "recipe"), recipe) or Config().recipe
    cfg = Config()
    path = recipe_path(recipe)
    values = read_yaml(path, "recipe") or {}
    if not isinstance(values, dict):
        raise ConfigError(f"recipe file {path} must hold a mapping of config keys, got {type(values).__name__}.")
    method = values.pop("method", None)
    apply_dict(cfg, values)
    cfg.recipe = recipe if path.parent == RECIPE_DIR else str(path)
    for k, v in parsed:
        if k == "method":
            method = v
    if method is not None:
        apply_method_preset(cfg, str(method))
    for k, v in parsed:
        if k not in ("method", "recipe"):
            set_key(cfg, k, v)
    cfg.method = resolve_method(cfg, requested=None if method is None else str(method))
    scale_schedule(cfg)
    validate(cfg)
    warn_about_schedule(cfg)
    return cfg


def scale_schedule(cfg: Config) -> None:
    """Apply ``train.schedule_scale`` s: epochs, T0, every lr milestone and the warm-up are multiplied by s
    and rounded (at least one epoch; T0 stays inside the run; a warm-up stays at least one epoch), so one
    override shortens a recipe without breaking it: ``cifar10-lt train.schedule_scale=0.2`` runs 40 epochs,
    T0 = 32, lr x0.01 at 32 and 36.  The resolved configuration (config.yaml) records the schedule that runs,
    with the scale applied (1.0)."""
    s, t, o = cfg.train.schedule_scale, cfg.train, cfg.optim
    # checked here, before it is applied and reset to 1.0: validate() would only see the scaled schedule
    # (0 would run 1 epoch and record 1.0; a negative scale would be reported as negative milestones)
    _check_finite(t, "train.")
    check = TrainConfig.checks["schedule_scale"]
    if not check.allows(s):
        raise check.error("train.schedule_scale", s)
    if s == 1.0:
        return
    t.epochs = max(1, round(t.epochs * s))
    t.deferred_epoch = min(round(t.deferred_epoch * s), t.epochs - 1)
    o.milestones = sorted(round(m * s) for m in o.milestones)  # two milestones may meet: both decays apply
    o.warmup_epochs = max(1, round(o.warmup_epochs * s)) if o.warmup_epochs else 0
    t.schedule_scale = 1.0


def warn_about_schedule(cfg: Config) -> None:
    """Milestones past the end are silently without effect (a shortened run keeps the large lr): say so."""
    t, o = cfg.train, cfg.optim
    late = [m for m in o.milestones if m >= t.epochs]
    if late:
        warnings.warn(
            f"optim.milestones={o.milestones}: {late} lie at or past train.epochs={t.epochs}, so the lr never "
            "decays there. Shorten the recipe's whole schedule instead with train.schedule_scale=FRACTION (epochs, "
            "T0, milestones and warm-up scaled alike; 0.2 turns 200 epochs into 40), or set optim.milestones.",
            UserWarning,
            stacklevel=3,
        )


def resolve_method(cfg: Config, requested: Optional[str] = None) -> str:
    """The preset that the resolved loss/re-balancing/switches match, else ``LOSS+REBALANCE``.

    So ``method=erm loss=focal rebalance=rw`` is recorded (and gets its run directory) as
    ``focal+rw``, never as ``erm``, and ``method=m2m m2m.reject=false`` as ``m2m-no-reject``.  An
    ablation ``requested`` by name is kept while it still matches (a config can match several ablations:
    ``method=m2m-no-reject m2m.gamma=0`` stays ``m2m-no-reject``).
    """

    def matches(name: str) -> bool:
        p = METHODS.get(name)
        if (p.loss, p.rebalance) != (cfg.loss.name, cfg.rebalance.name):
            return False
        probe = copy.deepcopy(cfg)
        for key, value in p.overrides.items():
            set_key(probe, key, value)
        return probe == cfg

    if requested is not None and requested in METHODS and METHODS.get(requested).overrides and matches(requested):
        return requested  # an ablation asked for by name stays itself (it may match another one too)
    # the most specific first: ablation presets (with switches) before plain loss+re-balancing ones
    names = sorted(METHODS.names(), key=lambda n: not METHODS.get(n).overrides)
    plain = [n for n in names if matches(n)]
    return plain[0] if plain else f"{cfg.loss.name}+{cfg.rebalance.name}"


def check_streamable(rebalance: str, streamed: bool) -> None:
    """Refuse a re-balancing method that rewrites the training set in memory (SMOTE) on streamed data:
    checked on the config (``data.stream``) before any work, and by the engine on the data set it built."""
    if streamed and getattr(REBALANCERS.get(rebalance), "rewrites_train", False):
        raise ConfigError(
            f"rebalance.name={rebalance} rewrites the whole training set in memory; it "
            "cannot run on streamed data (data.stream=true). Use data.stream=false or another "
            "method."
        )


def validate(cfg: Config) -> None:
    """Every section's declared checks, then the cross-field checks, once before any work starts."""
    DATASETS.get(cfg.data.name)
    MODELS.get(cfg.model.name)
    loss = LOSSES.get(cfg.loss.name)
    method = REBALANCERS.get(cfg.rebalance.name)
    _check_finite(cfg)
    _check_decodable(cfg)
    for name, section in children(cfg):
        if dataclasses.is_dataclass(section):
            check_section(section, f"{name}.")
    d, t = cfg.data, cfg.train
    if d.stream and not DATASETS.entry(d.name).info.streams:
        raise ConfigError(
            f"data.stream=true: data set '{d.name}' has no streaming path (imagenet-lt has); "
            "it is held in memory, so set data.stream=false."
        )
    check_streamable(cfg.rebalance.name, streamed=d.stream)
    if getattr(method, "deferred", False) and not 0 <= t.deferred_epoch < t.epochs:
        raise ConfigError(
            f"train.deferred_epoch={t.deferred_epoch} must be in [0, train.epochs="
            f"{t.epochs}) for rebalance.name={cfg.rebalance.name}, or it never switches on; "
            f"lower it (the paper uses 160 of 200)."
        )
    head = getattr(loss, "head", None)
    if head is not None and cfg.model.head not in ("auto", head):
        what = "cosine (normed)" if head == "normed" else head
        raise ConfigError(
            f"loss.name={cfg.loss.name} needs the {what} head, but model.head={cfg.model.head}; "
            f"use model.head=auto or model.head={head}."
        )
    check_config = getattr(method, "check_config", None)
    if check_config is not None:
        check_config(cfg)


def _check_decodable(node: Any, prefix: str = "") -> None:
    """No value holding bytes the locale could not decode (Python keeps them as lone surrogates): such a path
    works for opening files but cannot be written into config.yaml or a report, so a run would stop half-made."""
    for name, value in children(node):
        if dataclasses.is_dataclass(value):
            _check_decodable(value, f"{prefix}{name}.")
            continue
        for text in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(text, str) and any("\udc80" <= ch <= "\udcff" for ch in text):
                shown = os.fsencode(text).decode("utf-8", "replace")
                raise ConfigError(
                    f"{prefix}{name}={shown!r} holds characters this locale cannot decode (its encoding is "
                    f"{sys.getfilesystemencoding()}), so it could not be written into the run's files. Run under "
                    "a UTF-8 locale (e.g. LC_ALL=C.UTF-8, or PYTHONUTF8=1), or use ASCII names."
                )


def _check_finite(node: Any, prefix: str = "") -> None:
    """No NaN or infinite number anywhere in the configuration."""
    for name, value in children(node):
        if dataclasses.is_dataclass(value):
            _check_finite(value, f"{prefix}{name}.")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{prefix}{name}={value} must be a finite number.")
