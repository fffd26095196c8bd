"""Single-image mAP, the score ``det analyze-results`` ranks images by (mmdet ``analyze_results`` semantics).

For one image, at each IoU threshold 0.50, 0.55, ..., 0.95:

- per class that has (non-ignored) ground truth in the image, the detections of that class are taken
  by descending score; each is matched to the ground-truth box it overlaps most (ignored boxes
  included); IoU >= threshold and that box unmatched: true positive; already matched: false positive;
  the box is an ignore region: neither; IoU below the threshold: false positive;
- the class's AP is the area under the precision envelope of its precision-recall points
  (VOC "area" AP), 0 when it has no detection;
- the image's AP at that threshold is the mean over those classes.

The image's mAP is the mean over the ten thresholds. Detections of classes without ground truth in
the image do not lower it (as in mmdet's ``eval_map``). An image without any ground truth scores 1.0
when it has no detection and 0.0 otherwise (mmdet gives such an image 0.0 in both cases).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes ``a (N, 4)`` and ``b (M, 4)`` -> ``(N, M)`` (width = x2 - x1)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, np.finfo(np.float64).eps)


def area_ap(recalls: np.ndarray, precisions: np.ndarray) -> float:
    """Area under the precision envelope ("area" AP of VOC 2010+).

    Example:
        >>> area_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 0.6667]))
        0.83335
    """
    mrec = np.concatenate([[0.0], recalls, [1.0]])
    mpre = np.concatenate([[0.0], precisions, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def _class_ap(det_boxes: np.ndarray, det_scores: np.ndarray, gt_boxes: np.ndarray, gt_ignore: np.ndarray,
              iou_thr: float) -> float:
    num_gts = int((~gt_ignore).sum())
    if len(det_boxes) == 0:
        return 0.0
    order = np.argsort(-det_scores, kind="stable")
    tp = np.zeros(len(order))
    fp = np.zeros(len(order))
    if len(gt_boxes) == 0:
        fp[:] = 1
    else:
        ious = iou_matrix(det_boxes[order], gt_boxes)
        best, arg = ious.max(axis=1), ious.argmax(axis=1)
        covered = np.zeros(len(gt_boxes), dtype=bool)
        for i in range(len(order)):
            if best[i] < iou_thr:
                fp[i] = 1
            elif not gt_ignore[arg[i]]:
                if covered[arg[i]]:
                    fp[i] = 1
                else:
                    covered[arg[i]] = True
                    tp[i] = 1
    tp_cum, fp_cum = np.cumsum(tp), np.cumsum(fp)
    recalls = tp_cum / max(num_gts, 1)
    precisions = tp_cum / np.maximum(tp_cum + fp_cum, np.finfo(np.float64).eps)
    return area_ap(recalls, precisions)


def image_map(gt_boxes: np.ndarray, gt_labels: np.ndarray, det_boxes: np.ndarray, det_scores: np.ndarray,
              det_labels: np.ndarray, ignore_boxes: np.ndarray | None = None,
              iou_thrs: Sequence[float] = tuple(IOU_THRESHOLDS)) -> float:
    """mAP of one image (see the module doc); boxes are xyxy, labels class indices.

    Args:
        gt_boxes (N, 4), gt_labels (N,): ground truth; ignore_boxes (K, 4): ignore regions (any class).
        det_boxes (M, 4), det_scores (M,), det_labels (M,): detections.
        iou_thrs: thresholds averaged over.

    Example:
        >>> gt = np.array([[0., 0, 10, 10]])
        >>> image_map(gt, np.array([0]), gt.copy(), np.array([0.9]), np.array([0]))
        1.0
    """
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    gt_labels = np.asarray(gt_labels, dtype=np.int64).reshape(-1)
    det_boxes = np.asarray(det_boxes, dtype=np.float64).reshape(-1, 4)
    det_scores = np.asarray(det_scores, dtype=np.float64).reshape(-1)
    det_labels = np.asarray(det_labels, dtype=np.int64).reshape(-1)
    ignore = np.zeros((0, 4)) if ignore_boxes is None else np.asarray(ignore_boxes, dtype=np.float64).reshape(-1, 4)
    classes = np.unique(gt_labels)
    if len(classes) == 0:
        return 1.0 if len(det_boxes) == 0 else 0.0
    per_thr = []
    for thr in iou_thrs:
        aps = []
        for c in classes:
            gts = np.concatenate([gt_boxes[gt_labels == c], ignore])
            flags = np.concatenate([np.zeros(int((gt_labels == c).sum()), dtype=bool), np.ones(len(ignore), dtype=bool)])
            sel = det_labels == c
            aps.append(_class_ap(det_boxes[sel], det_scores[sel], gts, flags, float(thr)))
        per_thr.append(float(np.mean(aps)))
    return float(np.mean(per_thr))
