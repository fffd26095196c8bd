"""YOLO txt labels to COCO json.

Layout: ``ROOT/images/...`` and ``ROOT/labels/...`` mirror each other (``images/train2017/a.jpg``
is labelled by ``labels/train2017/a.txt``). Each subfolder of ``images/`` holding images is a
split (one json each, ``OUT/instances_<split>.json``, ``file_name`` relative to that subfolder);
images directly in ``images/`` form the split named after ROOT.

A label line is ``class cx cy w h`` (normalised to the image size, read from the file header) or
``class x1 y1 x2 y2 ... xn yn`` (a normalised polygon of at least 3 points, YOLO segments), which
becomes a COCO segmentation polygon with its extent as the box. An image without a label file
has no boxes; label files without an image are listed in the result's warnings.
"""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path

from detcli.data.converters._common import (
    IMAGE_EXTENSIONS,
    CocoBuilder,
    ConversionResult,
    image_size,
    list_images,
    polygon_area,
    polygon_extent,
    read_class_names,
    require_dir,
    write_split,
)
from detcli.errors import DatasetError
from detcli.fileio import check_writable_dir

logger = logging.getLogger(__name__)

_MAX_SHOWN = 5
_LINE_FIX = ("expected 'class cx cy w h' (5 numbers, class an integer, the rest normalised to 0..1) or "
             "'class x1 y1 ... xn yn' (a polygon of at least 3 points); fix or delete the line")


def _splits(images: Path, root: Path) -> list[tuple[str, Path]]:
    subdirs = sorted(p for p in images.iterdir() if p.is_dir() and list_images(p))
    direct = [p for p in images.iterdir() if p.is_file()]
    splits = [(p.name, p) for p in subdirs]
    if any(p.suffix.lower() in IMAGE_EXTENSIONS for p in direct):
        if subdirs:
            raise DatasetError(f"{images} holds images both directly and in split folders "
                               f"({', '.join(p.name for p in subdirs)}); move the loose images into a split folder")
        splits = [(re.sub(r"\W+", "_", root.resolve().name) or "images", images)]
    if not splits:
        raise DatasetError(f"{images}: no images found (extensions {' '.join(IMAGE_EXTENSIONS)})")
    return splits


def _parse_label_file(txt: Path, num_classes: int, width: int, height: int,
                      bad: list[str]) -> list[tuple[int, list[float], float, list[list[float]] | None]]:
    """``(class, [x, y, w, h], area, polygon or None)`` per line; problems appended to ``bad``."""
    out: list[tuple[int, list[float], float, list[list[float]] | None]] = []
    try:
        text = txt.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        bad.append(f"{txt}: not UTF-8 text (byte {e.start}); {_LINE_FIX}")
        return out
    for n, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        where = f"{txt}:{n}"
        try:
            cls_f = float(tokens[0])
            values = [float(t) for t in tokens[1:]]
        except ValueError:
            bad.append(f"{where}: not numbers ({line.strip()[:60]!r}); {_LINE_FIX}")
            continue
        if not all(math.isfinite(v) for v in [cls_f, *values]):
            bad.append(f"{where}: nan or infinite value ({line.strip()[:60]!r}); {_LINE_FIX}")
            continue
        if cls_f != int(cls_f) or not 0 <= cls_f < num_classes:
            bad.append(f"{where}: class {tokens[0]} is not an index of the {num_classes} names (0..{num_classes - 1}); "
                       "fix the label or the names file")
            continue
        cls = int(cls_f)
        if len(values) == 4:
            cx, cy, w, h = values
            if w <= 0 or h <= 0:
                bad.append(f"{where}: box of width {w} and height {h}; {_LINE_FIX}")
                continue
            bw, bh = w * width, h * height
            out.append((cls, [cx * width - bw / 2, cy * height - bh / 2, bw, bh], bw * bh, None))
        elif len(values) >= 6 and len(values) % 2 == 0:
            poly = [v * (width if k % 2 == 0 else height) for k, v in enumerate(values)]
            extent = polygon_extent([poly])
            if extent[2] <= 0 or extent[3] <= 0:
                bad.append(f"{where}: the polygon has no extent; {_LINE_FIX}")
                continue
            out.append((cls, extent, polygon_area([poly]), [poly]))
        else:
            bad.append(f"{where}: {len(tokens)} values; {_LINE_FIX}")
    return out


def convert_yolo(root: str | os.PathLike[str], names: str | os.PathLike[str],
                 out_dir: str | os.PathLike[str]) -> ConversionResult:
    """Convert a YOLO dataset (``ROOT/images``, ``ROOT/labels``) to ``OUT/instances_<split>.json``.

    Args:
        root: folder holding ``images/`` and ``labels/``.
        names: class names, a ``.txt`` file (one per line) or a data ``.yaml`` with ``names``.
        out_dir: where the json files go.

    Raises:
        DatasetError: missing folders, bad names file, or malformed label lines (each named
            ``file:line`` with the fix; all of them are collected before raising).
    """
    root_dir = require_dir(root, "YOLO dataset folder")
    images_dir = require_dir(root_dir / "images", "images/ folder of the YOLO dataset (ROOT must hold images/ and labels/)")
    labels_dir = require_dir(root_dir / "labels", "labels/ folder of the YOLO dataset (ROOT must hold images/ and labels/)")
    classes = read_class_names(names)
    out = Path(out_dir)
    check_writable_dir(out, "output folder (--out-dir)")  # before any work
    result = ConversionResult()
    bad: list[str] = []
    used_labels: set[Path] = set()
    builders = []
    for split, split_dir in _splits(images_dir, root_dir):
        builder = CocoBuilder(classes)
        for img in list_images(split_dir):
            w, h = image_size(img)
            image_id = builder.add_image(img.relative_to(split_dir).as_posix(), w, h)
            txt = (labels_dir / img.relative_to(images_dir)).with_suffix(".txt")
            if not txt.is_file():
                continue
            used_labels.add(txt.resolve())
            for cls, bbox, area, poly in _parse_label_file(txt, len(classes), w, h, bad):
                builder.add_annotation(image_id, cls + 1, bbox, area, segmentation=poly)
        builders.append((split, split_dir, builder))
    if bad:
        more = f" (and {len(bad) - _MAX_SHOWN} more bad lines)" if len(bad) > _MAX_SHOWN else ""
        raise DatasetError(f"{len(bad)} malformed label lines{more}: " + " | ".join(bad[:_MAX_SHOWN]))
    for txt in sorted(labels_dir.rglob("*.txt")):
        if txt.resolve() not in used_labels and txt.name != "classes.txt":
            result.warnings.append(f"{txt}: label file without an image (looked for "
                                   f"{(images_dir / txt.relative_to(labels_dir)).with_suffix('.*')})")
    for split, split_dir, builder in builders:
        result.outputs.append(write_split(builder, split, out / f"instances_{split}.json", split_dir))
    return result
