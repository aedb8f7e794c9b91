"""CIFAR ResNet-32 with option-A shortcuts, laid out exactly as the official M2m/LDAM code.

State-dict keys: ``conv_1_3x3.weight``, ``bn_1.*``, ``stage_{1,2,3}.{0..4}.{conv_a,bn_a,conv_b,bn_b}.*``,
``linear.{weight,bias}`` (``linear.weight`` only for the normed head), so official checkpoints
``{'net': state_dict, ...}`` load with ``load_state_dict(strict=True)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from major2minor.models.base import Classifier, make_head, require_image
from major2minor.registry import MODELS


class ShortcutA(nn.Module):
    """Option A: stride-2 subsampling, then zero channels appended (no parameters)."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return torch.cat((x, torch.zeros_like(x)), 1)


class BasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv_a = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn_a = nn.BatchNorm2d(planes)
        self.conv_b = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn_b = nn.BatchNorm2d(planes)
        self.downsample = ShortcutA(stride) if stride != 1 or inplanes != planes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In-place ReLU and residual add: the same arithmetic without allocating a new activation
        # (none of the tensors written in place is saved for backward by conv or BatchNorm).
        out = F.relu(self.bn_a(self.conv_a(x)), inplace=True)
        out = self.bn_b(self.conv_b(out))
        out += x if self.downsample is None else self.downsample(x)
        return F.relu(out, inplace=True)


class CifarResNet(Classifier):
    def __init__(self, depth: int, num_classes: int, in_channels: int = 3, head: str = "linear", mean=None, std=None):
        super().__init__(mean, std, image=True)
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth={depth} must be 6n+2 (20, 32, 44, 56, 110).")
        n = (depth - 2) // 6
        self.conv_1_3x3 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn_1 = nn.BatchNorm2d(16)
        self.inplanes = 16
        self.stage_1 = self._stage(16, n, 1)
        self.stage_2 = self._stage(32, n, 2)
        self.stage_3 = self._stage(64, n, 2)
        self.linear = make_head(head, 64, num_classes)
        self.num_features = 64
        for m in self.modules():  # the official initialisation
            if isinstance(m, nn.Conv2d):
                fan = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / fan))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight)
                m.bias.data.zero_()

    def _stage(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(self.inplanes, planes, stride)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn_1(self.conv_1_3x3(x)), inplace=True)
        x = self.stage_3(self.stage_2(self.stage_1(x)))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


# bf16 autocast pays on a native-BF16 CPU (1.5-1.6x); on a GPU this 32x32 network is launch-bound and bf16
# is measured slower (H200: DRS step 15.7 ms vs 12.7 ms in fp32), so train.amp=auto keeps fp32 there
@MODELS.register("resnet32", bf16=("cpu",))
def resnet32(cfg, num_classes: int, input_shape, mean=None, std=None, head: str = "linear") -> CifarResNet:
    """CIFAR ResNet-32 (16/32/64 channels, 5 blocks a stage, option-A shortcuts), official key layout."""
    require_image("resnet32", input_shape)
    return CifarResNet(32, num_classes, input_shape[0], head, mean, std)
