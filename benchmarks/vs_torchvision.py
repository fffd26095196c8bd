"""det RetinaNet / FCOS / Faster R-CNN / Mask R-CNN (ResNet-50 FPN) against torchvision's, timed
interleaved in one process.

Both sides: random init, 80 classes, batch of 2 images of 512x512, the same ImageNet normalisation,
the same 5-10 random GT boxes per image, ``torch.set_num_threads(2)``. Phases:

- train: forward + backward + SGD step (median seconds per batch);
- infer: eval mode under ``torch.inference_mode`` (median seconds per image), on the freshly
  initialised models (no score passes 0.05, so this is the network alone);
- infer-busy: the same with the score threshold at 0 on both sides, so every level sends its top
  1000 candidates through decoding and NMS (post-processing under load; for the two-stage models
  every image keeps 100 detections, and Mask R-CNN pastes 100 masks per image).

Two-stage models: det builds presets/{faster,mask}_rcnn_r50_fpn_1x_coco.yaml's model; torchvision's
FasterRCNN / MaskRCNN get the same settings (RPN 2000/1000 pre-NMS and 1000 post-NMS proposals in
training/testing, 256 anchors and 512 RoIs sampled, 81 classes with background). Mask R-CNN trains
on elliptic masks inscribed in the random GT boxes.

The phases run in the order infer, infer-busy, train (inference on untrained weights for both).
Two-stage inference: untrained RPNs keep a seed-dependent number of proposals after their NMS
(torchvision 242-1000 and det 668-849 over three seeds), so by default both skip the RPN NMS at test
time and both second stages get 1000 RoIs per image, as a trained RPN gives on a real image
(``--no-equal-proposals`` keeps the NMS).

Backbones: both use torchvision's ResNet-50 definition with stem + stage 1 frozen and frozen BN
statistics. torchvision's own recipe (``trainable_backbone_layers=3`` with ``FrozenBatchNorm2d``,
what its builders use with a pretrained backbone) is rebuilt here with random weights; det uses
``frozen_stages=1, norm_eval=True`` (BN affine still trainable, as in mmdet).
``--tv-backbone builder`` instead calls the builders as is with ``weights_backbone=None``, which
gives a fully trainable backbone with batch-statistics BatchNorm (slower, not like for like).

Usage:
    python benchmarks/vs_torchvision.py [--repeats 5] [--warmup 2] [--models retinanet,fcos]
        [--phases infer,infer-busy,train] [--tv-backbone recipe|builder] [--json]
    python benchmarks/vs_torchvision.py --models faster_rcnn,mask_rcnn
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import detcli.models  # noqa: F401  (registers the components)
from detcli.config import load_config
from detcli.registry import DETECTORS, build
from detcli.structures import GroundTruth, ImageBatch
from detcli.structures.masks import BitmapMasks

PRESETS = Path(__file__).resolve().parents[1] / "presets"
TWO_STAGE = {"faster_rcnn": "faster_rcnn_r50_fpn_1x_coco.yaml", "mask_rcnn": "mask_rcnn_r50_fpn_1x_coco.yaml"}

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
SIZE = 512
BATCH = 2
NUM_CLASSES = 80

_BACKBONE = {"type": "ResNet", "depth": 50, "num_stages": 4, "out_indices": [0, 1, 2, 3], "frozen_stages": 1,
             "norm_cfg": {"type": "BN", "requires_grad": True}, "norm_eval": True, "style": "pytorch"}
_TEST_CFG = {"nms_pre": 1000, "min_bbox_size": 0, "score_thr": 0.05, "nms": {"type": "nms", "iou_threshold": 0.5},
             "max_per_img": 100}
DET_CONFIGS = {
    "retinanet": {
        "type": "RetinaNet", "backbone": _BACKBONE,
        "neck": {"type": "FPN", "in_channels": [256, 512, 1024, 2048], "out_channels": 256, "start_level": 1,
                 "add_extra_convs": "on_input", "num_outs": 5},
        "bbox_head": {
            "type": "RetinaHead", "num_classes": NUM_CLASSES, "in_channels": 256, "stacked_convs": 4, "feat_channels": 256,
            "anchor_generator": {"type": "AnchorGenerator", "octave_base_scale": 4, "scales_per_octave": 3,
                                 "ratios": [0.5, 1.0, 2.0], "strides": [8, 16, 32, 64, 128]},
            "bbox_coder": {"type": "DeltaXYWHBBoxCoder", "target_means": [0.0] * 4, "target_stds": [1.0] * 4},
            "loss_cls": {"type": "FocalLoss", "use_sigmoid": True, "gamma": 2.0, "alpha": 0.25, "loss_weight": 1.0},
            "loss_bbox": {"type": "L1Loss", "loss_weight": 1.0}},
        "train_cfg": {"assigner": {"type": "MaxIoUAssigner", "pos_iou_thr": 0.5, "neg_iou_thr": 0.4,
                                   "min_pos_iou": 0, "ignore_iof_thr": -1},
                      "allowed_border": -1, "pos_weight": -1, "debug": False},
        "test_cfg": _TEST_CFG,
    },
    "fcos": {
        "type": "FCOS", "backbone": _BACKBONE,
        "neck": {"type": "FPN", "in_channels": [256, 512, 1024, 2048], "out_channels": 256, "start_level": 1,
                 "add_extra_convs": "on_output", "num_outs": 5, "relu_before_extra_convs": True},
        "bbox_head": {
            "type": "FCOSHead", "num_classes": NUM_CLASSES, "in_channels": 256, "stacked_convs": 4, "feat_channels": 256,
            "strides": [8, 16, 32, 64, 128], "norm_cfg": {"type": "GN", "num_groups": 32, "requires_grad": True},
            "center_sampling": True, "center_sample_radius": 1.5, "norm_on_bbox": True, "centerness_on_reg": True,
            "dcn_on_last_conv": False, "conv_bias": True,
            "loss_cls": {"type": "FocalLoss", "use_sigmoid": True, "gamma": 2.0, "alpha": 0.25, "loss_weight": 1.0},
            "loss_bbox": {"type": "GIoULoss", "loss_weight": 1.0},
            "loss_centerness": {"type": "CrossEntropyLoss", "use_sigmoid": True, "loss_weight": 1.0}},
        "train_cfg": {"assigner": None, "allowed_border": -1, "pos_weight": -1, "debug": False},
        "test_cfg": _TEST_CFG,
    },
}


def build_det(name: str) -> torch.nn.Module:
    """det's model: the inline configs above or a two-stage preset's model."""
    cfg = load_config(str(PRESETS / TWO_STAGE[name]))["model"] if name in TWO_STAGE else DET_CONFIGS[name]
    return build(cfg, DETECTORS, path="model")


def build_torchvision_two_stage(name: str, backbone_mode: str) -> torch.nn.Module:
    """torchvision's fasterrcnn_resnet50_fpn / maskrcnn_resnet50_fpn with det's preset settings."""
    from torchvision.models import resnet50
    from torchvision.models.detection import (
        FasterRCNN,
        MaskRCNN,
        fasterrcnn_resnet50_fpn,
        maskrcnn_resnet50_fpn,
    )
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops import misc as misc_nn_ops

    kwargs = {"min_size": SIZE, "max_size": SIZE, "image_mean": list(MEAN), "image_std": list(STD),
              "rpn_pre_nms_top_n_train": 2000, "rpn_pre_nms_top_n_test": 1000, "rpn_post_nms_top_n_train": 1000,
              "rpn_post_nms_top_n_test": 1000, "rpn_nms_thresh": 0.7, "rpn_batch_size_per_image": 256,
              "box_batch_size_per_image": 512, "box_score_thresh": 0.05, "box_nms_thresh": 0.5,
              "box_detections_per_img": 100}
    if backbone_mode == "builder":
        builder = fasterrcnn_resnet50_fpn if name == "faster_rcnn" else maskrcnn_resnet50_fpn
        return builder(weights=None, weights_backbone=None, num_classes=NUM_CLASSES + 1, **kwargs)
    body = resnet50(weights=None, norm_layer=misc_nn_ops.FrozenBatchNorm2d)
    backbone = _resnet_fpn_extractor(body, 3)
    cls = FasterRCNN if name == "faster_rcnn" else MaskRCNN
    return cls(backbone, NUM_CLASSES + 1, **kwargs)


def build_torchvision(name: str, backbone_mode: str) -> torch.nn.Module:
    """torchvision's retinanet_resnet50_fpn / fcos_resnet50_fpn, random init, 512x512 transform."""
    if name in TWO_STAGE:
        return build_torchvision_two_stage(name, backbone_mode)
    from torchvision.models import resnet50
    from torchvision.models.detection import (
        FCOS,
        RetinaNet,
        fcos_resnet50_fpn,
        retinanet_resnet50_fpn,
    )
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops import misc as misc_nn_ops
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    kwargs = {"min_size": SIZE, "max_size": SIZE, "image_mean": list(MEAN), "image_std": list(STD),
              "score_thresh": 0.05, "nms_thresh": 0.5, "detections_per_img": 100, "topk_candidates": 1000}
    if backbone_mode == "builder":
        builder = retinanet_resnet50_fpn if name == "retinanet" else fcos_resnet50_fpn
        return builder(weights=None, weights_backbone=None, num_classes=NUM_CLASSES, **kwargs)
    # the builders' code path for a pretrained backbone, with random weights
    body = resnet50(weights=None, norm_layer=misc_nn_ops.FrozenBatchNorm2d)
    backbone = _resnet_fpn_extractor(body, 3, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256))
    cls = RetinaNet if name == "retinanet" else FCOS
    return cls(backbone, NUM_CLASSES, **kwargs)


def make_inputs(seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Images in [0, 1] (B, 3, 512, 512) and 5-10 random boxes (x1, y1, x2, y2) + labels per image."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(BATCH, 3, SIZE, SIZE, generator=g)
    boxes, labels = [], []
    for _ in range(BATCH):
        n = int(torch.randint(5, 11, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * (SIZE - 64)
        wh = 16 + torch.rand(n, 2, generator=g) * (SIZE / 2)
        boxes.append(torch.cat([xy, (xy + wh).clamp(max=SIZE)], 1))
        labels.append(torch.randint(0, NUM_CLASSES, (n,), generator=g))
    return images, boxes, labels


def make_masks(boxes: list[torch.Tensor]) -> list[np.ndarray]:
    """Per image ``uint8 (n, SIZE, SIZE)`` ellipses inscribed in the boxes."""
    ys, xs = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    out = []
    for b in boxes:
        masks = np.zeros((len(b), SIZE, SIZE), dtype=np.uint8)
        for k, (x1, y1, x2, y2) in enumerate(b.tolist()):
            cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, max((x2 - x1) / 2, 1), max((y2 - y1) / 2, 1)
            masks[k] = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1
        out.append(masks)
    return out


def set_rpn_nms(model: torch.nn.Module, iou_threshold: float) -> None:
    """Set the test-time RPN NMS IoU of a det or torchvision two-stage detector (no-op otherwise)."""
    if hasattr(model, "rpn_test"):
        model.rpn_test = dataclasses.replace(model.rpn_test, iou_threshold=iou_threshold)
    elif hasattr(model, "rpn"):
        model.rpn.nms_thresh = iou_threshold


def set_score_thr(model: torch.nn.Module, score_thr: float) -> None:
    """Set the test score threshold of a det or a torchvision detector."""
    if hasattr(model, "test_settings"):
        model.test_settings = dataclasses.replace(model.test_settings, score_thr=score_thr)
    elif hasattr(model, "rcnn_test"):
        model.rcnn_test = dataclasses.replace(model.rcnn_test, score_thr=score_thr)
    elif hasattr(model, "roi_heads"):
        model.roi_heads.score_thresh = score_thr
    else:
        model.score_thresh = score_thr


def det_runner(model: torch.nn.Module, images, boxes, labels,
               masks: list[np.ndarray] | None = None) -> tuple[Callable[[], None], Callable[[], None]]:
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9, weight_decay=1e-4)
    sizes = [(SIZE, SIZE)] * BATCH
    gt_masks = [None] * BATCH if masks is None else [BitmapMasks(m, SIZE, SIZE) for m in masks]

    def train_step() -> None:
        model.train()
        batch = ImageBatch((images - mean) / std, sizes)
        targets = [GroundTruth((SIZE, SIZE), b, lab, masks=m) for b, lab, m in zip(boxes, labels, gt_masks)]
        losses = model(batch, targets)
        opt.zero_grad(set_to_none=True)
        sum(v for k, v in losses.items() if "loss" in k).backward()
        opt.step()

    def infer() -> None:
        model.eval()
        with torch.inference_mode():
            model(ImageBatch((images - mean) / std, sizes))

    return train_step, infer


def tv_runner(model: torch.nn.Module, images, boxes, labels,
              masks: list[np.ndarray] | None = None) -> tuple[Callable[[], None], Callable[[], None]]:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9, weight_decay=1e-4)
    # torchvision's two-stage models reserve label 0 for the background
    offset = 1 if hasattr(model, "roi_heads") else 0

    def train_step() -> None:
        model.train()
        targets = [{"boxes": b, "labels": lab + offset} for b, lab in zip(boxes, labels)]
        if masks is not None:
            for t, m in zip(targets, masks):
                t["masks"] = torch.from_numpy(m)
        losses = model(list(images), targets)
        opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        opt.step()

    def infer() -> None:
        model.eval()
        with torch.inference_mode():
            model(list(images))

    return train_step, infer


def _timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--models", default="retinanet,fcos,faster_rcnn,mask_rcnn")
    parser.add_argument("--phases", default="infer,infer-busy,train")
    parser.add_argument("--equal-proposals", action=argparse.BooleanOptionalAction, default=True,
                        help="two-stage inference: no RPN NMS on either side, so both get 1000 proposals per "
                             "image (default; --no-equal-proposals keeps the NMS and its seed-dependent counts)")
    parser.add_argument("--tv-backbone", choices=("recipe", "builder"), default="recipe")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    images, boxes, labels = make_inputs()
    results = []
    for name in args.models.split(","):
        torch.manual_seed(0)
        det = build_det(name)
        tv = build_torchvision(name, args.tv_backbone)
        masks = make_masks(boxes) if name == "mask_rcnn" else None
        runners = {"det": det_runner(det, images, boxes, labels, masks),
                   "torchvision": tv_runner(tv, images, boxes, labels, masks)}
        for phase in args.phases.split(","):
            index = 0 if phase == "train" else 1
            per = 1 if phase == "train" else BATCH
            for model in (det, tv):
                set_score_thr(model, 0.0 if phase == "infer-busy" else 0.05)
                # untrained RPNs keep a seed-dependent number of proposals after NMS (3 seeds: torchvision
                # 242-1000, det 668-849); a trained RPN keeps max_per_img = 1000 on a real image. For equal
                # work both skip the RPN NMS at test time, so both second stages get 1000 RoIs per image.
                set_rpn_nms(model, 1.0 if args.equal_proposals else 0.7)
            for side in runners.values():
                for _ in range(args.warmup):
                    side[index]()
            times: dict[str, list[float]] = {"det": [], "torchvision": []}
            for r in range(args.repeats):
                order = ("det", "torchvision") if r % 2 == 0 else ("torchvision", "det")
                for side in order:
                    times[side].append(_timed(runners[side][index]) / per)
            det_t, tv_t = statistics.median(times["det"]), statistics.median(times["torchvision"])
            results.append({"model": name, "phase": phase, "unit": "s/batch" if phase == "train" else "s/image",
                            "det": det_t, "torchvision": tv_t, "ratio": tv_t / det_t,
                            "det_all": times["det"], "torchvision_all": times["torchvision"]})
        del det, tv, runners
    meta = {"torch": torch.__version__, "threads": args.threads, "repeats": args.repeats, "warmup": args.warmup,
            "tv_backbone": args.tv_backbone, "batch": BATCH, "size": SIZE, "python": platform.python_version()}
    if args.json:
        print(json.dumps({"meta": meta, "results": results}, indent=2))
        return 0
    print(f"det vs torchvision, batch {BATCH} x {SIZE}x{SIZE}, {args.threads} threads, median of {args.repeats} "
          f"interleaved repeats (tv backbone: {args.tv_backbone})")
    print(f"{'model':<12} {'phase':<11} {'unit':<8} {'det':>9} {'torchvision':>12} {'tv/det':>7}")
    for r in results:
        print(f"{r['model']:<12} {r['phase']:<11} {r['unit']:<8} {r['det']:>9.3f} {r['torchvision']:>12.3f} {r['ratio']:>6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
