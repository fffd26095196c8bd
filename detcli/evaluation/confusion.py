"""Confusion matrix of COCO results against a dataset's ground truth (mmdet's ``confusion_matrix.py``).

Rows are ground-truth classes, columns predicted classes; the last row and column are
*background*. A detection with score ``>= score_thr`` adds one to ``[gt, pred]`` for every
ground-truth box it overlaps with IoU ``>= tp_iou_thr`` (a row other than its own class is a
confusion), or to ``[background, pred]`` when it overlaps none (a false positive). A ground-truth
box that no detection of its own class matched adds one to ``[gt, background]`` (a miss). With
``nms_iou_thr``, each class's detections of an image first go through NMS.

Crowd (ignore) boxes are not ground truth here, as in mmdet. The row-normalized matrix divides
each row by its sum (percent); a row without any count (a class without ground truth) stays 0,
never NaN.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detcli.errors import ConfigError, DatasetError
from detcli.evaluation.files import result_value_problem

logger = logging.getLogger(__name__)

#: How the matrix reads; printed by the CLI and written in the CSV header.
ORIENTATION = "rows: ground truth (last row: background = false positives); columns: predictions (last column: background = missed ground truth)"


@dataclass
class ConfusionMatrix:
    """Attributes:
        classes: class names; ``labels`` adds ``background``.
        counts: ``(C + 1, C + 1)`` int64 raw counts, rows GT, columns predictions.
        num_images: images of the dataset.
        num_detections: result entries at or above the score threshold (before NMS).
    """

    classes: list[str]
    counts: np.ndarray
    num_images: int = 0
    num_detections: int = 0

    @property
    def labels(self) -> list[str]:
        return [*self.classes, "background"]

    def normalized(self) -> np.ndarray:
        """Row-normalized percent; rows without any count are all 0 (no NaN)."""
        sums = self.counts.sum(axis=1, keepdims=True).astype(np.float64)
        return np.divide(self.counts * 100.0, sums, out=np.zeros(self.counts.shape, np.float64), where=sums > 0)

    def to_csv(self, normalized: bool = False) -> str:
        values = self.normalized() if normalized else self.counts
        lines = [f"# {ORIENTATION}", ",".join(["gt \\ pred", *(_csv(c) for c in self.labels)])]
        for name, row in zip(self.labels, values):
            cells = [f"{v:.2f}" for v in row] if normalized else [str(int(v)) for v in row]
            lines.append(",".join([_csv(name), *cells]))
        return "\n".join(lines) + "\n"


def _csv(name: str) -> str:
    return f'"{name}"' if any(c in name for c in ',"\n') else name


def group_results(
    results: Any, image_ids: Sequence[int], cat_ids: Sequence[int], source: str = "results"
) -> dict[int, list[tuple[list[float], float, int]]]:
    """Check COCO results against the dataset; return ``{image_id: [(xywh, score, label), ...]}``.

    Raises:
        DatasetError: not a results list, an entry without bbox/score, an unknown image or category id.
    """
    if isinstance(results, dict):
        hint = " (this looks like a COCO annotation file; pass the results `det test --out` writes)" if "annotations" in results else ""
        raise DatasetError(f"{source}: expected a JSON list of COCO results, got an object{hint}")
    if not isinstance(results, list):
        raise DatasetError(f"{source}: expected a JSON list of COCO results, got {type(results).__name__}")
    images = set(int(i) for i in image_ids)
    label_of = {int(c): k for k, c in enumerate(cat_ids)}
    grouped: dict[int, list[tuple[list[float], float, int]]] = {}
    for i, r in enumerate(results):
        if not isinstance(r, dict) or not {"image_id", "category_id", "bbox", "score"} <= set(r):
            raise DatasetError(f"{source}: entry {i} is not a COCO result (needs image_id, category_id, bbox, score)")
        if not (isinstance(r["image_id"], Hashable) and r["image_id"] in images):
            raise DatasetError(
                f"{source}: entry {i}: image_id {r['image_id']!r} is not an image of the preset's test split "
                "(were the results made on another dataset or split?)"
            )
        if not (isinstance(r["category_id"], Hashable) and r["category_id"] in label_of):
            raise DatasetError(
                f"{source}: entry {i}: category_id {r['category_id']!r} is not a class of the dataset "
                f"(its category ids are {list(cat_ids)}); were the results made with another class list?"
            )
        problem = result_value_problem(r, with_bbox=True)
        if problem is not None:
            raise DatasetError(f"{source}: entry {i}: {problem}")
        grouped.setdefault(int(r["image_id"]), []).append((list(r["bbox"]), float(r["score"]), label_of[r["category_id"]]))
    return grouped


def image_confusion(
    counts: np.ndarray,
    gt_boxes: np.ndarray,
    gt_labels: np.ndarray,
    dets: Sequence[tuple[Sequence[float], float, int]],
    num_classes: int,
    score_thr: float = 0.3,
    tp_iou_thr: float = 0.5,
    nms_iou_thr: float | None = None,
) -> int:
    """Add one image to ``counts`` in place; return the number of detections considered.

    Args:
        gt_boxes: ``(G, 4)`` xyxy; gt_labels: ``(G,)`` in ``[0, num_classes)``.
        dets: ``(xywh, score, label)`` per detection.
    """
    from detcli.ops import nms
    from detcli.structures import box_overlaps, convert

    gt = torch.as_tensor(np.asarray(gt_boxes, np.float32).reshape(-1, 4))
    true_positives = np.zeros(len(gt_labels), np.int64)
    used = 0
    for label in range(num_classes):
        mine = [(b, s) for b, s, lab in dets if lab == label and s >= score_thr]
        if not mine:
            continue
        boxes = convert(torch.tensor([b for b, _ in mine], dtype=torch.float32).reshape(-1, 4), "xywh", "xyxy")
        scores = torch.tensor([s for _, s in mine], dtype=torch.float32)
        order = torch.argsort(scores, descending=True, stable=True)
        boxes, scores = boxes[order], scores[order]
        if nms_iou_thr:
            keep = nms(boxes, scores, float(nms_iou_thr))
            boxes = boxes[keep]
        used += len(boxes)
        ious = box_overlaps(boxes, gt).numpy() if len(gt) else np.zeros((len(boxes), 0), np.float32)
        for i in range(len(boxes)):
            hits = np.nonzero(ious[i] >= tp_iou_thr)[0]
            if hits.size == 0:
                counts[-1, label] += 1
                continue
            for j in hits:
                counts[gt_labels[j], label] += 1
                if gt_labels[j] == label:
                    true_positives[j] += 1
    for j, label in enumerate(gt_labels):  # type: ignore[assignment]
        if true_positives[j] == 0:
            counts[label, -1] += 1
    return used


def compute_confusion_matrix(
    annotations: Sequence[Mapping[str, Any]],
    image_ids: Sequence[int],
    classes: Sequence[str],
    cat_ids: Sequence[int],
    results: Any,
    *,
    score_thr: float = 0.3,
    tp_iou_thr: float = 0.5,
    nms_iou_thr: float | None = None,
    source: str = "results",
) -> ConfusionMatrix:
    """The confusion matrix of ``results`` (COCO results list) against per-image ``annotations``
    (``{"bboxes": (G, 4) xyxy, "labels": (G,)}``, aligned with ``image_ids``).

    Raises:
        ConfigError: a threshold out of [0, 1].
        DatasetError: see :func:`group_results`.
    """
    for name, value in (("--score-thr", score_thr), ("--tp-iou-thr", tp_iou_thr), ("--nms-iou-thr", nms_iou_thr)):
        if value is not None and not 0.0 <= float(value) <= 1.0:
            raise ConfigError(f"{name} {value}: must be within [0, 1]")
    if len(classes) != len(cat_ids):
        raise ValueError(f"{len(classes)} class names but {len(cat_ids)} category ids")
    grouped = group_results(results, image_ids, cat_ids, source)
    n = len(classes)
    counts = np.zeros((n + 1, n + 1), np.int64)
    considered = 0
    for ann, image_id in zip(annotations, image_ids):
        considered += image_confusion(
            counts, np.asarray(ann["bboxes"]), np.asarray(ann["labels"], np.int64), grouped.get(int(image_id), []),
            n, score_thr, tp_iou_thr, nms_iou_thr,
        )
    return ConfusionMatrix(list(classes), counts, num_images=len(image_ids), num_detections=considered)


def plot_confusion_matrix(matrix: ConfusionMatrix, path: str | os.PathLike[str], title: str = "Normalized confusion matrix") -> Path:
    """A seaborn heatmap of the row-normalized percent, each cell annotated with percent and raw count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    from detcli.fileio import atomic_output

    norm = matrix.normalized()
    labels = matrix.labels
    annot = np.array([[f"{p:.0f}%\n{c}" if c else "" for p, c in zip(prow, crow)] for prow, crow in zip(norm, matrix.counts)])
    size = max(5.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size * 1.15, size))
    sns.heatmap(norm, annot=annot, fmt="", cmap="Blues", vmin=0, vmax=100, xticklabels=labels, yticklabels=labels,
                cbar_kws={"label": "% of the row"}, ax=ax, annot_kws={"size": 7 if len(labels) > 12 else 9}, square=True)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(title)
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
    out = Path(path)
    with atomic_output(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return out
