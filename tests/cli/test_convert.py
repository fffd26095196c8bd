"""`det convert-dataset` subcommands: summary on stdout, --json, exit codes, errors, and the coco128 end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from detcli.cli import app, normalize_argv

runner = CliRunner()
COCO128 = Path("/work/shared/data/coco128")
QUICKSTART = Path(__file__).resolve().parents[2] / "presets" / "quickstart.yaml"


def invoke(*args: str) -> Any:
    return runner.invoke(app, normalize_argv([str(a) for a in args]))


def _coco(tmp_path: Path, anns: list[dict[str, Any]], name: str = "ann.json") -> Path:
    data = {"images": [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30}],
            "annotations": anns, "categories": [{"id": 1, "name": "cat"}]}
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_help_lists_every_converter() -> None:
    result = invoke("convert-dataset", "--help")
    assert result.exit_code == 0
    for name in ("voc", "yolo", "images2coco", "labelme", "cityscapes", "check", "shapes"):
        assert name in result.stdout
    for name in ("voc", "yolo", "images2coco", "labelme", "cityscapes", "check"):
        assert invoke("convert-dataset", name, "--help").exit_code == 0


def test_check_exit_codes_and_json(tmp_path: Path) -> None:
    good = _coco(tmp_path, [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [30, 2, 20, 5]}], "good.json")
    result = invoke("convert-dataset", "check", good)
    assert result.exit_code == 0, result.output  # a warning does not fail
    assert "box_partly_outside" in result.stdout and "0 errors, 1 warnings" in result.stdout
    bad = _coco(tmp_path, [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 0, 5]}], "bad.json")
    result = invoke("convert-dataset", "check", bad, "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["num_errors"] == 2
    assert {i["code"] for i in report["issues"] if i["severity"] == "error"} == {"undeclared_category", "degenerate_box"}
    assert result.output.strip().splitlines()[-1] == f"error: {bad}: 2 errors"
    result = invoke("convert-dataset", "check", good, "--img-dir", tmp_path, "--json")
    assert result.exit_code == 1 and json.loads(result.stdout)["issues"][0]["code"] == "missing_file"


def test_check_reads_stdin_and_rejects_results_files(tmp_path: Path) -> None:
    good = _coco(tmp_path, [])
    result = runner.invoke(app, ["convert-dataset", "check", "-", "--json"], input=good.read_text())
    assert result.exit_code == 0 and json.loads(result.stdout)["ann_file"] == "-"
    results = tmp_path / "results.json"
    results.write_text("[]")
    result = invoke("convert-dataset", "check", results)
    assert result.exit_code == 1 and "not a COCO annotation file: a list" in result.output.splitlines()[-1]


def test_yolo_summary_lists_orphans(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    cv2.imwrite(str(root / "images" / "a.jpg"), np.zeros((30, 40, 3), np.uint8))
    (root / "labels" / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (root / "labels" / "gone.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (tmp_path / "names.txt").write_text("cat\n")
    result = invoke("convert-dataset", "yolo", root, "--names", tmp_path / "names.txt", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "1 images, 1 annotations, 1 categories: 0 errors" in result.stdout
    assert "gone.txt: label file without an image" in result.stdout
    result = invoke("convert-dataset", "yolo", root, "--names", tmp_path / "names.txt", "-o", tmp_path / "out", "--json")
    summary = json.loads(result.stdout)
    assert summary["errors"] == 0 and len(summary["warnings"]) == 1
    assert summary["outputs"][0]["ann_file"] == str(tmp_path / "out" / "instances_ds.json")
    (root / "labels" / "a.txt").write_text("0 0.5 0.5\n")
    result = invoke("convert-dataset", "yolo", root, "--names", tmp_path / "names.txt", "-o", tmp_path / "o2")
    assert result.exit_code == 1 and "a.txt:1: 3 values" in result.output.splitlines()[-1]


def test_converter_exits_1_when_what_it_wrote_has_errors(tmp_path: Path) -> None:
    (tmp_path / "lm").mkdir()
    shape = {"label": "cat", "points": [[5, 5], [5, 5]], "shape_type": "rectangle", "group_id": None}
    (tmp_path / "lm" / "a.json").write_text(json.dumps({"shapes": [shape], "imagePath": "a.jpg",
                                                        "imageWidth": 20, "imageHeight": 10}))
    result = invoke("convert-dataset", "labelme", tmp_path / "lm", "-o", tmp_path / "out.json")
    assert result.exit_code == 1
    assert "degenerate_box" in result.stdout and "missing_file" in result.stdout
    assert "the converted data has 2 errors" in result.output.splitlines()[-1]
    assert (tmp_path / "out.json").is_file()  # written, then checked


@pytest.mark.slow
@pytest.mark.skipif(not COCO128.is_dir(), reason="needs /work/shared/data/coco128")
def test_coco128_converted_trained_and_evaluated(tmp_path: Path) -> None:
    root = tmp_path / "coco10"
    for sub in ("images", "labels"):
        (root / sub / "train2017").mkdir(parents=True)
    for img in sorted((COCO128 / "images" / "train2017").glob("*.jpg"))[:10]:
        (root / "images" / "train2017" / img.name).symlink_to(img)
        label = COCO128 / "labels" / "train2017" / f"{img.stem}.txt"
        if label.is_file():
            shutil.copy(label, root / "labels" / "train2017" / label.name)
    result = invoke("convert-dataset", "yolo", root, "--names", COCO128 / "data.yaml", "-o", tmp_path / "ann", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)["outputs"][0]
    assert out["num_images"] == 10 and out["num_categories"] == 80 and out["num_annotations"] > 10
    ann, img_dir = out["ann_file"], out["img_prefix"]
    norm = "{type: Normalize, mean: [123.675, 116.28, 103.53], std: [58.395, 57.12, 57.375], to_rgb: true}"
    test = (f"{{_delete_: true, type: CocoDataset, ann_file: {ann}, img_prefix: {img_dir}/, pipeline: ["
            "{type: LoadImageFromFile}, {type: MultiScaleFlipAug, img_scale: [160, 160], flip: false, transforms: ["
            f"{{type: Resize, keep_ratio: true}}, {norm}, {{type: Pad, size_divisor: 32}}, {{type: DefaultFormatBundle}}, "
            "{type: Collect, keys: [img]}]}]}")
    preset = tmp_path / "coco10.yaml"
    preset.write_text(
        f"_base_: {QUICKSTART}\n"
        "model: {bbox_head: {num_classes: 80}}\n"
        "runner: {max_iters: 2}\ncheckpoint_config: {interval: 2}\nevaluation: {interval: 100}\nlog_config: {interval: 1}\n"
        "data:\n  samples_per_gpu: 2\n"
        f"  train: {{_delete_: true, type: CocoDataset, ann_file: {ann}, img_prefix: {img_dir}/, pipeline: ["
        "{type: LoadImageFromFile}, {type: LoadAnnotations, with_bbox: true}, "
        f"{{type: Resize, img_scale: [160, 160], keep_ratio: true}}, {norm}, {{type: Pad, size_divisor: 32}}, "
        "{type: DefaultFormatBundle}, {type: Collect, keys: [img, gt_bboxes, gt_labels]}]}\n"
        f"  val: {test}\n  test: {test}\n"
    )
    work = tmp_path / "work"
    result = invoke("train", preset, "--work-dir", work)
    assert result.exit_code == 0, result.output
    assert (work / "latest.pth").is_file()
    result = invoke("test", preset, work / "latest.pth", "--json", "--out", tmp_path / "results.json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert 0.0 <= metrics["bbox_mAP"] <= 1.0 and "bbox_mAP_50" in metrics
    detections = json.loads((tmp_path / "results.json").read_text())
    image_ids = {i["id"] for i in json.loads(Path(ann).read_text())["images"]}
    assert {d["image_id"] for d in detections} <= image_ids
    assert {d["category_id"] for d in detections} <= set(range(1, 81))


def test_shapes_output_is_checked(tmp_path: Path) -> None:
    result = invoke("convert-dataset", "shapes", tmp_path / "s", "--num-images", "2", "--split", "val", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["annotations"] == str(tmp_path / "s" / "annotations" / "instances_val.json") and info["images"] == 2
    assert info["errors"] == 0 and info["outputs"][0]["num_images"] == 2
    result = invoke("convert-dataset", "shapes", tmp_path / "s", "--num-images", "2")
    assert result.exit_code == 0 and "instances_train.json" in result.stdout and "0 errors" in result.stdout


def test_check_list_ids_and_deep_nesting_one_line(tmp_path: Path) -> None:
    path = _coco(tmp_path, [{"id": [1], "image_id": {"a": 1}, "category_id": 1, "bbox": [1, 1, 5, 5]}])
    result = invoke("convert-dataset", "check", path)
    assert result.exit_code == 1 and "Traceback" not in result.output and "TypeError" not in result.output
    assert "malformed_key" in result.stdout and result.output.strip().splitlines()[-1] == f"error: {path}: 3 errors"
    issues = json.loads(invoke("convert-dataset", "check", path, "--json").stdout)["issues"]
    assert issues[0]["examples"] == ["annotations[0].id = [1]", 'annotations[0].image_id = {"a": 1}']
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    result = invoke("convert-dataset", "check", deep)
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert result.output.startswith(f"error: {deep}: JSON nested deeper than the parser's limit")
