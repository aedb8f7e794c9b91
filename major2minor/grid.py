"""Running a grid of cells, seed by seed, N tasks at a time.

A task is a shared prefix (``major2minor.prefix``), a cached ERM generator g, or a cell (reused when
finished, resumed when interrupted, branched from its prefix when new).  :func:`plan` orders them so that
a partial grid is already a table (seed 0's row first) and gives each task the tasks it needs first; in a
grid with several seeds and an ERM row, M2m's g is another seed's ERM cell (:func:`cross_seed_generators`).
``jobs`` tasks whose needs are met run at once in separate processes: on a CPU each gets ``cores / jobs``
threads; on a GPU they share the device.  The main process shows one progress
display for the whole grid (tasks done / running / left, with an ETA) and a line per finished task;
the workers print nothing.  Every task resumes where it stopped, so an interrupted grid continues when
the same command is run again.
"""

from __future__ import annotations

import copy
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from major2minor import pipeline, prefix
from major2minor.config import differing_settings, result_settings
from major2minor.display import Log, duration
from major2minor.methods.base import g_need
from major2minor.methods.presets import PLAIN_METHOD
from major2minor.models import head_for
from major2minor.rundir import RunDir


class GridError(ValueError):
    """A grid that cannot run as asked (bad methods/seeds, conflicting overrides, stale run directory)."""


@dataclass
class Cell:
    """One (method, seed) run of the grid and what happened to it."""

    method: str
    seed: int
    run_dir: Path
    status: str = "pending"  # pending | skipped | resumed | branched | trained | failed
    seconds: float = 0.0
    error: Optional[str] = None
    summary: Optional[Dict[str, Any]] = None


@dataclass
class Task:
    """A unit of work: a prefix, a generator g, or a cell (``kind``), with its configuration and the
    tasks (by ``key``) that must finish before it starts."""

    kind: str  # prefix | generator | cell
    name: str
    cfg: Any
    cell: Optional[Cell] = None
    extra: Dict[str, Any] = field(default_factory=dict)
    key: str = ""
    deps: List[str] = field(default_factory=list)


def config_mismatch(run_dir: Path, cfg: Any) -> List[str]:
    """Settings where ``run_dir/config.yaml`` differs from ``cfg`` (``[]`` when absent or equal).

    Settings that do not change results (:func:`major2minor.config.result_neutral_keys`) may differ.
    """
    stored = RunDir(run_dir).read_config(f"remove {run_dir} (or use another --root) to make that cell again")
    return differing_settings(stored, cfg.to_dict()) if stored is not None else []


def run_cell(
    cell: Cell, cfg: Any, log: Optional[Log] = print, share: bool = True, g_from: Optional[Tuple[Cell, Any]] = None
) -> Cell:
    """Train, resume, branch or reuse one cell; updates and returns ``cell``.

    A finished cell (``summary.json``) is reused once the engine has checked it is this cell's result
    (settings, data, files, g); an interrupted one (``last.pt``) resumes; a new one branches from its shared
    prefix (``share``) or trains from scratch.  ``g_from``: the grid's ERM cell whose best checkpoint is
    this cell's g (cross-seed g, :func:`cross_seed_generators`), trained first if it is not finished.
    """
    log = log or (lambda s: None)
    diffs = config_mismatch(cell.run_dir, cfg)
    if diffs:
        raise GridError(
            f"run directory {cell.run_dir} was made with a different configuration "
            f"({'; '.join(diffs)}). Use another --root, remove {cell.run_dir}, or repeat the "
            "overrides it was made with."
        )
    t0 = time.time()
    generators = [str(_finished_cell(*g_from, log, share))] if g_from is not None else None
    run = RunDir.of(cfg)
    finished, started = run.finished, run.started
    cell.status = "skipped" if finished else "resumed" if started else "trained"
    shared = prefix.prefix_config(cfg) if share and not started and not finished else None
    if shared is not None:
        prefix.branch(prefix.ensure_prefix(shared, log), cfg, cell.run_dir)
        cell.status = "branched"
    # resume=True also covers a directory left by a crash before the first epoch ended (config.yaml,
    # manifest.json, no last.pt): the engine then starts it afresh instead of refusing a non-empty dir.
    cell.summary = pipeline.train(cfg, resume=True, log=log if not finished else None, generators=generators)
    cell.seconds = time.time() - t0
    return cell


def _finished_cell(cell: Cell, cfg: Any, log: Log, share: bool) -> Path:
    """``cell``'s run directory, trained first when it has not finished (one process trains it; others wait)."""
    run = RunDir.of(cfg)
    with run.lock(wait=True, log=log):
        if not run.finished:
            run_cell(cell, cfg, log, share)
    return cell.run_dir


#: Settings in which the grid's ERM cell of seed p may differ from the g that seed s's M2m cells would
#: otherwise train (:func:`major2minor.pipeline.generator_config`): the seeds, and what ERM never reads.
_G_FREE_KEYS = ("train.seed", "data.seed", "train.deferred_epoch", "train.select")


def cross_seed_generators(grid: List[Tuple[Cell, Any]]) -> Dict[Tuple[str, int], Tuple[Cell, Any]]:
    """For a grid with two or more seeds and an ERM row, the ERM cell that serves as g for each M2m-type
    cell: ``{(method, seed): (erm_cell, erm_cfg)}``; ``{}`` when the grid has no such pairs.

    The rule, in the sorted seed list s_0 < s_1 < ...: s_0 and s_1 use each other's ERM, every later s_k
    uses s_(k-1)'s.  Seeds added later (larger ones) leave the earlier pairs as they were.  f and g stay
    independently trained networks, as in the paper (whose authors used one pre-trained ERM g for all f
    seeds); the grid trains no separate g.  Used only when the ERM cell is exactly the g the cell would
    otherwise train (same recipe, data and model settings) and the data does not depend on the seed.
    """
    erm = {cell.seed: (cell, cfg) for cell, cfg in grid if cell.method == PLAIN_METHOD}
    seeds = sorted({cell.seed for cell, _ in grid})
    if len(seeds) < 2 or set(seeds) - set(erm):
        return {}
    partner = {s: seeds[k - 1] if k else seeds[1] for k, s in enumerate(seeds)}
    chosen = {}
    for cell, cfg in grid:
        if g_need(cfg) != "cached":
            continue  # needs no g, or names its own
        erm_cell, erm_cfg = erm[partner[cell.seed]]
        if not _same_as_generator(cfg, erm_cfg):
            return {}
        chosen[(cell.method, cell.seed)] = (erm_cell, erm_cfg)
    return chosen if chosen and _data_ignores_seed(grid[0][1], seeds[:2]) else {}


def _same_as_generator(cfg: Any, erm_cfg: Any) -> bool:
    """Is ``erm_cfg`` the g :func:`~major2minor.pipeline.generator_config` would train for ``cfg`` (seeds aside)?"""
    sections = tuple(f"{name}." for name in cfg.sections)  # method sections: ERM reads none of them

    def key(c: Any) -> Dict[str, Any]:
        flat = result_settings(c.to_dict())
        flat["model.head"] = head_for(c)  # "auto" is the linear head for ERM's cross-entropy, as g's "linear"
        return {k: v for k, v in flat.items() if k not in _G_FREE_KEYS and not k.startswith(sections)}

    return key(pipeline.generator_config(cfg)) == key(erm_cfg)


def _data_ignores_seed(cfg: Any, seeds: List[int]) -> bool:
    """g must have trained on f's training split: true when the data (labels of every split, first inputs)
    is the same for two seeds, i.e. no seeded hold-out or random selection (CIFAR-LT: yes; Reuters: no)."""
    if cfg.data.seed is not None:
        return True
    from major2minor.data import build_dataset

    a, b = (build_dataset(cfg.data, seed).manifest()["checksum"] for seed in seeds)
    return a == b


def plan(grid: List[Tuple[Cell, Any]], share: bool, g_from: Optional[Dict] = None) -> List[Task]:
    """Every task of the grid in the order that gives a table soonest, each with the tasks it needs first.

    Seed by seed: the seed's prefix, its ERM and other plain cells, then its M2m-type cells; a cell whose g
    is another seed's ERM (cross-seed g) brings that seed's prefix and ERM forward.  For seeds 0, 1, 2 and
    erm, drs, drw, m2m: prefix 0, ERM 0, DRS 0, DRW 0, prefix 1, ERM 1, M2m 0, DRS 1, DRW 1, M2m 1, prefix 2,
    ... A one-seed grid (or one without an ERM row) trains a cached ERM g per seed instead, before its cells.
    """
    g_from = cross_seed_generators(grid) if g_from is None else g_from  # (it reads the data: given once)
    by_seed: Dict[int, List[Tuple[Cell, Any]]] = {}
    for cell, cfg in grid:
        by_seed.setdefault(cell.seed, []).append((cell, cfg))
    tasks: Dict[str, Task] = {}
    for seed in sorted(by_seed):
        needs_g = lambda cfg: g_need(cfg) == "cached"  # noqa: E731
        ordered = sorted(by_seed[seed], key=lambda cc: (needs_g(cc[1]), cc[0].method != PLAIN_METHOD))
        for cell, cfg in ordered:
            _add_cell(tasks, cell, cfg, share, g_from.get((cell.method, cell.seed)), needs_g(cfg))
    return list(tasks.values())


def _add_cell(tasks: Dict[str, Task], cell: Cell, cfg: Any, share: bool, g_from: Optional[tuple], needs_g: bool):
    """Add the cell's task after the tasks it needs (its prefix, its g), unless it is there already."""
    key = f"cell {cell.run_dir}"
    if key in tasks:
        return
    deps = []
    run = RunDir.of(cfg)
    finished = run.finished
    shared = prefix.prefix_config(cfg) if share and not finished else None
    if shared is not None and not (run / RunDir.LAST).exists():
        deps.append(f"prefix {shared.run.dir}")
        tasks.setdefault(deps[-1], Task("prefix", f"prefix {shared.method} seed {cell.seed}", shared, key=deps[-1]))
    if g_from is not None:
        _add_cell(tasks, *g_from, share, None, False)
        deps.append(f"cell {g_from[0].run_dir}")
    elif needs_g and not finished:
        deps.append(f"generator {pipeline.generator_config(cfg).run.dir}")
        tasks.setdefault(deps[-1], Task("generator", f"g (ERM) for seed {cell.seed}", cfg, key=deps[-1]))
    extra = {"share": share, "g_from": g_from}
    tasks[key] = Task("cell", f"{cell.method} seed {cell.seed}", cfg, cell, extra, key=key, deps=deps)


def generator_epochs(grid: List[Tuple[Cell, Any]], g_from: Optional[Dict] = None) -> Tuple[int, int]:
    """How many distinct ERM generators g the grid trains for its M2m cells, and their training epochs (one
    per seed, shared by every M2m cell of that seed; none when the grid's ERM cells serve as g)."""
    g_from = cross_seed_generators(grid) if g_from is None else g_from
    needed = {}
    for cell, cfg in grid:
        if g_need(cfg) == "cached" and (cell.method, cell.seed) not in g_from:
            g_cfg = pipeline.generator_config(cfg)
            needed[g_cfg.run.dir] = g_cfg.train.epochs
    return len(needed), sum(needed.values())


def execute(task: Task, log: Optional[Log] = None) -> Task:
    """Run one task in this process (workers call it too); returns the task with its cell updated."""
    log = log or (lambda s: None)
    t0 = time.time()
    if task.kind == "prefix":
        prefix.ensure_prefix(task.cfg, log)
    elif task.kind == "generator":
        pipeline.ensure_generator(task.cfg, log)
    else:
        run_cell(task.cell, task.cfg, log, share=task.extra.get("share", True), g_from=task.extra.get("g_from"))
    task.extra["seconds"] = time.time() - t0
    return task


def _worker(task: Task, threads: int) -> Task:
    """A worker process: this task's share of the cores, no output (the main process reports)."""
    cfg = copy.deepcopy(task.cfg)
    cfg.train.progress = "none"
    if threads and cfg.train.threads == 0:
        cfg.train.threads = threads  # neutral: the threads never change which results a run records
    task.cfg = cfg
    return execute(task)


class GridProgress:
    """One display for the grid: a bar over tasks (done / running / left, ETA) and a line per finished task."""

    def __init__(self, total: int, quiet: bool, log: Log):
        from tqdm.auto import tqdm

        self.quiet, self.log, self.t0 = quiet, log, time.time()
        self.bar = tqdm(total=total, unit="task", desc="grid", disable=quiet or not sys.stderr.isatty(), leave=False)
        self.total, self.done, self.running = total, 0, 0  # counted here: a disabled bar counts nothing
        self.worked = 0  # finished tasks that trained (not found finished): the ETA's rate counts only these

    def started(self, n: int = 1) -> None:
        self.running += n
        self.bar.set_postfix_str(f"running {self.running}, left {self.total - self.done - self.running}")

    def finished(self, task: Task) -> None:
        self.running -= 1
        self.done += 1
        self.bar.update(1)
        self.started(0)
        if not self.quiet:
            what = task.cell.status if task.cell is not None else "ready"
            self.worked += task.extra.get("seconds", 0) >= 1.0  # a skipped cell or a cached g takes ~0 s
            left = self.total - self.done
            rate = (time.time() - self.t0) / self.worked if self.worked else 0.0
            eta = f"; about {duration(rate * left)} left" if left and self.worked else ""
            msg = f"[{self.done}/{self.total}] {task.name}: {what} in {duration(task.extra.get('seconds', 0))}{eta}"
            (self.bar.write if not self.bar.disable else self.log)(msg)

    def close(self) -> None:
        self.bar.close()


def run_tasks(tasks: List[Task], jobs: int, progress: GridProgress, keep_going: bool, log: Log) -> None:
    """Run the tasks in their order, ``jobs`` at a time (in this process when jobs is 1); a task starts once
    the tasks it needs have finished, and is not run when one of them failed (``keep_going``)."""
    if jobs <= 1:
        failed: set = set()
        for task in tasks:
            progress.started()
            if _blocked(task, failed, log):
                pass
            elif not _run_here(task, keep_going, log):
                failed.add(task.key)
            progress.finished(task)
        return
    _run_pool(tasks, jobs, progress, keep_going, log)


def _blocked(task: Task, failed: set, log: Log) -> bool:
    bad = [d for d in task.deps if d in failed]
    if bad:
        failed.add(task.key)
        if task.cell is not None:
            task.cell.status, task.cell.error = "failed", f"not run: {bad[0]} failed"
        log(f"{task.name}: not run ({bad[0]} failed)")
    return bool(bad)


def _run_pool(tasks: List[Task], jobs: int, progress: GridProgress, keep_going: bool, log: Log) -> None:
    threads = max(1, (os.cpu_count() or 1) // jobs)
    waiting, done, failed = list(tasks), set(), set()
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        pending: Dict[Any, Task] = {}
        try:
            while waiting or pending:
                for task in [t for t in waiting if all(d in done or d in failed for d in t.deps)]:
                    if len(pending) >= jobs:
                        break
                    waiting.remove(task)
                    progress.started()
                    if _blocked(task, failed, log):
                        progress.finished(task)
                        continue
                    pending[pool.submit(_worker, task, threads)] = task
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    task = pending.pop(future)
                    (done if _collect(future, task, keep_going, log) else failed).add(task.key)
                    progress.finished(task)
        except BaseException:  # Ctrl-C or a failed task: start nothing more (running tasks resume next time)
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _run_here(task: Task, keep_going: bool, log: Log) -> bool:
    try:
        execute(task, None)
        return True
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        _failed(task, exc, keep_going, log)
        return False


def _collect(future, task: Task, keep_going: bool, log: Log) -> bool:
    try:
        done = future.result()
        if task.cell is not None and done.cell is not None:
            task.cell.__dict__.update(done.cell.__dict__)
        task.extra.update(done.extra)
        return True
    except Exception as exc:
        _failed(task, exc, keep_going, log)
        return False


def _failed(task: Task, exc: BaseException, keep_going: bool, log: Log) -> None:
    error = f"{type(exc).__name__}: {exc}"
    if task.cell is not None:
        task.cell.status, task.cell.error = "failed", error
    if not keep_going:
        raise exc
    log(f"{task.name}: FAILED ({error}); continuing (--keep-going)")
