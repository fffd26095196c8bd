"""A tiny VOCdevkit written into a temporary folder: XML annotations, JPEG images, image-set lists."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from detcli.data.shapes import SHAPE_CLASSES, ShapesDataset, render


@dataclass
class VocObject:
    """One ``<object>``: VOC 1-based inclusive pixel box ``(xmin, ymin, xmax, ymax)``."""

    name: str
    box: tuple[float, float, float, float]
    difficult: int | None = 0  # None: no <difficult> tag


@dataclass
class VocImage:
    img_id: str
    image: np.ndarray  # BGR uint8 (H, W, 3)
    objects: list[VocObject] = field(default_factory=list)
    write_size: bool = True


def voc_xml(img: VocImage) -> str:
    h, w = img.image.shape[:2]
    parts = ["<annotation>", "  <folder>VOC</folder>", f"  <filename>{img.img_id}.jpg</filename>"]
    if img.write_size:
        parts.append(f"  <size><width>{w}</width><height>{h}</height><depth>3</depth></size>")
    for obj in img.objects:
        parts.append("  <object>")
        parts.append(f"    <name>{obj.name}</name><pose>Unspecified</pose><truncated>0</truncated>")
        if obj.difficult is not None:
            parts.append(f"    <difficult>{obj.difficult}</difficult>")
        xmin, ymin, xmax, ymax = obj.box
        parts.append(f"    <bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox>")
        parts.append("  </object>")
    parts.append("</annotation>")
    return "\n".join(parts) + "\n"


def write_voc(devkit: Path, year: int, splits: dict[str, Sequence[VocImage]]) -> Path:
    """Write ``devkit/VOC<year>/{Annotations,JPEGImages,ImageSets/Main/<split>.txt}``; return the year folder."""
    root = devkit / f"VOC{year}"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for split, images in splits.items():
        for img in images:
            (root / "Annotations" / f"{img.img_id}.xml").write_text(voc_xml(img))
            cv2.imwrite(str(root / "JPEGImages" / f"{img.img_id}.jpg"), img.image)
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i.img_id}\n" for i in images))
    return root


def shapes_voc_images(num_images: int, seed: int = 0, split: str = "train", img_size: int = 64,
                      names: Sequence[str] = SHAPE_CLASSES, difficult_every: int = 3, first_id: int = 1) -> list[VocImage]:
    """Shapes images as VOC objects: class ``names[k]`` for shape class k; every ``difficult_every``-th
    object (counting over the split) is marked difficult. Boxes are written so that VOCDataset's -1
    shift gives back the shape's box rounded to whole pixels."""
    ds = ShapesDataset(pipeline=[], num_images=num_images, seed=seed, split=split, img_size=img_size, test_mode=True)
    out, count = [], 0
    for raw in range(num_images):
        layout = ds.layout(raw)
        ann = ds.get_ann_info(raw)
        objects = []
        for box, label in zip(ann["bboxes"].tolist(), ann["labels"].tolist()):
            x1, y1, x2, y2 = (int(round(v)) for v in box)
            count += 1
            objects.append(VocObject(names[label], (x1 + 1, y1 + 1, x2 + 1, y2 + 1),
                                     int(difficult_every > 0 and count % difficult_every == 0)))
        out.append(VocImage(f"{first_id + raw:06d}", render(layout), objects))
    return out


def shapes_devkit(devkit: Path, year: int = 2007, num_train: int = 6, num_test: int = 3, img_size: int = 64) -> Path:
    """A VOCdevkit of shapes images with ``trainval`` and ``test`` image sets; returns the year folder."""
    train = shapes_voc_images(num_train, seed=0, split="train", img_size=img_size)
    test = shapes_voc_images(num_test, seed=0, split="val", img_size=img_size, first_id=1000)
    return write_voc(devkit, year, {"trainval": train, "test": test})
