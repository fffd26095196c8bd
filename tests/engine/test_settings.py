"""Typed run settings: the one data-loader rule, type checks naming the key, workflow/fp16/optimizer_config
parsing, and `det config check` as a dry-run build."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest

from detcli.engine.optim import auto_scale_lr
from detcli.engine.settings import loader_settings, parse_settings, train_batch_size
from detcli.engine.validate import check_build, validate_config
from detcli.errors import ConfigError

from engine_helpers import tiny_cfg


def data_cfg(**data: Any) -> dict[str, Any]:
    base = {"train": {"type": "TinyTestDataset"}, "val": {"type": "TinyTestDataset"},
            "test": {"type": "TinyTestDataset"}}
    return {"data": base | data}


# --------------------------------------------------------------------------- samples_per_gpu / workers_per_gpu

def test_train_batch_precedence_dataloader_then_split_then_data() -> None:
    assert loader_settings(data_cfg(), "train").samples_per_gpu == 1  # nothing set
    assert loader_settings(data_cfg(samples_per_gpu=2), "train").samples_per_gpu == 2
    split = data_cfg(samples_per_gpu=2, train={"type": "TinyTestDataset", "samples_per_gpu": 8})
    assert loader_settings(split, "train").samples_per_gpu == 8
    assert "samples_per_gpu" not in loader_settings(split, "train").dataset  # popped from the dataset node
    both = copy.deepcopy(split)
    both["data"]["train_dataloader"] = {"samples_per_gpu": 4}
    assert loader_settings(both, "train").samples_per_gpu == 4


def test_val_and_test_batches_default_to_one_not_the_training_batch() -> None:
    cfg = data_cfg(samples_per_gpu=8)
    assert loader_settings(cfg, "val").samples_per_gpu == 1
    assert loader_settings(cfg, "test").samples_per_gpu == 1
    cfg = data_cfg(samples_per_gpu=8, val={"type": "TinyTestDataset", "samples_per_gpu": 3},
                   test_dataloader={"samples_per_gpu": 5})
    assert loader_settings(cfg, "val").samples_per_gpu == 3
    assert loader_settings(cfg, "test").samples_per_gpu == 5
    cfg["data"]["val_dataloader"] = {"samples_per_gpu": 2}
    assert loader_settings(cfg, "val").samples_per_gpu == 2


def test_list_of_test_datasets_uses_the_largest_batch() -> None:
    cfg = data_cfg(test=[{"type": "TinyTestDataset", "samples_per_gpu": 2}, {"type": "TinyTestDataset", "samples_per_gpu": 6},
                         {"type": "TinyTestDataset"}])
    loader = loader_settings(cfg, "test")
    assert loader.samples_per_gpu == 6
    assert loader.dataset["type"] == "ConcatDataset"
    assert all("samples_per_gpu" not in d for d in loader.dataset["datasets"])


def test_workers_and_persistent_workers() -> None:
    cfg = data_cfg(workers_per_gpu=2)
    assert [loader_settings(cfg, s).workers_per_gpu for s in ("train", "val", "test")] == [2, 2, 2]
    assert loader_settings(cfg, "train").persistent_workers is True
    cfg["data"]["test_dataloader"] = {"workers_per_gpu": 0}
    cfg["data"]["train_dataloader"] = {"workers_per_gpu": 1, "persistent_workers": False}
    assert loader_settings(cfg, "test").workers_per_gpu == 0
    assert loader_settings(cfg, "test").persistent_workers is False  # no workers: nothing to keep
    assert loader_settings(cfg, "train").workers_per_gpu == 1
    assert loader_settings(cfg, "train").persistent_workers is False
    assert loader_settings(data_cfg(), "train").workers_per_gpu == 0
    assert loader_settings(data_cfg(), "train").shuffle and not loader_settings(data_cfg(), "val").shuffle


@pytest.mark.parametrize("where", ["split", "dataloader", "data"])
@pytest.mark.parametrize("value", ["abc", 2.7, 0, True])
def test_bad_batch_sizes_name_the_key(where: str, value: Any) -> None:
    if where == "split":
        cfg, key = data_cfg(train={"type": "TinyTestDataset", "samples_per_gpu": value}), "data.train.samples_per_gpu"
    elif where == "dataloader":
        cfg, key = data_cfg(train_dataloader={"samples_per_gpu": value}), "data.train_dataloader.samples_per_gpu"
    else:
        cfg, key = data_cfg(samples_per_gpu=value), "data.samples_per_gpu"
    with pytest.raises(ConfigError, match=rf"{key}: expected a positive integer \(e.g. samples_per_gpu: 2\)"):
        loader_settings(cfg, "train")


def test_bad_batch_inside_a_dataset_list_is_an_error() -> None:
    cfg = data_cfg(train=[{"type": "TinyTestDataset", "samples_per_gpu": 2.7}])
    with pytest.raises(ConfigError, match=r"data.train.samples_per_gpu: expected a positive integer"):
        loader_settings(cfg, "train")


def test_unsupported_dataloader_keys_are_errors() -> None:
    cfg = data_cfg(train_dataloader={"class_aware_sampler": {"num_sample_class": 1}})
    with pytest.raises(ConfigError, match=r"data.train_dataloader.class_aware_sampler: det does not support"):
        loader_settings(cfg, "train")
    cfg = tiny_cfg()
    del cfg["data"]["test"]
    cfg["data"]["test_dataloader"] = {"samples_per_gpu": 2}
    with pytest.raises(ConfigError, match=r"data.test_dataloader: there is no data.test dataset"):
        parse_settings(cfg)


def test_auto_scale_lr_uses_the_resolved_training_batch() -> None:
    cfg = {"optimizer": {"type": "SGD", "lr": 0.01}, "auto_scale_lr": {"base_batch_size": 16},
           **data_cfg(samples_per_gpu=2, train_dataloader={"samples_per_gpu": 8})}
    assert train_batch_size(cfg) == 8
    assert auto_scale_lr(cfg, flag=True, world_size=2) == pytest.approx(0.01 * 8 * 2 / 16)
    split = {"optimizer": {"type": "SGD", "lr": 0.01}, **data_cfg(samples_per_gpu=2, train={"type": "TinyTestDataset", "samples_per_gpu": 4})}
    assert auto_scale_lr(split, flag=True, world_size=1) == pytest.approx(0.01 * 4 / 16)


# --------------------------------------------------------------------------- sections

def test_parse_settings_of_the_tiny_config() -> None:
    s = validate_config(tiny_cfg(), "tiny.yaml")
    assert s.data.train is not None and s.data.train.samples_per_gpu == 2
    assert s.data.test is not None and s.data.test.samples_per_gpu == 4
    assert s.data.val is not None and s.data.val.samples_per_gpu == 1
    assert s.optim.grad_clip == {"max_norm": 10.0, "norm_type": 2} and s.optim.cumulative_iters == 1
    assert s.optim.fp16 is None
    assert (s.schedule.runner_type, s.schedule.max_epochs, s.schedule.workflow) == ("EpochBasedRunner", 2, (("train", 1),))
    assert s.evaluation.interval == 1 and s.evaluation.options == {"metric": "bbox"}
    assert s.log.interval == 2 and s.log.log_level is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.seed = 3  # type: ignore[misc]  (frozen)


@pytest.mark.parametrize(("workflow", "message"), [
    ([["val", 1], ["train", 1]], r"det runs \[\[train, N\]\] or \[\[train, N\], \[val, M\]\]"),
    ([["test", 1]], r"workflow.0: unknown mode 'test'"),
    ([["train", 0]], r"workflow.0.1: expected a positive integer"),
    ([["train", 1, 2]], r"workflow.0: expected a \[mode, count\] pair"),
    ("train", r"workflow: expected a list of \[mode, count\] pairs"),
])
def test_invalid_workflows_are_config_errors(workflow: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_settings(tiny_cfg(workflow=workflow))


def test_workflow_with_val() -> None:
    s = parse_settings(tiny_cfg(workflow=[["train", 2], ["val", 1]]))
    assert s.schedule.workflow == (("train", 2), ("val", 1)) and s.schedule.val_phases


@pytest.mark.parametrize(("fp16", "expected"), [
    ({}, (512.0, "float16")),  # mmcv's Fp16OptimizerHook default
    ({"loss_scale": "dynamic"}, ("dynamic", "float16")),
    ({"loss_scale": 512}, (512.0, "float16")),
    ({"loss_scale": {"init_scale": 256.0, "growth_interval": 10}}, ({"init_scale": 256.0, "growth_interval": 10}, "float16")),
    ({"dtype": "bfloat16"}, (512.0, "bfloat16")),
])
def test_fp16_settings(fp16: dict[str, Any], expected: tuple[Any, str]) -> None:
    s = parse_settings(tiny_cfg(fp16=fp16)).optim.fp16
    assert s is not None and (s.loss_scale, s.dtype) == expected


@pytest.mark.parametrize(("fp16", "message"), [
    ({"loss_scale": "abc"}, r"fp16.loss_scale: expected 'dynamic', a positive number"),
    ({"loss_scale": -1}, r"fp16.loss_scale"),
    ({"loss_scale": {"init": 2}}, r"fp16.loss_scale.init: det does not support"),
    ({"dtype": "float8"}, r"fp16.dtype: expected one of float16, bfloat16"),
    ({"scale": 2}, r"fp16.scale: det does not support this key"),
])
def test_bad_fp16_settings(fp16: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_settings(tiny_cfg(fp16=fp16))


def test_optimizer_config_types() -> None:
    s = parse_settings(tiny_cfg(optimizer_config={"type": "GradientCumulativeOptimizerHook", "cumulative_iters": 4,
                                                  "grad_clip": {"max_norm": 1.0}}))
    assert s.optim.cumulative_iters == 4 and s.optim.grad_clip == {"max_norm": 1.0}
    s = parse_settings(tiny_cfg(optimizer_config={"type": "Fp16OptimizerHook", "loss_scale": 64.0}))
    assert s.optim.fp16 is not None and s.optim.fp16.loss_scale == 64.0
    with pytest.raises(ConfigError, match=r"cumulative_iters: only GradientCumulativeOptimizerHook accumulates"):
        parse_settings(tiny_cfg(optimizer_config={"cumulative_iters": 2}))
    with pytest.raises(ConfigError, match=r"optimizer_config.cumulative_iters: expected a positive integer"):
        parse_settings(tiny_cfg(optimizer_config={"type": "GradientCumulativeOptimizerHook", "cumulative_iters": 0}))
    with pytest.raises(ConfigError, match=r"optimizer_config.type: det does not run 'DistOptimizerHook'"):
        parse_settings(tiny_cfg(optimizer_config={"type": "DistOptimizerHook"}))


@pytest.mark.parametrize(("key", "value", "message"), [
    ("log_level", "LOUD", r"log_level: expected one of CRITICAL, ERROR, WARNING, INFO, DEBUG"),
    ("dist_params", {"backend": "nccl", "port": 29500}, r"dist_params.port: det does not support this key"),
    ("dist_params", {"backend": "mpi"}, r"dist_params.backend: expected nccl or gloo"),
    ("device", "tpu", r"device: expected cpu, cuda or cuda:N"),
    ("load_from", 3, r"load_from: expected a path or URI string"),
    ("checkpoint_config", {"interval": 1, "out_dir": "x"}, r"checkpoint_config.out_dir: det does not support"),
])
def test_runtime_keys_are_type_checked(key: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_settings(tiny_cfg(**{key: value}))


# --------------------------------------------------------------------------- det config check: a dry-run build

def test_check_build_finds_build_time_errors() -> None:
    cfg = tiny_cfg()
    assert check_build(cfg, "tiny.yaml").schedule.max_epochs == 2
    with pytest.raises(ConfigError, match=r"tiny.yaml: .*workflow: a val phase .* data.val"):
        bad = tiny_cfg(workflow=[["train", 1], ["val", 1]])
        del bad["data"]["val"]
        check_build(bad, "tiny.yaml")


def test_config_check_cli_builds_the_model(tmp_path: Any) -> None:
    from typer.testing import CliRunner

    from detcli.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["config", "check", "retinanet_r50_fpn_1x_coco"])
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(app, ["config", "check", "retinanet_r50_fpn_1x_coco", "--cfg-options",
                              "model.backbone.norm_cfg.type=SyncBN"])
    assert bad.exit_code != 0
    assert "model.backbone" in bad.output and "SyncBN" in bad.output
    bad = runner.invoke(app, ["config", "check", "retinanet_r50_fpn_1x_coco", "--cfg-options",
                              "data.train.pipeline.2.img_scale=abc"])
    assert bad.exit_code != 0 and "data.train.pipeline.2.img_scale" in bad.output
