"""Shared converter helpers: image sizes from headers (EXIF orientation like cv2), class-name files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from detcli.data.converters import image_size, read_class_names
from detcli.errors import DatasetError


@pytest.mark.parametrize(("orientation", "expected"), [(1, (30, 20)), (6, (20, 30)), (8, (20, 30)), (3, (30, 20))])
def test_image_size_follows_exif_orientation_like_cv2(tmp_path: Path, orientation: int, expected: tuple) -> None:
    path = tmp_path / "a.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(path, exif=exif)
    assert image_size(path) == expected
    h, w = cv2.imread(str(path)).shape[:2]
    assert (w, h) == expected


def test_image_size_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="image not found"):
        image_size(tmp_path / "none.jpg")
    (tmp_path / "x.png").write_text("text")
    with pytest.raises(DatasetError, match=r"x\.png: not an image or corrupted"):
        image_size(tmp_path / "x.png")


def test_class_name_files(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("cat\n\n dog \n")
    assert read_class_names(tmp_path / "a.txt") == ("cat", "dog")
    (tmp_path / "b.yaml").write_text("names: [cat, dog]\n")
    assert read_class_names(tmp_path / "b.yaml") == ("cat", "dog")
    (tmp_path / "c.yaml").write_text("names: {0: cat, 2: dog}\n")
    with pytest.raises(DatasetError, match="must be 0..1 without gaps"):
        read_class_names(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("names: [cat\n")
    with pytest.raises(DatasetError, match="not valid YAML"):
        read_class_names(tmp_path / "d.yaml")
    (tmp_path / "e.txt").write_text("\n")
    with pytest.raises(DatasetError, match="is empty"):
        read_class_names(tmp_path / "e.txt")
