"""torchvision detection checkpoints (``*_coco`` COCO_V1 weights) onto det's ``*_tv`` presets.

Dense detectors (RetinaNet, FCOS) in the first section, two-stage ones (Faster / Mask R-CNN) in the
second. torchvision's 91-entry COCO label space (background at 0, category ids 1..90 with gaps) is
mapped onto det's class order here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from detcli.errors import CheckpointError
from detcli.models.weight_maps import register_key_map, rename_keys

#: The 80 COCO category ids in det's class order (label i of det is category COCO80_CATEGORY_IDS[i]);
#: torchvision's 91-way COCO heads have the class of category id k at row k (row 0: background).
COCO80_CATEGORY_IDS: tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33, 34,
    35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63,
    64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90)

# ---------------------------------------------------------------- dense detectors (RetinaNet, FCOS)

# ---------------------------------------------------------------- two-stage detectors (Faster / Mask R-CNN)
#
# torchvision's ``fasterrcnn_resnet50_fpn`` / ``maskrcnn_resnet50_fpn`` state dicts, in both layouts
# torchvision has written (``_version`` 1: ``inner_blocks.i.weight``, ``rpn.head.conv.weight``,
# ``mask_head.mask_fcnK.weight``, as in the COCO_V1 files; ``_version`` 2: ``inner_blocks.i.0.weight``,
# ``rpn.head.conv.0.0.weight``, ``mask_head.I.0.weight``), onto the ``*_tv`` presets. The label space:
#
# - 91 rows (background 0, COCO category ids 1..90 of which 10 are unused "N/A"): det's 80 classes are
#   the rows of :data:`COCO80_CATEGORY_IDS` in det's order, then the background, then (when the box head
#   has ``num_extra_cls_logits: 10``) the 10 N/A rows, which keep torchvision's softmax; box deltas and
#   mask logits keep the 80 classes' rows only.
# - ``C + 1`` rows (a torchvision model trained with ``num_classes = C + 1``): rows ``1..C`` then row 0.

#: torchvision's 10 unused "N/A" rows of its 91-way COCO classifier.
TV_COCO_NA_IDS: tuple[int, ...] = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)

TV_TWO_STAGE_RULES: tuple[tuple[str, str], ...] = (
    (r"^backbone\.body\.", "backbone."),
    (r"^backbone\.fpn\.inner_blocks\.(\d+)\.(?:0\.)?(weight|bias)$", r"neck.lateral_convs.\1.0.\2"),
    (r"^backbone\.fpn\.layer_blocks\.(\d+)\.(?:0\.)?(weight|bias)$", r"neck.fpn_convs.\1.0.\2"),
    (r"^rpn\.head\.conv\.(?:0\.0\.)?(weight|bias)$", r"rpn_head.rpn_conv.0.\1"),
    (r"^rpn\.head\.cls_logits\.", "rpn_head.rpn_cls."),
    (r"^rpn\.head\.bbox_pred\.", "rpn_head.rpn_reg."),
    (r"^roi_heads\.box_head\.fc6\.", "roi_head.bbox_head.shared_fcs.0."),
    (r"^roi_heads\.box_head\.fc7\.", "roi_head.bbox_head.shared_fcs.2."),
    (r"^roi_heads\.box_predictor\.cls_score\.", "roi_head.bbox_head.fc_cls."),
    (r"^roi_heads\.box_predictor\.bbox_pred\.", "roi_head.bbox_head.fc_reg."),
    (r"^roi_heads\.mask_head\.(\d+)\.0\.", r"roi_head.mask_head.convs.\1.0."),
    (r"^roi_heads\.mask_predictor\.conv5_mask\.", "roi_head.mask_head.upsample."),
    (r"^roi_heads\.mask_predictor\.mask_fcn_logits\.", "roi_head.mask_head.conv_logits."),
)


def _label_rows(num_rows: int, num_classes: int, num_extra: int) -> tuple[list[int], list[int]]:
    """torchvision rows of det's classifier (fg, background, extras) and of det's C foreground classes."""
    if num_rows == 91 and num_classes == 80 and num_extra in (0, len(TV_COCO_NA_IDS)):
        fg = list(COCO80_CATEGORY_IDS)
        return fg + [0] + list(TV_COCO_NA_IDS[:num_extra]), fg
    if num_rows == num_classes + 1 and num_extra == 0:
        fg = list(range(1, num_classes + 1))
        return fg + [0], fg
    raise CheckpointError(
        f"torchvision box predictor has {num_rows} classes (background included); det's box head has "
        f"num_classes {num_classes} and num_extra_cls_logits {num_extra}: use num_classes: 80 with "
        f"num_extra_cls_logits: 10 for torchvision's 91-way COCO head, or num_classes: {num_rows - 1} "
        f"with num_extra_cls_logits: 0")


@register_key_map("torchvision", "FasterRCNN", "MaskRCNN")
def torchvision_two_stage(state_dict: Mapping[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Faster / Mask R-CNN R50-FPN: renames, the label-space rows and zero ``num_batches_tracked``
    for the backbone's FrozenBatchNorm layers (which have none)."""
    state = {re.sub(r"^roi_heads\.mask_head\.mask_fcn(\d+)\.", lambda m: f"roi_heads.mask_head.{int(m[1]) - 1}.0.", k): v
             for k, v in state_dict.items()}
    out = rename_keys(state, TV_TWO_STAGE_RULES)
    cls_key = "roi_head.bbox_head.fc_cls.weight"
    bbox_head = getattr(getattr(model, "roi_head", None), "bbox_head", None)
    if cls_key in out and bbox_head is not None:
        rows, fg = _label_rows(out[cls_key].shape[0], int(bbox_head.num_classes),
                               int(getattr(bbox_head, "num_extra_cls_logits", 0)))
        reg_rows = torch.tensor([4 * r + j for r in fg for j in range(4)])
        for name in ("weight", "bias"):
            key = f"roi_head.bbox_head.fc_cls.{name}"
            if key in out:
                out[key] = out[key][rows]
            key = f"roi_head.bbox_head.fc_reg.{name}"
            if key in out:
                out[key] = out[key][reg_rows]
            key = f"roi_head.mask_head.conv_logits.{name}"
            if key in out:
                out[key] = out[key][fg]
    own = model.state_dict()
    for key, value in own.items():
        stem = key.removesuffix(".num_batches_tracked")
        if stem != key and key not in out and f"{stem}.running_mean" in out:
            out[key] = torch.zeros_like(value)
    return out
