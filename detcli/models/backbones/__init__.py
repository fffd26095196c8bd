"""Backbones (registered in BACKBONES)."""

from detcli.models.backbones.resnet import ResNet

__all__ = ["ResNet"]
