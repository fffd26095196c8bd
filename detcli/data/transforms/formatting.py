"""Formatting transforms: arrays to tensors, and Collect, which turns the dict into a Sample.

``DefaultFormatBundle`` + ``Collect`` are the one boundary between the dict-based pipeline and
det's typed structures (:class:`~detcli.data.sample.Sample`, ``ImageMeta``, ``GroundTruth``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from detcli.data.sample import Sample
from detcli.errors import ConfigError, did_you_mean
from detcli.registry import TRANSFORMS
from detcli.structures import Boxes, GroundTruth, ImageMeta

logger = logging.getLogger(__name__)

DEFAULT_META_KEYS = ("filename", "ori_filename", "ori_shape", "img_shape", "pad_shape", "scale_factor",
                     "flip", "flip_direction", "img_norm_cfg")
_KNOWN_META_KEYS = frozenset({*DEFAULT_META_KEYS, "scale", "scale_idx", "keep_ratio", "pad_fixed_size",
                              "pad_size_divisor", "image_id"})
COLLECTABLE_KEYS = ("img", "gt_bboxes", "gt_labels", "gt_bboxes_ignore", "gt_masks")


def image_to_tensor(img: np.ndarray | Tensor) -> Tensor:
    """``(H, W, C)`` or ``(H, W)`` array to a contiguous float32 ``Tensor[C, H, W]``."""
    if isinstance(img, Tensor):
        return img.float()
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = arr[..., None]
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float()  # (C, H, W)


@TRANSFORMS.register()
class DefaultFormatBundle:
    """Convert ``img`` (HWC → CHW float32 tensor), ``gt_bboxes``, ``gt_bboxes_ignore``, ``gt_labels``
    to tensors; ``gt_masks`` stays a :class:`BitmapMasks`/:class:`PolygonMasks` container (CPU only,
    on the padded canvas), which :class:`Collect` puts in ``GroundTruth.masks``.

    Args:
        img_to_float: convert the image to float32 (uint8 images become float tensors anyway,
            since :class:`Sample` images are float32).
    """

    def __init__(self, img_to_float: bool = True) -> None:
        self.img_to_float = img_to_float

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        if "img" in results:
            results["img"] = image_to_tensor(results["img"])
        for key, dtype in (("gt_bboxes", torch.float32), ("gt_bboxes_ignore", torch.float32),
                           ("gt_labels", torch.int64)):
            if key in results:
                results[key] = torch.as_tensor(np.asarray(results[key]), dtype=dtype)
        return results

    def __repr__(self) -> str:
        return f"DefaultFormatBundle(img_to_float={self.img_to_float})"


_warned_image_to_tensor = False


@TRANSFORMS.register()
class ImageToTensor:
    """Deprecated in test pipelines (mmdet 2.x): behaves like DefaultFormatBundle for the image.

    Args:
        keys: keys to convert (``img``).
    """

    def __init__(self, keys: Sequence[str] = ("img",)) -> None:
        global _warned_image_to_tensor
        if not _warned_image_to_tensor:
            logger.warning("ImageToTensor is deprecated: use DefaultFormatBundle (it does the same for 'img')")
            _warned_image_to_tensor = True
        self.keys = tuple(keys)

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        for key in self.keys:
            results[key] = image_to_tensor(results[key])
        return results

    def __repr__(self) -> str:
        return f"ImageToTensor(keys={list(self.keys)})"


def _shape2(shape: Any, default: Sequence[int] | None = None) -> tuple[int, int]:
    if shape is None:
        if default is None:
            raise KeyError("shape")
        shape = default
    return int(shape[0]), int(shape[1])


@TRANSFORMS.register()
class Collect:
    """Build the :class:`Sample`: the image tensor, an ``ImageMeta`` and a ``GroundTruth``.

    ``GroundTruth`` is built when ``gt_bboxes`` is in ``keys``: its boxes and labels, ignore
    boxes when ``gt_bboxes_ignore`` is in ``keys``, masks when ``gt_masks`` is in ``keys``. Its
    coordinates are those of the resized image (``image_size = img_shape``).

    Args:
        keys: which of ``img, gt_bboxes, gt_labels, gt_bboxes_ignore, gt_masks`` to keep; ``img``
            is required.
        meta_keys: accepted for mmdet compatibility and checked for typos. ``ImageMeta`` always
            carries image_id, filename, ori_shape, img_shape, pad_shape, scale_factor, flip and
            flip_direction (defaults: pad_shape = img_shape, scale_factor 1, no flip).
    """

    def __init__(self, keys: Sequence[str], meta_keys: Sequence[str] = DEFAULT_META_KEYS) -> None:
        for k in keys:
            if k not in COLLECTABLE_KEYS:
                raise ValueError(f"Collect: unknown key '{k}'{did_you_mean(k, COLLECTABLE_KEYS)} "
                                 f"(allowed: {', '.join(COLLECTABLE_KEYS)})")
        if "img" not in keys:
            raise ValueError("Collect: keys must contain 'img'")
        if "gt_labels" in keys and "gt_bboxes" not in keys:
            raise ValueError("Collect: 'gt_labels' needs 'gt_bboxes' in keys")
        for k in meta_keys:
            if k not in _KNOWN_META_KEYS:
                raise ValueError(f"Collect: unknown meta key '{k}'{did_you_mean(k, _KNOWN_META_KEYS)}")
        self.keys = tuple(keys)
        self.meta_keys = tuple(meta_keys)

    def __call__(self, results: dict[str, Any]) -> Sample:
        image = image_to_tensor(results["img"])  # (C, H, W)
        img_shape = _shape2(results.get("img_shape"), image.shape[1:])
        factor = results.get("scale_factor")
        if factor is None:
            scale_factor = (1.0, 1.0, 1.0, 1.0)
        elif isinstance(factor, (int, float)):
            scale_factor = (float(factor),) * 4
        else:
            scale_factor = tuple(float(v) for v in np.asarray(factor).reshape(-1)[:4])  # type: ignore[assignment]
        info = results.get("img_info", {})
        meta = ImageMeta(
            image_id=int(info.get("id", 0)),
            filename=str(results.get("filename", info.get("filename", ""))),
            ori_shape=_shape2(results.get("ori_shape"), img_shape),
            img_shape=img_shape,
            pad_shape=_shape2(results.get("pad_shape"), img_shape),
            scale_factor=scale_factor,  # type: ignore[arg-type]
            flip=bool(results.get("flip", False)),
            flip_direction=results.get("flip_direction") if results.get("flip", False) else None,
        )
        gt = None
        if "gt_bboxes" in self.keys:
            boxes = torch.as_tensor(np.asarray(results["gt_bboxes"]), dtype=torch.float32).reshape(-1, 4)
            if "gt_labels" in self.keys:
                labels = torch.as_tensor(np.asarray(results["gt_labels"]), dtype=torch.int64).reshape(-1)
            else:
                labels = torch.zeros(len(boxes), dtype=torch.int64)
            ignore = torch.empty(0, 4)
            if "gt_bboxes_ignore" in self.keys and results.get("gt_bboxes_ignore") is not None:
                ignore = torch.as_tensor(np.asarray(results["gt_bboxes_ignore"]), dtype=torch.float32)
            masks = None
            if "gt_masks" in self.keys:
                masks = results.get("gt_masks")
                if masks is None:
                    raise ConfigError("Collect: 'gt_masks' is in keys but no masks were loaded; "
                                     "set LoadAnnotations with_mask: true (or drop gt_masks from keys)")
            gt = GroundTruth(img_shape, Boxes(boxes), labels, Boxes(ignore.reshape(-1, 4)), masks)
        return Sample(image=image, meta=meta, gt=gt)

    def __repr__(self) -> str:
        return f"Collect(keys={list(self.keys)})"

