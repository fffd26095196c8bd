"""The dense-head template: one post-processing path for every single-stage head.

A head (:class:`RetinaHead <detcli.models.retinanet.RetinaHead>`, :class:`FCOSHead
<detcli.models.fcos.FCOSHead>`, ...) subclasses :class:`BaseDenseHead` and describes itself once:

- ``forward(feats)`` -> raw outputs, a tuple of groups, each a list over levels of ``(B, A * k_g, H_l,
  W_l)`` maps; group 0 holds the class logits (``k_0 = num_classes``). ``output_kinds`` names the
  groups and ``output_channels`` gives their ``k_g`` (per prior).
- ``prior_generator`` and ``level_priors(...)``: the priors of each level, ``(H_l * W_l * A, d)`` in prior
  order (anchors ``d = 4``, points ``d = 2``); ``grid_to_priors`` maps the generator's grid to them.
- ``level_scores(level, outputs) -> LevelScores``: what ranks the level's (prior, class) pairs, and
  per-prior score factors (e.g. centerness).
- ``decode_level(level, priors, outputs, max_shape) -> boxes`` for the selected priors.
- ``loss(feats, images, targets, train_cfg)``.

The template then runs, for eager inference (:meth:`BaseDenseHead.predict`, which test-time
augmentation also calls once per view) and for the ONNX graph (:meth:`BaseDenseHead.export`), the same
steps through :func:`level_candidates`: per level and image the top ``nms_pre`` (prior, class) pairs
whose ranking value is ``> score_thr`` (``> logit(score_thr)`` for logits), their final scores
(sigmoid of a logit, times the score factor), their boxes (decoded, clipped); then class-aware (or
agnostic) NMS and the best ``max_per_img``. Only two steps take another form in the graph, where
shapes must not depend on data: the candidates are a fixed ``nms_pre`` columns with a validity mask
(:func:`~detcli.models.export_ops.topk_padded`), and NMS is ONNX ``NonMaxSuppression``
(:func:`~detcli.models.export_ops.nms_keep`). A head on this template is exportable by construction.

Tie-breaking at the top-k boundary follows ``torch.topk`` (equal values: either may be kept);
the score threshold is strict (a score equal to ``score_thr`` is dropped).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from detcli.models.dense_utils import logit_threshold, nms_detections, prior_pad_shape, select_candidates
from detcli.models.detector import DenseTestConfig, DenseTrainConfig
from detcli.models.export_ops import (
    clip_to_input,
    clip_to_sizes,
    gather_padded,
    grid_priors,
    nms_keep,
    per_prior,
    top_detections,
    topk_padded,
)
from detcli.structures import Detections, GroundTruth, ImageBatch


@dataclass(frozen=True)
class LevelScores:
    """How one level's (prior, class) pairs are ranked and scored.

    Attributes:
        ranking (Tensor[B, N, C]): the values thresholded and top-k'd per level.
        logits: ``ranking`` holds logits: the threshold is ``logit(score_thr)`` and the final score
            ``sigmoid(value)``; otherwise the threshold is ``score_thr`` and the score the value itself.
        factors (Tensor[B, N] or None): per-prior factors the final score is multiplied by after the
            selection (mmdet's ``score_factors``, e.g. FCOS's centerness probability).
        labels (Tensor[B, N] or None): one candidate per prior (YOLOX: its best class): ``ranking`` is
            ``(B, N, 1)`` and these are the candidates' classes; None: every (prior, class) pair.
        inclusive: a value equal to the threshold passes (``>= score_thr``, YOLOX); else ``>``.
    """

    ranking: Tensor
    logits: bool = True
    factors: Tensor | None = None
    labels: Tensor | None = None
    inclusive: bool = False

    def threshold(self, score_thr: float) -> float:
        """The bound ``ranking`` values must exceed (or reach, ``inclusive``; ``-inf``: none)."""
        if self.inclusive and not self.logits:
            return score_thr
        if self.logits:
            return logit_threshold(score_thr)
        return score_thr if score_thr > 0 else -math.inf


@dataclass(frozen=True)
class Candidates:
    """One level's selected candidates: ``boxes (B, P, 4)``, ``scores (B, P)`` (``-1`` on unused
    columns of the export form) and ``labels (B, P)`` int64."""

    boxes: Tensor
    scores: Tensor
    labels: Tensor


def level_candidates(head: BaseDenseHead, level: int, outputs: Sequence[Tensor], priors: Tensor,
                     score_thr: float, nms_pre: int, max_shape: tuple[int, int] | None,
                     padded: bool) -> Candidates:
    """The candidates of one level: top ``nms_pre`` pairs above the threshold, scored and decoded.

    Args:
        head: the head (its ``level_scores`` and ``decode_level`` hooks).
        outputs: the level's raw output groups, each ``(B, N, k_g)`` in prior order.
        priors (Tensor[N, d]): the level's priors.
        max_shape: ``(H, W)`` the head's coder clips to (eager, one image), or None (export: the
            caller clips to the input).
        padded: the export form: ``B`` images at once, exactly ``nms_pre`` columns (``nms_pre > 0``;
            else all pairs), unused ones with score ``-1``. Otherwise ``B`` must be 1 and only the
            pairs above the threshold are kept (at most ``nms_pre``; ``<= 0``: all).
    """
    scores = head.level_scores(level, outputs)
    thr = scores.threshold(score_thr)
    b, _, num_classes = scores.ranking.shape
    if padded:
        # fixed-size top-k over all pairs, then the threshold as a mask
        vals, idx = topk_padded(scores.ranking.flatten(1), nms_pre)  # (B, k)
        prior_inds, labels = idx // num_classes, idx % num_classes
        if scores.inclusive:
            valid = vals >= thr
        else:
            valid = vals > thr if math.isfinite(thr) else vals > -math.inf

        def take(x: Tensor) -> Tensor:  # (B, N, k) -> (B, P, k)
            return gather_padded(x, prior_inds, nms_pre)
    else:
        # keep the top candidates above the threshold
        inds, labels, vals = select_candidates(scores.ranking[0], thr, nms_pre, inclusive=scores.inclusive)  # (P,)
        labels, vals, valid = labels[None], vals[None], None

        def take(x: Tensor) -> Tensor:
            return x[:, inds]
    if scores.labels is not None:  # one candidate per prior: its class comes with the scores
        labels = take(scores.labels[..., None])[..., 0]
    final = vals.sigmoid() if scores.logits else vals  # (B, P)
    if scores.factors is not None:
        final = final * take(scores.factors[..., None])[..., 0]
    selected_priors = take(priors[None].expand(b, -1, -1))  # (B, P, d)
    boxes = head.decode_level(level, selected_priors, [take(o) for o in outputs[1:]], max_shape)  # (B, P, 4)
    if valid is not None:
        final = torch.where(valid, final, -1.0)
    return Candidates(boxes, final, labels)


class BaseDenseHead(nn.Module):
    """Base of single-stage (dense) heads: the hooks a head implements and the shared
    post-processing (see the module doc). One level below ``nn.Module``; no other base.

    Subclasses set ``num_classes``, ``output_kinds`` and ``prior_generator`` and implement
    ``forward``, ``output_channels``, ``level_priors``, ``level_scores``, ``decode_level`` and
    ``loss``.
    """

    num_classes: int
    #: names of ``forward``'s output groups; raw export outputs are ``{kind}_{level}``
    output_kinds: tuple[str, ...] = ("cls_score", "bbox_pred")
    #: the export graph clips boxes to the input (eager: ``decode_level``'s ``max_shape``); False for
    #: heads whose boxes are not clipped (YOLOX)
    clip_boxes: bool = True

    # ------------------------------------------------------------------ hooks

    @property
    def num_levels(self) -> int:
        return int(self.prior_generator.num_levels)  # type: ignore[arg-type, union-attr]

    @property
    def output_channels(self) -> tuple[int, ...]:
        """Channels per prior of each output group (group 0: ``num_classes``)."""
        raise NotImplementedError

    def loss(self, feats: tuple[Tensor, ...], images: ImageBatch, targets: list[GroundTruth],
             train_cfg: DenseTrainConfig) -> dict[str, Tensor]:
        raise NotImplementedError

    def level_priors(self, featmap_sizes: list[tuple[int, int]], dtype: torch.dtype, device: torch.device,
                     images: ImageBatch) -> list[Tensor]:
        """Per level the priors ``(N_l, d)`` of a batch (eager; heads usually cache them)."""
        levels = self.prior_generator.grid_priors(featmap_sizes, dtype=dtype, device=device,  # type: ignore[operator, union-attr]
                                                  pad_shape=prior_pad_shape(self.prior_generator, images))
        return [self.grid_to_priors(p) for p in levels]

    def grid_to_priors(self, grid: Tensor) -> Tensor:
        """The head's priors from its generator's grid of one level (identity by default)."""
        return grid

    def level_scores(self, level: int, outputs: Sequence[Tensor]) -> LevelScores:
        """Ranking values and score factors of a level from its output groups ``(B, N, k_g)``."""
        raise NotImplementedError

    def decode_level(self, level: int, priors: Tensor, outputs: Sequence[Tensor],
                     max_shape: tuple[int, int] | None) -> Tensor:
        """Boxes ``(B, P, 4)`` (x1, y1, x2, y2) of selected priors ``(B, P, d)`` from their rows of the
        output groups 1.. ``(B, P, k_g)``, clipped to ``max_shape`` when given (by the coder's rule)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ template

    def export_level_priors(self, cls_scores: Sequence[Tensor], images: Tensor) -> list[Tensor]:
        """:meth:`level_priors` traced from the maps' shapes (and the input's, for generators that
        ``uses_pad_shape``), so an export graph accepts any input size."""
        return [self.grid_to_priors(grid_priors(c, self.prior_generator, level, images))
                for level, c in enumerate(cls_scores)]

    def flat_outputs(self, outs: Sequence[Sequence[Tensor]], level: int,
                     image: int | None = None) -> list[Tensor]:
        """The output groups of ``level`` as ``(B, N, k_g)`` (``image``: that image only, ``B = 1``)."""
        maps = [group[level] if image is None else group[level][image:image + 1] for group in outs]
        return [per_prior(m, k) for m, k in zip(maps, self.output_channels)]

    def predict(self, feats: tuple[Tensor, ...], images: ImageBatch, test_cfg: DenseTestConfig) -> list[Detections]:
        """Detections per image: per level top ``nms_pre`` candidates above ``score_thr``, scored and
        decoded, then class-aware NMS and the best ``max_per_img``."""
        return self.postprocess(self(feats), images, test_cfg)

    def postprocess(self, outs: Sequence[Sequence[Tensor]], images: ImageBatch,
                    test_cfg: DenseTestConfig) -> list[Detections]:
        """:meth:`predict` from raw outputs ``outs`` (``forward``'s)."""
        cls_scores = outs[0]
        sizes = [tuple(c.shape[-2:]) for c in cls_scores]
        priors_per_level = self.level_priors(sizes, cls_scores[0].dtype, cls_scores[0].device, images)  # type: ignore[arg-type]
        results = []
        for i, image_size in enumerate(images.image_sizes):
            parts = [level_candidates(self, level, self.flat_outputs(outs, level, i), priors,
                                      test_cfg.score_thr, test_cfg.nms_pre, image_size, padded=False)
                     for level, priors in enumerate(priors_per_level)]
            results.append(nms_detections(
                torch.cat([p.boxes[0] for p in parts]), torch.cat([p.scores[0] for p in parts]),
                torch.cat([p.labels[0] for p in parts]), image_size, test_cfg.iou_threshold,
                test_cfg.class_agnostic, test_cfg.max_per_img, test_cfg.min_bbox_size, test_cfg.drop_empty_boxes))
        return results

    def export(self, outs: Sequence[Sequence[Tensor]], images: Tensor, test_cfg: DenseTestConfig,
               nms_pre: int, max_output_boxes_per_class: int,
               image_sizes: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The export form of :meth:`postprocess` (traceable, dynamic shapes).

        Args:
            outs: ``forward``'s raw outputs for ``images``.
            images (Tensor[B, 3, H, W]): the graph input (boxes are clipped to its ``(H, W)``).
            nms_pre: candidates per level (``<= 0``: all).
            max_output_boxes_per_class: ``NonMaxSuppression``'s cap per class and image.
            image_sizes (Tensor[B, 2] | None): ``(h, w)`` of each image's valid region: boxes are clipped
                to it before NMS, as :meth:`postprocess` does (None: to the input's ``(H, W)``).

        Returns:
            dets (Tensor[B, max_per_img, 5]) ``(x1, y1, x2, y2, score)`` sorted by score, zero rows
            when unused; labels (Tensor[B, max_per_img]) int64, ``-1`` when unused.
        """
        cls_scores = outs[0]
        parts = [level_candidates(self, level, self.flat_outputs(outs, level), priors, test_cfg.score_thr,
                                  nms_pre, None, padded=True)
                 for level, priors in enumerate(self.export_level_priors(cls_scores, images))]
        boxes = torch.cat([p.boxes for p in parts], dim=1)  # (B, K, 4)
        if self.clip_boxes:
            boxes = clip_to_input(boxes, images) if image_sizes is None else clip_to_sizes(boxes, image_sizes)
        scores = torch.cat([p.scores for p in parts], dim=1)  # (B, K)
        labels = torch.cat([p.labels for p in parts], dim=1)  # (B, K)
        # drop small boxes (and, with drop_empty_boxes, flat ones: mmdet 3.x)
        if test_cfg.min_bbox_size > 0 or (test_cfg.drop_empty_boxes and test_cfg.min_bbox_size >= 0):
            wh = boxes[..., 2:] - boxes[..., :2]
            scores = torch.where((wh[..., 0] > test_cfg.min_bbox_size) & (wh[..., 1] > test_cfg.min_bbox_size),
                                 scores, -1.0)
        # class-aware NMS: one score row per class, -1 off the candidate's class
        if test_cfg.class_agnostic:
            class_scores = scores[:, None, :]  # (B, 1, K)
        else:
            classes = torch.arange(self.num_classes, device=labels.device)
            class_scores = torch.where(labels[:, None, :] == classes[None, :, None], scores[:, None, :], -1.0)  # (B, C, K)
        keep = nms_keep(boxes, class_scores, max_output_boxes_per_class, test_cfg.iou_threshold, 0.0)
        return top_detections(boxes, torch.where(keep, scores, -1.0), labels, test_cfg.max_per_img)
