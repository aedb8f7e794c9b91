"""From a configuration to a finished run: the steps before the engine, then the engine.

    train(cfg)  =  1. the frozen classifier g the method needs (M2m), when none is given:
                      an ERM run of the same recipe, trained once and cached under
                      ``RUN_ROOT/.generators/<recipe>-<settings hash>/seed<N>``, reused afterwards;
                   2. the engine trains f (:func:`major2minor.engine.fit`), loading g at set-up.

g is its own run directory, trained by the same engine before f starts: the engine never starts a
nested run, and methods never import the engine.  ``m2m train``, ``m2m reproduce`` and ``m2m demo``
all come through :func:`train`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict, List, Optional

from major2minor import engine
from major2minor.config import Config, settings_digest
from major2minor.display import Log, duration, percent
from major2minor.methods.base import g_need
from major2minor.methods.presets import PLAIN_METHOD
from major2minor.rundir import RunDir

GENERATOR_SEED_OFFSET = 1000


def generator_config(cfg: Config) -> Config:
    """The ERM configuration that produces g for ``cfg``: the same data, model and optimiser recipe,
    plain cross-entropy, no re-balancing, default method settings, seed ``train.seed + 1000``.

    g has its own seed so that it is not f's twin: with f's seed, g would be the very network f is up to T0
    (same initialisation, same batches), and the translation would attack f's own early state rather than an
    independently trained classifier, as the paper's pre-trained g is.  This is also why a grid's ERM row (f's
    seed) is not reused as g; the grid trains one g per seed and shares it across the seed's M2m cells.

    Its run directory is ``RUN_ROOT/.generators/<recipe>-<hash>/seed<N>``; the hash covers every
    setting that decides g's result (:func:`major2minor.config.result_settings`) except its seed
    (in the directory name), T0 and ``train.select`` (an ERM run reads neither).
    """
    g_cfg = copy.deepcopy(cfg)
    g_cfg.method = PLAIN_METHOD
    g_cfg.loss = type(cfg.loss)()  # ce, defaults: loss knobs of f do not shape g
    g_cfg.rebalance = type(cfg.rebalance)()  # none
    g_cfg.sections = {name: type(section)() for name, section in cfg.sections.items()}
    g_cfg.model.head = "linear"
    g_cfg.train.seed = cfg.train.seed + GENERATOR_SEED_OFFSET
    # g must see f's training split (design section 2): seeded hold-outs (reuters) and
    # data.selection=random draw from the data seed, which stays f's
    g_cfg.data.seed = cfg.train.seed if cfg.data.seed is None else cfg.data.seed
    # the seed is in the directory name; an ERM run reads neither T0 nor select
    digest = settings_digest(g_cfg.to_dict(), without=("train.seed", "train.deferred_epoch", "train.select"))
    g_cfg.run.dir = str(generator_root(cfg) / f"{Path(cfg.recipe).stem}-{digest}" / f"seed{g_cfg.train.seed}")
    return g_cfg


def generator_root(cfg: Config) -> Path:
    """Where cached generators live: ``RUN_ROOT/.generators``, shared by every run under the root.  A run
    given only its own ``run.dir`` (``run.root`` left at its default) keeps them next to that directory
    (``RUN_DIR/../.generators``) rather than in a ``./runs`` it never asked for."""
    root = Path(cfg.run.root)
    if cfg.run.dir and cfg.run.root == type(cfg.run)().root:
        run_dir = Path(cfg.run.dir)
        try:
            run_dir.resolve().relative_to(root.resolve())
        except ValueError:
            root = run_dir.parent
    return root / ".generators"


def ensure_generator(cfg: Config, log: Log) -> Path:
    """The run directory of ``cfg``'s cached ERM g, trained first if it is not there (or unfinished)."""
    g_cfg = generator_config(cfg)
    run = RunDir.of(g_cfg)
    run_dir = run.path
    # grids sharing a run root: one process trains a given g, the others wait and then reuse it
    with run.lock(wait=True, log=log):
        if run.finished:
            log(f"M2m: using cached ERM generator g from {run_dir}")
        else:
            log(
                f"M2m: no m2m.generator given; training the ERM generator g first (seed {g_cfg.train.seed}) "
                f"into {run_dir}"
            )
            g = engine.fit(g_cfg, resume=True, log=None, progress_label="g (ERM)")
            log(
                f"M2m: g trained in {duration(g['wall_seconds'])} (validation bACC {percent(g['val_at_best']['bacc'])})"
            )
    return run_dir


def generators_for(cfg: Config, log: Log) -> List[str]:
    """g's to hand to the engine: the cached ERM g when the method needs one and none is given."""
    if g_need(cfg) != "cached":  # no g needed, or the method's own settings name it
        return []
    if RunDir.of(cfg).finished:  # finished: the engine reuses (or refuses) it without g
        return []
    return [str(ensure_generator(cfg, log))]


def train(
    cfg: Config,
    resume: bool = False,
    log: Optional[Log] = print,
    generators: Optional[List[str]] = None,
) -> Dict[str, Any]:
    """Train one run as configured, with every step it needs first; returns (and writes) its summary.

    Args:
        cfg: a resolved configuration (:func:`major2minor.config.load_config`); it runs in ``run.dir``
            (default ``ROOT/RECIPE/METHOD/seedN``).
        resume: continue the run in its directory (or reuse it if finished with the same settings).
        log: where progress lines go (``None``: nowhere).
        generators: the g's to use when the method needs one and its settings name none (``m2m reproduce``
            gives another seed's ERM cell); default: the cached ERM g, trained first if needed.
    """
    log = log or (lambda s: None)
    if generators is None:
        generators = generators_for(cfg, log)
    return engine.fit(cfg, resume, log, generators=generators)
