"""Instance-mask containers used by the data pipeline (a minimal BitmapMasks/PolygonMasks pair).

Both hold the masks of ``N`` instances of one image of size ``(height, width)`` and support the
geometric operations the transforms need: ``resize``, ``flip``, ``pad``, plus ``areas`` and
conversion to arrays/tensors. Polygon coordinates follow COCO: pixel ``(i, j)`` covers
``[j, j + 1) x [i, i + 1)``, so a horizontal flip maps ``x`` to ``width - x``.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch import Tensor

_FLIP_DIRECTIONS = ("horizontal", "vertical", "diagonal")


def _check_direction(direction: str) -> None:
    if direction not in _FLIP_DIRECTIONS:
        raise ValueError(f"unknown flip direction {direction!r} (allowed: {', '.join(_FLIP_DIRECTIONS)})")


def polygons_to_bitmap(polygons: Sequence[Sequence[float]] | dict, height: int, width: int) -> np.ndarray:
    """Rasterise one instance (COCO polygons or an RLE dict) to a ``uint8 (height, width)`` mask."""
    if isinstance(polygons, dict):  # RLE (compressed or uncompressed)
        rle = polygons
        if isinstance(rle.get("counts"), list):
            rle = mask_utils.frPyObjects(rle, height, width)
    else:
        polys = [list(map(float, p)) for p in polygons if len(p) >= 6]
        if not polys:
            return np.zeros((height, width), dtype=np.uint8)
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    return mask_utils.decode(rle).astype(np.uint8)


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
            arr = np.stack(list(masks))
        arr = arr.reshape(-1, self.height, self.width).astype(np.uint8, copy=False)
        self.masks = arr  # (N, H, W)

    def __len__(self) -> int:
        return self.masks.shape[0]

    def __getitem__(self, index: int | slice | np.ndarray | Sequence[int]) -> "BitmapMasks":
        if isinstance(index, int):
            index = [index]
        return BitmapMasks(self.masks[index], self.height, self.width)

    def __repr__(self) -> str:
        return f"BitmapMasks(num_masks={len(self)}, height={self.height}, width={self.width})"

    @property
    def areas(self) -> np.ndarray:
        """Pixel count per mask, ``float64 (N,)``."""
        return self.masks.reshape(len(self), -1).sum(axis=1).astype(np.float64)

    def resize(self, out_shape: tuple[int, int]) -> "BitmapMasks":
        """Nearest-neighbour resize to ``out_shape = (height, width)``."""
        h, w = int(out_shape[0]), int(out_shape[1])
        if len(self) == 0:
            return BitmapMasks(np.zeros((0, h, w), dtype=np.uint8), h, w)
        out = np.stack([cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST) for m in self.masks])
        return BitmapMasks(out, h, w)

    def flip(self, direction: str = "horizontal") -> "BitmapMasks":
        _check_direction(direction)
        out = self.masks
        if direction in ("horizontal", "diagonal"):
            out = out[:, :, ::-1]
        if direction in ("vertical", "diagonal"):
            out = out[:, ::-1, :]
        return BitmapMasks(np.ascontiguousarray(out), self.height, self.width)

    def pad(self, out_shape: tuple[int, int], pad_val: int = 0) -> "BitmapMasks":
        """Pad at the bottom/right to ``out_shape = (height, width)``."""
        h, w = int(out_shape[0]), int(out_shape[1])
        out = np.full((len(self), h, w), pad_val, dtype=np.uint8)
        out[:, : self.height, : self.width] = self.masks
        return BitmapMasks(out, h, w)

    def to_ndarray(self) -> np.ndarray:
        return self.masks

    def to_tensor(self, dtype: torch.dtype = torch.bool, device: torch.device | str = "cpu") -> Tensor:
        return torch.as_tensor(self.masks, device=device).to(dtype)


class PolygonMasks:
    """Polygon masks: per instance a list of flat ``[x0, y0, x1, y1, ...]`` float arrays.

    Args:
        masks: ``list[list[np.ndarray]]``, one inner list per instance.
        height: image height.
        width: image width.
    """

    def __init__(self, masks: Sequence[Sequence[np.ndarray | Sequence[float]]], height: int, width: int) -> None:
        self.height, self.width = int(height), int(width)
        self.masks = [[np.asarray(p, dtype=np.float64).reshape(-1) for p in inst] for inst in masks]

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, index: int | slice | np.ndarray | Sequence[int]) -> "PolygonMasks":
        if isinstance(index, int):
            picked = [self.masks[index]]
        elif isinstance(index, slice):
            picked = self.masks[index]
        else:
            idx = np.asarray(index)
            if idx.dtype == bool:
                idx = np.nonzero(idx)[0]
            picked = [self.masks[int(i)] for i in idx]
        return PolygonMasks(picked, self.height, self.width)

    def __repr__(self) -> str:
        return f"PolygonMasks(num_masks={len(self)}, height={self.height}, width={self.width})"

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

    def resize(self, out_shape: tuple[int, int]) -> "PolygonMasks":
        h, w = int(out_shape[0]), int(out_shape[1])
        sx, sy = w / self.width, h / self.height
        out = []
        for inst in self.masks:
            scaled = []
            for p in inst:
                q = p.copy()
                q[0::2] *= sx
                q[1::2] *= sy
                scaled.append(q)
            out.append(scaled)
        return PolygonMasks(out, h, w)

    def flip(self, direction: str = "horizontal") -> "PolygonMasks":
        _check_direction(direction)
        out = []
        for inst in self.masks:
            flipped = []
            for p in inst:
                q = p.copy()
                if direction in ("horizontal", "diagonal"):
                    q[0::2] = self.width - q[0::2]
                if direction in ("vertical", "diagonal"):
                    q[1::2] = self.height - q[1::2]
                flipped.append(q)
            out.append(flipped)
        return PolygonMasks(out, self.height, self.width)

    def pad(self, out_shape: tuple[int, int], pad_val: int = 0) -> "PolygonMasks":
        """Padding does not move polygons; only the canvas size changes."""
        return PolygonMasks(self.masks, int(out_shape[0]), int(out_shape[1]))

    def to_bitmap(self) -> BitmapMasks:
        arrs = [polygons_to_bitmap([p.tolist() for p in inst], self.height, self.width) for inst in self.masks]
        return BitmapMasks(arrs, self.height, self.width)

    def to_ndarray(self) -> np.ndarray:
        return self.to_bitmap().masks

    def to_tensor(self, dtype: torch.dtype = torch.bool, device: torch.device | str = "cpu") -> Tensor:
        return self.to_bitmap().to_tensor(dtype, device)
