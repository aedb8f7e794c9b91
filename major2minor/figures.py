"""Figures (PNG, matplotlib's Agg canvas): class counts, per-class recall, training curves, translations.

matplotlib is an optional extra (``pip install 'major2minor[plots]'``); it is imported only when a
figure is drawn, and a missing install raises :class:`MissingDependencyError` with the fix.  The
figures are drawn on :class:`matplotlib.figure.Figure` objects with an explicit Agg canvas, so this
module never touches pyplot's global state or the user's chosen backend (safe in notebooks and
worker processes), and each PNG is written atomically.

* :func:`plot_class_counts` - training samples per class, sorted, log-scale y (supplement, Figure 1)
* :func:`plot_per_class_recall` - recall per class from head to tail, one line per method
* :func:`plot_training_curves` - train loss, validation bACC (and GM), M2m acceptance rate per epoch
* :func:`translation_gallery` - seeds and their translations with g's confidence and accepted yes/no
* :func:`write_run_figures` - the per-run figures, written into a run directory after training
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import yaml

from major2minor.checkpoint import atomic_write_bytes
from major2minor.registry import REBALANCERS

PathLike = Union[str, Path]
LogRows = List[Dict[str, Any]]


class MissingDependencyError(ImportError, RuntimeError):
    """An optional dependency (matplotlib, tensorboard) is needed but not installed."""


def _require_matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingDependencyError(
            "figures need matplotlib, which is not installed; install it with "
            "`pip install 'major2minor[plots]'` (or `pip install matplotlib`), or turn figures off "
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


def _tick_labels(ax, positions: Sequence[int], labels: Sequence[str], max_labels: int = 30) -> None:
    if len(labels) <= max_labels:
        ax.set_xticks(list(positions))
        ax.set_xticklabels(list(labels), rotation=90 if max(len(s) for s in labels) > 3 else 0, fontsize=8)


def _order_head_to_tail(counts: Sequence[int]) -> np.ndarray:
    """Class indices by training count, largest first (ties keep class order, as the metrics do)."""
    return np.argsort(-np.asarray(counts, dtype=np.float64), kind="stable")


# ----------------------------------------------------------------------------------------------
# class counts and per-class recall


def plot_class_counts(
    counts: Sequence[int], path: PathLike, class_names: Optional[Sequence[str]] = None, title: Optional[str] = None
) -> Path:
    """Bar chart of training samples per class, sorted from head to tail, log-scale y.

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
    order = _order_head_to_tail(counts)
    sorted_counts = [counts[i] for i in order]
    fig, axes = _new_figure(max(4.0, min(12.0, 0.35 * len(counts) + 2)), 3.2)
    ax = axes[0, 0]
    ax.bar(range(len(counts)), [max(c, 0.5) for c in sorted_counts], color="#4C72B0", width=0.85)
    ax.set_yscale("log")
    ax.set_ylabel("training samples")
    nonzero = [c for c in counts if c > 0]
    rho = max(counts) / min(nonzero) if nonzero else float("nan")
    ax.set_xlabel("class (sorted by training count)")
    names = [str(class_names[i]) if class_names else str(i) for i in order]
    _tick_labels(ax, range(len(counts)), names)
    ax.set_title(title or f"{len(counts)} classes, {sum(counts)} samples, imbalance ratio {rho:.1f}", fontsize=10)
    ax.grid(axis="y", which="both", alpha=0.3)
    return _save(fig, path)


def plot_per_class_recall(
    curves: Mapping[str, Sequence[Optional[float]]],
    train_counts: Sequence[int],
    path: PathLike,
    class_names: Optional[Sequence[str]] = None,
    title: Optional[str] = None,
    percent: Optional[bool] = None,
) -> Path:
    """Recall per class ordered from head (most training samples) to tail, one line per method.

    Args:
        curves: ``{label: recall per class, in class order}``; values in [0, 1] or in % (detected, or
            set ``percent``); ``None``/NaN for classes absent from the split.
        train_counts: training samples per class (decide the head-to-tail order; drawn as grey bars).
        path: the PNG to write.
    """
    if not curves:
        raise ValueError("curves={} is empty; pass {label: per-class recall} for at least one method.")
    counts = [int(c) for c in train_counts]
    for label, rec in curves.items():
        if len(rec) != len(counts):
            raise ValueError(
                f"curves['{label}'] has {len(rec)} classes but train_counts has {len(counts)}; "
                "pass recalls and counts of the same data set."
            )
    order = _order_head_to_tail(counts)
    values = {
        k: np.array([np.nan if v is None else float(v) for v in rec], dtype=np.float64) for k, rec in curves.items()
    }
    if percent is None:
        percent = any(np.nanmax(v) > 1.0 + 1e-9 for v in values.values() if np.isfinite(v).any())
    scale = 1.0 if percent else 100.0
    fig, axes = _new_figure(max(5.0, min(13.0, 0.4 * len(counts) + 3)), 3.8)
    ax = axes[0, 0]
    bars = ax.twinx()
    bars.bar(range(len(counts)), [max(counts[i], 0.5) for i in order], color="0.85", width=0.85, zorder=0)
    bars.set_yscale("log")
    bars.set_ylabel("training samples (bars)", color="0.45")
    ax.set_zorder(bars.get_zorder() + 1)
    ax.patch.set_visible(False)
    marker = "o" if len(counts) <= 40 else None
    for label, v in values.items():
        ax.plot(range(len(counts)), scale * v[order], marker=marker, markersize=3, linewidth=1.3, label=label)
    ax.set_ylim(-2, 102)
    ax.set_ylabel("test recall (%)")
    ax.set_xlabel("class, head → tail (sorted by training count)")
    names = [str(class_names[i]) if class_names else str(i) for i in order]
    _tick_labels(ax, range(len(counts)), names)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left", ncol=2 if len(values) > 4 else 1)
    ax.set_title(title or "per-class recall, head to tail", fontsize=10)
    return _save(fig, path)


# ----------------------------------------------------------------------------------------------
# training curves


def read_log(path: PathLike) -> LogRows:
    """Read a run's ``log.csv``: numbers become floats, empty cells None, space-separated lists stay text.

    The engine rewrites log.csv whole and atomically after every epoch, so an empty file, a header
    without rows or a row with the wrong number of fields means a copy was cut short or the run was
    interrupted: refused here naming the file, rather than a vague "no rows" from a figure later.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; a run writes log.csv after its first epoch.")
    hint = "the run may have been interrupted: resume it with --resume (or re-copy the file)."
    rows: LogRows = []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames:
            raise ValueError(f"{path}: the per-epoch log is empty (no header, no rows); {hint}")
        for rec in reader:
            if None in rec or None in rec.values():  # csv puts extra fields under None, fills missing ones with None
                got = sum(rec.get(k) is not None for k in reader.fieldnames) + len(rec.get(None) or ())
                line = reader.line_num
                what = "a half-written last line" if next(reader, None) is None else "a malformed row"
                raise ValueError(
                    f"{path}, line {line}: {what} ({got} fields, the header has {len(reader.fieldnames)}); {hint}"
                )
            row: Dict[str, Any] = {}
            for k, v in rec.items():
                if v is None or v == "":
                    row[k] = None
                    continue
                try:
                    row[k] = float(v)
                except ValueError:
                    row[k] = v
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: the per-epoch log has a header but no rows; {hint}")
    return rows


def _series(logs: Sequence[LogRows], key: str):
    """Epochs (1-based) and the mean over logs of ``key`` at each epoch present in every log."""
    per_log = []
    for rows in logs:
        d = {}
        for r in rows:
            v, e = r.get(key), r.get("epoch")
            if isinstance(v, float) and isinstance(e, float) and not math.isnan(v):
                d[int(e)] = v
        per_log.append(d)
    if not per_log or not all(per_log):
        return [], []
    epochs = sorted(set.intersection(*(set(d) for d in per_log)))
    return epochs, [float(np.mean([d[e] for d in per_log])) for e in epochs]  # numbered from 1, as in log.csv


def plot_training_curves(
    logs: Union[PathLike, LogRows, Mapping[str, Any]],
    path: PathLike,
    title: Optional[str] = None,
    deferred_epoch: Optional[int] = None,
) -> Path:
    """Per-epoch curves: training loss, validation bACC (and GM for one run), and M2m's acceptance.

    Args:
        logs: one run (a ``log.csv`` path or its rows from :func:`read_log`), or ``{label: run}`` for
            several, where a run may also be a list of logs (seeds), drawn as their per-epoch mean.
        path: the PNG to write. The acceptance panel appears when a log has ``m2m_acceptance`` values.
        deferred_epoch: T0 (0-based, as ``train.deferred_epoch``); drawn as a dotted line where the
            deferred re-balancing (DRS, DRW, M2m) switches on.
    """

    def as_logs(v: Any) -> List[LogRows]:
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

    if isinstance(logs, Mapping):
        named = {str(k): as_logs(v) for k, v in logs.items()}
    else:
        named = {"": as_logs(logs)}
    if not named or not any(any(rows for rows in v) for v in named.values()):
        raise ValueError("logs hold no rows; a run writes log.csv rows after each epoch.")
    single = len(named) == 1
    has_acc = any(_series(v, "m2m_acceptance")[0] for v in named.values())
    panels = 3 if has_acc else 2
    fig, axes = _new_figure(4.0 * panels, 3.2, 1, panels)
    ax_loss, ax_val = axes[0, 0], axes[0, 1]
    for label, v in named.items():
        ep, loss = _series(v, "train_loss")
        line = ax_loss.plot(ep, loss, label=label or "train loss")[0]
        ep, bacc = _series(v, "val_bacc")
        ax_val.plot(ep, [100 * b for b in bacc], color=line.get_color(), label=label or "val bACC")
        if single:
            ep, gm = _series(v, "val_gm")
            ax_val.plot(
                ep,
                [100 * g for g in gm],
                color=line.get_color(),
                linestyle="--",
                label=(label + " GM") if label else "val GM",
            )
        if has_acc:
            ep, acc = _series(v, "m2m_acceptance")
            if ep:
                axes[0, 2].plot(ep, [100 * a for a in acc], color=line.get_color(), marker=".", label=label or None)
    ax_loss.set_title("training loss", fontsize=10)
    ax_loss.set_xlabel("epoch")
    ax_val.set_title("validation bACC" + (" / GM" if single else "") + " (%)", fontsize=10)
    ax_val.set_xlabel("epoch")
    from matplotlib.ticker import MaxNLocator

    for ax in axes[0]:
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if deferred_epoch is not None:
            ax.axvline(deferred_epoch + 1, color="0.5", linestyle=":", linewidth=1)
    if has_acc:
        axes[0, 2].set_title("M2m acceptance rate (%)", fontsize=10)
        axes[0, 2].set_xlabel("epoch")
        axes[0, 2].set_ylim(-2, 102)
    if not single or any(not k for k in named):
        ax_val.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


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
    xs, xt = _as_images("seeds", seeds), _as_images("translations", translations)
    n = len(xs)
    if n == 0:
        raise ValueError("seeds is empty; pass at least one seed and its translation.")
    if xt.shape != xs.shape:
        raise ValueError(
            f"translations has shape {xt.shape} but seeds has {xs.shape} (as (N, H, W, C)); "
            "pass each seed's translation, in the same order and shape."
        )
    per_item = {"seed_labels": seed_labels, "target_labels": target_labels, "g_conf": g_conf, "accepted": accepted}
    arrays = {}
    for name, v in per_item.items():
        arr = _to_numpy(name, v).reshape(-1)
        if len(arr) != n:
            raise ValueError(f"{name} has {len(arr)} entries but seeds has {n}; pass one per seed.")
        arrays[name] = arr
    k = min(n, max_items)

    def cname(c: Any) -> str:
        c = int(c)
        return str(class_names[c]) if class_names is not None and 0 <= c < len(class_names) else str(c)

    fig, axes = _new_figure(max(2.0, 1.25 * k), 3.3, 2, k)
    gray = xs.shape[-1] == 1
    for j in range(k):
        for row, img in ((0, xs[j]), (1, xt[j])):
            ax = axes[row, j]
            ax.imshow(
                img[..., 0] if gray else img, cmap="gray" if gray else None, vmin=0, vmax=1, interpolation="nearest"
            )
            ax.set_xticks([])
            ax.set_yticks([])
        ok = bool(arrays["accepted"][j])
        axes[0, j].set_title(f"seed: {cname(arrays['seed_labels'][j])}", fontsize=7)
        axes[1, j].set_title(
            f"→ {cname(arrays['target_labels'][j])}\n"
            f"g={float(arrays['g_conf'][j]):.2f}\naccepted: {'yes' if ok else 'no'}",
            fontsize=7,
            color="#1a7f37" if ok else "#b3261e",
        )
        for side in axes[1, j].spines.values():
            side.set_edgecolor("#1a7f37" if ok else "#b3261e")
            side.set_linewidth(2)
    axes[0, 0].set_ylabel("seed", fontsize=8)
    axes[1, 0].set_ylabel("translation", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


# ----------------------------------------------------------------------------------------------
# per run


def write_run_figures(
    run_dir: PathLike, log: Optional[Callable[[str], None]] = None, missing_ok: bool = True
) -> List[Path]:
    """Write a run's figures into its directory; returns the files written.

    * ``class_counts.png`` from ``manifest.json`` (or ``summary.json``),
    * ``curves.png`` from ``log.csv``,
    * ``per_class_recall.png`` from ``summary.json`` (test at best-validation and at last epoch), if finished.

    Meant to be called by the engine at the end of training. With ``missing_ok`` (default), a
    missing matplotlib is reported through ``log`` and nothing is written instead of failing the run.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(
            f"run_dir='{run_dir}' is not a directory; pass a run directory (e.g. runs/digits-lt/erm/seed0)."
        )
    try:
        _require_matplotlib()
    except MissingDependencyError as exc:
        if not missing_ok:
            raise
        if log:
            log(f"[figures] skipped: {exc}")
        return []

    def load(name: str) -> Optional[Dict[str, Any]]:
        p = run_dir / name
        if not p.exists():
            return None
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError:
            return None

    manifest, summary = load("manifest.json"), load("summary.json")
    t0 = _deferred_epoch(run_dir)
    counts = (manifest or {}).get("train_counts") or (summary or {}).get("train_counts")
    names = (manifest or {}).get("class_names")
    written: List[Path] = []
    if counts:
        written.append(
            plot_class_counts(
                counts,
                run_dir / "class_counts.png",
                class_names=names,
                title=f"{(manifest or {}).get('name', run_dir.name)}: training samples "
                f"per class ({len(counts)} classes, {sum(counts)} samples)",
            )
        )
    if (run_dir / "log.csv").exists():
        rows = read_log(run_dir / "log.csv")
        if rows:
            written.append(
                plot_training_curves(
                    rows,
                    run_dir / "curves.png",
                    deferred_epoch=t0,
                    title=f"{(summary or {}).get('method', '')} {run_dir}".strip(),
                )
            )
    if summary and counts:
        curves = {}
        for key, label in (("test_at_best", "test, best-val epoch"), ("test_at_last", "test, last epoch")):
            rec = (summary.get(key) or {}).get("per_class_recall")
            if rec and len(rec) == len(counts):
                curves[label] = rec
        if curves:
            written.append(
                plot_per_class_recall(
                    curves,
                    counts,
                    run_dir / "per_class_recall.png",
                    class_names=names,
                    title=f"{summary.get('method', '')}: per-class recall, head to tail",
                )
            )
    if log and written:
        log(f"[figures] {', '.join(p.name for p in written)} -> {run_dir}")
    return written


def _deferred_epoch(run_dir: Path) -> Optional[int]:
    """T0 from the run's config.yaml when its re-balancing is deferred (drs, drw, m2m), else None."""
    path = run_dir / "config.yaml"
    if not path.exists():
        return None
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
        name = (cfg.get("rebalance") or {}).get("name")
        if name and getattr(REBALANCERS.get(name), "deferred", False):
            return int((cfg.get("train") or {}).get("deferred_epoch"))
    except Exception:  # a figure annotation must never fail a run
        return None
    return None


__all__ = [
    "MissingDependencyError",
    "plot_class_counts",
    "plot_per_class_recall",
    "plot_training_curves",
    "read_log",
    "translation_gallery",
    "write_run_figures",
]
