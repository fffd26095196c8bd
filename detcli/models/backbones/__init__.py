"""Backbones (registered in BACKBONES)."""

from detcli.models.backbones.csp_darknet import CSPDarknet
from detcli.models.backbones.resnet import ResNet, ResNetV1d
from detcli.models.backbones.resnext import ResNeXt

__all__ = ["CSPDarknet", "ResNeXt", "ResNet", "ResNetV1d"]
