"""ResNeXt backbone (mmdet 2.x ``ResNeXt``): ResNet with grouped 3x3 convs in its Bottlenecks.

A stage with ``planes`` channels (64, 128, 256, 512) has Bottlenecks of inner width
``floor(planes * base_width / 64) * groups`` whose 3x3 conv has ``groups`` groups; ``groups: 1`` keeps
ResNet's width ``planes`` whatever ``base_width`` says, as mmdet does. Parameter names are ResNet's
(``layer1.0.conv2.weight`` of shape ``(width, width / groups, 3, 3)``), which are mmdet's and
torchvision's, so ``open-mmlab://resnext101_32x4d`` and ``torchvision://resnext50_32x4d`` load as they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn
from torchvision.models import resnet as tv_resnet

from detcli.errors import ConfigError
from detcli.models.backbones.resnet import ARCH_SETTINGS, ResNet
from detcli.registry import BACKBONES

#: ResNeXt exists with Bottlenecks only: depth -> (block, blocks per stage)
RESNEXT_ARCH: dict[int, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    d: v for d, v in ARCH_SETTINGS.items() if v[0] is tv_resnet.Bottleneck
}


def bottleneck_width(planes: int, groups: int, base_width: int) -> int:
    """Inner width of a ResNeXt Bottleneck of a stage with ``planes`` channels.

    Example:
        >>> bottleneck_width(64, 32, 4), bottleneck_width(512, 64, 4), bottleneck_width(64, 1, 4)
        (128, 2048, 64)
    """
    return planes if groups == 1 else (planes * base_width // 64) * groups


@BACKBONES.register()
class ResNeXt(ResNet):
    """ResNeXt-50/101/152 returning the feature maps of the stages in ``out_indices``.

    Args:
        groups: groups of every Bottleneck's 3x3 conv (the "32" of 101-32x4d).
        base_width: channels per group in the first stage (the "4" of 101-32x4d).
        others: as :class:`~detcli.models.backbones.resnet.ResNet` (``deep_stem`` and ``avg_down`` included).

    Shapes: the output channels are ResNet-50's (256/512/1024/2048); ResNeXt-101 32x4d has
    Bottleneck widths 128/256/512/1024, 64x4d 256/512/1024/2048.
    """

    def __init__(
        self,
        depth: int,
        groups: int = 1,
        base_width: int = 4,
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
    ) -> None:
        if groups < 1 or base_width < 1:
            raise ConfigError(f"ResNeXt groups and base_width must be >= 1, got groups={groups}, base_width={base_width}")
        self.groups = groups
        self.base_width = base_width
        super().__init__(depth, in_channels, num_stages, out_indices, style, frozen_stages, norm_cfg, norm_eval,
                         zero_init_residual, deep_stem, avg_down, init_cfg, pretrained)

    @classmethod
    def arch_settings(cls) -> Mapping[int, tuple[type[nn.Module], tuple[int, int, int, int]]]:
        return RESNEXT_ARCH

    def block_width_args(self) -> dict[str, int]:
        """torchvision's Bottleneck width is ``int(planes * width_per_group / 64) * groups``: mmdet's rule
        with ``width_per_group = base_width``, except ``groups: 1`` (ResNet's width, ``width_per_group = 64``)."""
        if self.groups == 1:
            return {"groups": 1, "width_per_group": 64}
        return {"groups": self.groups, "width_per_group": self.base_width}
