"""Backbones (registered in BACKBONES)."""

from detcli.models.backbones.resnet import ResNet, ResNetV1d
from detcli.models.backbones.resnext import ResNeXt

__all__ = ["ResNeXt", "ResNet", "ResNetV1d"]
