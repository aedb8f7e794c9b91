"""Figures (PNG, matplotlib's Agg canvas): class counts, per-class recall, training curves, translations.

matplotlib is a dependency of the package, imported only when a figure is drawn (importing it costs
about a second); a broken install without it raises :class:`MissingDependencyError` with the fix.  The
figures are drawn on :class:`matplotlib.figure.Figure` objects with an explicit Agg canvas, so this
module never touches pyplot's global state or the user's chosen backend (safe in notebooks and
worker processes), and each PNG is written atomically.

* :func:`plot_class_counts` - training samples per class, sorted, log-scale y (supplement, Figure 1)
* :func:`plot_per_class_recall` - recall per class (%) from head to tail, one line per method
* :func:`plot_training_curves` - train loss, validation bACC (and GM), M2m acceptance rate per epoch
* :func:`translation_gallery` - seeds and their translations with g's confidence and accepted yes/no
* :func:`write_run_figures` - the per-run figures, written into a run directory after training

:func:`per_class_recall_figure` and :func:`training_curves_figure` return the drawn
:class:`~matplotlib.figure.Figure` without writing it (for notebooks and tests).

How the figures read:

* Everything shown is in percent (log files hold fractions); axes with a log scale show plain
  numbers (``5 10 20 50``), never ``2×10¹``.
* Training curves: the best-validation epoch is a star on the validation curve (the engine's rule:
  the *last* epoch with the highest validation bACC); T0 is a dotted line between epochs T0 and T0+1
  (``train.deferred_epoch`` is 0-based, the first re-balanced epoch is T0+1); several seeds are drawn
  as their per-epoch mean with a shaded ± 1 std band (sample std, divisor n-1).
* Lines that would hide each other: when a method's drawn series equals an earlier method's (DRS and
  M2m equal ERM until T0; LDAM-DRW equals LDAM when every best epoch is before T0), its identical
  stretch is drawn dashed over the other line, dashes offset so each colour stays visible, and the
  legend says so: ``DRS (= ERM to epoch 45)`` or ``LDAM-DRW (= LDAM)``.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from major2minor.atomic import atomic_write_bytes
from major2minor.display import percent as fmt_percent
from major2minor.errors import MissingDependencyError
from major2minor.registry import REBALANCERS, method_label
from major2minor.runlog import LogRows, read_log

PathLike = Union[str, Path]
Series = Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]  # epochs, mean, std over seeds (None for one)


def _require_matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingDependencyError(
            "figures need matplotlib, a dependency of major2minor that is missing from this environment; "
            "reinstall with `pip install major2minor` (or `pip install matplotlib`), or turn figures off "
            "(`m2m report --no-figures`)."
        ) from exc
    return Figure, FigureCanvasAgg


def _new_figure(width: float, height: float, nrows: int = 1, ncols: int = 1):
    Figure, FigureCanvasAgg = _require_matplotlib()
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(fig, path: PathLike, dpi: int = 120) -> Path:
    """Render to PNG in memory, then write atomically (a crash never leaves half a file)."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"path='{path}' must end in .png; figures are written as PNG files.")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _check_png(path: PathLike) -> None:
    """Refuse a wrong suffix before anything is drawn."""
    if Path(path).suffix.lower() != ".png":
        raise ValueError(f"path='{path}' must end in .png; figures are written as PNG files.")


def _tick_labels(ax, positions: Sequence[int], labels: Sequence[str], max_labels: int = 30) -> None:
    if len(labels) <= max_labels:
        ax.set_xticks(list(positions))
        long = max(len(s.split("\n")[0]) for s in labels) > 3
        ax.set_xticklabels(list(labels), rotation=90 if long else 0, fontsize=8)


def _order_head_to_tail(counts: Sequence[int]) -> np.ndarray:
    """Class indices by training count, largest first (ties keep class order, as the metrics do)."""
    return np.argsort(-np.asarray(counts, dtype=np.float64), kind="stable")


def log_ticks(lo: float, hi: float, max_ticks: int = 8) -> List[float]:
    """Plain tick values for a log axis from ``lo`` to ``hi`` (> 0): 1-2-5 steps, else 1-3 steps, else
    powers of ten, whichever first gives at most ``max_ticks`` ticks (never fewer than two)."""
    lo, hi = max(float(lo), 1e-12), max(float(hi), 1e-12)
    decades = range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
    ticks: List[float] = []
    for steps in ((1, 2, 5), (1, 3), (1,)):
        ticks = [float(f"{s * 10.0**k:.12g}") for k in decades for s in steps if lo <= s * 10.0**k <= hi * (1 + 1e-9)]
        if len(ticks) <= max_ticks:
            break
    return ticks if len(ticks) >= 2 else sorted({float(f"{lo:.3g}"), float(f"{hi:.3g}")})


def _plain_log_axis(axis, lo: float, hi: float, max_ticks: int = 8) -> None:
    """Log-scale ``axis`` (ax.xaxis / ax.yaxis) labelled ``5 10 20 50`` instead of ``2×10¹``."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    axis.set_major_locator(FixedLocator(log_ticks(lo, hi, max_ticks)))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


# ----------------------------------------------------------------------------------------------
# class counts and per-class recall


def plot_class_counts(
    counts: Sequence[int], path: PathLike, class_names: Optional[Sequence[str]] = None, title: Optional[str] = None
) -> Path:
    """Bar chart of training samples per class, sorted from head to tail, log-scale y (plain tick numbers).

    Args:
        counts: samples per class, in class order.
        path: the PNG to write.
        class_names: tick labels (shown for up to 30 classes; otherwise the x axis is the rank).
    """
    counts = [int(c) for c in counts]
    if not counts:
        raise ValueError("counts=[] is empty; pass the training samples per class (e.g. summary['train_counts']).")
    if any(c < 0 for c in counts):
        raise ValueError(f"counts={counts} holds negative numbers; pass samples per class (>= 0).")
    _check_png(path)
    order = _order_head_to_tail(counts)
    sorted_counts = [counts[i] for i in order]
    fig, axes = _new_figure(max(4.0, min(12.0, 0.35 * len(counts) + 2)), 3.2)
    ax = axes[0, 0]
    ax.bar(range(len(counts)), [max(c, 0.5) for c in sorted_counts], color="#4C72B0", width=0.85)
    ax.set_yscale("log")
    _plain_log_axis(ax.yaxis, max(min(sorted_counts), 1), max(sorted_counts))
    ax.set_ylabel("training samples")
    nonzero = [c for c in counts if c > 0]
    rho = max(counts) / min(nonzero) if nonzero else float("nan")
    ax.set_xlabel("class (sorted by training count)")
    names = [str(class_names[i]) if class_names else str(i) for i in order]
    _tick_labels(ax, range(len(counts)), names)
    ax.set_title(title or f"{len(counts)} classes, {sum(counts)} samples, imbalance ratio {rho:.1f}", fontsize=10)
    ax.grid(axis="y", which="major", alpha=0.3)
    return _save(fig, path)


def _recall_values(
    curves: Mapping[str, Sequence[Optional[float]]], counts: List[int], percent: Optional[bool]
) -> Dict[str, np.ndarray]:
    """``{label: recall per class in %}`` (fractions or % in, detected unless ``percent`` is given)."""
    if not curves:
        raise ValueError("curves={} is empty; pass {label: per-class recall} for at least one method.")
    for label, rec in curves.items():
        if len(rec) != len(counts):
            raise ValueError(
                f"curves['{label}'] has {len(rec)} classes but train_counts has {len(counts)}; "
                "pass recalls and counts of the same data set."
            )
    values = {
        str(k): np.array([np.nan if v is None else float(v) for v in rec], dtype=np.float64)
        for k, rec in curves.items()
    }
    if percent is None:
        percent = any(np.nanmax(v) > 1.0 + 1e-9 for v in values.values() if np.isfinite(v).any())
    return {k: v * (1.0 if percent else 100.0) for k, v in values.items()}


def _same_recall(values: Dict[str, np.ndarray]) -> Dict[str, str]:
    """``{label: earlier label}`` for methods whose recall per class equals an earlier method's."""
    same: Dict[str, str] = {}
    labels = list(values)
    for i, label in enumerate(labels):
        for ref in labels[:i]:
            if ref not in same and np.allclose(values[label], values[ref], rtol=1e-9, atol=1e-9, equal_nan=True):
                same[label] = ref
                break
    return same


def per_class_recall_figure(
    curves: Mapping[str, Sequence[Optional[float]]],
    train_counts: Sequence[int],
    class_names: Optional[Sequence[str]] = None,
    title: Optional[str] = None,
    percent: Optional[bool] = None,
):
    """The figure :func:`plot_per_class_recall` writes, returned unsaved (a matplotlib ``Figure``)."""
    counts = [int(c) for c in train_counts]
    values = _recall_values(curves, counts, percent)
    order = _order_head_to_tail(counts)
    n = len(counts)
    fig, axes = _new_figure(max(6.0, min(13.0, 0.45 * n + 3.5)), 4.4)
    ax = axes[0, 0]
    bars = ax.twinx()
    sorted_counts = [counts[i] for i in order]
    bars.bar(range(n), [max(c, 0.5) for c in sorted_counts], color="0.88", width=0.85, zorder=0)
    bars.set_yscale("log")
    _plain_log_axis(bars.yaxis, max(min(sorted_counts), 1), max(max(sorted_counts), 1))
    bars.set_ylabel("training samples (grey bars)", color="0.4")
    bars.tick_params(axis="y", colors="0.4")
    ax.set_zorder(bars.get_zorder() + 1)
    ax.patch.set_visible(False)
    _draw_recall_lines(ax, values, order, marker="o" if n <= 40 else None)
    ax.set_ylim(-2, 102)
    ax.set_ylabel("test recall (%)")
    names = [str(class_names[i]) if class_names else str(i) for i in order]
    short = max(len(s) for s in names) <= 3
    ticks = [f"{s}\n{c}" if short else f"{s} ({c})" for s, c in zip(names, sorted_counts)]
    _tick_labels(ax, range(n), ticks)
    ax.set_xlabel("class, head → tail" + (" (tick: class, then its training samples)" if short and n <= 30 else ""))
    ax.set_xlim(-0.6, n - 0.4)
    ax.grid(alpha=0.3)
    from matplotlib.patches import Patch

    handles, labels = ax.get_legend_handles_labels()
    handles.append(Patch(color="0.88"))
    labels.append("training samples")
    ncol = min(len(labels), 6)
    ax.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 1.01), ncol=ncol, fontsize=8, frameon=False)
    fig.suptitle(title or "per-class test recall, head to tail", fontsize=10)
    return fig


def _draw_recall_lines(ax, values: Dict[str, np.ndarray], order: np.ndarray, marker: Optional[str]) -> None:
    """One line per method; one equal to an earlier method's is dashed over it and named ``X (= Y)``."""
    same = _same_recall(values)
    colors: Dict[str, str] = {}
    for i, (label, v) in enumerate(values.items()):
        colors[label] = f"C{i % 10}"
        ref = same.get(label)
        overlays = [k for k, r in same.items() if r == ref] if ref else []
        style: Any = _dashes(overlays.index(label), len(overlays)) if ref else "-"
        ax.plot(
            range(len(order)),
            v[order],
            marker=marker,
            markersize=3.5 if ref else 4,
            fillstyle="none" if ref else "full",
            linewidth=1.5,
            linestyle=style,
            color=colors[label],
            label=f"{label} (= {ref})" if ref else label,
        )


def plot_per_class_recall(
    curves: Mapping[str, Sequence[Optional[float]]],
    train_counts: Sequence[int],
    path: PathLike,
    class_names: Optional[Sequence[str]] = None,
    title: Optional[str] = None,
    percent: Optional[bool] = None,
) -> Path:
    """Recall per class (%) ordered from head (most training samples) to tail, one line per method.

    The training samples per class are grey bars on a log axis with plain tick numbers (right), and,
    for up to 30 classes, the second line of each class's tick label.  The legend sits above the
    axes.  A method whose recalls equal an earlier method's is drawn dashed and named ``X (= Y)``.

    Args:
        curves: ``{label: recall per class, in class order}``; values in [0, 1] or in % (detected, or
            set ``percent``); ``None``/NaN for classes absent from the split.
        train_counts: training samples per class (decide the head-to-tail order; drawn as grey bars).
        path: the PNG to write.
    """
    _check_png(path)
    return _save(per_class_recall_figure(curves, train_counts, class_names, title, percent), path)


# ----------------------------------------------------------------------------------------------
# training curves


def _by_epoch(rows: LogRows, key: str) -> Dict[int, float]:
    d = {}
    for r in rows:
        v, e = r.get(key), r.get("epoch")
        if isinstance(v, float) and isinstance(e, float) and not math.isnan(v):
            d[int(e)] = v
    return d


def series_stats(logs: Sequence[LogRows], key: str) -> Series:
    """Epochs (1-based, as in log.csv) present in every log, and the mean and std over logs of ``key``.

    The std is the sample std (divisor n-1), None for a single log; all arrays are empty when a log
    has no value of ``key``.
    """
    epochs, values = _seed_values(logs, key)
    if not len(epochs):
        return epochs, np.array([]), None
    std = values.std(axis=0, ddof=1) if len(values) > 1 else None
    return epochs, values.mean(axis=0), std


def _seed_values(logs: Sequence[LogRows], key: str) -> Tuple[np.ndarray, np.ndarray]:
    """Epochs present in every log, and ``key`` per log (rows) at those epochs (columns)."""
    per_log = [_by_epoch(rows, key) for rows in logs]
    if not per_log or not all(per_log):
        return np.array([], dtype=int), np.zeros((len(per_log), 0))
    epochs = sorted(set.intersection(*(set(d) for d in per_log)))
    values = np.array([[d[e] for e in epochs] for d in per_log], dtype=np.float64).reshape(len(per_log), -1)
    return np.array(epochs, dtype=int), values


def best_val_epoch(logs: Sequence[LogRows]) -> Optional[int]:
    """The best-validation epoch (1-based) the curves mark with a star.

    One log: the engine's own choice, the last row's ``best_epoch``; without that column, the LAST
    epoch with the highest ``val_bacc`` (the engine keeps the latest of equal values, ``val >= best``).
    Several logs (seeds): the last epoch with the highest mean ``val_bacc``, where the star sits on
    the drawn mean curve (each seed's own best epoch still decides its test metrics).
    """
    if len(logs) == 1:
        marked = [r["best_epoch"] for r in logs[0] if isinstance(r.get("best_epoch"), float)]
        if marked and not math.isnan(marked[-1]):
            return int(marked[-1])
    epochs, mean, _ = series_stats(logs, "val_bacc")
    if not len(epochs):
        return None
    return int(epochs[len(mean) - 1 - int(np.argmax(mean[::-1]))])


def overall_acceptance(logs: Sequence[LogRows]) -> Optional[float]:
    """M2m's acceptance over the whole run(s), a fraction: accepted / slots summed over epochs (and
    seeds), or the mean of the per-epoch rates when the counts are not logged; None without M2m."""
    rows = [r for rows in logs for r in rows if isinstance(r.get("m2m_acceptance"), float)]
    if not rows:
        return None
    if all(isinstance(r.get("m2m_accepted"), float) and isinstance(r.get("m2m_slots"), float) for r in rows):
        slots = sum(r["m2m_slots"] for r in rows)
        if slots > 0:
            return sum(r["m2m_accepted"] for r in rows) / slots
    return float(np.nanmean([r["m2m_acceptance"] for r in rows]))


def acceptance_ylim(values_pct: Sequence[float], min_top: float = 0.5) -> Tuple[float, float]:
    """The acceptance axis (in %): 0 to 15% above the largest value, at least ``min_top`` (0.5%) so
    that rates under 1% do not lie flat on zero, and at most a little above 100%."""
    finite = [float(v) for v in values_pct if v is not None and math.isfinite(float(v))]
    top = max(finite) * 1.15 if finite else 0.0
    return 0.0, max(min_top, min(top, 105.0), max(finite, default=0.0))


@dataclass
class _Curve:
    """One legend entry of the curves: its logs (seeds), and the earlier entry its lines coincide with."""

    label: str
    logs: List[LogRows]
    same_as: Optional[str] = None  # the earlier entry whose drawn series this one's equal
    same_until: Optional[int] = None  # last epoch of that identical stretch; None = the whole run
    dashes: Any = "-"

    def get(self, key: str) -> Series:
        return series_stats(self.logs, key)

    @property
    def legend(self) -> str:
        if not self.same_as:
            return self.label
        return f"{self.label} (= {self.same_as}" + (f" to epoch {self.same_until})" if self.same_until else ")")


#: The series whose equality makes two entries' lines coincide (loss and validation panels).
_SAME_KEYS = ("train_loss", "val_bacc")


def _equal(a: Series, b: Series) -> np.ndarray:
    n = min(len(a[0]), len(b[0]))
    return (a[0][:n] == b[0][:n]) & np.isclose(a[1][:n], b[1][:n], rtol=1e-9, atol=1e-12)


def identical_stretch(a: Sequence[LogRows], b: Sequence[LogRows]) -> Tuple[Optional[int], bool]:
    """Where the curves of ``a`` and ``b`` (lists of logs) coincide: ``(last epoch of the identical
    stretch from the first epoch, whether they are identical everywhere)``; ``(None, False)`` when they
    differ before their second epoch.  Compared: the mean train loss and validation bACC (the lines
    that would hide each other)."""
    last: Optional[int] = None
    whole = True
    for key in _SAME_KEYS:
        sa, sb = series_stats(a, key), series_stats(b, key)
        if not len(sa[0]) and not len(sb[0]):
            continue
        same = _equal(sa, sb)
        k = len(same) if same.all() else int(np.argmin(same))
        whole = whole and k == len(sa[0]) == len(sb[0])
        if k < 2:
            return None, False
        last = int(sa[0][k - 1]) if last is None else min(last, int(sa[0][k - 1]))
    return (last, whole) if last is not None else (None, False)


def _dashes(k: int, n: int) -> Tuple[float, Tuple[float, float]]:
    """The k-th of n lines drawn over one reference line: dashes offset so that every colour shows."""
    return (4.0 * k, (4.0, 4.0 * n))


def _link_identical(curves: List[_Curve]) -> None:
    """Name, for each entry, the earlier entry its lines coincide with longest (a whole match first)."""
    for i, c in enumerate(curves):
        best: Optional[Tuple[bool, int, _Curve]] = None
        for ref in curves[:i]:
            if ref.same_as and ref.same_until is None:
                continue  # equal to an earlier one everywhere: compare with that one instead
            last, whole = identical_stretch(c.logs, ref.logs)
            if last is not None and (best is None or (whole, last) > best[:2]):
                best = (whole, last, ref)
        if best:
            c.same_as, c.same_until = best[2].label, None if best[0] else best[1]
    for ref in curves:
        overlays = [c for c in curves if c.same_as == ref.label]
        for k, c in enumerate(overlays):
            c.dashes = _dashes(k, len(overlays))


def _as_logs(v: Any) -> List[LogRows]:
    if isinstance(v, (str, Path)):
        return [read_log(v)]
    if isinstance(v, list) and v and isinstance(v[0], dict):
        return [v]
    if isinstance(v, list) and all(isinstance(x, (list, str, Path)) for x in v):
        return [read_log(x) if isinstance(x, (str, Path)) else x for x in v]
    raise ValueError(
        f"logs entry of type {type(v).__name__} is not a log.csv path, a list of rows or a "
        "list of those; pass e.g. run_dir / 'log.csv'."
    )


def _curves_from(logs: Union[PathLike, LogRows, Mapping[str, Any]]) -> List[_Curve]:
    named = {str(k): _as_logs(v) for k, v in logs.items()} if isinstance(logs, Mapping) else {"": _as_logs(logs)}
    if not named or not any(any(rows for rows in v) for v in named.values()):
        raise ValueError("logs hold no rows; a run writes log.csv rows after each epoch.")
    curves = [_Curve(label, v) for label, v in named.items()]
    _link_identical(curves)
    return curves


def _plot_series(ax, curve: _Curve, key: str, color: str, scale: float = 1.0, overlay: bool = True, **kw):
    """Mean line (+ shaded ± std band over seeds); the stretch identical to an earlier entry is dashed
    (unless ``overlay`` is False). Returns the line that stands for the entry in a legend (None without data).

    On a log axis, where mean - std is not positive, the band stops at the lowest seed's value."""
    epochs, mean, std = curve.get(key)
    if not len(epochs):
        return None
    y = scale * mean
    if std is not None:
        low = y - scale * std
        if ax.get_yscale() == "log":
            low = np.where(low > 0, low, scale * _seed_values(curve.logs, key)[1].min(axis=0))
        ax.fill_between(epochs, low, y + scale * std, color=color, alpha=0.15, linewidth=0, gid="band")
    cut = 0
    if curve.same_as and overlay:
        cut = len(epochs) if curve.same_until is None else int(np.searchsorted(epochs, curve.same_until, "right"))
    handle = None
    if cut:
        handle = ax.plot(epochs[:cut], y[:cut], color=color, linestyle=curve.dashes, gid="identical")[0]
    if cut < len(epochs):
        start = max(cut - 1, 0)
        handle = ax.plot(epochs[start:], y[start:], color=color, **kw)[0]
    return handle


def _mark_best(ax, curve: _Curve, color: str) -> Optional[Tuple[Any, int, float]]:
    """A star on the validation curve at the best-validation epoch: (the star, epoch, val bACC)."""
    best = best_val_epoch(curve.logs)
    epochs, mean, _ = curve.get("val_bacc")
    if best is None or best not in set(epochs.tolist()):
        return None
    value = float(mean[list(epochs).index(best)])
    star = ax.plot(
        [best], [100 * value], marker="*", markersize=13, color=color, markeredgecolor="black",
        markeredgewidth=0.6, linestyle="none", zorder=5, gid="best-epoch",
    )[0]  # fmt: skip
    return star, best, value


Entries = List[Tuple[Any, str]]  # (legend handle, legend text)


def _draw_loss_and_val(axes, curves: List[_Curve], single: bool) -> Entries:
    """Loss and validation panels; returns the legend entries (methods with their best epochs)."""
    ax_loss, ax_val = axes[0, 0], axes[0, 1]
    _loss_scale(ax_loss, curves)
    entries: Entries = []
    for i, c in enumerate(curves):
        color = f"C{i % 10}"
        _plot_series(ax_loss, c, "train_loss", color)
        line = _plot_series(ax_val, c, "val_bacc", color, 100.0)
        best = _mark_best(ax_val, c, color)
        if single:
            gm = _plot_series(ax_val, c, "val_gm", color, 100.0, linestyle="--")
            entries += [(line, c.legend or "val bACC"), (gm, (c.label + " GM") if c.label else "val GM")]
            if best:
                entries.append((best[0], f"best val epoch {best[1]} (val bACC {fmt_percent(best[2])})"))
        else:
            entries.append((line, c.legend + (f", best val epoch {best[1]}" if best else "")))
    ax_val.set_title("validation bACC" + (" and GM" if single else "") + " (%)", fontsize=10)
    ax_val.set_ylabel("%")
    _loss_ticks(ax_loss, curves)
    return [(h, t) for h, t in entries if h is not None]


def _loss_scale(ax, curves: List[_Curve]) -> None:
    """A log y axis (plain tick numbers) when the losses span more than a factor 20: the small losses
    late in training, and the jump when re-balancing starts, stay visible next to epoch 1."""
    values = np.concatenate([c.get("train_loss")[1] for c in curves] + [np.array([])])
    values = values[np.isfinite(values)]
    log = bool(len(values)) and values.min() > 0 and values.max() / values.min() > 20
    if log:
        ax.set_yscale("log")
    ax.set_title("training loss" + (" (log scale)" if log else ""), fontsize=10)
    ax.set_ylabel("loss")


def _loss_ticks(ax, curves: List[_Curve]) -> None:
    """On the log loss axis: the bottom at a quarter of the lowest mean (bands reaching further down are
    cut), and plain tick numbers over the visible range."""
    if ax.get_yscale() != "log":
        return
    lowest = min(float(np.nanmin(c.get("train_loss")[1])) for c in curves if len(c.get("train_loss")[0]))
    ax.autoscale_view()
    bottom, top = ax.get_ylim()
    ax.set_ylim(max(bottom, lowest / 4), top)
    _plain_log_axis(ax.yaxis, *ax.get_ylim(), max_ticks=7)


def _draw_acceptance(ax, curves: List[_Curve]) -> None:
    """M2m's acceptance (%) per epoch, the axis scaled to the data, and the overall rate in a box."""
    tops, lines = [], []
    with_acc = {c.label for c in curves if len(c.get("m2m_acceptance")[0])}
    for i, c in enumerate(curves):
        epochs, mean, std = c.get("m2m_acceptance")
        if not len(epochs):
            continue
        _plot_series(ax, c, "m2m_acceptance", f"C{i % 10}", 100.0, overlay=c.same_as in with_acc, marker=".")
        tops.extend(100 * (mean + (std if std is not None else 0.0)))
        lines.append((f"{c.label}: " if c.label else "") + fmt_percent(overall_acceptance(c.logs)))
    ax.set_ylim(*acceptance_ylim(tops))
    ax.set_title("M2m acceptance (% of slots)", fontsize=10)
    ax.set_ylabel("%")
    ax.text(
        0.03, 0.96, "mean over the run\n" + "\n".join(lines), transform=ax.transAxes, va="top", fontsize=8,
        bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.7", "alpha": 0.9}, gid="acceptance-mean",
    )  # fmt: skip


def _draw_t0(axes, t0: int) -> Tuple[Any, str]:
    """The dotted T0 line between epochs T0 and T0+1 in every panel; returns its legend entry."""
    from matplotlib.transforms import blended_transform_factory

    line = None
    for ax in axes:
        line = ax.axvline(t0 + 0.5, color="0.3", linestyle=":", linewidth=1.3, gid="t0")
        trans = blended_transform_factory(ax.transData, ax.transAxes)
        ax.text(t0 + 0.5, 0.99, " T0", transform=trans, va="top", ha="left", fontsize=7, color="0.3")
    return line, f"T0 = {t0}: re-balancing from epoch {t0 + 1}"


def _style_epoch_axes(axes, curves: List[_Curve]) -> None:
    from matplotlib.ticker import MaxNLocator

    last = max((int(c.get("train_loss")[0].max()) for c in curves if len(c.get("train_loss")[0])), default=1)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.set_xlabel("epoch")
        ax.set_xlim(0, last + 1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def training_curves_figure(
    logs: Union[PathLike, LogRows, Mapping[str, Any]],
    title: Optional[str] = None,
    deferred_epoch: Optional[int] = None,
):
    """The figure :func:`plot_training_curves` writes, returned unsaved (a matplotlib ``Figure``)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    curves = _curves_from(logs)
    single = len(curves) == 1
    has_acc = any(len(c.get("m2m_acceptance")[0]) for c in curves)
    panels = 3 if has_acc else 2
    fig, axes = _new_figure(4.4 * panels, 3.9, 1, panels)
    entries = _draw_loss_and_val(axes, curves, single)
    if has_acc:
        _draw_acceptance(axes[0, 2], curves)
    _style_epoch_axes(axes[0], curves)
    seeds = sorted({len(c.logs) for c in curves if len(c.logs) > 1})
    if not single:
        star = Line2D([], [], marker="*", markersize=11, color="0.6", markeredgecolor="black", linestyle="none")
        entries.append((star, "best val epoch" + (" (max of the mean curve)" if seeds else "")))
    if deferred_epoch is not None:
        entries.append(_draw_t0(axes[0], int(deferred_epoch)))
    if seeds:
        entries.append((Patch(color="0.5", alpha=0.3), f"shaded: ± 1 std over {'/'.join(map(str, seeds))} seeds"))
    if entries:
        handles, labels = zip(*entries)
        ncol = 3 if not single else min(len(entries), 4)
        fig.legend(handles, labels, loc="outside lower center", ncol=ncol, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_training_curves(
    logs: Union[PathLike, LogRows, Mapping[str, Any]],
    path: PathLike,
    title: Optional[str] = None,
    deferred_epoch: Optional[int] = None,
) -> Path:
    """Per-epoch curves: training loss, validation bACC (and GM for one run), and M2m's acceptance (%).

    * Best-validation epoch: a star on each validation curve (see :func:`best_val_epoch`).
    * T0: a dotted line at T0 + 0.5 in every panel, labelled "T0 = 45: re-balancing from epoch 46".
    * Several logs per entry (seeds): the per-epoch mean, with a shaded ± 1 std band.
    * Entries whose lines coincide (see :func:`identical_stretch`): the later one dashed over the
      earlier one on their identical stretch, and ``(= ERM to epoch 45)`` / ``(= LDAM)`` in the legend.
    * Acceptance panel: y from 0 to a little above the largest rate (see :func:`acceptance_ylim`), and
      the run's overall acceptance in a box.

    Args:
        logs: one run (a ``log.csv`` path or its rows from :func:`read_log`), or ``{label: run}`` for
            several, where a run may also be a list of logs (seeds), drawn as their per-epoch mean.
        path: the PNG to write. The acceptance panel appears when a log has ``m2m_acceptance`` values.
        deferred_epoch: T0 (0-based, as ``train.deferred_epoch``); drawn as a dotted line where the
            deferred re-balancing (DRS, DRW, M2m) switches on.
    """
    _check_png(path)
    return _save(training_curves_figure(logs, title, deferred_epoch), path)


# ----------------------------------------------------------------------------------------------
# translation gallery


def _to_numpy(name: str, value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if str(getattr(value, "dtype", "")) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    return np.asarray(value)


def _as_images(name: str, x: Any) -> np.ndarray:
    """(N, C, H, W) / (N, H, W, C) / (N, H, W), uint8 or float in [0, 1] -> float (N, H, W, C) in [0, 1]."""
    a = _to_numpy(name, x)
    if a.ndim == 3:
        a = a[..., None]
    elif a.ndim == 4 and a.shape[1] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(0, 2, 3, 1)
    elif a.ndim != 4:
        raise ValueError(
            f"{name} has shape {tuple(a.shape)}; translation_gallery needs images shaped (N, C, H, W), "
            "(N, H, W, C) or (N, H, W). For non-image data (text features, embeddings) there is "
            "no gallery; look at the per-epoch m2m_* statistics in log.csv instead."
        )
    if a.shape[-1] not in (1, 3):
        raise ValueError(f"{name} has {a.shape[-1]} channels (shape {tuple(a.shape)}); images need 1 or 3 channels.")
    a = a.astype(np.float64) / (255.0 if a.dtype == np.uint8 else 1.0)
    return np.clip(a, 0.0, 1.0)


def _gallery_inputs(seeds: Any, translations: Any, per_item: Dict[str, Any]):
    """Images as float (N, H, W, C) and the per-item arrays, each checked to hold one entry per seed."""
    xs, xt = _as_images("seeds", seeds), _as_images("translations", translations)
    n = len(xs)
    if n == 0:
        raise ValueError("seeds is empty; pass at least one seed and its translation.")
    if xt.shape != xs.shape:
        raise ValueError(
            f"translations has shape {xt.shape} but seeds has {xs.shape} (as (N, H, W, C)); "
            "pass each seed's translation, in the same order and shape."
        )
    arrays = {}
    for name, v in per_item.items():
        arr = _to_numpy(name, v).reshape(-1)
        if len(arr) != n:
            raise ValueError(f"{name} has {len(arr)} entries but seeds has {n}; pass one per seed.")
        arrays[name] = arr
    return xs, xt, arrays


def _gallery_column(axes, j: int, seed_img, trans_img, item: Dict[str, Any], cname: Callable[[Any], str]) -> None:
    """Column ``j``: the seed above its translation, captioned, framed green (accepted) or red."""
    gray = seed_img.shape[-1] == 1
    for row, img in ((0, seed_img), (1, trans_img)):
        ax = axes[row, j]
        ax.imshow(img[..., 0] if gray else img, cmap="gray" if gray else None, vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
    ok = bool(item["accepted"])
    color = "#1a7f37" if ok else "#b3261e"
    axes[0, j].set_title(f"seed: {cname(item['seed_labels'])}", fontsize=7)
    axes[1, j].set_title(
        f"→ {cname(item['target_labels'])}\ng={float(item['g_conf']):.2f}\naccepted: {'yes' if ok else 'no'}",
        fontsize=7,
        color=color,
    )
    for side in axes[1, j].spines.values():
        side.set_edgecolor(color)
        side.set_linewidth(2)


def translation_gallery(
    seeds: Any,
    translations: Any,
    seed_labels: Sequence[int],
    target_labels: Sequence[int],
    g_conf: Sequence[float],
    accepted: Sequence[bool],
    path: PathLike,
    class_names: Optional[Sequence[str]] = None,
    max_items: int = 16,
    title: Optional[str] = None,
) -> Path:
    """Seeds (top row) and their translations (bottom row), one column per slot.

    Each column is captioned with the seed's class, the target class, g's softmax probability of the
    target class on the translation, and whether it was accepted (yes/no, green/red).

    Args:
        seeds, translations: images of equal shape, (N, C, H, W), (N, H, W, C) or (N, H, W); float in
            [0, 1] (the data's natural space) or uint8; numpy arrays or tensors.
        seed_labels, target_labels: class of each seed and the class it was translated to (length N).
        g_conf: g's probability of the target class on each translation (length N, in [0, 1]).
        accepted: whether each translation was accepted (length N).
        path: the PNG to write.
        class_names: names for the class indices.
        max_items: at most this many columns (the first ones) are drawn.
    """
    if max_items < 1:
        raise ValueError(f"max_items={max_items} must be >= 1.")
    per_item = {"seed_labels": seed_labels, "target_labels": target_labels, "g_conf": g_conf, "accepted": accepted}
    xs, xt, arrays = _gallery_inputs(seeds, translations, per_item)
    k = min(len(xs), max_items)

    def cname(c: Any) -> str:
        c = int(c)
        return str(class_names[c]) if class_names is not None and 0 <= c < len(class_names) else str(c)

    fig, axes = _new_figure(max(2.0, 1.25 * k), 3.3, 2, k)
    for j in range(k):
        _gallery_column(axes, j, xs[j], xt[j], {name: arr[j] for name, arr in arrays.items()}, cname)
    axes[0, 0].set_ylabel("seed", fontsize=8)
    axes[1, 0].set_ylabel("translation", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


# ----------------------------------------------------------------------------------------------
# per run


@dataclass
class _RunInfo:
    """What the per-run figures say about a run: its name, counts, T0 and files."""

    run_dir: Path
    label: str
    heading: str  # "M2m · digits-lt · seed 0"
    counts: Optional[List[int]]
    names: Optional[List[str]]
    summary: Optional[Dict[str, Any]]
    t0: Optional[int]
    epochs: Optional[int]  # train.epochs: the last epoch's number


@dataclass
class RunFigureInputs:
    """What the per-run figures are drawn from: a run's files as read by :func:`major2minor.rundir.write_run_figures`
    (``None`` for a file that is absent or unreadable: its figure or annotation is left out)."""

    out_dir: Path
    config: Dict[str, Any]
    manifest: Optional[Dict[str, Any]]
    summary: Optional[Dict[str, Any]]
    log_rows: Optional[LogRows]


def _run_info(inputs: RunFigureInputs) -> _RunInfo:
    manifest, summary, cfg = inputs.manifest, inputs.summary, inputs.config
    s = summary or {}
    part = lambda key: s.get(key) or (cfg.get(key) or {}).get("name")  # noqa: E731
    label = method_label(s.get("method") or cfg.get("method"), part("loss"), part("rebalance"))
    recipe = s.get("recipe") or cfg.get("recipe") or (manifest or {}).get("name")
    seed = s.get("seed", (cfg.get("train") or {}).get("seed"))
    bits = [label or inputs.out_dir.name, str(recipe) if recipe else None, f"seed {seed}" if seed is not None else None]
    counts = (manifest or {}).get("train_counts") or s.get("train_counts")
    return _RunInfo(
        run_dir=inputs.out_dir,
        label=label,
        heading=" · ".join(b for b in bits if b),
        counts=[int(c) for c in counts] if counts else None,
        names=(manifest or {}).get("class_names"),
        summary=summary,
        t0=_deferred_epoch(cfg),
        epochs=(cfg.get("train") or {}).get("epochs"),
    )


def _run_recall_figure(info: _RunInfo) -> Optional[Path]:
    """``per_class_recall.png``: test recall at the best-validation epoch and at the last epoch."""
    s, counts = info.summary or {}, info.counts or []
    last = info.epochs
    keys = (
        (
            "test_at_best",
            f"test at best-val epoch {s['best_epoch']}" if s.get("best_epoch") else "test, best-val epoch",
        ),
        ("test_at_last", f"test at last epoch {last}" if last else "test, last epoch"),
    )
    curves = {}
    for key, label in keys:
        rec = (s.get(key) or {}).get("per_class_recall")
        if rec and len(rec) == len(counts):
            curves[label] = rec
    if not curves:
        return None
    return plot_per_class_recall(
        curves,
        counts,
        info.run_dir / "per_class_recall.png",
        class_names=info.names,
        title=f"{info.heading}: per-class test recall, head to tail",
    )


def _run_figures(info: _RunInfo, log_rows: Optional[LogRows]) -> List[Path]:
    run_dir, written = info.run_dir, []
    if info.counts:
        title = f"{info.heading}\ntraining samples per class ({len(info.counts)} classes, {sum(info.counts)} samples)"
        written.append(plot_class_counts(info.counts, run_dir / "class_counts.png", info.names, title))
    if log_rows is not None:
        title = f"{info.heading}: training curves"  # the heading names the run; a path would leak the machine
        written.append(plot_training_curves(log_rows, run_dir / "curves.png", title=title, deferred_epoch=info.t0))
    if info.summary and info.counts:
        path = _run_recall_figure(info)
        if path:
            written.append(path)
    return written


def draw_run_figures(
    inputs: RunFigureInputs, log: Optional[Callable[[str], None]] = None, missing_ok: bool = True
) -> List[Path]:
    """The per-run figures (``class_counts.png``, ``curves.png``, ``per_class_recall.png``) into
    ``inputs.out_dir``; returns the files written.  With ``missing_ok``, a missing matplotlib is reported
    through ``log`` and nothing is written instead of failing the run.  A run directory's figures:
    :func:`major2minor.rundir.write_run_figures`."""
    try:
        _require_matplotlib()
    except MissingDependencyError as exc:
        if not missing_ok:
            raise
        if log:
            log(f"[figures] skipped: {exc}")
        return []
    written = _run_figures(_run_info(inputs), inputs.log_rows)
    if log and written:
        log(f"[figures] {', '.join(p.name for p in written)} -> {inputs.out_dir}")
    return written


def _deferred_epoch(cfg: Dict[str, Any]) -> Optional[int]:
    """T0 from the run's configuration when its re-balancing is deferred (drs, drw, m2m), else None."""
    try:
        name = (cfg.get("rebalance") or {}).get("name")
        if name and getattr(REBALANCERS.get(name), "deferred", False):
            return int((cfg.get("train") or {}).get("deferred_epoch"))
    except Exception:  # a figure annotation must never fail a run
        return None
    return None


__all__ = [
    "MissingDependencyError",
    "acceptance_ylim",
    "best_val_epoch",
    "identical_stretch",
    "log_ticks",
    "method_label",
    "overall_acceptance",
    "per_class_recall_figure",
    "plot_class_counts",
    "plot_per_class_recall",
    "plot_training_curves",
    "RunFigureInputs",
    "draw_run_figures",
    "read_log",
    "series_stats",
    "training_curves_figure",
    "translation_gallery",
]
