"""Single-image mAP (analyze-results): hand-checked values, empty inputs, ties, ignore regions, thresholds."""

from __future__ import annotations

import numpy as np
import pytest

from detcli.evaluation.per_image import image_map

GT = np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float64)
ANN = {"bboxes": GT, "labels": np.array([0, 1])}
ONE = {"bboxes": GT[:1], "labels": np.array([0])}


def test_perfect_detections_score_one() -> None:
    assert image_map(ANN, GT, np.array([0.9, 0.8]), np.array([0, 1])) == pytest.approx(1.0)


def test_no_detections_score_zero() -> None:
    assert image_map(ANN, np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64)) == 0.0


def test_one_class_found_of_two_is_half() -> None:
    assert image_map(ANN, GT[:1], np.array([0.9]), np.array([0])) == pytest.approx(0.5)


def test_false_positive_of_a_class_without_gt_does_not_count() -> None:
    dets = np.concatenate([GT, [[100, 100, 110, 110]]])
    assert image_map(ANN, dets, np.array([0.9, 0.8, 0.99]), np.array([0, 1, 2])) == pytest.approx(1.0)


def test_duplicates_and_misses_ranked_by_score() -> None:
    # two identical hits: the higher-scoring one is the TP, the duplicate an FP after full recall
    dets = np.array([[0, 0, 10, 10], [0, 0, 10, 10.]])
    assert image_map(ONE, dets, np.array([0.9, 0.5]), np.array([0, 0])) == pytest.approx(1.0)
    # a higher-scoring miss before the hit: precision 1/2 at recall 1
    dets = np.array([[50, 50, 60, 60], [0, 0, 10, 10.]])
    assert image_map(ONE, dets, np.array([0.9, 0.5]), np.array([0, 0])) == pytest.approx(0.5)


def test_equal_scores_keep_detection_order() -> None:
    dets = np.array([[50, 50, 60, 60], [0, 0, 10, 10.]])
    assert image_map(ONE, dets, np.array([0.5, 0.5]), np.array([0, 0])) == pytest.approx(0.5)
    assert image_map(ONE, dets[::-1], np.array([0.5, 0.5]), np.array([0, 0])) == pytest.approx(1.0)


def test_iou_thresholds_average() -> None:
    # IoU exactly 0.75: a hit at thresholds 0.50, 0.55, ..., 0.75 (6 of 10), a miss above
    assert image_map(ONE, np.array([[0, 0, 10, 7.5]]), np.array([0.9]), np.array([0])) == pytest.approx(0.6)


def test_detection_on_ignore_region_is_neither() -> None:
    dets = np.array([[100, 100, 120, 120], [0, 0, 10, 10.]])
    ignored = {**ONE, "bboxes_ignore": np.array([[100, 100, 120, 120.]]), "labels_ignore": np.array([0])}
    assert image_map(ignored, dets, np.array([0.9, 0.5]), np.array([0, 0])) == pytest.approx(1.0)
    # without labels_ignore the region is not used (mmdet eval_map), so the detection is a false positive
    unlabelled = {**ONE, "bboxes_ignore": np.array([[100, 100, 120, 120.]])}
    assert image_map(unlabelled, dets, np.array([0.9, 0.5]), np.array([0, 0])) == pytest.approx(0.5)


def test_image_without_gt() -> None:
    empty = {"bboxes": np.zeros((0, 4)), "labels": np.zeros(0, np.int64)}
    assert image_map(empty, np.zeros((0, 4)), [], []) == 1.0
    assert image_map(empty, np.array([[0, 0, 1, 1.]]), [0.3], [0]) == 0.0
