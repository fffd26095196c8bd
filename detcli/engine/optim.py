"""Optimizers from the ``optimizer`` config section, with mmcv's parameter-wise options.

``optimizer: {type: SGD, lr: 0.02, momentum: 0.9, weight_decay: 0.0001}`` builds
``torch.optim.SGD`` with those keyword arguments; any ``torch.optim`` optimizer works by name.
``paramwise_cfg`` (mmcv ``DefaultOptimizerConstructor`` semantics) sets per-parameter multipliers:

- ``custom_keys: {name: {lr_mult, decay_mult}}``: a parameter whose full name contains ``name``
  gets those multipliers (keys tried in alphabetical order, longer keys first; first match wins).
- ``bias_lr_mult``, ``bias_decay_mult``: for parameters named ``bias`` outside normalisation layers.
- ``norm_decay_mult``: for weights and biases of normalisation layers (BatchNorm, GroupNorm, LayerNorm, ...).

"No weight decay on norm and bias" is::

    optimizer:
      type: SGD
      lr: 0.01
      momentum: 0.9
      weight_decay: 0.0001
      paramwise_cfg: {norm_decay_mult: 0.0, bias_decay_mult: 0.0}

Frozen parameters (``requires_grad=False``) are left out of the optimizer.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from detcli.errors import ConfigError, did_you_mean
from detcli.registry import check_kwargs

logger = logging.getLogger(__name__)

PARAMWISE_KEYS = frozenset({"custom_keys", "bias_lr_mult", "bias_decay_mult", "norm_decay_mult"})
NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm,
)


def optimizer_classes() -> dict[str, type[torch.optim.Optimizer]]:
    """``{name: class}`` of every optimizer in ``torch.optim``."""
    return {
        name: obj
        for name, obj in vars(torch.optim).items()
        if inspect.isclass(obj) and issubclass(obj, torch.optim.Optimizer) and obj is not torch.optim.Optimizer
    }


def check_optimizer_cfg(cfg: Mapping[str, Any], path: str = "optimizer") -> type[torch.optim.Optimizer]:
    """Validate an ``optimizer`` node (type, keyword names and types, paramwise_cfg); return the class."""
    if not isinstance(cfg, Mapping) or "type" not in cfg:
        raise ConfigError(f"{path}: expected a mapping with a 'type' key (e.g. {{type: SGD, lr: 0.01}}), got {cfg!r}")
    classes = optimizer_classes()
    name = cfg["type"]
    if name not in classes:
        raise ConfigError(
            f"{path}.type: unknown optimizer '{name}'{did_you_mean(name, classes)} "
            f"(torch.optim has: {', '.join(sorted(classes))})"
        )
    kwargs = {k: v for k, v in cfg.items() if k not in ("type", "paramwise_cfg")}
    check_kwargs(classes[name], kwargs, path, given={"params"})
    paramwise = cfg.get("paramwise_cfg") or {}
    if not isinstance(paramwise, Mapping):
        raise ConfigError(f"{path}.paramwise_cfg: expected a mapping, got {paramwise!r}")
    for key in paramwise:
        if key not in PARAMWISE_KEYS:
            raise ConfigError(
                f"{path}.paramwise_cfg.{key}: unknown key{did_you_mean(key, PARAMWISE_KEYS)} "
                f"(valid: {', '.join(sorted(PARAMWISE_KEYS))})"
            )
    for key, value in (paramwise.get("custom_keys") or {}).items():
        if not isinstance(value, Mapping) or not set(value) <= {"lr_mult", "decay_mult"}:
            raise ConfigError(
                f"{path}.paramwise_cfg.custom_keys.{key}: expected {{lr_mult: X, decay_mult: Y}}, got {value!r}"
            )
    return classes[name]


def build_optimizer(model: nn.Module, cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Build the optimizer described by ``cfg`` over ``model``'s trainable parameters.

    Args:
        model: the detector.
        cfg: the ``optimizer`` section: ``type``, the optimizer's keyword arguments, optional ``paramwise_cfg``.

    Returns:
        The optimizer. Without ``paramwise_cfg`` it has one parameter group; with it, one group per
        distinct ``(lr_mult, decay_mult)`` (mmcv makes one per parameter; the values are the same, and
        fewer groups keep the fused multi-tensor step fast).

    Raises:
        ConfigError: unknown type (with a did-you-mean), unknown keyword, bad paramwise_cfg.
    """
    optim_cls = check_optimizer_cfg(cfg)
    kwargs = {k: v for k, v in cfg.items() if k not in ("type", "paramwise_cfg")}
    paramwise = dict(cfg.get("paramwise_cfg") or {})
    if not paramwise:
        params = [p for p in model.parameters() if p.requires_grad]
        return optim_cls(params, **kwargs)
    base_lr = kwargs.get("lr")
    base_wd = kwargs.get("weight_decay")
    custom_keys: dict[str, Mapping[str, float]] = dict(paramwise.get("custom_keys") or {})
    sorted_keys = sorted(sorted(custom_keys), key=len, reverse=True)
    bias_lr_mult = float(paramwise.get("bias_lr_mult", 1.0))
    bias_decay_mult = float(paramwise.get("bias_decay_mult", 1.0))
    norm_decay_mult = float(paramwise.get("norm_decay_mult", 1.0))
    groups: dict[tuple[float, float], dict[str, Any]] = {}  # one group per (lr_mult, decay_mult): foreach steps stay fast
    for module_name, module in model.named_modules():
        is_norm = isinstance(module, NORM_TYPES)
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            full_name = f"{module_name}.{param_name}" if module_name else param_name
            matched = next((k for k in sorted_keys if k in full_name), None)
            if matched is not None:
                lr_mult = float(custom_keys[matched].get("lr_mult", 1.0))
                decay_mult = float(custom_keys[matched].get("decay_mult", 1.0))
            elif is_norm:
                lr_mult, decay_mult = 1.0, norm_decay_mult
            elif param_name == "bias":
                lr_mult, decay_mult = bias_lr_mult, bias_decay_mult
            else:
                lr_mult, decay_mult = 1.0, 1.0
            group = groups.get((lr_mult, decay_mult))
            if group is None:
                group = groups[(lr_mult, decay_mult)] = {"params": []}
                if base_lr is not None:
                    group["lr"] = base_lr * lr_mult
                if base_wd is not None:
                    group["weight_decay"] = base_wd * decay_mult
            group["params"].append(param)
    return optim_cls(list(groups.values()), **kwargs)


def scale_lr(lr: float, samples_per_gpu: int, world_size: int, base_batch_size: int = 16) -> float:
    """Linear scaling rule: ``lr * (samples_per_gpu * world_size) / base_batch_size``.

    Example (spec: lr 0.01 set for 4 GPUs x 2 images becomes 0.08 on 16 GPUs x 4 images):
        >>> scale_lr(0.01, samples_per_gpu=4, world_size=16, base_batch_size=4 * 2)
        0.08
    """
    if base_batch_size <= 0:
        raise ConfigError(f"auto_scale_lr.base_batch_size must be positive, got {base_batch_size}")
    return lr * (samples_per_gpu * world_size) / base_batch_size


def auto_scale_lr(cfg: dict[str, Any], *, flag: bool, world_size: int, samples_per_gpu: int | None = None) -> float | None:
    """Scale ``cfg['optimizer']['lr']`` in place when ``flag`` or ``auto_scale_lr.enable`` is set.

    Args:
        samples_per_gpu: the training batch per process; default: resolved from ``cfg`` by
            :func:`detcli.engine.settings.loader_settings` (the rule the training loader uses).

    Returns:
        The new lr, or None when scaling is disabled (the default).
    """
    section = cfg.get("auto_scale_lr") or {}
    if not (flag or section.get("enable", False)):
        return None
    base = int(section.get("base_batch_size", 16))
    if samples_per_gpu is None:
        from detcli.engine.settings import train_batch_size

        samples_per_gpu = train_batch_size(cfg)
    old = float(cfg["optimizer"]["lr"])
    new = scale_lr(old, samples_per_gpu, world_size, base)
    cfg["optimizer"]["lr"] = new
    logger.info(
        "auto-scale-lr: lr %.6g -> %.6g (batch %d x %d, base_batch_size %d)", old, new, samples_per_gpu, world_size, base
    )
    return new
