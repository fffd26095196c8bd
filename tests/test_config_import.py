"""`det config import`: mmdet 2.x Python configs → det presets, never executing the Python file."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import detcli.data  # registers datasets and transforms
import detcli.models  # noqa: F401  (registers model components)
from detcli.cli import app, normalize_argv
from detcli.config import load_config
from detcli.config_import import choose_bases, difference, import_mmdet_config, same
from detcli.engine import validate_config
from detcli.errors import ConfigError

CONFIGS = Path(__file__).parent / "data" / "mmdet_configs"
FUZZ_IMPORT = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                       suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
runner = CliRunner()


def invoke(*args: str, input: str | None = None) -> Any:
    return runner.invoke(app, normalize_argv(list(args)), input=input)


def differing_paths(a: Any, b: Any, at: str = "") -> dict[str, tuple[Any, Any]]:
    """``{dotted path: (a's value, b's value)}`` of every place where ``a`` and ``b`` differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: dict[str, tuple[Any, Any]] = {}
        for key in {**a, **b}:
            sub = f"{at}.{key}" if at else str(key)
            if key not in a or key not in b:
                out[sub] = (a.get(key, "<absent>"), b.get(key, "<absent>"))
            else:
                out.update(differing_paths(a[key], b[key], sub))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = {}
        for i, (x, y) in enumerate(zip(a, b)):
            out.update(differing_paths(x, y, f"{at}.{i}"))
        return out
    return {} if same(a, b) else {at: (a, b)}


def import_to_file(config: Path, tmp_path: Path) -> tuple[Path, Any]:
    result = import_mmdet_config(config, validate=validate_config)
    out = tmp_path / (config.stem + ".yaml")
    out.write_text(result.text)
    return out, result


# mmdet 2.x's own files differ from det's shipped presets in these places, on purpose:
RUNTIME_DIFFERENCES: dict[str, tuple[Any, Any]] = {
    # det's default_runtime seeds 0 (reproducible by default); mmdet's config has no seed (tools/train.py --seed)
    "seed": ("<absent>", 0),
    # mmdet's default_runtime states its runtime defaults; det's presets leave them to det's defaults
    "workflow": ([["train", 1]], "<absent>"),
    "log_level": ("INFO", "<absent>"),
    "dist_params": ({"backend": "nccl"}, "<absent>"),
    "custom_hooks": ([{"type": "NumClassCheckHook"}], "<absent>"),
    "log_config.hooks": ([{"type": "TextLoggerHook"}], "<absent>"),
}
# mmdet's test pipeline converts the image with ImageToTensor; det's presets use DefaultFormatBundle there
# (what mmdet's replace_ImageToTensor substitutes for batched testing)
TEST_PIPELINE_DIFFERENCES = {
    f"data.{split}.pipeline.1.transforms.4.type": ("ImageToTensor", "DefaultFormatBundle") for split in ("val", "test")
}
TEST_PIPELINE_DIFFERENCES.update({
    f"data.{split}.pipeline.1.transforms.4.keys": (["img"], "<absent>") for split in ("val", "test")
})


@pytest.mark.parametrize(
    ("config", "preset", "extra"),
    [
        ("retinanet/retinanet_r50_fpn_1x_coco.py", "retinanet_r50_fpn_1x_coco", {}),
        ("faster_rcnn/faster_rcnn_r50_fpn_1x_coco.py", "faster_rcnn_r50_fpn_1x_coco", {}),
        (
            "mask_rcnn/mask_rcnn_r50_fpn_1x_coco.py",
            "mask_rcnn_r50_fpn_1x_coco",
            {
                # det's coco_instance keeps polygons (poly2mask: false); mmdet's file rasterises (default true)
                "data.train.pipeline.1.poly2mask": ("<absent>", False),
                # mmdet's coco_instance.py leaves the interval at its default (1); det's preset states it
                "evaluation.interval": ("<absent>", 1),
            },
        ),
    ],
)
def test_import_resolves_like_the_shipped_preset(config: str, preset: str, extra: dict[str, Any], tmp_path: Path) -> None:
    out, result = import_to_file(CONFIGS / config, tmp_path)
    assert result.problems == []
    imported = load_config(out)
    shipped = load_config(preset)
    shipped.pop("zoo")  # the published weights: not part of an mmdet config
    expected = {**RUNTIME_DIFFERENCES, **TEST_PIPELINE_DIFFERENCES, **extra}
    assert differing_paths(imported, shipped) == expected
    # the preset is written onto det's shipped fragments, not flattened
    family = preset.split("_r50")[0]
    assert f"_base_/models/{family}_r50_fpn.yaml" in result.bases
    assert "_base_/schedules/schedule_1x.yaml" in result.bases
    assert "model:" not in out.read_text()  # the model equals the fragment: nothing restated
    # intermediate variables are resolved and dropped
    for name in ("img_norm_cfg", "train_pipeline", "test_pipeline", "dataset_type", "data_root"):
        assert name not in imported
    assert {"opencv_num_threads", "mp_start_method"}.isdisjoint(imported)
    assert any("opencv_num_threads" in note for note in result.notes)


def test_retinanet_optimizer_override_and_dataset_paths(tmp_path: Path) -> None:
    out, _ = import_to_file(CONFIGS / "retinanet/retinanet_r50_fpn_1x_coco.py", tmp_path)
    cfg = load_config(out)
    assert cfg["optimizer"] == {"type": "SGD", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0001}
    # ann_file = data_root + '...' becomes det's data_root + relative path
    assert cfg["data"]["train"]["data_root"] == "data/coco/"
    assert cfg["data"]["train"]["ann_file"] == "annotations/instances_train2017.json"
    assert cfg["data"]["val"]["img_prefix"] == "val2017/"
    assert cfg["data"]["train"]["pipeline"][2]["img_scale"] == [1333, 800]  # a tuple in Python, a list here


def test_custom_dataset_config_as_in_the_tutorial(tmp_path: Path) -> None:
    out, result = import_to_file(CONFIGS / "balloon/mask_rcnn_r50_caffe_fpn_mstrain-poly_1x_balloon.py", tmp_path)
    assert result.problems == []  # det's registries and its validation accept all of it
    cfg = load_config(out)
    validate_config(cfg, str(out))
    head = cfg["model"]["roi_head"]
    assert head["bbox_head"]["num_classes"] == 1 and head["mask_head"]["num_classes"] == 1
    backbone = cfg["model"]["backbone"]
    assert backbone["style"] == "caffe"
    assert backbone["norm_cfg"] == {"type": "BN", "requires_grad": False}
    assert backbone["init_cfg"] == {"type": "Pretrained", "checkpoint": "open-mmlab://detectron2/resnet50_caffe"}
    for split, folder in (("train", "train"), ("val", "val"), ("test", "val")):
        node = cfg["data"][split]
        assert node["type"] == "CocoDataset"  # `dataset_type = 'COCODataset'` comes after the bases used it
        assert node["classes"] == ["balloon"]
        assert node["ann_file"] == f"balloon/{folder}/annotation_coco.json"
        assert node["img_prefix"] == f"balloon/{folder}/"
        assert "data_root" not in node  # the paths do not start with the base's data_root
    train = cfg["data"]["train"]["pipeline"]
    assert train[1] == {"type": "LoadAnnotations", "with_bbox": True, "with_mask": True, "poly2mask": False}
    assert train[2]["img_scale"] == [[1333, s] for s in (640, 672, 704, 736, 768, 800)]
    assert train[4] == {"type": "Normalize", "mean": [103.53, 116.28, 123.675], "std": [1.0, 1.0, 1.0], "to_rgb": False}
    assert cfg["load_from"].startswith("checkpoints/mask_rcnn_r50_caffe_fpn_mstrain-poly_3x_coco")
    assert "classes" not in cfg and "dataset_type" not in cfg


def test_pipelines_that_differ_in_vars_become_vars(tmp_path: Path) -> None:
    config = write(tmp_path / "small.py", f"""
_base_ = '{CONFIGS}/retinanet/retinanet_r50_fpn_1x_coco.py'
img_norm_cfg = dict(mean=[103.530, 116.280, 123.675], std=[1.0, 1.0, 1.0], to_rgb=False)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', img_scale=(640, 480), keep_ratio=True),
    dict(type='RandomFlip', flip_ratio=0.5),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='Pad', size_divisor=32),
    dict(type='DefaultFormatBundle'),
    dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels']),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='MultiScaleFlipAug', img_scale=(640, 480), flip=False, transforms=[
        dict(type='Resize', keep_ratio=True), dict(type='RandomFlip'), dict(type='Normalize', **img_norm_cfg),
        dict(type='Pad', size_divisor=32), dict(type='DefaultFormatBundle'), dict(type='Collect', keys=['img'])])
]
data = dict(train=dict(pipeline=train_pipeline), val=dict(pipeline=test_pipeline), test=dict(pipeline=test_pipeline))
load_from = '${{HOME}}/x.pth'
""")
    out, result = import_to_file(config, tmp_path)
    assert result.problems == []
    assert "_base_/datasets/coco_detection.yaml" in result.bases
    text = out.read_text()
    assert "pipeline:" not in text  # both pipelines are the fragment's, with its vars set
    assert "vars:\n  img_scale: [640, 480]\n  img_norm_mean: [103.53, 116.28, 123.675]\n" in text
    assert "load_from: $${HOME}/x.pth" in text  # a literal ${ is escaped, so det does not substitute it
    cfg = load_config(out)
    assert same(cfg, result.config)
    assert cfg["load_from"] == "${HOME}/x.pth"
    assert cfg["data"]["test"]["pipeline"][1]["img_scale"] == [640, 480]
    assert cfg["data"]["train"]["pipeline"][4] == {"type": "Normalize", "mean": [103.53, 116.28, 123.675],
                                                   "std": [1.0, 1.0, 1.0], "to_rgb": False}


def test_the_docs_printed_mask_rcnn_config(tmp_path: Path) -> None:
    out, result = import_to_file(CONFIGS / "mask_rcnn/mask_rcnn_r50_fpn_docs_example.py", tmp_path)
    assert result.problems == []
    # printed but unused intermediate variables are dropped with a note, not reported as unknown keys
    for name in ("dataset_type", "data_root", "img_norm_cfg", "train_pipeline", "test_pipeline"):
        assert f"dropped the variable {name}: no file of the config uses it" in result.notes
    imported, shipped = load_config(out), load_config("mask_rcnn_r50_fpn_1x_coco")
    assert differing_paths(imported["model"], shipped["model"]) == {
        # keys of older 2.x releases that the docs still print (det's two-stage settings accept them)
        "train_cfg.rpn_proposal.nms_across_levels": (False, "<absent>"),
        "train_cfg.rpn_proposal.nms_post": (1000, "<absent>"),
        "test_cfg.rpn.nms_across_levels": (False, "<absent>"),
        "test_cfg.rpn.nms_post": (1000, "<absent>"),
        "test_cfg.rcnn.nms.iou_thr": (0.5, "<absent>"),
        "test_cfg.rcnn.nms.iou_threshold": ("<absent>", 0.5),
    }
    assert imported["data"]["test"]["samples_per_gpu"] == 2  # a split's loader key, not a dataset key
    assert imported["data"]["train"] == shipped["data"]["train"]
    assert imported["work_dir"] == "work_dir"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_expressions_the_importer_evaluates(tmp_path: Path) -> None:
    write(tmp_path / "base.py", """
img_scale = (640, 480)
norm = dict(mean=[1.0, 2.0, 3.0], std=[1, 1, 1])
data_root = 'data/x/'
""")
    cfg = write(tmp_path / "cfg.py", '''"""A docstring is fine."""
_base_ = './base.py'
half = img_scale[0] // 2
model = dict(type='RetinaNet', bbox_head=dict(type='RetinaHead', num_classes=2 + 3 * 2 - 1))
optimizer = {**dict(type='SGD'), 'lr': 0.02 / 8, 'momentum': -(-0.9), 'weight_decay': 1e-4}
lr_config = dict(policy='step', step=[8] + [11], warmup_iters=2 ** 9 - 12, warmup_ratio=10 % 3 / 1000)
data = dict(train=dict(type='CocoDataset', ann_file=data_root + 'a.json', img_prefix=f'{data_root}img/',
                       pipeline=[dict(type='Resize', img_scale=img_scale, keep_ratio=True),
                                 dict(type='Normalize', **norm, to_rgb=True),
                                 dict(type='Pad', size=(half, half))]))
seed = 3
seed += 1
''')
    result = import_mmdet_config(cfg)
    c = result.config
    assert c["model"]["bbox_head"]["num_classes"] == 7
    assert c["optimizer"] == {"type": "SGD", "lr": 0.0025, "momentum": 0.9, "weight_decay": 1e-4}
    assert c["lr_config"] == {"policy": "step", "step": [8, 11], "warmup_iters": 500, "warmup_ratio": 0.001}
    train = c["data"]["train"]
    assert train["data_root"] == "data/x/" and train["ann_file"] == "a.json" and train["img_prefix"] == "img/"
    assert train["pipeline"][0]["img_scale"] == [640, 480]
    assert train["pipeline"][1] == {"type": "Normalize", "mean": [1.0, 2.0, 3.0], "std": [1, 1, 1], "to_rgb": True}
    assert train["pipeline"][2]["size"] == [320, 320]
    assert c["seed"] == 4
    assert {"half", "img_scale", "norm", "data_root"}.isdisjoint(c)  # intermediate variables are dropped


def test_delete_and_base_placeholders(tmp_path: Path) -> None:
    write(tmp_path / "base.py", """
train_pipeline = [dict(type='LoadImageFromFile')]
model = dict(type='RetinaNet', backbone=dict(type='ResNet', depth=50, frozen_stages=1), neck=dict(type='FPN'))
data = dict(samples_per_gpu=2, train=dict(type='CocoDataset', pipeline=train_pipeline))
""")
    cfg = write(tmp_path / "cfg.py", """
_base_ = 'base.py'
model = dict(backbone=dict(_delete_=True, type='ResNet', depth=18))
data = dict(samples_per_gpu=4, train=dict(pipeline={{_base_.train_pipeline}} + [dict(type='RandomFlip')]))
""")
    c = import_mmdet_config(cfg).config
    assert c["model"]["backbone"] == {"type": "ResNet", "depth": 18}  # replaced, not merged
    assert c["model"]["neck"] == {"type": "FPN"}
    assert c["data"]["samples_per_gpu"] == 4
    assert c["data"]["train"]["pipeline"] == [{"type": "LoadImageFromFile"}, {"type": "RandomFlip"}]  # lists replace


def test_duplicate_key_among_bases_and_undefined_name(tmp_path: Path) -> None:
    write(tmp_path / "a.py", "seed = 1\n")
    write(tmp_path / "b.py", "seed = 2\n")
    with pytest.raises(ConfigError, match="key 'seed' is defined by two bases"):
        import_mmdet_config(write(tmp_path / "c.py", "_base_ = ['a.py', 'b.py']\n"))
    with pytest.raises(ConfigError, match=r"d\.py:2: name 'img_norm_cfg' is not defined"):
        import_mmdet_config(write(tmp_path / "d.py", "x = 1\nmodel = dict(type='RetinaNet', **img_norm_cfg)\n"))


MALICIOUS = {
    "import": ("import os\nos.system('touch {mark}')\n", 1, "an import"),
    "dunder import": ("x = 1\nmodel = __import__('os').system('touch {mark}')\n", 2, "a call to '...system'"),
    "dunder import statement": ("__import__('os').system('touch {mark}')\n", 1, "an expression statement"),
    "open": ("model = dict(type=open('{mark}', 'w'))\n", 1, "a call to 'open'"),
    "exec": ("exec(\"open('{mark}', 'w')\")\n", 1, "a call to 'exec'"),
    "attribute": ("model = dict(type=''.join)\n", 1, "attribute access '.join'"),
    "f-string call": ("load_from = f\"{{open('{mark}', 'w')}}\"\n", 1, "a call to 'open'"),
    "lambda": ("f = lambda: open('{mark}', 'w')\nseed = 1\n", 1, "a lambda"),
    "comprehension": ("seed = [open('{mark}', 'w') for _ in range(1)]\n", 1, "a list comprehension"),
    "class": ("class A:\n    x = open('{mark}', 'w')\n", 1, "a class definition"),
    "open by name": ("dict = open\nmodel = dict('{mark}', 'w')\n", 1, "name 'open' is not defined"),
    "shadowed dict": ("dict = 1\nmodel = dict(type='{mark}')\n", 2, "a call to 'dict', which this config rebinds"),
    "big power": ("seed = 10 ** 10 ** 10\n", 1, "exponent"),
    "big string": ("seed = 'a' * 10 ** 9\n", 1, "longer than"),
    "list bomb": ("a = [[0] * 9999] * 9999\n", 1, "more than 100000 values"),
    "copy bomb": ("a = [0] * 99999\nb = [a, a]\n", 2, "more than 100000 values"),
    "name copies": ("a = [0] * 90000\n" + "b = a\n" * 30, 24, "copy more than 2000000 values"),
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_content_is_refused_without_running(case: str, tmp_path: Path) -> None:
    source, line, construct = MALICIOUS[case]
    mark = tmp_path / "PWNED"
    cfg = write(tmp_path / "evil.py", source.format(mark=mark))
    with pytest.raises(ConfigError) as info:
        import_mmdet_config(cfg)
    assert f"evil.py:{line}:" in str(info.value)
    assert construct in str(info.value)
    assert not mark.exists()  # nothing ran


def test_malicious_base_is_refused_too(tmp_path: Path) -> None:
    mark = tmp_path / "PWNED"
    write(tmp_path / "_base_/evil.py", f"seed = __import__('os').system('touch {mark}')\n")
    with pytest.raises(ConfigError, match=r"evil\.py:1: a call to '...system'"):
        import_mmdet_config(write(tmp_path / "cfg.py", "_base_ = ['_base_/evil.py']\n"))
    assert not mark.exists()


def test_every_unsupported_component_is_listed(tmp_path: Path) -> None:
    cfg = write(tmp_path / "cfg.py", f"""
_base_ = '{CONFIGS}/retinanet/retinanet_r50_fpn_1x_coco.py'
model = dict(
    backbone=dict(_delete_=True, type='mmcls.MobileNetV3', arch='small', out_indices=(3, 8, 11)),
    neck=dict(in_channels=[24, 48, 96], upsample_cfgg=dict(mode='nearest')),
    bbox_head=dict(type='RetinaHaed', loss_bbox=dict(type='GIoULos', loss_weight=2.0)))
optimzer = dict(lr=0.1)
evaluation = dict(metrc='bbox')
data = dict(train=dict(type='CocoDatset'))
""")
    problems = import_mmdet_config(cfg, validate=validate_config).problems
    assert len(problems) == 7, problems
    text = "\n".join(problems)
    for expected in (
        "optimzer: unknown top-level key — did you mean 'optimizer'?",
        "evaluation.metrc: unknown key — did you mean 'metric'?",
        "model.backbone.type: det has no backbone 'mmcls.MobileNetV3' (det's backbones: ",
        "model.neck.upsample_cfgg: FPN has no key 'upsample_cfgg' — did you mean 'upsample_cfg'?",
        "model.bbox_head.type: det has no head 'RetinaHaed' — did you mean 'RetinaHead'?",
        "model.bbox_head.loss_bbox.type: det has no loss 'GIoULos' — did you mean 'GIoULoss'?",
        "data.train.type: det has no dataset 'CocoDatset' — did you mean 'CocoDataset'?",
    ):
        assert expected in text


def test_nearest_component_by_name_ending(tmp_path: Path) -> None:
    cfg = write(tmp_path / "double.py", f"""
_base_ = '{CONFIGS}/faster_rcnn/faster_rcnn_r50_fpn_1x_coco.py'
model = dict(roi_head=dict(type='DoubleHeadRoIHead', reg_roi_scale_factor=1.3,
                           bbox_head=dict(_delete_=True, type='DoubleConvFCBBoxHead', num_convs=4)))
""")
    problems = import_mmdet_config(cfg).problems
    assert problems[0].startswith("model.roi_head.type: det has no head 'DoubleHeadRoIHead' — nearest det head: "
                                  "'StandardRoIHead' (det's heads: ")
    assert problems[1] == "model.roi_head.bbox_head.type: det has no head 'DoubleConvFCBBoxHead' — did you mean 'ConvFCBBoxHead'?"
    assert len(problems) == 2  # the keys of an unknown component are not checked


def test_legacy_train_test_cfg_and_pretrained_move_into_the_model(tmp_path: Path) -> None:
    cfg = write(tmp_path / "cfg.py", """
model = dict(type='RetinaNet', pretrained='torchvision://resnet50', backbone=dict(type='ResNet', depth=50))
train_cfg = dict(allowed_border=-1)
test_cfg = dict(score_thr=0.1)
""")
    result = import_mmdet_config(cfg)
    assert result.config["model"] == {
        "type": "RetinaNet",
        "backbone": {"type": "ResNet", "depth": 50, "init_cfg": {"type": "Pretrained", "checkpoint": "torchvision://resnet50"}},
        "train_cfg": {"allowed_border": -1},
        "test_cfg": {"score_thr": 0.1},
    }
    assert "train_cfg" not in result.config
    both = write(tmp_path / "both.py", "model = dict(type='RetinaNet', pretrained='x.pth', "
                                       "backbone=dict(type='ResNet', init_cfg=dict(type='Pretrained', checkpoint='y')))\n")
    assert any(p.startswith("model.pretrained: the backbone sets its own init_cfg") for p in import_mmdet_config(both).problems)


def test_mmdet_root_resolves_bases_of_a_config_outside_the_tree(tmp_path: Path) -> None:
    root = tmp_path / "mmdetection"
    shutil.copytree(CONFIGS, root / "configs")
    cfg = write(tmp_path / "mine" / "retina.py", """
_base_ = ['../_base_/models/retinanet_r50_fpn.py', '../_base_/datasets/coco_detection.py',
          '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py']
model = dict(bbox_head=dict(num_classes=3))
""")
    with pytest.raises(ConfigError, match="--mmdet-root"):
        import_mmdet_config(cfg)
    result = import_mmdet_config(cfg, mmdet_root=root)
    assert result.config["model"]["bbox_head"]["num_classes"] == 3
    assert result.config["runner"] == {"type": "EpochBasedRunner", "max_epochs": 12}


def test_difference_and_base_choice() -> None:
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 1}
    assert difference(base, {"a": {"x": 1, "y": [3]}, "b": 1, "c": 2}) == {"a": {"y": [3]}, "c": 2}
    assert difference(base, {"a": {"x": 1}, "b": 1}) == {"a": {"_delete_": True, "x": 1}}
    assert difference(base, {"a": {"x": 1.0, "y": [1, 2]}, "b": 1}) == {"a": {"x": 1.0}}  # 1.0 is not 1 here
    with pytest.raises(ValueError):
        difference(base, {"a": {"x": 1}})  # a preset cannot drop the base's top-level 'b'
    fragments = {"_base_/models/m.yaml": {"model": {"type": "M", "depth": 50, "more": [1, 2, 3]}},
                 "_base_/models/n.yaml": {"model": {"type": "N"}, "seed": 1}}
    bases, body = choose_bases({"model": {"type": "M", "depth": 18, "more": [1, 2, 3]}}, fragments)
    assert bases == ["_base_/models/m.yaml"] and body == {"model": {"depth": 18}}
    bases, body = choose_bases({"model": {"type": "Z"}}, fragments)  # no fragment makes it shorter
    assert bases == [] and body == {"model": {"type": "Z"}}


def test_cli_import_stdout_file_stdin_and_force(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = CONFIGS / "retinanet/retinanet_r50_fpn_1x_coco.py"
    result = invoke("config", "import", str(config))
    assert result.exit_code == 0, result.output
    assert "_base_/models/retinanet_r50_fpn.yaml" in result.stdout
    out = tmp_path / "retina.yaml"
    result = invoke("config", "import", str(config), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert load_config(out)["optimizer"]["lr"] == 0.01
    # stdin: _base_ paths are relative to the current folder
    monkeypatch.chdir(config.parent)
    result = invoke("config", "import", "-", input=config.read_text())
    assert result.exit_code == 0, result.output
    assert "_base_/models/retinanet_r50_fpn.yaml" in result.stdout
    bad = write(tmp_path / "bad.py", "model = dict(type='RetinaNett')\nseeed = 1\n")
    out = tmp_path / "bad.yaml"
    result = invoke("config", "import", str(bad), "-o", str(out))
    assert result.exit_code == 1
    assert "2 part(s) of the config det cannot run as written (listed above)" in result.output
    assert "WARNING det cannot run model.type: det has no detector 'RetinaNett' — did you mean 'RetinaNet'?" in result.output
    assert "WARNING det cannot run seeed: unknown top-level key — did you mean 'seed'?" in result.output
    assert not out.exists()
    result = invoke("config", "import", str(bad), "-o", str(out), "--force")
    assert result.exit_code == 0
    assert "# det cannot run: model.type: det has no detector 'RetinaNett'" in out.read_text()
    evil = write(tmp_path / "evil.py", "seed = __import__('os').getpid()\n")
    result = invoke("config", "import", str(evil))
    assert result.exit_code == 1 and "evil.py:1: a call to '...getpid'" in result.output


PY_PIECES = [
    "\n", " ", "dict(", ")", "(", "[", "]", "{", "}", ",", "=", ":", "**", "*", "+", "-", "/", "//", "%", "'a'", '"b"',
    "1", "0", "2.5", "1e308", "9" * 40, "True", "None", "x", "y", "model", "data", "_base_", "_delete_", "type",
    "f'{", "}'", "[0]", "[-1]", "['k']", "{{_base_.x}}", ".attr", "open", "__import__", "lambda", "import", "for",
    "if", "#", "\\", "\x00", "é", "b''", "1j", "...", ";", "x = ", "y = ", "model = dict(", "x = [x]\n",
]


@FUZZ_IMPORT
@given(text=st.lists(st.sampled_from(PY_PIECES) | st.text(max_size=6), max_size=60).map("".join))
def test_random_python_only_ever_raises_config_error(text: str) -> None:
    try:
        import_mmdet_config("fuzz.py", text=text, fragments={})
    except ConfigError:
        pass


def test_deep_nesting_and_big_powers_are_refused(tmp_path: Path) -> None:
    deep = write(tmp_path / "deep.py", "x = 0\n" + "x = [x]\n" * 150)
    with pytest.raises(ConfigError, match="nested deeper than 100 levels"):
        import_mmdet_config(deep)
    with pytest.raises(ConfigError, match="exponent 1000 is too large"):
        import_mmdet_config(write(tmp_path / "pow.py", "x = (10 ** 1000) ** 1000\n"))


expressions = st.recursive(
    st.sampled_from(["0", "1", "-2", "2.5", "1e308", "'s'", "'data/'", "True", "None", "x", "y", "(1, 2)", "[]"]),
    lambda e: st.one_of(
        st.tuples(e).map(lambda t: f"dict(k={t[0]})"),
        st.tuples(e, e).map(lambda t: f"[{t[0]}, {t[1]}]"),
        st.tuples(e, e, st.sampled_from(["+", "-", "*", "/", "//", "%", "**"])).map(lambda t: f"({t[0]} {t[2]} {t[1]})"),
        st.tuples(e).map(lambda t: f"-{t[0]}"),
        st.tuples(e, st.sampled_from(["0", "-1", "'k'", "5"])).map(lambda t: f"{t[0]}[{t[1]}]"),
        st.tuples(e).map(lambda t: "{**" + t[0] + ", 'a': 1}"),
        st.tuples(e).map(lambda t: "dict(**" + t[0] + ")"),
        st.tuples(e).map(lambda t: "f'{" + t[0] + "}/x'"),
    ),
    max_leaves=12,
)


@FUZZ_IMPORT
@given(lines=st.lists(st.tuples(st.sampled_from(["x", "y", "model", "seed"]), expressions), min_size=1, max_size=6))
def test_random_expressions_only_ever_raise_config_error(lines: list[tuple[str, str]]) -> None:
    text = "x = 1\ny = [1, 2]\n" + "".join(f"{name} = {expr}\n" for name, expr in lines)
    try:
        import_mmdet_config("fuzz.py", text=text, fragments={})
    except ConfigError:
        pass
