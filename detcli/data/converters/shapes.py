"""The synthetic shapes dataset written as JPEGs plus a COCO json (:func:`~detcli.data.shapes.export_shapes_coco`),
checked like every converter's output."""

from __future__ import annotations

import os
from pathlib import Path

from detcli.data.converters._common import ConversionResult, ConvertedSplit
from detcli.data.converters.check import check_coco, load_coco_json
from detcli.data.shapes import export_shapes_coco
from detcli.fileio import check_writable_dir


def convert_shapes(out_dir: str | os.PathLike[str], num_images: int, seed: int = 0,
                   split: str = "train") -> ConversionResult:
    """Write ``OUT/images/<split>/`` and ``OUT/annotations/instances_<split>.json``, then check them."""
    check_writable_dir(out_dir, "output folder (OUT_DIR)")  # before any work
    ann = export_shapes_coco(out_dir, num_images=num_images, seed=seed, split=split)
    img_dir = Path(out_dir) / "images" / split
    report = check_coco(load_coco_json(ann), str(ann), img_dir=img_dir)
    return ConversionResult(outputs=[ConvertedSplit(split=split, ann_file=ann, img_prefix=img_dir, report=report)])
