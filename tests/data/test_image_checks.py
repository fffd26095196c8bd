"""One rule for incomplete image files: an empty or truncated file is a DatasetError naming it, and
`det convert-dataset check --img-dir` reports empty, truncated and mis-sized images as errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from detcli.cli import app
from detcli.data.converters import check_coco_file
from detcli.data.transforms.loading import LoadImageFromFile, image_file_problem, image_problem
from detcli.errors import DatasetError


def _image(h: int = 48, w: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


def _encode(ext: str, h: int = 48, w: int = 64) -> bytes:
    ok, buf = cv2.imencode(ext, _image(h, w))
    assert ok
    return buf.tobytes()


@pytest.fixture
def images(tmp_path: Path) -> Path:
    d = tmp_path / "img"
    d.mkdir()
    jpg, png = _encode(".jpg"), _encode(".png")
    (d / "good.jpg").write_bytes(jpg)
    (d / "good.png").write_bytes(png)
    (d / "trunc.jpg").write_bytes(jpg[: len(jpg) // 2])
    (d / "trunc.png").write_bytes(png[: len(png) // 2])
    (d / "empty.jpg").write_bytes(b"")
    (d / "padded.jpg").write_bytes(jpg + b"\x00" * 100)  # zero padding after the end marker
    (d / "motion.jpg").write_bytes(jpg + b"\x00\x00\x00\x18ftypmp42" + bytes(200))  # data appended: a motion photo
    (d / "big.jpg").write_bytes(_encode(".jpg", 50, 64))
    return d


def test_image_problem_rule(images: Path) -> None:
    for name in ("good.jpg", "good.png", "padded.jpg", "motion.jpg"):
        assert image_file_problem(images / name) is None, name
        assert image_problem((images / name).read_bytes()) is None, name
    assert image_file_problem(images / "empty.jpg") == "the image file is empty (0 bytes)"
    assert image_file_problem(images / "trunc.jpg") == "truncated JPEG: the file ends before its end-of-image marker (FF D9)"
    assert image_file_problem(images / "trunc.png") == "truncated PNG: the file ends before its IEND chunk"
    assert image_problem(np.frombuffer((images / "trunc.jpg").read_bytes(), np.uint8)).startswith("truncated JPEG")
    with pytest.raises(OSError):
        image_file_problem(images / "missing.jpg")


@pytest.mark.parametrize("backend", ["cv2", "pillow"])
def test_load_image_refuses_truncated_and_empty_files(images: Path, backend: str, capfd: Any) -> None:
    load = LoadImageFromFile(imdecode_backend=backend)
    for name, problem in (("trunc.jpg", "truncated JPEG"), ("empty.jpg", r"the image file is empty \(0 bytes\)"), ("trunc.png", "truncated PNG")):
        with pytest.raises(DatasetError, match=rf"image .*{name} \(dataset index 3\): {problem}.*re-copy or re-download"):
            load({"img_prefix": str(images), "img_info": {"filename": name}, "sample_idx": 3})
    assert "Premature end of JPEG" not in capfd.readouterr().err  # refused before libjpeg decodes half an image
    out = load({"img_prefix": str(images), "img_info": {"filename": "motion.jpg"}})
    assert out["img"].shape == (48, 64, 3)


def _coco(tmp_path: Path, names: list[str], sizes: dict[str, tuple[int, int]] | None = None) -> Path:
    sizes = sizes or {}
    images = [{"id": i, "file_name": n, "width": sizes.get(n, (64, 48))[0], "height": sizes.get(n, (64, 48))[1]}
              for i, n in enumerate(names, 1)]
    anns = [{"id": i, "image_id": i, "category_id": 1, "bbox": [1, 1, 10, 10], "area": 100, "iscrowd": 0}
            for i in range(1, len(names) + 1)]
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}]}))
    return path


def test_check_reports_empty_truncated_and_mis_sized_images(tmp_path: Path, images: Path) -> None:
    names = ["good.jpg", "good.png", "padded.jpg", "trunc.jpg", "trunc.png", "empty.jpg", "big.jpg", "gone.jpg"]
    ann = _coco(tmp_path, names)
    report = check_coco_file(ann, images)
    errors = {i.code: i for i in report.issues if i.severity == "error"}
    assert set(errors) == {"truncated_image", "empty_image", "image_size_mismatch", "missing_file"}
    assert errors["truncated_image"].count == 2
    assert errors["truncated_image"].examples == [
        "trunc.jpg (image id 4): truncated JPEG: the file ends before its end-of-image marker (FF D9)",
        "trunc.png (image id 5): truncated PNG: the file ends before its IEND chunk"]
    assert errors["empty_image"].examples == ["empty.jpg (image id 6): the image file is empty (0 bytes)"]
    assert errors["image_size_mismatch"].examples == ["big.jpg (image id 7): file 64x50, json 64x48"]
    assert report.num_errors == 5
    assert check_coco_file(_coco(tmp_path, ["good.jpg", "good.png", "motion.jpg"]), images).ok


def test_cli_check_img_dir_exit_1(tmp_path: Path, images: Path) -> None:
    ann = _coco(tmp_path, ["good.jpg", "trunc.jpg", "empty.jpg"])
    result = CliRunner().invoke(app, ["convert-dataset", "check", str(ann), "--img-dir", str(images), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert {i["code"] for i in report["issues"]} == {"truncated_image", "empty_image"}
    assert result.output.strip().splitlines()[-1] == f"error: {ann}: 2 errors"


def test_infer_refuses_a_truncated_image_before_loading_the_model(images: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capfd: Any) -> None:
    import detcli.engine.inference as inference

    loaded = []
    monkeypatch.setattr(inference, "Predictor", lambda *a, **k: loaded.append(a))
    folder = images.parent / "infer"
    folder.mkdir()
    (folder / "a.jpg").write_bytes((images / "good.jpg").read_bytes())
    (folder / "b.jpg").write_bytes((images / "trunc.jpg").read_bytes())
    result = CliRunner().invoke(app, ["infer", "c.pth", str(folder), "--no-save"])
    assert result.exit_code == 1 and loaded == [] and result.stdout == ""
    assert result.output.strip().splitlines() == [
        f"error: {folder / 'b.jpg'}: truncated JPEG: the file ends before its end-of-image marker (FF D9); "
        "re-copy or re-download the file, or leave it out of the inputs"]
    (folder / "b.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"b\.jpg: the image file is empty \(0 bytes\)"):
        inference.expand_inputs([str(folder)])
    assert "JPEG" not in capfd.readouterr().err


def test_dataset_check_images_up_front(tmp_path: Path, images: Path) -> None:
    from detcli.engine.builders import build_split

    ann = _coco(tmp_path, ["good.jpg", "trunc.jpg", "empty.jpg"])
    node = {"type": "CocoDataset", "ann_file": str(ann), "img_prefix": str(images) + "/",
            "pipeline": [{"type": "LoadImageFromFile"}, {"type": "LoadAnnotations", "with_bbox": True}]}
    cfg = {"data": {"samples_per_gpu": 1, "workers_per_gpu": 0, "train": node}}
    with pytest.raises(DatasetError) as e:
        build_split(cfg, "train", test_mode=False)
    assert str(e.value) == (
        f"2 image files of {ann} are incomplete: {images}/trunc.jpg (index 1): truncated JPEG: the file ends before "
        f"its end-of-image marker (FF D9); {images}/empty.jpg (index 2): the image file is empty (0 bytes); "
        "re-copy or re-download the file, or remove the image from the annotation file")
    ok = _coco(tmp_path, ["good.jpg", "padded.jpg"])
    dataset, _, _ = build_split({"data": {**cfg["data"], "train": {**node, "ann_file": str(ok)}}}, "train", test_mode=False)
    assert len(dataset) == 2
