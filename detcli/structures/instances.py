"""Per-image structures that travel between data, models, evaluation and the CLI.

- :class:`ImageMeta`: where an image came from and how the pipeline changed its geometry.
- :class:`GroundTruth`: the annotated objects of one image, in that image's current coordinates.
- :class:`Detections`: a model's results for one image.
- :class:`ImageBatch`: a padded batch of images with each image's size before padding.

Empty results are zero-length objects, never ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from detcli.structures.boxes import Boxes
from detcli.structures.masks import BitmapMasks, PolygonMasks


@dataclass(frozen=True)
class ImageMeta:
    """How one image entered the model.

    Attributes:
        image_id: id of the image in its dataset (the COCO ``image_id``).
        filename: path of the source file, or a synthetic name (``shapes/000012``).
        ori_shape: ``(height, width)`` of the image as stored.
        img_shape: ``(height, width)`` after resizing, before padding.
        pad_shape: ``(height, width)`` after padding.
        scale_factor: ``(w_scale, h_scale, w_scale, h_scale)`` from original to resized pixels.
        flip: whether the image was flipped, and ``flip_direction`` how.
    """

    image_id: int
    filename: str
    ori_shape: tuple[int, int]
    img_shape: tuple[int, int]
    pad_shape: tuple[int, int]
    scale_factor: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    flip: bool = False
    flip_direction: str | None = None


@dataclass
class GroundTruth:
    """Annotated objects of one image.

    Attributes:
        image_size: ``(height, width)`` the coordinates refer to.
        boxes: ``Boxes (N, 4)`` xyxy, ``0 <= x1 < x2``.
        labels: ``Tensor[N]`` int64 in ``[0, num_classes)``.
        ignore_boxes: ``Boxes (K, 4)`` regions (crowd) that neither count as positives nor negatives.
        masks: instance masks aligned with ``boxes`` (:class:`BitmapMasks` or :class:`PolygonMasks`,
            on the CPU, canvas = the padded image ``pad_shape``), or None for box-only pipelines.
    """

    image_size: tuple[int, int]
    boxes: Boxes
    labels: Tensor
    ignore_boxes: Boxes = field(default_factory=lambda: Boxes(torch.empty(0, 4)))
    masks: BitmapMasks | PolygonMasks | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.boxes, Boxes):
            self.boxes = Boxes(self.boxes)
        if not isinstance(self.ignore_boxes, Boxes):
            self.ignore_boxes = Boxes(self.ignore_boxes)
        self.labels = torch.as_tensor(self.labels, dtype=torch.int64).reshape(-1)
        if len(self.labels) != len(self.boxes):
            raise ValueError(f"GroundTruth has {len(self.boxes)} boxes but {len(self.labels)} labels")
        if self.masks is not None and len(self.masks) != len(self.boxes):
            raise ValueError(f"GroundTruth has {len(self.boxes)} boxes but {len(self.masks)} masks")

    def __len__(self) -> int:
        return len(self.boxes)

    def to(self, device: torch.device | str) -> "GroundTruth":
        """Boxes and labels on ``device``; masks stay CPU containers (mask targets are made from them)."""
        return replace(
            self, boxes=self.boxes.to(device), labels=self.labels.to(device),
            ignore_boxes=self.ignore_boxes.to(device),
        )


@dataclass
class Detections:
    """Results for one image.

    Attributes:
        image_size: ``(height, width)`` the boxes refer to.
        boxes: ``Boxes (N, 4)`` xyxy.
        scores: ``Tensor[N]`` float in [0, 1], sorted descending by the producer.
        labels: ``Tensor[N]`` int64 class indices in ``[0, num_classes)``.
        masks: ``Tensor[N, H, W]`` bool at ``image_size``, or None for box-only models.

    Indexing (``dets[dets.scores > 0.3]``) filters every field together.
    """

    image_size: tuple[int, int]
    boxes: Boxes
    scores: Tensor
    labels: Tensor
    masks: Tensor | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.boxes, Boxes):
            self.boxes = Boxes(self.boxes)
        self.scores = torch.as_tensor(self.scores, dtype=torch.float32).reshape(-1)
        self.labels = torch.as_tensor(self.labels, dtype=torch.int64).reshape(-1)
        n = len(self.boxes)
        if len(self.scores) != n or len(self.labels) != n:
            raise ValueError(
                f"Detections fields differ in length: boxes {n}, scores {len(self.scores)}, labels {len(self.labels)}"
            )
        if self.masks is not None and self.masks.shape[0] != n:
            raise ValueError(f"Detections has {n} boxes but {self.masks.shape[0]} masks")

    @classmethod
    def empty(cls, image_size: tuple[int, int], device: torch.device | str = "cpu", with_masks: bool = False) -> "Detections":
        h, w = image_size
        masks = torch.zeros(0, h, w, dtype=torch.bool, device=device) if with_masks else None
        return cls(
            image_size, Boxes(torch.empty(0, 4, device=device)),
            torch.empty(0, device=device), torch.empty(0, dtype=torch.int64, device=device), masks,
        )

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index: int | slice | Tensor) -> "Detections":
        if isinstance(index, int):
            index = slice(index, index + 1) if index != -1 else slice(-1, None)
        return Detections(
            self.image_size, self.boxes[index], self.scores[index], self.labels[index],
            None if self.masks is None else self.masks[index],
        )

    def to(self, device: torch.device | str) -> "Detections":
        return Detections(
            self.image_size, self.boxes.to(device), self.scores.to(device), self.labels.to(device),
            None if self.masks is None else self.masks.to(device),
        )

    @staticmethod
    def cat(items: list["Detections"]) -> "Detections":
        if not items:
            raise ValueError("Detections.cat needs at least one item")
        masks = None
        if all(d.masks is not None for d in items):
            masks = torch.cat([d.masks for d in items])  # type: ignore[misc]
        return Detections(
            items[0].image_size, Boxes.cat([d.boxes for d in items]),
            torch.cat([d.scores for d in items]), torch.cat([d.labels for d in items]), masks,
        )


@dataclass
class ImageBatch:
    """A batch of images padded to one size.

    Attributes:
        tensor: ``Tensor[B, 3, H, W]`` normalised float images, zero-padded at the bottom/right.
        image_sizes: per image, ``(height, width)`` of its valid (unpadded) region.
    """

    tensor: Tensor
    image_sizes: list[tuple[int, int]]

    def __post_init__(self) -> None:
        if self.tensor.dim() != 4:
            raise ValueError(f"ImageBatch.tensor must be (B, C, H, W), got {tuple(self.tensor.shape)}")
        if len(self.image_sizes) != self.tensor.shape[0]:
            raise ValueError(
                f"ImageBatch has {self.tensor.shape[0]} images but {len(self.image_sizes)} image sizes"
            )

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "ImageBatch":
        return ImageBatch(self.tensor.to(device, non_blocking=non_blocking), list(self.image_sizes))

    @staticmethod
    def from_tensors(images: list[Tensor], size_divisor: int = 32, pad_value: float = 0.0) -> "ImageBatch":
        """Pad ``(3, h_i, w_i)`` images to a common size that is a multiple of ``size_divisor``."""
        if not images:
            raise ValueError("ImageBatch.from_tensors needs at least one image")
        max_h = max(int(im.shape[-2]) for im in images)
        max_w = max(int(im.shape[-1]) for im in images)
        if size_divisor > 1:
            max_h = (max_h + size_divisor - 1) // size_divisor * size_divisor
            max_w = (max_w + size_divisor - 1) // size_divisor * size_divisor
        batch = images[0].new_full((len(images), images[0].shape[0], max_h, max_w), pad_value)
        for i, im in enumerate(images):
            batch[i, :, : im.shape[-2], : im.shape[-1]].copy_(im)
        return ImageBatch(batch, [(int(im.shape[-2]), int(im.shape[-1])) for im in images])
