"""Small models: ``mlp`` (features) and ``cnn`` (tiny images such as 8x8 digits)."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn

from major2minor.models.base import Classifier, make_head, require_image
from major2minor.registry import MODELS


class MLP(Classifier):
    """Flatten, then ``Linear -> ReLU`` per hidden size, then the head (paper: one layer of 256)."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden: Sequence[int] = (256,),
        head: str = "linear",
        mean=None,
        std=None,
        image: bool = False,
    ):
        super().__init__(mean, std, image=image)
        layers, width = [nn.Flatten()], in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            width = h
        self.features = nn.Sequential(*layers)
        self.linear = make_head(head, width, num_classes)
        self.num_features = width

    def body(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class SmallCNN(Classifier):
    """Three 3x3 conv-BN-ReLU layers, one 2x2 max-pool, global average pooling; for 8x8 inputs."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32, head: str = "linear", mean=None, std=None):
        super().__init__(mean, std, image=True)

        def block(i: int, o: int) -> list:
            return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(in_channels, width),
            *block(width, width),
            nn.MaxPool2d(2),
            *block(width, 2 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.linear = make_head(head, 2 * width, num_classes)
        self.num_features = 2 * width
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def body(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


@MODELS.register("mlp", light=True)  # light: too little work per op to split across threads
def mlp(cfg, num_classes: int, input_shape, mean=None, std=None, head: str = "linear") -> MLP:
    """MLP over flattened inputs; hidden sizes from model.hidden (paper: [256])."""
    return MLP(int(math.prod(input_shape)), num_classes, cfg.hidden, head, mean, std, image=len(input_shape) == 3)


@MODELS.register("cnn", light=True)
def cnn(cfg, num_classes: int, input_shape, mean=None, std=None, head: str = "linear") -> SmallCNN:
    """Small CNN for tiny images (digits-lt); base width from model.width."""
    require_image("cnn", input_shape)
    return SmallCNN(input_shape[0], num_classes, cfg.width, head, mean, std)
