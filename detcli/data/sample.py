"""The record one dataset index turns into: a normalised image tensor, its meta and ground truth."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from detcli.structures import GroundTruth, ImageMeta


@dataclass
class Sample:
    """One image ready for the model.

    Attributes:
        image: ``Tensor[3, H, W]`` float32, normalised, in ``meta.pad_shape`` (or ``img_shape``) size.
        meta: how the image was loaded and transformed.
        gt: ground truth in the coordinates of ``image``, or None (test pipelines collect only ``img``).
    """

    image: Tensor
    meta: ImageMeta
    gt: GroundTruth | None = None
