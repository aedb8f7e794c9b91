"""Experiment grids: what ``m2m reproduce`` runs (its command line: :mod:`major2minor.cli.reproduce`).

    m2m reproduce --recipe digits-lt --methods erm,drs,m2m --seeds 3 [--root runs] [key=value ...]

:func:`reproduce` trains every (method, seed) cell of the grid with :func:`major2minor.pipeline.train` in
``ROOT/RECIPE/METHOD/seedN``, in method-major order, then writes the report (:mod:`major2minor.report`)
into ``ROOT/RECIPE/report``.  It can be interrupted and called again with the same arguments:

* a cell with ``summary.json`` is complete and skipped (its summary is reused as is);
* a cell with ``last.pt`` but no summary was interrupted and is resumed (``train(..., resume=True)``),
  which continues from the last finished epoch with the saved RNG states, so the result equals an
  uninterrupted run;
* any other cell branches from its shared prefix (the epochs before T0, trained once for every cell
  that shares them: :mod:`major2minor.prefix`), or is trained from scratch when it has none.

Prefixes and M2m's generators g are trained first, then the cells, ``--jobs N`` at a time
(:mod:`major2minor.grid`), with one progress display for the grid.

A cell whose directory holds a ``config.yaml`` that differs from the requested configuration (other
overrides, another epoch count) is an error, not a silent reuse of a stale result.  Every cell's
configuration is built and validated before the first one trains, so a typo in the last method
fails at once rather than after hours.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence, Union

from major2minor.config import load_config, parse_override
from major2minor.display import Log, duration
from major2minor.grid import (
    Cell,
    GridError,
    GridProgress,
    config_mismatch,
    cross_seed_generators,
    generator_epochs,
    plan,
    run_cell,
    run_tasks,
)
from major2minor.methods.presets import PLAIN_METHOD
from major2minor.prefix import epochs_with_and_without_sharing
from major2minor.registry import METHODS
from major2minor.report import write_report

#: Keys the grid sets per cell; giving them as overrides would contradict the grid.
GRID_KEYS = ("method", "train.seed", "run.dir", "recipe")


@dataclass
class ReproduceResult:
    """The grid's cells, the report rows (:class:`major2minor.report.ResultRow`) and where the report is."""

    cells: List[Cell]
    rows: List[Any] = field(default_factory=list)
    report_dir: Optional[Path] = None

    @property
    def failed(self) -> List[Cell]:
        return [c for c in self.cells if c.status == "failed"]


def parse_methods(methods: Union[str, Sequence[str]]) -> List[str]:
    """``'erm,drs, m2m'`` -> ``['erm', 'drs', 'm2m']`` (validated against the method presets)."""
    items = [m.strip() for m in (methods.split(",") if isinstance(methods, str) else methods)]
    items = [m for m in items if m]
    if not items:
        raise GridError(
            f"methods={methods!r} is empty; pass a comma-separated list such as erm,drs,m2m "
            f"(valid: {', '.join(METHODS.names())})."
        )
    dupes = sorted({m for m in items if items.count(m) > 1})
    if dupes:
        raise GridError(f"methods={','.join(items)} lists {', '.join(dupes)} twice; give each method once.")
    for m in items:
        METHODS.get(m)  # raises with the valid names and a suggestion
    return items


def parse_seeds(seeds: Union[int, str, Sequence[int]], first_seed: int = 0) -> List[int]:
    """A count (``3`` -> seeds 0, 1, 2, shifted by ``first_seed``) or an explicit list (``'0,5,7'``)."""
    if isinstance(seeds, str):
        text = seeds.strip()
        if "," in text:
            try:
                out = [int(s) for s in text.split(",") if s.strip()]
            except ValueError:
                raise GridError(
                    f"seeds={seeds!r} must be a count (3) or a comma-separated list of integers (0,1,2)."
                ) from None
            return _check_seed_list(out, seeds)
        try:
            seeds = int(text)
        except ValueError:
            raise GridError(
                f"seeds={seeds!r} must be a count (3) or a comma-separated list of integers (0,1,2)."
            ) from None
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise GridError(f"seeds={seeds} must be >= 1 (the number of seeds per method; the paper uses 3).")
        if first_seed < 0:
            raise GridError(f"first_seed={first_seed} must be >= 0.")
        return list(range(first_seed, first_seed + seeds))
    return _check_seed_list([int(s) for s in seeds], seeds)


def _check_seed_list(out: List[int], given: Any) -> List[int]:
    if not out:
        raise GridError(f"seeds={given!r} holds no seed; pass e.g. 0,1,2.")
    if len(set(out)) != len(out):
        raise GridError(f"seeds={given!r} repeats a seed; each seed once.")
    if any(s < 0 for s in out):
        raise GridError(f"seeds={given!r} holds a negative seed; seeds must be >= 0.")
    return out


def cell_dir(root: Union[str, Path], recipe: str, method: str, seed: int) -> Path:
    """``ROOT/RECIPE/METHOD/seedN`` (the recipe's file stem, so a YAML path works too)."""
    return Path(root) / Path(recipe).stem / method / f"seed{seed}"


def build_grid(
    recipe: str,
    methods: Sequence[str],
    seeds: Sequence[int],
    root: Optional[Union[str, Path]],
    overrides: Sequence[str] = (),
) -> List[tuple]:
    """Validate and build ``[(cell, cfg), ...]`` for every (method, seed), before anything trains."""
    for o in overrides:
        key, _ = parse_override(o)
        if key in GRID_KEYS:
            raise GridError(
                f"override '{o}' conflicts with the grid, which sets {', '.join(GRID_KEYS)} per cell; "
                "use --recipe, --methods, --seeds and --root instead."
            )
    grid = []
    for method in methods:
        for seed in seeds:
            cfg = load_config(recipe, [*overrides, f"method={method}", f"train.seed={seed}"])
            run_root = Path(root) if root is not None else Path(cfg.run.root)
            cfg.run.root = str(run_root)
            run_dir = cell_dir(run_root, recipe, method, seed)
            cfg.run.dir = str(run_dir)
            grid.append((Cell(method, seed, run_dir), cfg))
    return grid


def reproduce(
    recipe: str,
    methods: Union[str, Sequence[str]],
    seeds: Union[int, str, Sequence[int]] = 3,
    root: Optional[Union[str, Path]] = None,
    overrides: Sequence[str] = (),
    first_seed: int = 0,
    reference: Optional[str] = "auto",
    at: str = "best",
    ddof: int = 1,
    keep_going: bool = False,
    figures: Optional[bool] = None,
    command: Optional[str] = None,
    log: Optional[Log] = print,
    jobs: int = 1,
    share: bool = True,
    quiet: bool = False,
) -> ReproduceResult:
    """Run the (method x seed) grid of ``recipe`` and write its report into ``ROOT/RECIPE/report``.

    Args:
        recipe: a built-in recipe name or a YAML path.
        methods: method presets, a list or ``'erm,drs,m2m'``.
        seeds: a count (3 -> seeds 0, 1, 2) or an explicit list of seeds.
        root: where the run directories go (default: the config's ``run.root``, ``runs``).
        overrides: ``key=value`` config overrides applied to every cell (not method/train.seed/run.dir).
        first_seed: the first seed when ``seeds`` is a count.
        reference, at, ddof, figures: the report's options (:func:`major2minor.report.write_report`).
        keep_going: on a failing cell, log it and continue with the others (the report covers the
            finished cells); default: stop at the first failure.
        command: the command line, recorded in ``results.md``.
        jobs: cells (and prefixes / generators) trained at once, in separate processes.
        share: train the epochs before T0 once per group of cells that share them (:mod:`major2minor.prefix`).
        quiet: no line per finished task (the results table is still printed).
    """
    log = log or (lambda s: None)
    if jobs < 1:
        raise GridError(f"jobs={jobs} must be >= 1 (the number of cells trained at once; 1 = one after another).")
    methods = parse_methods(methods)
    seeds = parse_seeds(seeds, first_seed)
    reference = _reference_for(reference, methods)
    grid = build_grid(recipe, methods, seeds, root, overrides)
    result = ReproduceResult([cell for cell, _ in grid])
    t_grid = time.time()
    run_grid(grid, jobs, share, quiet, keep_going, log)
    statuses = ("trained", "branched", "resumed", "skipped", "failed")
    counts = {s: sum(c.status == s for c in result.cells) for s in statuses}
    summary = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
    log(f"grid: {len(result.cells)} cells ({summary}) in {duration(time.time() - t_grid)}")
    done = [c.run_dir for c in result.cells if c.summary is not None]
    if done:
        result.report_dir = Path(grid[0][1].run.root) / Path(recipe).stem / "report"
        result.rows = write_report(
            done, result.report_dir, at=at, ddof=ddof, reference=reference, order=methods,
            figures=figures, command=command, log=log,
        )  # fmt: skip
    return result


def run_grid(grid, jobs: int, share: bool, quiet: bool, keep_going: bool, log: Log) -> None:
    """Say what the grid costs (epochs with and without shared prefixes, the g's it trains), then run its tasks."""
    epochs = epochs_with_and_without_sharing([cfg for _, cfg in grid])
    g_from = cross_seed_generators(grid)  # builds the data of two seeds to compare them: once per grid
    n_g, g_epochs = generator_epochs(grid, g_from)
    crossed = len(g_from)
    log(
        f"grid: {len(grid)} cells, {epochs['without']} training epochs cell by cell; "
        + (f"{epochs['with']} with {epochs['prefixes']} shared prefixes" if share else "prefix sharing off")
        + (f"; plus {n_g} ERM generator(s) g for M2m, {g_epochs} epochs, one per seed" if n_g else "")
        + (f"; M2m's g is another seed's ERM cell ({crossed} cells, no extra g trained)" if crossed else "")
        + (f"; {jobs} at a time" if jobs > 1 else "")
    )
    tasks = plan(grid, share, g_from)
    progress = GridProgress(len(tasks), quiet, log)
    try:
        run_tasks(tasks, jobs, progress, keep_going, log)
    except KeyboardInterrupt:
        progress.close()  # first: the bar's clear would otherwise land on (or after) the line below
        log("grid interrupted; run the same command again to continue where it stopped.")
        raise
    finally:
        progress.close()


def _reference_for(reference: Optional[str], methods: Sequence[str]) -> Optional[str]:
    if reference == "auto":
        return PLAIN_METHOD if PLAIN_METHOD in methods else None
    if reference not in (None, "none") and reference not in methods:
        raise GridError(
            f"reference='{reference}' is not among the grid's methods ({', '.join(methods)}); "
            "add it to --methods or choose one of them (or --reference none)."
        )
    return reference


__all__ = [
    "reproduce",
    "run_cell",
    "build_grid",
    "cell_dir",
    "parse_methods",
    "parse_seeds",
    "config_mismatch",
    "Cell",
    "ReproduceResult",
    "GridError",
]
