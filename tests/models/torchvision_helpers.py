"""Shared by the torchvision parity tests: torchvision's dense detectors (COCO_V1 architecture) with
randomised weights that produce real detections, and det's ``*_tv`` preset model loaded from them."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torchvision.models import resnet50
from torchvision.models.detection import FCOS, RetinaNet
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops.feature_pyramid_network import LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

from detcli.config import load_config
from detcli.models.weight_maps import convert_state_dict
from detcli.models.weight_maps.torchvision import COCO80_CATEGORY_IDS
from detcli.registry import DETECTORS, build
from detcli.resources import find_preset

#: torchvision's COCO category id of each of det's 80 labels
IDS = torch.tensor(COCO80_CATEGORY_IDS)
#: torchvision's 11 labels beyond the 80 COCO classes (background, unused ids)
UNUSED = [k for k in range(91) if k not in COCO80_CATEGORY_IDS]


def tv_dense_model(kind: str, **kwargs: Any) -> nn.Module:
    """torchvision's ``{kind}_resnet50_fpn`` architecture as its COCO_V1 builder makes it, in eval mode.

    ``kwargs`` go to ``RetinaNet`` / ``FCOS`` (e.g. ``min_size``, ``max_size`` of its transform).
    """
    body = resnet50(norm_layer=FrozenBatchNorm2d)
    backbone = _resnet_fpn_extractor(body, 3, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256))
    cls = RetinaNet if kind == "retinanet" else FCOS
    model = cls(backbone, 91, **kwargs)
    if kind == "retinanet":  # retinanet_resnet50_fpn: overwrite_eps(model, 0.0) for COCO_V1
        for m in model.modules():
            if isinstance(m, FrozenBatchNorm2d):
                m.eps = 0.0
    return model.eval()


@torch.no_grad()
def perturb_dense(model: nn.Module, kind: str, g: torch.Generator) -> None:
    """Randomise every norm and conv (variance-preserving) so that real detections come out; the
    unused labels get a bias of -60 so they never score (as in trained weights)."""
    for m in model.modules():
        if isinstance(m, FrozenBatchNorm2d):
            m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.5)
            m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
        elif isinstance(m, nn.GroupNorm):
            m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.75)
            m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        elif isinstance(m, nn.Conv2d):  # variance-preserving, so the head sees O(1) maps
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) / math.sqrt(m.weight[0].numel()))
            if m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    cls = model.head.classification_head.cls_logits
    a = cls.bias.numel() // 91
    bias, weight = cls.bias.view(a, 91), cls.weight.view(a, 91, -1)
    bias.add_(-2.0 if kind == "retinanet" else -3.0)
    weight.mul_(3.0)
    bias[:, UNUSED] = -60.0
    weight[:, UNUSED] = 0.0


def det_from_torchvision(preset: str, tv: nn.Module, cfg: dict | None = None) -> tuple[nn.Module, dict]:
    """det's model of ``preset`` (or of ``cfg``) with ``tv``'s state dict converted by the key map, in eval mode."""
    cfg = load_config(str(find_preset(preset))) if cfg is None else cfg
    det = build(cfg["model"], DETECTORS, path="model")
    det.load_state_dict(convert_state_dict("torchvision", det, tv.state_dict()), strict=True)
    return det.eval(), cfg
