from __future__ import annotations

import numpy as np
import pytest

from detcli.data.transforms import Pad, RandomFlip, Resize, bbox_flip, rescale_size
from detcli.registry import TRANSFORMS, build
from detcli.structures.masks import BitmapMasks, PolygonMasks


def results_for(h: int, w: int, boxes: list[list[float]] | None = None, seed: int = 0) -> dict:
    r = {"img": np.zeros((h, w, 3), np.uint8), "img_shape": (h, w, 3), "ori_shape": (h, w, 3),
         "img_fields": ["img"], "bbox_fields": [], "mask_fields": [], "rng": np.random.default_rng(seed)}
    if boxes is not None:
        r["gt_bboxes"] = np.asarray(boxes, np.float32).reshape(-1, 4)
        r["bbox_fields"].append("gt_bboxes")
    return r


@pytest.mark.parametrize(("wh", "new_wh", "factors"), [
    ((640, 480), (1067, 800), (1.6671875, 1.6666666)),
    ((500, 375), (1067, 800), (2.134, 2.1333333)),
    ((1920, 1080), (1333, 750), (0.6942708, 0.6944444)),
    ((480, 640), (800, 1067), (1.6666666, 1.6671875)),
])
def test_resize_keep_ratio_spec_values(wh, new_wh, factors) -> None:
    w, h = wh
    r = Resize(img_scale=(1333, 800), keep_ratio=True)(results_for(h, w, [[10, 20, 30, 40]]))
    assert r["img"].shape == (new_wh[1], new_wh[0], 3)
    assert r["img_shape"] == (new_wh[1], new_wh[0], 3) and r["pad_shape"] == r["img_shape"]
    assert r["scale_factor"].dtype == np.float32
    np.testing.assert_allclose(r["scale_factor"], [factors[0], factors[1]] * 2, rtol=1e-6)
    np.testing.assert_allclose(r["gt_bboxes"], [[10 * factors[0], 20 * factors[1], 30 * factors[0], 40 * factors[1]]],
                               rtol=1e-5)
    assert r["keep_ratio"] is True and r["scale"] == (1333, 800)


def test_rescale_size_doc_example() -> None:
    assert rescale_size((640, 480), (1333, 800))[0] == (1067, 800)
    assert rescale_size((640, 480), (800, 1333))[0] == (1067, 800)  # order of the pair is irrelevant


def test_resize_without_keep_ratio_and_clipping() -> None:
    r = Resize(img_scale=(100, 50), keep_ratio=False)(results_for(20, 40, [[30, 0, 45, 10]]))
    assert r["img_shape"] == (50, 100, 3)
    np.testing.assert_allclose(r["scale_factor"], [2.5, 2.5, 2.5, 2.5])
    np.testing.assert_allclose(r["gt_bboxes"], [[75, 0, 100, 25]])  # x2 = 112.5 clipped to 100
    r = Resize(img_scale=(100, 50), keep_ratio=False, bbox_clip_border=False)(results_for(20, 40, [[30, 0, 45, 10]]))
    np.testing.assert_allclose(r["gt_bboxes"], [[75, 0, 112.5, 25]])


def test_resize_multiscale_modes_are_seeded() -> None:
    value = Resize(img_scale=[(100, 60), (200, 120)], multiscale_mode="value")
    seen = {value(results_for(30, 50, seed=s))["scale"] for s in range(20)}
    assert seen == {(100, 60), (200, 120)}
    rng_mode = Resize(img_scale=[(100, 60), (200, 120)], multiscale_mode="range")
    scales = [rng_mode(results_for(30, 50, seed=s))["scale"] for s in range(30)]
    assert all(100 <= a <= 200 and 60 <= b <= 120 for a, b in scales) and len(set(scales)) > 5
    assert rng_mode(results_for(30, 50, seed=3))["scale"] == rng_mode(results_for(30, 50, seed=3))["scale"]
    ratio = Resize(img_scale=(100, 60), ratio_range=(0.5, 2.0))
    for s in range(10):
        a, b = ratio(results_for(30, 50, seed=s))["scale"]
        assert 50 <= a <= 200 and abs(a / 100 - b / 60) < 0.05
    with pytest.raises(ValueError, match="ratio_range needs exactly one"):
        Resize(img_scale=[(1, 2), (3, 4)], ratio_range=(0.5, 1.5))
    with pytest.raises(ValueError, match="multiscale_mode"):
        Resize(img_scale=(1, 2), multiscale_mode="rnage")


def test_resize_scale_factor_from_tta_and_masks() -> None:
    r = results_for(20, 40)
    r["scale_factor"] = 0.5
    r["gt_masks"] = BitmapMasks(np.ones((2, 20, 40), np.uint8), 20, 40)
    r["mask_fields"].append("gt_masks")
    out = Resize(keep_ratio=True)(r)
    assert out["img_shape"] == (10, 20, 3) and out["gt_masks"].masks.shape == (2, 10, 20)


@pytest.mark.parametrize(("direction", "expected"), [
    ("horizontal", [70, 20, 90, 40]),
    ("vertical", [10, 10, 30, 30]),
    ("diagonal", [70, 10, 90, 30]),
])
def test_bbox_flip(direction, expected) -> None:
    # image W=100, H=50
    np.testing.assert_allclose(bbox_flip(np.array([[10., 20., 30., 40.]]), (50, 100), direction), [expected])


def test_random_flip_image_boxes_masks() -> None:
    r = results_for(50, 100, [[10, 20, 30, 40]])
    r["img"][0, 0] = 255
    r["gt_masks"] = BitmapMasks(np.zeros((1, 50, 100), np.uint8), 50, 100)
    r["gt_masks"].masks[0, 0, 0] = 1
    r["mask_fields"].append("gt_masks")
    out = RandomFlip(flip_ratio=1.0, direction="diagonal")(r)
    assert out["flip"] is True and out["flip_direction"] == "diagonal"
    assert out["img"][49, 99, 0] == 255 and out["img"][0, 0, 0] == 0
    assert out["gt_masks"].masks[0, 49, 99] == 1
    np.testing.assert_allclose(out["gt_bboxes"], [[70, 10, 90, 30]])
    out = RandomFlip(flip_ratio=0.0)(results_for(50, 100, [[10, 20, 30, 40]]))
    assert out["flip"] is False and out["flip_direction"] is None
    np.testing.assert_allclose(out["gt_bboxes"], [[10, 20, 30, 40]])
    # no ratio: never flips on its own, but obeys results['flip'] (MultiScaleFlipAug)
    assert RandomFlip()(results_for(5, 5))["flip"] is False
    r = results_for(50, 100, [[10, 20, 30, 40]])
    r["flip"], r["flip_direction"] = True, "vertical"
    np.testing.assert_allclose(RandomFlip()(r)["gt_bboxes"], [[10, 10, 30, 30]])


def test_random_flip_probabilities() -> None:
    t = RandomFlip(flip_ratio=0.6, direction=["horizontal", "vertical"])
    dirs = [t(results_for(4, 4, seed=s))["flip_direction"] for s in range(600)]
    assert abs(dirs.count("horizontal") / 600 - 0.3) < 0.07
    assert abs(dirs.count("vertical") / 600 - 0.3) < 0.07
    t = RandomFlip(flip_ratio=[0.0, 1.0], direction=["horizontal", "vertical"])
    assert {t(results_for(4, 4, seed=s))["flip_direction"] for s in range(20)} == {"vertical"}
    with pytest.raises(ValueError, match="unknown flip direction 'sideways'"):
        RandomFlip(flip_ratio=0.5, direction="sideways")


def test_polygon_masks_flip_and_resize() -> None:
    pm = PolygonMasks([[np.array([0, 0, 10, 0, 10, 10, 0, 10], float)]], 16, 16)
    np.testing.assert_allclose(pm.areas, [100.0])
    np.testing.assert_allclose(pm.flip("horizontal").masks[0][0], [16, 0, 6, 0, 6, 10, 16, 10])
    np.testing.assert_allclose(pm.resize((32, 8)).masks[0][0], [0, 0, 5, 0, 5, 20, 0, 20])
    assert pm.to_bitmap().areas[0] == 100


def test_pad_size_divisor_spec_value() -> None:
    r = results_for(800, 1067)
    r["img"][:] = 7
    out = Pad(size_divisor=32)(r)
    assert out["img"].shape == (800, 1088, 3) and out["pad_shape"] == (800, 1088, 3)
    assert out["img"][:, 1067:].max() == 0 and out["img"][:, :1067].min() == 7
    assert out["pad_size_divisor"] == 32 and out["pad_fixed_size"] is None


def test_pad_fixed_square_and_value() -> None:
    out = Pad(size=(64, 80), pad_val=3)(results_for(50, 70))
    assert out["img"].shape == (64, 80, 3) and out["img"][60, 75, 0] == 3
    out = Pad(pad_to_square=True)(results_for(50, 70))
    assert out["img"].shape == (70, 70, 3)
    r = results_for(30, 33)
    r["gt_masks"] = BitmapMasks(np.ones((1, 30, 33), np.uint8), 30, 33)
    r["mask_fields"].append("gt_masks")
    out = Pad(size_divisor=32, pad_val={"img": 0, "masks": 0})(r)
    assert out["gt_masks"].masks.shape == (1, 32, 64) and out["gt_masks"].masks.sum() == 30 * 33
    with pytest.raises(ValueError, match="exactly one"):
        Pad()
    with pytest.raises(ValueError, match="larger than size"):
        Pad(size=(10, 10))(results_for(20, 20))


def test_transforms_build_from_config_nodes() -> None:
    t = build({"type": "Resize", "img_scale": [1333, 800], "keep_ratio": True}, TRANSFORMS)
    assert t.img_scale == [(1333, 800)]
    t = build({"type": "Resize", "img_scale": [[1333, 640], [1333, 800]], "multiscale_mode": "value"}, TRANSFORMS)
    assert t.img_scale == [(1333, 640), (1333, 800)]
