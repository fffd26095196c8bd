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

#: COCO category id of det's class ``i`` (the 80 COCO classes in det's order, i.e. sorted by id);
#: torchvision's label ``k`` is category id ``k`` (91 entries, 0 = background, 10 unused ids).
COCO80_CATEGORY_IDS: tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28,
    31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
    56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
    85, 86, 87, 88, 89, 90)
#: torchvision's COCO label space (``len(weights.meta["categories"])``).
TV_COCO_NUM_CLASSES = 91

#: ``backbone.body`` (IntermediateLayerGetter over a ResNet) and the FPN's 1x1 / 3x3 convs, in the
#: new (``inner_blocks.i.0.weight``, Conv2dNormActivation) and old (``inner_blocks.i.weight``) layouts.
BACKBONE_FPN_RULES: tuple[tuple[str, str], ...] = (
    (r"^backbone\.body\.", "backbone."),
    (r"^backbone\.fpn\.inner_blocks\.(\d+)\.(?:0\.)?(weight|bias)$", r"neck.lateral_convs.\1.0.\2"),
    (r"^backbone\.fpn\.layer_blocks\.(\d+)\.(?:0\.)?(weight|bias)$", r"neck.fpn_convs.\1.0.\2"),
)


def add_num_batches_tracked(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Zeros for the ``num_batches_tracked`` buffers of ``model`` the checkpoint lacks
    (torchvision's FrozenBatchNorm2d has none; det's BatchNorm2d in eval mode never reads it)."""
    for key, value in model.state_dict().items():
        if key.endswith(".num_batches_tracked") and key not in state_dict:
            state_dict[key] = torch.zeros_like(value)
    return state_dict


def select_label_rows(tensor: Tensor, num_priors: int, num_classes: int, key: str) -> Tensor:
    """Rows ``a * 91 + k`` of a per-prior sigmoid classifier (weight or bias) -> ``a * C + j``:
    det's class ``j`` takes torchvision's label ``COCO80_CATEGORY_IDS[j]`` (``C`` = 80), or every
    row stays when the model keeps torchvision's 91 labels.

    Raises:
        CheckpointError: the rows are not ``num_priors * 91``, or the model has another class count.
    """
    if tensor.shape[0] != num_priors * TV_COCO_NUM_CLASSES:
        raise CheckpointError(f"{key}: expected {num_priors} x {TV_COCO_NUM_CLASSES} torchvision COCO labels, "
                              f"got {tensor.shape[0]} rows")
    if num_classes == TV_COCO_NUM_CLASSES:
        return tensor
    if num_classes != len(COCO80_CATEGORY_IDS):
        raise CheckpointError(f"{key}: torchvision COCO weights have {len(COCO80_CATEGORY_IDS)} classes; the model "
                              f"has num_classes={num_classes} (use an 80-class preset, e.g. a *_tv one)")
    ids = torch.tensor(COCO80_CATEGORY_IDS, device=tensor.device)
    rows = tensor.reshape(num_priors, TV_COCO_NUM_CLASSES, *tensor.shape[1:])[:, ids]  # (A, 80, ...)
    return rows.reshape(num_priors * num_classes, *tensor.shape[1:]).clone()


# ---------------------------------------------------------------- dense detectors (RetinaNet, FCOS)

#: RetinaNet / FCOS heads without their tower convs and classifiers (handled by ``_tower_key``).
DENSE_HEAD_RULES: tuple[tuple[str, str], ...] = (
    (r"^head\.regression_head\.bbox_reg\.", "bbox_head.{reg}."),
    (r"^head\.regression_head\.bbox_ctrness\.", "bbox_head.conv_centerness."),
)

_TOWER = re.compile(r"^head\.(classification|regression)_head\.conv\.(\d+)\.(?:(\d+)\.)?(weight|bias)$")


def _tower_key(key: str, per_block: int) -> str | None:
    """det's name of a torchvision head-tower tensor, or None when ``key`` is no tower tensor.

    Layouts: ``conv.i.0.w`` (Conv2dNormActivation blocks, RetinaNet v2 checkpoints), ``conv.{2i}.w``
    (RetinaNet before torchvision 0.12: conv, ReLU) and ``conv.{3i}.w`` / ``conv.{3i+1}.w`` (FCOS: conv,
    GroupNorm, ReLU). ``per_block``: modules per block in the flat layouts (2 or 3).
    """
    m = _TOWER.match(key)
    if m is None:
        return None
    tower = "cls_convs" if m.group(1) == "classification" else "reg_convs"
    idx, sub, param = int(m.group(2)), m.group(3), m.group(4)
    if sub is not None:  # conv.i.j.param
        block, child = idx, int(sub)
    else:
        block, child = divmod(idx, per_block)
    return f"bbox_head.{tower}.{block}.{child}.{param}"


def _dense(state_dict: Mapping[str, Tensor], model: nn.Module, cls_name: str, reg_name: str,
           per_block: int) -> dict[str, Tensor]:
    head = model.bbox_head  # type: ignore[attr-defined]
    num_levels = len(model.neck.lateral_convs)  # type: ignore[arg-type, attr-defined, union-attr]
    rules = BACKBONE_FPN_RULES + (
        (r"^backbone\.fpn\.extra_blocks\.p6\.", f"neck.fpn_convs.{num_levels}.0."),
        (r"^backbone\.fpn\.extra_blocks\.p7\.", f"neck.fpn_convs.{num_levels + 1}.0."),
        (r"^head\.classification_head\.cls_logits\.", f"bbox_head.{cls_name}."),
    ) + tuple((p, r.format(reg=reg_name)) for p, r in DENSE_HEAD_RULES)
    towers = {}
    rest = {}
    for key, value in state_dict.items():
        new = _tower_key(key, per_block)
        if new is None:
            rest[key] = value
        else:
            towers[new] = value
    out = rename_keys(rest, rules)
    out.update(towers)
    num_priors = getattr(head, "num_anchors", 1)
    for param in ("weight", "bias"):
        key = f"bbox_head.{cls_name}.{param}"
        if key in out:
            out[key] = select_label_rows(out[key], num_priors, head.num_classes, key)  # type: ignore[arg-type, union-attr]
    return add_num_batches_tracked(out, model)


@register_key_map("torchvision", "RetinaNet")
def torchvision_retinanet(state_dict: Mapping[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """``retinanet_resnet50_fpn`` (COCO_V1) onto a RetinaNet built from ``retinanet_r50_fpn_coco_tv``.

    ``backbone.body.*`` -> ``backbone.*``; FPN ``inner_blocks`` / ``layer_blocks`` -> ``neck.lateral_convs`` /
    ``neck.fpn_convs``, ``extra_blocks.p6/p7`` -> the two extra ``fpn_convs``; head towers (both
    layouts) -> ``cls_convs`` / ``reg_convs``; ``cls_logits`` -> ``retina_cls`` with rows ``a * 91 + k``
    reduced to ``a * 80 + j``; ``bbox_reg`` -> ``retina_reg`` (same anchor order: ratio-major, as
    :class:`~detcli.models.priors.TorchvisionAnchorGenerator`); zero ``num_batches_tracked`` buffers.
    """
    return _dense(state_dict, model, "retina_cls", "retina_reg", per_block=2)


@register_key_map("torchvision", "FCOS")
def torchvision_fcos(state_dict: Mapping[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """``fcos_resnet50_fpn`` (COCO_V1) onto an FCOS built from ``fcos_r50_fpn_coco_tv``: as RetinaNet,
    with GroupNorm towers (``conv.{3i}`` conv, ``conv.{3i+1}`` GN), ``cls_logits`` -> ``conv_cls``
    (91 -> 80 rows), ``bbox_reg`` -> ``conv_reg`` and ``bbox_ctrness`` -> ``conv_centerness``."""
    return _dense(state_dict, model, "conv_cls", "conv_reg", per_block=3)


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

TV_TWO_STAGE_RULES: tuple[tuple[str, str], ...] = BACKBONE_FPN_RULES + (
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


def label_rows(num_rows: int, num_classes: int, num_extra: int) -> tuple[list[int], list[int]]:
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
        rows, fg = label_rows(out[cls_key].shape[0], int(bbox_head.num_classes),
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
    return add_num_batches_tracked(out, model)
