"""VOCDataset: PASCAL VOC read straight from a VOCdevkit (mmdet 2.x ``XMLDataset``/``VOCDataset`` semantics).

Layout::

    VOCdevkit/VOC2007/ImageSets/Main/trainval.txt   one image id per line      (ann_file)
    VOCdevkit/VOC2007/Annotations/<id>.xml          objects: name, difficult, bndbox
    VOCdevkit/VOC2007/JPEGImages/<id>.jpg                                       (img_prefix = VOC2007/)

VOC boxes are 1-based inclusive pixel indices; as mmdet does, ``xmin, ymin, xmax, ymax`` are read
with ``int(float(v))`` and shifted by -1. ``difficult`` objects, and with ``min_size`` objects whose
width or height is below it, become ignore boxes (``bboxes_ignore``/``labels_ignore``), which VOC
evaluation neither rewards nor punishes. Objects of other classes are skipped. In training, boxes of
zero or negative size (``xmax <= xmin`` or ``ymax <= ymin``) are dropped and counted in one warning. The year is read from
``img_prefix`` (``VOC2007`` → 11-point AP, ``VOC2012`` → area AP; other folders: area).

Every XML file is parsed once, when the dataset is built.
"""

from __future__ import annotations

import hashlib
import logging
import os
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools.coco import COCO

from detcli.data.base import AnnotationFileDataset, load_class_names
from detcli.data.coco import coco_from_dict, join_root
from detcli.errors import DatasetError
from detcli.fileio import read_image_file
from detcli.registry import DATASETS

logger = logging.getLogger(__name__)

#: The 20 PASCAL VOC classes, in mmdet's label order.
VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


def voc_year(img_prefix: str | None) -> int | None:
    """2007 or 2012 when ``img_prefix`` names that VOC folder, else None."""
    for year in (2007, 2012):
        if f"VOC{year}" in str(img_prefix or ""):
            return year
    return None


def _text(node: ET.Element, tag: str, where: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise DatasetError(f"{where}: missing <{tag}>")
    return child.text.strip()


@DATASETS.register()
class VOCDataset(AnnotationFileDataset):
    """PASCAL VOC from its XML annotations.

    Args:
        ann_file: image-set list (``ImageSets/Main/trainval.txt``), one image id per line.
        pipeline: transforms, from ``LoadImageFromFile`` to ``Collect``.
        classes: names in label order (list or text file); default the 20 VOC classes.
        data_root: joined in front of relative ``ann_file`` and ``img_prefix``.
        img_prefix: the year folder (``VOCdevkit/VOC2007/``); images are ``img_prefix/img_subdir/<id>.jpg``.
        seg_prefix: passed to the pipeline as ``seg_prefix``.
        proposal_file: not supported; must be None.
        test_mode: no annotations in the results; ``dataset[i]`` is a ``list[Sample]``; nothing is filtered.
        filter_empty_gt: in training, drop images without an object of ``classes`` (difficult ones count).
        min_size: objects narrower or lower than this become ignore boxes (training only, as in mmdet).
        img_subdir: folder of the images inside ``img_prefix``.
        ann_subdir: folder of the XML files inside ``img_prefix``.

    ``get_ann_info`` gives ``bboxes (N, 4)``, ``labels (N,)``, ``bboxes_ignore (K, 4)``,
    ``labels_ignore (K,)`` in 0-based pixels. ``image_ids`` are the VOC ids themselves when every id
    is a number (``000005`` → 5), else the 1-based line of the image-set file.

    Attributes:
        year: 2007, 2012 or None (from ``img_prefix``).
        eval_mode: ``11points`` for VOC2007, else ``area`` (what ``mAP`` uses).
        use_legacy_coordinate: True: VOC evaluation counts widths as ``x2 - x1 + 1`` (mmdet 2.x).

    Raises:
        DatasetError: missing list or XML file, malformed XML (naming the file and object), or no
            training image left after filtering.
    """

    #: VOC annotations are boxes only: no ``segm`` metric (see :func:`detcli.engine.evaluation.dataset_metrics`).
    has_masks = False

    use_legacy_coordinate = True

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
        min_size: float | None = None,
        img_subdir: str = "JPEGImages",
        ann_subdir: str = "Annotations",
    ) -> None:
        super().__init__(pipeline, test_mode, filter_empty_gt)
        if proposal_file is not None:
            raise DatasetError(f"{ann_file}: proposal_file is not supported by det; remove it from the dataset config")
        if min_size is not None and test_mode:
            raise DatasetError(f"{ann_file}: min_size turns small objects into ignore boxes in training only; "
                               "remove it from the test/val dataset config")
        self.data_root = data_root
        self.ann_file = str(join_root(data_root, ann_file))
        self.img_prefix = join_root(data_root, img_prefix) or ""
        self.seg_prefix = join_root(data_root, seg_prefix)
        self.img_subdir, self.ann_subdir = img_subdir, ann_subdir
        self.min_size = min_size
        self.classes = VOC_CLASSES if classes is None else load_class_names(classes, self.ann_file)
        self.cat_ids = list(range(1, len(self.classes) + 1))
        self.cat2label = {name: i for i, name in enumerate(self.classes)}
        self.year = voc_year(self.img_prefix)
        self.eval_mode = "11points" if self.year == 2007 else "area"
        ids = self._read_ids()
        digest = hashlib.sha256()
        infos, anns = [], []
        numeric = all(i.isdigit() for i in ids) and len({int(i) for i in ids}) == len(ids)
        self._num_empty_boxes = 0  # counted by _parse
        for pos, img_id in enumerate(ids):
            info, ann = self._parse(img_id, digest)
            info["id"] = int(img_id) if numeric else pos + 1
            infos.append(info)
            anns.append(ann)
        if self._num_empty_boxes:
            logger.warning("dropped %d boxes with zero or negative size (xmax <= xmin or ymax <= ymin) in %s",
                           self._num_empty_boxes, os.path.basename(self.ann_file))
        self._xml_sha256 = digest.hexdigest()
        self._store(infos, anns)
        self._coco: COCO | None = None

    # --- loading -------------------------------------------------------------------------------
    def _read_ids(self) -> list[str]:
        path = Path(self.ann_file)
        if not path.is_file():
            raise DatasetError(f"image-set file not found: {path} (ann_file is e.g. ImageSets/Main/trainval.txt; "
                               "check ann_file and data_root)")
        data = path.read_bytes()
        self._sha256 = hashlib.sha256(data).hexdigest()
        try:
            lines = data.decode("utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise DatasetError(f"{path}: not a text file of image ids: {e}") from e
        ids = [line.split()[0] for line in lines if line.strip()]  # ImageSets/Main/<class>_*.txt carry a flag
        if not ids:
            raise DatasetError(f"{path}: lists no image id")
        if len(set(ids)) != len(ids):
            dup = sorted(i for i, n in Counter(ids).items() if n > 1)
            raise DatasetError(f"{path}: image ids listed more than once: {', '.join(dup[:5])}")
        return ids

    def _parse(self, img_id: str, digest: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        xml_path = os.path.join(self.img_prefix, self.ann_subdir, f"{img_id}.xml")  # type: ignore[arg-type]
        filename = os.path.join(self.img_subdir, f"{img_id}.jpg")
        try:
            raw = Path(xml_path).read_bytes()
        except FileNotFoundError:
            raise DatasetError(f"annotation file not found: {xml_path} (image id '{img_id}' of {self.ann_file}; "
                               "check img_prefix and ann_subdir)") from None
        digest.update(raw)
        try:
            root = ET.fromstring(raw)
        except ET.ParseError as e:
            raise DatasetError(f"{xml_path}: not valid XML: {e}") from e
        size = root.find("size")
        if size is not None and size.find("width") is not None and size.find("height") is not None:
            width, height = int(float(_text(size, "width", xml_path))), int(float(_text(size, "height", xml_path)))
        else:  # mmdet: read the image when the XML has no size
            try:
                img = read_image_file(os.path.join(self.img_prefix, filename), cv2.IMREAD_UNCHANGED)  # type: ignore[arg-type]
            except OSError:
                img = None
            if img is None:
                raise DatasetError(f"{xml_path} has no <size> and the image {os.path.join(self.img_prefix, filename)} "  # type: ignore[arg-type]
                                   "cannot be read")
            height, width = img.shape[:2]
        bboxes, labels, ignore, ignore_labels = [], [], [], []
        for k, obj in enumerate(root.findall("object")):
            where = f"{xml_path}: object {k}"
            name = _text(obj, "name", where)
            if name not in self.cat2label:
                continue
            label = self.cat2label[name]
            difficult_node = obj.find("difficult")
            difficult = int(difficult_node.text) if difficult_node is not None and difficult_node.text else 0
            bnd = obj.find("bndbox")
            if bnd is None:
                raise DatasetError(f"{where} ('{name}') has no <bndbox>")
            try:
                box = [int(float(_text(bnd, t, where))) for t in ("xmin", "ymin", "xmax", "ymax")]
            except ValueError as e:
                raise DatasetError(f"{where} ('{name}'): a bndbox value is not a number: {e}") from e
            if not self.test_mode and (box[2] <= box[0] or box[3] <= box[1]):
                self._num_empty_boxes += 1  # no area to learn from: dropped in training (evaluation keeps them)
                continue
            small = False
            if self.min_size:
                small = box[2] - box[0] < self.min_size or box[3] - box[1] < self.min_size
            if difficult or small:
                ignore.append(box)
                ignore_labels.append(label)
            else:
                bboxes.append(box)
                labels.append(label)

        def shifted(boxes: list[list[int]]) -> np.ndarray:
            return (np.asarray(boxes, dtype=np.float32).reshape(-1, 4) - 1).astype(np.float32)

        info = {"filename": filename, "height": height, "width": width, "img_id": img_id}
        ann = {
            "bboxes": shifted(bboxes),
            "labels": np.asarray(labels, dtype=np.int64),
            "bboxes_ignore": shifted(ignore),
            "labels_ignore": np.asarray(ignore_labels, dtype=np.int64),
            "masks": [],
        }
        return info, ann

    # --- DetDataset ----------------------------------------------------------------------------
    def get_cat_ids(self, idx: int) -> list[int]:
        """Labels of every object of ``classes`` in image ``idx``, difficult ones included (mmdet)."""
        ann = self._anns[idx]
        return [int(v) for v in np.concatenate((ann["labels"], ann["labels_ignore"]))]

    @property
    def coco(self) -> COCO:
        """The ground truth as an in-memory COCO (categories ``1..C``; ignore boxes as ``iscrowd``)."""
        if self._coco is None:
            images: list[dict[str, Any]] = []
            annotations: list[dict[str, Any]] = []
            for info, ann in zip(self.data_infos, self._anns):
                images.append({"id": info["id"], "file_name": info["filename"], "height": info["height"],
                               "width": info["width"]})
                for crowd, boxes, labels in ((0, ann["bboxes"], ann["labels"]), (1, ann["bboxes_ignore"], ann["labels_ignore"])):
                    for box, label in zip(boxes.tolist(), labels.tolist()):
                        w, h = box[2] - box[0], box[3] - box[1]
                        annotations.append({"id": len(annotations) + 1, "image_id": info["id"],
                                            "category_id": int(label) + 1, "bbox": [box[0], box[1], w, h],
                                            "area": w * h, "iscrowd": crowd})
            categories = [{"id": i + 1, "name": n, "supercategory": "none"} for i, n in enumerate(self.classes)]
            self._coco = coco_from_dict({"images": images, "annotations": annotations, "categories": categories})
        return self._coco

    def fingerprint(self) -> dict[str, Any]:
        return {
            "type": type(self).__name__,
            "ann_file": self.ann_file,
            "ann_file_sha256": self._sha256,
            "annotations_sha256": self._xml_sha256,
            "year": self.year,
            "num_images": len(self),
            "classes": list(self.classes),
        }

    def __repr__(self) -> str:
        return f"VOCDataset(ann_file={self.ann_file!r}, year={self.year}, num_images={len(self)}, classes={len(self.classes)})"


__all__ = ["VOC_CLASSES", "VOCDataset", "voc_year"]
