"""Instance-mask containers: :class:`BitmapMasks` and :class:`PolygonMasks` (mmdet 2.x semantics).

Both hold the masks of ``N`` instances of one image of size ``(height, width)`` and offer the same
operations: ``rescale``, ``resize``, ``flip``, ``pad``, ``crop``, ``crop_and_resize``, ``expand``,
``translate``, ``areas``, ``get_bboxes``, ``to_ndarray`` and ``to_tensor``. Every operation
returns a new container and works with zero masks.

Polygon coordinates follow COCO: pixel ``(i, j)`` covers ``[j, j + 1) x [i, i + 1)``, so a
horizontal flip maps ``x`` to ``width - x`` and a crop at ``(x1, y1)`` subtracts ``(x1, y1)``.
Polygons are clipped to the canvas by ``crop`` and ``translate`` (exact rectangle clipping), so
their ``areas`` stay those of the visible part.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch import Tensor
from torchvision.ops import roi_align as _tv_roi_align

_FLIP_DIRECTIONS = ("horizontal", "vertical", "diagonal")
_INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "lanczos": cv2.INTER_LANCZOS4,
}

Polygon = np.ndarray  # flat float64 [x0, y0, x1, y1, ...]


def _check_direction(direction: str) -> None:
    if direction not in _FLIP_DIRECTIONS:
        raise ValueError(f"unknown flip direction {direction!r} (allowed: {', '.join(_FLIP_DIRECTIONS)})")


def _cv2_interpolation(interpolation: str) -> int:
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r} (allowed: {', '.join(_INTERPOLATIONS)})")
    return _INTERPOLATIONS[interpolation]


def rescaled_shape(height: int, width: int, scale: float | Sequence[float]) -> tuple[int, int]:
    """``(h, w)`` after an aspect-keeping rescale: by a factor, or to fit ``(long, short)`` bounds.

    Example:
        >>> rescaled_shape(480, 640, (1333, 800))
        (800, 1067)
        >>> rescaled_shape(10, 20, 0.5)
        (5, 10)
    """
    if isinstance(scale, (int, float)):
        if scale <= 0:
            raise ValueError(f"rescale factor must be positive, got {scale}")
        factor = float(scale)
    else:
        if len(scale) != 2:
            raise ValueError(f"rescale scale must be a factor or (long, short), got {scale!r}")
        factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def polygons_to_bitmap(polygons: Sequence[Sequence[float]] | dict[str, Any], height: int, width: int) -> np.ndarray:
    """Rasterise one instance (COCO polygons, or an RLE dict compressed or not) to ``uint8 (height, width)``.

    Example:
        >>> int(polygons_to_bitmap([[1, 1, 3, 1, 3, 3, 1, 3]], 4, 4).sum())
        4
    """
    if isinstance(polygons, dict):
        rle = polygons
        if isinstance(rle.get("counts"), list):
            rle = mask_utils.frPyObjects(rle, height, width)
        elif isinstance(rle.get("counts"), str):
            rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    else:
        polys = [list(map(float, p)) for p in polygons if len(p) >= 6]
        if not polys:
            return np.zeros((height, width), dtype=np.uint8)
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    return mask_utils.decode(rle).astype(np.uint8)


def _rasterise_many(instances: Sequence[Sequence[Polygon]], height: int, width: int) -> np.ndarray:
    """Rasterise ``N`` polygon instances at once: ``uint8 (N, height, width)``."""
    out = np.zeros((len(instances), height, width), dtype=np.uint8)
    flat: list[list[float]] = []
    owner: list[int] = []
    for i, inst in enumerate(instances):
        for p in inst:
            if len(p) >= 6:
                flat.append(p.tolist())
                owner.append(i)
    if not flat or height <= 0 or width <= 0:
        return out
    rles = mask_utils.frPyObjects(flat, height, width)
    decoded = mask_utils.decode(rles)  # (H, W, P)
    for k, i in enumerate(owner):
        out[i] |= decoded[:, :, k]
    return out


def _clip_polygon(poly: Polygon, x1: float, y1: float, x2: float, y2: float) -> Polygon:
    """Clip one polygon to the rectangle ``[x1, x2] x [y1, y2]`` (Sutherland-Hodgman)."""
    pts = poly.reshape(-1, 2)
    for axis, bound, keep_above in ((0, x1, True), (0, x2, False), (1, y1, True), (1, y2, False)):
        if len(pts) == 0:
            break
        v = pts[:, axis]
        inside = v >= bound if keep_above else v <= bound
        if inside.all():
            continue
        prev = np.roll(pts, 1, axis=0)
        prev_in = np.roll(inside, 1)
        out: list[np.ndarray] = []
        for p, q, p_in, q_in in zip(pts, prev, inside, prev_in):  # edge q -> p
            if p_in != q_in:
                t = (bound - q[axis]) / (p[axis] - q[axis])
                out.append(q + t * (p - q))
            if p_in:
                out.append(p)
        pts = np.asarray(out, dtype=np.float64).reshape(-1, 2)
    return pts.reshape(-1)


def _crop_and_resize_inputs(bboxes: np.ndarray | Tensor, inds: np.ndarray | Tensor | None,
                            binarize: bool) -> tuple[np.ndarray, np.ndarray]:
    """Checked ``float64 (K, 4)`` boxes and ``int64 (K,)`` mask indices of ``crop_and_resize``."""
    if not binarize:
        raise ValueError("crop_and_resize: soft targets (binarize=False) are not supported")
    boxes = bboxes.detach().cpu().numpy() if isinstance(bboxes, Tensor) else np.asarray(bboxes)
    boxes = boxes.astype(np.float64, copy=False).reshape(-1, 4)
    if inds is None:
        return boxes, np.arange(len(boxes), dtype=np.int64)
    idx = inds.detach().cpu().numpy() if isinstance(inds, Tensor) else np.asarray(inds)
    idx = idx.astype(np.int64, copy=False).reshape(-1)
    if idx.shape[0] != boxes.shape[0]:
        raise ValueError(f"crop_and_resize: {boxes.shape[0]} boxes but {idx.shape[0]} inds")
    return boxes, idx


def _crop_window(bbox: np.ndarray | Sequence[float], height: int, width: int) -> tuple[int, int, int, int]:
    """mmdet's crop window ``(x1, y1, w, h)``: corners clipped to the image, at least one pixel."""
    b = np.asarray(bbox, dtype=np.float64).reshape(-1)
    if b.shape[0] != 4:
        raise ValueError(f"crop bbox must be (x1, y1, x2, y2), got {b.tolist()}")
    x1 = int(np.clip(b[0], 0, max(width - 1, 0)))
    y1 = int(np.clip(b[1], 0, max(height - 1, 0)))
    x2 = int(np.clip(b[2], 0, width))
    y2 = int(np.clip(b[3], 0, height))
    return x1, y1, max(x2 - x1, 1), max(y2 - y1, 1)


class BitmapMasks:
    """Binary masks ``uint8 (N, H, W)``.

    Args:
        masks: ``(N, H, W)`` array (any integer/bool dtype) or a list of ``(H, W)`` arrays.
        height: image height ``H``.
        width: image width ``W``.
    """

    def __init__(self, masks: np.ndarray | Sequence[np.ndarray], height: int, width: int) -> None:
        self.height, self.width = int(height), int(width)
        if isinstance(masks, np.ndarray):
            arr = masks
        elif len(masks) == 0:
            arr = np.zeros((0, self.height, self.width), dtype=np.uint8)
        else:
            arr = np.stack([np.asarray(m) for m in masks])
        arr = arr.reshape(-1, self.height, self.width).astype(np.uint8, copy=False)
        self.masks = arr  # (N, H, W)

    def __len__(self) -> int:
        return self.masks.shape[0]

    def __getitem__(self, index: int | slice | np.ndarray | Sequence[int]) -> BitmapMasks:
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return BitmapMasks(self.masks[index], self.height, self.width)

    def __repr__(self) -> str:
        return f"BitmapMasks(num_masks={len(self)}, height={self.height}, width={self.width})"

    def _new(self, masks: np.ndarray) -> BitmapMasks:
        return BitmapMasks(masks, masks.shape[1], masks.shape[2])

    @property
    def areas(self) -> np.ndarray:
        """Pixel count per mask, ``float64 (N,)``."""
        return self.masks.sum(axis=(1, 2), dtype=np.float64)

    def rescale(self, scale: float | Sequence[float], interpolation: str = "nearest") -> BitmapMasks:
        """Aspect-keeping resize by a factor or to fit ``(long, short)`` (see :func:`rescaled_shape`)."""
        return self.resize(rescaled_shape(self.height, self.width, scale), interpolation)

    def resize(self, out_shape: tuple[int, int], interpolation: str = "nearest") -> BitmapMasks:
        """Resize to ``out_shape = (height, width)`` (nearest neighbour by default)."""
        h, w = int(out_shape[0]), int(out_shape[1])
        flag = _cv2_interpolation(interpolation)
        if len(self) == 0:
            return BitmapMasks(np.zeros((0, h, w), dtype=np.uint8), h, w)
        if (h, w) == (self.height, self.width):
            return BitmapMasks(self.masks.copy(), h, w)
        out = np.stack([cv2.resize(m, (w, h), interpolation=flag) for m in self.masks])
        return BitmapMasks(out, h, w)

    def flip(self, flip_direction: str = "horizontal") -> BitmapMasks:
        """Mirror horizontally, vertically or both (``diagonal``)."""
        _check_direction(flip_direction)
        out = self.masks
        if flip_direction in ("horizontal", "diagonal"):
            out = out[:, :, ::-1]
        if flip_direction in ("vertical", "diagonal"):
            out = out[:, ::-1, :]
        return BitmapMasks(np.ascontiguousarray(out), self.height, self.width)

    def pad(self, out_shape: tuple[int, int], pad_val: int = 0) -> BitmapMasks:
        """Pad at the bottom/right to ``out_shape = (height, width)`` (>= the current size)."""
        h, w = int(out_shape[0]), int(out_shape[1])
        if h < self.height or w < self.width:
            raise ValueError(f"pad: out_shape {(h, w)} is smaller than the masks {(self.height, self.width)}")
        out = np.full((len(self), h, w), pad_val, dtype=np.uint8)
        out[:, : self.height, : self.width] = self.masks
        return BitmapMasks(out, h, w)

    def crop(self, bbox: np.ndarray | Sequence[float]) -> BitmapMasks:
        """Crop to ``bbox = (x1, y1, x2, y2)`` clipped to the image; the result is at least 1x1."""
        x1, y1, w, h = _crop_window(bbox, self.height, self.width)
        out = np.zeros((len(self), h, w), dtype=np.uint8)
        part = self.masks[:, y1:y1 + h, x1:x1 + w]
        out[:, : part.shape[1], : part.shape[2]] = part
        return BitmapMasks(out, h, w)

    def crop_and_resize(self, bboxes: np.ndarray | Tensor, out_shape: tuple[int, int],
                        inds: np.ndarray | Tensor | None = None, device: torch.device | str = "cpu",
                        interpolation: str = "bilinear", binarize: bool = True) -> BitmapMasks:
        """Mask ``inds[i]`` inside ``bboxes[i]`` resampled to ``out_shape`` (mask-head targets).

        Args:
            bboxes: ``(K, 4)`` xyxy boxes in this image's pixels.
            out_shape: ``(h, w)`` of each output mask.
            inds: ``(K,)`` index of the mask of each box (default ``arange(K)``).
            device: where the RoIAlign runs.
            interpolation: ``'bilinear'`` (RoIAlign, aligned, adaptive sampling).
            binarize: threshold the averaged values at 0.5 (soft targets, ``False``, are not supported).

        Returns:
            ``BitmapMasks`` of ``K`` masks of ``out_shape``.
        """
        if interpolation != "bilinear":
            raise ValueError(f"crop_and_resize: only interpolation='bilinear' is supported, got {interpolation!r}")
        oh, ow = int(out_shape[0]), int(out_shape[1])
        boxes, idx = _crop_and_resize_inputs(bboxes, inds, binarize)
        if len(boxes) == 0 or len(self) == 0:
            return BitmapMasks(np.zeros((0, oh, ow), dtype=np.uint8), oh, ow)
        used, local = np.unique(idx, return_inverse=True)
        src = torch.from_numpy(self.masks[used]).to(device=device, dtype=torch.float32)[:, None]
        rois = torch.from_numpy(np.concatenate([local[:, None].astype(np.float64), boxes], axis=1)).to(
            device=device, dtype=torch.float32)
        vals = _tv_roi_align(src, rois, (oh, ow), spatial_scale=1.0, sampling_ratio=0, aligned=True)[:, 0]
        return BitmapMasks((vals >= 0.5).to(torch.uint8).cpu().numpy(), oh, ow)

    def expand(self, expanded_h: int, expanded_w: int, top: int, left: int) -> BitmapMasks:
        """Place the masks at ``(top, left)`` of a zero canvas ``(expanded_h, expanded_w)``."""
        out = np.zeros((len(self), int(expanded_h), int(expanded_w)), dtype=np.uint8)
        out[:, top:top + self.height, left:left + self.width] = self.masks
        return BitmapMasks(out, int(expanded_h), int(expanded_w))

    def translate(self, out_shape: tuple[int, int], offset: float, direction: str = "horizontal",
                  fill_val: int = 0, interpolation: str = "bilinear") -> BitmapMasks:
        """Shift by ``offset`` pixels along x (``horizontal``) or y (``vertical``); the result has
        ``out_shape`` and uncovered pixels get ``fill_val``. ``interpolation`` is unused for
        integer offsets (offsets are rounded)."""
        if direction not in ("horizontal", "vertical"):
            raise ValueError(f"translate direction must be 'horizontal' or 'vertical', got {direction!r}")
        _cv2_interpolation(interpolation)
        h, w = int(out_shape[0]), int(out_shape[1])
        out = np.full((len(self), h, w), fill_val, dtype=np.uint8)
        dx, dy = (int(round(offset)), 0) if direction == "horizontal" else (0, int(round(offset)))
        sy0, sx0 = max(0, -dy), max(0, -dx)
        sy1, sx1 = min(self.height, h - dy), min(self.width, w - dx)
        if sy1 > sy0 and sx1 > sx0:
            out[:, sy0 + dy:sy1 + dy, sx0 + dx:sx1 + dx] = self.masks[:, sy0:sy1, sx0:sx1]
        return BitmapMasks(out, h, w)

    def get_bboxes(self) -> np.ndarray:
        """Extent of each mask, ``float32 (N, 4)`` xyxy (``x2 = last column + 1``); zeros when empty."""
        boxes = np.zeros((len(self), 4), dtype=np.float32)
        cols = self.masks.any(axis=1)  # (N, W)
        rows = self.masks.any(axis=2)  # (N, H)
        for i in range(len(self)):
            xs, ys = np.nonzero(cols[i])[0], np.nonzero(rows[i])[0]  # type: ignore[index]
            if len(xs):
                boxes[i] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
        return boxes

    def to_ndarray(self) -> np.ndarray:
        """``uint8 (N, H, W)``."""
        return self.masks

    def to_tensor(self, dtype: torch.dtype = torch.bool, device: torch.device | str = "cpu") -> Tensor:
        """``Tensor[N, H, W]`` of ``dtype`` on ``device``."""
        return torch.as_tensor(self.masks, device=device).to(dtype)


class PolygonMasks:
    """Polygon masks: per instance a list of flat ``[x0, y0, x1, y1, ...]`` float arrays.

    Args:
        masks: ``list[list[np.ndarray]]``, one inner list per instance (an empty inner list is an
            empty mask).
        height: image height.
        width: image width.
    """

    def __init__(self, masks: Sequence[Sequence[np.ndarray | Sequence[float]]], height: int, width: int) -> None:
        self.height, self.width = int(height), int(width)
        self.masks = [[np.asarray(p, dtype=np.float64).reshape(-1) for p in inst] for inst in masks]

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, index: int | slice | np.ndarray | Sequence[int]) -> PolygonMasks:
        if isinstance(index, (int, np.integer)):
            picked = [self.masks[int(index)]]
        elif isinstance(index, slice):
            picked = self.masks[index]
        else:
            idx = np.asarray(index)
            if idx.dtype == bool:
                idx = np.nonzero(idx)[0]
            picked = [self.masks[int(i)] for i in idx.reshape(-1)]
        return PolygonMasks(picked, self.height, self.width)

    def __repr__(self) -> str:
        return f"PolygonMasks(num_masks={len(self)}, height={self.height}, width={self.width})"

    def _map(self, fn: Any, height: int, width: int) -> PolygonMasks:
        """Apply ``fn(polygon) -> polygon`` to every polygon; drop those left with < 3 points."""
        out = []
        for inst in self.masks:
            mapped = [fn(p.copy()) for p in inst]
            out.append([q for q in mapped if len(q) >= 6])
        return PolygonMasks(out, height, width)

    @property
    def areas(self) -> np.ndarray:
        """Shoelace area per instance (sum over its polygons), ``float64 (N,)``."""
        out = []
        for inst in self.masks:
            total = 0.0
            for p in inst:
                x, y = p[0::2], p[1::2]
                total += 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
            out.append(total)
        return np.asarray(out, dtype=np.float64)

    def rescale(self, scale: float | Sequence[float], interpolation: str | None = None) -> PolygonMasks:
        """Aspect-keeping rescale by a factor or to fit ``(long, short)`` (see :func:`rescaled_shape`)."""
        return self.resize(rescaled_shape(self.height, self.width, scale))

    def resize(self, out_shape: tuple[int, int], interpolation: str | None = None) -> PolygonMasks:
        """Scale the coordinates to a canvas of ``out_shape = (height, width)``."""
        h, w = int(out_shape[0]), int(out_shape[1])
        sx, sy = w / max(self.width, 1), h / max(self.height, 1)

        def scale(p: Polygon) -> Polygon:
            p[0::2] *= sx
            p[1::2] *= sy
            return p

        return self._map(scale, h, w)

    def flip(self, flip_direction: str = "horizontal") -> PolygonMasks:
        """Mirror horizontally (``x -> W - x``), vertically or both (``diagonal``)."""
        _check_direction(flip_direction)

        def mirror(p: Polygon) -> Polygon:
            if flip_direction in ("horizontal", "diagonal"):
                p[0::2] = self.width - p[0::2]
            if flip_direction in ("vertical", "diagonal"):
                p[1::2] = self.height - p[1::2]
            return p

        return self._map(mirror, self.height, self.width)

    def pad(self, out_shape: tuple[int, int], pad_val: int = 0) -> PolygonMasks:
        """Padding at the bottom/right does not move polygons; only the canvas grows."""
        return PolygonMasks(self.masks, int(out_shape[0]), int(out_shape[1]))

    def crop(self, bbox: np.ndarray | Sequence[float]) -> PolygonMasks:
        """Crop to ``bbox = (x1, y1, x2, y2)`` clipped to the image (at least 1x1); polygons are
        shifted and clipped to the new canvas."""
        x1, y1, w, h = _crop_window(bbox, self.height, self.width)

        def shift_clip(p: Polygon) -> Polygon:
            p[0::2] -= x1
            p[1::2] -= y1
            return _clip_polygon(p, 0, 0, w, h)

        return self._map(shift_clip, h, w)

    def crop_and_resize(self, bboxes: np.ndarray | Tensor, out_shape: tuple[int, int],
                        inds: np.ndarray | Tensor | None = None, device: torch.device | str = "cpu",
                        interpolation: str = "bilinear", binarize: bool = True) -> BitmapMasks:
        """Mask ``inds[i]`` inside ``bboxes[i]`` rasterised at ``out_shape`` (mask-head targets).

        The polygons are shifted to the box corner and scaled by ``out / max(box side, 1)``, then
        rasterised directly at the output size (exact, no intermediate bitmap). ``device`` and
        ``interpolation`` are accepted for parity with :class:`BitmapMasks`.
        """
        oh, ow = int(out_shape[0]), int(out_shape[1])
        boxes, idx = _crop_and_resize_inputs(bboxes, inds, binarize)
        if len(boxes) == 0 or len(self) == 0:
            return BitmapMasks(np.zeros((0, oh, ow), dtype=np.uint8), oh, ow)
        instances = []
        for (x1, y1, x2, y2), i in zip(boxes, idx):
            sx, sy = ow / max(x2 - x1, 1.0), oh / max(y2 - y1, 1.0)
            moved = []
            for p in self.masks[int(i)]:
                q = p.copy()
                q[0::2] = (q[0::2] - x1) * sx
                q[1::2] = (q[1::2] - y1) * sy
                moved.append(q)
            instances.append(moved)
        return BitmapMasks(_rasterise_many(instances, oh, ow), oh, ow)

    def expand(self, expanded_h: int, expanded_w: int, top: int, left: int) -> PolygonMasks:
        """Shift the polygons by ``(left, top)`` onto a canvas ``(expanded_h, expanded_w)``."""
        def shift(p: Polygon) -> Polygon:
            p[0::2] += left
            p[1::2] += top
            return p

        return self._map(shift, int(expanded_h), int(expanded_w))

    def translate(self, out_shape: tuple[int, int], offset: float, direction: str = "horizontal",
                  fill_val: int = 0, interpolation: str | None = None) -> PolygonMasks:
        """Shift by ``offset`` along x or y and clip to the canvas ``out_shape``."""
        if direction not in ("horizontal", "vertical"):
            raise ValueError(f"translate direction must be 'horizontal' or 'vertical', got {direction!r}")
        h, w = int(out_shape[0]), int(out_shape[1])
        start = 0 if direction == "horizontal" else 1

        def shift_clip(p: Polygon) -> Polygon:
            p[start::2] += offset
            return _clip_polygon(p, 0, 0, w, h)

        return self._map(shift_clip, h, w)

    def get_bboxes(self) -> np.ndarray:
        """Extent of each instance's polygons, ``float32 (N, 4)`` xyxy; zeros for an empty instance."""
        boxes = np.zeros((len(self), 4), dtype=np.float32)
        for i, inst in enumerate(self.masks):
            if inst:
                pts = np.concatenate(inst).reshape(-1, 2)
                boxes[i] = (*pts.min(axis=0), *pts.max(axis=0))
        return boxes

    def to_bitmap(self) -> BitmapMasks:
        """Rasterise every instance: :class:`BitmapMasks` of the same size."""
        return BitmapMasks(_rasterise_many(self.masks, self.height, self.width), self.height, self.width)

    def to_ndarray(self) -> np.ndarray:
        """``uint8 (N, H, W)`` rasterised masks."""
        return self.to_bitmap().masks

    def to_tensor(self, dtype: torch.dtype = torch.bool, device: torch.device | str = "cpu") -> Tensor:
        """``Tensor[N, H, W]`` of the rasterised masks."""
        return self.to_bitmap().to_tensor(dtype, device)
