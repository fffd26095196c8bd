"""optimize-anchors: IoU k-means, differential evolution, the grid fitness, the assigner score, and the
whole command on the shapes preset (BPR after >= before, json keys, a --cfg-options line that parses)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from detcli.config import apply_overrides, load_config, resolve_preset_path
from detcli.errors import ConfigError, DatasetError
from detcli.models.assigners import MaxIoUAssigner
from detcli.tools.anchors import (
    RESULT_FILE,
    CollectedBoxes,
    GeneratorSettings,
    GridFitness,
    assigner_score,
    centred_iou,
    collect_boxes,
    differential_evolution,
    kmeans_anchors,
    optimize_anchors,
    resize_factors,
)

SMALL = ["data.train.num_images=40"]


def shapes_cfg(extra: list[str] | None = None) -> dict:
    return load_config(str(resolve_preset_path("retinanet_r18_fpn_shapes")), SMALL + (extra or []))


def test_centred_iou_values() -> None:
    iou = centred_iou(np.array([[2.0, 2.0], [4.0, 1.0]]), np.array([[2.0, 2.0], [4.0, 1.0]]))
    np.testing.assert_allclose(iou, [[1.0, 2 / 6], [2 / 6, 1.0]])


def test_resize_factors_keep_ratio_and_not() -> None:
    assert resize_factors(640, 480, (320, 320), True) == (0.5, 0.5, 320, 240)
    assert resize_factors(640, 480, (320, 320), False) == (0.5, 320 / 480, 320, 320)


def test_kmeans_finds_two_size_groups_deterministically() -> None:
    wh = np.array([[10, 10], [11, 9], [9, 11], [40, 80], [42, 78], [38, 82]], dtype=np.float64)
    a = kmeans_anchors(wh, 2)
    np.testing.assert_allclose(a, [[10, 10], [40, 80]])
    np.testing.assert_array_equal(a, kmeans_anchors(wh, 2))


def test_kmeans_needs_enough_boxes() -> None:
    with pytest.raises(DatasetError, match="--num-anchors 3"):
        kmeans_anchors(np.array([[1.0, 1.0]]), 3)


def test_differential_evolution_minimises_a_bowl() -> None:
    best, cost = differential_evolution(lambda p: ((p - [1.0, -2.0]) ** 2).sum(axis=1),
                                        np.array([[-5.0, 5.0], [-5.0, 5.0]]), iters=200, seed=0)
    np.testing.assert_allclose(best, [1.0, -2.0], atol=1e-2)
    assert cost < 1e-3
    again, _ = differential_evolution(lambda p: ((p - [1.0, -2.0]) ** 2).sum(axis=1),
                                      np.array([[-5.0, 5.0], [-5.0, 5.0]]), iters=200, seed=0)
    np.testing.assert_array_equal(best, again)


def test_generator_settings_vector_round_trip_and_cfg_options() -> None:
    s = GeneratorSettings([0.5, 1.0, 2.0], octave_base_scale=4.0, scales_per_octave=3)
    assert s.scale_values == pytest.approx([4.0, 4 * 2 ** (1 / 3), 4 * 2 ** (2 / 3)])
    assert s.from_vector(s.to_vector()).to_dict() == s.to_dict()
    line = s.cfg_options("bbox_head")
    assert line == "model.bbox_head.anchor_generator.ratios=[0.5,1,2] model.bbox_head.anchor_generator.octave_base_scale=4"
    listed = GeneratorSettings([1.0], scales=[2.0, 8.0])
    assert listed.from_vector(listed.to_vector()).scales == [2.0, 8.0]
    assert listed.cfg_options("rpn_head").endswith("model.rpn_head.anchor_generator.scales=[2,8]")


def test_grid_fitness_matches_the_real_grid() -> None:
    # one 16x16 box centred on an anchor centre of stride 8: an anchor of scale 2 fits exactly
    boxes = np.array([[8.0, 8.0, 24.0, 24.0]])
    fit = GridFitness(boxes, [(8.0, 8.0)], [8.0], 0.0, 0.5)
    assert fit.best_iou(np.array([[2.0]]), np.array([[1.0]]))[0, 0] == pytest.approx(1.0)
    # shifted by 4 px (half a stride) in x: the nearest anchor overlaps 12 of 16 columns
    fit = GridFitness(boxes + [4, 0, 4, 0], [(8.0, 8.0)], [8.0], 0.0, 0.5)
    assert fit.best_iou(np.array([[2.0]]), np.array([[1.0]]))[0, 0] == pytest.approx(12 * 16 / (2 * 256 - 12 * 16))
    gen = {"type": "AnchorGenerator", "strides": [8], "ratios": [1.0], "scales": [2.0]}
    collected = CollectedBoxes(boxes + [4, 0, 4, 0], np.array([0]), [(64, 64)])
    score = assigner_score(collected, gen, MaxIoUAssigner(0.5, 0.4, 0.0))
    assert score.mean_iou == pytest.approx(0.6)
    assert score.bpr == 1.0 and score.strict_recall == 1.0
    strict = assigner_score(collected, gen, MaxIoUAssigner(0.7, 0.4, 0.0, match_low_quality=False))
    assert strict.bpr == 0.0 and strict.strict_recall == 0.0


def test_collect_boxes_rescales_and_counts(tmp_path: Path) -> None:
    from detcli.engine.builders import build_split

    dataset, _, _ = build_split(shapes_cfg(), "train", test_mode=False)
    half = collect_boxes(dataset, (128, 128), True, 32)
    full = collect_boxes(dataset, (256, 256), True, 32)
    assert len(half.boxes) == len(full.boxes) == sum(len(dataset.get_ann_info(i)["bboxes"]) for i in range(len(dataset)))
    np.testing.assert_allclose(half.boxes, full.boxes / 2)
    assert set(half.pad_shapes) == {(128, 128)}


@pytest.mark.parametrize("algorithm", ["k-means", "differential_evolution"])
def test_optimize_on_shapes_improves_bpr(algorithm: str, tmp_path: Path) -> None:
    result = optimize_anchors(shapes_cfg(), algorithm, (256, 256), iters=5, output_dir=tmp_path)
    assert result.num_images == 40 and result.num_boxes > 100
    assert result.score_after.bpr >= result.score_before.bpr
    assert result.score_after.strict_recall >= result.score_before.strict_recall
    assert result.score_before.strict_recall < 0.9 < result.score_after.strict_recall  # shapes are near-square
    saved = json.loads((tmp_path / RESULT_FILE).read_text())
    assert set(saved) == {"algorithm", "input_shape", "num_boxes", "num_images", "iou_thr", "anchors",
                          "anchors_mean_iou", "anchors_recall", "anchor_generator", "cfg_options"}
    assert saved["input_shape"] == [256, 256] and len(saved["anchors"]) == 9
    areas = [w * h for w, h in saved["anchors"]]
    assert areas == sorted(areas)
    assert set(saved["anchor_generator"]["after"]) >= {"ratios", "octave_base_scale", "bpr", "strict_recall", "mean_iou"}
    # the printed line parses and builds a model
    cfg = apply_overrides(shapes_cfg(), result.cfg_options.split())
    gen = cfg["model"]["bbox_head"]["anchor_generator"]
    assert gen["ratios"] == result.after.ratios and gen["octave_base_scale"] == result.after.octave_base_scale
    from detcli.engine.builders import build_model

    model = build_model(cfg)
    assert model.bbox_head.anchor_generator.ratios.tolist() == pytest.approx(result.after.ratios)


def test_anchor_free_preset_is_refused(tmp_path: Path) -> None:
    cfg = load_config(str(resolve_preset_path("quickstart")), SMALL)
    with pytest.raises(ConfigError, match="anchor-free"):
        optimize_anchors(cfg, "k-means", (256, 256), iters=1, output_dir=tmp_path)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--algorithm 'kmeans'"):
        optimize_anchors(shapes_cfg(), "kmeans", (256, 256), output_dir=tmp_path)
    with pytest.raises(ConfigError, match="--input-shape"):
        optimize_anchors(shapes_cfg(), "k-means", (0, 256), output_dir=tmp_path)


def test_split_without_boxes(tmp_path: Path) -> None:
    class Empty:
        def __len__(self) -> int:
            return 1

        def get_img_info(self, i: int) -> dict:
            return {"width": 10, "height": 10}

        def get_ann_info(self, i: int) -> dict:
            return {"bboxes": np.zeros((0, 4), np.float32)}

    with pytest.raises(DatasetError, match="no ground-truth boxes"):
        collect_boxes(Empty(), (10, 10))


def test_cli_prints_counts_and_a_cfg_options_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from detcli.cli import app, normalize_argv

    args = ["optimize-anchors", "retinanet_r18_fpn_shapes", "--input-shape", "256", "256", "--iters", "3",
            "--output-dir", str(tmp_path), "--cfg-options", *SMALL]
    result = CliRunner().invoke(app, normalize_argv(args))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("boxes collected: ") and "from 40 images at 256x256" in lines[0]
    assert any("best possible recall" in line for line in lines)
    assert lines[-1].startswith("--cfg-options model.bbox_head.anchor_generator.ratios=[")
    assert (tmp_path / RESULT_FILE).is_file()
    bad = CliRunner().invoke(app, normalize_argv(["optimize-anchors", "quickstart", "--input-shape", "256", "256"]))
    assert bad.exit_code == 1 and "anchor-free" in bad.output
