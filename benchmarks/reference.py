"""A plain SE-ResNet-20 for CIFAR written the way most tutorials and ports write it, as a speed reference.

The SE layer is ``AdaptiveAvgPool2d(1)`` -> ``Linear`` -> ``ReLU`` -> ``Linear`` -> ``Sigmoid`` -> ``x * y`` and the
residual unit is conv-bn-relu-conv-bn-SE, ``out += residual``, ReLU. Widths, reduction (16, hidden width C // 16),
biases and the projection shortcut (1x1 conv + BN where the width changes) are those of ``se_resnet20``, so the
two networks have the same weights: :func:`copy_weights` loads ours into it and the outputs agree.
"""

from __future__ import annotations

import torch
from torch import nn


class SELayer(nn.Module):
    """Tutorial-style squeeze-and-excitation: (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channel: int, reduction: int = 16) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channel, channel // reduction),
            nn.ReLU(inplace=True),
            nn.Linear(channel // reduction, channel),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, _, _ = x.size()
        y = self.avg_pool(x).view(b, c)
        y = self.fc(y).view(b, c, 1, 1)
        return x * y.expand_as(x)


class SEBasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN-SE, plus the (projected) input, then ReLU."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, reduction: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        self.se = SELayer(planes, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = self.se(out)
        out += residual
        return self.relu(out)


class ReferenceSEResNet20(nn.Module):
    """SE-ResNet-20 for 32x32 inputs: (B, 3, 32, 32) -> logits (B, num_classes)."""

    def __init__(self, num_classes: int = 10, reduction: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        blocks, inplanes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                blocks.append(SEBasicBlock(inplanes, planes, stride if i == 0 else 1, reduction))
                inplanes = planes
        self.layers = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def copy_weights(ours: nn.Module, ref: nn.Module) -> None:
    """Load ``ours`` (``se_resnet20``) into ``ref`` tensor by tensor, in registration order (same shapes)."""
    src, dst = list(ours.state_dict().values()), ref.state_dict()
    if len(src) != len(dst) or any(a.shape != b.shape for a, b in zip(src, dst.values())):
        raise ValueError("the reference network does not have the same tensors as the given model")
    ref.load_state_dict(dict(zip(dst.keys(), src)))
