"""Instance masks through the data layer: loading (polygons, RLE, crowd), transforms, collate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from detcli.data import CocoDataset, ShapesDataset, collate
from detcli.data.transforms import LoadAnnotations, RandomCrop
from detcli.errors import ConfigError, DatasetError
from detcli.registry import TRANSFORMS, build
from detcli.structures import BitmapMasks, PolygonMasks

from tests.data.helpers import five_categories, write_coco

NORM = {"type": "Normalize", "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "to_rgb": False}
KEYS = ["img", "gt_bboxes", "gt_labels", "gt_bboxes_ignore", "gt_masks"]


def mask_pipeline(poly2mask: bool, flip: str | None = None, crop: dict | None = None) -> list[dict]:
    steps = [{"type": "LoadImageFromFile"}, {"type": "LoadAnnotations", "with_mask": True, "poly2mask": poly2mask}]
    if crop:
        steps.append({"type": "RandomCrop", **crop})
    steps.append({"type": "Resize", "img_scale": (200, 150), "keep_ratio": True})
    if flip:
        steps.append({"type": "RandomFlip", "flip_ratio": 1.0, "direction": flip})
    steps += [NORM, {"type": "Pad", "size_divisor": 32}, {"type": "DefaultFormatBundle"},
              {"type": "Collect", "keys": KEYS}]
    return steps


def test_shapes_polygons_are_exact() -> None:
    pipeline = [{"type": "LoadImageFromFile"}, {"type": "LoadAnnotations", "with_mask": True, "poly2mask": False},
                {"type": "DefaultFormatBundle"}, {"type": "Collect", "keys": KEYS}]
    ds = ShapesDataset(pipeline=pipeline, num_images=3)
    for i in range(3):
        gt = ds[i].gt
        assert isinstance(gt.masks, PolygonMasks) and len(gt.masks) == len(gt)
        anns = ds.coco.loadAnns(ds.coco.getAnnIds(imgIds=[ds.image_ids[i]]))
        np.testing.assert_allclose(gt.masks.areas, [a["area"] for a in anns], rtol=1e-6)
        np.testing.assert_allclose(gt.masks.get_bboxes(), gt.boxes.tensor.numpy(), atol=1e-3)


@pytest.mark.parametrize("flip", [None, "horizontal", "vertical", "diagonal"])
def test_polygon_masks_stay_on_their_boxes(flip: str | None) -> None:
    ds = ShapesDataset(pipeline=mask_pipeline(poly2mask=False, flip=flip), num_images=2)
    s = ds[0]
    masks = s.gt.masks
    assert (masks.height, masks.width) == s.meta.pad_shape  # canvas = the padded image
    np.testing.assert_allclose(masks.get_bboxes(), s.gt.boxes.tensor.numpy(), atol=1e-3)


@pytest.mark.parametrize("flip", [None, "horizontal", "diagonal"])
def test_bitmap_masks_stay_on_their_boxes(flip: str | None) -> None:
    ds = ShapesDataset(pipeline=mask_pipeline(poly2mask=True, flip=flip), num_images=2)
    s = ds[1]
    masks = s.gt.masks
    assert isinstance(masks, BitmapMasks) and len(masks) == len(s.gt)
    assert masks.masks.shape[1:] == s.meta.pad_shape and s.image.shape[1:] == s.meta.pad_shape
    got, boxes = masks.get_bboxes(), s.gt.boxes.tensor.numpy()
    assert np.abs(got - boxes).max() <= 1.5  # nearest-neighbour resize: within about a pixel
    # the mask pixels are where the image shows the shape: the same flip was applied to both
    raw = ShapesDataset(pipeline=mask_pipeline(poly2mask=True), num_images=2)[1]
    expected = raw.gt.masks.masks
    if flip in ("horizontal", "diagonal"):
        h, w = raw.meta.img_shape
        expected = expected[:, :h, :w][:, :, ::-1]
        if flip == "diagonal":
            expected = expected[:, ::-1]
        assert np.array_equal(masks.masks[:, :h, :w], expected)


def test_masks_survive_collate_and_to_device() -> None:
    ds = ShapesDataset(pipeline=mask_pipeline(poly2mask=True), num_images=2)
    batch = collate([ds[0], ds[1]])
    for gt, sample in zip(batch.targets, (ds[0], ds[1])):
        assert len(gt.masks) == len(gt.boxes) > 0
        assert np.array_equal(gt.masks.masks, sample.gt.masks.masks)
        moved = gt.to("cpu")
        assert moved.masks is gt.masks and moved.boxes.tensor.device.type == "cpu"


def test_collect_wants_loaded_masks() -> None:
    pipeline = [{"type": "LoadImageFromFile"}, {"type": "LoadAnnotations"}, {"type": "DefaultFormatBundle"},
                {"type": "Collect", "keys": KEYS}]
    with pytest.raises(ConfigError, match="with_mask"):
        ShapesDataset(pipeline=pipeline, num_images=1)[0]


def _rle_coco(tmp_path: Path) -> Path:
    """One 40x50 image: a polygon square, a compressed-RLE and an uncompressed-RLE object, and a
    crowd region (RLE) that must become an ignore box without a mask."""
    h, w = 40, 50
    block = np.zeros((h, w), np.uint8)
    block[20:30, 5:15] = 1
    compressed = mask_utils.encode(np.asfortranarray(block))
    compressed = {"size": compressed["size"], "counts": compressed["counts"].decode()}
    strip = np.zeros((h, w), np.uint8)
    strip[2:6, 30:48] = 1
    runs, prev, count = [], 0, 0
    for v in strip.flatten(order="F"):
        if v != prev:
            runs.append(count)
            prev, count = v, 0
        count += 1
    runs.append(count)
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 8, 8], "area": 64, "iscrowd": 0,
         "segmentation": [[2, 2, 10, 2, 10, 10, 2, 10]]},
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [5, 20, 10, 10], "area": 100, "iscrowd": 0,
         "segmentation": compressed},
        {"id": 3, "image_id": 1, "category_id": 4, "bbox": [30, 2, 18, 4], "area": 72, "iscrowd": 0,
         "segmentation": {"size": [h, w], "counts": runs}},
        {"id": 4, "image_id": 1, "category_id": 1, "bbox": [20, 20, 20, 15], "area": 300, "iscrowd": 1,
         "segmentation": {"size": [h, w], "counts": [h * 20 + 20, 15, 25, 15]}},
    ]
    images = [{"id": 1, "file_name": "a.jpg", "height": h, "width": w}]
    return write_coco(tmp_path, images, anns, five_categories())


def test_coco_polygons_and_rle(tmp_path: Path) -> None:
    ann = _rle_coco(tmp_path)
    pipeline = [{"type": "LoadImageFromFile"}, {"type": "LoadAnnotations", "with_mask": True},
                NORM, {"type": "DefaultFormatBundle"}, {"type": "Collect", "keys": KEYS}]
    ds = CocoDataset(ann_file=str(ann), img_prefix=str(tmp_path / "images"), pipeline=pipeline)
    gt = ds[0].gt
    assert len(gt) == 3 and len(gt.masks) == 3  # the crowd region has no mask
    assert gt.ignore_boxes.tensor.tolist() == [[20.0, 20.0, 40.0, 35.0]]
    assert gt.masks.areas.tolist() == [64.0, 100.0, 72.0]
    assert gt.masks.masks[1, 20:30, 5:15].all() and gt.masks.masks[2, 2:6, 30:48].all()
    np.testing.assert_allclose(gt.masks.get_bboxes(), gt.boxes.tensor.numpy())
    with pytest.raises(DatasetError, match="instance 1 has an RLE mask"):
        CocoDataset(ann_file=str(ann), img_prefix=str(tmp_path / "images"),
                    pipeline=[{"type": "LoadAnnotations", "with_mask": True, "poly2mask": False}])[0]


@pytest.mark.parametrize("seg, match", [
    (None, "instance 0 has no segmentation"),
    ({"size": [9, 9], "counts": "abc"}, r"RLE size \[9, 9\] differs"),
    ([[1, 2, 3]], "even length"),
])
def test_bad_segmentations_name_the_instance(seg, match) -> None:
    ann = {"bboxes": np.zeros((1, 4), np.float32), "labels": np.zeros(1, np.int64), "masks": [seg]}
    results = {"ann_info": ann, "img_info": {"height": 8, "width": 8, "filename": "x.jpg"}, "sample_idx": 3}
    with pytest.raises(DatasetError, match=match):
        LoadAnnotations(with_mask=True)(results)


def _crop_results(kind: str) -> dict:
    img = np.zeros((40, 60, 3), np.uint8)
    polys = PolygonMasks([[np.array([2.0, 2, 12, 2, 12, 12, 2, 12])],
                          [np.array([30.0, 20, 50, 20, 50, 36, 30, 36])]], 40, 60)
    masks = polys if kind == "polygon" else polys.to_bitmap()
    return {"img": img, "img_shape": img.shape, "img_fields": ["img"], "bbox_fields": ["gt_bboxes"],
            "mask_fields": ["gt_masks"], "gt_bboxes": np.array([[2, 2, 12, 12], [30, 20, 50, 36]], np.float32),
            "gt_labels": np.array([0, 1]), "gt_masks": masks, "rng": np.random.default_rng(0)}


@pytest.mark.parametrize("kind", ["bitmap", "polygon"])
def test_random_crop_drops_boxes_with_their_masks(kind: str) -> None:
    crop = RandomCrop((20, 30))
    for seed in range(20):
        r = _crop_results(kind)
        r["rng"] = np.random.default_rng(seed)
        out = crop(r)
        if out is None:  # the window missed both boxes
            continue
        assert out["img"].shape == (20, 30, 3) and out["img_shape"] == (20, 30, 3)
        n = len(out["gt_bboxes"])
        assert len(out["gt_labels"]) == n == len(out["gt_masks"]) >= 1
        m = out["gt_masks"]
        assert (m.height, m.width) == (20, 30)
        assert np.array_equal(m.to_ndarray().astype(bool).any(axis=(1, 2)), np.ones(n, bool))
        np.testing.assert_allclose(m.get_bboxes(), out["gt_bboxes"], atol=1e-4)


def test_random_crop_negative_and_empty() -> None:
    r = _crop_results("bitmap")
    r["gt_bboxes"] = np.zeros((0, 4), np.float32)
    r["gt_labels"] = np.zeros(0, np.int64)
    r["gt_masks"] = BitmapMasks(np.zeros((0, 40, 60), np.uint8), 40, 60)
    assert RandomCrop((20, 30))(dict(r)) is None
    out = RandomCrop((20, 30), allow_negative_crop=True)(r)
    assert out["gt_masks"].to_ndarray().shape == (0, 20, 30) and out["gt_bboxes"].shape == (0, 4)


def test_random_crop_sizes_and_recompute() -> None:
    r = _crop_results("polygon")
    r["gt_bboxes"] = np.array([[0, 0, 20, 20], [30, 20, 50, 36]], np.float32)  # too big for mask 0
    out = RandomCrop((1.0, 1.0), crop_type="relative", recompute_bbox=True)(r)
    assert out["img"].shape[:2] == (40, 60)
    np.testing.assert_allclose(out["gt_bboxes"], [[2, 2, 12, 12], [30, 20, 50, 36]])
    rng = np.random.default_rng(1)
    sizes = {RandomCrop((10, 30), crop_type="absolute_range")._crop_hw(40, 60, rng) for _ in range(50)}
    assert all(10 <= h <= 30 and 10 <= w <= 30 for h, w in sizes) and len(sizes) > 5
    h, w = RandomCrop((0.5, 0.5), crop_type="relative_range")._crop_hw(40, 60, rng)
    assert 20 <= h <= 40 and 30 <= w <= 60
    with pytest.raises(ValueError, match="crop_type"):
        RandomCrop((1, 1), crop_type="square")
    with pytest.raises(ValueError, match="relative crop_size"):
        RandomCrop((0, 1), crop_type="relative")
    assert isinstance(build({"type": "RandomCrop", "crop_size": [8, 8]}, TRANSFORMS), RandomCrop)


def test_random_crop_in_a_mask_pipeline() -> None:
    ds = ShapesDataset(pipeline=mask_pipeline(poly2mask=True, crop={"crop_size": [160, 160]}), num_images=2)
    s = ds[0]
    assert len(s.gt.masks) == len(s.gt) >= 1
    assert np.abs(s.gt.masks.get_bboxes() - s.gt.boxes.tensor.numpy()).max() <= 2.0  # raster + nearest resize
    assert torch.is_tensor(s.image) and s.image.shape[1:] == s.meta.pad_shape
