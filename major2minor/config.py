"""Typed configuration: the dataclasses below are the single source of truth.

A run's configuration is built in three layers, each validated against these dataclasses:

1. the defaults written here,
2. a YAML recipe (``major2minor/recipes/NAME.yaml`` or a path), and
3. dotted ``key=value`` overrides from the command line (``optim.lr=0.05 m2m.beta=0.99``).

An unknown key or a value of the wrong type raises :class:`ConfigError` naming the key, the value,
what is allowed, and the closest valid key.  ``method=NAME`` is a preset that sets ``loss.name`` and
``rebalance.name`` together (``method=ldam-drw``); explicit ``loss=...`` / ``rebalance=...``
overrides are applied after it.  A section given a plain string (``loss=focal``) sets its ``name``.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import yaml

RECIPE_DIR = Path(__file__).parent / "recipes"


class ConfigError(ValueError):
    """A configuration key or value that cannot be used."""


@dataclass
class DataConfig:
    name: str = "digits-lt"
    root: Optional[str] = None          # directory holding the data set's files
    profile: str = "longtail"           # longtail | step | natural (keep the data's own counts)
    ratio: float = 10.0                 # imbalance ratio rho = N_max / N_min (longtail, step)
    n_max: Optional[int] = None         # size of the largest class; None = as many as the data allow
    step_minor_fraction: float = 0.5    # step profile: fraction of classes that are minority
    selection: str = "first"            # first n_i per class in file order | random (seeded)
    val_per_class: Optional[int] = None   # held-out validation images per class (data-set default)
    test_per_class: Optional[int] = None  # held-out test images per class (data-set default)
    augment: bool = True                # the data set's training augmentation (crop/flip)
    embeddings: Optional[str] = None    # word-vector text file (twitter-pos)
    image_size: Optional[int] = None    # resize target for image data sets that resize
    cache: Optional[str] = None         # where decoded arrays are cached (default: ROOT/.m2m-cache)
    workers: int = 4                    # DataLoader workers (per process) for streamed data sets (imagenet-lt)
    seed: Optional[int] = None          # seed of seeded splits/selection; None = train.seed (M2m's g reuses f's)
    stream: bool = False                # decode + augment images in DataLoader workers each epoch (imagenet-lt)
    label_column: Optional[str] = None  # csv: the label column (default: 'label' if present, else the last)


@dataclass
class ModelConfig:
    name: str = "cnn"
    hidden: List[int] = field(default_factory=lambda: [256])  # mlp hidden sizes
    width: int = 32                     # cnn base channels
    head: str = "auto"                  # auto | linear | normed (cosine head, needed by LDAM)


@dataclass
class OptimConfig:
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 2e-4
    nesterov: bool = False
    warmup_epochs: int = 5              # linear warm-up: lr * (epoch+1)/warmup for epoch < warmup
    milestones: List[int] = field(default_factory=lambda: [160, 180])
    decay: float = 0.01                 # lr multiplied by this at each milestone


@dataclass
class LossConfig:
    name: str = "ce"
    focal_gamma: float = 1.0
    ldam_max_margin: float = 0.5
    ldam_scale: float = 30.0
    tau: float = 1.0                    # logit adjustment strength (balanced softmax: tau = 1)


@dataclass
class RebalanceConfig:
    name: str = "none"
    cb_beta: float = 0.999              # class-balanced (effective number) weights
    smote_k: int = 5                    # SMOTE neighbours


@dataclass
class M2mConfig:
    beta: float = 0.999                 # seed weight p_j = 1 - beta^max(N_yj - N_k, 0)
    lam: float = 0.5                    # weight of f's seed-class logit in the translation loss
    gamma: float = 0.9                  # acceptance threshold on g's target-class probability
    step_size: float = 0.1              # eta, L2-normalised gradient step
    steps: int = 10                     # T, gradient steps per translation
    noise: str = "official"             # official | per-sample | none
    noise_radius: float = 0.5
    generator: List[str] = field(default_factory=list)  # run dirs / checkpoints of g (several = ensemble)
    self_generator: bool = False        # M2m-Self: f itself plays g
    reject: bool = True                 # False = M2m-No-Reject (keep every translated sample)
    translate_rejected: bool = False    # True = also translate slots the Bernoulli draw rejects (slower, same distribution)
    fold_generator: bool = True         # fold g's BatchNorm into its convolutions (g is frozen; same function up to rounding)
    pad_multiple: int = 0               # translate batches padded to a multiple of this (0 = 32 if cudnn.benchmark, else none); exact
    fold_classifier: bool = True        # translate through a BN-folded copy of f, refreshed every batch (same function up to rounding)


@dataclass
class TrainConfig:
    epochs: int = 200
    batch_size: int = 128
    eval_batch_size: int = 1024
    deferred_epoch: int = 160           # T0: re-balancing (DRS/DRW/M2m) switches on at this epoch
    seed: int = 0
    device: str = "auto"                # auto | cpu | cuda | cuda:N
    threads: int = 0                    # torch intra-op threads; 0 = leave torch's default
    deterministic: bool = True          # GPU: cuDNN's deterministic algorithms, autotuner off (false leaves torch's defaults)
    channels_last: bool = True          # NHWC memory layout for image models (faster convolutions on CPU and GPU)
    amp: str = "none"                   # none | bf16 (autocast)
    compile: bool = False               # torch.compile the model
    flush_denormal: bool = True         # CPU: flush subnormal floats to zero (2-3x faster when gradients underflow; see numerics.py)
    progress: str = "auto"              # auto (bar only on a terminal) | bar | none


@dataclass
class RunConfig:
    dir: Optional[str] = None           # run directory; default ROOT/RECIPE/METHOD/seedN
    root: str = "runs"
    tensorboard: bool = False


@dataclass
class Config:
    recipe: str = "digits-lt"
    method: str = "erm"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    rebalance: RebalanceConfig = field(default_factory=RebalanceConfig)
    m2m: M2mConfig = field(default_factory=M2mConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ----------------------------------------------------------------------------------------------
# validation and overrides

def all_keys(node: Any = None, prefix: str = "") -> List[str]:
    """Every dotted key of the config tree, e.g. ``['recipe', 'data.name', ...]``."""
    node = Config() if node is None else node
    keys = []
    for f in dataclasses.fields(node):
        key = prefix + f.name
        keys.append(key)
        value = getattr(node, f.name)
        if dataclasses.is_dataclass(value):
            keys.extend(all_keys(value, key + "."))
    return keys


def _unknown_key(key: str) -> ConfigError:
    valid = all_keys()
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    section = key.rsplit(".", 1)[0] + "." if "." in key else ""
    siblings = [k for k in valid if k.startswith(section) and "." not in k[len(section):]]
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
                return int(value.strip())          # exact, also beyond 2**53
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
        if not dataclasses.is_dataclass(node) or part not in {f.name for f in dataclasses.fields(node)}:
            raise _unknown_key(key)
        if i == len(parts) - 1:
            current = getattr(node, part)
            if dataclasses.is_dataclass(current):
                if isinstance(value, dict):
                    for k, v in value.items():
                        set_key(cfg, f"{key}.{k}", v)
                    return
                if "name" in {f.name for f in dataclasses.fields(current)}:
                    set_key(cfg, f"{key}.name", value)   # loss=focal means loss.name=focal
                    return
                raise ConfigError(f"{key} is a section; set one of its keys, e.g. {key}.<key>=VALUE.")
            setattr(node, part, _coerce(key, value, _field_types(node)[part]))
        else:
            node = getattr(node, part)


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
    raise ConfigError(f"recipe='{recipe}' is neither a YAML file nor a built-in recipe; "
                      f"built-in: {', '.join(valid)}.{hint}")


def list_recipes() -> List[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def apply_method_preset(cfg: Config, method: str) -> None:
    from major2minor.registry import METHODS
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
    with open(path) as fh:
        values = yaml.safe_load(fh) or {}
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
    cfg.method = method_label(cfg)
    validate(cfg)
    return cfg


def method_label(cfg: Config) -> str:
    """The preset that the resolved loss/re-balancing/switches match, else ``LOSS+REBALANCE``.

    So ``method=erm loss=focal rebalance=rw`` is recorded (and gets its run directory) as
    ``focal+rw``, never as ``erm``.
    """
    from major2minor.registry import METHODS

    def matches(name: str) -> bool:
        p = METHODS.get(name)
        if (p.loss, p.rebalance) != (cfg.loss.name, cfg.rebalance.name):
            return False
        probe = copy.deepcopy(cfg)
        for key, value in p.overrides.items():
            set_key(probe, key, value)
        return probe == cfg

    # the most specific first: ablation presets (with switches) before plain loss+re-balancing ones
    names = sorted(METHODS.names(), key=lambda n: not METHODS.get(n).overrides)
    plain = [n for n in names if matches(n)]
    return plain[0] if plain else f"{cfg.loss.name}+{cfg.rebalance.name}"


def config_from_dict(values: Dict[str, Any]) -> Config:
    """Rebuild a Config from its ``to_dict()`` form (e.g. a run directory's config.yaml)."""
    cfg = Config()
    values = copy.deepcopy(values)
    apply_dict(cfg, values)
    return cfg


def _choice(key: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        close = difflib.get_close_matches(value, list(allowed), n=1, cutoff=0.5)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"{key}='{value}' is not allowed; choose one of: {', '.join(allowed)}.{hint}")


def validate(cfg: Config) -> None:
    """Cross-field checks, done once before any work starts."""
    from major2minor.registry import DATASETS, LOSSES, MODELS, REBALANCERS
    DATASETS.get(cfg.data.name)
    MODELS.get(cfg.model.name)
    LOSSES.get(cfg.loss.name)
    REBALANCERS.get(cfg.rebalance.name)
    _choice("data.profile", cfg.data.profile, ["longtail", "step", "natural"])
    _choice("data.selection", cfg.data.selection, ["first", "random"])
    _choice("model.head", cfg.model.head, ["auto", "linear", "normed"])
    _choice("m2m.noise", cfg.m2m.noise, ["official", "per-sample", "none"])
    _choice("train.amp", cfg.train.amp, ["none", "bf16"])
    _choice("train.progress", cfg.train.progress, ["auto", "bar", "none"])
    t = cfg.train
    _check_finite(cfg)
    d = cfg.data
    if d.stream and not getattr(DATASETS.get(d.name), "streams", False):
        raise ConfigError(f"data.stream=true: data set '{d.name}' has no streaming path (imagenet-lt has); "
                          "it is held in memory, so set data.stream=false.")
    if d.workers < 0:
        raise ConfigError(f"data.workers={d.workers} must be >= 0 (0 = decode in the training process).")
    if d.stream and cfg.rebalance.name == "smote":
        raise ConfigError("rebalance.name=smote interpolates the whole training set in memory; it cannot run on "
                          "streamed data (data.stream=true). Use data.stream=false or another method.")
    if d.n_max is not None and d.n_max < 1:
        raise ConfigError(f"data.n_max={d.n_max} must be >= 1 (the size of the largest class), or null for "
                          "as many as the data allow.")
    if not 0 <= d.step_minor_fraction <= 1:
        raise ConfigError(f"data.step_minor_fraction={d.step_minor_fraction} must be in [0, 1] (the fraction "
                          "of minority classes of the step profile), e.g. 0.5.")
    for key in ("val_per_class", "test_per_class"):
        if getattr(d, key) is not None and getattr(d, key) < 0:
            raise ConfigError(f"data.{key}={getattr(d, key)} must be >= 0, or null for the data set's default.")
    o = cfg.optim
    if not 0 <= o.momentum < 1:
        raise ConfigError(f"optim.momentum={o.momentum} must be in [0, 1); the paper uses 0.9.")
    if o.weight_decay < 0:
        raise ConfigError(f"optim.weight_decay={o.weight_decay} must be >= 0; the paper uses 2e-4.")
    if o.decay <= 0:
        raise ConfigError(f"optim.decay={o.decay} must be > 0 (the lr factor at each milestone, e.g. 0.1).")
    if o.warmup_epochs < 0 or any(m < 0 for m in o.milestones):
        raise ConfigError(f"optim.warmup_epochs={o.warmup_epochs} and optim.milestones={o.milestones} must be "
                          ">= 0 (epochs).")
    if t.threads < 0:
        raise ConfigError(f"train.threads={t.threads} must be >= 0 (0 = torch's default).")
    if cfg.m2m.noise_radius < 0:
        raise ConfigError(f"m2m.noise_radius={cfg.m2m.noise_radius} must be >= 0.")
    if cfg.data.ratio < 1:
        raise ConfigError(f"data.ratio={cfg.data.ratio} must be >= 1 (N_max / N_min); "
                          "use 1 for a balanced set, 100 for the paper's CIFAR-LT.")
    if t.epochs < 1:
        raise ConfigError(f"train.epochs={t.epochs} must be >= 1.")
    if t.batch_size < 1 or t.eval_batch_size < 1:
        raise ConfigError(f"train.batch_size={t.batch_size} and train.eval_batch_size="
                          f"{t.eval_batch_size} must be >= 1.")
    deferred = REBALANCERS.get(cfg.rebalance.name).deferred
    if deferred and not 0 <= t.deferred_epoch < t.epochs:
        raise ConfigError(f"train.deferred_epoch={t.deferred_epoch} must be in [0, train.epochs="
                          f"{t.epochs}) for rebalance.name={cfg.rebalance.name}, or it never switches on; "
                          f"lower it (the paper uses 160 of 200).")
    if cfg.optim.lr <= 0:
        raise ConfigError(f"optim.lr={cfg.optim.lr} must be > 0.")
    if not 0 <= cfg.m2m.beta < 1:
        raise ConfigError(f"m2m.beta={cfg.m2m.beta} must be in [0, 1).")
    if not 0 <= cfg.m2m.gamma <= 1:
        raise ConfigError(f"m2m.gamma={cfg.m2m.gamma} must be in [0, 1].")
    if cfg.m2m.pad_multiple < 0:
        raise ConfigError(f"m2m.pad_multiple={cfg.m2m.pad_multiple} must be >= 0 (0 = automatic: 32 on a GPU with "
                          "cudnn.benchmark on, else no padding).")
    if cfg.m2m.steps < 0 or cfg.m2m.step_size < 0:
        raise ConfigError(f"m2m.steps={cfg.m2m.steps} and m2m.step_size={cfg.m2m.step_size} must be >= 0.")
    if cfg.m2m.self_generator and cfg.m2m.generator:
        raise ConfigError("m2m.self_generator=true (M2m-Self: f plays g) conflicts with m2m.generator="
                          f"{cfg.m2m.generator}; set one of them.")
    if cfg.rebalance.name == "m2m" and not cfg.m2m.self_generator:
        for g in cfg.m2m.generator:
            if not Path(g).expanduser().exists():
                raise ConfigError(f"m2m.generator={g} does not exist; give a finished run directory (its best.pt "
                                  "is g), a checkpoint file, or an official M2m checkpoint; or leave "
                                  "m2m.generator empty to train and cache an ERM g first.")
    if cfg.loss.name == "ldam" and cfg.model.head == "linear":
        raise ConfigError("loss.name=ldam needs the cosine (normed) head, but model.head=linear; "
                          "use model.head=auto or model.head=normed.")


def _check_finite(node: Any, prefix: str = "") -> None:
    """No NaN or infinite number anywhere in the configuration."""
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if dataclasses.is_dataclass(value):
            _check_finite(value, f"{prefix}{f.name}.")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{prefix}{f.name}={value} must be a finite number.")
