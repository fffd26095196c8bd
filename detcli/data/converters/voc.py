"""Pascal VOC (2007/2012 XML) to COCO json, one file per ``ImageSets/Main/<split>.txt``.

Conventions of mmdet's ``pascal_voc.py`` converter: VOC's 1-based pixel coordinates become
``[xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]`` in COCO ``[x, y, w, h]`` (so
``x2 = xmax``); ``difficult`` objects are kept with ``ignore: 1`` (and ``iscrowd: 0``), which
:class:`~detcli.data.coco.CocoDataset` loads as ignore regions; ``<part>`` boxes nested in an
object (person layout: head, hand, foot) are not objects. ``file_name`` is relative to the
devkit folder given (``VOC2007/JPEGImages/000001.jpg``), so ``img_prefix`` is that folder.
"""

from __future__ import annotations

import logging
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from detcli.data.converters._common import (
    CocoBuilder,
    ConversionResult,
    class_not_found,
    image_size,
    read_class_names,
    require_dir,
    write_split,
)
from detcli.data.voc import VOC_CLASSES
from detcli.errors import DatasetError
from detcli.fileio import check_writable_dir

logger = logging.getLogger(__name__)

VOC_SPLITS: tuple[str, ...] = ("train", "val", "trainval", "test")


def _years(devkit: Path) -> list[Path]:
    """The VOC year folders: the devkit itself when it holds Annotations/, else its VOC* subfolders."""
    if (devkit / "Annotations").is_dir() or (devkit / "ImageSets").is_dir():
        return [devkit]
    years = sorted(p for p in devkit.iterdir() if p.is_dir() and (p / "ImageSets" / "Main").is_dir())
    if not years:
        raise DatasetError(f"{devkit} is not a VOC devkit: expected VOC2007/ or VOC2012/ folders (or Annotations/ "
                           "and ImageSets/Main/ directly in it)")
    return years


def _prefix(year_dir: Path) -> str:
    m = re.fullmatch(r"VOC(\d{4})", year_dir.name, flags=re.IGNORECASE)
    return f"voc{m.group(1)[2:]}" if m else re.sub(r"\W+", "_", year_dir.name.lower())


def _text(node: ET.Element, tag: str, xml: Path) -> str:
    child = node.find(tag)
    if child is None or child.text is None:
        raise DatasetError(f"{xml}: <{node.tag}> lacks <{tag}>; fix the annotation file")
    return child.text.strip()


def _coord(box: ET.Element, tag: str, xml: Path, obj_index: int) -> float:
    raw = _text(box, tag, xml)
    try:
        return float(raw)
    except ValueError as e:
        raise DatasetError(f"{xml}: object {obj_index}: <{tag}> is {raw!r}, not a number") from e


def _read_xml(xml: Path) -> ET.Element:
    try:
        return ET.parse(xml).getroot()
    except ET.ParseError as e:
        raise DatasetError(f"{xml}: not valid XML ({e})") from e


def _xml_size(root: ET.Element) -> tuple[int, int] | None:
    size = root.find("size")
    if size is None:
        return None
    try:
        w, h = int(float(size.findtext("width", "0"))), int(float(size.findtext("height", "0")))
    except (ValueError, OverflowError):  # not a number, nan, infinite: read the image's size instead
        return None
    return (w, h) if w > 0 and h > 0 else None


def _add_objects(root: ET.Element, xml: Path, builder: CocoBuilder, image_id: int, classes: Sequence[str]) -> None:
    for k, obj in enumerate(root.findall("object")):  # direct children only: <part> boxes are not objects
        name = _text(obj, "name", xml)
        if name not in builder.cat_id:
            raise class_not_found(name, classes, f"{xml}: object {k}",
                                  "pass the dataset's class list with --classes FILE")
        difficult = obj.find("difficult")
        is_difficult = int(difficult is not None and (difficult.text or "0").strip() not in ("", "0"))
        box = obj.find("bndbox")
        if box is None:
            raise DatasetError(f"{xml}: object {k} ('{name}') has no <bndbox>")
        x1, y1, x2, y2 = (_coord(box, t, xml, k) for t in ("xmin", "ymin", "xmax", "ymax"))
        w, h = x2 - x1 + 1, y2 - y1 + 1
        builder.add_annotation(image_id, builder.cat_id[name], [x1 - 1, y1 - 1, w, h], w * h,
                               iscrowd=0, ignore=is_difficult)


def convert_voc(devkit: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                classes: str | os.PathLike[str] | None = None) -> ConversionResult:
    """Convert every ``<year>/ImageSets/Main/{train,val,trainval,test}.txt`` found to
    ``OUT/<vocYY>_<split>.json`` (for example ``voc07_trainval.json``).

    Args:
        devkit: a ``VOCdevkit`` folder (with ``VOC2007/``, ``VOC2012/``) or one year folder.
        out_dir: where the json files go.
        classes: a class-names file replacing the 20 VOC classes (for VOC-format custom data).

    Raises:
        DatasetError: not a devkit, no split list, bad XML, a class outside the class list.
    """
    root = require_dir(devkit, "VOC devkit folder")
    out = Path(out_dir)
    check_writable_dir(out, "output folder (--out-dir)")  # before any work
    names = read_class_names(classes) if classes is not None else VOC_CLASSES
    result = ConversionResult()
    pending = []  # everything is parsed before anything is written: a bad file leaves no partial output
    for year in _years(root):
        splits = [s for s in VOC_SPLITS if (year / "ImageSets" / "Main" / f"{s}.txt").is_file()]
        if not splits:
            raise DatasetError(f"{year}: no split list in ImageSets/Main/ (expected one of "
                               f"{', '.join(s + '.txt' for s in VOC_SPLITS)})")
        rel = year.relative_to(root)
        for split in splits:
            list_file = year / "ImageSets" / "Main" / f"{split}.txt"
            builder = CocoBuilder(names)
            for line in list_file.read_text().splitlines():
                stem = line.strip().split()[0] if line.strip() else ""
                if not stem:
                    continue
                xml = year / "Annotations" / f"{stem}.xml"
                img = year / "JPEGImages" / f"{stem}.jpg"
                root_node = _read_xml(xml) if xml.is_file() else None
                size = _xml_size(root_node) if root_node is not None else None
                if size is None:
                    if not img.is_file():
                        raise DatasetError(f"{list_file}: '{stem}' has neither {xml.name} in Annotations/ nor "
                                           f"{img.name} in JPEGImages/; remove it from the list")
                    size = image_size(img)
                image_id = builder.add_image((rel / "JPEGImages" / img.name).as_posix(), *size)
                if root_node is not None:
                    _add_objects(root_node, xml, builder, image_id, names)
                else:
                    result.warnings.append(f"{list_file}: '{stem}' has no annotation file; written without boxes")
            pending.append((f"{_prefix(year)}_{split}", builder))
    for name, builder in pending:
        result.outputs.append(write_split(builder, name, out / f"{name}.json", root))
    return result
