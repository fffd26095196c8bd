"""The YOLOX presets resolve, validate and build (model, MultiImageMixDataset, hooks), and SyncNormHook
averages BatchNorm statistics over 2 gloo processes."""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch
from torch import nn

from detcli.config import load_config
from detcli.data import MultiImageMixDataset, SampleKey, build_dataset
from detcli.engine import dist
from detcli.engine.builders import build_model
from detcli.engine.hooks import (
    ExpMomentumEMAHook,
    SyncNormHook,
    SyncRandomSizeHook,
    YOLOXModeSwitchHook,
    build_custom_hooks,
    sync_norm_stats,
)
from detcli.engine.lr import LrSchedule
from detcli.engine.validate import runner_settings, validate_config

PRESETS = ["presets/yolox_s_8x8_300e_coco.yaml", "presets/yolox_tiny_8x8_300e_coco.yaml", "presets/yolox_tiny_shapes.yaml"]


@pytest.mark.parametrize("preset", PRESETS)
def test_yolox_presets_resolve_and_validate(preset: str) -> None:
    cfg = load_config(preset)
    validate_config(cfg, preset)
    assert cfg["model"]["type"] == "YOLOX"
    assert cfg["data"]["train"]["type"] == "MultiImageMixDataset"
    assert cfg["lr_config"]["policy"] == "YOLOX"
    hooks = [h for h, _ in build_custom_hooks(cfg["custom_hooks"])]
    assert any(isinstance(h, YOLOXModeSwitchHook) for h in hooks)
    assert any(isinstance(h, ExpMomentumEMAHook) for h in hooks)
    _, max_epochs, max_iters = runner_settings(cfg)
    LrSchedule.from_config(cfg["lr_config"], max_epochs=max_epochs, max_iters=max_iters)
    if "coco" in preset:
        assert cfg["optimizer"] == {"type": "SGD", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0005, "nesterov": True,
                                    "paramwise_cfg": {"norm_decay_mult": 0.0, "bias_decay_mult": 0.0}}
        assert max_epochs == 300 and cfg["lr_config"]["num_last_epochs"] == 15
        assert {type(h) for h in hooks} == {YOLOXModeSwitchHook, SyncRandomSizeHook, SyncNormHook, ExpMomentumEMAHook}
        assert cfg["evaluation"]["dynamic_intervals"] == [[285, 1]]
        pad = cfg["data"]["test"]["pipeline"][1]["transforms"][2]
        assert pad == {"type": "Pad", "pad_to_square": True, "pad_val": {"img": [114.0, 114.0, 114.0]}}
        kinds = [t["type"] for t in cfg["data"]["train"]["pipeline"]]
        assert ("MixUp" in kinds) == ("yolox_s" in preset)
        assert cfg["zoo"]["source"] == "mmdet"


def test_yolox_tiny_shapes_builds_and_yields_samples() -> None:
    cfg = load_config("presets/yolox_tiny_shapes.yaml")
    model = build_model(cfg)
    assert model.num_classes == 4 and hasattr(model.bbox_head, "use_l1") and model.bbox_head.use_l1 is False
    train = build_dataset(cfg["data"]["train"], test_mode=False)
    assert isinstance(train, MultiImageMixDataset) and len(train) == 2500
    s = train[SampleKey(0, 0, 0)]
    assert tuple(s.image.shape) == (3, 256, 256) and len(s.gt) > 0
    assert float(s.image.max()) > 1.5  # raw pixels: YOLOX is trained without Normalize
    again = build_dataset(cfg["data"]["train"], test_mode=False)[SampleKey(0, 0, 0)]
    assert torch.equal(s.image, again.image)


def test_shapes_image_cache_returns_the_same_images() -> None:
    from detcli.data import ShapesDataset

    load = [{"type": "LoadImageFromFile"}, {"type": "LoadAnnotations", "with_bbox": True}]
    plain = ShapesDataset(load, num_images=3, img_size=64)
    cached = ShapesDataset(load, num_images=3, img_size=64, cache_images=True)
    for i in range(3):
        for _ in range(2):
            a = plain.load_results(SampleKey(i, 0, 0))
            b = cached.load_results(SampleKey(i, 0, 0))
            assert (a["img"] == b["img"]).all() and (a["gt_bboxes"] == b["gt_bboxes"]).all()
            b["img"][:] = 0  # a transform writing into its image does not touch the cache
    assert (cached.load_results(SampleKey(0, 0, 0))["img"] == plain.load_results(SampleKey(0, 0, 0))["img"]).all()


def _sync_worker(rank: int, world_size: int, port: int, queue: Any) -> None:
    import torch.distributed as torch_dist

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch_dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        bn = nn.BatchNorm2d(2)
        bn.running_mean.fill_(float(rank + 1))  # 1 and 2
        bn.running_var.fill_(float(4 * rank + 2))  # 2 and 6
        sync_norm_stats(nn.Sequential(nn.Conv2d(2, 2, 1), bn))
        queue.put((rank, bn.running_mean.tolist(), bn.running_var.tolist(), int(bn.num_batches_tracked)))
    finally:
        torch_dist.destroy_process_group()


@pytest.mark.slow
def test_sync_norm_averages_batchnorm_statistics_over_ranks() -> None:
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    port = dist.free_port()
    mp.start_processes(_sync_worker, args=(2, port, queue), nprocs=2, join=True, start_method="spawn")
    results = sorted(queue.get() for _ in range(2))
    assert results == [(0, [1.5, 1.5], [4.0, 4.0], 0), (1, [1.5, 1.5], [4.0, 4.0], 0)]
