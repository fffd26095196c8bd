"""Multi-image transforms (mmdet 2.x ``Mosaic``, ``MixUp``) and the YOLOX box filters.

A multi-image transform has ``get_indexes(dataset, rng)``: :class:`~detcli.data.wrappers.MultiImageMixDataset`
calls it, loads those images through the inner dataset's (loading) pipeline and hands them to the
transform as ``results['mix_results']`` (a list of results dicts). Every random draw, also the
choice of the extra images, comes from the sample's generator (:func:`~detcli.data.transforms.compose.get_rng`),
so a mixed sample stays a pure function of ``(seed, epoch, index)``.

Boxes are ``float32 (N, 4)`` xyxy. Masks are not supported by these transforms (as in mmdet 2.x):
a results dict carrying ``gt_masks`` raises :class:`~detcli.errors.ConfigError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from detcli.data.transforms.compose import get_rng
from detcli.errors import ConfigError
from detcli.registry import TRANSFORMS

#: Mosaic's four quadrants, in the order the images fill them (the sample itself first).
MOSAIC_LOCATIONS = ("top_left", "top_right", "bottom_left", "bottom_right")


def find_inside_bboxes(bboxes: np.ndarray, img_h: float, img_w: float) -> np.ndarray:
    """Boolean mask of the boxes that overlap the image ``[0, img_w] x [0, img_h]`` with positive extent
    (mmdet ``find_inside_bboxes``: ``x1 < w & x2 > 0 & y1 < h & y2 > 0``).

    Example:
        >>> find_inside_bboxes(np.array([[-5., 0, 0, 4], [1, 1, 3, 3], [10, 0, 12, 2]]), 8, 10).tolist()
        [False, True, False]
    """
    b = np.asarray(bboxes).reshape(-1, 4)
    return (b[:, 0] < img_w) & (b[:, 2] > 0) & (b[:, 1] < img_h) & (b[:, 3] > 0)


def check_no_masks(results: dict[str, Any], name: str) -> None:
    """Raise :class:`ConfigError` when ``results`` carries instance masks (``name`` does not move them)."""
    if any(results.get(k) is not None for k in results.get("mask_fields", [])) or results.get("gt_masks") is not None:
        raise ConfigError(f"{name} supports boxes only, but the sample has masks: load annotations without "
                          "with_mask (or drop masks before it)")


def _scale_pair(value: Sequence[int], what: str) -> tuple[int, int]:
    if not (isinstance(value, (list, tuple)) and len(value) == 2):
        raise ConfigError(f"{what} must be a pair (height, width), got {value!r}")
    return int(value[0]), int(value[1])


def _range(value: Sequence[float], what: str) -> tuple[float, float]:
    if not (isinstance(value, (list, tuple)) and len(value) == 2) or float(value[0]) > float(value[1]):
        raise ConfigError(f"{what} must be (min, max), got {value!r}")
    return float(value[0]), float(value[1])


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    if (img.shape[1], img.shape[0]) == (w, h):
        return img
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)


def _bbox_keys(results: dict[str, Any]) -> list[str]:
    keys = list(results.get("bbox_fields", []))
    if "gt_bboxes" in results and "gt_bboxes" not in keys:
        keys.insert(0, "gt_bboxes")
    return keys


@TRANSFORMS.register()
class Mosaic:
    """Four images in a 2x2 mosaic on a ``2h x 2w`` canvas (mmdet 2.x ``Mosaic``).

    The centre is ``(U(center_ratio_range) * w, U(center_ratio_range) * h)``; the sample fills the
    top-left quadrant and the three extra images the others, each first resized (aspect ratio kept,
    bilinear) to fit ``(h, w)``, then cropped at the canvas edge. Boxes are scaled and shifted with
    their image; with ``bbox_clip_border`` they are clipped to the canvas; boxes without overlap
    with the canvas are dropped with their labels. ``skip_filter: false`` also drops boxes whose
    width or height is not above ``min_bbox_size``.

    Adds/updates: ``img`` (``2h x 2w``, ``pad_val`` where no image lands), ``img_shape``, ``pad_shape``,
    ``gt_bboxes``, ``gt_labels``, ``gt_bboxes_ignore`` (if present).

    Args:
        img_scale: ``(h, w)`` of one quadrant (mmdet 2.x order: height first).
        center_ratio_range: range of the centre, relative to ``(w, h)``.
        min_bbox_size: see ``skip_filter``.
        bbox_clip_border: clip boxes to the canvas.
        skip_filter: skip the ``min_bbox_size`` filter.
        pad_val: canvas fill value.
        prob: probability of applying the mosaic (else the sample passes unchanged).
    """

    def __init__(self, img_scale: Sequence[int] = (640, 640), center_ratio_range: Sequence[float] = (0.5, 1.5),
                 min_bbox_size: float = 0, bbox_clip_border: bool = True, skip_filter: bool = True,
                 pad_val: float = 114, prob: float = 1.0) -> None:
        self.img_scale = _scale_pair(img_scale, "Mosaic.img_scale")
        self.center_ratio_range = _range(center_ratio_range, "Mosaic.center_ratio_range")
        if not 0 <= prob <= 1:
            raise ConfigError(f"Mosaic.prob must be in [0, 1], got {prob}")
        self.min_bbox_size = float(min_bbox_size)
        self.bbox_clip_border = bool(bbox_clip_border)
        self.skip_filter = bool(skip_filter)
        self.pad_val = pad_val
        self.prob = float(prob)

    def get_indexes(self, dataset: Any, rng: np.random.Generator) -> list[int]:
        """Three random indexes of ``dataset``."""
        return [int(rng.integers(len(dataset))) for _ in range(3)]

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        rng = get_rng(results)
        if rng.random() > self.prob:
            return results
        mix = results.get("mix_results")
        if not mix or len(mix) != 3:
            raise ConfigError("Mosaic needs 3 extra images in results['mix_results']: wrap the dataset in "
                              "MultiImageMixDataset with Mosaic in its pipeline")
        for r in (results, *mix):
            check_no_masks(r, "Mosaic")
        h, w = self.img_scale
        img0 = results["img"]
        canvas = np.full((2 * h, 2 * w, *img0.shape[2:]), self.pad_val, dtype=img0.dtype)
        cx = int(rng.uniform(*self.center_ratio_range) * w)
        cy = int(rng.uniform(*self.center_ratio_range) * h)
        keys = _bbox_keys(results)
        boxes: dict[str, list[np.ndarray]] = {k: [] for k in keys}
        labels: list[np.ndarray] = []
        for loc, patch in zip(MOSAIC_LOCATIONS, (results, *mix)):
            img = patch["img"]
            hi, wi = img.shape[:2]
            ratio = min(h / hi, w / wi)
            img = _resize(img, int(wi * ratio), int(hi * ratio))
            (x1p, y1p, x2p, y2p), (x1c, y1c, x2c, y2c) = self.combine(loc, (cx, cy), (img.shape[1], img.shape[0]))
            canvas[y1p:y2p, x1p:x2p] = img[y1c:y2c, x1c:x2c]
            dx, dy = x1p - x1c, y1p - y1c
            for k in keys:
                b = np.asarray(patch.get(k, np.zeros((0, 4))), dtype=np.float32).reshape(-1, 4).copy()
                b[:, 0::2] = ratio * b[:, 0::2] + dx
                b[:, 1::2] = ratio * b[:, 1::2] + dy
                boxes[k].append(b)
            labels.append(np.asarray(patch.get("gt_labels", np.zeros(0, np.int64)), dtype=np.int64).reshape(-1))
        for k in keys:
            b = np.concatenate(boxes[k], 0).astype(np.float32)
            lab = np.concatenate(labels, 0) if k == "gt_bboxes" else None
            if self.bbox_clip_border:
                b[:, 0::2] = np.clip(b[:, 0::2], 0, 2 * w)
                b[:, 1::2] = np.clip(b[:, 1::2], 0, 2 * h)
            keep = find_inside_bboxes(b, 2 * h, 2 * w)
            if not self.skip_filter:
                keep &= ((b[:, 2] - b[:, 0]) > self.min_bbox_size) & ((b[:, 3] - b[:, 1]) > self.min_bbox_size)
            results[k] = b[keep]
            if lab is not None:
                results["gt_labels"] = lab[keep]
        results["img"] = canvas
        results["img_shape"] = canvas.shape
        results["pad_shape"] = canvas.shape
        return results

    def combine(self, loc: str, center: tuple[int, int], size_wh: tuple[int, int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """``(paste xyxy on the canvas, crop xyxy of the resized image)`` for quadrant ``loc``."""
        cx, cy = center
        wi, hi = size_wh
        h2, w2 = 2 * self.img_scale[0], 2 * self.img_scale[1]
        if loc == "top_left":
            x1, y1, x2, y2 = max(cx - wi, 0), max(cy - hi, 0), cx, cy
            crop = (wi - (x2 - x1), hi - (y2 - y1), wi, hi)
        elif loc == "top_right":
            x1, y1, x2, y2 = cx, max(cy - hi, 0), min(cx + wi, w2), cy
            crop = (0, hi - (y2 - y1), min(wi, x2 - x1), hi)
        elif loc == "bottom_left":
            x1, y1, x2, y2 = max(cx - wi, 0), cy, cx, min(h2, cy + hi)
            crop = (wi - (x2 - x1), 0, wi, min(y2 - y1, hi))
        elif loc == "bottom_right":
            x1, y1, x2, y2 = cx, cy, min(cx + wi, w2), min(h2, cy + hi)
            crop = (0, 0, min(wi, x2 - x1), min(y2 - y1, hi))
        else:
            raise ValueError(f"unknown mosaic location {loc!r}")
        return (x1, y1, x2, y2), crop

    def __repr__(self) -> str:
        return (f"Mosaic(img_scale={self.img_scale}, center_ratio_range={self.center_ratio_range}, "
                f"min_bbox_size={self.min_bbox_size}, skip_filter={self.skip_filter}, pad_val={self.pad_val}, "
                f"prob={self.prob})")


def box_candidates(before: np.ndarray, after: np.ndarray, min_bbox_size: float, min_area_ratio: float,
                   max_aspect_ratio: float) -> np.ndarray:
    """YOLOX's filter of transformed boxes: keep ``after`` boxes wider and taller than ``min_bbox_size``,
    keeping more than ``min_area_ratio`` of the area of ``before`` and with an aspect ratio (either
    way) below ``max_aspect_ratio`` (eps 1e-16 as mmdet).

    Example:
        >>> box_candidates(np.array([[0., 0, 10, 10]] * 3), np.array([[0., 0, 10, 10], [0, 0, 3, 3], [0, 0, 1, 9]]),
        ...                2, 0.2, 20).tolist()
        [True, False, False]
    """
    w1, h1 = before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]
    w2, h2 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    ar = np.maximum(w2 / (h2 + 1e-16), h2 / (w2 + 1e-16))
    return (w2 > min_bbox_size) & (h2 > min_bbox_size) & (w2 * h2 / (w1 * h1 + 1e-16) > min_area_ratio) & (ar < max_aspect_ratio)


@TRANSFORMS.register()
class MixUp:
    """Blend the sample 50/50 with one extra image (mmdet 2.x ``MixUp``, YOLOX style).

    The extra image is resized (aspect kept) to fit ``img_scale`` (``results['scale']`` when the
    wrapper sets a dynamic scale) and pasted at the top-left of a ``pad_val`` canvas, scaled by a
    jitter ``U(ratio_range)``, flipped horizontally when ``U(0, 1) > flip_ratio``, then a window of
    the sample's size is cut at a random offset. Its boxes follow (clipped with
    ``bbox_clip_border``); with ``skip_filter: false`` they must also pass :func:`box_candidates`.
    The boxes of both images are kept if they overlap the result, labels with them. An extra image
    without boxes leaves the sample unchanged.

    Adds/updates: ``img`` (``uint8``), ``img_shape``, ``gt_bboxes``, ``gt_labels``.

    Args:
        img_scale: ``(h, w)`` the extra image is fitted into.
        ratio_range: scale jitter range.
        flip_ratio: the extra image is flipped when a uniform draw exceeds it.
        pad_val: canvas fill value.
        max_iters: draws of :meth:`get_indexes` looking for an image with boxes.
        min_bbox_size, min_area_ratio, max_aspect_ratio: the :func:`box_candidates` filter.
        bbox_clip_border: clip boxes to the image.
        skip_filter: skip that filter (the mmdet default).
    """

    def __init__(self, img_scale: Sequence[int] = (640, 640), ratio_range: Sequence[float] = (0.5, 1.5),
                 flip_ratio: float = 0.5, pad_val: float = 114, max_iters: int = 15, min_bbox_size: float = 5,
                 min_area_ratio: float = 0.2, max_aspect_ratio: float = 20, bbox_clip_border: bool = True,
                 skip_filter: bool = True) -> None:
        self.img_scale = _scale_pair(img_scale, "MixUp.img_scale")
        self.ratio_range = _range(ratio_range, "MixUp.ratio_range")
        if self.ratio_range[0] <= 0:
            raise ConfigError(f"MixUp.ratio_range must be positive, got {ratio_range!r}")
        self.flip_ratio = float(flip_ratio)
        self.pad_val = pad_val
        if int(max_iters) < 1:
            raise ConfigError(f"MixUp.max_iters must be >= 1, got {max_iters}")
        self.max_iters = int(max_iters)
        self.min_bbox_size = float(min_bbox_size)
        self.min_area_ratio = float(min_area_ratio)
        self.max_aspect_ratio = float(max_aspect_ratio)
        self.bbox_clip_border = bool(bbox_clip_border)
        self.skip_filter = bool(skip_filter)

    def get_indexes(self, dataset: Any, rng: np.random.Generator) -> list[int]:
        """One random index, redrawn up to ``max_iters`` times until its image has boxes."""
        index = 0
        for _ in range(self.max_iters):
            index = int(rng.integers(len(dataset)))
            if len(dataset.get_ann_info(index)["bboxes"]) != 0:
                break
        return [index]

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        rng = get_rng(results)
        mix = results.get("mix_results")
        if not mix or len(mix) != 1:
            raise ConfigError("MixUp needs 1 extra image in results['mix_results']: wrap the dataset in "
                              "MultiImageMixDataset with MixUp in its pipeline")
        check_no_masks(results, "MixUp")
        check_no_masks(mix[0], "MixUp")
        other = mix[0]
        other_boxes = np.asarray(other.get("gt_bboxes", np.zeros((0, 4))), dtype=np.float32).reshape(-1, 4).copy()
        if len(other_boxes) == 0:
            return results
        jitter = rng.uniform(*self.ratio_range)
        flip = rng.uniform(0, 1) > self.flip_ratio
        th, tw = _scale_pair(results["scale"], "results['scale']") if "scale" in results else self.img_scale
        src = other["img"]
        canvas = np.full((th, tw, *src.shape[2:]), self.pad_val, dtype=src.dtype)
        ratio = min(th / src.shape[0], tw / src.shape[1])
        src = _resize(src, int(src.shape[1] * ratio), int(src.shape[0] * ratio))
        canvas[:src.shape[0], :src.shape[1]] = src
        ratio *= jitter
        canvas = _resize(canvas, int(canvas.shape[1] * jitter), int(canvas.shape[0] * jitter))
        if flip:
            canvas = canvas[:, ::-1]
        base = results["img"]
        oh, ow = canvas.shape[:2]
        bh, bw = base.shape[:2]
        padded = np.zeros((max(oh, bh), max(ow, bw), *canvas.shape[2:]), dtype=np.uint8)
        padded[:oh, :ow] = canvas
        y_off = int(rng.integers(0, padded.shape[0] - bh + 1)) if padded.shape[0] > bh else 0
        x_off = int(rng.integers(0, padded.shape[1] - bw + 1)) if padded.shape[1] > bw else 0
        window = padded[y_off:y_off + bh, x_off:x_off + bw]

        other_boxes *= np.float32(ratio)
        if self.bbox_clip_border:
            other_boxes[:, 0::2] = np.clip(other_boxes[:, 0::2], 0, ow)
            other_boxes[:, 1::2] = np.clip(other_boxes[:, 1::2], 0, oh)
        if flip:
            other_boxes[:, 0::2] = ow - other_boxes[:, 0::2][:, ::-1]
        moved = other_boxes.copy()
        moved[:, 0::2] -= x_off
        moved[:, 1::2] -= y_off
        if self.bbox_clip_border:
            moved[:, 0::2] = np.clip(moved[:, 0::2], 0, bw)
            moved[:, 1::2] = np.clip(moved[:, 1::2], 0, bh)
        other_labels = np.asarray(other.get("gt_labels", np.zeros(len(other_boxes), np.int64)), dtype=np.int64).reshape(-1)
        if not self.skip_filter:
            keep = box_candidates(other_boxes, moved, self.min_bbox_size, self.min_area_ratio, self.max_aspect_ratio)
            moved, other_labels = moved[keep], other_labels[keep]
        mixed = 0.5 * base.astype(np.float32) + 0.5 * window.astype(np.float32)
        boxes = np.concatenate([np.asarray(results.get("gt_bboxes", np.zeros((0, 4))), np.float32).reshape(-1, 4), moved], 0)
        labels = np.concatenate([np.asarray(results.get("gt_labels", np.zeros(0, np.int64)), np.int64).reshape(-1),
                                 other_labels], 0)
        inside = find_inside_bboxes(boxes, bh, bw)
        results["img"] = mixed.astype(np.uint8)
        results["img_shape"] = results["img"].shape
        results["gt_bboxes"] = boxes[inside].astype(np.float32)
        results["gt_labels"] = labels[inside]
        if "gt_bboxes" not in results.setdefault("bbox_fields", []):
            results["bbox_fields"].append("gt_bboxes")
        return results

    def __repr__(self) -> str:
        return (f"MixUp(img_scale={self.img_scale}, ratio_range={self.ratio_range}, flip_ratio={self.flip_ratio}, "
                f"pad_val={self.pad_val}, max_iters={self.max_iters}, skip_filter={self.skip_filter})")


@TRANSFORMS.register()
class FilterAnnotations:
    """Drop ground truth boxes whose width or height is not above ``min_gt_bbox_wh`` (mmdet 2.x).

    Labels and masks follow their boxes. With ``by_mask`` an instance also needs a mask area of at
    least ``min_gt_mask_area``. When nothing is left, ``keep_empty: true`` rejects the sample
    (returns None, the dataset draws another one) and ``false`` keeps it without ground truth — the
    mmdet 2.x meaning of that flag.
    """

    def __init__(self, min_gt_bbox_wh: Sequence[float] = (1.0, 1.0), min_gt_mask_area: int = 1, by_box: bool = True,
                 by_mask: bool = False, keep_empty: bool = True) -> None:
        if not by_box and not by_mask:
            raise ConfigError("FilterAnnotations: set by_box or by_mask")
        self.min_gt_bbox_wh = (float(min_gt_bbox_wh[0]), float(min_gt_bbox_wh[1]))
        self.min_gt_mask_area = int(min_gt_mask_area)
        self.by_box = bool(by_box)
        self.by_mask = bool(by_mask)
        self.keep_empty = bool(keep_empty)

    def __call__(self, results: dict[str, Any]) -> dict[str, Any] | None:
        tests = []
        if self.by_box:
            b = np.asarray(results["gt_bboxes"]).reshape(-1, 4)
            n = len(b)
            tests.append(((b[:, 2] - b[:, 0]) > self.min_gt_bbox_wh[0]) & ((b[:, 3] - b[:, 1]) > self.min_gt_bbox_wh[1]))
        if self.by_mask:
            masks = results.get("gt_masks")
            if masks is None:
                raise ConfigError("FilterAnnotations(by_mask=True) needs gt_masks (LoadAnnotations with_mask: true)")
            n = len(masks)
            tests.append(np.asarray(masks.areas) >= self.min_gt_mask_area)
        if n == 0:
            return results
        keep = tests[0]
        for t in tests[1:]:
            keep = keep & t
        for key in ("gt_bboxes", "gt_labels"):
            if key in results:
                results[key] = results[key][keep]
        if results.get("gt_masks") is not None:
            results["gt_masks"] = results["gt_masks"][np.nonzero(keep)[0]]
        if not keep.any() and self.keep_empty:
            return None
        return results

    def __repr__(self) -> str:
        return (f"FilterAnnotations(min_gt_bbox_wh={self.min_gt_bbox_wh}, by_box={self.by_box}, "
                f"by_mask={self.by_mask}, keep_empty={self.keep_empty})")
