"""Analyses of a results file against a preset's test split (``det confusion-matrix``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detcli.evaluation.confusion import ConfusionMatrix, compute_confusion_matrix, plot_confusion_matrix

logger = logging.getLogger(__name__)


@dataclass
class ConfusionResult:
    """The matrix and the files written: ``png`` (heatmap), ``csv`` (counts), ``csv_normalized`` (row percent)."""

    matrix: ConfusionMatrix
    png: Path
    csv: Path
    csv_normalized: Path


def confusion_matrix(
    cfg: Mapping[str, Any],
    results: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    score_thr: float = 0.3,
    tp_iou_thr: float = 0.5,
    nms_iou_thr: float | None = None,
) -> ConfusionResult:
    """Build ``data.test`` of ``cfg``, read the COCO results file ``results`` (``-``: stdin), compute the
    confusion matrix and write ``confusion_matrix.png``, ``confusion_matrix.csv`` and
    ``confusion_matrix_normalized.csv`` into ``out_dir`` (atomically).

    Raises:
        DatasetError: the results file is missing, not JSON, or refers to unknown images/categories.
        ConfigError: a threshold out of range, a bad ``data.test`` node.
    """
    from detcli.engine.tester import build_split
    from detcli.evaluation.files import read_json_file
    from detcli.fileio import write_text_atomic

    dataset, _, _ = build_split(cfg, "test", test_mode=True)
    source = "stdin" if str(results) == "-" else str(results)
    data = read_json_file(results, "RESULTS")
    annotations = [dataset.get_ann_info(i) for i in range(len(dataset))]
    matrix = compute_confusion_matrix(
        annotations, dataset.image_ids, list(dataset.classes), list(dataset.cat_ids), data,
        score_thr=score_thr, tp_iou_thr=tp_iou_thr, nms_iou_thr=nms_iou_thr, source=source,
    )
    logger.info("confusion matrix of %d detections (score >= %g) on %d images", matrix.num_detections, score_thr, matrix.num_images)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv = write_text_atomic(matrix.to_csv(), out / "confusion_matrix.csv")
    csv_norm = write_text_atomic(matrix.to_csv(normalized=True), out / "confusion_matrix_normalized.csv")
    png = plot_confusion_matrix(matrix, out / "confusion_matrix.png")
    return ConfusionResult(matrix, png, csv, csv_norm)
