import dataclasses

import pytest
import torch

from detcli.structures import Detections, GroundTruth, ImageBatch, ImageMeta


def test_ground_truth_validates_lengths_and_moves():
    gt = GroundTruth((10, 10), torch.tensor([[0.0, 0, 5, 5]]), [2])
    assert len(gt) == 1 and gt.labels.dtype == torch.int64 and len(gt.ignore_boxes) == 0
    assert len(gt.to("cpu")) == 1
    with pytest.raises(ValueError, match="1 boxes but 2 labels"):
        GroundTruth((10, 10), torch.tensor([[0.0, 0, 5, 5]]), [1, 2])
    empty = GroundTruth((10, 10), torch.zeros(0, 4), torch.zeros(0))
    assert len(empty) == 0 and empty.boxes.tensor.shape == (0, 4)


def test_detections_indexing_and_empty():
    dets = Detections((20, 20), torch.tensor([[0.0, 0, 5, 5], [1, 1, 4, 4]]), [0.9, 0.2], [1, 0])
    kept = dets[dets.scores > 0.3]
    assert len(kept) == 1 and kept.labels.tolist() == [1]
    assert len(dets[-1]) == 1 and dets[-1].scores.tolist() == pytest.approx([0.2])
    empty = Detections.empty((20, 20))
    assert len(empty) == 0 and empty.boxes.tensor.shape == (0, 4)
    assert len(Detections.cat([dets, empty])) == 2
    with pytest.raises(ValueError, match="differ in length"):
        Detections((20, 20), torch.zeros(2, 4), [0.1], [0, 1])
    with pytest.raises(ValueError, match="at least one"):
        Detections.cat([])


def test_image_batch_padding():
    batch = ImageBatch.from_tensors([torch.ones(3, 30, 40), torch.ones(3, 33, 20)], size_divisor=32)
    assert batch.tensor.shape == (2, 3, 64, 64)
    assert batch.image_sizes == [(30, 40), (33, 20)]
    assert batch.tensor[1, :, 33:, :].abs().sum() == 0 and batch.tensor[1, :, :33, :20].min() == 1
    with pytest.raises(ValueError, match="2 images but 1 image sizes"):
        ImageBatch(torch.zeros(2, 3, 8, 8), [(8, 8)])
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        ImageBatch(torch.zeros(3, 8, 8), [(8, 8)])


def test_image_meta_is_frozen():
    meta = ImageMeta(1, "a.jpg", (10, 20), (20, 40), (32, 64), (2.0, 2.0, 2.0, 2.0))
    with pytest.raises(dataclasses.FrozenInstanceError):
        meta.image_id = 2  # type: ignore[misc]
