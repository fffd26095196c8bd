"""Box coders: how regression targets are expressed relative to priors.

- :class:`DeltaXYWHBBoxCoder` (anchors): ``(dx, dy, dw, dh)`` centre shifts and log size ratios,
  normalised by ``target_means`` / ``target_stds``.
- :class:`DistancePointBBoxCoder` (points): distances ``(left, top, right, bottom)`` to the box sides.

Both are stateless and exact inverses of each other's ``encode`` (round-trip tested).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from detcli.registry import BOX_CODERS

#: Default bound of ``|dw|``, ``|dh|`` before ``exp``: boxes grow or shrink at most 1000 / 16 times.
WH_RATIO_CLIP = 16 / 1000
#: ``|log(WH_RATIO_CLIP)|`` = 4.135166556742356.
MAX_LOG_RATIO = abs(math.log(WH_RATIO_CLIP))


def _clip(boxes: Tensor, max_shape: Sequence[int] | None) -> Tensor:
    """Clamp ``boxes (..., 4)`` to an image of ``max_shape = (H, W[, C])``."""
    if max_shape is None:
        return boxes
    h, w = float(max_shape[0]), float(max_shape[1])
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([x1.clamp(0, w), y1.clamp(0, h), x2.clamp(0, w), y2.clamp(0, h)], dim=-1)


@BOX_CODERS.register()
class DeltaXYWHBBoxCoder:
    """Encode boxes as deltas ``(dx, dy, dw, dh)`` from priors (mmdet 2.x semantics, no +1).

    ``dx = (gx - px) / pw``, ``dy = (gy - py) / ph``, ``dw = log(gw / pw)``, ``dh = log(gh / ph)``,
    then ``(delta - target_means) / target_stds``.

    Args:
        target_means: means subtracted from the deltas.
        target_stds: standard deviations the deltas are divided by.
        clip_border: clamp decoded boxes to ``max_shape`` when it is given.
        add_ctr_clamp: clamp the decoded centre shift to ``+-ctr_clamp`` pixels (YOLOF); ``dw, dh``
            are then only bounded from above.
        ctr_clamp: the centre shift bound in pixels.

    Example:
        >>> coder = DeltaXYWHBBoxCoder()
        >>> coder.encode(torch.tensor([[0., 0., 10., 10.]]), torch.tensor([[2., 3., 12., 13.]]))
        tensor([[0.2000, 0.3000, 0.0000, 0.0000]])
    """

    def __init__(
        self,
        target_means: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
        target_stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
        clip_border: bool = True,
        add_ctr_clamp: bool = False,
        ctr_clamp: int = 32,
    ) -> None:
        if len(target_means) != 4 or len(target_stds) != 4:
            raise ValueError(f"target_means and target_stds need 4 values, got {target_means!r}, {target_stds!r}")
        self.means = tuple(float(m) for m in target_means)
        self.stds = tuple(float(s) for s in target_stds)
        self.clip_border = clip_border
        self.add_ctr_clamp = add_ctr_clamp
        self.ctr_clamp = ctr_clamp
        self._identity = self.means == (0.0, 0.0, 0.0, 0.0) and self.stds == (1.0, 1.0, 1.0, 1.0)

    def encode(self, bboxes: Tensor, gt_bboxes: Tensor) -> Tensor:
        """Deltas ``(..., 4)`` that turn ``bboxes (..., 4)`` into ``gt_bboxes (..., 4)`` (both xyxy)."""
        px = (bboxes[..., 0] + bboxes[..., 2]) * 0.5
        py = (bboxes[..., 1] + bboxes[..., 3]) * 0.5
        pw = bboxes[..., 2] - bboxes[..., 0]
        ph = bboxes[..., 3] - bboxes[..., 1]
        gx = (gt_bboxes[..., 0] + gt_bboxes[..., 2]) * 0.5
        gy = (gt_bboxes[..., 1] + gt_bboxes[..., 3]) * 0.5
        gw = gt_bboxes[..., 2] - gt_bboxes[..., 0]
        gh = gt_bboxes[..., 3] - gt_bboxes[..., 1]
        deltas = torch.stack([(gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)], dim=-1)
        if not self._identity:
            deltas = (deltas - deltas.new_tensor(self.means)) / deltas.new_tensor(self.stds)
        return deltas

    def decode(self, bboxes: Tensor, pred_bboxes: Tensor, max_shape: Sequence[int] | None = None,
               wh_ratio_clip: float = WH_RATIO_CLIP) -> Tensor:
        """Apply deltas to priors.

        Args:
            bboxes (Tensor[..., 4]): priors (x1, y1, x2, y2).
            pred_bboxes (Tensor[..., 4 * k]): deltas, one set of 4 per class when ``k > 1``.
            max_shape: ``(H, W)`` to clamp to when ``clip_border``.
            wh_ratio_clip: ``dw, dh`` are clamped to ``+-|log(wh_ratio_clip)|``.

        Returns:
            Tensor[..., 4 * k]: boxes (x1, y1, x2, y2).

        Example (``dw`` = 10 is clamped to 4.1352):
            >>> DeltaXYWHBBoxCoder().decode(torch.tensor([[0., 0., 10., 10.]]), torch.tensor([[0., 0., 10., 10.]]))
            tensor([[-307.5000, -307.5000,  317.5000,  317.5000]])
        """
        k = pred_bboxes.shape[-1] // 4
        deltas = pred_bboxes.reshape(*pred_bboxes.shape[:-1], k, 4)  # (..., k, 4)
        if not self._identity:
            deltas = deltas * deltas.new_tensor(self.stds) + deltas.new_tensor(self.means)
        priors = bboxes[..., None, :]  # (..., 1, 4)
        px = (priors[..., 0] + priors[..., 2]) * 0.5
        py = (priors[..., 1] + priors[..., 3]) * 0.5
        pw = priors[..., 2] - priors[..., 0]
        ph = priors[..., 3] - priors[..., 1]
        dxy_x = pw * deltas[..., 0]
        dxy_y = ph * deltas[..., 1]
        max_ratio = abs(math.log(wh_ratio_clip))
        if self.add_ctr_clamp:
            dxy_x = dxy_x.clamp(-self.ctr_clamp, self.ctr_clamp)
            dxy_y = dxy_y.clamp(-self.ctr_clamp, self.ctr_clamp)
            dw = deltas[..., 2].clamp(max=max_ratio)
            dh = deltas[..., 3].clamp(max=max_ratio)
        else:
            dw = deltas[..., 2].clamp(-max_ratio, max_ratio)
            dh = deltas[..., 3].clamp(-max_ratio, max_ratio)
        half_w = pw * dw.exp() * 0.5
        half_h = ph * dh.exp() * 0.5
        gx = px + dxy_x
        gy = py + dxy_y
        boxes = torch.stack([gx - half_w, gy - half_h, gx + half_w, gy + half_h], dim=-1)  # (..., k, 4)
        if self.clip_border:
            boxes = _clip(boxes, max_shape)
        return boxes.reshape(pred_bboxes.shape)

    def __repr__(self) -> str:
        return f"DeltaXYWHBBoxCoder(target_means={self.means}, target_stds={self.stds}, clip_border={self.clip_border})"


@BOX_CODERS.register()
class TorchvisionDeltaXYWHBBoxCoder(DeltaXYWHBBoxCoder):
    """torchvision's ``BoxCoder`` (detection ``_utils.py``) with mmdet's argument names: the deltas of
    :class:`DeltaXYWHBBoxCoder`, divided by ``weights = 1 / target_stds``, in torchvision's order of
    floating-point operations (centre ``x1 + 0.5 w``, ``delta / weight``), so decoded boxes equal
    torchvision's bit for bit.

    The one semantic difference from :class:`DeltaXYWHBBoxCoder`: ``dw, dh`` are clamped from above
    only (``<= bbox_xform_clip = log(1000 / 16)``); very negative ones shrink the box without bound.
    Means must be zero (torchvision has none).

    Args:
        target_stds: ``1 / weights``: ``(1, 1, 1, 1)`` for the RPN, ``(0.1, 0.1, 0.2, 0.2)`` for the
            box head (torchvision's weights ``(10, 10, 5, 5)``).
        target_means: must be zeros.
        clip_border: clamp decoded boxes to ``max_shape`` when it is given.

    Example (``dw`` = 10 is clamped to 4.1352 and ``dh`` = -10 is not):
        >>> TorchvisionDeltaXYWHBBoxCoder().decode(torch.tensor([[0., 0., 10., 10.]]),
        ...                                         torch.tensor([[0., 0., 10., -10.]]))
        tensor([[-307.5000,    4.9998,  317.5000,    5.0002]])
    """

    def __init__(
        self,
        target_means: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
        target_stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
        clip_border: bool = True,
    ) -> None:
        super().__init__(target_means, target_stds, clip_border)
        if any(m != 0.0 for m in self.means):
            raise ValueError(f"TorchvisionDeltaXYWHBBoxCoder has no means (zeros only), got {target_means!r}")
        self.weights = tuple(1.0 / s for s in self.stds)

    def encode(self, bboxes: Tensor, gt_bboxes: Tensor) -> Tensor:
        """Deltas ``(..., 4)`` that turn ``bboxes (..., 4)`` into ``gt_bboxes (..., 4)`` (``encode_boxes``)."""
        wx, wy, ww, wh = self.weights
        pw = bboxes[..., 2] - bboxes[..., 0]
        ph = bboxes[..., 3] - bboxes[..., 1]
        px = bboxes[..., 0] + 0.5 * pw
        py = bboxes[..., 1] + 0.5 * ph
        gw = gt_bboxes[..., 2] - gt_bboxes[..., 0]
        gh = gt_bboxes[..., 3] - gt_bboxes[..., 1]
        gx = gt_bboxes[..., 0] + 0.5 * gw
        gy = gt_bboxes[..., 1] + 0.5 * gh
        return torch.stack([wx * (gx - px) / pw, wy * (gy - py) / ph, ww * torch.log(gw / pw),
                            wh * torch.log(gh / ph)], dim=-1)

    def decode(self, bboxes: Tensor, pred_bboxes: Tensor, max_shape: Sequence[int] | None = None,
               wh_ratio_clip: float = WH_RATIO_CLIP) -> Tensor:
        """Apply deltas ``(..., 4 k)`` to priors ``(..., 4)`` (``BoxCoder.decode_single``); ``dw, dh <=
        |log(wh_ratio_clip)|``; clamped to ``max_shape = (H, W)`` when given and ``clip_border``."""
        k = pred_bboxes.shape[-1] // 4
        deltas = pred_bboxes.reshape(*pred_bboxes.shape[:-1], k, 4)  # (..., k, 4)
        priors = bboxes.to(pred_bboxes.dtype)[..., None, :]  # (..., 1, 4)
        pw = priors[..., 2] - priors[..., 0]
        ph = priors[..., 3] - priors[..., 1]
        px = priors[..., 0] + 0.5 * pw
        py = priors[..., 1] + 0.5 * ph
        wx, wy, ww, wh = self.weights
        max_ratio = abs(math.log(wh_ratio_clip))
        dw = (deltas[..., 2] / ww).clamp(max=max_ratio)
        dh = (deltas[..., 3] / wh).clamp(max=max_ratio)
        gx = deltas[..., 0] / wx * pw + px
        gy = deltas[..., 1] / wy * ph + py
        half_w = 0.5 * (dw.exp() * pw)
        half_h = 0.5 * (dh.exp() * ph)
        boxes = torch.stack([gx - half_w, gy - half_h, gx + half_w, gy + half_h], dim=-1)  # (..., k, 4)
        if self.clip_border:
            boxes = _clip(boxes, max_shape)
        return boxes.reshape(pred_bboxes.shape)

    def __repr__(self) -> str:
        return f"TorchvisionDeltaXYWHBBoxCoder(target_stds={self.stds}, clip_border={self.clip_border})"


@BOX_CODERS.register()
class DistancePointBBoxCoder:
    """Encode boxes as distances ``(left, top, right, bottom)`` from points (FCOS).

    Args:
        clip_border: clamp decoded boxes to ``max_shape`` when it is given.

    Example:
        >>> coder = DistancePointBBoxCoder()
        >>> coder.encode(torch.tensor([[10., 10.]]), torch.tensor([[0., 0., 20., 30.]]))
        tensor([[10., 10., 10., 20.]])
    """

    def __init__(self, clip_border: bool = True) -> None:
        self.clip_border = clip_border

    def encode(self, points: Tensor, gt_bboxes: Tensor, max_dis: float | None = None, eps: float = 0.1) -> Tensor:
        """Distances ``(..., 4)`` from ``points (..., 2)`` to the sides of ``gt_bboxes (..., 4)``.

        With ``max_dis`` the distances are clamped to ``[0, max_dis - eps]``.
        """
        left = points[..., 0] - gt_bboxes[..., 0]
        top = points[..., 1] - gt_bboxes[..., 1]
        right = gt_bboxes[..., 2] - points[..., 0]
        bottom = gt_bboxes[..., 3] - points[..., 1]
        dist = torch.stack([left, top, right, bottom], dim=-1)
        if max_dis is not None:
            dist = dist.clamp(min=0, max=max_dis - eps)
        return dist

    def decode(self, points: Tensor, pred_bboxes: Tensor, max_shape: Sequence[int] | None = None) -> Tensor:
        """Boxes ``(..., 4)`` (x1, y1, x2, y2) from ``points (..., 2)`` and distances ``(..., 4)``."""
        x, y = points[..., 0], points[..., 1]
        boxes = torch.stack([x - pred_bboxes[..., 0], y - pred_bboxes[..., 1],
                             x + pred_bboxes[..., 2], y + pred_bboxes[..., 3]], dim=-1)
        if self.clip_border:
            boxes = _clip(boxes, max_shape)
        return boxes

    def __repr__(self) -> str:
        return f"DistancePointBBoxCoder(clip_border={self.clip_border})"
