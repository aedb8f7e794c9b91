"""Losses; each returns the per-sample loss (the engine takes the batch mean, as the public code).

Every loss is built from the loss config and the training class counts N_c, and takes optional
per-class weights w (re-weighting): the sample loss is then w_y * loss, as ``cross_entropy(...,
weight=w, reduction='none')``.

* ``ce``:      -log softmax(z)_y
* ``focal``:   (1 - p)^gamma * CE_w with p = exp(-CE_w)   (LDAM-DRW / M2m public code; gamma 0 = CE)
* ``ldam``:    CE_w(s * (z - m_y e_y)), m_c = C / N_c^(1/4), C so that max_c m_c = max_margin;
               needs the cosine head (z in [-1, 1])
* ``balanced-softmax``: CE_w(z + tau * log pi), pi_c = N_c / N (logit adjustment; tau = 1 is
               Balanced Softmax)
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from major2minor.config import LossConfig
from major2minor.metrics import as_labels
from major2minor.registry import LOSSES


class Loss(nn.Module):
    """A per-sample loss built from the loss config and the class counts.

    ``label`` is the loss's name in results tables; ``head`` (None = any) is the classifier head the
    loss needs, which ``model.head=auto`` picks and config validation enforces.
    """

    label: str = ""
    head: Optional[str] = None

    @classmethod
    def logit_scale(cls, loss_cfg) -> float:
        """The factor the loss applies to the model's logits before its softmax (1 unless declared):
        f's probabilities "as its loss sees them" are softmax(scale * logits)."""
        return 1.0

    def __init__(self, cfg, counts: Sequence[int]):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("counts", torch.as_tensor(list(counts), dtype=torch.float32), persistent=False)
        # torch's cross-entropy takes int64 targets only: integer labels of any type are converted here,
        # before forward, for every loss (one registered by a user too)
        self.register_forward_pre_hook(_int64_target, with_kwargs=True)

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, class_weight: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        raise NotImplementedError


def _int64_target(module: nn.Module, args: tuple, kwargs: dict) -> tuple:
    if len(args) > 1:
        args = (args[0], as_labels(args[1], "target"), *args[2:])
    elif "target" in kwargs:
        kwargs = {**kwargs, "target": as_labels(kwargs["target"], "target")}
    return args, kwargs


@LOSSES.register("ce")
class CrossEntropy(Loss):
    """Cross-entropy (ERM)."""

    label = "CE"

    def forward(self, logits, target, class_weight=None):
        return F.cross_entropy(logits, target, weight=class_weight, reduction="none")


@LOSSES.register("focal")
class FocalLoss(Loss):
    """Focal loss (Lin et al.), gamma = loss.focal_gamma (paper: 1)."""

    label = "Focal"

    def __init__(self, cfg, counts):
        super().__init__(cfg, counts)
        check = LossConfig.checks["focal_gamma"]  # the config's own rule, also for a loss built in Python
        if not check.allows(cfg.focal_gamma):
            raise check.error("loss.focal_gamma", cfg.focal_gamma)

    def forward(self, logits, target, class_weight=None):
        ce = F.cross_entropy(logits, target, weight=class_weight, reduction="none")
        return focal_from_ce(ce, self.cfg.focal_gamma)


def focal_from_ce(ce: torch.Tensor, gamma: float) -> torch.Tensor:
    """(1 - p)^gamma * ce with p = exp(-ce), as the public code's ``focal_loss``.

    1 - p is computed as ``-expm1(-ce)`` (the same number, without cancellation) and kept above a
    tiny floor: for 0 < gamma < 1 the derivative of (1 - p)^gamma is infinite at p = 1, which a
    confidently right sample (ce rounds to 0) reaches, and the public code's gradient is then NaN
    although the loss is finite.  The floor changes the loss by less than 1e-12 * ce.
    """
    if gamma == 0:
        return ce
    one_minus_p = (-torch.expm1(-ce)).clamp_min(1e-12)
    return one_minus_p**gamma * ce


def ldam_margins(counts: Sequence[int], max_margin: float) -> torch.Tensor:
    m = 1.0 / np.sqrt(np.sqrt(np.asarray(counts, dtype=np.float64)))
    return torch.as_tensor(m * (max_margin / m.max()), dtype=torch.float32)


@LOSSES.register("ldam")
class LDAMLoss(Loss):
    """LDAM (Cao et al.): label-distribution-aware margins m_c proportional to N_c^(-1/4), scale s."""

    label = "LDAM"
    head = "normed"  # margins are subtracted from cosine logits in [-1, 1]

    @classmethod
    def logit_scale(cls, loss_cfg) -> float:
        return loss_cfg.ldam_scale  # s * cosine

    def __init__(self, cfg, counts):
        super().__init__(cfg, counts)
        self.register_buffer("margins", ldam_margins(counts, cfg.ldam_max_margin), persistent=False)

    def forward(self, logits, target, class_weight=None):
        margin = torch.zeros_like(logits).scatter_(1, target[:, None], self.margins[target][:, None].to(logits.dtype))
        return F.cross_entropy(self.cfg.ldam_scale * (logits - margin), target, weight=class_weight, reduction="none")


@LOSSES.register("balanced-softmax")
class BalancedSoftmax(Loss):
    """Balanced Softmax / logit-adjusted CE: CE(z + tau * log prior) (beyond the paper)."""

    label = "Balanced Softmax"

    def forward(self, logits, target, class_weight=None):
        log_prior = torch.log(self.counts / self.counts.sum()).to(logits.dtype)
        return F.cross_entropy(logits + self.cfg.tau * log_prior, target, weight=class_weight, reduction="none")


def build_loss(cfg, counts: Sequence[int]) -> Loss:
    return LOSSES.get(cfg.loss.name)(cfg.loss, counts)
