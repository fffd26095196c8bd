"""Masks in results: RLE encoding round trip, detections_to_coco with masks, segm metrics equal to a
direct pycocotools COCOeval(iouType='segm') run."""

from __future__ import annotations

import contextlib
import copy
import io
from typing import Any

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detcli.evaluation import detections_to_coco, evaluate_coco
from detcli.evaluation.rle import EncodedDetections, compact, decode_masks, encode_masks
from detcli.structures import Detections

H, W = 48, 64
CATS = [{"id": 2, "name": "a"}, {"id": 4, "name": "b"}, {"id": 6, "name": "c"}]
SEGM_KEYS = ["segm_mAP", "segm_mAP_50", "segm_mAP_75", "segm_mAP_s", "segm_mAP_m", "segm_mAP_l"]


def test_rle_round_trip_is_exact_and_json_ready() -> None:
    rng = np.random.default_rng(0)
    masks = rng.random((5, H, W)) < 0.3
    masks[1] = False  # an empty mask
    masks[2] = True  # a full one
    rles = encode_masks(torch.from_numpy(masks))
    assert all(r["size"] == [H, W] and isinstance(r["counts"], str) for r in rles)
    assert np.array_equal(decode_masks(rles), masks)
    # pycocotools reads them as they are
    assert mask_utils.area([{"size": r["size"], "counts": r["counts"].encode()} for r in rles]).tolist() == masks.sum((1, 2)).tolist()
    assert encode_masks(np.zeros((0, H, W), bool)) == []
    assert decode_masks([], (H, W)).shape == (0, H, W)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        encode_masks(np.zeros((H, W), bool))


def test_encoded_detections_keep_boxes_and_decode_masks() -> None:
    masks = torch.zeros(2, H, W, dtype=torch.bool)
    masks[0, 2:10, 3:9] = True
    masks[1, 20:, 30:] = True
    dets = Detections((H, W), torch.tensor([[3.0, 2.0, 9.0, 10.0], [30.0, 20.0, 64.0, 48.0]]), torch.tensor([0.9, 0.4]),
                      torch.tensor([0, 2]), masks)
    enc = compact(dets)
    assert isinstance(enc, EncodedDetections) and enc.detections.masks is None and len(enc) == 2
    assert torch.equal(enc.decode().masks, masks)
    boxes_only = Detections((H, W), torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64))
    assert compact(boxes_only) is boxes_only
    # the same results entries from dense or encoded masks
    assert detections_to_coco([dets], [5], [2, 4, 6]) == detections_to_coco([enc], [5], [2, 4, 6])
    entry = detections_to_coco([enc], [5], [2, 4, 6])[1]
    assert entry["category_id"] == 6 and entry["segmentation"]["size"] == [H, W]


def make_gt(seed: int) -> dict[str, Any]:
    """8 images (the first without GT), polygons; category 6 has GT but gets no detections; crowd regions."""
    rng = np.random.default_rng(seed)
    images = [{"id": i + 1, "width": W, "height": H, "file_name": f"{i}.png"} for i in range(8)]
    anns = []
    for im in images[1:]:
        for _ in range(int(rng.integers(1, 5))):
            w, h = rng.uniform(4, 40), rng.uniform(4, 30)
            x, y = rng.uniform(0, W - w), rng.uniform(0, H - h)
            poly = [x, y, x + w, y, x + w / 2, y + h]
            crowd = int(rng.random() < 0.15)
            anns.append({"id": len(anns) + 1, "image_id": im["id"], "category_id": int(rng.choice([2, 4, 6])),
                         "bbox": [x, y, w, h], "area": float(w * h / 2), "iscrowd": crowd, "segmentation": [poly]})
    return {"images": images, "annotations": anns, "categories": CATS}


def coco_of(gt: dict[str, Any]) -> COCO:
    coco = COCO()
    coco.dataset = copy.deepcopy(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def random_mask_detections(coco: COCO, seed: int) -> list[Detections]:
    """Per image: GT masks shifted a little (labels 0/1 only: class 6 gets nothing) plus random blobs."""
    rng = np.random.default_rng(seed)
    out = []
    for img_id in sorted(coco.getImgIds()):
        masks, labels = [], []
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[img_id])):
            if ann["category_id"] == 6:
                continue
            m = coco.annToMask(ann).astype(bool)
            masks.append(np.roll(m, int(rng.integers(-2, 3)), axis=int(rng.integers(0, 2))))
            labels.append([2, 4].index(ann["category_id"]))
        for _ in range(int(rng.integers(0, 3))):
            m = np.zeros((H, W), bool)
            y, x = int(rng.integers(0, H - 5)), int(rng.integers(0, W - 5))
            m[y:y + int(rng.integers(2, 20)), x:x + int(rng.integers(2, 20))] = True
            masks.append(m)
            labels.append(int(rng.integers(0, 2)))
        n = len(masks)
        if n == 0:
            out.append(Detections.empty((H, W), with_masks=True))
            continue
        m = torch.from_numpy(np.stack(masks))
        ys, xs = [np.nonzero(k.numpy().any(1))[0] for k in m], [np.nonzero(k.numpy().any(0))[0] for k in m]
        boxes = torch.tensor([[x[0], y[0], x[-1] + 1, y[-1] + 1] if len(x) else [0, 0, 1, 1] for x, y in zip(xs, ys)], dtype=torch.float32)
        scores = torch.from_numpy(rng.random(n).astype(np.float32))
        order = scores.argsort(descending=True)
        out.append(Detections((H, W), boxes[order], scores[order], torch.tensor(labels)[order], m[order]))
    return out


def direct_segm(gt: dict[str, Any], results: list[dict[str, Any]]) -> COCOeval:
    coco = coco_of(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco, coco.loadRes(copy.deepcopy(results)), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("engine", ["det", "pycocotools"])
def test_segm_metrics_equal_direct_pycocotools(seed: int, engine: str) -> None:
    gt = make_gt(seed)
    coco = coco_of(gt)
    results = detections_to_coco(random_mask_detections(coco, seed), sorted(coco.getImgIds()), [2, 4, 6])
    assert all("segmentation" in r for r in results)
    ours = evaluate_coco(coco, results, ["bbox", "segm"], classwise=True, engine=engine)
    ev = direct_segm(gt, results)
    assert [ours.metrics[k] for k in SEGM_KEYS] == [float(s) for s in ev.stats[:6]]
    assert ours.stats["segm"] == [float(s) for s in ev.stats]
    assert {r.category_id: r.ap for r in ours.classwise["segm"]}[6] == 0.0  # GT, no detections


def test_segm_with_empty_results() -> None:
    gt = make_gt(3)
    ours = evaluate_coco(coco_of(gt), [], ["segm"])
    assert [ours.metrics[k] for k in SEGM_KEYS[:3]] == [0.0, 0.0, 0.0]
