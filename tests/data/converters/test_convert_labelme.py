"""labelme to COCO: polygons, rectangles, multi-part instances by group_id, class lists."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from detcli.data.converters import convert_labelme
from detcli.errors import DatasetError


def _shape(label: str, points: list[list[float]], kind: str = "polygon", group: int | None = None) -> dict[str, Any]:
    return {"label": label, "points": points, "group_id": group, "shape_type": kind, "flags": {}}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "lm"
    root.mkdir()
    cv2.imwrite(str(root / "a.jpg"), np.zeros((40, 60, 3), np.uint8))
    shapes = [
        _shape("tree", [[0, 0], [10, 0], [10, 10], [0, 10]], group=1),     # two parts of one tree
        _shape("tree", [[20, 20], [30, 20], [30, 30]], group=1),
        _shape("car", [[40, 5], [50, 15]], kind="rectangle"),
        _shape("car", [[15, 15], [5, 5]], kind="rectangle"),                # another car: no group
        _shape("car", [[1, 1], [3, 3]], kind="circle"),
    ]
    (root / "a.json").write_text(json.dumps({"version": "5.0.1", "shapes": shapes, "imagePath": "a.jpg",
                                             "imageData": None, "imageHeight": 40, "imageWidth": 60}))
    (root / "notes.json").write_text(json.dumps({"something": "else"}))
    return root


def test_multi_part_rectangles_and_sorted_classes(folder: Path, tmp_path: Path) -> None:
    result = convert_labelme(folder, tmp_path / "out.json")
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["categories"] == [{"id": 1, "name": "car"}, {"id": 2, "name": "tree"}]
    assert data["images"] == [{"id": 1, "file_name": "a.jpg", "width": 60, "height": 40}]
    tree, car1, car2 = data["annotations"]
    assert tree["category_id"] == 2 and len(tree["segmentation"]) == 2
    assert tree["bbox"] == [0.0, 0.0, 30.0, 30.0] and tree["area"] == 150.0  # 100 + 50
    assert car1["segmentation"] == [[40.0, 5.0, 50.0, 5.0, 50.0, 15.0, 40.0, 15.0]]
    assert car1["bbox"] == [40.0, 5.0, 10.0, 10.0] and car1["area"] == 100.0
    assert car2["bbox"] == [5.0, 5.0, 10.0, 10.0]
    assert any("notes.json: not a labelme file" in w for w in result.warnings)
    assert any("skipped 1 'circle' shapes" in w for w in result.warnings)
    assert result.outputs[0].report.ok and result.outputs[0].img_prefix == folder


def test_classes_file_order_and_unknown_label(folder: Path, tmp_path: Path) -> None:
    classes = tmp_path / "labels.txt"
    classes.write_text("__ignore__\n_background_\ntree\ncar\nbike\n")
    convert_labelme(folder, tmp_path / "out.json", classes=classes)
    data = json.loads((tmp_path / "out.json").read_text())
    assert [c["name"] for c in data["categories"]] == ["tree", "car", "bike"]
    assert [a["category_id"] for a in data["annotations"]] == [1, 2, 2]
    classes.write_text("tree\ncars\n")
    with pytest.raises(DatasetError, match=r"a\.json: shapes\[2\]: class 'car'.*did you mean 'cars'"):
        convert_labelme(folder, tmp_path / "o2.json", classes=classes)


def test_errors(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"must be a \.json file"):
        convert_labelme(folder, tmp_path / "out.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no labelme .json file"):
        convert_labelme(tmp_path / "empty", tmp_path / "out.json")
    bad = json.loads((folder / "a.json").read_text())
    bad["shapes"] = [_shape("car", [[1, 1], [2, 2]])]
    (folder / "a.json").write_text(json.dumps(bad))
    with pytest.raises(DatasetError, match=r"shapes\[0\]: a polygon needs at least 3 points"):
        convert_labelme(folder, tmp_path / "out.json")
