"""Loading transforms: the image (from a file or already in memory) and its annotations."""

from __future__ import annotations

import io
import logging
import os
from typing import Any

import cv2
import numpy as np

from detcli.errors import DatasetError
from detcli.registry import TRANSFORMS
from detcli.structures.masks import BitmapMasks, PolygonMasks, polygons_to_bitmap

logger = logging.getLogger(__name__)

_COLOR_TYPES = {"color": cv2.IMREAD_COLOR, "grayscale": cv2.IMREAD_GRAYSCALE, "unchanged": cv2.IMREAD_UNCHANGED}
_DECODE_BACKENDS = ("cv2", "pillow")


_JPEG_SOI, _JPEG_EOI = b"\xff\xd8", b"\xff\xd9"
_PNG_SIGNATURE, _PNG_IEND = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"
#: Bytes read from the end of a file to look for the JPEG end-of-image marker / the PNG IEND chunk.
_TAIL = 4096
#: The fix every truncated or empty image message ends with.
IMAGE_FIX = "re-copy or re-download the file, or remove the image from the annotation file"


def _tail_problem(head: bytes, tail: bytes) -> str | None:
    """Why a file starting with ``head`` and ending with ``tail`` looks truncated (None: it does not)."""
    tail = tail.rstrip(b"\x00")  # some cameras pad files with zeros after the end marker
    if head.startswith(_JPEG_SOI) and not tail.endswith(_JPEG_EOI):
        return "truncated JPEG: the file ends before its end-of-image marker (FF D9)"
    if head.startswith(_PNG_SIGNATURE) and not tail.endswith(_PNG_IEND):
        return "truncated PNG: the file ends before its IEND chunk"
    return None


def _pillow_decodes(data: bytes) -> bool:
    """Whether Pillow decodes ``data`` completely (it raises on truncated JPEG/PNG data)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except Exception:  # noqa: BLE001 - any decoder failure means "not a complete image"
        return False
    return True


def image_problem(data: bytes | np.ndarray) -> str | None:
    """Why the bytes of an image file are not a complete image, or None.

    The rule det applies wherever it reads images (training/test pipelines, ``det infer``,
    ``det convert-dataset check --img-dir``): an empty file, and a JPEG without its end-of-image
    marker or a PNG without its IEND chunk that Pillow cannot decode completely (truncated: an
    interrupted download or copy; OpenCV would decode the part present and fill the rest with grey).
    Data appended after a complete image (motion photos) is accepted. Other content problems show
    as a failed decode.
    """
    raw = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
    if not raw:
        return "the image file is empty (0 bytes)"
    problem = _tail_problem(raw[:8], raw[-_TAIL:])
    if problem is not None and not _pillow_decodes(raw):
        return problem
    return None


def image_file_problem(path: str | os.PathLike[str]) -> str | None:
    """:func:`image_problem` of the file at ``path``, reading only its first and last bytes unless it
    looks truncated.

    Raises:
        OSError: the file cannot be opened.
    """
    with open(path, "rb") as f:
        head = f.read(8)
        if not head:
            return "the image file is empty (0 bytes)"
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - _TAIL))
        tail = f.read()
        if _tail_problem(head, tail) is None:
            return None
        f.seek(0)
        return image_problem(f.read())


def _where(results: dict[str, Any]) -> str:
    idx = results.get("sample_idx")
    return f" (dataset index {idx})" if idx is not None else ""


@TRANSFORMS.register()
class LoadImageFromFile:
    """Read ``img_prefix / img_info['filename']`` as a BGR ``uint8 (H, W, 3)`` array, like mmcv.

    When ``results['img']`` already holds an array (synthetic datasets, ``det infer`` on frames),
    that array is used instead of reading a file, so every dataset shares one pipeline.

    Adds: ``filename``, ``ori_filename``, ``img``, ``img_shape``, ``ori_shape``, ``img_fields``.

    Args:
        to_float32: return float32 instead of uint8.
        color_type: ``color`` (3 channels, grey images are expanded), ``grayscale`` or ``unchanged``.
        channel_order: ``bgr`` (mmcv default) or ``rgb``.
        imdecode_backend: ``cv2`` (``cv2.imdecode``, mmcv's default) or ``pillow``
            (``PIL.Image.open(f).convert("RGB")``, or ``"L"`` for grayscale, as torchvision's
            detection references read COCO; no EXIF rotation; ``unchanged`` keeps PIL's mode).
            JPEG decoders differ slightly between builds of OpenCV and Pillow. Only files are
            decoded: an image already in ``results['img']`` is used as it is.

    Raises:
        DatasetError: the file is missing, empty, truncated (:func:`image_problem`) or cannot be
            decoded (names the path and dataset index).
    """

    def __init__(self, to_float32: bool = False, color_type: str = "color", channel_order: str = "bgr",
                 imdecode_backend: str = "cv2") -> None:
        if imdecode_backend not in _DECODE_BACKENDS:
            raise ValueError(f"imdecode_backend must be one of {list(_DECODE_BACKENDS)}, got {imdecode_backend!r}")
        if color_type not in _COLOR_TYPES:
            raise ValueError(f"color_type must be one of {sorted(_COLOR_TYPES)}, got {color_type!r}")
        if channel_order not in ("bgr", "rgb"):
            raise ValueError(f"channel_order must be 'bgr' or 'rgb', got {channel_order!r}")
        self.to_float32 = to_float32
        self.color_type = color_type
        self.channel_order = channel_order
        self.imdecode_backend = imdecode_backend

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        info = results.get("img_info", {})
        name = str(info.get("filename", ""))
        prefix = results.get("img_prefix")
        filename = os.path.join(prefix, name) if prefix else name
        img = results.get("img")
        if img is None:
            img = self._read(filename, results)
        else:
            img = np.asarray(img)
            if self.color_type == "color" and img.ndim == 2:
                img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
            elif self.color_type == "grayscale" and img.ndim == 3:
                img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        if self.channel_order == "rgb" and img.ndim == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        if self.to_float32:
            img = img.astype(np.float32)
        results["filename"] = filename
        results["ori_filename"] = name
        results["img"] = img
        results["img_shape"] = img.shape
        results["ori_shape"] = img.shape
        results["img_fields"] = ["img"]
        return results

    def _read(self, filename: str, results: dict[str, Any]) -> np.ndarray:
        if not os.path.isfile(filename):
            raise DatasetError(
                f"image file not found: {filename}{_where(results)}; check img_prefix/data_root "
                "or remove the image from the annotation file"
            )
        try:
            buf = np.fromfile(filename, dtype=np.uint8)
        except OSError as e:
            raise DatasetError(f"cannot read image {filename}{_where(results)}: {e}") from e
        problem = image_problem(buf)
        if problem is not None:
            raise DatasetError(f"image {filename}{_where(results)}: {problem}; {IMAGE_FIX}")
        img = self._decode(buf)
        if img is None:
            raise DatasetError(
                f"cannot decode image {filename}{_where(results)}: the file is corrupted or not an image"
            )
        info = results.get("img_info", {})
        h, w = info.get("height"), info.get("width")
        if h is not None and w is not None and (int(h), int(w)) != tuple(img.shape[:2]):
            logger.warning(
                "image %s is %dx%d (h x w) but the annotation file says %dx%d",
                filename, img.shape[0], img.shape[1], int(h), int(w),
            )
        return img

    def _decode(self, buf: np.ndarray) -> np.ndarray | None:
        """Decode the file's bytes to BGR (colour) or grey, None if they are not an image."""
        if self.imdecode_backend == "cv2":
            return cv2.imdecode(buf, _COLOR_TYPES[self.color_type])
        try:
            from PIL import Image, UnidentifiedImageError
        except ImportError as e:  # pragma: no cover - Pillow comes with torchvision
            raise DatasetError("LoadImageFromFile(imdecode_backend='pillow') needs Pillow (pip install pillow)") from e
        try:
            with Image.open(io.BytesIO(buf.tobytes())) as pil:
                mode = {"color": "RGB", "grayscale": "L"}.get(self.color_type, pil.mode)
                img = np.asarray(pil.convert(mode))
        except (UnidentifiedImageError, OSError, ValueError):
            return None
        if img.ndim == 3 and img.shape[2] in (3, 4):  # RGB(A) -> BGR(A), as cv2 returns it
            img = np.ascontiguousarray(img[..., [2, 1, 0, 3][:img.shape[2]]])
        return img

    def __repr__(self) -> str:
        return (f"LoadImageFromFile(to_float32={self.to_float32}, color_type={self.color_type!r}, "
                f"channel_order={self.channel_order!r}, imdecode_backend={self.imdecode_backend!r})")


def _check_segmentation(seg: Any, index: int, name: str, height: int, width: int) -> None:
    """Raise a DatasetError naming the instance unless ``seg`` is COCO polygons or an RLE dict."""
    where = f"{name}: instance {index}"
    if seg is None:
        raise DatasetError(f"{where} has no segmentation; add one to every non-crowd annotation or set "
                           "LoadAnnotations with_mask: false")
    if isinstance(seg, dict):
        size = seg.get("size")
        if "counts" not in seg or size is None:
            raise DatasetError(f"{where}: an RLE segmentation needs 'size' and 'counts', got keys {sorted(seg)}")
        if [int(v) for v in size] != [height, width]:
            raise DatasetError(f"{where}: RLE size {list(size)} differs from the image size {[height, width]}")
        return
    if not isinstance(seg, (list, tuple)) or any(
            not isinstance(p, (list, tuple, np.ndarray)) or len(p) % 2 for p in seg):
        raise DatasetError(f"{where}: a segmentation must be a list of [x0, y0, x1, y1, ...] polygons "
                           "(even length) or an RLE dict")


@TRANSFORMS.register()
class LoadAnnotations:
    """Copy the dataset's annotations of one image into the results dict.

    Reads ``results['ann_info']`` (``bboxes float32 (N, 4)`` xyxy, ``labels int64 (N,)``,
    ``bboxes_ignore float32 (K, 4)``, ``masks``: per instance COCO polygons or an RLE dict,
    compressed or not; crowd regions are ignore boxes and have no mask, as in mmdet).

    Adds: ``gt_bboxes``, ``gt_bboxes_ignore``, ``gt_labels``, ``gt_masks``, ``bbox_fields``, ``mask_fields``.

    Args:
        with_bbox: load boxes (and ignored boxes).
        with_label: load labels.
        with_mask: load instance masks.
        poly2mask: rasterise polygons to :class:`BitmapMasks`; otherwise keep :class:`PolygonMasks`.
    """

    def __init__(self, with_bbox: bool = True, with_label: bool = True, with_mask: bool = False,
                 poly2mask: bool = True) -> None:
        self.with_bbox = with_bbox
        self.with_label = with_label
        self.with_mask = with_mask
        self.poly2mask = poly2mask

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        ann = results.get("ann_info")
        if ann is None:
            raise DatasetError(
                f"LoadAnnotations: no annotations for {results.get('img_info', {}).get('filename', '?')}"
                f"{_where(results)}; LoadAnnotations belongs in training pipelines only"
            )
        results.setdefault("bbox_fields", [])
        results.setdefault("mask_fields", [])
        if self.with_bbox:
            results["gt_bboxes"] = np.asarray(ann["bboxes"], dtype=np.float32).reshape(-1, 4).copy()
            results["bbox_fields"].append("gt_bboxes")
            ignore = ann.get("bboxes_ignore")
            if ignore is not None:
                results["gt_bboxes_ignore"] = np.asarray(ignore, dtype=np.float32).reshape(-1, 4).copy()
                results["bbox_fields"].append("gt_bboxes_ignore")
        if self.with_label:
            results["gt_labels"] = np.asarray(ann["labels"], dtype=np.int64).reshape(-1).copy()
        if self.with_mask:
            results["gt_masks"] = self._load_masks(results, ann)
            results["mask_fields"].append("gt_masks")
        return results

    def _load_masks(self, results: dict[str, Any], ann: dict[str, Any]) -> BitmapMasks | PolygonMasks:
        info = results["img_info"]
        h, w = int(info["height"]), int(info["width"])
        name = f"{info.get('filename', '?')}{_where(results)}"
        segs = ann.get("masks")
        if segs is None:
            raise DatasetError(f"with_mask=True but {name} has no segmentation")
        if len(segs) != len(ann["bboxes"]):
            raise DatasetError(f"{name}: {len(ann['bboxes'])} boxes but {len(segs)} masks")
        for i, s in enumerate(segs):
            _check_segmentation(s, i, name, h, w)
        if self.poly2mask:
            return BitmapMasks([polygons_to_bitmap(s, h, w) for s in segs], h, w)
        polys = []
        for i, s in enumerate(segs):
            if isinstance(s, dict):
                raise DatasetError(
                    f"{name}: instance {i} has an RLE mask, which PolygonMasks cannot hold; "
                    "use LoadAnnotations(poly2mask=True)"
                )
            polys.append([np.asarray(p, dtype=np.float64) for p in s if len(p) >= 6])
        return PolygonMasks(polys, h, w)

    def __repr__(self) -> str:
        return (f"LoadAnnotations(with_bbox={self.with_bbox}, with_label={self.with_label}, "
                f"with_mask={self.with_mask}, poly2mask={self.poly2mask})")
