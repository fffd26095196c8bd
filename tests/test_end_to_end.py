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
