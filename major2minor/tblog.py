"""Optional TensorBoard logging of the per-epoch log rows (``run.tensorboard=true``).

The engine's CSV log stays the record of a run; TensorBoard is a live view of the same numbers.
``tensorboard`` is an optional extra (``pip install 'major2minor[tb]'``) imported only when a logger
is created, so a missing install fails at the start of a run with the fix, not after an epoch.

Tags: a row key ``train_loss`` becomes ``train/loss``; likewise ``val_*``, ``test_*`` and ``m2m_*``;
``lr`` becomes ``optim/lr``; other numbers go under ``misc/``.  Per-class lists (``seen_per_class``,
``class_weights``, ``m2m_accepted_per_class``) become ``KEY/class_007`` scalars for data sets with at
most ``per_class_limit`` classes and are skipped for larger ones (the CSV has them).  The event
files live in ``RUN_DIR/tb``:  ``tensorboard --logdir runs``.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from major2minor.errors import MissingDependencyError
from major2minor.registry import REBALANCERS

SPLITS = ("train", "val", "test")


def groups() -> tuple:
    """The tag groups: the splits, and each registered method's own statistics (its config section, e.g.
    M2m's ``m2m_*`` columns)."""
    sections = {getattr(e.obj, "config_section", None) for e in REBALANCERS.in_order()} - {None}
    return SPLITS + tuple(sorted(sections))


def _summary_writer_class():
    try:
        import tensorboard  # noqa: F401  (torch's writer needs it; import it first for a clear error)
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise MissingDependencyError(
            "run.tensorboard=true needs the tensorboard package, which is not installed; install it with "
            "`pip install 'major2minor[tb]'` (or `pip install tensorboard`), or set run.tensorboard=false "
            "(the per-epoch numbers are in the run's log.csv either way)."
        ) from exc
    return SummaryWriter


def tag_for(key: str) -> str:
    """``'train_loss' -> 'train/loss'``, ``'lr' -> 'optim/lr'``, ``'epoch_seconds' -> 'misc/epoch_seconds'``."""
    head, _, rest = key.partition("_")
    if head in groups() and rest:
        return f"{head}/{rest}"
    if key == "lr":
        return "optim/lr"
    return f"misc/{key}"


class TBLogger:
    """Writes each epoch's log row as TensorBoard scalars into ``RUN_DIR/tb``.

    Usage (what the engine does)::

        tb = TBLogger.from_config(cfg, run_dir)    # a no-op logger unless run.tensorboard=true
        ...
        tb.log_row(epoch, row)                     # once per epoch
        tb.close()

    Args:
        run_dir: the run directory; events go to ``run_dir / subdir``.
        subdir: folder inside the run directory.
        per_class_limit: per-class lists are logged only for at most this many classes.
        writer_factory: a ``SummaryWriter``-like class (``add_scalar``, ``flush``, ``close``); default
            torch's ``SummaryWriter``. For tests and other backends.
        class_names: the data set's class names, used in the tags of per-class values
            (``seen_per_class/003_cat``); default: the class index alone.
    """

    enabled = True

    def __init__(
        self,
        run_dir: Union[str, Path],
        subdir: str = "tb",
        per_class_limit: int = 20,
        writer_factory: Optional[Callable[..., Any]] = None,
        class_names: Optional[Sequence[str]] = None,
    ):
        if per_class_limit < 0:
            raise ValueError(f"per_class_limit={per_class_limit} must be >= 0 (0 = never log per-class lists).")
        factory = writer_factory or _summary_writer_class()
        self.log_dir = Path(run_dir) / subdir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.per_class_limit = per_class_limit
        self.class_names = list(class_names) if class_names is not None else None
        self.writer = factory(log_dir=str(self.log_dir))

    @classmethod
    def from_config(cls, cfg: Any, run_dir: Union[str, Path], class_names: Optional[Sequence[str]] = None) -> TBLogger:
        """A real logger when ``cfg.run.tensorboard`` is true, else a :class:`NullTBLogger`."""
        if getattr(getattr(cfg, "run", None), "tensorboard", False):
            return cls(run_dir, class_names=class_names)
        return NullTBLogger()

    def log_row(self, epoch: int, row: Mapping[str, Any]) -> int:
        """Log every number of ``row`` at step ``epoch`` (numbered from 1, as in log.csv and on screen);
        returns how many scalars."""
        n = 0
        for key, value in row.items():
            if key == "epoch" or value is None or isinstance(value, (str, bytes, bool)):
                continue
            if isinstance(value, numbers.Real):
                self.writer.add_scalar(tag_for(key), float(value), int(epoch))
                n += 1
            elif (
                isinstance(value, (list, tuple))
                and value
                and len(value) <= self.per_class_limit
                and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value)
            ):
                base = tag_for(key)
                width = max(3, len(str(len(value) - 1)))
                for c, v in enumerate(value):
                    if not (isinstance(v, float) and math.isnan(v)):
                        self.writer.add_scalar(f"{base}/{self._class_tag(c, width, len(value))}", float(v), int(epoch))
                        n += 1
        self.writer.flush()
        return n

    def _class_tag(self, c: int, width: int, n: int) -> str:
        """``class_007``, or ``007_cat`` when the class names are known (TensorBoard sorts tags as text)."""
        if self.class_names is None or len(self.class_names) != n:
            return f"class_{c:0{width}d}"
        name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(self.class_names[c]))
        return f"{c:0{width}d}_{name}"

    def close(self) -> None:
        self.writer.close()

    def __enter__(self) -> TBLogger:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class NullTBLogger:
    """The logger when TensorBoard is off: every call does nothing."""

    enabled = False

    def log_row(self, epoch: int, row: Mapping[str, Any]) -> int:
        return 0

    def close(self) -> None:
        pass

    def __enter__(self) -> NullTBLogger:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


__all__ = ["TBLogger", "NullTBLogger", "tag_for"]
