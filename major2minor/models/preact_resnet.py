"""Pre-activation ResNet-18 for 32x32 inputs (He et al., 2016, "Identity mappings"), used for SUN397.

Layout as the common CIFAR implementation (Kuang Liu's ``PreActResNet18``): a 3x3 stem convolution
with 64 channels (no max-pool), four stages of two pre-activation basic blocks with 64/128/256/512
channels and strides 1/2/2/2, a final BN-ReLU, global average pooling and the head.  That is about
4x the channels of ResNet-32 (16/32/64), as the paper describes; 11.4 M parameters with 397 classes.
Block: ``BN -> ReLU -> conv3x3(stride) -> BN -> ReLU -> conv3x3``, plus the identity, or a 1x1
strided convolution of the pre-activated input when the shape changes.
State-dict keys: ``conv1``, ``layer{1..4}.{0,1}.{bn1,conv1,bn2,conv2,shortcut.0}``, ``bn``, ``linear``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from major2minor.models.base import Classifier, init_resnet_weights, make_head, require_image
from major2minor.registry import MODELS


class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or inplanes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x), inplace=True)  # in place on a fresh BatchNorm output
        residual = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out), inplace=True))
        return out + residual


class PreActResNet(Classifier):
    def __init__(
        self,
        blocks=(2, 2, 2, 2),
        num_classes: int = 10,
        in_channels: int = 3,
        width: int = 64,
        head: str = "linear",
        mean=None,
        std=None,
    ):
        super().__init__(mean, std, image=True)
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.inplanes = width
        self.layer1 = self._stage(widths[0], blocks[0], 1)
        self.layer2 = self._stage(widths[1], blocks[1], 2)
        self.layer3 = self._stage(widths[2], blocks[2], 2)
        self.layer4 = self._stage(widths[3], blocks[3], 2)
        self.bn = nn.BatchNorm2d(widths[3])
        self.num_features = widths[3]
        self.linear = make_head(head, widths[3], num_classes)
        init_resnet_weights(self)

    def _stage(self, planes: int, n: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(PreActBlock(self.inplanes, planes, s))
            self.inplanes = planes
        return nn.Sequential(*layers)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = F.relu(self.bn(x), inplace=True)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


# bf16 autocast: on a native-BF16 CPU; at 32x32 a GPU is launch-bound (see resnet32), so fp32 there
@MODELS.register("preact_resnet18", bf16=("cpu",))
def preact_resnet18(cfg, num_classes: int, input_shape, mean=None, std=None, head: str = "linear") -> PreActResNet:
    """Pre-activation ResNet-18 for 32x32 images (64/128/256/512 channels, ~4x ResNet-32's width)."""
    require_image("preact_resnet18", input_shape)
    return PreActResNet((2, 2, 2, 2), num_classes, input_shape[0], 64, head, mean, std)
