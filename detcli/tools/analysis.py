"""Analyses of a results file against a preset's test split (``det confusion-matrix``, ``det analyze-results``)."""

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
    from detcli.engine.builders import build_split
    from detcli.evaluation.files import read_json_file
    from detcli.fileio import check_writable_dir, write_text_atomic

    check_writable_dir(out_dir, "output folder (OUT_DIR)")
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


@dataclass
class ImageScore:
    """One image of :func:`analyze_results`: its dataset index, COCO id, file name and mAP."""

    index: int
    image_id: int
    filename: str
    map: float

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "image_id": self.image_id, "filename": self.filename, "mAP": round(self.map, 6)}


@dataclass
class AnalyzeResult:
    """Per-image scores (dataset order), the ``good`` (best first) and ``bad`` (worst first) top-k,
    and the painted files of each."""

    scores: list[ImageScore]
    good: list[ImageScore]
    bad: list[ImageScore]
    good_files: list[Path]
    bad_files: list[Path]
    show_dir: Path


def _detections_of(grouped: Mapping[int, list[tuple[list[float], float, int]]], image_id: int
                   ) -> tuple[Any, Any, Any]:
    """``(boxes xyxy (N, 4), scores (N,), labels (N,))`` of one image of :func:`group_results`' output."""
    import numpy as np

    rows = grouped.get(image_id, [])
    xywh = np.asarray([r[0] for r in rows], dtype=np.float64).reshape(-1, 4)
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    return boxes, np.asarray([r[1] for r in rows], dtype=np.float64), np.asarray([r[2] for r in rows], dtype=np.int64)


def score_images(dataset: Any, grouped: Mapping[int, list[tuple[list[float], float, int]]]) -> list[ImageScore]:
    """The single-image mAP of every image of ``dataset`` (dataset order) against ``grouped`` detections
    (:func:`detcli.evaluation.confusion.group_results` of a results file)."""
    from detcli.evaluation.per_image import image_map

    scores = []
    for i, image_id in enumerate(dataset.image_ids):
        boxes, sc, labels = _detections_of(grouped, image_id)
        value = image_map(dataset.get_ann_info(i), boxes, sc, labels)
        name = str(dataset.get_img_info(i).get("filename", f"{image_id}.jpg"))
        scores.append(ImageScore(i, int(image_id), name, value))
    return scores


def analyze_results(
    cfg: Mapping[str, Any],
    results: str | os.PathLike[str],
    show_dir: str | os.PathLike[str],
    *,
    topk: int = 20,
    show_score_thr: float = 0.0,
    metric: str = "bbox",
) -> AnalyzeResult:
    """Rank the images of ``data.test`` by single-image mAP of the COCO results file ``results``
    (``-``: stdin) and paint the ``topk`` best into ``show_dir/good`` and the worst into ``show_dir/bad``
    (ground truth, then detections scoring at least ``show_score_thr``), named
    ``RANK_NAME_mAP0.123.jpg``. The mAP is :func:`detcli.evaluation.per_image.image_map`.

    Raises:
        ConfigError: ``topk < 1``, a threshold outside [0, 1], a metric other than bbox.
        DatasetError: the results file is missing, not JSON, not a results list, or refers to images
            or categories the test split does not have.
    """
    import numpy as np
    import torch

    from detcli.engine.builders import build_split
    from detcli.engine.tester import original_image
    from detcli.errors import ConfigError
    from detcli.evaluation.confusion import group_results
    from detcli.evaluation.files import read_json_file
    from detcli.structures import Boxes, Detections, GroundTruth
    from detcli.visualization import draw_detections, draw_ground_truth, output_name, save_image

    if metric != "bbox":
        raise ConfigError(f"--metric {metric!r}: analyze-results ranks images by bbox mAP; use --metric bbox")
    if topk < 1:
        raise ConfigError(f"--topk {topk}: must be >= 1")
    if not 0.0 <= show_score_thr <= 1.0:
        raise ConfigError(f"--show-score-thr {show_score_thr}: must be in [0, 1]")
    from detcli.fileio import check_writable_dir

    check_writable_dir(show_dir, "show dir")
    dataset, _, _ = build_split(cfg, "test", test_mode=True)
    source = "stdin" if str(results) == "-" else str(results)
    grouped = group_results(read_json_file(results, "RESULTS"), dataset.image_ids, list(dataset.cat_ids), source)
    scores = score_images(dataset, grouped)
    k = min(topk, len(scores))  # sorted() is stable: ties keep dataset order in both lists
    bad, good = sorted(scores, key=lambda s: s.map)[:k], sorted(scores, key=lambda s: -s.map)[:k]
    out = Path(show_dir)

    def paint(items: list[ImageScore], folder: str) -> list[Path]:
        files = []
        for rank, item in enumerate(items):
            ann = dataset.get_ann_info(item.index)
            image = original_image(dataset, item.index)
            h, w = image.shape[:2]
            gt = GroundTruth((h, w), Boxes(torch.as_tensor(ann["bboxes"], dtype=torch.float32).reshape(-1, 4)), ann["labels"],
                             Boxes(torch.as_tensor(ann.get("bboxes_ignore", np.zeros((0, 4))), dtype=torch.float32).reshape(-1, 4)))
            boxes, sc, labels = _detections_of(grouped, item.image_id)
            dets = Detections((h, w), Boxes(torch.as_tensor(boxes, dtype=torch.float32)), sc, labels)
            drawn = draw_detections(draw_ground_truth(image, gt, dataset.classes), dets, dataset.classes, score_thr=show_score_thr)
            stem = Path(output_name(item.filename, f"{item.image_id}.jpg"))
            files.append(save_image(drawn, out / folder / f"{rank + 1:03d}_{stem.stem}_mAP{item.map:.3f}{stem.suffix}"))
        return files

    good_files, bad_files = paint(good, "good"), paint(bad, "bad")
    logger.info("ranked %d images by mAP; painted %d good and %d bad into %s", len(scores), len(good), len(bad), out)
    return AnalyzeResult(scores, good, bad, good_files, bad_files, out)
