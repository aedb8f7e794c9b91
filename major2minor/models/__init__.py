"""Models with one shared interface; importing this package registers them in ``MODELS``."""

from __future__ import annotations

from major2minor.models import preact_resnet, resnet_cifar, resnet_imagenet, small  # noqa: F401
from major2minor.models.base import Classifier, NormedLinear
from major2minor.registry import LOSSES, MODELS


def head_for(cfg) -> str:
    """``model.head=auto`` picks the head the loss declares it needs (LDAM: the cosine head, for
    normalised logits), else the linear head."""
    if cfg.model.head != "auto":
        return cfg.model.head
    return getattr(LOSSES.get(cfg.loss.name), "head", None) or "linear"


def build_model(cfg, num_classes: int, input_shape, mean=None, std=None) -> Classifier:
    return MODELS.get(cfg.model.name)(cfg.model, num_classes, tuple(input_shape), mean, std, head=head_for(cfg))


__all__ = ["Classifier", "NormedLinear", "build_model", "head_for"]
