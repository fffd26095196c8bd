"""CSPDarknet backbone of YOLOX (mmdet 2.x ``CSPDarknet`` semantics) and its building blocks.

The blocks (:class:`ConvNormAct`, :class:`DepthwiseSeparableConv`, :class:`CSPLayer`) are shared
with the YOLOX neck and head. Parameter names are mmdet's (``stem.conv.conv.weight``,
``stage1.1.blocks.0.conv2.bn.running_mean``, ...), so MMDetection checkpoints load without renaming.

Input: ``(B, 3, H, W)`` with ``H`` and ``W`` even (the Focus stem samples 2x2 pixel blocks).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from detcli.errors import ConfigError
from detcli.registry import BACKBONES

#: YOLOX's norm: BatchNorm with eps 0.001 and momentum 0.03
DEFAULT_NORM = {"type": "BN", "momentum": 0.03, "eps": 0.001}
DEFAULT_ACT = {"type": "Swish"}
ACTIVATIONS = ("Swish", "SiLU", "ReLU", "LeakyReLU")
#: (in, out, blocks, add_identity, use_spp) of each stage before widening/deepening (mmdet's P5/P6)
ARCH_SETTINGS = {
    "P5": ((64, 128, 3, True, False), (128, 256, 9, True, False), (256, 512, 9, True, False),
           (512, 1024, 3, False, True)),
    "P6": ((64, 128, 3, True, False), (128, 256, 9, True, False), (256, 512, 9, True, False),
           (512, 768, 3, True, False), (768, 1024, 3, False, True)),
}


def build_norm_layer(norm_cfg: Mapping[str, Any], channels: int) -> nn.Module:
    """``{type: BN, momentum, eps, requires_grad}`` (``SyncBN`` builds a BatchNorm2d, synchronised only
    when the runner converts it under DDP)."""
    kind = norm_cfg.get("type", "BN")
    if kind not in ("BN", "SyncBN"):
        raise ConfigError(f"norm_cfg type {kind!r} is not supported here (choose BN)")
    unknown = set(norm_cfg) - {"type", "momentum", "eps", "requires_grad"}
    if unknown:
        raise ConfigError(f"norm_cfg: unknown keys {sorted(unknown)} (valid: type, momentum, eps, requires_grad)")
    layer = nn.BatchNorm2d(channels, eps=float(norm_cfg.get("eps", 1e-5)), momentum=float(norm_cfg.get("momentum", 0.1)))
    if not norm_cfg.get("requires_grad", True):
        for p in layer.parameters():
            p.requires_grad_(False)
    return layer


def build_activation(act_cfg: Mapping[str, Any] | None) -> nn.Module | None:
    """``{type: Swish}`` / ``SiLU`` (``x * sigmoid(x)``), ``ReLU``, ``LeakyReLU`` (negative_slope), or None."""
    if act_cfg is None:
        return None
    kind = act_cfg.get("type")
    if kind in ("Swish", "SiLU"):
        return nn.SiLU()
    if kind == "ReLU":
        return nn.ReLU(inplace=True)
    if kind == "LeakyReLU":
        return nn.LeakyReLU(float(act_cfg.get("negative_slope", 0.01)), inplace=True)
    raise ConfigError(f"act_cfg type {kind!r} is not supported (choose one of {', '.join(ACTIVATIONS)})")


class ConvNormAct(nn.Module):
    """Conv (no bias) + BatchNorm + activation: mmcv's ``ConvModule`` with a norm (keys ``conv``, ``bn``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
                 norm_cfg: Mapping[str, Any] | None = None, act_cfg: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=(kernel_size - 1) // 2,
                              groups=groups, bias=False)
        self.bn = build_norm_layer(norm_cfg or DEFAULT_NORM, out_channels)
        self.act = build_activation(act_cfg)

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn(self.conv(x))
        return x if self.act is None else self.act(x)


class DepthwiseSeparableConv(nn.Module):
    """Depthwise ``k x k`` conv + norm + act, then pointwise 1x1 conv + norm + act (mmcv's
    ``DepthwiseSeparableConvModule``: keys ``depthwise_conv``, ``pointwise_conv``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 norm_cfg: Mapping[str, Any] | None = None, act_cfg: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.depthwise_conv = ConvNormAct(in_channels, in_channels, kernel_size, stride, groups=in_channels,
                                          norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.pointwise_conv = ConvNormAct(in_channels, out_channels, 1, norm_cfg=norm_cfg, act_cfg=act_cfg)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


def conv_block(use_depthwise: bool, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
               norm_cfg: Mapping[str, Any] | None = None, act_cfg: Mapping[str, Any] | None = None) -> nn.Module:
    """A :class:`DepthwiseSeparableConv` when ``use_depthwise``, else a :class:`ConvNormAct`."""
    if use_depthwise:
        return DepthwiseSeparableConv(in_channels, out_channels, kernel_size, stride, norm_cfg, act_cfg)
    return ConvNormAct(in_channels, out_channels, kernel_size, stride, norm_cfg=norm_cfg, act_cfg=act_cfg)


class DarknetBottleneck(nn.Module):
    """1x1 conv to ``out * expansion`` channels, 3x3 conv back, plus the input when ``add_identity``
    and the channel counts agree."""

    def __init__(self, in_channels: int, out_channels: int, expansion: float = 0.5, add_identity: bool = True,
                 use_depthwise: bool = False, norm_cfg: Mapping[str, Any] | None = None,
                 act_cfg: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        hidden = int(out_channels * expansion)
        self.conv1 = ConvNormAct(in_channels, hidden, 1, norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.conv2 = conv_block(use_depthwise, hidden, out_channels, 3, 1, norm_cfg, act_cfg)
        self.add_identity = add_identity and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(self.conv1(x))
        return out + x if self.add_identity else out


class CSPLayer(nn.Module):
    """Cross Stage Partial layer: a main 1x1 conv followed by ``num_blocks`` bottlenecks, a short 1x1
    conv, concatenated (main first) and fused by a final 1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int, expand_ratio: float = 0.5, num_blocks: int = 1,
                 add_identity: bool = True, use_depthwise: bool = False, norm_cfg: Mapping[str, Any] | None = None,
                 act_cfg: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        mid = int(out_channels * expand_ratio)
        self.main_conv = ConvNormAct(in_channels, mid, 1, norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.short_conv = ConvNormAct(in_channels, mid, 1, norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.final_conv = ConvNormAct(2 * mid, out_channels, 1, norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.blocks = nn.Sequential(*[DarknetBottleneck(mid, mid, 1.0, add_identity, use_depthwise, norm_cfg, act_cfg)
                                      for _ in range(num_blocks)])

    def forward(self, x: Tensor) -> Tensor:
        return self.final_conv(torch.cat([self.blocks(self.main_conv(x)), self.short_conv(x)], dim=1))


class Focus(nn.Module):
    """Space-to-depth stem: the four 2x2 phases (top-left, bottom-left, top-right, bottom-right)
    stacked on channels, then a conv."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 norm_cfg: Mapping[str, Any] | None = None, act_cfg: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.conv = ConvNormAct(in_channels * 4, out_channels, kernel_size, stride, norm_cfg=norm_cfg, act_cfg=act_cfg)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], dim=1))


class SPPBottleneck(nn.Module):
    """Spatial pyramid pooling: 1x1 conv to half the channels, max-pools (stride 1, same size) of
    each kernel size concatenated after it, 1x1 conv to ``out_channels``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_sizes: Sequence[int] = (5, 9, 13),
                 norm_cfg: Mapping[str, Any] | None = None, act_cfg: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        mid = in_channels // 2
        self.conv1 = ConvNormAct(in_channels, mid, 1, norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.poolings = nn.ModuleList([nn.MaxPool2d(int(k), stride=1, padding=int(k) // 2) for k in kernel_sizes])
        self.conv2 = ConvNormAct(mid * (len(kernel_sizes) + 1), out_channels, 1, norm_cfg=norm_cfg, act_cfg=act_cfg)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [pool(x) for pool in self.poolings], dim=1))


def init_yolox_convs(module: nn.Module) -> None:
    """mmdet's YOLOX init (``Kaiming``, a = sqrt(5), uniform, fan_in): PyTorch's default conv weight
    init, with zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            m.reset_parameters()
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def check_init_cfg(init_cfg: Mapping[str, Any] | None, owner: str) -> None:
    """Only the default init (None or mmdet's ``{type: Kaiming, ...}``) is accepted."""
    if init_cfg is not None and dict(init_cfg).get("type") != "Kaiming":
        raise ConfigError(f"{owner} init_cfg: only the default Kaiming init is supported, got {dict(init_cfg)!r} "
                          "(load whole-detector weights with model.init_cfg or --weights)")


@BACKBONES.register()
class CSPDarknet(nn.Module):
    """CSPDarknet: Focus stem and four (P5) or five (P6) stages of a stride-2 conv, an SPP block in the
    last stage, and a CSP layer.

    Args:
        arch: ``'P5'`` or ``'P6'``.
        deepen_factor: multiplier of the blocks per CSP layer (``max(round(n * f), 1)``).
        widen_factor: multiplier of the channels (``int(c * f)``).
        out_indices: outputs among ``0`` (stem), ``1..`` (stages).
        frozen_stages: ``-1`` nothing; ``k``: the stem and stages ``1..k`` frozen (eval mode, no grad).
        use_depthwise: depthwise-separable 3x3 convs.
        arch_ovewrite: replaces the ``arch`` table (mmdet's spelling).
        spp_kernal_sizes: max-pool kernels of the SPP block (mmdet's spelling).
        norm_cfg: BN settings (default eps 0.001, momentum 0.03).
        act_cfg: activation (default Swish).
        norm_eval: keep BatchNorm layers in eval mode while training.
        init_cfg: None or mmdet's default Kaiming init.
        conv_cfg: must be None (plain convs).

    Example:
        >>> m = CSPDarknet(deepen_factor=0.33, widen_factor=0.25)
        >>> [tuple(o.shape) for o in m(torch.rand(1, 3, 64, 64))]
        [(1, 64, 8, 8), (1, 128, 4, 4), (1, 256, 2, 2)]
    """

    def __init__(
        self,
        arch: str = "P5",
        deepen_factor: float = 1.0,
        widen_factor: float = 1.0,
        out_indices: Sequence[int] = (2, 3, 4),
        frozen_stages: int = -1,
        use_depthwise: bool = False,
        arch_ovewrite: Sequence[Sequence[Any]] | None = None,
        spp_kernal_sizes: Sequence[int] = (5, 9, 13),
        conv_cfg: Mapping[str, Any] | None = None,
        norm_cfg: Mapping[str, Any] | None = None,
        act_cfg: Mapping[str, Any] | None = None,
        norm_eval: bool = False,
        init_cfg: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if arch not in ARCH_SETTINGS:
            raise ConfigError(f"CSPDarknet arch must be one of {sorted(ARCH_SETTINGS)}, got {arch!r}")
        if conv_cfg is not None:
            raise ConfigError("CSPDarknet conv_cfg must be null (plain convolutions)")
        check_init_cfg(init_cfg, "CSPDarknet")
        setting = [tuple(s) for s in (arch_ovewrite or ARCH_SETTINGS[arch])]
        if not set(out_indices) <= set(range(len(setting) + 1)):
            raise ConfigError(f"CSPDarknet out_indices must be in 0..{len(setting)}, got {list(out_indices)}")
        if not -1 <= frozen_stages <= len(setting):
            raise ConfigError(f"CSPDarknet frozen_stages must be in -1..{len(setting)}, got {frozen_stages}")
        norm_cfg = dict(norm_cfg) if norm_cfg is not None else dict(DEFAULT_NORM)
        act_cfg = dict(act_cfg) if act_cfg is not None else dict(DEFAULT_ACT)
        self.out_indices = tuple(int(i) for i in out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.stem = Focus(3, int(setting[0][0] * widen_factor), 3, norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.layers = ["stem"]
        self.out_channels: list[int] = [int(setting[0][0] * widen_factor)]
        for i, (cin, cout, blocks, add_identity, use_spp) in enumerate(setting):
            cin, cout = int(cin * widen_factor), int(cout * widen_factor)
            n = max(round(blocks * deepen_factor), 1)
            stage: list[nn.Module] = [conv_block(use_depthwise, cin, cout, 3, 2, norm_cfg, act_cfg)]
            if use_spp:
                stage.append(SPPBottleneck(cout, cout, spp_kernal_sizes, norm_cfg, act_cfg))
            stage.append(CSPLayer(cout, cout, num_blocks=n, add_identity=bool(add_identity),
                                  use_depthwise=use_depthwise, norm_cfg=norm_cfg, act_cfg=act_cfg))
            self.add_module(f"stage{i + 1}", nn.Sequential(*stage))
            self.layers.append(f"stage{i + 1}")
            self.out_channels.append(cout)
        init_yolox_convs(self)
        self.freeze_stages()

    def freeze_stages(self) -> None:
        """The stem and the first ``frozen_stages`` stages in eval mode without gradients."""
        for name in self.layers[:self.frozen_stages + 1] if self.frozen_stages >= 0 else []:
            m = getattr(self, name)
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> CSPDarknet:
        super().train(mode)
        self.freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        outs = []
        for i, name in enumerate(self.layers):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
