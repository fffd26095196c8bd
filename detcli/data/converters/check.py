"""``check_coco``: find what is wrong in a COCO annotation file, classified by severity.

* **error** (the file will mislead or break training/evaluation): duplicate image, annotation or
  category ids; malformed entries; annotations of undeclared categories or of images not in
  ``images``; boxes of zero or negative size; boxes entirely outside their image; image files
  missing from ``img_dir``, empty (0 bytes), truncated (:func:`detcli.data.transforms.loading.image_problem`),
  unreadable, or of another size than the json's ``width``/``height``.
* **warning** (loads, but probably not what was meant): boxes partly outside the image, boxes
  thinner than 1 px (training drops them), duplicate file names or category names.
* **info**: images without annotations, categories without annotations, category ids that are not
  ``1..K`` (harmless: labels follow the order of ``categories``), crowd/ignored annotations.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections import Counter
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detcli.data.transforms.loading import image_file_problem
from detcli.errors import DatasetError

SEVERITIES = ("error", "warning", "info")

#: How far (px) a box may stick out of its image before it counts as partly outside (float noise).
OUTSIDE_TOLERANCE = 0.01
_MAX_EXAMPLES = 5


@dataclass
class CheckIssue:
    """One kind of problem: how many times it occurs and a few examples."""

    severity: str
    code: str
    message: str
    count: int
    examples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"severity": self.severity, "code": self.code, "message": self.message, "count": self.count,
                "examples": list(self.examples)}


@dataclass
class CheckReport:
    """The result of :func:`check_coco`. ``ok`` is False when there is at least one error."""

    ann_file: str
    num_images: int
    num_annotations: int
    num_categories: int
    per_category: dict[str, int]
    issues: list[CheckIssue]

    def _count(self, severity: str) -> int:
        return sum(i.count for i in self.issues if i.severity == severity)

    @property
    def num_errors(self) -> int:
        return self._count("error")

    @property
    def num_warnings(self) -> int:
        return self._count("warning")

    @property
    def ok(self) -> bool:
        return self.num_errors == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "ann_file": self.ann_file, "ok": self.ok, "num_images": self.num_images,
            "num_annotations": self.num_annotations, "num_categories": self.num_categories,
            "num_errors": self.num_errors, "num_warnings": self.num_warnings,
            "per_category": dict(self.per_category), "issues": [i.to_dict() for i in self.issues],
        }


class _Collector:
    def __init__(self) -> None:
        self.found: dict[str, CheckIssue] = {}

    def add(self, severity: str, code: str, message: str, example: str | None = None) -> None:
        issue = self.found.get(code)
        if issue is None:
            issue = self.found[code] = CheckIssue(severity, code, message, 0)
        issue.count += 1
        if example is not None and len(issue.examples) < _MAX_EXAMPLES:
            issue.examples.append(example)

    def issues(self) -> list[CheckIssue]:
        order = {s: k for k, s in enumerate(SEVERITIES)}
        return sorted(self.found.values(), key=lambda i: order[i.severity])


def load_coco_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a COCO annotation file (``-`` reads stdin) and check it is one (``images`` and ``categories`` lists)."""
    name = str(path)
    if name == "-":
        try:
            text = sys.stdin.buffer.read().decode("utf-8")
        except UnicodeDecodeError as e:
            raise DatasetError(f"stdin: not UTF-8 text (byte {e.start}); pipe a COCO annotation .json file") from e
    else:
        p = Path(path)
        if not p.exists():
            raise DatasetError(f"annotation file not found: {p}")
        if p.is_dir():
            raise DatasetError(f"{p} is a folder; give a COCO annotation .json file")
        try:
            text = p.read_text()
        except UnicodeDecodeError as e:
            raise DatasetError(f"{p}: not a text file; give a COCO annotation .json file") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{name}: not valid JSON ({e}); give a COCO annotation .json file") from e
    except RecursionError:
        raise DatasetError(
            f"{name}: JSON nested deeper than the parser's limit (about {sys.getrecursionlimit()} levels; COCO files "
            "need 5); give a COCO annotation .json file"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("categories"), list):
        what = "a list (a detection results file?)" if isinstance(data, list) else "missing the 'images' and/or 'categories' lists"
        raise DatasetError(f"{name}: not a COCO annotation file: {what}")
    return data


def _dupes(values: Iterable[Hashable]) -> list[Hashable]:
    return [v for v, n in Counter(values).items() if n > 1]


#: Fields used as keys (looked up, counted, compared); a JSON list or object there is reported, not hashed.
_KEY_FIELDS = ("id", "image_id", "category_id", "file_name", "name")


class _BadKey:
    """Stands in for a list/object id: hashable, equal only to itself, shown as the original JSON."""

    def __init__(self, value: Any) -> None:
        text = json.dumps(value)
        self.text = text if len(text) <= 40 else text[:37] + "..."

    def __repr__(self) -> str:
        return self.text

    __str__ = __repr__


def _hashable_keys(section: str, entries: list[Any], found: _Collector) -> list[Any]:
    """``entries`` with each list/object value of a :data:`_KEY_FIELDS` field replaced by a :class:`_BadKey`
    (and reported as an error), so that counting and lookups never raise ``TypeError: unhashable``."""
    out = []
    for k, entry in enumerate(entries):
        if isinstance(entry, dict) and any(isinstance(entry.get(f), (list, dict)) for f in _KEY_FIELDS):
            entry = dict(entry)
            for f in _KEY_FIELDS:
                if isinstance(entry.get(f), (list, dict)):
                    entry[f] = _BadKey(entry[f])
                    found.add("error", "malformed_key", "id, file_name or name is a list or an object "
                              "(ids are integers, names strings)", f"{section}[{k}].{f} = {entry[f]}")
        out.append(entry)
    return out


def _missing_ids(sorted_ids: list[int], limit: int) -> list[int]:
    """The first ``limit`` integers of ``1..max(sorted_ids)`` absent from ``sorted_ids`` (sorted, unique)."""
    out: list[int] = []
    expected = 1
    for i in sorted_ids:
        while expected < i and len(out) < limit:
            out.append(expected)
            expected += 1
        if len(out) >= limit:
            break
        expected = max(expected, i + 1)
    return out


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_image_file(root: Path, img: dict[str, Any], found: _Collector) -> None:
    """Report a missing, empty, truncated or unreadable file of ``img`` and a size other than the json's."""

    path = root / str(img["file_name"])
    where = f"{img['file_name']} (image id {img['id']})"
    if not path.is_file():
        found.add("error", "missing_file", f"image file not found under {root}", where)
        return
    try:
        problem = image_file_problem(path)
    except OSError as e:
        found.add("error", "unreadable_image", "image file cannot be read or decoded", f"{where}: {e.strerror or e}")
        return
    if problem is not None:
        empty = problem.startswith("the image file is empty")
        found.add("error", "empty_image" if empty else "truncated_image",
                  "image file is empty (0 bytes)" if empty else "image file is truncated (a cut download or copy)",
                  f"{where}: {problem}")
        return
    try:
        width, height = image_size(path)
    except DatasetError as e:
        found.add("error", "unreadable_image", "image file cannot be read or decoded", f"{where}: {e}")
        return
    if _number(img.get("width")) and _number(img.get("height")) and (width, height) != (img["width"], img["height"]):
        found.add("error", "image_size_mismatch", "image file size differs from the json's width x height "
                  "(boxes and masks would be placed wrongly)",
                  f"{where}: file {width}x{height}, json {img['width']}x{img['height']}")


def check_coco(data: dict[str, Any], ann_file: str = "<memory>",
               img_dir: str | os.PathLike[str] | None = None) -> CheckReport:
    """Check a COCO dict (see the module docstring for what is checked); never raises on bad content.

    Args:
        data: the loaded json (``images`` and ``categories`` lists; ``annotations`` optional).
        ann_file: name used in the report.
        img_dir: when given, every ``file_name`` must be a complete image under it, of the size the
            json gives (only headers and file ends are read, so this stays fast).
    """
    found = _Collector()
    images = data.get("images", [])
    categories = data.get("categories", [])
    annotations = data.get("annotations", [])
    if not isinstance(annotations, list):
        found.add("error", "malformed_annotations", "'annotations' is not a list", type(annotations).__name__)
        annotations = []
    images = _hashable_keys("images", images, found)
    categories = _hashable_keys("categories", categories, found)
    annotations = _hashable_keys("annotations", annotations, found)

    # categories
    cat_ids = [c.get("id") for c in categories if isinstance(c, dict)]
    for k, c in enumerate(categories):
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or "name" not in c:
            found.add("error", "malformed_category", "category without an integer 'id' and a 'name'",
                      f"categories[{k}]")
    for d in _dupes(cat_ids):
        found.add("error", "duplicate_category_id", "category id declared more than once", f"category id {d}")
    names = [str(c.get("name")) for c in categories if isinstance(c, dict)]
    for d in _dupes(names):
        found.add("warning", "duplicate_category_name", "category name declared more than once; "
                  "loading by name is ambiguous", f"'{d}'")
    int_ids = sorted({i for i in cat_ids if isinstance(i, int)})
    if int_ids and int_ids != list(range(1, len(int_ids) + 1)):
        missing = _missing_ids(int_ids, 11)  # ids may be huge: never build range(1, max)
        shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
        found.add("info", "category_id_gaps", "category ids are not 1..K (harmless: labels follow the "
                  "order of 'categories')", f"ids {int_ids[0]}..{int_ids[-1]}" + (f", missing {shown}" if missing else ""))
    declared = set(int_ids)

    # images
    by_id: dict[Any, dict[str, Any]] = {}
    for k, img in enumerate(images):
        if not isinstance(img, dict) or any(key not in img for key in ("id", "file_name", "width", "height")):
            found.add("error", "malformed_image", "image entry without id, file_name, width and height",
                      f"images[{k}]")
            continue
        if not (_number(img["width"]) and _number(img["height"]) and img["width"] > 0 and img["height"] > 0):
            found.add("error", "bad_image_size", "image width/height not positive numbers",
                      f"image id {img['id']} ({img['width']}x{img['height']})")
        by_id.setdefault(img["id"], img)
    valid_images = [img for img in images if isinstance(img, dict) and "id" in img]
    for d in _dupes(img["id"] for img in valid_images):
        found.add("error", "duplicate_image_id", "image id used by more than one image", f"image id {d}")
    for d in _dupes(img.get("file_name") for img in valid_images):
        found.add("warning", "duplicate_file_name", "the same file is listed as several images", str(d))
    if img_dir is not None:
        root = Path(img_dir)
        for img in valid_images:
            if "file_name" in img:
                _check_image_file(root, img, found)

    # annotations
    ann_ids = [a.get("id") for a in annotations if isinstance(a, dict)]
    for d in _dupes(ann_ids):
        found.add("error", "duplicate_annotation_id", "annotation id used more than once", f"annotation id {d}")
    per_cat: Counter[Any] = Counter()
    annotated: set[Any] = set()
    for k, a in enumerate(annotations):
        where = f"annotation id {a.get('id')}" if isinstance(a, dict) and "id" in a else f"annotations[{k}]"
        if not isinstance(a, dict) or "id" not in a:
            found.add("error", "malformed_annotation", "annotation without an 'id'", where)
            if not isinstance(a, dict):
                continue
        cat = a.get("category_id")
        if cat not in declared:
            found.add("error", "undeclared_category", "annotation of a category id not declared in 'categories'",
                      f"{where} (category_id {cat!r})")
        else:
            per_cat[cat] += 1
        img = by_id.get(a.get("image_id"))
        if img is None:
            found.add("error", "missing_image", "annotation of an image id not in 'images'",
                      f"{where} (image_id {a.get('image_id')!r})")
        else:
            annotated.add(img["id"])
        if a.get("iscrowd", 0) or a.get("ignore", 0):
            found.add("info", "ignored_annotations", "crowd or ignored (difficult) annotations: ignore regions, "
                      "not objects", where)
        bbox = a.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_number(v) for v in bbox)):
            found.add("error", "malformed_bbox", "'bbox' is not [x, y, w, h] of 4 numbers", f"{where} ({bbox!r})")
            continue
        x, y, w, h = bbox
        if w <= 0 or h <= 0:
            found.add("error", "degenerate_box", "box of zero or negative width/height", f"{where} {bbox}")
            continue
        if w < 1 or h < 1:
            found.add("warning", "tiny_box", "box thinner than 1 px (training drops it)", f"{where} {bbox}")
        if img is None or not (_number(img.get("width")) and _number(img.get("height"))):
            continue
        iw, ih = img["width"], img["height"]
        if x >= iw or y >= ih or x + w <= 0 or y + h <= 0:
            found.add("error", "box_outside_image", "box entirely outside its image",
                      f"{where} {bbox} in {iw}x{ih}")
        elif x < -OUTSIDE_TOLERANCE or y < -OUTSIDE_TOLERANCE or x + w > iw + OUTSIDE_TOLERANCE \
                or y + h > ih + OUTSIDE_TOLERANCE:
            found.add("warning", "box_partly_outside", "box partly outside its image (clip it)",
                      f"{where} {bbox} in {iw}x{ih}")
    for img in valid_images:
        if img["id"] not in annotated:
            found.add("info", "image_without_annotations", "images without annotations (negatives, or test images)",
                      str(img.get("file_name", img["id"])))
    for c in categories:
        if isinstance(c, dict) and c.get("id") in declared and per_cat[c["id"]] == 0:
            found.add("info", "unused_category", "categories without annotations", f"'{c.get('name')}' (id {c['id']})")
    id2name = {c.get("id"): str(c.get("name")) for c in categories if isinstance(c, dict)}
    return CheckReport(
        ann_file=ann_file, num_images=len(images), num_annotations=len(annotations), num_categories=len(categories),
        per_category={id2name[i]: per_cat[i] for i in int_ids}, issues=found.issues(),
    )


def check_coco_file(path: str | os.PathLike[str], img_dir: str | os.PathLike[str] | None = None) -> CheckReport:
    """:func:`check_coco` on a file (``-``: stdin). Raises :class:`DatasetError` if it is no COCO file."""
    if img_dir is not None and not Path(img_dir).is_dir():
        raise DatasetError(f"image folder not found: {img_dir}")
    return check_coco(load_coco_json(path), str(path), img_dir=img_dir)


#: EXIF tag of the orientation (rotations by 90 degrees swap width and height).
EXIF_ORIENTATION = 0x0112


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(width, height)`` of an image as a decoder that honours EXIF orientation sees it.

    Only the file header is read (PIL opens lazily). Raises :class:`DatasetError` on a missing or
    unreadable file.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(EXIF_ORIENTATION, 1)
    except FileNotFoundError as e:
        raise DatasetError(f"image not found: {path}") from e
    except (UnidentifiedImageError, OSError) as e:
        raise DatasetError(f"cannot read the size of {path}: not an image or corrupted ({e})") from e
    if orientation in (5, 6, 7, 8):  # rotated by 90 degrees: cv2.imread returns it transposed
        w, h = h, w
    return int(w), int(h)
