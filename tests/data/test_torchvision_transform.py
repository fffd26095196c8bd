"""The ``*_coco_tv`` presets' test pipeline reproduces torchvision's GeneralizedRCNNTransform on image
files (Pillow decoding, x / 255 and ImageNet mean/std, torch bilinear resize with floored sizes, padding
to 32 by collate, boxes clipped to the resized image), and ``map_to_original`` gives torchvision's
``resize_boxes``; plus the options it uses (``LoadImageFromFile.imdecode_backend``, ``Resize.backend``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
from torchvision.transforms.functional import to_tensor

from detcli.config import load_config
from detcli.data import build_test_pipeline, collate, map_to_original
from detcli.data.transforms import LoadImageFromFile, Resize, rescale_size, torchvision_resize
from detcli.errors import DatasetError
from detcli.resources import find_preset
from detcli.structures import Boxes, Detections

from tests.data.helpers import coco128_jpegs, write_jpegs

TV_PRESETS = ["retinanet_r50_fpn_coco_tv", "fcos_r50_fpn_coco_tv", "faster_rcnn_r50_fpn_coco_tv",
              "mask_rcnn_r50_fpn_coco_tv"]
#: (h, w): landscape, portrait, long side binding (1333), upscaled small, sizes where floor != round
SIZES = [(480, 640), (640, 427), (300, 1000), (97, 150), (481, 643), (375, 500)]


def _tv_transform() -> GeneralizedRCNNTransform:
    return GeneralizedRCNNTransform(800, 1333, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]).eval()


def _det_samples(paths: list[Path], preset: str = TV_PRESETS[0]) -> list:
    pipeline = build_test_pipeline(load_config(str(find_preset(preset)))["data"]["test"]["pipeline"])
    return [pipeline({"img_info": {"filename": p.name}, "img_prefix": str(p.parent)})[0] for p in paths]


def _check_equal_to_torchvision(paths: list[Path]) -> None:
    batch = collate(_det_samples(paths))
    with torch.no_grad():
        expected, _ = _tv_transform()([to_tensor(Image.open(p).convert("RGB")) for p in paths])
    assert batch.images.tensor.dtype == expected.tensors.dtype == torch.float32
    assert batch.images.tensor.shape == expected.tensors.shape
    assert [tuple(s) for s in batch.images.image_sizes] == [tuple(s) for s in expected.image_sizes]
    torch.testing.assert_close(batch.images.tensor, expected.tensors, rtol=0, atol=0)  # bit-exact
    for meta, p in zip(batch.metas, paths):
        w, h = Image.open(p).size
        assert meta.ori_shape == (h, w)


def test_presets_share_the_torchvision_test_pipeline() -> None:
    pipelines = []
    for name in TV_PRESETS:
        data = load_config(str(find_preset(name)))["data"]
        assert data["val"]["pipeline"] == data["test"]["pipeline"]
        assert data["train"]["pipeline"][0] == {"type": "LoadImageFromFile"}  # training stays det's
        pipelines.append(data["test"]["pipeline"])
    assert all(p == pipelines[0] for p in pipelines)
    assert pipelines[0][0] == {"type": "LoadImageFromFile", "imdecode_backend": "pillow", "channel_order": "rgb"}
    assert pipelines[0][1]["transforms"][2] == {"type": "Resize", "keep_ratio": True, "backend": "torchvision"}


def test_test_pipeline_equals_torchvision_transform_on_jpegs(tmp_path: Path) -> None:
    paths = write_jpegs(tmp_path, SIZES)
    _check_equal_to_torchvision(paths)
    sizes = [tuple(s.meta.img_shape) for s in _det_samples(paths)]
    # floor(side * factor) in double: 640 * 800 / 480 -> 1066 (cv2 backend: 1067); 97 * (800 / 97) -> 799
    assert sizes == [(800, 1066), (1199, 800), (399, 1333), (799, 1237), (800, 1069), (800, 1066)]


def test_test_pipeline_equals_torchvision_transform_on_coco128() -> None:
    _check_equal_to_torchvision(coco128_jpegs(4))


def test_map_to_original_gives_torchvision_resize_boxes(tmp_path: Path) -> None:
    paths = write_jpegs(tmp_path, SIZES)
    g = torch.Generator().manual_seed(0)
    for sample in _det_samples(paths):
        meta = sample.meta
        h, w = meta.img_shape
        xy = torch.rand(50, 2, generator=g) * torch.tensor([w - 1.0, h - 1.0])
        wh = torch.rand(50, 2, generator=g) * torch.tensor([w, h]) / 3
        boxes = torch.cat([xy, torch.minimum(xy + wh, torch.tensor([w - 0.5, h - 0.5]))], dim=1)  # inside the image
        dets = Detections((h, w), Boxes(boxes), torch.rand(50, generator=g), torch.zeros(50, dtype=torch.long))
        got = map_to_original(dets, meta)
        expected = resize_boxes(boxes, [h, w], list(meta.ori_shape))
        torch.testing.assert_close(got.boxes.tensor, expected, rtol=0, atol=0)
        assert got.image_size == meta.ori_shape


# ------------------------------------------------------------------ LoadImageFromFile(imdecode_backend)


def test_pillow_backend_decodes_like_pil(tmp_path: Path) -> None:
    (path,) = write_jpegs(tmp_path, [(37, 53)])
    rgb = np.asarray(Image.open(path).convert("RGB"))
    results = {"img_info": {"filename": path.name}, "img_prefix": str(tmp_path)}
    bgr = LoadImageFromFile(imdecode_backend="pillow")(dict(results))["img"]
    np.testing.assert_array_equal(bgr, rgb[..., ::-1])
    out = LoadImageFromFile(imdecode_backend="pillow", channel_order="rgb", to_float32=True)(dict(results))
    np.testing.assert_array_equal(out["img"], rgb.astype(np.float32))
    assert out["img_shape"] == out["ori_shape"] == (37, 53, 3)
    grey = LoadImageFromFile(imdecode_backend="pillow", color_type="grayscale")(dict(results))["img"]
    np.testing.assert_array_equal(grey, np.asarray(Image.open(path).convert("L")))


def test_pillow_backend_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="imdecode_backend must be one of"):
        LoadImageFromFile(imdecode_backend="turbojpeg")
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="cannot decode image .*bad.jpg"):
        LoadImageFromFile(imdecode_backend="pillow")({"img_info": {"filename": "bad.jpg"}, "img_prefix": str(tmp_path)})


# ------------------------------------------------------------------ Resize(backend=torchvision)


def _results(img: np.ndarray, boxes: list[list[float]]) -> dict:
    return {"img": img, "img_shape": img.shape, "ori_shape": img.shape, "img_fields": ["img"],
            "bbox_fields": ["gt_bboxes"], "gt_bboxes": np.asarray(boxes, np.float32), "mask_fields": [],
            "rng": np.random.default_rng(0)}


def test_resize_torchvision_backend_floors_sizes_and_keeps_float() -> None:
    img = np.random.default_rng(0).integers(0, 256, (480, 640, 3)).astype(np.uint8)
    assert rescale_size((640, 480), (1333, 800))[0] == (1067, 800)  # the cv2 backend rounds 1066.67 up
    r = Resize(img_scale=(1333, 800), backend="torchvision")(_results(img, [[10, 20, 30, 40]]))
    assert r["img"].shape == r["img_shape"] == (800, 1066, 3) and r["img"].dtype == np.float32
    assert r["scale_factor"].dtype == np.float64
    np.testing.assert_array_equal(r["scale_factor"], [1066 / 640, 800 / 480] * 2)
    # boxes get torchvision's float32 ratio resized / original (resize_boxes)
    expected = resize_boxes(torch.tensor([[10.0, 20.0, 30.0, 40.0]]), [480, 640], [800, 1066])
    np.testing.assert_array_equal(r["gt_bboxes"], expected.numpy())
    t = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    ref = torch.nn.functional.interpolate(t, size=(800, 1066), mode="bilinear", align_corners=False)[0]
    np.testing.assert_array_equal(r["img"], ref.permute(1, 2, 0).numpy())


def test_resize_torchvision_backend_without_keep_ratio_and_grey() -> None:
    img = np.arange(20 * 30, dtype=np.float32).reshape(20, 30)
    out = torchvision_resize(img, (45, 10), keep_ratio=False)
    assert out.shape == (10, 45) and out.dtype == np.float32
    r = Resize(img_scale=(45, 10), keep_ratio=False, backend="torchvision")(_results(img, [[3, 4, 6, 8]]))
    np.testing.assert_array_equal(r["img"], out)
    np.testing.assert_allclose(r["gt_bboxes"], [[4.5, 2.0, 9.0, 4.0]])


def test_resize_backend_is_checked_and_default_unchanged() -> None:
    with pytest.raises(ValueError, match=r"backend must be one of \['cv2', 'torchvision'\]"):
        Resize(img_scale=(1333, 800), backend="pillow")
    assert Resize(img_scale=(1333, 800)).backend == "cv2"
    r = Resize(img_scale=(1333, 800))(_results(np.zeros((480, 640, 3), np.uint8), [[0, 0, 1, 1]]))
    assert r["img"].shape == (800, 1067, 3) and r["img"].dtype == np.uint8 and r["scale_factor"].dtype == np.float32
