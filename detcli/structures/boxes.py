"""Boxes: a typed wrapper over one float32 ``(N, 4)`` absolute-xyxy tensor, and box geometry.

Conventions (mmdet 2.x): boxes are ``(x1, y1, x2, y2)`` floats, width = ``x2 - x1`` and
height = ``y2 - y1`` (no +1). Box formats change in one place, :func:`convert`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Union

import torch
from torch import Tensor


class BoxFormat(enum.Enum):
    """Box layouts det reads or writes. COCO files use XYWH; everything inside det uses XYXY."""

    XYXY = "xyxy"
    XYWH = "xywh"
    CXCYWH = "cxcywh"

    @classmethod
    def parse(cls, value: "BoxFormat | str") -> "BoxFormat":
        if isinstance(value, BoxFormat):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            allowed = ", ".join(f.value for f in cls)
            raise ValueError(f"unknown box format {value!r} (allowed: {allowed})") from None


def convert(boxes: Tensor, src: BoxFormat | str, dst: BoxFormat | str) -> Tensor:
    """Convert ``boxes (..., 4)`` from ``src`` to ``dst`` format; returns a new tensor.

    Example:
        >>> convert(torch.tensor([[10., 20., 20., 40.]]), "xywh", "xyxy")
        tensor([[10., 20., 30., 60.]])
    """
    src, dst = BoxFormat.parse(src), BoxFormat.parse(dst)
    if src == dst:
        return boxes.clone()
    a, b, c, d = boxes.unbind(-1)
    if src == BoxFormat.XYWH:
        xyxy = torch.stack((a, b, a + c, b + d), dim=-1)
    elif src == BoxFormat.CXCYWH:
        xyxy = torch.stack((a - c / 2, b - d / 2, a + c / 2, b + d / 2), dim=-1)
    else:
        xyxy = boxes
    x1, y1, x2, y2 = xyxy.unbind(-1)
    if dst == BoxFormat.XYXY:
        return xyxy.clone()
    if dst == BoxFormat.XYWH:
        return torch.stack((x1, y1, x2 - x1, y2 - y1), dim=-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)


_Index = Union[int, slice, Tensor, Sequence[int]]


class Boxes:
    """``N`` axis-aligned boxes as one float32 tensor ``(N, 4)``: ``(x1, y1, x2, y2)``, absolute pixels.

    Args:
        tensor: ``(N, 4)`` boxes, any float dtype (converted to float32); an empty input of any
            shape with zero elements becomes ``(0, 4)``.

    Indexing with an int, a slice, an index tensor or a bool mask returns ``Boxes``.
    """

    __slots__ = ("tensor",)

    def __init__(self, tensor: Tensor | Sequence[Sequence[float]]) -> None:
        t = torch.as_tensor(tensor, dtype=torch.float32) if not isinstance(tensor, Tensor) else tensor
        if t.dtype != torch.float32:
            t = t.float()
        if t.numel() == 0:
            t = t.reshape(0, 4)
        if t.dim() != 2 or t.shape[-1] != 4:
            raise ValueError(f"Boxes expects a tensor of shape (N, 4), got {tuple(t.shape)}")
        self.tensor = t

    # container protocol
    def __len__(self) -> int:
        return self.tensor.shape[0]

    def __getitem__(self, index: _Index) -> "Boxes":
        if isinstance(index, int):
            return Boxes(self.tensor[index].view(1, 4))
        return Boxes(self.tensor[index])

    def __repr__(self) -> str:
        return f"Boxes({self.tensor})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Boxes) and torch.equal(self.tensor, other.tensor)

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    def to(self, device: torch.device | str) -> "Boxes":
        return Boxes(self.tensor.to(device))

    def clone(self) -> "Boxes":
        return Boxes(self.tensor.clone())

    @staticmethod
    def cat(boxes_list: Sequence["Boxes"]) -> "Boxes":
        if len(boxes_list) == 0:
            return Boxes(torch.empty(0, 4))
        return Boxes(torch.cat([b.tensor for b in boxes_list], dim=0))

    # geometry
    @property
    def widths(self) -> Tensor:
        return self.tensor[:, 2] - self.tensor[:, 0]

    @property
    def heights(self) -> Tensor:
        return self.tensor[:, 3] - self.tensor[:, 1]

    def area(self) -> Tensor:
        """Areas ``(N,)``; inverted boxes have area <= 0."""
        return self.widths * self.heights

    def centers(self) -> Tensor:
        """Centers ``(N, 2)`` as ``(cx, cy)``."""
        return (self.tensor[:, :2] + self.tensor[:, 2:]) / 2

    def clip_(self, image_size: tuple[int, int]) -> "Boxes":
        """Clamp in place to an image of size ``(height, width)``: x to [0, W], y to [0, H]."""
        h, w = image_size
        self.tensor[:, 0::2].clamp_(min=0, max=w)
        self.tensor[:, 1::2].clamp_(min=0, max=h)
        return self

    def nonempty(self, min_size: float = 0.0) -> Tensor:
        """Bool mask ``(N,)`` of boxes whose width and height are both > ``min_size``."""
        return (self.widths > min_size) & (self.heights > min_size)

    def scale(self, scale_x: float, scale_y: float) -> "Boxes":
        """Return boxes with x multiplied by ``scale_x`` and y by ``scale_y``."""
        factor = self.tensor.new_tensor([scale_x, scale_y, scale_x, scale_y])
        return Boxes(self.tensor * factor)

    def flip(self, image_size: tuple[int, int], direction: str = "horizontal") -> "Boxes":
        """Return boxes mirrored inside an image of size ``(height, width)``.

        ``direction`` is ``horizontal``, ``vertical`` or ``diagonal`` (both).
        """
        h, w = image_size
        t = self.tensor.clone()
        if direction in ("horizontal", "diagonal"):
            t[:, 0], t[:, 2] = w - self.tensor[:, 2], w - self.tensor[:, 0]
        if direction in ("vertical", "diagonal"):
            t[:, 1], t[:, 3] = h - self.tensor[:, 3], h - self.tensor[:, 1]
        if direction not in ("horizontal", "vertical", "diagonal"):
            raise ValueError(f"unknown flip direction {direction!r} (allowed: horizontal, vertical, diagonal)")
        return Boxes(t)


def box_overlaps(
    boxes1: Tensor, boxes2: Tensor, mode: str = "iou", is_aligned: bool = False, eps: float = 1e-6
) -> Tensor:
    """Pairwise (or aligned) overlaps between two sets of xyxy boxes (mmdet ``bbox_overlaps``).

    Args:
        boxes1 (Tensor[..., M, 4]): (x1, y1, x2, y2); extra columns (e.g. a score) are ignored.
        boxes2 (Tensor[..., N, 4]): same format.
        mode: ``iou`` (intersection / union), ``iof`` (intersection / area of ``boxes1``) or
            ``giou`` (generalized IoU, in [-1, 1]).
        is_aligned: compare ``boxes1[i]`` with ``boxes2[i]`` only (M must equal N).
        eps: lower bound of the denominators.

    Returns:
        Tensor[..., M, N], or Tensor[..., M] when aligned. Empty inputs give empty outputs.

    Example:
        >>> a = torch.tensor([[0., 0., 10., 10.]]); b = torch.tensor([[0., 0., 10., 20.]])
        >>> box_overlaps(a, b)
        tensor([[0.5000]])
    """
    if mode not in ("iou", "iof", "giou"):
        raise ValueError(f"unknown overlap mode {mode!r} (allowed: iou, iof, giou)")
    boxes1, boxes2 = boxes1[..., :4], boxes2[..., :4]
    if is_aligned and boxes1.shape[-2] != boxes2.shape[-2]:
        raise ValueError(f"aligned overlaps need equal counts, got {boxes1.shape[-2]} and {boxes2.shape[-2]}")
    area1 = (boxes1[..., 2] - boxes1[..., 0]) * (boxes1[..., 3] - boxes1[..., 1])
    area2 = (boxes2[..., 2] - boxes2[..., 0]) * (boxes2[..., 3] - boxes2[..., 1])
    if is_aligned:
        lt = torch.max(boxes1[..., :2], boxes2[..., :2])  # (..., M, 2)
        rb = torch.min(boxes1[..., 2:], boxes2[..., 2:])
        wh = (rb - lt).clamp(min=0)
        overlap = wh[..., 0] * wh[..., 1]
        union = area1 + area2 - overlap if mode in ("iou", "giou") else area1
        if mode == "giou":
            enclosed_lt = torch.min(boxes1[..., :2], boxes2[..., :2])
            enclosed_rb = torch.max(boxes1[..., 2:], boxes2[..., 2:])
    else:
        lt = torch.max(boxes1[..., :, None, :2], boxes2[..., None, :, :2])  # (..., M, N, 2)
        rb = torch.min(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
        wh = (rb - lt).clamp(min=0)
        overlap = wh[..., 0] * wh[..., 1]
        if mode in ("iou", "giou"):
            union = area1[..., None] + area2[..., None, :] - overlap
        else:
            union = area1[..., None].expand_as(overlap)
        if mode == "giou":
            enclosed_lt = torch.min(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
            enclosed_rb = torch.max(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    union = union.clamp(min=eps)
    ious = overlap / union
    if mode != "giou":
        return ious
    enclose_wh = (enclosed_rb - enclosed_lt).clamp(min=0)
    enclose_area = (enclose_wh[..., 0] * enclose_wh[..., 1]).clamp(min=eps)
    return ious - (enclose_area - union) / enclose_area


def box_iou(boxes1: Boxes, boxes2: Boxes) -> Tensor:
    """IoU matrix ``(N, M)`` between two :class:`Boxes` (no +1)."""
    return box_overlaps(boxes1.tensor, boxes2.tensor)
