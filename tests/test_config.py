"""Config loading: _base_ inheritance, _delete_, overrides, DET_DATASETS, errors with suggestions."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from detcli.config import apply_overrides, dump_config, load_config, merge, parse_override_value
from detcli.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    write(tmp_path / "_base_/models/m.yaml", """
model:
  type: RetinaNet
  backbone: {type: ResNet, depth: 50, norm_eval: true}
  bbox_head: {type: RetinaHead, num_classes: 80}
""")
    write(tmp_path / "_base_/schedule.yaml", """
optimizer: {type: SGD, lr: 0.02, momentum: 0.9}
runner: {type: EpochBasedRunner, max_epochs: 12}
""")
    write(tmp_path / "_base_/data.yaml", """
data:
  samples_per_gpu: 2
  train:
    type: CocoDataset
    ann_file: data/coco/ann.json
    img_prefix: data/coco/train/
    data_root: data/coco/
    pipeline:
      - {type: LoadImageFromFile}
      - {type: Resize, img_scale: [1333, 800], keep_ratio: true}
      - {type: RandomFlip, flip_ratio: 0.5}
""")
    write(tmp_path / "mid.yaml", """
_base_: [_base_/models/m.yaml, _base_/schedule.yaml, _base_/data.yaml]
optimizer: {lr: 0.01}
""")
    write(tmp_path / "child.yaml", """
_base_: mid.yaml
model:
  backbone: {_delete_: true, type: MyNet, width: 4}
  bbox_head: {num_classes: 3}
""")
    return tmp_path


def test_base_chain_merges_in_order_and_child_wins(tree: Path) -> None:
    cfg = load_config(tree / "child.yaml")
    assert cfg["optimizer"] == {"type": "SGD", "lr": 0.01, "momentum": 0.9}
    assert cfg["model"]["bbox_head"] == {"type": "RetinaHead", "num_classes": 3}
    assert cfg["runner"]["max_epochs"] == 12


def test_delete_replaces_the_whole_mapping(tree: Path) -> None:
    cfg = load_config(tree / "child.yaml")
    assert cfg["model"]["backbone"] == {"type": "MyNet", "width": 4}  # no stale depth/norm_eval
    assert "_delete_" not in dump_config(cfg)


def test_without_delete_base_keys_are_kept() -> None:
    assert merge({"a": {"x": 1, "y": 2}}, {"a": {"y": 3}}) == {"a": {"x": 1, "y": 3}}


def test_later_base_overrides_earlier(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "seed: 1\nwork_dir: a\n")
    write(tmp_path / "b.yaml", "seed: 2\n")
    write(tmp_path / "c.yaml", "_base_: [a.yaml, b.yaml]\n")
    assert load_config(tmp_path / "c.yaml") == {"seed": 2, "work_dir": "a"}


def test_overrides_with_list_index_and_yaml_types(tree: Path) -> None:
    cfg = load_config(tree / "child.yaml", [
        "data.train.pipeline.1.img_scale=[640,640]",
        "optimizer.lr=0.5",
        "data.train.pipeline.2.flip_ratio=0.0",
        "model.bbox_head.num_classes=7",
        "load_from=null",
    ])
    assert cfg["data"]["train"]["pipeline"][1]["img_scale"] == [640, 640]
    assert cfg["optimizer"]["lr"] == 0.5
    assert cfg["data"]["train"]["pipeline"][2]["flip_ratio"] == 0.0
    assert cfg["model"]["bbox_head"]["num_classes"] == 7
    assert cfg["load_from"] is None


def test_override_new_key_allowed_in_typed_node_and_schema(tree: Path) -> None:
    cfg = load_config(tree / "child.yaml", ["model.bbox_head.stacked_convs=2", "evaluation.interval=2"])
    assert cfg["model"]["bbox_head"]["stacked_convs"] == 2
    assert cfg["evaluation"] == {"interval": 2}


def test_mmdet_tuple_values() -> None:
    assert parse_override_value("[(train,1),(val,1)]") == [["train", 1], ["val", 1]]
    assert parse_override_value("true") is True
    assert parse_override_value("1e-3") == 1e-3 or parse_override_value("1e-3") == "1e-3"


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ("optimzer.lr=0.1", "did you mean 'optimizer'"),
        ("data.samples_per_gpus=4", "did you mean 'samples_per_gpu'"),
        ("data.train.pipeline.9.img_scale=[1,1]", "index 9 is out of range"),
        ("data.train.pipeline.x=1", "is a list; use an index"),
        ("optimizer.lr", "not of the form KEY=VALUE"),
        ("model.bbox_head.num_classes.x=1", "has no key 'x'"),
    ],
)
def test_bad_override_paths(tree: Path, option: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(tree / "child.yaml", [option])


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.yaml", "model:\n  type: RetinaNet\n  backbone: [1, 2\nseed: 1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: YAML syntax error at line \d+"):
        load_config(bad)


def test_unknown_top_level_key_suggests(tmp_path: Path) -> None:
    p = write(tmp_path / "x.yaml", "optimiser: {type: SGD}\n")
    with pytest.raises(ConfigError, match=r"x\.yaml: unknown top-level key 'optimiser' — did you mean 'optimizer'"):
        load_config(p)


def test_unknown_section_key(tmp_path: Path) -> None:
    p = write(tmp_path / "x.yaml", "lr_config: {policy: step, warmup_iter: 5}\n")
    with pytest.raises(ConfigError, match="lr_config.warmup_iter' — did you mean 'warmup_iters'"):
        load_config(p)


def test_missing_preset_and_missing_base(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such preset file"):
        load_config(tmp_path / "nope.yaml")
    p = write(tmp_path / "x.yaml", "_base_: gone.yaml\n")
    with pytest.raises(ConfigError, match="_base_ file 'gone.yaml' not found"):
        load_config(p)


def test_base_cycle_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "_base_: b.yaml\n")
    write(tmp_path / "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")


def test_det_datasets_reroots_relative_paths(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DET_DATASETS", "/datasets/coco")
    cfg = load_config(tree / "child.yaml")
    train = cfg["data"]["train"]
    assert train["data_root"] == "/datasets/coco"
    assert train["ann_file"] == "/datasets/coco/ann.json"
    assert train["img_prefix"] == "/datasets/coco/train/"


def test_anchors_share_values(tmp_path: Path) -> None:
    p = write(tmp_path / "x.yaml", "seed: &s 3\nwork_dir: w\nruntime_seed_copy: null\n".replace("runtime_seed_copy: null\n", "") + "evaluation: {interval: *s}\n")
    assert load_config(p)["evaluation"]["interval"] == 3


def test_dump_round_trips(tree: Path) -> None:
    cfg = load_config(tree / "child.yaml", ["data.train.pipeline.1.img_scale=[640,640]"])
    assert yaml.safe_load(dump_config(cfg)) == cfg


def test_apply_overrides_does_not_mutate_input() -> None:
    cfg = {"optimizer": {"lr": 1}}
    out = apply_overrides(cfg, ["optimizer.lr=2"])
    assert cfg["optimizer"]["lr"] == 1 and out["optimizer"]["lr"] == 2


def test_x_keys_hold_anchors_and_are_dropped(tmp_path: Path) -> None:
    p = write(tmp_path / "x.yaml", "x-norm: &norm {mean: [1, 2, 3], std: [4, 5, 6]}\n"
              "data:\n  train: {type: D, pipeline: [{type: Normalize, <<: *norm, to_rgb: true}]}\n")
    cfg = load_config(p)
    assert "x-norm" not in cfg
    assert cfg["data"]["train"]["pipeline"][0] == {"type": "Normalize", "mean": [1, 2, 3], "std": [4, 5, 6], "to_rgb": True}


def test_det_datasets_reroots_lists_and_wrapped_datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write(tmp_path / "voc.yaml", "data:\n  train:\n    type: RepeatDataset\n    times: 2\n    dataset:\n"
              "      type: VOCDataset\n      data_root: data/VOCdevkit/\n"
              "      ann_file: [data/VOCdevkit/VOC2007/a.txt, data/VOCdevkit/VOC2012/a.txt]\n"
              "      img_prefix: [data/VOCdevkit/VOC2007/, data/VOCdevkit/VOC2012/]\n")
    monkeypatch.setenv("DET_DATASETS", "/datasets/voc")
    inner = load_config(p)["data"]["train"]["dataset"]
    assert inner["data_root"] == "/datasets/voc"
    assert inner["ann_file"] == ["/datasets/voc/VOC2007/a.txt", "/datasets/voc/VOC2012/a.txt"]
    assert inner["img_prefix"] == ["/datasets/voc/VOC2007/", "/datasets/voc/VOC2012/"]
