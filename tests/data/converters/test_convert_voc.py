"""VOC XML to COCO: mmdet's coordinate convention, difficult as ignore, part boxes skipped, splits."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from detcli.data.coco import CocoDataset
from detcli.data.converters import VOC_CLASSES, convert_voc
from detcli.errors import DatasetError


def _xml(w: int, h: int, objects: list[str]) -> str:
    return (f"<annotation><filename>x.jpg</filename><size><width>{w}</width><height>{h}</height><depth>3</depth>"
            f"</size>{''.join(objects)}</annotation>")


def _obj(name: str, box: tuple[int, int, int, int], difficult: int = 0, parts: str = "") -> str:
    x1, y1, x2, y2 = box
    return (f"<object><name>{name}</name><pose>Left</pose><truncated>0</truncated><difficult>{difficult}</difficult>"
            f"<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox>{parts}</object>")


def _part(name: str, box: tuple[int, int, int, int]) -> str:
    x1, y1, x2, y2 = box
    return (f"<part><name>{name}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>"
            f"<ymax>{y2}</ymax></bndbox></part>")


@pytest.fixture
def devkit(tmp_path: Path) -> Path:
    year = tmp_path / "VOCdevkit" / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (year / sub).mkdir(parents=True)
    person = _obj("person", (11, 21, 50, 60), parts=_part("head", (20, 22, 30, 32)) + _part("hand", (12, 40, 16, 44)))
    (year / "Annotations" / "000001.xml").write_text(_xml(80, 64, [person, _obj("dog", (2, 3, 9, 12), difficult=1)]))
    (year / "Annotations" / "000002.xml").write_text(_xml(40, 30, [_obj("car", (1, 1, 40, 30))]))
    for stem, (w, h) in (("000001", (80, 64)), ("000002", (40, 30))):
        cv2.imwrite(str(year / "JPEGImages" / f"{stem}.jpg"), np.zeros((h, w, 3), np.uint8))
    (year / "ImageSets" / "Main" / "train.txt").write_text("000001\n")
    (year / "ImageSets" / "Main" / "val.txt").write_text("000002\n")
    (year / "ImageSets" / "Main" / "trainval.txt").write_text("000001\n000002\n\n")
    return tmp_path / "VOCdevkit"


def test_boxes_ignore_flags_and_parts(devkit: Path, tmp_path: Path) -> None:
    result = convert_voc(devkit, tmp_path / "out")
    assert [o.split for o in result.outputs] == ["voc07_train", "voc07_val", "voc07_trainval"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "voc07_train.json", "voc07_trainval.json", "voc07_val.json"]
    data = json.loads((tmp_path / "out" / "voc07_train.json").read_text())
    assert [c["name"] for c in data["categories"]] == list(VOC_CLASSES)
    assert data["images"] == [{"id": 1, "file_name": "VOC2007/JPEGImages/000001.jpg", "width": 80, "height": 64}]
    person, dog = data["annotations"]  # head and hand are parts of the person, not objects
    assert person["bbox"] == [10.0, 20.0, 40.0, 40.0] and person["area"] == 1600.0
    assert person["category_id"] == VOC_CLASSES.index("person") + 1
    assert (person["ignore"], person["iscrowd"]) == (0, 0)
    assert dog["bbox"] == [1.0, 2.0, 8.0, 10.0]
    assert (dog["ignore"], dog["iscrowd"]) == (1, 0)
    assert all(o.report.ok for o in result.outputs) and result.warnings == []


def test_converted_file_loads_difficult_as_ignore_region(devkit: Path, tmp_path: Path) -> None:
    convert_voc(devkit, tmp_path / "out")
    ds = CocoDataset(ann_file=str(tmp_path / "out" / "voc07_train.json"), pipeline=[], img_prefix=str(devkit))
    ann = ds.get_ann_info(0)
    np.testing.assert_array_equal(ann["bboxes"], [[10, 20, 50, 60]])  # x2 = xmax, y2 = ymax
    np.testing.assert_array_equal(ann["labels"], [VOC_CLASSES.index("person")])
    np.testing.assert_array_equal(ann["bboxes_ignore"], [[1, 2, 9, 12]])


def test_single_year_folder_and_custom_classes(devkit: Path, tmp_path: Path) -> None:
    classes = tmp_path / "classes.txt"
    classes.write_text("person\ndog\ncar\n")
    result = convert_voc(devkit / "VOC2007", tmp_path / "out", classes=classes)
    data = json.loads(result.outputs[1].ann_file.read_text())
    assert data["categories"] == [{"id": 1, "name": "person"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "car"}]
    assert data["images"][0]["file_name"] == "JPEGImages/000002.jpg"
    assert data["annotations"][0]["category_id"] == 3 and data["annotations"][0]["bbox"] == [0.0, 0.0, 40.0, 30.0]


def test_unknown_class_and_bad_folders(devkit: Path, tmp_path: Path) -> None:
    xml = devkit / "VOC2007" / "Annotations" / "000002.xml"
    xml.write_text(_xml(40, 30, [_obj("persn", (1, 1, 5, 5))]))
    with pytest.raises(DatasetError, match=r"000002\.xml: object 0: class 'persn'.*did you mean 'person'.*--classes"):
        convert_voc(devkit, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written when one file is bad
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="not a VOC devkit"):
        convert_voc(tmp_path / "empty", tmp_path / "o2")
    with pytest.raises(DatasetError, match="not found"):
        convert_voc(tmp_path / "nope", tmp_path / "o3")


def test_listed_image_without_xml_is_a_warning(devkit: Path, tmp_path: Path) -> None:
    year = devkit / "VOC2007"
    cv2.imwrite(str(year / "JPEGImages" / "000003.jpg"), np.zeros((20, 30, 3), np.uint8))
    (year / "ImageSets" / "Main" / "test.txt").write_text("000003\n")
    result = convert_voc(devkit, tmp_path / "out")
    test = json.loads((tmp_path / "out" / "voc07_test.json").read_text())
    assert test["images"][0]["width"] == 30 and test["images"][0]["height"] == 20 and test["annotations"] == []
    assert len(result.warnings) == 1 and "000003" in result.warnings[0]
    (year / "ImageSets" / "Main" / "test.txt").write_text("000004\n")
    with pytest.raises(DatasetError, match=r"test\.txt: '000004' has neither"):
        convert_voc(devkit, tmp_path / "out")
