"""PASCAL VOC style evaluation: per-class AP at an IoU threshold (``mAP``) and proposal recall (``recall``).

MMDetection 2.x semantics (``mmdet.core.evaluation.mean_ap`` / ``recall``), our own vectorised code:

- Matching (:func:`tpfp_default`): in each image, detections of a class are visited by decreasing
  score; each takes the ground-truth box of its class with the highest IoU. IoU ``>= iou_thr`` and
  that box not yet taken: true positive; already taken: false positive; an *ignore* box (VOC
  ``difficult``): neither. IoU below the threshold: false positive. With ``scale_ranges`` a
  ground-truth box outside the area range counts as ignored, and an unmatched detection outside
  it is not counted at all.
- Precision/recall per class over all images (detections sorted by score, ties in image order),
  ``recall = cumTP / num_gts``, ``precision = cumTP / (cumTP + cumFP)``.
- :func:`average_precision`: ``area`` (area under the max-to-the-right precision envelope; VOC2012)
  or ``11points`` (mean of the best precision at recall >= 0, 0.1, ..., 1; VOC2007).
- mAP is the mean AP over the classes that have ground truth (``num_gts > 0``).
- ``use_legacy_coordinate``: widths and heights are ``x2 - x1 + 1`` (mmdet 1.x; VOC evaluation
  in mmdet 2.x uses it, since VOC boxes are inclusive pixel indices).

Detections and annotations are in original image coordinates.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detcli.errors import ConfigError

logger = logging.getLogger(__name__)

#: AP modes of :func:`average_precision`.
AP_MODES: tuple[str, ...] = ("area", "11points")

#: Recall thresholds of the ``11points`` mode (mmdet's ``np.arange(0, 1 + 1e-3, 0.1)``).
_ELEVEN_POINTS = np.arange(0, 1 + 1e-3, 0.1)

_EPS = np.finfo(np.float32).eps

#: ``(tp, fp)`` per image for one class: ``fn(det_bboxes (k, 5), gt_bboxes (n, 4), gt_bboxes_ignore (m, 4),
#: iou_thr=, area_ranges=, use_legacy_coordinate=) -> (tp (S, k), fp (S, k))``.
TpFpFn = Callable[..., tuple[np.ndarray, np.ndarray]]


# --------------------------------------------------------------------------- primitives


def bbox_overlaps(bboxes1: np.ndarray, bboxes2: np.ndarray, mode: str = "iou", eps: float = 1e-6,
                  use_legacy_coordinate: bool = False) -> np.ndarray:
    """IoU (or IoF: intersection over the area of ``bboxes1``) between two sets of xyxy boxes, in float32.

    Args:
        bboxes1: ``(n, 4+)``; columns after the fourth (a score) are ignored.
        bboxes2: ``(k, 4+)``.
        mode: ``iou`` or ``iof``.
        eps: lower bound of the denominator.
        use_legacy_coordinate: widths are ``x2 - x1 + 1``.

    Returns:
        ``(n, k)`` float32.

    Example:
        >>> bbox_overlaps(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 20], [10, 0, 20, 10]]))
        array([[0.5, 0. ]], dtype=float32)
    """
    if mode not in ("iou", "iof"):
        raise ValueError(f"unknown overlap mode {mode!r} (allowed: iou, iof)")
    b1, b2 = _box_array(bboxes1), _box_array(bboxes2)
    if len(b1) == 0 or len(b2) == 0:
        return np.zeros((len(b1), len(b2)), dtype=np.float32)
    extra = np.float32(1.0 if use_legacy_coordinate else 0.0)
    area1 = (b1[:, 2] - b1[:, 0] + extra) * (b1[:, 3] - b1[:, 1] + extra)  # (n,)
    area2 = (b2[:, 2] - b2[:, 0] + extra) * (b2[:, 3] - b2[:, 1] + extra)  # (k,)
    w = np.maximum(np.minimum(b1[:, None, 2], b2[None, :, 2]) - np.maximum(b1[:, None, 0], b2[None, :, 0]) + extra, 0)
    h = np.maximum(np.minimum(b1[:, None, 3], b2[None, :, 3]) - np.maximum(b1[:, None, 1], b2[None, :, 1]) + extra, 0)
    overlap = w * h  # (n, k)
    union = area1[:, None] + area2[None, :] - overlap if mode == "iou" else np.broadcast_to(area1[:, None], overlap.shape)
    return (overlap / np.maximum(union, np.float32(eps))).astype(np.float32)


def _box_array(boxes: Any) -> np.ndarray:
    """``(n, 4)`` float32 view of ``(n, 4+)`` boxes (an empty input of any shape gives ``(0, 4)``)."""
    b = np.asarray(boxes, dtype=np.float32)
    if b.size == 0:
        return np.zeros((0, 4), np.float32)
    return b.reshape(-1, b.shape[-1])[:, :4]


def _areas(boxes: np.ndarray, extra: float) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0] + extra) * (boxes[:, 3] - boxes[:, 1] + extra)


def average_precision(recalls: np.ndarray, precisions: np.ndarray, mode: str = "area") -> Any:
    """AP of one precision-recall curve (1-D inputs, returns a float) or of several (2-D ``(S, N)``, returns ``(S,)``).

    Args:
        recalls: cumulative recall per detection, ``(N,)`` or ``(S, N)``.
        precisions: cumulative precision, same shape.
        mode: ``area`` (area under the max-to-the-right precision envelope) or ``11points``.

    Example:
        >>> round(average_precision(np.array([0.5, 1.0]), np.array([1.0, 0.5])), 6)
        0.75
        >>> round(average_precision(np.array([0.5, 1.0]), np.array([1.0, 0.5]), "11points"), 6)
        0.772727
    """
    if mode not in AP_MODES:
        raise ConfigError(f"AP mode '{mode}' is unknown (choose: {', '.join(AP_MODES)})")
    rec = np.asarray(recalls)
    prec = np.asarray(precisions)
    if rec.shape != prec.shape or rec.ndim not in (1, 2):
        raise ValueError(f"recalls {rec.shape} and precisions {prec.shape} must have the same 1-D or 2-D shape")
    single = rec.ndim == 1
    if single:
        rec, prec = rec[None, :], prec[None, :]
    num_scales = rec.shape[0]
    ap = np.zeros(num_scales, dtype=np.float32)
    if mode == "area":
        zeros = np.zeros((num_scales, 1), dtype=rec.dtype)
        mrec = np.hstack((zeros, rec, np.ones((num_scales, 1), dtype=rec.dtype)))
        mpre = np.hstack((zeros, prec, zeros))
        mpre = np.maximum.accumulate(mpre[:, ::-1], axis=1)[:, ::-1]  # precision envelope
        step = mrec[:, 1:] - mrec[:, :-1]
        for i in range(num_scales):
            changed = step[i] != 0
            ap[i] = np.sum(step[i][changed] * mpre[i, 1:][changed])
    else:
        for thr in _ELEVEN_POINTS:  # accumulate in float32, threshold by threshold, like mmdet
            best = np.where(rec >= thr, prec, -np.inf).max(axis=1, initial=-np.inf)
            ap += np.where(np.isfinite(best), best, 0).astype(np.float32)
        ap /= 11
    return float(ap[0]) if single else ap


# --------------------------------------------------------------------------- matching


def _tpfp(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, gt_boxes: np.ndarray, gt_labels: np.ndarray,
          gt_ignore: np.ndarray, iou_thr: float, area_ranges: Sequence[tuple[float | None, float | None]],
          extra: float) -> tuple[np.ndarray, np.ndarray]:
    """TP/FP flags ``(S, D)`` of one image's detections, all classes at once (a detection only
    matches ground truth of its own label), in the detections' given order."""
    num_dets = len(boxes)
    tp = np.zeros((len(area_ranges), num_dets), dtype=np.float32)
    fp = np.zeros((len(area_ranges), num_dets), dtype=np.float32)
    if num_dets == 0:
        return tp, fp
    if len(gt_boxes):
        ious = bbox_overlaps(boxes, gt_boxes, use_legacy_coordinate=bool(extra))  # (D, G)
        ious = np.where(labels[:, None] == gt_labels[None, :], ious, np.float32(-1))
        best = ious.max(axis=1)
        best_gt = ious.argmax(axis=1)
        gt_areas = _areas(gt_boxes, extra)
    else:
        best = np.full(num_dets, -np.inf, dtype=np.float32)
        best_gt = np.zeros(num_dets, dtype=np.int64)
        gt_areas = np.zeros(0, dtype=np.float32)
    order = np.argsort(-scores, kind="stable")  # the visiting order
    matched = best >= iou_thr
    det_areas = _areas(boxes, extra)
    for k, (lo, hi) in enumerate(area_ranges):
        skip = gt_ignore if lo is None else gt_ignore | (gt_areas < lo) | (gt_areas >= hi)
        counted = matched & ~skip[best_gt] if len(gt_boxes) else matched
        visit = order[counted[order]]  # counted detections by decreasing score
        _, first = np.unique(best_gt[visit], return_index=True)  # the first to take each box is the TP
        is_tp = np.zeros(num_dets, dtype=bool)
        is_tp[visit[first]] = True
        unmatched = ~matched
        if lo is not None:
            unmatched &= (det_areas >= lo) & (det_areas < hi)
        tp[k, is_tp] = 1
        fp[k, (counted & ~is_tp) | unmatched] = 1
    return tp, fp


def _area_ranges(scale_ranges: Sequence[Sequence[float]] | None) -> list[tuple[float | None, float | None]]:
    if scale_ranges is None:
        return [(None, None)]
    out: list[tuple[float | None, float | None]] = []
    for rg in scale_ranges:
        if len(rg) != 2 or not rg[0] <= rg[1]:
            raise ConfigError(f"scale_ranges: each range is (min, max) with min <= max, got {list(rg)}")
        out.append((float(rg[0]) ** 2, float(rg[1]) ** 2))
    return out


def tpfp_default(det_bboxes: np.ndarray, gt_bboxes: np.ndarray, gt_bboxes_ignore: np.ndarray | None = None,
                 iou_thr: float = 0.5, area_ranges: Sequence[tuple[float, float]] | None = None,
                 use_legacy_coordinate: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """True/false positives of one class in one image (mmdet ``tpfp_default``).

    Args:
        det_bboxes: ``(k, 5)`` boxes with the score in the last column.
        gt_bboxes: ``(n, 4)``.
        gt_bboxes_ignore: ``(m, 4)`` boxes whose matches count as neither TP nor FP.
        iou_thr: IoU needed to match.
        area_ranges: ``[(min_area, max_area), ...]`` (areas, not sides) or None.

    Returns:
        ``(tp, fp)``, each ``(num_scales, k)`` float32 in the order of ``det_bboxes``.

    Example:
        >>> gt = np.array([[0, 0, 10, 10]])
        >>> tpfp_default(np.array([[0, 0, 10, 10, .9], [0, 0, 10, 10, .8]]), gt)
        (array([[1., 0.]], dtype=float32), array([[0., 1.]], dtype=float32))
    """
    dets = np.asarray(det_bboxes, dtype=np.float32).reshape(-1, 5)
    gts = np.asarray(gt_bboxes, dtype=np.float32).reshape(-1, 4)
    ign = np.zeros((0, 4), np.float32) if gt_bboxes_ignore is None else np.asarray(gt_bboxes_ignore, np.float32).reshape(-1, 4)
    ranges = [(None, None)] if area_ranges is None else [(float(a), float(b)) for a, b in area_ranges]
    return _tpfp(dets[:, :4], dets[:, 4], np.zeros(len(dets), np.int64), np.vstack((gts, ign)),
                 np.zeros(len(gts) + len(ign), np.int64),
                 np.concatenate((np.zeros(len(gts), bool), np.ones(len(ign), bool))),
                 iou_thr, ranges, 1.0 if use_legacy_coordinate else 0.0)


# --------------------------------------------------------------------------- eval_map


@dataclass
class _Image:
    """One image's detections and ground truth as flat arrays (labels ``0..C-1``)."""

    boxes: np.ndarray  # (D, 4)
    scores: np.ndarray  # (D,)
    labels: np.ndarray  # (D,)
    gt_boxes: np.ndarray  # (G, 4): kept boxes, then ignore boxes
    gt_labels: np.ndarray  # (G,)
    gt_ignore: np.ndarray  # (G,) bool


def _gt_arrays(ann: dict[str, Any], index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        boxes = np.asarray(ann["bboxes"], dtype=np.float32).reshape(-1, 4)
        labels = np.asarray(ann["labels"], dtype=np.int64).reshape(-1)
    except KeyError as e:
        raise ValueError(f"annotations[{index}] lacks {e.args[0]!r} (needs bboxes, labels)") from None
    if len(boxes) != len(labels):
        raise ValueError(f"annotations[{index}]: {len(boxes)} bboxes but {len(labels)} labels")
    ign = ann.get("bboxes_ignore")
    ign_labels = ann.get("labels_ignore")
    if ign is None or ign_labels is None:  # mmdet: ignore boxes without labels are not used
        ign = np.zeros((0, 4), np.float32)
        ign_labels = np.zeros(0, np.int64)
    ign = np.asarray(ign, dtype=np.float32).reshape(-1, 4)
    ign_labels = np.asarray(ign_labels, dtype=np.int64).reshape(-1)
    if len(ign) != len(ign_labels):
        raise ValueError(f"annotations[{index}]: {len(ign)} bboxes_ignore but {len(ign_labels)} labels_ignore")
    return (np.vstack((boxes, ign)), np.concatenate((labels, ign_labels)),
            np.concatenate((np.zeros(len(boxes), bool), np.ones(len(ign), bool))))


def image_record(boxes: Any, scores: Any, labels: Any, ann: dict[str, Any], index: int) -> _Image:
    """One image's record from its detections and its ground truth (``annotations[index]``)."""
    return _Image(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32).reshape(-1),
                  np.asarray(labels, np.int64).reshape(-1), *_gt_arrays(ann, index))


def _images_from_mmdet(det_results: Sequence[Sequence[np.ndarray]], annotations: Sequence[dict[str, Any]]
                       ) -> tuple[list[_Image], int]:
    if len(det_results) != len(annotations):
        raise ValueError(f"{len(det_results)} images of detections but {len(annotations)} annotations")
    num_classes = len(det_results[0]) if det_results else 0
    images = []
    for i, (per_class, ann) in enumerate(zip(det_results, annotations)):
        if len(per_class) != num_classes:
            raise ValueError(f"det_results[{i}] has {len(per_class)} classes, det_results[0] has {num_classes}")
        arrays = [np.asarray(d, dtype=np.float32).reshape(-1, 5) for d in per_class]
        dets = np.vstack(arrays) if arrays else np.zeros((0, 5), np.float32)
        labels = np.repeat(np.arange(num_classes), [len(a) for a in arrays])
        images.append(_Image(dets[:, :4], dets[:, 4], labels, *_gt_arrays(ann, i)))
    return images, num_classes


def eval_images(images: Sequence[_Image], num_classes: int, scale_ranges: Sequence[Sequence[float]] | None,
                 iou_thr: float, mode: str, tpfp_fn: TpFpFn | None, use_legacy_coordinate: bool
                 ) -> tuple[Any, list[dict[str, Any]]]:
    area_ranges = _area_ranges(scale_ranges)
    extra = 1.0 if use_legacy_coordinate else 0.0
    num_scales = len(area_ranges)
    tps, fps, scores, labels = [], [], [], []
    num_gts = np.zeros((num_classes, num_scales), dtype=np.int64)
    for img in images:
        keep = ~img.gt_ignore
        kept_labels = img.gt_labels[keep]
        if kept_labels.size and (kept_labels.min() < 0 or kept_labels.max() >= num_classes):
            raise ValueError(f"a ground-truth label is outside 0..{num_classes - 1}")
        if scale_ranges is None:
            num_gts[:, 0] += np.bincount(kept_labels, minlength=num_classes)[:num_classes]
        else:
            areas = _areas(img.gt_boxes[keep], extra)
            for k, (lo, hi) in enumerate(area_ranges):
                inside = (areas >= lo) & (areas < hi)
                num_gts[:, k] += np.bincount(kept_labels[inside], minlength=num_classes)[:num_classes]
        if tpfp_fn is None:
            tp, fp = _tpfp(img.boxes, img.scores, img.labels, img.gt_boxes, img.gt_labels, img.gt_ignore,
                           iou_thr, area_ranges, extra)
            tps.append(tp)
            fps.append(fp)
            scores.append(img.scores)
            labels.append(img.labels)
            continue
        for c in np.unique(img.labels):
            sel = img.labels == c
            gt_sel = img.gt_labels == c
            det = np.hstack((img.boxes[sel], img.scores[sel, None])).astype(np.float32)
            tp, fp = tpfp_fn(det, img.gt_boxes[gt_sel & ~img.gt_ignore], img.gt_boxes[gt_sel & img.gt_ignore],
                             iou_thr=iou_thr, area_ranges=None if scale_ranges is None else area_ranges,
                             use_legacy_coordinate=use_legacy_coordinate)
            tps.append(np.asarray(tp, np.float32).reshape(num_scales, -1))
            fps.append(np.asarray(fp, np.float32).reshape(num_scales, -1))
            scores.append(img.scores[sel])
            labels.append(img.labels[sel])
    all_tp = np.hstack(tps) if tps else np.zeros((num_scales, 0), np.float32)
    all_fp = np.hstack(fps) if fps else np.zeros((num_scales, 0), np.float32)
    all_scores = np.concatenate(scores) if scores else np.zeros(0, np.float32)
    all_labels = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    if all_labels.size and (all_labels.min() < 0 or all_labels.max() >= num_classes):
        raise ValueError(f"a detection label is outside 0..{num_classes - 1}")
    order = np.lexsort((-all_scores, all_labels))  # by class, then decreasing score; stable (image order on ties)
    bounds = np.searchsorted(all_labels[order], np.arange(num_classes + 1))
    results = []
    for c in range(num_classes):
        sel = order[bounds[c]:bounds[c + 1]]
        tp = np.cumsum(all_tp[:, sel], axis=1)
        fp = np.cumsum(all_fp[:, sel], axis=1)
        recalls = tp / np.maximum(num_gts[c][:, None], _EPS)
        precisions = tp / np.maximum(tp + fp, _EPS)
        gts: Any = num_gts[c].copy()
        if scale_ranges is None:
            recalls, precisions, gts = recalls[0], precisions[0], int(gts[0])
        results.append({"num_gts": gts, "num_dets": int(len(sel)), "recall": recalls, "precision": precisions,
                        "ap": average_precision(recalls, precisions, mode)})
    if scale_ranges is None:
        aps = [r["ap"] for r in results if r["num_gts"] > 0]
        return (float(np.array(aps).mean()) if aps else 0.0), results
    all_ap = np.vstack([r["ap"] for r in results]).reshape(num_classes, num_scales)
    all_gts = np.vstack([r["num_gts"] for r in results]).reshape(num_classes, num_scales)
    return [float(all_ap[all_gts[:, k] > 0, k].mean()) if np.any(all_gts[:, k] > 0) else 0.0
            for k in range(num_scales)], results


def _ap_mode(dataset: Any, mode: str | None) -> str:
    if mode is None:
        return "11points" if dataset == "voc07" else "area"
    if mode not in AP_MODES:
        raise ConfigError(f"eval_mode '{mode}' is unknown (choose: {', '.join(AP_MODES)})")
    return mode


def eval_map(
    det_results: Sequence[Sequence[np.ndarray]],
    annotations: Sequence[dict[str, Any]],
    scale_ranges: Sequence[Sequence[float]] | None = None,
    iou_thr: float = 0.5,
    dataset: str | Sequence[str] | None = None,
    tpfp_fn: TpFpFn | None = None,
    use_legacy_coordinate: bool = False,
    mode: str | None = None,
) -> tuple[Any, list[dict[str, Any]]]:
    """Mean AP of detections against ground truth (mmdet ``eval_map``).

    Args:
        det_results: per image, per class an array ``(k, 5)`` of ``x1, y1, x2, y2, score``.
        annotations: per image ``{bboxes (n, 4), labels (n,), bboxes_ignore (m, 4), labels_ignore (m,)}``
            (the ignore entries optional; ignore boxes without ``labels_ignore`` are not used).
        scale_ranges: ``[(min, max), ...]`` side lengths: ``(32, 64)`` is areas in ``[32², 64²)``.
        iou_thr: IoU to match.
        dataset: ``"voc07"`` selects ``11points`` AP, anything else ``area`` (class names are
            accepted, as in mmdet, and change nothing).
        tpfp_fn: per-class, per-image TP/FP function (:func:`tpfp_default` signature); None uses a
            vectorised equivalent of :func:`tpfp_default` over all classes of an image at once.
        use_legacy_coordinate: widths are ``x2 - x1 + 1``.
        mode: ``area`` or ``11points``, overriding the choice made from ``dataset``.

    Returns:
        ``(mean_ap, per_class)``: ``mean_ap`` a float (a list of floats with ``scale_ranges``);
        ``per_class`` dicts ``num_gts``, ``num_dets``, ``recall``, ``precision``, ``ap`` (arrays
        ``(num_scales, ...)`` with ``scale_ranges``).

    Example:
        >>> ann = [{"bboxes": np.array([[0, 0, 10, 10]]), "labels": np.array([0])}]
        >>> eval_map([[np.array([[50, 50, 60, 60, .95], [0, 0, 10, 10, .9]])]], ann)[0]
        0.5
    """
    images, num_classes = _images_from_mmdet(det_results, annotations)
    return eval_images(images, num_classes, scale_ranges, float(iou_thr), _ap_mode(dataset, mode), tpfp_fn,
                        use_legacy_coordinate)


# --------------------------------------------------------------------------- eval_recalls


def _as_array(values: int | float | Sequence[float] | np.ndarray | None, default: Sequence[float], kind: type) -> np.ndarray:
    if values is None:
        return np.asarray(default, dtype=kind)
    return np.atleast_1d(np.asarray(values, dtype=kind))


def _matched_ious(ious: np.ndarray) -> np.ndarray:
    """Greedy one-to-one matching of a ``(G, P)`` IoU matrix: repeatedly take the best remaining
    (gt, proposal) pair. Returns the IoU each ground-truth box got (-1 when proposals ran out)."""
    ious = ious.copy()
    out = np.zeros(ious.shape[0], dtype=np.float32)
    if ious.size == 0:
        return out
    for j in range(ious.shape[0]):
        flat = int(ious.argmax())  # row-major first maximum
        g, p = divmod(flat, ious.shape[1])
        out[j] = ious[g, p]
        ious[g, :] = -1
        ious[:, p] = -1
    return out


def eval_recalls(gts: Sequence[np.ndarray | None], proposals: Sequence[np.ndarray],
                 proposal_nums: int | Sequence[int] | None = None, iou_thrs: float | Sequence[float] = 0.5,
                 use_legacy_coordinate: bool = False) -> np.ndarray:
    """Recall of the top-N proposals of each image at each IoU threshold (mmdet ``eval_recalls``).

    Args:
        gts: per image ``(n, 4)`` ground-truth boxes (None = none).
        proposals: per image ``(k, 4)`` (taken in the given order) or ``(k, 5)`` (sorted by the score column).
        proposal_nums: N values (default ``(100, 300, 1000)``).
        iou_thrs: IoU threshold(s).

    Returns:
        ``(len(proposal_nums), len(iou_thrs))`` float64: the fraction of ground-truth boxes that a
        greedy one-to-one matching covers with IoU ``>= thr``; 0 when there is no ground truth.

    Example:
        >>> eval_recalls([np.array([[0, 0, 10, 10], [20, 20, 30, 30]])], [np.array([[0, 0, 10, 10, .9]])], [1, 2], [0.5])
        array([[0.5],
               [0.5]])
    """
    if len(gts) != len(proposals):
        raise ValueError(f"{len(gts)} images of ground truth but {len(proposals)} of proposals")
    nums = _as_array(proposal_nums, (100, 300, 1000), np.int64)
    thrs = _as_array(iou_thrs, (0.5,), np.float64)
    largest = int(nums.max()) if nums.size else 0
    all_ious = []
    for gt, props in zip(gts, proposals):
        p = np.asarray(props, dtype=np.float32)
        if p.ndim == 2 and p.shape[1] == 5:
            p = p[np.argsort(-p[:, 4], kind="stable")]
        p = _box_array(p)
        p = p[: min(len(p), largest)]
        g = np.zeros((0, 4), np.float32) if gt is None else np.asarray(gt, dtype=np.float32).reshape(-1, 4)
        all_ious.append(bbox_overlaps(g, p, use_legacy_coordinate=use_legacy_coordinate))
    total = sum(len(i) for i in all_ious)
    recalls = np.zeros((len(nums), len(thrs)), dtype=np.float64)
    if total == 0:
        return recalls
    for k, num in enumerate(nums):
        best = np.concatenate([_matched_ious(ious[:, :num]) for ious in all_ious])  # (total,)
        recalls[k] = (best[None, :] >= thrs[:, None]).sum(axis=1) / float(total)
    return recalls


# --------------------------------------------------------------------------- dataset-level VOC metrics


@dataclass(frozen=True)
class ClassAP:
    """One row of the per-class table (mmdet ``print_map_summary``).

    Attributes:
        name: class name.
        num_gts: ground-truth boxes (ignore boxes excluded).
        num_dets: detections of the class.
        recall: recall after the last detection (0 without detections).
        ap: average precision.
    """

    name: str
    num_gts: int
    num_dets: int
    recall: float
    ap: float


@dataclass
class MapTable:
    """Per-class AP at one IoU threshold and one scale range (None = all sizes)."""

    iou_thr: float
    scale_range: tuple[float, float] | None
    mean_ap: float
    rows: list[ClassAP]

    def to_dict(self) -> dict[str, Any]:
        return {
            "iou_thr": self.iou_thr,
            "scale_range": None if self.scale_range is None else list(self.scale_range),
            "mAP": self.mean_ap,
            "classes": [{"class": r.name, "gts": r.num_gts, "dets": r.num_dets, "recall": r.recall, "ap": r.ap}
                        for r in self.rows],
        }


@dataclass
class VocEvaluation:
    """What :func:`evaluate_voc` found.

    Attributes:
        metrics: ``mAP``, ``AP50``, ... (``mAP_32-64``, ``AP50_32-64`` per scale range);
            ``recall@100@0.5``, ... and ``AR@100``, ... with several IoU thresholds.
        tables: per IoU threshold (and scale range), the per-class rows.
        recalls: ``(len(proposal_nums), len(iou_thrs))`` of the ``recall`` metric, or None.
    """

    metrics: dict[str, float] = field(default_factory=dict)
    tables: list[MapTable] = field(default_factory=list)
    recalls: np.ndarray | None = None


#: Metrics of :func:`evaluate_voc` (mmdet's VOCDataset ``evaluate``).
VOC_METRICS: tuple[str, ...] = ("mAP", "recall")


def _range_suffix(rg: tuple[float, float] | None) -> str:
    if rg is None:
        return ""
    return "_" + "-".join(f"{v:g}" for v in rg)


def evaluate_voc(
    detections: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    annotations: Sequence[dict[str, Any]],
    classes: Sequence[str],
    metrics: str | Sequence[str] = ("mAP",),
    *,
    iou_thr: float | Sequence[float] = 0.5,
    scale_ranges: Sequence[Sequence[float]] | None = None,
    proposal_nums: Sequence[int] = (100, 300, 1000),
    eval_mode: str = "area",
    use_legacy_coordinate: bool = False,
) -> VocEvaluation:
    """VOC metrics of a dataset's detections (mmdet ``VOCDataset.evaluate``).

    Args:
        detections: per image ``(boxes (k, 4), scores (k,), labels (k,))`` in original coordinates.
        annotations: per image ground truth (``get_ann_info``), original coordinates.
        classes: class names in label order.
        metrics: ``mAP`` and/or ``recall``.
        iou_thr: one threshold or a list: ``AP50``, ``AP75``, ... per threshold, ``mAP`` their mean
            (``recall@N@thr`` per threshold and ``AR@N`` their mean for ``recall``).
        scale_ranges: also report ``AP50_32-64``-style keys (and tables) per ``(min, max)`` side range.
        proposal_nums: N of ``recall@N`` (all boxes of an image, class-agnostic, by score).
        eval_mode: ``area`` or ``11points``.
        use_legacy_coordinate: widths ``x2 - x1 + 1`` (VOC's inclusive pixel boxes).
    """
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    for name in names:
        if name not in VOC_METRICS:
            raise ConfigError(f"metric '{name}' is not a VOC metric (choose: {', '.join(VOC_METRICS)})")
    if eval_mode not in AP_MODES:
        raise ConfigError(f"eval_mode '{eval_mode}' is unknown (choose: {', '.join(AP_MODES)})")
    if len(detections) != len(annotations):
        raise ValueError(f"{len(detections)} images of detections but {len(annotations)} annotations")
    thrs = [float(iou_thr)] if isinstance(iou_thr, (int, float)) else [float(t) for t in iou_thr]
    if not thrs:
        raise ConfigError("iou_thr: give at least one IoU threshold")
    out = VocEvaluation()
    if "mAP" in names:
        images = [image_record(b, s, lb, ann, i) for i, ((b, s, lb), ann) in enumerate(zip(detections, annotations))]
        ranges: list[tuple[float, float] | None] = [None]
        if scale_ranges:
            ranges += [(float(a), float(b)) for a, b in scale_ranges]
        means: dict[tuple[float, float] | None, list[float]] = {rg: [] for rg in ranges}
        for thr in thrs:
            mean_all, per_class = eval_images(images, len(classes), None, thr, eval_mode, None, use_legacy_coordinate)
            results = [(None, mean_all, per_class, None)]
            if scale_ranges:
                mean_rg, per_rg = eval_images(images, len(classes), scale_ranges, thr, eval_mode, None,
                                               use_legacy_coordinate)
                results += [(rg, mean_rg[k], per_rg, k) for k, rg in enumerate(ranges[1:])]  # type: ignore[misc]
            for rg, mean_ap, per, k in results:
                rows = []
                for name, r in zip(classes, per):
                    rec = r["recall"] if k is None else r["recall"][k]
                    rows.append(ClassAP(str(name), int(r["num_gts"] if k is None else r["num_gts"][k]), r["num_dets"],
                                        float(rec[-1]) if rec.size else 0.0,
                                        float(r["ap"] if k is None else r["ap"][k])))
                out.tables.append(MapTable(thr, rg, float(mean_ap), rows))
                out.metrics[f"AP{int(thr * 100):02d}{_range_suffix(rg)}"] = float(mean_ap)
                means[rg].append(float(mean_ap))
        summary = {f"mAP{_range_suffix(rg)}": sum(v) / len(v) for rg, v in means.items()}
        out.metrics = {**summary, **out.metrics}  # mAP first, as mmdet
    if "recall" in names:
        nums = [int(n) for n in proposal_nums]
        gts = [np.asarray(ann["bboxes"], np.float32).reshape(-1, 4) for ann in annotations]
        props = [np.hstack((np.asarray(b, np.float32).reshape(-1, 4), np.asarray(s, np.float32).reshape(-1, 1)))
                 for b, s, _ in detections]
        recalls = eval_recalls(gts, props, nums, thrs, use_legacy_coordinate=use_legacy_coordinate)
        out.recalls = recalls
        for i, num in enumerate(nums):
            for j, thr in enumerate(thrs):
                out.metrics[f"recall@{num}@{thr}"] = float(recalls[i, j])
        if recalls.shape[1] > 1:
            for i, num in enumerate(nums):
                out.metrics[f"AR@{num}"] = float(recalls[i].mean())
    return out


def format_map_table(table: MapTable) -> str:
    """A :class:`MapTable` as mmdet's ``print_map_summary`` table (plain text).

    Example:
        >>> print(format_map_table(MapTable(0.5, None, 0.5, [ClassAP("cat", 2, 3, 1.0, 0.5)])))
        +-------+-----+------+--------+-------+
        | class | gts | dets | recall | ap    |
        +-------+-----+------+--------+-------+
        | cat   | 2   | 3    | 1.000  | 0.500 |
        +-------+-----+------+--------+-------+
        | mAP   |     |      |        | 0.500 |
        +-------+-----+------+--------+-------+
    """
    header = ["class", "gts", "dets", "recall", "ap"]
    body = [[r.name, str(r.num_gts), str(r.num_dets), f"{r.recall:.3f}", f"{r.ap:.3f}"] for r in table.rows]
    foot = ["mAP", "", "", "", f"{table.mean_ap:.3f}"]
    widths = [max(len(row[i]) for row in [header, foot, *body]) for i in range(len(header))]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(cells: list[str]) -> str:
        return "|" + "|".join(f" {c:<{w}} " for c, w in zip(cells, widths)) + "|"

    return "\n".join([rule, line(header), rule, *(line(r) for r in body), rule, line(foot), rule])


def table_title(table: MapTable) -> str:
    """``IoU 0.5`` or ``IoU 0.5, scale range (32, 64)``: what a :class:`MapTable` covers."""
    title = f"IoU {table.iou_thr:g}"
    if table.scale_range is not None:
        title += f", scale range ({table.scale_range[0]:g}, {table.scale_range[1]:g})"
    return title
