"""YOLOX's path-aggregation FPN (mmdet 2.x ``YOLOXPAFPN`` semantics; mmdet's parameter names)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detcli.errors import ConfigError
from detcli.models.backbones.csp_darknet import (
    DEFAULT_ACT,
    DEFAULT_NORM,
    ConvNormAct,
    CSPLayer,
    check_init_cfg,
    conv_block,
    init_yolox_convs,
)
from detcli.registry import NECKS


@NECKS.register()
class YOLOXPAFPN(nn.Module):
    """Top-down path (1x1 reduce, nearest x2 upsample, concat, CSP layer), then bottom-up path
    (stride-2 3x3 conv, concat, CSP layer), then a 1x1 conv to ``out_channels`` on every level.

    Args:
        in_channels: channels of the backbone maps (fine to coarse).
        out_channels: channels of every output.
        num_csp_blocks: bottlenecks per CSP layer.
        use_depthwise: depthwise-separable stride-2 convs (and 3x3 convs in the CSP bottlenecks).
        upsample_cfg: ``{scale_factor: 2, mode: nearest}`` (``F.interpolate`` arguments).
        norm_cfg, act_cfg: as in :class:`~detcli.models.backbones.CSPDarknet`.
        conv_cfg: must be None; init_cfg: None or the default Kaiming init.

    Example:
        >>> neck = YOLOXPAFPN([8, 16, 32], 8, num_csp_blocks=1)
        >>> [tuple(o.shape) for o in neck([torch.rand(1, 8, 8, 8), torch.rand(1, 16, 4, 4), torch.rand(1, 32, 2, 2)])]
        [(1, 8, 8, 8), (1, 8, 4, 4), (1, 8, 2, 2)]
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: int,
        num_csp_blocks: int = 3,
        use_depthwise: bool = False,
        upsample_cfg: Mapping[str, Any] | None = None,
        conv_cfg: Mapping[str, Any] | None = None,
        norm_cfg: Mapping[str, Any] | None = None,
        act_cfg: Mapping[str, Any] | None = None,
        init_cfg: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if conv_cfg is not None:
            raise ConfigError("YOLOXPAFPN conv_cfg must be null (plain convolutions)")
        if len(in_channels) < 2:
            raise ConfigError(f"YOLOXPAFPN needs at least 2 input levels, got in_channels={list(in_channels)}")
        check_init_cfg(init_cfg, "YOLOXPAFPN")
        norm_cfg = dict(norm_cfg) if norm_cfg is not None else dict(DEFAULT_NORM)
        act_cfg = dict(act_cfg) if act_cfg is not None else dict(DEFAULT_ACT)
        self.upsample_cfg = dict(upsample_cfg or {"scale_factor": 2, "mode": "nearest"})
        self.in_channels = [int(c) for c in in_channels]
        self.out_channels = int(out_channels)
        ch = self.in_channels
        self.reduce_layers = nn.ModuleList()
        self.top_down_blocks = nn.ModuleList()
        for idx in range(len(ch) - 1, 0, -1):
            self.reduce_layers.append(ConvNormAct(ch[idx], ch[idx - 1], 1, norm_cfg=norm_cfg, act_cfg=act_cfg))
            self.top_down_blocks.append(CSPLayer(ch[idx - 1] * 2, ch[idx - 1], num_blocks=num_csp_blocks,
                                                 add_identity=False, use_depthwise=use_depthwise,
                                                 norm_cfg=norm_cfg, act_cfg=act_cfg))
        self.downsamples = nn.ModuleList()
        self.bottom_up_blocks = nn.ModuleList()
        for idx in range(len(ch) - 1):
            self.downsamples.append(conv_block(use_depthwise, ch[idx], ch[idx], 3, 2, norm_cfg, act_cfg))
            self.bottom_up_blocks.append(CSPLayer(ch[idx] * 2, ch[idx + 1], num_blocks=num_csp_blocks,
                                                  add_identity=False, use_depthwise=use_depthwise,
                                                  norm_cfg=norm_cfg, act_cfg=act_cfg))
        self.out_convs = nn.ModuleList([ConvNormAct(c, out_channels, 1, norm_cfg=norm_cfg, act_cfg=act_cfg) for c in ch])
        init_yolox_convs(self)

    def forward(self, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        n = len(self.in_channels)
        if len(inputs) != n:
            raise ValueError(f"YOLOXPAFPN expects {n} input maps, got {len(inputs)}")
        # top-down: inner[0] is the finest level processed so far
        inner = [inputs[-1]]
        for k, idx in enumerate(range(n - 1, 0, -1)):
            high = self.reduce_layers[k](inner[0])
            inner[0] = high
            up = F.interpolate(high, **self.upsample_cfg)
            inner.insert(0, self.top_down_blocks[k](torch.cat([up, inputs[idx - 1]], dim=1)))
        # bottom-up
        outs = [inner[0]]
        for idx in range(n - 1):
            down = self.downsamples[idx](outs[-1])
            outs.append(self.bottom_up_blocks[idx](torch.cat([down, inner[idx + 1]], dim=1)))
        return tuple(conv(o) for conv, o in zip(self.out_convs, outs))
