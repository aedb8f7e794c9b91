"""Re-balancing strategies: what the model sees (sampling, extra samples) and how each class weighs.

A :class:`Rebalancer` answers, for every epoch:

* ``sample_weights(epoch)``: per-class sampling weights for the epoch's index stream (None = a plain
  shuffle of the training set);
* ``class_weights(epoch)``: per-class loss weights (None = unweighted);
* ``transform_batch(f, x, y, epoch)``: a hook that may replace batch entries (M2m).

Deferred strategies (DRS, DRW, M2m) act only from ``train.deferred_epoch`` (T0) on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from major2minor.data.core import Split
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
        raise ValueError(f"rebalance.cb_beta={beta} must be in [0, 1] (the paper uses 0.999; 1 means 1/N, "
                         "0 means no re-weighting).")
    if beta == 1.0:
        return inverse_frequency(counts)
    counts = np.asarray(counts, dtype=np.float64)
    w = (1.0 - beta) / (1.0 - np.power(beta, counts))
    return w / w.sum() * len(counts)


class Rebalancer:
    """No re-balancing (ERM): plain shuffling, unweighted loss."""

    deferred = False

    def __init__(self, cfg, counts: Sequence[int]):
        self.cfg = cfg
        self.counts = list(counts)
        self.num_classes = len(self.counts)
        self.t0 = cfg.train.deferred_epoch

    def active(self, epoch: int) -> bool:
        return not self.deferred or epoch >= self.t0

    def prepare_train(self, train: Split, seed: int) -> Split:
        return train

    def sample_weights(self, epoch: int) -> Optional[np.ndarray]:
        return None

    def class_weights(self, epoch: int) -> Optional[np.ndarray]:
        return None

    def transform_batch(self, model, x: torch.Tensor, y: torch.Tensor, epoch: int) -> Tuple[torch.Tensor, torch.Tensor]:
        return x, y

    def epoch_stats(self) -> Dict[str, Any]:
        """Statistics of the epoch just trained (reset on read); empty for plain methods."""
        return {}

    def state_dict(self) -> Dict[str, Any]:
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        pass


REBALANCERS.register("none", Rebalancer)


@REBALANCERS.register("ros")
class RandomOverSampling(Rebalancer):
    """ROS: over-sample every epoch, P(sample) proportional to 1 / N_y."""

    def sample_weights(self, epoch):
        return inverse_frequency(self.counts) if self.active(epoch) else None


@REBALANCERS.register("drs")
class DeferredReSampling(RandomOverSampling):
    """DRS: ERM until T0, then over-sampling proportional to 1 / N_y."""

    deferred = True


@REBALANCERS.register("rw")
class ReWeighting(Rebalancer):
    """RW: loss weights proportional to 1 / N_c, normalised to sum to C, every epoch."""

    def class_weights(self, epoch):
        return inverse_frequency(self.counts) if self.active(epoch) else None


@REBALANCERS.register("cbrw")
class ClassBalancedReWeighting(Rebalancer):
    """CB-RW: effective-number weights (Cui et al.), beta = rebalance.cb_beta (0.999)."""

    def class_weights(self, epoch):
        return effective_number_weights(self.counts, self.cfg.rebalance.cb_beta) if self.active(epoch) else None


@REBALANCERS.register("drw")
class DeferredReWeighting(ClassBalancedReWeighting):
    """DRW: ERM until T0, then class-balanced weights (as LDAM-DRW, beta = rebalance.cb_beta)."""

    deferred = True


@REBALANCERS.register("smote")
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

    def setup(self, ctx, model) -> None:
        self.log = ctx.log

    def prepare_train(self, train: Split, seed: int) -> Split:
        try:
            from imblearn.over_sampling import SMOTE
        except ImportError as e:   # a dependency of the package; only a broken install lacks it
            raise ImportError("rebalance.name=smote needs imbalanced-learn: pip install imbalanced-learn") from e

        k = self.cfg.rebalance.smote_k
        if k < 1:
            raise ValueError(f"rebalance.smote_k={k} must be >= 1 (imbalanced-learn's default is 5).")
        counts = np.bincount(train.y.cpu().numpy(), minlength=self.num_classes)
        present = counts[counts > 0]
        smallest = int(present.min())
        if smallest < 2:
            small = [int(c) for c in np.flatnonzero(counts == 1)]
            raise ValueError(f"rebalance.name=smote needs at least 2 training samples in every class (SMOTE "
                             f"interpolates between same-class neighbours), but class(es) {small} have 1; "
                             "lower data.ratio or raise data.n_max, or use rebalance.name=ros.")
        if smallest <= k:
            msg = (f"SMOTE: the smallest class has {smallest} samples, fewer than rebalance.smote_k+1={k + 1}; "
                   f"using k_neighbors={smallest - 1} for every class")
            (getattr(self, "log", None) or print)(msg)
            k = smallest - 1
        self.k_used = k
        shape, dtype = train.x.shape[1:], train.x.dtype
        flat = train.x.reshape(len(train), -1).cpu().numpy().astype(np.float64)
        xs, ys = SMOTE(k_neighbors=k, random_state=seed).fit_resample(flat, train.y.cpu().numpy())
        if dtype == torch.uint8:
            xs = np.clip(np.rint(xs), 0, 255)
        x_new = torch.as_tensor(xs).to(dtype).reshape(-1, *shape)
        return Split(x_new, torch.as_tensor(ys).long())


@dataclass
class Preset:
    """A paper method: a loss plus a re-balancing, with optional extra config overrides."""

    loss: str
    rebalance: str
    help: str
    overrides: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # The registry shows an entry's __doc__ when registered without help= (m2m-self, m2m-no-reject):
        # make that this preset's own line, not the class docstring.
        self.__doc__ = self.help


PRESETS: List[Tuple[str, Preset]] = [
    ("erm", Preset("ce", "none", "ERM: cross-entropy, no re-balancing")),
    ("ros", Preset("ce", "ros", "ROS: random over-sampling proportional to 1/N")),
    ("smote", Preset("ce", "smote", "SMOTE: synthetic minority over-sampling up to N_max")),
    ("rw", Preset("ce", "rw", "RW: re-weighting by 1/N")),
    ("cb-rw", Preset("ce", "cbrw", "CB-RW: class-balanced re-weighting (effective number)")),
    ("drs", Preset("ce", "drs", "DRS: deferred re-sampling from T0")),
    ("drw", Preset("ce", "drw", "DRW: deferred (class-balanced) re-weighting from T0")),
    ("focal", Preset("focal", "none", "Focal loss (gamma 1)")),
    ("ldam", Preset("ldam", "none", "LDAM loss with the cosine head")),
    ("ldam-drw", Preset("ldam", "drw", "LDAM loss + deferred re-weighting")),
    ("balanced-softmax", Preset("balanced-softmax", "none", "Balanced Softmax / logit-adjusted CE")),
    ("m2m", Preset("ce", "m2m", "M2m: major-to-minor translation from T0")),
    ("ldam-m2m", Preset("ldam", "m2m", "LDAM loss + M2m")),
]
for _name, _preset in PRESETS:
    METHODS.register(_name, _preset, help=_preset.help)
