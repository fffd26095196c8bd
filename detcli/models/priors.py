"""Prior generators: anchors (RetinaNet) and points (FCOS) on a pyramid of feature maps.

Conventions (mmdet 2.x ``AnchorGenerator`` / ``MlvlPointGenerator``):

- priors of one level are ordered row-major over the feature map (y outer, x inner), then by base
  anchor, so the index of anchor ``a`` at location ``(y, x)`` is ``(y * W + x) * A + a``;
- ``ratios`` are height / width: ``h_ratio = sqrt(r)``, ``w_ratio = 1 / sqrt(r)``;
- a base anchor is centred at ``center_offset * stride`` (0: on the top-left corner of the cell);
  points sit at ``(x + offset) * stride`` (0.5: the cell centre).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from detcli.registry import PRIOR_GENERATORS

_Stride = int | float | Sequence[float]


def _pair(stride: _Stride) -> tuple[float, float]:
    if isinstance(stride, (int, float)):
        return float(stride), float(stride)
    if len(stride) != 2:
        raise ValueError(f"a stride is a number or a (w, h) pair, got {stride!r}")
    return float(stride[0]), float(stride[1])


def _grid(featmap_size: tuple[int, int], stride: tuple[float, float], offset: float,
          dtype: torch.dtype, device: torch.device | str) -> tuple[Tensor, Tensor]:
    """Return row-major ``(xs, ys)`` of the ``(H * W,)`` grid points ``(x + offset) * stride``."""
    h, w = featmap_size
    xs = (torch.arange(w, device=device, dtype=dtype) + offset) * stride[0]  # (W,)
    ys = (torch.arange(h, device=device, dtype=dtype) + offset) * stride[1]  # (H,)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")  # (H, W)
    return xx.reshape(-1), yy.reshape(-1)


@PRIOR_GENERATORS.register()
class AnchorGenerator:
    """Anchors of a feature pyramid (mmdet 2.x ``AnchorGenerator``).

    Args:
        strides: per level, the stride (or ``(w, h)`` strides) of the feature map in pixels.
        ratios: anchor height / width ratios.
        scales: anchor scales relative to ``base_sizes``; exclusive with ``octave_base_scale``.
        base_sizes: per level, the base anchor size (default: the stride).
        scale_major: order base anchors ratio-outer / scale-inner (True) or scale-outer.
        octave_base_scale: with ``scales_per_octave``: scales are ``octave_base_scale * 2 ** (i / n)``.
        scales_per_octave: number of octave scales ``n``.
        centers: per level, an explicit ``(x, y)`` centre of the base anchors.
        center_offset: base anchors are centred at ``center_offset * base_size``.

    Example:
        >>> gen = AnchorGenerator([16], [1.0], [1.0], [9])
        >>> gen.grid_priors([(2, 2)], device="cpu")[0]
        tensor([[-4.5000, -4.5000,  4.5000,  4.5000],
                [11.5000, -4.5000, 20.5000,  4.5000],
                [-4.5000, 11.5000,  4.5000, 20.5000],
                [11.5000, 11.5000, 20.5000, 20.5000]])
    """

    def __init__(
        self,
        strides: Sequence[_Stride],
        ratios: Sequence[float],
        scales: Sequence[float] | None = None,
        base_sizes: Sequence[float] | None = None,
        scale_major: bool = True,
        octave_base_scale: float | None = None,
        scales_per_octave: int | None = None,
        centers: Sequence[Sequence[float]] | None = None,
        center_offset: float = 0.0,
    ) -> None:
        if not 0.0 <= center_offset <= 1.0:
            raise ValueError(f"center_offset must be in [0, 1], got {center_offset}")
        if centers is not None and len(centers) != len(strides):
            raise ValueError(f"centers has {len(centers)} entries but there are {len(strides)} strides")
        self.strides = [_pair(s) for s in strides]
        self.base_sizes = [min(s) for s in self.strides] if base_sizes is None else [float(b) for b in base_sizes]
        if len(self.base_sizes) != len(self.strides):
            raise ValueError(f"base_sizes has {len(self.base_sizes)} entries but there are {len(strides)} strides")
        if scales is not None and (octave_base_scale is not None or scales_per_octave is not None):
            raise ValueError("give either scales or octave_base_scale + scales_per_octave, not both")
        if scales is not None:
            self.scales = torch.tensor([float(s) for s in scales])
        elif octave_base_scale is not None and scales_per_octave is not None:
            octave = [2 ** (i / scales_per_octave) for i in range(scales_per_octave)]
            self.scales = torch.tensor(octave) * float(octave_base_scale)
        else:
            raise ValueError("AnchorGenerator needs scales, or octave_base_scale and scales_per_octave")
        self.ratios = torch.tensor([float(r) for r in ratios])
        self.scale_major = scale_major
        self.octave_base_scale = octave_base_scale
        self.scales_per_octave = scales_per_octave
        self.centers = None if centers is None else [tuple(map(float, c)) for c in centers]
        self.center_offset = float(center_offset)
        self.base_anchors = [self._base_anchors(i) for i in range(len(self.strides))]

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    @property
    def num_base_priors(self) -> list[int]:
        """Anchors per location, per level (``len(scales) * len(ratios)``)."""
        return [b.shape[0] for b in self.base_anchors]

    num_base_anchors = num_base_priors

    def _base_anchors(self, level: int) -> Tensor:
        """Base anchors ``(A, 4)`` of one level around its centre."""
        size = self.base_sizes[level]
        if self.centers is None:
            cx = cy = self.center_offset * size
        else:
            cx, cy = self.centers[level]
        h_ratios = torch.sqrt(self.ratios)
        w_ratios = 1 / h_ratios
        if self.scale_major:
            ws = (size * w_ratios[:, None] * self.scales[None, :]).reshape(-1)  # (R * S,)
            hs = (size * h_ratios[:, None] * self.scales[None, :]).reshape(-1)
        else:
            ws = (size * self.scales[:, None] * w_ratios[None, :]).reshape(-1)
            hs = (size * self.scales[:, None] * h_ratios[None, :]).reshape(-1)
        return torch.stack([cx - 0.5 * ws, cy - 0.5 * hs, cx + 0.5 * ws, cy + 0.5 * hs], dim=-1)

    def single_level_grid_priors(self, featmap_size: tuple[int, int], level_idx: int,
                                 dtype: torch.dtype = torch.float32,
                                 device: torch.device | str = "cpu") -> Tensor:
        """Anchors ``(H * W * A, 4)`` of level ``level_idx`` on a ``(H, W)`` feature map."""
        base = self.base_anchors[level_idx].to(device=device, dtype=dtype)  # (A, 4)
        xs, ys = _grid(featmap_size, self.strides[level_idx], 0.0, dtype, device)  # (HW,)
        shifts = torch.stack([xs, ys, xs, ys], dim=-1)  # (HW, 4)
        return (shifts[:, None, :] + base[None, :, :]).reshape(-1, 4)  # (HW * A, 4)

    def grid_priors(self, featmap_sizes: Sequence[tuple[int, int]], dtype: torch.dtype = torch.float32,
                    device: torch.device | str = "cpu") -> list[Tensor]:
        """Anchors of every level: a list of ``Tensor[H_l * W_l * A, 4]`` (x1, y1, x2, y2)."""
        if len(featmap_sizes) != self.num_levels:
            raise ValueError(f"got {len(featmap_sizes)} feature maps for {self.num_levels} anchor levels")
        return [self.single_level_grid_priors(tuple(s), i, dtype, device) for i, s in enumerate(featmap_sizes)]

    grid_anchors = grid_priors

    def valid_flags(self, featmap_sizes: Sequence[tuple[int, int]], pad_shape: tuple[int, int],
                    device: torch.device | str = "cpu") -> list[Tensor]:
        """Per level, a bool ``Tensor[H_l * W_l * A]``: anchors whose location lies in ``pad_shape``.

        The valid region of a level is ``min(ceil(pad_h / stride_h), H) x min(ceil(pad_w / stride_w), W)``.
        """
        flags = []
        for i, (h, w) in enumerate(featmap_sizes):
            sw, sh = self.strides[i]
            valid_h = min(math.ceil(pad_shape[0] / sh), h)
            valid_w = min(math.ceil(pad_shape[1] / sw), w)
            vy = torch.arange(h, device=device) < valid_h
            vx = torch.arange(w, device=device) < valid_w
            valid = (vy[:, None] & vx[None, :]).reshape(-1)  # (HW,)
            flags.append(valid[:, None].expand(-1, self.num_base_priors[i]).reshape(-1))
        return flags

    def __repr__(self) -> str:
        return (f"AnchorGenerator(strides={self.strides}, ratios={self.ratios.tolist()}, "
                f"scales={[round(s, 4) for s in self.scales.tolist()]}, base_sizes={self.base_sizes}, "
                f"center_offset={self.center_offset})")


@PRIOR_GENERATORS.register()
class MlvlPointGenerator:
    """Points of a feature pyramid (mmdet 2.x ``MlvlPointGenerator``), one per location.

    Args:
        strides: per level, the stride (or ``(w, h)`` strides).
        offset: points are at ``((x + offset) * stride_w, (y + offset) * stride_h)``.

    Example:
        >>> MlvlPointGenerator([16]).grid_priors([(2, 2)])[0]
        tensor([[ 8.,  8.],
                [24.,  8.],
                [ 8., 24.],
                [24., 24.]])
    """

    def __init__(self, strides: Sequence[_Stride], offset: float = 0.5) -> None:
        self.strides = [_pair(s) for s in strides]
        self.offset = float(offset)

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    @property
    def num_base_priors(self) -> list[int]:
        return [1] * len(self.strides)

    def single_level_grid_priors(self, featmap_size: tuple[int, int], level_idx: int,
                                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                                 with_stride: bool = False) -> Tensor:
        """Points ``(H * W, 2)`` (x, y), or ``(H * W, 4)`` (x, y, stride_w, stride_h) ``with_stride``."""
        stride = self.strides[level_idx]
        xs, ys = _grid(featmap_size, stride, self.offset, dtype, device)
        if not with_stride:
            return torch.stack([xs, ys], dim=-1)
        return torch.stack([xs, ys, torch.full_like(xs, stride[0]), torch.full_like(ys, stride[1])], dim=-1)

    def grid_priors(self, featmap_sizes: Sequence[tuple[int, int]], dtype: torch.dtype = torch.float32,
                    device: torch.device | str = "cpu", with_stride: bool = False) -> list[Tensor]:
        """Points of every level: a list of ``Tensor[H_l * W_l, 2]`` (or 4 columns ``with_stride``)."""
        if len(featmap_sizes) != self.num_levels:
            raise ValueError(f"got {len(featmap_sizes)} feature maps for {self.num_levels} point levels")
        return [self.single_level_grid_priors(tuple(s), i, dtype, device, with_stride)
                for i, s in enumerate(featmap_sizes)]

    def __repr__(self) -> str:
        return f"MlvlPointGenerator(strides={self.strides}, offset={self.offset})"
