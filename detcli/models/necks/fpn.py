"""Feature Pyramid Network (mmdet 2.x ``FPN`` semantics)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from detcli.errors import ConfigError
from detcli.registry import NECKS

EXTRA_CONV_SOURCES = ("on_input", "on_lateral", "on_output")


def conv_module(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                norm_cfg: Mapping[str, Any] | None = None, act: bool = False,
                bias: bool | None = None) -> nn.Sequential:
    """Conv + optional norm (``GN``/``BN``) + optional ReLU; ``bias=None`` puts a bias only without norm."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                                         padding=kernel_size // 2, bias=norm_cfg is None if bias is None else bias)]
    if norm_cfg is not None:
        layers.append(build_norm(norm_cfg, out_channels))
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def build_norm(norm_cfg: Mapping[str, Any], channels: int) -> nn.Module:
    """``{type: GN, num_groups: 32}`` or ``{type: BN}``; ``requires_grad: false`` freezes it."""
    kind = norm_cfg.get("type")
    if kind == "GN":
        layer: nn.Module = nn.GroupNorm(int(norm_cfg.get("num_groups", 32)), channels)
    elif kind == "BN":
        layer = nn.BatchNorm2d(channels)
    else:
        raise ConfigError(f"norm_cfg type '{kind}' is not supported (choose GN or BN)")
    if not norm_cfg.get("requires_grad", True):
        for p in layer.parameters():
            p.requires_grad_(False)
    return layer


@NECKS.register()
class FPN(nn.Module):
    """Top-down feature pyramid with lateral 1x1 and output 3x3 convs, plus extra levels.

    Args:
        in_channels: channels of each backbone input.
        out_channels: channels of every output level.
        num_outs: number of output levels.
        start_level: first backbone input used.
        end_level: last backbone input used (inclusive; ``-1``: the last one).
        add_extra_convs: extra levels beyond the inputs: ``False`` max-pool (kernel 1, stride 2);
            ``True``/``'on_input'`` 3x3 stride-2 convs starting from the last used input;
            ``'on_lateral'`` from the last lateral; ``'on_output'`` from the last output.
        relu_before_extra_convs: ReLU before the second and later extra convs.
        no_norm_on_lateral: no norm on the lateral convs.
        norm_cfg: norm of the convs (None: plain convs with bias).
        upsample_cfg: ``F.interpolate`` arguments for the top-down path (``mode``, optional ``scale_factor``).
        init_cfg: accepted for mmdet compatibility; only None or Xavier (the default) is allowed.

    Example:
        >>> fpn = FPN([2, 3, 5, 7], 11, 4)
        >>> [o.shape for o in fpn([torch.rand(1, c, s, s) for c, s in zip([2, 3, 5, 7], [340, 170, 84, 43])])]
        [torch.Size([1, 11, 340, 340]), torch.Size([1, 11, 170, 170]), torch.Size([1, 11, 84, 84]), torch.Size([1, 11, 43, 43])]
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: int,
        num_outs: int,
        start_level: int = 0,
        end_level: int = -1,
        add_extra_convs: bool | str = False,
        relu_before_extra_convs: bool = False,
        no_norm_on_lateral: bool = False,
        norm_cfg: Mapping[str, Any] | None = None,
        upsample_cfg: Mapping[str, Any] | None = None,
        init_cfg: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.num_ins = len(self.in_channels)
        self.num_outs = num_outs
        self.relu_before_extra_convs = relu_before_extra_convs
        self.upsample_cfg = dict(upsample_cfg) if upsample_cfg is not None else {"mode": "nearest"}
        if init_cfg is not None and init_cfg.get("type") != "Xavier":
            raise ConfigError(f"FPN init_cfg: only Xavier initialisation is supported, got {dict(init_cfg)}")
        if end_level == -1 or end_level == self.num_ins - 1:
            self.backbone_end_level = self.num_ins
            if num_outs < self.num_ins - start_level:
                raise ConfigError(f"FPN num_outs={num_outs} is less than the {self.num_ins - start_level} inputs used")
        else:
            self.backbone_end_level = end_level + 1
            if not 0 <= end_level < self.num_ins:
                raise ConfigError(f"FPN end_level={end_level} outside 0..{self.num_ins - 1}")
            if num_outs != end_level - start_level + 1:
                raise ConfigError(f"FPN num_outs must be end_level - start_level + 1 = {end_level - start_level + 1}")
        if not 0 <= start_level < self.backbone_end_level:
            raise ConfigError(f"FPN start_level={start_level} outside 0..{self.backbone_end_level - 1}")
        self.start_level = start_level
        self.end_level = end_level
        if add_extra_convs is True:
            add_extra_convs = "on_input"
        if add_extra_convs is not False and add_extra_convs not in EXTRA_CONV_SOURCES:
            raise ConfigError(f"FPN add_extra_convs={add_extra_convs!r}: use false, true or one of {EXTRA_CONV_SOURCES}")
        self.add_extra_convs = add_extra_convs
        self.lateral_convs = nn.ModuleList()
        self.fpn_convs = nn.ModuleList()
        for i in range(start_level, self.backbone_end_level):
            self.lateral_convs.append(conv_module(self.in_channels[i], out_channels, 1,
                                                  norm_cfg=None if no_norm_on_lateral else norm_cfg))
            self.fpn_convs.append(conv_module(out_channels, out_channels, 3, norm_cfg=norm_cfg))
        extra_levels = num_outs - self.backbone_end_level + start_level
        if add_extra_convs and extra_levels >= 1:
            for i in range(extra_levels):
                if i == 0 and add_extra_convs == "on_input":
                    channels = self.in_channels[self.backbone_end_level - 1]
                else:
                    channels = out_channels
                self.fpn_convs.append(conv_module(channels, out_channels, 3, stride=2, norm_cfg=norm_cfg))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        """inputs: one (B, in_channels[i], H_i, W_i) map per backbone level -> num_outs (B, out_channels, h, w) maps."""
        if len(inputs) != self.num_ins:
            raise ValueError(f"FPN expects {self.num_ins} inputs, got {len(inputs)}")
        laterals = [conv(inputs[i + self.start_level]) for i, conv in enumerate(self.lateral_convs)]
        used = len(laterals)
        # top-down path: upsample and add
        for i in range(used - 1, 0, -1):
            if "scale_factor" in self.upsample_cfg:
                up = F.interpolate(laterals[i], **self.upsample_cfg)
            else:
                up = F.interpolate(laterals[i], size=laterals[i - 1].shape[2:], **self.upsample_cfg)
            laterals[i - 1] = laterals[i - 1] + up
        outs = [self.fpn_convs[i](laterals[i]) for i in range(used)]
        # extra levels
        if self.num_outs > used:
            if not self.add_extra_convs:
                for _ in range(self.num_outs - used):
                    outs.append(F.max_pool2d(outs[-1], 1, stride=2))
            else:
                if self.add_extra_convs == "on_input":
                    source = inputs[self.backbone_end_level - 1]
                elif self.add_extra_convs == "on_lateral":
                    source = laterals[-1]
                else:
                    source = outs[-1]
                outs.append(self.fpn_convs[used](source))
                for i in range(used + 1, self.num_outs):
                    x = F.relu(outs[-1]) if self.relu_before_extra_convs else outs[-1]
                    outs.append(self.fpn_convs[i](x))
        return tuple(outs)
