"""Confusion matrix: hand-checked cases, no NaN, NMS, errors; `det confusion-matrix` through CliRunner."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from detcli.cli import app, normalize_argv
from detcli.errors import ConfigError, DatasetError
from detcli.evaluation.confusion import ORIENTATION, compute_confusion_matrix, plot_confusion_matrix

CLASSES = ["cat", "dog", "bird"]
CAT_IDS = [1, 5, 9]


def det(image_id: int, cat: int, xyxy: list[float], score: float) -> dict[str, Any]:
    x1, y1, x2, y2 = xyxy
    return {"image_id": image_id, "category_id": cat, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score}


ANNS = [
    {"bboxes": np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32), "labels": np.array([0, 1])},
    {"bboxes": np.array([[50, 50, 60, 60]], np.float32), "labels": np.array([0])},
]


def test_tp_confusion_fp_and_miss() -> None:
    results = [
        det(1, 1, [0, 0, 10, 10], 0.9),        # cat on cat: TP
        det(1, 1, [20, 20, 40, 40], 0.8),      # cat on dog: confusion dog->cat; the dog is missed
        det(1, 9, [100, 100, 120, 120], 0.7),  # bird on nothing: background FP
        det(1, 5, [0, 0, 10, 10], 0.1),        # below --score-thr: ignored
        # image 2: nothing -> its cat is missed
    ]
    m = compute_confusion_matrix(ANNS, [1, 2], CLASSES, CAT_IDS, results, score_thr=0.3)
    expected = np.zeros((4, 4), np.int64)
    expected[0, 0] = 1
    expected[1, 0] = 1
    expected[1, 3] = 1
    expected[3, 2] = 1
    expected[0, 3] = 1
    assert m.counts.tolist() == expected.tolist()
    assert m.labels == ["cat", "dog", "bird", "background"] and m.num_detections == 3
    norm = m.normalized()
    assert not np.isnan(norm).any()
    assert norm[2].tolist() == [0, 0, 0, 0]  # bird has no GT: a zero row, not NaN
    assert norm[0].tolist() == [50, 0, 0, 50] and norm[3, 2] == 100


def test_nms_removes_duplicates_and_score_thr_zero_keeps_all() -> None:
    results = [det(2, 1, [50, 50, 60, 60], 0.9), det(2, 1, [50, 50, 60, 61], 0.8)]
    without = compute_confusion_matrix(ANNS, [1, 2], CLASSES, CAT_IDS, results, score_thr=0.0)
    assert without.counts[0, 0] == 2  # both overlap the cat
    with_nms = compute_confusion_matrix(ANNS, [1, 2], CLASSES, CAT_IDS, results, score_thr=0.0, nms_iou_thr=0.5)
    assert with_nms.counts[0, 0] == 1 and with_nms.num_detections == 1


def test_csv_and_png(tmp_path: Path) -> None:
    m = compute_confusion_matrix(ANNS, [1, 2], CLASSES, CAT_IDS, [det(1, 1, [0, 0, 10, 10], 0.9)])
    lines = m.to_csv().splitlines()
    assert lines[0] == f"# {ORIENTATION}"
    assert lines[1] == "gt \\ pred,cat,dog,bird,background"
    assert lines[2] == "cat,1,0,0,1" and lines[5] == "background,0,0,0,0"
    assert m.to_csv(normalized=True).splitlines()[2] == "cat,50.00,0.00,0.00,50.00"
    png = plot_confusion_matrix(m, tmp_path / "cm.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "results,match",
    [
        ([det(1, 7, [0, 0, 1, 1], 0.9)], r"entry 0: category_id 7 is not a class of the dataset \(its category ids are \[1, 5, 9\]\)"),
        ([det(3, 1, [0, 0, 1, 1], 0.9)], r"entry 0: image_id 3 is not an image"),
        ({"images": [], "annotations": []}, r"got an object \(this looks like a COCO annotation file"),
        ([{"image_id": 1}], r"entry 0 is not a COCO result"),
    ],
)
def test_bad_results(results: Any, match: str) -> None:
    with pytest.raises(DatasetError, match=match):
        compute_confusion_matrix(ANNS, [1, 2], CLASSES, CAT_IDS, results, source="r.json")


def test_bad_threshold() -> None:
    with pytest.raises(ConfigError, match=r"--tp-iou-thr 1.5: must be within \[0, 1\]"):
        compute_confusion_matrix(ANNS, [1, 2], CLASSES, CAT_IDS, [], tp_iou_thr=1.5)


runner = CliRunner()


def invoke(*args: str, input: str | None = None) -> Any:
    return runner.invoke(app, normalize_argv(list(args)), input=input)


def shapes_results() -> list[dict[str, Any]]:
    """Perfect detections of the first 8 images of the quickstart preset's test split."""
    from detcli.config import load_config, resolve_preset_path
    from detcli.engine.builders import build_split

    cfg = load_config(str(resolve_preset_path("quickstart")), ["data.test.num_images=8"])
    ds, _, _ = build_split(cfg, "test", True)
    out = []
    for i, image_id in enumerate(ds.image_ids):
        ann = ds.get_ann_info(i)
        for box, label in zip(ann["bboxes"].tolist(), ann["labels"].tolist()):
            out.append(det(image_id, ds.cat_ids[label], box, 0.9))
    return out


def test_cli_confusion_matrix_from_stdin(tmp_path: Path) -> None:
    results = shapes_results()
    result = invoke("confusion-matrix", "quickstart", "-", str(tmp_path / "cm"), "--cfg-options", "data.test.num_images=8",
                    "--json", input=json.dumps(results))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    counts = np.array(data["counts"])
    assert data["labels"][-1] == "background" and data["orientation"] == ORIENTATION
    assert np.trace(counts[:-1, :-1]) == len(results) and counts[:-1, -1].sum() == 0 and counts[-1].sum() == 0
    assert {p.name for p in (tmp_path / "cm").iterdir()} == {"confusion_matrix.png", "confusion_matrix.csv", "confusion_matrix_normalized.csv"}
    res_file = tmp_path / "r.json"
    res_file.write_text(json.dumps(results))
    result = invoke("confusion-matrix", "quickstart", str(res_file), str(tmp_path / "cm2"), "--cfg-options", "data.test.num_images=8",
                    "--show", "--score-thr", "0.5", "--tp-iou-thr", "0.6", "--nms-iou-thr", "0.7")
    assert result.exit_code == 0, result.output
    assert "orientation: rows: ground truth" in result.stdout and "background" in result.stdout


def test_cli_confusion_matrix_class_mismatch(tmp_path: Path) -> None:
    res_file = tmp_path / "r.json"
    res_file.write_text(json.dumps([{**shapes_results()[0], "category_id": 80}]))
    result = invoke("confusion-matrix", "quickstart", str(res_file), str(tmp_path / "cm"), "--cfg-options", "data.test.num_images=8")
    assert result.exit_code == 1 and "category_id 80 is not a class of the dataset" in result.output
    assert not (tmp_path / "cm" / "confusion_matrix.csv").exists()
    result = invoke("confusion-matrix", "quickstart", str(tmp_path / "missing.json"), str(tmp_path / "cm"))
    assert result.exit_code == 1 and "missing.json: no such file" in result.output
