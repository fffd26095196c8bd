"""Instance masks as COCO run-length encodings (RLE), the form results files and JSON lines carry.

:func:`encode_masks` turns ``bool (N, H, W)`` masks (a tensor or an array) into compressed RLE
dicts ``{"size": [H, W], "counts": str}`` (pycocotools' encoding, ``counts`` decoded to ASCII so it
is JSON); :func:`decode_masks` turns them back. :class:`EncodedDetections` is one image's detections
with their masks held as RLE: what the tester keeps per image so that a dataset's worth of
full-resolution masks never sits in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from detcli.structures import Detections


def encode_masks(masks: torch.Tensor | np.ndarray) -> list[dict[str, Any]]:
    """Compressed COCO RLE of each mask.

    Args:
        masks: ``(N, H, W)`` bool (or 0/1) masks.

    Returns:
        ``N`` dicts ``{"size": [H, W], "counts": str}``.

    Example:
        >>> m = np.zeros((1, 3, 4), bool); m[0, 1:, 2:] = True
        >>> encode_masks(m)
        [{'size': [3, 4], 'counts': '7210'}]
    """
    from pycocotools import mask as mask_utils

    arr = masks.detach().cpu().numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks)
    if arr.ndim != 3:
        raise ValueError(f"expected masks of shape (N, H, W), got {arr.shape}")
    n, h, w = arr.shape
    if n == 0:
        return []
    fortran = np.asfortranarray(arr.transpose(1, 2, 0).astype(np.uint8))  # (H, W, N), column-major as RLE reads it
    return [{"size": [int(h), int(w)], "counts": rle["counts"].decode("ascii")} for rle in mask_utils.encode(fortran)]


def decode_masks(rles: Sequence[dict[str, Any]], size: tuple[int, int] | None = None) -> np.ndarray:
    """``bool (N, H, W)`` masks of compressed RLE dicts (``counts`` str or bytes).

    Args:
        rles: RLE dicts, all of one size.
        size: ``(H, W)`` for an empty list (the result is then ``(0, H, W)``).
    """
    from pycocotools import mask as mask_utils

    if not rles:
        h, w = size if size is not None else (0, 0)
        return np.zeros((0, h, w), bool)
    objs = [{"size": list(r["size"]), "counts": r["counts"].encode("ascii") if isinstance(r["counts"], str) else r["counts"]}
            for r in rles]
    return np.ascontiguousarray(mask_utils.decode(objs).transpose(2, 0, 1).astype(bool))


@dataclass
class EncodedDetections:
    """One image's detections whose masks are held as compressed RLE.

    Attributes:
        detections: boxes, scores and labels (``masks`` is None).
        segmentations: one RLE dict per detection, at ``detections.image_size``.
    """

    detections: Detections
    segmentations: list[dict[str, Any]]

    def __post_init__(self) -> None:
        if len(self.segmentations) != len(self.detections):
            raise ValueError(f"{len(self.detections)} detections but {len(self.segmentations)} RLE masks")

    @classmethod
    def encode(cls, dets: Detections) -> "EncodedDetections":
        """Encode ``dets.masks`` (required) and drop the dense tensor."""
        if dets.masks is None:
            raise ValueError("these detections have no masks to encode")
        plain = Detections(dets.image_size, dets.boxes, dets.scores, dets.labels, None)
        return cls(plain, encode_masks(dets.masks))

    def decode(self) -> Detections:
        """The detections with dense ``bool (N, H, W)`` masks again."""
        d = self.detections
        masks = torch.from_numpy(decode_masks(self.segmentations, d.image_size))
        return Detections(d.image_size, d.boxes, d.scores, d.labels, masks)

    def __len__(self) -> int:
        return len(self.detections)


def compact(dets: Detections) -> Detections | EncodedDetections:
    """``dets`` with its masks RLE-encoded when it has any (box-only detections are returned as they are)."""
    return dets if dets.masks is None else EncodedDetections.encode(dets)
