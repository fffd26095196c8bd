"""Key maps of torchvision's dense detectors: layouts, label rows, errors (no model weights needed)."""

from __future__ import annotations

import pytest
import torch

from detcli.errors import CheckpointError
from detcli.models.weight_maps.torchvision import (
    COCO80_CATEGORY_IDS,
    _tower_key,
    select_label_rows,
)


def test_coco80_ids_are_the_80_sorted_category_ids():
    assert len(COCO80_CATEGORY_IDS) == 80 == len(set(COCO80_CATEGORY_IDS))
    assert list(COCO80_CATEGORY_IDS) == sorted(COCO80_CATEGORY_IDS)
    assert COCO80_CATEGORY_IDS[0] == 1 and COCO80_CATEGORY_IDS[-1] == 90 and 12 not in COCO80_CATEGORY_IDS


@pytest.mark.parametrize(("key", "per_block", "expected"), [
    ("head.classification_head.conv.2.0.weight", 2, "bbox_head.cls_convs.2.0.weight"),  # new layout
    ("head.classification_head.conv.6.bias", 2, "bbox_head.cls_convs.3.0.bias"),  # RetinaNet < 0.12: conv.{2i}
    ("head.regression_head.conv.9.weight", 3, "bbox_head.reg_convs.3.0.weight"),  # FCOS conv.{3i}
    ("head.regression_head.conv.4.bias", 3, "bbox_head.reg_convs.1.1.bias"),  # FCOS GroupNorm conv.{3i+1}
    ("head.classification_head.cls_logits.weight", 2, None),
])
def test_tower_keys(key, per_block, expected):
    assert _tower_key(key, per_block) == expected


def test_select_label_rows_per_anchor():
    rows = torch.arange(2 * 91, dtype=torch.float64)  # value = a * 91 + k
    got = select_label_rows(rows, 2, 80, "cls")
    assert got.shape == (160,)
    assert got[0] == 1 and got[79] == 90 and got[80] == 91 + 1 and got[11] == 13
    assert select_label_rows(rows, 2, 91, "cls") is rows
    with pytest.raises(CheckpointError, match="num_classes=20"):
        select_label_rows(rows, 2, 20, "cls")
    with pytest.raises(CheckpointError, match="expected 3 x 91"):
        select_label_rows(rows, 3, 80, "cls")


def test_old_layouts_convert_like_new(tmp_path):
    """A RetinaNet state dict in torchvision's pre-0.12 layouts (FPN ``inner_blocks.i.weight``, head
    ``conv.{2i}``) converts to the same det keys as the new one."""
    from torchvision.models.detection import retinanet_resnet50_fpn

    from detcli.config import load_config
    from detcli.models.weight_maps import convert_state_dict
    from detcli.registry import DETECTORS, build
    from detcli.resources import find_preset

    cfg = load_config(str(find_preset("retinanet_r50_fpn_coco_tv")))
    det = build(cfg["model"], DETECTORS, path="model")
    new = {k: v for k, v in retinanet_resnet50_fpn(weights=None, weights_backbone=None).state_dict().items()
           if not k.endswith("num_batches_tracked")}
    old = {}
    for k, v in new.items():
        k2 = k.replace(".0.weight", ".weight").replace(".0.bias", ".bias") if ".fpn." in k else k
        if "_head.conv." in k:
            i = int(k.split("_head.conv.")[1].split(".")[0])
            k2 = k.replace(f"_head.conv.{i}.0.", f"_head.conv.{2 * i}.")
        old[k2] = v
    assert old.keys() != new.keys()
    a, b = convert_state_dict("torchvision", det, new), convert_state_dict("torchvision", det, old)
    assert a.keys() == b.keys() == det.state_dict().keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
