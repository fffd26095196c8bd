"""`det infer` with a model that predicts masks: RLE in the JSON lines, translucent masks in the drawings."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

import detcli.engine.inference as inference
from detcli.structures import Detections


class FakeMaskPredictor:
    """Stands in for :class:`detcli.engine.inference.Predictor`: one box with a mask per image."""

    def __init__(self, checkpoint: str, cfg: dict | None = None, device: str = "cpu") -> None:
        self.class_names = ("blob", "other")
        self.cfg = {}

    def __call__(self, image: np.ndarray, filename: str = "") -> Detections:
        h, w = image.shape[:2]
        masks = torch.zeros(2, h, w, dtype=torch.bool)
        masks[0, 5:25, 10:40] = True
        masks[1, 0:2, 0:2] = True
        return Detections((h, w), torch.tensor([[10.0, 5.0, 40.0, 25.0], [0.0, 0.0, 2.0, 2.0]]), torch.tensor([0.9, 0.1]),
                          torch.tensor([0, 1]), masks)


def test_json_lines_carry_rle_and_drawings_show_masks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inference, "Predictor", FakeMaskPredictor)
    image = np.full((48, 64, 3), 200, np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), image)
    records = list(inference.infer("c.pth", [str(tmp_path / "a.png")], out_dir=tmp_path / "out", score_thr=0.3))
    assert len(records) == 1
    line = json.loads(json.dumps(records[0].to_json()))  # JSON-serialisable as is
    assert line["labels"] == [0] and len(line["segmentations"]) == 1  # the low-score box is dropped with its mask
    seg = line["segmentations"][0]
    assert seg["size"] == [48, 64]
    mask = mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode()}).astype(bool)
    expected = np.zeros((48, 64), bool)
    expected[5:25, 10:40] = True
    assert np.array_equal(mask, expected)
    drawn = cv2.imread(line["output"])
    inside, outside = drawn[15, 25].astype(int), drawn[40, 60].astype(int)
    assert (outside == 200).all()  # untouched background
    assert not (inside == 200).all() and (inside != 0).any()  # blended, not painted over


def test_box_only_records_have_no_segmentations() -> None:
    dets = Detections((4, 4), torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([0.5]), torch.tensor([0]))
    record = inference.InferenceRecord("x.png", 4, 4, dets, ("a",))
    assert "segmentations" not in record.to_json()
