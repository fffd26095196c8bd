from __future__ import annotations

import numpy as np
import torch

from detcli.structures import Detections, GroundTruth
from detcli.structures.masks import BitmapMasks, PolygonMasks
from detcli.visualization import class_color, draw_detections, draw_ground_truth


def test_draw_detections_respects_threshold_and_colours() -> None:
    img = np.zeros((120, 160, 3), np.uint8)
    dets = Detections((120, 160), torch.tensor([[10., 20., 60., 80.], [90., 10., 150., 100.]]),
                      torch.tensor([0.9, 0.1]), torch.tensor([1, 0]))
    out = draw_detections(img, dets, ["cat", "dog"], score_thr=0.3)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert img.sum() == 0  # input untouched
    # the kept box's edge has its class colour; the low-scoring box is not drawn
    assert tuple(out[50, 10]) == class_color(1)
    assert out[50, 150].sum() == 0 and out[60:90, 95:145].sum() == 0
    assert out[:20, 10:60].any()  # label above the box
    assert class_color(0) != class_color(1)


def test_draw_detections_masks_and_empty() -> None:
    img = np.full((40, 40, 3), 100, np.uint8)
    masks = torch.zeros(1, 40, 40, dtype=torch.bool)
    masks[0, 10:30, 10:30] = True
    dets = Detections((40, 40), torch.tensor([[5., 5., 35., 35.]]), torch.tensor([0.8]), torch.tensor([0]), masks)
    out = draw_detections(img, dets, ["a"])
    assert not np.array_equal(out[20, 20], img[20, 20]) and np.array_equal(out[38, 38], img[38, 38])
    assert np.array_equal(draw_detections(img, Detections.empty((40, 40)), ["a"]), img)


def test_draw_ground_truth() -> None:
    img = np.zeros((60, 60, 3), np.uint8)
    gt = GroundTruth((60, 60), torch.tensor([[10., 10., 50., 50.]]), torch.tensor([2]),
                     torch.tensor([[0., 0., 5., 5.]]), BitmapMasks(np.ones((1, 60, 60), np.uint8), 60, 60))
    out = draw_ground_truth(img, gt, ["a", "b", "c"])
    assert tuple(out[30, 10]) == class_color(2)
    assert out[59, 59].any()  # mask tint everywhere
    assert out[0, 0].any()  # ignore box drawn


def test_draw_ground_truth_masks_on_a_padded_canvas() -> None:
    img = np.zeros((30, 40, 3), np.uint8)
    square = PolygonMasks([[np.array([5.0, 5, 15, 5, 15, 15, 5, 15])]], 32, 64)  # padded canvas
    gt = GroundTruth((30, 40), torch.tensor([[5., 5., 15., 15.]]), torch.tensor([0]), masks=square)
    out = draw_ground_truth(img, gt, ["a"])
    assert out[10, 10].any() and not out[25, 30].any()  # tinted inside the mask only
