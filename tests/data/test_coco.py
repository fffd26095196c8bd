from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from detcli.data import CocoDataset, build_dataset
from detcli.errors import ConfigError, DatasetError

from tests.data.helpers import five_categories, train_pipeline, tta_pipeline, write_coco


def make(ann: Path, **kw) -> CocoDataset:
    kw.setdefault("pipeline", train_pipeline())
    return CocoDataset(ann_file=str(ann), img_prefix=str(ann.parent / "images"), **kw)


def test_category_ids_map_to_contiguous_labels(small_coco: Path) -> None:
    ds = make(small_coco)
    assert ds.classes == ("a", "b", "c", "d", "e")
    assert ds.cat_ids == [1, 3, 4, 16, 17]
    assert ds.cat2label == {1: 0, 3: 1, 4: 2, 16: 3, 17: 4}
    ann = ds.get_ann_info(0)
    # xywh -> xyxy at the boundary
    np.testing.assert_array_equal(ann["bboxes"], [[4, 6, 14, 26], [20, 10, 50, 40]])
    np.testing.assert_array_equal(ann["labels"], [1, 3])
    # crowd box -> ignore box
    np.testing.assert_array_equal(ann["bboxes_ignore"], [[0, 0, 8, 8]])


def test_filter_empty_gt_only_in_training(small_coco: Path) -> None:
    train = make(small_coco)
    assert train.image_ids == [1, 2]
    assert len(make(small_coco, filter_empty_gt=False)) == 3
    test = make(small_coco, pipeline=tta_pipeline(), test_mode=True)
    assert test.image_ids == [1, 2, 3]


def test_classes_subset_and_reorder(small_coco: Path, tmp_path: Path) -> None:
    ds = make(small_coco, classes=["e", "b"])
    assert ds.cat_ids == [17, 3]
    # image 1 keeps only 'b' (label 1), image 2 keeps 'e' (label 0); the crowd 'a' box is dropped
    np.testing.assert_array_equal(ds.get_ann_info(0)["labels"], [1])
    assert len(ds.get_ann_info(0)["bboxes_ignore"]) == 0
    np.testing.assert_array_equal(ds.get_ann_info(1)["labels"], [0])
    txt = tmp_path / "classes.txt"
    txt.write_text("d\n\nc\n")
    ds = make(small_coco, classes=str(txt))
    assert ds.classes == ("d", "c") and ds.cat_ids == [16, 4]
    # only image 1 has a 'd'
    assert ds.image_ids == [1]


def test_unknown_class_has_did_you_mean(small_coco: Path) -> None:
    with pytest.raises(DatasetError, match=r"class 'bb'.*ann.json|ann.json.*class 'bb'"):
        make(small_coco, classes=["a", "bb"])
    with pytest.raises(DatasetError, match="did you mean"):
        cats = [{"id": 1, "name": "person"}]
        ann = write_coco(small_coco.parent / "p", [{"id": 1, "file_name": "x.jpg", "height": 40, "width": 40}],
                         [], cats, write_images=False)
        make(ann, classes=["persn"])


def test_undeclared_category_names_annotation_and_file(tmp_path: Path) -> None:
    images = [{"id": 1, "file_name": "a.jpg", "height": 40, "width": 40}]
    anns = [{"id": 77, "image_id": 1, "category_id": 5, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0}]
    ann = write_coco(tmp_path, images, anns, five_categories(), write_images=False, name="bad.json")
    with pytest.raises(DatasetError, match=r"bad\.json.*annotation id 77.*category_id 5"):
        make(ann)


def test_invalid_boxes_dropped_with_one_counted_warning_per_reason(tmp_path: Path, caplog) -> None:
    images = [{"id": 1, "file_name": "a.jpg", "height": 40, "width": 40}]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [1, 1, 0, 5], "area": 1, "iscrowd": 0},
        {"id": 3, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, -2], "area": 1, "iscrowd": 0},
        {"id": 4, "image_id": 1, "category_id": 1, "bbox": [50, 50, 5, 5], "area": 25, "iscrowd": 0},
        {"id": 5, "image_id": 1, "category_id": 1, "bbox": [2, 2, 5, 5], "area": 0, "iscrowd": 0},
        {"id": 6, "image_id": 1, "category_id": 1, "bbox": [2, 2, 5, 5], "area": 25, "iscrowd": 0, "ignore": 1},
    ]
    ann = write_coco(tmp_path, images, anns, five_categories(), write_images=False, name="inst.json")
    with caplog.at_level(logging.WARNING, logger="detcli.data.coco"):
        ds = make(ann)
    assert len(ds.get_ann_info(0)["bboxes"]) == 1
    msgs = [r.getMessage() for r in caplog.records]
    assert "dropped 2 boxes with zero or negative size (width or height < 1 px) in inst.json" in msgs
    assert "dropped 1 boxes entirely outside the image in inst.json" in msgs
    assert "dropped 1 boxes with area <= 0 in inst.json" in msgs
    assert len(msgs) == 3


def test_empty_dataset_after_filtering_is_an_error(tmp_path: Path) -> None:
    images = [{"id": 1, "file_name": "a.jpg", "height": 40, "width": 40}]
    ann = write_coco(tmp_path, images, [], five_categories(), write_images=False, name="empty.json")
    with pytest.raises(DatasetError, match=r"empty\.json.*no training image.*filter_empty_gt"):
        make(ann)
    assert len(make(ann, filter_empty_gt=False)) == 1
    small = write_coco(tmp_path, [{"id": 1, "file_name": "a.jpg", "height": 20, "width": 40}], [],
                       five_categories(), write_images=False, name="small.json")
    with pytest.raises(DatasetError, match="smaller than 32"):
        make(small, filter_empty_gt=False)
    no_images = write_coco(tmp_path, [], [], five_categories(), write_images=False, name="none.json")
    with pytest.raises(DatasetError, match=r"none\.json.*no images"):
        make(no_images, test_mode=True, pipeline=tta_pipeline())


def test_missing_and_bad_annotation_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="annotation file not found"):
        make(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DatasetError, match=r"bad\.json: not valid JSON"):
        make(bad)
    (tmp_path / "nocat.json").write_text(json.dumps({"images": []}))
    with pytest.raises(DatasetError, match="categories"):
        make(tmp_path / "nocat.json")


def test_missing_image_names_path_and_index(small_coco: Path) -> None:
    (small_coco.parent / "images" / "002.jpg").unlink()
    ds = make(small_coco)
    ds[0]  # image 1 is fine
    with pytest.raises(DatasetError, match=r"002\.jpg.*dataset index 1"):
        ds[1]
    with pytest.raises(DatasetError, match=r"1 image files.*002\.jpg \(index 1\)"):
        ds.check_images()


def test_corrupted_image_names_file(small_coco: Path) -> None:
    (small_coco.parent / "images" / "001.jpg").write_bytes(b"definitely not a jpeg")
    ds = make(small_coco)
    with pytest.raises(DatasetError, match=r"cannot decode image .*001\.jpg"):
        ds[0]
    with pytest.raises(DatasetError, match="001.jpg"):
        ds.check_images(decode=True)


def test_sample_values_and_coco_object(small_coco: Path, capsys) -> None:
    ds = make(small_coco)
    s = ds[0]
    # 64x48 -> keep ratio into (1333, 800): factor min(1333/64, 800/48) = 16.667 -> 1067x800
    assert s.meta.ori_shape == (48, 64)
    assert s.meta.img_shape == (800, 1067)
    assert s.meta.pad_shape == (800, 1088)
    assert tuple(s.image.shape) == (3, 800, 1088)
    assert s.meta.image_id == 1 and s.meta.filename.endswith("001.jpg")
    wf, hf = 1067 / 64, 800 / 48
    np.testing.assert_allclose(s.gt.boxes.tensor.numpy(), [[4 * wf, 6 * hf, 14 * wf, 26 * hf],
                                                           [20 * wf, 10 * hf, 50 * wf, 40 * hf]], rtol=1e-5)
    assert len(s.gt.ignore_boxes) == 1
    assert sorted(ds.coco.getImgIds()) == [1, 2, 3] and len(ds.coco.getAnnIds()) == 4
    assert capsys.readouterr().out == ""  # pycocotools' prints are swallowed
    fp = ds.fingerprint()
    assert fp["num_images"] == 2 and len(fp["ann_file_sha256"]) == 64


def test_build_dataset_with_data_root(small_coco: Path) -> None:
    root = small_coco.parent
    cfg = {"type": "CocoDataset", "data_root": str(root), "ann_file": "ann.json", "img_prefix": "images/",
           "pipeline": tta_pipeline(img_scale=(128, 96))}
    ds = build_dataset(cfg, test_mode=True)
    assert ds.ann_file == str(root / "ann.json") and len(ds) == 3
    samples = ds[2]
    assert isinstance(samples, list) and len(samples) == 1 and samples[0].gt is None
    with pytest.raises(ConfigError, match=r"data\.train\.img_prefx.*did you mean 'img_prefix'"):
        build_dataset({**cfg, "img_prefx": "x"}, test_mode=False, path="data.train")
    with pytest.raises(DatasetError, match="proposal_file"):
        build_dataset({**cfg, "proposal_file": "p.pkl"}, test_mode=True)


def test_grayscale_image_becomes_three_channels(tmp_path: Path) -> None:
    import cv2

    images = [{"id": 1, "file_name": "g.png", "height": 40, "width": 50}]
    ann = write_coco(tmp_path, images, [], five_categories(), write_images=False)
    cv2.imwrite(str(tmp_path / "images" / "g.png"), np.full((40, 50), 128, np.uint8))
    ds = make(ann, pipeline=tta_pipeline(img_scale=(50, 40)), test_mode=True)
    s = ds[0][0]
    assert tuple(s.image.shape) == (3, 64, 64)
    # grey 128 normalised per channel (RGB order)
    np.testing.assert_allclose(s.image[:, 0, 0].numpy(), (128 - np.array([123.675, 116.28, 103.53]))
                               / np.array([58.395, 57.12, 57.375]), rtol=1e-5)


COCO128 = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "coco128" / "images" / "train2017"


@pytest.mark.skipif(not COCO128.is_dir(), reason="coco128 not available")
def test_real_jpegs_from_coco128(tmp_path: Path) -> None:
    import cv2

    files = sorted(COCO128.glob("*.jpg"))[:2]
    images = []
    for k, f in enumerate(files, 1):
        h, w = cv2.imread(str(f)).shape[:2]
        images.append({"id": k, "file_name": f.name, "height": h, "width": w})
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 40], "area": 2000, "iscrowd": 0}]
    ann = write_coco(tmp_path, images, anns, five_categories(), write_images=False)
    ds = CocoDataset(ann_file=str(ann), img_prefix=str(COCO128), pipeline=train_pipeline((640, 640)))
    s = ds[0]
    h, w = images[0]["height"], images[0]["width"]
    assert s.meta.ori_shape == (h, w) and max(s.meta.img_shape) == 640
