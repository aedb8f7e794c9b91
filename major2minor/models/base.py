"""The interface every model shares, and the heads.

``forward(x)`` takes inputs in the data's natural space (pixels in [0, 1]) and returns logits;
normalisation ``(x - mean) / std`` happens inside, in non-persistent buffers, so state dicts hold
only the network's own weights (and the official M2m checkpoints load unchanged).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


class NormedLinear(nn.Module):
    """Cosine classifier head used by LDAM: ``logit_c = <x/|x|, w_c/|w_c|>`` (scale lives in the loss).

    The weight is stored as (in_features, out_features), as in the public LDAM/M2m code, so their
    ``resnet32_norm`` checkpoints load unchanged.
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.weight.data.uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1).mm(F.normalize(self.weight, dim=0))


def require_image(model_name: str, input_shape) -> None:
    """Refuse feature vectors for a convolutional model, naming the model and the shape."""
    if len(input_shape) != 3:
        raise ValueError(
            f"model.name={model_name} needs image inputs (C, H, W), got shape {tuple(input_shape)}; "
            "use model.name=mlp for feature vectors."
        )


def init_resnet_weights(model: nn.Module) -> None:
    """He (fan-out) initialisation of every convolution, BatchNorm as the identity (torchvision's)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def make_head(kind: str, in_features: int, num_classes: int) -> nn.Module:
    if kind == "normed":
        return NormedLinear(in_features, num_classes)
    if kind == "linear":
        return nn.Linear(in_features, num_classes)
    raise ValueError(f"model.head='{kind}' is not allowed; use linear or normed.")


class Classifier(nn.Module):
    """Base class: subclasses define ``body`` (features) and ``linear`` (the head)."""

    def __init__(
        self, mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None, image: bool = True
    ):
        super().__init__()
        shape = (1, -1, 1, 1) if image else (1, -1)
        m = torch.tensor(mean if mean is not None else [0.0], dtype=torch.float32).view(shape)
        s = torch.tensor(std if std is not None else [1.0], dtype=torch.float32).view(shape)
        self.register_buffer("input_mean", m, persistent=False)
        self.register_buffer("input_std", s, persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.input_mean) / self.input_std

    def body(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features of a natural-space input batch."""
        return self.body(self.normalize(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
