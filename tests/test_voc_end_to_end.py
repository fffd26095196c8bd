"""End to end on a tiny VOCdevkit: train a few iterations (RepeatDataset of VOCDataset), validate with
mAP, then `det test --metric mAP recall` (text table and --json), and a ConcatDataset test split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from detcli.cli import app, normalize_argv
from detcli.resources import presets_dir

from tests.data.voc_helpers import shapes_devkit, shapes_voc_images, write_voc

pytestmark = pytest.mark.slow

runner = CliRunner()
CLASSES = ["rectangle", "ellipse", "triangle", "star"]
NORM = {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375], "to_rgb": True}


def run(*args: str):  # type: ignore[no-untyped-def]
    result = runner.invoke(app, normalize_argv(list(args)))
    assert result.exit_code == 0, result.output
    return result


def voc_node(root: Path, split: str, train: bool) -> dict:
    if train:
        pipeline = [{"type": "LoadImageFromFile"}, {"type": "LoadAnnotations", "with_bbox": True},
                    {"type": "Resize", "img_scale": [64, 64], "keep_ratio": True},
                    {"type": "RandomFlip", "flip_ratio": 0.5}, {"type": "Normalize", **NORM},
                    {"type": "Pad", "size_divisor": 32}, {"type": "DefaultFormatBundle"},
                    {"type": "Collect", "keys": ["img", "gt_bboxes", "gt_labels"]}]
    else:
        pipeline = [{"type": "LoadImageFromFile"},
                    {"type": "MultiScaleFlipAug", "img_scale": [64, 64], "flip": False, "transforms": [
                        {"type": "Resize", "keep_ratio": True}, {"type": "RandomFlip"}, {"type": "Normalize", **NORM},
                        {"type": "Pad", "size_divisor": 32}, {"type": "DefaultFormatBundle"},
                        {"type": "Collect", "keys": ["img"]}]}]
    return {"type": "VOCDataset", "data_root": str(root), "ann_file": f"ImageSets/Main/{split}.txt", "img_prefix": "",
            "classes": CLASSES, "pipeline": pipeline}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    tmp = tmp_path_factory.mktemp("voc")
    root = shapes_devkit(tmp / "VOCdevkit", year=2007, num_train=6, num_test=3)
    cfg = {
        "_base_": str(presets_dir() / "quickstart.yaml"),
        "data": {
            "samples_per_gpu": 2,
            "train": {"_delete_": True, "type": "RepeatDataset", "times": 2, "dataset": voc_node(root, "trainval", True)},
            "val": {"_delete_": True, **voc_node(root, "test", False)},
            "test": {"_delete_": True, **voc_node(root, "test", False)},
        },
        "runner": {"type": "IterBasedRunner", "max_iters": 4},
        "lr_config": {"warmup_iters": 2},
        "checkpoint_config": {"interval": 4},
        "evaluation": {"interval": 4, "metric": "mAP", "save_best": "auto"},
        "log_config": {"interval": 2},
    }
    path = tmp / "voc_tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    work = tmp / "run"
    run("train", str(path), "--work-dir", str(work))
    return path, work, root


def test_training_on_repeated_voc_validates_with_map(setup: tuple[Path, Path, Path]) -> None:
    _, work, _ = setup
    logs = [json.loads(line) for line in next(work.glob("*.log.json")).read_text().splitlines() if line.strip()]
    val = [x for x in logs if x.get("mode") == "val"]
    assert val and {"mAP", "AP50"} <= set(val[-1])
    manifest = json.loads((work / "manifest.json").read_text())
    train_fp = manifest["datasets"]["train"]
    assert train_fp["type"] == "RepeatDataset" and train_fp["times"] == 2 and train_fp["num_images"] == 12
    assert train_fp["dataset"]["type"] == "VOCDataset" and train_fp["dataset"]["year"] == 2007
    assert list(work.glob("best_mAP_*.pth"))


def test_det_test_map_and_recall(setup: tuple[Path, Path, Path]) -> None:
    path, work, _ = setup
    ckpt = str(work / "latest.pth")
    text = run("test", str(path), ckpt, "--metric", "mAP", "recall").stdout
    assert "| class" in text and "| mAP" in text and "--- IoU 0.5 ---" in text
    assert "recall@100@0.5:" in text
    data = json.loads(run("test", str(path), ckpt, "--metric", "mAP", "recall", "--json",
                          "--eval-options", "iou_thr=[0.5,0.75]", "scale_ranges=[[0,32],[32,100]]").stdout)
    assert {"mAP", "AP50", "AP75", "mAP_0-32", "AP50_32-100", "recall@300@0.75", "AR@100"} <= set(data)
    assert 0.0 <= data["mAP"] <= 1.0
    tables = data["per_class"]
    assert [t["iou_thr"] for t in tables if t["scale_range"] is None] == [0.5, 0.75]
    assert [c["class"] for c in tables[0]["classes"]] == CLASSES
    gts = sum(c["gts"] for c in tables[0]["classes"])
    assert gts > 0
    # COCO metrics on the same VOC split; a metric the dataset lacks is one clear error line
    coco = json.loads(run("test", str(path), ckpt, "--metric", "bbox", "--json").stdout)
    assert "bbox_mAP" in coco
    bad = runner.invoke(app, normalize_argv(["test", str(path), ckpt, "--metric", "segm"]))
    assert bad.exit_code == 1 and "valid for VOCDataset: mAP, recall, bbox, proposal" in bad.output


def test_det_test_on_a_concat_of_two_years(setup: tuple[Path, Path, Path], tmp_path: Path) -> None:
    path, work, root = setup
    devkit = root.parent
    write_voc(devkit, 2012, {"test": shapes_voc_images(2, split="other", img_size=64)})
    cfg = yaml.safe_load(path.read_text())
    second = voc_node(devkit / "VOC2012", "test", False)
    cfg["data"]["test"] = {"_delete_": True, "type": "ConcatDataset",
                           "datasets": [voc_node(root, "test", False), second]}
    concat = tmp_path / "concat.yaml"
    concat.write_text(yaml.safe_dump(cfg))
    data = json.loads(run("test", str(concat), str(work / "latest.pth"), "--json").stdout)
    assert {"0_mAP", "0_AP50", "1_mAP", "1_AP50"} <= set(data)
    assert sorted({t["prefix"] for t in data["per_class"]}) == ["0_", "1_"]
