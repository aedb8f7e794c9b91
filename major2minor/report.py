"""Result tables over seeds: ``m2m report DIR...`` and the last step of ``m2m reproduce``.

Every finished run directory holds a ``summary.json`` (see :mod:`major2minor.engine`).  This module

1. collects them (:func:`collect_runs` walks directories for ``summary.json``),
2. groups the runs that differ only in their seed (:func:`summarize_runs`): same recipe, method
   preset, loss and re-balancing, and the same resolved ``config.yaml`` apart from the seed and keys
   that do not change the result (run directory, device, threads, progress bar, data paths),
3. and writes ``results.md`` and ``results.csv`` in the paper's layout (:func:`write_report`)::

       | Loss | Re-balancing | bACC         | GM           | n | rel. bACC | rel. GM |
       | CE   | –            | 68.70 ± 1.43 | 66.20 ± 1.50 | 3 | ref       | ref     |
       | CE   | M2m          | 78.30 ± 0.16 | 77.80 ± 0.16 | 3 | +13.97%   | +17.52% |

Conventions (also written into every ``results.md``):

* Test metrics at the **best-validation epoch** (``at="best"``, the paper's model selection) or at
  the last epoch (``at="last"``), in %, 2 decimals.
* ``mean ± std`` over seeds; the std is the **sample** standard deviation (``ddof=1``, divisor n-1) by
  default, the usual choice when 3 seeds estimate the spread of a method; ``ddof=0`` (divisor n) is
  available.  With a single seed and ddof=1 no std is shown.
* Relative gain against a reference row (the supplement's Table 1):
  ``100 * (mean - mean_ref) / mean_ref``, from the unrounded means; blank when the reference mean is 0
  (e.g. a GM of 0).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from major2minor import figures as figs
from major2minor.atomic import atomic_write_text
from major2minor.config import result_settings
from major2minor.display import Log
from major2minor.errors import MissingDependencyError
from major2minor.methods.presets import PLAIN_METHOD
from major2minor.registry import LOSSES, METHODS, REBALANCERS, method_label, part_label
from major2minor.rundir import RunDir, RunDirError, UnsealedRunError

PathLike = Union[str, os.PathLike]

AT_CHOICES = ("best", "last")

#: Metrics averaged into every row (fractions in summary.json, percentages in the row).
ROW_METRICS = (
    "bacc",
    "gm",
    "acc",
    "macro_f1",
    "head_recall",
    "mid_recall",
    "tail_recall",
    "many_recall",
    "medium_recall",
    "few_recall",
)


class ReportError(ValueError):
    """Run directories or options that cannot be turned into a results table."""


# ----------------------------------------------------------------------------------------------
# collecting runs


@dataclass
class RunResult:
    """One finished run: its directory, its ``summary.json`` and (when present) its ``config.yaml``."""

    run_dir: Path
    summary: Dict[str, Any]
    config: Optional[Dict[str, Any]] = None

    @property
    def recipe(self) -> str:
        return Path(str(self.summary.get("recipe") or self.summary.get("dataset") or "unknown")).stem

    @property
    def method(self) -> str:
        return str(self.summary.get("method", "?"))

    @property
    def loss(self) -> str:
        return str(self.summary.get("loss", "?"))

    @property
    def rebalance(self) -> str:
        return str(self.summary.get("rebalance", "?"))

    @property
    def seed(self) -> Any:
        return self.summary.get("seed")

    def metrics(self, at: str = "best") -> Dict[str, Any]:
        """The test metrics at the best-validation epoch (``at='best'``) or the last (``'last'``)."""
        _check_at(at)
        key = "test_at_best" if at == "best" else "test_at_last"
        values = self.summary.get(key)
        if not isinstance(values, dict) or "bacc" not in values:
            raise ReportError(
                f"{self.run_dir / 'summary.json'} has no '{key}' metrics (needed for at='{at}'); "
                "the file is incomplete or from another program. Re-run that run, or remove it "
                "from the directories given to the report."
            )
        return values


def _check_at(at: str) -> None:
    if at not in AT_CHOICES:
        raise ReportError(
            f"at='{at}' is not allowed; choose 'best' (test at the best-validation epoch, the "
            "paper's protocol) or 'last' (test at the last epoch)."
        )


def load_run(run_dir: PathLike) -> RunResult:
    """Read one run directory (``summary.json`` required, ``config.yaml`` optional)."""
    run = RunDir(run_dir)
    run_dir, path = run.path, run / RunDir.SUMMARY
    try:
        summary = run.read_summary()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} does not exist; the run in {run_dir} has not finished "
            "(resume it with `m2m train ... --resume`) or the path is wrong."
        ) from None
    except json.JSONDecodeError as exc:
        raise ReportError(
            f"{path} is not valid JSON ({exc}); re-run that run or remove its directory from the report."
        ) from None
    if not isinstance(summary, dict):
        raise ReportError(
            f"{path} holds a JSON {type(summary).__name__}, not a run summary (an object with the run's "
            "metrics); it was replaced or edited: re-run that run or remove its directory from the report."
        )
    if (run / RunDir.LAST).exists():  # the numbers must be the ones the run wrote (sealed in its last.pt)
        try:
            run.verify()
        except UnsealedRunError:
            pass  # finished by an earlier version: nothing to verify against
        except RunDirError as exc:
            raise ReportError(str(exc)) from None
    config = run.read_config("re-run that run or remove its directory from the report") or None
    return RunResult(run_dir, summary, config)


def collect_runs(paths: Union[PathLike, Sequence[PathLike]]) -> List[RunResult]:
    """Every finished run under ``paths`` (run directories, or folders holding them, at any depth).

    A path may also be a ``summary.json`` file.  Hidden folders below a given path are skipped (M2m's
    cached generators live in ``ROOT/.generators``: they are means, not results).  Runs are returned
    sorted by directory; a directory reached twice (e.g. ``runs`` and ``runs/digits-lt`` both given) is read once.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not paths:
        raise ReportError(
            "no directories given; pass run directories or folders that hold them, e.g. `m2m report runs/digits-lt`."
        )
    found: Dict[Path, None] = {}
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise FileNotFoundError(
                f"report path '{p}' does not exist; pass run directories or folders "
                "that hold them (e.g. runs/digits-lt)."
            )
        if p.is_file():
            if p.name != RunDir.SUMMARY:
                raise ReportError(
                    f"report path '{p}' is a file but not a summary.json; pass a run "
                    "directory, a folder of runs, or a summary.json."
                )
            found[p.parent.resolve()] = None
            continue
        for s in sorted(p.rglob(RunDir.SUMMARY)):
            if any(part.startswith(".") for part in s.relative_to(p).parts[:-1]):
                continue  # the tool's own hidden folders: M2m's cached generators (.generators), caches
            found[s.parent.resolve()] = None
    if not found:
        started = unfinished_runs(paths)
        raise ReportError(
            f"no summary.json found under {', '.join(str(p) for p in paths)}; "
            + (
                f"no run has finished yet ({'; '.join(started[:6])}{'; ...' if len(started) > 6 else ''})."
                if started
                else "the runs have not finished, or the paths are wrong (pass e.g. runs/digits-lt)."
            )
        )
    return [load_run(d) for d in sorted(found)]


# ----------------------------------------------------------------------------------------------
# grouping and statistics


def config_signature(config: Optional[Dict[str, Any]]) -> Tuple[Tuple[str, str], ...]:
    """The parts of a resolved config that decide a result: everything but the seed and the settings
    that never change results (:func:`major2minor.config.result_neutral_keys`).  A method's per-run inputs
    (:attr:`~major2minor.methods.base.Rebalancer.per_run_keys`: M2m's g paths) differ per seed; only their
    count (the ensemble size) tells rows apart."""
    if not config:
        return ()
    flat = result_settings(config)
    flat.pop("train.seed", None)
    per_run = {key for entry in REBALANCERS.in_order() for key in entry.obj.per_run_keys}  # any method's
    for key in sorted(per_run):
        given = flat.pop(key, None) or []
        if given:
            flat[f"{key}#count"] = len(given)
    return tuple(sorted((k, json.dumps(v, sort_keys=True, default=str)) for k, v in flat.items()))


def mean_std(values: Sequence[float], ddof: int = 1) -> Tuple[float, float]:
    """Mean and standard deviation (divisor ``n - ddof``); std is NaN when ``n <= ddof``."""
    if ddof not in (0, 1):
        raise ReportError(
            f"ddof={ddof} is not allowed; use 1 (sample std, divisor n-1, the default) or 0 "
            "(population std, divisor n)."
        )
    arr = np.asarray([v for v in values if v is not None and not _isnan(v)], dtype=np.float64)
    if arr.size == 0:
        return float("nan"), float("nan")
    std = float(arr.std(ddof=ddof)) if arr.size > ddof else float("nan")
    return float(arr.mean()), std


def _isnan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


@dataclass
class ResultRow:
    """One line of the results table: a method on a recipe, aggregated over its seeds.

    Metric fields are in % (``bacc_mean = 78.3`` means 78.3 %). ``*_rel_gain`` is the relative gain in
    % against the reference row (None without a reference or when the reference mean is 0).
    """

    recipe: str
    dataset: str
    method: str
    loss: str
    rebalance: str
    loss_label: str
    rebalance_label: str
    variant: str  # config keys that tell apart rows of one method, "" if none
    seeds: List[Any]
    at: str
    ddof: int
    mean: Dict[str, float]  # metric -> mean over seeds, in %
    std: Dict[str, float]  # metric -> std over seeds, in %
    per_class_recall: List[float]  # mean over seeds, in %, class order of the data set
    train_counts: List[int]
    class_names: Optional[List[str]]
    run_dirs: List[str]
    wall_seconds_mean: float
    is_reference: bool = False
    rel_gain: Dict[str, Optional[float]] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)  # per seed: the g M2m used, a better epoch before T0

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def label(self) -> str:
        """The method's paper name (``"LDAM-M2m"``), used in figures, plus what tells variants apart."""
        name = method_label(self.method, self.loss, self.rebalance)
        return name + (f" ({self.variant})" if self.variant else "")

    def cell(self, metric: str) -> str:
        """``'78.30 ± 0.16'`` (no ``±`` part when the std is undefined, e.g. one seed)."""
        m, s = self.mean.get(metric, float("nan")), self.std.get(metric, float("nan"))
        if math.isnan(m):
            return "n/a"
        return f"{m:.2f}" if math.isnan(s) else f"{m:.2f} ± {s:.2f}"

    def gain_cell(self, metric: str) -> str:
        if self.is_reference:
            return "ref"
        g = self.rel_gain.get(metric)
        return "" if g is None else f"{g:+.2f}%"

    def as_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["n"] = self.n
        d["label"] = self.label
        return d


def _display(method: str, loss: str, rebalance: str) -> Tuple[str, str]:
    """The table's Loss and Re-balancing cells, as the registered parts name themselves."""
    loss_label, rebalance_label = part_label(LOSSES, loss), part_label(REBALANCERS, rebalance)
    if method in METHODS and METHODS.get(method).rebalance_label:  # the supplement's ablations: "M2m-Self"
        rebalance_label = METHODS.get(method).rebalance_label
    return loss_label, rebalance_label


def _order_key(method: str, order: Sequence[str]) -> Tuple[int, str]:
    """Rows in ``order`` first, then the presets in the paper's order (their registration order)."""
    if method in order:
        return order.index(method), method
    paper = [e.name for e in METHODS.in_order()]
    if method in paper:
        return len(order) + paper.index(method), method
    return len(order) + len(paper), method


def _class_names(run: RunResult) -> Optional[List[str]]:
    try:
        names = (RunDir(run.run_dir).read_manifest() or {}).get("class_names")
        return [str(n) for n in names] if names else None
    except (json.JSONDecodeError, AttributeError):
        return None


def summarize_runs(
    runs: Sequence[RunResult],
    at: str = "best",
    ddof: int = 1,
    reference: Optional[str] = "auto",
    order: Sequence[str] = (),
) -> List[ResultRow]:
    """Group ``runs`` over seeds and return the table rows (what ``results.md`` shows).

    Args:
        runs: from :func:`collect_runs`.
        at: ``'best'`` = test at the best-validation epoch (default), ``'last'`` = at the last epoch.
        ddof: 1 = sample std (default), 0 = population std.
        reference: method name of the row the relative gains are computed against (per recipe);
            ``'auto'`` = ``'erm'`` when present, ``None`` = no gains.
        order: method names to list first, in this order (default: the paper's order).
    """
    _check_at(at)
    mean_std([], ddof)  # validates ddof
    if not runs:
        raise ReportError("no runs to summarize; collect_runs() found none.")
    groups: Dict[tuple, List[RunResult]] = {}
    for run in runs:
        key = (run.recipe, run.method, run.loss, run.rebalance, config_signature(run.config))
        groups.setdefault(key, []).append(run)
    variants = _variant_names(list(groups))
    rows = [_row(key, members, variants[key], at, ddof) for key, members in groups.items()]
    rows.sort(key=lambda r: (r.recipe, _order_key(r.method, list(order)), r.variant))
    _apply_reference(rows, reference)
    return rows


def _variant_names(keys: List[tuple]) -> Dict[tuple, str]:
    """For rows of one (recipe, method) with different configs, the settings that tell them apart
    (``"m2m.beta=0.99"``); ``""`` for a method with a single row."""
    variants: Dict[tuple, str] = {}
    by_method: Dict[tuple, List[tuple]] = {}
    for key in keys:
        by_method.setdefault(key[:4], []).append(key)
    for same in by_method.values():
        if len(same) == 1:
            variants[same[0]] = ""
            continue
        dicts = [dict(k[4]) for k in same]
        all_keys = sorted(set().union(*dicts))
        differing = [k for k in all_keys if len({d.get(k) for d in dicts}) > 1]
        for key, d in zip(same, dicts):
            variants[key] = ", ".join(f"{k}={json.loads(d[k]) if k in d else 'unset'}" for k in differing)
    return variants


def _row(key: tuple, members: List[RunResult], variant: str, at: str, ddof: int) -> ResultRow:
    """One table row: the metrics of a group's seeds as mean and std, in %."""
    recipe, method, loss, rebalance, _ = key
    members = sorted(members, key=lambda r: (str(r.seed), str(r.run_dir)))
    seen: Dict[Any, Path] = {}
    for r in members:
        if r.seed in seen:
            raise ReportError(
                f"two runs of {method} on {recipe} with the same config and seed {r.seed}: {seen[r.seed]} and "
                f"{r.run_dir}; averaging them would count one seed twice. Pass only one of them to the report."
            )
        seen[r.seed] = r.run_dir
    metrics = [r.metrics(at) for r in members]
    mean, std = {}, {}
    for name in ROW_METRICS:
        vals = [None if m.get(name) is None else 100.0 * float(m[name]) for m in metrics]
        mean[name], std[name] = mean_std(vals, ddof)
    loss_label, rebalance_label = _display(method, loss, rebalance)
    walls = [r.summary.get("wall_seconds") for r in members if r.summary.get("wall_seconds") is not None]
    return ResultRow(
        recipe=recipe,
        dataset=str(members[0].summary.get("dataset", recipe)),
        method=method,
        loss=loss,
        rebalance=rebalance,
        loss_label=loss_label,
        rebalance_label=rebalance_label,
        variant=variant,
        seeds=[r.seed for r in members],
        at=at,
        ddof=ddof,
        mean=mean,
        std=std,
        per_class_recall=_mean_per_class([m.get("per_class_recall") for m in metrics]),
        train_counts=[int(c) for c in members[0].summary.get("train_counts") or []],
        class_names=_class_names(members[0]),
        run_dirs=[str(r.run_dir) for r in members],
        wall_seconds_mean=float(np.mean(walls)) if walls else float("nan"),
        notes=[note for r in members for note in run_notes(r)],
    )


def run_notes(run: RunResult) -> List[str]:
    """What a reader of the table must know about one run: which g M2m translated with (another seed's ERM
    cell, a cached ERM g, a given checkpoint) and whether an epoch before T0 was better on validation."""
    notes = []
    for g in run.summary.get("generators") or []:
        who = f"{g.get('method')} seed {g.get('seed')}" if g.get("method") else "a given checkpoint"
        notes.append(f"seed {run.seed}: g = {who} ({g.get('file')}, sha256 {str(g.get('sha256'))[:12]})")
    sel = run.summary.get("selection") or {}
    best, overall = run.summary.get("val_at_best", {}).get("bacc"), sel.get("val_bacc_at_overall_best")
    if sel.get("from_epoch", 1) > 1 and best is not None and overall is not None and overall > best:
        notes.append(
            f"seed {run.seed}: WARNING the plain model before T0 was better on validation (epoch "
            f"{sel.get('overall_best_epoch')}, bACC {100 * overall:.2f} vs {100 * best:.2f} at the reported epoch "
            f"{run.summary.get('best_epoch')}, chosen from epoch {sel['from_epoch']} on)"
        )
    return notes


def _mean_per_class(recalls: List[Optional[List[Optional[float]]]]) -> List[float]:
    recalls = [r for r in recalls if r]
    if not recalls:
        return []
    arr = np.array([[np.nan if v is None else float(v) for v in r] for r in recalls], dtype=np.float64)
    with np.errstate(all="ignore"):
        valid = ~np.isnan(arr)
        sums = np.where(valid, arr, 0.0).sum(0)
        n = valid.sum(0)
        out = np.where(n > 0, 100.0 * sums / np.maximum(n, 1), np.nan)
    return [float(v) for v in out]


def _apply_reference(rows: List[ResultRow], reference: Optional[str]) -> None:
    if reference is None or reference == "none":
        return
    methods = sorted({r.method for r in rows})
    if reference == "auto":
        if PLAIN_METHOD not in methods:
            return
        reference = PLAIN_METHOD
    ref_rows = [r for r in rows if r.method == reference or r.method.lower() == str(reference).lower()]
    if not ref_rows:
        raise ReportError(
            f"reference='{reference}' matches no row; methods in this report: {', '.join(methods)}. "
            "Pass one of them (e.g. --reference erm), or --reference none for no relative gains."
        )
    for recipe in sorted({r.recipe for r in rows}):
        refs = [r for r in ref_rows if r.recipe == recipe]
        if len(refs) > 1:
            raise ReportError(
                f"reference='{reference}' is ambiguous on {recipe}: its runs have different configs "
                f"({'; '.join(r.variant for r in refs)}). Report them from separate directories."
            )
        if not refs:
            continue
        ref = refs[0]
        ref.is_reference = True
        for row in rows:
            if row.recipe != recipe:
                continue
            for name in ("bacc", "gm"):
                base, value = ref.mean.get(name, float("nan")), row.mean.get(name, float("nan"))
                ok = not (math.isnan(base) or math.isnan(value) or base == 0)
                row.rel_gain[name] = 100.0 * (value - base) / base if ok else None


# ----------------------------------------------------------------------------------------------
# writing


def conventions(at: str, ddof: int, reference: Optional[str]) -> str:
    """The one-paragraph description of how the numbers were made (written above each table)."""
    when = "the best-validation epoch" if at == "best" else "the last epoch"
    std = "sample std, divisor n-1" if ddof == 1 else "population std, divisor n"
    text = (
        f"Test metrics at {when}, in %, mean ± std over n seeds ({std}). "
        "bACC = mean per-class recall; GM = geometric mean of per-class recalls."
    )
    if reference not in (None, "none"):
        text += (
            " rel. = relative gain against the reference row (ref), 100·(x − x_ref)/x_ref, "
            "computed from the unrounded means."
        )
    return text


def format_markdown(
    rows: Sequence[ResultRow],
    reference: Optional[str] = "auto",
    command: Optional[str] = None,
    figures: Dict[str, List[str]] = None,
    unfinished: Sequence[str] = (),
) -> str:
    """``results.md``: one table per recipe in the layout ``Loss | Re-balancing | bACC | GM``, the notes on
    its runs (M2m's g, a better epoch before T0), and the runs under the report's folders not finished yet."""
    figures = figures or {}
    has_ref = any(r.is_reference for r in rows)
    out = io.StringIO()
    out.write("# Results\n\n")
    if command:
        out.write(f"Command:\n\n```\n{command}\n```\n\n")
    if rows:
        out.write(conventions(rows[0].at, rows[0].ddof, reference if has_ref else None) + "\n\n")
    for recipe in sorted({r.recipe for r in rows}):
        rec_rows = [r for r in rows if r.recipe == recipe]
        out.write(f"## {recipe}\n\n")
        header = ["Loss", "Re-balancing", "bACC", "GM", "n"]
        align = ["---", "---", "---:", "---:", "---:"]
        if has_ref:
            header += ["rel. bACC", "rel. GM"]
            align += ["---:", "---:"]
        header.append("time/run (s)")
        align.append("---:")
        out.write("| " + " | ".join(header) + " |\n")
        out.write("| " + " | ".join(align) + " |\n")
        for r in rec_rows:
            reb = r.rebalance_label + (f" ({r.variant})" if r.variant else "")
            cells = [r.loss_label, reb, r.cell("bacc"), r.cell("gm"), str(r.n)]
            if has_ref:
                cells += [r.gain_cell("bacc"), r.gain_cell("gm")]
            cells.append("" if math.isnan(r.wall_seconds_mean) else f"{r.wall_seconds_mean:.1f}")
            out.write("| " + " | ".join(cells) + " |\n")
        out.write("\n")
        for name in figures.get(recipe, []):
            out.write(f"![{Path(name).stem}]({name})\n\n")
        for r in rec_rows:
            for note in r.notes:
                out.write(f"- {r.method}, {note}\n")
        out.write("\n" if any(r.notes for r in rec_rows) else "")
        out.write("<details><summary>runs</summary>\n\n")
        for r in rec_rows:
            out.write(
                f"- {r.method}{' (' + r.variant + ')' if r.variant else ''}: seeds "
                f"{', '.join(str(s) for s in r.seeds)}: {', '.join(r.run_dirs)}\n"
            )
        out.write("\n</details>\n\n")
    if unfinished:
        out.write("## Not finished yet\n\n")
        out.write("".join(f"- {line}\n" for line in unfinished) + "\n")
    return out.getvalue()


CSV_COLUMNS = [
    "recipe",
    "dataset",
    "method",
    "Loss",
    "Re-balancing",
    "variant",
    "bACC",
    "GM",
    "n_seeds",
    "seeds",
    "bacc_rel_gain_pct",
    "gm_rel_gain_pct",
    "at",
    "ddof",
]


def format_csv(rows: Sequence[ResultRow]) -> str:
    """``results.csv``: the markdown columns, then every metric's mean and std as plain numbers (%)."""
    columns = list(CSV_COLUMNS)
    for name in ROW_METRICS:
        columns += [f"{name}_mean", f"{name}_std"]
    columns += ["wall_seconds_mean", "is_reference", "run_dirs"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()

    def num(v: Optional[float]) -> str:
        return "" if v is None or math.isnan(v) else f"{v:.6g}"

    for r in rows:
        rec = {
            "recipe": r.recipe,
            "dataset": r.dataset,
            "method": r.method,
            "Loss": r.loss_label,
            "Re-balancing": r.rebalance_label,
            "variant": r.variant,
            "bACC": r.cell("bacc"),
            "GM": r.cell("gm"),
            "n_seeds": r.n,
            "seeds": " ".join(str(s) for s in r.seeds),
            "bacc_rel_gain_pct": num(r.rel_gain.get("bacc")),
            "gm_rel_gain_pct": num(r.rel_gain.get("gm")),
            "at": r.at,
            "ddof": r.ddof,
            "wall_seconds_mean": num(r.wall_seconds_mean),
            "is_reference": int(r.is_reference),
            "run_dirs": " ".join(r.run_dirs),
        }
        for name in ROW_METRICS:
            rec[f"{name}_mean"] = num(r.mean.get(name))
            rec[f"{name}_std"] = num(r.std.get(name))
        writer.writerow(rec)
    return buf.getvalue()


def report_figures(rows: Sequence[ResultRow], out: Path) -> Dict[str, List[str]]:
    """Class counts, per-class recall (head to tail) and validation curves per recipe, into ``out``.

    Returns ``{recipe: [file names relative to out]}``. Needs matplotlib.
    """
    written: Dict[str, List[str]] = {}
    recipes = sorted({r.recipe for r in rows})
    for recipe in recipes:
        prefix = "" if len(recipes) == 1 else f"{recipe}_"
        rec_rows = [r for r in rows if r.recipe == recipe]
        names: List[str] = []
        first = rec_rows[0]
        if first.train_counts:
            figs.plot_class_counts(
                first.train_counts,
                out / f"{prefix}class_counts.png",
                class_names=first.class_names,
                title=f"{recipe}: training samples per class",
            )
            names.append(f"{prefix}class_counts.png")
            curves = {r.label: r.per_class_recall for r in rec_rows if r.per_class_recall}
            at_epoch = "at the best-validation epoch" if first.at == "best" else "at the last epoch"
            if curves:
                figs.plot_per_class_recall(
                    curves,
                    first.train_counts,
                    out / f"{prefix}per_class_recall.png",
                    class_names=first.class_names,
                    percent=True,
                    title=f"{recipe}: test recall per class, head to tail (mean over seeds, {at_epoch})",
                )
                names.append(f"{prefix}per_class_recall.png")
        logs: Dict[str, List[List[Dict[str, Any]]]] = {}
        for r in rec_rows:
            seed_logs = [RunDir(d).read_log() for d in r.run_dirs if (RunDir(d) / RunDir.LOG).exists()]
            if seed_logs:
                logs[r.label] = seed_logs
        if logs:
            t0s = {figs._deferred_epoch(RunDir(r.run_dirs[0]).read_config() or {}) for r in rec_rows} - {None}
            figs.plot_training_curves(
                logs,
                out / f"{prefix}curves.png",
                deferred_epoch=t0s.pop() if len(t0s) == 1 else None,
                title=f"{recipe}: training curves (mean over seeds)",
            )
            names.append(f"{prefix}curves.png")
        written[recipe] = names
    return written


def write_report(
    paths_or_runs: Union[PathLike, Sequence[PathLike], Sequence[RunResult]],
    out: PathLike,
    at: str = "best",
    ddof: int = 1,
    reference: Optional[str] = "auto",
    order: Sequence[str] = (),
    figures: Optional[bool] = None,
    command: Optional[str] = None,
    log: Optional[Log] = print,
) -> List[ResultRow]:
    """Collect, summarize and write ``results.md``, ``results.csv`` (and figures) into ``out``.

    Args:
        paths_or_runs: directories to walk for ``summary.json``, or :class:`RunResult` objects.
        out: the report directory (created).
        at: as in :func:`summarize_runs`.
        ddof: as in :func:`summarize_runs`.
        reference: as in :func:`summarize_runs`.
        order: as in :func:`summarize_runs`.
        figures: True = write the PNG figures (error without matplotlib), False = none,
            None = write them when matplotlib is installed.
        command: the command line that produced the runs, recorded in ``results.md``.
    Returns:
        the table rows (:class:`ResultRow`).
    """

    log = log or (lambda s: None)
    if isinstance(paths_or_runs, (str, os.PathLike)):
        paths_or_runs = [paths_or_runs]
    items = list(paths_or_runs)
    runs = items if items and all(isinstance(i, RunResult) for i in items) else collect_runs(items)
    rows = summarize_runs(runs, at=at, ddof=ddof, reference=reference, order=order)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fig_names: Dict[str, List[str]] = {}
    if figures is not False:
        try:
            fig_names = report_figures(rows, out)
        except MissingDependencyError as exc:
            if figures:
                raise
            log(f"[report] figures skipped: {exc}")
    unfinished = unfinished_runs(items) if not isinstance(items[0], RunResult) else []
    atomic_write_text(out / "results.md", format_markdown(rows, reference, command, fig_names, unfinished))
    atomic_write_text(out / "results.csv", format_csv(rows))
    atomic_write_text(
        out / "results.json", json.dumps([r.as_dict() for r in rows], indent=1, default=str, allow_nan=True) + "\n"
    )
    log(f"[report] {len(rows)} rows from {len(runs)} runs -> {out / 'results.md'}, {out / 'results.csv'}")
    for line in unfinished:
        log(f"[report] not finished yet: {line}")
    return rows


def unfinished_runs(paths: Sequence[PathLike]) -> List[str]:
    """The run directories under ``paths`` that started and have not finished: ``"DIR: epoch E of N"``
    (from its log.csv and config.yaml), so a report on a grid still training shows what it lacks."""
    found = []
    for p in map(Path, paths):
        if not p.is_dir():
            continue
        for cfg in sorted(p.rglob(RunDir.CONFIG)):
            run = RunDir(cfg.parent)
            hidden = [x for x in run.path.relative_to(p).parts if x.startswith(".")]
            if run.finished or any(x not in (".prefix", ".generators") for x in hidden):
                continue  # a shared prefix or a g still training is part of what the grid lacks; a cache is not
            what = {".prefix": "shared prefix ", ".generators": "g "}.get(hidden[0], "") if hidden else ""
            found.append(f"{what}{run}: {run.progress()}")
    return found


def default_out(paths: Sequence[PathLike]) -> Path:
    """``DIR/report`` for one directory, ``COMMON_PARENT/report`` for several."""
    resolved = [Path(p).resolve() for p in paths]
    resolved = [p.parent if p.is_file() else p for p in resolved]
    if len(resolved) == 1:
        return resolved[0] / "report"
    return Path(os.path.commonpath([str(p) for p in resolved])) / "report"


__all__ = [
    "RunResult",
    "ResultRow",
    "ReportError",
    "collect_runs",
    "load_run",
    "summarize_runs",
    "mean_std",
    "format_markdown",
    "format_csv",
    "write_report",
    "report_figures",
    "default_out",
    "config_signature",
]
