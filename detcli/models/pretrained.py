"""Pretrained weights for models: ``init_cfg: {type: Pretrained, checkpoint: URI, prefix, strict}``.

The checkpoint may be any URI :func:`detcli.weights.resolve_uri` knows (local path, ``torchvision://NAME``,
``open-mmlab://NAME``, ``http(s)://``) and any file :func:`detcli.weights.read_checkpoint` reads (det,
MMDetection 2.x / 3.x, torchvision). A backbone takes the ``prefix`` part of a detector file (default
``backbone.``; torchvision detection files: ``backbone.body.``) or a classification file minus its ``fc.``
classifier; a whole detector takes a detector file, renamed by :mod:`detcli.models.weight_maps`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from detcli.errors import CheckpointError, ConfigError
from detcli.models.weight_maps import CLASS_LAYER_PATTERNS, convert_state_dict, describe_checkpoint
from detcli.weights import CheckpointFile, LoadReport, load_weights, read_checkpoint, resolve_uri

logger = logging.getLogger(__name__)

INIT_CFG_KEYS = ("type", "checkpoint", "prefix", "strict", "map_location")


@dataclass(frozen=True)
class PretrainedCfg:
    """A parsed ``{type: Pretrained, checkpoint, prefix, strict}`` node.

    Attributes:
        checkpoint: URI or path of the weights.
        prefix: the part of the file's keys to take (stripped), e.g. ``backbone.``; None: automatic.
        strict: refuse a load that leaves more than the classification layers random (``false``: allow it).
    """

    checkpoint: str
    prefix: str | None = None
    strict: bool = True


def parse_init_cfg(init_cfg: Mapping[str, Any] | None, what: str) -> PretrainedCfg | None:
    """Parse ``init_cfg`` (None when absent).

    Raises:
        ConfigError: another ``type``, unknown keys or no ``checkpoint``.
    """
    if init_cfg is None:
        return None
    if not isinstance(init_cfg, Mapping) or init_cfg.get("type") != "Pretrained":
        raise ConfigError(f"{what}.init_cfg: only {{type: Pretrained, checkpoint: URI}} is supported, got {init_cfg!r}")
    unknown = sorted(set(init_cfg) - set(INIT_CFG_KEYS))
    if unknown:
        raise ConfigError(f"{what}.init_cfg: unknown keys {unknown} (valid: {', '.join(INIT_CFG_KEYS)})")
    if not init_cfg.get("checkpoint"):
        raise ConfigError(f"{what}.init_cfg: 'checkpoint' is required (a path, torchvision://NAME or an http(s) URL)")
    prefix = init_cfg.get("prefix")
    strict = init_cfg.get("strict", True)
    if not isinstance(strict, bool):
        raise ConfigError(f"{what}.init_cfg.strict: expected true or false, got {strict!r}")
    return PretrainedCfg(str(init_cfg["checkpoint"]), None if prefix is None else str(prefix), strict)


def load_backbone_weights(backbone: nn.Module, cfg: PretrainedCfg, *, allow_partial: bool = False) -> LoadReport:
    """Load ``cfg.checkpoint`` into a backbone; see the module docstring for which keys are taken.

    Raises:
        CheckpointError: unreadable file, failed download, or weights that leave backbone layers random
            (unless ``allow_partial`` or ``strict: false``).
    """
    ckpt = read_checkpoint(resolve_uri(cfg.checkpoint))
    sd = backbone_state_dict(ckpt, cfg.prefix)
    report = load_weights(backbone, sd, source=cfg.checkpoint, target="backbone",
                          allow_partial=allow_partial or not cfg.strict)
    log_report(report)
    return report


def backbone_state_dict(ckpt: CheckpointFile, prefix: str | None) -> dict[str, Tensor]:
    """The backbone part of a file: ``prefix`` keys (stripped), else ``backbone.`` / ``backbone.body.`` keys,
    else the whole file minus a classification ``fc.`` layer."""
    sd = ckpt.state_dict
    candidates = [prefix] if prefix else ["backbone.body.", "backbone."]
    for pre in candidates:
        if any(k.startswith(pre) for k in sd):
            sd = {k[len(pre):]: v for k, v in sd.items() if k.startswith(pre)}
            break
    else:
        if prefix:
            raise CheckpointError(f"{ckpt.path}: no weights start with init_cfg.prefix '{prefix}' (e.g. {next(iter(sd), 'none')})")
    return {k: v for k, v in sd.items() if not k.startswith("fc.")}


def detector_state_dict(ckpt: CheckpointFile, model: nn.Module) -> dict[str, Tensor]:
    """A detector file's weights under ``model``'s names (MMDetection and torchvision files are renamed; a
    backbone-only file, e.g. ``torchvision://resnet50``, lands under ``backbone.``)."""
    if ckpt.source in ("mmdet", "torchvision"):
        return convert_state_dict(ckpt.source, model, ckpt.state_dict)
    own = model.state_dict()
    if ckpt.source == "state_dict" and not any(k in own for k in ckpt.state_dict):
        as_backbone = {f"backbone.{k}": v for k, v in ckpt.state_dict.items() if not k.startswith("fc.")}
        if any(k in own for k in as_backbone):
            return as_backbone
    return dict(ckpt.state_dict)


def load_detector_weights(model: nn.Module, checkpoint: str | CheckpointFile, *, allow_partial: bool = False,
                          allow_class_layers: bool = True, what: str = "model") -> LoadReport:
    """Load a whole-detector file into ``model`` (``init_cfg`` of a detector, ``load_from``).

    Args:
        allow_class_layers: the classification layers may stay random (fine-tuning to other classes).

    Raises:
        CheckpointError: see :func:`detcli.weights.load_weights`; a family without a key map.
    """
    ckpt = checkpoint if isinstance(checkpoint, CheckpointFile) else read_checkpoint(resolve_uri(checkpoint))
    sd = detector_state_dict(ckpt, model)
    report = load_weights(model, sd, source=str(ckpt.path), target=what, allow_partial=allow_partial,
                          class_patterns=CLASS_LAYER_PATTERNS if allow_class_layers else (),
                          hint=describe_checkpoint(ckpt.state_dict))
    log_report(report)
    return report


def log_report(report: LoadReport) -> None:
    """Log the load table: INFO when everything loaded, WARNING when something stayed random or was left over."""
    (logger.info if report.complete else logger.warning)("%s", report.table())
