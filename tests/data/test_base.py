from __future__ import annotations

import pytest

from detcli.data import ShapesDataset
from detcli.errors import DatasetError

PIPE = [{"type": "LoadImageFromFile"}, {"type": "LoadAnnotations"}, {"type": "DefaultFormatBundle"},
        {"type": "Collect", "keys": ["img", "gt_bboxes", "gt_labels"]}]


def test_rejected_training_sample_is_replaced_deterministically() -> None:
    ds = ShapesDataset(pipeline=[*PIPE[:2], lambda r: None if r["sample_idx"] == 1 else r, *PIPE[2:]], num_images=4)
    a, b = ds[1], ds[1]
    assert a.meta.image_id != 2 and a.meta.image_id == b.meta.image_id


def test_pipeline_must_end_with_collect() -> None:
    ds = ShapesDataset(pipeline=PIPE[:2], num_images=2)
    with pytest.raises(DatasetError, match="must end with Collect"):
        ds[0]
    always_none = ShapesDataset(pipeline=[lambda r: None], num_images=2)
    with pytest.raises(DatasetError, match="rejected 10 samples"):
        always_none[0]
    with pytest.raises(IndexError):
        ds[5]


def test_load_image_returns_original_bgr() -> None:
    from detcli.data.shapes import render

    ds = ShapesDataset(pipeline=PIPE, num_images=3, split="val")
    img = ds.load_image(2)
    assert img.shape == (256, 256, 3) and (img == render(ds.layout(2))).all()
