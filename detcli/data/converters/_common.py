"""What the converters share: a COCO dict builder, image sizes from file headers, class-name files,
polygon geometry, and writing a split atomically followed by :func:`check_coco` on what was written.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detcli.data.base import load_class_names
from detcli.data.converters.check import CheckReport, check_coco, image_size  # noqa: F401  (converters use it from here)
from detcli.errors import DatasetError, did_you_mean
from detcli.fileio import IMAGE_EXTENSIONS, write_json_atomic

logger = logging.getLogger(__name__)



@dataclass
class ConvertedSplit:
    """One COCO json written by a converter and the check of its content."""

    split: str
    ann_file: Path
    img_prefix: Path
    report: CheckReport

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "ann_file": str(self.ann_file), "img_prefix": str(self.img_prefix),
                **self.report.to_dict()}


@dataclass
class ConversionResult:
    """Everything a converter wrote, plus the problems it met in the source data (``warnings``)."""

    outputs: list[ConvertedSplit] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def num_errors(self) -> int:
        return sum(out.report.num_errors for out in self.outputs)

    def to_dict(self) -> dict[str, Any]:
        return {"outputs": [o.to_dict() for o in self.outputs], "warnings": list(self.warnings),
                "errors": self.num_errors}


class CocoBuilder:
    """Accumulates images and annotations into a COCO dict (ids from 1, in insertion order).

    Args:
        classes: category names, in label order.
        cat_ids: their COCO ids (default ``1..K``).
    """

    def __init__(self, classes: Sequence[str], cat_ids: Sequence[int] | None = None) -> None:
        ids = list(cat_ids) if cat_ids is not None else list(range(1, len(classes) + 1))
        self.categories = [{"id": int(i), "name": str(n)} for i, n in zip(ids, classes)]
        self.cat_id = {str(n): int(i) for i, n in zip(ids, classes)}
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []

    def add_image(self, file_name: str, width: int, height: int) -> int:
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "file_name": file_name, "width": int(width), "height": int(height)})
        return image_id

    def add_annotation(self, image_id: int, category_id: int, bbox: Sequence[float], area: float,
                       segmentation: list[list[float]] | None = None, iscrowd: int = 0,
                       ignore: int | None = None) -> None:
        ann: dict[str, Any] = {
            "id": len(self.annotations) + 1, "image_id": image_id, "category_id": int(category_id),
            "bbox": [float(v) for v in bbox], "area": float(area), "iscrowd": int(iscrowd),
        }
        if segmentation is not None:
            ann["segmentation"] = segmentation
        if ignore is not None:
            ann["ignore"] = int(ignore)
        self.annotations.append(ann)

    def to_dict(self) -> dict[str, Any]:
        return {"images": self.images, "annotations": self.annotations, "categories": self.categories}


def write_split(builder: CocoBuilder, split: str, ann_file: Path, img_prefix: Path) -> ConvertedSplit:
    """Write the builder's COCO dict atomically to ``ann_file`` and check it against ``img_prefix``."""
    data = builder.to_dict()
    write_json_atomic(data, ann_file)
    report = check_coco(data, str(ann_file), img_dir=img_prefix)
    logger.info("wrote %s: %d images, %d annotations", ann_file, report.num_images, report.num_annotations)
    return ConvertedSplit(split=split, ann_file=ann_file, img_prefix=img_prefix, report=report)


def require_dir(path: str | os.PathLike[str], what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"{what} not found: {p}")
    if not p.is_dir():
        raise DatasetError(f"{what} must be a folder, got the file {p}")
    return p


def list_images(root: Path, exclude_extensions: Iterable[str] = ()) -> list[Path]:
    """Image files under ``root`` (recursively, sorted), without the excluded suffixes."""
    excluded = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in exclude_extensions}
    return sorted(p for p in root.rglob("*")
                  if p.suffix.lower() in IMAGE_EXTENSIONS and p.suffix.lower() not in excluded and p.is_file())


def read_text(path: Path, fix: str) -> str:
    """The UTF-8 text of an input file; a :class:`DatasetError` naming the file and ``fix`` if it is not UTF-8."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text (byte {e.start}); give {fix}") from e


def read_class_names(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """Class names from a text file (one per line) or a YOLO data yaml (``names`` list or ``{index: name}``)."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"class names file not found: {p}")
    if p.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(read_text(p, "a data .yaml with a 'names' list"))
        except yaml.YAMLError as e:
            raise DatasetError(f"{p}: not valid YAML: {e}") from e
        names = data.get("names") if isinstance(data, dict) else None
        if isinstance(names, dict):
            try:
                order = sorted(names, key=int)
            except (TypeError, ValueError) as e:
                raise DatasetError(f"{p}: the keys of 'names' must be class indices 0..N-1") from e
            if [int(k) for k in order] != list(range(len(order))):
                raise DatasetError(f"{p}: the keys of 'names' must be 0..{len(order) - 1} without gaps")
            names = [names[k] for k in order]
        if not isinstance(names, list) or not names:
            raise DatasetError(f"{p}: a data yaml needs a 'names' list (or {{index: name}} mapping) of class names")
        return load_class_names([str(n) for n in names], str(p))
    if p.suffix.lower() in (".json",):
        raise DatasetError(f"{p}: wrong file kind for class names: give a .txt file (one name per line) "
                           "or a data .yaml with a 'names' key")
    names = load_class_names(str(p), str(p))
    return load_class_names(list(names), str(p))  # the list form rejects duplicates


def class_not_found(name: str, classes: Sequence[str], where: str, fix: str) -> DatasetError:
    return DatasetError(f"{where}: class '{name}' is not in the class list{did_you_mean(name, classes)} "
                        f"({len(classes)} classes: {', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''}); "
                        f"{fix}")


def polygon_extent(polygons: Sequence[Sequence[float]]) -> list[float]:
    """COCO ``[x, y, w, h]`` of flat ``[x1, y1, x2, y2, ...]`` polygons."""
    xs = [v for poly in polygons for v in poly[0::2]]
    ys = [v for poly in polygons for v in poly[1::2]]
    return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]


def polygon_area(polygons: Sequence[Sequence[float]]) -> float:
    """Area of the union of flat polygons (self-intersections repaired, overlaps counted once)."""
    from shapely.geometry import Polygon
    from shapely.ops import unary_union

    shapes = [Polygon(list(zip(poly[0::2], poly[1::2]))) for poly in polygons if len(poly) >= 6]
    shapes = [s if s.is_valid else s.buffer(0) for s in shapes]
    return float(unary_union(shapes).area) if shapes else 0.0

