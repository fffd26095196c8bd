"""Hooks: everything the training loop does besides the optimisation step.

A hook overrides any of six no-op methods, each called with the runner: ``before_run``,
``before_epoch``, ``before_iter``, ``after_iter``, ``after_epoch``, ``after_run``. Hooks run in
priority order (lower value first; equal priorities in registration order), mmcv's scale:

============  =====  ===========================================
name          value  det's built-in hooks at that priority
============  =====  ===========================================
HIGHEST       0
VERY_HIGH     10     LrUpdaterHook
HIGH          30     MomentumUpdaterHook
ABOVE_NORMAL  40     CheckInvalidLossHook
NORMAL        50     CheckpointHook, NumClassCheckHook, custom hooks (default)
BELOW_NORMAL  60
LOW           70     EvalHook
VERY_LOW      90     LoggerHook
LOWEST        100
============  =====  ===========================================

Custom hooks come from the config's ``custom_hooks: [{type: Name, priority: NORMAL, ...}]`` and
are built from the ``HOOKS`` registry (register yours with ``@HOOKS.register()``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detcli.engine.checkpoint import preserved_rng
from detcli.engine.lr import LrSchedule, MomentumSchedule
from detcli.engine.progress import ProgressEvent
from detcli.errors import ConfigError, TrainingError
from detcli.registry import HOOKS
from detcli.structures import Boxes, GroundTruth, ImageBatch

if TYPE_CHECKING:
    from detcli.engine.runner import Runner
    from detcli.evaluation import CocoEvaluation

logger = logging.getLogger(__name__)
#: the logger prints a first ETA after this many iterations (the regular lines come every ``interval``)
EARLY_ETA_ITERS = 10

PRIORITIES: dict[str, int] = {
    "HIGHEST": 0, "VERY_HIGH": 10, "HIGH": 30, "ABOVE_NORMAL": 40, "NORMAL": 50,
    "BELOW_NORMAL": 60, "LOW": 70, "VERY_LOW": 90, "LOWEST": 100,
}


def priority_value(priority: int | str) -> int:
    """Return the numeric priority of a name (``"NORMAL"``) or an int in [0, 100]."""
    if isinstance(priority, bool):
        raise ConfigError(f"hook priority must be a name or an int, got {priority!r}")
    if isinstance(priority, int):
        if not 0 <= priority <= 100:
            raise ConfigError(f"hook priority {priority} is out of range [0, 100]")
        return priority
    key = str(priority).upper()
    if key not in PRIORITIES:
        raise ConfigError(f"unknown hook priority '{priority}' (known: {', '.join(PRIORITIES)})")
    return PRIORITIES[key]


class Hook:
    """Base class of hooks: six no-op methods and a default priority."""

    priority: int | str = "NORMAL"

    def before_run(self, runner: "Runner") -> None:
        pass

    def before_epoch(self, runner: "Runner") -> None:
        pass

    def before_iter(self, runner: "Runner") -> None:
        pass

    def after_iter(self, runner: "Runner") -> None:
        pass

    def after_epoch(self, runner: "Runner") -> None:
        pass

    def after_run(self, runner: "Runner") -> None:
        pass

    def after_val_epoch(self, runner: "Runner") -> None:
        """After a validation-loss phase of the workflow (``runner.val_log_vars``)."""


class LrUpdaterHook(Hook):
    """Sets every parameter group's lr from the schedule before each iteration.

    The base lr of a group is its ``initial_lr`` (set from ``lr`` when the hook is made, or
    ``max_lr / div_factor`` for ``OneCycle``, and kept in the optimizer's state dict, so a resumed run
    scales the same base).
    """

    priority = "VERY_HIGH"

    def __init__(self, schedule: LrSchedule, optimizer: torch.optim.Optimizer) -> None:
        self.schedule = schedule
        groups = optimizer.param_groups
        for i, group in enumerate(groups):
            group.setdefault("initial_lr", schedule.initial_lr(i, len(groups), group["lr"]))

    def before_run(self, runner: "Runner") -> None:
        self.schedule.check_run(runner.max_iters)
        logger.debug("lr schedule %s over %d iterations; hooks in the order they run: %s", self.schedule.state_dict(),
                     runner.max_iters, ", ".join(type(h).__name__ for h in runner.hooks))

    def before_iter(self, runner: "Runner") -> None:
        for group in runner.optimizer.param_groups:
            group["lr"] = self.schedule.lr(
                group["initial_lr"], epoch=runner.epoch, iter=runner.iter, iters_per_epoch=runner.iters_per_epoch
            )


class MomentumUpdaterHook(Hook):
    """Sets every parameter group's momentum (``betas[0]`` for Adam-type optimizers) before each
    iteration from a :class:`~detcli.engine.lr.MomentumSchedule` (``momentum_config``).

    A group's starting point is kept in the optimizer's state dict (``initial_momentum``; ``OneCycle``:
    ``base_momentum``/``max_momentum``), so a resumed run continues the same curve.

    Raises:
        ConfigError: the optimizer has neither ``momentum`` nor ``betas``.
    """

    priority = "HIGH"

    def __init__(self, schedule: MomentumSchedule, optimizer: torch.optim.Optimizer) -> None:
        self.schedule = schedule
        if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
            raise ConfigError(f"momentum_config: the optimizer {type(optimizer).__name__} has no momentum or betas "
                              "to schedule (use SGD with momentum, Adam or AdamW, or drop momentum_config)")
        groups = optimizer.param_groups
        for i, group in enumerate(groups):
            if schedule.policy == "OneCycle":
                low, high = schedule.group_bounds(i, len(groups))
                group.setdefault("base_momentum", low)
                group.setdefault("max_momentum", high)
                _set_momentum(group, group["max_momentum"])
            else:
                group.setdefault("initial_momentum", group["momentum"] if "momentum" in group else group["betas"][0])

    def before_iter(self, runner: "Runner") -> None:
        for group in runner.optimizer.param_groups:
            bounds = (group["base_momentum"], group["max_momentum"]) if self.schedule.policy == "OneCycle" else None
            _set_momentum(group, self.schedule.momentum(
                group.get("initial_momentum", 0.0), iter=runner.iter, iters_per_epoch=runner.iters_per_epoch,
                bounds=bounds,
            ))


def _set_momentum(group: dict[str, Any], value: float) -> None:
    if "momentum" in group:
        group["momentum"] = value
    elif "betas" in group:
        group["betas"] = (value, group["betas"][1])


def current_momentum(optimizer: torch.optim.Optimizer) -> float | None:
    """The first parameter group's momentum (``betas[0]``), None for optimizers without one."""
    group = optimizer.param_groups[0]
    if "momentum" in group:
        return float(group["momentum"])
    if "betas" in group:
        return float(group["betas"][0])
    return None


@HOOKS.register()
class CheckInvalidLossHook(Hook):
    """Stops training when the loss becomes NaN or infinite.

    Args:
        interval: check every ``interval`` iterations (1: every iteration; one device sync each).
    """

    priority = "ABOVE_NORMAL"

    def __init__(self, interval: int = 1) -> None:
        self.interval = max(1, interval)

    def after_iter(self, runner: "Runner") -> None:
        if runner.iter % self.interval:
            return
        loss = runner.outputs.get("loss")
        if loss is None or bool(torch.isfinite(loss)):
            return
        terms = ", ".join(f"{k}={float(v):.4g}" for k, v in runner.log_vars.items())
        raise TrainingError(
            f"loss became infinite or NaN at iteration {runner.iter} (epoch {runner.epoch + 1}): {terms}; "
            f"lr={runner.current_lr:.4g}. Fix: lower optimizer.lr, add optimizer_config.grad_clip "
            "(e.g. {max_norm: 35, norm_type: 2}), lengthen the warmup, or check the data for degenerate boxes"
        )


def _num_classes_keys(model: nn.Module, n: int) -> str:
    """The config keys holding the class count of ``model`` (one head, or the RoI heads)."""
    roi_head = getattr(model, "roi_head", None)
    if roi_head is None:
        return f"model.bbox_head.num_classes={n}"
    stages = getattr(roi_head, "stages", None)
    if stages is not None:  # a cascade: one box (and mask) head per stage
        keys = " and ".join(f"model.roi_head.bbox_head.{t}.num_classes={n}" for t in range(len(stages)))
        if getattr(roi_head, "with_mask", False):
            keys += f" and model.roi_head.mask_head.num_classes={n}"
        return keys
    keys = f"model.roi_head.bbox_head.num_classes={n}"
    if getattr(roi_head, "mask_head", None) is not None:
        keys += f" and model.roi_head.mask_head.num_classes={n}"
    return keys


def check_num_classes(model: nn.Module, datasets: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` when ``model.num_classes`` differs from a dataset's class count."""
    num_classes = getattr(model, "num_classes", None)
    if num_classes is None:
        return
    for split, dataset in datasets.items():
        classes = getattr(dataset, "classes", None)
        if classes is None:
            continue
        if len(classes) != num_classes:
            raise ConfigError(
                f"the model predicts {num_classes} classes but data.{split} has {len(classes)} "
                f"({', '.join(map(str, classes[:6]))}{', ...' if len(classes) > 6 else ''}): set "
                f"{_num_classes_keys(model, len(classes))} (or data.{split}.classes to {num_classes} names)"
            )


@HOOKS.register()
class NumClassCheckHook(Hook):
    """Checks before training that the head's ``num_classes`` equals ``len(dataset.classes)``."""

    def before_run(self, runner: "Runner") -> None:
        check_num_classes(runner.model, runner.datasets)


class CheckpointHook(Hook):
    """Saves ``epoch_N.pth`` (or ``iter_N.pth``) and points ``latest.pth`` at it.

    Args:
        interval: save every ``interval`` epochs (iterations when not ``by_epoch``); -1: only the last.
        by_epoch: count in epochs.
        save_optimizer: store the optimizer state (needed to resume exactly).
        max_keep_ckpts: keep only the newest ``max_keep_ckpts`` periodic files (-1: all).
        save_last: always save at the end of the run.
    """

    def __init__(
        self,
        interval: int = 1,
        by_epoch: bool = True,
        save_optimizer: bool = True,
        max_keep_ckpts: int = -1,
        save_last: bool = True,
    ) -> None:
        self.interval = interval
        self.by_epoch = by_epoch
        self.save_optimizer = save_optimizer
        self.max_keep_ckpts = max_keep_ckpts
        self.save_last = save_last

    def _due(self, count: int, last: bool) -> bool:
        return (self.interval > 0 and count % self.interval == 0) or (self.save_last and last)

    def after_epoch(self, runner: "Runner") -> None:
        if self.by_epoch and runner.by_epoch and self._due(runner.epoch, runner.finished):
            self._save(runner, "epoch", runner.epoch)

    def after_iter(self, runner: "Runner") -> None:
        if (not self.by_epoch or not runner.by_epoch) and self._due(runner.iter, runner.iter >= runner.max_iters):
            self._save(runner, "iter", runner.iter)

    def _save(self, runner: "Runner", unit: str, count: int) -> None:
        if runner.rank != 0:
            return
        runner.save_latest(unit, count, save_optimizer=self.save_optimizer)
        if self.max_keep_ckpts > 0:
            step = self.interval if self.interval > 0 else 1
            for old in range(count - self.max_keep_ckpts * step, 0, -step):
                stale = runner.work_dir / f"{unit}_{old}.pth"
                if stale.exists():
                    stale.unlink()


def check_dynamic_intervals(value: Any) -> list[tuple[int, int]]:
    """``evaluation.dynamic_intervals`` as sorted ``(milestone, interval)`` pairs; raises ConfigError."""
    if value is None:
        return []
    pairs = []
    for item in value if isinstance(value, (list, tuple)) else [value]:
        if (not isinstance(item, (list, tuple)) or len(item) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in item)):
            raise ConfigError(f"evaluation.dynamic_intervals: expected [[milestone, interval], ...] of positive "
                              f"integers, got {value!r}")
        pairs.append((int(item[0]), int(item[1])))
    return sorted(pairs)


#: rule inference for ``save_best`` keys, as mmcv: substrings meaning "greater is better" / "less".
GREATER_KEYS = ("mAP", "AR", "acc", "top", "auc", "precision")
LESS_KEYS = ("loss",)


class EvalHook(Hook):
    """Evaluates on the validation set every ``interval`` epochs (iterations) and keeps the best model.

    Args:
        evaluate_fn: ``(model, progress) -> CocoEvaluation`` on the validation set (given by ``train``).
        interval: evaluate every ``interval`` epochs (iterations when not ``by_epoch``); the last one always.
        by_epoch: count in epochs.
        start: first epoch (iteration) to evaluate at; None: ``interval``.
        save_best: ``"auto"`` (the first metric, ``bbox_mAP``), a metric key, or None.
        rule: ``"greater"`` or ``"less"``; None infers it from the key (``mAP``/``AR``: greater, ``loss``: less).
        dynamic_intervals: ``[(milestone, interval), ...]``: from ``milestone`` epochs (iterations) on,
            evaluate every ``interval`` (mmcv's ``dynamic_intervals``; YOLOX evaluates every epoch at the end).
    """

    priority = "LOW"

    def __init__(
        self,
        evaluate_fn: Callable[..., "CocoEvaluation"],
        interval: int = 1,
        by_epoch: bool = True,
        start: int | None = None,
        save_best: str | None = None,
        rule: str | None = None,
        dynamic_intervals: Sequence[Sequence[int]] | None = None,
    ) -> None:
        if rule is not None and rule not in ("greater", "less"):
            raise ConfigError(f"evaluation.rule: must be 'greater' or 'less', got '{rule}'")
        self.dynamic_intervals = check_dynamic_intervals(dynamic_intervals)
        self.evaluate_fn = evaluate_fn
        self.interval = max(1, interval)
        self.by_epoch = by_epoch
        self.start = start
        self.save_best = save_best
        self.rule = rule

    def interval_at(self, count: int) -> int:
        """The interval in force at ``count`` finished epochs (iterations)."""
        interval = self.interval
        for milestone, value in self.dynamic_intervals:
            if count >= milestone:
                interval = value
        return interval

    def _due(self, count: int, last: bool) -> bool:
        if self.start is not None and count < self.start:
            return False
        first = self.start if self.start is not None else 0
        return last or (count - first) % self.interval_at(count) == 0

    def after_epoch(self, runner: "Runner") -> None:
        if self.by_epoch and runner.by_epoch and self._due(runner.epoch, runner.finished):
            self._evaluate(runner, "epoch", runner.epoch)

    def after_iter(self, runner: "Runner") -> None:
        if (not self.by_epoch or not runner.by_epoch) and self._due(runner.iter, runner.iter >= runner.max_iters):
            self._evaluate(runner, "iter", runner.iter)

    def _evaluate(self, runner: "Runner", unit: str, count: int) -> None:
        runner.model.eval()
        try:
            with preserved_rng(), runner.eval_weights():
                result = self.evaluate_fn(runner.model, runner.progress)
        finally:
            runner.model.train()
        metrics = dict(result.metrics)
        runner.last_metrics = metrics
        runner.pending_val = metrics
        if metrics:
            logger.info("%s %d evaluation: %s", unit, count, ", ".join(f"{k}: {v:.4f}" for k, v in metrics.items()))
        if self.save_best and metrics:
            self._save_best(runner, metrics, unit, count)

    def _save_best(self, runner: "Runner", metrics: Mapping[str, float], unit: str, count: int) -> None:
        key = next(iter(metrics)) if self.save_best == "auto" else self.save_best
        if key not in metrics:
            raise ConfigError(
                f"evaluation.save_best: '{key}' is not a metric of this evaluation (have: {', '.join(metrics)})"
            )
        rule = self.rule or ("less" if any(s in key for s in LESS_KEYS) else "greater")
        score = float(metrics[key])
        best = runner.meta.get("best") or {}
        old = best.get("score")
        better = old is None or (score > old if rule == "greater" else score < old)
        if not better:
            return
        path = runner.work_dir / f"best_{key}_{unit}_{count}.pth"
        runner.meta["best"] = {"key": key, "score": score, "rule": rule, "path": path.name, unit: count}
        if runner.rank == 0:
            old_path = best.get("path")
            runner.save_checkpoint(path)
            if old_path and old_path != path.name and (runner.work_dir / old_path).exists():
                (runner.work_dir / old_path).unlink()
            logger.info("best %s %.4f at %s %d: saved %s", key, score, unit, count, path.name)


class LoggerHook(Hook):
    """Writes the JSON-lines log and the text log lines, and emits progress events.

    Loss values are averaged over the ``interval`` iterations since the last line (summed as
    tensors, converted to floats only at the interval). JSON lines use mmdet's keys::

        {"mode": "train", "epoch": 1, "iter": 50, "lr": 0.01, "memory": 0, "data_time": 0.01,
         "loss_cls": 0.5, "loss_bbox": 0.3, "loss": 0.8, "time": 0.4}
        {"mode": "val", "epoch": 1, "iter": 100, "lr": 0.01, "bbox_mAP": 0.5, ...}

    Args:
        interval: iterations between lines (the last iteration of an epoch always writes one).
        json_path: the ``<timestamp>.log.json`` file (rank 0 only); None: no JSON log.
        header: first JSON line (env info, config, seed), as mmdet writes.
    """

    priority = "VERY_LOW"

    def __init__(self, interval: int = 50, json_path: Path | None = None, header: Mapping[str, Any] | None = None) -> None:
        self.interval = max(1, interval)
        self.json_path = json_path
        self.header = dict(header or {})
        self._file: IO[str] | None = None
        self._sums: dict[str, Tensor] = {}
        self._count = 0
        self._time = 0.0
        self._data_time = 0.0
        self._tick = 0.0
        self._run_start = 0.0
        self._start_iter = 0
        self.last_losses: dict[str, float] = {}

    def before_run(self, runner: "Runner") -> None:
        if self.json_path is not None and runner.rank == 0:
            self._file = open(self.json_path, "a", buffering=1)
            if self.header:
                self._file.write(json.dumps(self.header) + "\n")
        self._run_start = time.perf_counter()
        self._start_iter = runner.iter

    def before_iter(self, runner: "Runner") -> None:
        self._tick = time.perf_counter()
        self._data_time += runner.data_time

    def after_iter(self, runner: "Runner") -> None:
        now = time.perf_counter()
        self._time += now - self._tick + runner.data_time
        for k, v in runner.log_vars.items():
            self._sums[k] = self._sums[k] + v if k in self._sums else v.clone()
        self._count += 1
        end_of_epoch = runner.by_epoch and runner.inner_iter >= runner.iters_per_epoch
        if runner.iter % self.interval == 0 or end_of_epoch or runner.iter >= runner.max_iters:
            self._write_train(runner)
        elif runner.iter - self._start_iter == EARLY_ETA_ITERS:
            self._write_early_eta(runner, now)
        if runner.pending_val is not None and not runner.by_epoch:
            self._write_val(runner)
        if runner.progress is not None:
            runner.progress(
                ProgressEvent(
                    phase="train", epoch=runner.epoch + 1, iter=runner.iter, max=runner.max_iters,
                    losses=self.last_losses, lr=runner.current_lr, eta=self._eta(runner, now),
                )
            )

    def after_epoch(self, runner: "Runner") -> None:
        if runner.pending_val is not None:
            self._write_val(runner)

    def after_val_epoch(self, runner: "Runner") -> None:
        """The validation loss of a ``workflow`` val phase: a ``mode: val`` JSON line and a text line."""
        record: dict[str, Any] = {
            "mode": "val",
            "epoch": runner.epoch if runner.by_epoch else runner.epoch + 1,
            "iter": runner.val_iters,
            "lr": runner.current_lr,
        }
        losses = dict(runner.val_log_vars)
        loss_total = losses.pop("loss", None)
        record.update(losses)
        if loss_total is not None:
            record["loss"] = loss_total
        if self._file is not None:
            self._file.write(json.dumps(_finite(record)) + "\n")
        where = f"Epoch(val) [{record['epoch']}][{runner.val_iters}]" if runner.by_epoch else f"Iter(val) [{runner.val_iters}]"
        logger.info("%s\t%s", where, ", ".join(f"{k}: {v:.4f}" for k, v in record.items()
                                                if k not in ("mode", "epoch", "iter", "lr")))

    def after_run(self, runner: "Runner") -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _write_early_eta(self, runner: "Runner", now: float) -> None:
        """One line after the first :data:`EARLY_ETA_ITERS` iterations: the measured pace and the time left."""
        eta = self._eta(runner, now)
        if eta is None:
            return
        pace = (now - self._run_start) / (runner.iter - self._start_iter)
        logger.info("measured %.2f s/iteration over the first %d iterations: about %s left for %d iterations "
                    "(evaluation not included)", pace, EARLY_ETA_ITERS, timedelta(seconds=int(eta)),
                    runner.max_iters - runner.iter)

    def _eta(self, runner: "Runner", now: float) -> float | None:
        done = runner.iter - self._start_iter
        if done <= 0:
            return None
        return (now - self._run_start) / done * (runner.max_iters - runner.iter)

    def _memory_mb(self, runner: "Runner") -> int:
        if runner.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(runner.device) / 2**20)
        return 0

    def _write_train(self, runner: "Runner") -> None:
        n = max(1, self._count)
        losses = {k: float(v) / n for k, v in self._sums.items()}
        self.last_losses = {k: v for k, v in losses.items() if "loss" in k}
        record: dict[str, Any] = {
            "mode": "train",
            "epoch": runner.epoch + 1,
            "iter": runner.inner_iter if runner.by_epoch else runner.iter,
            "lr": runner.current_lr,
            "memory": self._memory_mb(runner),
            "data_time": self._data_time / n,
        }
        loss_total = losses.pop("loss", None)
        record.update(losses)
        if loss_total is not None:
            record["loss"] = loss_total
        record["time"] = self._time / n
        if self._file is not None:
            self._file.write(json.dumps(_finite(record)) + "\n")
        eta = self._eta(runner, time.perf_counter())
        where = (
            f"Epoch [{runner.epoch + 1}][{runner.inner_iter}/{runner.iters_per_epoch}]"
            if runner.by_epoch
            else f"Iter [{runner.iter}/{runner.max_iters}]"
        )
        terms = ", ".join(f"{k}: {v:.4f}" for k, v in record.items() if k not in ("mode", "epoch", "iter", "lr", "memory", "data_time", "time"))
        logger.info(
            "%s\tlr: %.3e, eta: %s, time: %.3f, data_time: %.3f, memory: %d, %s",
            where, record["lr"], timedelta(seconds=int(eta)) if eta is not None else "?",
            record["time"], record["data_time"], record["memory"], terms,
        )
        self._sums.clear()
        self._count = 0
        self._time = 0.0
        self._data_time = 0.0

    def _write_val(self, runner: "Runner") -> None:
        metrics = runner.pending_val or {}
        runner.pending_val = None
        record: dict[str, Any] = {
            "mode": "val",
            "epoch": runner.epoch if runner.by_epoch else runner.epoch + 1,
            "iter": runner.iters_per_epoch if runner.by_epoch else runner.iter,
            "lr": runner.current_lr,
        }
        record.update(metrics)
        bbox_keys = ["bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l"]
        if all(k in metrics for k in bbox_keys):
            record["bbox_mAP_copypaste"] = " ".join(f"{metrics[k]:.3f}" for k in bbox_keys)
        if self._file is not None:
            self._file.write(json.dumps(_finite(record)) + "\n")


def _finite(record: Mapping[str, Any]) -> dict[str, Any]:
    """JSON has no NaN/inf: write them as strings so every line stays parseable."""
    return {k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}


def build_custom_hooks(nodes: Sequence[Mapping[str, Any]] | None, *, dry_run: bool = False) -> list[tuple[Hook, int]]:
    """Build ``custom_hooks`` entries from the HOOKS registry; returns ``(hook, priority)`` pairs."""
    from detcli.registry import build

    hooks: list[tuple[Hook, int]] = []
    for i, node in enumerate(nodes or []):
        if not isinstance(node, Mapping):
            raise ConfigError(f"custom_hooks.{i}: expected a mapping with a 'type' key, got {node!r}")
        node = dict(node)
        try:
            priority = priority_value(node.pop("priority", "NORMAL"))
        except ConfigError as e:
            raise ConfigError(f"custom_hooks.{i}.priority: {e}") from None
        hook = build(node, HOOKS, path=f"custom_hooks.{i}", dry_run=dry_run)
        if not dry_run:
            hooks.append((hook, priority))
    return hooks


# ----------------------------------------------------------------------------- YOLOX training hooks
def _train_dataset(runner: "Runner", needs: str, hook: str) -> Any:
    dataset = runner.datasets.get("train")
    if dataset is None or not hasattr(dataset, needs):
        raise ConfigError(f"{hook} needs data.train to be a MultiImageMixDataset (it has no {needs}), got "
                          f"{type(dataset).__name__}")
    return dataset


def restart_workers(runner: "Runner") -> None:
    """Make the next epoch's loader start new worker processes, so that they see a dataset changed
    in the main process (persistent workers keep their copy otherwise)."""
    loader = runner.make_loader(runner.epoch)
    if getattr(loader, "persistent_workers", False) and getattr(loader, "_iterator", None) is not None:
        loader._iterator = None


def run_epochs(runner: "Runner") -> int:
    """The run's length in epochs (an iteration-based run: its iterations in whole epochs, rounded up)."""
    if runner.max_epochs:
        return int(runner.max_epochs)
    return -(-runner.max_iters // runner.iters_per_epoch)


@HOOKS.register()
class ExpMomentumEMAHook(Hook):
    """Exponential moving average of the model's weights (mmdet 2.x ``ExpMomentumEMAHook``).

    After iteration ``i`` (1-based, every ``interval``), every floating-point entry of the model's
    ``state_dict`` (parameters and buffers such as BN statistics) updates
    ``ema = (1 - m) * ema + m * weight`` with ``m = (1 - momentum) * exp(-i / total_iter) + momentum``
    (mmdet's ``momentum_fun`` of its 0-based iteration ``i - 1``). Integer buffers are kept as copies.

    Evaluation and checkpoints use the EMA weights (the runner swaps them in,
    :meth:`~detcli.engine.runner.Runner.eval_weights`): a checkpoint's ``state_dict`` holds the EMA
    weights, ready for ``det test``/export, and ``hooks.ExpMomentumEMAHook.train_weights`` the
    weights training continues from, so ``--resume`` is bit-identical to an uninterrupted run.

    Args:
        momentum: the final momentum.
        total_iter: time constant of the momentum's decay.
        interval: update every ``interval`` iterations.
        skip_buffers: average parameters only (buffers are then swapped with their copies, unchanged).
        resume_from: must be None: det resumes the EMA with the run (``--resume``/``resume_from``).
    """

    priority = 49

    def __init__(self, momentum: float = 0.0002, total_iter: int = 2000, interval: int = 1, skip_buffers: bool = False,
                 resume_from: str | None = None) -> None:
        if not 0 < momentum < 1:
            raise ConfigError(f"ExpMomentumEMAHook.momentum must be in (0, 1), got {momentum}")
        if total_iter <= 0 or interval < 1:
            raise ConfigError("ExpMomentumEMAHook: total_iter must be > 0 and interval >= 1")
        if resume_from is not None:
            raise ConfigError("ExpMomentumEMAHook.resume_from: det resumes the EMA weights with the run; "
                              "use det train --resume (or the top-level resume_from) instead")
        self.momentum = float(momentum)
        self.total_iter = float(total_iter)
        self.interval = int(interval)
        self.skip_buffers = bool(skip_buffers)
        self.live: dict[str, Tensor] = {}
        self.ema: dict[str, Tensor] = {}
        self.swapped = False

    def momentum_at(self, iteration: int) -> float:
        """``m`` after the 1-based ``iteration``."""
        return (1 - self.momentum) * math.exp(-iteration / self.total_iter) + self.momentum

    def before_run(self, runner: "Runner") -> None:
        model = runner.model
        names = {n for n, _ in model.named_parameters()} if self.skip_buffers else None
        self.live = {k: v for k, v in model.state_dict().items() if names is None or k in names}
        self.ema = {k: v.detach().clone() for k, v in self.live.items()}
        state = runner.resumed_hook_states.get(type(self).__name__)
        if state is not None:  # the model holds the checkpoint's (EMA) weights: put training's back
            train = state["train_weights"]
            missing = sorted(set(self.live) - set(train))
            if missing:
                raise ConfigError(f"ExpMomentumEMAHook: the checkpoint's training weights lack {missing[:3]}")
            with torch.no_grad():
                for k, v in self.live.items():
                    v.copy_(train[k])
        self.swapped = False

    @torch.no_grad()
    def after_iter(self, runner: "Runner") -> None:
        if runner.iter % self.interval:
            return
        m = self.momentum_at(runner.iter)
        for k, v in self.live.items():
            if v.dtype.is_floating_point:
                self.ema[k].mul_(1 - m).add_(v, alpha=m)

    @torch.no_grad()
    def swap_weights(self, runner: "Runner") -> None:
        """Exchange the model's weights with the EMA ones (exactly; called in pairs)."""
        for k, v in self.live.items():
            tmp = v.clone()
            v.copy_(self.ema[k])
            self.ema[k].copy_(tmp)
        self.swapped = not self.swapped

    def checkpoint_state(self, runner: "Runner") -> dict[str, Any]:
        train = self.ema if self.swapped else self.live
        return {"train_weights": {k: v.detach().clone() for k, v in train.items()}}


@HOOKS.register()
class YOLOXModeSwitchHook(Hook):
    """For the last epochs, drop the strong augmentations and add the L1 box loss (mmdet 2.x).

    From the epoch where ``epoch + 1 >= max_epochs - num_last_epochs`` (0-based; mmdet switches
    before that same epoch, so ``num_last_epochs + 1`` epochs run in the final mode) the training
    dataset skips ``skip_type_keys`` and ``model.bbox_head.use_l1`` becomes True when the head has
    that attribute. The check runs before every epoch, so a resumed run is in the right mode too.
    Needs ``data.train`` of type MultiImageMixDataset.
    """

    priority = 48

    def __init__(self, num_last_epochs: int = 15, skip_type_keys: Sequence[str] = ("Mosaic", "RandomAffine", "MixUp")) -> None:
        if int(num_last_epochs) < 0:
            raise ConfigError(f"YOLOXModeSwitchHook.num_last_epochs must be >= 0, got {num_last_epochs}")
        self.num_last_epochs = int(num_last_epochs)
        self.skip_type_keys = tuple(skip_type_keys)
        self.switched = False

    def before_run(self, runner: "Runner") -> None:
        _train_dataset(runner, "update_skip_type_keys", "YOLOXModeSwitchHook")

    def switch_epoch(self, runner: "Runner") -> int:
        """The 0-based epoch the final mode starts at."""
        return run_epochs(runner) - self.num_last_epochs - 1

    def before_epoch(self, runner: "Runner") -> None:
        if self.switched or runner.epoch < self.switch_epoch(runner):
            return
        logger.info("epoch %d: no Mosaic/MixUp from now on (skipping %s); L1 box loss on",
                    runner.epoch + 1, ", ".join(self.skip_type_keys))
        _train_dataset(runner, "update_skip_type_keys", "YOLOXModeSwitchHook").update_skip_type_keys(self.skip_type_keys)
        restart_workers(runner)
        head = getattr(runner.model, "bbox_head", None)
        if head is not None and hasattr(head, "use_l1"):
            head.use_l1 = True
        self.switched = True


def resize_batch(images: ImageBatch, targets: list[GroundTruth], size: tuple[int, int]) -> tuple[ImageBatch, list[GroundTruth]]:
    """Resize a training batch to ``size = (h, w)`` (bilinear, ``align_corners=False``), boxes scaled
    with it (mmdet 2.x ``YOLOX._preprocess``). Masks are not supported."""
    h, w = images.tensor.shape[-2:]
    th, tw = int(size[0]), int(size[1])
    if (th, tw) == (h, w):
        return images, targets
    sy, sx = th / h, tw / w
    tensor = F.interpolate(images.tensor, size=(th, tw), mode="bilinear", align_corners=False)
    sizes = [(min(th, int(round(ih * sy))), min(tw, int(round(iw * sx)))) for ih, iw in images.image_sizes]
    factor = images.tensor.new_tensor([sx, sy, sx, sy])
    out = []
    for t, image_size in zip(targets, sizes):
        if t.masks is not None:
            raise ConfigError("SyncRandomSizeHook resizes boxes only; the training data has masks")
        out.append(dataclasses.replace(t, image_size=image_size, boxes=Boxes(t.boxes.tensor * factor),
                                       ignore_boxes=Boxes(t.ignore_boxes.tensor * factor)))
    return ImageBatch(tensor, sizes), out


@HOOKS.register()
class SyncRandomSizeHook(Hook):
    """Multi-scale training: every ``interval`` iterations a new input size for the batches
    (mmdet 2.x ``SyncRandomSizeHook``; the detector-side random resize of v2.19+).

    From iteration ``k`` (0-based, ``k`` a positive multiple of ``interval``) until the next draw, each
    batch is resized (:func:`resize_batch`) to ``(32 * s, 32 * int(s * w / h))`` with ``s`` uniform
    over the integers of ``ratio_range`` (inclusive) and ``(h, w) = img_scale``; before the first draw
    batches keep their size. ``s`` comes from ``default_rng([seed, k, 0x5157])``: the same on every
    rank without a broadcast, and a resumed run draws the same sizes.

    Args:
        ratio_range: ``(min, max)`` multiples of 32; None: the model's ``random_size_range``.
        img_scale: ``(h, w)`` giving the aspect ratio; None: the model's ``input_size``.
        interval: iterations between draws; None: the model's ``random_size_interval``.
        device: accepted for mmdet configs; unused.
    """

    priority = 48

    def __init__(self, ratio_range: Sequence[int] | None = None, img_scale: Sequence[int] | None = None,
                 interval: int | None = None, device: str | None = None) -> None:
        self.ratio_range: tuple[int, int] = (14, 26)
        self.img_scale: tuple[int, int] = (640, 640)
        self.interval = 10
        self.given = {"ratio_range": ratio_range, "img_scale": img_scale, "interval": interval}
        self.configure(ratio_range, img_scale, interval)
        self.current: tuple[int, int] | None = None

    def configure(self, ratio_range: Sequence[int] | None, img_scale: Sequence[int] | None, interval: int | None) -> None:
        """Set (and check) the settings that are not None."""
        if ratio_range is not None:
            if len(ratio_range) != 2 or int(ratio_range[0]) > int(ratio_range[1]) or int(ratio_range[0]) < 1:
                raise ConfigError(f"SyncRandomSizeHook.ratio_range must be (min, max) >= 1, got {ratio_range!r}")
            self.ratio_range = (int(ratio_range[0]), int(ratio_range[1]))
        if img_scale is not None:
            if len(img_scale) != 2 or min(int(v) for v in img_scale) < 1:
                raise ConfigError(f"SyncRandomSizeHook.img_scale must be (h, w), got {img_scale!r}")
            self.img_scale = (int(img_scale[0]), int(img_scale[1]))
        if interval is not None:
            if int(interval) < 1:
                raise ConfigError(f"SyncRandomSizeHook.interval must be >= 1, got {interval}")
            self.interval = int(interval)

    def size_at(self, seed: int, iteration: int) -> tuple[int, int] | None:
        """The input size of the 0-based ``iteration`` (None: unchanged)."""
        k = iteration - iteration % self.interval
        if k <= 0:
            return None
        s = int(np.random.default_rng([int(seed) & 0xFFFFFFFF, int(k), 0x5157]).integers(
            self.ratio_range[0], self.ratio_range[1] + 1))
        return 32 * s, 32 * int(s * self.img_scale[1] / self.img_scale[0])

    def before_run(self, runner: "Runner") -> None:
        model = runner.model
        self.configure(
            self.given["ratio_range"] if self.given["ratio_range"] is not None else getattr(model, "random_size_range", None),
            self.given["img_scale"] if self.given["img_scale"] is not None else getattr(model, "input_size", None),
            self.given["interval"] if self.given["interval"] is not None else getattr(model, "random_size_interval", None),
        )
        runner.batch_transforms.append(self.transform)

    def before_iter(self, runner: "Runner") -> None:
        self.current = self.size_at(int(runner.meta.get("seed", 0)), runner.iter)

    def transform(self, images: ImageBatch, targets: list[GroundTruth]) -> tuple[ImageBatch, list[GroundTruth]]:
        if self.current is None:
            return images, targets
        return resize_batch(images, targets, self.current)


@HOOKS.register()
class SyncNormHook(Hook):
    """Average the BatchNorm statistics over the ranks (mmdet 2.x ``SyncNormHook``; DDP only).

    After every ``interval``-th epoch, and after every epoch from ``max_epochs - num_last_epochs``
    on, each norm layer's buffers (running mean/var) are replaced by their mean over the ranks, so
    that every rank evaluates and saves the same model. Nothing happens with one process.
    """

    priority = 48

    def __init__(self, num_last_epochs: int = 15, interval: int = 1) -> None:
        if int(interval) < 1:
            raise ConfigError(f"SyncNormHook.interval must be >= 1, got {interval}")
        self.num_last_epochs = int(num_last_epochs)
        self.interval = int(interval)

    def due(self, runner: "Runner") -> bool:
        """Whether to synchronise after the epoch just finished (``runner.epoch`` counts it)."""
        last_phase = runner.epoch >= run_epochs(runner) - self.num_last_epochs
        return last_phase or runner.epoch % self.interval == 0

    def after_epoch(self, runner: "Runner") -> None:
        if runner.world_size == 1 or not self.due(runner):
            return
        sync_norm_stats(runner.model)


def sync_norm_stats(model: nn.Module) -> None:
    """Replace every floating-point buffer of the model's BatchNorm layers by its mean over the ranks."""
    import torch.distributed as torch_dist

    norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
    world_size = torch_dist.get_world_size()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, norms):
                for buf in module.buffers(recurse=False):
                    if buf.dtype.is_floating_point:
                        torch_dist.all_reduce(buf)
                        buf.div_(world_size)
