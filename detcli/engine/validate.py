"""Check a whole config before any work starts, so a typo fails in a second, not after an epoch."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from torch import nn

from detcli.config import check_schema
from detcli.engine.evaluation import ALL_METRICS, HOOK_KEYS, check_eval_options
from detcli.engine.hooks import CheckpointHook, build_custom_hooks, check_dynamic_intervals
from detcli.engine.lr import LrSchedule
from detcli.engine.optim import check_optimizer_cfg
from detcli.engine.runner import RUNNER_TYPES
from detcli.engine.builders import split_node
from detcli.errors import ConfigError, did_you_mean
from detcli.evaluation import check_metrics
from detcli.registry import DETECTORS, build, check_kwargs

logger = logging.getLogger(__name__)

SUPPORTED_LOGGER_HOOKS = ("TextLoggerHook",)


def runner_settings(cfg: Mapping[str, Any]) -> tuple[str, int | None, int | None]:
    """Return ``(type, max_epochs, max_iters)`` of the ``runner`` section (default 12 epochs)."""
    runner = dict(cfg.get("runner") or {"type": "EpochBasedRunner", "max_epochs": 12})
    kind = runner.get("type", "EpochBasedRunner")
    if kind not in RUNNER_TYPES:
        raise ConfigError(f"runner.type: unknown runner '{kind}'{did_you_mean(kind, RUNNER_TYPES)} (known: {', '.join(RUNNER_TYPES)})")
    key = "max_epochs" if kind == "EpochBasedRunner" else "max_iters"
    other = "max_iters" if key == "max_epochs" else "max_epochs"
    if other in runner:
        raise ConfigError(f"runner.{other}: a {kind} counts in {key.split('_')[1]}; set runner.{key} instead")
    value = runner.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"runner.{key}: a {kind} needs {key} as a positive integer, got {value!r}")
    return kind, (value if key == "max_epochs" else None), (value if key == "max_iters" else None)


def validate_config(cfg: Mapping[str, Any], source: str) -> None:
    """Build every component with ``dry_run=True`` and check the runtime sections.

    First :func:`detcli.config.check_schema`: the keys, and the type and range of every value
    without a ``type`` node of its own (:data:`detcli.config.VALUE_TYPES`: optimizer and lr
    numbers, batch sizes, intervals). Then it checks the model, the datasets of ``data.train/val/test`` with their pipelines, ``optimizer``
    (type in ``torch.optim`` and its keywords), ``optimizer_config.grad_clip``, ``lr_config``,
    ``runner``, ``checkpoint_config``, ``log_config``, ``evaluation``, ``custom_hooks`` and
    ``auto_scale_lr``.

    Raises:
        ConfigError: naming ``source`` and the key path, with the closest valid names.
    """
    try:
        _validate(cfg, str(source))
    except ConfigError as e:
        message = str(e)
        raise ConfigError(message if message.startswith(str(source)) else f"{source}: {message}") from e


def _validate(cfg: Mapping[str, Any], source: str) -> None:
    from detcli.data import dry_run_dataset  # (importing detcli.data registers datasets and transforms)
    import detcli.models  # noqa: F401  (registers model components)

    check_schema(cfg, source)
    if "model" not in cfg:
        raise ConfigError("model: the config has no model section")
    build(cfg["model"], DETECTORS, path="model", dry_run=True)
    data = cfg.get("data") or {}
    for split in ("train", "val", "test"):
        if split in data:
            node, _, _ = split_node(cfg, split)
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
    ckpt_cfg = cfg.get("checkpoint_config")
    if ckpt_cfg:
        check_kwargs(CheckpointHook, ckpt_cfg, "checkpoint_config")
    log_cfg = cfg.get("log_config") or {}
    for i, hook in enumerate(log_cfg.get("hooks") or []):
        kind = hook.get("type") if isinstance(hook, Mapping) else None
        if kind not in SUPPORTED_LOGGER_HOOKS:
            logger.warning("log_config.hooks.%d: %s is not supported yet and is ignored (supported: %s)",
                           i, kind, ", ".join(SUPPORTED_LOGGER_HOOKS))
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


__all__ = ["runner_settings", "validate_config"]
