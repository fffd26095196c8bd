"""VOC metrics: average_precision, eval_map, eval_recalls, evaluate_voc (spec §3.7 values and hand-computed cases)."""

from __future__ import annotations

import numpy as np
import pytest

from detcli.errors import ConfigError
from detcli.evaluation.voc import (
    ClassAP,
    MapTable,
    average_precision,
    bbox_overlaps,
    eval_map,
    eval_recalls,
    evaluate_voc,
    format_map_table,
    table_title,
    tpfp_default,
)


def ann(boxes, labels, ignore=None, ignore_labels=None):
    out = {"bboxes": np.asarray(boxes, np.float32).reshape(-1, 4), "labels": np.asarray(labels, np.int64)}
    if ignore is not None:
        out["bboxes_ignore"] = np.asarray(ignore, np.float32).reshape(-1, 4)
        out["labels_ignore"] = np.asarray(ignore_labels, np.int64)
    return out


def dets(*rows):
    return np.asarray(rows, np.float32).reshape(-1, 5)


# --------------------------------------------------------------------------- average_precision (spec §3.7)


@pytest.mark.parametrize(("recalls", "precisions", "area", "eleven"), [
    ([0.5, 1.0], [1.0, 0.5], 0.75, 0.772727),
    ([0.25, 0.5, 0.5, 0.75], [1, 1, 0.6667, 0.75], 0.6875, 0.681818),
    ([0.5], [0.5], 0.25, 0.272727),
])
def test_average_precision_spec_cases(recalls, precisions, area, eleven):
    r, p = np.array(recalls), np.array(precisions)
    assert average_precision(r, p, "area") == pytest.approx(area, abs=1e-6)
    assert average_precision(r, p, "11points") == pytest.approx(eleven, abs=1e-6)


def test_average_precision_2d_returns_one_ap_per_scale():
    r = np.array([[0.5, 1.0], [0.5, 0.5]])
    p = np.array([[1.0, 0.5], [0.5, 0.5]])
    ap = average_precision(r, p, "area")
    assert ap.shape == (2,) and ap.dtype == np.float32
    np.testing.assert_allclose(ap, [0.75, 0.25])


def test_average_precision_empty_curve_is_zero_and_bad_mode_raises():
    assert average_precision(np.zeros(0), np.zeros(0), "area") == 0.0
    assert average_precision(np.zeros(0), np.zeros(0), "11points") == 0.0
    with pytest.raises(ConfigError, match="11points"):
        average_precision(np.zeros(1), np.zeros(1), "voc")


# --------------------------------------------------------------------------- overlaps / tpfp


def test_bbox_overlaps_plain_legacy_and_empty():
    a = np.array([[0, 0, 9, 9]])
    b = np.array([[0, 0, 9, 4]])
    assert bbox_overlaps(a, b)[0, 0] == pytest.approx(36 / 81)
    assert bbox_overlaps(a, b, use_legacy_coordinate=True)[0, 0] == pytest.approx(50 / 100)
    assert bbox_overlaps(a, b, mode="iof")[0, 0] == pytest.approx(36 / 81)
    assert bbox_overlaps(np.zeros((0, 4)), b).shape == (0, 1)
    assert bbox_overlaps(b, np.zeros((0, 5))).shape == (1, 0)
    # touching boxes do not overlap without +1
    assert bbox_overlaps(np.array([[0, 0, 10, 10]]), np.array([[10, 0, 20, 10]]))[0, 0] == 0


def test_tpfp_default_duplicate_ignore_and_no_gt():
    gt = np.array([[0, 0, 10, 10]])
    tp, fp = tpfp_default(dets([0, 0, 10, 10, .8], [0, 0, 10, 10, .9]), gt)
    # visited by score: the 0.9 one takes the box, the 0.8 one is a duplicate
    np.testing.assert_array_equal(tp, [[0, 1]])
    np.testing.assert_array_equal(fp, [[1, 0]])
    tp, fp = tpfp_default(dets([0, 0, 10, 10, .9]), np.zeros((0, 4)), gt_bboxes_ignore=gt)
    np.testing.assert_array_equal(tp + fp, [[0]])  # matched an ignore box: neither
    tp, fp = tpfp_default(dets([0, 0, 10, 10, .9], [5, 5, 6, 6, .3]), np.zeros((0, 4)))
    np.testing.assert_array_equal(fp, [[1, 1]])
    tp, fp = tpfp_default(np.zeros((0, 5)), gt)
    assert tp.shape == fp.shape == (1, 0)


def test_tpfp_default_area_ranges():
    gt = np.array([[0, 0, 4, 4], [20, 20, 70, 70]])  # areas 16 and 2500
    d = dets([0, 0, 4, 4, .9], [20, 20, 70, 70, .8], [100, 100, 102, 102, .7], [100, 100, 150, 150, .6])
    tp, fp = tpfp_default(d, gt, area_ranges=[(0, 100), (100, 1e5)])
    np.testing.assert_array_equal(tp, [[1, 0, 0, 0], [0, 1, 0, 0]])
    # small range: the big GT is ignored (its match counts as nothing), the unmatched small det is FP,
    # the unmatched big det lies outside the range: not counted
    np.testing.assert_array_equal(fp, [[0, 0, 1, 0], [0, 0, 0, 1]])


# --------------------------------------------------------------------------- eval_map


def test_eval_map_spec_tp_tp_fp():
    a = [ann([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0])]
    d = [[dets([0, 0, 10, 10, .9], [20, 20, 30, 31, .8], [50, 50, 60, 60, .7])]]
    mean_ap, res = eval_map(d, a)
    assert mean_ap == pytest.approx(1.0)
    np.testing.assert_allclose(res[0]["recall"], [0.5, 1, 1])
    np.testing.assert_allclose(res[0]["precision"], [1, 1, 2 / 3], rtol=1e-6)
    assert res[0]["num_gts"] == 2 and res[0]["num_dets"] == 3


@pytest.mark.parametrize("dataset", [None, "voc07"])
def test_eval_map_spec_fp_first_is_half_in_both_modes(dataset):
    a = [ann([[0, 0, 10, 10]], [0])]
    d = [[dets([50, 50, 60, 60, .95], [0, 0, 10, 10, .9])]]
    assert eval_map(d, a, dataset=dataset)[0] == pytest.approx(0.5)


def test_eval_map_duplicate_detection_is_false_positive():
    a = [ann([[0, 0, 10, 10]], [0])]
    _, res = eval_map([[dets([0, 0, 10, 10, .9], [0, 0, 10, 10, .8])]], a)
    np.testing.assert_allclose(res[0]["precision"], [1, 0.5])
    assert res[0]["ap"] == pytest.approx(1.0)


def test_eval_map_ties_keep_image_order():
    # equal scores in two images: the FP of image 0 comes before the TP of image 1
    a = [ann([[0, 0, 10, 10]], [0]), ann([[0, 0, 10, 10]], [0])]
    d = [[dets([50, 50, 60, 60, .9])], [dets([0, 0, 10, 10, .9])]]
    _, res = eval_map(d, a)
    np.testing.assert_allclose(res[0]["precision"], [0, 0.5])
    np.testing.assert_allclose(res[0]["recall"], [0, 0.5])
    assert res[0]["ap"] == pytest.approx(0.25)  # area: recall 0.5 at precision 0.5


def test_eval_map_one_detection_and_classes_without_dets_or_gts():
    # class 0: GT and one exact det; class 1: GT, no det; class 2: a det, no GT
    a = [ann([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 1])]
    d = [[dets([0, 0, 10, 10, .9]), np.zeros((0, 5)), dets([40, 40, 50, 50, .5])]]
    mean_ap, res = eval_map(d, a)
    assert [r["num_gts"] for r in res] == [1, 1, 0]
    assert [r["num_dets"] for r in res] == [1, 0, 1]
    assert [r["ap"] for r in res] == pytest.approx([1.0, 0.0, 0.0])
    assert mean_ap == pytest.approx(0.5)  # class 2 (no GT) is not averaged


def test_eval_map_no_detections_at_all_and_no_gt_at_all():
    a = [ann([[0, 0, 10, 10]], [0])]
    assert eval_map([[np.zeros((0, 5))]], a)[0] == 0.0
    mean_ap, res = eval_map([[dets([0, 0, 1, 1, .5])]], [ann(np.zeros((0, 4)), [])])
    assert mean_ap == 0.0 and res[0]["num_gts"] == 0


def test_eval_map_difficult_boxes_are_ignored_with_their_labels():
    gt_a, gt_b = [0, 0, 10, 10], [30, 30, 40, 40]
    d = [[dets([30, 30, 40, 40, .95], [0, 0, 10, 10, .9])]]
    with_ignore = [ann([gt_a], [0], ignore=[gt_b], ignore_labels=[0])]
    mean_ap, res = eval_map(d, with_ignore)
    assert res[0]["num_gts"] == 1
    assert mean_ap == pytest.approx(1.0)  # the det on the difficult box counts as nothing
    # an ignore box of another class does not hide a detection of this class
    other = [ann([gt_a], [0], ignore=[gt_b], ignore_labels=[1])]
    assert eval_map([[d[0][0], np.zeros((0, 5))]], other)[0] == pytest.approx(0.5)
    # ignore boxes without labels_ignore are not used (mmdet)
    unlabeled = [{"bboxes": np.array([gt_a]), "labels": np.array([0]), "bboxes_ignore": np.array([gt_b])}]
    assert eval_map(d, unlabeled)[0] == pytest.approx(0.5)


def test_eval_map_ignore_box_and_no_predictions():
    a = [ann(np.zeros((0, 4)), [], ignore=[[0, 0, 10, 10]], ignore_labels=[0])]
    mean_ap, res = eval_map([[np.zeros((0, 5))]], a)
    assert mean_ap == 0.0 and res[0]["num_gts"] == 0 and res[0]["num_dets"] == 0


def test_eval_map_legacy_coordinates_pin():
    a = [ann([[0, 0, 9, 9]], [0])]
    d = [[dets([0, 0, 9, 4, .9])]]
    assert eval_map(d, a)[0] == 0.0  # IoU 36/81 < 0.5
    assert eval_map(d, a, use_legacy_coordinate=True)[0] == pytest.approx(1.0)  # IoU 50/100


def test_eval_map_scale_ranges():
    a = [ann([[0, 0, 4, 4], [20, 20, 70, 70]], [0, 0])]
    d = [[dets([0, 0, 4, 4, .9], [20, 20, 70, 70, .8])]]
    mean_ap, res = eval_map(d, a, scale_ranges=[(0, 10), (10, 100), (100, 200)])
    assert mean_ap == pytest.approx([1.0, 1.0, 0.0])
    np.testing.assert_array_equal(res[0]["num_gts"], [1, 1, 0])
    assert res[0]["ap"].shape == (3,)
    with pytest.raises(ConfigError, match="min <= max"):
        eval_map(d, a, scale_ranges=[(10, 5)])


def test_eval_map_iou_threshold_and_mode_override():
    a = [ann([[0, 0, 10, 10]], [0])]
    d = [[dets([0, 0, 10, 6, .9])]]  # IoU 0.6
    assert eval_map(d, a, iou_thr=0.5)[0] == pytest.approx(1.0)
    assert eval_map(d, a, iou_thr=0.7)[0] == 0.0
    d2 = [[dets([50, 50, 60, 60, .95], [0, 0, 10, 10, .9])]]
    a2 = [ann([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0])]
    # recall [0, .5], precision [0, .5]: area .25, 11points 6 * .5 / 11
    assert eval_map(d2, a2)[0] == pytest.approx(0.25)
    assert eval_map(d2, a2, dataset="voc07")[0] == pytest.approx(3 / 11)
    assert eval_map(d2, a2, mode="11points")[0] == pytest.approx(3 / 11)


def _reference_map(det_results, annotations, iou_thr, legacy):
    """A plain per-class, per-detection loop written from the spec's description."""
    num_classes = len(det_results[0])
    aps, per = [], []
    for c in range(num_classes):
        records, num_gts = [], 0
        for img, (per_cls, a) in enumerate(zip(det_results, annotations)):
            gts = a["bboxes"][a["labels"] == c]
            ign = a["bboxes_ignore"][a["labels_ignore"] == c]
            num_gts += len(gts)
            allg = np.vstack((gts, ign))
            is_ign = [False] * len(gts) + [True] * len(ign)
            d = per_cls[c]
            taken = [False] * len(allg)
            flags = [None] * len(d)
            for i in sorted(range(len(d)), key=lambda i: -d[i, 4]):
                if len(allg):
                    ious = bbox_overlaps(d[i:i + 1], allg, use_legacy_coordinate=legacy)[0]
                    j = int(np.argmax(ious))
                    best = ious[j]
                else:
                    best = -1
                if best >= iou_thr:
                    if is_ign[j]:
                        flags[i] = (0, 0)
                    elif not taken[j]:
                        taken[j] = True
                        flags[i] = (1, 0)
                    else:
                        flags[i] = (0, 1)
                else:
                    flags[i] = (0, 1)
            records += [(d[i, 4], img, i, flags[i]) for i in range(len(d))]
        records.sort(key=lambda r: (-r[0], r[1], r[2]))
        tp = np.cumsum([r[3][0] for r in records]).astype(np.float32)
        fp = np.cumsum([r[3][1] for r in records]).astype(np.float32)
        eps = np.finfo(np.float32).eps
        rec = tp / max(num_gts, eps)
        prec = tp / np.maximum(tp + fp, eps)
        ap = average_precision(rec, prec, "area")
        per.append(ap)
        if num_gts:
            aps.append(ap)
    return float(np.mean(aps)) if aps else 0.0, per


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("legacy", [False, True])
def test_eval_map_matches_a_plain_reference_and_the_tpfp_fn_path(seed, legacy):
    rng = np.random.default_rng(seed)
    num_classes = 3
    det_results, annotations = [], []
    for _ in range(6):
        n = int(rng.integers(0, 6))
        xy = rng.uniform(0, 60, (n, 2))
        gts = np.hstack((xy, xy + rng.uniform(5, 30, (n, 2)))).astype(np.float32)
        labels = rng.integers(0, num_classes, n)
        m = int(rng.integers(0, 3))
        ixy = rng.uniform(0, 60, (m, 2))
        ign = np.hstack((ixy, ixy + rng.uniform(5, 30, (m, 2)))).astype(np.float32)
        annotations.append(ann(gts, labels, ign, rng.integers(0, num_classes, m)))
        per_class = []
        for _ in range(num_classes):
            k = int(rng.integers(0, 5))
            src = np.vstack((gts, ign)) if len(gts) + len(ign) else np.array([[0, 0, 10, 10]], np.float32)
            boxes = src[rng.integers(0, len(src), k)] + rng.normal(0, 3, (k, 4))
            scores = rng.choice([0.3, 0.5, 0.7, 0.9], k)  # many ties
            per_class.append(np.hstack((boxes, scores[:, None])).astype(np.float32))
        det_results.append(per_class)
    want_map, want = _reference_map(det_results, annotations, 0.5, legacy)
    got_map, got = eval_map(det_results, annotations, use_legacy_coordinate=legacy)
    assert got_map == pytest.approx(want_map, abs=1e-7)
    assert [r["ap"] for r in got] == pytest.approx(want, abs=1e-7)
    via_fn, _ = eval_map(det_results, annotations, use_legacy_coordinate=legacy, tpfp_fn=tpfp_default)
    assert via_fn == pytest.approx(got_map, abs=1e-7)


def test_eval_map_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="2 images of detections but 1"):
        eval_map([[dets()], [dets()]], [ann([], [])])
    with pytest.raises(ValueError, match="lacks 'labels'"):
        eval_map([[dets()]], [{"bboxes": np.zeros((0, 4))}])


# --------------------------------------------------------------------------- eval_recalls


def test_eval_recalls_greedy_one_to_one():
    gts = [np.array([[0, 0, 10, 10], [0, 0, 10, 12]])]
    props = [np.array([[0, 0, 10, 10, .9], [50, 50, 60, 60, .8], [0, 0, 10, 12, .1]])]
    r = eval_recalls(gts, props, [1, 2, 3], [0.5, 0.9])
    # top-1 covers one GT; both GTs want the same proposal with 1 proposal; the third covers the second GT
    np.testing.assert_allclose(r, [[0.5, 0.5], [0.5, 0.5], [1.0, 1.0]])
    assert r.shape == (3, 2)


def test_eval_recalls_no_gt_or_no_proposals():
    assert eval_recalls([np.zeros((0, 4))], [np.array([[0, 0, 1, 1]])], [10], 0.5).tolist() == [[0.0]]
    assert eval_recalls([np.array([[0, 0, 1, 1]])], [np.zeros((0, 4))], [10], 0.5).tolist() == [[0.0]]
    assert eval_recalls([None], [np.zeros((0, 5))], None).shape == (3, 1)


# --------------------------------------------------------------------------- evaluate_voc


def _flat(boxes, scores, labels):
    return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32), np.asarray(labels, np.int64)


def test_evaluate_voc_keys_and_values():
    annotations = [ann([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 1])]
    detections = [_flat([[0, 0, 10, 10], [20, 20, 30, 26]], [0.9, 0.8], [0, 1])]  # IoU 1 and 0.6
    ev = evaluate_voc(detections, annotations, ("cat", "dog"), ["mAP", "recall"], iou_thr=[0.5, 0.75],
                      proposal_nums=(1, 10))
    assert list(ev.metrics)[:3] == ["mAP", "AP50", "AP75"]
    assert ev.metrics["AP50"] == pytest.approx(1.0)
    assert ev.metrics["AP75"] == pytest.approx(0.5)
    assert ev.metrics["mAP"] == pytest.approx(0.75)
    assert ev.metrics["recall@1@0.5"] == pytest.approx(0.5)
    assert ev.metrics["recall@10@0.5"] == pytest.approx(1.0)
    assert ev.metrics["recall@10@0.75"] == pytest.approx(0.5)
    assert ev.metrics["AR@10"] == pytest.approx(0.75)
    assert [t.iou_thr for t in ev.tables] == [0.5, 0.75]
    assert ev.tables[1].rows == [ClassAP("cat", 1, 1, 1.0, 1.0), ClassAP("dog", 1, 1, 0.0, 0.0)]


def test_evaluate_voc_single_threshold_recall_has_no_ar_and_scale_ranges_add_keys():
    annotations = [ann([[0, 0, 4, 4], [20, 20, 70, 70]], [0, 0])]
    detections = [_flat([[0, 0, 4, 4]], [0.9], [0])]
    ev = evaluate_voc(detections, annotations, ("a",), ["mAP", "recall"], scale_ranges=[(0, 10), (10, 100)],
                      proposal_nums=(100,))
    assert ev.metrics == pytest.approx({"mAP": 0.5, "mAP_0-10": 1.0, "mAP_10-100": 0.0, "AP50": 0.5,
                                        "AP50_0-10": 1.0, "AP50_10-100": 0.0, "recall@100@0.5": 0.5})
    assert [table_title(t) for t in ev.tables] == ["IoU 0.5", "IoU 0.5, scale range (0, 10)", "IoU 0.5, scale range (10, 100)"]
    assert ev.tables[2].rows[0].num_gts == 1 and ev.tables[2].rows[0].recall == 0.0


def test_evaluate_voc_bad_metric_and_mode():
    with pytest.raises(ConfigError, match="mAP, recall"):
        evaluate_voc([], [], ("a",), ["bbox"])
    with pytest.raises(ConfigError, match="eval_mode"):
        evaluate_voc([], [], ("a",), ["mAP"], eval_mode="12points")


def test_format_map_table_and_to_dict():
    table = MapTable(0.5, None, 0.25, [ClassAP("aeroplane", 3, 10, 0.6667, 0.5), ClassAP("cat", 0, 2, 0.0, 0.0)])
    text = format_map_table(table)
    assert "| aeroplane | 3   | 10   | 0.667  | 0.500 |" in text
    assert text.splitlines()[-2] == "| mAP       |     |      |        | 0.250 |"
    assert table.to_dict()["classes"][1] == {"class": "cat", "gts": 0, "dets": 2, "recall": 0.0, "ap": 0.0}
