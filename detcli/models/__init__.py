"""Models: backbones, necks, priors, coders, assigners, losses and detectors (all registered)."""

from detcli.models import assigners, coders, losses, mask_heads, priors, samplers
from detcli.models.assigners import AssignResult, ATSSAssigner, BatchAssigner, MaxIoUAssigner
from detcli.models.atss import ATSS, ATSSHead
from detcli.models.backbones import ResNet, ResNetV1d, ResNeXt
from detcli.models.bbox_heads import ConvFCBBoxHead, Shared2FCBBoxHead
from detcli.models.cascade import CascadeRCNN, CascadeRoIHead
from detcli.models.coders import DeltaXYWHBBoxCoder, DistancePointBBoxCoder
from detcli.models.dense_head import BaseDenseHead, LevelScores
from detcli.models.detector import (
    DenseTestConfig,
    DenseTrainConfig,
    SingleStageDetector,
)
from detcli.models.fcos import FCOS, FCOSHead
from detcli.models.gfl import GFL, GFLHead, Integral
from detcli.models.losses import (
    CrossEntropyLoss,
    DistributionFocalLoss,
    FocalLoss,
    GIoULoss,
    IoULoss,
    L1Loss,
    QualityFocalLoss,
    SmoothL1Loss,
)
from detcli.models.mask_heads import FCNMaskHead, paste_masks
from detcli.models.necks import FPN
from detcli.models.priors import AnchorGenerator, MlvlPointGenerator
from detcli.models.retinanet import RetinaHead, RetinaNet
from detcli.models.roi_extractors import SingleRoIExtractor
from detcli.models.roi_head import StandardRoIHead
from detcli.models.rpn import RPNHead
from detcli.models.samplers import RandomSampler, SamplingResult
from detcli.models.two_stage import FasterRCNN, MaskRCNN, TwoStageDetector

__all__ = [
    "FCOS", "FPN", "AnchorGenerator", "AssignResult", "ConvFCBBoxHead", "CrossEntropyLoss", "DeltaXYWHBBoxCoder",
    "DenseTestConfig", "DenseTrainConfig", "DistancePointBBoxCoder", "FCNMaskHead", "FCOSHead", "FasterRCNN",
    "FocalLoss", "GIoULoss", "IoULoss", "L1Loss", "MaskRCNN", "RPNHead", "RandomSampler", "SamplingResult",
    "Shared2FCBBoxHead", "SingleRoIExtractor", "StandardRoIHead", "TwoStageDetector",
    "MaxIoUAssigner", "MlvlPointGenerator", "ResNet", "RetinaHead", "RetinaNet", "SingleStageDetector",
    "SmoothL1Loss", "assigners", "coders", "losses", "mask_heads", "paste_masks", "priors", "samplers",
]
from detcli.models.assigners import SimOTAAssigner  # noqa: E402
from detcli.models.backbones import CSPDarknet  # noqa: E402
from detcli.models.coders import TorchvisionDeltaXYWHBBoxCoder  # noqa: E402
from detcli.models.mask_heads import paste_masks_torchvision  # noqa: E402
from detcli.models.necks import YOLOXPAFPN  # noqa: E402
from detcli.models.yolox import YOLOX, YOLOXHead  # noqa: E402

__all__ += ["CSPDarknet", "SimOTAAssigner", "YOLOX", "YOLOXHead", "YOLOXPAFPN"]
__all__ += ["CascadeRCNN", "CascadeRoIHead"]
__all__ += ["TorchvisionDeltaXYWHBBoxCoder", "paste_masks_torchvision", "BaseDenseHead", "BatchAssigner", "LevelScores"]
__all__ += ["ResNeXt", "ResNetV1d"]
__all__ += ["ATSS", "ATSSAssigner", "ATSSHead"]
__all__ += ["GFL", "GFLHead", "Integral", "QualityFocalLoss", "DistributionFocalLoss"]
