"""Cityscapes ``gtFine`` polygons to COCO json, one file per split.

Reads ``ROOT/gtFine/<split>/<city>/*_gtFine_polygons.json`` and pairs each with
``ROOT/leftImg8bit/<split>/<city>/*_leftImg8bit.png``. The 8 instance classes of mmdet's
Cityscapes converter keep their Cityscapes label ids as category ids (person 24, rider 25, car 26,
truck 27, bus 28, train 31, motorcycle 32, bicycle 33); ``<class>group`` labels (``persongroup``,
``cargroup``, ...) are crowd regions (``iscrowd: 1``); every other label is background. The
polygons are the annotated outlines, occluded parts included (objects later in a file are in
front). Output: ``OUT/instancesonly_filtered_gtFine_<split>.json`` with ``file_name`` relative to
``leftImg8bit/<split>/``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from detcli.data.converters._common import (
    CocoBuilder,
    ConversionResult,
    polygon_area,
    polygon_extent,
    require_dir,
    write_split,
)
from detcli.errors import DatasetError
from detcli.fileio import check_writable_dir

logger = logging.getLogger(__name__)

CITYSCAPES_CLASSES: tuple[str, ...] = ("person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")
CITYSCAPES_IDS: tuple[int, ...] = (24, 25, 26, 27, 28, 31, 32, 33)
_SPLITS = ("train", "val", "test")
_SUFFIX = "_gtFine_polygons.json"


def convert_cityscapes(root: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> ConversionResult:
    """Convert every ``gtFine/<split>`` found (train, val, test, then any other folder).

    Raises:
        DatasetError: no ``gtFine``/``leftImg8bit`` folder, no polygon file, an unreadable file.
    """
    base = require_dir(root, "Cityscapes folder")
    gt_root = require_dir(base / "gtFine", "gtFine/ folder of Cityscapes")
    img_root = require_dir(base / "leftImg8bit", "leftImg8bit/ folder of Cityscapes")
    found = sorted((p for p in gt_root.iterdir() if p.is_dir()),
                   key=lambda p: (_SPLITS.index(p.name) if p.name in _SPLITS else len(_SPLITS), p.name))
    out = Path(out_dir)
    check_writable_dir(out, "output folder (--out-dir)")  # before any work
    result = ConversionResult()
    cat_of = dict(zip(CITYSCAPES_CLASSES, CITYSCAPES_IDS))
    for split_dir in found:
        files = sorted(split_dir.rglob(f"*{_SUFFIX}"))
        if not files:
            continue
        builder = CocoBuilder(CITYSCAPES_CLASSES, CITYSCAPES_IDS)
        for path in files:
            try:
                data = json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise DatasetError(f"{path}: not valid JSON ({e})") from e
            if not isinstance(data, dict) or not isinstance(data.get("objects"), list):
                raise DatasetError(f"{path}: not a Cityscapes polygons file (needs imgWidth, imgHeight, objects)")
            rel = path.relative_to(split_dir).as_posix()[: -len(_SUFFIX)] + "_leftImg8bit.png"  # missing: the check
            image_id = builder.add_image(rel, int(data.get("imgWidth", 0)), int(data.get("imgHeight", 0)))
            for k, obj in enumerate(data["objects"]):
                label = str(obj.get("label", ""))
                crowd = label.endswith("group")
                name = label[: -len("group")] if crowd else label
                if name not in cat_of or obj.get("deleted"):
                    continue
                try:
                    poly = [float(v) for pt in obj.get("polygon", []) for v in pt]
                except (TypeError, ValueError) as e:
                    raise DatasetError(f"{path}: objects[{k}]: 'polygon' must be a list of [x, y] points") from e
                if len(poly) < 6:
                    result.warnings.append(f"{path}: objects[{k}] ('{label}') has fewer than 3 points; skipped")
                    continue
                builder.add_annotation(image_id, cat_of[name], polygon_extent([poly]), polygon_area([poly]),
                                       segmentation=[poly], iscrowd=int(crowd))
        split = split_dir.name
        result.outputs.append(write_split(builder, split, out / f"instancesonly_filtered_gtFine_{split}.json",
                                          img_root / split))
    if not result.outputs:
        raise DatasetError(f"{gt_root}: no *{_SUFFIX} file found under gtFine/<split>/<city>/")
    return result
