"""Models: backbones, necks, priors, coders, assigners, losses and detectors (all registered)."""

from detcli.models import assigners, coders, losses, mask_heads, priors
from detcli.models.assigners import AssignResult, MaxIoUAssigner
from detcli.models.backbones import ResNet
from detcli.models.coders import DeltaXYWHBBoxCoder, DistancePointBBoxCoder
from detcli.models.detector import (
    DenseTestConfig,
    DenseTrainConfig,
    SingleStageDetector,
)
from detcli.models.fcos import FCOS, FCOSHead
from detcli.models.losses import (
    CrossEntropyLoss,
    FocalLoss,
    GIoULoss,
    IoULoss,
    L1Loss,
    SmoothL1Loss,
)
from detcli.models.mask_heads import FCNMaskHead, paste_masks
from detcli.models.necks import FPN
from detcli.models.priors import AnchorGenerator, MlvlPointGenerator
from detcli.models.retinanet import RetinaHead, RetinaNet

__all__ = [
    "FCOS", "FPN", "AnchorGenerator", "AssignResult", "CrossEntropyLoss", "DeltaXYWHBBoxCoder", "DenseTestConfig",
    "DenseTrainConfig", "DistancePointBBoxCoder", "FCNMaskHead", "FCOSHead", "FocalLoss", "GIoULoss", "IoULoss", "L1Loss",
    "MaxIoUAssigner", "MlvlPointGenerator", "ResNet", "RetinaHead", "RetinaNet", "SingleStageDetector",
    "SmoothL1Loss", "assigners", "coders", "losses", "mask_heads", "paste_masks", "priors",
]
