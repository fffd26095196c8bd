"""Check a whole config before any work starts, so a typo fails in a second, not after an epoch."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from torch import nn

from detcli.config import check_schema
from detcli.engine.evaluation import ALL_METRICS, HOOK_KEYS, check_eval_options
from detcli.engine.hooks import CheckpointHook, build_custom_hooks, check_dynamic_intervals
from detcli.engine.loggers import build_logger_hooks
from detcli.engine.lr import LrSchedule, MomentumSchedule
from detcli.engine.optim import check_optimizer_cfg
from detcli.engine.settings import RunSettings, parse_settings, runner_settings, split_dataset_node
from detcli.errors import ConfigError
from detcli.evaluation import check_metrics
from detcli.plugins import prepare
from detcli.registry import DETECTORS, build, check_kwargs

logger = logging.getLogger(__name__)



def validate_config(cfg: Mapping[str, Any], source: str) -> RunSettings:
    """Build every component with ``dry_run=True`` and check the runtime sections.

    First :func:`detcli.config.check_schema`: the keys, and the type and range of every value
    without a ``type`` node of its own (:data:`detcli.config.VALUE_TYPES`: optimizer and lr
    numbers, batch sizes, intervals). Then it checks the model, the datasets of ``data.train/val/test`` with their pipelines, ``optimizer``
    (type in ``torch.optim`` and its keywords), ``optimizer_config.grad_clip``, ``lr_config``,
    ``runner``, ``checkpoint_config``, ``log_config``, ``evaluation``, ``custom_hooks`` and
    ``auto_scale_lr``; last it parses the typed run settings (:func:`detcli.engine.settings.parse_settings`).

    Returns:
        The run settings of ``cfg``.

    Raises:
        ConfigError: naming ``source`` and the key path, with the closest valid names.
    """
    try:
        _validate(cfg, str(source))
        return parse_settings(cfg)
    except ConfigError as e:
        message = str(e)
        raise ConfigError(message if message.startswith(str(source)) else f"{source}: {message}") from e


def _validate(cfg: Mapping[str, Any], source: str) -> None:
    import detcli.models  # noqa: F401  (registers model components)
    from detcli.data import dry_run_dataset  # (importing detcli.data registers datasets and transforms)

    check_schema(cfg, source)
    prepare(cfg, source)  # custom_imports / plugins (a no-op when load_config already did it)
    if "model" not in cfg:
        raise ConfigError("model: the config has no model section")
    build(cfg["model"], DETECTORS, path="model", dry_run=True)
    data = cfg.get("data") or {}
    for split in ("train", "val", "test"):
        if split in data:
            node, _ = split_dataset_node(data, split)
            dry_run_dataset(node, test_mode=split != "train", path=f"data.{split}")
    if "optimizer" in cfg:
        check_optimizer_cfg(cfg["optimizer"])
    grad_clip = (cfg.get("optimizer_config") or {}).get("grad_clip")
    if grad_clip is not None:
        if not isinstance(grad_clip, Mapping):
            raise ConfigError(f"optimizer_config.grad_clip: expected {{max_norm: 35, norm_type: 2}} or null, got {grad_clip!r}")
        check_kwargs(nn.utils.clip_grad_norm_, grad_clip, "optimizer_config.grad_clip", given={"parameters"})
    _, max_epochs, max_iters = runner_settings(cfg)
    LrSchedule.from_config(cfg.get("lr_config"), max_epochs=max_epochs, max_iters=max_iters)
    MomentumSchedule.from_config(cfg.get("momentum_config"), max_epochs=max_epochs, max_iters=max_iters)
    ckpt_cfg = cfg.get("checkpoint_config")
    if ckpt_cfg:
        check_kwargs(CheckpointHook, ckpt_cfg, "checkpoint_config")
    build_logger_hooks(cfg.get("log_config"), dry_run=True)
    evaluation = cfg.get("evaluation") or {}
    if "metric" in evaluation:
        try:
            check_metrics(evaluation["metric"], ALL_METRICS)
        except ConfigError as e:
            raise ConfigError(f"evaluation.metric: {e}") from None
    try:
        check_eval_options({k: v for k, v in evaluation.items() if k not in HOOK_KEYS})
    except ConfigError as e:
        raise ConfigError(f"evaluation: {e}") from None
    check_dynamic_intervals(evaluation.get("dynamic_intervals"))
    rule = evaluation.get("rule")
    if rule is not None and rule not in ("greater", "less"):
        raise ConfigError(f"evaluation.rule: must be 'greater' or 'less', got {rule!r}")
    build_custom_hooks(cfg.get("custom_hooks"), dry_run=True)


def check_build(cfg: Mapping[str, Any], source: str) -> RunSettings:
    """``det config check``: :func:`validate_config`, then build what training builds, in a dry run.

    Builds the model (constructors run, weights stay uninitialised and nothing is downloaded), every
    transform of every ``data.<split>.pipeline`` (datasets themselves are not built: no annotation
    file or image is read), the optimizer over the model's parameters, the lr schedule, the checkpoint,
    evaluation and logger hooks and ``custom_hooks``. So errors that only a constructor finds (a norm
    layer det does not have, a bad transform argument, an optimizer keyword of the wrong type) show here.

    Raises:
        ConfigError: naming ``source``.
    """
    settings = validate_config(cfg, source)
    try:
        _build_all(cfg, settings)
    except ConfigError as e:
        message = str(e)
        raise ConfigError(message if message.startswith(str(source)) else f"{source}: {message}") from e
    except (TypeError, ValueError) as e:  # a constructor's own check
        raise ConfigError(f"{source}: building the run failed: {type(e).__name__}: {e}") from e
    return settings


def _build_all(cfg: Mapping[str, Any], settings: RunSettings) -> None:
    from detcli.engine.builders import build_model
    from detcli.engine.hooks import EvalHook, LoggerHook, LrUpdaterHook, MomentumUpdaterHook
    from detcli.engine.optim import build_optimizer

    model = build_model(cfg)
    for split in ("train", "val", "test"):
        loader = getattr(settings.data, split)
        if loader is not None:
            _build_pipelines(loader.dataset, f"data.{split}")
    if settings.schedule.val_phases and settings.data.val is None:
        raise ConfigError("workflow: a val phase computes the validation loss on data.val, which the config lacks")
    sched = settings.schedule
    schedule = LrSchedule.from_config(sched.lr_config, max_epochs=sched.max_epochs, max_iters=sched.max_iters)
    momentum = MomentumSchedule.from_config(sched.momentum_config, max_epochs=sched.max_epochs,
                                            max_iters=sched.max_iters)
    if settings.optim.optimizer is not None:
        optimizer = build_optimizer(model, settings.optim.optimizer)
        LrUpdaterHook(schedule, optimizer)
        if momentum is not None:
            MomentumUpdaterHook(momentum, optimizer)
    ckpt = settings.checkpoint
    CheckpointHook(interval=ckpt.interval, by_epoch=sched.by_epoch if ckpt.by_epoch is None else ckpt.by_epoch,
                   save_optimizer=ckpt.save_optimizer, max_keep_ckpts=ckpt.max_keep_ckpts, save_last=ckpt.save_last)
    ev = settings.evaluation
    EvalHook(lambda *a: None, interval=ev.interval, start=ev.start, save_best=ev.save_best, rule=ev.rule,  # type: ignore[arg-type,return-value]
             dynamic_intervals=[list(p) for p in ev.dynamic_intervals] if ev.dynamic_intervals else None)
    LoggerHook(interval=settings.log.interval)
    build_logger_hooks({"interval": settings.log.interval, "hooks": list(settings.log.hooks)})
    build_custom_hooks(list(settings.custom_hooks) or None)


def _build_pipelines(node: Any, path: str) -> None:
    """Build every transform of every ``pipeline`` in a dataset tree (wrappers and lists included)."""
    from detcli.registry import TRANSFORMS

    if isinstance(node, (list, tuple)):
        for i, item in enumerate(node):
            _build_pipelines(item, f"{path}.{i}")
        return
    if not isinstance(node, Mapping):
        return
    pipeline = node.get("pipeline")
    if isinstance(pipeline, (list, tuple)):
        for i, t in enumerate(pipeline):
            if isinstance(t, Mapping):
                build(t, TRANSFORMS, path=f"{path}.pipeline.{i}")
    for key in ("dataset", "datasets"):
        if key in node:
            _build_pipelines(node[key], f"{path}.{key}")


__all__ = ["check_build", "runner_settings", "validate_config"]
