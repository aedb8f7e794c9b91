"""ResNet-50 (ImageNet style, bottleneck blocks) for ImageNet-LT at 128x128.

Layout as torchvision's ``resnet50`` (v1.5: the stride sits in the 3x3 convolution): 7x7/2 stem with
64 channels, 3x3/2 max-pool, stages of 3/4/6/3 bottleneck blocks (widths 64/128/256/512, expansion 4),
global average pooling, 2,048 features.  State-dict keys follow torchvision (``conv1``, ``bn1``,
``layer{1..4}.N.{conv1,bn1,conv2,bn2,conv3,bn3,downsample.{0,1}}``) except the head, which is
``linear`` (shared interface) instead of ``fc``; a torchvision checkpoint loads after renaming ``fc.``
to ``linear.``.  At 128x128 the last feature map is 4x4.  23.5 M parameters without the head
(25.56 M with a 1,000-class linear head, as torchvision).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from major2minor.models.base import Classifier, init_resnet_weights, make_head, require_image
from major2minor.registry import MODELS


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # in-place ReLU on fresh BatchNorm outputs and on the sum: same arithmetic, no extra activation
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        out = self.bn3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        return F.relu(out + residual, inplace=True)


class ResNet(Classifier):
    def __init__(
        self,
        layers=(3, 4, 6, 3),
        num_classes: int = 1000,
        in_channels: int = 3,
        head: str = "linear",
        mean=None,
        std=None,
    ):
        super().__init__(mean, std, image=True)
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.inplanes = 64
        self.layer1 = self._stage(64, layers[0], 1)
        self.layer2 = self._stage(128, layers[1], 2)
        self.layer3 = self._stage(256, layers[2], 2)
        self.layer4 = self._stage(512, layers[3], 2)
        self.num_features = 512 * Bottleneck.expansion
        self.linear = make_head(head, self.num_features, num_classes)
        init_resnet_weights(self)

    def _stage(self, planes: int, n: int, stride: int) -> nn.Sequential:
        layers = [Bottleneck(self.inplanes, planes, stride)]
        self.inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, n)]
        return nn.Sequential(*layers)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x)), inplace=True))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


# bf16 autocast on both. Not measured against fp32 on a GPU here: ResNet-50 on ImageNet-sized inputs is
# compute-bound, the case bf16 tensor cores are built for (unlike the launch-bound 32x32 ResNets)
@MODELS.register("resnet50", bf16=("cpu", "cuda"))
def resnet50(cfg, num_classes: int, input_shape, mean=None, std=None, head: str = "linear") -> ResNet:
    """ImageNet ResNet-50 (bottlenecks 3/4/6/3, 2,048 features), torchvision key layout; for 128x128 inputs."""
    require_image("resnet50", input_shape)
    if min(input_shape[1:]) < 32:
        raise ValueError(
            f"model.name=resnet50 downsamples 32x; inputs of {input_shape[1]}x{input_shape[2]} are too "
            "small (use at least 32x32, the paper uses 128x128; resnet32 or preact_resnet18 suit 32x32)."
        )
    return ResNet((3, 4, 6, 3), num_classes, input_shape[0], head, mean, std)
