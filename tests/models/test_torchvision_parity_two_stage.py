"""torchvision's Faster / Mask R-CNN R50-FPN weights in det's ``*_tv`` presets give torchvision's numbers.

torchvision's models are built without weights but with FrozenBatchNorm (the structure of the COCO_V1
files), perturbed with a fixed seed so that real proposals and detections come out, converted with
the ``torchvision`` key map and loaded strictly into det's model built from the preset's model node.
Final boxes and scores are float32 in det (``Boxes`` / ``Detections`` contract): in float64 runs they
must equal torchvision's float64 values rounded to float32 (within one float32 ulp); every earlier
stage is compared in float64 (max abs diff <= 1e-9).
Both see the same normalised tensor (torchvision's GeneralizedRCNNTransform is bypassed) and each
stage is compared given the same inputs: features, RPN logits/deltas, proposals, RoI features,
box-head logits/deltas, final boxes/scores/labels, mask probabilities and pasted masks.

To keep the test fast the RPN keeps 200 / 100 proposals and the second stage 20 detections on both
sides (the preset's own values equal torchvision's defaults: checked in ``test_preset_settings``).
torchvision's 10 "N/A" classes get a very negative bias: det drops those candidates after the softmax,
while torchvision could report one (trained weights never score them).

Losses are not compared: torchvision and det differ by design in every training component (RPN and
RoI matchers, ``BalancedPositiveNegativeSampler`` vs ``RandomSampler`` with GT added as proposals,
smooth-L1 beta 1/9 vs L1, mask targets by RoIAlign vs ``crop_and_resize``), so no deterministic
configuration makes the two losses the same function.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from detcli.config import load_config
from detcli.models.mask_heads import paste_masks_torchvision
from detcli.models.roi_head import boxes_to_rois
from detcli.models.weight_maps import convert_state_dict
from detcli.models.weight_maps.torchvision import COCO80_CATEGORY_IDS, TV_COCO_NA_IDS
from detcli.registry import DETECTORS, build
from detcli.structures import ImageBatch

tv_detection = pytest.importorskip("torchvision.models.detection")
from torchvision.models import resnet50  # noqa: E402
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor  # noqa: E402
from torchvision.models.detection.image_list import ImageList  # noqa: E402
from torchvision.models.detection.roi_heads import maskrcnn_inference, paste_masks_in_image  # noqa: E402
from torchvision.ops import misc  # noqa: E402

PRESETS = Path(__file__).resolve().parents[2] / "presets"
IMAGE_SIZES = [(128, 160), (112, 150)]
NUM_PRE, NUM_POST, NUM_DETS = 200, 100, 20


def tv_model(mask: bool, num_classes: int) -> torch.nn.Module:
    """torchvision's R50-FPN model (FrozenBN, trainable layers 3) with seeded, perturbed weights."""
    torch.manual_seed(0)
    backbone = _resnet_fpn_extractor(resnet50(norm_layer=misc.FrozenBatchNorm2d), 3)
    cls = tv_detection.MaskRCNN if mask else tv_detection.FasterRCNN
    model = cls(backbone, num_classes=num_classes, rpn_pre_nms_top_n_test=NUM_PRE,
                rpn_post_nms_top_n_test=NUM_POST, box_detections_per_img=NUM_DETS).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, misc.FrozenBatchNorm2d):
                c = module.weight.shape[0]
                module.weight.copy_(torch.rand(c, generator=g) * 0.5 + 0.25)
                module.bias.copy_(torch.randn(c, generator=g) * 0.1)
                module.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                module.running_var.copy_(torch.rand(c, generator=g) + 0.5)
        for name, p in model.named_parameters():
            if name.startswith(("rpn.", "roi_heads.")):
                p.add_(torch.randn(p.shape, generator=g) * (0.05 if p.dim() > 1 else 0.1))
        predictor = model.roi_heads.box_predictor
        predictor.cls_score.weight.normal_(0, 0.3, generator=g)
        if num_classes == 91:
            predictor.cls_score.bias[list(TV_COCO_NA_IDS)] = -30.0
    return model


def det_model(mask: bool, num_classes: int, state_dict: dict[str, torch.Tensor]) -> torch.nn.Module:
    name = "mask_rcnn_r50_fpn_coco_tv.yaml" if mask else "faster_rcnn_r50_fpn_coco_tv.yaml"
    node = copy.deepcopy(load_config(PRESETS / name)["model"])
    if num_classes != 91:
        node["roi_head"]["bbox_head"]["num_extra_cls_logits"] = 0
    node["test_cfg"]["rpn"].update(nms_pre=NUM_PRE, max_per_img=NUM_POST)
    node["test_cfg"]["rcnn"]["max_per_img"] = NUM_DETS
    model = build(node, DETECTORS, path="model").eval()
    model.load_state_dict(convert_state_dict("torchvision", model, state_dict), strict=True)
    return model


def old_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The key names of torchvision's ``_version`` 1 files (the published COCO_V1 checkpoints)."""
    import re

    rules = [(r"(inner_blocks|layer_blocks)\.(\d+)\.0\.", r"\1.\2."), (r"rpn\.head\.conv\.0\.0\.", "rpn.head.conv."),
             (r"mask_head\.(\d+)\.0\.", lambda m: f"mask_head.mask_fcn{int(m[1]) + 1}.")]
    out = {}
    for k, v in state_dict.items():
        for pattern, repl in rules:
            k = re.sub(pattern, repl, k)
        out[k] = v
    return out


def label_rows(num_classes: int) -> list[int]:
    return list(COCO80_CATEGORY_IDS) if num_classes == 91 else list(range(1, num_classes))


def run_parity(mask: bool, num_classes: int, dtype: torch.dtype) -> dict[str, float]:
    """Max abs difference per stage between torchvision and det (asserted against tolerances by callers)."""
    tv = tv_model(mask, num_classes)
    sd = tv.state_dict()
    det = det_model(mask, num_classes, old_layout(sd) if mask else sd)
    tv.to(dtype)
    det.to(dtype)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(len(IMAGE_SIZES), 3, *IMAGE_SIZES[0], generator=g).to(dtype)
    for i, (h, w) in enumerate(IMAGE_SIZES):  # zero padding as the data pipeline makes it
        x[i, :, h:] = 0
        x[i, :, :, w:] = 0
    images = ImageBatch(x, list(IMAGE_SIZES))
    rows = label_rows(num_classes)
    diffs: dict[str, float] = {}

    def record(stage: str, a: torch.Tensor, b: torch.Tensor) -> None:
        assert a.shape == b.shape, f"{stage}: {tuple(a.shape)} vs {tuple(b.shape)}"
        if a.dtype == torch.float32 and dtype == torch.float64:
            # det's Boxes / Detections hold float32 by contract: torchvision's float64 rounded to
            # float32 must be the same number to within one float32 ulp
            ref = b.float()
            assert ((a - ref).abs() <= torch.finfo(torch.float32).eps * ref.abs().clamp(min=1)).all(), stage
            b = ref
        d = (a.double() - b.double()).abs()
        scale = b.double().abs().clamp(min=1.0)
        if dtype == torch.float64:
            diffs[stage] = max(diffs.get(stage, 0.0), float(d.max()) if d.numel() else 0.0)
        else:
            diffs[stage] = max(diffs.get(stage, 0.0), float((d / scale).max()) if d.numel() else 0.0)

    with torch.no_grad():
        # backbone + FPN
        tv_feats = tv.backbone(x)
        feats = det.extract_feat(x)
        for a, b in zip(feats, tv_feats.values()):
            record("features", a, b)
        # RPN head
        tv_obj, tv_deltas = tv.rpn.head(list(tv_feats.values()))
        cls_scores, bbox_preds = det.rpn_head(feats)
        for a, b in zip(cls_scores + bbox_preds, tv_obj + tv_deltas):
            record("rpn logits/deltas", a, b)
        # proposals (from each side's own RPN outputs)
        tv_props, _ = tv.rpn(ImageList(x, list(IMAGE_SIZES)), tv_feats)
        props = det.rpn_head.get_proposals(cls_scores, bbox_preds, images, det.rpn_test)
        for (boxes, _), tv_boxes in zip(props, tv_props):
            record("proposals", boxes, tv_boxes)
        # box head on torchvision's proposals
        rois = boxes_to_rois(tv_props)
        tv_roi = tv.roi_heads.box_roi_pool(tv_feats, tv_props, list(IMAGE_SIZES))
        roi_feats = det.roi_head.bbox_roi_extractor(feats, rois)
        record("box RoI features", roi_feats, tv_roi)
        tv_logits, tv_reg = tv.roi_heads.box_predictor(tv.roi_heads.box_head(tv_roi))
        cls_score, bbox_pred = det.roi_head.bbox_head(roi_feats)
        record("box logits", cls_score[:, :len(rows)], tv_logits[:, rows])
        record("box deltas", bbox_pred, tv_reg.view(len(rois), -1, 4)[:, rows].flatten(1))
        tv_boxes, tv_scores, tv_labels = tv.roi_heads.postprocess_detections(tv_logits, tv_reg, tv_props,
                                                                             list(IMAGE_SIZES))
        cfg = det.rcnn_test
        dets = det.roi_head.bbox_head.predict(rois, cls_score, bbox_pred, images.image_sizes, cfg.score_thr,
                                              cfg.nms, cfg.max_per_img, cfg.min_bbox_size)
        for d, b, s, lab in zip(dets, tv_boxes, tv_scores, tv_labels):
            assert len(d) > 5
            record("final boxes", d.boxes.tensor, b)
            record("final scores", d.scores, s)
            assert torch.equal(torch.tensor(rows)[d.labels], lab)
        # mask head on torchvision's final boxes
        if mask:
            tv_mask_feats = tv.roi_heads.mask_roi_pool(tv_feats, tv_boxes, list(IMAGE_SIZES))
            mask_feats = det.roi_head.mask_roi_extractor(feats, boxes_to_rois(tv_boxes))
            record("mask RoI features", mask_feats, tv_mask_feats)
            tv_mask_logits = tv.roi_heads.mask_predictor(tv.roi_heads.mask_head(tv_mask_feats))
            mask_logits = det.roi_head.mask_head(mask_feats)
            record("mask logits", mask_logits, tv_mask_logits[:, rows])
            tv_probs = maskrcnn_inference(tv_mask_logits, tv_labels)
            det_logits = mask_logits.split([len(b) for b in tv_boxes])
            for i, (b, lab, p, lg) in enumerate(zip(tv_boxes, tv_labels, tv_probs, det_logits)):
                det_labels = torch.tensor([rows.index(int(v)) for v in lab], dtype=torch.long)
                probs = lg[torch.arange(len(b)), det_labels].sigmoid()
                record("mask probabilities", probs, p[:, 0])
                tv_pasted = paste_masks_in_image(p, b, IMAGE_SIZES[i], padding=1)[:, 0]
                record("pasted masks", paste_masks_torchvision(probs, b, IMAGE_SIZES[i], threshold=-1), tv_pasted)
        # the whole pipeline end to end
        tv_dets, _ = tv.roi_heads(tv_feats, tv_props, list(IMAGE_SIZES))
        for i, (d, t) in enumerate(zip(det.predict(images), tv_dets)):
            record("end-to-end boxes", d.boxes.tensor, t["boxes"])
            record("end-to-end scores", d.scores, t["scores"])
            assert torch.equal(torch.tensor(rows)[d.labels], t["labels"])
            if mask:
                tv_masks = paste_masks_in_image(t["masks"], t["boxes"], IMAGE_SIZES[i], padding=1)[:, 0]
                mismatch = (d.masks != (tv_masks >= 0.5)).float().mean().item()
                diffs["end-to-end bool masks (fraction differing)"] = max(
                    diffs.get("end-to-end bool masks (fraction differing)", 0.0), mismatch)
    return diffs


@pytest.mark.slow
@pytest.mark.parametrize("mask", [False, True], ids=["faster", "mask"])
@pytest.mark.parametrize("num_classes", [91, 81])
def test_parity_float64(mask: bool, num_classes: int) -> None:
    diffs = run_parity(mask, num_classes, torch.float64)
    print({k: f"{v:.1e}" for k, v in diffs.items()})
    assert all(v <= 1e-9 for v in diffs.values()), diffs


@pytest.mark.parametrize("mask", [False, True], ids=["faster", "mask"])
def test_parity_float32(mask: bool) -> None:
    diffs = run_parity(mask, 91, torch.float32)
    print({k: f"{v:.1e}" for k, v in diffs.items()})
    tol = {"end-to-end bool masks (fraction differing)": 1e-3}
    assert all(v <= tol.get(k, 1e-3) for k, v in diffs.items()), diffs


@pytest.mark.parametrize("name", ["faster_rcnn_r50_fpn_coco_tv.yaml", "mask_rcnn_r50_fpn_coco_tv.yaml"])
def test_preset_settings(name: str) -> None:
    """The presets' test settings are torchvision's defaults (the parity runs shrink them for speed)."""
    cfg = load_config(PRESETS / name)
    model = build(cfg["model"], DETECTORS, path="model")
    tv = tv_detection.MaskRCNN if name.startswith("mask") else tv_detection.FasterRCNN
    ref = tv(_resnet_fpn_extractor(resnet50(norm_layer=misc.FrozenBatchNorm2d), 3), num_classes=91).eval()
    assert (model.rpn_test.nms_pre, model.rpn_test.max_per_img) == (ref.rpn._pre_nms_top_n["testing"],
                                                                     ref.rpn._post_nms_top_n["testing"])
    assert model.rpn_test.iou_threshold == ref.rpn.nms_thresh and model.rpn_test.min_bbox_size == ref.rpn.min_size
    rcnn = model.rcnn_test
    assert (rcnn.score_thr, rcnn.nms["iou_threshold"], rcnn.max_per_img) == (
        ref.roi_heads.score_thresh, ref.roi_heads.nms_thresh, ref.roi_heads.detections_per_img)
    assert model.roi_head.bbox_head.bbox_coder.weights == ref.roi_heads.box_coder.weights
    assert cfg["zoo"]["source"] == "torchvision" and cfg["zoo"]["url"].startswith("https://download.pytorch.org/")
    assert model.backbone.frozen_stages == 1 and not model.backbone.norm_requires_grad
