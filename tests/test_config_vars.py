"""Preset ``vars:`` with ``${name}`` references, mmcv-style ``--cfg-options`` values, ``det test --out``."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from detcli.cli import app, normalize_argv
from detcli.config import (
    apply_overrides,
    load_config,
    parse_override_value,
    substitute_vars,
)
from detcli.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture()
def family(tmp_path: Path) -> Path:
    write(tmp_path / "_base_/data.yaml", """
vars:
  img_scale: [640, 480]
  root: data/coco/
  flip: 0.5
data:
  samples_per_gpu: 2
  train:
    type: CocoDataset
    data_root: ${root}
    ann_file: ${root}annotations/train.json
    img_prefix: train/
    pipeline:
      - {type: Resize, img_scale: '${img_scale}', keep_ratio: true}
      - {type: RandomFlip, flip_ratio: '${flip}'}
  test:
    type: CocoDataset
    ann_file: ann.json
    pipeline:
      - {type: MultiScaleFlipAug, img_scale: '${img_scale}', flip: false, transforms: []}
""")
    write(tmp_path / "child.yaml", """
_base_: _base_/data.yaml
vars:
  img_scale: [320, 320]
""")
    return tmp_path


def test_whole_value_keeps_its_type_and_text_is_substituted(family: Path) -> None:
    cfg = load_config(family / "_base_/data.yaml")
    train = cfg["data"]["train"]
    assert train["pipeline"][0]["img_scale"] == [640, 480]  # a list stays a list
    assert train["pipeline"][1]["flip_ratio"] == 0.5  # a float stays a float
    assert train["data_root"] == "data/coco/"
    assert train["ann_file"] == "data/coco/annotations/train.json"  # inside text: as text
    assert "vars" not in cfg


def test_child_vars_override_the_base_before_substitution(family: Path) -> None:
    cfg = load_config(family / "child.yaml")
    assert cfg["data"]["train"]["pipeline"][0]["img_scale"] == [320, 320]
    assert cfg["data"]["test"]["pipeline"][0]["img_scale"] == [320, 320]
    assert cfg["data"]["train"]["pipeline"][1]["flip_ratio"] == 0.5  # not overridden: the base's value


def test_cfg_options_override_vars(family: Path) -> None:
    cfg = load_config(family / "child.yaml", ["vars.img_scale=[256,192]", "vars.flip=0.0"])
    assert cfg["data"]["train"]["pipeline"][0]["img_scale"] == [256, 192]
    assert cfg["data"]["test"]["pipeline"][0]["img_scale"] == [256, 192]
    assert cfg["data"]["train"]["pipeline"][1]["flip_ratio"] == 0.0
    # a new variable may be added, and a preset without vars takes some too
    assert load_config(family / "child.yaml", ["vars.unused=1"])["data"]["samples_per_gpu"] == 2


def test_undefined_variable_names_file_and_key(family: Path) -> None:
    write(family / "typo.yaml", """
_base_: _base_/data.yaml
data:
  test: {ann_file: '${rot}ann.json'}
""")
    with pytest.raises(ConfigError) as info:
        load_config(family / "typo.yaml")
    message = str(info.value)
    assert "typo.yaml: data.test.ann_file: undefined variable '${rot}'" in message
    assert "did you mean 'root'?" in message


def test_undefined_variable_in_a_base_names_the_base(tmp_path: Path) -> None:
    write(tmp_path / "_base_/b.yaml", "seed: ${missing}\n")
    write(tmp_path / "c.yaml", "_base_: _base_/b.yaml\n")
    with pytest.raises(ConfigError, match=r"_base_/b\.yaml: seed: undefined variable '\$\{missing\}'"):
        load_config(tmp_path / "c.yaml")


def test_cycle_is_an_error_naming_the_chain(tmp_path: Path) -> None:
    write(tmp_path / "cycle.yaml", """
vars: {a: '${b}', b: 'x${c}', c: '${a}'}
seed: 1
""")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "cycle.yaml")
    assert "cycle.yaml: vars.c: variables refer to each other in a cycle: vars.a -> vars.b -> vars.c -> vars.a" in str(info.value)


def test_vars_refer_to_vars_escape_and_errors() -> None:
    cfg = {"vars": {"w": 640, "scale": ["${w}", "${w}"], "name": "r${w}"}, "load_from": "$${w}/${name}.pth",
           "data": {"train": {"img_scale": "${scale}"}}}
    out = substitute_vars(cfg)
    assert out == {"load_from": "${w}/r640.pth", "data": {"train": {"img_scale": [640, 640]}}}
    with pytest.raises(ConfigError, match="cannot be inserted into text"):
        substitute_vars({"vars": {"s": [1, 2]}, "load_from": "x${s}"})
    with pytest.raises(ConfigError, match="is not a variable reference"):
        substitute_vars({"vars": {}, "load_from": "${a b}"})
    with pytest.raises(ConfigError, match="'vars' must be a mapping"):
        substitute_vars({"vars": [1]})


def test_shipped_presets_resolve_without_vars() -> None:
    from detcli.resources import list_presets

    for preset in list_presets():
        assert "vars" not in load_config(preset)


# --- --cfg-options --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("None", None),
        ("null", None),
        ("~", None),
        ("[None, 1]", [None, 1]),
        ("(1,2)", [1, 2]),
        ("(1,)", [1]),
        ("[(1333, 640), (1333, 800)]", [[1333, 640], [1333, 800]]),
        ("dict(type=nms,iou_threshold=0.5)", {"type": "nms", "iou_threshold": 0.5}),
        ("dict(type='nms', iou_threshold=0.5, class_agnostic=True)", {"type": "nms", "iou_threshold": 0.5, "class_agnostic": True}),
        ("dict(a=dict(b=[1,2]), c=(3,4), d=None)", {"a": {"b": [1, 2]}, "c": [3, 4], "d": None}),
        ("[dict(type=Resize, img_scale=(640,640)), dict(type=RandomFlip)]",
         [{"type": "Resize", "img_scale": [640, 640]}, {"type": "RandomFlip"}]),
        ("['a,b', c]", ["a,b", "c"]),
        ("{type: nms, iou_threshold: 0.6}", {"type": "nms", "iou_threshold": 0.6}),
        ("1e-3", 0.001),
        ("abc", "abc"),
        ("", ""),
    ],
)
def test_override_values_parse_like_mmcv(text: str, expected: Any) -> None:
    assert parse_override_value(text) == expected


@pytest.mark.parametrize("text", ["dict(a=1", "[1, 2", "dict(1)", "(1))"])
def test_malformed_override_values_are_errors(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_override_value(text)


def test_overrides_none_added_test_cfg_key_and_dict_syntax() -> None:
    cfg = load_config("retinanet_r50_fpn_1x_coco", [
        "load_from=None",
        "model.test_cfg.deploy_nms_pre=1000",
        "model.test_cfg.nms=dict(type=nms,iou_threshold=0.6)",
    ])
    assert cfg["load_from"] is None
    assert cfg["model"]["test_cfg"]["deploy_nms_pre"] == 1000
    assert cfg["model"]["test_cfg"]["nms"] == {"type": "nms", "iou_threshold": 0.6}
    # two-stage: keys may be added below train_cfg/test_cfg too (the heads check them when built)
    cfg = load_config("faster_rcnn_r50_fpn_1x_coco", ["model.test_cfg.rcnn.nms.class_agnostic=True"])
    assert cfg["model"]["test_cfg"]["rcnn"]["nms"]["class_agnostic"] is True


def test_new_keys_stay_refused_outside_free_mappings() -> None:
    cfg = {"model": {"type": "RetinaNet", "backbone": {"type": "ResNet"}, "test_cfg": {}}, "data": {"train": {}}}
    with pytest.raises(ConfigError, match="no key 'samples_per_gpux'"):
        apply_overrides(cfg, ["data.samples_per_gpux=2"])
    with pytest.raises(ConfigError, match="no key 'bogus'"):
        apply_overrides(cfg, ["bogus=1"])
    assert apply_overrides(cfg, ["model.test_cfg.nms.iou_threshold=0.4"])["model"]["test_cfg"]["nms"] == {"iou_threshold": 0.4}


def test_built_model_rejects_an_unknown_added_test_cfg_key() -> None:
    from detcli.models.detector import DenseTestConfig

    cfg = load_config("retinanet_r50_fpn_1x_coco", ["model.test_cfg.deploy_nms_pree=1000"])
    with pytest.raises(ConfigError, match="did you mean 'deploy_nms_pre'"):
        DenseTestConfig.parse(cfg["model"]["test_cfg"])


# --- det test --out -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["res.pkl", "results.pickle", "out", "res.json.gz"])
def test_test_out_other_than_json_is_refused_before_the_model_runs(name: str, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import detcli.engine

    def must_not_run(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the model ran")

    monkeypatch.setattr(detcli.engine, "test", must_not_run)
    out = tmp_path / name
    result = CliRunner().invoke(app, normalize_argv(["test", "quickstart", str(tmp_path / "missing.pth"), "--out", str(out)]))
    assert result.exit_code == 1
    assert "COCO results JSON file only" in result.output and "pickle" in result.output
    assert not out.exists()


def test_variable_bombs_hit_the_expansion_limit(tmp_path: Path) -> None:
    names = [f"v{i}" for i in range(30)]
    lines = [f"  {a}: ['${{{b}}}', '${{{b}}}']" for a, b in itertools.pairwise(names)] + [f"  {names[-1]}: [1]"]
    write(tmp_path / "bomb.yaml", "vars:\n" + "\n".join(lines) + "\nseed: 1\n")
    with pytest.raises(ConfigError, match="more than 100000 values once its variables are substituted"):
        load_config(tmp_path / "bomb.yaml")
    text = [f"  {a}: '${{{b}}}${{{b}}}'" for a, b in itertools.pairwise(names)] + [f"  {names[-1]}: xxxxxxxxxxxxxxxx"]
    write(tmp_path / "text.yaml", "vars:\n" + "\n".join(text) + "\nseed: 1\n")
    with pytest.raises(ConfigError, match="once its variables are substituted"):
        load_config(tmp_path / "text.yaml")


def test_fcos_caffe_presets_set_the_normalisation_through_vars() -> None:
    detectron = {"type": "Normalize", "mean": [102.9801, 115.9465, 122.7717], "std": [1.0, 1.0, 1.0], "to_rgb": False}
    detectron2 = {**detectron, "mean": [103.53, 116.28, 123.675]}
    torchvision = {"type": "Normalize", "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375], "to_rgb": True}
    for preset, norm in (("fcos_r50_caffe_fpn_gn-head_1x_coco", detectron),
                         ("fcos_center-normbbox-centeronreg-giou_r50_caffe_fpn_gn-head_1x_coco", detectron2),
                         ("retinanet_r50_fpn_1x_coco", torchvision)):
        data = load_config(preset)["data"]
        assert data["train"]["pipeline"][4] == norm
        assert data["train"]["pipeline"][2]["img_scale"] == [1333, 800]
        for split in ("val", "test"):
            assert data[split]["pipeline"][1]["transforms"][2] == norm
            assert data[split]["pipeline"][1]["img_scale"] == [1333, 800]
    scaled = load_config("retinanet_r50_fpn_1x_coco", ["vars.img_scale=(640,480)"])["data"]
    assert scaled["train"]["pipeline"][2]["img_scale"] == [640, 480]
    assert scaled["test"]["pipeline"][1]["img_scale"] == [640, 480]


_REF_PIECES = ["${a}", "${b}", "${c}", "$${", "${", "}", "$", "${a b}", "${}", "x", "1", "${vars}"]
_ref_strings = st.lists(st.sampled_from(_REF_PIECES), max_size=4).map("".join)
_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False) | _ref_strings,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["a", "b", "k"]), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(variables=st.dictionaries(st.sampled_from(["a", "b", "c", "1x"]), _values, max_size=3) | _values,
       body=st.dictionaries(st.sampled_from(["seed", "load_from", "data"]), _values, max_size=3))
def test_random_vars_only_ever_raise_config_error(variables: Any, body: dict[str, Any]) -> None:
    try:
        out = substitute_vars({"vars": variables, **body})
    except ConfigError:
        return
    assert "vars" not in out
