"""Experiment grids and reports: ``m2m reproduce`` and ``m2m report``.

    m2m reproduce --recipe digits-lt --methods erm,drs,m2m --seeds 3 [--root runs] [key=value ...]
    m2m report runs/digits-lt [more dirs] [--out DIR] [--reference erm] [--at best|last]

``reproduce`` trains every (method, seed) cell of the grid with :func:`major2minor.pipeline.train` in
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

import argparse
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Union

from major2minor.config import load_config, parse_override
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
from major2minor.prefix import epochs_with_and_without_sharing
from major2minor.registry import METHODS
from major2minor.report import default_out, write_report
from major2minor.units import duration

Log = Callable[[str], None]

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
    n_g, g_epochs = generator_epochs(grid)
    crossed = len(cross_seed_generators(grid))
    log(
        f"grid: {len(grid)} cells, {epochs['without']} training epochs cell by cell; "
        + (f"{epochs['with']} with {epochs['prefixes']} shared prefixes" if share else "prefix sharing off")
        + (f"; plus {n_g} ERM generator(s) g for M2m, {g_epochs} epochs, one per seed" if n_g else "")
        + (f"; M2m's g is another seed's ERM cell ({crossed} cells, no extra g trained)" if crossed else "")
        + (f"; {jobs} at a time" if jobs > 1 else "")
    )
    tasks = plan(grid, share)
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
        return "erm" if "erm" in methods else None
    if reference not in (None, "none") and reference not in methods:
        raise GridError(
            f"reference='{reference}' is not among the grid's methods ({', '.join(methods)}); "
            "add it to --methods or choose one of them (or --reference none)."
        )
    return reference


# ----------------------------------------------------------------------------------------------
# command line


def _command_line(argv: Optional[Sequence[str]] = None) -> str:
    args = list(sys.argv[1:] if argv is None else argv)
    return "m2m " + " ".join(shlex.quote(a) for a in args)


def _add_report_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--reference",
        default="auto",
        help="method of the row relative gains are computed against (default: erm when present; 'none' for no gains)",
    )
    p.add_argument(
        "--at",
        choices=["best", "last"],
        default="best",
        help="test metrics at the best-validation epoch (default, the paper's protocol) or the last",
    )
    p.add_argument(
        "--ddof",
        type=int,
        choices=[0, 1],
        default=1,
        help="std over seeds: 1 = sample std, divisor n-1 (default); 0 = divisor n",
    )
    p.add_argument("--no-figures", action="store_true", help="write only the tables, no PNG figures")


def cmd_reproduce(args: argparse.Namespace) -> int:
    """``m2m reproduce``: run the grid, then write the report; exit status 1 if a cell failed."""
    overrides = []
    for item in args.overrides:
        if "=" not in item:
            raise GridError(
                f"unexpected argument '{item}': after the options give only key=value overrides "
                "(the recipe goes in --recipe)."
            )
        overrides.append(item)
    result = reproduce(
        args.recipe,
        args.methods,
        args.seeds,
        root=args.root,
        overrides=overrides,
        first_seed=args.first_seed,
        reference=args.reference,
        at=args.at,
        ddof=args.ddof,
        keep_going=args.keep_going,
        figures=False if args.no_figures else None,
        command=_command_line(),
        jobs=args.jobs,
        share=args.share,
        quiet=args.quiet,
    )
    if result.report_dir is not None:
        print((result.report_dir / "results.md").read_text())
    for cell in result.failed:
        print(f"m2m: failed: {cell.method} seed {cell.seed} ({cell.run_dir}): {cell.error}", file=sys.stderr)
    return 1 if result.failed else 0


def cmd_report(args: argparse.Namespace) -> int:
    """``m2m report DIR...``: tables (and figures) from finished runs."""
    out = Path(args.out) if args.out else default_out(args.dirs)
    write_report(
        args.dirs,
        out,
        at=args.at,
        ddof=args.ddof,
        reference=args.reference,
        figures=False if args.no_figures else None,
        log=print,
    )
    print((out / "results.md").read_text())
    return 0


def add_parsers(subparsers: Any) -> None:
    """Add the ``reproduce`` and ``report`` sub-commands to the ``m2m`` parser."""
    r = subparsers.add_parser(
        "reproduce",
        help="run a (method x seed) grid and write its results table",
        description="Train every (method, seed) in ROOT/RECIPE/METHOD/seedN (skipping finished runs, resuming "
        "interrupted ones), then write results.md/.csv and figures into ROOT/RECIPE/report.",
    )
    r.add_argument("--recipe", required=True, help="built-in recipe name or YAML path (m2m list recipes)")
    r.add_argument(
        "--methods", required=True, help="comma-separated method presets, e.g. erm,drs,m2m (m2m list methods)"
    )
    r.add_argument("--seeds", default="3", help="number of seeds (3 = seeds 0,1,2) or a list such as 0,3,7")
    r.add_argument("--first-seed", type=int, default=0, help="first seed when --seeds is a count")
    r.add_argument("--root", default=None, help="where run directories go (default: run.root, 'runs')")
    r.add_argument("--keep-going", action="store_true", help="continue with other cells when one fails")
    r.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="cells trained at once, in separate processes (CPU: each gets "
        "cores/jobs threads; GPU: they share the device)",
    )
    r.add_argument(
        "--no-share",
        dest="share",
        action="store_false",
        help="train every cell from scratch instead of branching from shared prefixes (the epochs before T0)",
    )
    r.add_argument("--quiet", action="store_true", help="no progress display or line per finished cell")
    _add_report_options(r)
    r.add_argument("overrides", nargs="*", help="key=value config overrides for every cell (e.g. train.epochs=2)")
    r.set_defaults(func=cmd_reproduce)

    p = subparsers.add_parser(
        "report",
        help="results table (mean ± std over seeds) from finished run directories",
        description="Walk DIRs for summary.json, group runs over seeds and write results.md, results.csv and figures.",
    )
    p.add_argument("dirs", nargs="+", help="run directories or folders holding them (e.g. runs/digits-lt)")
    p.add_argument("--out", default=None, help="report directory (default: DIR/report, or the common parent's)")
    _add_report_options(p)
    p.set_defaults(func=cmd_report)


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
    "add_parsers",
    "cmd_reproduce",
    "cmd_report",
]
