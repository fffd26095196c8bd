"""Helpers for the data tests: pipelines and tiny COCO datasets written to a temporary folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

MEAN = [123.675, 116.28, 103.53]
STD = [58.395, 57.12, 57.375]


def train_pipeline(img_scale: tuple[int, int] = (1333, 800), flip_ratio: float = 0.0) -> list[dict[str, Any]]:
    return [
        {"type": "LoadImageFromFile"},
        {"type": "LoadAnnotations", "with_bbox": True},
        {"type": "Resize", "img_scale": img_scale, "keep_ratio": True},
        {"type": "RandomFlip", "flip_ratio": flip_ratio},
        {"type": "Normalize", "mean": MEAN, "std": STD, "to_rgb": True},
        {"type": "Pad", "size_divisor": 32},
        {"type": "DefaultFormatBundle"},
        {"type": "Collect", "keys": ["img", "gt_bboxes", "gt_labels", "gt_bboxes_ignore"]},
    ]


def tta_pipeline(img_scale: tuple[int, int] = (1333, 800), flip: bool = False) -> list[dict[str, Any]]:
    return [
        {"type": "LoadImageFromFile"},
        {"type": "MultiScaleFlipAug", "img_scale": img_scale, "flip": flip, "transforms": [
            {"type": "Resize", "keep_ratio": True},
            {"type": "RandomFlip"},
            {"type": "Normalize", "mean": MEAN, "std": STD, "to_rgb": True},
            {"type": "Pad", "size_divisor": 32},
            {"type": "DefaultFormatBundle"},
            {"type": "Collect", "keys": ["img"]},
        ]},
    ]


def write_coco(root: Path, images: list[dict[str, Any]], annotations: list[dict[str, Any]],
               categories: list[dict[str, Any]], write_images: bool = True, name: str = "ann.json") -> Path:
    """Write ``root/name`` and (optionally) a random JPEG per image into ``root/images``."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    if write_images:
        rng = np.random.default_rng(0)
        for img in images:
            arr = rng.integers(0, 256, (img["height"], img["width"], 3), dtype=np.uint8)
            cv2.imwrite(str(root / "images" / img["file_name"]), arr)
    path = root / name
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def five_categories() -> list[dict[str, Any]]:
    # non-contiguous ids, as in the spec: 1, 3, 4, 16, 17 -> labels 0..4
    return [{"id": i, "name": n} for i, n in zip((1, 3, 4, 16, 17), ("a", "b", "c", "d", "e"))]




#: ``../shared/data/coco128/images`` next to the checkout (absent on CI: tests using it skip)
COCO128_IMAGES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "coco128" / "images"


def write_jpegs(root: Path, sizes: list[tuple[int, int]], seed: int = 0) -> list[Path]:
    """Write one JPEG per ``(h, w)``: smooth colour fields plus noise (chroma-subsampled, quality 90)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i, (h, w) in enumerate(sizes):
        coarse = rng.uniform(0, 255, (max(h // 16, 2), max(w // 16, 2), 3)).astype(np.float32)
        img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC) + rng.normal(0, 20, (h, w, 3))
        path = root / f"img{i}_{h}x{w}.jpg"
        cv2.imwrite(str(path), np.clip(img, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(path)
    return paths


def coco128_jpegs(n: int) -> list[Path]:
    """The first ``n`` JPEGs of ``../shared/data/coco128`` (skips the test when it is absent)."""
    import pytest

    paths = sorted(COCO128_IMAGES.rglob("*.jpg"))[:n] if COCO128_IMAGES.is_dir() else []
    if not paths:
        pytest.skip(f"{COCO128_IMAGES} is absent")
    return paths
