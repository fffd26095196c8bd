"""det's array engine (the default) gives pycocotools' numbers bit for bit: all 12 stats and the
precision/recall/scores arrays, in one process and split over forked processes."""

from __future__ import annotations

import contextlib
import copy
import io
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import detcli.evaluation.fast_coco as fast_coco
from detcli.evaluation import evaluate_coco
from detcli.evaluation.fast_coco import split_categories


def make_gt(seed: int, nimg: int = 24, ncat: int = 5, crowd: float = 0.1, id_zero: bool = False) -> dict[str, Any]:
    """Random boxes and polygons; the last category has no GT; the first image has no GT at all."""
    rng = np.random.default_rng(seed)
    images = [{"id": 1000 - 7 * i, "width": 160, "height": 120, "file_name": f"{i}.jpg"} for i in range(nimg)]
    cats = [{"id": 11 - 2 * c, "name": f"c{c}"} for c in range(ncat)]  # ids not in sorted order
    anns = []
    for im in images[1:]:
        for _ in range(int(rng.integers(0, 9))):
            w, h = np.exp(rng.uniform(np.log(3), np.log(110), 2))
            x, y = rng.uniform(0, 160 - w), rng.uniform(0, 120 - h)
            poly = [x, y, x + w, y, x + w * 0.6, y + h, x, y + h * 0.7]
            anns.append({"id": len(anns) + 1, "image_id": im["id"], "category_id": int(rng.choice([c["id"] for c in cats[:-1]])),
                         "bbox": [float(x), float(y), float(w), float(h)], "area": float(w * h * 0.8),
                         "iscrowd": int(rng.random() < crowd), "segmentation": [[float(v) for v in poly]]})
    if id_zero:
        anns[0]["id"] = 0
    return {"images": images, "categories": cats, "annotations": anns}


def make_results(gt: dict[str, Any], seed: int, masks: bool = False, skip_cat: int | None = None,
                 ties: bool = False) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed + 1)
    cat_ids = [c["id"] for c in gt["categories"]]
    res = []
    for a in gt["annotations"]:
        for _ in range(int(rng.integers(0, 3))):
            b = np.asarray(a["bbox"]) + rng.normal(0, 3, 4)
            b[2:] = np.abs(b[2:]) + 0.5
            res.append({"image_id": a["image_id"], "category_id": a["category_id"] if rng.random() < 0.8 else int(rng.choice(cat_ids)),
                        "bbox": [round(float(v), 2) for v in b], "score": float(rng.random())})
    for _ in range(150):
        w, h = np.exp(rng.uniform(np.log(2), np.log(90), 2))
        res.append({"image_id": int(rng.choice([i["id"] for i in gt["images"]])), "category_id": int(rng.choice(cat_ids[:-1])),
                    "bbox": [round(float(rng.uniform(0, 140)), 2), round(float(rng.uniform(0, 100)), 2), round(float(w), 2), round(float(h), 2)],
                    "score": float(rng.random())})
    if ties:
        for r in res:
            r["score"] = round(r["score"], 1)  # many equal scores: the stable orders decide
    if skip_cat is not None:
        res = [r for r in res if r["category_id"] != skip_cat]
    if masks:
        for r in res:
            x, y, w, h = r["bbox"]
            rle = mask_utils.merge(mask_utils.frPyObjects([[x, y, x + w, y, x + w, y + h, x + w * 0.2, y + h]], 120, 160))
            r["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    return res


def coco_of(gt: dict[str, Any]) -> COCO:
    coco = COCO()
    coco.dataset = copy.deepcopy(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def direct(gt: dict[str, Any], res: list[dict[str, Any]], iou_type: str, **params: Any) -> COCOeval:
    coco = coco_of(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco, coco.loadRes(copy.deepcopy(res)), iou_type)
        for key, value in params.items():
            setattr(ev.params, key, value)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def assert_identical(ours: Any, ev: COCOeval, name: str) -> None:
    assert ours.stats[name] == [float(s) for s in ev.stats]  # all 12 numbers, exactly
    if name in ours.precision:
        assert np.array_equal(ours.precision[name], ev.eval["precision"])


@pytest.fixture(params=[1, 2], ids=["one-process", "two-processes"])
def workers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(fast_coco, "MIN_PARALLEL_DETECTIONS", 0)  # fork even for these small sets
    return int(request.param)


@pytest.mark.parametrize("seed,crowd", [(0, 0.1), (1, 0.0), (2, 0.3)])
def test_bbox_and_segm_identical_to_pycocotools(seed: int, crowd: float, workers: int) -> None:
    gt = make_gt(seed, crowd=crowd)
    res = make_results(gt, seed, masks=True)
    ours = evaluate_coco(coco_of(gt), res, ["bbox", "segm"], classwise=True, keep_precision=True, workers=workers)
    assert_identical(ours, direct(gt, res, "bbox"), "bbox")
    assert_identical(ours, direct(gt, res, "segm"), "segm")
    ev = direct(gt, res, "segm")
    order = sorted(c["id"] for c in gt["categories"])
    for row in ours.classwise["segm"]:  # rows in the GT's category order, APs from the sorted axis
        p = ev.eval["precision"][:, :, order.index(row.category_id), 0, -1]
        p = p[p > -1]
        assert row.ap == (float(np.mean(p)) if p.size else None)
    assert ours.classwise["segm"][-1].ap is None  # the last class has no GT


def test_score_ties_id_zero_and_class_without_detections(workers: int) -> None:
    gt = make_gt(3, id_zero=True)
    res = make_results(gt, 3, ties=True, skip_cat=9)
    ours = evaluate_coco(coco_of(gt), res, ["bbox"], keep_precision=True, workers=workers, classwise=True)
    assert_identical(ours, direct(gt, res, "bbox"), "bbox")
    assert {r.category_id: r.ap for r in ours.classwise["bbox"]}[9] == 0.0  # GT but no detections: AP 0


def test_custom_iou_thresholds_and_max_dets_and_proposals(workers: int) -> None:
    gt = make_gt(4)
    res = make_results(gt, 4)
    thrs = [0.3, 0.5, 0.7]
    ours = evaluate_coco(coco_of(gt), res, ["bbox", "proposal"], iou_thrs=thrs, proposal_nums=(2, 5, 20),
                         keep_precision=True, workers=workers)
    assert_identical(ours, direct(gt, res, "bbox", iouThrs=np.asarray(thrs)), "bbox")
    assert ours.stats["proposal"] == [float(s) for s in direct(gt, res, "bbox", iouThrs=np.asarray(thrs), useCats=0, maxDets=[2, 5, 20]).stats]


def test_subset_of_images_and_categories(workers: int) -> None:
    gt = make_gt(5)
    res = make_results(gt, 5)
    imgs = [im["id"] for im in gt["images"][::2]]
    cats = [11, 7, 5]
    ours = evaluate_coco(coco_of(gt), res, ["bbox"], img_ids=imgs, cat_ids=cats, classes=["a", "b", "c"], workers=workers)
    assert ours.stats["bbox"] == [float(s) for s in direct(gt, res, "bbox", imgIds=imgs, catIds=cats).stats]


def test_empty_results_and_results_on_images_without_gt(workers: int) -> None:
    gt = make_gt(6)
    empty = evaluate_coco(coco_of(gt), [], ["bbox", "segm"], workers=workers)
    assert empty.metrics["bbox_mAP"] == 0.0 and empty.metrics["segm_mAP"] == 0.0
    first = gt["images"][0]["id"]  # no GT there
    only_fp = [{"image_id": first, "category_id": 11, "bbox": [1, 2, 3, 4], "score": 0.5}]
    ours = evaluate_coco(coco_of(gt), only_fp, ["bbox"], workers=workers)
    assert ours.stats["bbox"] == [float(s) for s in direct(gt, only_fp, "bbox").stats]


def test_segm_results_without_bbox_use_the_mask_area() -> None:
    gt = make_gt(7)
    res = make_results(gt, 7, masks=True)
    for r in res:
        del r["bbox"]
    ours = evaluate_coco(coco_of(gt), res, ["segm"])
    assert ours.stats["segm"] == [float(s) for s in direct(gt, res, "segm").stats]


def test_split_categories_balances_and_covers_all() -> None:
    dt = fast_coco.Side(np.zeros(7, np.int64), np.array([0, 0, 0, 0, 1, 2, 2]), np.zeros(7), np.zeros((7, 4)), np.zeros(7),
                        np.zeros(7, bool), np.zeros(7, np.int64))
    gt = fast_coco.Side(np.zeros(1, np.int64), np.array([3]), np.zeros(1), np.zeros((1, 4)), np.zeros(1),
                        np.zeros(1, bool), np.zeros(1, np.int64))
    parts = split_categories(dt, gt, 5, 2)
    assert sorted(sum(parts, [])) == [0, 1, 2, 3, 4]
    assert parts == [[0, 4], [1, 2, 3]]  # loads 4+0 vs 2+1+1 (heaviest first, to the lighter side)


def test_segm_needs_ground_truth_masks() -> None:
    from detcli.errors import DatasetError

    gt = make_gt(8)
    res = make_results(gt, 8, masks=True)
    del gt["annotations"][2]["segmentation"]
    with pytest.raises(DatasetError, match=r"annotation id 3 has no segmentation"):
        evaluate_coco(coco_of(gt), res, ["segm"])
    assert evaluate_coco(coco_of(gt), res, ["bbox"]).stats["bbox"] == [float(s) for s in direct(gt, res, "bbox").stats]
