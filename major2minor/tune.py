"""``m2m tune``: search M2m's knobs (or any config keys) on the VALIDATION split, with Optuna.

(This is the library, :func:`build_spec` and :func:`tune`; the command line is :mod:`major2minor.cli.tune`.)

    m2m tune RECIPE [key=value ...] [key=LOW:HIGH | key=A,B,C ...] [--trials 20] [--seeds 3]
             [--root DIR] [--method m2m] [--study NAME] [--timeout S] [--sampler-seed 0] [--no-prune]

Each trial draws one value per searched key (Optuna's TPE sampler, seeded) and trains the method on
the tuning seeds (100, 101, ... by default: never the evaluation seeds 0-2 of ``m2m reproduce``),
one after the other, through :func:`major2minor.pipeline.train`.  Its score is the mean over those
seeds of the best validation bACC (``summary.json``'s ``val_at_best``); **test metrics are never
read** (:func:`validation_view` is the only reader of a summary).  After each seed the mean so far is
reported to a median pruner, which stops a trial that is worse than the median of the earlier
trials at the same seed (from the 6th trial on; never after the last seed).

The search space: any key given as ``key=LOW:HIGH`` (a float range, on a log scale when both ends
are > 0 and HIGH/LOW >= 10; whole numbers for integer keys) or ``key=A,B,C`` (a choice), plus the
method's own declared space (:attr:`~major2minor.methods.base.Rebalancer.search_space`, e.g. M2m's
β, λ, γ, η; minus keys given a fixed value).  Plain ``key=value`` items are fixed for every trial.
Every key and value (both ends of a range, every choice) is checked against the configuration before anything trains.

Everything lives in ``ROOT/tune/<study>/`` (``<study>`` = ``RECIPE-METHOD`` unless ``--study``):
``study.db`` (Optuna's SQLite storage: the same command continues an interrupted study up to
``--trials`` finished trials, a larger ``--trials`` extends it), ``trialN/seedS`` (ordinary run
directories: a finished run is reused, an interrupted one resumed), ``trials.csv`` and
``best.json``; the printed ``m2m train`` / ``m2m reproduce`` commands write into ``best-trialN`` /
``eval-trialN`` there.  M2m's ERM generator g is cached in ``ROOT/.generators`` as usual: it depends on the
recipe and the seed, not on M2m's knobs, so all trials share it.  One process tunes a study at a time.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import shlex
import statistics
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from major2minor import pipeline
from major2minor.atomic import atomic_write_json, atomic_write_text
from major2minor.config import (
    Config,
    children,
    differing_settings,
    flatten,
    is_result_neutral,
    load_config,
)
from major2minor.display import Log, duration, percent
from major2minor.errors import MissingDependencyError
from major2minor.methods.base import Knob
from major2minor.registry import REBALANCERS
from major2minor.rundir import RunDirBusy, RunLock, refuse_link

#: The first tuning seed: far from the evaluation seeds (0, 1, 2, ...) of ``m2m reproduce``.
FIRST_TUNING_SEED = 100

#: Keys the tuner sets itself (per trial and seed), never given on the command line.
OWN_KEYS = ("method", "recipe", "train.seed", "run.dir", "run.root")

#: The pruner compares trials only once this many have finished.
PRUNER_STARTUP_TRIALS = 5

#: Searched floats are rounded to this many significant digits (clamped into their range), so the
#: printed commands stay short; the rounded value is the one trained, recorded and reported.
SIGNIFICANT_DIGITS = 3

#: Mean scores equal to this many decimals are a tie (the earliest trial wins).
TIE_DIGITS = 9

INSTALL_HINT = "m2m tune needs optuna: pip install 'optuna>=3.4'"


class TuneError(ValueError):
    """A tuning request that cannot run (bad range, bad seeds, a study made with other settings)."""


# ----------------------------------------------------------------------------------------------
# the search space


@dataclass(frozen=True)
class Param(Knob):
    """One searched key: a float or int range (``low``..``high``, ``log`` scale) or a choice; a method's
    declared :class:`~major2minor.methods.base.Knob` that can suggest, check and describe its values."""

    @classmethod
    def from_knob(cls, knob: Knob) -> Param:
        """A method's declared :class:`~major2minor.methods.base.Knob`."""
        return cls(knob.key, knob.kind, knob.low, knob.high, knob.log, tuple(knob.choices))

    def suggest(self, trial: Any) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)
        value = trial.suggest_float(self.key, self.low, self.high, log=self.log)
        return min(max(float(f"{value:.{SIGNIFICANT_DIGITS}g}"), self.low), self.high)

    def contains(self, value: Any) -> bool:
        return value in self.choices if self.kind == "choice" else self.low <= value <= self.high

    def describe(self) -> str:
        if self.kind == "choice":
            return f"{self.key} in {{{', '.join(_text(c) for c in self.choices)}}}"
        scale = " (log)" if self.log else ""
        return (
            f"{self.key} in [{_text(self.low)}, {_text(self.high)}]{scale}{' integers' if self.kind == 'int' else ''}"
        )

    def as_dict(self) -> Dict[str, Any]:
        if self.kind == "choice":
            return {"kind": "choice", "choices": list(self.choices)}
        return {"kind": self.kind, "low": self.low, "high": self.high, "log": self.log}


def _text(value: Any) -> str:
    """A value as a command line takes it (``0.99``, ``true``, ``5``)."""
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, float) else str(value)


def _get(cfg: Config, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def _base_type(key: str) -> Any:
    """The type of a dotted key's value (``Optional`` unwrapped; ``list`` for lists); None if unknown."""
    node: Any = Config()
    parts = key.split(".")
    for part in parts[:-1]:
        node = dict(children(node)).get(part) if dataclasses.is_dataclass(node) else None
    if not dataclasses.is_dataclass(node):
        return None
    annotation = typing.get_type_hints(type(node)).get(parts[-1])
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is Union and args:
        annotation = args[0]
    return list if typing.get_origin(annotation) in (list, List, Sequence) else annotation


def _numbers(item: str, raw: str) -> Tuple[float, float]:
    ends = raw.split(":")
    try:
        low, high = (float(e) for e in ends)
    except ValueError:
        raise TuneError(f"range '{item}' must be LOW:HIGH with two numbers, e.g. optim.lr=0.01:0.2.") from None
    key = item.split("=", 1)[0]
    if low == high:  # nothing to search: the fix is a fixed value, not the same range reversed
        step = abs(low) / 2 or 1
        wider = f"{max(low - step, 0) if low >= 0 else low - step:g}:{high + step:g}"
        raise TuneError(
            f"range '{item}' is empty (LOW = HIGH = {low:g}); to fix {key} at {low:g}, give {key}={low:g}, or search "
            f"a range with LOW below HIGH (e.g. {key}={wider})."
        )
    if not low < high:
        raise TuneError(f"range '{item}': LOW must be below HIGH (e.g. {key}={high:g}:{low:g}).")
    return low, high


def classify(item: str) -> Tuple[str, str, str]:
    """``(kind, key, raw)``: kind ``range`` (``key=LOW:HIGH``, numeric keys), ``choice`` (``key=A,B``,
    keys that are not lists, nor paths) or ``fixed``.  An unknown key counts as fixed: the config names it."""
    if "=" not in item:
        raise TuneError(f"unexpected argument '{item}': give one recipe, then key=value items.")
    key, raw = (s.strip() for s in item.split("=", 1))
    kind = _base_type(key)
    if kind in (int, float) and ":" in raw:
        return "range", key, raw
    if kind is str and is_result_neutral(key):  # paths and names (data.root=/a,b): never searched
        return "fixed", key, raw
    if kind not in (None, list) and "," in raw and not raw.startswith(("[", "{", "'", '"')):
        return "choice", key, raw
    return "fixed", key, raw


def _probe(recipe: str, base: Sequence[str], key: str, value: Any) -> Any:
    """Load the config with ``key=value``: the config's own error if either is wrong; the typed value."""
    return _get(load_config(recipe, [*base, f"{key}={value}"]), key)


def parse_param(recipe: str, base: Sequence[str], item: str) -> Param:
    """A searched key, each end or choice checked against the config (with ``base`` overrides)."""
    kind, key, raw = classify(item)
    if is_result_neutral(key):
        raise TuneError(f"'{item}': {key} does not change a run's result; give it one value ({key}=VALUE).")
    if kind == "choice":
        texts = [v.strip() for v in raw.split(",") if v.strip()]
        if len(texts) < 2 or len(set(texts)) != len(texts):
            raise TuneError(f"choice '{item}' needs two or more different values, e.g. m2m.beta=0.9,0.99.")
        return Param(key, "choice", choices=tuple(_probe(recipe, base, key, t) for t in texts))
    low, high = _numbers(item, raw)
    is_int = _base_type(key) is int
    if is_int and (low != int(low) or high != int(high)):
        raise TuneError(f"range '{item}': {key} is an integer; give whole numbers, e.g. {key}={int(low)}:{int(high)}.")
    low, high = (_probe(recipe, base, key, int(v) if is_int else v) for v in (low, high))
    log = low > 0 and high / low >= 10
    return Param(key, "int" if is_int else "float", low, high, log=log)


# ----------------------------------------------------------------------------------------------
# what a study is


@dataclass
class TuneSpec:
    """A study's definition: what is trained, what is searched, on which seeds, and where."""

    recipe: str
    method: str
    fixed: List[str]
    space: List[Param]
    seeds: List[int]
    root: Path
    name: str
    prune: bool = True
    base: Dict[str, Any] = field(default_factory=dict)  # the resolved config of every trial but the knobs

    @property
    def dir(self) -> Path:
        return self.root / "tune" / self.name

    @property
    def keys(self) -> List[str]:
        return [p.key for p in self.space]

    def overrides(self, knobs: Dict[str, Any]) -> List[str]:
        return [*self.fixed, f"method={self.method}", *(f"{k}={_text(v)}" for k, v in knobs.items())]

    def run_config(self, knobs: Dict[str, Any], seed: int, run_dir: Path) -> Config:
        extra = [f"train.seed={seed}", f"run.root={self.root}", f"run.dir={run_dir}", "train.progress=none"]
        return load_config(self.recipe, [*self.overrides(knobs), *extra])

    def definition(self) -> Dict[str, Any]:
        return {"seeds": self.seeds, "space": {p.key: p.as_dict() for p in self.space}, "config": self.base}


def parse_seeds(text: Union[str, int]) -> List[int]:
    """``3`` -> 100, 101, 102; or a list (``100,107``) of seeds >= 100."""
    text = str(text).strip()
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()] if "," in text else None
        count = None if seeds is not None else int(text)
    except ValueError:
        raise TuneError(f"--seeds {text}: give a count (3 = seeds 100, 101, 102) or a list such as 100,101.") from None
    if seeds is None:
        if count < 1:
            raise TuneError(f"--seeds {text} must be >= 1 (the number of tuning seeds; 3 is usual).")
        seeds = list(range(FIRST_TUNING_SEED, FIRST_TUNING_SEED + count))
    if len(set(seeds)) != len(seeds) or not seeds:
        raise TuneError(f"--seeds {text} repeats a seed or holds none; give each seed once.")
    low = [s for s in seeds if s < FIRST_TUNING_SEED]
    if low:
        raise TuneError(
            f"--seeds {text}: tuning seeds must be >= {FIRST_TUNING_SEED} (got {low[0]}), so that they never "
            "coincide with the evaluation seeds 0, 1, 2, ... of m2m reproduce."
        )
    return seeds


def build_spec(
    recipe: str,
    items: Sequence[str],
    method: str = "m2m",
    seeds: Union[str, int] = 3,
    root: Optional[Union[str, Path]] = None,
    name: Optional[str] = None,
    prune: bool = True,
) -> TuneSpec:
    """Parse and check a study's definition before anything trains (typos fail here, at once)."""
    parsed = [classify(item) for item in items]
    keys = [key for _, key, _ in parsed]
    for key in keys:
        if key in OWN_KEYS:
            raise TuneError(f"'{key}=' is set by m2m tune itself; use RECIPE, --method, --seeds and --root instead.")
    if len(set(keys)) != len(keys):
        raise TuneError(f"a key is given twice ({', '.join(sorted({k for k in keys if keys.count(k) > 1}))}).")
    fixed = [item for item, (kind, _, _) in zip(items, parsed) if kind == "fixed"]
    base_cfg = load_config(recipe, [*fixed, f"method={method}"])  # unknown keys and bad values fail here
    base = [*fixed, f"method={method}"]
    given = [parse_param(recipe, base, item) for item, (kind, _, _) in zip(items, parsed) if kind != "fixed"]
    own = REBALANCERS.get(base_cfg.rebalance.name).search_space  # the method declares what to search
    defaults = [Param.from_knob(k) for k in own if k.key not in keys]
    space = defaults + given
    if not space:
        raise TuneError(
            f"nothing to search: method {method} has no default search space; give a key as a range "
            "(optim.lr=0.01:0.2) or as choices (optim.weight_decay=1e-4,5e-4)."
        )
    root = Path(root) if root is not None else Path(base_cfg.run.root)
    name = name or f"{Path(recipe).stem}-{method}"
    return TuneSpec(recipe, method, fixed, space, parse_seeds(seeds), root, name, prune, base_cfg.to_dict())


# ----------------------------------------------------------------------------------------------
# one trial


def validation_view(summary: Dict[str, Any]) -> Dict[str, Any]:
    """The only part of a run's summary the tuner reads: validation scores and M2m's acceptance."""
    return {
        "val_bacc": summary["val_at_best"]["bacc"],
        "best_epoch": summary["best_epoch"],
        "acceptance": REBALANCERS.get(summary.get("rebalance", "none")).acceptance(summary),
    }


def _run_log(line: str) -> None:
    """The runs' own lines are not shown (their last line names test numbers); g's training is."""
    if line.startswith("M2m: no m2m.generator given"):
        print(f"  {line}", flush=True)


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def _std(values: Sequence[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def run_trial(spec: TuneSpec, trial: Any) -> float:
    """Train the trial's knobs on the tuning seeds in turn; the mean validation bACC (pruned early if bad)."""
    import optuna

    t0 = time.time()
    knobs = {p.key: p.suggest(trial) for p in spec.space}
    trial_dir = trial.user_attrs.get("dir") or f"trial{trial.number}"
    trial.set_user_attr("dir", trial_dir)
    trial.set_user_attr("knobs", knobs)
    vals: List[float] = []
    accs: List[Optional[float]] = []
    try:
        for i, seed in enumerate(spec.seeds):
            run_dir = spec.dir / trial_dir / f"seed{seed}"
            summary = pipeline.train(spec.run_config(knobs, seed, run_dir), resume=True, log=_run_log)
            seen = validation_view(summary)
            vals.append(seen["val_bacc"])
            accs.append(seen["acceptance"])
            for name, value in (("val_bacc", vals), ("acceptance", accs), ("seconds", time.time() - t0)):
                trial.set_user_attr(name, value)
            trial.report(_mean(vals), step=i)
            if spec.prune and i < len(spec.seeds) - 1 and trial.should_prune():
                raise optuna.TrialPruned(f"pruned after {i + 1} of {len(spec.seeds)} seeds")
    except KeyboardInterrupt:
        trial.set_user_attr("interrupted", True)  # the next call retries these knobs in the same directory
        raise
    except ArithmeticError as exc:  # a diverging run (NonFiniteLossError): this trial fails, the study goes on
        trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
        raise
    return _mean(vals)


# ----------------------------------------------------------------------------------------------
# the study


def _optuna():
    try:
        import optuna
    except ImportError:  # pragma: no cover - optuna is a dependency; a broken environment says so
        raise MissingDependencyError(INSTALL_HINT) from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna


def open_study(spec: TuneSpec, sampler_seed: int = 0) -> Tuple[Any, Any]:
    """Create or load ``ROOT/tune/<study>/study.db`` (the study and its storage); refuse one defined with
    other settings."""
    optuna = _optuna()
    spec.dir.mkdir(parents=True, exist_ok=True)
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS)
        if spec.prune
        else optuna.pruners.NopPruner()
    )
    storage, study = _load_storage(spec, pruner)
    # seeded with --sampler-seed plus the trials already held: a continued study draws new knobs, reproducibly
    study.sampler = optuna.samplers.TPESampler(seed=sampler_seed + len(study.get_trials(deepcopy=False)))
    saved = study.user_attrs.get("definition")
    if saved is None:
        study.set_user_attr("definition", spec.definition())
    else:
        _check_same_definition(spec, saved)
    return study, storage


def _load_storage(spec: TuneSpec, pruner: Any) -> Tuple[Any, Any]:
    """Optuna's SQLite storage ``study.db`` and the study in it; a file that is not a study database (damaged,
    cut short, another file) is refused naming it, instead of SQLAlchemy's traceback."""
    import sqlite3

    import sqlalchemy.exc

    optuna = _optuna()
    db = spec.dir / "study.db"
    refuse_link(db, "the study's database")  # SQLite would write into the file the link points to
    try:
        storage = optuna.storages.RDBStorage(f"sqlite:///{db.absolute()}")
        study = optuna.create_study(
            study_name=spec.name, storage=storage, pruner=pruner, direction="maximize", load_if_exists=True
        )
        return storage, study
    except (sqlalchemy.exc.DatabaseError, sqlite3.DatabaseError) as exc:
        why = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise TuneError(
            f"study database {db} cannot be read ({why}): it is damaged or not an Optuna study. Move it aside "
            "(the study then starts afresh there), or start another study with --study NAME or --root DIR."
        ) from None


def _check_same_definition(spec: TuneSpec, saved: Dict[str, Any]) -> None:
    now = spec.definition()
    # a setting only one side knows (added or dropped by a package update) keeps its old behaviour by default
    one_sided = set(flatten(saved["config"])) ^ set(flatten(now["config"]))
    diffs = differing_settings(saved["config"], now["config"], ignore=sorted(one_sided))
    if saved["seeds"] != now["seeds"]:
        diffs.append(f"seeds {saved['seeds']} there, {now['seeds']} now")
    if saved["space"] != now["space"]:
        diffs.append(f"search space {_space_text(saved['space'])} there, {_space_text(now['space'])} now")
    if diffs:
        raise TuneError(
            f"study {spec.dir} was started with other settings ({'; '.join(diffs)}). Repeat its arguments to "
            "continue it, or start another study with --study NAME or --root DIR."
        )


def _space_text(space: Dict[str, Any]) -> str:
    return "{" + ", ".join(sorted(space)) + "}"


def requeue_interrupted(study: Any, storage: Any) -> int:
    """Trials a previous call left unfinished (interrupted, or its process killed) are queued again with
    the same knobs and directory, so their finished runs are reused; returns how many."""
    optuna = _optuna()
    trials = study.get_trials(deepcopy=False)
    study_id = storage.get_study_id_from_name(study.study_name)
    count = 0
    for t in trials:
        if t.state == optuna.trial.TrialState.RUNNING:  # we hold the study's lock: its process is gone
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
            storage.set_trial_user_attr(trial_id, "interrupted", True)
            storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
        stale = t.state == optuna.trial.TrialState.RUNNING or t.user_attrs.get("interrupted")
        trial_dir = t.user_attrs.get("dir")
        retried = any(u.number > t.number and u.user_attrs.get("dir") == trial_dir for u in trials)
        if stale and trial_dir and not retried:
            study.enqueue_trial(t.params, user_attrs={"dir": trial_dir})
            count += 1
    return count


def finished(study: Any) -> List[Any]:
    """Complete and pruned trials (the ones ``--trials`` counts)."""
    optuna = _optuna()
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return [t for t in study.get_trials(deepcopy=False) if t.state in done]


def best_trial(study: Any) -> Optional[Any]:
    """The complete trial with the highest mean validation bACC, the earliest among equals (equal to
    :data:`TIE_DIGITS` decimals: means of the same scores in another order differ in the last bit)."""
    optuna = _optuna()
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    return max(complete, key=lambda t: (round(t.value, TIE_DIGITS), -t.number)) if complete else None


# ----------------------------------------------------------------------------------------------
# what is shown and written


def state_name(t: Any) -> str:
    """complete | pruned | interrupted (queued again) | fail | running | waiting."""
    name = t.state.name.lower()
    return "interrupted" if name == "fail" and t.user_attrs.get("interrupted") else name


def knobs_text(knobs: Dict[str, Any]) -> str:
    return " ".join(f"{k}={_text(v)}" for k, v in knobs.items())


def trial_line(spec: TuneSpec, study: Any, t: Any, total: int) -> str:
    """One line per finished trial: its knobs, score, acceptance, state, and the best so far."""
    vals, accs = t.user_attrs.get("val_bacc", []), t.user_attrs.get("acceptance", [])
    state = t.state.name.lower()
    if state == "complete":
        result = f"val bACC {percent(_mean(vals))} ({len(vals)} seeds)"
    elif state == "pruned":
        result = f"pruned after {len(vals)} of {len(spec.seeds)} seeds (val bACC {percent(_mean(vals))} so far)"
    else:
        result = f"failed ({t.user_attrs.get('error') or 'interrupted'})"
    best = best_trial(study)
    best_text = f"best {percent(best.value)} (trial {best.number})" if best is not None else "no best yet"
    seconds = t.user_attrs.get("seconds", 0.0)
    return (
        f"[{len(finished(study))}/{total}] trial {t.number}: {knobs_text(t.user_attrs.get('knobs', {}))} -> "
        f"{result}, acceptance {percent(_mean(accs))}; {best_text} [{duration(seconds)}]"
    )


def commands(spec: TuneSpec, knobs: Dict[str, Any], trial: int) -> Dict[str, str]:
    """The ``m2m train`` (seed 0) and ``m2m reproduce`` (seeds 0-2, DRS as the baseline) commands, into
    ``ROOT/tune/<study>/best-trialN`` and ``eval-trialN`` (a later, better trial gets its own folders)."""
    items = " ".join(shlex.quote(o) for o in spec.overrides(knobs))
    recipe = shlex.quote(spec.recipe)
    baseline = "erm,drs" if spec.method == "drs" else f"drs,{spec.method}"
    train_dir = shlex.quote(f"run.dir={spec.dir / f'best-trial{trial}' / 'seed0'}")
    eval_root = shlex.quote(str(spec.dir / f"eval-trial{trial}"))
    kept = " ".join(shlex.quote(o) for o in spec.overrides(knobs) if not o.startswith("method="))
    return {
        "train": f"m2m train {recipe} {items} train.seed=0 {train_dir}",
        "reproduce": f"m2m reproduce --recipe {recipe} --methods {baseline} --seeds 3 --root {eval_root} {kept}",
    }


def best_record(spec: TuneSpec, study: Any) -> Optional[Dict[str, Any]]:
    """best.json's contents (None while no trial has completed)."""
    best = best_trial(study)
    if best is None:
        return None
    vals, knobs = best.user_attrs["val_bacc"], best.user_attrs["knobs"]
    states = [state_name(t) for t in study.get_trials(deepcopy=False)]
    return {
        "study": spec.name,
        "recipe": spec.recipe,
        "method": spec.method,
        "trial": best.number,
        "knobs": knobs,
        "fixed": spec.fixed,
        "val_bacc_mean": _mean(vals),
        "val_bacc_std": _std(vals),
        "val_bacc": vals,
        "seeds": spec.seeds,
        "acceptance": _mean(best.user_attrs.get("acceptance", [])),
        "run_dirs": [str(spec.dir / best.user_attrs["dir"] / f"seed{s}") for s in spec.seeds],
        "space": {p.key: p.as_dict() for p in spec.space},
        "trials": {s: states.count(s) for s in ("complete", "pruned", "interrupted", "fail", "waiting") if s in states},
        "commands": commands(spec, knobs, best.number),
        "note": "scores are validation bACC (fractions) at each run's best-validation epoch; test metrics unread",
    }


def trials_csv(spec: TuneSpec, study: Any) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["trial", "state", "dir", *spec.keys, "val_bacc_mean", "val_bacc_std", "seeds_done", "val_bacc", "acceptance"]
        + ["seconds"]
    )
    for t in study.get_trials(deepcopy=False):
        knobs, vals = t.user_attrs.get("knobs", {}), t.user_attrs.get("val_bacc", [])
        acc = _mean(t.user_attrs.get("acceptance", []))
        writer.writerow(
            [t.number, state_name(t), t.user_attrs.get("dir", ""), *(knobs.get(k, "") for k in spec.keys)]
            + [_mean(vals) if vals else "", _std(vals) if vals else "", len(vals), ";".join(f"{v:.6f}" for v in vals)]
            + ["" if acc is None else acc, round(t.user_attrs.get("seconds", 0.0), 1)]
        )
    return out.getvalue()


def write_results(spec: TuneSpec, study: Any) -> Optional[Dict[str, Any]]:
    atomic_write_text(spec.dir / "trials.csv", trials_csv(spec, study))
    record = best_record(spec, study)
    if record is not None:
        atomic_write_json(spec.dir / "best.json", record)
    return record


def final_lines(spec: TuneSpec, record: Optional[Dict[str, Any]]) -> List[str]:
    if record is None:
        return ["no trial has completed yet: run the same command again to continue the study."]
    seeds = ", ".join(str(s) for s in spec.seeds)
    counts = ", ".join(f"{v} {k}" for k, v in record["trials"].items())
    lines = [
        f"best of {sum(record['trials'].values())} trials ({counts}): trial {record['trial']}",
        f"  knobs: {knobs_text(record['knobs'])}",
        f"  validation bACC {100 * record['val_bacc_mean']:.2f} ± {100 * record['val_bacc_std']:.2f}% "
        f"(mean ± std over tuning seeds {seeds}); M2m acceptance {percent(record['acceptance'])}",
        f"  train it (seed 0):  {record['commands']['train']}",
        f"  evaluate on test (seeds 0-2, DRS as the baseline):  {record['commands']['reproduce']}",
        f"  written: {spec.dir / 'best.json'}, {spec.dir / 'trials.csv'}",
    ]
    if any(not k.startswith("m2m.") for k in record["knobs"]):
        lines.append(
            "  note: the reproduce command gives the baseline the same non-M2m knobs; tune its own for a fair table"
        )
    return lines


# ----------------------------------------------------------------------------------------------
# the whole search


def tune(
    spec: TuneSpec,
    trials: int = 20,
    timeout: Optional[float] = None,
    sampler_seed: int = 0,
    log: Optional[Log] = print,
) -> Optional[Dict[str, Any]]:
    """Run (or continue) the study until it has ``trials`` finished trials; returns best.json's record."""
    log = log or (lambda s: None)
    if trials < 1:
        raise TuneError(f"--trials {trials} must be >= 1 (the number of finished trials the study should reach).")
    if timeout is not None and timeout <= 0:
        raise TuneError(f"--timeout {timeout:g} must be > 0 seconds.")
    t0 = time.time()
    with study_lock(spec):
        study, storage = open_study(spec, sampler_seed)
        requeued = requeue_interrupted(study, storage)
        done = len(finished(study))
        log(_start_line(spec, trials, done, requeued))
        if done < trials:
            study.optimize(
                lambda trial: run_trial(spec, trial),
                n_trials=trials - done,
                timeout=timeout,
                catch=(ArithmeticError,),
                callbacks=[lambda s, t: (write_results(spec, s), log(trial_line(spec, s, t, trials)))],
            )
        record = write_results(spec, study)
    for line in final_lines(spec, record):
        log(line)
    log(f"tuning wall time {duration(time.time() - t0)}")
    return record


@contextlib.contextmanager
def study_lock(spec: TuneSpec) -> Iterator[None]:
    """One tuning process per study (the lock of :class:`major2minor.rundir.RunLock` on its folder)."""
    lock = RunLock(spec.dir)
    try:
        lock.__enter__()
    except RunDirBusy:
        raise TuneError(
            f"study {spec.dir} is being tuned by another process; wait for it, or use --study NAME."
        ) from None
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


def _start_line(spec: TuneSpec, trials: int, done: int, requeued: int) -> str:
    seeds = ", ".join(str(s) for s in spec.seeds)
    state = f"{done} of {trials} trials finished already" if done else f"{trials} trials"
    again = f"; {requeued} interrupted trial(s) queued again" if requeued else ""
    return (
        f"tuning {spec.method} on {spec.recipe} ({state}{again}), validation bACC over seeds {seeds}; "
        f"searching {'; '.join(p.describe() for p in spec.space)}; study {spec.dir}"
    )


__all__ = [
    "Param",
    "TuneSpec",
    "TuneError",
    "build_spec",
    "classify",
    "parse_param",
    "parse_seeds",
    "run_trial",
    "tune",
    "validation_view",
]
