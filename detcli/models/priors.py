"""Prior generators: anchors (RetinaNet) and points (FCOS) on a pyramid of feature maps.

Conventions (mmdet 2.x ``AnchorGenerator`` / ``MlvlPointGenerator``; :class:`TorchvisionAnchorGenerator`
reproduces torchvision's ``AnchorGenerator`` instead, see its docstring):

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

    #: strides are fixed: the padded batch shape does not change the priors
    uses_pad_shape = False

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
                    device: torch.device | str = "cpu", pad_shape: tuple[int, int] | None = None) -> list[Tensor]:
        """Anchors of every level: a list of ``Tensor[H_l * W_l * A, 4]`` (x1, y1, x2, y2).

        ``pad_shape`` (the padded batch ``(H, W)``) is unused: strides are fixed (``uses_pad_shape``).
        """
        if len(featmap_sizes) != self.num_levels:
            raise ValueError(f"got {len(featmap_sizes)} feature maps for {self.num_levels} anchor levels")
        return [self.single_level_grid_priors(tuple(s), i, dtype, device) for i, s in enumerate(featmap_sizes)]  # type: ignore[arg-type]

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

    #: strides are fixed: the padded batch shape does not change the points
    uses_pad_shape = False

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
                    device: torch.device | str = "cpu", with_stride: bool = False,
                    pad_shape: tuple[int, int] | None = None) -> list[Tensor]:
        """Points of every level: a list of ``Tensor[H_l * W_l, 2]`` (or 4 columns ``with_stride``).

        ``pad_shape`` is unused: strides are fixed (``uses_pad_shape``).
        """
        if len(featmap_sizes) != self.num_levels:
            raise ValueError(f"got {len(featmap_sizes)} feature maps for {self.num_levels} point levels")
        return [self.single_level_grid_priors(tuple(s), i, dtype, device, with_stride)  # type: ignore[arg-type]
                for i, s in enumerate(featmap_sizes)]

    def __repr__(self) -> str:
        return f"MlvlPointGenerator(strides={self.strides}, offset={self.offset})"


@PRIOR_GENERATORS.register()
class TorchvisionAnchorGenerator:
    """Anchors exactly as torchvision's ``AnchorGenerator`` makes them (its detection models' priors).

    Differences from :class:`AnchorGenerator` (mmdet), all reproduced here:

    - base anchors are ``round([-w, -h, w, h] / 2)`` with ``w = size / sqrt(r)``, ``h = size * sqrt(r)``
      (computed in float32, then cast), ordered ratio-major: anchor ``a = i_ratio * len(sizes) + i_size``;
    - a location ``(x, y)`` shifts them by ``(x * stride_w, y * stride_h)`` (no centre offset);
    - the stride of a level is ``pad_shape // featmap_size`` per axis (integer division of the padded
      batch shape, e.g. 800 // 13 = 61 on P6 of an 800-pixel-high batch) when ``pad_shape`` is given
      and ``image_strides`` is on; the nominal ``strides`` otherwise;
    - every anchor is valid (:meth:`valid_flags`): torchvision assigns all of them.

    Args:
        sizes: per level, the anchor sizes (square-root of the area) in pixels.
        aspect_ratios: height / width ratios, shared by all levels, or one list per level.
        strides: per level, the nominal stride (used without ``pad_shape`` and by ``det optimize-anchors``
            diagnostics; torchvision has none).
        image_strides: derive the strides from the padded batch shape like torchvision.

    Example:
        >>> gen = TorchvisionAnchorGenerator([[32]], [0.5, 1.0], [8])
        >>> gen.base_anchors[0]
        tensor([[-23., -11.,  23.,  11.],
                [-16., -16.,  16.,  16.]])
        >>> gen.grid_priors([(1, 2)], pad_shape=(8, 18))[0]  # stride 18 // 2 = 9 along x
        tensor([[-23., -11.,  23.,  11.],
                [-16., -16.,  16.,  16.],
                [-14., -11.,  32.,  11.],
                [ -7., -16.,  25.,  16.]])
    """

    #: the strides follow the padded batch shape (pass ``pad_shape``) when ``image_strides`` is on
    uses_pad_shape = True

    def __init__(
        self,
        sizes: Sequence[Sequence[float]],
        aspect_ratios: Sequence[float] | Sequence[Sequence[float]],
        strides: Sequence[int],
        image_strides: bool = True,
    ) -> None:
        if len(sizes) != len(strides):
            raise ValueError(f"sizes has {len(sizes)} levels but there are {len(strides)} strides")
        if not sizes or any(len(s) == 0 for s in sizes):
            raise ValueError(f"every level needs at least one anchor size, got sizes={sizes!r}")
        if len(aspect_ratios) and isinstance(aspect_ratios[0], (list, tuple)):
            per_level = [[float(r) for r in level] for level in aspect_ratios]  # type: ignore[union-attr]
            if len(per_level) != len(sizes):
                raise ValueError(f"aspect_ratios has {len(per_level)} levels but sizes has {len(sizes)}")
        else:
            per_level = [[float(r) for r in aspect_ratios]] * len(sizes)  # type: ignore[arg-type]
        if any(len(r) == 0 for r in per_level) or any(r <= 0 for level in per_level for r in level):
            raise ValueError(f"aspect_ratios must be non-empty and positive, got {aspect_ratios!r}")
        self.sizes = [[float(s) for s in level] for level in sizes]
        self.aspect_ratios = per_level
        self.strides = [(float(s), float(s)) for s in strides]
        self.uses_pad_shape = bool(image_strides)
        self.image_strides = bool(image_strides)
        self.base_anchors = [self._base_anchors(s, r) for s, r in zip(self.sizes, self.aspect_ratios)]

    @staticmethod
    def _base_anchors(sizes: list[float], ratios: list[float]) -> Tensor:
        """torchvision's ``generate_anchors``: ``(R * S, 4)`` rounded zero-centred anchors (float32)."""
        scales = torch.as_tensor(sizes, dtype=torch.float32)
        h_ratios = torch.sqrt(torch.as_tensor(ratios, dtype=torch.float32))
        w_ratios = 1 / h_ratios
        ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)  # (R * S,)
        hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
        return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    @property
    def num_base_priors(self) -> list[int]:
        """Anchors per location, per level (``len(sizes[l]) * len(aspect_ratios[l])``)."""
        return [b.shape[0] for b in self.base_anchors]

    num_base_anchors = num_base_priors

    def level_strides(self, featmap_sizes: Sequence[tuple[int, int]],
                      pad_shape: tuple[int, int] | None = None) -> list[tuple[float, float]]:
        """Per level ``(stride_w, stride_h)``: ``pad_shape // featmap_size`` (torchvision) when
        ``pad_shape`` is given and ``image_strides`` is on, else the nominal strides."""
        if pad_shape is None or not self.image_strides:
            return list(self.strides)
        return [(float(pad_shape[1] // max(w, 1)), float(pad_shape[0] // max(h, 1))) for h, w in featmap_sizes]

    def single_level_grid_priors(self, featmap_size: tuple[int, int], level_idx: int,
                                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                                 stride: tuple[float, float] | None = None) -> Tensor:
        """Anchors ``(H * W * A, 4)`` of level ``level_idx`` at ``stride`` (default: the nominal one)."""
        base = self.base_anchors[level_idx].to(device=device, dtype=dtype)  # (A, 4)
        xs, ys = _grid(featmap_size, stride or self.strides[level_idx], 0.0, dtype, device)  # (HW,)
        shifts = torch.stack([xs, ys, xs, ys], dim=-1)  # (HW, 4)
        return (shifts[:, None, :] + base[None, :, :]).reshape(-1, 4)  # (HW * A, 4)

    def grid_priors(self, featmap_sizes: Sequence[tuple[int, int]], dtype: torch.dtype = torch.float32,
                    device: torch.device | str = "cpu", pad_shape: tuple[int, int] | None = None) -> list[Tensor]:
        """Anchors of every level: a list of ``Tensor[H_l * W_l * A, 4]`` (x1, y1, x2, y2).

        Args:
            featmap_sizes: per level ``(H_l, W_l)``.
            pad_shape: the padded batch ``(H, W)``; sets the strides like torchvision (see the class doc).
        """
        if len(featmap_sizes) != self.num_levels:
            raise ValueError(f"got {len(featmap_sizes)} feature maps for {self.num_levels} anchor levels")
        strides = self.level_strides(featmap_sizes, pad_shape)
        return [self.single_level_grid_priors(tuple(s), i, dtype, device, strides[i])  # type: ignore[arg-type]
                for i, s in enumerate(featmap_sizes)]

    grid_anchors = grid_priors

    def valid_flags(self, featmap_sizes: Sequence[tuple[int, int]], pad_shape: tuple[int, int],
                    device: torch.device | str = "cpu") -> list[Tensor]:
        """Per level, an all-True ``Tensor[H_l * W_l * A]``: torchvision assigns every anchor."""
        return [torch.ones(h * w * a, dtype=torch.bool, device=device)
                for (h, w), a in zip(featmap_sizes, self.num_base_priors)]

    def __repr__(self) -> str:
        return (f"TorchvisionAnchorGenerator(sizes={self.sizes}, aspect_ratios={self.aspect_ratios}, "
                f"strides={[int(s[0]) for s in self.strides]}, image_strides={self.image_strides})")
