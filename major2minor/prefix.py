"""Shared prefixes: runs of a grid that are identical before T0 train those epochs once.

Before T0 a deferred method (DRS, DRW, M2m and its ablations) trains exactly as plain training with
the same loss: a plain shuffle from the sampling stream of ``train.seed``, no class weights, no
translation, the same model initialisation, augmentation stream and learning-rate schedule (M2m draws
nothing from its own stream before T0).  So ERM, DRS, DRW, M2m, M2m-Self, ... with the CE loss share one
*prefix*; LDAM, LDAM-DRW and LDAM-M2m share an LDAM prefix; and so on, per seed.

``m2m reproduce`` trains each prefix once, as an ordinary run of ``T0`` epochs in
``ROOT/RECIPE/.prefix/<loss>-<settings hash>/seedN`` (the plain-training configuration of the cells,
:func:`prefix_config`), and *branches* every cell of the group from it (:func:`branch`): the cell's
run directory receives the prefix's ``last.pt`` and ``best.pt`` (the state at the end of epoch T0, every
random state included), its log rows and manifest, relabelled with the cell's own configuration; the
cell then resumes at epoch T0 + 1 exactly as an interrupted run would.  On a CPU a branch is
bit-identical to the same cell trained from scratch (summary, every log row, ``best.pt``; tested on
digits-lt).  Methods active from the first epoch (ROS, RW, CB-RW, SMOTE) have no shared prefix.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Dict, Optional

from major2minor import engine
from major2minor.config import Config, resolve_method, settings_digest
from major2minor.display import Log
from major2minor.registry import REBALANCERS
from major2minor.rundir import RunDir, TrainingCheckpoint


def prefix_config(cfg: Config) -> Optional[Config]:
    """The plain-training configuration whose ``T0`` epochs equal the first ``T0`` epochs of ``cfg``; None
    when ``cfg`` has no shareable prefix (its method acts from epoch 1, or T0 is 0 or past the end)."""
    method = REBALANCERS.get(cfg.rebalance.name)
    if cfg.rebalance.name != "none" and not method.deferred:
        return None
    t0 = cfg.train.deferred_epoch
    if not 0 < t0 < cfg.train.epochs:
        return None
    prefix = copy.deepcopy(cfg)
    prefix.rebalance = type(cfg.rebalance)()  # none: nothing is re-balanced before T0
    prefix.sections = {name: type(section)() for name, section in cfg.sections.items()}
    prefix.method = resolve_method(prefix)  # erm, ldam, focal, balanced-softmax
    prefix.train.epochs = t0
    # the seed is in the directory name; the cells choose their reported epoch (select) themselves
    digest = settings_digest(prefix.to_dict(), without=("train.seed", "train.select"))
    prefix.run.dir = str(
        Path(cfg.run.root) / Path(cfg.recipe).stem / ".prefix" / f"{prefix.method}-{digest}" / f"seed{cfg.train.seed}"
    )
    return prefix


def ensure_prefix(prefix: Config, log: Log) -> Path:
    """The prefix's run directory, trained first if it is not finished (one process trains it; others wait)."""
    run = RunDir.of(prefix)
    with run.lock(wait=True, log=log):
        if not run.finished:
            engine.fit(prefix, resume=True, log=None, progress_label=f"prefix ({prefix.method})")
    return run.path


def _relabelled(ckpt: TrainingCheckpoint, cfg: Config) -> TrainingCheckpoint:
    """A prefix checkpoint as the cell would have written it: the cell's configuration, its method's state as
    at the start (no method draws anything before T0), and not finished (the prefix's seal does not apply)."""
    per_rank = [{**rank_state, "rebalancer": {}} for rank_state in ckpt.per_rank]
    return dataclasses.replace(ckpt, config=cfg.to_dict(), rebalancer={}, per_rank=per_rank, finished=None)


def branch(prefix_dir: Path, cfg: Config, cell_dir: Path) -> None:
    """Start ``cell_dir`` as the prefix's run stopped at the end of epoch T0, relabelled with ``cfg``; the
    caller then resumes it (``pipeline.train(cfg, resume=True)``).  A cell that has started already
    (``last.pt``) is left as it is."""
    source, cell = RunDir(prefix_dir), RunDir(cell_dir)
    with cell.lock():
        if cell.started or cell.finished:
            return
        # a link planted in either directory is never followed: one in the prefix would copy a file from
        # outside into the cell; in the cell, the atomic writes replace a link instead of writing through it
        cell.copy_files_from(source, (RunDir.MANIFEST, RunDir.LOG), check=(RunDir.BEST, RunDir.LAST))
        cell.write_config(cfg)
        cell.save_checkpoint(_relabelled(source.read_checkpoint(RunDir.BEST), cfg), RunDir.BEST)
        cell.save_checkpoint(_relabelled(source.read_checkpoint(RunDir.LAST), cfg), RunDir.LAST)  # last: the marker


def epochs_with_and_without_sharing(cfgs) -> Dict[str, int]:
    """Training epochs a grid costs trained cell by cell, and with shared prefixes (each trained once)."""
    without = sum(c.train.epochs for c in cfgs)
    prefixes, branched = {}, 0
    for c in cfgs:
        p = prefix_config(c)
        if p is None:
            continue
        prefixes[p.run.dir] = p.train.epochs
        branched += p.train.epochs
    return {"without": without, "with": without - branched + sum(prefixes.values()), "prefixes": len(prefixes)}
