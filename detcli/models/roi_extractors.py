"""RoI feature extraction from a feature pyramid (mmdet 2.x ``SingleRoIExtractor``).

Each RoI is pooled from one level, chosen by its scale ``s = sqrt(w * h)``:
``level = floor(log2(s / finest_scale + 1e-6))`` clamped to ``[0, L - 1]``, so with
``finest_scale = 56``: ``s < 112`` -> 0, ``[112, 224)`` -> 1, ``[224, 448)`` -> 2, ``>= 448`` -> 3.
Pooling is :func:`detcli.ops.roi_align` with ``spatial_scale = 1 / stride`` of that level.

``level_mapping: torchvision`` uses torchvision's ``LevelMapper`` instead (FPN paper, eqn. 1):
``k = floor(4 + log2(s / 224) + 1e-6)`` clamped to the levels' ``[log2(stride_0), log2(stride_0) + L - 1]``,
index ``k - log2(stride_0)``. The epsilon is added to the level, not to the scale ratio, so the two
rules disagree only for scales just below a level boundary (e.g. ``s = 111.99993``: mmdet 0, torchvision 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from detcli.errors import ConfigError
from detcli.models.detector import check_keys
from detcli.ops import roi_align
from detcli.registry import ROI_EXTRACTORS

LEVEL_MAPPINGS = ("mmdet", "torchvision")
#: torchvision ``LevelMapper``'s canonical RoI scale and its level (224 px -> P4).
TV_CANONICAL_SCALE = 224
TV_CANONICAL_LEVEL = 4


@ROI_EXTRACTORS.register()
class SingleRoIExtractor(nn.Module):
    """Pool each RoI from the pyramid level that matches its scale.

    Args:
        roi_layer: ``{type: RoIAlign, output_size: 7, sampling_ratio: 0, aligned: true}``
            (``sampling_ratio`` 0: adaptive, ``ceil(roi_size / output_size)`` samples per bin).
        out_channels: channels of the feature maps (and of the output).
        featmap_strides: strides of the levels used (the first ``len(featmap_strides)`` maps).
        finest_scale: RoI scale mapped to level 0 (below ``2 * finest_scale``); ``level_mapping: mmdet`` only.
        level_mapping: ``mmdet`` (``finest_scale`` rule) or ``torchvision`` (``LevelMapper``, see the module doc).
        init_cfg: accepted for mmdet compatibility (there are no weights).

    Example:
        >>> ext = SingleRoIExtractor({"type": "RoIAlign", "output_size": 7}, 256, [4, 8, 16, 32])
        >>> ext.map_roi_levels(torch.tensor([[0, 0, 0, 32, 32], [0, 0, 0, 112, 112], [0, 0, 0, 448, 448.]]), 4)
        tensor([0, 1, 3])
    """

    def __init__(
        self,
        roi_layer: Mapping[str, Any],
        out_channels: int,
        featmap_strides: Sequence[int],
        finest_scale: int = 56,
        level_mapping: str = "mmdet",
        init_cfg: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        layer = dict(roi_layer)
        check_keys(layer, ("type", "output_size", "sampling_ratio", "aligned", "pool_mode", "use_torchvision"),
                   "roi_layer")
        if layer.get("type", "RoIAlign") != "RoIAlign":
            raise ConfigError(f"roi_layer.type: only 'RoIAlign' is supported, got {layer.get('type')!r}")
        if layer.get("pool_mode", "avg") != "avg":
            raise ConfigError(f"roi_layer.pool_mode: only 'avg' is supported, got {layer.get('pool_mode')!r}")
        size = layer.get("output_size", 7)
        self.output_size = (int(size), int(size)) if isinstance(size, (int, float)) else (int(size[0]), int(size[1]))
        self.sampling_ratio = int(layer.get("sampling_ratio", 0))
        self.aligned = bool(layer.get("aligned", True))
        self.out_channels = int(out_channels)
        self.featmap_strides = [int(s) for s in featmap_strides]
        if not self.featmap_strides:
            raise ConfigError("featmap_strides: give at least one stride")
        self.finest_scale = finest_scale
        if level_mapping not in LEVEL_MAPPINGS:
            raise ConfigError(f"level_mapping must be one of {', '.join(LEVEL_MAPPINGS)}, got {level_mapping!r}")
        self.level_mapping = level_mapping
        k_min = math.log2(self.featmap_strides[0])
        if level_mapping == "torchvision" and (k_min != int(k_min) or any(
                s != self.featmap_strides[0] * 2**i for i, s in enumerate(self.featmap_strides))):
            raise ConfigError(f"level_mapping torchvision needs power-of-two strides doubling per level, "
                              f"got {self.featmap_strides}")
        self.k_min = int(k_min)

    @property
    def num_inputs(self) -> int:
        return len(self.featmap_strides)

    def map_roi_levels(self, rois: Tensor, num_levels: int) -> Tensor:
        """Level index ``(K,)`` int64 of each RoI ``(K, 5)`` (batch index, x1, y1, x2, y2)."""
        scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
        if self.level_mapping == "torchvision":
            # torchvision LevelMapper: canonical scale 224 at level 4, eps on the level
            levels = torch.floor(TV_CANONICAL_LEVEL + torch.log2(scale / TV_CANONICAL_SCALE)
                                 + torch.tensor(1e-6, dtype=scale.dtype))
            levels = levels.clamp(min=self.k_min, max=self.k_min + num_levels - 1)
            return levels.long() - self.k_min
        levels = torch.floor(torch.log2(scale / self.finest_scale + 1e-6))
        return levels.clamp(min=0, max=num_levels - 1).long()

    def forward(self, feats: Sequence[Tensor], rois: Tensor) -> Tensor:
        """feats: pyramid maps ``(B, C, H_l, W_l)``; rois ``(K, 5)`` -> ``(K, C, out_h, out_w)``."""
        num_levels = self.num_inputs
        if len(feats) < num_levels:
            raise ValueError(f"SingleRoIExtractor needs {num_levels} feature maps, got {len(feats)}")
        k = rois.shape[0]
        if num_levels == 1 or k == 0:
            return roi_align(feats[0], rois, self.output_size, 1.0 / self.featmap_strides[0],
                             self.sampling_ratio, self.aligned)
        levels = self.map_roi_levels(rois, num_levels)
        out = None
        for level in range(num_levels):
            idx = torch.nonzero(levels == level).flatten()
            if idx.numel() == 0:
                continue
            pooled = roi_align(feats[level], rois[idx], self.output_size, 1.0 / self.featmap_strides[level],
                               self.sampling_ratio, self.aligned)
            if out is None:
                out = pooled.new_zeros((k, *pooled.shape[1:]))
            out[idx] = pooled  # one copy into RoI order (autograd-tracked when pooled needs grad)
        return out  # type: ignore[return-value]
