"""VOCDataset: XML parsing, -1 shift, difficult/min_size ignore boxes, filtering, year, COCO view."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from detcli.data import VOC_CLASSES, Sample, VOCDataset, build_dataset
from detcli.data.voc import voc_year
from detcli.errors import DatasetError

from tests.data.helpers import train_pipeline, tta_pipeline
from tests.data.voc_helpers import VocImage, VocObject, shapes_devkit, write_voc


def blank(h: int = 48, w: int = 64) -> np.ndarray:
    return np.full((h, w, 3), 127, np.uint8)


@pytest.fixture
def devkit(tmp_path: Path) -> Path:
    """VOC2007 'trainval': 000001 (dog, difficult cat, person part-free 'unknown' class), 000002 (nothing),
    000003 (a 20x20 image), 000004 (no <size>, no <difficult>)."""
    images = [
        VocImage("000001", blank(), [VocObject("dog", (5, 6, 30, 40)), VocObject("cat", (1, 1, 10.7, 10), 1),
                                     VocObject("unicorn", (2, 2, 8, 8))]),
        VocImage("000002", blank(), []),
        VocImage("000003", blank(20, 20), [VocObject("dog", (2, 2, 10, 10))]),
        VocImage("000004", blank(40, 50), [VocObject("person", (11, 12, 41, 33), None)], write_size=False),
    ]
    write_voc(tmp_path / "VOCdevkit", 2007, {"trainval": images})
    return tmp_path / "VOCdevkit"


def make(devkit: Path, year: int = 2007, **kw) -> VOCDataset:
    kw.setdefault("pipeline", train_pipeline())
    return VOCDataset(ann_file="ImageSets/Main/trainval.txt", data_root=str(devkit / f"VOC{year}"),
                      img_prefix=f"{devkit}/VOC{year}/", **kw)


def test_parse_shift_difficult_and_unknown_classes(devkit: Path) -> None:
    ds = make(devkit, test_mode=True, pipeline=tta_pipeline())
    assert ds.classes == VOC_CLASSES and ds.cat_ids == list(range(1, 21))
    assert len(ds) == 4 and ds.image_ids == [1, 2, 3, 4]
    ann = ds.get_ann_info(0)
    np.testing.assert_array_equal(ann["bboxes"], [[4, 5, 29, 39]])  # 1-based -> 0-based
    np.testing.assert_array_equal(ann["labels"], [VOC_CLASSES.index("dog")])
    np.testing.assert_array_equal(ann["bboxes_ignore"], [[0, 0, 9, 9]])  # int(float('10.7')) - 1
    np.testing.assert_array_equal(ann["labels_ignore"], [VOC_CLASSES.index("cat")])
    assert ann["bboxes"].dtype == np.float32 and ann["labels"].dtype == np.int64
    empty = ds.get_ann_info(1)
    assert empty["bboxes"].shape == (0, 4) and empty["bboxes_ignore"].shape == (0, 4)
    assert ds.get_img_info(0) == {"filename": "JPEGImages/000001.jpg", "height": 48, "width": 64, "id": 1,
                                  "img_id": "000001"}
    assert ds.get_img_info(3)["height"] == 40 and ds.get_img_info(3)["width"] == 50  # read from the image
    assert sorted(ds.get_cat_ids(0)) == sorted([VOC_CLASSES.index("dog"), VOC_CLASSES.index("cat")])


def test_training_filters_empty_and_small_images(devkit: Path) -> None:
    ds = make(devkit)
    assert ds.image_ids == [1, 4]  # 000002 has no object, 000003 is smaller than 32 px
    assert make(devkit, filter_empty_gt=False).image_ids == [1, 2, 4]
    # only difficult objects of the classes still count as an object (mmdet)
    only_cat = make(devkit, classes=["cat"])
    assert only_cat.image_ids == [1]
    assert len(only_cat.get_ann_info(0)["bboxes"]) == 0 and len(only_cat.get_ann_info(0)["bboxes_ignore"]) == 1
    with pytest.raises(DatasetError, match="no training image left"):
        make(devkit, classes=["sheep"])


def test_min_size_turns_small_objects_into_ignore_boxes(devkit: Path) -> None:
    ds = make(devkit, min_size=26)
    ann = ds.get_ann_info(0)  # dog is 25 wide -> ignored; cat is difficult anyway
    assert len(ann["bboxes"]) == 0
    np.testing.assert_array_equal(ann["labels_ignore"], [VOC_CLASSES.index("dog"), VOC_CLASSES.index("cat")])
    with pytest.raises(DatasetError, match="min_size"):
        make(devkit, min_size=10, test_mode=True)


def test_year_decides_eval_mode(tmp_path: Path) -> None:
    img = [VocImage("a", blank(), [VocObject("dog", (5, 6, 30, 40))])]
    for year, mode in ((2007, "11points"), (2012, "area")):
        write_voc(tmp_path, year, {"trainval": img})
        ds = make(tmp_path, year)
        assert ds.year == year and ds.eval_mode == mode
        assert ds.image_ids == [1]  # non-numeric ids: the line of the image-set file
    (tmp_path / "VOC2007").rename(tmp_path / "mine")
    custom = VOCDataset(ann_file=str(tmp_path / "mine/ImageSets/Main/trainval.txt"), pipeline=[],
                        img_prefix=str(tmp_path / "mine"))
    assert custom.year is None and custom.eval_mode == "area"
    assert voc_year("data/VOCdevkit/VOC2012/") == 2012


def test_samples_come_out_of_the_pipeline(devkit: Path) -> None:
    ds = make(devkit)
    sample = ds[0]
    assert isinstance(sample, Sample)
    np.testing.assert_allclose(sample.gt.boxes.tensor.numpy() / np.asarray(sample.meta.scale_factor), [[4, 5, 29, 39]], atol=1e-3)
    test = make(devkit, test_mode=True, pipeline=tta_pipeline())
    assert isinstance(test[0], list) and test[0][0].gt is None


def test_coco_view_keeps_ignore_boxes_as_crowd(devkit: Path) -> None:
    ds = make(devkit, test_mode=True, pipeline=tta_pipeline())
    coco = ds.coco
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    assert [(a["category_id"], a["bbox"], a["iscrowd"]) for a in anns] == [
        (VOC_CLASSES.index("dog") + 1, [4.0, 5.0, 25.0, 34.0], 0),
        (VOC_CLASSES.index("cat") + 1, [0.0, 0.0, 9.0, 9.0], 1),
    ]
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(VOC_CLASSES)


def test_fingerprint_and_check_images(devkit: Path) -> None:
    ds = make(devkit)
    fp = ds.fingerprint()
    assert fp["type"] == "VOCDataset" and fp["year"] == 2007 and fp["num_images"] == 2
    assert len(fp["ann_file_sha256"]) == 64 and len(fp["annotations_sha256"]) == 64
    ds.check_images(decode=True)
    (devkit / "VOC2007/JPEGImages/000004.jpg").unlink()
    with pytest.raises(DatasetError, match="000004.jpg"):
        ds.check_images()


def test_errors_name_the_file(devkit: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="image-set file not found"):
        VOCDataset(ann_file=str(tmp_path / "nope.txt"), pipeline=[])
    (devkit / "VOC2007/Annotations/000002.xml").write_text("<annotation><object>")
    with pytest.raises(DatasetError, match=r"000002\.xml: not valid XML"):
        make(devkit)
    (devkit / "VOC2007/Annotations/000002.xml").write_text(
        "<annotation><size><width>9</width><height>9</height></size><object><name>dog</name></object></annotation>")
    with pytest.raises(DatasetError, match=r"000002\.xml: object 0 \('dog'\) has no <bndbox>"):
        make(devkit)
    (devkit / "VOC2007/Annotations/000002.xml").unlink()
    with pytest.raises(DatasetError, match=r"annotation file not found: .*000002\.xml"):
        make(devkit)


def test_built_from_config_with_shapes_devkit(tmp_path: Path) -> None:
    root = shapes_devkit(tmp_path / "VOCdevkit", num_train=4, num_test=2)
    node = {"type": "VOCDataset", "ann_file": "ImageSets/Main/test.txt", "img_prefix": "", "data_root": str(root),
            "classes": ["rectangle", "ellipse", "triangle", "star"], "pipeline": tta_pipeline()}
    node["img_prefix"] = str(root)
    ds = build_dataset(node, test_mode=True)
    assert ds.test_mode and len(ds) == 2 and ds.image_ids == [1000, 1001]
    total = sum(len(ds.get_ann_info(i)["bboxes"]) + len(ds.get_ann_info(i)["bboxes_ignore"]) for i in range(2))
    assert total > 0


def test_training_drops_zero_and_negative_size_boxes_with_one_counted_warning(tmp_path: Path, caplog) -> None:
    images = [VocImage("000001", blank(), [VocObject("dog", (5, 6, 30, 40)), VocObject("dog", (30, 6, 5, 40)),
                                           VocObject("cat", (9, 9, 20, 9)), VocObject("cat", (9, 9, 9, 20), 1)])]
    write_voc(tmp_path / "VOCdevkit", 2007, {"trainval": images})
    import logging

    with caplog.at_level(logging.WARNING, logger="detcli.data.voc"):
        ds = make(tmp_path / "VOCdevkit")
    ann = ds.get_ann_info(0)
    np.testing.assert_array_equal(ann["bboxes"], [[4, 5, 29, 39]])  # only the valid dog is left
    assert ann["bboxes_ignore"].shape == (0, 4)  # the empty difficult box is dropped too
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs == ["dropped 3 boxes with zero or negative size (xmax <= xmin or ymax <= ymin) in trainval.txt"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="detcli.data.voc"):  # evaluation keeps the file's boxes
        test = make(tmp_path / "VOCdevkit", test_mode=True, pipeline=tta_pipeline())
    assert len(test.get_ann_info(0)["bboxes"]) == 3 and not caplog.records
