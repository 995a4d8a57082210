"""Residual units with an SE block: the ResNet basic block and bottleneck (He et al. 2016, Hu et al. Fig. 3 and 5).

Where the SE block sits is the ``integration`` mode (paper Fig. 5, Tables 14 and 15):

* ``"standard"``: on the residual branch, after its last BN and before the addition with the identity.
* ``"pre"``:      on the residual branch, before its first conv (SE-PRE).
* ``"post"``:     after the addition and the ReLU (SE-POST).
* ``"identity"``: on the identity path, in parallel to the residual branch (SE-Identity).
* ``"3x3"``:      bottleneck only, after the 3x3 conv and its BN + ReLU (SE_3x3, fewer parameters).
* ``"none"``:     no SE block: a plain ResNet unit.

Layer names follow torchvision (``conv1``, ``bn1``, ..., ``downsample``) so its weights load directly; the SE block is
``se``. ``se_kwargs`` may name another attention module for that place (``attention="eca"``, ...; see
``seresnet.attention``); every position above works for every module, all of which keep the map's shape.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from .attention import AttentionBlock, build_attention
from .se import SEBlock

Integration = Literal["standard", "pre", "post", "identity", "3x3", "none"]
INTEGRATIONS: tuple[str, ...] = ("standard", "pre", "post", "identity", "3x3", "none")


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (a BN follows)."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution with no bias (a BN follows)."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)


def projection_shortcut(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    """The projection shortcut used when a unit changes resolution or width: 1x1 conv + BN."""
    return nn.Sequential(conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))


def _check_integration(integration: str, allowed: tuple[str, ...], block: str) -> None:
    if integration not in allowed:
        raise ValueError(f"{block} supports SE integration modes {allowed}, got {integration!r}")


class _SEResidualUnit(nn.Module):
    """Shared forward for both unit types: branch, SE placement, addition, ReLU."""

    integration: str
    se: SEBlock | AttentionBlock | None
    downsample: nn.Module | None
    relu: nn.ReLU
    branch_relu: bool = False

    def branch_before_last_bn(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    def last_bn(self) -> nn.BatchNorm2d:  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch: convs and BNs, up to and including the last BN (and ReLU, with ``branch_relu``)."""
        out = self.last_bn()(self.branch_before_last_bn(x))
        return self.relu(out) if self.branch_relu else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        mode = self.integration
        if mode == "standard" and not self.branch_relu:
            # SE right after the last BN: the SE block may take its squeeze from that BN (forward_after_batchnorm;
            # the other attention modules just apply themselves to the BN's output)
            out = self.se.forward_after_batchnorm(self.branch_before_last_bn(x), self.last_bn())
        else:
            out = self.branch(self.se(x) if mode == "pre" else x)
            if mode == "standard":
                out = self.se(out)
            elif mode == "identity":
                identity = self.se(identity)
        out += identity  # in place, as torchvision does: one allocation less per unit (autograd allows it here)
        out = self.relu(out)
        if mode == "post":
            out = self.se(out)
        return out


class BasicBlock(_SEResidualUnit):
    """Two 3x3 convs (ResNet-18/34 and the CIFAR ResNets) with an optional SE block.

    Input (B, in_ch, H, W) -> output (B, planes, H / stride, W / stride).
    """

    expansion = 1

    def __init__(
        self,
        in_ch: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        integration: Integration = "standard",
        se_kwargs: dict[str, Any] | None = None,
        stride_on: str = "3x3",  # accepted for a uniform signature; a basic block has only 3x3 convs
        branch_relu: bool = False,
    ) -> None:
        super().__init__()
        _check_integration(integration, ("standard", "pre", "post", "identity", "none"), "BasicBlock")
        self.integration = integration
        # timm's legacy_seresnet18/34 (senet.py) apply a ReLU after bn2, before SE and the addition
        self.branch_relu = branch_relu
        self.conv1 = conv3x3(in_ch, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        se_channels = in_ch if integration == "pre" else planes
        self.se = None if integration == "none" else build_attention(se_channels, **(se_kwargs or {}))

    def branch_before_last_bn(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.relu(self.bn1(self.conv1(x))))

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2


class Bottleneck(_SEResidualUnit):
    """1x1 reduce, 3x3, 1x1 expand (x4) (ResNet-50/101/152, CIFAR ResNet-164) with an optional SE block.

    ``stride_on`` puts the stride of a downsampling unit on the 3x3 conv (torchvision / timm "v1.5") or on the
    first 1x1 conv (the original Caffe SENet release). Input (B, in_ch, H, W) -> (B, 4 planes, H / s, W / s).
    """

    expansion = 4

    def __init__(
        self,
        in_ch: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        integration: Integration = "standard",
        se_kwargs: dict[str, Any] | None = None,
        stride_on: str = "3x3",
    ) -> None:
        super().__init__()
        _check_integration(integration, INTEGRATIONS, "Bottleneck")
        if stride_on not in ("3x3", "1x1"):
            raise ValueError(f"stride_on must be '3x3' or '1x1', got {stride_on!r}")
        self.integration = integration
        out_ch = planes * self.expansion
        self.conv1 = conv1x1(in_ch, planes, stride if stride_on == "1x1" else 1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride if stride_on == "3x3" else 1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_ch)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        se_channels = {"pre": in_ch, "3x3": planes}.get(integration, out_ch)
        self.se = None if integration == "none" else build_attention(se_channels, **(se_kwargs or {}))

    def branch_before_last_bn(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        if self.integration == "3x3":
            out = self.se(out)
        return self.conv3(out)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3
