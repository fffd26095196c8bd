from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from shapely.geometry import Polygon
from shapely.ops import unary_union

from detcli.data import CocoDataset, ShapesDataset, export_shapes_coco
from detcli.data.shapes import SHAPE_CLASSES, _simple_pieces, make_layout, render
from detcli.errors import DatasetError
from detcli.structures.masks import polygons_to_bitmap

from tests.data.helpers import train_pipeline, tta_pipeline


def shapes(num: int = 8, **kw) -> ShapesDataset:
    kw.setdefault("pipeline", train_pipeline((256, 256)))
    return ShapesDataset(num_images=num, **kw)


def test_deterministic_and_splits_differ() -> None:
    a = render(make_layout(0, "train", 3))
    np.testing.assert_array_equal(a, render(make_layout(0, "train", 3)))
    assert not np.array_equal(a, render(make_layout(0, "val", 3)))
    assert not np.array_equal(a, render(make_layout(1, "train", 3)))
    assert a.shape == (256, 256, 3) and a.dtype == np.uint8


def test_layout_statistics_cover_classes_and_size_buckets() -> None:
    layouts = [make_layout(0, "train", i) for i in range(150)]
    counts = [len(lay.instances) for lay in layouts]
    assert min(counts) >= 1 and max(counts) <= 8 and 3 <= np.mean(counts) <= 7
    labels = {inst.label for lay in layouts for inst in lay.instances}
    assert labels == set(range(len(SHAPE_CLASSES))) and len(SHAPE_CLASSES) >= 4
    areas = np.array([inst.area for lay in layouts for inst in lay.instances])
    assert (areas < 32 ** 2).mean() > 0.1 and (areas > 96 ** 2).mean() > 0.02
    assert ((areas >= 32 ** 2) & (areas <= 96 ** 2)).mean() > 0.3
    for lay in layouts:
        for inst in lay.instances:
            x1, y1, x2, y2 = inst.bbox
            assert 0 <= x1 < x2 <= 256 and 0 <= y1 < y2 <= 256


def test_visible_polygons_are_exact_and_drawn() -> None:
    """Visible part = own polygon minus the ones above; the rendered pixels agree with it."""
    lay = make_layout(0, "train", 11)
    clean = render(dataclasses.replace(lay, background={**lay.background, "noise": 0.0}))
    for k, inst in enumerate(lay.instances):
        above = [Polygon(o.polygon) for o in lay.instances[k + 1:]]
        expected = Polygon(inst.polygon)
        if above:
            expected = expected.difference(unary_union(above))
        pieces = unary_union([Polygon(p) for p in inst.visible])
        assert abs(pieces.area - expected.area) < 1e-6 * max(1.0, expected.area)
        assert pieces.symmetric_difference(expected).area < 1e-6 * max(1.0, expected.area)
        assert all(Polygon(p).is_valid and not Polygon(p).interiors for p in inst.visible)
        assert inst.area >= 0.5 * Polygon(inst.polygon).area
        # without noise, the pixels of the visible mask (pycocotools raster) have the shape's colour
        mask = polygons_to_bitmap([p.reshape(-1).tolist() for p in inst.visible], 256, 256).astype(bool)
        match = (clean[mask] == np.array(inst.color)).all(axis=1)
        assert match.mean() > 0.97, (k, match.mean())


def test_dataset_train_sample_and_coco(capsys) -> None:
    ds = shapes(6)
    assert ds.classes == SHAPE_CLASSES and ds.cat_ids == [1, 2, 3, 4]
    s = ds[2]
    assert s.image.shape == (3, 256, 256) and s.meta.image_id == 3
    assert s.meta.filename == "shapes/train/000002.jpg"
    ann = ds.get_ann_info(2)
    np.testing.assert_allclose(s.gt.boxes.tensor.numpy(), ann["bboxes"], rtol=1e-6)
    coco = ds.coco
    assert sorted(coco.getImgIds()) == [1, 2, 3, 4, 5, 6]
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(SHAPE_CLASSES)
    gt = coco.loadAnns(coco.getAnnIds(imgIds=[3]))
    assert [a["category_id"] - 1 for a in gt] == ann["labels"].tolist()
    assert min(a["id"] for a in coco.loadAnns(coco.getAnnIds())) == 1  # COCOeval needs ids >= 1
    assert capsys.readouterr().out == ""
    assert ds.fingerprint()["generator"] == "shapes-v1"


def test_classes_subset_and_test_mode() -> None:
    ds = shapes(30, classes=["star", "ellipse"])
    assert ds.cat_ids == [4, 2]
    for i in range(len(ds)):
        labels = ds.get_ann_info(i)["labels"]
        assert len(labels) > 0 and set(labels.tolist()) <= {0, 1}
    assert len(ds) <= 30
    with pytest.raises(DatasetError, match="did you mean 'triangle'"):
        shapes(3, classes=["triangel"])
    t = ShapesDataset(pipeline=tta_pipeline((256, 256), flip=True), num_images=3, split="val", test_mode=True)
    out = t[1]
    assert len(out) == 2 and out[1].meta.flip and out[0].gt is None


def test_mask_pipeline_matches_area() -> None:
    pipeline = [{"type": "LoadImageFromFile"}, {"type": "LoadAnnotations", "with_mask": True},
                {"type": "DefaultFormatBundle"}, {"type": "Collect", "keys": ["img", "gt_bboxes", "gt_labels",
                                                                               "gt_masks"]}]
    ds = ShapesDataset(pipeline=pipeline, num_images=2)
    s = ds[0]
    areas = [a["area"] for a in ds.coco.loadAnns(ds.coco.getAnnIds(imgIds=[1]))]
    np.testing.assert_allclose(s.gt.masks.areas, areas, rtol=0.25, atol=15)


def test_export_equals_in_memory(tmp_path: Path) -> None:
    ann_path = export_shapes_coco(tmp_path / "out", num_images=5, seed=3, split="val")
    assert ann_path == tmp_path / "out" / "annotations" / "instances_val.json"
    assert sorted(p.name for p in (tmp_path / "out" / "images" / "val").iterdir()) == [
        f"{i:06d}.jpg" for i in range(5)]
    mem = ShapesDataset(pipeline=train_pipeline((256, 256)), num_images=5, seed=3, split="val")
    assert json.loads(ann_path.read_text()) == mem.coco_dict()
    files = CocoDataset(ann_file="annotations/instances_val.json", img_prefix="images/val/",
                        data_root=str(tmp_path / "out"), pipeline=train_pipeline((256, 256)))
    assert files.classes == mem.classes and files.image_ids == mem.image_ids
    for i in range(5):
        a, b = files.get_ann_info(i), mem.get_ann_info(i)
        np.testing.assert_array_equal(a["labels"], b["labels"])
        np.testing.assert_allclose(a["bboxes"], b["bboxes"], atol=1e-4)
    s_file, s_mem = files[0], mem[0]
    assert s_file.meta.img_shape == s_mem.meta.img_shape
    assert torch.equal(s_file.gt.boxes.tensor, s_mem.gt.boxes.tensor)
    assert (s_file.image - s_mem.image).abs().mean() < 0.2  # JPEG q95 of a noisy image: ~6 grey levels
    # a second export replaces the first one
    export_shapes_coco(tmp_path / "out", num_images=2, seed=3, split="val")
    assert len(list((tmp_path / "out" / "images" / "val").iterdir())) == 2
    assert [p.name for p in (tmp_path / "out" / "images").iterdir()] == ["val"]


def test_holes_are_opened_into_simple_pieces() -> None:
    frame = Polygon([(0, 0), (40, 0), (40, 30), (0, 30)]).difference(
        unary_union([Polygon([(5, 5), (10, 5), (10, 10), (5, 10)]), Polygon([(20, 12), (30, 12), (25, 20)])]))
    assert len(frame.interiors) == 2
    pieces = [Polygon(p) for p in _simple_pieces(frame)]
    assert all(not p.interiors and p.is_valid for p in pieces)
    union = unary_union(pieces)
    assert abs(union.area - frame.area) < 1e-9 and union.symmetric_difference(frame).area < 1e-9
