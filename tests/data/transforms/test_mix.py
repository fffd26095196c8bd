"""Mosaic, MixUp, RandomAffine, YOLOXHSVRandomAug, FilterAnnotations and MultiImageMixDataset:
geometry on hand-made boxes (clipped or dropped as mmdet 2.x does, labels follow) and determinism."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from detcli.data import MultiImageMixDataset, SampleKey, build_dataset
from detcli.data.transforms import FilterAnnotations, MixUp, Mosaic, RandomAffine, YOLOXHSVRandomAug
from detcli.data.transforms.compose import RNG_KEY
from detcli.errors import ConfigError, DatasetError


def sample(img: np.ndarray, boxes: list[list[float]], labels: list[int], seed: int = 0) -> dict[str, Any]:
    return {"img": img, "img_shape": img.shape, "gt_bboxes": np.array(boxes, np.float32).reshape(-1, 4),
            "gt_labels": np.array(labels, np.int64), "bbox_fields": ["gt_bboxes"], "mask_fields": [],
            RNG_KEY: np.random.default_rng(seed)}


def image(h: int, w: int, value: int) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


def test_mosaic_quadrants_with_centre_at_the_middle() -> None:
    # four 10x20 (h x w) images, img_scale (10, 20): no resize; centre (20, 10) fixed by the ratio range
    base = sample(image(10, 20, 10), [[1, 1, 5, 5]], [0])
    base["mix_results"] = [sample(image(10, 20, 20 * (k + 2)), [[2, 2, 4, 8]], [k + 1]) for k in range(3)]
    out = Mosaic(img_scale=(10, 20), center_ratio_range=(1.0, 1.0))(base)
    assert out["img"].shape == (20, 40, 3) and out["img_shape"] == (20, 40, 3)
    assert (out["img"][:10, :20] == 10).all() and (out["img"][:10, 20:] == 40).all()
    assert (out["img"][10:, :20] == 60).all() and (out["img"][10:, 20:] == 80).all()
    np.testing.assert_array_equal(out["gt_bboxes"], [[1, 1, 5, 5], [22, 2, 24, 8], [2, 12, 4, 18], [22, 12, 24, 18]])
    assert out["gt_labels"].tolist() == [0, 1, 2, 3]
    assert out["gt_bboxes"].dtype == np.float32


def test_mosaic_crops_images_at_the_centre_and_drops_or_clips_boxes() -> None:
    # centre (10, 5): the top-left image shows its bottom-right 10x5 corner, shifted by (-10, -5)
    def base() -> dict[str, Any]:
        s = sample(image(10, 20, 10), [[2, 2, 8, 8], [12, 6, 18, 9], [8, 4, 14, 9]], [0, 1, 2])
        s["mix_results"] = [sample(image(10, 20, 50), [], []) for _ in range(3)]
        return s

    out = Mosaic(img_scale=(10, 20), center_ratio_range=(0.5, 0.5), pad_val=114)(base())
    # [2,2,8,8] -> [-8,-3,-2,3]: clipped to zero width at x=0 and dropped (no overlap); the others stay
    np.testing.assert_array_equal(out["gt_bboxes"], [[2, 1, 8, 4], [0, 0, 4, 4]])
    assert out["gt_labels"].tolist() == [1, 2]
    assert (out["img"][:5, :10] == 10).all()
    assert (out["img"][5:15, :10] == 50).all() and (out["img"][15:, :10] == 114).all()  # bottom-left image, padding
    unclipped = Mosaic(img_scale=(10, 20), center_ratio_range=(0.5, 0.5), bbox_clip_border=False)(base())
    # not clipped: the first box keeps its outside extent but still lies outside the canvas (dropped)
    np.testing.assert_array_equal(unclipped["gt_bboxes"], [[2, 1, 8, 4], [-2, -1, 4, 4]])


def test_mosaic_resizes_keeping_the_aspect_ratio_and_filters_small_boxes() -> None:
    base = sample(image(20, 20, 10), [[0, 0, 10, 10], [0, 0, 2, 20]], [0, 1])  # ratio 0.5 into (10, 20)
    base["mix_results"] = [sample(image(10, 20, 50), [], []) for _ in range(3)]
    out = Mosaic(img_scale=(10, 20), center_ratio_range=(1.0, 1.0))(dict(base))
    # resized to 10x10, pasted at x 10..20, y 0..10
    np.testing.assert_array_equal(out["gt_bboxes"], [[10, 0, 15, 5], [10, 0, 11, 10]])
    filtered = Mosaic(img_scale=(10, 20), center_ratio_range=(1.0, 1.0), skip_filter=False, min_bbox_size=2)(dict(base))
    np.testing.assert_array_equal(filtered["gt_bboxes"], [[10, 0, 15, 5]])
    assert filtered["gt_labels"].tolist() == [0]


def test_mosaic_and_mixup_refuse_masks_and_missing_extra_images() -> None:
    s = sample(image(10, 10, 0), [[1, 1, 4, 4]], [0])
    with pytest.raises(ConfigError, match="MultiImageMixDataset"):
        Mosaic(img_scale=(10, 10))(dict(s))
    s["gt_masks"] = object()
    s["mix_results"] = [sample(image(10, 10, 0), [], []) for _ in range(3)]
    with pytest.raises(ConfigError, match="masks"):
        Mosaic(img_scale=(10, 10))(s)
    with pytest.raises(ConfigError, match="masks"):
        RandomAffine()(s)


def test_mixup_blends_and_keeps_both_box_sets() -> None:
    base = sample(image(10, 20, 100), [[1, 1, 5, 5]], [0])
    base["mix_results"] = [sample(image(10, 20, 50), [[2, 2, 6, 8], [15, 0, 20, 10]], [1, 2])]
    out = MixUp(img_scale=(10, 20), ratio_range=(1.0, 1.0), flip_ratio=1.0)(base)  # U(0, 1) > 1 never: no flip
    assert out["img"].dtype == np.uint8 and (out["img"] == 75).all()
    np.testing.assert_array_equal(out["gt_bboxes"], [[1, 1, 5, 5], [2, 2, 6, 8], [15, 0, 20, 10]])
    assert out["gt_labels"].tolist() == [0, 1, 2]


def test_mixup_flip_and_jitter_move_the_extra_boxes() -> None:
    base = sample(image(10, 20, 100), [], [])
    base["mix_results"] = [sample(image(10, 20, 50), [[2, 2, 6, 8]], [1])]
    flipped = MixUp(img_scale=(10, 20), ratio_range=(1.0, 1.0), flip_ratio=-1.0)(dict(base))  # always flips
    np.testing.assert_array_equal(flipped["gt_bboxes"], [[14, 2, 18, 8]])
    # jitter 2: the 10x20 canvas becomes 20x40, a 10x20 window is cut at a random offset
    base[RNG_KEY] = np.random.default_rng(3)
    out = MixUp(img_scale=(10, 20), ratio_range=(2.0, 2.0), flip_ratio=1.0)(dict(base))
    rng = np.random.default_rng(3)
    rng.uniform(2.0, 2.0), rng.uniform(0, 1)
    y_off, x_off = int(rng.integers(0, 11)), int(rng.integers(0, 21))
    expected = np.array([[4, 4, 12, 16]], np.float32) - [x_off, y_off, x_off, y_off]
    expected[:, 0::2] = expected[:, 0::2].clip(0, 20)
    expected[:, 1::2] = expected[:, 1::2].clip(0, 10)
    inside = (expected[:, 0] < 20) & (expected[:, 2] > 0) & (expected[:, 1] < 10) & (expected[:, 3] > 0)
    np.testing.assert_array_equal(out["gt_bboxes"], expected[inside])


def test_mixup_with_an_empty_extra_image_is_a_no_op() -> None:
    base = sample(image(10, 20, 100), [[1, 1, 5, 5]], [0])
    base["mix_results"] = [sample(image(10, 20, 50), [], [])]
    out = MixUp(img_scale=(10, 20))(base)
    assert (out["img"] == 100).all() and out["gt_labels"].tolist() == [0]


def test_random_affine_identity_and_pure_scaling() -> None:
    fixed = dict(max_rotate_degree=0, max_translate_ratio=0, max_shear_degree=0)
    s = sample(np.arange(300, dtype=np.uint8).reshape(10, 10, 3), [[1, 1, 3, 3], [4, 4, 6, 6], [6, 6, 9, 9]], [0, 1, 2])
    same = RandomAffine(scaling_ratio_range=(1, 1), **fixed)(dict(s))
    np.testing.assert_array_equal(same["img"], s["img"])
    np.testing.assert_allclose(same["gt_bboxes"], s["gt_bboxes"])
    doubled = RandomAffine(scaling_ratio_range=(2, 2), **fixed)(dict(s))
    # [1,1,3,3] -> [2,2,6,6]; [4,4,6,6] -> [8,8,12,12] clipped to the 10x10 output; [6,6,9,9] -> outside: dropped
    np.testing.assert_allclose(doubled["gt_bboxes"], [[2, 2, 6, 6], [8, 8, 10, 10]])
    assert doubled["gt_labels"].tolist() == [0, 1]
    filtered = RandomAffine(scaling_ratio_range=(2, 2), skip_filter=False, min_bbox_size=2, **fixed)(dict(s))
    # the clipped box keeps 4/16 of its area (> 0.2) but is only 2 px wide: dropped by min_bbox_size
    np.testing.assert_allclose(filtered["gt_bboxes"], [[2, 2, 6, 6]])


def test_random_affine_border_shrinks_the_output_and_rotation_moves_corners() -> None:
    s = sample(image(20, 20, 7), [[8, 8, 12, 12]], [0])
    out = RandomAffine(max_rotate_degree=0, max_translate_ratio=0, max_shear_degree=0, scaling_ratio_range=(1, 1),
                       border=(-5, -5))(dict(s))
    assert out["img"].shape == (10, 10, 3)
    np.testing.assert_allclose(out["gt_bboxes"], [[8, 8, 10, 10]])
    # 90 degrees about the origin: (x, y) -> (-y, x); the box leaves the image and is dropped
    rot = RandomAffine(max_rotate_degree=0, max_translate_ratio=0, max_shear_degree=0, scaling_ratio_range=(1, 1))
    matrix, ratio = rot.random_matrix(np.random.default_rng(0), 20, 20)
    assert ratio == 1.0 and np.allclose(matrix, np.eye(3))
    quarter = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]], np.float32)
    np.testing.assert_allclose(RandomAffine.warp_boxes(np.array([[8, 8, 12, 10]], np.float32), quarter),
                               [[-10, 8, -8, 12]])


def test_hsv_aug_is_deterministic_per_generator_and_keeps_uint8() -> None:
    img = np.random.default_rng(0).integers(0, 255, (8, 8, 3)).astype(np.uint8)
    a = YOLOXHSVRandomAug()({"img": img.copy(), RNG_KEY: np.random.default_rng(5)})["img"]
    b = YOLOXHSVRandomAug()({"img": img.copy(), RNG_KEY: np.random.default_rng(5)})["img"]
    assert a.dtype == np.uint8 and a.shape == img.shape and np.array_equal(a, b)


def test_filter_annotations_drops_thin_boxes_with_labels() -> None:
    s = sample(image(10, 10, 0), [[0, 0, 1, 5], [0, 0, 2, 2], [0, 0, 5, 1.5]], [0, 1, 2])
    out = FilterAnnotations(min_gt_bbox_wh=(1, 1))(s)
    np.testing.assert_array_equal(out["gt_bboxes"], [[0, 0, 2, 2], [0, 0, 5, 1.5]])
    assert out["gt_labels"].tolist() == [1, 2]
    none_left = sample(image(10, 10, 0), [[0, 0, 1, 5]], [0])
    assert FilterAnnotations(keep_empty=True)(dict(none_left)) is None
    kept = FilterAnnotations(keep_empty=False)(dict(none_left))
    assert kept is not None and len(kept["gt_bboxes"]) == 0 and len(kept["gt_labels"]) == 0


NORM = {"mean": [0, 0, 0], "std": [1, 1, 1], "to_rgb": False}


def mix_cfg(**kw: Any) -> dict[str, Any]:
    return {"type": "MultiImageMixDataset",
            "dataset": {"type": "ShapesDataset", "num_images": 12, "seed": 0, "split": "train", "img_size": 64,
                        "pipeline": [{"type": "LoadImageFromFile"}, {"type": "LoadAnnotations", "with_bbox": True}]},
            "pipeline": [
                {"type": "Mosaic", "img_scale": [64, 64], "pad_val": 114.0},
                {"type": "RandomAffine", "scaling_ratio_range": [0.5, 1.5], "border": [-32, -32]},
                {"type": "MixUp", "img_scale": [64, 64], "ratio_range": [0.8, 1.6], "pad_val": 114.0},
                {"type": "YOLOXHSVRandomAug"},
                {"type": "RandomFlip", "flip_ratio": 0.5},
                {"type": "Resize", "img_scale": [64, 64], "keep_ratio": True},
                {"type": "Pad", "pad_to_square": True, "pad_val": {"img": [114.0, 114.0, 114.0]}},
                {"type": "FilterAnnotations", "min_gt_bbox_wh": [1, 1], "keep_empty": False},
                {"type": "Normalize", **NORM},
                {"type": "DefaultFormatBundle"},
                {"type": "Collect", "keys": ["img", "gt_bboxes", "gt_labels"]}], **kw}


def test_mix_dataset_samples_are_pure_functions_of_seed_epoch_index() -> None:
    ds = build_dataset(mix_cfg(), test_mode=False)
    assert isinstance(ds, MultiImageMixDataset) and len(ds) == 12 and ds.classes
    a, b = ds[SampleKey(3, 1, 5)], ds[SampleKey(3, 1, 5)]
    assert torch.equal(a.image, b.image) and torch.equal(a.gt.boxes.tensor, b.gt.boxes.tensor)
    assert torch.equal(a.gt.labels, b.gt.labels)
    fresh = build_dataset(mix_cfg(), test_mode=False)[SampleKey(3, 1, 5)]  # another process / worker
    assert torch.equal(a.image, fresh.image)
    for other in (SampleKey(3, 2, 5), SampleKey(3, 1, 6), SampleKey(4, 1, 5)):
        assert not torch.equal(a.image, ds[other].image)
    assert tuple(a.image.shape) == (3, 64, 64)


def test_mix_dataset_skip_type_keys_and_dynamic_scale() -> None:
    ds = build_dataset(mix_cfg(), test_mode=False)
    ds.update_skip_type_keys(["Mosaic", "RandomAffine", "MixUp"])
    plain = ds[SampleKey(0, 0, 0)]
    inner = ds.dataset.load_results(SampleKey(0, 0, 0))
    # without the mix transforms only HSV/flip/resize/pad change the sample: the boxes are the image's own
    boxes = plain.gt.boxes.tensor.numpy()
    raw = inner["gt_bboxes"]
    assert len(boxes) == len(raw)
    flipped = np.stack([64 - raw[:, 2], raw[:, 1], 64 - raw[:, 0], raw[:, 3]], 1)
    assert np.allclose(boxes, raw) or np.allclose(boxes, flipped)
    ds.update_dynamic_scale((32, 32))
    assert tuple(ds[SampleKey(0, 0, 0)].image.shape) == (3, 32, 32)
    with pytest.raises(ConfigError):
        ds.update_skip_type_keys("Mosaic")


def test_mix_dataset_needs_a_loading_only_inner_pipeline() -> None:
    cfg = mix_cfg()
    cfg["dataset"]["pipeline"] += [{"type": "DefaultFormatBundle"}, {"type": "Collect", "keys": ["img"]}]
    ds = build_dataset(cfg, test_mode=False)
    with pytest.raises(DatasetError, match="loading"):
        ds[0]
