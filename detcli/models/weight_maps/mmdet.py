"""MMDetection 2.x / 3.x checkpoints onto det's detectors.

det's modules already carry mmdet's names except where mmdet wraps a conv in a ``ConvModule``
(``.conv.`` / ``.gn.`` / ``.bn.`` children; det uses ``nn.Sequential`` indices ``.0.`` / ``.1.``) or
puts activations outside a ``Sequential`` (``rpn_conv``, ``shared_fcs``). MMDetection 3.x kept the 2.x
parameter names for these models, so one map serves both.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from detcli.models.weight_maps import register_key_map, rename_keys

#: ConvModule children -> Sequential indices (conv first, norm second).
CONV_MODULE_RULES: tuple[tuple[str, str], ...] = (
    (r"^(neck\.(?:lateral|fpn)_convs\.\d+)\.conv\.", r"\1.0."),
    (r"^(bbox_head\.(?:cls|reg)_convs\.\d+)\.conv\.", r"\1.0."),
    (r"^(bbox_head\.(?:cls|reg)_convs\.\d+)\.(?:gn|bn)\.", r"\1.1."),
)

TWO_STAGE_RULES: tuple[tuple[str, str], ...] = CONV_MODULE_RULES + (
    (r"^rpn_head\.rpn_conv\.", "rpn_head.rpn_conv.0."),
    (r"^roi_head\.bbox_head\.shared_fcs\.1\.", "roi_head.bbox_head.shared_fcs.2."),
    (r"^(roi_head\.mask_head\.convs\.\d+)\.conv\.", r"\1.0."),
)


@register_key_map("mmdet", "RetinaNet", "FCOS")
def mmdet_single_stage(state_dict: Mapping[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """RetinaNet and FCOS: ConvModule renames in the FPN and the head towers."""
    return rename_keys(state_dict, CONV_MODULE_RULES)


@register_key_map("mmdet", "FasterRCNN", "MaskRCNN")
def mmdet_two_stage(state_dict: Mapping[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Faster / Mask R-CNN: FPN ConvModules, RPN conv, the box head's fc pair and the mask head convs."""
    return rename_keys(state_dict, TWO_STAGE_RULES)


@register_key_map("mmdet", "YOLOX")
def mmdet_yolox(state_dict: Mapping[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """YOLOX: det's CSPDarknet / YOLOXPAFPN / YOLOXHead carry mmdet's names (``ConvModule`` children
    ``conv`` / ``bn`` included). The ``ema_*`` buffers mmcv's EMA hook leaves in 2.x checkpoints (the
    training weights, swapped out: the file's parameters are the EMA ones) are dropped."""
    return {k: v for k, v in state_dict.items() if not k.startswith("ema_")}


#: det -> MMDetection names: the inverse of the rules above (GN towers: ``.1.`` -> ``.gn.``).
TO_MMDET_RULES: tuple[tuple[str, str], ...] = (
    (r"^(neck\.(?:lateral|fpn)_convs\.\d+)\.0\.", r"\1.conv."),
    (r"^(bbox_head\.(?:cls|reg)_convs\.\d+)\.0\.", r"\1.conv."),
    (r"^(bbox_head\.(?:cls|reg)_convs\.\d+)\.1\.", r"\1.gn."),
    (r"^rpn_head\.rpn_conv\.0\.", "rpn_head.rpn_conv."),
    (r"^roi_head\.bbox_head\.shared_fcs\.2\.", "roi_head.bbox_head.shared_fcs.1."),
    (r"^(roi_head\.mask_head\.convs\.\d+)\.0\.", r"\1.conv."),
)


def to_mmdet_names(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A det state dict under MMDetection's parameter names (for files MMDetection reads, and for tests)."""
    return rename_keys(state_dict, TO_MMDET_RULES)
