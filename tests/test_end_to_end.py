"""End to end through the CLI: train a tiny preset for a few iterations, test it, infer with it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from detcli.cli import app, normalize_argv

pytestmark = pytest.mark.slow

runner = CliRunner()
TINY = [
    "runner.max_iters=4", "checkpoint_config.interval=4", "evaluation.interval=4", "log_config.interval=2",
    "data.samples_per_gpu=2", "data.train.num_images=8", "data.val.num_images=3", "data.test.num_images=3",
]


def run(*args: str):  # type: ignore[no-untyped-def]
    result = runner.invoke(app, normalize_argv(list(args)))
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("run")
    run("train", "quickstart", "--work-dir", str(work), "--cfg-options", *TINY)
    return work


def test_train_writes_checkpoints_logs_manifest(trained: Path) -> None:
    assert (trained / "latest.pth").is_file() and (trained / "iter_4.pth").is_file()
    assert (trained / "manifest.json").is_file() and (trained / "quickstart.yaml").is_file()
    logs = list(trained.glob("*.log.json"))
    assert len(logs) == 1
    lines = [json.loads(line) for line in logs[0].read_text().splitlines() if line.strip()]
    train_lines = [x for x in lines if x.get("mode") == "train"]
    val_lines = [x for x in lines if x.get("mode") == "val"]
    assert [x["iter"] for x in train_lines] == [2, 4]
    for key in ("lr", "time", "data_time", "loss_cls", "loss_bbox", "loss_centerness", "loss"):
        assert key in train_lines[0]
    assert "bbox_mAP" in val_lines[-1]
    manifest = json.loads((trained / "manifest.json").read_text())
    assert manifest["config"]["runner"]["max_iters"] == 4


def test_test_with_preset_and_checkpoint_alone(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    result = run("test", "quickstart", str(trained / "latest.pth"), "--json", "--out", str(out),
                 "--cfg-options", "data.test.num_images=3")
    metrics = json.loads(result.stdout)
    assert set(metrics) >= {"bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l"}
    assert isinstance(json.loads(out.read_text()), list)
    alone = run("test", str(trained / "latest.pth"), "--json")
    assert json.loads(alone.stdout) == metrics  # the checkpoint carries the tiny config


def test_infer_on_exported_images(trained: Path, tmp_path: Path) -> None:
    run("convert-dataset", "shapes", str(tmp_path / "shapes"), "--num-images", "2", "--split", "val")
    images = tmp_path / "shapes" / "images" / "val"
    result = run("infer", str(trained / "latest.pth"), str(images), "--out-dir", str(tmp_path / "vis"), "--score-thr", "0.0")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(r["file"]).name for r in records] == ["000000.jpg", "000001.jpg"]
    for r in records:
        assert len(r["boxes"]) == len(r["scores"]) == len(r["labels"]) == len(r["class_names"])
        assert all(name in ("rectangle", "ellipse", "triangle", "star") for name in r["class_names"])
    assert sorted(p.name for p in (tmp_path / "vis").iterdir()) == ["000000.jpg", "000001.jpg"]


def test_resume_continues_from_latest(trained: Path, tmp_path: Path) -> None:
    import shutil

    work = tmp_path / "resumed"
    shutil.copytree(trained, work)
    run("train", "quickstart", "--work-dir", str(work), "--resume", "--cfg-options", *TINY[1:], "runner.max_iters=6")
    assert (work / "iter_6.pth").is_file()


def test_missing_image_is_one_line_error(tmp_path: Path, trained: Path) -> None:
    run("convert-dataset", "shapes", str(tmp_path / "s"), "--num-images", "2", "--split", "val")
    (tmp_path / "s" / "images" / "val" / "000001.jpg").unlink()
    preset = tmp_path / "files.yaml"
    preset.write_text(
        "_base_: " + str(Path(__file__).resolve().parents[1] / "presets" / "quickstart.yaml") + "\n"
        "data:\n  test:\n    _delete_: true\n    type: CocoDataset\n"
        f"    ann_file: {tmp_path}/s/annotations/instances_val.json\n    img_prefix: {tmp_path}/s/images/val/\n"
        "    pipeline:\n      - {type: LoadImageFromFile}\n"
        "      - {type: MultiScaleFlipAug, img_scale: [256, 256], flip: false, transforms: [{type: Resize, keep_ratio: true}, "
        "{type: Normalize, mean: [123.675, 116.28, 103.53], std: [58.395, 57.12, 57.375], to_rgb: true}, "
        "{type: Pad, size_divisor: 32}, {type: DefaultFormatBundle}, {type: Collect, keys: [img]}]}\n"
    )
    out = tmp_path / "r.json"
    result = runner.invoke(app, ["test", str(preset), str(trained / "latest.pth"), "--out", str(out)])
    assert result.exit_code == 1
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert lines[-1].startswith("error:") and "000001.jpg" in lines[-1]
    assert not out.exists()


def _one_error(result) -> str:  # type: ignore[no-untyped-def]
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert result.exit_code == 1, result.output
    errors = [x for x in lines if x.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.output  # log lines may precede it
    return errors[0]


def _file_preset(tmp_path: Path, ann: Path, img_dir: Path) -> Path:
    preset = tmp_path / "files.yaml"
    quickstart = Path(__file__).resolve().parents[1] / "presets" / "quickstart.yaml"
    preset.write_text(
        f"_base_: {quickstart}\n"
        "data:\n"
        "  train: {_delete_: true, type: CocoDataset, ann_file: " + str(ann) + ", img_prefix: " + str(img_dir) + "/,\n"
        "          pipeline: [{type: LoadImageFromFile}, {type: LoadAnnotations, with_bbox: true},\n"
        "                     {type: Resize, img_scale: [256, 256], keep_ratio: true},\n"
        "                     {type: Normalize, mean: [0, 0, 0], std: [1, 1, 1], to_rgb: true},\n"
        "                     {type: Pad, size_divisor: 32}, {type: DefaultFormatBundle},\n"
        "                     {type: Collect, keys: [img, gt_bboxes, gt_labels]}]}\n"
    )
    return preset


def test_undeclared_category_and_empty_dataset_fail_before_any_output(tmp_path: Path) -> None:
    run("convert-dataset", "shapes", str(tmp_path / "s"), "--num-images", "2", "--split", "train")
    ann = tmp_path / "s" / "annotations" / "instances_train.json"
    data = json.loads(ann.read_text())
    bad_id = data["annotations"][0]["id"]
    data["annotations"][0]["category_id"] = 99
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    preset = _file_preset(tmp_path, bad, tmp_path / "s" / "images" / "train")
    line = _one_error(runner.invoke(app, ["train", str(preset), "--work-dir", str(tmp_path / "w1")]))
    assert "bad.json" in line and str(bad_id) in line and "99" in line
    assert not (tmp_path / "w1").exists()

    data["annotations"] = []
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps(data))
    preset = _file_preset(tmp_path, empty, tmp_path / "s" / "images" / "train")
    line = _one_error(runner.invoke(app, ["train", str(preset), "--work-dir", str(tmp_path / "w2")]))
    assert "empty.json" in line
    assert not (tmp_path / "w2").exists()


def test_corrupted_image_in_infer(trained: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    line = _one_error(runner.invoke(app, ["infer", str(trained / "latest.pth"), str(broken), "--out-dir", str(tmp_path / "o")]))
    assert "broken.jpg" in line
    assert not (tmp_path / "o" / "broken.jpg").exists()


def test_infer_on_video_writes_annotated_video(trained: Path, tmp_path: Path) -> None:
    import cv2
    import numpy as np

    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (128, 96))
    for i in range(3):
        frame = np.full((96, 128, 3), 40 * i, np.uint8)
        cv2.rectangle(frame, (20, 20), (70, 60), (0, 255, 0), -1)
        writer.write(frame)
    writer.release()
    result = run("infer", str(trained / "latest.pth"), str(video), "--out-dir", str(tmp_path / "o"), "--score-thr", "0")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["frame"] for r in records] == [0, 1, 2]
    assert all(r["width"] == 128 and r["height"] == 96 for r in records)
    cap = cv2.VideoCapture(str(tmp_path / "o" / "clip.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    cap.release()
    assert not list((tmp_path / "o").glob(".*partial*"))


def test_show_dir_and_classwise(trained: Path, tmp_path: Path) -> None:
    result = run("test", str(trained / "latest.pth"), "--show-dir", str(tmp_path / "show"), "--eval-options", "classwise=true")
    assert len(list((tmp_path / "show").iterdir())) == 3
    assert "Average Precision" in result.stdout
    for name in ("rectangle", "ellipse", "triangle", "star"):
        assert name in result.stdout
