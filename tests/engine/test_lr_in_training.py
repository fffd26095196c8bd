"""lr policies Cyclic / OneCycle / CosineRestart and momentum_config inside real training runs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

import detcli.engine as engine
from detcli.engine.hooks import Hook
from detcli.registry import HOOKS

from engine_helpers import tiny_cfg


class Stop(Exception):
    pass


@HOOKS.register()
class LrMomentumProbeHook(Hook):
    """Records (iter, lr, momentum) as seen by the step of every iteration; stops after ``stop_at``."""

    seen: list[tuple[int, float, float]] = []

    def __init__(self, stop_at: int = -1) -> None:
        self.stop_at = stop_at

    def before_iter(self, runner: Any) -> None:
        g = runner.optimizer.param_groups[0]
        LrMomentumProbeHook.seen.append((runner.iter, g["lr"], g["momentum"] if "momentum" in g else g["betas"][0]))

    def after_iter(self, runner: Any) -> None:
        if runner.iter == self.stop_at:
            raise Stop()


def _cfg(**extra: Any) -> dict[str, Any]:
    cfg = tiny_cfg(**extra)
    cfg["data"]["train"]["num_images"] = 8  # 4 iterations per epoch, 3 epochs: 12 iterations
    cfg["runner"] = {"type": "EpochBasedRunner", "max_epochs": 3}
    cfg["evaluation"] = {"interval": 10, "metric": "bbox"}
    cfg["checkpoint_config"] = {"interval": 1}
    return cfg


SCHEDULES = {
    "cyclic": ({"policy": "cyclic", "target_ratio": [10, 1e-4], "cyclic_times": 2, "step_ratio_up": 0.4},
               {"policy": "cyclic", "target_ratio": [0.85 / 0.95, 1], "cyclic_times": 2, "step_ratio_up": 0.4}),
    "onecycle": ({"policy": "OneCycle", "max_lr": 0.2}, {"policy": "OneCycle"}),
    "restart": ({"policy": "CosineRestart", "periods": [1, 2], "restart_weights": [1, 0.5], "min_lr_ratio": 0.1,
                 "warmup": "linear", "warmup_iters": 2, "warmup_ratio": 0.5}, None),
}


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedule_values_in_training_and_exact_resume(tmp_path: Path, name: str) -> None:
    lr_config, momentum_config = SCHEDULES[name]

    def cfg(stop_at: int = -1) -> dict[str, Any]:
        c = _cfg(lr_config=dict(lr_config))
        if momentum_config is not None:
            c["momentum_config"] = dict(momentum_config)
        c["custom_hooks"] = [{"type": "LrMomentumProbeHook", "stop_at": stop_at, "priority": "LOWEST"}]
        return c

    LrMomentumProbeHook.seen = []
    full = engine.train(cfg(), work_dir=tmp_path / "full", cfg_source="tiny.yaml", validate=False)
    seen = list(LrMomentumProbeHook.seen)
    assert [s[0] for s in seen] == list(range(12))
    lrs = [s[1] for s in seen]
    moms = [s[2] for s in seen]
    if name == "cyclic":  # 2 cycles of 6 iterations, up over int(0.4 * 6) = 2
        assert lrs[0] == pytest.approx(0.1) and lrs[1] == pytest.approx(0.55) and lrs[2] == pytest.approx(1.0)
        assert lrs[6] == pytest.approx(0.1) and lrs[8] == pytest.approx(1.0)
        assert moms[0] == pytest.approx(0.9) and moms[2] == pytest.approx(0.9 * 0.85 / 0.95)
    elif name == "onecycle":  # base 0.2 / 25, peak at iteration 0.3 * 12 - 1 = 2.6
        assert lrs[0] == pytest.approx(0.008)
        assert max(lrs) == lrs[3] and lrs[-1] == pytest.approx(
            0.008 / 1e4 + 0.5 * (0.2 - 0.008 / 1e4) * (math.cos(math.pi * (11 - 2.6) / (11 - 2.6)) + 1))
        assert moms[0] == pytest.approx(0.95) and moms[-1] == pytest.approx(0.95) and min(moms) == moms[3]
    else:  # by epoch: period 1 (epoch 0), then a restart at weight 0.5 over epochs 1-2; warmup 2 iterations
        assert lrs[0] == pytest.approx(0.05) and lrs[1] == pytest.approx(0.075) and lrs[2] == pytest.approx(0.1)
        assert lrs[4] == pytest.approx(0.01 + 0.5 * 0.5 * 0.09 * 2)
        assert lrs[8] == pytest.approx(0.01 + 0.25 * 0.09 * (math.cos(math.pi * 0.5) + 1))
        assert moms == [0.9] * 12
    # interrupted after iteration 5 (mid epoch 2) and resumed from epoch_1.pth: same lr/momentum curve, same weights
    LrMomentumProbeHook.seen = []
    with pytest.raises(Stop):
        engine.train(cfg(stop_at=5), work_dir=tmp_path / "res", cfg_source="tiny.yaml", validate=False)
    LrMomentumProbeHook.seen = []
    engine.train(cfg(), work_dir=tmp_path / "res", cfg_source="tiny.yaml", validate=False,
                 resume=str(tmp_path / "res" / "epoch_1.pth"))
    assert LrMomentumProbeHook.seen == seen[4:]
    a = torch.load(full.work_dir / "epoch_3.pth", weights_only=True)
    b = torch.load(tmp_path / "res" / "epoch_3.pth", weights_only=True)
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
