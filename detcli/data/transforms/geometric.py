"""Geometric transforms with mmdet 2.x key contracts: Resize, RandomFlip, Pad, RandomCrop, RandomAffine.

Boxes listed in ``results['bbox_fields']`` are ``float32 (N, 4)`` xyxy arrays in the current
image's pixels; masks listed in ``results['mask_fields']`` are BitmapMasks/PolygonMasks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from detcli.data.transforms.compose import get_rng
from detcli.data.transforms.mix import box_candidates, check_no_masks
from detcli.registry import TRANSFORMS

_DIRECTIONS = ("horizontal", "vertical", "diagonal")
_RESIZE_BACKENDS = ("cv2", "torchvision")
Scale = tuple[int, int]


def rescale_size(old_size: tuple[int, int], scale: Sequence[float]) -> tuple[tuple[int, int], float]:
    """Size of an image rescaled with its aspect ratio kept (mmcv ``rescale_size``).

    Args:
        old_size: ``(w, h)`` of the image.
        scale: ``(long, short)`` bounds in any order: the long edge ends <= max(scale) and the
            short edge <= min(scale).

    Returns:
        ``((new_w, new_h), factor)`` with ``new = int(old * factor + 0.5)``.

    Example:
        >>> rescale_size((640, 480), (1333, 800))
        ((1067, 800), 1.6666666666666667)
    """
    w, h = old_size
    max_long, max_short = max(scale), min(scale)
    factor = min(max_long / max(h, w), max_short / min(h, w))
    return (int(w * factor + 0.5), int(h * factor + 0.5)), factor


def parse_scales(img_scale: Any) -> list[Scale] | None:
    if img_scale is None:
        return None
    if isinstance(img_scale, (list, tuple)) and len(img_scale) == 2 and all(
        isinstance(v, (int, float)) for v in img_scale
    ):
        return [(int(img_scale[0]), int(img_scale[1]))]
    scales = []
    for s in img_scale:
        if not (isinstance(s, (list, tuple)) and len(s) == 2):
            raise ValueError(f"img_scale entries must be (long, short) pairs, got {s!r}")
        scales.append((int(s[0]), int(s[1])))
    if not scales:
        raise ValueError("img_scale must not be empty")
    return scales


def torchvision_resize(img: np.ndarray, scale: Sequence[int], keep_ratio: bool = True) -> np.ndarray:
    """Resize like torchvision's ``GeneralizedRCNNTransform`` (``_resize_image_and_masks``).

    The image becomes float32 and is resized with ``torch.nn.functional.interpolate`` (bilinear,
    ``align_corners=False``, no antialiasing) on a contiguous ``(1, C, H, W)`` tensor. With
    ``keep_ratio`` the factor is ``min(max(scale) / long side, min(scale) / short side)`` (the
    factor of :func:`rescale_size`) and is passed as ``scale_factor`` with
    ``recompute_scale_factor=True``, so each side becomes ``floor(side * factor)``; otherwise the
    image is resized to exactly ``(w, h) = scale``.

    Args:
        img: ``(H, W)`` or ``(H, W, C)`` array.
        scale: ``(long, short)`` bounds with ``keep_ratio``, else the target ``(w, h)``.
        keep_ratio: keep the aspect ratio.

    Returns:
        The resized ``float32`` array, ``(H', W')`` or ``(H', W', C)``.

    Example:
        >>> torchvision_resize(np.zeros((480, 641, 3), np.uint8), (1333, 800)).shape
        (800, 1068, 3)
    """
    arr = np.asarray(img, dtype=np.float32)
    h, w = arr.shape[:2]
    t = torch.from_numpy(arr[..., None] if arr.ndim == 2 else arr).permute(2, 0, 1)[None].contiguous()  # (1, C, H, W)
    with torch.no_grad():
        if keep_ratio:
            factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
            out = F.interpolate(t, scale_factor=factor, mode="bilinear", recompute_scale_factor=True,
                                align_corners=False)
        else:
            out = F.interpolate(t, size=(int(scale[1]), int(scale[0])), mode="bilinear", align_corners=False)
    res = np.ascontiguousarray(out[0].permute(1, 2, 0).numpy())  # (H', W', C)
    return res[..., 0] if arr.ndim == 2 else res


@TRANSFORMS.register()
class Resize:
    """Resize the image, boxes and masks (mmdet ``Resize``).

    The target scale comes from, in order: ``results['scale']``; ``results['scale_factor']``
    (a float, set by MultiScaleFlipAug); else it is drawn from ``img_scale``:
    ``ratio_range`` set ⇒ ``img_scale × U(ratio_range)``; one scale ⇒ it; several scales ⇒
    ``multiscale_mode='range'`` samples the long edge in [min, max] of the long edges and the short
    edge likewise, ``'value'`` picks one of them.

    With ``keep_ratio`` the image is rescaled so that its long edge <= max(scale) and its short
    edge <= min(scale); otherwise it is resized to exactly ``(w, h) = scale``.

    Adds/updates: ``img``, ``img_shape``, ``pad_shape``, ``scale``, ``scale_idx``,
    ``scale_factor (float32[4]: w, h, w, h)``, ``keep_ratio``, every bbox and mask field.

    Args:
        img_scale: ``(long, short)`` or a list of them.
        multiscale_mode: ``range`` or ``value``.
        ratio_range: ``(min, max)`` ratios applied to a single ``img_scale``.
        keep_ratio: keep the aspect ratio.
        bbox_clip_border: clip boxes to the resized image.
        backend: ``cv2`` (mmcv's ``imresize``: ``cv2.resize`` bilinear of the image as it is, each
            side ``int(side * factor + 0.5)``) or ``torchvision`` (:func:`torchvision_resize`:
            float32 result, sides ``floor(side * factor)``, as torchvision's detection models
            resize; put ``Normalize`` before ``Resize`` to follow its order exactly). With
            ``torchvision`` the ``scale_factor`` is kept in float64, so that
            :func:`~detcli.data.map_to_original` multiplies boxes by torchvision's float32 ratio
            ``original / resized`` (``resize_boxes``). Masks are resized as with ``cv2``.
        override: re-draw the scale even if ``results['scale']`` is already set.
    """

    def __init__(
        self,
        img_scale: tuple[int, int] | list[tuple[int, int]] | None = None,
        multiscale_mode: str = "range",
        ratio_range: tuple[float, float] | None = None,
        keep_ratio: bool = True,
        bbox_clip_border: bool = True,
        backend: str = "cv2",
        override: bool = False,
    ) -> None:
        if backend not in _RESIZE_BACKENDS:
            raise ValueError(f"Resize: backend must be one of {list(_RESIZE_BACKENDS)}, got {backend!r}")
        self.backend = backend
        self.img_scale = parse_scales(img_scale)
        if multiscale_mode not in ("range", "value"):
            raise ValueError(f"multiscale_mode must be 'range' or 'value', got {multiscale_mode!r}")
        if ratio_range is not None:
            if self.img_scale is None or len(self.img_scale) != 1:
                raise ValueError("ratio_range needs exactly one img_scale")
            if len(ratio_range) != 2 or ratio_range[0] > ratio_range[1]:
                raise ValueError(f"ratio_range must be (min, max), got {ratio_range!r}")
            ratio_range = (float(ratio_range[0]), float(ratio_range[1]))
        self.multiscale_mode = multiscale_mode
        self.ratio_range = ratio_range
        self.keep_ratio = keep_ratio
        self.bbox_clip_border = bbox_clip_border
        self.override = override

    def _random_scale(self, results: dict[str, Any]) -> None:
        if self.img_scale is None:
            raise ValueError("Resize needs img_scale, or results['scale']/['scale_factor'] set by MultiScaleFlipAug")
        rng = get_rng(results)
        idx: int | None = None
        if self.ratio_range is not None:
            lo, hi = self.ratio_range
            ratio = rng.random() * (hi - lo) + lo
            base = self.img_scale[0]
            scale = (int(base[0] * ratio), int(base[1] * ratio))
        elif len(self.img_scale) == 1:
            scale, idx = self.img_scale[0], 0
        elif self.multiscale_mode == "range":
            longs = [max(s) for s in self.img_scale]
            shorts = [min(s) for s in self.img_scale]
            scale = (int(rng.integers(min(longs), max(longs) + 1)), int(rng.integers(min(shorts), max(shorts) + 1)))
        else:
            idx = int(rng.integers(len(self.img_scale)))
            scale = self.img_scale[idx]
        results["scale"] = scale
        results["scale_idx"] = idx

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        if "scale" not in results or self.override:
            results.pop("scale", None)
            factor = results.get("scale_factor")
            if isinstance(factor, (int, float)) and not self.override:
                h, w = results["img"].shape[:2]
                results["scale"] = (int(w * factor), int(h * factor))
                results["scale_idx"] = None
            else:
                results.pop("scale_factor", None)
                self._random_scale(results)
        self._resize_img(results)
        self._resize_bboxes(results)
        self._resize_masks(results)
        return results

    def _resize_img(self, results: dict[str, Any]) -> None:
        for key in results.get("img_fields", ["img"]):
            img = results[key]
            h, w = img.shape[:2]
            if self.backend == "torchvision":
                img = torchvision_resize(img, results["scale"], self.keep_ratio)
                new_h, new_w = img.shape[:2]
            else:
                if self.keep_ratio:
                    (new_w, new_h), _ = rescale_size((w, h), results["scale"])
                else:
                    new_w, new_h = int(results["scale"][0]), int(results["scale"][1])
                if (new_w, new_h) != (w, h):
                    img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
            results[key] = img
            results["img_shape"] = img.shape
            results["pad_shape"] = img.shape  # in case no Pad follows
            dtype = np.float64 if self.backend == "torchvision" else np.float32
            results["scale_factor"] = np.array([new_w / w, new_h / h, new_w / w, new_h / h], dtype=dtype)
            results["keep_ratio"] = self.keep_ratio

    def _resize_bboxes(self, results: dict[str, Any]) -> None:
        h, w = results["img_shape"][:2]
        for key in results.get("bbox_fields", []):
            boxes = results[key] * results["scale_factor"].astype(np.float32)  # (N, 4)
            if self.bbox_clip_border:
                boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, w)
                boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, h)
            results[key] = boxes.astype(np.float32)

    def _resize_masks(self, results: dict[str, Any]) -> None:
        for key in results.get("mask_fields", []):
            if results.get(key) is not None:
                results[key] = results[key].resize(results["img_shape"][:2])

    def __repr__(self) -> str:
        return (f"Resize(img_scale={self.img_scale}, multiscale_mode={self.multiscale_mode!r}, "
                f"ratio_range={self.ratio_range}, keep_ratio={self.keep_ratio}, "
                f"bbox_clip_border={self.bbox_clip_border}, backend={self.backend!r})")


def bbox_flip(bboxes: np.ndarray, img_shape: Sequence[int], direction: str) -> np.ndarray:
    """Mirror ``bboxes float32 (N, 4)`` xyxy inside an image of shape ``(h, w, ...)``.

    Example:
        >>> bbox_flip(np.array([[10., 20., 30., 40.]]), (50, 100), "horizontal")
        array([[70., 20., 90., 40.]])
    """
    if direction not in _DIRECTIONS:
        raise ValueError(f"unknown flip direction {direction!r} (allowed: {', '.join(_DIRECTIONS)})")
    h, w = img_shape[:2]
    out = bboxes.copy()
    if direction in ("horizontal", "diagonal"):
        out[:, 0] = w - bboxes[:, 2]
        out[:, 2] = w - bboxes[:, 0]
    if direction in ("vertical", "diagonal"):
        out[:, 1] = h - bboxes[:, 3]
        out[:, 3] = h - bboxes[:, 1]
    return out


@TRANSFORMS.register()
class RandomFlip:
    """Flip the image, boxes and masks (mmdet ``RandomFlip``).

    Modes: ``flip_ratio`` float and ``direction`` str (flip with that probability); float and a
    list of directions (each direction with probability ``flip_ratio / len``); a list of ratios
    and a list of directions (one probability per direction). ``flip_ratio=None`` never flips
    unless ``results['flip']`` is set (MultiScaleFlipAug sets it, and it is then obeyed).

    Adds/updates: ``flip``, ``flip_direction``, ``img``, every bbox and mask field.
    """

    def __init__(self, flip_ratio: float | list[float] | None = None,
                 direction: str | list[str] = "horizontal") -> None:
        directions = [direction] if isinstance(direction, str) else list(direction)
        for d in directions:
            if d not in _DIRECTIONS:
                raise ValueError(f"unknown flip direction {d!r} (allowed: {', '.join(_DIRECTIONS)})")
        if isinstance(flip_ratio, (list, tuple)):
            if not isinstance(direction, (list, tuple)) or len(flip_ratio) != len(direction):
                raise ValueError("a list flip_ratio needs a direction list of the same length")
            if any(r < 0 for r in flip_ratio) or sum(flip_ratio) > 1:
                raise ValueError(f"flip ratios must be >= 0 and sum to <= 1, got {flip_ratio}")
            flip_ratio = [float(r) for r in flip_ratio]
        elif flip_ratio is not None and not 0 <= flip_ratio <= 1:
            raise ValueError(f"flip_ratio must be in [0, 1], got {flip_ratio}")
        self.flip_ratio = flip_ratio
        self.direction = direction if isinstance(direction, str) else list(direction)
        self._directions = directions

    def _choose(self, results: dict[str, Any]) -> str | None:
        if self.flip_ratio is None:
            return None
        if isinstance(self.flip_ratio, list):
            probs = [*self.flip_ratio, 1.0 - sum(self.flip_ratio)]
        else:
            single = self.flip_ratio / len(self._directions)
            probs = [single] * len(self._directions) + [1.0 - self.flip_ratio]
        probs = np.clip(np.asarray(probs, dtype=np.float64), 0, None)  # type: ignore[assignment]
        choice = int(get_rng(results).choice(len(probs), p=probs / probs.sum()))  # type: ignore[attr-defined]
        return self._directions[choice] if choice < len(self._directions) else None

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        if "flip" not in results:
            chosen = self._choose(results)
            results["flip"] = chosen is not None
            results["flip_direction"] = chosen
        if results["flip"]:
            direction = results.get("flip_direction") or self._directions[0]
            results["flip_direction"] = direction
            for key in results.get("img_fields", ["img"]):
                img = results[key]
                if direction in ("horizontal", "diagonal"):
                    img = img[:, ::-1]
                if direction in ("vertical", "diagonal"):
                    img = img[::-1]
                results[key] = np.ascontiguousarray(img)
            for key in results.get("bbox_fields", []):
                results[key] = bbox_flip(results[key], results["img_shape"], direction)
            for key in results.get("mask_fields", []):
                if results.get(key) is not None:
                    results[key] = results[key].flip(direction)
        else:
            results["flip_direction"] = None
        return results

    def __repr__(self) -> str:
        return f"RandomFlip(flip_ratio={self.flip_ratio}, direction={self.direction!r})"


@TRANSFORMS.register()
class Pad:
    """Pad the image (and masks) at the bottom/right.

    Exactly one of ``size`` (fixed ``(h, w)``), ``size_divisor`` (pad each side up to a multiple)
    or ``pad_to_square`` (pad to ``max(h, w)``, optionally then to a multiple of ``size_divisor``).

    Adds/updates: ``img``, ``pad_shape``, ``pad_fixed_size``, ``pad_size_divisor``, mask fields.

    Args:
        pad_val: a number for the image, or ``{img: v, masks: v, seg: v}``.
    """

    def __init__(self, size: tuple[int, int] | None = None, size_divisor: int | None = None,
                 pad_to_square: bool = False, pad_val: float | dict[str, float] = 0) -> None:
        if pad_to_square:
            if size is not None:
                raise ValueError("Pad: size and pad_to_square cannot both be set")
        elif (size is None) == (size_divisor is None):
            raise ValueError("Pad: set exactly one of size or size_divisor (or pad_to_square)")
        if size_divisor is not None and size_divisor <= 0:
            raise ValueError(f"Pad: size_divisor must be positive, got {size_divisor}")
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.size_divisor = size_divisor
        self.pad_to_square = pad_to_square
        vals = dict(pad_val) if isinstance(pad_val, Mapping) else {"img": pad_val}
        unknown = set(vals) - {"img", "masks", "seg"}
        if unknown:
            raise ValueError(f"Pad: unknown pad_val keys {sorted(unknown)} (allowed: img, masks, seg)")
        self.pad_val = {"img": 0, "masks": 0, "seg": 255, **vals}

    def _target(self, h: int, w: int) -> tuple[int, int]:
        if self.pad_to_square:
            h = w = max(h, w)
        elif self.size is not None:
            if self.size[0] < h or self.size[1] < w:
                raise ValueError(f"Pad: image {h}x{w} is larger than size {self.size}")
            return self.size
        if self.size_divisor:
            d = self.size_divisor
            h, w = (h + d - 1) // d * d, (w + d - 1) // d * d
        return h, w

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        for key in results.get("img_fields", ["img"]):
            img = results[key]
            h, w = img.shape[:2]
            th, tw = self._target(h, w)
            if (th, tw) != (h, w):
                out = np.full((th, tw, *img.shape[2:]), self.pad_val["img"], dtype=img.dtype)
                out[:h, :w] = img
                img = out
            results[key] = img
        results["pad_shape"] = results["img"].shape
        results["pad_fixed_size"] = self.size
        results["pad_size_divisor"] = self.size_divisor
        for key in results.get("mask_fields", []):
            if results.get(key) is not None:
                results[key] = results[key].pad(results["pad_shape"][:2], int(self.pad_val["masks"]))
        return results

    def __repr__(self) -> str:
        return (f"Pad(size={self.size}, size_divisor={self.size_divisor}, "
                f"pad_to_square={self.pad_to_square}, pad_val={self.pad_val})")


_CROP_TYPES = ("absolute", "absolute_range", "relative", "relative_range")
#: Labels and masks that follow each box field when boxes are dropped.
_BOX_COMPANIONS = {"gt_bboxes": ("gt_labels", "gt_masks"), "gt_bboxes_ignore": ("gt_labels_ignore", "gt_masks_ignore")}


@TRANSFORMS.register()
class RandomCrop:
    """Crop a random window of the image, boxes and masks (mmdet ``RandomCrop``).

    The window size comes from ``crop_type``: ``absolute`` ``(h, w) = crop_size`` (capped by the
    image); ``absolute_range`` ``h ~ U[crop_size[0], min(H, crop_size[1])]`` and likewise ``w``;
    ``relative`` ``(H * crop_size[0], W * crop_size[1])``; ``relative_range`` relative sizes drawn
    from ``[crop_size[i], 1]``. Its corner is uniform over the positions inside the image.

    Boxes are shifted (and clipped with ``bbox_clip_border``); boxes left without area are dropped
    with their labels and masks (``gt_bboxes`` -> ``gt_labels``, ``gt_masks``; likewise the
    ``_ignore`` fields). When no ``gt_bboxes`` survive and ``allow_negative_crop`` is False the
    sample is rejected (returns None; the dataset draws another one). An image without boxes
    to begin with is cropped like any other when ``allow_negative_crop`` is True.

    Adds/updates: ``img``, ``img_shape``, ``pad_shape``, every bbox field, ``gt_labels``, mask fields.

    Args:
        crop_size: ``(h, w)`` in pixels or ratios, per ``crop_type``.
        crop_type: ``absolute``, ``absolute_range``, ``relative`` or ``relative_range``.
        allow_negative_crop: keep crops that contain no box.
        recompute_bbox: set each box to the extent of its cropped mask.
        bbox_clip_border: clip the boxes to the crop.
    """

    def __init__(self, crop_size: tuple[float, float], crop_type: str = "absolute", allow_negative_crop: bool = False,
                 recompute_bbox: bool = False, bbox_clip_border: bool = True) -> None:
        if crop_type not in _CROP_TYPES:
            raise ValueError(f"RandomCrop: crop_type must be one of {', '.join(_CROP_TYPES)}, got {crop_type!r}")
        if len(crop_size) != 2:
            raise ValueError(f"RandomCrop: crop_size must be (h, w), got {crop_size!r}")
        lo, hi = float(crop_size[0]), float(crop_size[1])
        if crop_type.startswith("relative"):
            if not (0 < lo <= 1 and 0 < hi <= 1):
                raise ValueError(f"RandomCrop: relative crop_size must be in (0, 1], got {crop_size!r}")
        elif lo <= 0 or hi <= 0 or (crop_type == "absolute_range" and lo > hi):
            raise ValueError(f"RandomCrop: crop_size must be positive (and min <= max for a range), got {crop_size!r}")
        self.crop_size = (lo, hi)
        self.crop_type = crop_type
        self.allow_negative_crop = allow_negative_crop
        self.recompute_bbox = recompute_bbox
        self.bbox_clip_border = bbox_clip_border

    def _crop_hw(self, h: int, w: int, rng: np.random.Generator) -> tuple[int, int]:
        a, b = self.crop_size
        if self.crop_type == "absolute":
            return min(int(a), h), min(int(b), w)
        if self.crop_type == "absolute_range":
            return (int(rng.integers(min(h, int(a)), min(h, int(b)) + 1)),
                    int(rng.integers(min(w, int(a)), min(w, int(b)) + 1)))
        if self.crop_type == "relative":
            rh, rw = a, b
        else:
            rh, rw = np.asarray([a, b]) + rng.random(2) * (1 - np.asarray([a, b]))
        return int(h * rh + 0.5), int(w * rw + 0.5)

    def __call__(self, results: dict[str, Any]) -> dict[str, Any] | None:
        rng = get_rng(results)
        h, w = results["img"].shape[:2]
        ch, cw = self._crop_hw(h, w, rng)
        top = int(rng.integers(0, max(h - ch, 0) + 1))
        left = int(rng.integers(0, max(w - cw, 0) + 1))
        window = np.array([left, top, left + cw, top + ch], dtype=np.float32)
        for key in results.get("img_fields", ["img"]):
            results[key] = np.ascontiguousarray(results[key][top:top + ch, left:left + cw])
        shape = results["img"].shape
        results["img_shape"] = shape
        results["pad_shape"] = shape
        crop_h, crop_w = shape[:2]
        for key in results.get("bbox_fields", []):
            boxes = results[key] - np.array([left, top, left, top], dtype=np.float32)
            if self.bbox_clip_border:
                boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, crop_w)
                boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, crop_h)
            valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            if key == "gt_bboxes" and not valid.any() and not self.allow_negative_crop:
                return None
            results[key] = boxes[valid].astype(np.float32)
            label_key, mask_key = _BOX_COMPANIONS.get(key, (None, None))
            if label_key in results:
                results[label_key] = results[label_key][valid]
            if mask_key in results and results[mask_key] is not None:
                masks = results[mask_key][np.nonzero(valid)[0]].crop(window)
                results[mask_key] = masks
                if self.recompute_bbox:
                    results[key] = masks.get_bboxes()
        for key in results.get("mask_fields", []):  # masks without a box field of their own
            if key not in ("gt_masks", "gt_masks_ignore") and results.get(key) is not None:
                results[key] = results[key].crop(window)
        return results

    def __repr__(self) -> str:
        return (f"RandomCrop(crop_size={self.crop_size}, crop_type={self.crop_type!r}, "
                f"allow_negative_crop={self.allow_negative_crop}, recompute_bbox={self.recompute_bbox}, "
                f"bbox_clip_border={self.bbox_clip_border})")


def _inside(b: np.ndarray, img_h: float, img_w: float) -> np.ndarray:
    return (b[:, 0] < img_w) & (b[:, 2] > 0) & (b[:, 1] < img_h) & (b[:, 3] > 0)


@TRANSFORMS.register()
class RandomAffine:
    """Random rotation, scaling, shear and translation in one warp (mmdet 2.x ``RandomAffine``).

    The warp is ``T @ Sh @ R @ S`` about the image origin: rotation ``U(±max_rotate_degree)``,
    scale ``U(scaling_ratio_range)``, shear ``U(±max_shear_degree)`` on each axis, translation
    ``U(±max_translate_ratio)`` times the output width/height. The output is ``(h + 2 * border[0],
    w + 2 * border[1])`` (after Mosaic, ``border = -img_scale / 2`` brings the ``2h x 2w`` canvas back
    to ``h x w``), filled with ``border_val``. Each box becomes the extent of its four warped corners,
    clipped to the output with ``bbox_clip_border``; boxes without overlap with the output are
    dropped with their labels; with ``skip_filter: false`` boxes must also pass
    :func:`~detcli.data.transforms.mix.box_candidates` against the box scaled by the drawn ratio
    (``min_bbox_size``, ``min_area_ratio``, ``max_aspect_ratio``). Masks are not supported
    (:class:`~detcli.errors.ConfigError`).

    Adds/updates: ``img``, ``img_shape``, ``pad_shape``, every bbox field, ``gt_labels``.
    """

    def __init__(self, max_rotate_degree: float = 10.0, max_translate_ratio: float = 0.1,
                 scaling_ratio_range: Sequence[float] = (0.5, 1.5), max_shear_degree: float = 2.0,
                 border: Sequence[int] = (0, 0), border_val: Sequence[float] | float = (114, 114, 114),
                 min_bbox_size: float = 2, min_area_ratio: float = 0.2, max_aspect_ratio: float = 20,
                 bbox_clip_border: bool = True, skip_filter: bool = True) -> None:
        if not 0 <= max_translate_ratio <= 1:
            raise ValueError(f"RandomAffine: max_translate_ratio must be in [0, 1], got {max_translate_ratio}")
        lo, hi = float(scaling_ratio_range[0]), float(scaling_ratio_range[1])
        if not 0 < lo <= hi:
            raise ValueError(f"RandomAffine: scaling_ratio_range must be 0 < min <= max, got {scaling_ratio_range!r}")
        self.max_rotate_degree = float(max_rotate_degree)
        self.max_translate_ratio = float(max_translate_ratio)
        self.scaling_ratio_range = (lo, hi)
        self.max_shear_degree = float(max_shear_degree)
        self.border = (int(border[0]), int(border[1]))
        self.border_val = tuple(border_val) if isinstance(border_val, (list, tuple)) else (border_val,) * 3
        self.min_bbox_size = float(min_bbox_size)
        self.min_area_ratio = float(min_area_ratio)
        self.max_aspect_ratio = float(max_aspect_ratio)
        self.bbox_clip_border = bool(bbox_clip_border)
        self.skip_filter = bool(skip_filter)

    def random_matrix(self, rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, float]:
        """``(3x3 float32 warp, scaling ratio)``, drawn in mmdet's order (rotation, scale, shear x/y, translation x/y)."""
        rad = math.radians(rng.uniform(-self.max_rotate_degree, self.max_rotate_degree))
        rotation = np.array([[np.cos(rad), -np.sin(rad), 0.0], [np.sin(rad), np.cos(rad), 0.0], [0.0, 0.0, 1.0]],
                            dtype=np.float32)
        ratio = rng.uniform(*self.scaling_ratio_range)
        scaling = np.array([[ratio, 0.0, 0.0], [0.0, ratio, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
        sx = math.radians(rng.uniform(-self.max_shear_degree, self.max_shear_degree))
        sy = math.radians(rng.uniform(-self.max_shear_degree, self.max_shear_degree))
        shear = np.array([[1.0, np.tan(sx), 0.0], [np.tan(sy), 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
        tx = rng.uniform(-self.max_translate_ratio, self.max_translate_ratio) * width
        ty = rng.uniform(-self.max_translate_ratio, self.max_translate_ratio) * height
        translation = np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]], dtype=np.float32)
        return translation @ shear @ rotation @ scaling, float(ratio)

    @staticmethod
    def warp_boxes(boxes: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        """The xyxy extent of the four corners of each box after the perspective ``matrix``."""
        n = len(boxes)
        if n == 0:
            return np.zeros((0, 4), np.float32)
        xs = boxes[:, [0, 0, 2, 2]].reshape(-1)
        ys = boxes[:, [1, 3, 3, 1]].reshape(-1)
        pts = matrix @ np.vstack([xs, ys, np.ones_like(xs)])
        pts = pts[:2] / pts[2]
        wx, wy = pts[0].reshape(n, 4), pts[1].reshape(n, 4)
        return np.stack([wx.min(1), wy.min(1), wx.max(1), wy.max(1)], 1).astype(np.float32)

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        check_no_masks(results, "RandomAffine")
        img = results["img"]
        height = img.shape[0] + 2 * self.border[0]
        width = img.shape[1] + 2 * self.border[1]
        if height <= 0 or width <= 0:
            raise ValueError(f"RandomAffine: border {self.border} leaves no image of {img.shape[:2]}")
        matrix, ratio = self.random_matrix(get_rng(results), height, width)
        border_val = self.border_val[: img.shape[2]] if img.ndim == 3 else self.border_val[0]
        img = cv2.warpPerspective(img, matrix, dsize=(width, height), borderValue=border_val)
        results["img"] = img
        results["img_shape"] = img.shape
        results["pad_shape"] = img.shape
        for key in results.get("bbox_fields", []):
            boxes = np.asarray(results[key], dtype=np.float32).reshape(-1, 4)
            if len(boxes) == 0:
                continue
            warped = self.warp_boxes(boxes, matrix)
            if self.bbox_clip_border:
                warped[:, 0::2] = warped[:, 0::2].clip(0, width)
                warped[:, 1::2] = warped[:, 1::2].clip(0, height)
            keep = _inside(warped, height, width)
            if not self.skip_filter:
                keep &= box_candidates(boxes * ratio, warped, self.min_bbox_size, self.min_area_ratio,
                                       self.max_aspect_ratio)
            results[key] = warped[keep]
            label_key = _BOX_COMPANIONS.get(key, (None, None))[0]
            if label_key in results:
                results[label_key] = results[label_key][keep]
        return results

    def __repr__(self) -> str:
        return (f"RandomAffine(max_rotate_degree={self.max_rotate_degree}, max_translate_ratio={self.max_translate_ratio}, "
                f"scaling_ratio_range={self.scaling_ratio_range}, max_shear_degree={self.max_shear_degree}, "
                f"border={self.border}, border_val={self.border_val}, skip_filter={self.skip_filter})")
