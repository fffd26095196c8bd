"""det's COCO evaluation equals a direct pycocotools COCOeval run on the same files."""

from __future__ import annotations

import contextlib
import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detcli.errors import ConfigError, DatasetError
from detcli.evaluation import (
    ClasswiseAP,
    check_metrics,
    detections_to_coco,
    evaluate_coco,
    format_classwise_table,
    write_results_json,
)
from detcli.structures import Detections

CATEGORIES = [{"id": 3, "name": "circle"}, {"id": 7, "name": "square"}, {"id": 9, "name": "star"}]


def make_gt(tmp_path: Path, seed: int = 0, crowd: bool = False, no_gt_cat: int | None = None) -> Path:
    """A random GT file: 6 images, boxes of all sizes, non-contiguous category ids."""
    rng = random.Random(seed)
    images, anns = [], []
    for img_id in range(1, 7):
        images.append({"id": img_id * 10, "file_name": f"{img_id}.jpg", "height": 400, "width": 500})
        for _ in range(rng.randint(0, 5)):
            cat = rng.choice([c["id"] for c in CATEGORIES if c["id"] != no_gt_cat])
            w, h = rng.uniform(4, 200), rng.uniform(4, 200)
            x, y = rng.uniform(0, 500 - w), rng.uniform(0, 400 - h)
            anns.append({"id": len(anns) + 1, "image_id": img_id * 10, "category_id": cat,
                         "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
    if crowd:
        anns.append({"id": len(anns) + 1, "image_id": 10, "category_id": 3, "bbox": [0, 0, 300, 300],
                     "area": 90000.0, "iscrowd": 1})
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": CATEGORIES}))
    return path


def load_coco(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def random_detections(coco: COCO, seed: int, skip_label: int | None = None) -> list[Detections]:
    """Jittered GT boxes plus false positives, per image, as Detections in image order."""
    g = torch.Generator().manual_seed(seed)
    cat_ids = [c["id"] for c in CATEGORIES]
    out = []
    for img_id in sorted(coco.getImgIds()):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img_id]))
        boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns]
        labels = [cat_ids.index(a["category_id"]) for a in anns]
        for _ in range(3):  # false positives
            x, y = float(torch.rand(1, generator=g)) * 400, float(torch.rand(1, generator=g)) * 300
            boxes.append([x, y, x + 50, y + 40])
            labels.append(int(torch.randint(0, 3, (1,), generator=g)))
        b = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        b = b + torch.randn(b.shape, generator=g) * 3
        b[:, 2:] = torch.maximum(b[:, 2:], b[:, :2] + 1)
        scores = torch.rand(len(b), generator=g)
        lab = torch.tensor(labels, dtype=torch.int64)
        order = scores.argsort(descending=True)
        d = Detections((400, 500), b[order], scores[order], lab[order])
        if skip_label is not None:
            d = d[d.labels != skip_label]
        out.append(d)
    return out


def direct_pycocotools(gt_path: Path, res_path: Path, use_cats: bool = True, max_dets=None) -> tuple[np.ndarray, str, COCOeval]:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        dt = gt.loadRes(str(res_path))
    ev = COCOeval(gt, dt, "bbox")
    if not use_cats:
        ev.params.useCats = 0
    if max_dets is not None:
        ev.params.maxDets = list(max_dets)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        ev.evaluate()
        ev.accumulate()
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        ev.summarize()
    return ev.stats, text.getvalue().rstrip("\n"), ev


BBOX_KEYS = ["bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l"]


@pytest.mark.parametrize("seed,crowd", [(0, False), (1, True), (2, False), (3, True)])
def test_bbox_equals_direct_pycocotools(tmp_path: Path, seed: int, crowd: bool) -> None:
    gt_path = make_gt(tmp_path, seed, crowd=crowd)
    coco = load_coco(gt_path)
    dets = random_detections(coco, seed)
    results = detections_to_coco(dets, sorted(coco.getImgIds()), [c["id"] for c in CATEGORIES])
    res_path = write_results_json(results, tmp_path / "res.json")
    stats, summary, _ = direct_pycocotools(gt_path, res_path)
    ours = evaluate_coco(coco, json.loads(res_path.read_text()), ["bbox"])
    assert [ours.metrics[k] for k in BBOX_KEYS] == [float(s) for s in stats[:6]]
    assert ours.summaries["bbox"] == summary
    assert len(ours.summaries["bbox"].splitlines()) == 12
    assert ours.num_images == 6 and ours.num_detections == len(results)
    assert 0.0 < ours.metrics["bbox_mAP"] < 1.0


def test_crowd_detection_is_not_a_false_positive(tmp_path: Path) -> None:
    images = [{"id": 1, "file_name": "a.jpg", "height": 100, "width": 100}]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 40, 40], "area": 1600, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [50, 50, 50, 50], "area": 2500, "iscrowd": 1},
    ]
    p = tmp_path / "gt.json"
    p.write_text(json.dumps({"images": images, "annotations": anns, "categories": CATEGORIES[:1]}))
    coco = load_coco(p)
    res = [
        {"image_id": 1, "category_id": 3, "bbox": [60, 60, 20, 20], "score": 0.95},  # inside the crowd
        {"image_id": 1, "category_id": 3, "bbox": [0, 0, 40, 40], "score": 0.9},
    ]
    ours = evaluate_coco(coco, res)
    assert ours.metrics["bbox_mAP"] == pytest.approx(1.0)


def test_empty_results_give_zero_ap_and_do_not_crash(tmp_path: Path) -> None:
    coco = load_coco(make_gt(tmp_path, 0, no_gt_cat=9))
    ours = evaluate_coco(coco, [], ["bbox"], classwise=True)
    assert ours.metrics["bbox_mAP"] == 0.0
    assert ours.metrics["bbox_mAP_50"] == 0.0
    assert ours.num_detections == 0
    assert len(ours.summaries["bbox"].splitlines()) == 12
    rows = {r.name: r.ap for r in ours.classwise["bbox"]}
    assert rows == {"circle": 0.0, "square": 0.0, "star": None}


def test_empty_detections_objects_give_empty_results() -> None:
    assert detections_to_coco([Detections.empty((5, 5)), Detections.empty((5, 5))], [1, 2], [1]) == []


def test_class_without_detections_and_class_without_gt(tmp_path: Path) -> None:
    gt_path = make_gt(tmp_path, 5, no_gt_cat=9)  # 'star' has no GT
    coco = load_coco(gt_path)
    dets = random_detections(coco, 5, skip_label=1)  # 'square' never detected
    results = detections_to_coco(dets, sorted(coco.getImgIds()), [3, 7, 9])
    res_path = write_results_json(results, tmp_path / "res.json")
    stats, _, ev = direct_pycocotools(gt_path, res_path)
    ours = evaluate_coco(coco, results, classwise=True)
    assert [ours.metrics[k] for k in BBOX_KEYS] == [float(s) for s in stats[:6]]
    rows = {r.name: r for r in ours.classwise["bbox"]}
    assert rows["square"].ap == 0.0
    assert rows["star"].ap is None
    p = ev.eval["precision"][:, :, 0, 0, -1]
    assert rows["circle"].ap == pytest.approx(float(np.mean(p[p > -1])))
    table = format_classwise_table(ours.classwise["bbox"])
    assert "star     | n/a" in table and "nan" not in table.lower()


def test_proposal_equals_direct_pycocotools_class_agnostic(tmp_path: Path) -> None:
    gt_path = make_gt(tmp_path, 4)
    coco = load_coco(gt_path)
    results = detections_to_coco(random_detections(coco, 4), sorted(coco.getImgIds()), [3, 7, 9])
    res_path = write_results_json(results, tmp_path / "res.json")
    stats, summary, _ = direct_pycocotools(gt_path, res_path, use_cats=False, max_dets=(100, 300, 1000))
    ours = evaluate_coco(coco, results, ["proposal"])
    keys = ["AR@100", "AR@300", "AR@1000", "AR_s@1000", "AR_m@1000", "AR_l@1000"]
    assert [ours.metrics[k] for k in keys] == [float(s) for s in stats[6:12]]
    assert ours.summaries["proposal"] == summary
    # wrong labels do not matter to the class-agnostic recall
    shuffled = [{**r, "category_id": 3} for r in results]
    assert evaluate_coco(coco, shuffled, ["proposal"]).metrics["AR@100"] == ours.metrics["AR@100"]


def test_bbox_and_proposal_together(tmp_path: Path) -> None:
    coco = load_coco(make_gt(tmp_path, 6))
    results = detections_to_coco(random_detections(coco, 6), sorted(coco.getImgIds()), [3, 7, 9])
    ours = evaluate_coco(coco, results, ["bbox", "proposal"])
    assert set(ours.metrics) == set(BBOX_KEYS) | {"AR@100", "AR@300", "AR@1000", "AR_s@1000", "AR_m@1000", "AR_l@1000"}


def test_nothing_reaches_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    coco = load_coco(make_gt(tmp_path, 0))
    results = detections_to_coco(random_detections(coco, 0), sorted(coco.getImgIds()), [3, 7, 9])
    evaluate_coco(coco, results, ["bbox", "proposal"], classwise=True)
    evaluate_coco(coco, [], ["bbox"])
    assert capsys.readouterr().out == ""


def test_results_format_xywh_rounding_and_category_ids() -> None:
    d = Detections((50, 50), torch.tensor([[1.234567, 2.0, 11.0, 7.5], [0.0, 0.0, 1.0, 1.0]]),
                   torch.tensor([0.912345678, 0.5]), torch.tensor([1, 0]))
    res = detections_to_coco([d], [42], [5, 8])
    assert res == [
        {"image_id": 42, "category_id": 8, "bbox": [1.23, 2.0, 9.77, 5.5], "score": 0.91235},
        {"image_id": 42, "category_id": 5, "bbox": [0.0, 0.0, 1.0, 1.0], "score": 0.5},
    ]


def test_label_without_category_names_image_and_label() -> None:
    d = Detections((5, 5), torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([0.5]), torch.tensor([3]))
    with pytest.raises(ValueError, match="image 12: label 3"):
        detections_to_coco([d], [12], [1, 2])


def test_result_on_unknown_image_is_a_dataset_error(tmp_path: Path) -> None:
    coco = load_coco(make_gt(tmp_path, 0))
    with pytest.raises(DatasetError, match="image_id 999"):
        evaluate_coco(coco, [{"image_id": 999, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 0.5}])


@pytest.mark.parametrize("bad", ["segmm", "bbbox", "mAP"])
def test_unsupported_metric_lists_supported(bad: str) -> None:
    with pytest.raises(ConfigError, match=rf"metric '{bad}' is not supported.*supported: bbox, segm, proposal"):
        check_metrics([bad])


def test_unsupported_metric_did_you_mean() -> None:
    with pytest.raises(ConfigError, match="did you mean 'bbox'"):
        check_metrics("bbx")


def test_write_results_json_is_atomic_and_leaves_no_temp(tmp_path: Path) -> None:
    out = write_results_json([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}], tmp_path / "sub" / "r.json")
    assert json.loads(out.read_text())[0]["score"] == 0.5
    assert [p.name for p in out.parent.iterdir()] == ["r.json"]


def test_classwise_table_formats_values() -> None:
    table = format_classwise_table([ClasswiseAP("a", 1, 0.25), ClasswiseAP("bb", 2, None)])
    assert table.splitlines()[2:] == ["a        | 0.250", "bb       | n/a"]
