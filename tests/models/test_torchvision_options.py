"""The options that reproduce torchvision's two-stage detectors: box coder, level mapping, extra
classifier logits, small-box removal, torchvision's mask paste and the two-stage key map."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.ops.poolers import LevelMapper

from detcli.errors import CheckpointError, ConfigError
from detcli.models.bbox_heads import Shared2FCBBoxHead
from detcli.models.coders import TorchvisionDeltaXYWHBBoxCoder
from detcli.models.mask_heads import FCNMaskHead, paste_masks_torchvision
from detcli.models.roi_extractors import SingleRoIExtractor
from detcli.models.weight_maps.torchvision import label_rows


@pytest.mark.parametrize("stds", [(1.0, 1.0, 1.0, 1.0), (0.1, 0.1, 0.2, 0.2)])
def test_coder_equals_torchvision(stds: tuple[float, ...]) -> None:
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=g, dtype=torch.float64) * 100
    priors = torch.cat([xy, xy + 1 + torch.rand(50, 2, generator=g, dtype=torch.float64) * 50], 1)
    deltas = torch.randn(50, 8, generator=g, dtype=torch.float64) * 3
    deltas[0, 2], deltas[1, 3] = 40.0, -200.0  # clamped from above only
    coder = TorchvisionDeltaXYWHBBoxCoder(target_stds=stds)
    ref = BoxCoder(coder.weights).decode_single(deltas, priors)
    assert torch.equal(coder.decode(priors, deltas), ref)
    assert (ref[1, 3] - ref[1, 1]) < 1e-10  # dh = -200 / w is not clamped below
    gt = coder.decode(priors, deltas[:, :4])
    keep = (gt[:, 2:] - gt[:, :2] > 1e-3).all(1) & (deltas[:, 2:4].abs() < 4).all(1)
    assert torch.allclose(coder.encode(priors[keep], gt[keep]), deltas[keep, :4], atol=1e-9)
    with pytest.raises(ValueError, match="means"):
        TorchvisionDeltaXYWHBBoxCoder(target_means=(0.1, 0, 0, 0))


def test_level_mapping_torchvision() -> None:
    ext = SingleRoIExtractor({"type": "RoIAlign", "output_size": 7}, 256, [4, 8, 16, 32], level_mapping="torchvision")
    sides = torch.tensor([1.0, 55.9, 111.99993, 112.0, 223.99987, 224.0, 447.9, 448.0, 2000.0], dtype=torch.float64)
    boxes = torch.stack([torch.zeros_like(sides), torch.zeros_like(sides), sides, sides], 1)
    rois = torch.cat([torch.zeros_like(sides)[:, None], boxes], 1)
    assert torch.equal(ext.map_roi_levels(rois, 4), LevelMapper(2, 5)([boxes]))
    mmdet = SingleRoIExtractor({"type": "RoIAlign", "output_size": 7}, 256, [4, 8, 16, 32])
    assert mmdet.map_roi_levels(rois[2:3], 4).item() == 0 and ext.map_roi_levels(rois[2:3], 4).item() == 1
    with pytest.raises(ConfigError, match="level_mapping"):
        SingleRoIExtractor({"type": "RoIAlign"}, 256, [4, 8], level_mapping="fpn")
    with pytest.raises(ConfigError, match="power-of-two"):
        SingleRoIExtractor({"type": "RoIAlign"}, 256, [4, 12], level_mapping="torchvision")


def test_extra_logits_and_min_bbox_size() -> None:
    head = Shared2FCBBoxHead(in_channels=1, roi_feat_size=1, fc_out_channels=4, num_classes=2, num_extra_cls_logits=1)
    assert head.fc_cls.out_features == 4
    rois = torch.tensor([[0, 0, 0, 10, 10], [0, 20, 20, 20.005, 30]], dtype=torch.float32)
    logits = torch.log(torch.tensor([[0.5, 0.1, 0.1, 0.3], [0.6, 0.2, 0.1, 0.1]]))
    deltas = torch.zeros(2, 8)
    dets = head.predict(rois, logits, deltas, [(50, 50)], 0.05, {"type": "nms", "iou_threshold": 0.5}, 10)[0]
    # the extra logit's 0.3 stays in the softmax: scores are not renormalised
    assert torch.allclose(dets.scores, torch.tensor([0.6, 0.5, 0.2, 0.1]))
    dets = head.predict(rois, logits, deltas, [(50, 50)], 0.05, {"type": "nms", "iou_threshold": 0.5}, 10,
                        min_bbox_size=0.01)[0]
    assert torch.allclose(dets.scores, torch.tensor([0.5, 0.1]))  # the 0.005-wide box is removed
    assert len(head.loss(logits, deltas, rois, torch.tensor([0, 2]), rois[:, 1:])) == 3
    with pytest.raises(ConfigError, match="num_extra_cls_logits"):
        Shared2FCBBoxHead(num_extra_cls_logits=-1)


@pytest.mark.parametrize("boxes", [
    [[10.3, 12.7, 40.2, 30.9], [0.0, 0.0, 63.0, 47.0], [60.5, 40.2, 64.0, 48.0], [5.0, 5.0, 5.2, 5.1]],
    [[20.0, 20.0, 20.0, 20.0]],
])
def test_paste_masks_torchvision(boxes: list[list[float]]) -> None:
    g = torch.Generator().manual_seed(0)
    b = torch.tensor(boxes, dtype=torch.float64)
    masks = torch.rand(len(b), 28, 28, generator=g, dtype=torch.float64)
    ref = paste_masks_in_image(masks[:, None], b, (48, 64), padding=1)[:, 0]
    out = paste_masks_torchvision(masks, b, (48, 64), threshold=-1)
    assert out.dtype == torch.float64 and torch.equal(out, ref)
    assert torch.equal(paste_masks_torchvision(masks, b, (48, 64)), ref >= 0.5)
    empty = paste_masks_torchvision(masks[:0], b[:0], (48, 64))
    assert empty.shape == (0, 48, 64) and empty.dtype == torch.bool


def test_mask_head_paste_mode() -> None:
    head = FCNMaskHead(num_convs=0, in_channels=2, conv_out_channels=2, num_classes=3, paste_mode="torchvision")
    logits = torch.randn(2, 3, 28, 28)
    boxes = torch.tensor([[2.0, 3.0, 20.0, 15.0], [0.0, 0.0, 31.0, 23.0]])
    out = head.predict(logits, boxes, torch.tensor([2, 0]), (24, 32))
    ref = paste_masks_in_image(logits[[0, 1], [2, 0]][:, None].sigmoid(), boxes, (24, 32), padding=1)[:, 0] >= 0.5
    assert torch.equal(out, ref)
    with pytest.raises(ConfigError, match="paste_mode"):
        FCNMaskHead(paste_mode="detectron2")


def test_label_rows() -> None:
    rows, fg = label_rows(91, 80, 10)
    assert len(rows) == 91 and sorted(rows) == list(range(91)) and rows[80] == 0 and fg == rows[:80]
    assert label_rows(91, 80, 0)[0] == rows[:81]
    assert label_rows(3, 2, 0) == ([1, 2, 0], [1, 2])
    with pytest.raises(CheckpointError, match="num_extra_cls_logits: 10"):
        label_rows(91, 80, 3)
    with pytest.raises(CheckpointError):
        label_rows(91, 20, 0)


def test_deploy_two_stage_honours_torchvision_options() -> None:
    """The export graph follows the ``_tv`` preset's options (level mapping, extra logits, coders, small-box
    removal) and refuses torchvision's mask paste."""
    import copy
    from pathlib import Path

    from detcli.config import load_config
    from detcli.models.deploy_two_stage import DeployTwoStage
    from detcli.registry import DETECTORS, build
    from detcli.structures import ImageBatch

    presets = Path(__file__).resolve().parents[2] / "presets"
    node = copy.deepcopy(load_config(presets / "mask_rcnn_r50_fpn_coco_tv.yaml")["model"])
    node["backbone"]["depth"] = 18
    node["neck"]["in_channels"] = [64, 128, 256, 512]
    node["test_cfg"]["rcnn"].update(score_thr=0.0, min_bbox_size=0.5, max_per_img=20)
    node["test_cfg"]["rpn"].update(nms_pre=200, max_per_img=100)
    torch.manual_seed(0)
    model = build(node, DETECTORS, path="model").eval()
    with torch.no_grad():
        model.roi_head.bbox_head.fc_cls.weight.normal_(0, 0.5)
    with pytest.raises(ConfigError, match="paste_mode"):
        DeployTwoStage(model)
    model.roi_head.mask_head.paste_mode = "mmdet"
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    dets, labels, masks = DeployTwoStage(model)(x)
    ref = model.predict(ImageBatch(x, [(64, 96)]))[0]
    n = len(ref)
    assert n > 0 and (labels[0, :n] >= 0).all() and (labels[0, n:] == -1).all()
    assert torch.equal(labels[0, :n], ref.labels)
    assert torch.allclose(dets[0, :n, :4], ref.boxes.tensor, atol=1e-4)
    assert torch.allclose(dets[0, :n, 4], ref.scores, atol=1e-6)
    assert (masks[0, :n] != ref.masks).float().mean() < 1e-3
