"""check_coco: what counts as error, warning and info, and which files are not COCO files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detcli.data.converters import check_coco, check_coco_file
from detcli.errors import DatasetError


def _clean() -> dict:
    return {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 50},
                   {"id": 2, "file_name": "b.jpg", "width": 100, "height": 50}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }


def _codes(report, severity: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {i.code: i.count for i in report.issues if i.severity == severity}


def test_clean_file_has_only_info() -> None:
    report = check_coco(_clean(), "x.json")
    assert report.ok and report.num_errors == 0 and report.num_warnings == 0
    assert _codes(report, "info") == {"image_without_annotations": 1, "unused_category": 1}
    assert report.per_category == {"cat": 1, "dog": 0}
    assert (report.num_images, report.num_annotations, report.num_categories) == (2, 1, 2)


def test_errors_and_warnings_are_classified() -> None:
    data = _clean()
    data["images"].append({"id": 2, "file_name": "a.jpg", "width": 100, "height": 50})
    data["categories"].append({"id": 5, "name": "cat"})
    data["annotations"] += [
        {"id": 1, "image_id": 1, "category_id": 9, "bbox": [0, 0, 5, 5]},       # duplicate id, undeclared category
        {"id": 3, "image_id": 7, "category_id": 1, "bbox": [0, 0, 5, 5]},       # missing image
        {"id": 4, "image_id": 1, "category_id": 1, "bbox": [0, 0, 0, 5]},       # zero width
        {"id": 5, "image_id": 1, "category_id": 1, "bbox": [0, 0, 5, -1]},      # negative height
        {"id": 6, "image_id": 1, "category_id": 1, "bbox": [100, 0, 5, 5]},     # entirely outside (x == width)
        {"id": 7, "image_id": 1, "category_id": 1, "bbox": [90, 40, 20, 20]},   # partly outside
        {"id": 8, "image_id": 1, "category_id": 1, "bbox": [90, 40, 10, 10.005]},  # within tolerance
        {"id": 9, "image_id": 1, "category_id": 1, "bbox": [5, 5, 0.5, 3]},     # thinner than 1 px
        {"id": 10, "image_id": 1, "category_id": 1, "bbox": [5, 5, 3]},         # malformed
        {"id": 11, "image_id": 1, "category_id": 2, "bbox": [5, 5, 3, 3], "ignore": 1, "iscrowd": 0},
    ]
    report = check_coco(data, "x.json")
    assert not report.ok
    assert _codes(report, "error") == {
        "duplicate_image_id": 1, "duplicate_annotation_id": 1, "undeclared_category": 1, "missing_image": 1,
        "degenerate_box": 2, "box_outside_image": 1, "malformed_bbox": 1,
    }
    assert _codes(report, "warning") == {"duplicate_category_name": 1, "duplicate_file_name": 1,
                                         "box_partly_outside": 1, "tiny_box": 1}
    info = _codes(report, "info")
    assert info["category_id_gaps"] == 1 and info["ignored_annotations"] == 1
    gap = next(i for i in report.issues if i.code == "category_id_gaps")
    assert gap.examples == ["ids 1..5, missing 3, 4"]
    assert [i.severity for i in report.issues] == sorted((i.severity for i in report.issues),
                                                          key=["error", "warning", "info"].index)
    assert report.num_errors == 8 and report.num_warnings == 4
    missing = next(i for i in report.issues if i.code == "missing_image")
    assert missing.examples == ["annotation id 3 (image_id 7)"]


def test_missing_files_with_img_dir(tmp_path: Path) -> None:
    import cv2
    import numpy as np

    (tmp_path / "a.jpg").write_bytes(cv2.imencode(".jpg", np.zeros((50, 100, 3), np.uint8))[1].tobytes())
    report = check_coco(_clean(), img_dir=tmp_path)
    assert _codes(report, "error") == {"missing_file": 1}
    (tmp_path / "a.jpg").write_bytes(b"")  # an empty file is no image (was accepted before)
    assert _codes(check_coco(_clean(), img_dir=tmp_path), "error") == {"missing_file": 1, "empty_image": 1}
    assert next(i for i in report.issues if i.code == "missing_file").examples == ["b.jpg (image id 2)"]


def test_empty_file_and_only_warnings_pass() -> None:
    report = check_coco({"images": [], "categories": []}, "e.json")
    assert report.ok and report.issues == []
    data = _clean()
    data["annotations"][0]["bbox"] = [95, 10, 20, 20]
    assert check_coco(data).ok


def test_wrong_file_kinds(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"image_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5, "category_id": 1}]))
    with pytest.raises(DatasetError, match=r"results\.json: not a COCO annotation file: a list"):
        check_coco_file(results)
    (tmp_path / "t.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"t\.json: not valid JSON"):
        check_coco_file(tmp_path / "t.json")
    (tmp_path / "o.json").write_text('{"images": []}')
    with pytest.raises(DatasetError, match="missing the 'images' and/or 'categories'"):
        check_coco_file(tmp_path / "o.json")
    with pytest.raises(DatasetError, match="is a folder"):
        check_coco_file(tmp_path)
    with pytest.raises(DatasetError, match="annotation file not found"):
        check_coco_file(tmp_path / "none.json")
    (tmp_path / "ok.json").write_text(json.dumps(_clean()))
    with pytest.raises(DatasetError, match="image folder not found"):
        check_coco_file(tmp_path / "ok.json", img_dir=tmp_path / "nope")


def test_list_and_dict_ids_are_reported_not_hashed() -> None:
    data = _clean()
    data["images"].append({"id": [7, 8], "file_name": {"x": 1}, "width": 10, "height": 10})
    data["categories"].append({"id": {"a": 1}, "name": ["dog"]})
    data["annotations"] += [
        {"id": [1], "image_id": [7, 8], "category_id": {"a": 1}, "bbox": [1, 1, 2, 2]},
        {"id": 99, "image_id": {"k": [1]}, "category_id": [1], "bbox": [1, 1, 2, 2]},
    ]
    report = check_coco(data, "x.json")
    bad_keys = next(i for i in report.issues if i.code == "malformed_key")
    assert bad_keys.severity == "error" and bad_keys.count == 9
    assert bad_keys.examples[:3] == ["images[2].id = [7, 8]", 'images[2].file_name = {"x": 1}', 'categories[2].id = {"a": 1}']
    codes = _codes(report, "error")
    # a list id equals nothing: the annotations point at no image and no declared category
    assert codes["missing_image"] == 2 and codes["undeclared_category"] == 2 and codes["malformed_category"] == 1
    assert not report.ok


def test_deep_nesting_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DatasetError, match=r"deep\.json: JSON nested deeper than the parser's limit \(about \d+ levels; "
                                           r"COCO files need 5\); give a COCO annotation \.json file$"):
        check_coco_file(path)
