"""Cityscapes gtFine polygons to COCO: the 8 instance classes with their ids, *group labels as crowd."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from detcli.data.converters import CITYSCAPES_CLASSES, convert_cityscapes
from detcli.errors import DatasetError


def _city(root: Path, split: str, stem: str, objects: list[dict]) -> None:
    gt = root / "gtFine" / split / "aachen"
    gt.mkdir(parents=True, exist_ok=True)
    (gt / f"{stem}_gtFine_polygons.json").write_text(json.dumps({"imgHeight": 100, "imgWidth": 200, "objects": objects}))
    img = root / "leftImg8bit" / split / "aachen"
    img.mkdir(parents=True, exist_ok=True)
    (img / f"{stem}_leftImg8bit.png").write_bytes(cv2.imencode(".png", np.zeros((100, 200, 3), np.uint8))[1].tobytes())


def test_instances_crowd_and_background(tmp_path: Path) -> None:
    square = [[10, 10], [30, 10], [30, 30], [10, 30]]
    _city(tmp_path, "train", "aachen_000000_000019", [
        {"label": "road", "polygon": [[0, 0], [200, 0], [200, 100]]},
        {"label": "car", "polygon": square},
        {"label": "persongroup", "polygon": [[50, 50], [60, 50], [60, 70]]},
        {"label": "motorcycle", "polygon": [[1, 1], [2, 2]]},
    ])
    _city(tmp_path, "val", "aachen_000001_000019", [{"label": "bicycle", "polygon": square}])
    result = convert_cityscapes(tmp_path, tmp_path / "out")
    assert [o.split for o in result.outputs] == ["train", "val"]
    data = json.loads((tmp_path / "out" / "instancesonly_filtered_gtFine_train.json").read_text())
    assert [(c["id"], c["name"]) for c in data["categories"]] == list(
        zip([24, 25, 26, 27, 28, 31, 32, 33], CITYSCAPES_CLASSES))
    assert data["images"] == [{"id": 1, "file_name": "aachen/aachen_000000_000019_leftImg8bit.png",
                               "width": 200, "height": 100}]
    car, crowd = data["annotations"]
    assert car["category_id"] == 26 and car["iscrowd"] == 0 and car["bbox"] == [10.0, 10.0, 20.0, 20.0]
    assert car["area"] == 400.0 and car["segmentation"] == [[10.0, 10.0, 30.0, 10.0, 30.0, 30.0, 10.0, 30.0]]
    assert crowd["category_id"] == 24 and crowd["iscrowd"] == 1 and crowd["area"] == 100.0
    assert len(result.warnings) == 1 and "objects[3] ('motorcycle') has fewer than 3 points" in result.warnings[0]
    assert result.outputs[0].img_prefix == tmp_path / "leftImg8bit" / "train"
    codes = {i.code for i in result.outputs[0].report.issues}
    assert "category_id_gaps" in codes and result.num_errors == 0


def test_missing_folders(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="gtFine/ folder of Cityscapes not found"):
        convert_cityscapes(tmp_path, tmp_path / "out")
    (tmp_path / "gtFine" / "train").mkdir(parents=True)
    (tmp_path / "leftImg8bit").mkdir()
    with pytest.raises(DatasetError, match="no \\*_gtFine_polygons.json file"):
        convert_cityscapes(tmp_path, tmp_path / "out")
