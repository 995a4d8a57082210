"""seresnet: Squeeze-and-Excitation ResNets (Hu et al., arXiv 1709.01507) with hooks to look inside them."""

from .attention import ATTENTIONS, build_attention
from .blocks import INTEGRATIONS, BasicBlock, Bottleneck
from .hooks import Constant, ExcitationStats, Off, Replace, Scale, SECapture, capture, excitation_stats, steer
from .model import (
    SEResNet,
    SEResNetConfig,
    count_macs,
    count_params,
    create_model,
    get_config,
    list_models,
    register_model,
)
from .se import ChannelScale, Excitation, SEBlock, Squeeze, se_hidden_width

__all__ = [
    "ATTENTIONS",
    "build_attention",
    "Constant",
    "ExcitationStats",
    "Off",
    "Replace",
    "Scale",
    "SECapture",
    "capture",
    "excitation_stats",
    "steer",
    "INTEGRATIONS",
    "BasicBlock",
    "Bottleneck",
    "ChannelScale",
    "Excitation",
    "SEBlock",
    "SEResNet",
    "SEResNetConfig",
    "Squeeze",
    "count_macs",
    "count_params",
    "create_model",
    "get_config",
    "list_models",
    "register_model",
    "se_hidden_width",
]
__version__ = "0.1.0"
