"""browse-dataset (pipeline images with GT, headless) and analyze-results (per-image mAP ranking, painted top-k)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from detcli.cli import app, normalize_argv
from detcli.config import load_config, resolve_preset_path
from detcli.errors import ConfigError, DatasetError
from detcli.tools import analyze_results
from detcli.tools.browse import browse_dataset, display_available
from detcli.visualization import denormalize

SMALL = ["data.train.num_images=4", "data.test.num_images=5"]
NORM = {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}


def shapes_cfg(extra: list[str] | None = None) -> dict:
    return load_config(str(resolve_preset_path("retinanet_r18_fpn_shapes")), SMALL + (extra or []))


@pytest.fixture(autouse=True)
def headless(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)


def test_denormalize_undoes_normalize() -> None:
    from detcli.data.transforms.photometric import Normalize

    bgr = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    normed = Normalize(**NORM, to_rgb=True)({"img": bgr})["img"]
    back = denormalize(torch.from_numpy(normed.copy()).permute(2, 0, 1), NORM["mean"], NORM["std"], to_rgb=True)
    np.testing.assert_array_equal(back, bgr)


def test_browse_writes_pipeline_images_with_true_colours(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import detcli.visualization as vis

    saved: list[np.ndarray] = []
    real_save = vis.save_image
    monkeypatch.setattr(vis, "save_image", lambda image, path: (saved.append(image), real_save(image, path))[1])
    # no flip: the drawn image equals the stored image except where boxes and labels are drawn
    cfg = shapes_cfg(["data.train.pipeline.3.flip_ratio=0.0"])
    result = browse_dataset(cfg, tmp_path, max_images=2, show=True)
    assert result.num_images == 2 and not result.shown
    assert [f.name for f in result.files] == ["000000.jpg", "000001.jpg"]
    assert cv2.imread(str(result.files[0])).shape == (256, 256, 3)
    assert not list(tmp_path.glob(".*"))  # atomic writes leave no temp files
    from detcli.engine.builders import build_split

    dataset, _, _ = build_split(cfg, "train", test_mode=False)
    raw = dataset.load_image(0)
    equal = (saved[0] == raw).all(axis=2).mean()
    assert equal > 0.8 and (saved[0] == raw[..., ::-1]).all(axis=2).mean() < 0.2


def test_browse_skip_type_errors_and_nothing_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'RandomFlip'"):
        browse_dataset(shapes_cfg(), tmp_path, skip_types=["RandomFlp"])
    with pytest.raises(ConfigError, match="no --output-dir and no display"):
        browse_dataset(shapes_cfg(), None)
    assert not display_available()


def test_browse_keeping_normalize_and_skipping_resize(tmp_path: Path) -> None:
    cfg = shapes_cfg(["data.train.pipeline.2.img_scale=[128,128]"])
    small = browse_dataset(cfg, tmp_path / "a", max_images=1, show=False)
    assert cv2.imread(str(small.files[0])).shape == (128, 128, 3)
    skipped = browse_dataset(cfg, tmp_path / "b", skip_types=["DefaultFormatBundle", "Normalize", "Collect", "Resize", "Pad"],
                             max_images=1, show=False)
    # Resize skipped: the image keeps its 256 px (Pad would need a size anyway)
    assert cv2.imread(str(skipped.files[0])).shape == (256, 256, 3)
    kept = browse_dataset(cfg, tmp_path / "c", skip_types=["Collect"], max_images=1, show=False)
    assert cv2.imread(str(kept.files[0])).shape == (128, 128, 3)


# --------------------------------------------------------------------------- analyze-results


def perfect_results(cfg: dict, spoil: dict[int, str]) -> tuple[list[dict], list[int]]:
    """COCO results equal to the GT of data.test; ``spoil[i]``: ``none`` drops image i's detections,
    ``half`` keeps only its first box."""
    from detcli.engine.builders import build_split

    dataset, _, _ = build_split(cfg, "test", test_mode=True)
    out = []
    for i, image_id in enumerate(dataset.image_ids):
        ann = dataset.get_ann_info(i)
        boxes = ann["bboxes"].tolist()
        if spoil.get(i) == "none":
            boxes = []
        elif spoil.get(i) == "half":
            boxes = boxes[:1]
        for (x1, y1, x2, y2), label in zip(boxes, ann["labels"].tolist()):
            out.append({"image_id": image_id, "category_id": dataset.cat_ids[label],
                        "bbox": [x1, y1, x2 - x1, y2 - y1], "score": 0.9})
    return out, dataset.image_ids


def test_analyze_results_ranks_and_paints(tmp_path: Path) -> None:
    cfg = shapes_cfg()
    results, _ = perfect_results(cfg, {1: "none", 3: "half"})
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    r = analyze_results(cfg, path, tmp_path / "show", topk=2)
    maps = [s.map for s in r.scores]
    assert maps[1] == 0.0 and maps[0] == maps[2] == maps[4] == 1.0 and 0.0 < maps[3] < 1.0
    assert [s.index for s in r.bad] == [1, 3]
    assert [s.index for s in r.good] == [0, 2]  # ties keep dataset order
    assert [f.name for f in r.bad_files] == ["001_000001_mAP0.000.jpg", f"002_000003_mAP{maps[3]:.3f}.jpg"]
    assert [f.parent.name for f in r.good_files] == ["good", "good"] and all(f.is_file() for f in r.good_files + r.bad_files)


def test_analyze_results_topk_larger_than_split(tmp_path: Path) -> None:
    cfg = shapes_cfg()
    results, _ = perfect_results(cfg, {})
    path = tmp_path / "r.json"
    path.write_text(json.dumps(results))
    r = analyze_results(cfg, path, tmp_path / "s", topk=20, show_score_thr=0.95)
    assert len(r.good) == len(r.bad) == 5 and all(s.map == 1.0 for s in r.scores)


def test_analyze_results_empty_results_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.json"
    path.write_text("[]")
    r = analyze_results(shapes_cfg(), path, tmp_path / "s", topk=1)
    assert all(s.map == 0.0 for s in r.scores) and len(r.bad_files) == 1


@pytest.mark.parametrize(("mutate", "match"), [
    (lambda rs: rs[0].update(image_id=999), "image_id 999 is not an image"),
    (lambda rs: rs[0].update(category_id=77), "category_id 77 is not a class"),
])
def test_analyze_results_mismatched_results(tmp_path: Path, mutate, match: str) -> None:
    cfg = shapes_cfg()
    results, _ = perfect_results(cfg, {})
    mutate(results)
    path = tmp_path / "r.json"
    path.write_text(json.dumps(results))
    with pytest.raises(DatasetError, match=match):
        analyze_results(cfg, path, tmp_path / "s")


def test_analyze_results_bad_options(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--metric 'segm'"):
        analyze_results(shapes_cfg(), tmp_path / "x.json", tmp_path, metric="segm")
    with pytest.raises(DatasetError, match="no such file"):
        analyze_results(shapes_cfg(), tmp_path / "x.json", tmp_path)


def invoke(*args: str):
    return CliRunner().invoke(app, normalize_argv(list(args)))


def test_cli_browse_and_analyze(tmp_path: Path) -> None:
    opts = ["--cfg-options", *SMALL]
    r = invoke("browse-dataset", "retinanet_r18_fpn_shapes", "--output-dir", str(tmp_path / "b"), "--max-images", "2",
               "--skip-type", "DefaultFormatBundle", "Normalize", "Collect", *opts)
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == f"drew 2 images into {tmp_path / 'b'}"
    r = invoke("browse-dataset", "retinanet_r18_fpn_shapes", "--not-show", *opts)
    assert r.exit_code == 1 and "no --output-dir" in r.output
    results, _ = perfect_results(shapes_cfg(), {2: "none"})
    path = tmp_path / "r.json"
    path.write_text(json.dumps(results))
    r = invoke("analyze-results", "retinanet_r18_fpn_shapes", str(path), str(tmp_path / "show"), "--topk", "1", "--json", *opts)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["bad"][0]["index"] == 2 and out["bad"][0]["mAP"] == 0.0 and len(out["images"]) == 5
    r = invoke("analyze-results", "retinanet_r18_fpn_shapes", str(path), str(tmp_path / "show"), "--topk", "1", *opts)
    assert r.exit_code == 0 and r.stdout.splitlines()[0] == "5 images, mean single-image mAP 0.8000"


@pytest.mark.parametrize(("argv", "expected"), [
    (["browse-dataset", "p", "--skip-type", "Normalize", "Collect", "--not-show"],
     ["browse-dataset", "p", "--skip-type", "Normalize", "--skip-type", "Collect", "--not-show"]),
    (["browse-dataset", "--skip-type", "Normalize", "p"], ["browse-dataset", "--skip-type", "Normalize", "p"]),
])
def test_skip_type_takes_several_words(argv: list[str], expected: list[str]) -> None:
    assert normalize_argv(argv) == expected


def test_browse_draws_masks_when_collected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import detcli.visualization as vis

    saved: list[np.ndarray] = []
    monkeypatch.setattr(vis, "save_image", lambda image, path: saved.append(image) or Path(path))
    base = ["data.train.pipeline.3.flip_ratio=0.0"]
    masks = base + ["data.train.pipeline.1.with_mask=true", "data.train.pipeline.7.keys=[img,gt_bboxes,gt_labels,gt_masks]"]
    browse_dataset(shapes_cfg(base), tmp_path, max_images=1, show=False)
    browse_dataset(shapes_cfg(masks), tmp_path, max_images=1, show=False)
    changed = (saved[0] != saved[1]).any(axis=2).mean()
    assert changed > 0.02  # the instances are tinted


def test_browse_a_wrapped_dataset_keeps_every_image(tmp_path: Path) -> None:
    cfg = shapes_cfg(["data.train.num_images=2"])
    cfg["data"]["train"] = {"type": "RepeatDataset", "times": 2, "dataset": cfg["data"]["train"]}
    r = browse_dataset(cfg, tmp_path, skip_types=["Normalize", "RandomFlip"], show=False)
    assert [f.name for f in r.files] == ["000000.jpg", "000001.jpg", "000002_000000.jpg", "000003_000001.jpg"]
