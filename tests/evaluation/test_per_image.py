"""Single-image mAP (analyze-results): hand-checked values, empty inputs, ties, ignore regions, thresholds."""

from __future__ import annotations

import numpy as np
import pytest

from detcli.evaluation.per_image import area_ap, image_map, iou_matrix

GT = np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float64)
LABELS = np.array([0, 1])


def test_iou_matrix_values() -> None:
    iou = iou_matrix(np.array([[0, 0, 10, 10.]]), np.array([[0, 0, 10, 10.], [5, 0, 15, 10], [20, 20, 30, 30]]))
    np.testing.assert_allclose(iou, [[1.0, 50 / 150, 0.0]])


def test_area_ap_envelope() -> None:
    # precision 1 up to recall 0.5, then a false positive, then the second hit at precision 2/3
    assert area_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert area_ap(np.array([]), np.array([])) == 0.0


def test_perfect_detections_score_one() -> None:
    assert image_map(GT, LABELS, GT, np.array([0.9, 0.8]), LABELS) == pytest.approx(1.0)


def test_no_detections_score_zero() -> None:
    assert image_map(GT, LABELS, np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64)) == 0.0


def test_one_class_found_of_two_is_half() -> None:
    assert image_map(GT, LABELS, GT[:1], np.array([0.9]), np.array([0])) == pytest.approx(0.5)


def test_false_positive_of_a_class_without_gt_does_not_count() -> None:
    dets = np.concatenate([GT, [[100, 100, 110, 110]]])
    assert image_map(GT, LABELS, dets, np.array([0.9, 0.8, 0.99]), np.array([0, 1, 2])) == pytest.approx(1.0)


def test_duplicate_is_a_false_positive_ranked_by_score() -> None:
    gt = GT[:1]
    # two identical hits: the higher-scoring one is the TP, the duplicate an FP after full recall
    dets = np.array([[0, 0, 10, 10], [0, 0, 10, 10.]])
    assert image_map(gt, [0], dets, np.array([0.9, 0.5]), np.array([0, 0])) == pytest.approx(1.0)
    # a higher-scoring miss before the hit: precision 1/2 at recall 1
    dets = np.array([[50, 50, 60, 60], [0, 0, 10, 10.]])
    assert image_map(gt, [0], dets, np.array([0.9, 0.5]), np.array([0, 0])) == pytest.approx(0.5)


def test_equal_scores_keep_detection_order() -> None:
    dets = np.array([[50, 50, 60, 60], [0, 0, 10, 10.]])
    assert image_map(GT[:1], [0], dets, np.array([0.5, 0.5]), np.array([0, 0])) == pytest.approx(0.5)


def test_iou_thresholds_average() -> None:
    # IoU exactly 0.75: a hit at thresholds 0.50, 0.55, ..., 0.75 (6 of 10), a miss above
    det = np.array([[0, 0, 10, 7.5]])
    assert iou_matrix(det, GT[:1])[0, 0] == pytest.approx(0.75)
    assert image_map(GT[:1], [0], det, np.array([0.9]), np.array([0])) == pytest.approx(0.6)


def test_detection_on_ignore_region_is_neither() -> None:
    ignore = np.array([[100, 100, 120, 120.]])
    dets = np.array([[100, 100, 120, 120], [0, 0, 10, 10.]])
    assert image_map(GT[:1], [0], dets, np.array([0.9, 0.5]), np.array([0, 0]), ignore) == pytest.approx(1.0)
    assert image_map(GT[:1], [0], dets, np.array([0.9, 0.5]), np.array([0, 0])) == pytest.approx(0.5)


def test_image_without_gt() -> None:
    assert image_map(np.zeros((0, 4)), [], np.zeros((0, 4)), [], []) == 1.0
    assert image_map(np.zeros((0, 4)), [], np.array([[0, 0, 1, 1.]]), [0.3], [0]) == 0.0
