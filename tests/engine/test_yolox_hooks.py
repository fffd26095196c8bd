"""YOLOX training machinery: EMA (closed form, checkpoint, exact resume), mode switch, random size,
SyncNorm (single process), and the YOLOX lr policy at chosen iterations."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

import detcli.engine as engine
from detcli.engine.hooks import (
    ExpMomentumEMAHook,
    SyncNormHook,
    SyncRandomSizeHook,
    YOLOXModeSwitchHook,
    build_custom_hooks,
    resize_batch,
)
from detcli.engine.lr import LrSchedule
from detcli.errors import ConfigError
from detcli.structures import Boxes, GroundTruth, ImageBatch
from test_train import Interrupted, InterruptHook, state  # noqa: F401  (InterruptHook registers itself)

from engine_helpers import tiny_cfg


def fake_runner(model: nn.Module, **kw: Any) -> SimpleNamespace:
    base = dict(model=model, iter=0, epoch=0, max_epochs=20, max_iters=200, iters_per_epoch=10, resumed_hook_states={},
                datasets={}, meta={"seed": 0}, world_size=1, make_loader=lambda epoch: object())
    base.update(kw)
    return SimpleNamespace(**base)


def test_ema_equals_the_closed_form_average() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 2).double()
    hook = ExpMomentumEMAHook(momentum=0.01, total_iter=5)
    runner = fake_runner(model)
    hook.before_run(runner)
    w0 = model.weight.detach().clone()
    weights, moms = [], []
    for i in range(1, 8):
        with torch.no_grad():
            model.weight.copy_(torch.randn(2, 3, dtype=torch.float64))
        weights.append(model.weight.detach().clone())
        runner.iter = i
        hook.after_iter(runner)
        moms.append((1 - 0.01) * math.exp(-i / 5) + 0.01)
    # ema_n = prod(1 - m_i) w0 + sum_i m_i prod_{j > i} (1 - m_j) w_i
    expected = w0 * math.prod(1 - m for m in moms)
    for i, (w, m) in enumerate(zip(weights, moms)):
        expected = expected + w * m * math.prod(1 - mj for mj in moms[i + 1:])
    assert torch.allclose(hook.ema["weight"], expected, rtol=0, atol=1e-12)
    assert hook.momentum_at(1) == pytest.approx(0.99 * math.exp(-1 / 5) + 0.01)
    # swapping is exact and pairs up
    live = model.weight.detach().clone()
    ema = hook.ema["weight"].clone()
    hook.swap_weights(runner)
    assert torch.equal(model.weight, ema) and torch.equal(hook.ema["weight"], live) and hook.swapped
    hook.swap_weights(runner)
    assert torch.equal(model.weight, live) and not hook.swapped


def test_ema_hook_rejects_its_own_resume_from() -> None:
    with pytest.raises(ConfigError, match="--resume"):
        ExpMomentumEMAHook(resume_from="x.pth")
    hooks = build_custom_hooks([{"type": "ExpMomentumEMAHook", "momentum": 0.0001, "priority": 49}])
    assert isinstance(hooks[0][0], ExpMomentumEMAHook) and hooks[0][1] == 49


def ema_cfg() -> dict[str, Any]:
    cfg = tiny_cfg(lr_config={"policy": "CosineAnnealing", "warmup": "linear", "warmup_iters": 5,
                              "warmup_ratio": 0.1, "min_lr_ratio": 0.01})
    cfg["data"]["train"]["num_images"] = 6  # 3 iterations per epoch
    cfg["runner"] = {"type": "EpochBasedRunner", "max_epochs": 3}
    cfg["custom_hooks"] = [{"type": "ExpMomentumEMAHook", "momentum": 0.1, "total_iter": 4, "priority": 49}]
    return cfg


def test_ema_weights_are_saved_and_resume_is_bit_identical(tmp_path: Path) -> None:
    full = engine.train(ema_cfg(), work_dir=tmp_path / "full", cfg_source="tiny.yaml")
    ckpt = torch.load(full.work_dir / "epoch_3.pth", weights_only=True)
    train_weights = ckpt["hooks"]["ExpMomentumEMAHook"]["train_weights"]
    assert ckpt["state_dict"].keys() == train_weights.keys()
    assert not torch.equal(ckpt["state_dict"]["conv.weight"], train_weights["conv.weight"])  # EMA != live weights
    cfg = ema_cfg()
    cfg["custom_hooks"].append({"type": "InterruptHook", "epoch": 1, "priority": "LOWEST"})
    with pytest.raises(Interrupted):
        engine.train(cfg, work_dir=tmp_path / "res", cfg_source="tiny.yaml")
    resumed = engine.train(ema_cfg(), work_dir=tmp_path / "res", cfg_source="tiny.yaml", resume=True)
    assert resumed.iters == 9
    other = torch.load(resumed.work_dir / "epoch_3.pth", weights_only=True)
    for key in ckpt["state_dict"]:
        assert torch.equal(ckpt["state_dict"][key], other["state_dict"][key]), key
        assert torch.equal(train_weights[key], other["hooks"]["ExpMomentumEMAHook"]["train_weights"][key]), key
    assert full.metrics == resumed.metrics


class MixSet:
    def __init__(self) -> None:
        self.skip: Any = None
        self.scale: Any = None

    def update_skip_type_keys(self, keys: Any) -> None:
        self.skip = tuple(keys)

    def update_dynamic_scale(self, scale: Any) -> None:
        self.scale = tuple(scale)


def test_mode_switch_happens_at_the_mmdet_epoch_and_enables_l1() -> None:
    model = nn.Module()
    model.bbox_head = SimpleNamespace(use_l1=False)
    data = MixSet()
    runner = fake_runner(model, datasets={"train": data}, max_epochs=20)
    hook = YOLOXModeSwitchHook(num_last_epochs=15)
    hook.before_run(runner)
    assert hook.switch_epoch(runner) == 4  # mmdet: (epoch + 1) == max_epochs - num_last_epochs
    for epoch in range(4):
        runner.epoch = epoch
        hook.before_epoch(runner)
        assert data.skip is None and model.bbox_head.use_l1 is False
    runner.epoch = 4
    hook.before_epoch(runner)
    assert data.skip == ("Mosaic", "RandomAffine", "MixUp") and model.bbox_head.use_l1 is True
    # a run resumed later (a fresh hook) is switched at its first epoch
    late = fake_runner(model, datasets={"train": MixSet()}, epoch=10, max_epochs=20)
    model.bbox_head.use_l1 = False
    YOLOXModeSwitchHook(num_last_epochs=15).before_epoch(late)
    assert late.datasets["train"].skip is not None and model.bbox_head.use_l1 is True
    with pytest.raises(ConfigError, match="MultiImageMixDataset"):
        YOLOXModeSwitchHook().before_run(fake_runner(model, datasets={"train": object()}))


def test_sync_random_size_draws_every_interval_iterations_and_resizes_batches() -> None:
    hook = SyncRandomSizeHook(ratio_range=(14, 26), img_scale=(640, 640), interval=10)
    runner = fake_runner(nn.Module(), batch_transforms=[])
    hook.before_run(runner)
    assert runner.batch_transforms == [hook.transform]
    sizes = []
    for it in range(35):
        runner.iter = it
        hook.before_iter(runner)
        sizes.append(hook.current)
    assert sizes[:10] == [None] * 10  # mmdet: the first draw after iteration 10
    assert len(set(sizes[10:20])) == 1 and sizes[10] == hook.size_at(0, 10) == hook.size_at(0, 19)
    assert sizes[20] == hook.size_at(0, 20) and sizes[30] == hook.size_at(0, 30)
    drawn = {SyncRandomSizeHook().size_at(0, 10 * k) for k in range(1, 80)}
    assert len(drawn) > 5 and all(h == w and h % 32 == 0 and 448 <= h <= 832 for h, w in drawn)
    assert SyncRandomSizeHook(ratio_range=(10, 10), img_scale=(320, 640)).size_at(0, 10) == (320, 640)
    from_model = SyncRandomSizeHook()
    model = nn.Module()
    model.random_size_range, model.input_size, model.random_size_interval = (10, 10), (416, 416), 5
    from_model.before_run(fake_runner(model, batch_transforms=[]))
    assert from_model.size_at(0, 4) is None and from_model.size_at(0, 5) == (320, 320)
    assert hook.size_at(1, 10) == SyncRandomSizeHook(interval=10).size_at(1, 10)  # a function of (seed, k)
    # a 2-image 64x64 batch resized to 32x96: boxes scale by (1.5, 0.5)
    images = ImageBatch(torch.rand(2, 3, 64, 64), [(64, 64), (64, 48)])
    targets = [GroundTruth((64, 64), Boxes(torch.tensor([[8.0, 8.0, 32.0, 16.0]])), torch.tensor([1])),
               GroundTruth((64, 48), Boxes(torch.zeros(0, 4)), torch.zeros(0, dtype=torch.long))]
    out_images, out_targets = resize_batch(images, targets, (32, 96))
    assert tuple(out_images.tensor.shape) == (2, 3, 32, 96) and out_images.image_sizes == [(32, 96), (32, 72)]
    assert out_targets[0].boxes.tensor.tolist() == [[12.0, 4.0, 48.0, 8.0]] and out_targets[0].labels.tolist() == [1]
    assert out_targets[1].image_size == (32, 72) and len(out_targets[1]) == 0
    same_images, same_targets = resize_batch(images, targets, (64, 64))
    assert same_images is images and same_targets is targets


def test_sync_norm_schedule_and_single_process_no_op() -> None:
    hook = SyncNormHook(num_last_epochs=15, interval=10)
    runner = fake_runner(nn.BatchNorm2d(2), max_epochs=300)
    due = []
    for epoch in range(1, 301):
        runner.epoch = epoch
        if hook.due(runner):
            due.append(epoch)
    assert due[:3] == [10, 20, 30] and 284 not in due and all(e in due for e in range(285, 301))
    runner.epoch = 10
    hook.after_epoch(runner)  # world size 1: nothing to do


def test_yolox_lr_policy_values() -> None:
    cfg = {"policy": "YOLOX", "warmup": "exp", "by_epoch": False, "warmup_by_epoch": True, "warmup_ratio": 1,
           "warmup_iters": 5, "num_last_epochs": 15, "min_lr_ratio": 0.05}
    s = LrSchedule.from_config(cfg, max_epochs=300, max_iters=None)

    def lr(it: int) -> float:
        return s.lr(0.01, epoch=it // 100, iter=it, iters_per_epoch=100)

    assert lr(0) == pytest.approx(0.01 * (1 / 500) ** 2)
    assert lr(249) == pytest.approx(0.01 * (250 / 500) ** 2)
    assert lr(499) == pytest.approx(0.01)
    # cosine over (iter + 1 - 500) / (30000 - 500 - 1500)
    for it in (500, 10000, 20000):
        frac = (it + 1 - 500) / 28000
        assert lr(it) == pytest.approx(0.0005 + 0.5 * 0.0095 * (math.cos(math.pi * frac) + 1), rel=1e-12)
    assert lr(28498) > 0.0005 and lr(28499) == pytest.approx(0.0005) and lr(29999) == pytest.approx(0.0005)
    with pytest.raises(ConfigError, match="by_epoch"):
        LrSchedule.from_config({**cfg, "by_epoch": True}, max_epochs=300, max_iters=None)
    with pytest.raises(ConfigError, match="min_lr"):
        LrSchedule.from_config({k: v for k, v in cfg.items() if k != "min_lr_ratio"}, max_epochs=300, max_iters=None)
    it_based = LrSchedule.from_config(cfg, max_epochs=None, max_iters=3000)
    assert it_based.lr(1.0, epoch=0, iter=2999, iters_per_epoch=10) == pytest.approx(0.05)
    assert it_based.lr(1.0, epoch=0, iter=2848, iters_per_epoch=10) > 0.05


def test_eval_dynamic_intervals_switch_to_every_epoch() -> None:
    from detcli.engine.hooks import EvalHook

    hook = EvalHook(lambda *a: None, interval=10, dynamic_intervals=[[285, 1]])
    due = [e for e in range(1, 301) if e % hook.interval_at(e) == 0]
    assert due[:3] == [10, 20, 30] and 284 not in due and all(e in due for e in range(285, 301))
    with pytest.raises(ConfigError, match="dynamic_intervals"):
        EvalHook(lambda *a: None, dynamic_intervals=[[0, 1]])
