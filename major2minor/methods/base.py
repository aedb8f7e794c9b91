"""Re-balancing strategies: what the model sees (sampling, extra samples) and how each class weighs.

:class:`Rebalancer` is the protocol between the engine and a method: every hook the engine calls is
declared here with a no-op default, so a method overrides only what it changes and the engine
never asks a method what it is.  In the order the engine calls them:

* ``generator_paths(cfg)`` (class method, before the run): the frozen classifiers g the method
  translates with; the pipeline trains or finds them before the engine starts (M2m);
* ``setup(ctx)``: once, with the run's data, device, log and the loaded frozen classifiers;
* ``prepare_train(train, seed)``: may rewrite the training set once (SMOTE adds samples);
* per epoch: ``on_epoch_start(epoch, ctx)``, ``sample_weights(epoch)`` (per-class sampling weights,
  None = a plain shuffle), ``class_weights(epoch)`` (per-class loss weights, None = unweighted);
* per batch: ``transform_batch(f, x, y, epoch)`` (M2m translates here);
* after the epoch: ``epoch_stats()`` (a row of statistics for log.csv), ``merge_epoch_stats`` (the
  rows of all torchrun processes into one), ``progress_fields(row)`` (the few shown on screen),
  ``epoch_warnings(row)`` (e.g. M2m accepting almost nothing);
* at the end: ``run_summary(history)`` (entries added to summary.json);
* ``state_dict()`` / ``load_state_dict()``: what a resumed run needs to continue exactly.

Deferred strategies (DRS, DRW, M2m) act only from ``train.deferred_epoch`` (T0) on.

A new method is one file: a subclass, registered with :func:`register_method` (the re-balancing
and a preset of the same name in one line); its parameters can live in a config section of its
own (``config_section`` / ``config_class``, checked by the dataclass's ``checks``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Literal, Optional, Sequence, Tuple

import numpy as np
import torch

from major2minor.data.core import DataBundle, Split
from major2minor.display import Log
from major2minor.registry import METHODS, REBALANCERS


def inverse_frequency(counts: Sequence[int]) -> np.ndarray:
    """w_c proportional to 1 / N_c, normalised so that sum_c w_c = C."""
    w = 1.0 / np.asarray(counts, dtype=np.float64)
    return w / w.sum() * len(counts)


def effective_number_weights(counts: Sequence[int], beta: float) -> np.ndarray:
    """Class-balanced weights (Cui et al.): w_c proportional to (1 - beta) / (1 - beta^N_c), sum = C.

    beta = 0 gives equal weights; beta = 1 is the limit 1 / N_c (plain RW; the formula itself is 0/0).
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(
            f"rebalance.cb_beta={beta} must be in [0, 1] (the paper uses 0.999; 1 means 1/N, 0 means no re-weighting)."
        )
    if beta == 1.0:
        return inverse_frequency(counts)
    counts = np.asarray(counts, dtype=np.float64)
    w = (1.0 - beta) / (1.0 - np.power(beta, counts))
    return w / w.sum() * len(counts)


@dataclass(frozen=True)
class Knob:
    """One setting a tuner may search (``m2m tune``): a float or int range ``low``..``high`` (``log``
    scale) or a ``choice`` among ``choices``.  A method lists its own in :attr:`Rebalancer.search_space`."""

    key: str
    kind: str  # float | int | choice
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    choices: Tuple[Any, ...] = ()


@dataclass
class RunContext:
    """What a method may need beyond the class counts, handed to :meth:`Rebalancer.setup`."""

    cfg: Any
    bundle: DataBundle
    device: torch.device
    run_dir: Optional[Path]
    log: Log
    rank: int = 0
    generators: List[torch.nn.Module] = field(default_factory=list)  # frozen g's (generator_paths)
    amp: str = "none"  # the run's resolved autocast: "bf16" or "none" (train.amp=auto resolved)


@dataclass
class EpochContext:
    """What :meth:`Rebalancer.on_epoch_start` sees: f as methods use it, the training split, the batches."""

    model: torch.nn.Module
    train: Split
    bundle: DataBundle
    n_batches: int


class Rebalancer:
    """No re-balancing (ERM): plain shuffling, unweighted loss.  The base of every method."""

    #: acts only from ``train.deferred_epoch`` (T0) on
    deferred: bool = False
    #: ``prepare_train`` rewrites the training set in memory (so it cannot run on streamed data)
    rewrites_train: bool = False
    #: the name the results table shows in its "Re-balancing" column
    label: str = "–"
    #: a config section of the method's own (``cfg.<config_section>``, dataclass ``config_class``)
    config_section: Optional[str] = None
    config_class: Optional[type] = None
    #: what ``m2m tune`` searches for this method unless a key is given a fixed value or a range
    search_space: Tuple[Knob, ...] = ()
    #: settings that name a run's own inputs (M2m's g: one path per seed): they do not make a variant of a
    #: method in the results table, only their count does
    per_run_keys: Tuple[str, ...] = ()

    def __init__(self, cfg, counts: Sequence[int]):
        self.cfg = cfg
        self.counts = list(counts)
        self.num_classes = len(self.counts)
        self.t0 = cfg.train.deferred_epoch

    # -- before the run ---------------------------------------------------------------------------

    @classmethod
    def check_config(cls, cfg) -> None:
        """Cross-field checks of the method's settings (raise ConfigError); called by config.validate."""

    @classmethod
    def acceptance(cls, summary: Dict[str, Any]) -> Optional[float]:
        """The share of the method's generated samples that it used (M2m's acceptance rate), read from a
        finished run's summary; None for a method that generates none.  Shown by ``m2m tune`` and the demo."""
        return None

    @classmethod
    def generator_paths(cls, cfg) -> Optional[List[str]]:
        """Frozen classifiers this run needs: None = none; a list of checkpoint paths or run directories;
        ``[]`` = one is needed and none was given, so the pipeline trains (or reuses) an ERM g first."""
        return None

    def setup(self, ctx: RunContext) -> None:
        """Once, before training: keep what the method needs from the run (log, g, bounds, device)."""

    def prepare_train(self, train: Split, seed: int) -> Split:
        """The training set the run uses (once, before training; declare ``rewrites_train`` if changed)."""
        return train

    # -- every epoch and batch ------------------------------------------------------------------

    def active(self, epoch: int) -> bool:
        return not self.deferred or epoch >= self.t0

    def on_epoch_start(self, epoch: int, ctx: EpochContext) -> None:
        """Before an epoch's first batch (M2m times one translated batch before its first epoch)."""

    def sample_weights(self, epoch: int) -> Optional[np.ndarray]:
        """Per-class sampling weights for this epoch's index stream; None = a plain shuffle."""
        return None

    def class_weights(self, epoch: int) -> Optional[np.ndarray]:
        """Per-class loss weights for this epoch; None = unweighted."""
        return None

    def transform_batch(self, model, x: torch.Tensor, y: torch.Tensor, epoch: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """The batch f trains on (M2m replaces some entries by translated samples)."""
        return x, y

    def batch_loss(
        self, per_sample: torch.Tensor, y: torch.Tensor, class_weight: Optional[torch.Tensor]
    ) -> torch.Tensor:
        """The batch's loss from the per-sample losses (already multiplied by w_y when re-weighting).

        Unweighted, or ``rebalance.weighted_mean=mean``: the plain mean, (1/B) sum_i w_yi l_i, as the M2m
        public code.  ``weights``: sum_i w_yi l_i / sum_i w_yi, PyTorch's weighted cross-entropy mean, as
        kaidic/LDAM-DRW (the code behind the paper's LDAM-DRW number).
        """
        if class_weight is None or self.cfg.rebalance.weighted_mean == "mean":
            return per_sample.mean()
        return per_sample.sum() / class_weight[y].sum()

    # -- statistics -----------------------------------------------------------------------------

    def epoch_stats(self) -> Dict[str, Any]:
        """Statistics of the epoch just trained, for log.csv (reset on read); empty for plain methods."""
        return {}

    @classmethod
    def merge_epoch_stats(cls, rows: List[Dict[str, Any]]) -> Dict[str, Any]:
        """One row from the ``epoch_stats`` of every torchrun process (in rank order)."""
        rows = [r for r in rows if r]
        return rows[0] if rows else {}

    @classmethod
    def progress_fields(cls, row: Dict[str, Any]) -> Dict[str, str]:
        """The few statistics of an epoch row printed on the epoch's line (name -> formatted value)."""
        return {}

    @classmethod
    def epoch_warnings(cls, row: Dict[str, Any]) -> List[str]:
        """Warnings about the epoch just trained (printed after its line), e.g. a method doing nothing."""
        return []

    def run_summary(self, history: List[Dict[str, Any]]) -> Dict[str, Any]:
        """Entries added to summary.json at the end of the run (from the per-epoch rows); a ``warnings``
        list there is printed at the end of the run."""
        return {}

    # -- resume ---------------------------------------------------------------------------------

    def state_dict(self) -> Dict[str, Any]:
        """What a resumed run needs to continue exactly (random states as tensors, plain types only)."""
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output (called once, after :meth:`setup`, when resuming)."""


@dataclass
class Preset:
    """A paper method: a loss plus a re-balancing, with optional extra config overrides.

    ``label`` is the method's name in the paper (figures, legends); ``rebalance_label``, when set,
    replaces the re-balancing's own name in the results table's "Re-balancing" column (the
    supplement's ablations: "M2m-Self").
    """

    loss: str
    rebalance: str
    help: str
    overrides: Dict[str, Any] = field(default_factory=dict)
    label: str = ""
    rebalance_label: str = ""

    def __post_init__(self) -> None:
        # The registry shows an entry's __doc__ when registered without help=: make that this preset's line.
        self.__doc__ = self.help
        self.label = self.label or self.help.split(":")[0]


#: what frozen classifiers g a run needs (:func:`g_need`)
GNeed = Literal["none", "cached", "given"]


def g_need(cfg) -> GNeed:
    """What frozen classifiers g a run of ``cfg`` needs, read from its method's
    :meth:`Rebalancer.generator_paths`: ``"none"`` (None: no g), ``"cached"`` (``[]``: one is needed and none
    given, so the pipeline trains or reuses an ERM g first), ``"given"`` (the method's settings name them)."""
    wanted = REBALANCERS.get(cfg.rebalance.name).generator_paths(cfg)
    if wanted is None:
        return "none"
    return "given" if wanted else "cached"


def register_method(
    name: str, *, loss: str = "ce", label: Optional[str] = None, help: str = "", preset: bool = True
) -> Callable:
    """Class decorator: register a :class:`Rebalancer` under ``name`` (``rebalance.name=name``) and a preset
    ``method=name`` (``loss`` + this re-balancing) in one line.  The built-in methods register this way too,
    with ``preset=False``: their presets are the paper's, listed in its table order in
    :mod:`major2minor.methods.presets`."""

    def add(cls: type) -> type:
        text = help or ((cls.__doc__ or "").strip().splitlines() or [name])[0]
        REBALANCERS.register(name, cls, help=text)
        if preset:
            METHODS.register(name, Preset(loss, name, text, label=label or cls.label), help=text)
        return cls

    return add


REBALANCERS.register("none", Rebalancer)


@register_method("ros", preset=False)
class RandomOverSampling(Rebalancer):
    """ROS: over-sample every epoch, P(sample) proportional to 1 / N_y."""

    label = "ROS"

    def sample_weights(self, epoch):
        return inverse_frequency(self.counts) if self.active(epoch) else None


@register_method("drs", preset=False)
class DeferredReSampling(RandomOverSampling):
    """DRS: ERM until T0, then over-sampling proportional to 1 / N_y."""

    deferred = True
    label = "DRS"


@register_method("rw", preset=False)
class ReWeighting(Rebalancer):
    """RW: loss weights proportional to 1 / N_c, normalised to sum to C, every epoch."""

    label = "RW"

    def class_weights(self, epoch):
        return inverse_frequency(self.counts) if self.active(epoch) else None


@register_method("cbrw", preset=False)
class ClassBalancedReWeighting(Rebalancer):
    """CB-RW: effective-number weights (Cui et al.), beta = rebalance.cb_beta (0.999)."""

    label = "CB-RW"

    def class_weights(self, epoch):
        return effective_number_weights(self.counts, self.cfg.rebalance.cb_beta) if self.active(epoch) else None


@register_method("drw", preset=False)
class DeferredReWeighting(ClassBalancedReWeighting):
    """DRW: ERM until T0, then class-balanced weights (as LDAM-DRW, beta = rebalance.cb_beta)."""

    deferred = True
    label = "DRW"


@register_method("smote", preset=False)
class Smote(Rebalancer):
    """SMOTE: imbalanced-learn's SMOTE on flattened inputs, every class up to N_max, before training.

    Each minority class gets N_max - N_c synthetic samples x_i + u * (x_nn - x_i), u ~ U[0, 1), x_nn
    one of the k = rebalance.smote_k nearest same-class neighbours of x_i (flattened inputs,
    Euclidean); the run then shuffles the enlarged, balanced training set as ERM does.  uint8 images
    are interpolated in float and rounded back to uint8 (originals are kept bit for bit).

    A class with fewer than k+1 samples cannot give k neighbours: k is lowered to N_min - 1 for the
    whole run (documented fallback, logged); a class with a single sample has no neighbour and is an
    error.
    """

    rewrites_train = True
    label = "SMOTE"

    def setup(self, ctx: RunContext) -> None:
        self.log = ctx.log

    def prepare_train(self, train: Split, seed: int) -> Split:
        try:
            from imblearn.over_sampling import SMOTE
        except ImportError as e:  # a dependency of the package; only a broken install lacks it
            raise ImportError("rebalance.name=smote needs imbalanced-learn: pip install imbalanced-learn") from e

        k = self.cfg.rebalance.smote_k
        if k < 1:
            raise ValueError(f"rebalance.smote_k={k} must be >= 1 (imbalanced-learn's default is 5).")
        counts = np.bincount(train.y.cpu().numpy(), minlength=self.num_classes)
        present = counts[counts > 0]
        smallest = int(present.min())
        if smallest < 2:
            small = [int(c) for c in np.flatnonzero(counts == 1)]
            raise ValueError(
                f"rebalance.name=smote needs at least 2 training samples in every class (SMOTE "
                f"interpolates between same-class neighbours), but class(es) {small} have 1; "
                "lower data.ratio or raise data.n_max, or use rebalance.name=ros."
            )
        if smallest <= k:
            msg = (
                f"SMOTE: the smallest class has {smallest} samples, fewer than rebalance.smote_k+1={k + 1}; "
                f"using k_neighbors={smallest - 1} for every class"
            )
            (getattr(self, "log", None) or print)(msg)
            k = smallest - 1
        self.k_used = k
        shape, dtype = train.x.shape[1:], train.x.dtype
        flat = train.x.reshape(len(train), -1).cpu().numpy().astype(np.float64)
        xs, ys = SMOTE(k_neighbors=k, random_state=seed % 2**32).fit_resample(flat, train.y.cpu().numpy())
        if dtype == torch.uint8:
            xs = np.clip(np.rint(xs), 0, 255)
        x_new = torch.as_tensor(xs).to(dtype).reshape(-1, *shape)
        return Split(x_new, torch.as_tensor(ys).long())
