"""ShapesDataset: a synthetic, learnable detection dataset rendered in memory (no files needed).

Every image is a pure function of ``(seed, split, index)``: a textured, noisy background
(gradient, stripes, checkerboard or colour clouds) with 3–8 filled shapes of four classes
(rectangle, ellipse, triangle, star) in random contrasting colours. Object sizes spread over
COCO's small (< 32²), medium and large (> 96²) area buckets; shapes are drawn big-first, so smaller
ones partly cover bigger ones.

Annotations describe what is *visible*: each shape is drawn from its polygon (rasterised by
pycocotools, the same rasteriser that turns COCO polygons into masks, so the polygon *is* the
shape), and its visible part is computed exactly by polygon clipping (shapely): ``visible_i = polygon_i − ∪_{j drawn after i} polygon_j``. The bbox
is the visible part's extent, the area its area, and the segmentation its polygons (holes are
opened by vertical cuts, since COCO polygons cannot hold holes; the union of the pieces is
exactly the visible region). Shapes less than half visible are not drawn at all, so every drawn
shape is labelled. Pixel ``(i, j)`` covers ``[j, j+1) × [i, i+1)`` (COCO convention).

``dataset.coco`` is a pycocotools ``COCO`` built in memory (categories 1..4, image ids
``index + 1``); :func:`export_shapes_coco` writes the same data as JPEG files plus a COCO json.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from shapely.geometry import LineString, Polygon
from shapely.ops import split as split_geometry

from detcli.data.base import DetDataset, load_class_names
from detcli.data.coco import coco_from_dict
from detcli.data.transforms.compose import RNG_KEY
from detcli.errors import DatasetError, did_you_mean
from detcli.fileio import write_json_atomic
from detcli.registry import DATASETS

logger = logging.getLogger(__name__)

SHAPE_CLASSES: tuple[str, ...] = ("rectangle", "ellipse", "triangle", "star")
GENERATOR_VERSION = "shapes-v1"

_SUBPIXEL_BITS = 4  # polygon vertices are quantised to 1/16 px (exact in binary and in JSON)
_MIN_VISIBLE_FRACTION = 0.5
_MIN_VISIBLE_AREA = 30.0  # px² at 256 px; scaled with the image area
_MIN_COLOR_DISTANCE = 110.0  # RGB distance between a shape and the background colours
_NOISE_TILE = 512
_noise_cache: dict[tuple[int, int], np.ndarray] = {}


@dataclass(frozen=True)
class ShapeInstance:
    """One drawn shape.

    Attributes:
        label: index in :data:`SHAPE_CLASSES`.
        polygon: ``float64 (K, 2)`` full outline (x, y), multiples of 1/16 px, inside the image.
        color: BGR colour.
        visible: polygons ``float64 (K_i, 2)`` without holes whose union is the visible part.
        bbox: ``(x1, y1, x2, y2)`` extent of the visible part.
        area: area of the visible part in px².
    """

    label: int
    polygon: np.ndarray
    color: tuple[int, int, int]
    visible: tuple[np.ndarray, ...]
    bbox: tuple[float, float, float, float]
    area: float


@dataclass(frozen=True)
class ShapesLayout:
    """Everything needed to render one image: size, background parameters, shapes bottom-to-top."""

    height: int
    width: int
    background: dict[str, Any]
    instances: tuple[ShapeInstance, ...]


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(split.encode()), index])


def _outline(label: int, extent: float, rng: np.random.Generator) -> np.ndarray:
    """Polygon ``(K, 2)`` centred on the origin whose longest side is about ``extent``."""
    if label == 0:  # rectangle, axis-aligned or slightly rotated
        w, h = extent, extent * rng.uniform(0.45, 1.0)
        if rng.random() < 0.5:
            w, h = h, w
        pts = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
        angle = 0.0 if rng.random() < 0.5 else rng.uniform(-math.pi / 6, math.pi / 6)
    elif label == 1:  # ellipse
        a = extent / 2
        b = a * rng.uniform(0.5, 1.0)
        t = np.linspace(0, 2 * math.pi, 40, endpoint=False)
        pts = np.stack([a * np.cos(t), b * np.sin(t)], axis=1)
        angle = rng.uniform(0, math.pi)
    elif label == 2:  # triangle, roughly equilateral
        t = np.array([0.0, 2 * math.pi / 3, 4 * math.pi / 3]) + rng.uniform(-0.25, 0.25, 3) * [0, 1, 1]
        r = extent / 2 * rng.uniform(0.9, 1.0, 3)
        pts = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
        angle = rng.uniform(0, 2 * math.pi)
    else:  # five-pointed star
        outer, inner = extent / 2, extent / 2 * rng.uniform(0.38, 0.5)
        t = np.arange(10) * math.pi / 5
        r = np.where(np.arange(10) % 2 == 0, outer, inner)
        pts = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
        angle = rng.uniform(0, 2 * math.pi)
    c, s = math.cos(angle), math.sin(angle)
    return pts @ np.array([[c, s], [-s, c]])


def _sample_extent(rng: np.random.Generator, min_size: float, max_size: float, scale: float) -> float:
    # extent buckets: 25% in [12, 36], 40% in [36, 100], 35% in [100, 160] px at 256 px (log-uniform)
    edges = [min_size, max(min_size, 36 * scale), max(min_size, 100 * scale), max_size]
    u = rng.random()
    b = 0 if u < 0.25 else (1 if u < 0.65 else 2)
    lo, hi = min(edges[b], max_size), min(edges[b + 1], max_size)
    return float(math.exp(rng.uniform(math.log(lo), math.log(max(hi, lo + 1e-6)))))


def _contrasting_color(rng: np.random.Generator, background: Sequence[np.ndarray]) -> tuple[int, int, int]:
    best, best_d = None, -1.0
    for _ in range(30):
        c = rng.integers(0, 256, 3)
        d = min(float(np.linalg.norm(c - b)) for b in background)
        if d >= _MIN_COLOR_DISTANCE:
            return int(c[0]), int(c[1]), int(c[2])
        if d > best_d:
            best, best_d = c, d
    assert best is not None
    return int(best[0]), int(best[1]), int(best[2])


def _simple_pieces(geom: Any) -> list[np.ndarray]:
    """Polygons without holes (exterior rings, ``(K, 2)``) whose union is ``geom``."""
    stack = [g for g in getattr(geom, "geoms", [geom]) if g.geom_type == "Polygon" and g.area > 1e-9]
    out: list[Polygon] = []
    while stack:
        p = stack.pop()
        if not p.interiors:
            out.append(p)
            continue
        hx0, _, hx1, _ = p.interiors[0].bounds
        x = (hx0 + hx1) / 2  # a vertical cut through the first hole opens it
        _, y0, _, y1 = p.bounds
        pieces = split_geometry(p, LineString([(x, y0 - 1), (x, y1 + 1)]))
        stack.extend(g for g in pieces.geoms if g.geom_type == "Polygon" and g.area > 1e-9)
    out.sort(key=lambda p: (-p.area, p.bounds))
    return [np.asarray(p.exterior.coords, dtype=np.float64)[:-1] for p in out]


def make_layout(seed: int, split: str, index: int, height: int = 256, width: int = 256, min_objects: int = 3,
                max_objects: int = 8, min_size: float | None = None, max_size: float | None = None) -> ShapesLayout:
    """The geometry and colours of image ``index`` (deterministic; no pixels rendered)."""
    rng = _rng(seed, split, index)
    scale = min(height, width) / 256.0
    min_size = 12 * scale if min_size is None else float(min_size)
    max_size = min(160 * scale, 0.9 * min(height, width)) if max_size is None else float(max_size)
    # background
    c1 = rng.integers(0, 256, 3)
    c2 = np.clip(c1 + rng.integers(-70, 71, 3), 0, 255)
    kind = ("gradient", "stripes", "checker", "clouds")[int(rng.integers(4))]
    background: dict[str, Any] = {
        "kind": kind, "c1": c1.tolist(), "c2": c2.tolist(),
        "angle": float(rng.uniform(0, math.pi)), "period": float(rng.uniform(10, 40) * scale),
        "clouds": rng.integers(-60, 61, (4, 4, 3)).tolist(),
        "noise": float(rng.uniform(3, 14)), "noise_offset": rng.integers(0, _NOISE_TILE, 2).tolist(),
    }
    # shapes, bottom (large) to top (small)
    num = int(rng.integers(min_objects, max_objects + 1))
    candidates = []
    for _ in range(num):
        label = int(rng.integers(len(SHAPE_CLASSES)))
        extent = _sample_extent(rng, min_size, max_size, scale)
        pts = _outline(label, extent, rng)
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        span = hi - lo
        fit = min(1.0, (width - 2) / span[0], (height - 2) / span[1])
        pts, lo, hi = pts * fit, lo * fit, hi * fit
        cx = rng.uniform(1 - lo[0], width - 1 - hi[0])
        cy = rng.uniform(1 - lo[1], height - 1 - hi[1])
        pts = np.round((pts + [cx, cy]) * (1 << _SUBPIXEL_BITS)) / (1 << _SUBPIXEL_BITS)
        color = _contrasting_color(rng, (c1, c2))
        candidates.append((extent, label, pts, color))
    candidates.sort(key=lambda c: -c[0])
    # visibility, top to bottom: a shape less than half visible is not drawn at all
    min_area = _MIN_VISIBLE_AREA * scale * scale
    kept: list[ShapeInstance] = []
    occluder = None
    for k, (_, label, pts, color) in enumerate(reversed(candidates)):
        poly = Polygon(pts)
        if not poly.is_valid:
            poly = poly.buffer(0)
        vis = poly if occluder is None else poly.difference(occluder)
        if k > 0 and (vis.area < _MIN_VISIBLE_FRACTION * poly.area or vis.area < min_area):
            continue
        pieces = _simple_pieces(vis)
        if not pieces:
            continue
        corners = np.concatenate(pieces)  # bbox of the polygonal part only (drops stray line slivers)
        (x1, y1), (x2, y2) = corners.min(axis=0), corners.max(axis=0)
        area = float(vis.area)  # lines and points in a GeometryCollection have no area
        kept.append(ShapeInstance(label, pts, color, tuple(pieces), (float(x1), float(y1), float(x2), float(y2)), area))
        occluder = poly if occluder is None else occluder.union(poly)
    kept.reverse()
    return ShapesLayout(height, width, background, tuple(kept))


def _noise(height: int, width: int) -> np.ndarray:
    key = (max(height, _NOISE_TILE), max(width, _NOISE_TILE))
    tile = _noise_cache.get(key)
    if tile is None:  # fixed seed: identical in every process and worker
        tile = np.random.default_rng(20240607).standard_normal((*key, 3)).astype(np.float32)
        tile = np.concatenate([tile, tile], axis=0)
        tile = np.concatenate([tile, tile], axis=1)
        _noise_cache[key] = tile
    return tile


def render(layout: ShapesLayout) -> np.ndarray:
    """Draw ``layout`` as a BGR ``uint8 (H, W, 3)`` image."""
    h, w, bg = layout.height, layout.width, layout.background
    c1 = np.asarray(bg["c1"], dtype=np.float32)
    c2 = np.asarray(bg["c2"], dtype=np.float32)
    if bg["kind"] == "gradient":
        ys, xs = np.mgrid[0:8, 0:8].astype(np.float32) / 7.0
        t = (xs * math.cos(bg["angle"]) + ys * math.sin(bg["angle"]))
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        small = c1 + t[..., None] * (c2 - c1)  # (8, 8, 3)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.uint8)
    elif bg["kind"] in ("stripes", "checker"):
        xs = np.arange(w, dtype=np.float32)
        ys = np.arange(h, dtype=np.float32)
        period = bg["period"]
        if bg["kind"] == "stripes":
            t = ys[:, None] * math.sin(bg["angle"]) + xs[None, :] * math.cos(bg["angle"])
            mask = (np.floor(t / period).astype(np.int64) & 1).astype(bool)
        else:
            mask = ((ys[:, None] // period + xs[None, :] // period) % 2).astype(bool)
        palette = np.stack([c1, c2]).astype(np.uint8)
        img = palette[mask.astype(np.uint8)]
    else:  # clouds: smooth colour blotches around c1
        grid = np.clip(c1 + np.asarray(bg["clouds"], dtype=np.float32), 0, 255)
        img = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        img = np.clip(img, 0, 255).astype(np.uint8)
    img = np.ascontiguousarray(img)
    for inst in layout.instances:
        # rasterise the polygon inside its bounding box with pycocotools, the rasteriser that
        # turns COCO polygons into masks: the drawn pixels are the polygon's mask
        x0, y0 = np.maximum(np.floor(inst.polygon.min(axis=0)).astype(int), 0)
        x1, y1 = np.ceil(inst.polygon.max(axis=0)).astype(int)
        x1, y1 = min(int(x1), w), min(int(y1), h)
        if x1 <= x0 or y1 <= y0:
            continue
        local = (inst.polygon - [x0, y0]).reshape(-1).tolist()
        mask = mask_utils.decode(mask_utils.frPyObjects([local], int(y1 - y0), int(x1 - x0))[0]).astype(bool)
        img[y0:y1, x0:x1][mask] = inst.color
    oy, ox = bg["noise_offset"]
    noise = _noise(h, w)[oy:oy + h, ox:ox + w]
    out = img.astype(np.float32)
    cv2.scaleAdd(noise, bg["noise"], out, dst=out)
    return np.clip(out, 0, 255, out=out).astype(np.uint8)


def layout_annotations(layout: ShapesLayout) -> list[dict[str, Any]]:
    """COCO annotation fields (without ids) of the visible instances, bottom to top."""
    anns = []
    for inst in layout.instances:
        x1, y1, x2, y2 = inst.bbox
        anns.append({
            "category_id": inst.label + 1,
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "area": inst.area,
            "segmentation": [p.reshape(-1).tolist() for p in inst.visible],
            "iscrowd": 0,
        })
    return anns


def _parse_size(img_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(img_size, int):
        return img_size, img_size
    if len(img_size) != 2:
        raise ValueError(f"img_size must be an int or (height, width), got {img_size!r}")
    return int(img_size[0]), int(img_size[1])


@DATASETS.register()
class ShapesDataset(DetDataset):
    """The synthetic shapes dataset (see the module docstring).

    Args:
        pipeline: the same transforms as for a file dataset (``LoadImageFromFile`` takes the
            rendered image from ``results['img']``).
        num_images: images in the split.
        seed: generator seed; ``(seed, split, index)`` fixes image ``index``.
        split: split name (``train``, ``val``, ...); different names give different images.
        img_size: ``H = W`` or ``(H, W)``.
        classes: subset/reorder of :data:`SHAPE_CLASSES` (list or txt file); other shapes stay in
            the images but are not labelled.
        test_mode: ``dataset[i]`` is a ``list[Sample]`` without annotations.
        filter_empty_gt: in training, drop images without a shape of ``classes``.
        min_objects: fewest shapes placed per image (some may be removed as mostly hidden; the
            top one always stays).
        max_objects: most shapes per image.
        min_size: smallest shape extent in px (default 12 at 256 px, scaled with the image).
        max_size: largest shape extent in px (default 160 at 256 px, scaled with the image).
        cache_images: keep every rendered image in memory (``H * W * 3`` bytes each, per worker
            process): multi-image augmentation (Mosaic, MixUp) renders 4-5 images per sample otherwise.
    """

    def __init__(
        self,
        pipeline: Sequence[Callable[[dict], Any] | Mapping[str, Any]],
        num_images: int = 1000,
        seed: int = 0,
        split: str = "train",
        img_size: int | tuple[int, int] = 256,
        classes: str | Sequence[str] | None = None,
        test_mode: bool = False,
        filter_empty_gt: bool = True,
        min_objects: int = 3,
        max_objects: int = 8,
        min_size: float | None = None,
        max_size: float | None = None,
        cache_images: bool = False,
    ) -> None:
        super().__init__(pipeline, test_mode, filter_empty_gt)
        self.cache_images = bool(cache_images)
        self._images: dict[int, np.ndarray] = {}
        if num_images < 1:
            raise DatasetError(f"ShapesDataset: num_images must be >= 1, got {num_images}")
        if not 1 <= min_objects <= max_objects:
            raise DatasetError(f"ShapesDataset: need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
        self.num_images = int(num_images)
        self.data_seed = int(seed)
        self.split = str(split)
        self.height, self.width = _parse_size(img_size)
        if min(self.height, self.width) < 32:
            raise DatasetError(f"ShapesDataset: img_size must be at least 32 px, got {img_size}")
        self.min_objects, self.max_objects = int(min_objects), int(max_objects)
        self.min_size, self.max_size = min_size, max_size
        where = f"ShapesDataset(split={self.split!r})"
        if classes is None:
            self.classes = SHAPE_CLASSES
        else:
            self.classes = load_class_names(classes, where)
            for n in self.classes:
                if n not in SHAPE_CLASSES:
                    raise DatasetError(f"{where}: class '{n}' is not a shape{did_you_mean(n, SHAPE_CLASSES)} "
                                       f"(shapes: {', '.join(SHAPE_CLASSES)})")
        self.cat_ids = [SHAPE_CLASSES.index(n) + 1 for n in self.classes]
        self._label_of = {SHAPE_CLASSES.index(n): i for i, n in enumerate(self.classes)}
        self.img_prefix = f"shapes/{self.split}"
        self._coco: COCO | None = None
        self._indices: list[int] | None = None
        self._layouts: dict[int, ShapesLayout] = {}  # geometry is cheap to keep, costly to redo (multi-image mixing)
        self._anns: dict[int, dict[str, Any]] = {}
        if not test_mode and filter_empty_gt and set(self.classes) != set(SHAPE_CLASSES):
            self._indices = [i for i in range(self.num_images)
                             if any(inst.label in self._label_of for inst in self.layout(i).instances)]
            if not self._indices:
                raise DatasetError(f"{where}: no image has a shape of classes {list(self.classes)} "
                                   "(filter_empty_gt=True)")

    def layout(self, raw_index: int) -> ShapesLayout:
        """Geometry of image ``raw_index`` of the split (before filtering); computed once per process."""
        layout = self._layouts.get(raw_index)
        if layout is None:
            layout = make_layout(self.data_seed, self.split, raw_index, self.height, self.width,
                                 self.min_objects, self.max_objects, self.min_size, self.max_size)
            self._layouts[raw_index] = layout
        return layout

    def _raw(self, idx: int) -> int:
        return idx if self._indices is None else self._indices[idx]

    def __len__(self) -> int:
        return self.num_images if self._indices is None else len(self._indices)

    def get_img_info(self, idx: int) -> dict[str, Any]:
        raw = self._raw(idx)
        return {"filename": f"{raw:06d}.jpg", "height": self.height, "width": self.width, "id": raw + 1}

    def _ann_info(self, layout: ShapesLayout) -> dict[str, Any]:
        kept = [inst for inst in layout.instances if inst.label in self._label_of]
        return {
            "bboxes": np.asarray([inst.bbox for inst in kept], dtype=np.float32).reshape(-1, 4),
            "labels": np.asarray([self._label_of[inst.label] for inst in kept], dtype=np.int64),
            "bboxes_ignore": np.zeros((0, 4), dtype=np.float32),
            "masks": [[p.reshape(-1).tolist() for p in inst.visible] for inst in kept],
        }

    def _render(self, raw: int, layout: ShapesLayout) -> np.ndarray:
        if not self.cache_images:
            return render(layout)
        img = self._images.get(raw)
        if img is None:
            img = self._images[raw] = render(layout)
            img.setflags(write=False)
        return img.copy()

    def get_ann_info(self, idx: int) -> dict[str, Any]:
        """The annotation dict of ``idx`` (kept and shared: read it, never modify it)."""
        raw = self._raw(idx)
        ann = self._anns.get(raw)
        if ann is None:
            ann = self._anns[raw] = self._ann_info(self.layout(raw))
        return ann

    def _prepare_results(self, idx: int, rng: np.random.Generator) -> dict[str, Any]:
        layout = self.layout(self._raw(idx))
        results: dict[str, Any] = {
            "img_info": self.get_img_info(idx),
            "img_prefix": self.img_prefix,
            "img": self._render(self._raw(idx), layout),
            "bbox_fields": [],
            "mask_fields": [],
            "sample_idx": idx,
            RNG_KEY: rng,
        }
        if not self.test_mode:
            results["ann_info"] = self.get_ann_info(idx)
        return results

    @property
    def image_ids(self) -> list[int]:
        return [self._raw(i) + 1 for i in range(len(self))]

    def coco_dict(self) -> dict[str, Any]:
        """The whole split (every image, every class) as a COCO dataset dict."""
        images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        for raw in range(self.num_images):
            images.append({"id": raw + 1, "file_name": f"{raw:06d}.jpg", "height": self.height, "width": self.width})
            for ann in layout_annotations(self.layout(raw)):
                annotations.append({"id": len(annotations) + 1, "image_id": raw + 1, **ann})
        return {
            "info": {"description": f"det synthetic shapes, {GENERATOR_VERSION}, seed {self.data_seed}, "
                                    f"split {self.split}"},
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(SHAPE_CLASSES)],
        }

    @property
    def coco(self) -> COCO:
        """Ground truth of the whole split in memory (built on first use)."""
        if self._coco is None:
            self._coco = coco_from_dict(self.coco_dict())
        return self._coco

    def fingerprint(self) -> dict[str, Any]:
        return {
            "type": type(self).__name__,
            "generator": GENERATOR_VERSION,
            "seed": self.data_seed,
            "split": self.split,
            "img_size": [self.height, self.width],
            "objects": [self.min_objects, self.max_objects],
            "sizes": [self.min_size, self.max_size],
            "num_images": len(self),
            "classes": list(self.classes),
        }

    def __repr__(self) -> str:
        return (f"ShapesDataset(split={self.split!r}, num_images={len(self)}, seed={self.data_seed}, "
                f"img_size={(self.height, self.width)})")


def export_shapes_coco(out_dir: str | os.PathLike[str], num_images: int, seed: int = 0, split: str = "train",
                       img_size: int | tuple[int, int] = 256, quality: int = 95) -> Path:
    """Write a split of the shapes dataset as JPEG files and a COCO json; return the json path.

    Layout (``OUT/images/<split>/000000.jpg``, ``OUT/annotations/instances_<split>.json``)::

        CocoDataset(data_root=OUT, ann_file="annotations/instances_<split>.json",
                    img_prefix="images/<split>/")

    sees the same annotations as ``ShapesDataset(num_images, seed, split, img_size)``. The images
    are written to a temporary folder renamed into place, then the json is written to a temporary
    file and renamed: an interrupted export leaves no json behind.
    """
    out = Path(out_dir)
    dataset = ShapesDataset(pipeline=[], num_images=num_images, seed=seed, split=split, img_size=img_size,
                            test_mode=True)
    img_root = out / "images"
    ann_root = out / "annotations"
    img_root.mkdir(parents=True, exist_ok=True)
    ann_root.mkdir(parents=True, exist_ok=True)
    ann_path = ann_root / f"instances_{split}.json"
    final_dir = img_root / split
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{split}.tmp-", dir=img_root))
    try:
        for raw in range(num_images):
            ok, buf = cv2.imencode(".jpg", render(dataset.layout(raw)), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
            if not ok:  # pragma: no cover - cv2 always encodes uint8 BGR
                raise DatasetError(f"cannot encode shapes image {raw} as JPEG")
            (tmp_dir / f"{raw:06d}.jpg").write_bytes(buf.tobytes())
        coco = dataset.coco_dict()
        with contextlib.suppress(FileNotFoundError):
            ann_path.unlink()  # the json goes last: never a json pointing at half-written images
        if final_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{split}.old-", dir=img_root))
            final_dir.rename(old / split)
            tmp_dir.rename(final_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp_dir.rename(final_dir)
        write_json_atomic(coco, ann_path)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    logger.info("wrote %d shapes images to %s and annotations to %s", num_images, final_dir, ann_path)
    return ann_path
