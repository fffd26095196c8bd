"""Builders shared by training, testing and the tools: the model and datasets of a config, and a model
restored from a checkpoint.

:func:`build_model` and :func:`build_split` build from a resolved config; :func:`load_model` restores a
detector from a det checkpoint (or, with a config, from an MMDetection/torchvision file or published weights),
:func:`load_predictor` also an exported ONNX model.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from detcli.engine.checkpoint import check_checkpoint, load_checkpoint, load_state_dict, not_det_error
from detcli.engine.environment import resolve_device
from detcli.engine.zoo import config_classes, resolve_checkpoint, split_zoo_spec
from detcli.errors import CheckpointError, ConfigError

#: keys of a ``data.<split>`` node that configure the loader, not the dataset (mmdet pops them too)
LOADER_KEYS = ("samples_per_gpu", "workers_per_gpu")


@dataclass
class LoadedModel:
    """A detector restored from a checkpoint.

    Attributes:
        model: the detector in eval mode on the requested device.
        cfg: the config it was built from (the checkpoint's unless one was given).
        classes: class names, in label order, from the checkpoint.
        meta: the checkpoint's ``meta`` (epoch, iter, det_version, ...).
    """

    model: nn.Module
    cfg: dict[str, Any]
    classes: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict)


def build_model(cfg: Mapping[str, Any]) -> nn.Module:
    """Build ``cfg['model']`` from the DETECTORS registry (weights not initialised)."""
    import detcli.models  # noqa: F401  (registers the built-in components)
    from detcli.registry import DETECTORS, build

    if "model" not in cfg:
        raise ConfigError("the config has no 'model' section")
    return build(cfg["model"], DETECTORS, path="model")


def split_node(cfg: Mapping[str, Any], split: str) -> tuple[dict[str, Any], int, int]:
    """Return ``(dataset node without loader keys, samples_per_gpu, workers_per_gpu)`` of ``data.<split>``.

    A list of dataset nodes becomes a ``ConcatDataset`` node (mmdet's ``data.train: [A, B]``).
    A split's own ``samples_per_gpu``/``workers_per_gpu`` win over ``data``'s.
    """
    data = cfg.get("data") or {}
    node = data.get(split)
    if isinstance(node, (list, tuple)) and node:  # mmdet: a list of datasets is their concatenation
        node = {"type": "ConcatDataset", "datasets": list(node)}
    if not isinstance(node, Mapping):
        raise ConfigError(f"data.{split}: the config defines no {split} dataset")
    node = dict(node)
    samples = int(node.pop("samples_per_gpu", data.get("samples_per_gpu", 1)))
    workers = int(node.pop("workers_per_gpu", data.get("workers_per_gpu", 0)))
    if samples < 1:
        raise ConfigError(f"data.{split}.samples_per_gpu must be >= 1, got {samples}")
    return node, samples, workers


def build_split(cfg: Mapping[str, Any], split: str, test_mode: bool) -> tuple[Any, int, int]:
    """Build the dataset of ``data.<split>``; return ``(dataset, samples_per_gpu, workers_per_gpu)``.

    Raises:
        DatasetError: the split is empty, or an image file is missing, empty or truncated.
    """
    from detcli.data import build_dataset

    node, samples, workers = split_node(cfg, split)
    dataset = build_dataset(node, test_mode=test_mode, path=f"data.{split}")
    if len(dataset) == 0:
        from detcli.errors import DatasetError

        raise DatasetError(f"data.{split}: the dataset is empty (no images{' with annotations' if not test_mode else ''})")
    if hasattr(dataset, "check_images"):  # missing, empty or truncated files fail here, before any work
        dataset.check_images()
    return dataset, samples, workers


def load_checkpoint_config(checkpoint: str | os.PathLike[str]) -> dict[str, Any]:
    """Return the resolved config stored in a det checkpoint."""
    return copy.deepcopy(dict(load_checkpoint(resolve_checkpoint(checkpoint))["meta"]["config"]))


def load_model(checkpoint: str | os.PathLike[str], cfg: Mapping[str, Any] | None = None, device: str = "cpu") -> LoadedModel:
    """Build the model of a checkpoint and load its weights.

    Args:
        checkpoint: a det checkpoint; or, with ``cfg``, an MMDetection 2.x/3.x or torchvision checkpoint (keys
            renamed onto det's modules); a weights URI, ``zoo`` (``cfg``'s published weights) or ``zoo:PRESET``.
        cfg: a config to build the model from; None uses the one stored in a det checkpoint.
        device: ``cpu``, ``cuda`` or ``cuda:N``.

    Raises:
        CheckpointError: unreadable, a foreign file without ``cfg``, another model family, a class count that
            differs from the model's, or weights that do not fill the model built from ``cfg`` exactly.
        DetError: CUDA requested but not available.
    """
    from detcli.models.pretrained import detector_state_dict, log_report
    from detcli.models.weight_maps import describe_checkpoint
    from detcli.weights import load_weights, read_checkpoint

    dev = resolve_device(device)
    spec, cfg = split_zoo_spec(os.fspath(checkpoint), cfg)
    path = resolve_checkpoint(spec, cfg)
    ckpt = read_checkpoint(path)
    if ckpt.source == "det":
        check_checkpoint(ckpt.raw, path)
        meta = dict(ckpt.meta)
        config = copy.deepcopy(dict(cfg)) if cfg is not None else copy.deepcopy(dict(meta["config"]))
        model = build_model(config)
        load_state_dict(model, ckpt.state_dict, path)
        model.to(dev).eval()
        return LoadedModel(model=model, cfg=config, classes=tuple(meta.get("classes") or ()), meta=meta)
    if cfg is None:
        raise not_det_error(ckpt)
    config = copy.deepcopy(dict(cfg))
    model = build_model(config)
    num_classes = int(getattr(model, "num_classes", 0))
    if ckpt.classes is not None and num_classes and len(ckpt.classes) != num_classes:
        raise CheckpointError(
            f"{path}: class count mismatch: the file has {len(ckpt.classes)} classes ({', '.join(ckpt.classes[:4])}"
            f"{', ...' if len(ckpt.classes) > 4 else ''}), the preset's model {num_classes}; use a preset with "
            f"{len(ckpt.classes)} classes, or fine-tune from it with --load-from"
        )
    log_report(load_weights(model, detector_state_dict(ckpt, model), source=str(path), target=type(model).__name__,
                            hint=describe_checkpoint(ckpt.state_dict)))
    model.to(dev).eval()
    classes = ckpt.classes or config_classes(config, num_classes)
    meta = {"source": ckpt.source, "format": ckpt.version, "file": str(path), "classes": list(classes)}
    return LoadedModel(model=model, cfg=config, classes=tuple(classes), meta=meta)


def load_predictor(checkpoint: str | os.PathLike[str], cfg: Mapping[str, Any] | None = None, device: str = "cpu",
                   backend: str = "pytorch") -> LoadedModel:
    """:func:`load_model` for ``backend="pytorch"``; for ``onnxruntime`` an exported model wrapped in
    :class:`~detcli.engine.onnx_export.OnnxPredictor` (same ``predict`` interface; CPU only)."""
    if backend == "pytorch":
        return load_model(checkpoint, cfg, device)
    if backend != "onnxruntime":
        raise ConfigError(f"--backend {backend!r}: expected pytorch or onnxruntime")
    if device != "cpu":
        raise ConfigError(f"--backend onnxruntime runs on the CPU; drop --device {device}")
    from detcli.engine.onnx_export import OnnxPredictor

    predictor = OnnxPredictor(checkpoint)
    config = copy.deepcopy(dict(cfg)) if cfg is not None else copy.deepcopy(predictor.cfg)
    return LoadedModel(model=predictor, cfg=config, classes=predictor.classes)  # type: ignore[arg-type]
