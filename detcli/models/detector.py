"""Shared plumbing of single-stage detectors: backbone -> neck -> dense head, and their settings.

A :class:`SingleStageDetector` owns built components (constructor injection) and the parsed
``train_cfg`` / ``test_cfg`` settings, which it hands to its head as explicit arguments.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor, nn

from detcli.config import is_int, is_number
from detcli.errors import ConfigError, did_you_mean
from detcli.models.assigners import BatchAssigner
from detcli.models.pretrained import PretrainedCfg, load_detector_weights, parse_init_cfg
from detcli.registry import DETECTORS
from detcli.structures import Detections, GroundTruth, ImageBatch
from detcli.weights import LoadReport

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DenseTrainConfig:
    """Training settings of a dense head (the detector's ``train_cfg``).

    Attributes:
        assigner: built assigner (:class:`~detcli.models.assigners.BatchAssigner`; None for heads
            that assign by themselves, e.g. FCOS).
        allowed_border: anchors reaching more than this many pixels outside the image are ignored
            (``-1``: keep all anchors on valid feature-map locations).
        pos_weight: classification weight of positives (``<= 0``: 1).
        debug: accepted for mmdet compatibility; has no effect.
    """

    assigner: BatchAssigner | None = None
    allowed_border: float = -1
    pos_weight: float = -1
    debug: bool = False

    @classmethod
    def parse(cls, cfg: Mapping[str, Any] | None, default_assigner: BatchAssigner | None) -> DenseTrainConfig:
        cfg = dict(cfg or {})
        check_keys(cfg, ("assigner", "allowed_border", "pos_weight", "debug"), "model.train_cfg")
        assigner = cfg.get("assigner", default_assigner)
        if isinstance(assigner, Mapping):
            raise ConfigError("model.train_cfg.assigner: expected a {type: ...} assigner node")
        path = "model.train_cfg"
        return cls(assigner, cfg_number(cfg, "allowed_border", -1, path), cfg_number(cfg, "pos_weight", -1, path),
                   cfg_number(cfg, "debug", False, path, bool))


@dataclass(frozen=True)
class DenseTestConfig:
    """Post-processing settings of a dense head (the detector's ``test_cfg``).

    Attributes:
        nms_pre: candidates kept per level before NMS, by score (``<= 0``: all).
        min_bbox_size: boxes whose width or height is ``<= min_bbox_size`` are dropped (when > 0).
        drop_empty_boxes: also apply that rule when ``min_bbox_size`` is 0, i.e. drop boxes with a side
            ``<= 0`` (candidates clipped flat at the image border) before NMS: MMDetection 3.x's dense
            heads (their ``min_bbox_size >= 0`` check). False (default): mmdet 2.x, whose dense heads
            never filter by size, so such boxes stay and can take part in NMS and the top ``max_per_img``.
        score_thr: candidates need a score ``> score_thr``.
        iou_threshold: NMS IoU threshold (``nms.iou_threshold``).
        class_agnostic: one NMS over all classes (``nms.class_agnostic``).
        max_per_img: detections kept per image after NMS.
        deploy_nms_pre: ``nms_pre`` of an exported ONNX graph (``<= 0``: ``nms_pre``).
        max_output_boxes_per_class: ONNX ``NonMaxSuppression`` cap per class and image (export only).
    """

    nms_pre: int = 1000
    min_bbox_size: float = 0.0
    score_thr: float = 0.05
    iou_threshold: float = 0.5
    class_agnostic: bool = False
    max_per_img: int = 100
    deploy_nms_pre: int = -1
    max_output_boxes_per_class: int = 200
    drop_empty_boxes: bool = False

    @classmethod
    def parse(cls, cfg: Mapping[str, Any] | None) -> DenseTestConfig:
        cfg = dict(cfg or {})
        check_keys(cfg, ("nms_pre", "min_bbox_size", "score_thr", "nms", "max_per_img", "deploy_nms_pre",
                          "max_output_boxes_per_class", "drop_empty_boxes"), "model.test_cfg")
        nms = dict(cfg.get("nms") or {"type": "nms", "iou_threshold": 0.5})
        check_keys(nms, ("type", "iou_threshold", "iou_thr", "class_agnostic"), "model.test_cfg.nms")
        if nms.get("type", "nms") != "nms":
            raise ConfigError(f"model.test_cfg.nms.type: only 'nms' is supported, got {nms.get('type')!r}")
        path = "model.test_cfg"
        iou_key = "iou_threshold" if "iou_threshold" in nms or "iou_thr" not in nms else "iou_thr"
        return cls(cfg_number(cfg, "nms_pre", 1000, path, int), cfg_number(cfg, "min_bbox_size", 0, path),
                   cfg_number(cfg, "score_thr", 0.05, path), cfg_number(nms, iou_key, 0.5, f"{path}.nms"),
                   cfg_number(nms, "class_agnostic", False, f"{path}.nms", bool),
                   cfg_number(cfg, "max_per_img", 100, path, int), cfg_number(cfg, "deploy_nms_pre", -1, path, int),
                   cfg_number(cfg, "max_output_boxes_per_class", 200, path, int),
                   cfg_number(cfg, "drop_empty_boxes", False, path, bool))


def cfg_number(cfg: Mapping[str, Any], key: str, default: float | bool, path: str, kind: type = float) -> Any:
    """``cfg[key]`` (or ``default``) as ``kind`` (float, int or bool), or a :class:`ConfigError` naming ``path.key``.

    Example:
        >>> cfg_number({"max_per_img": 50}, "max_per_img", 100, "model.test_cfg", int)
        50
    """
    value = cfg.get(key, default)
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = is_int(value) or (isinstance(value, float) and value.is_integer())
    else:
        ok = is_number(value)
    if not ok:
        what = {bool: "true or false", int: "an integer"}.get(kind, "a finite number")
        example = str(default).lower() if isinstance(default, bool) else default
        raise ConfigError(f"{path}.{key}: expected {what}, got {value!r} (e.g. {key}: {example})")
    return kind(value)


def check_keys(cfg: Mapping[str, Any], allowed: tuple[str, ...], path: str) -> None:
    """Raise :class:`ConfigError` (with a did-you-mean hint) for a key of ``cfg`` not in ``allowed``."""
    for key in cfg:
        if key not in allowed:
            raise ConfigError(f"{path}.{key}: unknown key '{key}'{did_you_mean(key, allowed)} "
                              f"(valid keys: {', '.join(allowed)})")


class DenseHead(Protocol):
    """What a :class:`SingleStageDetector` needs from its head."""

    num_classes: int

    def loss(self, feats: tuple[Tensor, ...], images: ImageBatch, targets: list[GroundTruth],
             train_cfg: DenseTrainConfig) -> dict[str, Tensor]: ...

    def predict(self, feats: tuple[Tensor, ...], images: ImageBatch,
                test_cfg: DenseTestConfig) -> list[Detections]: ...


class BaseDetector(nn.Module):
    """What every detector shares: pretrained loading, the backbone + neck pass on channels-last
    maps, and ``forward`` dispatching to :meth:`loss` / :meth:`predict` (see docs/architecture.md)."""

    backbone: nn.Module
    neck: nn.Module | None
    pretrained: PretrainedCfg | None

    def init_weights(self, allow_partial: bool = False) -> list[LoadReport]:
        """Load pretrained weights: the backbone's ``init_cfg``, then the detector's own if given.

        Returns one :class:`~detcli.weights.LoadReport` per load (also logged as a table).

        Raises:
            CheckpointError: a load leaving more than the classification layers random, unless
                ``allow_partial`` (or ``init_cfg.strict: false``).
        """
        reports: list[LoadReport] = []
        init = getattr(self.backbone, "init_weights", None)
        if callable(init):
            reports += init(allow_partial=allow_partial) or []
        if self.pretrained is not None:
            reports.append(load_detector_weights(self, self.pretrained.checkpoint,
                                                 allow_partial=allow_partial or not self.pretrained.strict))
        return reports

    def extract_feat(self, images: Tensor) -> tuple[Tensor, ...]:
        """images (Tensor[B, 3, H, W]) -> pyramid maps (B, C, H_l, W_l).

        On the CPU the network runs in channels-last memory format (oneDNN convolutions and
        GroupNorm are faster in it, and the heads' per-prior flattening needs no copy); values
        and shapes are unchanged.
        """
        if images.device.type == "cpu":
            images = images.contiguous(memory_format=torch.channels_last)
        feats = self.backbone(images)
        return tuple(self.neck(feats)) if self.neck is not None else tuple(feats)

    def forward(self, images: ImageBatch, targets: list[GroundTruth] | None = None) -> dict[str, Tensor] | list[Detections]:
        """Losses when ``targets`` are given, otherwise detections."""
        if targets is not None:
            return self.loss(images, targets)
        return self.predict(images)

    def loss(self, images: ImageBatch, targets: list[GroundTruth]) -> dict[str, Tensor]:
        raise NotImplementedError

    def predict(self, images: ImageBatch) -> list[Detections]:
        raise NotImplementedError


@DETECTORS.register()
class SingleStageDetector(BaseDetector):
    """Backbone, optional neck and a dense head, with the det model contract.

    Registered as ``SingleStageDetector`` (mmdet's name) for heads that come without a detector of
    their own, e.g. a plugin's dense head (docs/extending.md).

    ``model(images, targets)`` returns the loss dict, ``model(images)`` a list of
    :class:`Detections` (one per image, in the coordinates of ``images``, clipped to
    ``images.image_sizes[i]``, sorted by decreasing score, at most ``test_cfg.max_per_img``).

    Args:
        backbone: built backbone returning a tuple of maps.
        neck: built neck, or None.
        bbox_head: built dense head.
        train_cfg: ``{assigner, allowed_border, pos_weight, debug}`` (assigner already built).
        test_cfg: ``{nms_pre, min_bbox_size, score_thr, nms: {type: nms, iou_threshold}, max_per_img}``
            (and optionally ``drop_empty_boxes``, see :class:`DenseTestConfig`).
        init_cfg: ``{type: Pretrained, checkpoint: PATH}`` with a whole-detector checkpoint.
    """

    default_assigner: BatchAssigner | None = None
    #: the dense-head class a subclass requires (``model.bbox_head`` of another type is a ConfigError)
    head_type: ClassVar[type[nn.Module] | None] = None

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module | None,
        bbox_head: nn.Module,
        train_cfg: Mapping[str, Any] | None = None,
        test_cfg: Mapping[str, Any] | None = None,
        init_cfg: Mapping[str, Any] | None = None,
    ) -> None:
        head = self.head_type
        if head is not None and not isinstance(bbox_head, head):
            raise ConfigError(f"model.bbox_head: {type(self).__name__} needs a head of type {head.__name__}, "
                              f"got {type(bbox_head).__name__}")
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.bbox_head = bbox_head
        self.train_settings = DenseTrainConfig.parse(train_cfg, self.default_assigner)
        self.test_settings = DenseTestConfig.parse(test_cfg)
        self.pretrained = parse_init_cfg(init_cfg, "model")
        # conv weights in the memory format the CPU path runs in (see extract_feat): no per-call reorder
        self.to(memory_format=torch.channels_last)

    @property
    def num_classes(self) -> int:
        return int(self.bbox_head.num_classes)  # type: ignore[arg-type]

    def loss(self, images: ImageBatch, targets: list[GroundTruth]) -> dict[str, Tensor]:
        """Loss dict (``loss_cls``, ``loss_bbox``, ...) for a batch and its ground truth."""
        if len(targets) != len(images):
            raise ValueError(f"got {len(targets)} targets for {len(images)} images")
        feats = self.extract_feat(images.tensor)
        return self.bbox_head.loss(feats, images, targets, self.train_settings)  # type: ignore[operator]

    def predict(self, images: ImageBatch) -> list[Detections]:
        """Detections per image, computed under ``torch.inference_mode`` (results are normal tensors)."""
        with torch.inference_mode():
            feats = self.extract_feat(images.tensor)
            results = self.bbox_head.predict(feats, images, self.test_settings)  # type: ignore[operator]
        # copies made outside inference mode can be modified in place by later stages
        return [Detections(d.image_size, d.boxes.tensor.clone(), d.scores.clone(), d.labels.clone()) for d in results]
