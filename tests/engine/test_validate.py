"""validate_config: every section checked before any work, errors name the file and key path."""

from __future__ import annotations

from typing import Any

import pytest

from detcli.engine import validate_config
from detcli.errors import ConfigError
from detcli.resources import list_presets

from engine_helpers import tiny_cfg


def test_valid_config_passes() -> None:
    validate_config(tiny_cfg(), "tiny.yaml")


def mutate(path: str, value: Any) -> dict[str, Any]:
    cfg = tiny_cfg()
    node: Any = cfg
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    return cfg


@pytest.mark.parametrize(
    "path,value,match",
    [
        ("model.type", "TinyTestDetectr", r"model.type: unknown detector 'TinyTestDetectr' — did you mean 'TinyTestDetector'"),
        ("model.num_clases", 2, r"model.num_clases: unknown key .*did you mean 'num_classes'"),
        ("data.train.num_imgs", 3, r"data.train.num_imgs: unknown key .*did you mean 'num_images'"),
        ("data.val.type", "TinyDataset", r"data.val.type: unknown dataset 'TinyDataset'"),
        ("data.samples_per_gpu", 0, r"data.samples_per_gpu: expected a positive integer"),
        ("optimizer.type", "SDG", r"optimizer.type: unknown optimizer 'SDG' — did you mean 'SGD'"),
        ("optimizer.lrr", 0.1, r"optimizer.lrr: unknown key .*did you mean 'lr'"),
        ("optimizer_config.grad_clip", {"max_nrm": 35}, r"optimizer_config.grad_clip.max_nrm: unknown key .*did you mean 'max_norm'"),
        ("lr_config.policy", "cosine_annealing", r"lr_config.policy: unknown policy"),
        ("lr_config.warmup", "lin", r"lr_config.warmup: unknown warmup 'lin'"),
        ("runner.type", "EpochBasedRuner", r"runner.type: unknown runner 'EpochBasedRuner' — did you mean 'EpochBasedRunner'"),
        ("runner.max_epochs", 0, r"runner.max_epochs: .*positive integer"),
        ("runner", {"type": "IterBasedRunner", "max_epochs": 3}, r"runner.max_epochs: a IterBasedRunner counts in iters"),
        ("checkpoint_config.intreval", 1, r"checkpoint_config.intreval.*did you mean 'interval'"),
        ("log_config.interval", 0, r"log_config.interval: expected a positive integer"),
        ("evaluation.metric", "segmm", r"evaluation.metric: metric 'segmm' is not supported .*did you mean 'segm'.*supported: bbox, segm, proposal"),
        ("evaluation.rule", "bigger", r"evaluation.rule: must be 'greater' or 'less'"),
        ("custom_hooks", [{"type": "NumClassCheckHok"}], r"custom_hooks.0.type: unknown hook .*did you mean 'NumClassCheckHook'"),
        ("auto_scale_lr", {"base_batch_size": 0}, r"auto_scale_lr.base_batch_size: expected a positive integer"),
    ],
)
def test_bad_config_names_file_and_key(path: str, value: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=r"^presets/x.yaml: .*" + match):
        validate_config(mutate(path, value), "presets/x.yaml")


def test_unknown_top_level_key() -> None:
    cfg = tiny_cfg()
    cfg["optimiser"] = {}
    with pytest.raises(ConfigError, match=r"unknown top-level key 'optimiser' — did you mean 'optimizer'"):
        validate_config(cfg, "x.yaml")


def test_logger_hooks_supported_and_refused() -> None:
    cfg = tiny_cfg(log_config={"interval": 5, "hooks": [{"type": "TextLoggerHook"}, {"type": "TensorboardLoggerHook"}]})
    validate_config(cfg, "x.yaml")
    cfg = tiny_cfg(log_config={"interval": 5, "hooks": [{"type": "TextLoggerHook"}, {"type": "WandbLoggerHook"}]})
    with pytest.raises(ConfigError, match=r"x.yaml: log_config.hooks.1: WandbLoggerHook is not supported by det "
                                          r"\(supported: TextLoggerHook, TensorboardLoggerHook, or a logger hook"):
        validate_config(cfg, "x.yaml")
    cfg = tiny_cfg(log_config={"hooks": [{"type": "TensorboardLoggerHook", "logdir": "x"}]})
    with pytest.raises(ConfigError, match=r"log_config.hooks.0.logdir: unknown key 'logdir' for TensorboardLoggerHook"):
        validate_config(cfg, "x.yaml")
    cfg = tiny_cfg(log_config={"hooks": [{"type": "TextLoggerHook", "out_dir": "s3://x"}]})
    with pytest.raises(ConfigError, match=r"log_config.hooks.0.out_dir: not supported by det's TextLoggerHook"):
        validate_config(cfg, "x.yaml")


SHIPPED = sorted(p.name for p in list_presets())


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_preset_validates(name: str) -> None:
    from detcli.config import load_config
    from detcli.resources import find_preset

    path = find_preset(name)
    assert path is not None
    validate_config(load_config(str(path)), f"presets/{name}")


def test_two_stage_presets_are_shipped() -> None:
    assert {"faster_rcnn_r50_fpn_1x_coco.yaml", "mask_rcnn_r50_fpn_1x_coco.yaml",
            "mask_rcnn_r18_fpn_shapes.yaml"} <= set(SHIPPED)
