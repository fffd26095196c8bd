"""CocoDataset: a COCO-format json and its images (mmdet 2.x ``CocoDataset`` semantics).

The one place where COCO ``[x, y, w, h]`` boxes become det's ``(x1, y1, x2, y2)`` (via
:func:`detcli.structures.convert`). Category ids, in any order and with gaps, map to contiguous
labels in the order of ``classes`` (by default the order of ``categories`` in the file): ids
``1, 3, 4, 16, 17`` become labels ``0..4``. Crowd annotations (``iscrowd: 1``) and annotations
flagged ``ignore: 1`` (VOC "difficult" objects, as ``det convert-dataset voc`` writes them) become
``bboxes_ignore``: regions the assigners neither learn nor penalise.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO

from detcli.data.base import AnnotationFileDataset, load_class_names
from detcli.errors import DatasetError, did_you_mean
from detcli.evaluation.coco_format import check_coco_types
from detcli.evaluation.files import nesting_message
from detcli.registry import DATASETS
from detcli.structures import BoxFormat, convert

logger = logging.getLogger(__name__)

_DROP_REASONS = {
    "outside": "entirely outside the image",
    "size": "with zero or negative size (width or height < 1 px)",
    "area": "with area <= 0",
}


def coco_from_dict(data: dict[str, Any]) -> COCO:
    """A pycocotools ``COCO`` over an in-memory dataset dict, without its stdout chatter."""
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def join_root(data_root: str | None, path: str | None) -> str | None:
    if data_root is None or path is None or os.path.isabs(path):
        return path
    return os.path.join(data_root, path)


@DATASETS.register()
class CocoDataset(AnnotationFileDataset):
    """A COCO-format detection dataset.

    Args:
        ann_file: COCO json (relative paths are joined to ``data_root``).
        pipeline: transforms, from ``LoadImageFromFile`` to ``Collect``.
        classes: names to use, in label order: a subset/reorder of the file's categories, given as
            a list or a text file with one name per line. Annotations of other categories are
            dropped. None: every category of the file, in file order.
        data_root: joined in front of relative ``ann_file``, ``img_prefix``, ``seg_prefix``.
        img_prefix: folder of the images (``file_name`` is relative to it).
        seg_prefix: folder of semantic maps (passed to the pipeline as ``seg_prefix``).
        proposal_file: not supported (det has no precomputed-proposal pipeline); must be None.
        test_mode: no annotations in the results; ``dataset[i]`` is a ``list[Sample]``.
        filter_empty_gt: in training, drop images without any box (or crowd region) of ``classes``.

    Raises:
        DatasetError: missing/invalid json, undeclared category ids (naming the annotation id),
            unknown ``classes`` (with a did-you-mean), or no image left after filtering.
    """

    def __init__(
        self,
        ann_file: str,
        pipeline: Sequence[Callable[[dict], Any] | Mapping[str, Any]],
        classes: str | Sequence[str] | None = None,
        data_root: str | None = None,
        img_prefix: str = "",
        seg_prefix: str | None = None,
        proposal_file: str | None = None,
        test_mode: bool = False,
        filter_empty_gt: bool = True,
    ) -> None:
        super().__init__(pipeline, test_mode, filter_empty_gt)
        if proposal_file is not None:
            raise DatasetError(f"{ann_file}: proposal_file is not supported by det; remove it from the dataset config")
        self.data_root = data_root
        self.ann_file = str(join_root(data_root, ann_file))
        self.img_prefix = join_root(data_root, img_prefix)
        self.seg_prefix = join_root(data_root, seg_prefix)
        raw = self._read_json()
        self._coco = coco_from_dict(raw)
        self.classes, self.cat_ids = self._resolve_classes(raw, classes)
        self.cat2label = {cat_id: i for i, cat_id in enumerate(self.cat_ids)}
        infos, anns = self._parse(raw)
        self._store(infos, anns)

    # --- loading -------------------------------------------------------------------------------
    def _read_json(self) -> dict[str, Any]:
        path = Path(self.ann_file)
        if not path.is_file():
            raise DatasetError(f"annotation file not found: {path} (check ann_file and data_root)")
        data = path.read_bytes()
        self._sha256 = hashlib.sha256(data).hexdigest()
        try:
            raw = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DatasetError(f"{path}: not valid JSON: {e}") from e
        except RecursionError:
            raise DatasetError(nesting_message(str(path))) from None
        if not isinstance(raw, dict):
            raise DatasetError(f"{path}: a COCO annotation file must be a JSON object")
        for key in ("images", "categories"):
            if not isinstance(raw.get(key), list):
                raise DatasetError(f"{path}: missing the '{key}' list of a COCO annotation file")
        raw.setdefault("annotations", [])
        for i, img in enumerate(raw["images"]):
            if not isinstance(img, dict):
                raise DatasetError(f"{path}: images[{i}] is not an object")
            missing = [k for k in ("id", "file_name", "height", "width") if k not in img]
            if missing:
                raise DatasetError(f"{path}: images[{i}] lacks {', '.join(missing)}")
        for i, cat in enumerate(raw["categories"]):
            if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
                raise DatasetError(f"{path}: categories[{i}] needs 'id' and 'name'")
        check_coco_types(raw, str(path))  # list/object/null ids, NaN boxes: one error naming section[index].key
        cat_ids = [c["id"] for c in raw["categories"]]
        if len(set(cat_ids)) != len(cat_ids):
            raise DatasetError(f"{path}: category ids are not unique: {cat_ids}")
        declared = set(cat_ids)
        img_ids = {img["id"] for img in raw["images"]}
        for i, ann in enumerate(raw["annotations"]):
            ann_id = ann.get("id", f"#{i}")
            if ann.get("category_id") not in declared:
                raise DatasetError(
                    f"{path}: annotation id {ann_id} has category_id {ann.get('category_id')!r}, which is not "
                    f"declared in 'categories' (declared ids: {sorted(declared)}); add the category or fix the id"
                )
            if ann.get("image_id") not in img_ids:
                raise DatasetError(f"{path}: annotation id {ann_id} refers to image_id {ann.get('image_id')!r}, "
                                   "which is not in 'images'")
            bbox = ann.get("bbox")
            if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
                raise DatasetError(f"{path}: annotation id {ann_id} needs 'bbox' as [x, y, w, h], got {bbox!r}")
        return raw

    def _resolve_classes(self, raw: dict[str, Any], classes: str | Sequence[str] | None
                         ) -> tuple[tuple[str, ...], list[int]]:
        file_names = [str(c["name"]) for c in raw["categories"]]
        name2id: dict[str, int] = {}
        for c in raw["categories"]:
            name2id.setdefault(str(c["name"]), int(c["id"]))
        if classes is None:
            dup = sorted({n for n in file_names if file_names.count(n) > 1})
            if dup:
                raise DatasetError(f"{self.ann_file}: category names are not unique: {dup}")
            return tuple(file_names), [int(c["id"]) for c in raw["categories"]]
        names = load_class_names(classes, self.ann_file)
        for n in names:
            if n not in name2id:
                raise DatasetError(
                    f"{self.ann_file}: class '{n}' is not a category of this file{did_you_mean(n, file_names)} "
                    f"(categories: {', '.join(file_names)})"
                )
        return names, [name2id[n] for n in names]

    def _parse(self, raw: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        images = raw["images"]
        anns = raw["annotations"]
        # COCO xywh -> xyxy, once, for the whole file
        xywh = torch.as_tensor([a["bbox"] for a in anns], dtype=torch.float64).reshape(-1, 4)
        xyxy = convert(xywh, BoxFormat.XYWH, BoxFormat.XYXY).numpy()  # (M, 4)
        index_of = {img["id"]: i for i, img in enumerate(images)}
        per_image: list[list[int]] = [[] for _ in images]
        for j, a in enumerate(anns):
            per_image[index_of[a["image_id"]]].append(j)
        dropped = dict.fromkeys(_DROP_REASONS, 0)
        infos, parsed = [], []
        for i, img in enumerate(images):
            h, w = int(img["height"]), int(img["width"])
            boxes, labels, ignore, masks = [], [], [], []
            for j in per_image[i]:
                a = anns[j]
                if a["category_id"] not in self.cat2label:
                    continue
                x, y, bw, bh = (float(v) for v in a["bbox"])
                inter_w = max(0.0, min(x + bw, w) - max(x, 0.0))
                inter_h = max(0.0, min(y + bh, h) - max(y, 0.0))
                area = float(a.get("area", bw * bh))
                if bw < 1 or bh < 1:
                    dropped["size"] += 1
                    continue
                if inter_w * inter_h == 0:
                    dropped["outside"] += 1
                    continue
                if area <= 0:
                    dropped["area"] += 1
                    continue
                if a.get("iscrowd", 0) or a.get("ignore", 0):  # crowd regions and VOC "difficult" objects
                    ignore.append(xyxy[j])
                else:
                    boxes.append(xyxy[j])
                    labels.append(self.cat2label[a["category_id"]])
                    masks.append(a.get("segmentation"))
            infos.append({"filename": img["file_name"], "height": h, "width": w, "id": img["id"]})
            parsed.append({
                "bboxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                "labels": np.asarray(labels, dtype=np.int64),
                "bboxes_ignore": np.asarray(ignore, dtype=np.float32).reshape(-1, 4),
                "masks": masks,
            })
        name = os.path.basename(self.ann_file)
        for reason, n in dropped.items():
            if n:
                logger.warning("dropped %d boxes %s in %s", n, _DROP_REASONS[reason], name)
        if not infos:
            raise DatasetError(f"{self.ann_file}: the annotation file has no images")
        return infos, parsed

    # --- DetDataset ----------------------------------------------------------------------------
    @property
    def coco(self) -> COCO:
        """The pycocotools ``COCO`` of the whole file (original coordinates, all categories)."""
        return self._coco

    def fingerprint(self) -> dict[str, Any]:
        return {
            "type": type(self).__name__,
            "ann_file": self.ann_file,
            "ann_file_sha256": self._sha256,
            "num_images": len(self),
            "classes": list(self.classes),
        }

    def __repr__(self) -> str:
        return f"CocoDataset(ann_file={self.ann_file!r}, num_images={len(self)}, classes={self.classes})"
