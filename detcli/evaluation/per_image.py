"""Single-image mAP, the score ``det analyze-results`` ranks images by (mmdet ``analyze_results`` semantics).

An image's mAP is the mean, over the IoU thresholds 0.50, 0.55, ..., 0.95, of the VOC-style
:func:`detcli.evaluation.voc.eval_map` ("area" AP, the mean over the classes that have ground truth
in the image) of that image alone, as mmdet's ``bbox_map_eval`` does. So detections of classes
without ground truth in the image do not lower it, and ignore boxes count only with their
``labels_ignore`` (as in ``eval_map``). An image without any ground truth scores 1.0 when it has no
detection and 0.0 otherwise (mmdet gives such an image 0.0 in both cases).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from detcli.evaluation.voc import eval_images, image_record

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)


def image_map(ann: Mapping[str, Any], det_boxes: np.ndarray, det_scores: np.ndarray, det_labels: np.ndarray,
              iou_thrs: Sequence[float] = tuple(IOU_THRESHOLDS)) -> float:
    """mAP of one image (see the module doc).

    Args:
        ann: ``{bboxes (N, 4), labels (N,)}`` xyxy, optionally ``bboxes_ignore``/``labels_ignore``
            (a dataset's ``get_ann_info``).
        det_boxes (M, 4), det_scores (M,), det_labels (M,): detections, xyxy, class indices.
        iou_thrs: thresholds averaged over.

    Example:
        >>> gt = np.array([[0., 0, 10, 10]])
        >>> image_map({"bboxes": gt, "labels": np.array([0])}, gt, np.array([0.9]), np.array([0]))
        1.0
    """
    gt_labels = np.asarray(ann["labels"], dtype=np.int64).reshape(-1)
    boxes = np.asarray(det_boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(det_scores, dtype=np.float32).reshape(-1)
    labels = np.asarray(det_labels, dtype=np.int64).reshape(-1)
    if len(gt_labels) == 0:
        return 1.0 if len(boxes) == 0 else 0.0
    num_classes = int(max(gt_labels.max(), labels.max() if len(labels) else 0)) + 1
    # detections grouped by class (stable), negative labels dropped: eval_map's per-class input, made once
    keep = np.flatnonzero(labels >= 0)
    keep = keep[np.argsort(labels[keep], kind="stable")]
    image = image_record(boxes[keep], scores[keep], labels[keep], dict(ann), 0)
    return float(np.mean([eval_images([image], num_classes, None, float(t), "area", None, False)[0] for t in iou_thrs]))
