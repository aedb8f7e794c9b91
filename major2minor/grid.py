"""Running a grid of cells: shared prefixes and M2m's generators first, then the cells, N at a time.

    phase 1  the prefixes (``major2minor.prefix``) and the cached ERM generators g the cells need
    phase 2  every cell: skipped when finished, resumed when interrupted, branched from its prefix when new

Tasks of one phase are independent, so ``jobs`` of them run at once in separate processes: on a CPU each
gets ``cores / jobs`` threads; on a GPU they share the device.  The main process shows one progress
display for the whole grid (tasks done / running / left, with an ETA) and a line per finished task;
the workers print nothing.  Every task resumes where it stopped, so an interrupted grid continues when
the same command is run again.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from major2minor import pipeline, prefix
from major2minor.config import differing_settings, read_yaml
from major2minor.registry import REBALANCERS
from major2minor.units import duration

Log = Callable[[str], None]


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
    """A unit of work of one phase: a prefix, a generator g, or a cell (``kind``), with its configuration."""

    kind: str  # prefix | generator | cell
    name: str
    cfg: Any
    cell: Optional[Cell] = None
    extra: Dict[str, Any] = field(default_factory=dict)


def config_mismatch(run_dir: Path, cfg: Any) -> List[str]:
    """Settings where ``run_dir/config.yaml`` differs from ``cfg`` (``[]`` when absent or equal).

    Settings that do not change results (:func:`major2minor.config.result_neutral_keys`) may differ.
    """
    path = run_dir / "config.yaml"
    if not path.exists():
        return []
    stored = read_yaml(path, "run configuration") or {}
    # An empty generator list means "train/cache g as needed"; the run may have recorded the path it used.
    ignore = () if cfg.to_dict().get("m2m", {}).get("generator") else ("m2m.generator",)
    return differing_settings(stored, cfg.to_dict(), ignore=ignore)


def run_cell(cell: Cell, cfg: Any, log: Optional[Log] = print, share: bool = True) -> Cell:
    """Train, resume, branch or skip one cell; updates and returns ``cell``.

    A finished cell (``summary.json``) is skipped; an interrupted one (``last.pt``) resumes; a new one
    branches from its shared prefix (``share``) or trains from scratch.
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
    if (cell.run_dir / "summary.json").exists():
        cell.status = "skipped"
        cell.summary = json.loads((cell.run_dir / "summary.json").read_text())
        return cell
    started = (cell.run_dir / "last.pt").exists() or (cell.run_dir / "last.prev.pt").exists()
    cell.status = "resumed" if started else "trained"
    shared = prefix.prefix_config(cfg) if share and not started else None
    if shared is not None:
        prefix.branch(prefix.ensure_prefix(shared, log), cfg, cell.run_dir)
        cell.status = "branched"
    # resume=True also covers a directory left by a crash before the first epoch ended (config.yaml,
    # manifest.json, no last.pt): the engine then starts it afresh instead of refusing a non-empty dir.
    cell.summary = pipeline.train(cfg, resume=True, log=log, run_dir=cell.run_dir)
    cell.seconds = time.time() - t0
    return cell


def plan(grid: List[Tuple[Cell, Any]], share: bool) -> Tuple[List[Task], List[Task]]:
    """The two phases: distinct prefixes and generators the unfinished cells need, then the cells."""
    first: Dict[str, Task] = {}
    for cell, cfg in grid:
        if (cell.run_dir / "summary.json").exists():
            continue
        shared = prefix.prefix_config(cfg) if share else None
        if shared is not None and not (cell.run_dir / "last.pt").exists():
            first.setdefault(shared.run.dir, Task("prefix", f"prefix {shared.method} seed {cell.seed}", shared))
        if REBALANCERS.get(cfg.rebalance.name).generator_paths(cfg) == []:
            g_dir = pipeline.generator_config(cfg).run.dir
            first.setdefault(g_dir, Task("generator", f"g (ERM) for seed {cell.seed}", cfg))
    cells = [Task("cell", f"{cell.method} seed {cell.seed}", cfg, cell, {"share": share}) for cell, cfg in grid]
    return list(first.values()), cells


def generator_epochs(cfgs: List[Any]) -> Tuple[int, int]:
    """How many distinct ERM generators g the grid's M2m cells need, and their training epochs (a g is
    trained once per seed and shared by every M2m cell of that seed, with or without prefix sharing)."""
    needed = {}
    for cfg in cfgs:
        if REBALANCERS.get(cfg.rebalance.name).generator_paths(cfg) == []:
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
        run_cell(task.cell, task.cfg, log, share=task.extra.get("share", True))
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


def run_phase(tasks: List[Task], jobs: int, progress: GridProgress, keep_going: bool, log: Log) -> None:
    """Run a phase's tasks, ``jobs`` at a time (in this process when jobs is 1)."""
    if jobs <= 1:
        for task in tasks:
            progress.started()
            _run_here(task, keep_going, log)
            progress.finished(task)
        return
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        pending = {pool.submit(_worker, task, threads): task for task in tasks}
        progress.started(min(jobs, len(tasks)))
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    task = pending.pop(future)
                    _collect(future, task, keep_going, log)
                    progress.finished(task)
                    if len(pending) >= jobs:
                        progress.started()
        except BaseException:  # Ctrl-C or a failed task: start nothing more (running tasks resume next time)
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _run_here(task: Task, keep_going: bool, log: Log) -> None:
    try:
        execute(task, None)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        _failed(task, exc, keep_going, log)


def _collect(future, task: Task, keep_going: bool, log: Log) -> None:
    try:
        done = future.result()
        if task.cell is not None and done.cell is not None:
            task.cell.__dict__.update(done.cell.__dict__)
        task.extra.update(done.extra)
    except Exception as exc:
        _failed(task, exc, keep_going, log)


def _failed(task: Task, exc: BaseException, keep_going: bool, log: Log) -> None:
    error = f"{type(exc).__name__}: {exc}"
    if task.cell is not None:
        task.cell.status, task.cell.error = "failed", error
    if not keep_going:
        raise exc
    log(f"{task.name}: FAILED ({error}); continuing (--keep-going)")
