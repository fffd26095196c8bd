"""A tiny detector and dataset honouring det's model and data contracts, for engine tests.

``TinyTestDetector`` is one 1x1 conv (plus dropout, so training draws random numbers) whose
loss pulls its pooled output towards the targets. ``TinyTestDataset`` renders small images in
memory with one box each and exposes a pycocotools ground truth. The engine runs them through
the real ``detcli.data`` loader (``build_dataloader``, ``collate``, ``map_to_original``).
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import torch
from torch import Tensor, nn

from detcli.data.sample import Sample
from detcli.registry import DATASETS, DETECTORS
from detcli.structures import Boxes, Detections, GroundTruth, ImageBatch, ImageMeta

SIZE = 32


@DETECTORS.register()
class TinyTestDetector(nn.Module):
    """A 1-conv "detector": predicts one full-image box per class, scored by its pooled output.

    Args:
        num_classes: number of classes.
        dropout: dropout probability in training (makes training consume the torch RNG).
        test_cfg: accepted like a real detector's (``nms``, ``max_per_img``).
        nan_after: return a NaN loss from this many forward calls on (-1: never).
    """

    def __init__(self, num_classes: int = 2, dropout: float = 0.2, test_cfg: dict | None = None, nan_after: int = -1) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv = nn.Conv2d(3, num_classes + 4, 1)
        self.norm = nn.BatchNorm2d(num_classes + 4)
        self.drop = nn.Dropout(dropout)
        self.test_cfg = test_cfg
        self.nan_after = nan_after
        self.calls = 0

    def init_weights(self, allow_partial: bool = False) -> list:
        nn.init.normal_(self.conv.weight, std=0.1)
        nn.init.zeros_(self.conv.bias)
        return []

    def forward(self, images: ImageBatch, targets: list[GroundTruth] | None = None) -> Any:
        if targets is None:
            return self.predict(images)
        return self.loss(images, targets)

    def _pooled(self, images: ImageBatch) -> Tensor:
        return self.drop(self.norm(self.conv(images.tensor))).mean(dim=(2, 3))  # (B, C + 4)

    def loss(self, images: ImageBatch, targets: list[GroundTruth]) -> dict[str, Tensor]:
        self.calls += 1
        pooled = self._pooled(images)
        cls_target = torch.zeros(len(targets), self.num_classes)
        box_target = torch.zeros(len(targets), 4)
        for i, t in enumerate(targets):
            if len(t):
                cls_target[i, t.labels[0]] = 1.0
                box_target[i] = t.boxes.tensor[0] / SIZE
        loss_cls = nn.functional.binary_cross_entropy_with_logits(pooled[:, : self.num_classes], cls_target)
        loss_bbox = (pooled[:, self.num_classes :] - box_target).abs().mean()
        if 0 <= self.nan_after < self.calls:
            loss_bbox = loss_bbox * float("nan")
        return {"loss_cls": loss_cls, "loss_bbox": loss_bbox, "num_pos": torch.tensor(float(len(targets)))}

    def predict(self, images: ImageBatch) -> list[Detections]:
        pooled = self._pooled(images)
        out = []
        for i, (h, w) in enumerate(images.image_sizes):
            scores = pooled[i, : self.num_classes].sigmoid()  # (C,)
            box = (pooled[i, self.num_classes :].sigmoid() * torch.tensor([w, h, w, h])).clone()
            x1, y1 = torch.minimum(box[0], box[2]), torch.minimum(box[1], box[3])
            x2, y2 = torch.maximum(box[0], box[2]) + 1, torch.maximum(box[1], box[3]) + 1
            b = torch.stack([x1, y1, x2.clamp(max=w), y2.clamp(max=h)])[None].expand(self.num_classes, 4)
            order = scores.argsort(descending=True)
            out.append(Detections((h, w), Boxes(b[order]), scores[order], torch.arange(self.num_classes)[order]))
        return out


@DATASETS.register()
class TinyTestDataset(torch.utils.data.Dataset):
    """``num_images`` 32x32 images, one box each (class ``i % len(classes)``), non-contiguous cat ids.

    Args:
        num_images: dataset length.
        classes: class names.
        test_mode: return ``[Sample]`` without ground truth.
        views: test-time views per image (test mode).
        seed: content seed.
    """

    def __init__(self, num_images: int = 8, classes: tuple[str, ...] = ("a", "b"), test_mode: bool = False,
                 views: int = 1, seed: int = 0) -> None:
        self.num_images = num_images
        self.classes = tuple(classes)
        self.cat_ids = [2 * i + 1 for i in range(len(self.classes))]
        self.test_mode = test_mode
        self.views = views
        self.seed = seed
        self.epoch = 0
        self.image_ids = [100 + i for i in range(num_images)]
        g = torch.Generator().manual_seed(seed)
        self.images = torch.rand(num_images, 3, SIZE, SIZE, generator=g)
        self.boxes = []
        for _ in range(num_images):
            x, y = torch.randint(0, 16, (2,), generator=g).tolist()
            self.boxes.append([float(x), float(y), float(x + 12), float(y + 10)])
        self._coco: Any = None

    def __len__(self) -> int:
        return self.num_images

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def get_img_info(self, idx: int) -> dict[str, Any]:
        return {"filename": f"{idx:03d}.png", "height": SIZE, "width": SIZE, "id": self.image_ids[idx]}

    def load_image(self, idx: int) -> Any:
        return (self.images[idx].permute(1, 2, 0).numpy() * 255).astype("uint8")

    def fingerprint(self) -> dict[str, Any]:
        return {"generator": "TinyTestDataset", "seed": self.seed, "num_images": self.num_images}

    def __getitem__(self, key: Any) -> Any:
        idx = int(key[0]) if isinstance(key, tuple) else int(key)
        meta = ImageMeta(self.image_ids[idx], f"tiny/{idx}", (SIZE, SIZE), (SIZE, SIZE), (SIZE, SIZE))
        label = idx % len(self.classes)
        gt = GroundTruth((SIZE, SIZE), torch.tensor([self.boxes[idx]]), torch.tensor([label]))
        if self.test_mode:
            return [Sample(self.images[idx].clone(), meta, None) for _ in range(self.views)]
        return Sample(self.images[idx].clone(), meta, gt)

    @property
    def coco(self) -> Any:
        if self._coco is None:
            from pycocotools.coco import COCO

            images = [{"id": i, "file_name": f"{i}.png", "height": SIZE, "width": SIZE} for i in self.image_ids]
            anns = []
            for idx, (x1, y1, x2, y2) in enumerate(self.boxes):
                anns.append({"id": idx + 1, "image_id": self.image_ids[idx], "category_id": self.cat_ids[idx % len(self.classes)],
                             "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
            cats = [{"id": c, "name": n} for c, n in zip(self.cat_ids, self.classes)]
            coco = COCO()
            coco.dataset = {"images": images, "annotations": anns, "categories": cats}
            with contextlib.redirect_stdout(io.StringIO()):
                coco.createIndex()
            self._coco = coco
        return self._coco


def tiny_cfg(**overrides: Any) -> dict[str, Any]:
    """A complete config for the tiny detector and dataset (2 epochs of 4 iterations)."""
    cfg: dict[str, Any] = {
        "model": {"type": "TinyTestDetector", "num_classes": 2,
                  "test_cfg": {"nms": {"type": "nms", "iou_threshold": 0.5}, "max_per_img": 100}},
        "data": {
            "samples_per_gpu": 2,
            "workers_per_gpu": 0,
            "train": {"type": "TinyTestDataset", "num_images": 8},
            "val": {"type": "TinyTestDataset", "num_images": 8},
            "test": {"type": "TinyTestDataset", "num_images": 8, "samples_per_gpu": 4},
        },
        "optimizer": {"type": "SGD", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0001},
        "optimizer_config": {"grad_clip": {"max_norm": 10.0, "norm_type": 2}},
        "lr_config": {"policy": "step", "warmup": "linear", "warmup_iters": 3, "warmup_ratio": 0.1, "step": [1]},
        "runner": {"type": "EpochBasedRunner", "max_epochs": 2},
        "checkpoint_config": {"interval": 1},
        "log_config": {"interval": 2},
        "evaluation": {"interval": 1, "metric": "bbox"},
    }
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


@DETECTORS.register()
class TinyMaskTestDetector(TinyTestDetector):
    """:class:`TinyTestDetector` with a "mask branch": each box comes with the mask of its top-left
    three quarters (``bool (N, H, W)`` at the input size, as two-stage models return them)."""

    with_mask = True

    def predict(self, images: ImageBatch) -> list[Detections]:
        out = []
        for dets in super().predict(images):
            h, w = dets.image_size
            masks = torch.zeros(len(dets), h, w, dtype=torch.bool)
            for i, (x1, y1, x2, y2) in enumerate(dets.boxes.tensor.round().long().tolist()):
                masks[i, y1:y1 + max(1, (y2 - y1) * 3 // 4), x1:x1 + max(1, (x2 - x1) * 3 // 4)] = True
            out.append(Detections(dets.image_size, dets.boxes, dets.scores, dets.labels, masks))
        return out


@DATASETS.register()
class TinyMaskTestDataset(TinyTestDataset):
    """:class:`TinyTestDataset` whose ground truth has polygon masks (a triangle in each box)."""

    @property
    def coco(self) -> Any:
        coco = super().coco
        for ann in coco.dataset["annotations"]:
            x, y, w, h = ann["bbox"]
            if "segmentation" not in ann:
                ann["segmentation"] = [[x, y, x + w, y, x, y + h]]
        return coco
