from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from detcli.data import Sample
from detcli.data.transforms import (
    Collect,
    Compose,
    DefaultFormatBundle,
    ImageToTensor,
    LoadAnnotations,
    LoadImageFromFile,
    MultiScaleFlipAug,
    Normalize,
    PhotoMetricDistortion,
    RandomFlip,
    Resize,
    formatting,
)
from detcli.errors import DatasetError
from detcli.structures.masks import BitmapMasks


def test_normalize_values_and_rgb_swap() -> None:
    img = np.zeros((2, 3, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 10, 20, 30  # B, G, R
    out = Normalize(mean=[1, 2, 3], std=[2, 4, 8], to_rgb=True)({"img": img})
    np.testing.assert_allclose(out["img"][0, 0], [(30 - 1) / 2, (20 - 2) / 4, (10 - 3) / 8])
    assert out["img"].dtype == np.float32
    assert out["img_norm_cfg"] == {"mean": [1.0, 2.0, 3.0], "std": [2.0, 4.0, 8.0], "to_rgb": True}
    out = Normalize(mean=[1, 2, 3], std=[2, 4, 8], to_rgb=False)({"img": img})
    np.testing.assert_allclose(out["img"][0, 0], [(10 - 1) / 2, (20 - 2) / 4, (30 - 3) / 8])
    with pytest.raises(ValueError, match="std must not contain 0"):
        Normalize(mean=[0, 0, 0], std=[1, 0, 1])


def test_photometric_distortion_is_seeded_and_in_range() -> None:
    img = np.random.default_rng(0).integers(0, 256, (16, 16, 3)).astype(np.uint8)
    t = PhotoMetricDistortion()
    a = t({"img": img, "rng": np.random.default_rng(5)})["img"]
    b = t({"img": img, "rng": np.random.default_rng(5)})["img"]
    c = t({"img": img, "rng": np.random.default_rng(6)})["img"]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.dtype == np.float32 and a.shape == img.shape and a.min() >= 0 and a.max() <= 255
    changed = [not np.allclose(t({"img": img, "rng": np.random.default_rng(s)})["img"], img, atol=1) for s in range(10)]
    assert sum(changed) >= 8


def test_collect_builds_sample_with_meta_and_gt() -> None:
    results = {
        "img": np.ones((20, 30, 3), np.float32), "img_info": {"id": 7, "filename": "x.jpg"},
        "filename": "data/x.jpg", "ori_shape": (10, 15, 3), "img_shape": (20, 30, 3), "pad_shape": (32, 32, 3),
        "scale_factor": np.array([2, 2, 2, 2], np.float32), "flip": True, "flip_direction": "horizontal",
        "gt_bboxes": np.array([[1, 2, 3, 4]], np.float32), "gt_labels": np.array([2]),
        "gt_bboxes_ignore": np.zeros((0, 4), np.float32),
        "gt_masks": BitmapMasks(np.ones((1, 20, 30), np.uint8), 20, 30),
    }
    s = Collect(keys=["img", "gt_bboxes", "gt_labels", "gt_masks"])(DefaultFormatBundle()(dict(results)))
    assert isinstance(s, Sample)
    assert s.image.shape == (3, 20, 30) and s.image.dtype == torch.float32
    m = s.meta
    assert (m.image_id, m.filename, m.ori_shape, m.img_shape, m.pad_shape) == (7, "data/x.jpg", (10, 15), (20, 30),
                                                                             (32, 32))
    assert m.scale_factor == (2.0, 2.0, 2.0, 2.0) and m.flip and m.flip_direction == "horizontal"
    assert s.gt.image_size == (20, 30) and s.gt.boxes.tensor.tolist() == [[1, 2, 3, 4]]
    assert s.gt.labels.tolist() == [2] and len(s.gt.masks) == 1
    # test pipelines: only the image
    s = Collect(keys=["img"])(dict(results))
    assert s.gt is None and s.meta.pad_shape == (32, 32)


def test_collect_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="unknown key 'gt_bbox'.*did you mean 'gt_bboxes'"):
        Collect(keys=["img", "gt_bbox"])
    with pytest.raises(ValueError, match="must contain 'img'"):
        Collect(keys=["gt_bboxes"])
    with pytest.raises(ValueError, match="unknown meta key 'img_shap'"):
        Collect(keys=["img"], meta_keys=["img_shap"])


def test_image_to_tensor_warns_once(caplog) -> None:
    formatting._warned_image_to_tensor = False
    with caplog.at_level(logging.WARNING):
        ImageToTensor(keys=["img"])
        t = ImageToTensor(keys=["img"])
    assert sum("deprecated" in r.getMessage() for r in caplog.records) == 1
    out = t({"img": np.zeros((4, 5, 3), np.uint8)})
    assert out["img"].shape == (3, 4, 5) and out["img"].dtype == torch.float32


def test_load_image_uses_in_memory_array_and_missing_file() -> None:
    out = LoadImageFromFile()({"img": np.zeros((4, 5), np.uint8), "img_info": {"filename": "a.png"},
                               "img_prefix": "root"})
    assert out["img"].shape == (4, 5, 3) and out["filename"] == "root/a.png" and out["ori_filename"] == "a.png"
    assert out["ori_shape"] == (4, 5, 3) and out["img_fields"] == ["img"]
    out = LoadImageFromFile(to_float32=True)({"img": np.zeros((4, 5, 3), np.uint8), "img_info": {}})
    assert out["img"].dtype == np.float32
    with pytest.raises(DatasetError, match=r"image file not found: nowhere/b\.jpg \(dataset index 4\)"):
        LoadImageFromFile()({"img_info": {"filename": "b.jpg"}, "img_prefix": "nowhere", "sample_idx": 4})


def test_load_annotations_keys() -> None:
    ann = {"bboxes": np.array([[1, 2, 5, 6]], np.float32), "labels": np.array([3]),
           "bboxes_ignore": np.zeros((0, 4), np.float32), "masks": [[[1, 2, 5, 2, 5, 6, 1, 6]]]}
    r = LoadAnnotations(with_mask=True)({"ann_info": ann, "img_info": {"height": 8, "width": 8}})
    assert r["bbox_fields"] == ["gt_bboxes", "gt_bboxes_ignore"] and r["mask_fields"] == ["gt_masks"]
    assert r["gt_labels"].tolist() == [3] and r["gt_masks"].masks.shape == (1, 8, 8)
    assert r["gt_masks"].areas[0] == 16  # the 4x4 square [1, 5) x [2, 6)
    r = LoadAnnotations(with_mask=True, poly2mask=False)({"ann_info": ann, "img_info": {"height": 8, "width": 8}})
    np.testing.assert_allclose(r["gt_masks"].areas, [16.0])
    with pytest.raises(DatasetError, match="LoadAnnotations belongs in training pipelines"):
        LoadAnnotations()({"img_info": {"filename": "q.jpg"}})


def test_multi_scale_flip_aug_order() -> None:
    t = MultiScaleFlipAug(
        transforms=[Resize(keep_ratio=True), RandomFlip(), DefaultFormatBundle(), Collect(keys=["img"])],
        img_scale=[(1333, 400), (1333, 800)], flip=True)
    results = {"img": np.zeros((480, 640, 3), np.uint8), "img_info": {"id": 1}, "img_shape": (480, 640, 3),
               "ori_shape": (480, 640, 3), "img_fields": ["img"]}
    outs = t(results)
    assert [o.meta.img_shape for o in outs] == [(400, 533), (400, 533), (800, 1067), (800, 1067)]
    assert [o.meta.flip for o in outs] == [False, True, False, True]
    assert "scale" not in results  # the input dict is not modified
    t = MultiScaleFlipAug(transforms=[Resize(), RandomFlip(), Collect(keys=["img"])], scale_factor=[0.5, 1.0],
                          flip=True, flip_direction=["horizontal", "vertical"])
    outs = t(dict(results))
    assert len(outs) == 6
    assert [o.meta.flip_direction for o in outs[:3]] == [None, "horizontal", "vertical"]
    assert outs[0].meta.img_shape == (240, 320)
    with pytest.raises(ValueError, match="exactly one of img_scale or scale_factor"):
        MultiScaleFlipAug(transforms=[], img_scale=(1, 1), scale_factor=1.0)


def test_compose_builds_dicts_and_stops_on_none() -> None:
    c = Compose([{"type": "DefaultFormatBundle"}, lambda r: None, lambda r: 1 / 0])
    assert c({"img": np.zeros((2, 2, 3))}) is None
    with pytest.raises(TypeError, match="pipeline.0"):
        Compose([3])
