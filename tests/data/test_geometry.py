from __future__ import annotations

import numpy as np
import pytest
import torch

from detcli.data import ShapesDataset, map_to_original
from detcli.structures import Detections, ImageMeta


def meta(flip: bool = False, direction: str | None = None) -> ImageMeta:
    # original 50 (h) x 50 (w); resized by w x2, h x4 to 200 x 100
    return ImageMeta(1, "x", (50, 50), (200, 100), (224, 128), (2.0, 4.0, 2.0, 4.0), flip, direction)


@pytest.mark.parametrize(("flip", "direction", "expected"), [
    (False, None, [5, 5, 15, 10]),
    (True, "horizontal", [35, 5, 45, 10]),
    (True, "vertical", [5, 40, 15, 45]),
    (True, "diagonal", [35, 40, 45, 45]),
])
def test_map_to_original_flips_and_scales(flip, direction, expected) -> None:
    dets = Detections((224, 128), torch.tensor([[10., 20., 30., 40.]]), torch.tensor([0.9]), torch.tensor([2]))
    out = map_to_original(dets, meta(flip, direction))
    assert out.image_size == (50, 50)
    np.testing.assert_allclose(out.boxes.tensor.numpy(), [expected])
    assert out.scores.tolist() == pytest.approx([0.9]) and out.labels.tolist() == [2]


def test_map_to_original_clips_and_handles_empty() -> None:
    dets = Detections((224, 128), torch.tensor([[-4., 0., 128., 224.]]), torch.tensor([0.5]), torch.tensor([0]))
    np.testing.assert_allclose(map_to_original(dets, meta()).boxes.tensor.numpy(), [[0, 0, 50, 50]])
    empty = map_to_original(Detections.empty((224, 128)), meta(True, "horizontal"))
    assert len(empty) == 0 and empty.image_size == (50, 50)
    empty = map_to_original(Detections.empty((224, 128), with_masks=True), meta())
    assert empty.masks.shape == (0, 50, 50)


def test_map_to_original_masks() -> None:
    masks = torch.zeros(1, 224, 128, dtype=torch.bool)
    masks[0, :100, :50] = True  # top-left quarter of the 200x100 valid area
    dets = Detections((224, 128), torch.tensor([[0., 0., 50., 100.]]), torch.tensor([1.0]), torch.tensor([0]), masks)
    out = map_to_original(dets, meta(True, "horizontal"))
    assert out.masks.shape == (1, 50, 50) and out.masks.dtype == torch.bool
    assert out.masks[0, :25, 25:].all() and not out.masks[0, :, :25].any() and not out.masks[0, 25:].any()
    np.testing.assert_allclose(out.boxes.tensor.numpy(), [[25, 0, 50, 25]])


def test_round_trip_through_the_pipeline() -> None:
    """GT boxes pushed through Resize (non-uniform) + RandomFlip map back onto the originals."""
    for direction in ("horizontal", "vertical", "diagonal"):
        pipeline = [{"type": "LoadImageFromFile"}, {"type": "LoadAnnotations"},
                    {"type": "Resize", "img_scale": (300, 200), "keep_ratio": False},
                    {"type": "RandomFlip", "flip_ratio": 1.0, "direction": direction},
                    {"type": "Pad", "size_divisor": 32}, {"type": "DefaultFormatBundle"},
                    {"type": "Collect", "keys": ["img", "gt_bboxes", "gt_labels"]}]
        ds = ShapesDataset(pipeline=pipeline, num_images=1)
        s = ds[0]
        dets = Detections(s.meta.pad_shape, s.gt.boxes, torch.ones(len(s.gt)), s.gt.labels)
        back = map_to_original(dets, s.meta)
        np.testing.assert_allclose(back.boxes.tensor.numpy(), ds.get_ann_info(0)["bboxes"], atol=1e-3)
