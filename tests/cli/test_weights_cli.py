"""Outside weights through the CLI: MMDetection files with a preset, convert-checkpoint, publish, zoo downloads
from a local server, and every bad input as one line with exit code 1 and nothing written."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from detcli.cli import app, normalize_argv
from detcli.config import load_config, resolve_preset_path
from detcli.engine.builders import build_model
from detcli.engine.checkpoint import atomic_save, make_checkpoint
from detcli.models.weight_maps.mmdet import to_mmdet_names

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "weights"))
from local_http import Server  # noqa: E402  (the local HTTP server of tests/weights)

runner = CliRunner()

TEST_OPTS = ["--cfg-options", "data.test.num_images=3", "data.samples_per_gpu=3"]


def invoke(*args: str) -> Any:
    return runner.invoke(app, normalize_argv(list(args)))

@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The quickstart FCOS with seeded weights (class bias raised so detections come out) saved three ways."""
    root = tmp_path_factory.mktemp("weights_cli")
    cfg = load_config("quickstart")
    torch.manual_seed(3)
    model = build_model(cfg)
    with torch.no_grad():
        model.bbox_head.conv_cls.bias.fill_(0.5)
    classes = ["circle", "square", "triangle"][: model.num_classes] + [f"c{i}" for i in range(3, model.num_classes)]
    atomic_save(make_checkpoint(model, epoch=1, iter=10, config=cfg, classes=classes, optimizer=None), root / "det.pth")
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save({"meta": {"mmdet_version": "2.28.2", "CLASSES": tuple(classes), "config": "model = dict(type='FCOS')"},
                "state_dict": to_mmdet_names(sd)}, root / "mm2.pth")
    # an MMDetection Faster R-CNN-looking file: the wrong family for quickstart
    torch.save({"meta": {"mmdet_version": "2.28.2"},
                "state_dict": {"rpn_head.rpn_conv.weight": torch.zeros(1), "roi_head.bbox_head.fc_cls.weight": torch.zeros(1)}},
               root / "faster.pth")
    torch.save({"meta": {"mmdet_version": "2.28.2", "CLASSES": ("a", "b", "c", "d", "e", "f", "g")},
                "state_dict": to_mmdet_names(sd)}, root / "seven.pth")
    from detcli.cli import app as _  # noqa: F401
    result = invoke("convert-dataset", "shapes", str(root / "shapes"), "--num-images", "2", "--split", "val")
    assert result.exit_code == 0, result.output
    return {"root": root, "det": root / "det.pth", "mm2": root / "mm2.pth", "faster": root / "faster.pth",
            "seven": root / "seven.pth", "images": root / "shapes" / "images" / "val"}


def infer_lines(*args: str) -> list[dict[str, Any]]:
    result = invoke("infer", *args, "--no-save", "--score-thr", "0.0")
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def test_mmdet_checkpoint_with_preset_equals_det_checkpoint(files: dict[str, Path]) -> None:
    ref = infer_lines(str(files["det"]), str(files["images"]))
    assert sum(len(r["boxes"]) for r in ref) > 0  # real detections to compare
    got = infer_lines(str(files["mm2"]), str(files["images"]), "--config", "quickstart")
    assert got == ref


def test_mmdet_checkpoint_without_preset_says_how(files: dict[str, Path]) -> None:
    result = invoke("test", str(files["mm2"]))
    assert result.exit_code == 1
    assert "MMDetection 2.28.2, not a det checkpoint" in result.output and "det test PRESET" in result.output
    assert "Traceback" not in result.output


def test_convert_then_test_without_preset_and_publish(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "converted.pth"
    result = invoke("convert-checkpoint", "mmdet", str(files["mm2"]), str(out), "--preset", "quickstart", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["preset"] == "quickstart" and summary["load"]["missing"] == [] and summary["load"]["unexpected"] == []
    meta = torch.load(out, weights_only=True)["meta"]
    assert meta["converted_from"]["source"] == "mmdet" and meta["classes"][:3] == ["circle", "square", "triangle"]
    assert infer_lines(str(out), str(files["images"])) == infer_lines(str(files["det"]), str(files["images"]))

    pub = tmp_path / "pub"
    result = invoke("publish", str(files["det"]), str(pub), "--name", "fcos_shapes", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    path = Path(info["checkpoint"])
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert path.name == f"fcos_shapes-{sha[:8]}.pth" and info["sha256"] == sha
    assert sorted(torch.load(path, weights_only=True)) == ["meta", "state_dict"]  # optimizer, scheduler, rng gone
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["sha256"] == sha and sidecar["epoch"] == 1 and sidecar["size_bytes"] == path.stat().st_size
    assert sorted(p.name for p in pub.iterdir()) == sorted([path.name, path.with_suffix(".json").name])


def test_zoo_download_from_local_server(files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    served = tmp_path / "served"
    served.mkdir()
    assert invoke("publish", str(files["det"]), str(served), "--name", "fcos").exit_code == 0
    name = next(p.name for p in served.glob("*.pth"))
    server = Server(served)
    try:
        preset = tmp_path / "fcos_zoo.yaml"
        preset.write_text(f"_base_: {resolve_preset_path('quickstart')}\nzoo: {{url: '{server.url}/{name}', box_ap: 50.0, source: det}}\n")
        got = infer_lines(f"zoo:{preset}", str(files["images"]))
        assert got == infer_lines(str(files["det"]), str(files["images"]))
        assert (tmp_path / "torch_home" / "hub" / "checkpoints" / name).is_file()
        result = invoke("test", str(preset), "zoo", *TEST_OPTS, "--json")
        assert result.exit_code == 0, result.output
        assert "bbox_mAP" in json.loads(result.stdout)
    finally:
        server.close()


@pytest.mark.parametrize("case", ["text", "truncated", "wrong_family", "class_count", "scheme", "404", "no_zoo"])
def test_bad_weights_one_line_exit_1_nothing_written(files: dict[str, Path], tmp_path: Path, case: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    out = tmp_path / "out.pth"
    server = None
    try:
        if case == "text":
            bad = tmp_path / "notes.pth"
            bad.write_text("these are not weights")
            args, expect = ["convert-checkpoint", "mmdet", str(bad), str(out), "--preset", "quickstart"], "notes.pth: not a torch checkpoint file"
        elif case == "truncated":
            bad = tmp_path / "cut.pth"
            bad.write_bytes(files["mm2"].read_bytes()[:5000])
            args, expect = ["convert-checkpoint", "mmdet", str(bad), str(out), "--preset", "quickstart"], "cut.pth: not a torch checkpoint file (truncated"
        elif case == "wrong_family":
            args, expect = ["convert-checkpoint", "mmdet", str(files["faster"]), str(out), "--preset", "quickstart"], "looks like an MMDetection Faster R-CNN checkpoint"
        elif case == "class_count":
            args, expect = ["convert-checkpoint", "mmdet", str(files["seven"]), str(out), "--preset", "quickstart"], "class count mismatch: the file has 7 classes"
        elif case == "scheme":
            args, expect = ["convert-checkpoint", "mmdet", "ftp://host/w.pth", str(out), "--preset", "quickstart"], "unknown weights URI scheme 'ftp://'"
        elif case == "404":
            served = tmp_path / "served"
            served.mkdir()
            server = Server(served)
            args, expect = ["convert-checkpoint", "mmdet", f"{server.url}/gone-01234567.pth", str(out), "--preset", "quickstart"], "HTTP 404"
        else:
            args, expect = ["test", "quickstart", "zoo"], "names no published weights"
        result = invoke(*args)
    finally:
        if server is not None:
            server.close()
    assert result.exit_code == 1, result.output
    assert expect in result.output.replace("\n", " ") or expect in result.output
    assert "Traceback" not in result.output
    assert result.output.count("error:") == 1
    assert not out.exists() and not list(tmp_path.glob(".out.pth*"))


def test_export_onnx_from_mmdet_checkpoint(files: dict[str, Path], tmp_path: Path) -> None:
    """The export path loads MMDetection files like test and infer do (parity of the graph itself is
    tests/engine/test_onnx_export.py's job; these random weights put ~equal scores at the 100-box cut)."""
    onnx_path = tmp_path / "fcos_mm.onnx"
    result = invoke("export", "onnx", "quickstart", str(files["mm2"]), "--output-file", str(onnx_path),
                    "--input-img", str(next(files["images"].glob("*.jpg"))), "--no-verify", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["model"] == "FCOS" and onnx_path.is_file() and onnx_path.stat().st_size > 1_000_000


def test_convert_torchvision_checkpoint_guesses_the_tv_preset(tmp_path: Path) -> None:
    from torchvision.models.detection import retinanet_resnet50_fpn

    torch.manual_seed(0)
    tv = retinanet_resnet50_fpn(weights=None, weights_backbone=None)
    src = tmp_path / "retinanet_resnet50_fpn_coco-00000000.pth"
    torch.save(tv.state_dict(), src)
    out = tmp_path / "retina_tv.pth"
    result = invoke("convert-checkpoint", "torchvision", str(src), str(out), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["preset"] == "retinanet_r50_fpn_coco_tv" and summary["num_classes"] == 80
    assert summary["load"]["missing"] == [] and summary["load"]["shape_mismatch"] == []
    sd = torch.load(out, weights_only=True)["state_dict"]
    assert torch.equal(sd["backbone.layer3.2.conv2.weight"], tv.state_dict()["backbone.body.layer3.2.conv2.weight"])
    # det's class 0 (person) is torchvision's label 1 (category id 1): rows a*80 + 0 <- a*91 + 1
    tv_cls = tv.state_dict()["head.classification_head.cls_logits.bias"].reshape(9, 91)
    assert torch.equal(sd["bbox_head.retina_cls.bias"].reshape(9, 80)[:, 0], tv_cls[:, 1])
