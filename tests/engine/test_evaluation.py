"""evaluate_dataset / resolve_evaluation: VOC and COCO metrics per dataset type, ConcatDataset separate_eval."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from detcli.data import ConcatDataset, RepeatDataset, ShapesDataset, VOCDataset
from detcli.engine.evaluation import dataset_metrics, evaluate_dataset, resolve_evaluation
from detcli.errors import ConfigError
from detcli.structures import Detections

from tests.data.voc_helpers import VocImage, VocObject, write_voc

TTA = [{"type": "LoadImageFromFile"}, {"type": "DefaultFormatBundle"}, {"type": "Collect", "keys": ["img"]}]


def perfect(dataset, drop_last: bool = False) -> list[Detections]:
    """Each image's ground truth (ignore boxes excluded) as detections with decreasing scores."""
    out = []
    for i in range(len(dataset)):
        ann = dataset.get_ann_info(i)
        boxes = torch.as_tensor(ann["bboxes"]).reshape(-1, 4)
        labels = torch.as_tensor(ann["labels"])
        if drop_last and len(boxes):
            boxes, labels = boxes[:-1], labels[:-1]
        scores = torch.linspace(0.9, 0.5, len(boxes)) if len(boxes) else torch.zeros(0)
        info = dataset.get_img_info(i)
        out.append(Detections((info["height"], info["width"]), boxes, scores, labels))
    return out


@pytest.fixture
def voc(tmp_path: Path) -> VOCDataset:
    img = np.zeros((48, 64, 3), np.uint8)
    images = [
        VocImage("000001", img, [VocObject("dog", (5, 6, 30, 40)), VocObject("cat", (1, 1, 10, 10), 1)]),
        VocImage("000002", img, [VocObject("dog", (20, 10, 60, 45)), VocObject("cat", (3, 3, 20, 20))]),
    ]
    write_voc(tmp_path, 2007, {"test": images})
    return VOCDataset(ann_file="ImageSets/Main/test.txt", data_root=str(tmp_path / "VOC2007"),
                      img_prefix=str(tmp_path / "VOC2007"), pipeline=TTA, test_mode=True)


def test_metric_families_per_dataset_type(voc: VOCDataset) -> None:
    shapes = ShapesDataset(pipeline=TTA, num_images=2, img_size=64, test_mode=True)
    assert dataset_metrics(voc) == ("mAP", "recall", "bbox", "proposal")
    assert dataset_metrics(shapes) == ("bbox", "segm", "proposal", "mAP", "recall")
    assert dataset_metrics(RepeatDataset(shapes, 2)) == ()
    assert dataset_metrics(ConcatDataset([shapes, shapes], separate_eval=False)) == ("mAP", "recall")
    assert resolve_evaluation(voc, None, {"interval": 1})[0] == ["mAP"]  # the dataset's default
    assert resolve_evaluation(voc, None, {"metric": "recall"})[0] == ["recall"]  # the config's
    names, options = resolve_evaluation(shapes, ["mAP"], {"metric": "bbox", "interval": 2, "iou_thr": 0.7},
                                        {"iou_thr": [0.5, 0.75]})
    assert names == ["mAP"] and options == {"iou_thr": [0.5, 0.75]}


def test_mismatched_metrics_and_options_are_clear_errors(voc: VOCDataset) -> None:
    shapes = ShapesDataset(pipeline=TTA, num_images=2, img_size=64, test_mode=True)
    with pytest.raises(ConfigError, match=r"metric 'segm' is not available for VOCDataset .*valid for VOCDataset: mAP, recall, bbox, proposal"):
        resolve_evaluation(voc, ["segm"], None)
    with pytest.raises(ConfigError, match=r"'map'.*did you mean 'mAP'"):
        resolve_evaluation(voc, ["map"], None)
    with pytest.raises(ConfigError, match="RepeatDataset cannot be evaluated"):
        resolve_evaluation(RepeatDataset(shapes, 2), None, None)
    with pytest.raises(ConfigError, match="separate_eval: true"):
        resolve_evaluation(ConcatDataset([shapes, shapes], separate_eval=False), ["bbox"], None)
    with pytest.raises(ConfigError, match=r"evaluation option 'iou_thresh' is unknown.*did you mean 'iou_thrs'"):
        resolve_evaluation(voc, None, {"iou_thresh": 0.5})
    with pytest.raises(ConfigError, match=r"'recall' and 'proposal' both report AR@N for VOCDataset"):
        resolve_evaluation(voc, ["recall", "proposal"], None)
    assert resolve_evaluation(voc, ["mAP", "recall"], None)[0] == ["mAP", "recall"]


def test_voc_metrics_on_voc(voc: VOCDataset) -> None:
    assert voc.eval_mode == "11points"
    ev = evaluate_dataset(voc, perfect(voc), ["mAP", "recall"], {"iou_thr": [0.5, 0.75], "proposal_nums": [1, 10]})
    assert ev.metrics["mAP"] == pytest.approx(1.0) and ev.metrics["AP75"] == pytest.approx(1.0)
    assert ev.metrics["recall@10@0.5"] == pytest.approx(1.0)
    assert ev.metrics["recall@1@0.5"] == pytest.approx(2 / 3)  # one box per image, 3 GT boxes
    rows = ev.map_tables[""][0].rows
    cat = rows[voc.classes.index("cat")]
    assert (cat.num_gts, cat.num_dets, cat.recall, cat.ap) == (1, 1, 1.0, pytest.approx(1.0))  # the difficult cat is ignored
    # missing the last box of each image: recall 1/2 for dog? (dog in image 1 is its last box)
    dropped = evaluate_dataset(voc, perfect(voc, drop_last=True), ["mAP"])
    dog = dropped.map_tables[""][0].rows[voc.classes.index("dog")]
    assert (dog.num_gts, dog.num_dets, dog.recall) == (2, 1, 0.5)
    # 11 points: precision 1 up to recall 0.5 -> 6/11
    assert dog.ap == pytest.approx(6 / 11, abs=1e-6)
    area = evaluate_dataset(voc, perfect(voc, drop_last=True), ["mAP"], {"eval_mode": "area"})
    assert area.map_tables[""][0].rows[voc.classes.index("dog")].ap == pytest.approx(0.5)


def test_coco_metrics_on_voc_and_voc_metrics_on_shapes(voc: VOCDataset) -> None:
    ev = evaluate_dataset(voc, perfect(voc), ["bbox"])
    assert ev.metrics["bbox_mAP"] == pytest.approx(1.0) and "bbox" in ev.summaries
    shapes = ShapesDataset(pipeline=TTA, num_images=2, img_size=64, test_mode=True)
    ev = evaluate_dataset(shapes, perfect(shapes), ["mAP", "bbox"])
    assert ev.metrics["mAP"] == pytest.approx(1.0) and ev.metrics["bbox_mAP"] == pytest.approx(1.0)
    assert list(ev.metrics)[:1] == ["bbox_mAP"]


def test_concat_separate_and_whole(voc: VOCDataset) -> None:
    shapes = ShapesDataset(pipeline=TTA, num_images=2, img_size=64, test_mode=True)
    shapes_b = ShapesDataset(pipeline=TTA, num_images=3, split="val", img_size=64, test_mode=True)
    both = ConcatDataset([shapes, shapes_b])
    dets = perfect(shapes) + perfect(shapes_b, drop_last=True)
    ev = evaluate_dataset(both, dets, ["bbox", "mAP"])
    assert ev.metrics["0_bbox_mAP"] == pytest.approx(1.0) and ev.metrics["0_mAP"] == pytest.approx(1.0)
    assert ev.metrics["1_mAP"] < 1.0
    assert set(ev.summaries) == {"0_bbox", "1_bbox"} and set(ev.map_tables) == {"0_", "1_"}
    whole = evaluate_dataset(ConcatDataset([shapes, shapes_b], separate_eval=False), dets, ["mAP"])
    gts = sum(r.num_gts for r in whole.map_tables[""][0].rows)
    assert gts == sum(len(d.get_ann_info(i)["bboxes"]) for d in (shapes, shapes_b) for i in range(len(d)))
    assert ev.metrics["1_mAP"] <= whole.metrics["mAP"] <= 1.0
    with pytest.raises(ValueError, match="2 detection sets for a dataset of 5"):
        evaluate_dataset(both, dets[:2], ["mAP"])


def test_results_file_refuses_repeated_image_ids() -> None:
    from detcli.engine.tester import check_unique_image_ids

    shapes = ShapesDataset(pipeline=TTA, num_images=2, img_size=64, test_mode=True)
    check_unique_image_ids(shapes)  # one dataset: ids are unique
    with pytest.raises(ConfigError, match=r"--out: image id \d+ occurs more than once in data.test \(ConcatDataset\)"):
        check_unique_image_ids(ConcatDataset([shapes, shapes]))
