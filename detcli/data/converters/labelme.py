"""labelme json files to one COCO json.

Each ``*.json`` under the folder with a ``shapes`` list is one image (``imagePath`` relative to
the json; size from ``imageWidth``/``imageHeight`` or the image header). ``polygon`` shapes are
polygons, ``rectangle`` shapes (two corners) become 4-point polygons; shapes sharing a label and
a ``group_id`` are one instance (one annotation with several polygons, its box their common extent
and its area the area of their union). Other shape types (circle, line, point, ...) are skipped
and counted in the warnings. The class list comes from the data (sorted) or from a file.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from detcli.data.converters._common import (
    CocoBuilder,
    ConversionResult,
    class_not_found,
    image_size,
    polygon_area,
    polygon_extent,
    read_class_names,
    require_dir,
    write_split,
)
from detcli.errors import DatasetError
from detcli.fileio import check_writable_file

logger = logging.getLogger(__name__)

#: Lines of labelme's labels.txt convention that are not classes.
_NOT_CLASSES = ("__ignore__", "_background_")


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: not valid JSON ({e})") from e
    except RecursionError:
        raise DatasetError(f"{path}: JSON nested deeper than the parser's limit (about {sys.getrecursionlimit()} "
                           "levels; labelme files need 4)") from None
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        return None
    return data


def _polygon(shape: dict[str, Any], where: str) -> list[float] | None:
    """Flat polygon of a shape, or None when its type is not a region."""
    kind = shape.get("shape_type") or "polygon"
    try:
        pts = [(float(x), float(y)) for x, y in shape.get("points", [])]
    except (TypeError, ValueError) as e:
        raise DatasetError(f"{where}: 'points' must be a list of [x, y] pairs") from e
    if kind == "rectangle":
        if len(pts) != 2:
            raise DatasetError(f"{where}: a rectangle needs 2 corner points, got {len(pts)}")
        (xa, ya), (xb, yb) = pts
        x1, x2, y1, y2 = min(xa, xb), max(xa, xb), min(ya, yb), max(ya, yb)
        return [x1, y1, x2, y1, x2, y2, x1, y2]
    if kind == "polygon":
        if len(pts) < 3:
            raise DatasetError(f"{where}: a polygon needs at least 3 points, got {len(pts)}")
        return [v for p in pts for v in p]
    return None


def convert_labelme(folder: str | os.PathLike[str], out_file: str | os.PathLike[str],
                    classes: str | os.PathLike[str] | None = None) -> ConversionResult:
    """Convert the labelme files under ``folder`` (recursively) to ``out_file``.

    ``file_name`` is relative to ``folder`` (the ``img_prefix``).

    Raises:
        DatasetError: no labelme file, invalid shapes, a label outside ``classes``, an image
            reached by ``imagePath`` outside ``folder``.
    """
    root = require_dir(folder, "labelme folder")
    out = Path(out_file)
    check_writable_file(out, "output file (--out)")  # before any work
    if out.suffix.lower() != ".json":
        raise DatasetError(f"output {out} must be a .json file")
    result = ConversionResult()
    files = []
    for path in sorted(root.rglob("*.json")):
        if path.resolve() == out.resolve():
            continue
        data = _read(path)
        if data is None:
            result.warnings.append(f"{path}: not a labelme file (no 'shapes' list); skipped")
        else:
            files.append((path, data))
    if not files:
        raise DatasetError(f"{root}: no labelme .json file (with a 'shapes' list) found")
    if classes is not None:
        names = tuple(n for n in read_class_names(classes) if n not in _NOT_CLASSES)
    else:
        names = tuple(sorted({str(s.get("label")) for _, d in files for s in d["shapes"]
                              if isinstance(s, dict) and str(s.get("label")) not in _NOT_CLASSES}))
        if not names:
            raise DatasetError(f"{root}: the labelme files have no labelled shape")
    builder = CocoBuilder(names)
    skipped: dict[str, int] = {}
    for path, data in files:
        image_path = (path.parent / str(data.get("imagePath") or path.with_suffix(".jpg").name)).resolve()
        try:
            file_name = image_path.relative_to(root.resolve()).as_posix()
        except ValueError as e:
            raise DatasetError(f"{path}: imagePath {data.get('imagePath')!r} is outside {root}; "
                               "convert from a folder that contains the images") from e
        w, h = data.get("imageWidth"), data.get("imageHeight")
        if not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0):
            w, h = image_size(image_path)
        image_id = builder.add_image(file_name, w, h)
        instances: dict[Any, tuple[str, list[list[float]]]] = {}
        for k, shape in enumerate(data["shapes"]):
            where = f"{path}: shapes[{k}]"
            if not isinstance(shape, dict):
                raise DatasetError(f"{where}: a shape must be an object")
            label = str(shape.get("label"))
            if label in _NOT_CLASSES:
                continue
            if label not in builder.cat_id:
                raise class_not_found(label, names, where, "add it to the --classes file or fix the label")
            poly = _polygon(shape, where)
            if poly is None:
                kind = str(shape.get("shape_type"))
                skipped[kind] = skipped.get(kind, 0) + 1
                continue
            group = shape.get("group_id")
            if group is not None and not isinstance(group, (int, str)):
                raise DatasetError(f"{where}: group_id is {json.dumps(group)[:40]}; it is an integer or null")
            key = (label, group) if group is not None else ("#", k)
            instances.setdefault(key, (label, []))[1].append(poly)
        for label, polys in instances.values():
            builder.add_annotation(image_id, builder.cat_id[label], polygon_extent(polys), polygon_area(polys),
                                   segmentation=polys)
    for kind, n in sorted(skipped.items()):
        result.warnings.append(f"skipped {n} '{kind}' shapes (only polygon and rectangle shapes are regions)")
    result.outputs.append(write_split(builder, out.stem, out, root))
    return result
