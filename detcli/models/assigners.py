"""Label assignment of priors to ground-truth boxes (mmdet 2.x ``MaxIoUAssigner``, ``ATSSAssigner``).

Assignment codes (:class:`AssignResult`):

- ``gt_inds == IGNORE (-1)``: the prior counts neither as positive nor as negative;
- ``gt_inds == NEGATIVE (0)``: background;
- ``gt_inds == k >= 1``: positive, matched to ground-truth box ``k - 1`` (1-based).

The work is done by :meth:`MaxIoUAssigner.assign_batch`, vectorised over a batch of images with
ground truth padded to a common count; :meth:`MaxIoUAssigner.assign` is the one-image form.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from detcli.registry import MATCHERS
from detcli.structures import box_overlaps

IGNORE = -1
NEGATIVE = 0


class BatchAssigner(Protocol):
    """The interface of a batch assigner (``train_cfg.assigner`` of a dense head, RPN or RoI head).

    ``assign_batch(priors, gt_bboxes, gt_valid, gt_bboxes_ignore, ignore_valid, prior_valid, *,
    num_level_priors, pred_bboxes, pred_scores) -> (gt_inds (Tensor[B, N]), max_overlaps (Tensor[B, N]))``
    with the codes of :class:`AssignResult`. ``num_level_priors`` (how many of the ``N`` priors each
    pyramid level holds, in order) is given by heads whose priors come from levels (ATSS picks its
    candidates per level); ``pred_bboxes (Tensor[B, N, 4])`` / ``pred_scores (Tensor[B, N, C])`` are
    given only to an assigner whose ``needs_predictions`` is True (decoding them costs time).
    """

    #: the caller must pass ``pred_bboxes`` and ``pred_scores``
    needs_predictions: bool

    def assign_batch(
        self,
        priors: Tensor,
        gt_bboxes: Tensor,
        gt_valid: Tensor,
        gt_bboxes_ignore: Tensor | None = None,
        ignore_valid: Tensor | None = None,
        prior_valid: Tensor | None = None,
        *,
        num_level_priors: Sequence[int] | None = None,
        pred_bboxes: Tensor | None = None,
        pred_scores: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]: ...


@dataclass
class AssignResult:
    """Result of assigning ``N`` priors to ``num_gts`` ground-truth boxes.

    Attributes:
        num_gts: number of ground-truth boxes (the padded count for batched results).
        gt_inds (Tensor[N] or Tensor[B, N]): int64, ``-1`` ignore, ``0`` negative, ``k`` GT ``k - 1``.
        max_overlaps (Tensor[N] or Tensor[B, N]): IoU of each prior with its best GT.
        labels (Tensor[N] or Tensor[B, N] or None): class of the assigned GT, ``-1`` when unassigned.
    """

    num_gts: int
    gt_inds: Tensor
    max_overlaps: Tensor
    labels: Tensor | None = None

    @property
    def num_preds(self) -> int:
        return self.gt_inds.shape[-1]

    def add_gt_(self, gt_labels: Tensor) -> None:
        """Prepend the GT boxes themselves as positive predictions (one image only)."""
        self_inds = torch.arange(1, len(gt_labels) + 1, dtype=torch.long, device=gt_labels.device)
        self.gt_inds = torch.cat([self_inds, self.gt_inds])
        self.max_overlaps = torch.cat([self.max_overlaps.new_ones(len(gt_labels)), self.max_overlaps])
        if self.labels is not None:
            self.labels = torch.cat([gt_labels, self.labels])


@MATCHERS.register()
class MaxIoUAssigner:
    """Assign each prior to the GT it overlaps most, by IoU thresholds (mmdet 2.x semantics).

    Steps, in order:

    1. every prior starts as ``IGNORE``;
    2. priors whose IoF with an ignore box exceeds ``ignore_iof_thr`` (> 0) keep ``IGNORE``;
    3. priors whose best IoU is in ``[0, neg_iou_thr)`` (or inside a ``(lo, hi)`` tuple) become ``NEGATIVE``;
    4. priors whose best IoU is ``>= pos_iou_thr`` take that GT;
    5. with ``match_low_quality``, each GT takes the priors of its highest IoU (all ties when
       ``gt_max_assign_all``) if that IoU is ``>= min_pos_iou``; later GTs win over earlier ones.

    Priors between the thresholds therefore stay ignored. An image without GT is all negative.

    Args:
        pos_iou_thr: IoU for a positive.
        neg_iou_thr: IoU below which a prior is negative, or a ``(lo, hi)`` range.
        min_pos_iou: minimum IoU for a low-quality match.
        gt_max_assign_all: a GT takes every prior tied at its highest IoU.
        ignore_iof_thr: IoF with ignore boxes above which a prior is ignored (``-1``: off).
        ignore_wrt_candidates: IoF relative to the prior's area (True) or the ignore box's area.
        match_low_quality: enable step 5.
        gpu_assign_thr: with more GTs than this (``> 0``), the overlaps are computed on the CPU.

    Example:
        >>> a = MaxIoUAssigner(0.5, 0.5)
        >>> a.assign(torch.tensor([[0., 0, 10, 10], [10, 10, 20, 20]]), torch.tensor([[0., 0, 10, 9]])).gt_inds
        tensor([1, 0])
    """

    #: IoU alone decides: no predicted boxes or scores needed (:class:`BatchAssigner`)
    needs_predictions = False

    def __init__(
        self,
        pos_iou_thr: float,
        neg_iou_thr: float | tuple[float, float],
        min_pos_iou: float = 0.0,
        gt_max_assign_all: bool = True,
        ignore_iof_thr: float = -1,
        ignore_wrt_candidates: bool = True,
        match_low_quality: bool = True,
        gpu_assign_thr: int = -1,
    ) -> None:
        if isinstance(neg_iou_thr, (list, tuple)):
            if len(neg_iou_thr) != 2:
                raise ValueError(f"neg_iou_thr as a range needs (lo, hi), got {neg_iou_thr!r}")
            neg_iou_thr = (float(neg_iou_thr[0]), float(neg_iou_thr[1]))
        self.pos_iou_thr = float(pos_iou_thr)
        self.neg_iou_thr = neg_iou_thr
        self.min_pos_iou = float(min_pos_iou)
        self.gt_max_assign_all = gt_max_assign_all
        self.ignore_iof_thr = float(ignore_iof_thr)
        self.ignore_wrt_candidates = ignore_wrt_candidates
        self.match_low_quality = match_low_quality
        self.gpu_assign_thr = gpu_assign_thr

    @torch.no_grad()
    def assign(self, bboxes: Tensor, gt_bboxes: Tensor, gt_bboxes_ignore: Tensor | None = None,
               gt_labels: Tensor | None = None) -> AssignResult:
        """Assign the priors of one image.

        Args:
            bboxes (Tensor[N, 4]): priors (x1, y1, x2, y2).
            gt_bboxes (Tensor[G, 4]): ground truth (x1, y1, x2, y2).
            gt_bboxes_ignore (Tensor[K, 4]): regions to ignore (crowd), or None.
            gt_labels (Tensor[G]): classes of ``gt_bboxes``; fills ``AssignResult.labels``.

        Returns:
            AssignResult with ``(N,)`` tensors.
        """
        g = gt_bboxes.shape[0]
        gt_valid = torch.ones(1, g, dtype=torch.bool, device=bboxes.device)
        ignore = None if gt_bboxes_ignore is None else gt_bboxes_ignore[None]
        gt_inds, max_overlaps = self.assign_batch(bboxes, gt_bboxes[None], gt_valid, ignore)
        labels = None
        if gt_labels is not None:
            labels = torch.full_like(gt_inds[0], -1)
            pos = gt_inds[0] > 0
            labels[pos] = gt_labels[gt_inds[0][pos] - 1]
        return AssignResult(g, gt_inds[0], max_overlaps[0], labels)

    @torch.no_grad()
    def assign_batch(
        self,
        priors: Tensor,
        gt_bboxes: Tensor,
        gt_valid: Tensor,
        gt_bboxes_ignore: Tensor | None = None,
        ignore_valid: Tensor | None = None,
        prior_valid: Tensor | None = None,
        *,
        num_level_priors: Sequence[int] | None = None,
        pred_bboxes: Tensor | None = None,
        pred_scores: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Assign priors shared by ``B`` images to their padded ground truth in one pass.

        Args:
            priors (Tensor[N, 4] or Tensor[B, N, 4]): priors (x1, y1, x2, y2), the same for every
                image, or per image (proposals padded to ``N``; mark the padding in ``prior_valid``).
            gt_bboxes (Tensor[B, G, 4]): ground truth, padded to ``G`` per image.
            gt_valid (Tensor[B, G]): bool, False on padding.
            gt_bboxes_ignore (Tensor[B, K, 4]): ignore regions padded to ``K``, or None.
            ignore_valid (Tensor[B, K]): bool, False on padding (default: all valid).
            prior_valid (Tensor[B, N]): bool, False for priors outside the image; they are ignored.
            num_level_priors: priors per pyramid level (the :class:`BatchAssigner` interface); when
                given they must sum to ``N``. IoU assignment does not use the levels otherwise.
            pred_bboxes, pred_scores: predictions (:class:`BatchAssigner`); unused here.

        Returns:
            gt_inds (Tensor[B, N]) int64 codes as in :class:`AssignResult`, and max_overlaps (Tensor[B, N]).
        """
        b, g = gt_bboxes.shape[:2]
        n = priors.shape[-2]
        device = priors.device
        if num_level_priors is not None and sum(num_level_priors) != n:
            raise ValueError(f"num_level_priors {list(num_level_priors)} sum to {sum(num_level_priors)}, "
                             f"but there are {n} priors")
        if g == 0 or n == 0 or not bool(gt_valid.any()):
            gt_inds = torch.zeros((b, n), dtype=torch.long, device=device)
            if prior_valid is not None:
                gt_inds[~prior_valid] = IGNORE
            return gt_inds, torch.zeros((b, n), dtype=priors.dtype, device=device)
        on_cpu = self.gpu_assign_thr > 0 and g > self.gpu_assign_thr
        if on_cpu:
            priors, gt_bboxes, gt_valid = priors.cpu(), gt_bboxes.cpu(), gt_valid.cpu()
            gt_bboxes_ignore = None if gt_bboxes_ignore is None else gt_bboxes_ignore.cpu()
            ignore_valid = None if ignore_valid is None else ignore_valid.cpu()
            prior_valid = None if prior_valid is None else prior_valid.cpu()
        pri = priors if priors.dim() == 3 else priors[None].expand(b, n, 4)  # (B, N, 4)
        overlaps = box_overlaps(gt_bboxes, pri)  # (B, G, N)
        overlaps.masked_fill_(~gt_valid[:, :, None], -1.0)
        # priors outside the image and priors inside ignore regions: IoU -1 with every GT
        excluded = None if prior_valid is None else ~prior_valid  # (B, N)
        if self.ignore_iof_thr > 0 and gt_bboxes_ignore is not None and gt_bboxes_ignore.shape[1] > 0:
            if self.ignore_wrt_candidates:
                iof = box_overlaps(pri, gt_bboxes_ignore, mode="iof")  # (B, N, K)
            else:
                iof = box_overlaps(gt_bboxes_ignore, pri, mode="iof").transpose(1, 2)  # (B, N, K)
            if ignore_valid is not None:
                iof = iof.masked_fill(~ignore_valid[:, None, :], 0.0)
            in_ignore = iof.amax(dim=2) > self.ignore_iof_thr  # (B, N)
            excluded = in_ignore if excluded is None else excluded | in_ignore
        if excluded is not None:
            overlaps.masked_fill_(excluded[:, None, :], -1.0)
        max_overlaps, argmax = overlaps.max(dim=1)  # (B, N)
        gt_inds = torch.full((b, n), IGNORE, dtype=torch.long, device=overlaps.device)
        # negatives: best IoU in [0, neg_iou_thr) or inside the (lo, hi) range
        if isinstance(self.neg_iou_thr, tuple):
            lo, hi = self.neg_iou_thr
            gt_inds[(max_overlaps >= lo) & (max_overlaps < hi)] = NEGATIVE
        else:
            gt_inds[(max_overlaps >= 0) & (max_overlaps < self.neg_iou_thr)] = NEGATIVE
        # positives: best IoU >= pos_iou_thr
        pos = max_overlaps >= self.pos_iou_thr
        gt_inds[pos] = argmax[pos] + 1
        # low-quality matches: every GT takes its best priors; later GTs win ties
        if self.match_low_quality:
            gt_max = overlaps.amax(dim=2)  # (B, G)
            allowed = gt_valid & (gt_max >= self.min_pos_iou)  # (B, G)
            if self.gt_max_assign_all:
                best = (overlaps == gt_max[:, :, None]) & allowed[:, :, None]  # (B, G, N)
            else:
                best = torch.zeros_like(overlaps, dtype=torch.bool)
                best.scatter_(2, overlaps.argmax(dim=2, keepdim=True), True)
                best &= allowed[:, :, None]
            order = torch.arange(1, g + 1, device=overlaps.device, dtype=torch.long)  # (G,)
            last = (best.long() * order[None, :, None]).amax(dim=1)  # (B, N), 0: none
            gt_inds = torch.where(last > 0, last, gt_inds)
        # images without ground truth: all negative (except excluded priors)
        no_gt = ~gt_valid.any(dim=1)  # (B,)
        if bool(no_gt.any()):
            gt_inds[no_gt] = NEGATIVE
            max_overlaps[no_gt] = 0.0
            if prior_valid is not None:
                gt_inds[no_gt[:, None] & ~prior_valid] = IGNORE
        if on_cpu:
            gt_inds, max_overlaps = gt_inds.to(device), max_overlaps.to(device)
        return gt_inds, max_overlaps

    def __repr__(self) -> str:
        return (f"MaxIoUAssigner(pos_iou_thr={self.pos_iou_thr}, neg_iou_thr={self.neg_iou_thr}, "
                f"min_pos_iou={self.min_pos_iou}, ignore_iof_thr={self.ignore_iof_thr})")


#: distance standing for "this prior lies in an ignore region" (mmdet's ``INF``)
_IGNORED_DISTANCE = 1e8


@MATCHERS.register()
class ATSSAssigner:
    """Adaptive training sample selection (Zhang et al., 2020), mmdet 2.x semantics.

    For every ground-truth box:

    1. on each pyramid level, the ``topk`` priors whose centres are closest to the box centre
       (Euclidean) are candidates (all of a level's priors when it has fewer);
    2. the IoU threshold is the mean plus the (unbiased) standard deviation of the candidates' IoUs;
    3. a candidate is positive when its IoU is ``>=`` the threshold and its centre lies strictly inside
       the box, more than 0.01 from every side.

    A prior positive for several boxes goes to the one it overlaps most (the first of equal IoUs).
    Everything else is negative. With ``ignore_iof_thr > 0``, priors whose IoF with an ignore box
    exceeds it are ``IGNORE`` and rank last in step 1 (distance 1e8, as in mmdet); they still count
    as candidates when a level has no others, and a positive result overrides the ignore. An image
    without ground truth is all negative (its ignore boxes are not applied, as in mmdet). Priors
    marked invalid (``prior_valid``: outside the padded image's feature map) are ``IGNORE`` and take
    no part, as if they were not there.

    Args:
        topk: candidates per level and GT.
        ignore_iof_thr: IoF with ignore boxes above which a prior is ignored (``<= 0``: off).
        alpha: mmdet's prediction-cost variant (DDOD); only None is supported.

    Example:
        >>> priors = torch.tensor([[0., 0, 8, 8], [8, 0, 16, 8], [16, 0, 24, 8]])
        >>> ATSSAssigner(topk=3).assign(priors, torch.tensor([[0., 0, 9, 9]]), num_level_priors=[3]).gt_inds
        tensor([1, 0, 0])
    """

    #: IoU and centres alone decide (:class:`BatchAssigner`)
    needs_predictions = False

    def __init__(self, topk: int = 9, ignore_iof_thr: float = -1, alpha: float | None = None) -> None:
        if int(topk) < 1:
            raise ValueError(f"ATSSAssigner topk must be >= 1, got {topk}")
        if alpha is not None:
            raise ValueError("ATSSAssigner alpha (the prediction-cost variant of DDOD) is not supported; use null")
        self.topk = int(topk)
        self.ignore_iof_thr = float(ignore_iof_thr)

    @torch.no_grad()
    def assign(self, bboxes: Tensor, gt_bboxes: Tensor, gt_bboxes_ignore: Tensor | None = None,
               gt_labels: Tensor | None = None, *, num_level_priors: Sequence[int] | None = None) -> AssignResult:
        """Assign the priors of one image (``num_level_priors`` default: one level)."""
        g = gt_bboxes.shape[0]
        gt_valid = torch.ones(1, g, dtype=torch.bool, device=bboxes.device)
        ignore = None if gt_bboxes_ignore is None else gt_bboxes_ignore[None]
        levels = [bboxes.shape[0]] if num_level_priors is None else num_level_priors
        gt_inds, max_overlaps = self.assign_batch(bboxes, gt_bboxes[None], gt_valid, ignore,
                                                  num_level_priors=levels)
        labels = None
        if gt_labels is not None:
            labels = torch.full_like(gt_inds[0], -1)
            pos = gt_inds[0] > 0
            labels[pos] = gt_labels[gt_inds[0][pos] - 1]
        return AssignResult(g, gt_inds[0], max_overlaps[0], labels)

    @torch.no_grad()
    def assign_batch(
        self,
        priors: Tensor,
        gt_bboxes: Tensor,
        gt_valid: Tensor,
        gt_bboxes_ignore: Tensor | None = None,
        ignore_valid: Tensor | None = None,
        prior_valid: Tensor | None = None,
        *,
        num_level_priors: Sequence[int] | None = None,
        pred_bboxes: Tensor | None = None,
        pred_scores: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Assign priors shared by ``B`` images to their padded ground truth.

        Args:
            priors (Tensor[N, 4]): anchors (x1, y1, x2, y2) of all levels, level by level.
            gt_bboxes (Tensor[B, G, 4]), gt_valid (Tensor[B, G]): padded ground truth.
            gt_bboxes_ignore (Tensor[B, K, 4]), ignore_valid (Tensor[B, K]): padded ignore regions.
            prior_valid (Tensor[B, N]): bool, False for priors to leave out (they are ``IGNORE``).
            num_level_priors: priors per level (required), summing to ``N``.
            pred_bboxes, pred_scores: unused (:class:`BatchAssigner`).

        Returns:
            gt_inds (Tensor[B, N]) int64 codes as in :class:`AssignResult`, and max_overlaps
            (Tensor[B, N]): the IoU with the assigned GT for positives, 0 elsewhere.
        """
        if priors.dim() != 2:
            raise ValueError(f"ATSSAssigner needs priors shared by the batch (N, 4), got {tuple(priors.shape)}")
        if num_level_priors is None:
            raise ValueError("ATSSAssigner needs num_level_priors (priors per pyramid level)")
        b, g = gt_bboxes.shape[:2]
        n = priors.shape[0]
        device = priors.device
        if sum(num_level_priors) != n:
            raise ValueError(f"num_level_priors {list(num_level_priors)} sum to {sum(num_level_priors)}, "
                             f"but there are {n} priors")
        gt_inds = torch.zeros((b, n), dtype=torch.long, device=device)
        max_overlaps = priors.new_zeros((b, n))
        if g == 0 or n == 0 or not bool(gt_valid.any()):
            if prior_valid is not None:
                gt_inds[~prior_valid] = IGNORE
            return gt_inds, max_overlaps
        overlaps = box_overlaps(priors[None].expand(b, n, 4), gt_bboxes)  # (B, N, G)
        # centre distances (B, N, G)
        gt_centres = torch.stack(((gt_bboxes[..., 0] + gt_bboxes[..., 2]) / 2.0,
                                  (gt_bboxes[..., 1] + gt_bboxes[..., 3]) / 2.0), dim=-1)  # (B, G, 2)
        pcx = (priors[:, 0] + priors[:, 2]) / 2.0
        pcy = (priors[:, 1] + priors[:, 3]) / 2.0
        prior_centres = torch.stack((pcx, pcy), dim=1)  # (N, 2)
        distances = (prior_centres[None, :, None, :] - gt_centres[:, None, :, :]).pow(2).sum(-1).sqrt()
        if self.ignore_iof_thr > 0 and gt_bboxes_ignore is not None and gt_bboxes_ignore.shape[1] > 0:
            iof = box_overlaps(priors[None].expand(b, n, 4), gt_bboxes_ignore, mode="iof")  # (B, N, K)
            if ignore_valid is not None:
                iof = iof.masked_fill(~ignore_valid[:, None, :], 0.0)
            in_ignore = iof.amax(dim=2) > self.ignore_iof_thr  # (B, N)
            distances = distances.masked_fill(in_ignore[:, :, None], _IGNORED_DISTANCE)
            gt_inds[in_ignore] = IGNORE
        partial = prior_valid is not None and not bool(prior_valid.all())
        if partial:
            # left-out priors rank after everything, then drop out of the candidates below
            distances = distances.masked_fill(~prior_valid[:, :, None], math.inf)  # type: ignore[index]
        # 1. per level the topk closest priors per GT
        cand_idx = []
        start = 0
        for count in num_level_priors:
            if count > 0:
                _, idx = distances[:, start:start + count].topk(min(self.topk, count), dim=1, largest=False)
                cand_idx.append(idx + start)
            start += count
        cand = torch.cat(cand_idx, dim=1)  # (B, K, G)
        cand_overlaps = overlaps.gather(1, cand)  # (B, K, G)
        # 2. threshold mean + std of the candidates' IoUs
        if partial:
            cand_ok = prior_valid.gather(1, cand.flatten(1)).view_as(cand)  # type: ignore[union-attr]  # (B, K, G)
            count = cand_ok.sum(dim=1).to(overlaps.dtype)  # type: ignore[assignment]  # (B, G)
            mean = (cand_overlaps * cand_ok).sum(dim=1) / count
            var = (((cand_overlaps - mean[:, None]) ** 2) * cand_ok).sum(dim=1) / (count - 1)
            thr = mean + var.sqrt()
        else:
            cand_ok = None
            thr = cand_overlaps.mean(dim=1) + cand_overlaps.std(dim=1)  # (B, G)
        is_pos = cand_overlaps >= thr[:, None, :]  # (B, K, G)
        # 3. candidates' centres strictly inside the GT
        ccx, ccy = pcx[cand], pcy[cand]  # (B, K, G)
        sides = torch.stack((ccx - gt_bboxes[:, None, :, 0], ccy - gt_bboxes[:, None, :, 1],
                             gt_bboxes[:, None, :, 2] - ccx, gt_bboxes[:, None, :, 3] - ccy), dim=-1)
        is_pos &= sides.amin(dim=-1) > 0.01
        is_pos &= gt_valid[:, None, :]
        if cand_ok is not None:
            is_pos &= cand_ok
        # a prior positive for several GTs takes the one of highest IoU (first of ties)
        pos_overlaps = torch.full_like(overlaps, -math.inf)  # (B, N, G)
        pos_overlaps.scatter_(1, cand, torch.where(is_pos, cand_overlaps, -math.inf))
        best, argbest = pos_overlaps.max(dim=2)  # (B, N)
        pos = best != -math.inf
        gt_inds = torch.where(pos, argbest + 1, gt_inds)
        max_overlaps = torch.where(pos, best, max_overlaps)
        no_gt = ~gt_valid.any(dim=1)  # (B,): all negative, ignore regions not applied (mmdet)
        if bool(no_gt.any()):
            gt_inds[no_gt] = NEGATIVE
        if prior_valid is not None:
            gt_inds[~prior_valid] = IGNORE
        return gt_inds, max_overlaps

    def __repr__(self) -> str:
        return f"ATSSAssigner(topk={self.topk}, ignore_iof_thr={self.ignore_iof_thr})"


#: SimOTA's cost of a (prior, GT) pair outside the GT's box-and-centre region
SIMOTA_INF = 100000.0
#: added to the IoU inside SimOTA's ``-log`` IoU cost
SIMOTA_EPS = 1e-7


@MATCHERS.register()
class SimOTAAssigner:
    """YOLOX's SimOTA: dynamic-k matching of priors to GTs by a cost of predictions (mmdet 2.x semantics).

    For one image, with priors ``(x, y, stride_w, stride_h)`` (cell centres), predicted boxes and
    scores (``sqrt(sigmoid(cls) * sigmoid(obj))``):

    1. candidates: priors inside some GT box or inside some GT's centre region (the square of
       half-side ``center_radius * stride`` around the GT centre; strict inequalities); the others are
       negative;
    2. cost (candidate, GT) = ``cls_weight * BCE(score, one-hot(label)).sum() + iou_weight * -log(IoU +
       1e-7)``, plus 1e5 when the prior is not inside both the GT box and its centre region;
    3. each GT takes ``k`` candidates of lowest cost, ``k = max(int(sum of its top-min(candidate_topk,
       #candidates) IoUs), 1)`` (dynamic k);
    4. a prior taken by several GTs goes to the GT of least cost among all GTs (first on ties).

    ``max_overlaps`` holds each positive's IoU with its GT (the IoU-aware classification target), 0
    elsewhere. An image without GT (or without candidates) is all negative.

    Args:
        center_radius: half-side of the centre region, in strides.
        candidate_topk: IoUs summed for the dynamic k.
        iou_weight, cls_weight: weights of the two costs.
        iou_calculator: accepted for mmdet compatibility; only ``BboxOverlaps2D``.
    """

    #: the cost needs predicted boxes and scores (:class:`BatchAssigner`)
    needs_predictions = True

    def __init__(self, center_radius: float = 2.5, candidate_topk: int = 10, iou_weight: float = 3.0,
                 cls_weight: float = 1.0, iou_calculator: dict | None = None) -> None:
        if iou_calculator is not None and dict(iou_calculator).get("type", "BboxOverlaps2D") != "BboxOverlaps2D":
            raise ValueError(f"SimOTAAssigner iou_calculator must be BboxOverlaps2D, got {iou_calculator!r}")
        self.center_radius = float(center_radius)
        self.candidate_topk = int(candidate_topk)
        self.iou_weight = float(iou_weight)
        self.cls_weight = float(cls_weight)

    @torch.no_grad()
    def assign_batch(
        self,
        priors: Tensor,
        gt_bboxes: Tensor,
        gt_valid: Tensor,
        gt_bboxes_ignore: Tensor | None = None,
        ignore_valid: Tensor | None = None,
        prior_valid: Tensor | None = None,
        *,
        num_level_priors: Sequence[int] | None = None,
        pred_bboxes: Tensor | None = None,
        pred_scores: Tensor | None = None,
        gt_labels: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Assign the priors of ``B`` images (one image at a time: the matching is sequential).

        Args:
            priors (Tensor[N, 4]): ``(x, y, stride_w, stride_h)`` points (cell centres).
            gt_bboxes (Tensor[B, G, 4]), gt_valid (Tensor[B, G]): padded ground truth.
            gt_bboxes_ignore, ignore_valid, prior_valid: not used (SimOTA has no ignore regions).
            pred_bboxes (Tensor[B, N, 4]): decoded predictions; pred_scores (Tensor[B, N, C]):
                predicted probabilities (required).
            gt_labels (Tensor[B, G]): classes of ``gt_bboxes`` (required).

        Returns:
            gt_inds (Tensor[B, N]) int64 (0 negative, ``k`` GT ``k - 1``) and max_overlaps (Tensor[B, N]).
        """
        if pred_bboxes is None or pred_scores is None or gt_labels is None:
            raise ValueError("SimOTAAssigner needs pred_bboxes, pred_scores and gt_labels")
        b, n = pred_bboxes.shape[:2]
        gt_inds = torch.zeros((b, n), dtype=torch.long, device=pred_bboxes.device)
        overlaps = pred_bboxes.new_zeros((b, n))
        for i in range(b):
            keep = gt_valid[i]
            inds, ious = self.assign_single(priors, gt_bboxes[i][keep], gt_labels[i][keep], pred_bboxes[i],
                                            pred_scores[i])
            # back to padded GT indices
            padded = keep.nonzero(as_tuple=True)[0]
            pos = inds > 0
            gt_inds[i][pos] = padded[inds[pos] - 1] + 1
            overlaps[i] = ious
        return gt_inds, overlaps

    def assign_single(self, priors: Tensor, gt_bboxes: Tensor, gt_labels: Tensor, pred_bboxes: Tensor,
                      pred_scores: Tensor) -> tuple[Tensor, Tensor]:
        """One image: ``gt_inds (N,)`` (0 negative, ``k``: GT ``k - 1``) and IoUs ``(N,)`` of positives."""
        n, g = pred_bboxes.shape[0], gt_bboxes.shape[0]
        gt_inds = torch.zeros(n, dtype=torch.long, device=pred_bboxes.device)
        overlaps = pred_bboxes.new_zeros(n)
        if g == 0 or n == 0:
            return gt_inds, overlaps
        valid, in_both = self.candidates(priors, gt_bboxes)  # (N,), (V, G)
        num_valid = int(valid.sum())
        if num_valid == 0:
            return gt_inds, overlaps
        ious = box_overlaps(pred_bboxes[valid], gt_bboxes)  # (V, G)
        scores = pred_scores[valid]  # (V, C)
        onehot = torch.nn.functional.one_hot(gt_labels.long(), scores.shape[-1]).to(scores.dtype)  # (G, C)
        cls_cost = torch.nn.functional.binary_cross_entropy(
            scores[:, None, :].expand(-1, g, -1), onehot[None].expand(num_valid, -1, -1), reduction="none").sum(-1)
        cost = cls_cost * self.cls_weight + (-torch.log(ious + SIMOTA_EPS)) * self.iou_weight \
            + (~in_both).to(ious.dtype) * SIMOTA_INF  # (V, G)
        match, matched_ious = self.dynamic_k_matching(cost, ious)  # (V,) GT index or -1, (V,)
        valid_inds = valid.nonzero(as_tuple=True)[0]
        fg = match >= 0
        gt_inds[valid_inds[fg]] = match[fg] + 1
        overlaps[valid_inds[fg]] = matched_ious[fg]
        return gt_inds, overlaps

    def candidates(self, priors: Tensor, gt_bboxes: Tensor) -> tuple[Tensor, Tensor]:
        """``valid (N,)``: inside some GT box or centre region; ``in_both (V, G)`` for the valid priors:
        inside the GT box and its centre region."""
        x, y = priors[:, 0:1], priors[:, 1:2]  # (N, 1)
        sx, sy = priors[:, 2:3], priors[:, 3:4]
        x1, y1, x2, y2 = gt_bboxes.unbind(-1)  # (G,)
        in_box = torch.stack([x - x1, y - y1, x2 - x, y2 - y], dim=1).amin(dim=1) > 0  # (N, G)
        cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
        r = self.center_radius
        in_ctr = torch.stack([x - (cx - r * sx), y - (cy - r * sy), (cx + r * sx) - x, (cy + r * sy) - y],
                             dim=1).amin(dim=1) > 0  # (N, G)
        valid = in_box.any(dim=1) | in_ctr.any(dim=1)
        return valid, in_box[valid] & in_ctr[valid]

    def dynamic_k_matching(self, cost: Tensor, ious: Tensor) -> tuple[Tensor, Tensor]:
        """Dynamic-k matching of a ``(V, G)`` cost: per candidate the GT index (``-1``: none) and its IoU."""
        v, g = cost.shape
        matching = torch.zeros((v, g), dtype=torch.bool, device=cost.device)
        topk_ious = torch.topk(ious, min(self.candidate_topk, v), dim=0).values  # (k, G)
        dynamic_ks = torch.clamp(topk_ious.sum(0).int(), min=1)  # (G,)
        for j in range(g):
            pos = torch.topk(cost[:, j], k=int(dynamic_ks[j]), largest=False).indices
            matching[pos, j] = True
        multiple = matching.sum(1) > 1
        if bool(multiple.any()):
            cheapest = cost[multiple].argmin(dim=1)  # over all GTs
            matching[multiple] = False
            matching[multiple.nonzero(as_tuple=True)[0], cheapest] = True
        fg = matching.any(dim=1)
        match = torch.where(fg, matching.to(torch.uint8).argmax(dim=1), -1)
        matched_ious = (matching.to(ious.dtype) * ious).sum(1)
        return match, matched_ious

    def __repr__(self) -> str:
        return (f"SimOTAAssigner(center_radius={self.center_radius}, candidate_topk={self.candidate_topk}, "
                f"iou_weight={self.iou_weight}, cls_weight={self.cls_weight})")
