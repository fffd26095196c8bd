"""ResNet backbone on torchvision's block definitions, with mmdet 2.x options.

Parameter names are torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0``),
which are also mmdet's, so ImageNet weights from either load without renaming. The ``deep_stem``
(``stem.0`` ... ``stem.7``) and ``avg_down`` (``downsample.1`` / ``.2`` after the pooling) options carry
mmdet's names too; :class:`ResNetV1d` is ResNet with both. ResNeXt lives in
:mod:`detcli.models.backbones.resnext`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from torch import Tensor, nn
from torchvision.models import resnet as tv_resnet

from detcli.errors import ConfigError
from detcli.models.pretrained import PretrainedCfg, load_backbone_weights, parse_init_cfg
from detcli.registry import BACKBONES
from detcli.weights import LoadReport

logger = logging.getLogger(__name__)

#: depth -> (block class, blocks per stage)
ARCH_SETTINGS: dict[int, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    18: (tv_resnet.BasicBlock, (2, 2, 2, 2)),
    34: (tv_resnet.BasicBlock, (3, 4, 6, 3)),
    50: (tv_resnet.Bottleneck, (3, 4, 6, 3)),
    101: (tv_resnet.Bottleneck, (3, 4, 23, 3)),
    152: (tv_resnet.Bottleneck, (3, 8, 36, 3)),
}


def make_stages(
    block: type[nn.Module],
    blocks_per_stage: Sequence[int],
    stem_channels: int,
    base_channels: int,
    norm_layer: Any,
    zero_init_residual: bool,
    width_args: Mapping[str, int],
) -> list[nn.Sequential]:
    """The residual stages of a ResNet of any width, laid out and initialised as torchvision's.

    Stage ``i`` has ``blocks_per_stage[i]`` blocks of ``base_channels * 2**i`` planes, stride 1 in the
    first stage and 2 in the others (on the first block); a block whose input and output differ gets a
    projection shortcut ``downsample = (conv1x1, norm)``. Convs are Kaiming-normal (fan-out), norms
    ``(1, 0)``, and with ``zero_init_residual`` the last norm of every block starts at zero.

    Example:
        >>> from torchvision.models.resnet import BasicBlock
        >>> stages = make_stages(BasicBlock, (2, 2), 32, 32, nn.BatchNorm2d, True, {})
        >>> [s[0].conv1.in_channels for s in stages], [s[-1].conv2.out_channels for s in stages]
        ([32, 32], [32, 64])
    """
    expansion = 4 if block is tv_resnet.Bottleneck else 1
    inplanes, stages = stem_channels, []
    for i, num_blocks in enumerate(blocks_per_stage):
        planes, stride = base_channels * 2**i, 1 if i == 0 else 2
        blocks: list[nn.Module] = []
        for b in range(num_blocks):
            down = None
            if b == 0 and (stride != 1 or inplanes != planes * expansion):
                down = nn.Sequential(nn.Conv2d(inplanes, planes * expansion, kernel_size=1, stride=stride, bias=False),
                                     norm_layer(planes * expansion))
            blocks.append(block(inplanes, planes, stride if b == 0 else 1, down, norm_layer=norm_layer,  # type: ignore[call-arg]
                                base_width=width_args.get("width_per_group", 64), groups=width_args.get("groups", 1)))
            inplanes = planes * expansion
        stages.append(nn.Sequential(*blocks))
    for stage in stages:
        for m in stage.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in stage:
                last = m.bn3 if isinstance(m, tv_resnet.Bottleneck) else m.bn2
                nn.init.zeros_(last.weight)  # type: ignore[arg-type, union-attr]
    return stages


@BACKBONES.register()
class ResNet(nn.Module):
    """ResNet returning the feature maps of the stages in ``out_indices``.

    Args:
        depth: 18, 34, 50, 101 or 152.
        in_channels: input image channels.
        num_stages: residual stages used (1-4).
        out_indices: stages whose outputs are returned (0-based).
        style: where a Bottleneck that downsamples puts its stride: ``'pytorch'`` on the 3x3 conv
            (``conv2``), ``'caffe'`` on the first 1x1 conv (``conv1``), as MMDetection's caffe-style
            ResNets (``open-mmlab://detectron2/resnet50_caffe`` and the like) expect. BasicBlock
            ResNets (18/34) are the same in both styles. Parameter names do not change.
        frozen_stages: ``-1`` nothing frozen; ``0`` the stem; ``k`` the stem and stages ``1..k``
            (eval mode, no gradients).
        norm_cfg: ``{type: BN, requires_grad: bool}``.
        norm_eval: keep every BatchNorm in eval mode (running statistics) while training.
        zero_init_residual: initialise the last norm of each block to zero.
        deep_stem: replace the 7x7 stem conv by three 3x3 convs (32, 32, 64 channels; the first with
            stride 2), each followed by BN and ReLU, held in ``stem`` (mmdet's ``stem.0`` ... ``stem.7``
            names; ``conv1`` / ``bn1`` are then absent). ``frozen_stages >= 0`` freezes it.
        avg_down: every projection shortcut starts with an average pool of the block's stride (2x2,
            ``ceil_mode``, padding not counted; 1x1, an identity, in ``layer1``) followed by a stride-1 1x1
            conv, instead of a strided 1x1 conv: ``downsample.0`` is the pool, ``.1`` the conv, ``.2`` the
            norm, as in mmdet's ``ResLayer``.
        init_cfg: ``{type: Pretrained, checkpoint: URI, prefix, strict}`` loaded by :meth:`init_weights`
            (a path, ``torchvision://resnet50``, ``open-mmlab://NAME`` or an http(s) URL).
        pretrained: deprecated path form of ``init_cfg``.
        base_channels: width of the first stage (mmdet's ``base_channels``): stage ``i`` has
            ``base_channels * 2**i`` planes (times 4 at the output of a Bottleneck). 64, the default, is
            the standard ResNet; 32 is a slim one with about a quarter of the convolution cost.
        stem_channels: output channels of the stem (mmdet's ``stem_channels``; ``None``: ``base_channels``).
            With ``deep_stem`` the three convs have ``stem_channels // 2``, ``stem_channels // 2`` and
            ``stem_channels`` channels. Parameter names do not depend on either width.

    Shapes: ResNet-18 on ``(1, 3, 32, 32)`` returns ``(1, 64, 8, 8)``, ``(1, 128, 4, 4)``,
    ``(1, 256, 2, 2)``, ``(1, 512, 1, 1)``; ResNet-50's channels are 256/512/1024/2048. With
    ``base_channels: 32`` ResNet-18's are 32/64/128/256.
    """

    #: accepted values of ``style``
    STYLES: ClassVar[tuple[str, ...]] = ("pytorch", "caffe")

    def __init__(
        self,
        depth: int,
        in_channels: int = 3,
        num_stages: int = 4,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        style: str = "pytorch",
        frozen_stages: int = -1,
        norm_cfg: Mapping[str, Any] | None = None,
        norm_eval: bool = True,
        zero_init_residual: bool = True,
        deep_stem: bool = False,
        avg_down: bool = False,
        init_cfg: Mapping[str, Any] | None = None,
        pretrained: str | None = None,
        base_channels: int = 64,
        stem_channels: int | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        arch = self.arch_settings()
        if depth not in arch:
            raise ConfigError(f"invalid depth {depth} for {name} (choose from {sorted(arch)})")
        if style not in self.STYLES:
            raise ConfigError(f"{name} style '{style}' is not supported (choose from {', '.join(self.STYLES)})")
        if not 1 <= num_stages <= 4:
            raise ConfigError(f"{name} num_stages must be in 1..4, got {num_stages}")
        if any(not 0 <= i < num_stages for i in out_indices):
            raise ConfigError(f"{name} out_indices {list(out_indices)} must lie in 0..{num_stages - 1}")
        stem_channels = base_channels if stem_channels is None else stem_channels
        if base_channels < 1 or stem_channels < 2:
            raise ConfigError(f"{name} base_channels must be >= 1 and stem_channels >= 2, "
                              f"got {base_channels} and {stem_channels}")
        if not -1 <= frozen_stages <= num_stages:
            raise ConfigError(f"{name} frozen_stages must be in -1..{num_stages}, got {frozen_stages}")
        norm_cfg = {"type": "BN", "requires_grad": True} if norm_cfg is None else dict(norm_cfg)
        if norm_cfg.get("type") != "BN" or set(norm_cfg) - {"type", "requires_grad", "eps", "momentum"}:
            raise ConfigError(f"{name} norm_cfg: only {{type: BN, requires_grad: bool}} is supported, got {norm_cfg}")
        if pretrained is not None and init_cfg is not None:
            raise ConfigError(f"{name}: give init_cfg or pretrained, not both")
        self.pretrained = parse_init_cfg(init_cfg, "backbone") if pretrained is None else PretrainedCfg(str(pretrained))
        self.depth = depth
        self.style = style
        self.num_stages = num_stages
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.deep_stem = deep_stem
        self.avg_down = avg_down
        self.norm_requires_grad = bool(norm_cfg.get("requires_grad", True))
        eps = float(norm_cfg.get("eps", 1e-5))
        momentum = float(norm_cfg.get("momentum", 0.1))

        def norm_layer(channels: int) -> nn.BatchNorm2d:
            return nn.BatchNorm2d(channels, eps=eps, momentum=momentum)

        block, layers = arch[depth]
        self.stage_names = [f"layer{i + 1}" for i in range(num_stages)]
        if base_channels == 64 and stem_channels == 64:  # torchvision's own network (and its random init)
            net = tv_resnet.ResNet(block, list(layers), norm_layer=norm_layer, zero_init_residual=zero_init_residual,  # type: ignore[arg-type]
                                   **self.block_width_args())
            stem_conv, stem_norm = net.conv1, net.bn1
            stages = [getattr(net, stage) for stage in self.stage_names]
        else:
            stem_conv = nn.Conv2d(3, stem_channels, kernel_size=7, stride=2, padding=3, bias=False)
            stem_norm = norm_layer(stem_channels)
            stages = make_stages(block, layers[:num_stages], stem_channels, base_channels, norm_layer,
                                 zero_init_residual, self.block_width_args())
            nn.init.kaiming_normal_(stem_conv.weight, mode="fan_out", nonlinearity="relu")
        if deep_stem:
            self.stem = self._make_deep_stem(in_channels, stem_channels, norm_layer)
        else:
            if in_channels != 3:
                stem_conv = nn.Conv2d(in_channels, stem_channels, kernel_size=7, stride=2, padding=3, bias=False)
                nn.init.kaiming_normal_(stem_conv.weight, mode="fan_out", nonlinearity="relu")
            self.conv1, self.bn1, self.relu = stem_conv, stem_norm, nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        for stage, layer in zip(self.stage_names, stages):
            self.add_module(stage, layer)
        if style == "caffe":
            self._move_strides_to_conv1()
        if avg_down:
            self._pool_in_downsample()
        expansion = 4 if block is tv_resnet.Bottleneck else 1
        self.base_channels, self.stem_channels = base_channels, stem_channels
        self.out_channels = [base_channels * 2**i * expansion for i in range(num_stages)]
        if not self.norm_requires_grad:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.weight.requires_grad_(False)
                    m.bias.requires_grad_(False)
        self._freeze_stages()

    @classmethod
    def arch_settings(cls) -> Mapping[int, tuple[type[nn.Module], tuple[int, int, int, int]]]:
        """depth -> (block class, blocks per stage) this class accepts."""
        return ARCH_SETTINGS

    def block_width_args(self) -> dict[str, int]:
        """Extra arguments of torchvision's ResNet for the block widths (``groups``, ``width_per_group``);
        plain ResNet: none."""
        return {}

    @staticmethod
    def _make_deep_stem(in_channels: int, stem_channels: int, norm_layer: Any) -> nn.Sequential:
        """Three 3x3 conv + BN + ReLU (``in -> s/2``, stride 2; ``s/2 -> s/2``; ``s/2 -> s`` for
        ``s = stem_channels``, 64 by default), mmdet's layout."""
        half = stem_channels // 2
        layers: list[nn.Module] = []
        for cin, cout, stride in ((in_channels, half, 2), (half, half, 1), (half, stem_channels, 1)):
            conv = nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            layers += [conv, norm_layer(cout), nn.ReLU(inplace=True)]
        return nn.Sequential(*layers)

    def _pool_in_downsample(self) -> None:
        """``avg_down``: every projection shortcut ``(conv1x1 stride s, norm)`` becomes
        ``(AvgPool2d(s, s, ceil_mode, count_include_pad=False), conv1x1 stride 1, norm)``, same weights
        (``s = 1``, an identity pool, where the shortcut only changes the channels, as mmdet does)."""
        for stage in self.stage_names:
            for block in getattr(self, stage):
                down = block.downsample
                if down is None:
                    continue
                conv, norm = down[0], down[1]
                stride = conv.stride[0]  # square in torchvision's blocks
                conv.stride = (1, 1)
                pool = nn.AvgPool2d(kernel_size=stride, stride=stride, ceil_mode=True, count_include_pad=False)
                block.downsample = nn.Sequential(pool, conv, norm)

    def stem_modules(self) -> list[nn.Module]:
        """The modules before the max-pool (frozen by ``frozen_stages >= 0``)."""
        return [self.stem] if self.deep_stem else [self.conv1, self.bn1]

    def _move_strides_to_conv1(self) -> None:
        """Caffe style: move the stride of each downsampling Bottleneck from its 3x3 ``conv2`` to its 1x1 ``conv1``.

        Paddings stay, so shapes do not change: a 1x1 stride-2 conv without padding and a 3x3 stride-2
        conv with padding 1 both map a side ``n`` to ``ceil(n / 2)``. The ``downsample`` branch is the
        same in both styles.
        """
        for block in self.modules():
            if isinstance(block, tv_resnet.Bottleneck) and block.conv2.stride != (1, 1):
                block.conv1.stride, block.conv2.stride = block.conv2.stride, (1, 1)

    def _freeze_stages(self) -> None:
        """Put the stem and the first ``frozen_stages`` stages in eval mode without gradients."""
        frozen: list[nn.Module] = []
        if self.frozen_stages >= 0:
            frozen += self.stem_modules()
        frozen += [getattr(self, self.stage_names[i]) for i in range(max(self.frozen_stages, 0))]
        for m in frozen:
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)

    def init_weights(self, allow_partial: bool = False) -> list[LoadReport]:
        """Load the ``Pretrained`` checkpoint if one is configured (the random init happens in ``__init__``)."""
        if self.pretrained is None:
            return []
        return [load_backbone_weights(self, self.pretrained, allow_partial=allow_partial)]

    def train(self, mode: bool = True) -> ResNet:
        """Switch mode, keeping frozen stages (and every BatchNorm with ``norm_eval``) in eval mode."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """x (Tensor[B, C, H, W]) -> the maps of ``out_indices``, each (B, C_i, H / 2**(i+2), W / 2**(i+2))."""
        x = self.stem(x) if self.deep_stem else self.relu(self.bn1(self.conv1(x)))  # (B, stem, H/2, W/2)
        x = self.maxpool(x)  # (B, stem, H/4, W/4)
        outs = []
        for i, name in enumerate(self.stage_names):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)


@BACKBONES.register()
class ResNetV1d(ResNet):
    """ResNet-D of "Bag of Tricks" (mmdet's ``ResNetV1d``): ResNet with ``deep_stem`` and ``avg_down``.

    Takes ResNet's arguments except those two (``base_channels`` and ``stem_channels`` included).
    mmdet's ``open-mmlab://resnet50_v1c`` weights are ``deep_stem`` only (``type: ResNet, deep_stem: true``).
    """

    def __init__(
        self,
        depth: int,
        in_channels: int = 3,
        num_stages: int = 4,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        style: str = "pytorch",
        frozen_stages: int = -1,
        norm_cfg: Mapping[str, Any] | None = None,
        norm_eval: bool = True,
        zero_init_residual: bool = True,
        init_cfg: Mapping[str, Any] | None = None,
        pretrained: str | None = None,
        base_channels: int = 64,
        stem_channels: int | None = None,
    ) -> None:
        super().__init__(depth, in_channels, num_stages, out_indices, style, frozen_stages, norm_cfg, norm_eval,
                         zero_init_residual, deep_stem=True, avg_down=True, init_cfg=init_cfg, pretrained=pretrained,
                         base_channels=base_channels, stem_channels=stem_channels)
