"""images2coco: a test-set json with images and categories only."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from detcli.data.converters import images_to_coco
from detcli.errors import DatasetError


def test_images_sizes_categories_and_exclusions(tmp_path: Path) -> None:
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "imgs" / "b.jpg"), np.zeros((12, 34, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "imgs" / "sub" / "a.png"), np.zeros((5, 6, 3), np.uint8))
    (tmp_path / "imgs" / "readme.txt").write_text("not an image")
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    result = images_to_coco(tmp_path / "imgs", tmp_path / "classes.txt", tmp_path / "test.json")
    data = json.loads((tmp_path / "test.json").read_text())
    assert data == {"images": [{"id": 1, "file_name": "b.jpg", "width": 34, "height": 12},
                               {"id": 2, "file_name": "sub/a.png", "width": 6, "height": 5}],
                    "annotations": [], "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}
    assert result.outputs[0].report.ok
    images_to_coco(tmp_path / "imgs", tmp_path / "classes.txt", tmp_path / "t2.json", exclude_extensions=["png"])
    assert [i["file_name"] for i in json.loads((tmp_path / "t2.json").read_text())["images"]] == ["b.jpg"]
    with pytest.raises(DatasetError, match="no images found"):
        images_to_coco(tmp_path / "imgs", tmp_path / "classes.txt", tmp_path / "t3.json", exclude_extensions=[".png", "JPG"])
    with pytest.raises(DatasetError, match="image folder not found"):
        images_to_coco(tmp_path / "nope", tmp_path / "classes.txt", tmp_path / "t4.json")
    with pytest.raises(DatasetError, match="class names file not found"):
        images_to_coco(tmp_path / "imgs", tmp_path / "nope.txt", tmp_path / "t4.json")


def test_corrupted_image_is_named(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (tmp_path / "classes.txt").write_text("cat\n")
    with pytest.raises(DatasetError, match=r"broken\.jpg: not an image or corrupted"):
        images_to_coco(tmp_path / "imgs", tmp_path / "classes.txt", tmp_path / "t.json")
    assert not (tmp_path / "t.json").exists()
