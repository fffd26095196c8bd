"""Export graphs of the two-stage detectors (Faster R-CNN, Mask R-CNN, Cascade (Mask) R-CNN) with every
post-processing step in standard ONNX ops.

:class:`DeployTwoStage` wraps a trained :class:`~detcli.models.two_stage.TwoStageDetector` for
``torch.onnx.export`` (TorchScript tracing). Inputs: ``images (B, 3, H, W)`` float32, the
preprocessed (normalised, padded) tensor, and ``image_sizes (B, 2)`` float32, each image's valid
``(h, w)`` in the padded batch: every box is clipped to its own image's valid region wherever eager
mode clips (proposals, cascade refinements, final boxes), so each image of a batch of different sizes
gets the detections eager mode gives it. (Called without ``image_sizes`` the wrapper clips to
``(H, W)``, what graphs exported before this input did.) Outputs:

- ``dets (B, N, 5)``: ``(x1, y1, x2, y2, score)`` in input pixels, clipped to ``image_sizes``, sorted by
  score; ``N = test_cfg.rcnn.max_per_img``; unused rows are zeros.
- ``labels (B, N)`` int64: class index ``0..C-1``; ``-1`` on unused rows.
- Mask R-CNN only, ``masks (B, N, H, W)`` bool at the input size: each detection's mask
  probability pasted into the image and thresholded at ``test_cfg.rcnn.mask_thr_binary`` (``>=``;
  a negative threshold gives the float32 probabilities instead); all False on unused rows and
  outside the detection's image (``image_sizes``), so ``masks[i, :, :h, :w]`` is eager's mask.

The graph follows the PyTorch path (``TwoStageDetector.predict``):

1. RPN, per level: the top ``test_cfg.rpn.nms_pre`` anchors by objectness (``TopK``), decoded and
   clipped, sides ``<= min_bbox_size`` dropped; ``NonMaxSuppression`` with one "class" per level
   (so NMS stays within a level) and the best ``max_per_img`` proposals over all levels. The
   proposal count is fixed (``max_per_img``); missing proposals are flagged and never scored.
2. RoI features: each RoI's level by the extractor's ``level_mapping`` (``finest_scale``:
   ``floor(log2(sqrt(area) / finest_scale + 1e-6))``, or torchvision's ``LevelMapper``), then per level ``NonZero`` + ``RoiAlign`` (opset 16, ``half_pixel`` for
   ``aligned=True``) on that level's RoIs and ``ScatterND`` back into RoI order.
3. Box head, softmax (over every logit, ``num_extra_cls_logits`` included; those are dropped after
   it), class-specific decoding, clipping, ``min_bbox_size`` (class boxes with a side ``<=`` it get no
   score), then ``NonMaxSuppression`` with score
   threshold ``score_thr`` run on a ``(B * C)`` batch of one class each (class-specific boxes;
   ``class_agnostic`` runs one NMS over every (box, class) pair), capped at
   ``max_output_boxes_per_class`` (default ``max_per_img``, which changes nothing), and the top
   ``max_per_img``.
   Cascade R-CNN: every stage's box head runs in turn, the RoIs regressed between stages with the
   arg-max foreground class and clipped; the stages' class logits are averaged and the last stage's
   deltas decoded (as :meth:`detcli.models.cascade.CascadeRoIHead.predict`).
4. Mask R-CNN: the mask head on the final boxes (``NonZero`` picks the used rows; ``ScatterND``
   puts their masks back), each detection's class channel, sigmoid, and a
   grid-sample-free paste: bilinear weights are separable, so the image-sized mask is
   ``Wy @ mask @ Wx^T`` (``MatMul``), the same sampling as :func:`detcli.models.mask_heads.paste_masks`.
   ``paste_mode: torchvision`` (integer-sized per-box resizing) is refused. Cascade Mask R-CNN: the
   stages' sigmoid probabilities are averaged before pasting.

Priors are computed inside the graph from the feature-map shapes, so a graph exported with dynamic
axes accepts other batch sizes and image sizes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from detcli.errors import ConfigError
from detcli.models.cascade import CascadeRoIHead
from detcli.models.deploy import check_exportable
from detcli.models.export_ops import (
    arange_like,
    clip_to_input,
    clip_to_sizes,
    gather_padded,
    grid_anchors,
    nms_keep,
    per_prior,
    top_detections,
    topk_padded,
)
from detcli.models.mask_heads import axis_weights
from detcli.models.roi_extractors import SingleRoIExtractor
from detcli.models.two_stage import TwoStageDetector


def _roi_features(extractor: SingleRoIExtractor, feats: tuple[Tensor, ...], batch: Tensor, boxes: Tensor) -> Tensor:
    """``(K, C, s, s)`` RoIAlign features of ``boxes (K, 4)`` of images ``batch (K,)`` (float), each
    from its ``finest_scale`` level; shapes stay dynamic (no Python branch on data)."""
    import torchvision

    rois = torch.cat([batch[:, None], boxes], dim=1)
    size = extractor.output_size

    def pool(level: int, sel: Tensor) -> Tensor:
        return torchvision.ops.roi_align(feats[level], sel, size, 1.0 / extractor.featmap_strides[level],
                                         extractor.sampling_ratio, extractor.aligned)

    levels = extractor.num_inputs
    if levels == 1:
        return pool(0, rois)
    level = extractor.map_roi_levels(rois, levels)
    out = torch.zeros_like(rois[:, :1, None, None]).expand(-1, extractor.out_channels, size[0], size[1])
    for lvl in range(levels):
        idx = (level == lvl).nonzero()[:, 0]
        out = out.index_put((idx,), pool(lvl, rois[idx]))
    return out


class DeployTwoStage(nn.Module):
    """A Faster / Mask R-CNN with ONNX-exportable post-processing (see the module doc).

    Args:
        detector: a trained :class:`FasterRCNN` or :class:`MaskRCNN` (eval mode).
        max_output_boxes_per_class: the second stage's ``NonMaxSuppression`` cap per class and
            image (None: ``test_cfg.rcnn.max_per_img``).

    Raises:
        ConfigError: another detector type, or a ``max_per_img`` that is not positive.
    """

    def __init__(self, detector: nn.Module, max_output_boxes_per_class: int | None = None) -> None:
        super().__init__()
        check_exportable(detector)
        if not isinstance(detector, TwoStageDetector):
            raise ConfigError(f"model.type: DeployTwoStage exports Faster / Mask R-CNN, got {type(detector).__name__}")
        self.detector = detector
        self.postprocess = True
        self.rpn_cfg = detector.rpn_test
        self.rcnn_cfg = detector.rcnn_test
        if self.rpn_cfg.max_per_img <= 0:
            raise ConfigError("model.test_cfg.rpn.max_per_img must be > 0 to export (the graph has a fixed "
                              "number of proposals)")
        if self.rcnn_cfg.max_per_img <= 0:
            raise ConfigError("model.test_cfg.rcnn.max_per_img must be > 0 to export (the graph has a fixed "
                              "number of output rows)")
        self.max_output = int(max_output_boxes_per_class or self.rcnn_cfg.max_per_img)
        if self.max_output <= 0:
            raise ConfigError(f"max_output_boxes_per_class must be > 0, got {self.max_output}")
        for stage in self.stages:
            mask_head = stage.mask_head
            if mask_head is not None and getattr(mask_head, "paste_mode", "mmdet") != "mmdet":
                raise ConfigError(f"model.roi_head.mask_head.paste_mode: ONNX export pastes masks the mmdet way "
                                  f"only, got {mask_head.paste_mode!r} (set paste_mode: mmdet to export; masks then "  # type: ignore[union-attr]
                                  f"differ slightly at the edges)")
            for name in ("bbox_roi_extractor", "mask_roi_extractor"):
                if not isinstance(getattr(stage, name), SingleRoIExtractor):
                    raise ConfigError(f"model.roi_head.{name}: ONNX export needs a SingleRoIExtractor")

    @property
    def stages(self) -> list[nn.Module]:
        """The box / mask stages: the RoI head itself, or a cascade's stages in order."""
        head = self.detector.roi_head
        return list(head.stages) if isinstance(head, CascadeRoIHead) else [head]

    @property
    def max_per_img(self) -> int:
        return self.rcnn_cfg.max_per_img

    @property
    def with_mask(self) -> bool:
        return self.detector.roi_head.with_mask  # type: ignore[return-value]

    @property
    def output_names(self) -> list[str]:
        return ["dets", "labels", "masks"] if self.with_mask else ["dets", "labels"]

    @property
    def input_names(self) -> list[str]:
        """Graph inputs: ``input`` and ``image_sizes (B, 2)`` (each image's valid ``(h, w)`` in the padded
        batch, which boxes are clipped to as in eager mode)."""
        return ["input", "image_sizes"]

    def forward(self, images: Tensor, image_sizes: Tensor | None = None) -> tuple[Tensor, ...]:
        feats = self.detector.extract_feat(images)
        proposals, valid = self._proposals(feats, images, image_sizes)  # (B, n, 4), (B, n)
        dets, labels = self._detections(feats, proposals, valid, images, image_sizes)
        if not self.with_mask:
            return dets, labels
        return dets, labels, self._masks(feats, dets, labels, images, image_sizes)

    @staticmethod
    def _clip(boxes: Tensor, images: Tensor, image_sizes: Tensor | None) -> Tensor:
        """``boxes (B, ..., 4)`` clipped to each image's valid size, or to the padded input without sizes."""
        return clip_to_input(boxes, images) if image_sizes is None else clip_to_sizes(boxes, image_sizes)

    # ------------------------------------------------------------------ RPN

    def _proposals(self, feats: tuple[Tensor, ...], images: Tensor,
                   image_sizes: Tensor | None) -> tuple[Tensor, Tensor]:
        rpn = self.detector.rpn_head
        cfg = self.rpn_cfg
        gen = rpn.anchor_generator
        cls_scores, bbox_preds = rpn(feats)
        boxes_l, scores_l, level_l = [], [], []
        for level, (cls, reg) in enumerate(zip(cls_scores, bbox_preds)):
            anchors = grid_anchors(cls, gen, level, images)
            vals, idx = topk_padded(per_prior(cls, 1)[..., 0], cfg.nms_pre)  # (B, k)
            deltas = gather_padded(per_prior(reg, 4), idx, cfg.nms_pre)
            priors = gather_padded(anchors[None].expand(cls.shape[0], -1, -1), idx, cfg.nms_pre)
            boxes_l.append(rpn.bbox_coder.decode(priors, deltas))
            scores_l.append(vals.sigmoid())
            level_l.append(torch.full_like(vals, float(level)))
        boxes = self._clip(torch.cat(boxes_l, dim=1), images, image_sizes)  # (B, K, 4)
        scores = torch.cat(scores_l, dim=1)  # (B, K); the -inf padding has score 0
        levels = torch.cat(level_l, dim=1)
        if cfg.min_bbox_size >= 0:
            wh = boxes[..., 2:] - boxes[..., :2]
            scores = torch.where((wh[..., 0] > cfg.min_bbox_size) & (wh[..., 1] > cfg.min_bbox_size), scores, -1.0)
        ids = torch.arange(len(cls_scores), dtype=levels.dtype, device=levels.device)
        per_level = torch.where(levels[:, None, :] == ids[None, :, None], scores[:, None, :], -1.0)  # (B, L, K)
        keep = nms_keep(boxes, per_level, cfg.max_per_img, cfg.iou_threshold, 0.0)
        dets, labels = top_detections(boxes, torch.where(keep, scores, -1.0), torch.zeros_like(levels).long(),
                                      cfg.max_per_img)
        return dets[..., :4], labels >= 0

    # ------------------------------------------------------------------ box branch

    def _detections(self, feats: tuple[Tensor, ...], proposals: Tensor, valid: Tensor, images: Tensor,
                    image_sizes: Tensor | None) -> tuple[Tensor, Tensor]:
        stages = self.stages
        head = stages[-1]
        cfg = self.rcnn_cfg
        b, n = proposals.shape[:2]
        c = head.num_classes
        flat = proposals.reshape(-1, 4)
        batch = (arange_like(proposals[:, 0, 0])[:, None] + torch.zeros_like(proposals[:, :, 0])).reshape(-1)
        logits = []
        for t, stage in enumerate(stages):
            cls_score, bbox_pred = stage.bbox_head(_roi_features(stage.bbox_roi_extractor, feats, batch, flat))  # type: ignore[arg-type, operator]
            logits.append(cls_score)
            if t < len(stages) - 1:  # cascade: regress with the arg-max foreground class, clip
                deltas = bbox_pred
                if deltas.shape[1] != 4:
                    label = cls_score[:, :c].argmax(dim=1)
                    deltas = deltas.reshape(-1, c, 4).gather(1, label[:, None, None].expand(-1, 1, 4))[:, 0]
                flat = self._clip(stage.bbox_head.bbox_coder.decode(flat, deltas).reshape(b, n, 4),  # type: ignore[operator, union-attr]
                                  images, image_sizes).reshape(-1, 4)
        if len(logits) > 1:
            cls_score = sum(logits) / float(len(logits))
        scores = cls_score.softmax(dim=1)[:, :c].reshape(b, n, c)
        scores = torch.where(valid[:, :, None], scores, -1.0)
        if bbox_pred.shape[1] == 4:
            bbox_pred = bbox_pred.repeat(1, c)
        boxes = head.bbox_head.bbox_coder.decode(flat, bbox_pred).reshape(b, n, c, 4)  # type: ignore[operator, union-attr]
        boxes = self._clip(boxes, images, image_sizes)  # (B, n, C, 4)
        if cfg.min_bbox_size >= 0:  # remove small boxes
            wh = boxes[..., 2:] - boxes[..., :2]
            scores = torch.where((wh <= cfg.min_bbox_size).any(dim=-1), -1.0, scores)
        boxes = boxes.permute(0, 2, 1, 3).reshape(b, c * n, 4)  # type: ignore[arg-type, operator]  # class-major
        scores = scores.permute(0, 2, 1).reshape(b, c * n)  # type: ignore[arg-type, operator]
        nms_cfg = cfg.nms or {}
        if nms_cfg.get("class_agnostic", False):
            keep = nms_keep(boxes, scores[:, None, :], self.max_output, float(nms_cfg.get("iou_threshold", 0.5)),
                            cfg.score_thr)
        else:  # a batch of B * C single-class problems: class-specific boxes, no C-fold score matrix
            keep = nms_keep(boxes.reshape(b * c, n, 4), scores.reshape(b * c, 1, n), self.max_output,  # type: ignore[arg-type, operator]
                            float(nms_cfg.get("iou_threshold", 0.5)), cfg.score_thr).reshape(b, c * n)  # type: ignore[arg-type, operator]
        labels = (arange_like(scores[0]) // n).long()[None, :].expand(b, -1)
        return top_detections(boxes, torch.where(keep, scores, -1.0), labels, cfg.max_per_img)

    # ------------------------------------------------------------------ mask branch

    def _masks(self, feats: tuple[Tensor, ...], dets: Tensor, labels: Tensor, images: Tensor,
               image_sizes: Tensor | None) -> Tensor:
        b, n = labels.shape
        flat_labels = labels.reshape(-1)
        used = (flat_labels >= 0).nonzero()[:, 0]  # the mask head runs on the detections only
        boxes = dets[..., :4].reshape(-1, 4)[used]
        batch = (arange_like(dets[:, 0, 0])[:, None] + torch.zeros_like(dets[:, :, 0])).reshape(-1)[used]
        stage_probs = []
        for stage in self.stages:  # a cascade averages its stages' probabilities
            logits = stage.mask_head(_roi_features(stage.mask_roi_extractor, feats, batch, boxes))  # type: ignore[arg-type, operator]  # (D, C|1, M, M)
            m = logits.shape[-1]
            channel = flat_labels[used] if logits.shape[1] > 1 else torch.zeros_like(flat_labels[used])
            stage_probs.append(logits.gather(1, channel[:, None, None, None].expand(-1, 1, m, m))[:, 0].sigmoid())
        probs = stage_probs[0] if len(stage_probs) == 1 else torch.stack(stage_probs).mean(dim=0)  # (D, M, M)
        ys = arange_like(images[0, 0, :, 0])
        xs = arange_like(images[0, 0, 0, :])
        wy = axis_weights(boxes[:, 1], boxes[:, 3], ys, m)  # (D, H, M)
        wx = axis_weights(boxes[:, 0], boxes[:, 2], xs, m)  # (D, W, M)
        pasted = torch.matmul(torch.matmul(wy, probs), wx.transpose(1, 2))  # (D, H, W)
        thr = self.rcnn_cfg.mask_thr_binary
        if thr >= 0:
            pasted = pasted >= thr
        if image_sizes is not None:  # eager pastes at the image's own size: nothing beyond it
            hw = image_sizes.to(ys.dtype).index_select(0, batch.long())  # (D, 2)
            inside = (ys[None, :] < hw[:, :1])[:, :, None] & (xs[None, :] < hw[:, 1:])[:, None, :]  # (D, H, W)
            pasted = pasted & inside if thr >= 0 else pasted * inside.to(pasted.dtype)
        blank = torch.zeros_like(images[0, :1]).to(pasted.dtype).expand(b * n, -1, -1)  # unused rows: 0 / False
        out = blank.index_put((used,), pasted)
        return out.reshape(b, n, out.shape[1], out.shape[2])
