"""Fixtures of the data tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.data.helpers import five_categories, write_coco


@pytest.fixture
def small_coco(tmp_path: Path) -> Path:
    """Three 64x48 images: img 1 with 3 boxes (one crowd), img 2 with one box of 'e', img 3 empty."""
    images = [{"id": k, "file_name": f"{k:03d}.jpg", "height": 48, "width": 64} for k in (1, 2, 3)]
    anns = [
        {"id": 10, "image_id": 1, "category_id": 3, "bbox": [4, 6, 10, 20], "area": 200, "iscrowd": 0},
        {"id": 11, "image_id": 1, "category_id": 16, "bbox": [20, 10, 30, 30], "area": 900, "iscrowd": 0},
        {"id": 12, "image_id": 1, "category_id": 1, "bbox": [0, 0, 8, 8], "area": 64, "iscrowd": 1},
        {"id": 13, "image_id": 2, "category_id": 17, "bbox": [10, 10, 5, 5], "area": 25, "iscrowd": 0},
    ]
    return write_coco(tmp_path, images, anns, five_categories())
