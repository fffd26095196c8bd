"""Backbones (registered in BACKBONES)."""

from detcli.models.backbones.csp_darknet import CSPDarknet
from detcli.models.backbones.resnet import ResNet

__all__ = ["CSPDarknet", "ResNet"]
