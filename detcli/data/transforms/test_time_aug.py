"""Test-time augmentation: MultiScaleFlipAug runs its transforms once per (scale, flip)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from detcli.data.transforms.compose import Compose
from detcli.data.transforms.geometric import RandomFlip, parse_scales
from detcli.registry import TRANSFORMS

logger = logging.getLogger(__name__)

_DIRECTIONS = ("horizontal", "vertical", "diagonal")


@TRANSFORMS.register()
class MultiScaleFlipAug:
    """Run ``transforms`` on copies of the results, one per (scale, flip) pair, scale-major.

    Example: ``img_scale=[(1333, 400), (1333, 800)], flip=True`` yields 4 samples with
    scale = [(1333, 400), (1333, 400), (1333, 800), (1333, 800)] and flip = [False, True, False, True].

    Args:
        transforms: the per-augmentation pipeline (usually Resize, RandomFlip, Normalize, Pad,
            DefaultFormatBundle/ImageToTensor, Collect).
        img_scale: ``(long, short)`` or a list of them (sets ``results['scale']``).
        scale_factor: a float or a list of floats (sets ``results['scale_factor']``); exactly one
            of ``img_scale``/``scale_factor``.
        flip: add flipped copies, one per ``flip_direction``.
        flip_direction: a direction or a list of them.

    Returns (when called): a list with one pipeline output per augmentation.
    """

    def __init__(
        self,
        transforms: Sequence[Callable[[dict], Any] | Mapping[str, Any]],
        img_scale: tuple[int, int] | list[tuple[int, int]] | None = None,
        scale_factor: float | list[float] | None = None,
        flip: bool = False,
        flip_direction: str | list[str] = "horizontal",
    ) -> None:
        if (img_scale is None) == (scale_factor is None):
            raise ValueError("MultiScaleFlipAug: set exactly one of img_scale or scale_factor")
        self.transforms = Compose(transforms)
        if img_scale is not None:
            self.scales: list[Any] = parse_scales(img_scale) or []
            self.scale_key = "scale"
        else:
            factors = scale_factor if isinstance(scale_factor, (list, tuple)) else [scale_factor]
            self.scales = [float(f) for f in factors]  # type: ignore[arg-type]
            self.scale_key = "scale_factor"
        self.flip = flip
        self.flip_direction = [flip_direction] if isinstance(flip_direction, str) else list(flip_direction)
        for d in self.flip_direction:
            if d not in _DIRECTIONS:
                raise ValueError(f"unknown flip direction {d!r} (allowed: {', '.join(_DIRECTIONS)})")
        if flip and not any(isinstance(t, RandomFlip) for t in self.transforms.transforms):
            logger.warning("MultiScaleFlipAug: flip=True but no RandomFlip in transforms: flips have no effect")

    def __call__(self, results: dict[str, Any]) -> list[Any]:
        flip_args: list[tuple[bool, str | None]] = [(False, None)]
        if self.flip:
            flip_args += [(True, d) for d in self.flip_direction]
        outputs = []
        for scale in self.scales:
            for flip, direction in flip_args:
                aug = dict(results)
                for key in ("bbox_fields", "mask_fields", "img_fields"):
                    if key in aug:
                        aug[key] = list(aug[key])
                aug[self.scale_key] = scale
                aug["flip"] = flip
                aug["flip_direction"] = direction
                outputs.append(self.transforms(aug))
        return outputs

    def __repr__(self) -> str:
        return (f"MultiScaleFlipAug(transforms={self.transforms!r}, {self.scale_key}={self.scales}, "
                f"flip={self.flip}, flip_direction={self.flip_direction})")
