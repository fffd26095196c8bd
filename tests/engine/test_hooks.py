"""Runner and hooks: priority order, after_run in finally, loss parsing, custom hooks, checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from detcli.engine.hooks import (
    PRIORITIES,
    CheckInvalidLossHook,
    Hook,
    build_custom_hooks,
    check_num_classes,
    priority_value,
)
from detcli.engine.runner import Runner, parse_losses
from detcli.errors import ConfigError, TrainingError
from detcli.registry import HOOKS
from detcli.structures import ImageBatch


class Recorder(Hook):
    def __init__(self, name: str, log: list[str], fail_at: str | None = None) -> None:
        self.name = name
        self.log = log
        self.fail_at = fail_at

    def _rec(self, point: str) -> None:
        self.log.append(f"{self.name}.{point}")
        if point == self.fail_at:
            raise RuntimeError(f"{self.name} failed in {point}")

    def before_run(self, runner: Any) -> None:
        self._rec("before_run")

    def before_epoch(self, runner: Any) -> None:
        self._rec("before_epoch")

    def before_iter(self, runner: Any) -> None:
        self._rec("before_iter")

    def after_iter(self, runner: Any) -> None:
        self._rec("after_iter")

    def after_epoch(self, runner: Any) -> None:
        self._rec("after_epoch")

    def after_run(self, runner: Any) -> None:
        self._rec("after_run")


class Batch:
    def __init__(self) -> None:
        self.images = ImageBatch(torch.ones(1, 1, 2, 2), [(2, 2)])
        self.targets: list[Any] = []


class LinearModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(1.0))
        self.num_classes = 1

    def forward(self, images: ImageBatch, targets: list[Any]) -> dict[str, torch.Tensor]:
        return {"loss_a": self.w * 2, "loss_b": [self.w, self.w], "acc": self.w * 100}


def make_runner(tmp_path: Path, epochs: int = 1, batches: int = 2) -> Runner:
    model = LinearModel()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return Runner(model, opt, lambda epoch: [Batch() for _ in range(batches)], batches, tmp_path,
                  runner_type="EpochBasedRunner", max_epochs=epochs)


def test_hooks_run_in_priority_order_and_registration_order(tmp_path: Path) -> None:
    log: list[str] = []
    runner = make_runner(tmp_path, epochs=1, batches=1)
    runner.register_hook(Recorder("normal1", log))
    runner.register_hook(Recorder("verylow", log), "VERY_LOW")
    runner.register_hook(Recorder("highest", log), "HIGHEST")
    runner.register_hook(Recorder("normal2", log), 50)
    runner.run()
    order = [e.split(".")[0] for e in log if e.endswith("before_run")]
    assert order == ["highest", "normal1", "normal2", "verylow"]
    points = [e.split(".")[1] for e in log if e.startswith("highest")]
    assert points == ["before_run", "before_epoch", "before_iter", "after_iter", "after_epoch", "after_run"]


def test_after_run_runs_when_training_fails(tmp_path: Path) -> None:
    log: list[str] = []
    runner = make_runner(tmp_path)
    runner.register_hook(Recorder("boom", log, fail_at="after_iter"))
    with pytest.raises(RuntimeError, match="boom failed in after_iter"):
        runner.run()
    assert log[-1] == "boom.after_run"


def test_loss_sum_uses_only_loss_keys_and_step_happens(tmp_path: Path) -> None:
    runner = make_runner(tmp_path, epochs=1, batches=1)
    runner.run()
    # d(2w + w + w)/dw = 4 -> w = 1 - 0.1 * 4 ('acc' is logged, not back-propagated)
    assert runner.model.w.item() == pytest.approx(0.6)
    assert runner.log_vars["loss"].item() == pytest.approx(4.0)
    assert runner.log_vars["acc"].item() == pytest.approx(100.0)
    assert runner.epoch == 1 and runner.iter == 1


def test_parse_losses_errors() -> None:
    with pytest.raises(TrainingError, match="no loss term"):
        parse_losses({"acc": torch.tensor(1.0)})
    with pytest.raises(TrainingError, match="'loss_x' is a str"):
        parse_losses({"loss_x": "bad"})  # type: ignore[dict-item]


def test_grad_clip_limits_the_step(tmp_path: Path) -> None:
    runner = make_runner(tmp_path, epochs=1, batches=1)
    runner.grad_clip = {"max_norm": 1.0, "norm_type": 2}
    runner.run()
    assert runner.model.w.item() == pytest.approx(0.9)  # grad 4 clipped to norm 1
    assert runner.log_vars["grad_norm"].item() == pytest.approx(4.0)


def test_invalid_loss_hook_message(tmp_path: Path) -> None:
    runner = make_runner(tmp_path)
    runner.model.w.data.fill_(float("inf"))
    runner.register_hook(CheckInvalidLossHook())
    with pytest.raises(TrainingError, match=r"infinite or NaN at iteration 1 \(epoch 1\): loss_a=inf.*lr=0.1"):
        runner.run()


def test_priority_values() -> None:
    assert priority_value("very_low") == PRIORITIES["VERY_LOW"] == 90
    assert priority_value(5) == 5
    with pytest.raises(ConfigError, match="unknown hook priority 'MEDIUM'"):
        priority_value("MEDIUM")
    with pytest.raises(ConfigError, match="out of range"):
        priority_value(101)


@HOOKS.register()
class CountingHook(Hook):
    def __init__(self, start: int = 0) -> None:
        self.count = start

    def after_iter(self, runner: Any) -> None:
        self.count += 1


def test_custom_hooks_from_config(tmp_path: Path) -> None:
    hooks = build_custom_hooks([{"type": "CountingHook", "start": 10, "priority": "HIGH"}])
    assert len(hooks) == 1 and hooks[0][1] == 30
    runner = make_runner(tmp_path, epochs=2, batches=3)
    runner.register_hook(*hooks[0])
    runner.run()
    assert hooks[0][0].count == 16


def test_custom_hooks_errors_name_the_path() -> None:
    with pytest.raises(ConfigError, match=r"custom_hooks.0.type: unknown hook 'CountingHok' — did you mean 'CountingHook'"):
        build_custom_hooks([{"type": "CountingHok"}])
    with pytest.raises(ConfigError, match=r"custom_hooks.0.strat: unknown key .*did you mean 'start'"):
        build_custom_hooks([{"type": "CountingHook", "strat": 1}])
    with pytest.raises(ConfigError, match=r"custom_hooks.1.priority"):
        build_custom_hooks([{"type": "CountingHook"}, {"type": "CountingHook", "priority": "SOON"}])


def test_num_class_check() -> None:
    class DS:
        classes = ("a", "b", "c")

    model = LinearModel()
    model.num_classes = 3
    check_num_classes(model, {"train": DS()})
    model.num_classes = 80
    with pytest.raises(ConfigError, match=r"predicts 80 classes but data.val has 3 \(a, b, c\).*num_classes=3"):
        check_num_classes(model, {"val": DS()})
    # two-stage models: the fix names the RoI heads' keys
    model.roi_head = torch.nn.Module()
    model.roi_head.mask_head = torch.nn.Identity()
    with pytest.raises(ConfigError, match=r"model.roi_head.bbox_head.num_classes=3 and model.roi_head.mask_head"):
        check_num_classes(model, {"val": DS()})


def test_empty_loader_is_an_error(tmp_path: Path) -> None:
    model = LinearModel()
    with pytest.raises(TrainingError, match="yields no batch"):
        Runner(model, torch.optim.SGD(model.parameters(), lr=0.1), lambda e: [], 0, tmp_path, max_epochs=1)


def test_runner_type_and_length_checks(tmp_path: Path) -> None:
    model = LinearModel()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ConfigError, match="unknown runner 'EpochRunner'"):
        Runner(model, opt, lambda e: [], 1, tmp_path, runner_type="EpochRunner", max_epochs=1)
    with pytest.raises(ConfigError, match="needs max_iters"):
        Runner(model, opt, lambda e: [], 1, tmp_path, runner_type="IterBasedRunner")


def test_eval_hook_keeps_only_the_best_checkpoint_and_restores_train_mode(tmp_path: Path) -> None:
    from detcli.engine.hooks import EvalHook
    from detcli.evaluation import CocoEvaluation

    scores = iter([0.1, 0.3, 0.2])
    modes: list[bool] = []

    def evaluate(model: nn.Module, progress: Any) -> CocoEvaluation:
        modes.append(model.training)
        torch.rand(5)  # evaluation must not disturb the training RNG stream
        return CocoEvaluation(metrics={"bbox_mAP": next(scores), "bbox_mAP_50": 0.5})

    runner = make_runner(tmp_path, epochs=3, batches=1)
    runner.register_hook(EvalHook(evaluate, interval=1, save_best="auto"), "LOW")
    torch.manual_seed(0)
    runner.run()
    assert modes == [False, False, False] and runner.model.training
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["best_bbox_mAP_epoch_2.pth"]
    assert runner.meta["best"] == {"key": "bbox_mAP", "score": 0.3, "rule": "greater", "path": "best_bbox_mAP_epoch_2.pth", "epoch": 2}
    assert runner.last_metrics["bbox_mAP"] == 0.2


def test_eval_hook_unknown_save_best_key(tmp_path: Path) -> None:
    from detcli.engine.hooks import EvalHook
    from detcli.evaluation import CocoEvaluation

    runner = make_runner(tmp_path, epochs=1, batches=1)
    runner.register_hook(EvalHook(lambda m, p: CocoEvaluation(metrics={"bbox_mAP": 0.1}), save_best="segm_mAP"))
    with pytest.raises(ConfigError, match="save_best: 'segm_mAP' is not a metric .*have: bbox_mAP"):
        runner.run()
