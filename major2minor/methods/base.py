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
    """Class-balanced weights (Cui et al.): w_c proportional to (1 - beta) / (1 - beta^N_c), sum = C."""
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

    A class with fewer than k+1 samples cannot give k neighbours; k is lowered to N_c - 1 for the
    whole run (documented fallback, logged) and a class with a single sample is an error.
    """

    def prepare_train(self, train: Split, seed: int) -> Split:
        from imblearn.over_sampling import SMOTE

        k = self.cfg.rebalance.smote_k
        smallest = min(self.counts)
        if smallest < 2:
            raise ValueError(f"rebalance.name=smote needs at least 2 samples in every class, but the "
                             f"smallest class has {smallest}; lower data.ratio or use rebalance.name=ros.")
        if smallest <= k:
            print(f"[smote] smallest class has {smallest} samples; using k_neighbors={smallest - 1} "
                  f"instead of rebalance.smote_k={k}")
            k = smallest - 1
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
