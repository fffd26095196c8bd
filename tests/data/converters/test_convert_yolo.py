"""YOLO labels to COCO: absolute boxes from header sizes, polygons, missing labels, orphans, bad lines."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from detcli.data.converters import convert_yolo, read_class_names
from detcli.errors import DatasetError


def _image(path: Path, w: int, h: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.zeros((h, w, 3), np.uint8))


@pytest.fixture
def yolo_root(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    _image(root / "images" / "train" / "a.jpg", 64, 32)
    _image(root / "images" / "train" / "b.png", 20, 10)  # no label file: no boxes
    _image(root / "images" / "val" / "c.jpg", 50, 40)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    (root / "labels" / "train" / "a.txt").write_text("1 0.5 0.5 0.25 0.5\n\n0 0.0 0.0 0.5 0.0 0.5 0.5\n")
    (root / "labels" / "train" / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    (root / "labels" / "val" / "c.txt").write_text("")
    (tmp_path / "names.txt").write_text("cat\ndog\n")
    return root


def test_boxes_polygons_and_orphans(yolo_root: Path, tmp_path: Path) -> None:
    result = convert_yolo(yolo_root, tmp_path / "names.txt", tmp_path / "out")
    assert [(o.split, o.img_prefix) for o in result.outputs] == [
        ("train", yolo_root / "images" / "train"), ("val", yolo_root / "images" / "val")]
    train = json.loads((tmp_path / "out" / "instances_train.json").read_text())
    assert train["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    assert [(i["file_name"], i["width"], i["height"]) for i in train["images"]] == [("a.jpg", 64, 32), ("b.png", 20, 10)]
    box, poly = train["annotations"]
    assert box["category_id"] == 2 and box["bbox"] == [24.0, 8.0, 16.0, 16.0] and box["area"] == 256.0
    assert "segmentation" not in box
    assert poly["category_id"] == 1 and poly["bbox"] == [0.0, 0.0, 32.0, 16.0]
    assert poly["segmentation"] == [[0.0, 0.0, 32.0, 0.0, 32.0, 16.0]] and poly["area"] == 256.0
    assert all(a["image_id"] == 1 for a in train["annotations"])  # b.png has none
    val = json.loads((tmp_path / "out" / "instances_val.json").read_text())
    assert len(val["images"]) == 1 and val["annotations"] == []
    assert len(result.warnings) == 1 and "orphan.txt: label file without an image" in result.warnings[0]
    assert result.num_errors == 0


def test_bad_lines_name_file_line_and_fix(yolo_root: Path, tmp_path: Path) -> None:
    (yolo_root / "labels" / "val" / "c.txt").write_text("0 0.5 0.5 0.1\n0 0.5 0.5 0.1 0.1\n5 0.5 0.5 0.1 0.1\nx 1 2 3 4\n")
    with pytest.raises(DatasetError) as e:
        convert_yolo(yolo_root, tmp_path / "names.txt", tmp_path / "out")
    msg = str(e.value)
    assert msg.startswith("3 malformed label lines")
    assert "c.txt:1: 4 values; expected 'class cx cy w h'" in msg
    assert "c.txt:3: class 5 is not an index of the 2 names (0..1)" in msg
    assert "c.txt:4: not numbers" in msg and "c.txt:2" not in msg
    assert not (tmp_path / "out").exists()


def test_flat_layout_and_data_yaml_names(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    _image(root / "images" / "x.jpg", 10, 10)
    (root / "labels").mkdir(parents=True)
    (root / "labels" / "x.txt").write_text("2 0.5 0.5 1.0 1.0\n")
    yaml = tmp_path / "data.yaml"
    yaml.write_text("path: .\nnames:\n  0: a\n  1: b\n  2: c d\n")
    assert read_class_names(yaml) == ("a", "b", "c d")
    result = convert_yolo(root, yaml, tmp_path / "out")
    data = json.loads((tmp_path / "out" / "instances_flat.json").read_text())
    assert data["annotations"][0]["bbox"] == [0.0, 0.0, 10.0, 10.0] and data["annotations"][0]["category_id"] == 3
    assert result.outputs[0].img_prefix == root / "images"


def test_clear_errors_on_wrong_inputs(yolo_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"images/ folder of the YOLO dataset \(ROOT must hold images/ and labels/\) not found"):
        convert_yolo(yolo_root / "images", tmp_path / "names.txt", tmp_path / "out")
    bad = tmp_path / "names.json"
    bad.write_text("{}")
    with pytest.raises(DatasetError, match="wrong file kind"):
        convert_yolo(yolo_root, bad, tmp_path / "out")
    (tmp_path / "d.yaml").write_text("nc: 2\n")
    with pytest.raises(DatasetError, match="needs a 'names' list"):
        convert_yolo(yolo_root, tmp_path / "d.yaml", tmp_path / "out")
    (tmp_path / "dup.txt").write_text("a\na\n")
    with pytest.raises(DatasetError, match="more than once"):
        convert_yolo(yolo_root, tmp_path / "dup.txt", tmp_path / "out")


def test_box_partly_outside_is_reported_by_the_check(yolo_root: Path, tmp_path: Path) -> None:
    (yolo_root / "labels" / "val" / "c.txt").write_text("0 0.9 0.5 0.4 0.2\n")
    result = convert_yolo(yolo_root, tmp_path / "names.txt", tmp_path / "out")
    report = result.outputs[1].report
    assert report.ok and [i.code for i in report.issues if i.severity == "warning"] == ["box_partly_outside"]
