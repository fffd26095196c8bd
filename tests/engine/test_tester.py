"""test(), load_model() and the test loop: metrics, results json, format-only, TTA merge, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import detcli.engine as engine
from detcli.engine.builders import load_model
from detcli.engine.tester import merge_views, run_inference
from detcli.errors import CheckpointError, ConfigError
from detcli.evaluation import evaluate_coco
from detcli.structures import Detections

from engine_helpers import tiny_cfg

BBOX_KEYS = ["bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("run")
    result = engine.train(tiny_cfg(), work_dir=run, cfg_source="tiny.yaml", validate=False)
    assert result.last_checkpoint is not None
    return result.last_checkpoint


def test_checkpoint_alone_is_enough_and_out_matches_metrics(checkpoint: Path, tmp_path: Path) -> None:
    events = []
    out = tmp_path / "res" / "results.json"
    result = engine.tester.test(None, str(checkpoint), out=str(out), progress=events.append)
    assert list(result.metrics) == BBOX_KEYS
    assert result.num_images == 8 and result.out == out
    assert len(result.summary.splitlines()) == 12
    assert result.classwise == [] and result.classwise_table == ""
    entries = json.loads(out.read_text())
    assert len(entries) == result.num_detections == 16  # 2 classes x 8 images
    assert {e["category_id"] for e in entries} == {1, 3}  # non-contiguous cat ids
    assert {e["image_id"] for e in entries} == set(range(100, 108))
    assert all(len(e["bbox"]) == 4 and e["bbox"][2] > 0 and 0 <= e["score"] <= 1 for e in entries)
    # the metrics are pycocotools' on exactly that file
    dataset = engine.builders.build_split(load_model(str(checkpoint)).cfg, "test", test_mode=True)[0]
    direct = evaluate_coco(dataset.coco, entries, ["bbox"])
    assert direct.metrics == result.metrics
    assert [e.iter for e in events] == [4, 8] and all(e.phase == "test" and e.max == 8 for e in events)


def test_classwise_and_proposal(checkpoint: Path) -> None:
    result = engine.tester.test(None, str(checkpoint), metrics=["bbox", "proposal"], classwise=True)
    assert set(result.metrics) == set(BBOX_KEYS) | {"AR@100", "AR@300", "AR@1000", "AR_s@1000", "AR_m@1000", "AR_l@1000"}
    assert [row.name for row in result.classwise] == ["a", "b"]
    assert result.classwise_table.splitlines()[0].startswith("category")
    assert set(result.summaries) == {"bbox", "proposal"}


def test_given_config_overrides_checkpoint_config(checkpoint: Path) -> None:
    cfg = tiny_cfg()
    cfg["data"]["test"]["num_images"] = 3
    result = engine.tester.test(cfg, str(checkpoint))
    assert result.num_images == 3


def test_resolve_test_config_of_both_sources(checkpoint: Path) -> None:
    # no preset, no overrides: test() reads the checkpoint's own config
    assert engine.resolve_test_config(str(checkpoint)) is None
    # overrides without a preset apply to the stored config
    cfg = engine.resolve_test_config(str(checkpoint), cfg_options=["data.test.num_images=3"])
    assert cfg is not None and cfg["data"]["test"]["num_images"] == 3
    assert cfg["model"]["type"] == "TinyTestDetector" and cfg["data"]["test"]["samples_per_gpu"] == 4
    # a preset wins over the stored config, with the overrides on top
    preset = engine.resolve_test_config(str(checkpoint), "quickstart", ["data.test.num_images=5"])
    assert preset is not None and preset["data"]["test"]["num_images"] == 5
    assert preset["model"]["type"] != "TinyTestDetector"


def test_evaluate_results_file_checks_plot_dir_before_reading(tmp_path: Path) -> None:
    from detcli.errors import OutputError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    # the annotation file does not exist either: the plot folder is refused first
    with pytest.raises(OutputError, match="--plot-dir"):
        engine.evaluate_results_file(tmp_path / "missing.json", tmp_path / "dt.json", plot_dir=blocker / "plots")


def test_evaluate_results_file_defaults_to_bbox(tmp_path: Path) -> None:
    gt = {"images": [{"id": 1, "width": 20, "height": 20}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10], "area": 100, "iscrowd": 0}],
          "categories": [{"id": 1, "name": "a"}]}
    dt = [{"image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10], "score": 0.9}]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dt))
    evaluation = engine.evaluate_results_file(tmp_path / "gt.json", tmp_path / "dt.json")
    assert list(evaluation.summaries) == ["bbox"]
    assert evaluation.metrics["bbox_mAP"] == pytest.approx(1.0) and evaluation.metrics["bbox_mAP_50"] == pytest.approx(1.0)


def test_format_only_writes_without_evaluating(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    result = engine.tester.test(None, str(checkpoint), out=str(out), format_only=True)
    assert result.metrics == {} and result.summary == ""
    assert len(json.loads(out.read_text())) == 16


def test_format_only_needs_out(checkpoint: Path) -> None:
    with pytest.raises(ConfigError, match="--format-only needs --out"):
        engine.tester.test(None, str(checkpoint), format_only=True)


def test_unsupported_metric_fails_before_loading(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"metric 'segmm' is not supported.*supported: bbox, segm, proposal"):
        engine.tester.test(None, str(tmp_path / "missing.pth"), metrics=["segmm"])


def test_segm_on_a_box_only_model_names_metric_and_model(checkpoint: Path) -> None:
    with pytest.raises(ConfigError, match=r"metric 'segm' needs instance masks, but the model \(TinyTestDetector\) predicts boxes only"):
        engine.tester.test(None, str(checkpoint), metrics=["bbox", "segm"])


def test_not_a_checkpoint(tmp_path: Path) -> None:
    bad = tmp_path / "weights.pth"
    bad.write_bytes(b"\x00garbage" * 50)
    with pytest.raises(CheckpointError, match=str(bad)):
        engine.tester.test(None, str(bad))


def test_config_that_does_not_fit_the_weights(checkpoint: Path) -> None:
    cfg = tiny_cfg()
    cfg["model"]["num_classes"] = 4
    with pytest.raises(CheckpointError, match=r"do not fit the model: shape mismatch"):
        load_model(str(checkpoint), cfg)


def test_load_model_eval_mode_classes_and_meta(checkpoint: Path) -> None:
    loaded = load_model(str(checkpoint))
    assert not loaded.model.training
    assert loaded.classes == ("a", "b")
    assert loaded.meta["epoch"] == 2 and loaded.cfg["model"]["type"] == "TinyTestDetector"


def test_show_dir_writes_one_image_per_test_image(checkpoint: Path, tmp_path: Path) -> None:
    result = engine.tester.test(None, str(checkpoint), show_dir=str(tmp_path / "show"), show_score_thr=0.0)
    assert result.show_dir == tmp_path / "show"
    assert sorted(p.name for p in (tmp_path / "show").iterdir()) == [f"{i:03d}.png" for i in range(8)]


def test_tta_views_are_merged_with_nms(checkpoint: Path) -> None:
    loaded = load_model(str(checkpoint))
    cfg = tiny_cfg()
    cfg["data"]["test"]["views"] = 2
    dataset = engine.builders.build_split(cfg, "test", test_mode=True)[0]
    single = run_inference(loaded.model, engine.builders.build_split(tiny_cfg(), "test", test_mode=True)[0],
                           samples_per_gpu=3, cfg=cfg)
    merged = run_inference(loaded.model, dataset, samples_per_gpu=3, cfg=cfg)
    assert len(merged) == len(single) == 8
    for a, b in zip(single, merged):  # identical views: NMS removes every duplicate
        assert torch.equal(a.boxes.tensor, b.boxes.tensor) and torch.equal(a.labels, b.labels)


def test_merge_views_nms_per_class_and_max_per_img() -> None:
    box = [[0.0, 0.0, 10.0, 10.0]]
    v1 = Detections((20, 20), torch.tensor(box * 2), torch.tensor([0.9, 0.5]), torch.tensor([0, 1]))
    v2 = Detections((20, 20), torch.tensor([[0.5, 0.0, 10.0, 10.0], [10.0, 10.0, 20.0, 20.0]]),
                    torch.tensor([0.8, 0.7]), torch.tensor([0, 0]))
    merged = merge_views([v1, v2], iou_threshold=0.5, max_per_img=100)
    assert merged.scores.tolist() == pytest.approx([0.9, 0.7, 0.5])  # 0.8 suppressed by 0.9 (same class)
    assert merged.labels.tolist() == [0, 0, 1]
    assert len(merge_views([v1, v2], iou_threshold=0.5, max_per_img=2)) == 2
    empty = Detections.empty((20, 20))
    assert len(merge_views([empty, empty], 0.5, 100)) == 0
    assert merge_views([v1], 0.5, 1) is v1


SEGM_KEYS = [k.replace("bbox", "segm") for k in BBOX_KEYS]


def mask_cfg() -> dict:
    cfg = tiny_cfg(evaluation={"interval": 1, "metric": ["bbox", "segm"]})
    cfg["model"]["type"] = "TinyMaskTestDetector"
    for split in ("train", "val", "test"):
        cfg["data"][split]["type"] = "TinyMaskTestDataset"
    return cfg


def test_mask_model_segm_metrics_rle_results_and_drawings(tmp_path: Path) -> None:
    import contextlib
    import io

    import cv2
    from pycocotools import mask as mask_utils
    from pycocotools.cocoeval import COCOeval

    run = tmp_path / "run"
    trained = engine.train(mask_cfg(), work_dir=run, cfg_source="tiny.yaml")  # validation evaluates segm too
    assert trained.last_checkpoint is not None
    out = tmp_path / "results.json"
    result = engine.tester.test(None, str(trained.last_checkpoint), metrics=["bbox", "segm", "proposal"], out=str(out),
                                classwise=True, show_dir=str(tmp_path / "show"), show_score_thr=0.0)
    assert set(SEGM_KEYS) <= set(result.metrics) and set(BBOX_KEYS) <= set(result.metrics) and "AR@100" in result.metrics
    assert set(result.classwise_by_metric) == {"bbox", "segm"} and "segm per class:" in result.classwise_table
    entries = json.loads(out.read_text())
    assert len(entries) == 16
    for e in entries:
        seg = e["segmentation"]
        assert seg["size"] == [32, 32] and isinstance(seg["counts"], str)
        mask = mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode()})
        assert mask.shape == (32, 32) and mask.any()
    dataset = engine.builders.build_split(load_model(str(trained.last_checkpoint)).cfg, "test", test_mode=True)[0]
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(dataset.coco, dataset.coco.loadRes(json.loads(out.read_text())), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert [result.metrics[k] for k in SEGM_KEYS] == [float(s) for s in ev.stats[:6]]
    drawn = cv2.imread(str(tmp_path / "show" / "000.png"))
    assert drawn is not None and drawn.shape == (32, 32, 3)
    # format-only writes the masks too, without evaluating
    only = engine.tester.test(None, str(trained.last_checkpoint), out=str(tmp_path / "only.json"), format_only=True)
    assert only.metrics == {} and all("segmentation" in e for e in json.loads((tmp_path / "only.json").read_text()))


def test_run_inference_can_hold_masks_as_rle(tmp_path: Path) -> None:
    from detcli.evaluation.rle import EncodedDetections

    cfg = mask_cfg()
    model = engine.builders.build_model(cfg).eval()
    dataset = engine.builders.build_split(cfg, "test", test_mode=True)[0]
    dense = run_inference(model, dataset, cfg=cfg)
    compact = run_inference(model, dataset, cfg=cfg, encode_masks=True)
    assert all(isinstance(d, Detections) and d.masks is not None for d in dense)
    assert all(isinstance(c, EncodedDetections) and c.detections.masks is None for c in compact)
    for d, c in zip(dense, compact):
        assert torch.equal(c.decode().masks, d.masks)
