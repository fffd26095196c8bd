"""Write the MMDetection golden files ``tests/golden/mmdet_<model>.pt`` (run by hand, not by CI).

Backbone-only cases (``mmdet_backbone_<name>.pt``, :data:`BACKBONE_CONFIGS`: ResNeXt-50 4x4d, ResNetV1d-18/50,
slim ResNets with ``base_channels`` / ``stem_channels``)
store the key names, shapes and the four stage maps on the same batch
(``make_mmdet_golden.py backbone_resnext50_4x4d``).

For RetinaNet, FCOS, ATSS, GFL, Faster R-CNN and Mask R-CNN, a small MMDetection model (ResNet-18, 32-channel
FPN and heads, 4 classes; YOLOX: CSPDarknet deepen 0.33 / widen 0.25, 32-channel PAFPN and head) mirroring det's preset of that family runs in float64 on weights and a
batch rebuilt from ``mmdet_recipe.py``; every stage is stored: the state-dict key names and shapes,
backbone maps, neck maps, head raw outputs, proposals (two-stage), losses and final detections
(and masks). ``tests/models/test_mmdet_golden.py`` rebuilds the same weights in det's venv, loads
them through ``convert_state_dict("mmdet", ...)`` and checks det against these files.

How the files in the repository were made (a venv outside the repository; nothing else needed)::

    python3 -m venv /work/mmdet-venv
    /work/mmdet-venv/bin/pip install torch==2.14.1 torchvision==0.29.1
    /work/mmdet-venv/bin/pip install mmdet==3.3.0 mmcv-lite==2.2.0 mmengine   # mmengine 0.10.7
    /work/mmdet-venv/bin/python tests/golden/make_mmdet_golden.py             # from the repo root

mmcv-lite has no compiled ops, so before mmdet is imported this script (1) reports mmcv's version
as 2.1.0 (mmdet 3.3.0 asserts mmcv < 2.2.0; nothing it uses changed) and (2) installs a stand-in
``mmcv.ops`` built on torchvision.ops with the semantics mmcv documents: ``nms`` (offset 0,
optional ``score_threshold`` / ``max_num``), ``batched_nms`` (mmcv's code: the coordinate-offset
trick, ``class_agnostic``, ``split_thr``), ``RoIAlign`` / ``roi_align`` (``aligned=True``,
``sampling_ratio=0`` adaptive, ``pool_mode='avg'``). Other mmcv ops are placeholders never called.

What else the run changes in mmdet, each explained where it is done: ``patch_float32_casts`` (mmdet's
hard-coded float32 casts and 3.x's avg_factor epsilon removed, so the float64 run is float64 and 2.x's
loss reduction), ``pad_shape = img_shape`` in the image metas (det takes the valid anchor locations from
the image size), and the dense heads' mmdet 2.x detections (``detections_2x``) made with
``min_bbox_size: -1`` (3.x then skips the size filter, as 2.x's dense heads do). See docs/mmdet-compat.md.
The batch has one crowd box per image (``ignored_instances``; RetinaNet, ATSS, RPN and R-CNN assigners use
``ignore_iof_thr: 0.5``; FCOS ignores crowd boxes in both libraries). Run time: about 45 s on a CPU.

Randomness: the two-stage samplers take every candidate (RPN ``num: 8192``, R-CNN ``num: 2048``,
``pos_fraction: 0.5``: more than the anchors / proposals of an image), so no random choice is made
and both libraries sample the same set; everything else is deterministic.
"""

from __future__ import annotations

import copy
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import torch
import torchvision

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("mmdet_recipe", HERE / "mmdet_recipe.py")
recipe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(recipe)


# ----------------------------------------------------------------------------- mmcv stand-ins
def nms(boxes, scores, iou_threshold, offset=0, score_threshold=0, max_num=-1):
    """mmcv.ops.nms: keep indices into the input, dets = (boxes, score) of the kept ones."""
    assert offset == 0, "only offset 0 (mmdet >= 2.0 boxes) is supported"
    all_boxes, all_scores = boxes, scores
    valid_inds = None
    if score_threshold > 0:
        valid = scores > score_threshold
        valid_inds = valid.nonzero(as_tuple=False).view(-1)
        boxes, scores = boxes[valid], scores[valid]
    inds = torchvision.ops.nms(boxes, scores, float(iou_threshold))
    if max_num > 0:
        inds = inds[:max_num]
    if valid_inds is not None:
        inds = valid_inds[inds]
    dets = torch.cat((all_boxes[inds], all_scores[inds].reshape(-1, 1)), dim=1)
    return dets, inds


def batched_nms(boxes, scores, idxs, nms_cfg, class_agnostic=False):
    """mmcv.ops.batched_nms (mmcv 2.x source, rotated boxes left out)."""
    if nms_cfg is None:
        scores, inds = scores.sort(descending=True)
        boxes = boxes[inds]
        return torch.cat([boxes, scores[:, None]], -1), inds
    nms_cfg_ = nms_cfg.copy()
    class_agnostic = nms_cfg_.pop("class_agnostic", class_agnostic)
    if class_agnostic:
        boxes_for_nms = boxes
    else:
        max_coordinate = boxes.max()
        offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
        boxes_for_nms = boxes + offsets[:, None]
    nms_type = nms_cfg_.pop("type", "nms")
    assert nms_type == "nms", nms_type
    split_thr = nms_cfg_.pop("split_thr", 10000)
    if boxes_for_nms.shape[0] < split_thr:
        dets, keep = nms(boxes_for_nms, scores, **nms_cfg_)
        boxes = boxes[keep]
        scores = dets[:, -1]
    else:
        max_num = nms_cfg_.pop("max_num", -1)
        total_mask = scores.new_zeros(scores.size(), dtype=torch.bool)
        scores_after_nms = scores.new_zeros(scores.size())
        for i in torch.unique(idxs):
            mask = (idxs == i).nonzero(as_tuple=False).view(-1)
            dets, keep = nms(boxes_for_nms[mask], scores[mask], **nms_cfg_)
            total_mask[mask[keep]] = True
            scores_after_nms[mask[keep]] = dets[:, -1]
        keep = total_mask.nonzero(as_tuple=False).view(-1)
        scores, inds = scores_after_nms[keep].sort(descending=True)
        keep = keep[inds]
        boxes = boxes[keep]
        if max_num > 0:
            keep, boxes, scores = keep[:max_num], boxes[:max_num], scores[:max_num]
    return torch.cat([boxes, scores[:, None]], -1), keep


def roi_align(input, rois, output_size, spatial_scale=1.0, sampling_ratio=0, pool_mode="avg", aligned=True):
    """mmcv.ops.roi_align on torchvision (rois ``(K, 5)``: batch index, x1, y1, x2, y2)."""
    assert pool_mode == "avg", pool_mode
    if isinstance(output_size, int):
        output_size = (output_size, output_size)
    return torchvision.ops.roi_align(input, rois.to(input.dtype), tuple(output_size), float(spatial_scale),
                                     int(sampling_ratio), bool(aligned))


class RoIAlign(torch.nn.Module):
    """mmcv.ops.RoIAlign (``use_torchvision`` ignored: always torchvision's kernel)."""

    def __init__(self, output_size, spatial_scale=1.0, sampling_ratio=0, pool_mode="avg", aligned=True,
                 use_torchvision=False):
        super().__init__()
        self.output_size = torch.nn.modules.utils._pair(output_size)
        self.spatial_scale = float(spatial_scale)
        self.sampling_ratio = int(sampling_ratio)
        self.pool_mode = pool_mode
        self.aligned = aligned

    def forward(self, input, rois):
        return roi_align(input, rois, self.output_size, self.spatial_scale, self.sampling_ratio,
                         self.pool_mode, self.aligned)


def _stub_module(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)

    def __getattr__(attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        placeholder = type(attr, (torch.nn.Module,), {"__doc__": f"placeholder for mmcv.ops.{attr} (never used)"})
        setattr(mod, attr, placeholder)
        return placeholder

    mod.__getattr__ = __getattr__
    mod.__path__ = []  # a package, so "from mmcv.ops.x import y" finds the submodules below
    return mod


class _OpsFinder:
    """Import hook: any ``mmcv.ops.<sub>`` not installed below is a placeholder module."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        if fullname.startswith("mmcv.ops.") and fullname not in sys.modules:
            return importlib.util.spec_from_loader(fullname, _OpsFinder)
        return None

    @staticmethod
    def create_module(spec):
        return _stub_module(spec.name)

    @staticmethod
    def exec_module(module):
        return None


def install_mmcv_shims() -> None:
    import mmcv

    mmcv.__version__ = "2.1.0"  # mmdet 3.3.0 asserts mmcv < 2.2.0
    ops = _stub_module("mmcv.ops", nms=nms, batched_nms=batched_nms, roi_align=roi_align, RoIAlign=RoIAlign)
    sys.modules["mmcv.ops"] = ops
    mmcv.ops = ops
    for sub, attrs in {"nms": {"nms": nms, "batched_nms": batched_nms},
                       "roi_align": {"roi_align": roi_align, "RoIAlign": RoIAlign}}.items():
        mod = _stub_module(f"mmcv.ops.{sub}", **attrs)
        sys.modules[f"mmcv.ops.{sub}"] = mod
        setattr(ops, sub, mod)
    sys.meta_path.insert(0, _OpsFinder)


def _patch_source(owner, name: str, *replacements: tuple[str, str]) -> None:
    """Recompile ``owner.name`` (a module function or a class method) with each ``(old, new)`` replaced."""
    import inspect
    import textwrap

    fn = getattr(owner, name)
    src = textwrap.dedent(inspect.getsource(fn))
    for old, new in replacements:
        assert old in src, (owner, name, old)
        src = src.replace(old, new)
    module = sys.modules[fn.__module__]
    scope: dict = {}
    exec(compile(src, module.__file__, "exec"), module.__dict__, scope)
    setattr(owner, name, scope[name])


def patch_float32_casts() -> None:
    """Make the float64 run float64 throughout. mmdet hard-codes float32 in five places of these models;
    each only rounds (no other change):

    - ``AnchorGenerator`` / ``MlvlPointGenerator.grid_priors`` default to ``dtype=torch.float32`` and the
      anchor heads' training path (``AnchorHead.get_anchors``) does not pass a dtype: default float64;
    - ``bbox2delta`` (``DeltaXYWHBBoxCoder.encode``) casts anchors and GT to float32: casts removed;
    - ``FCOSHead.forward_single`` and ``ATSSHead.forward_single`` cast the regression to float32
      (``scale(...).float()``): removed;
    - ``binary_cross_entropy`` / ``mask_cross_entropy`` pass float32 targets (``label.float()``, float32
      mask targets) to ``F.binary_cross_entropy_with_logits``, which then computes in float32: the
      targets are cast to the logits' dtype instead (RPN objectness, FCOS centerness, mask losses);
    - not a cast but a 3.x change: ``weight_reduce_loss`` divides by ``avg_factor + finfo(float32).eps``
      (added in its own precision: exact for Python numbers, rounded away for FCOS's float32 ``num_pos``),
      a relative 1.2e-7 / avg_factor; the 2.x sources det follows divide by ``avg_factor``: eps removed;
    - ``SimOTAAssigner.assign`` computes the classification cost on float32 copies of the scores and
      one-hot labels, and stores the positives' IoUs (YOLOX's classification targets) in a float32
      ``max_overlaps``: the scores' dtype instead;
    - ``_do_paste_mask`` pastes masks in float32 on a grid built from the boxes: given float32 boxes, which
      is what mmdet does in a float32 run and what det does (det pastes in float32 too).
    """
    from mmdet.models.dense_heads import atss_head, fcos_head
    from mmdet.models.losses import cross_entropy_loss, focal_loss
    from mmdet.models.losses import utils as loss_utils
    from mmdet.models.roi_heads.mask_heads import fcn_mask_head
    from mmdet.models.task_modules.assigners import sim_ota_assigner
    from mmdet.models.task_modules.coders import delta_xywh_bbox_coder
    from mmdet.models.task_modules.prior_generators import anchor_generator, point_generator

    for gen in (anchor_generator.AnchorGenerator, point_generator.MlvlPointGenerator):
        _patch_source(gen, "grid_priors", ("dtype: torch.dtype = torch.float32", "dtype: torch.dtype = torch.float64"))
    _patch_source(delta_xywh_bbox_coder, "bbox2delta", ("proposals = proposals.float()", "pass"),
                  ("gt = gt.float()", "pass"))
    _patch_source(loss_utils, "weight_reduce_loss", ("loss.sum() / (avg_factor + eps)", "loss.sum() / avg_factor"))
    for module in (cross_entropy_loss, focal_loss):  # they imported the function by name
        module.weight_reduce_loss = loss_utils.weight_reduce_loss
    _patch_source(cross_entropy_loss, "binary_cross_entropy", ("label.float()", "label.to(pred.dtype)"))
    _patch_source(cross_entropy_loss, "mask_cross_entropy", ("pred_slice, target,", "pred_slice, target.to(pred_slice.dtype),"))
    _patch_source(fcos_head.FCOSHead, "forward_single", ("scale(bbox_pred).float()", "scale(bbox_pred)"),
                  ("super()", "super(FCOSHead, self)"))
    _patch_source(atss_head.ATSSHead, "forward_single", ("scale(self.atss_reg(reg_feat)).float()",
                                                          "scale(self.atss_reg(reg_feat))"))

    patch_gfl()

    _patch_source(sim_ota_assigner.SimOTAAssigner, "assign",
                  ("pred_scores.shape[-1]).float().unsqueeze(0)", "pred_scores.shape[-1]).to(pred_scores.dtype).unsqueeze(0)"),
                  ("valid_pred_scores.to(dtype=torch.float32)", "valid_pred_scores"),
                  ("dtype=torch.float32)", "dtype=decoded_bboxes.dtype)"))
    paste = fcn_mask_head._do_paste_mask

    def paste_float32(masks, boxes, img_h, img_w, skip_empty=True):
        return paste(masks, boxes.float(), img_h, img_w, skip_empty)

    fcn_mask_head._do_paste_mask = paste_float32


def patch_gfl() -> None:
    """GFL's float32 casts, removed as above (each only rounds): ``forward_single`` casts the bin logits
    to float32 (``scale(...).float()``), and ``loss_by_feat_single`` makes the QFL IoU targets with
    ``label_weights.new_zeros`` (float32 label weights), so the IoUs would be stored in float32."""
    from mmdet.models.dense_heads import gfl_head

    _patch_source(gfl_head.GFLHead, "forward_single", ("scale(self.gfl_reg(reg_feat)).float()",
                                                       "scale(self.gfl_reg(reg_feat))"))
    _patch_source(gfl_head.GFLHead, "loss_by_feat_single", ("score = label_weights.new_zeros(labels.shape)",
                                                            "score = cls_score.new_zeros(labels.shape)"))


# ----------------------------------------------------------------------------- configs
BACKBONE = dict(type="ResNet", depth=18, num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=1,
                norm_cfg=dict(type="BN", requires_grad=True), norm_eval=True, style="pytorch", init_cfg=None)
CH = 32  # FPN and head channels
RCNN_TRAIN = dict(
    rpn=dict(assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3,
                           match_low_quality=True, ignore_iof_thr=0.5),
             sampler=dict(type="RandomSampler", num=8192, pos_fraction=0.5, neg_pos_ub=-1,
                          add_gt_as_proposals=False),
             allowed_border=-1, pos_weight=-1, debug=False),
    rpn_proposal=dict(nms_pre=2000, max_per_img=300, nms=dict(type="nms", iou_threshold=0.7), min_bbox_size=0),
    rcnn=dict(assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5,
                            match_low_quality=False, ignore_iof_thr=0.5),
              sampler=dict(type="RandomSampler", num=2048, pos_fraction=0.5, neg_pos_ub=-1,
                           add_gt_as_proposals=True),
              mask_size=28, pos_weight=-1, debug=False))
RCNN_TEST = dict(
    rpn=dict(nms_pre=1000, max_per_img=300, nms=dict(type="nms", iou_threshold=0.7), min_bbox_size=0),
    rcnn=dict(score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5), max_per_img=100, mask_thr_binary=0.5))


def two_stage_cfg(with_mask: bool) -> dict:
    roi_head = dict(
        type="StandardRoIHead",
        bbox_roi_extractor=dict(type="SingleRoIExtractor",
                                roi_layer=dict(type="RoIAlign", output_size=7, sampling_ratio=0),
                                out_channels=CH, featmap_strides=[4, 8, 16, 32]),
        bbox_head=dict(type="Shared2FCBBoxHead", in_channels=CH, fc_out_channels=64, roi_feat_size=7,
                       num_classes=recipe.NUM_CLASSES,
                       bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4,
                                       target_stds=[0.1, 0.1, 0.2, 0.2]),
                       reg_class_agnostic=False,
                       loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
                       loss_bbox=dict(type="L1Loss", loss_weight=1.0)))
    if with_mask:
        roi_head.update(
            mask_roi_extractor=dict(type="SingleRoIExtractor",
                                    roi_layer=dict(type="RoIAlign", output_size=14, sampling_ratio=0),
                                    out_channels=CH, featmap_strides=[4, 8, 16, 32]),
            mask_head=dict(type="FCNMaskHead", num_convs=2, in_channels=CH, conv_out_channels=CH,
                           num_classes=recipe.NUM_CLASSES,
                           loss_mask=dict(type="CrossEntropyLoss", use_mask=True, loss_weight=1.0)))
    train, test = copy.deepcopy(RCNN_TRAIN), copy.deepcopy(RCNN_TEST)
    if not with_mask:
        del train["rcnn"]["mask_size"], test["rcnn"]["mask_thr_binary"]
    return dict(
        type="MaskRCNN" if with_mask else "FasterRCNN",
        backbone=copy.deepcopy(BACKBONE),
        neck=dict(type="FPN", in_channels=[64, 128, 256, 512], out_channels=CH, num_outs=5),
        rpn_head=dict(type="RPNHead", in_channels=CH, feat_channels=CH,
                      anchor_generator=dict(type="AnchorGenerator", scales=[8], ratios=[0.5, 1.0, 2.0],
                                            strides=[4, 8, 16, 32, 64]),
                      bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[1.0] * 4),
                      loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0),
                      loss_bbox=dict(type="L1Loss", loss_weight=1.0)),
        roi_head=roi_head, train_cfg=train, test_cfg=test)


CASCADE_SCORE_THR = 0.03


def cascade_cfg(with_mask: bool) -> dict:
    """Cascade (Mask) R-CNN: the two-stage model above with three class-agnostic box stages (IoU 0.5 / 0.6 /
    0.7, mmdet's per-stage target stds, stage loss weights 1 / 0.5 / 0.25) and one mask head per stage."""
    cfg = two_stage_cfg(with_mask)
    cfg["type"] = "CascadeRCNN"
    roi = cfg["roi_head"]
    roi["type"] = "CascadeRoIHead"
    roi["num_stages"] = 3
    roi["stage_loss_weights"] = [1, 0.5, 0.25]
    heads = []
    for stds in ([0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [0.033, 0.033, 0.067, 0.067]):
        head = copy.deepcopy(roi["bbox_head"])
        head["bbox_coder"]["target_stds"] = stds
        head["reg_class_agnostic"] = True
        heads.append(head)
    roi["bbox_head"] = heads
    stages = []
    for thr in (0.5, 0.6, 0.7):
        stage = copy.deepcopy(cfg["train_cfg"]["rcnn"])
        stage["assigner"].update(pos_iou_thr=thr, neg_iou_thr=thr, min_pos_iou=thr)
        stages.append(stage)
    cfg["train_cfg"]["rcnn"] = stages
    # the recipe's random weights score few boxes above 0.05 once three stages are averaged
    cfg["test_cfg"]["rcnn"]["score_thr"] = CASCADE_SCORE_THR
    return cfg


CONFIGS = {
    "retinanet": dict(
        type="RetinaNet",
        backbone=copy.deepcopy(BACKBONE),
        neck=dict(type="FPN", in_channels=[64, 128, 256, 512], out_channels=CH, start_level=1,
                  add_extra_convs="on_input", num_outs=5),
        bbox_head=dict(type="RetinaHead", num_classes=recipe.NUM_CLASSES, in_channels=CH, stacked_convs=4,
                       feat_channels=CH,
                       anchor_generator=dict(type="AnchorGenerator", octave_base_scale=4, scales_per_octave=3,
                                             ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32, 64, 128]),
                       bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[1.0] * 4),
                       loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
                       loss_bbox=dict(type="L1Loss", loss_weight=1.0)),
        train_cfg=dict(assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0,
                                     ignore_iof_thr=0.5),
                       sampler=dict(type="PseudoSampler"), allowed_border=-1, pos_weight=-1, debug=False),
        test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5),
                      max_per_img=100)),
    "fcos": dict(
        type="FCOS",
        backbone=copy.deepcopy(BACKBONE),
        neck=dict(type="FPN", in_channels=[64, 128, 256, 512], out_channels=CH, start_level=1,
                  add_extra_convs="on_output", num_outs=5, relu_before_extra_convs=True),
        bbox_head=dict(type="FCOSHead", num_classes=recipe.NUM_CLASSES, in_channels=CH, stacked_convs=4,
                       feat_channels=CH, strides=[8, 16, 32, 64, 128],
                       norm_cfg=dict(type="GN", num_groups=8, requires_grad=True),
                       center_sampling=True, center_sample_radius=1.5, norm_on_bbox=True, centerness_on_reg=True,
                       loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
                       loss_bbox=dict(type="GIoULoss", loss_weight=1.0),
                       loss_centerness=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0)),
        train_cfg=dict(assigner=None, allowed_border=-1, pos_weight=-1, debug=False),
        test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type="nms", iou_threshold=0.6),
                      max_per_img=100)),
    "atss": dict(
        type="ATSS",
        backbone=copy.deepcopy(BACKBONE),
        neck=dict(type="FPN", in_channels=[64, 128, 256, 512], out_channels=CH, start_level=1,
                  add_extra_convs="on_output", num_outs=5),
        bbox_head=dict(type="ATSSHead", num_classes=recipe.NUM_CLASSES, in_channels=CH, stacked_convs=4,
                       feat_channels=CH, norm_cfg=dict(type="GN", num_groups=8, requires_grad=True),
                       anchor_generator=dict(type="AnchorGenerator", ratios=[1.0], octave_base_scale=8,
                                             scales_per_octave=1, strides=[8, 16, 32, 64, 128]),
                       bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4,
                                       target_stds=[0.1, 0.1, 0.2, 0.2]),
                       loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
                       loss_bbox=dict(type="GIoULoss", loss_weight=2.0),
                       loss_centerness=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0)),
        train_cfg=dict(assigner=dict(type="ATSSAssigner", topk=9, ignore_iof_thr=0.5), allowed_border=-1,
                       pos_weight=-1, debug=False),
        test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type="nms", iou_threshold=0.6),
                      max_per_img=100)),
    "yolox": dict(
        type="YOLOX",
        backbone=dict(type="CSPDarknet", deepen_factor=0.33, widen_factor=0.25),
        neck=dict(type="YOLOXPAFPN", in_channels=[64, 128, 256], out_channels=CH, num_csp_blocks=1),
        bbox_head=dict(type="YOLOXHead", num_classes=recipe.NUM_CLASSES, in_channels=CH, feat_channels=CH),
        train_cfg=dict(assigner=dict(type="SimOTAAssigner", center_radius=2.5)),
        # mmdet's YOLOX (2.x and 3.x) keeps every box NMS leaves: no max_per_img. score_thr 0.015 (preset:
        # 0.01, which every prior of this random model passes) so that the threshold drops some
        test_cfg=dict(score_thr=0.015, nms=dict(type="nms", iou_threshold=0.65))),
    "faster_rcnn": two_stage_cfg(with_mask=False),
    "mask_rcnn": two_stage_cfg(with_mask=True),
    "gfl": dict(
        type="GFL",
        backbone=copy.deepcopy(BACKBONE),
        neck=dict(type="FPN", in_channels=[64, 128, 256, 512], out_channels=CH, start_level=1,
                  add_extra_convs="on_output", num_outs=5),
        bbox_head=dict(type="GFLHead", num_classes=recipe.NUM_CLASSES, in_channels=CH, stacked_convs=4,
                       feat_channels=CH, norm_cfg=dict(type="GN", num_groups=8, requires_grad=True),
                       anchor_generator=dict(type="AnchorGenerator", ratios=[1.0], octave_base_scale=8,
                                             scales_per_octave=1, strides=[8, 16, 32, 64, 128]),
                       loss_cls=dict(type="QualityFocalLoss", use_sigmoid=True, beta=2.0, loss_weight=1.0),
                       loss_dfl=dict(type="DistributionFocalLoss", loss_weight=0.25), reg_max=16,
                       loss_bbox=dict(type="GIoULoss", loss_weight=2.0)),
        train_cfg=dict(assigner=dict(type="ATSSAssigner", topk=9, ignore_iof_thr=0.5), allowed_border=-1,
                       pos_weight=-1, debug=False),
        test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type="nms", iou_threshold=0.6),
                      max_per_img=100)),
    "cascade_rcnn": cascade_cfg(with_mask=False),
    "cascade_mask_rcnn": cascade_cfg(with_mask=True),
}

#: Backbone-only cases (``mmdet_backbone_<name>.pt``): mmdet's ResNeXt / ResNetV1d / slim ResNet on the recipe batch.
#: frozen_stages / norm_eval as the detector presets; every BN runs on its running statistics (eval mode).
BACKBONE_COMMON = dict(num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=1,
                       norm_cfg=dict(type="BN", requires_grad=True), norm_eval=True, style="pytorch", init_cfg=None)
BACKBONE_CONFIGS = {
    "resnext50_4x4d": dict(type="ResNeXt", depth=50, groups=4, base_width=4, **BACKBONE_COMMON),
    "resnext50_4x4d_v1d": dict(type="ResNeXt", depth=50, groups=4, base_width=4, deep_stem=True, avg_down=True,
                               **BACKBONE_COMMON),
    "resnetv1d18": dict(type="ResNetV1d", depth=18, **BACKBONE_COMMON),
    "resnetv1d50": dict(type="ResNetV1d", depth=50, **BACKBONE_COMMON),
    # slim widths (base_channels / stem_channels): the quickstart's half-width ResNet-18, and a
    # ResNet-50 with a narrower deep stem and pooled shortcuts
    "resnet18_b32": dict(type="ResNet", depth=18, base_channels=32, **BACKBONE_COMMON),
    "resnet50_b32_s16_v1d": dict(type="ResNet", depth=50, base_channels=32, stem_channels=16, deep_stem=True,
                                 avg_down=True, **BACKBONE_COMMON),
}

#: the single-stage (dense) models: raw head outputs stored, and 2.x detections (``detections_2x``)
#: dense heads: the names of their raw output groups
DENSE = {"retinanet": ("cls_scores", "bbox_preds"), "fcos": ("cls_scores", "bbox_preds", "centernesses"),
         "atss": ("cls_scores", "bbox_preds", "centernesses"), "gfl": ("cls_scores", "bbox_preds"),
         "yolox": ("cls_scores", "bbox_preds", "objectnesses")}
#: channel step of the stored maps (every map also keeps its whole-tensor sum and sum of squares).
STEPS = {"backbone": 16, "neck": 8, "head": 2, "rpn_head": 3}
#: masks stored (bit-packed) for the first detections of each image only (file size)
MASKS_KEPT = 40


# ----------------------------------------------------------------------------- running mmdet
def to_torch(obj):
    """numpy -> torch, recursively (the golden files load with ``torch.load(weights_only=True)``)."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj)
    if isinstance(obj, dict):
        return {k: to_torch(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_torch(v) for v in obj)
    return obj


def summarize_maps(maps, step):
    return [to_torch(recipe.summarize(m.detach().numpy(), step)) for m in maps]


def data_samples(with_masks: bool):
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData

    samples = []
    for i, (h, w) in enumerate(recipe.IMAGE_SIZES):
        # pad_shape = img_shape: det takes the valid anchor locations from the image size (see docs/mmdet-compat.md)
        s = DetDataSample(metainfo=dict(img_id=i, img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
                                        batch_input_shape=recipe.PAD_SHAPE, scale_factor=(1.0, 1.0)))
        gt = InstanceData()
        gt.bboxes = torch.tensor(recipe.GT_BOXES[i], dtype=torch.float64)
        gt.labels = torch.tensor(recipe.GT_LABELS[i], dtype=torch.long)
        if with_masks:
            gt.masks = BitmapMasks(recipe.make_masks(i), *recipe.PAD_SHAPE)
        s.gt_instances = gt
        ign = InstanceData()
        ign.bboxes = torch.tensor(recipe.GT_IGNORE[i], dtype=torch.float64)
        ign.labels = torch.zeros(len(recipe.GT_IGNORE[i]), dtype=torch.long)
        s.ignored_instances = ign
        samples.append(s)
    return samples


def run(name: str) -> dict:
    from mmdet.registry import MODELS
    from mmengine.config import ConfigDict
    from mmengine.registry import init_default_scope

    init_default_scope("mmdet")
    cfg = CONFIGS[name]
    model = MODELS.build(ConfigDict(copy.deepcopy(cfg))).double()
    sd = model.state_dict()
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    weights = recipe.make_state_dict(shapes)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    model.eval()  # BN in inference mode everywhere (norm_eval in training too)
    images = torch.from_numpy(recipe.make_images())
    with_masks = name in ("mask_rcnn", "cascade_mask_rcnn")
    out: dict = {"model": name, "mmdet_config": cfg, "classes": list(recipe.CLASSES),
                 "state_dict_shapes": {k: list(s) for k, s in shapes.items()},
                 "state_dict_dtypes": {k: str(v.dtype).removeprefix("torch.") for k, v in sd.items()}}
    with torch.no_grad():
        c = model.backbone(images)
        out["backbone"] = summarize_maps(c, STEPS["backbone"])
        feats = model.neck(c)
        out["neck"] = summarize_maps(feats, STEPS["neck"])
        if name in DENSE:
            # FCOS multiplies its distances by the stride in eval mode only (its GN head has no running
            # statistics); YOLOX's BN head stays in eval mode
            model.bbox_head.train(name == "fcos")
            raw = model.bbox_head(feats)
            model.bbox_head.eval()
            keys = DENSE[name]
            out["head"] = {k: summarize_maps(v, STEPS["head"]) for k, v in zip(keys, raw)}
        else:
            rpn_cls, rpn_reg = model.rpn_head(feats)
            out["rpn_head"] = {"cls_scores": summarize_maps(rpn_cls, STEPS["rpn_head"]),
                               "bbox_preds": summarize_maps(rpn_reg, STEPS["rpn_head"])}
            samples = data_samples(with_masks)
            proposals = model.rpn_head.predict(feats, samples, rescale=False)
            out["proposals"] = [{"boxes": p.bboxes.clone(), "scores": p.scores.clone()} for p in proposals]
            rois = torch.cat([torch.cat([p.bboxes.new_full((len(p), 1), i), p.bboxes], 1)
                              for i, p in enumerate(proposals)])
            if name.startswith("cascade"):  # the first stage on the proposals
                bbox_res = model.roi_head._bbox_forward(0, feats, rois)
            else:
                bbox_res = model.roi_head._bbox_forward(feats, rois)
            out["roi_head"] = {"cls_score": bbox_res["cls_score"].clone(), "bbox_pred": bbox_res["bbox_pred"].clone()}
    torch.manual_seed(0)
    model.train()  # norm_eval keeps the backbone BN in eval mode; the test model's BN layers are all frozen
    losses = model.loss(images, data_samples(with_masks))
    out["losses"] = {k: (sum(v) if isinstance(v, list) else v).detach().clone() for k, v in losses.items()}
    if name == "yolox":  # the last epochs' extra L1 loss (YOLOXModeSwitchHook sets use_l1)
        model.bbox_head.use_l1 = True
        losses = model.loss(images, data_samples(with_masks))
        out["losses_l1"] = {k: v.detach().clone() for k, v in losses.items()}
        model.bbox_head.use_l1 = False
    model.eval()
    out["detections"] = predict(model, with_masks)
    if name in DENSE:
        # mmdet 2.x dense heads never filter by size; 3.x with min_bbox_size < 0 does the same
        model.test_cfg.min_bbox_size = -1
        out["detections_2x"] = predict(model, with_masks)
    return out


def run_backbone(name: str) -> dict:
    """A backbone-only golden case: key names / shapes and the four stage maps on the recipe images."""
    from mmdet.registry import MODELS
    from mmengine.config import ConfigDict
    from mmengine.registry import init_default_scope

    init_default_scope("mmdet")
    cfg = BACKBONE_CONFIGS[name]
    model = MODELS.build(ConfigDict(copy.deepcopy(cfg))).double()
    sd = model.state_dict()
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    # recipe values under the names a detector file gives them (``backbone.`` prefix)
    weights = recipe.make_state_dict({f"backbone.{k}": s for k, s in shapes.items()})
    model.load_state_dict({k.removeprefix("backbone."): torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    model.eval()
    with torch.no_grad():
        maps = model(torch.from_numpy(recipe.make_images()))
    return {"model": name, "mmdet_config": cfg, "state_dict_shapes": {k: list(s) for k, s in shapes.items()},
            "num_params": sum(p.numel() for p in model.parameters()),
            "backbone": summarize_maps(maps, STEPS["backbone"])}


def predict(model, with_masks: bool) -> list[dict]:
    with torch.no_grad():
        preds = model.predict(torch.from_numpy(recipe.make_images()), data_samples(with_masks), rescale=False)
    dets = []
    for p in preds:
        r = p.pred_instances
        d = {"boxes": r.bboxes.clone(), "scores": r.scores.clone(), "labels": r.labels.clone()}
        if "masks" in r:
            m = r.masks[:MASKS_KEPT].numpy().astype(bool)
            d["mask_shape"] = list(m.shape)
            d["masks_packed"] = torch.from_numpy(np.packbits(m.reshape(-1)))
        dets.append(d)
    return dets


def main() -> None:
    install_mmcv_shims()
    import mmdet
    import mmengine

    patch_float32_casts()
    versions = {"mmdet": mmdet.__version__, "mmengine": mmengine.__version__, "torch": str(torch.__version__),
                "torchvision": torchvision.__version__, "mmcv": "mmcv-lite 2.2.0 + torchvision stand-in ops"}
    for name in (sys.argv[1:] or list(CONFIGS) + [f"backbone_{n}" for n in BACKBONE_CONFIGS]):
        if name.startswith("backbone_"):
            out = run_backbone(name.removeprefix("backbone_"))
            out["versions"] = versions
            path = HERE / f"mmdet_{name}.pt"
            torch.save(out, path)
            print(f"{path.name}: {path.stat().st_size / 1e3:.0f} kB, {out['num_params']} parameters")
            continue
        out = run(name)
        out["versions"] = versions
        path = HERE / f"mmdet_{name}.pt"
        torch.save(out, path)
        n = [len(d["scores"]) for d in out["detections"]]
        print(f"{path.name}: {path.stat().st_size / 1e3:.0f} kB, losses "
              f"{ {k: round(float(v), 4) for k, v in out['losses'].items()} }, detections {n}")


if __name__ == "__main__":
    main()
