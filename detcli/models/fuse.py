"""Fold BatchNorm layers into the convolutions before them, for faster inference.

A BatchNorm in eval mode is an affine map per channel, so ``bn(conv(x))`` equals one convolution
with rescaled weights and a new bias. :func:`fuse_conv_bn` walks a module tree and, inside every
container, fuses each ``BatchNorm2d`` registered directly after a ``Conv2d`` (the order torchvision's
ResNet blocks and det's heads use), replacing the BatchNorm with ``nn.Identity``. Only use it on a
model in eval mode: the fused model has no batch statistics left to train.
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fuse_conv_bn(module: nn.Module) -> int:
    """Fuse conv + BN pairs of ``module`` in place (call on an eval-mode model); return the number fused.

    Example:
        >>> m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
        >>> fuse_conv_bn(m), type(m[1]).__name__
        (1, 'Identity')
    """
    fused = 0
    last_name: str | None = None
    last_conv: nn.Conv2d | None = None
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d) and last_conv is not None and last_conv.out_channels == child.num_features:
            setattr(module, last_name, fuse_conv_bn_eval(last_conv, child))  # type: ignore[arg-type]
            setattr(module, name, nn.Identity())
            fused += 1
            last_conv = None
            continue
        if isinstance(child, nn.Conv2d):
            last_name, last_conv = name, child
        else:
            last_conv = None
            fused += fuse_conv_bn(child)
    return fused
