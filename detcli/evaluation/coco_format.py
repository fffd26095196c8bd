"""Type checks of a COCO annotation dict, before pycocotools indexes it.

pycocotools' ``createIndex`` and everything after it assume well-typed fields: an image id that is
a JSON list raises ``TypeError: unhashable``, a null category id breaks sorting, a missing
annotation id a ``KeyError``. :func:`check_coco_types` finds the first such field and raises a
:class:`~detcli.errors.DatasetError` naming the section, the index and the key, so that every reader
of annotation files (the datasets, ``det eval --gt``) refuses them with one clear line.
"""

from __future__ import annotations

import json
import math
from typing import Any

from detcli.errors import DatasetError

#: Sections and the fields each entry must have (checked in this order).
REQUIRED = {"images": ("id",), "categories": ("id", "name"), "annotations": ("id", "image_id", "category_id")}


def _shown(value: Any) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def is_int(value: Any) -> bool:
    """A JSON integer (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite JSON number (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _segmentation_ok(seg: Any) -> bool:
    if isinstance(seg, list):
        return all(isinstance(p, list) and all(is_number(v) for v in p) for p in seg)
    if isinstance(seg, dict):
        size = seg.get("size")
        return (isinstance(size, list) and len(size) == 2 and all(is_int(v) and v >= 0 for v in size)
                and isinstance(seg.get("counts"), (str, list)))
    return False


def field_problem(section: str, entry: dict[str, Any]) -> tuple[str, str] | None:
    """``(key, what is wrong)`` for the first ill-typed field of one entry of ``section``, or None."""
    for key in REQUIRED[section]:
        if key not in entry:
            return key, "is missing"
        if section == "annotations" and key == "id":
            if not (is_int(entry[key]) or isinstance(entry[key], str)):
                return key, f"is {_shown(entry[key])}; annotation ids are integers"
        elif key == "name":
            continue  # type checked below
        elif not is_int(entry[key]):
            return key, f"is {_shown(entry[key])}; ids are integers"
    if section == "images":
        for key in ("height", "width"):
            if key in entry and not (is_number(entry[key]) and entry[key] > 0):
                return key, f"is {_shown(entry[key])}; image sizes are positive numbers"
        if "file_name" in entry and not isinstance(entry["file_name"], str):
            return "file_name", f"is {_shown(entry['file_name'])}; file names are strings"
    elif section == "categories":
        if "name" in entry and (not isinstance(entry["name"], (str, int)) or isinstance(entry["name"], bool)):
            return "name", f"is {_shown(entry['name'])}; category names are strings"
    else:
        bbox = entry.get("bbox")
        if "bbox" in entry and not (isinstance(bbox, list) and len(bbox) == 4 and all(is_number(v) for v in bbox)):
            return "bbox", f"is {_shown(bbox)}; boxes are [x, y, w, h], 4 finite numbers"
        if "area" in entry and not is_number(entry["area"]):
            return "area", f"is {_shown(entry['area'])}; areas are finite numbers"
        for key, allowed in (("iscrowd", (0, 1)), ("ignore", (0, 1, None))):
            value = entry.get(key, 0)
            if not (value is None and None in allowed) and not (is_number(value) and value in allowed):
                return key, f"is {_shown(value)}; it is 0 or 1"
        if "segmentation" in entry and entry["segmentation"] is not None and not _segmentation_ok(entry["segmentation"]):
            return "segmentation", (f"is {_shown(entry['segmentation'])}; masks are polygons (lists of numbers) "
                                    "or RLE objects {size: [h, w], counts}")
    return None


def segmentation_problem(seg: Any, height: Any, width: Any) -> str | None:
    """Why a result's ``segmentation`` cannot be evaluated on an image of ``height`` x ``width``, or None:
    polygons are lists of at least 3 points (6 finite numbers, an even count), an RLE an object with
    ``size`` equal to the image's ``[height, width]`` and ``counts`` (a string or a list of integers)."""
    if isinstance(seg, list):
        for k, poly in enumerate(seg):
            if not (isinstance(poly, list) and len(poly) >= 6 and len(poly) % 2 == 0 and all(is_number(v) for v in poly)):
                return f"polygon {k} is {_shown(poly)}; a polygon is [x1, y1, x2, y2, x3, y3, ...] (at least 3 points)"
        return None
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if size != [height, width]:
            return f"RLE size {_shown(size)} is not the image's [height, width] = [{height}, {width}]"
        if isinstance(counts, list) and all(is_int(c) and c >= 0 for c in counts):
            return None if sum(counts) == height * width else f"RLE counts sum to {sum(counts)}, not height x width"
        if isinstance(counts, str) and counts.isascii():
            return None
        return f"RLE counts {_shown(counts)} are neither a compressed string nor a list of run lengths"
    return f"is {_shown(seg)}; a mask is a list of polygons or an RLE object {{size, counts}}"


def check_coco_types(data: dict[str, Any], source: str, sections: tuple[str, ...] = ("images", "categories", "annotations"),
                     also_required: dict[str, tuple[str, ...]] | None = None) -> None:
    """Raise :class:`DatasetError` ``"SOURCE: SECTION[I].KEY is ...; fix"`` for the first ill-typed field.

    ``data[section]`` must be a list (when present) of objects; see :func:`field_problem` for the fields.
    ``also_required``: further keys each entry of a section must have (``{"annotations": ("area",)}``).
    """
    also_required = also_required or {}
    for section in sections:
        if section == "annotations" and section not in data:
            continue  # test-set files (image_info_test) have no annotations
        entries = data.get(section)
        if not isinstance(entries, list):
            raise DatasetError(f"{source}: '{section}' must be a list, got {_shown(entries)}")
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise DatasetError(f"{source}: {section}[{i}] is {_shown(entry)}, expected an object")
            problem = field_problem(section, entry)
            lacking = [k for k in also_required.get(section, ()) if k not in entry]
            if problem is None and lacking:
                problem = lacking[0], "is missing"
            if problem is not None:
                key, what = problem
                raise DatasetError(f"{source}: {section}[{i}].{key} {what}; fix the annotation file")
